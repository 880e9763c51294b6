//! edge-steer: probes every pool's members on the pool's interval ([`probe`]), keeps their
//! health ([`health`]) and smoothed measurements ([`pool`], [`score`]), and turns them into
//! [`Selections`], the addresses each steered name answers with. Also the origin side of the
//! measurements: the load report an origin's `edge agent` serves ([`agent`]).
//!
//! Data flows one way: probes → measurements → selection → zones and maps (edge-dns and
//! edge-dataplane, wired by the `edge` daemon) and the cache's origin choice (edge-http). So
//! this crate owns the [`Selections`] type and its [`SelectionsWatch`], and must not depend on
//! DNS, HTTP serving or the data plane; its settings are edge-config's `steering` schema. Its
//! control requests (status, drain) are served by the daemon's one admin server.
//!
//! Each PoP measures every member of its pools itself. With `[mesh]`, every round it publishes
//! those measurements to the other PoPs (edge-mesh) and answers by the mesh's rules over what
//! every live PoP published: the origin all agree on, the best PoP from where it stands.

pub mod agent;
pub mod health;
pub mod pool;
pub mod probe;
pub mod probe_stats;
pub mod score;
pub mod status;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use edge_mesh::{Mesh, report::Report};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::watch,
    task::{AbortHandle, JoinSet},
    time::Instant,
};
use tracing::info;

use edge_config::{Config, PoolConfig};

use self::{pool::Pool, probe_stats::ProbeStats};

/// What every steered name answers, pool by pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selections {
    /// Pool name → the member addresses to answer with, best first (usually one per family);
    /// empty: the pool's all-down policy says SERVFAIL.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
    /// Pool name → TTL of its steered names.
    pub ttls: BTreeMap<String, u32>,
}

impl Selections {
    /// The first address of `pool`'s selection, if it has one.
    pub fn first(&self, pool: &str) -> Option<IpAddr> {
        self.addresses.get(pool)?.first().copied()
    }
}

/// The selections as of the latest round.
pub type SelectionsWatch = watch::Receiver<Arc<Selections>>;

/// The pools' state, shared by their probe tasks and the admin endpoint.
pub struct Shared {
    pools: Mutex<Vec<Pool>>,
    selections: watch::Sender<Arc<Selections>>,
    /// This PoP in the mesh, if configured.
    mesh: Option<Mesh>,
    /// Publishes so far (the report's round).
    rounds: std::sync::atomic::AtomicU64,
    /// Probe tasks running: one per pool when all is well.
    probe_tasks: AtomicUsize,
    /// Every probe's outcome, for the metrics.
    pub probe_stats: ProbeStats,
}

impl Shared {
    /// Publishes the selections of `pools` if they differ from the last ones.
    fn publish(&self, pools: &[Pool]) {
        let next = Selections {
            addresses: pools
                .iter()
                .map(|pool| (pool.config.name.clone(), pool.selection.clone()))
                .collect(),
            ttls: pools
                .iter()
                .map(|pool| (pool.config.name.clone(), pool.ttl))
                .collect(),
        };
        self.selections.send_if_modified(|current| {
            if **current == next {
                return false;
            }
            *current = Arc::new(next);
            true
        });
    }

    /// Drains or undrains a member and answers accordingly at once.
    pub fn drain(&self, pool: &str, member: &str, drained: bool) -> Result<(), String> {
        let mut pools = self.pools.lock().expect("not poisoned");
        let found = pools
            .iter_mut()
            .find(|candidate| candidate.config.name == pool)
            .ok_or_else(|| format!("no pool called {pool}"))?;
        if !found.drain(member, drained) {
            return Err(format!("pool {pool} has no member called {member}"));
        }
        let view = self.mesh.as_ref().map(Mesh::view);
        if found.select_in(view.as_deref()) {
            info!(pool, selection = ?found.selection, "selection changed");
        }
        self.publish(&pools);
        Ok(())
    }

    /// This PoP in the mesh, with `[mesh]`.
    pub fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    /// Probe tasks running now, one per pool unless a task outlived its pool.
    pub fn probe_tasks(&self) -> usize {
        self.probe_tasks.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> status::Status {
        let view = self.mesh.as_ref().map(Mesh::view);
        status::Status::of(&self.pools.lock().expect("not poisoned"), view.as_deref())
    }

    /// What this PoP publishes to the mesh: every pool's measurements and choices.
    fn report(&self, pools: &[Pool], me: &str) -> Report {
        let mut report = Report::default();
        report.pop.round = self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for pool in pools {
            pool.report_into(me, &mut report);
        }
        report
    }
}

/// The running steering: one probe task per pool; stops when dropped.
pub struct Steering {
    pub shared: Arc<Shared>,
    tasks: JoinSet<()>,
    /// Each probe task with the pool config it probes. A reload aborts the tasks of the pools it
    /// removes or changes: a task that only noticed at its next round would still be running
    /// when a second reload brings its config back (A → B → A), and probe beside the new one.
    probing: Vec<(PoolConfig, AbortHandle)>,
}

impl Steering {
    /// Probes every member of every pool once, so that no name is answered from an unchecked
    /// state, then keeps probing each pool on its interval.
    pub async fn start(config: &Config) -> Result<Self> {
        let probe_stats = ProbeStats::default();
        let pools = first_rounds(&config.pools, &probe_stats).await;
        let (selections, _) = watch::channel(Arc::new(Selections::default()));
        let mesh = match &config.mesh {
            Some(mesh) => {
                let mut first = Report::default();
                for pool in &pools {
                    pool.report_into(&mesh.name, &mut first);
                }
                let joined = Mesh::start(mesh, &first).await?;
                info!(name = mesh.name, listen = %mesh.listen, seeds = ?mesh.seeds, "joined the mesh");
                Some(joined)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            pools: Mutex::new(Vec::new()),
            selections,
            mesh,
            rounds: std::sync::atomic::AtomicU64::new(1),
            probe_tasks: AtomicUsize::new(0),
            probe_stats,
        });
        shared.publish(&pools);
        *shared.pools.lock().expect("not poisoned") = pools;
        let mut steering = Self {
            shared,
            tasks: JoinSet::new(),
            probing: Vec::new(),
        };
        for pool in &config.pools {
            steering.spawn(pool.clone());
        }
        Ok(steering)
    }

    /// Takes the pools of a reloaded config: a pool whose settings did not change keeps its
    /// state and its probe task; a new or changed one is probed once before it is answered
    /// from. `[mesh]` changes only with a restart.
    pub async fn reload(&mut self, config: &Config) {
        self.probing.retain(|(probed, task)| {
            let kept = config.pools.contains(probed);
            if !kept {
                task.abort();
            }
            kept
        });
        while self.tasks.try_join_next().is_some() {}
        let new: Vec<PoolConfig> = {
            let pools = self.shared.pools.lock().expect("not poisoned");
            config
                .pools
                .iter()
                .filter(|wanted| !pools.iter().any(|pool| pool.config == **wanted))
                .cloned()
                .collect()
        };
        self.shared.probe_stats.retain(&config.pools);
        let mut fresh = first_rounds(&new, &self.shared.probe_stats).await;
        {
            // The kept pools are taken as they are now, not as they were before the first
            // rounds: their probe tasks went on recording meanwhile.
            let mut current = self.shared.pools.lock().expect("not poisoned");
            let mut kept = std::mem::take(&mut *current);
            *current = config
                .pools
                .iter()
                .map(|wanted| {
                    let from = if kept.iter().any(|pool| pool.config == *wanted) {
                        &mut kept
                    } else {
                        &mut fresh
                    };
                    let at = from
                        .iter()
                        .position(|pool| pool.config == *wanted)
                        .expect("kept or new");
                    from.swap_remove(at)
                })
                .collect();
            self.shared.publish(&current);
        }
        for pool in new {
            self.spawn(pool);
        }
    }

    /// Starts probing the pool of `config` on its interval.
    fn spawn(&mut self, config: PoolConfig) {
        let task = self
            .tasks
            .spawn(probe_pool(config.clone(), self.shared.clone()));
        self.probing.push((config, task));
    }

    /// The selections, updated after every round that changed them.
    pub fn watch(&self) -> SelectionsWatch {
        self.shared.selections.subscribe()
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// New pools of `configs`, each probed once and selected from.
async fn first_rounds(configs: &[PoolConfig], stats: &ProbeStats) -> Vec<Pool> {
    let mut pools: Vec<Pool> = configs.iter().map(Pool::new).collect();
    let samples = join_all(configs.iter().map(probe_all)).await;
    for (pool, samples) in pools.iter_mut().zip(samples) {
        stats.record(&pool.config, &samples);
        pool.record(&samples);
        pool.select();
        info!(pool = pool.config.name, selection = ?pool.selection, "first selection");
    }
    pools
}

/// Probes every member of a pool at once; samples in member order.
async fn probe_all(config: &PoolConfig) -> Vec<probe::Sample> {
    join_all(
        config
            .members
            .iter()
            .map(|member| probe::member(member, &config.probe)),
    )
    .await
}

/// Probes the pool of `config` a jittered interval apart (counted from round start), until a
/// reload removes or changes it.
async fn probe_pool(config: PoolConfig, shared: Arc<Shared>) {
    let _counted = ProbeTask::count(&shared);
    let mut start = Instant::now();
    loop {
        let wait = jittered(config.probe.interval, config.probe.jitter);
        match start.checked_add(wait) {
            Some(due) => tokio::time::sleep_until(due).await,
            // Past what the clock can name: tokio's sleep saturates to its far future.
            None => tokio::time::sleep(wait).await,
        }
        start = Instant::now();
        let samples = probe_all(&config).await;
        let view = shared.mesh.as_ref().map(Mesh::view);
        let report = {
            let mut pools = shared.pools.lock().expect("not poisoned");
            let Some(pool) = pools.iter_mut().find(|pool| pool.config == config) else {
                return;
            };
            shared.probe_stats.record(&config, &samples);
            pool.record(&samples);
            if pool.select_in(view.as_deref()) {
                info!(pool = config.name, selection = ?pool.selection, ttl = pool.ttl, source = ?pool.source, "selection changed");
            }
            shared.publish(&pools);
            shared
                .mesh
                .as_ref()
                .map(|mesh| shared.report(&pools, mesh.name()))
        };
        if let (Some(mesh), Some(report)) = (&shared.mesh, report) {
            mesh.publish(&report).await;
        }
    }
}

/// Counts a probe task in [`Shared::probe_tasks`] while it lives, however it ends.
struct ProbeTask(Arc<Shared>);

impl ProbeTask {
    fn count(shared: &Arc<Shared>) -> Self {
        shared.probe_tasks.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone())
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.probe_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `interval` times a random factor in [1 − jitter, 1 + jitter]; `interval` itself where that
/// is no duration (validation keeps jitter in [0, 1), but a panic here would end the pool's
/// probing unseen).
fn jittered(interval: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(rise: u32) -> Config {
        let text = format!(
            "[xdp]\ninterface = \"lo\"\n[[pools]]\nname = \"shop\"\nkind = \"origin\"\n\
             [pools.probe]\ninterval = \"300ms\"\ntimeout = \"100ms\"\nrise = {rise}\n\
             [[pools.members]]\nname = \"a\"\naddress = \"127.0.0.1\"\nhttp_port = 9\n"
        );
        Config::parse(std::path::Path::new("test.toml"), &text).unwrap()
    }

    /// Polls `condition` every few milliseconds until it holds or five seconds passed.
    async fn eventually(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        condition()
    }

    #[tokio::test]
    async fn a_pool_changed_and_changed_back_has_one_probe_task() {
        let (a, b) = (pool(2), pool(3));
        let mut steering = Steering::start(&a).await.unwrap();
        let shared = steering.shared.clone();
        assert!(eventually(|| shared.probe_tasks() == 1).await);
        // Both reloads come within one interval (each probes its new pool once, a refused
        // connection): the first task has not woken since, and would find its config again.
        steering.reload(&b).await;
        steering.reload(&a).await;
        assert!(
            eventually(|| shared.probe_tasks() == 1).await,
            "{} probe tasks for one pool",
            shared.probe_tasks()
        );
        let rounds = |shared: &Shared| shared.status().pools[0].rounds;
        let before = rounds(&shared);
        assert!(
            eventually(|| rounds(&shared) > before + 2).await,
            "still probed"
        );
        assert_eq!(shared.probe_tasks(), 1);
        drop(steering);
        assert!(eventually(|| shared.probe_tasks() == 0).await);
    }

    /// Rounds a kept pool's probe task records while a reload waits for a new pool's first
    /// round are kept (the reload used to write back the copy it took before waiting).
    #[tokio::test]
    async fn rounds_recorded_during_a_reload_are_kept() {
        let kept = "[[pools]]\nname = \"kept\"\nkind = \"origin\"\n\
             [pools.probe]\ninterval = \"20ms\"\ntimeout = \"10ms\"\njitter = 0.0\n\
             [[pools.members]]\nname = \"a\"\naddress = \"127.0.0.1\"\nhttp_port = 9\n";
        // Accepts connections (the kernel does) and never answers: the first round of the
        // new pool waits out its timeout.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let added = format!(
            "[[pools]]\nname = \"added\"\nkind = \"origin\"\n\
             [pools.probe]\ninterval = \"2s\"\ntimeout = \"600ms\"\n\
             [[pools.members]]\nname = \"b\"\naddress = \"127.0.0.1\"\nhttp_port = {port}\n"
        );
        let parse = |text: &str| {
            Config::parse(
                std::path::Path::new("test.toml"),
                &format!("[xdp]\ninterface = \"lo\"\n{text}"),
            )
            .unwrap()
        };
        let mut steering = Steering::start(&parse(kept)).await.unwrap();
        let shared = steering.shared.clone();
        let rounds = |shared: &Shared, name: &str| {
            let status = shared.status();
            status
                .pools
                .iter()
                .find(|pool| pool.name == name)
                .map(|pool| pool.rounds)
        };
        assert!(eventually(|| rounds(&shared, "kept") >= Some(2)).await);
        let before = rounds(&shared, "kept").unwrap();
        let started = Instant::now();
        steering.reload(&parse(&format!("{kept}{added}"))).await;
        assert!(started.elapsed() >= Duration::from_millis(600));
        let after = rounds(&shared, "kept").unwrap();
        // 600 ms at a 20 ms interval is some 30 rounds; a few are enough on a loaded machine.
        assert!(
            after >= before + 3,
            "kept pool at {after} rounds after the reload, {before} before it"
        );
        assert_eq!(rounds(&shared, "added"), Some(1));
        drop(silent);
    }

    #[test]
    fn jitter_stays_in_its_range_and_never_panics() {
        let interval = Duration::from_millis(500);
        for _ in 0..1000 {
            let wait = jittered(interval, 0.1);
            assert!(wait >= interval.mul_f64(0.9) && wait <= interval.mul_f64(1.1));
        }
        for (interval, jitter) in [
            (Duration::MAX, 0.5),
            (Duration::MAX, 0.0),
            (interval, 3.0),
            (interval, f64::NAN),
            (interval, f64::INFINITY),
        ] {
            jittered(interval, jitter);
        }
    }
}
