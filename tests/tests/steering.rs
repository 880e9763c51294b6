//! Steering end to end: origins are real HTTP servers (tests/src/origin.rs) with the real
//! `edge agent` beside them, reading a fake /proc whose CPU load the test sets
//! (`--proc-root`, tests/src/agent.rs); a PoP runs `edge run`; kdig on a client asks it.
//! Slow origins are the test origin's delay knob; a killed origin is its server stopped.
//! Latency between PoPs is simulated the same way, in the PoP's HTTP server, not with netem.
//!
//! Intervals are 200 ms; every wait is bounded, with bounds from the configured thresholds plus
//! a scheduling allowance.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use edge_tests::{
    agent::{Agent, SAMPLE},
    dig::kdig,
    edge::{EdgeProcess, status},
    origin::Origin,
    topology::{Host, Lan},
};

const HTTP_PORT: u16 = 8080;
const AGENT_PORT: u16 = 9100;
const INTERVAL: Duration = Duration::from_millis(200);
/// Probe timeout in the tests' configs.
const TIMEOUT: Duration = Duration::from_millis(150);
/// Process scheduling, kdig start-up and jitter on a busy 2-core machine.
const ALLOWANCE: Duration = Duration::from_millis(1500);

/// A PoP (`pop`, host 1) serving `example.com` from `pools`, a client (host 2), and hosts
/// `origin1…` (3…).
struct Setup {
    lan: Lan,
    config: PathBuf,
    edge: Option<EdgeProcess>,
}

fn pool(name: &str, kind: &str, hosts: &[&Host], extra: &str, member_extra: &str) -> String {
    let mut text = format!(
        "[[pools]]\nname = \"{name}\"\nkind = \"{kind}\"\n[pools.probe]\ninterval = \"200ms\"\ntimeout = \"150ms\"\njitter = 0.1\nrise = 2\nfall = 2\n[pools.steering]\n{extra}\n"
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

    /// Starts `edge run` on the PoP with `pools` and one name per `(name, pool)`.
    fn start(lan: Lan, pools: &str, names: &[(&str, &str)]) -> Result<Self> {
        let pop = lan.host("pop");
        let mut text = format!(
            "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n{pools}\n[[zones]]\napex = \"example.com\"\n",
            lan.pin_root().display(),
            pop.v4
        );
        for (name, pool) in names {
            text += &format!("[[zones.names]]\nname = \"{name}\"\npool = \"{pool}\"\n");
        }
        let config = lan.write_file("edge.toml", &text)?;
        let edge = EdgeProcess::start(&pop.netns, &config, &[])?;
        Ok(Self {
            lan,
            config,
            edge: Some(edge),
        })
    }

    /// The A records `name` answers with, or the response status if not NOERROR.
    fn answer(&self, name: &str) -> Result<std::result::Result<Vec<IpAddr>, String>> {
        let server = format!("@{}", self.lan.host("pop").v4);
        let qname = format!("{name}.example.com");
        let reply = kdig(
            &self.lan.host("client").netns,
            &[&server, &qname, "A", "+retry=0", "+time=2"],
        )?;
        match reply.status().as_deref() {
            Some("NOERROR") => Ok(Ok(reply
                .section("ANSWER")
                .iter()
                .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
                .map(|fields| fields[4].parse().unwrap())
                .collect())),
            Some(other) => Ok(Err(other.to_string())),
            None => bail!("no answer: {}", reply.text),
        }
    }

    /// Polls `name` until it answers `expected`, within `bound`; returns how long it took.
    fn wait_for(
        &self,
        name: &str,
        expected: std::result::Result<Vec<IpAddr>, String>,
        bound: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let answer = self.answer(name)?;
            if answer == expected {
                return Ok(start.elapsed());
            }
            if start.elapsed() > bound {
                bail!(
                    "{name}: still {answer:?}, not {expected:?}, after {bound:?}\n{:#?}\n{}",
                    status(&self.lan.host("pop").netns, &self.config).ok(),
                    self.edge.as_ref().map(|edge| edge.log()).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn origin(&self, i: usize) -> &Host {
        self.lan.host(&format!("origin{i}"))
    }
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
    let lan = Setup::lan("steer-load", 3)?;
    let hosts: Vec<Host> = (1..=3).map(|i| lan.host(&format!("origin{i}")).clone()).collect();
    let _origins: Vec<Origin> = hosts.iter().map(start_origin).collect::<Result<_>>()?;
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
    let setup = Setup::start(lan, &pools, &[("shop", "shop")])?;

    // Served from the first round on: the least-loaded origin, answered by XDP with the TTL.
    assert_eq!(setup.answer("shop")?, Ok(vec![ip(&hosts[1])]));
    let state = status(&setup.lan.host("pop").netns, &setup.config)?;
    let shop = state.pool("shop").unwrap();
    assert_eq!(shop.selection, [ip(&hosts[1])]);
    assert!(shop.members.iter().all(|member| member.state == "up"), "{shop:#?}");
    let cpu: Vec<f64> = shop.members.iter().map(|m| m.cpu.unwrap()).collect();
    assert!((cpu[0] - 50.0).abs() < 5.0 && (cpu[2] - 80.0).abs() < 5.0, "{cpu:?}");

    // Origin 2 loaded up, origin 3 down to idle: the answer moves once the agents have
    // sampled the change and one round has seen it.
    agents[1].set_cpu(90);
    agents[2].set_cpu(5);
    let took = setup.wait_for(
        "shop",
        Ok(vec![ip(&hosts[2])]),
        SAMPLE + 2 * INTERVAL + ALLOWANCE,
    )?;
    eprintln!("answer moved {took:?} after the load changed");

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
    assert!(table.contains(&format!("answer {}", hosts[2].v4)), "{table}");
    for host in &hosts {
        assert!(table.contains(&host.role), "{table}");
    }
    Ok(())
}
