//! The PoP mesh end to end: three PoPs run `edge run` with `[mesh]` in namespaces on one bridge
//! (`Lan`), gossip to each other, and steer one origin pool; the origins are real HTTP servers
//! with the real `edge agent` beside them reading a fake /proc whose load the test sets (as in
//! steering.rs). kdig asks each PoP from the client; `edge status` shows each PoP's view.
//!
//! A PoP's broken path to an origin is a blackhole route in that PoP's namespace (no netem
//! here); a dead PoP is its process killed.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use edge_mesh::view::State;
use edge_tests::{
    agent::{Agent, SAMPLE},
    dig::kdig,
    edge::{EdgeProcess, status},
    origin::Origin,
    topology::{Host, Lan},
};

const HTTP_PORT: u16 = 8080;
const AGENT_PORT: u16 = 9100;
const GOSSIP_PORT: u16 = 7946;
const INTERVAL: Duration = Duration::from_millis(200);
/// The PoPs' `[mesh] gossip_interval` (the default, written out so that bounds can name it).
const GOSSIP: Duration = Duration::from_millis(100);
/// Process scheduling, kdig start-up and jitter on a busy 2-core machine.
const ALLOWANCE: Duration = Duration::from_millis(1500);

struct Mesh {
    lan: Lan,
    /// The PoPs' names, `pop1`…: the first is everyone's seed.
    pops: Vec<String>,
    configs: Vec<PathBuf>,
    edges: Vec<Option<EdgeProcess>>,
    _origins: Vec<Origin>,
    agents: Vec<Agent>,
}

fn ip(host: &Host) -> IpAddr {
    host.v4.into()
}

impl Mesh {
    /// `pops` PoPs, a client, and an origin per entry of `cpu`, at that % load.
    fn start(test: &str, pops: usize, cpu: &[u64]) -> Result<Self> {
        let pops: Vec<String> = (1..=pops).map(|i| format!("pop{i}")).collect();
        let origin_names: Vec<String> = (1..=cpu.len()).map(|i| format!("origin{i}")).collect();
        let roles: Vec<&str> = pops
            .iter()
            .map(String::as_str)
            .chain(["client"])
            .chain(origin_names.iter().map(String::as_str))
            .collect();
        let lan = Lan::new(test, &roles)?;
        let origins: Vec<Host> = origin_names
            .iter()
            .map(|role| lan.host(role).clone())
            .collect();
        let servers = origins
            .iter()
            .map(|host| Origin::start(&host.netns, SocketAddr::new(ip(host), HTTP_PORT)))
            .collect::<Result<Vec<_>>>()?;
        let agents = origins
            .iter()
            .zip(cpu)
            .map(|(host, &cpu)| {
                Agent::start(
                    &host.netns,
                    SocketAddr::new(ip(host), AGENT_PORT),
                    &lan.work_dir().join(format!("proc-{}", host.role)),
                    cpu,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let seed = format!("{}:{GOSSIP_PORT}", lan.host("pop1").v4);
        let mut configs = Vec::new();
        let mut edges = Vec::new();
        for pop in &pops {
            let host = lan.host(pop);
            let mut text = format!(
                "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n",
                lan.pin_root().join(pop).display(),
                host.v4
            );
            text += "[[pools]]\nname = \"shop\"\nkind = \"origin\"\n[pools.probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n";
            for origin in &origins {
                text += &format!(
                    "[[pools.members]]\nname = \"{}\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\nagent_port = {AGENT_PORT}\n",
                    origin.role, origin.v4
                );
            }
            text += "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"shop\"\npool = \"shop\"\n";
            text += &format!(
                "[mesh]\nname = \"{pop}\"\nlisten = \"{}:{GOSSIP_PORT}\"\nseeds = [\"{seed}\"]\ncluster_id = \"test-cdn\"\nsecret = \"a test secret of 32 bytes, fine.\"\ngossip_interval = \"{}ms\"\n",
                host.v4,
                GOSSIP.as_millis()
            );
            let config = lan.write_file(&format!("{pop}.toml"), &text)?;
            edges.push(Some(EdgeProcess::start(&host.netns, &config, &[])?));
            configs.push(config);
        }
        Ok(Self {
            lan,
            pops,
            configs,
            edges,
            _origins: servers,
            agents,
        })
    }

    fn pop(&self, i: usize) -> &Host {
        self.lan.host(&self.pops[i])
    }

    /// The A records `shop.example.com` answers with at PoP `i`.
    fn answer(&self, i: usize) -> Result<Vec<IpAddr>> {
        let server = format!("@{}", self.pop(i).v4);
        let reply = kdig(
            &self.lan.host("client").netns,
            &[&server, "shop.example.com", "A", "+retry=0", "+time=2"],
        )?;
        Ok(reply
            .section("ANSWER")
            .into_iter()
            .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
            .map(|fields| fields[4].parse().unwrap())
            .collect())
    }

    fn status(&self, i: usize) -> Result<edge_steer::status::Status> {
        status(&self.pop(i).netns, &self.configs[i])
    }

    /// Polls until every PoP in `pops` answers `expected`; returns how long it took.
    fn wait_for_answers(
        &self,
        pops: &[usize],
        expected: IpAddr,
        bound: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let answers: Vec<Vec<IpAddr>> = pops
                .iter()
                .map(|&i| self.answer(i))
                .collect::<Result<_>>()?;
            if answers.iter().all(|answer| answer == &[expected]) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > bound {
                let states: Vec<_> = pops.iter().map(|&i| self.status(i).ok()).collect();
                bail!("answers {answers:?}, not {expected} after {bound:?}\n{states:#?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls every PoP at once, each on a thread of its own, until each answers `expected`;
    /// returns, per PoP, when its answer was first seen moved (since `start`), and the longest
    /// single poll (the resolution of those times).
    fn watch_move(
        &self,
        expected: IpAddr,
        start: Instant,
        bound: Duration,
    ) -> Result<(Vec<Duration>, Duration)> {
        let polls: Vec<Result<(Duration, Duration)>> = thread::scope(|scope| {
            let watchers: Vec<_> = (0..self.pops.len())
                .map(|i| {
                    scope.spawn(move || {
                        let mut longest = Duration::ZERO;
                        loop {
                            let asked = Instant::now();
                            let answer = self.answer(i)?;
                            longest = longest.max(asked.elapsed());
                            if answer == [expected] {
                                return Ok((asked.duration_since(start), longest));
                            }
                            if start.elapsed() > bound {
                                bail!("pop{} answers {answer:?}, not {expected}", i + 1);
                            }
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
        let longest = polls.iter().map(|&(_, longest)| longest).max().unwrap();
        Ok((polls.into_iter().map(|(moved, _)| moved).collect(), longest))
    }

    /// Polls until every PoP in `pops` sees the mesh members in `wanted` (name, live or not).
    fn wait_for_members(
        &self,
        pops: &[usize],
        wanted: &[(&str, bool)],
        bound: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let mut all = true;
            for &i in pops {
                let state = self.status(i)?;
                let mesh = state.mesh.expect("a mesh");
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
                let states: Vec<_> = pops.iter().map(|&i| self.status(i).ok()).collect();
                bail!("members not {wanted:?} after {bound:?}\n{states:#?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn three_pops_agree_on_the_origin_and_a_dead_pop_leaves_within_2s() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let mut mesh = Mesh::start("mesh-agree", 3, &[20, 60])?;
    let (origin1, origin2) = (ip(mesh.lan.host("origin1")), ip(mesh.lan.host("origin2")));
    let everyone = [("pop1", true), ("pop2", true), ("pop3", true)];
    let took = mesh.wait_for_members(&[0, 1, 2], &everyone, Duration::from_secs(5))?;
    eprintln!("3 PoPs see each other live {took:?} after the last started");
    mesh.wait_for_answers(&[0, 1, 2], origin1, ALLOWANCE)?;
    // The answers can agree before every PoP's first report has reached pop1 (or, on a loaded
    // machine, while one report is a moment past its freshness): wait for all three.
    let start = Instant::now();
    let shop = loop {
        let state = mesh.status(0)?;
        let shop = state.pool("shop").unwrap().clone();
        if shop.source.starts_with("mesh: agreed over 3 PoPs") {
            break shop;
        }
        assert!(start.elapsed() < ALLOWANCE, "{shop:#?}");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        shop.members
            .iter()
            .all(|member| member.quorum == Some(edge_mesh::choose::Quorum { up: 3, down: 0 })),
        "{shop:#?}"
    );
    // The table for people shows the mesh (pop2's answer too waits for all three reports).
    let start = Instant::now();
    loop {
        let output = mesh
            .pop(1)
            .netns
            .command(edge_tests::edge::binary())
            .args(["status", "--config"])
            .arg(&mesh.configs[1])
            .output()?;
        let table = String::from_utf8_lossy(&output.stdout);
        if table.contains("mesh (this PoP: pop2): 3 of 3 live")
            && table.contains("from mesh: agreed over 3 PoPs")
        {
            break;
        }
        assert!(start.elapsed() < ALLOWANCE, "{table}");
        thread::sleep(Duration::from_millis(20));
    }

    // Origin 1 gets loaded: every PoP moves to origin 2.
    mesh.agents[0].set_cpu(90);
    let took = mesh.wait_for_answers(&[0, 1, 2], origin2, SAMPLE + 3 * INTERVAL + ALLOWANCE)?;
    eprintln!("origin 1 loaded: all 3 PoPs answered origin 2 within {took:?}");

    // pop3 dies: out of the others' views within 2 s.
    mesh.edges[2].take().unwrap().kill()?;
    let killed = Instant::now();
    let took = mesh.wait_for_members(&[0, 1], &[("pop3", false)], Duration::from_secs(2))?;
    eprintln!(
        "pop3 killed: out of pop1's and pop2's views within {:?}",
        killed.elapsed()
    );
    assert!(took <= Duration::from_secs(2));
    // pop1's next round selects over the two live PoPs.
    let start = Instant::now();
    loop {
        let state = mesh.status(0)?;
        let shop = state.pool("shop").unwrap();
        if shop.source.starts_with("mesh: agreed over 2 PoPs") {
            break;
        }
        assert!(start.elapsed() < 2 * INTERVAL + ALLOWANCE, "{state:#?}");
        thread::sleep(Duration::from_millis(20));
    }

    // Restarted, it is back.
    let pop3 = mesh.pop(2).netns.clone();
    mesh.edges[2] = Some(EdgeProcess::start(&pop3, &mesh.configs[2], &[])?);
    let took = mesh.wait_for_members(&[0, 1, 2], &everyone, Duration::from_secs(5))?;
    eprintln!("pop3 restarted: back in every view within {took:?}");
    mesh.wait_for_answers(&[0, 1, 2], origin2, ALLOWANCE)?;
    Ok(())
}

#[test]
fn five_pops_agree_and_move_together_within_a_probe_round_and_a_gossip_round() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    // Three origins so that the agreed one is not simply the first configured.
    let mesh = Mesh::start("mesh-five", 5, &[40, 20, 60])?;
    let (origin1, origin2) = (ip(mesh.lan.host("origin1")), ip(mesh.lan.host("origin2")));
    let everyone: Vec<(&str, bool)> = mesh.pops.iter().map(|pop| (pop.as_str(), true)).collect();
    let all: Vec<usize> = (0..5).collect();
    let took = mesh.wait_for_members(&all, &everyone, Duration::from_secs(10))?;
    eprintln!("5 PoPs see each other live {took:?} after the last started");
    // All agree on the least-loaded origin, over the five.
    mesh.wait_for_answers(&all, origin2, 10 * INTERVAL + ALLOWANCE)?;
    // The answers can agree before every PoP's first report has reached every other: wait
    // for each PoP's answer to rest on all five.
    let start = Instant::now();
    for i in all.iter().copied() {
        loop {
            let state = mesh.status(i)?;
            let shop = state.pool("shop").unwrap();
            if shop.source.starts_with("mesh: agreed over 5 PoPs") {
                break;
            }
            assert!(start.elapsed() < ALLOWANCE, "pop{}: {shop:#?}", i + 1);
            thread::sleep(Duration::from_millis(20));
        }
    }

    // Origin 2 gets loaded: every PoP moves to origin 1, the next least loaded. Once the first
    // PoP has moved, the data that moved it is published; each other PoP has it after a gossip
    // round and answers by it at its next probe round. The times are when each PoP's move was
    // first seen, so they are late by up to one poll each: the bound adds the longest poll.
    mesh.agents[1].set_cpu(90);
    let loaded = Instant::now();
    let (moved, poll) = mesh.watch_move(origin1, loaded, SAMPLE + 10 * INTERVAL + ALLOWANCE)?;
    let first = *moved.iter().min().unwrap();
    let last = *moved.iter().max().unwrap();
    let spread = last - first;
    let bound = INTERVAL + GOSSIP + poll;
    eprintln!(
        "origin 2 loaded: first PoP moved after {first:?}, all 5 within {spread:?} of it \
         (bound: probe {INTERVAL:?} + gossip {GOSSIP:?} + longest poll {poll:?} = {bound:?}); \
         each: {moved:?}"
    );
    assert!(
        spread <= bound,
        "the PoPs moved over {spread:?}, more than {bound:?}: {moved:?}"
    );
    // And they stay together on it.
    for _ in 0..3 {
        for i in all.iter().copied() {
            assert_eq!(mesh.answer(i)?, [origin1], "pop{}", i + 1);
        }
        thread::sleep(INTERVAL);
    }
    Ok(())
}

#[test]
fn a_pop_that_loses_its_path_to_an_origin_answers_what_the_quorum_says() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let mesh = Mesh::start("mesh-quorum", 3, &[20, 60])?;
    let (origin1, origin2) = (ip(mesh.lan.host("origin1")), ip(mesh.lan.host("origin2")));
    let everyone = [("pop1", true), ("pop2", true), ("pop3", true)];
    mesh.wait_for_members(&[0, 1, 2], &everyone, Duration::from_secs(5))?;
    mesh.wait_for_answers(&[0, 1, 2], origin1, ALLOWANCE)?;

    // pop1 cannot reach origin 1 any more; pop2 and pop3 can.
    let route = format!("{origin1}/32");
    mesh.pop(0)
        .netns
        .run("ip", &["route", "add", "blackhole", &route])?;
    // Its own probes take origin 1 down (fall 2), and its next report says so.
    let start = Instant::now();
    loop {
        let state = mesh.status(0)?;
        let shop = state.pool("shop").unwrap();
        let split = Some(edge_mesh::choose::Quorum { up: 2, down: 1 });
        if shop.members[0].state == "down" && shop.members[0].quorum == split {
            break;
        }
        assert!(start.elapsed() < 4 * INTERVAL + ALLOWANCE, "{shop:#?}");
        thread::sleep(Duration::from_millis(20));
    }
    // Its own probes say down, the quorum says up: it keeps answering origin 1, as do the
    // others, over several rounds.
    for _ in 0..5 {
        for i in 0..3 {
            assert_eq!(mesh.answer(i)?, [origin1], "pop{}", i + 1);
        }
        thread::sleep(INTERVAL);
    }

    // pop2 loses it too: a majority says down, and every PoP moves to origin 2.
    mesh.pop(1)
        .netns
        .run("ip", &["route", "add", "blackhole", &route])?;
    let took = mesh.wait_for_answers(&[0, 1, 2], origin2, 4 * INTERVAL + ALLOWANCE)?;
    eprintln!("a majority lost origin 1: all 3 PoPs answered origin 2 within {took:?}");
    Ok(())
}

#[test]
fn each_pop_answers_the_static_hostname_with_the_best_pop_from_where_it_stands() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    // Four PoPs in two regions: pop1 and pop2 near each other, pop3 and pop4 near each other,
    // the regions 50 ms apart; pop1 and pop3 are busy. Each PoP's HTTP server (its service, the
    // PoP pool's probe target) delays its answers to the other PoPs by their distance.
    const PEERS: [&str; 4] = ["pop1", "pop2", "pop3", "pop4"];
    let lan = Lan::new("mesh-best", &["pop1", "pop2", "pop3", "pop4", "client"])?;
    let region = |pop: usize| pop / 2;
    let servers: Vec<Origin> = PEERS
        .iter()
        .map(|pop| {
            let host = lan.host(pop);
            Origin::start(&host.netns, SocketAddr::new(ip(host), HTTP_PORT))
        })
        .collect::<Result<_>>()?;
    for (i, server) in servers.iter().enumerate() {
        for (j, other) in PEERS.iter().enumerate().filter(|&(j, _)| j != i) {
            let distance = if region(i) == region(j) { 5 } else { 50 };
            server.set_delay_from(ip(lan.host(other)), Duration::from_millis(distance));
        }
    }
    let _agents: Vec<Agent> = PEERS
        .iter()
        .zip([90, 10, 90, 10])
        .map(|(pop, cpu)| {
            let host = lan.host(pop);
            Agent::start(
                &host.netns,
                SocketAddr::new(ip(host), AGENT_PORT),
                &lan.work_dir().join(format!("proc-{pop}")),
                cpu,
            )
        })
        .collect::<Result<_>>()?;
    let seed = format!("{}:{GOSSIP_PORT}", lan.host("pop1").v4);
    let mut configs = Vec::new();
    let mut edges = Vec::new();
    for pop in PEERS {
        let host = lan.host(pop);
        let mut text = format!(
            "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n",
            lan.pin_root().join(pop).display(),
            host.v4
        );
        text += "[[pools]]\nname = \"pops\"\nkind = \"pop\"\n[pools.probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n";
        // Each PoP reads only its own agent: the others' load it knows from the mesh alone,
        // so that its own measurements would answer otherwise (every other PoP as loaded as
        // the one figure it has: itself).
        for peer in PEERS {
            text += &format!(
                "[[pools.members]]\nname = \"{peer}\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\n",
                lan.host(peer).v4
            );
            if peer == pop {
                text += &format!("agent_port = {AGENT_PORT}\n");
            }
        }
        text += "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n";
        text += &format!(
            "[mesh]\nname = \"{pop}\"\nlisten = \"{}:{GOSSIP_PORT}\"\nseeds = [\"{seed}\"]\ncluster_id = \"test-cdn\"\nsecret = \"a test secret of 32 bytes, fine.\"\n",
            host.v4
        );
        let config = lan.write_file(&format!("{pop}.toml"), &text)?;
        edges.push(EdgeProcess::start(&host.netns, &config, &[])?);
        configs.push(config);
    }
    // pop1 answers pop2 (near and idle, rather than itself, busy); pop3 answers pop4; pop2
    // and pop4 answer themselves.
    let expected = [1, 1, 3, 3];
    let start = Instant::now();
    loop {
        let mut answers = Vec::new();
        for pop in PEERS {
            let server = format!("@{}", lan.host(pop).v4);
            let reply = kdig(
                &lan.host("client").netns,
                &[&server, "static.example.com", "A", "+retry=0", "+time=2"],
            )?;
            let records: Vec<IpAddr> = reply
                .section("ANSWER")
                .into_iter()
                .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
                .map(|fields| fields[4].parse().unwrap())
                .collect();
            answers.push(records);
        }
        let wanted: Vec<Vec<IpAddr>> = expected
            .iter()
            .map(|&j| vec![ip(lan.host(PEERS[j]))])
            .collect();
        if answers == wanted {
            break;
        }
        if start.elapsed() > 10 * INTERVAL + ALLOWANCE {
            let state = status(&lan.host("pop1").netns, &configs[0]).ok();
            bail!("answers {answers:?}, not {wanted:?}\n{state:#?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let state = status(&lan.host("pop3").netns, &configs[2])?;
    let pops = state.pool("pops").unwrap();
    assert_eq!(
        pops.source, "mesh: best from here over 4 PoPs",
        "{state:#?}"
    );
    // Its own figures alone would keep pop3 on itself: pop4's load is unknown to its probes.
    assert_eq!(pops.members[3].cpu, None, "{state:#?}");
    eprintln!(
        "the static hostname answered per asker after {:?}",
        start.elapsed()
    );
    drop(edges);
    Ok(())
}
