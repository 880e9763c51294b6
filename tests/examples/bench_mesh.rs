//! `cargo xtask bench mesh`: how fast the PoP mesh moves every PoP's answer, with 5 and 20 PoPs
//! running `edge run` with `[mesh]` in namespaces on one bridge.
//!
//! 1. An origin's load change → every PoP answers the new agreed origin: two origins with real
//!    `edge agent`s (fake /proc); origin 1's CPU flips between 20 % and 90 % (origin 2 at 60 %),
//!    and every PoP is polled, each from a thread of its own, until all answer the new choice.
//! 2. A PoP's death → every other PoP answers without it: every PoP's service (this process's
//!    test HTTP server) and agent; the victim is idle, the others 50 % busy, so every PoP
//!    answers the static name with the victim (in its PoP pool of at most 8: itself, the
//!    victim and its neighbours); the victim is killed (SIGKILL) and the others are polled
//!    until none answers it. It is restarted between trials.
//! 3. Gossip bytes sent per PoP per second, from each PoP's own counters (`edge status`), over
//!    a quiet window in which the probes keep changing the reports.
//!
//! Times are when a PoP's new answer was first seen: late by up to the time between two polls
//! (a stub resolver in the client's namespace, every 10 ms: `Network::watch`), whose longest is
//! reported beside them.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Parser;
use edge_tests::{
    agent::Agent,
    bench::{
        command_output,
        report::{Table, median, replace_section},
    },
    interrupt,
    mesh::{self, AGENT_PORT, GOSSIP, Member, Network},
    origin::Origin,
    topology::Lan,
};

#[derive(Parser)]
struct Args {
    /// Write the report into the `## Mesh` section of this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command that ran this benchmark, for the report.
    #[arg(long, default_value = "cargo xtask bench mesh")]
    command: String,
    /// Trials per measurement.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Network sizes, in PoPs.
    #[arg(long, value_delimiter = ',', default_values_t = [5, 20])]
    sizes: Vec<usize>,
    /// Every pool's probe interval, in milliseconds.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
}

const HTTP_PORT: u16 = 8080;
/// A trial that has not moved every PoP by then failed.
const TRIAL_BOUND: Duration = Duration::from_secs(20);
const GOSSIP_WINDOW: Duration = Duration::from_secs(10);
/// PoPs in each PoP's pool: each probes its pool every round, so full pools cost N² probes
/// (docs/MESH.md); a real PoP's pool holds the PoPs near it.
const POOL_SIZE: usize = 8;
const SHOP: &str = "shop.example.com";
const STATIC: &str = "static.example.com";

struct Testbed {
    origin_agents: Vec<Agent>,
    _pop_agents: Vec<Agent>,
    _servers: Vec<Origin>,
    /// Last: the LAN goes after everything running in it.
    net: Network,
}

impl Testbed {
    /// `n` PoPs (the last idle, the others 50 % busy), a client, two origins (20 % and 60 %).
    fn start(n: usize, interval: Duration) -> Result<Self> {
        let pops: Vec<String> = (1..=n).map(|i| format!("pop{i}")).collect();
        let roles: Vec<&str> = pops
            .iter()
            .map(String::as_str)
            .chain(["client", "origin1", "origin2"])
            .collect();
        let mut net = Network::new(Lan::new(&format!("bench-mesh{n}"), &roles)?, "client");
        let lan = &net.lan;
        let served: Vec<&str> = roles.iter().copied().filter(|r| *r != "client").collect();
        let servers = served
            .iter()
            .map(|role| {
                let host = lan.host(role);
                Origin::start(&host.netns, SocketAddr::new(host.v4.into(), HTTP_PORT))
            })
            .collect::<Result<Vec<_>>>()?;
        let agent = |role: &str, cpu: u64| {
            let host = lan.host(role);
            Agent::start(
                &host.netns,
                SocketAddr::new(host.v4.into(), AGENT_PORT),
                &lan.work_dir().join(format!("proc-{role}")),
                cpu,
            )
        };
        let origin_agents = vec![agent("origin1", 20)?, agent("origin2", 60)?];
        let pop_agents = pops
            .iter()
            .enumerate()
            .map(|(i, pop)| agent(pop, if i == n - 1 { 0 } else { 50 }))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<&str> = pops.iter().map(String::as_str).collect();
        net.start_pops(&names, |lan, pop| {
            let me = names.iter().position(|name| *name == pop).unwrap();
            let origins: Vec<Member> = ["origin1", "origin2"]
                .iter()
                .map(|origin| Member::http(lan.host(origin), HTTP_PORT).with_agent())
                .collect();
            let peers: Vec<Member> = candidates(n, me)
                .into_iter()
                .map(|i| {
                    let member = Member::http(lan.host(names[i]), HTTP_PORT);
                    if i == me { member.with_agent() } else { member }
                })
                .collect();
            mesh::xdp_and_dns(lan, pop)
                + &mesh::pool("shop", "origin", interval, "", &origins)
                + &mesh::pool("pops", "pop", interval, "", &peers)
                + "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"shop\"\npool = \"shop\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n"
                + &mesh::mesh(lan, pop, "pop1")
        })?;
        Ok(Self {
            origin_agents,
            _pop_agents: pop_agents,
            _servers: servers,
            net,
        })
    }

    /// Polls PoPs `which` until `done` holds for each one's answer to `qname`; returns when
    /// the last was first seen done (since `start`) and the longest time between two polls.
    fn until_all(
        &self,
        which: &[usize],
        qname: &str,
        start: Instant,
        done: impl Fn(&[IpAddr]) -> bool + Sync,
    ) -> Result<(Duration, Duration)> {
        let (seen, longest) = self.net.watch(which, qname, start, TRIAL_BOUND, done)?;
        Ok((seen.into_iter().max().unwrap_or_default(), longest))
    }

    fn gossip_bytes(&self, i: usize) -> Result<u64> {
        let state = self.net.status(i)?;
        Ok(state.mesh.context("no mesh")?.counters.bytes_sent)
    }
}

/// The PoP pool of PoP `me` of `n`: itself, the victim (the last PoP) and its next neighbours
/// on a ring, [`POOL_SIZE`] in all, as a real PoP's pool holds the PoPs near it.
fn candidates(n: usize, me: usize) -> Vec<usize> {
    let mut chosen = vec![me, n - 1];
    for step in 1..n {
        let next = (me + step) % n;
        if chosen.len() < POOL_SIZE && !chosen.contains(&next) {
            chosen.push(next);
        }
    }
    chosen.dedup();
    chosen
}

struct Figures {
    load: Vec<f64>,
    death: Vec<f64>,
    poll: Duration,
    gossip: Vec<f64>,
}

fn measure(n: usize, trials: usize, interval: Duration) -> Result<Figures> {
    let mut net = Testbed::start(n, interval)?;
    let all = net.net.all();
    let ip = |role: &str| IpAddr::from(net.net.lan.host(role).v4);
    let (origin1, origin2) = (ip("origin1"), ip("origin2"));
    let victim = n - 1;
    let victim_ip = net.net.ip(victim);
    net.until_all(&all, SHOP, Instant::now(), |a| a == [origin1])?;
    net.until_all(&all, STATIC, Instant::now(), |a| a == [victim_ip])?;
    let mut poll = Duration::ZERO;

    eprintln!("bench: {n} PoPs, gossip bytes over {GOSSIP_WINDOW:?}");
    let before: Vec<u64> = all
        .iter()
        .map(|&i| net.gossip_bytes(i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    while started.elapsed() < GOSSIP_WINDOW {
        interrupt::check()?;
        thread::sleep(Duration::from_millis(100));
    }
    let after: Vec<u64> = all
        .iter()
        .map(|&i| net.gossip_bytes(i))
        .collect::<Result<_>>()?;
    let seconds = started.elapsed().as_secs_f64();
    let gossip = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / seconds)
        .collect();

    eprintln!("bench: {n} PoPs, {trials} load changes");
    let mut load = Vec::new();
    for trial in 0..trials {
        let (cpu, expected) = if trial % 2 == 0 {
            (90, origin2)
        } else {
            (20, origin1)
        };
        net.origin_agents[0].set_cpu(cpu);
        let (took, longest) = net.until_all(&all, SHOP, Instant::now(), |a| a == [expected])?;
        poll = poll.max(longest);
        load.push(took.as_secs_f64() * 1e3);
        eprintln!("bench: {n} PoPs, load change {trial}: {took:.0?} (longest gap {longest:.0?})");
    }

    eprintln!("bench: {n} PoPs, {trials} deaths");
    let others: Vec<usize> = (0..victim).collect();
    let mut death = Vec::new();
    for trial in 0..trials {
        let killed = Instant::now();
        net.net.kill(victim)?;
        let (took, longest) = net.until_all(&others, STATIC, killed, |a| {
            !a.is_empty() && !a.contains(&victim_ip)
        })?;
        poll = poll.max(longest);
        death.push(took.as_secs_f64() * 1e3);
        eprintln!("bench: {n} PoPs, death {trial}: {took:.0?} (longest gap {longest:.0?})");
        net.net.restart(victim)?;
        net.until_all(&all, STATIC, Instant::now(), |a| a == [victim_ip])?;
    }
    Ok(Figures {
        load,
        death,
        poll,
        gossip,
    })
}

fn p99(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<()> {
    let args = Args::parse();
    interrupt::catch();
    let interval = Duration::from_millis(args.interval_ms);
    let started = Instant::now();
    let mut section = format!(
        "## Mesh\n\nProduced by `{}` on {}, in {{elapsed}}.\n\nMachine: {} CPUs, kernel {}, load \
         average {} when it started (the machine is shared: other builds and tests ran beside \
         it).\n\n",
        args.command,
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?,
        command_output("nproc", &[])?,
        command_output("uname", &["-r"])?,
        command_output("cut", &["-d", " ", "-f", "1-3", "/proc/loadavg"])?,
    );
    section += &format!(
        "PoPs run `edge run` with `[mesh]` in namespaces on one bridge, probe interval {} ms, \
         gossip interval {} ms, {} trials each. Times run from the change (the agent's new CPU \
         figure set, the PoP's SIGKILL) to the last PoP's new answer first seen; each PoP is \
         polled every 10 ms from a thread of its own (an in-process stub resolver in the \
         client's namespace), so a time is late by up to the gap between two polls (the \
         longest is given). The origin's load reaches the PoPs through the agent's 100 ms \
         sampling, a probe round, gossip and the next probe round (where PoPs select), and the \
         smoothing of scores (EWMA).\n\n",
        interval.as_millis(),
        GOSSIP.as_millis(),
        args.trials,
    );
    let mut table = Table::new(&[
        "PoPs",
        "load change → all answer, median",
        "p99",
        "PoP death → all answer, median",
        "p99",
        "longest gap between polls",
        "gossip sent per PoP, median (max)",
    ]);
    let mut failures = String::new();
    for &n in &args.sizes {
        // A size the machine cannot hold (probes timing out, PoPs going stale) is reported as
        // such, with what its PoPs saw, rather than ending the run.
        let figures = match measure(n, args.trials, interval) {
            Ok(figures) => figures,
            Err(error) => {
                eprintln!("bench: {n} PoPs failed: {error:#}");
                let first = format!("{error:#}");
                let first = first.lines().next().unwrap_or_default().to_string();
                table.row(vec![n.to_string(), format!("not measured: {first}")]);
                failures += &format!(
                    "\n{n} PoPs: not measured ({first}); the driver's log holds that PoP's \
                     status (probe errors, live members).\n"
                );
                continue;
            }
        };
        let gossip_max = figures.gossip.iter().copied().fold(0.0, f64::max);
        table.row(vec![
            n.to_string(),
            format!("{:.0} ms", median(&figures.load).unwrap()),
            format!("{:.0} ms", p99(&figures.load)),
            format!("{:.0} ms", median(&figures.death).unwrap()),
            format!("{:.0} ms", p99(&figures.death)),
            format!("{:.0} ms", figures.poll.as_secs_f64() * 1e3),
            format!(
                "{:.1} kB/s ({:.1})",
                median(&figures.gossip).unwrap() / 1e3,
                gossip_max / 1e3
            ),
        ]);
    }
    section += &table.markdown();
    section += &failures;
    let section = section.replace(
        "{elapsed}",
        &format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    print!("{section}");
    if let Some(out) = &args.out {
        let document = fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".into());
        fs::write(out, replace_section(&document, "Mesh", &section))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote the Mesh section of {}", out.display());
    }
    Ok(())
}
