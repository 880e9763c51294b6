//! The PoP mesh: which PoPs are in the network, and what each of them measures, shared by gossip
//! so that every PoP decides from the same data.
//!
//! Owns: membership and failure detection ([chitchat]: Scuttlebutt reconciliation and a
//! phi-accrual detector), the authenticated UDP transport it runs on ([`transport`]: HMAC-SHA256
//! per datagram, replay window, cluster id), what a PoP publishes ([`report`]), the view of the
//! mesh it gets back ([`view`]), and the rules every PoP applies to that view ([`choose`]: the
//! agreed origin, quorum health, the best PoP relative to the asker).
//!
//! Must not touch: probing (the daemon's probes measure; this crate only carries the results),
//! DNS, the cache, the XDP maps, or the daemon's config file (its `[mesh]` table is
//! edge-config's [`MeshConfig`]). Data
//! flows one way: the daemon publishes its measurements here and reads the view back.

pub mod choose;
pub mod report;
pub mod transport;
pub mod view;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use tokio::{
    sync::{Mutex, watch},
    task::JoinHandle,
    time::Instant,
};

use self::{
    report::Report,
    transport::{AuthTransport, Counters, GossipCounters},
    view::{Member, State, View},
};
pub use edge_config::mesh::MeshConfig;

/// A running member of the mesh; leaves it when stopped or dropped.
pub struct Mesh {
    name: String,
    chitchat: ChitchatHandle,
    counters: Arc<Counters>,
    view: watch::Receiver<Arc<View>>,
    /// When this PoP last published: its own data age.
    published: Arc<Mutex<Instant>>,
    watcher: JoinHandle<()>,
}

impl Mesh {
    /// Joins the mesh of `config` (its seeds), publishing `report` from the start.
    pub async fn start(config: &MeshConfig, report: &Report) -> Result<Self> {
        config.check()?;
        let counters = Arc::new(Counters::default());
        let transport = AuthTransport::new(&config.secret, &config.cluster_id, counters.clone());
        // A restarted PoP is a new generation: the others drop what its old self published.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let interval = config.gossip_interval;
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(config.name.clone(), generation, config.advertise()),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: interval,
            listen_addr: config.listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: 100,
                // A longer silence (a partition that healed) is not a heartbeat interval.
                max_interval: (interval * 10).max(Duration::from_secs(1)),
                // Until heartbeats have been measured, expect one a gossip round.
                initial_interval: interval,
                dead_node_grace_period: Duration::from_secs(600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        };
        let chitchat = spawn_chitchat(chitchat_config, report.key_values(), &transport).await?;
        let (view_tx, view) = watch::channel(Arc::new(View::default()));
        let published = Arc::new(Mutex::new(Instant::now()));
        let watcher = tokio::spawn(watch_mesh(
            chitchat.chitchat(),
            config.clone(),
            counters.clone(),
            published.clone(),
            view_tx,
        ));
        Ok(Self {
            name: config.name.clone(),
            chitchat,
            counters,
            view,
            published,
            watcher,
        })
    }

    /// Replaces what this PoP publishes with `report`: changed items get a new version, items
    /// no longer in it are deleted.
    pub async fn publish(&self, report: &Report) {
        let pairs = report.key_values();
        self.chitchat
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                let gone: Vec<String> = state
                    .key_values()
                    .map(|(key, _)| key.to_string())
                    .filter(|key| pairs.iter().all(|(kept, _)| kept != key))
                    .collect();
                for key in gone {
                    state.delete(&key);
                }
                for (key, value) in &pairs {
                    state.set(key, value);
                }
            })
            .await;
        *self.published.lock().await = Instant::now();
    }

    /// This PoP's name in the mesh.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mesh as of the latest gossip round.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// The view, updated every gossip round.
    pub fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    pub fn counters(&self) -> GossipCounters {
        self.counters.snapshot()
    }

    /// Leaves the mesh: the others see this PoP die.
    pub async fn stop(self) {
        self.watcher.abort();
        let _ = self.chitchat.shutdown().await;
    }
}

/// Rebuilds the view every gossip round.
async fn watch_mesh(
    chitchat: Arc<Mutex<chitchat::Chitchat>>,
    config: MeshConfig,
    counters: Arc<Counters>,
    published: Arc<Mutex<Instant>>,
    view: watch::Sender<Arc<View>>,
) {
    // Per member: the version of its `pop` report and when it was first seen here.
    let mut seen: HashMap<ChitchatId, (u64, Instant)> = HashMap::new();
    let mut ticks = tokio::time::interval(config.gossip_interval);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let own_age = now.duration_since(*published.lock().await);
        let chitchat = chitchat.lock().await;
        let me = chitchat.self_chitchat_id().clone();
        let live: Vec<&ChitchatId> = chitchat.live_nodes().collect();
        // By name: a restarted PoP has a new generation; its live self wins over its old one.
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        for (id, state) in chitchat.node_states() {
            let version = state
                .get_versioned(report::POP)
                .map_or(0, |pop| pop.version);
            let since = match seen.get(id) {
                Some(&(known, since)) if known == version => since,
                _ => {
                    seen.insert(id.clone(), (version, now));
                    now
                }
            };
            let age = if *id == me {
                own_age
            } else {
                now.duration_since(since)
            };
            let state_now = if !live.contains(&id) {
                State::Dead
            } else if age > config.stale_after {
                State::Stale
            } else {
                State::Live
            };
            let member = Member {
                name: id.node_id.to_string(),
                gossip: id.gossip_advertise_addr,
                state: state_now,
                age,
                report: Report::from_key_values(state.key_values()),
            };
            let better = members.get(&member.name).is_none_or(|other| {
                (member.state == State::Live, std::cmp::Reverse(member.age))
                    > (other.state == State::Live, std::cmp::Reverse(other.age))
            });
            if better {
                members.insert(member.name.clone(), member);
            }
        }
        seen.retain(|id, _| chitchat.node_state(id).is_some());
        drop(chitchat);
        view.send_replace(Arc::new(View {
            me: config.name.clone(),
            members: members.into_values().collect(),
            counters: counters.snapshot(),
        }));
    }
}
