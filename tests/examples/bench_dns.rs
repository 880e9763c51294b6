//! `cargo xtask bench dns`: answered queries per second at saturation (kxdpgun) and rate and
//! latency (dnsperf) of edge's XDP path, edge's userspace path, Knot DNS with sockets and in its
//! XDP mode, NSD, a no-lookup XDP reflector (the ceiling), and edge with a million names. Every
//! peer runs in the PoP namespace of the same two-namespace topology and serves the same
//! generated zone. Prints a Markdown table and, with `--out`, writes it with the method, the
//! machine and the date. Nothing here asserts a timing.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use edge_common::program_name;
use edge_tests::{
    bench::command_output,
    bench::{
        cpus::{self, CLIENT_CPU, SERVER_CPU},
        load::{self, DnsperfReport, DnsperfRun, KxdpgunReport, KxdpgunRun},
        peers::{self, PeerSetup},
        program_cost::{self, CaseCost, ProgramCost},
        report::{Table, count, median, percent, rate, replace_section},
        zone::{BenchZone, EdgeSettings},
    },
    dig::kdig,
    edge::EdgeProcess,
    topology::{ClientXdp, Topology},
};

const INTERFACE: &str = Topology::INTERFACE;
const SERVER: Ipv4Addr = Topology::POP_V4;
const SMALL_ZONE: usize = 1_000;
const LARGE_ZONE: usize = 1_000_000;
/// Runs per reported point.
const RUNS: usize = 3;
/// kxdpgun: the ladder starts here and grows by `LADDER_FACTOR` per step.
const LADDER_START: u64 = 25_000;
const LADDER_FACTOR: f64 = 1.5;
/// Far above what one kxdpgun thread can send here; the ladder stops before.
const LADDER_MAX: u64 = 12_800_000;
const LADDER_SECONDS: u64 = 2;
const RUN_SECONDS: u64 = 3;
/// A final run during which other processes used more CPUs than this is repeated, up to
/// `MAX_ATTEMPTS` runs in all.
const DISTURBED_ABOVE: f64 = 0.1;
const MAX_ATTEMPTS: usize = 5;
/// A ladder step that does not answer this much more than the best so far adds nothing.
const IMPROVEMENT: f64 = 1.05;
/// The final runs offer the lowest saturated ladder rate answered at least this share of the
/// best.
const NEAR_BEST: f64 = 0.9;
/// A step that answers less than this share of the offered rate saturates the peer.
const SATURATED_BELOW: f64 = 0.95;
/// Below this share of sent queries answered, the server is the limit.
const SERVER_BOUND_BELOW: f64 = 0.95;
/// Busy at least this share of a run, the server core was the limit.
const SERVER_BUSY_ABOVE: f64 = 0.95;
/// Below this share of the offered rate sent, kxdpgun is.
const GENERATOR_BOUND_BELOW: f64 = 0.9;
/// dnsperf: queries in flight for the rate runs, and the fixed rate of the latency runs.
const DNSPERF_OUTSTANDING: u32 = 100;
const DNSPERF_SECONDS: u64 = 3;
const LATENCY_RATE: u64 = 10_000;
const LATENCY_SECONDS: u64 = 2;
/// A million names take a while to parse and publish.
const LARGE_START_TIMEOUT: Duration = Duration::from_secs(180);
const SMALL_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Before each peer, wait up to this long for the machine to be quiet: background CPU use, with
/// the benchmark itself idle, below `QUIET_BELOW`. Above it, the report calls the numbers noisy.
const QUIET_WAIT: Duration = Duration::from_secs(10);
const QUIET_BELOW: f64 = 0.05;

#[derive(Parser)]
struct Args {
    /// Write the report into the `## DNS` section of this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command that ran this benchmark, for the report.
    #[arg(long, default_value = "cargo xtask bench dns")]
    command: String,
    /// Measure only these peers (default: all), e.g. `--peers edge-xdp,reflector` while
    /// working on one of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<Peer>,
    /// Skip timing the XDP programs with BPF_PROG_TEST_RUN.
    #[arg(long)]
    skip_program_cost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    EdgeXdp,
    EdgeXdpMillionHot,
    EdgeXdpMillion,
    EdgeUserspace,
    KnotXdp,
    KnotSockets,
    Nsd,
    Reflector,
}

impl Peer {
    /// Table order: edge first, the ceiling last.
    const ALL: [Self; 8] = [
        Self::EdgeXdp,
        Self::EdgeXdpMillionHot,
        Self::EdgeXdpMillion,
        Self::EdgeUserspace,
        Self::KnotXdp,
        Self::KnotSockets,
        Self::Nsd,
        Self::Reflector,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::EdgeXdp => "edge, XDP path",
            Self::EdgeXdpMillionHot => "edge, XDP path, 1,000,000-name zone, 1,000 names asked",
            Self::EdgeXdpMillion => "edge, XDP path, 1,000,000-name zone, all names asked",
            Self::EdgeUserspace => "edge, userspace path",
            Self::KnotXdp => "Knot DNS 3.2, XDP mode",
            Self::KnotSockets => "Knot DNS 3.2, sockets",
            Self::Nsd => "NSD 4.6",
            Self::Reflector => "XDP reflector, no lookup (ceiling)",
        }
    }

    fn zone(self) -> BenchZone {
        BenchZone::new(match self {
            Self::EdgeXdpMillion | Self::EdgeXdpMillionHot => LARGE_ZONE,
            _ => SMALL_ZONE,
        })
    }

    /// How many of the zone's names the queries ask, spread evenly over it.
    fn asked(self) -> usize {
        match self {
            Self::EdgeXdpMillion => LARGE_ZONE,
            _ => SMALL_ZONE,
        }
    }
}

/// A running peer, held only to be dropped: that stops the server (an [`EdgeProcess`], a
/// `Daemon`) or detaches the program (an `FdLink`).
type Running = Box<dyn std::any::Any>;

/// One final kxdpgun run, with the share of time the server core was busy and the CPUs other
/// processes used meanwhile.
struct FinalRun {
    report: KxdpgunReport,
    server_busy: f64,
    other: f64,
}

/// Everything measured for one peer.
struct Measured {
    /// kxdpgun: the offered rate of the final runs; those runs with the CPUs other processes
    /// used during each; how many runs it took to get them.
    offered: u64,
    saturation: Vec<FinalRun>,
    attempts: usize,
    /// dnsperf as fast as `DNSPERF_OUTSTANDING` allows.
    dnsperf: Vec<DnsperfReport>,
    /// dnsperf at `LATENCY_RATE`.
    latency: Vec<DnsperfReport>,
    /// Background CPU use just before this peer.
    background: f64,
}

impl Measured {
    /// The kept kxdpgun runs.
    fn runs(&self) -> impl Iterator<Item = &KxdpgunReport> {
        self.saturation.iter().map(|run| &run.report)
    }

    fn answered(&self) -> Option<f64> {
        median(&self.runs().map(|run| run.answered_qps).collect::<Vec<_>>())
    }

    /// The median run by answered rate.
    fn median_run(&self) -> Option<&FinalRun> {
        let mut runs: Vec<&FinalRun> = self.saturation.iter().collect();
        runs.sort_by(|a, b| a.report.answered_qps.total_cmp(&b.report.answered_qps));
        runs.get(runs.len() / 2).copied()
    }

    /// What limited the median run.
    fn limit(&self) -> Option<Limit> {
        self.median_run().map(|run| limit(self.offered, run))
    }

    fn sent(&self) -> Option<f64> {
        median(&self.runs().map(|run| run.sent_qps).collect::<Vec<_>>())
    }

    /// The most CPUs other processes used during a kept run.
    fn disturbance(&self) -> f64 {
        self.saturation
            .iter()
            .map(|run| run.other)
            .fold(0.0, f64::max)
    }

    fn dnsperf_qps(&self) -> Option<f64> {
        median(&self.dnsperf.iter().map(|run| run.qps).collect::<Vec<_>>())
    }

    fn latency_us(&self) -> Option<f64> {
        median(
            &self
                .latency
                .iter()
                .map(|run| run.average_latency.as_secs_f64() * 1e6)
                .collect::<Vec<_>>(),
        )
    }

    /// Replies that were not NOERROR, over every final run.
    fn errors(&self) -> u64 {
        self.runs().map(|run| run.replies - run.noerror).sum()
    }
}

/// What held a kxdpgun run's answered rate down. Not the answered share alone: on this kernel
/// a veth whose receiving end is full pushes back on the sender instead of dropping, so a
/// saturated server slows kxdpgun down and still answers nearly all it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// The server core was busy at least `SERVER_BUSY_ABOVE` of the time, or the server
    /// answered fewer than `SERVER_BOUND_BELOW` of the queries sent.
    Server,
    /// The server core had time to spare and kxdpgun sent less than `GENERATOR_BOUND_BELOW` of
    /// the offered rate: the peer could do more than the row shows.
    LoadGenerator,
    /// Neither: the offered rate was.
    Offered,
}

impl Limit {
    fn describe(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::LoadGenerator => "kxdpgun",
            Self::Offered => "offered rate",
        }
    }
}

fn limit(offered: u64, run: &FinalRun) -> Limit {
    if run.server_busy >= SERVER_BUSY_ABOVE || run.report.answered_share() < SERVER_BOUND_BELOW {
        Limit::Server
    } else if run.report.sent_qps < GENERATOR_BOUND_BELOW * offered as f64 {
        Limit::LoadGenerator
    } else {
        Limit::Offered
    }
}

enum Outcome {
    Measured(Measured),
    Skipped(String),
    Failed(String),
}

/// The generated files of one zone size.
struct ZoneFiles {
    zone_file: PathBuf,
    queries: PathBuf,
}

struct Bench {
    topology: Topology,
    server_mac: String,
    /// The PoP end's NAPI kthread.
    napi: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?;
    let topology = Topology::client_and_pop_with("bench-dns", ClientXdp::None)?;
    let bench = Bench {
        napi: cpus::prepare_pop(&topology.pop, INTERFACE)?,
        server_mac: topology.pop.mac(INTERFACE)?,
        topology,
    };

    let mut results = Vec::new();
    for peer in Peer::ALL {
        if !args.peers.is_empty() && !args.peers.contains(&peer) {
            continue;
        }
        eprintln!("bench: {}", peer.label());
        let outcome = match bench.measure(peer) {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Failed(format!("{error:#}")),
        };
        if let Outcome::Failed(error) | Outcome::Skipped(error) = &outcome {
            eprintln!("bench: {}: {error}", peer.label());
        }
        results.push((peer, outcome));
    }
    drop(bench);
    let (costs, case_costs) = if args.skip_program_cost {
        (Vec::new(), Vec::new())
    } else {
        eprintln!("bench: XDP program cost per case");
        (program_costs()?, program_cost::cases(program_cost::ROUNDS)?)
    };

    let section = report(
        &args.command,
        &date,
        started.elapsed(),
        &results,
        &costs,
        &case_costs,
    )?;
    print!("{section}");
    if let Some(out) = &args.out {
        let document = std::fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".into());
        std::fs::write(out, replace_section(&document, "DNS", &section))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote the DNS section of {}", out.display());
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Failed(_)))
        .map(|(peer, _)| peer.label())
        .collect();
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

impl Bench {
    fn measure(&self, peer: Peer) -> Result<Outcome> {
        let files = self.zone_files(peer.zone(), peer.asked())?;
        let running = match self.start(peer, &files)? {
            Ok(running) => running,
            Err(skipped) => return Ok(Outcome::Skipped(skipped)),
        };
        // Detaching an XDP program from a veth (edge's, when it stops) turns threaded NAPI off,
        // which would move the receive work to the client's CPU: on again for every peer.
        self.topology
            .pop
            .set_device_attribute(INTERFACE, "threaded", "1")?;
        cpus::pin(self.napi, SERVER_CPU).context("the PoP end's NAPI thread is gone")?;
        let background = cpus::wait_quiet(QUIET_BELOW, QUIET_WAIT)?;
        let result = self.load(peer, &files, background);
        // kxdpgun leaves its program on the client end; the next peer attaches XDP_PASS there.
        let detached = self.topology.client.detach_xdp(INTERFACE);
        drop(running);
        if peer == Peer::KnotXdp {
            // Knot leaves its redirect program attached when it exits.
            self.topology.pop.detach_xdp(INTERFACE)?;
        }
        detached?;
        Ok(Outcome::Measured(result?))
    }

    /// Writes the zone file of `zone` and the query file asking `asked` of its names (once
    /// each).
    fn zone_files(&self, zone: BenchZone, asked: usize) -> Result<ZoneFiles> {
        let dir = self.topology.work_dir();
        let zone_file = dir.join(format!("bench-{}.zone", zone.names));
        let queries = dir.join(format!("queries-{}-{asked}.txt", zone.names));
        if !zone_file.exists() {
            std::fs::write(&zone_file, zone.zone_file(SERVER))?;
        }
        if !queries.exists() {
            std::fs::write(&queries, zone.sample_query_file(asked))?;
        }
        Ok(ZoneFiles { zone_file, queries })
    }

    /// Starts `peer` in the PoP namespace, or says why it cannot run here.
    fn start(&self, peer: Peer, files: &ZoneFiles) -> Result<Result<Running, String>> {
        let pop = &self.topology.pop;
        let setup = PeerSetup {
            netns: pop,
            dir: &self.topology.work_dir().join(format!("{peer:?}")),
            zone_file: &files.zone_file,
            listen: SERVER,
            cpu: SERVER_CPU,
        };
        let running: Running = match peer {
            Peer::EdgeXdp | Peer::EdgeXdpMillion | Peer::EdgeXdpMillionHot => {
                let timeout = if peer.zone().names == LARGE_ZONE {
                    LARGE_START_TIMEOUT
                } else {
                    SMALL_START_TIMEOUT
                };
                Box::new(self.start_edge(peer, "native", None, timeout)?)
            }
            Peer::EdgeUserspace => {
                let listen = SocketAddr::from((SERVER, 53));
                let config = self.edge_config(peer, "generic", Some(listen))?;
                if let Err(refused) = edge_check(&config)? {
                    return Ok(Err(format!(
                        "skipped: this edge has no userspace DNS server yet (`edge check` \
                         refuses `[dns] listen`: {refused})"
                    )));
                }
                Box::new(self.start_edge(peer, "generic", Some(listen), SMALL_START_TIMEOUT)?)
            }
            Peer::KnotXdp => Box::new(peers::start_knot(&setup, Some(INTERFACE))?),
            Peer::KnotSockets => Box::new(peers::start_knot(&setup, None)?),
            Peer::Nsd => Box::new(peers::start_nsd(&setup)?),
            Peer::Reflector => Box::new(pop.attach_xdp(INTERFACE, program_name::REFLECT)?),
        };
        Ok(Ok(running))
    }

    fn edge_config(
        &self,
        peer: Peer,
        mode: &str,
        dns_listen: Option<SocketAddr>,
    ) -> Result<PathBuf> {
        // The userspace row puts the XDP program on lo, so that every query on the veth reaches
        // the userspace server.
        let interface = if peer == Peer::EdgeUserspace {
            "lo"
        } else {
            INTERFACE
        };
        let text = peer.zone().edge_config(&EdgeSettings {
            interface,
            pin_root: self.topology.pin_root(),
            mode,
            dns_listen,
        });
        self.topology.write_file(&format!("{peer:?}.toml"), &text)
    }

    fn start_edge(
        &self,
        peer: Peer,
        mode: &str,
        dns_listen: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<EdgeProcess> {
        let config = self.edge_config(peer, mode, dns_listen)?;
        let edge = EdgeProcess::start_within(&self.topology.pop, &config, &[], timeout)?;
        cpus::pin(edge.id(), SERVER_CPU)?;
        Ok(edge)
    }

    /// dnsperf (with XDP_PASS on the client end, so that XDP_TX replies arrive), then kxdpgun.
    fn load(&self, peer: Peer, files: &ZoneFiles, background: f64) -> Result<Measured> {
        let (dnsperf, latency) = {
            let _pass = self.topology.attach_client_pass()?;
            self.wait_answering(peer)?;
            let run = |rate: Option<u64>, seconds: u64| {
                load::dnsperf(
                    &self.topology.client,
                    &DnsperfRun {
                        server: SERVER,
                        queries: &files.queries,
                        rate,
                        outstanding: DNSPERF_OUTSTANDING,
                        seconds,
                        cpu: CLIENT_CPU,
                    },
                )
            };
            let dnsperf = (0..RUNS)
                .map(|_| run(None, DNSPERF_SECONDS))
                .collect::<Result<Vec<_>>>()?;
            let latency = (0..RUNS)
                .map(|_| run(Some(LATENCY_RATE), LATENCY_SECONDS))
                .collect::<Result<Vec<_>>>()?;
            (dnsperf, latency)
        };
        let offered = self.saturation_rate(&files.queries)?;
        let (saturation, attempts) = self.final_runs(&files.queries, offered)?;
        Ok(Measured {
            offered,
            saturation,
            attempts,
            dnsperf,
            latency,
            background,
        })
    }

    /// `RUNS` runs at `offered`. A run during which other processes used more than
    /// `DISTURBED_ABOVE` CPUs is repeated, up to `MAX_ATTEMPTS` runs in all; the `RUNS` least
    /// disturbed are kept, with the CPUs others used during each.
    fn final_runs(&self, queries: &Path, offered: u64) -> Result<(Vec<FinalRun>, usize)> {
        let mut runs: Vec<FinalRun> = Vec::new();
        let undisturbed = |runs: &[FinalRun]| {
            runs.iter()
                .filter(|run| run.other <= DISTURBED_ABOVE)
                .count()
        };
        while runs.len() < RUNS || (undisturbed(&runs) < RUNS && runs.len() < MAX_ATTEMPTS) {
            let other = cpus::OtherWork::start()?;
            let busy = cpus::CpuBusy::start()?;
            let run = self.kxdpgun(queries, offered, RUN_SECONDS)?;
            let server_busy = busy.share(SERVER_CPU)?;
            let used = other.cpus_used()?;
            eprintln!(
                "bench:   run at {:>8}: answered {:>8}; CPU {SERVER_CPU} {:.0} % busy; other \
                 processes used {used:.2} CPUs",
                rate(offered as f64),
                rate(run.answered_qps),
                server_busy * 100.0
            );
            runs.push(FinalRun {
                report: run,
                server_busy,
                other: used,
            });
        }
        let attempts = runs.len();
        runs.sort_by(|a, b| a.other.total_cmp(&b.other));
        runs.truncate(RUNS);
        Ok((runs, attempts))
    }

    /// Waits until the peer answers the first name with its address (the reflector: with any
    /// response), which also checks that every peer serves the same data.
    fn wait_answering(&self, peer: Peer) -> Result<()> {
        let server = format!("@{SERVER}");
        let name = BenchZone::name(0);
        let expected = BenchZone::address(0).to_string();
        let mut last = String::new();
        for _ in 0..20 {
            let reply = kdig(
                &self.topology.client,
                &[&server, &name, "A", "+time=1", "+retry=0"],
            )?;
            let answered = reply.status().as_deref() == Some("NOERROR")
                && (peer == Peer::Reflector
                    || reply
                        .section("ANSWER")
                        .iter()
                        .any(|record| record.get(4) == Some(&expected)));
            if answered {
                return Ok(());
            }
            last = reply.text;
            thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "{} does not answer {name} A with {expected}:\n{last}",
            peer.label()
        )
    }

    /// The offered rate for the final runs: the lowest ladder rate at which the peer is
    /// saturated (it answers fewer than it is offered) and still answers at least `NEAR_BEST`
    /// of the best step. The rate grows by `LADDER_FACTOR` from `LADDER_START` until two steps
    /// in a row add less than `IMPROVEMENT` to the best answered rate. Overloading an XDP peer
    /// far beyond its peak often drops it into a slower steady state (the veth and kxdpgun's
    /// copy-mode transmit hand off differently), so the final runs stay near the knee.
    fn saturation_rate(&self, queries: &Path) -> Result<u64> {
        let mut steps: Vec<(u64, KxdpgunReport)> = Vec::new();
        let mut best = 0.0_f64;
        let mut without_gain = 0;
        let mut offered = LADDER_START;
        while offered <= LADDER_MAX && without_gain < 2 {
            let run = self.step(queries, offered)?;
            if run.answered_qps > best * IMPROVEMENT {
                without_gain = 0;
            } else {
                without_gain += 1;
            }
            best = best.max(run.answered_qps);
            steps.push((offered, run));
            offered = (offered as f64 * LADDER_FACTOR) as u64;
        }
        let near_best = |run: &KxdpgunReport| run.answered_qps >= NEAR_BEST * best;
        let saturated =
            |offered: u64, run: &KxdpgunReport| run.answered_qps < SATURATED_BELOW * offered as f64;
        steps
            .iter()
            .filter(|(rate, run)| near_best(run) && saturated(*rate, run))
            .map(|(rate, _)| *rate)
            .min()
            .or_else(|| {
                // Never saturated below the ladder's top: kxdpgun was the limit throughout.
                steps
                    .iter()
                    .filter(|(_, run)| near_best(run))
                    .map(|(rate, _)| *rate)
                    .max()
            })
            .context("no ladder step")
    }

    /// One ladder step.
    fn step(&self, queries: &Path, offered: u64) -> Result<KxdpgunReport> {
        let run = self.kxdpgun(queries, offered, LADDER_SECONDS)?;
        eprintln!(
            "bench:   offered {:>8}: sent {:>8}, answered {:>8}",
            rate(offered as f64),
            rate(run.sent_qps),
            rate(run.answered_qps)
        );
        Ok(run)
    }

    fn kxdpgun(&self, queries: &Path, offered: u64, seconds: u64) -> Result<KxdpgunReport> {
        load::kxdpgun(
            &self.topology.client,
            &KxdpgunRun {
                server: SERVER,
                queries,
                interface: INTERFACE,
                server_mac: &self.server_mac,
                rate: offered,
                seconds,
                cpu: CLIENT_CPU,
            },
        )
    }
}

/// `edge check` on `config`: `Ok(Err(reason))` when edge refuses it.
fn edge_check(config: &Path) -> Result<Result<(), String>> {
    let output = Command::new(edge_tests::edge::binary())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .context("running edge check")?;
    if output.status.success() {
        return Ok(Ok(()));
    }
    let reason = String::from_utf8_lossy(&output.stderr);
    Ok(Err(reason
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()))
}

/// `program` and the version it reports in `program args…`.
fn version(program: &str, args: &[&str]) -> String {
    let reported = command_output(program, args).ok().and_then(|text| {
        text.lines()
            .find(|line| line.to_ascii_lowercase().contains("version"))
            .and_then(|line| line.split_whitespace().last())
            .map(str::to_string)
    });
    format!(
        "{program} {}",
        reported.as_deref().unwrap_or("(version unknown)")
    )
}

/// Zone size and names asked of each program-cost row: the two zones of the table, and a
/// sample of the large one spread thinly enough that its lookups miss the caches.
const COST_ROWS: [(usize, usize); 3] = [
    (SMALL_ZONE, SMALL_ZONE),
    (LARGE_ZONE, SMALL_ZONE),
    (LARGE_ZONE, 10 * SMALL_ZONE),
];

/// Each [`COST_ROWS`] row's cost, timed with BPF_PROG_TEST_RUN.
fn program_costs() -> Result<Vec<(usize, usize, ProgramCost)>> {
    COST_ROWS
        .iter()
        .map(|&(names, asked)| {
            eprintln!("bench: XDP program cost, {names} names, {asked} asked");
            Ok((
                names,
                asked,
                program_cost::measure(BenchZone::new(names), asked)?,
            ))
        })
        .collect()
}

/// The program-cost table.
fn program_cost_section(costs: &[(usize, usize, ProgramCost)]) -> String {
    let mut table = Table::new(&[
        "zone",
        "names asked",
        "edge_dns",
        "reflector",
        "edge_dns − reflector",
    ]);
    for (names, asked, cost) in costs {
        table.row(vec![
            count(*names as u64),
            count(*asked as u64),
            format!("{:.0} ns", cost.edge),
            format!("{:.0} ns", cost.reflector),
            format!("{:.0} ns", cost.edge - cost.reflector),
        ]);
    }
    format!(
        "\n### XDP program cost per query\n\n\
         Apart from the veth pair, kxdpgun and their scheduling: every query frame of the row runs \
         through `edge_dns` (the zone loaded as edge publishes it) and through the reflector with \
         BPF_PROG_TEST_RUN, one run per call, {ROUNDS} rounds; the kernel times each run and a \
         frame's figure is its fastest round (which filters out other work on the machine). The \
         figures include the test-run call's own overhead, the same for both programs; the last \
         column is what answering from the maps adds. Each run enters the kernel anew, so in the \
         million-name rows the TLB and caches are colder than in the receive loop of the table \
         above, where the million-name zone with 1,000 names asked keeps up with the \
         1,000-name zone.\n\n{}",
        table.markdown(),
        ROUNDS = program_cost::ROUNDS,
    )
}

/// The per-case table: the XDP program's test cases, timed.
fn case_cost_section(costs: &[CaseCost]) -> String {
    let mut table = Table::new(&["case", "verdict", "counter", "edge_dns"]);
    for cost in costs {
        table.row(vec![
            cost.name.clone(),
            edge_tests::xdp_cases::verdict_name(cost.verdict),
            cost.counter.to_string(),
            format!("{:.0} ns", cost.nanos),
        ]);
    }
    format!(
        "\n### XDP program cost per case\n\n\
         The cases the tests run (`tests/src/xdp_cases.rs`: frame in, verdict, frame out, \
         counter), each checked as the tests check it, then run through `edge_dns` with \
         BPF_PROG_TEST_RUN over the shared test zone, {ROUNDS} rounds; a case's figure is its \
         fastest round, the test-run call's overhead included. What a passed frame costs before \
         the kernel stack sees it, and what each answered shape costs.\n\n{}",
        table.markdown(),
        ROUNDS = program_cost::ROUNDS,
    )
}

fn report(
    command: &str,
    date: &str,
    took: Duration,
    results: &[(Peer, Outcome)],
    costs: &[(usize, usize, ProgramCost)],
    case_costs: &[CaseCost],
) -> Result<String> {
    let measured = |peer: Peer| {
        results.iter().find_map(|(p, outcome)| match outcome {
            Outcome::Measured(measured) if *p == peer => Some(measured),
            _ => None,
        })
    };
    let answered = |peer: Peer| measured(peer).and_then(Measured::answered);

    let mut table = Table::new(&[
        "peer",
        "kxdpgun answered qps",
        "kxdpgun sent qps",
        "limited by",
        "CPU 1 busy",
        "answered qps, 3 runs",
        "dnsperf qps",
        "dnsperf latency at 10 k qps",
    ]);
    let mut notes = Vec::new();
    for (peer, outcome) in results {
        let mut cells = vec![peer.label().to_string()];
        match outcome {
            Outcome::Measured(m) => {
                let optional = |value: Option<f64>| value.map(rate).unwrap_or_default();
                cells.push(optional(m.answered()));
                cells.push(format!(
                    "{} (offered {})",
                    optional(m.sent()),
                    rate(m.offered as f64)
                ));
                cells.push(
                    m.limit()
                        .map(Limit::describe)
                        .unwrap_or_default()
                        .to_string(),
                );
                cells.push(
                    m.median_run()
                        .map(|run| format!("{:.0} %", run.server_busy * 100.0))
                        .unwrap_or_default(),
                );
                cells.push(
                    m.runs()
                        .map(|run| rate(run.answered_qps))
                        .collect::<Vec<_>>()
                        .join(" / "),
                );
                cells.push(optional(m.dnsperf_qps()));
                cells.push(
                    m.latency_us()
                        .map(|us| format!("{us:.0} µs"))
                        .unwrap_or_default(),
                );
                if m.disturbance() > DISTURBED_ABOVE {
                    notes.push(format!(
                        "{}: other processes used up to {:.2} CPUs during the kxdpgun runs kept \
                         ({} runs were needed for {RUNS}): noisy.",
                        peer.label(),
                        m.disturbance(),
                        m.attempts
                    ));
                }
                if m.errors() > 0 {
                    notes.push(format!(
                        "{}: {} replies were not NOERROR.",
                        peer.label(),
                        m.errors()
                    ));
                }
                let lost: u64 = m.latency.iter().map(|run| run.lost).sum();
                if lost > 0 {
                    notes.push(format!(
                        "{}: dnsperf lost {lost} queries at {} qps.",
                        peer.label(),
                        rate(LATENCY_RATE as f64)
                    ));
                }
            }
            Outcome::Skipped(why) | Outcome::Failed(why) => {
                cells.push(match outcome {
                    Outcome::Failed(_) => "failed".to_string(),
                    _ => "skipped".to_string(),
                });
                notes.push(format!("{}: {why}", peer.label()));
            }
        }
        table.row(cells);
    }

    let backgrounds: Vec<f64> = results
        .iter()
        .filter_map(|(_, outcome)| match outcome {
            Outcome::Measured(m) => Some(m.background),
            _ => None,
        })
        .collect();
    let busiest = backgrounds.iter().copied().fold(0.0, f64::max);
    if busiest > QUIET_BELOW {
        notes.push(format!(
            "Other work shared the machine during this run (up to {:.0} % of all CPU time was \
             busy between peers, when the benchmark itself was idle, after waiting up to {} s \
             for quiet): the numbers are noisy.",
            busiest * 100.0,
            QUIET_WAIT.as_secs()
        ));
    }

    let edge = answered(Peer::EdgeXdp);
    let knot_xdp = answered(Peer::KnotXdp);
    let times_knot = match (edge, knot_xdp) {
        (Some(edge), Some(knot)) if knot > 0.0 => format!("{:.1}×", edge / knot),
        _ => "n/a".to_string(),
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let nproc = thread::available_parallelism()?.get();

    let mut text = String::new();
    text.push_str("## DNS\n\n");
    text.push_str(&format!(
        "Produced by `{command}` on {date}, in {:.0} s.\n\n",
        took.as_secs_f64()
    ));
    text.push_str(&format!(
        "Machine: {nproc} CPUs ({cpu_model}), kernel {}. Tools: {}; {}; {}; {}.\n\n",
        kernel.trim(),
        version("kxdpgun", &["-V"]),
        version("dnsperf", &["-h"]),
        version("knotd", &["-V"]),
        version("nsd", &["-v"]),
    ));
    text.push_str(&table.markdown());
    text.push_str(&format!(
        "\n- edge XDP path vs the reflector (target ≥ 90 %): {}\n\
         - edge XDP path vs Knot DNS's XDP mode (target ≥ 4×): {times_knot}\n\
         - 1,000,000-name zone vs 1,000-name zone, 1,000 names asked of each (target ≥ 90 %): \
         {}\n\
         - 1,000,000-name zone asking all its names vs 1,000-name zone (no target: every \
         lookup goes to memory): {}\n",
        percent(edge, answered(Peer::Reflector)),
        percent(answered(Peer::EdgeXdpMillionHot), edge),
        percent(answered(Peer::EdgeXdpMillion), edge),
    ));
    if !costs.is_empty() {
        text.push_str(&program_cost_section(costs));
    }
    if !case_costs.is_empty() {
        text.push_str(&case_cost_section(case_costs));
    }
    if !notes.is_empty() {
        text.push_str("\nNotes:\n\n");
        for note in &notes {
            text.push_str(&format!("- {note}\n"));
        }
    }
    text.push_str(&format!(
        "\n### Method\n\n\
         - Topology: two network namespaces, client ({client}) and PoP ({SERVER}), joined by one \
         veth pair; every peer runs in the PoP namespace in turn. IPv4, UDP, A queries.\n\
         - Zone `bench.example`: {small} names with one A record each (edge: TOML config; \
         Knot and NSD: the same names in a zone file). Queries: every name once, in a fixed \
         shuffled order, repeated. The million-name rows serve {large} names: one asks \
         {small} of them, spread evenly over the zone (every {stride}th name), so that the same \
         query load meets a table a thousand times larger, as the issue asks; the other asks all \
         of them, so that nearly every lookup misses the CPU caches.\n\
         - CPUs: {layout}\n\
         - kxdpgun (one AF_XDP thread, batches of 64): the offered rate grows by {factor} from {start} \
         in {LADDER_SECONDS} s steps until two steps in a row add less than {gain:.0} % to the \
         best answered rate. The final runs offer the lowest rate that saturated the peer (it \
         answered less than {saturated:.0} % of the offered rate) and was answered at least \
         {near:.0} % as well as the best step: far beyond its peak an XDP peer more often settles \
         into a slower steady state (it flips between two also near the knee; why is not \
         established), so the runs stay near the knee, for every peer alike. At that rate, \
         {RUNS} runs of {RUN_SECONDS} s (a run during which processes outside the \
         benchmark's process tree used more than {DISTURBED_ABOVE} CPUs is repeated, up to \
         {MAX_ATTEMPTS} runs, and the {RUNS} least disturbed are kept): the table shows their \
         median, the median sent rate, and each run. \"Limited by\" and \"CPU 1 busy\" read the median run: \
         *server* when CPU 1 was busy at least {server_busy:.0} % of the run or fewer than \
         {server_bound:.0} % of the sent queries were answered (on this kernel a full veth \
         receive ring pushes back on the sender instead of dropping, so a saturated server \
         slows kxdpgun down and still answers nearly all it sends); *kxdpgun* when CPU 1 had \
         time to spare and kxdpgun sent less than {generator_bound:.0} % of the offered rate \
         (the peer could do more than the row shows); *offered rate* otherwise.\n\
         - dnsperf (pinned to CPU {CLIENT_CPU}): {RUNS} runs of {DNSPERF_SECONDS} s with \
         {DNSPERF_OUTSTANDING} queries in flight (median qps; the socket client is usually the \
         limit), and {RUNS} runs of {LATENCY_SECONDS} s at {latency_rate} qps (median of the \
         average latency).\n\
         - Knot DNS and NSD: one UDP worker each; Knot's XDP mode with `xdp: listen: eth0` (one \
         XDP worker for the veth's one queue); NSD with minimal responses. edge's userspace \
         path: `[dns] listen` on the veth address with the XDP program attached to `lo` (generic \
         mode), so that every query reaches the userspace server.\n\
         - The reflector is `edge_reflect` in edge-ebpf/src/reflect.rs: it swaps addresses and \
         ports and sets QR, without parsing the question or any lookup.\n",
        client = Topology::CLIENT_V4,
        small = count(SMALL_ZONE as u64),
        large = count(LARGE_ZONE as u64),
        stride = LARGE_ZONE / SMALL_ZONE,
        layout = cpus::LAYOUT,
        start = rate(LADDER_START as f64),
        gain = (IMPROVEMENT - 1.0) * 100.0,
        near = NEAR_BEST * 100.0,
        saturated = SATURATED_BELOW * 100.0,
        factor = LADDER_FACTOR,
        server_bound = SERVER_BOUND_BELOW * 100.0,
        server_busy = SERVER_BUSY_ABOVE * 100.0,
        generator_bound = GENERATOR_BOUND_BELOW * 100.0,
        latency_rate = rate(LATENCY_RATE as f64),
    ));
    Ok(text)
}
