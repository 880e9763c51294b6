//! The PoP mesh end to end: three PoPs run `edge run` with `[mesh]` in namespaces on one bridge
//! (`Lan`), gossip to each other, and steer one origin pool; the origins are real HTTP servers
//! with the real `edge agent` beside them reading a fake /proc whose load the test sets (as in
//! steering.rs). kdig asks each PoP from the client; `edge status` shows each PoP's view.
//!
//! A PoP's broken path to an origin is a blackhole route in that PoP's namespace (no netem
//! here); a dead PoP is its process killed.

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use edge_tests::{
    agent::{Agent, SAMPLE},
    edge::scaled,
    mesh::{self, AGENT_PORT, Member, Network},
    origin::Origin,
    topology::{Host, Lan},
};

const HTTP_PORT: u16 = 8080;
/// The probe interval on the host; [`interval`] is the one the PoPs run with.
const INTERVAL: Duration = Duration::from_millis(200);
/// Process scheduling, kdig start-up and jitter on a busy 2-core machine.
const ALLOWANCE: Duration = Duration::from_millis(1500);

/// The probe interval times the slowdown (`EDGE_TEST_SLOWDOWN`): on an emulated CPU a probe
/// alone can take longer than the 150 ms timeout of a 200 ms interval. Every bound below is
/// counted in these intervals, gossip rounds ([`mesh::gossip`]) and [`allowance`]s, so it
/// stays as strict in rounds as on the host.
fn interval() -> Duration {
    scaled(INTERVAL)
}

/// [`ALLOWANCE`] times the slowdown.
fn allowance() -> Duration {
    scaled(ALLOWANCE)
}
const SHOP: &str = "shop.example.com";

/// PoPs `pop1`… (the first is everyone's seed) steering one origin pool, `shop`, whose origins
/// are test origins with agents.
struct Mesh {
    agents: Vec<Agent>,
    _origins: Vec<Origin>,
    /// Last: the LAN goes after everything running in it.
    net: Network,
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
        let mut net = Network::new(Lan::new(test, &roles)?, "client");
        let lan = &net.lan;
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
        let pops: Vec<&str> = pops.iter().map(String::as_str).collect();
        net.start_pops(&pops, |lan, pop| {
            let members: Vec<Member> = origins
                .iter()
                .map(|origin| Member::http(lan.host(&origin.role), HTTP_PORT).with_agent())
                .collect();
            mesh::xdp_and_dns(lan, pop)
                + &mesh::pool("shop", "origin", interval(), "", &members)
                + "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"shop\"\npool = \"shop\"\n"
                + &mesh::mesh(lan, pop, "pop1")
        })?;
        Ok(Self {
            agents,
            _origins: servers,
            net,
        })
    }

    fn answer(&self, i: usize) -> Result<Vec<IpAddr>> {
        self.net.answer(i, SHOP)
    }

    fn host(&self, role: &str) -> &Host {
        self.net.lan.host(role)
    }
}

#[test]
fn three_pops_agree_on_the_origin_and_a_dead_pop_leaves_within_2s() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let mut mesh = Mesh::start("mesh-agree", 3, &[20, 60])?;
    let (origin1, origin2) = (ip(mesh.host("origin1")), ip(mesh.host("origin2")));
    let took = mesh.net.wait_for_everyone(scaled(Duration::from_secs(5)))?;
    eprintln!("3 PoPs see each other live {took:?} after the last started");
    mesh.net
        .wait_for_answers(&[0, 1, 2], SHOP, &[origin1], allowance())?;
    // The answers can agree before every PoP's first report has reached pop1 (or, on a loaded
    // machine, while one report is a moment past its freshness): wait for all three.
    mesh.net
        .wait_for_source(&[0], "shop", "mesh: agreed over 3 PoPs", allowance())?;
    let state = mesh.net.status(0)?;
    let shop = state.pool("shop").unwrap();
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
            .net
            .pop(1)
            .netns
            .command(edge_tests::edge::binary())
            .args(["status", "--config"])
            .arg(&mesh.net.configs[1])
            .output()?;
        let table = String::from_utf8_lossy(&output.stdout);
        if table.contains("mesh (this PoP: pop2): 3 of 3 live")
            && table.contains("from mesh: agreed over 3 PoPs")
        {
            break;
        }
        assert!(start.elapsed() < allowance(), "{table}");
        thread::sleep(Duration::from_millis(20));
    }

    // Origin 1 gets loaded: every PoP moves to origin 2.
    mesh.agents[0].set_cpu(90);
    let took = mesh.net.wait_for_answers(
        &[0, 1, 2],
        SHOP,
        &[origin2],
        SAMPLE + 3 * interval() + allowance(),
    )?;
    eprintln!("origin 1 loaded: all 3 PoPs answered origin 2 within {took:?}");

    // pop3 dies: out of the others' views within 2 s (times the slowdown, as the gossip
    // interval its failure detector counts in).
    mesh.net.kill(2)?;
    let killed = Instant::now();
    let detection = scaled(Duration::from_secs(2));
    let took = mesh
        .net
        .wait_for_members(&[0, 1], &[("pop3", false)], detection)?;
    eprintln!(
        "pop3 killed: out of pop1's and pop2's views within {:?}",
        killed.elapsed()
    );
    assert!(took <= detection);
    // pop1's next round selects over the two live PoPs.
    mesh.net.wait_for_source(
        &[0],
        "shop",
        "mesh: agreed over 2 PoPs",
        2 * interval() + allowance(),
    )?;

    // Restarted, it is back.
    mesh.net.restart(2)?;
    let took = mesh.net.wait_for_everyone(scaled(Duration::from_secs(5)))?;
    eprintln!("pop3 restarted: back in every view within {took:?}");
    mesh.net
        .wait_for_answers(&[0, 1, 2], SHOP, &[origin2], allowance())?;
    Ok(())
}

#[test]
fn five_pops_agree_and_move_together_within_a_probe_round_and_a_gossip_round() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    // Three origins so that the agreed one is not simply the first configured.
    let mesh = Mesh::start("mesh-five", 5, &[40, 20, 60])?;
    let (origin1, origin2) = (ip(mesh.host("origin1")), ip(mesh.host("origin2")));
    let all = mesh.net.all();
    let took = mesh
        .net
        .wait_for_everyone(scaled(Duration::from_secs(10)))?;
    eprintln!("5 PoPs see each other live {took:?} after the last started");
    // All agree on the least-loaded origin, over the five.
    mesh.net
        .wait_for_answers(&all, SHOP, &[origin2], 10 * interval() + allowance())?;
    // The answers can agree before every PoP's first report has reached every other: wait
    // for each PoP's answer to rest on all five.
    mesh.net
        .wait_for_source(&all, "shop", "mesh: agreed over 5 PoPs", allowance())?;

    // Origin 2 gets loaded: every PoP moves to origin 1, the next least loaded. Once the first
    // PoP has moved, the data that moved it is published; each other PoP has it after a gossip
    // round and answers by it at its next probe round. The times are when each PoP's move was
    // first seen, so they are late by up to one gap between polls each: the bound adds the longest.
    mesh.agents[1].set_cpu(90);
    let loaded = Instant::now();
    let (moved, poll) = mesh.net.watch(
        &all,
        SHOP,
        loaded,
        SAMPLE + 10 * interval() + allowance(),
        |answer| answer == [origin1],
    )?;
    let first = *moved.iter().min().unwrap();
    let last = *moved.iter().max().unwrap();
    let spread = last - first;
    // A probe round is the interval within the default jitter of ±10 %.
    let round = interval().mul_f64(1.1);
    let gossip = mesh::gossip();
    let bound = round + gossip + poll;
    eprintln!(
        "origin 2 loaded: first PoP moved after {first:?}, all 5 within {spread:?} of it \
         (bound: probe round {round:?} + gossip {gossip:?} + longest gap between polls \
         {poll:?} = {bound:?}); each: {moved:?}"
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
        thread::sleep(interval());
    }
    Ok(())
}

#[test]
fn a_pop_that_loses_its_path_to_an_origin_answers_what_the_quorum_says() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let mesh = Mesh::start("mesh-quorum", 3, &[20, 60])?;
    let (origin1, origin2) = (ip(mesh.host("origin1")), ip(mesh.host("origin2")));
    mesh.net.wait_for_everyone(scaled(Duration::from_secs(5)))?;
    mesh.net
        .wait_for_answers(&[0, 1, 2], SHOP, &[origin1], allowance())?;

    // pop1 cannot reach origin 1 any more; pop2 and pop3 can.
    let route = format!("{origin1}/32");
    mesh.net
        .pop(0)
        .netns
        .run("ip", &["route", "add", "blackhole", &route])?;
    // Its own probes take origin 1 down (fall 2), and its next report says so.
    let start = Instant::now();
    loop {
        let state = mesh.net.status(0)?;
        let shop = state.pool("shop").unwrap();
        let split = Some(edge_mesh::choose::Quorum { up: 2, down: 1 });
        if shop.members[0].state == "down" && shop.members[0].quorum == split {
            break;
        }
        assert!(start.elapsed() < 4 * interval() + allowance(), "{shop:#?}");
        thread::sleep(Duration::from_millis(20));
    }
    // Its own probes say down, the quorum says up: it keeps answering origin 1, as do the
    // others, over several rounds.
    for _ in 0..5 {
        for i in 0..3 {
            assert_eq!(mesh.answer(i)?, [origin1], "pop{}", i + 1);
        }
        thread::sleep(interval());
    }

    // pop2 loses it too: a majority says down, and every PoP moves to origin 2.
    mesh.net
        .pop(1)
        .netns
        .run("ip", &["route", "add", "blackhole", &route])?;
    let took =
        mesh.net
            .wait_for_answers(&[0, 1, 2], SHOP, &[origin2], 4 * interval() + allowance())?;
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
    let mut net = Network::new(
        Lan::new("mesh-best", &["pop1", "pop2", "pop3", "pop4", "client"])?,
        "client",
    );
    let lan = &net.lan;
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
            server.set_delay_from(ip(lan.host(other)), scaled(Duration::from_millis(distance)));
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
    // Each PoP reads only its own agent: the others' load it knows from the mesh alone, so
    // that its own measurements would answer otherwise (every other PoP as loaded as the one
    // figure it has: itself). Distances times the slowdown weigh as on the host.
    let weights = mesh::pop_weights()?;
    net.start_pops(&PEERS, |lan, pop| {
        let members: Vec<Member> = PEERS
            .iter()
            .map(|peer| {
                let member = Member::http(lan.host(peer), HTTP_PORT);
                if *peer == pop {
                    member.with_agent()
                } else {
                    member
                }
            })
            .collect();
        mesh::xdp_and_dns(lan, pop)
            + &mesh::pool("pops", "pop", interval(), &weights, &members)
            + "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n"
            + &mesh::mesh(lan, pop, "pop1")
    })?;
    // pop1 answers pop2 (near and idle, rather than itself, busy); pop3 answers pop4; pop2
    // and pop4 answer themselves.
    let expected = [1, 1, 3, 3];
    let wanted: Vec<Vec<IpAddr>> = expected.iter().map(|&j| vec![net.ip(j)]).collect();
    let start = Instant::now();
    loop {
        let answers: Vec<Vec<IpAddr>> = net
            .all()
            .into_iter()
            .map(|i| net.answer(i, "static.example.com"))
            .collect::<Result<_>>()?;
        if answers == wanted {
            break;
        }
        if start.elapsed() > 10 * interval() + allowance() {
            let state = net.status(0).ok();
            bail!("answers {answers:?}, not {wanted:?}\n{state:#?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let state = net.status(2)?;
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
    Ok(())
}

/// One scrape of PoP `i`'s `/metrics`: series → value.
fn scrape(mesh: &Mesh, i: usize) -> Result<std::collections::HashMap<String, f64>> {
    let output = mesh
        .net
        .pop(i)
        .netns
        .run("curl", &["-sf", "http://127.0.0.1:9081/metrics"])?;
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The mesh's metrics move with real gossip and with datagrams a client sends at a PoP's gossip
/// port: one not sealed with the secret, one sealed but sent long ago, one sealed and fresh
/// but no chitchat message, and that one again.
#[test]
fn mesh_metrics_count_members_gossip_and_rejected_datagrams() -> Result<()> {
    let mesh = Mesh::start("mesh-metrics", 2, &[20])?;
    let everyone = [("pop1", true), ("pop2", true)];
    mesh.net
        .wait_for_members(&[0, 1], &everyone, scaled(Duration::from_secs(5)))?;
    let value = |scrape: &std::collections::HashMap<String, f64>, series: &str| {
        scrape.get(series).copied().unwrap_or(0.0)
    };
    let live = |scrape: &std::collections::HashMap<String, f64>| {
        value(scrape, r#"edge_mesh_members{state="live"}"#)
    };
    // A member's state is judged every gossip round (live, or stale a moment on a busy machine).
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    let before = loop {
        let before = scrape(&mesh, 0)?;
        if live(&before) == 2.0 || Instant::now() > deadline {
            break before;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(live(&before), 2.0, "{before:?}");
    assert_eq!(value(&before, r#"edge_mesh_members{state="dead"}"#), 0.0);

    let sealer = edge_mesh::transport::Sealer::new(edge_tests::mesh::SECRET.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let fresh = sealer.seal(b"not a chitchat message", now, 1);
    let datagrams = [
        b"forged, not sealed with the secret".to_vec(),
        sealer.seal(b"old", now - 60_000, 2),
        fresh.clone(),
        fresh,
    ];
    let target = SocketAddr::new(mesh.net.ip(0), edge_tests::mesh::GOSSIP_PORT);
    mesh.net
        .lan
        .host("client")
        .netns
        .run_inside(|| -> Result<()> {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            for datagram in &datagrams {
                socket.send_to(datagram, target)?;
                // In order: the replay must come after the datagram it replays was taken.
                thread::sleep(Duration::from_millis(150));
            }
            Ok(())
        })??;

    let dropped = |scrape: &std::collections::HashMap<String, f64>| {
        ["bad_mac", "stale", "undecodable", "replayed"].map(|result| {
            value(
                scrape,
                &format!("edge_mesh_datagrams_received_total{{result=\"{result}\"}}"),
            ) - value(
                &before,
                &format!("edge_mesh_datagrams_received_total{{result=\"{result}\"}}"),
            )
        })
    };
    let accepted = r#"edge_mesh_datagrams_received_total{result="accepted"}"#;
    let gossiped = |scrape: &std::collections::HashMap<String, f64>| {
        value(scrape, accepted) > value(&before, accepted)
            && value(scrape, "edge_mesh_datagrams_sent_total")
                > value(&before, "edge_mesh_datagrams_sent_total")
    };
    // Until the forged ones are counted and a gossip round has gone each way (the interval is
    // longer than the sending above where it scales with the slowdown).
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    let after = loop {
        let after = scrape(&mesh, 0)?;
        if dropped(&after) == [1.0; 4] && live(&after) == 2.0 && gossiped(&after)
            || Instant::now() > deadline
        {
            break after;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        dropped(&after),
        [1.0; 4],
        "bad_mac, stale, undecodable, replayed; {after:?}"
    );
    assert_eq!(
        value(
            &after,
            r#"edge_mesh_datagrams_received_total{result="wrong_cluster"}"#
        ),
        0.0
    );
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert!(moved(accepted) >= 1.0, "{after:?}");
    assert!(moved("edge_mesh_datagrams_sent_total") >= 1.0);
    assert!(moved(r#"edge_mesh_bytes_total{direction="sent"}"#) >= 1.0);
    // Every datagram received counts, the dropped ones too.
    assert!(moved(r#"edge_mesh_bytes_total{direction="received"}"#) > moved(accepted));
    assert_eq!(live(&after), 2.0, "{after:?}");
    Ok(())
}
