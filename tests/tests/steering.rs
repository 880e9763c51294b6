//! Steering end to end: origins are real HTTP servers (tests/src/origin.rs) with the real
//! `edge agent` beside them, reading a fake /proc whose CPU load the test sets
//! (`--proc-root`, tests/src/agent.rs); a PoP runs `edge run`; kdig on a client asks it.
//! Slow origins are the test origin's delay knob; a killed origin is its server stopped.
//! Latency between PoPs is simulated the same way, in the PoP's HTTP server, not with netem.
//!
//! Intervals are 200 ms; every wait is bounded, with bounds from the configured thresholds plus
//! a scheduling allowance. Under `EDGE_TEST_SLOWDOWN` (an emulated CPU, `cargo xtask vm-test`)
//! the intervals, timeouts, allowances and the latencies the test origins simulate are that
//! many times longer, and a PoP pool's millisecond weighs that many times less
//! ([`mesh::pop_weights`]): the same rounds, and the same choices between the same gaps, stand
//! out of an emulated CPU's own jitter (tens of ms on an unloaded origin).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail, ensure};
use edge_steer::status::PoolStatus;
use edge_tests::{
    agent::{Agent, SAMPLE},
    curl::curl,
    dig::kdig,
    edge::{EdgeProcess, counters, scaled, status},
    ftp::Vsftpd,
    mesh,
    origin::Origin,
    topology::{Host, Lan},
};

const HTTP_PORT: u16 = 8080;
const AGENT_PORT: u16 = 9100;
const FTP_PORT: u16 = 2121;
const INTERVAL: Duration = Duration::from_millis(200);
/// The probe timeout.
const TIMEOUT: Duration = Duration::from_millis(150);
/// Process scheduling, kdig start-up and jitter on a busy 2-core machine.
const ALLOWANCE: Duration = Duration::from_millis(1500);

/// [`INTERVAL`] times the slowdown.
fn interval() -> Duration {
    scaled(INTERVAL)
}

/// [`ALLOWANCE`] times the slowdown.
fn allowance() -> Duration {
    scaled(ALLOWANCE)
}

/// A latency a test origin simulates, times the slowdown.
fn latency(ms: u64) -> Duration {
    scaled(Duration::from_millis(ms))
}

/// The A records of an answer, or its status when it is not NOERROR.
type Answer = std::result::Result<Vec<IpAddr>, String>;

/// A PoP (`pop`, host 1) serving `example.com` from `pools`, a client (host 2), and hosts
/// `origin1…` (3…).
struct Setup {
    lan: Lan,
    config: PathBuf,
    edge: Option<EdgeProcess>,
}

fn pool(name: &str, kind: &str, hosts: &[&Host], extra: &str, member_extra: &str) -> String {
    let mut text = format!(
        "[[pools]]\nname = \"{name}\"\nkind = \"{kind}\"\n[pools.probe]\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\njitter = 0.1\nrise = 2\nfall = 2\n[pools.steering]\n{extra}\n",
        interval().as_millis(),
        scaled(TIMEOUT).as_millis()
    );
    for host in hosts {
        text += &format!(
            "[[pools.members]]\nname = \"{}\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\n{member_extra}\n",
            host.role, host.v4
        );
    }
    text
}

impl Setup {
    fn lan(test: &str, origins: usize) -> Result<Lan> {
        let mut roles = vec!["pop".to_string(), "client".to_string()];
        roles.extend((1..=origins).map(|i| format!("origin{i}")));
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        Lan::new(test, &roles)
    }

    /// Starts `edge run` on the PoP with `pools`, one name per `(name, pool)`, and `extra` at
    /// the end of the config.
    fn start(lan: Lan, pools: &str, names: &[(&str, &str)], extra: &str) -> Result<Self> {
        let pop = lan.host("pop");
        let mut text = format!(
            "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n{pools}\n[[zones]]\napex = \"example.com\"\n",
            lan.pin_root().display(),
            pop.v4
        );
        for (name, pool) in names {
            text += &format!("[[zones.names]]\nname = \"{name}\"\npool = \"{pool}\"\n");
        }
        text += extra;
        let config = lan.write_file("edge.toml", &text)?;
        let edge = EdgeProcess::start(&pop.netns, &config, &[])?;
        Ok(Self {
            lan,
            config,
            edge: Some(edge),
        })
    }

    /// The A records `name` answers with, or the response status if not NOERROR.
    fn answer(&self, name: &str) -> Result<Answer> {
        Ok(self.answer_and_ttl(name)?.0)
    }

    /// [`Setup::answer`] and the TTL of the first A record.
    fn answer_and_ttl(&self, name: &str) -> Result<(Answer, Option<u32>)> {
        let server = format!("@{}", self.lan.host("pop").v4);
        let qname = format!("{name}.example.com");
        let reply = kdig(
            &self.lan.host("client").netns,
            &[&server, &qname, "A", "+retry=0", "+time=2"],
        )?;
        let records: Vec<Vec<String>> = reply
            .section("ANSWER")
            .into_iter()
            .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
            .collect();
        let ttl = records.first().and_then(|fields| fields[1].parse().ok());
        match reply.status().as_deref() {
            Some("NOERROR") => Ok((
                Ok(records
                    .iter()
                    .map(|fields| fields[4].parse().unwrap())
                    .collect()),
                ttl,
            )),
            Some(other) => Ok((Err(other.to_string()), None)),
            None => bail!("no answer: {}", reply.text),
        }
    }

    /// Polls `name` until it answers `expected`, within `bound`; returns how long it took and
    /// the TTL of that first matching answer.
    fn wait_for(
        &self,
        name: &str,
        expected: Answer,
        bound: Duration,
    ) -> Result<(Duration, Option<u32>)> {
        let start = Instant::now();
        loop {
            let (answer, ttl) = self.answer_and_ttl(name)?;
            if answer == expected {
                return Ok((start.elapsed(), ttl));
            }
            if start.elapsed() > bound {
                bail!(
                    "{name}: still {answer:?}, not {expected:?}, after {bound:?}\n{:#?}\n{}",
                    status(&self.lan.host("pop").netns, &self.config).ok(),
                    self.edge
                        .as_ref()
                        .map(|edge| edge.log())
                        .unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Hosts `origin1` to `origin{count}` of `lan`.
fn origin_hosts(lan: &Lan, count: usize) -> Vec<Host> {
    (1..=count)
        .map(|i| lan.host(&format!("origin{i}")).clone())
        .collect()
}

fn start_origin(host: &Host) -> Result<Origin> {
    Origin::start(&host.netns, SocketAddr::new(host.v4.into(), HTTP_PORT))
}

fn start_agent(lan: &Lan, host: &Host, cpu: u64) -> Result<Agent> {
    Agent::start(
        &host.netns,
        SocketAddr::new(host.v4.into(), AGENT_PORT),
        &lan.work_dir().join(format!("proc-{}", host.role)),
        cpu,
    )
}

fn ip(host: &Host) -> IpAddr {
    host.v4.into()
}

#[test]
fn answer_is_the_least_loaded_origin_and_follows_the_load() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let lan = Setup::lan("steer-load", 3)?;
    let hosts = origin_hosts(&lan, 3);
    let origins: Vec<Origin> = hosts.iter().map(start_origin).collect::<Result<_>>()?;
    let agents: Vec<Agent> = hosts
        .iter()
        .zip([50, 20, 80])
        .map(|(host, cpu)| start_agent(&lan, host, cpu))
        .collect::<Result<_>>()?;
    let refs: Vec<&Host> = hosts.iter().collect();
    let pools = pool(
        "shop",
        "origin",
        &refs,
        "ewma = 0.6\nhysteresis = 0.1\nttl = 20\nchanging_ttl = 5",
        &format!("agent_port = {AGENT_PORT}"),
    );
    let http = format!(
        "[http]\nlisten = \"{}:80\"\ncache_dir = \"{}\"\ncache_capacity = \"16 MiB\"\n[[http.sites]]\nhost = \"shop.example.com\"\npool = \"shop\"\n",
        lan.host("pop").v4,
        lan.work_dir().join("cache").display()
    );
    let setup = Setup::start(lan, &pools, &[("shop", "shop")], &http)?;
    let fetch = |path: &str| -> Result<u16> {
        let resolve = format!("shop.example.com:80:{}", setup.lan.host("pop").v4);
        let url = format!("http://shop.example.com{path}");
        Ok(curl(
            &setup.lan.host("client").netns,
            &["--resolve", &resolve, &url],
        )?
        .status)
    };

    // Served from the first round on: the least-loaded origin, answered by XDP with the TTL.
    assert_eq!(setup.answer("shop")?, Ok(vec![ip(&hosts[1])]));
    let state = status(&setup.lan.host("pop").netns, &setup.config)?;
    let shop = state.pool("shop").unwrap();
    assert_eq!(shop.selection, [ip(&hosts[1])]);
    assert!(
        shop.members.iter().all(|member| member.state == "up"),
        "{shop:#?}"
    );
    let cpu: Vec<f64> = shop.members.iter().map(|m| m.cpu.unwrap()).collect();
    assert!(
        (cpu[0] - 50.0).abs() < 5.0 && (cpu[2] - 80.0).abs() < 5.0,
        "{cpu:?}"
    );
    // The cache fetches its misses from the same origin.
    assert_eq!(fetch("/before?cc=no-store")?, 200);
    assert_eq!(origins[1].count("/before?cc=no-store"), 1);

    // Origin 2 loaded up, origin 3 down to idle: the answer moves once the agents have
    // sampled the change and one round has seen it.
    agents[1].set_cpu(90);
    agents[2].set_cpu(5);
    // Every snapshot (one lock, one round) holds: the answer stays with a member only while no
    // other beats it by the margin with its score taken `deviations` (1.75, the default)
    // standard errors worse, so it moves in the very round that one does. Origin 3's sudden
    // drop counts as a swing until a round confirms it, so the answer may pass through origin
    // 1 (steady at 50 %, better than origin 2 at 90 %) on its way.
    let uncertainty = 1.75 * (0.6f64 / (2.0 - 0.6)).sqrt();
    let netns = setup.lan.host("pop").netns.clone();
    let deadline = Instant::now() + SAMPLE + 4 * interval() + allowance();
    let mut snapshots = 0;
    loop {
        let state = status(&netns, &setup.config)?;
        let shop = state.pool("shop").unwrap();
        let score = |i: usize| shop.members[i].score.unwrap();
        let deviation = |i: usize| shop.members[i].deviation.unwrap();
        snapshots += 1;
        if shop.selection == [ip(&hosts[2])] {
            break;
        }
        let kept = (0..2)
            .find(|&i| shop.selection == [ip(&hosts[i])])
            .unwrap_or_else(|| panic!("neither origin 1 nor 2: {shop:#?}"));
        assert!(
            (0..3).all(|i| i == kept || score(i) + uncertainty * deviation(i) >= 0.9 * score(kept)),
            "stayed although beaten: {shop:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "the answer did not move: {shop:#?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let (took, _) = setup.wait_for("shop", Ok(vec![ip(&hosts[2])]), allowance())?;
    eprintln!("{snapshots} snapshots before the move; DNS answered it {took:?} later");
    assert_eq!(fetch("/after?cc=no-store")?, 200);
    assert_eq!(origins[2].count("/after?cc=no-store"), 1);
    assert_eq!(origins[1].count("/after?cc=no-store"), 0);
    assert!(
        counters(&setup.config)?["answered"] >= 2,
        "answers came from XDP"
    );

    // The table for people names every member and the answer.
    let output = setup
        .lan
        .host("pop")
        .netns
        .command(edge_tests::edge::binary())
        .args(["status", "--config"])
        .arg(&setup.config)
        .output()?;
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    eprintln!("{table}");
    assert!(
        table.contains(&format!("answer {}", hosts[2].v4)),
        "{table}"
    );
    for host in &hosts {
        assert!(table.contains(&host.role), "{table}");
    }
    // And `--json`, for scripts, the same status the tests read from the admin endpoint.
    let output = setup
        .lan
        .host("pop")
        .netns
        .command(edge_tests::edge::binary())
        .args(["status", "--json", "--config"])
        .arg(&setup.config)
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let json: edge_steer::status::Status = serde_json::from_slice(&output.stdout)?;
    let pool = json.pool("shop").expect("the pool in --json");
    assert_eq!(pool.members.len(), hosts.len(), "{json:#?}");
    Ok(())
}

#[test]
fn a_dead_origin_leaves_the_answer_and_comes_back() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let lan = Setup::lan("steer-dead", 2)?;
    let hosts = origin_hosts(&lan, 2);
    let mut origins: Vec<Option<Origin>> = hosts
        .iter()
        .map(|host| start_origin(host).map(Some))
        .collect::<Result<_>>()?;
    let _agents: Vec<Agent> = hosts
        .iter()
        .zip([10, 60])
        .map(|(host, cpu)| start_agent(&lan, host, cpu))
        .collect::<Result<_>>()?;
    let refs: Vec<&Host> = hosts.iter().collect();
    let pools = pool(
        "shop",
        "origin",
        &refs,
        "ttl = 20\nchanging_ttl = 3",
        &format!("agent_port = {AGENT_PORT}"),
    );
    let setup = Setup::start(lan, &pools, &[("shop", "shop")], "")?;
    let netns = setup.lan.host("pop").netns.clone();
    assert_eq!(setup.answer("shop")?, Ok(vec![ip(&hosts[0])]));

    // fall = 2 failed probes, each at most interval + jitter + timeout apart.
    origins[0] = None;
    let (left, ttl) = setup.wait_for(
        "shop",
        Ok(vec![ip(&hosts[1])]),
        2 * interval() + allowance(),
    )?;
    eprintln!("answer left the dead origin after {left:?}");
    assert_eq!(ttl, Some(3), "the short TTL while origin1's state changes");
    let state = status(&netns, &setup.config)?;
    let member = &state.pool("shop").unwrap().members[0];
    assert_eq!(member.state, "down", "{member:#?}");
    assert!(
        member.error.as_deref().unwrap_or("").contains("health"),
        "{member:#?}"
    );

    // Back up: it returns after rise = 2 good probes, not at the first one.
    let back = Instant::now();
    origins[0] = Some(start_origin(&hosts[0])?);
    let (returned, ttl) = setup.wait_for(
        "shop",
        Ok(vec![ip(&hosts[0])]),
        2 * interval() + allowance(),
    )?;
    eprintln!("answer returned {returned:?} after the origin came back");
    assert!(
        back.elapsed() >= interval().mul_f64(0.9),
        "returned before two probes could have seen it"
    );
    assert_eq!(ttl, Some(3));
    // Settled: the steered TTL again.
    let settled = Instant::now() + 3 * interval() + allowance();
    while setup.answer_and_ttl("shop")?.1 != Some(20) {
        assert!(Instant::now() < settled, "the TTL did not return to 20");
        thread::sleep(Duration::from_millis(50));
    }

    // Drained from the CLI, the origin leaves at once; undrained, it comes back.
    let edge = |args: &[&str]| -> Result<String> {
        let output = netns
            .command(edge_tests::edge::binary())
            .args(args)
            .arg("--config")
            .arg(&setup.config)
            .output()?;
        ensure!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert!(edge(&["drain", "shop", "origin1"])?.contains("drained origin1"));
    setup.wait_for("shop", Ok(vec![ip(&hosts[1])]), allowance())?;
    let state = status(&netns, &setup.config)?;
    assert!(state.pool("shop").unwrap().members[0].drained);
    assert!(edge(&["drain", "shop", "nobody"]).is_err());
    edge(&["undrain", "shop", "origin1"])?;
    setup.wait_for("shop", Ok(vec![ip(&hosts[0])]), allowance())?;
    Ok(())
}

#[test]
fn an_origin_alternating_slow_and_fast_does_not_make_the_answer_flap() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let lan = Setup::lan("steer-flap", 2)?;
    let hosts = origin_hosts(&lan, 2);
    let origins: Vec<Origin> = hosts.iter().map(start_origin).collect::<Result<_>>()?;
    // No agents: ranked by response time. Origin 2 steady at 30 ms, origin 1 alternating
    // between 10 and 50 ms (30 on average) faster than the probes come.
    origins[1].set_delay(latency(30));
    let refs: Vec<&Host> = hosts.iter().collect();
    // The same origins twice: with the default steering settings (issue 21: they flapped), and
    // raw (the control: it must flap, or this test could not tell).
    let pools = pool("steady", "origin", &refs, "", "")
        + &pool(
            "raw",
            "origin",
            &refs,
            "ewma = 1.0\nhysteresis = 0.0\ndeviations = 0.0",
            "",
        );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggler = {
        let stop = stop.clone();
        let origin = &origins[0];
        move || {
            let mut slow = false;
            let deadline = Instant::now() + scaled(Duration::from_secs(30));
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                slow = !slow;
                origin.set_delay(latency(if slow { 50 } else { 10 }));
                thread::sleep(Duration::from_millis(70));
            }
        }
    };
    thread::scope(|scope| -> Result<()> {
        let toggling = scope.spawn(toggler);
        let setup = Setup::start(lan, &pools, &[("steady", "steady"), ("raw", "raw")], "")?;
        let netns = setup.lan.host("pop").netns.clone();
        // Let the averages settle, then count changes over 30 rounds.
        thread::sleep(8 * interval());
        let before = status(&netns, &setup.config)?;
        thread::sleep(30 * interval());
        let after = status(&netns, &setup.config)?;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        toggling.join().expect("toggler");
        let changes =
            |pool: &str| after.pool(pool).unwrap().changes - before.pool(pool).unwrap().changes;
        let rounds = after.pool("steady").unwrap().rounds - before.pool("steady").unwrap().rounds;
        assert!(rounds >= 20, "only {rounds} rounds");
        // Probes sample the alternation at unrelated times, so a run of fast samples can move
        // the answer once, and a run of slow ones back; flapping is doing that again and
        // again, which the control does over the same samples (issue 21: 36 changes in 60
        // rounds with the defaults before the deviation term).
        eprintln!(
            "{} changes with the defaults, {} raw, in {rounds} rounds",
            changes("steady"),
            changes("raw")
        );
        assert!(
            changes("steady") <= 2,
            "the steady pool flapped: {after:#?}"
        );
        assert!(changes("raw") >= 6, "the control did not flap: {after:#?}");
        // The answer is the selection; a round may land between reading one and the other, so
        // read them again until they agree.
        let mut agreed = false;
        for _ in 0..5 {
            let answer = setup.answer("steady")?;
            let steady = status(&netns, &setup.config)?
                .pool("steady")
                .unwrap()
                .selection
                .clone();
            if answer == Ok(steady) {
                agreed = true;
                break;
            }
        }
        assert!(
            agreed,
            "the steady pool's answer never matched its selection"
        );
        Ok(())
    })
}

#[test]
fn all_origins_down_applies_each_pools_policy() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let lan = Setup::lan("steer-alldown", 2)?;
    let hosts = origin_hosts(&lan, 2);
    let mut origins: Vec<Option<Origin>> = hosts
        .iter()
        .map(|host| start_origin(host).map(Some))
        .collect::<Result<_>>()?;
    origins[0].as_ref().unwrap().set_delay(latency(40));
    let refs: Vec<&Host> = hosts.iter().collect();
    let pools = pool("all", "origin", &refs, "all_down = \"answer-all\"", "")
        + &pool("last", "origin", &refs, "all_down = \"keep-last-good\"", "")
        + &pool("fail", "origin", &refs, "all_down = \"servfail\"", "");
    let names = [("all", "all"), ("last", "last"), ("fail", "fail")];
    let setup = Setup::start(lan, &pools, &names, "")?;
    // Origin 2 answers faster: every pool answers with it.
    for (name, _) in names {
        assert_eq!(setup.answer(name)?, Ok(vec![ip(&hosts[1])]), "{name}");
    }
    origins.iter_mut().for_each(|origin| *origin = None);
    // Each pool probes on its own schedule: wait until every one has seen both origins fall.
    let deadline = Instant::now() + 2 * interval() + allowance();
    loop {
        let state = status(&setup.lan.host("pop").netns, &setup.config)?;
        let down = |pool: &PoolStatus| pool.members.iter().all(|m| m.state == "down");
        if state.pools.iter().all(down) {
            assert!(state.pool("fail").unwrap().selection.is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "{state:#?}");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(setup.answer("fail")?, Err("SERVFAIL".into()));
    assert_eq!(setup.answer("all")?, Ok(vec![ip(&hosts[0]), ip(&hosts[1])]));
    assert_eq!(setup.answer("last")?, Ok(vec![ip(&hosts[1])]));
    Ok(())
}

#[test]
fn the_static_hostname_answers_with_the_best_pop() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    // Two PoPs; this one (pop) measures both. Each serves a small object over HTTP and runs
    // an agent; latency is simulated by delaying that object.
    let lan = Lan::new("steer-pops", &["pop", "client", "pop2"])?;
    let (pop1, pop2) = (lan.host("pop").clone(), lan.host("pop2").clone());
    let servers: Vec<Origin> = [&pop1, &pop2]
        .into_iter()
        .map(start_origin)
        .collect::<Result<_>>()?;
    let agents: Vec<Agent> = [(&pop1, 10), (&pop2, 20)]
        .into_iter()
        .map(|(host, cpu)| start_agent(&lan, host, cpu))
        .collect::<Result<_>>()?;
    let _ftp: Vec<Vsftpd> = [&pop1, &pop2]
        .into_iter()
        .map(|host| {
            Vsftpd::start(
                &host.netns,
                SocketAddr::new(host.v4.into(), FTP_PORT),
                &lan.work_dir().join(format!("ftp-{}", host.role)),
            )
        })
        .collect::<Result<_>>()?;
    // pop: 40 ms away, 10 % CPU; pop2: 5 ms away, 20 % CPU. Default PoP weights: one ms
    // weighs as much as one percent of CPU.
    servers[0].set_delay(latency(40));
    servers[1].set_delay(latency(5));
    let pools = pool(
        "pops",
        "pop",
        &[&pop1, &pop2],
        &format!("ewma = 0.6\n{}", mesh::pop_weights()?),
        &format!("agent_port = {AGENT_PORT}\nftp_port = {FTP_PORT}"),
    );
    let setup = Setup::start(lan, &pools, &[("static", "pops")], "")?;
    assert_eq!(setup.answer("static")?, Ok(vec![ip(&pop2)]));
    let state = status(&setup.lan.host("pop").netns, &setup.config)?;
    let pops = state.pool("pops").unwrap();
    let score = |i: usize| pops.members[i].score.unwrap();
    assert!(score(1) < score(0), "{pops:#?}");
    assert!(
        pops.members[0].http_ms.unwrap() >= latency(40).as_secs_f64() * 1000.0,
        "{pops:#?}"
    );
    // Both FTP services were logged into (a failed login would count as the timeout).
    let timeout_ms = scaled(TIMEOUT).as_secs_f64() * 1000.0;
    for member in &pops.members {
        assert!(
            member.ftp_ms.is_some_and(|ms| ms < timeout_ms - 10.0),
            "{member:#?}"
        );
        assert_eq!(member.error, None);
    }

    // pop2 gets busy: 90 % CPU outweighs its 35 ms advantage. pop's score swings with the
    // response and FTP times of a busy machine (±20 ms here), and a challenger must win by the
    // margin with its score taken 1.75 standard errors worse: a few rounds more than without.
    agents[1].set_cpu(90);
    setup.wait_for(
        "static",
        Ok(vec![ip(&pop1)]),
        SAMPLE + 10 * interval() + allowance(),
    )?;
    // And when pop gets slower still, pop2 wins again despite its load (its score still
    // carries the deviation of its load step, which it forgets by 1/16 a round).
    servers[0].set_delay(latency(120));
    setup.wait_for("static", Ok(vec![ip(&pop2)]), 20 * interval() + allowance())?;
    Ok(())
}

#[test]
fn a_reload_adds_a_member_and_keeps_the_rest() -> Result<()> {
    let _timing = edge_tests::serial::timing_sensitive();
    let lan = Setup::lan("steer-reload", 2)?;
    let hosts = origin_hosts(&lan, 2);
    let _origins: Vec<Origin> = hosts.iter().map(start_origin).collect::<Result<_>>()?;
    let _agents: Vec<Agent> = hosts
        .iter()
        .zip([60, 10])
        .map(|(host, cpu)| start_agent(&lan, host, cpu))
        .collect::<Result<_>>()?;
    let agent = format!("agent_port = {AGENT_PORT}");
    let kept = pool("kept", "origin", &[&hosts[0], &hosts[1]], "", &agent);
    let before = pool("grown", "origin", &[&hosts[0]], "", &agent) + &kept;
    let mut setup = Setup::start(lan, &before, &[("grown", "grown"), ("kept", "kept")], "")?;
    let netns = setup.lan.host("pop").netns.clone();
    assert_eq!(setup.answer("grown")?, Ok(vec![ip(&hosts[0])]));
    assert_eq!(setup.answer("kept")?, Ok(vec![ip(&hosts[1])]));
    // Wait for a second round of the unchanged pool, so that a restart (one round) shows.
    let start = Instant::now();
    let rounds = loop {
        let rounds = status(&netns, &setup.config)?.pool("kept").unwrap().rounds;
        if rounds > 1 {
            break rounds;
        }
        ensure!(
            start.elapsed() < 2 * interval() + allowance(),
            "kept: still {rounds} round"
        );
        thread::sleep(Duration::from_millis(20));
    };

    let text = std::fs::read_to_string(&setup.config)?;
    let grown = pool("grown", "origin", &[&hosts[0], &hosts[1]], "", &agent);
    std::fs::write(&setup.config, text.replace(&before, &(grown + &kept)))?;
    setup.edge.as_mut().unwrap().signal(libc::SIGHUP)?;
    setup.wait_for("grown", Ok(vec![ip(&hosts[1])]), allowance())?;
    // The unchanged pool went on counting: its state was kept, not started afresh (which
    // would show one round).
    let state = status(&netns, &setup.config)?;
    assert!(state.pool("kept").unwrap().rounds >= rounds, "{state:#?}");
    assert_eq!(state.pool("grown").unwrap().members.len(), 2);

    // `edge status | head -1` with the reader gone before the table is written: a quiet
    // exit, not a panic (101).
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    let output = netns
        .command(edge_tests::edge::binary())
        .args(["status", "--config"])
        .arg(&setup.config)
        .stdout(writer)
        .output()?;
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
