//! `cargo xtask bench steer`: how fast steering reaches the data plane, and that rewriting the
//! maps loses no query.
//!
//! 1. Decision → visible: a steering round's new selection goes through the daemon's own path
//!    (`Zones::with_selections`, `fast_path::entries`, `AnswerMaps::publish`) into real kernel
//!    maps; the next query through the XDP program (BPF_PROG_TEST_RUN) must carry it.
//! 2. Origin death → answers moved: a real `edge run` with default probe settings steers between
//!    two origins; the chosen one is stopped and kdig polls the PoP until the answer moves.
//! 3. Queries lost during continuous rewrites: trafgen loads the PoP's XDP program over a veth
//!    while this process, holding the data plane, flips the steered answers as fast as it can;
//!    queries and replies are counted at the client end of the veth.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use edge_config::Config;
use edge_dataplane::DataPlane;
use edge_dns::{fast_path, zone::Zones};
use edge_steer::Selections;
use edge_tests::{
    agent::Agent,
    bench::{
        command_output,
        reply_sink::ReplySink,
        report::{Table, median, replace_section},
        trafgen::{self, Addresses, Trafgen, TrafgenRun, Window},
    },
    dig::kdig,
    edge::EdgeProcess,
    origin::Origin,
    topology::{ClientXdp, Lan, Topology},
    xdp::{Program, Query, XDP_TX, dns_of_reply, wire},
};

#[derive(Parser)]
struct Args {
    /// Write the report into the `## Steering` section of this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command that ran this benchmark, for the report.
    #[arg(long, default_value = "cargo xtask bench steer")]
    command: String,
}

const ROUNDS: usize = 101;
const DEATH_RUNS: usize = 3;
const LOAD_QPS: u64 = 200_000;
const LOAD_SECONDS: u64 = 5;
const M1: &str = "198.51.100.1";
const M2: &str = "198.51.100.2";
const M3: &str = "198.51.100.3";
/// Each round picks the next: the generation being written always held another one.
const MEMBERS: [&str; 3] = [M1, M2, M3];

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut section = format!(
        "## Steering\n\nProduced by `{}` on {}, in {{elapsed}}.\n\nMachine: {} CPUs, kernel {}.\n\n",
        args.command,
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?,
        command_output("nproc", &[])?,
        command_output("uname", &["-r"])?,
    );

    eprintln!("bench: decision → visible");
    let mut table = Table::new(&[
        "steered names",
        "decision → visible, median",
        "max",
        "answers written per round",
    ]);
    for names in [1, 100, 1000] {
        let (median_ms, max_ms, written) = decision_to_visible(names)?;
        table.row(vec![
            names.to_string(),
            format!("{median_ms:.3} ms"),
            format!("{max_ms:.3} ms"),
            written.to_string(),
        ]);
    }
    section += &format!(
        "### Decision → first changed XDP answer\n\n{}\n\
         {ROUNDS} rounds per row, cycling through three selections of a pool so that every \
         round rewrites every steered answer: the time to turn a selection into zones, map \
         entries and a published generation. The query right after each round, run through the XDP program \
         (BPF_PROG_TEST_RUN on the real maps), carried the new answer every time.\n\n",
        table.markdown()
    );

    eprintln!("bench: origin death → answers moved");
    let mut moved = Vec::new();
    for run in 0..DEATH_RUNS {
        let seconds = origin_death(run)?;
        eprintln!("bench: run {run}: {seconds:.3} s");
        moved.push(seconds);
    }
    section += &format!(
        "### Origin death → answers moved\n\n\
         | runs | median | each run |\n|---|---|---|\n| {DEATH_RUNS} | {:.2} s | {} |\n\n\
         Default probe settings (interval 500 ms with 10 % jitter, timeout 400 ms, fall 2, rise \
         2, EWMA 0.5, hysteresis 10 %). Two origins with `edge agent`, the less loaded one \
         chosen; at t = 0 its HTTP server and agent stop; kdig asks the PoP every 10 ms until \
         the answer moves. The answer then comes from the XDP program and the userspace server \
         alike, both switched by the same publish. Aim: ≤ 2 s.\n\n",
        median(&moved).unwrap_or(f64::NAN),
        moved
            .iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(" / ")
    );

    eprintln!("bench: queries lost during continuous rewrites");
    let (baseline, rewriting, flips) = lost_during_rewrites()?;
    section += &format!(
        "### Queries lost during continuous map rewrites\n\n\
         | run | queries sent | replies | lost | generation flips |\n|---|---|---|---|---|\n\
         | no rewrites | {} | {} | {} | 0 |\n| rewriting | {} | {} | {} | {flips} |\n\n\
         trafgen (one process on CPU 0, its slow mode) offers {LOAD_QPS} qps for {LOAD_SECONDS} \
         s over the veth to 1,000 static and 100 steered names; meanwhile this process, holding \
         the data plane, flips all steered answers between three selections back to back. Sent \
         and replies are the client end's interface counters, from before trafgen starts until \
         the last reply came (up to 2 s after it stopped). Target: 0 lost.\n",
        baseline.0,
        baseline.1,
        baseline.0.saturating_sub(baseline.1),
        rewriting.0,
        rewriting.1,
        rewriting.0.saturating_sub(rewriting.1),
    );

    let section = section.replace(
        "{elapsed}",
        &format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    print!("{section}");
    if let Some(out) = &args.out {
        let document = fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".into());
        fs::write(out, replace_section(&document, "Steering", &section))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote the Steering section of {}", out.display());
    }
    Ok(())
}

/// A zone with `steered` names on pool `p` (members M1, M2, M3) and `fixed` static names.
fn zone(steered: usize, fixed: usize, interface: &str, pin_root: &Path) -> String {
    let mut text = format!(
        "[xdp]\ninterface = \"{interface}\"\npin_root = \"{}\"\n\
         [[pools]]\nname = \"p\"\nkind = \"origin\"\n\
         members = [{{ name = \"m1\", address = \"{M1}\" }}, {{ name = \"m2\", address = \"{M2}\" }}, \
         {{ name = \"m3\", address = \"{M3}\" }}]\n\
         [[zones]]\napex = \"bench.example\"\n",
        pin_root.display()
    );
    for i in 0..steered {
        text += &format!("[[zones.names]]\nname = \"s{i}\"\npool = \"p\"\n");
    }
    for i in 0..fixed {
        text += &format!(
            "[[zones.names]]\nname = \"f{i}\"\na = [\"10.0.{}.{}\"]\n",
            i / 256,
            i % 256
        );
    }
    text
}

fn selection(member: &str) -> Selections {
    Selections {
        addresses: BTreeMap::from([("p".to_string(), vec![member.parse().unwrap()])]),
        ttls: BTreeMap::from([("p".to_string(), 20)]),
    }
}

/// Median and maximum milliseconds from a selection to its publication, and answers written.
fn decision_to_visible(names: usize) -> Result<(f64, f64, usize)> {
    let text = zone(names, 0, "eth0", Path::new("/sys/fs/bpf/edge"));
    let path = Path::new("bench-steer.toml");
    let base = Zones::build(path, &Config::parse(path, &text)?)?;
    let mut program = Program::load(&text, &[])?;
    let probe = Query::new("s0.bench.example");
    let question_end = 12 + wire("s0.bench.example").len() + 4;
    let (mut times, mut written) = (Vec::new(), 0);
    for round in 0..ROUNDS {
        let member = MEMBERS[(round + 1) % MEMBERS.len()];
        let chosen = selection(member);
        let start = Instant::now();
        let zones = base.with_selections(&chosen);
        let published = program.answers.publish(&fast_path::entries(&zones)?)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        written = published.steered_written;
        let (verdict, out) = program.run(&probe.frame())?;
        let dns = dns_of_reply(&out, false, false);
        let address: IpAddr =
            <[u8; 4]>::try_from(&dns[question_end + 12..question_end + 16])?.into();
        if verdict != XDP_TX || address != member.parse::<IpAddr>()? {
            bail!("round {round}: the XDP answer did not follow ({verdict}, {address})");
        }
    }
    let max = times.iter().copied().fold(0.0, f64::max);
    Ok((median(&times).unwrap_or(f64::NAN), max, written))
}

/// Seconds from stopping the chosen origin to the PoP answering with the other.
fn origin_death(run: usize) -> Result<f64> {
    let lan = Lan::new(
        &format!("bench-death{run}"),
        &["pop", "client", "origin1", "origin2"],
    )?;
    let (o1, o2) = (lan.host("origin1"), lan.host("origin2"));
    let mut origins = Vec::new();
    let mut agents = Vec::new();
    for (host, cpu) in [(o1, 10), (o2, 60)] {
        origins.push(Origin::start(
            &host.netns,
            SocketAddr::new(host.v4.into(), 8080),
        )?);
        let dir = lan.work_dir().join(format!("proc-{}", host.role));
        agents.push(Agent::start(
            &host.netns,
            SocketAddr::new(host.v4.into(), 9100),
            &dir,
            cpu,
        )?);
    }
    let pop = lan.host("pop");
    let mut text = format!(
        "[xdp]\ninterface = \"eth0\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n\
         [[pools]]\nname = \"shop\"\nkind = \"origin\"\n",
        lan.pin_root().display(),
        pop.v4
    );
    for host in [o1, o2] {
        text += &format!(
            "[[pools.members]]\nname = \"{}\"\naddress = \"{}\"\nhttp_port = 8080\nagent_port = 9100\n",
            host.role, host.v4
        );
    }
    text += "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\npool = \"shop\"\n";
    let config = lan.write_file("edge.toml", &text)?;
    let _edge = EdgeProcess::start(&pop.netns, &config, &[])?;
    let server = format!("@{}", pop.v4);
    let client = &lan.host("client").netns;
    let answer = || -> Result<String> {
        let reply = kdig(
            client,
            &[
                &server,
                "www.example.com",
                "A",
                "+short",
                "+retry=0",
                "+time=1",
            ],
        )?;
        Ok(reply.text.trim().to_string())
    };
    let settle = Instant::now() + Duration::from_secs(10);
    while answer()? != o1.v4.to_string() {
        if Instant::now() > settle {
            bail!("the less loaded origin was never chosen: {}", answer()?);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let killed = Instant::now();
    drop(origins.remove(0));
    drop(agents.remove(0));
    let deadline = killed + Duration::from_secs(10);
    loop {
        if answer()? == o2.v4.to_string() {
            return Ok(killed.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("the answer did not move within 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Queries sent and replies received in one trafgen run.
type Counts = (u64, u64);

/// Counts without and with continuous rewrites, and the flips done meanwhile.
fn lost_during_rewrites() -> Result<(Counts, Counts, u64)> {
    let topology = Topology::client_and_pop_with("bench-steer", ClientXdp::None)?;
    let text = zone(100, 1000, Topology::INTERFACE, topology.pin_root());
    let config_path = topology.write_file("edge.toml", &text)?;
    let config = Config::parse(&config_path, &text)?;
    let base = Zones::build(&config_path, &config)?;
    let addresses = Addresses {
        client_mac: topology.client.mac_octets(Topology::INTERFACE)?,
        server_mac: topology.pop.mac_octets(Topology::INTERFACE)?,
        client: Topology::CLIENT_V4.octets(),
        server: Topology::POP_V4.octets(),
    };
    let names = (0..100)
        .map(|i| format!("s{i}.bench.example"))
        .chain((0..1000).map(|i| format!("f{i}.bench.example")));
    let frames = topology.write_file(
        "frames.cfg",
        &trafgen::config(names.map(|name| trafgen::query_frame(&addresses, &name))),
    )?;

    let rewriting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let pop = topology.pop.clone();
    let writer = {
        let (rewriting, stop, flips) = (rewriting.clone(), stop.clone(), flips.clone());
        let xdp = config.xdp.clone().context("the config has [xdp]")?;
        thread::spawn(move || -> Result<()> {
            pop.enter_on_this_thread()?;
            let mut plane = DataPlane::start(&xdp)?;
            plane.services.replace(&fast_path::services(&[]))?;
            plane.answers.publish(&fast_path::entries(&base)?)?;
            ready_tx.send(()).ok();
            let mut round = 0_u64;
            while !stop.load(Ordering::SeqCst) {
                if !rewriting.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                round += 1;
                let chosen = selection(MEMBERS[round as usize % MEMBERS.len()]);
                let published = plane
                    .answers
                    .publish(&fast_path::entries(&base.with_selections(&chosen))?)?;
                if published.flipped {
                    flips.fetch_add(1, Ordering::SeqCst);
                }
            }
            plane.stop(false)
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .context("the data plane did not start")?;
    let _sink = ReplySink::attach(
        &topology.client,
        Topology::INTERFACE,
        topology.pin_root().join("reply-sink"),
    )?;
    let run = |number: usize| -> Result<Counts> {
        let window = Window::open(&topology.client, Topology::INTERFACE)?;
        let trafgen = Trafgen::start(
            &topology.client,
            &TrafgenRun {
                config: &frames,
                interface: Topology::INTERFACE,
                rate: Some(LOAD_QPS),
                seconds: LOAD_SECONDS as f64,
                cpu: 0,
            },
            &topology.work_dir().join(format!("trafgen-{number}.log")),
        )?;
        // The load's length, not a wait for something to happen.
        thread::sleep(Duration::from_secs(LOAD_SECONDS));
        drop(trafgen);
        let counted = window.settle()?;
        Ok((counted.sent, counted.answered))
    };
    let baseline = run(0)?;
    rewriting.store(true, Ordering::SeqCst);
    let loaded = run(1)?;
    stop.store(true, Ordering::SeqCst);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok((baseline, loaded, flips.load(Ordering::SeqCst)))
}
