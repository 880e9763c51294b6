//! A network of PoPs on one bridge ([`Lan`]), each running `edge run` with `[mesh]`: their
//! configs built from parts, the daemons started, killed and restarted, and what the mesh tests,
//! the demo and the mesh benchmark ask of them: each PoP's DNS answer (kdig from a client
//! host), its status, and polls until every PoP answers something or sees its peers.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use edge_mesh::view::State;
use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
};

use crate::{
    dig::kdig,
    edge::{EdgeProcess, scaled, slowdown, status},
    interrupt,
    topology::{Host, Lan},
};

/// Where every origin's and PoP's `edge agent` serves its load report.
pub const AGENT_PORT: u16 = 9100;
pub const GOSSIP_PORT: u16 = 7946;
/// The PoPs' `[mesh] gossip_interval` on the host (the default, written out so that bounds can
/// name it); [`gossip`] is the one they run with.
pub const GOSSIP: Duration = Duration::from_millis(100);
/// The PoPs' `[mesh] stale_after` on the host (the default); times the slowdown, as [`gossip`].
const STALE_AFTER: Duration = Duration::from_millis(1500);
const CLUSTER_ID: &str = "test-cdn";
/// The mesh's shared secret (a test sealing datagrams of its own needs it).
pub const SECRET: &str = "a test secret of 32 bytes, fine.";

/// The pause between two polls of one PoP in [`Network::watch`].
pub const POLL: Duration = Duration::from_millis(10);
/// How long a poll waits for its answer (times the slowdown): a lost one is an empty answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// The PoPs' gossip interval: [`GOSSIP`] times the slowdown (`EDGE_TEST_SLOWDOWN`). On an
/// emulated CPU a round takes several times longer, and heartbeats every 100 ms would arrive
/// so much later than the failure detector expects that live PoPs are judged dead.
pub fn gossip() -> Duration {
    scaled(GOSSIP)
}

/// A `[pools.steering.weights]` table for a PoP pool whose members' latencies a test sets,
/// multiplied by the slowdown (`EDGE_TEST_SLOWDOWN`): the default PoP weights with each
/// millisecond weighing that many times less, so that the scores compare as with the
/// unscaled latencies on the host. Empty (the defaults) without a slowdown. Widened so, a
/// latency gap stands out from an emulated CPU's own jitter in every measurement (tens of
/// ms on an unloaded origin).
pub fn pop_weights() -> Result<String> {
    let slowdown = slowdown()?;
    if slowdown == 1 {
        return Ok(String::new());
    }
    let defaults = edge_config::steering::ScoreWeights::POP;
    let ms = f64::from(slowdown);
    Ok(format!(
        "[pools.steering.weights]\nrtt = {}\nhttp = {}\nftp = {}\ncpu = {}\nmemory = {}\nload = {}\n",
        defaults.rtt / ms,
        defaults.http / ms,
        defaults.ftp / ms,
        defaults.cpu,
        defaults.memory,
        defaults.load
    ))
}

/// One A question for `qname` to `server` over `socket`, as a stub resolver asks; the A records
/// of the answer (none if it does not come within [`POLL_TIMEOUT`]).
fn ask_a(socket: &UdpSocket, server: SocketAddr, qname: &str) -> Result<Vec<IpAddr>> {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(qname)?, RecordType::A));
    let id = query.metadata.id;
    socket.send_to(&query.to_vec()?, server)?;
    let timeout = scaled(POLL_TIMEOUT);
    socket.set_read_timeout(Some(timeout))?;
    let deadline = Instant::now() + timeout;
    let mut buffer = [0; 1500];
    while Instant::now() < deadline {
        let (len, from) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break;
            }
            Err(error) => return Err(error).context("receiving a DNS answer"),
        };
        // A late answer to an earlier poll is skipped.
        let Ok(reply) = Message::from_vec(&buffer[..len]) else {
            continue;
        };
        if from == server && reply.metadata.id == id {
            return Ok(reply
                .answers
                .iter()
                .filter_map(|record| match record.data {
                    RData::A(address) => Some(IpAddr::V4(address.0)),
                    _ => None,
                })
                .collect());
        }
    }
    Ok(Vec::new())
}

/// A member of a pool in a PoP's config.
pub struct Member<'a> {
    pub host: &'a Host,
    pub http_port: u16,
    pub agent_port: Option<u16>,
    pub ftp_port: Option<u16>,
}

impl<'a> Member<'a> {
    /// A member serving HTTP on `http_port`, without agent or FTP service.
    pub fn http(host: &'a Host, http_port: u16) -> Self {
        Self {
            host,
            http_port,
            agent_port: None,
            ftp_port: None,
        }
    }

    /// With its `edge agent` on [`AGENT_PORT`].
    pub fn with_agent(mut self) -> Self {
        self.agent_port = Some(AGENT_PORT);
        self
    }
}

/// `[xdp]` and `[dns]` of PoP `pop`: the XDP program on its `eth0` (pins private to the LAN),
/// DNS on its address.
pub fn xdp_and_dns(lan: &Lan, pop: &str) -> String {
    let host = lan.host(pop);
    format!(
        "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n",
        lan.pin_root().join(pop).display(),
        host.v4
    )
}

/// A `[[pools]]` entry of `kind` (`origin` or `pop`), probed every `interval` (timeout 3/4 of
/// it); `tables` follows the interval and timeout: more `[pools.probe]` keys, then other tables
/// of the pool (`[pools.steering]`).
pub fn pool(
    name: &str,
    kind: &str,
    interval: Duration,
    tables: &str,
    members: &[Member],
) -> String {
    let mut text = format!(
        "[[pools]]\nname = \"{name}\"\nkind = \"{kind}\"\n[pools.probe]\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\n{tables}",
        interval.as_millis(),
        interval.as_millis() * 3 / 4
    );
    for member in members {
        text += &format!(
            "[[pools.members]]\nname = \"{}\"\naddress = \"{}\"\nhttp_port = {}\n",
            member.host.role, member.host.v4, member.http_port
        );
        if let Some(port) = member.agent_port {
            text += &format!("agent_port = {port}\n");
        }
        if let Some(port) = member.ftp_port {
            text += &format!("ftp_port = {port}\n");
        }
    }
    text
}

/// `[mesh]` of PoP `pop`, joining through `seed` (a PoP's role), gossiping every [`gossip`]; a
/// report unchanged for [`STALE_AFTER`] times the slowdown is stale.
pub fn mesh(lan: &Lan, pop: &str, seed: &str) -> String {
    format!(
        "[mesh]\nname = \"{pop}\"\nlisten = \"{}:{GOSSIP_PORT}\"\nseeds = [\"{}:{GOSSIP_PORT}\"]\n\
         cluster_id = \"{CLUSTER_ID}\"\nsecret = \"{SECRET}\"\ngossip_interval = \"{}ms\"\n\
         stale_after = \"{}ms\"\n",
        lan.host(pop).v4,
        lan.host(seed).v4,
        gossip().as_millis(),
        scaled(STALE_AFTER).as_millis()
    )
}

/// PoPs running `edge run` with `[mesh]` on a LAN, asked from its client host. It owns the LAN:
/// declared before whatever else runs in it (origins, agents, resolvers), it is dropped after
/// them, so that every process has stopped when the namespaces and files go.
pub struct Network {
    /// The PoPs' roles, in order: PoP `i` is `pops[i]`.
    pub pops: Vec<String>,
    pub configs: Vec<PathBuf>,
    edges: Vec<Option<EdgeProcess>>,
    client: String,
    /// Last, so that the daemons stop before their namespaces go.
    pub lan: Lan,
}

impl Network {
    /// No PoP running yet; DNS questions will be asked from the host `client`.
    pub fn new(lan: Lan, client: &str) -> Self {
        Self {
            pops: Vec::new(),
            configs: Vec::new(),
            edges: Vec::new(),
            client: client.to_string(),
            lan,
        }
    }

    /// Writes each PoP's config (`config(lan, pop)`, as `<pop>.toml`) and starts `edge run` on
    /// each, in order.
    pub fn start_pops(
        &mut self,
        pops: &[&str],
        config: impl Fn(&Lan, &str) -> String,
    ) -> Result<()> {
        for pop in pops {
            let path = self
                .lan
                .write_file(&format!("{pop}.toml"), &config(&self.lan, pop))?;
            self.pops.push(pop.to_string());
            self.configs.push(path);
            self.edges.push(None);
            self.restart(self.configs.len() - 1)?;
        }
        Ok(())
    }

    /// The PoP `i`'s host.
    pub fn pop(&self, i: usize) -> &Host {
        self.lan.host(&self.pops[i])
    }

    /// PoP `i`'s address.
    pub fn ip(&self, i: usize) -> IpAddr {
        self.pop(i).v4.into()
    }

    /// The indexes of every PoP.
    pub fn all(&self) -> Vec<usize> {
        (0..self.pops.len()).collect()
    }

    /// The A records PoP `i` answers `qname` with.
    pub fn answer(&self, i: usize, qname: &str) -> Result<Vec<IpAddr>> {
        let server = format!("@{}", self.pop(i).v4);
        let reply = kdig(
            &self.lan.host(&self.client).netns,
            &[&server, qname, "A", "+retry=0", "+time=2"],
        )?;
        Ok(reply.a_records().into_iter().map(IpAddr::V4).collect())
    }

    /// PoP `i`'s `edge status`.
    pub fn status(&self, i: usize) -> Result<edge_steer::status::Status> {
        status(&self.pop(i).netns, &self.configs[i])
    }

    /// SIGKILL to PoP `i`'s daemon, as in a crash.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        match self.edges[i].take() {
            Some(edge) => edge.kill(),
            None => Ok(()),
        }
    }

    /// Starts PoP `i`'s daemon again (it adopts the pinned data plane a kill left).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i)?;
        self.edges[i] = Some(EdgeProcess::start(
            &self.pop(i).netns,
            &self.configs[i],
            &[],
        )?);
        Ok(())
    }

    /// Polls until every PoP of `which` answers `qname` with exactly `expected`; returns how
    /// long it took.
    pub fn wait_for_answers(
        &self,
        which: &[usize],
        qname: &str,
        expected: &[IpAddr],
        bound: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let answers: Vec<Vec<IpAddr>> = which
                .iter()
                .map(|&i| self.answer(i, qname))
                .collect::<Result<_>>()?;
            if answers.iter().all(|answer| answer == expected) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > bound {
                let states: Vec<_> = which.iter().map(|&i| self.status(i).ok()).collect();
                bail!("answers {answers:?}, not {expected:?} after {bound:?}\n{states:#?}");
            }
            interrupt::check()?;
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the PoPs of `which` at once, each from a thread of its own, until `done` holds for
    /// each one's answer to `qname`; returns, per PoP, when that answer was first seen (since
    /// `start`), and the longest time between two polls of one PoP: the resolution of those
    /// times. The pollers ask from inside the client's namespace with an in-process stub
    /// ([`ask_a`]), every [`POLL`]: kdig costs two process starts a poll, and twenty pollers
    /// of it starve the PoPs they measure on a small machine.
    pub fn watch(
        &self,
        which: &[usize],
        qname: &str,
        start: Instant,
        bound: Duration,
        done: impl Fn(&[IpAddr]) -> bool + Sync,
    ) -> Result<(Vec<Duration>, Duration)> {
        let done = &done;
        let client = &self.lan.host(&self.client).netns;
        let polls: Vec<Result<(Duration, Duration)>> = thread::scope(|scope| {
            let watchers: Vec<_> = which
                .iter()
                .map(|&i| {
                    scope.spawn(move || {
                        client.enter_on_this_thread()?;
                        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
                        let server = SocketAddr::new(self.ip(i), 53);
                        let mut longest = Duration::ZERO;
                        let mut last: Option<Instant> = None;
                        loop {
                            let asked = Instant::now();
                            if let Some(last) = last {
                                longest = longest.max(asked - last);
                            }
                            last = Some(asked);
                            let answer = ask_a(&socket, server, qname)?;
                            if done(&answer) {
                                return Ok((asked.duration_since(start), longest));
                            }
                            if start.elapsed() > bound {
                                let state = self.status(i).ok();
                                bail!(
                                    "{} still answers {answer:?} after {bound:?}\n{state:#?}",
                                    self.pops[i]
                                );
                            }
                            interrupt::check()?;
                            thread::sleep(POLL);
                        }
                    })
                })
                .collect();
            watchers
                .into_iter()
                .map(|watcher| watcher.join().expect("a watcher panicked"))
                .collect()
        });
        let polls: Vec<(Duration, Duration)> = polls.into_iter().collect::<Result<_>>()?;
        let longest = polls.iter().map(|&(_, longest)| longest).max();
        Ok((
            polls.into_iter().map(|(seen, _)| seen).collect(),
            longest.unwrap_or_default(),
        ))
    }

    /// Polls until every PoP of `which` sees the mesh members `wanted` (name, live or not).
    pub fn wait_for_members(
        &self,
        which: &[usize],
        wanted: &[(&str, bool)],
        bound: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let mut all = true;
            for &i in which {
                let Some(mesh) = self.status(i)?.mesh else {
                    bail!("{} runs without a mesh", self.pops[i]);
                };
                all &= wanted.iter().all(|(name, live)| {
                    mesh.members.iter().any(|member| {
                        member.name == *name && (member.state == State::Live) == *live
                    })
                });
            }
            if all {
                return Ok(start.elapsed());
            }
            if start.elapsed() > bound {
                let states: Vec<_> = which.iter().map(|&i| self.status(i).ok()).collect();
                bail!("members not {wanted:?} after {bound:?}\n{states:#?}");
            }
            interrupt::check()?;
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until every PoP sees every PoP live.
    pub fn wait_for_everyone(&self, bound: Duration) -> Result<Duration> {
        let everyone: Vec<(&str, bool)> =
            self.pops.iter().map(|pop| (pop.as_str(), true)).collect();
        self.wait_for_members(&self.all(), &everyone, bound)
    }

    /// Polls until the answer of `pool` at every PoP of `which` comes from where `source`
    /// begins to say (`mesh: agreed over 3 PoPs`): answers can agree before every PoP's report
    /// has reached every other, or while one is a moment past its freshness.
    pub fn wait_for_source(
        &self,
        which: &[usize],
        pool: &str,
        source: &str,
        bound: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        for &i in which {
            loop {
                let state = self.status(i)?;
                let Some(selection) = state.pool(pool) else {
                    bail!("{} has no pool {pool}", self.pops[i]);
                };
                if selection.source.starts_with(source) {
                    break;
                }
                if start.elapsed() > bound {
                    bail!(
                        "{}: {pool} not from {source:?} after {bound:?}\n{selection:#?}",
                        self.pops[i]
                    );
                }
                interrupt::check()?;
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(start.elapsed())
    }
}

/// The CDN's zone, as a client's resolver is pointed at it.
pub const CDN_ZONE: &str = "cdn.example";
/// The customer's hostname whose objects the PoPs cache.
pub const STATIC_SITE: &str = "static.shop.example";

/// A PoP of the CDN that a customer's zone hands its names to (the end-to-end test and the
/// demo): zone `cdn.example` with `shop` steered over the origin pool `shop` (the origin all
/// PoPs agree on) and `shop-static` over the PoP pool `pops` (the best PoP from the PoP asked),
/// and a cache for `static.shop.example` in front of the origin pool. The PoP pool's probes
/// name that site (`probe.host`) and fetch `health_path` through each PoP's cache. Steered
/// answers live 5 s in resolvers' caches, so that a client follows a move soon.
pub fn cdn_pop(
    lan: &Lan,
    pop: &str,
    interval: Duration,
    origins: &[Member],
    pops: &[Member],
    health_path: &str,
) -> String {
    let host = lan.host(pop);
    let mut text = xdp_and_dns(lan, pop);
    let steering = "[pools.steering]\nttl = 5\n";
    text += &pool("shop", "origin", interval, steering, origins);
    let probe = format!("host = \"{STATIC_SITE}\"\nhealth_path = \"{health_path}\"\n{steering}");
    text += &pool("pops", "pop", interval, &probe, pops);
    text += &format!(
        "[[zones]]\napex = \"{CDN_ZONE}\"\nttl = 30\n[[zones.nameservers]]\nname = \"{pop}\"\naddresses = [\"{}\"]\n\
         [[zones.names]]\nname = \"shop\"\npool = \"shop\"\n[[zones.names]]\nname = \"shop-static\"\npool = \"pops\"\n",
        host.v4
    );
    text += &format!(
        "[http]\nlisten = \"{}:80\"\ncache_dir = \"{}\"\ncache_capacity = \"16 MiB\"\n\
         [[http.sites]]\nhost = \"{STATIC_SITE}\"\npool = \"shop\"\n",
        host.v4,
        lan.work_dir().join(format!("cache-{pop}")).display()
    );
    text + &mesh(lan, pop, "pop1")
}

/// The customer's zone `shop.example`, served by its own DNS at `ns`: `www` and `static` handed
/// to the CDN by CNAME.
pub fn customer_zone(ns: &Host) -> String {
    format!(
        "$ORIGIN shop.example.\n$TTL 300\n\
         @ SOA ns hostmaster 1 3600 600 86400 300\n\
         @ NS ns\n\
         ns A {}\n\
         www CNAME shop.{CDN_ZONE}.\n\
         static CNAME shop-static.{CDN_ZONE}.\n",
        ns.v4
    )
}
