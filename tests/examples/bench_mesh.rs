//! `cargo xtask bench mesh`: how fast the PoP mesh moves every PoP's answer, with 5 and 20 PoPs
//! running `edge run` with `[mesh]` in namespaces on one bridge.
//!
//! 1. An origin's load change → every PoP answers the new agreed origin: two origins with real
//!    `edge agent`s (fake /proc); origin 1's CPU flips between 20 % and 90 % (origin 2 at 60 %),
//!    and kdig polls every PoP, each from a thread of its own, until all answer the new choice.
//! 2. A PoP's death → every other PoP answers without it: every PoP's service (this process's
//!    test HTTP server) and agent; the victim is idle, the others 50 % busy, so every PoP
//!    answers the static name with the victim (in its PoP pool of at most 8: itself, the
//!    victim and its neighbours); the victim is killed (SIGKILL) and kdig polls the
//!    others until none answers it. It is restarted between trials.
//! 3. Gossip bytes sent per PoP per second, from each PoP's own counters (`edge status`), over
//!    a quiet window in which the probes keep changing the reports.
//!
//! Times are when a PoP's new answer was first seen: late by up to one kdig poll, whose longest
//! duration is reported beside them.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use edge_tests::{
    agent::Agent,
    bench::{
        command_output,
        report::{Table, median, replace_section},
    },
    dig::kdig,
    edge::{EdgeProcess, status},
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
}

const SIZES: [usize; 2] = [5, 20];
const HTTP_PORT: u16 = 8080;
const AGENT_PORT: u16 = 9100;
const GOSSIP_PORT: u16 = 7946;
const INTERVAL: Duration = Duration::from_millis(200);
const GOSSIP: Duration = Duration::from_millis(100);
/// A trial that has not moved every PoP by then failed.
const TRIAL_BOUND: Duration = Duration::from_secs(20);
const GOSSIP_WINDOW: Duration = Duration::from_secs(10);
/// Members a pool may hold (addresses of one family per name).
const MAX_POOL: usize = 8;

struct Network {
    lan: Lan,
    pops: Vec<String>,
    configs: Vec<PathBuf>,
    edges: Vec<Option<EdgeProcess>>,
    _servers: Vec<Origin>,
    origin_agents: Vec<Agent>,
    _pop_agents: Vec<Agent>,
}

impl Network {
    /// `n` PoPs (the last idle, the others 50 % busy), a client, two origins (20 % and 60 %).
    fn start(n: usize) -> Result<Self> {
        let pops: Vec<String> = (1..=n).map(|i| format!("pop{i}")).collect();
        let roles: Vec<&str> = pops
            .iter()
            .map(String::as_str)
            .chain(["client", "origin1", "origin2"])
            .collect();
        let lan = Lan::new(&format!("bench-mesh{n}"), &roles)?;
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
        let seed = format!("{}:{GOSSIP_PORT}", lan.host("pop1").v4);
        let mut configs = Vec::new();
        let mut edges = Vec::new();
        for (me, pop) in pops.iter().enumerate() {
            let host = lan.host(pop);
            let mut text = format!(
                "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n",
                lan.pin_root().join(pop).display(),
                host.v4
            );
            let probe = format!(
                "[pools.probe]\ninterval = \"{}ms\"\ntimeout = \"150ms\"\n",
                INTERVAL.as_millis()
            );
            text += &format!("[[pools]]\nname = \"shop\"\nkind = \"origin\"\n{probe}");
            for origin in ["origin1", "origin2"] {
                text += &format!(
                    "[[pools.members]]\nname = \"{origin}\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\nagent_port = {AGENT_PORT}\n",
                    lan.host(origin).v4
                );
            }
            text += &format!("[[pools]]\nname = \"pops\"\nkind = \"pop\"\n{probe}");
            for peer in candidates(&pops, me) {
                text += &format!(
                    "[[pools.members]]\nname = \"{peer}\"\naddress = \"{}\"\nhttp_port = {HTTP_PORT}\n",
                    lan.host(peer).v4
                );
                if peer == pop {
                    text += &format!("agent_port = {AGENT_PORT}\n");
                }
            }
            text += "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"shop\"\npool = \"shop\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n";
            text += &format!(
                "[mesh]\nname = \"{pop}\"\nlisten = \"{}:{GOSSIP_PORT}\"\nseeds = [\"{seed}\"]\ncluster_id = \"bench-cdn\"\nsecret = \"a bench secret of 32 bytes, ok.\"\ngossip_interval = \"{}ms\"\n",
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
            _servers: servers,
            origin_agents,
            _pop_agents: pop_agents,
        })
    }

    fn ip(&self, role: &str) -> IpAddr {
        self.lan.host(role).v4.into()
    }

    /// The A records `name.example.com` answers with at PoP `i`.
    fn answer(&self, i: usize, name: &str) -> Result<Vec<IpAddr>> {
        let server = format!("@{}", self.lan.host(&self.pops[i]).v4);
        let qname = format!("{name}.example.com");
        let reply = kdig(
            &self.lan.host("client").netns,
            &[&server, &qname, "A", "+retry=0", "+time=1"],
        )?;
        Ok(reply
            .section("ANSWER")
            .into_iter()
            .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
            .filter_map(|fields| fields[4].parse().ok())
            .collect())
    }

    /// Polls PoPs `which`, each on a thread of its own, until `done` holds for its answer to
    /// `name`; returns when the last was first seen done (since `start`) and the longest poll.
    fn until_all(
        &self,
        which: &[usize],
        name: &str,
        start: Instant,
        done: impl Fn(&[IpAddr]) -> bool + Sync,
    ) -> Result<(Duration, Duration)> {
        let done = &done;
        let polls: Vec<Result<(Duration, Duration)>> = thread::scope(|scope| {
            let watchers: Vec<_> = which
                .iter()
                .map(|&i| {
                    scope.spawn(move || {
                        let mut longest = Duration::ZERO;
                        loop {
                            let asked = Instant::now();
                            let answer = self.answer(i, name)?;
                            longest = longest.max(asked.elapsed());
                            if done(&answer) {
                                return Ok((asked.duration_since(start), longest));
                            }
                            if start.elapsed() > TRIAL_BOUND {
                                let state =
                                    status(&self.lan.host(&self.pops[i]).netns, &self.configs[i])
                                        .ok();
                                bail!("pop{} still answers {answer:?}\n{state:#?}", i + 1);
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
        Ok((
            polls.iter().map(|poll| poll.0).max().unwrap(),
            polls.iter().map(|poll| poll.1).max().unwrap(),
        ))
    }

    fn gossip_bytes(&self, i: usize) -> Result<u64> {
        let state = status(&self.lan.host(&self.pops[i]).netns, &self.configs[i])?;
        Ok(state.mesh.context("no mesh")?.counters.bytes_sent)
    }
}

/// The PoP pool of PoP `me`: a pool holds at most 8 members (a name's answer limit), so with
/// more PoPs each holds itself, the victim (the last PoP) and its next neighbours on a ring,
/// as a real PoP holds the PoPs near it.
fn candidates(pops: &[String], me: usize) -> Vec<&String> {
    let n = pops.len();
    let mut chosen = vec![me, n - 1];
    chosen.extend((1..n).map(|step| (me + step) % n));
    chosen.dedup();
    let mut seen = Vec::new();
    for i in chosen {
        if !seen.contains(&i) && seen.len() < MAX_POOL {
            seen.push(i);
        }
    }
    seen.into_iter().map(|i| &pops[i]).collect()
}

struct Figures {
    load: Vec<f64>,
    death: Vec<f64>,
    poll: Duration,
    gossip: Vec<f64>,
}

fn measure(n: usize, trials: usize) -> Result<Figures> {
    let mut net = Network::start(n)?;
    let all: Vec<usize> = (0..n).collect();
    let (origin1, origin2) = (net.ip("origin1"), net.ip("origin2"));
    let victim = n - 1;
    let victim_ip = net.ip(&net.pops[victim]);
    net.until_all(&all, "shop", Instant::now(), |a| a == [origin1])?;
    net.until_all(&all, "static", Instant::now(), |a| a == [victim_ip])?;
    let mut poll = Duration::ZERO;

    eprintln!("bench: {n} PoPs, gossip bytes over {GOSSIP_WINDOW:?}");
    let before: Vec<u64> = all
        .iter()
        .map(|&i| net.gossip_bytes(i))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    thread::sleep(GOSSIP_WINDOW);
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
        let (took, longest) = net.until_all(&all, "shop", Instant::now(), |a| a == [expected])?;
        poll = poll.max(longest);
        load.push(took.as_secs_f64() * 1e3);
    }

    eprintln!("bench: {n} PoPs, {trials} deaths");
    let others: Vec<usize> = (0..victim).collect();
    let mut death = Vec::new();
    for _ in 0..trials {
        net.edges[victim].take().unwrap().kill()?;
        let killed = Instant::now();
        let (took, longest) = net.until_all(&others, "static", killed, |a| {
            !a.is_empty() && !a.contains(&victim_ip)
        })?;
        poll = poll.max(longest);
        death.push(took.as_secs_f64() * 1e3);
        let host = net.lan.host(&net.pops[victim]).netns.clone();
        net.edges[victim] = Some(EdgeProcess::start(&host, &net.configs[victim], &[])?);
        net.until_all(&all, "static", Instant::now(), |a| a == [victim_ip])?;
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
         figure set, the PoP's SIGKILL) to the last PoP's new answer first seen by kdig; each \
         PoP is polled from a thread of its own, so a time is late by up to one poll (the \
         longest is given). The origin's load reaches the PoPs through the agent's 100 ms \
         sampling, a probe round, gossip and the next probe round (where PoPs select), and the \
         smoothing of scores (EWMA).\n\n",
        INTERVAL.as_millis(),
        GOSSIP.as_millis(),
        args.trials,
    );
    let mut table = Table::new(&[
        "PoPs",
        "load change → all answer, median",
        "p99",
        "PoP death → all answer, median",
        "p99",
        "longest poll",
        "gossip sent per PoP, median (max)",
    ]);
    let mut failures = String::new();
    for n in SIZES {
        // A size the machine cannot hold (probes timing out, PoPs going stale) is reported as
        // such, with what its PoPs saw, rather than ending the run.
        let figures = match measure(n, args.trials) {
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
