//! `cargo xtask bench dns`: three tables about edge's DNS, each against its peers on the same
//! two-namespace topology (tests/src/topology.rs), all measured through the servers' external
//! interfaces (queries, signals, procfs) so that they keep working as edge's internals change.
//!
//! 1. Throughput: answered queries per second at saturation, with trafgen (netsniff-ng) sending
//!    prebuilt query frames and the client end's interface counters counting the replies, and
//!    dnsperf's rate and latency, for edge's XDP path (1,000 names; a million names, a hot
//!    1,000 of them asked; a million names, a wide sample asked), edge's userspace path, Knot
//!    DNS (sockets, and its XDP mode where it loads), NSD, gdnsd and a no-lookup XDP reflector.
//!    Then what the XDP program itself costs per query (BPF_PROG_TEST_RUN), the one figure that
//!    does not depend on the load generator.
//! 2. Scale: for zones of 1,000, 1,000,000 (and with `--ten-million`, 10,000,000) names, the
//!    time until `edge run` answers, its memory, the kernel memory of its maps, the time from
//!    SIGHUP to a changed name's new answer and the queries lost meanwhile; Knot DNS and NSD
//!    load the same zone file.
//! 3. Steering with a million static names: from `edge drain`/`edge undrain` to the changed
//!    answer, and the daemon's CPU time for it.
//!
//! Prints Markdown and, with `--out`, writes it into the `## DNS` section. Nothing here asserts a
//! timing.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
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
        footprint,
        load::{self, DnsperfReport, DnsperfRun},
        peers::{self, Daemon, PeerSetup},
        program_cost::{self, Asked, CaseCost, ProgramCost},
        reply_sink::ReplySink,
        report::{Table, count, median, merge_section, percent, rate, replace_section},
        trafgen::{self, Addresses, TrafgenReport, TrafgenRun},
        zone::{APEX, BenchZone, EdgeSettings},
    },
    dig::kdig,
    edge::EdgeProcess,
    interrupt,
    topology::{Netns, Topology, remove_pins},
    update::{Timed, Update, UpdateKey, wait_for_address},
};
use hickory_proto::rr::Name;

const INTERFACE: &str = Topology::INTERFACE;
const SERVER: Ipv4Addr = Topology::POP_V4;
const SMALL_ZONE: usize = 1_000;
const LARGE_ZONE: usize = 1_000_000;
const HUGE_ZONE: usize = 10_000_000;
/// trafgen's slow mode (one sendto per frame) at this rate sends as fast as it can.
const AS_FAST_AS_SLOW_MODE_GOES: u64 = 10_000_000;
/// Busy at least this share of a run, a core was the limit.
const CORE_BUSY_ABOVE: f64 = 0.95;
/// Below this share of sent queries answered, the server dropped queries: it was the limit.
const SERVER_BOUND_BELOW: f64 = 0.95;
/// dnsperf: queries in flight for the rate runs, and the fixed rate of the latency runs.
const DNSPERF_OUTSTANDING: u32 = 100;
const LATENCY_RATE: u64 = 10_000;
/// A million names take a while to parse and publish (minutes on a loaded machine); ten million
/// longer.
const SMALL_START_TIMEOUT: Duration = Duration::from_secs(20);
const LARGE_START_TIMEOUT: Duration = Duration::from_secs(900);
const HUGE_START_TIMEOUT: Duration = Duration::from_secs(3600);
/// A reload's change must be visible within this.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The fixed rate trafgen offers during a reload, and how long it goes on after the change is
/// visible.
const RELOAD_RATE: u64 = 50_000;
const RELOAD_TAIL: Duration = Duration::from_millis(500);
/// A server whose resident memory passes this share of the memory available when it started is
/// stopped: the machine is shared.
const MEMORY_SHARE_CAP: f64 = 0.7;
/// Before each peer, wait up to this long for the machine to be quiet: background CPU use, with
/// the benchmark itself idle, below `QUIET_BELOW`. Above it, the report calls the numbers noisy.
const QUIET_WAIT: Duration = Duration::from_secs(10);
const QUIET_BELOW: f64 = 0.05;
/// Other processes using more than this many CPUs during a run make it noisy.
const DISTURBED_ABOVE: f64 = 0.1;
/// The steered pool's members: unreachable, so that `all_down = "answer-all"` answers with
/// every member not drained.
const MEMBER_1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const MEMBER_2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The changed name's new address in the reload row: outside every zone's addresses
/// ([`BenchZone::address`] stays below 10.153.0.0 for ten million names).
const CHANGED_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 254);
/// A query watching for a change unanswered within this is sent again: XDP answers in
/// microseconds, and a query the veth dropped under trafgen's load (before its counters)
/// should cost the figure no more than this.
const WATCH_RETRY: Duration = Duration::from_millis(10);
/// The update without a response after this is sent again, as a DNS client would: its
/// response waits for the journal's fsync and the change, so it comes late, not lost.
const UPDATE_RESEND: Duration = Duration::from_secs(1);
/// What edge logs once it has loaded and published its zones.
const EDGE_READY: &str = "daemon ready";
/// The address a dynamic update gives another name (name1) in the same row.
const UPDATED_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 253);
/// The key the scale rows' edge lets update the zone.
const UPDATE_KEY: UpdateKey = UpdateKey {
    name: "bench-key",
    secret: b"a bench key of thirty-two bytes.",
};

#[derive(Parser)]
struct Args {
    /// Write the report into the `## DNS` section of this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command that ran this benchmark, for the report.
    #[arg(long, default_value = "cargo xtask bench dns")]
    command: String,
    /// Measure only these throughput peers (default: all), e.g. `--peers edge-xdp,reflector`.
    #[arg(long, value_enum, value_delimiter = ',')]
    peers: Vec<Peer>,
    /// trafgen runs per throughput row, and dnsperf runs of each kind.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of each trafgen and dnsperf run.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Names asked in the million-name row that asks a wide sample, spread over the zone.
    /// trafgen loads its packet definitions in time that grows with the square of their number
    /// (20,000 take about 2 s here, 50,000 about 10 s), so not all million.
    #[arg(long, default_value_t = 20_000)]
    wide: usize,
    /// Skip the throughput table.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip timing the XDP programs with BPF_PROG_TEST_RUN.
    #[arg(long)]
    skip_program_cost: bool,
    /// Another build of the XDP object (e.g. main's: target/release/build/edge-dataplane-*/out/
    /// edge-xdp), timed beside this one in the program-cost table, so that a change is measured
    /// against it under the same load.
    #[arg(long)]
    baseline_object: Option<PathBuf>,
    /// Skip the scale table.
    #[arg(long)]
    skip_scale: bool,
    /// Skip the steering row.
    #[arg(long)]
    skip_steering: bool,
    /// Zone sizes of the scale table (default 1,000 and 1,000,000).
    #[arg(long, value_delimiter = ',')]
    scale_names: Vec<usize>,
    /// Add 10,000,000 names to the scale table (takes long, and memory: a server passing 70 % of
    /// the memory available when it started is stopped).
    #[arg(long)]
    ten_million: bool,
    /// Static names beside the steered one in the steering row.
    #[arg(long, default_value_t = LARGE_ZONE)]
    steering_names: usize,
}

impl Args {
    /// Whether this run skips some of the section's tables.
    fn partial(&self) -> bool {
        self.skip_throughput || self.skip_program_cost || self.skip_scale || self.skip_steering
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    EdgeXdp,
    EdgeXdpMillionHot,
    EdgeXdpMillionWide,
    EdgeUserspace,
    KnotXdp,
    KnotSockets,
    Nsd,
    Gdnsd,
    Reflector,
}

impl Peer {
    /// Table order: edge first, the ceiling last.
    const ALL: [Self; 9] = [
        Self::EdgeXdp,
        Self::EdgeXdpMillionHot,
        Self::EdgeXdpMillionWide,
        Self::EdgeUserspace,
        Self::KnotXdp,
        Self::KnotSockets,
        Self::Nsd,
        Self::Gdnsd,
        Self::Reflector,
    ];

    fn label(self, wide: usize) -> String {
        match self {
            Self::EdgeXdp => "edge, XDP path".into(),
            Self::EdgeXdpMillionHot => {
                "edge, XDP path, 1,000,000-name zone, 1,000 names asked".into()
            }
            Self::EdgeXdpMillionWide => format!(
                "edge, XDP path, 1,000,000-name zone, {} names asked",
                count(wide as u64)
            ),
            Self::EdgeUserspace => "edge, userspace path".into(),
            Self::KnotXdp => "Knot DNS 3.2, XDP mode".into(),
            Self::KnotSockets => "Knot DNS 3.2, sockets".into(),
            Self::Nsd => "NSD 4.6".into(),
            Self::Gdnsd => "gdnsd 3.8".into(),
            Self::Reflector => "XDP reflector, no lookup (ceiling)".into(),
        }
    }

    fn zone(self) -> BenchZone {
        BenchZone::new(match self {
            Self::EdgeXdpMillionHot | Self::EdgeXdpMillionWide => LARGE_ZONE,
            _ => SMALL_ZONE,
        })
    }

    /// How many of the zone's names the queries ask, spread evenly over it.
    fn asked(self, wide: usize) -> usize {
        match self {
            Self::EdgeXdpMillionWide => wide,
            _ => SMALL_ZONE,
        }
    }
}

/// A running peer, held only to be dropped: that stops the server (an [`EdgeProcess`], a
/// [`Daemon`]) or detaches the program (an `FdLink`).
type Running = Box<dyn std::any::Any>;

/// One trafgen run, with how busy each core was and the CPUs other processes used meanwhile.
struct Run {
    report: TrafgenReport,
    server_busy: f64,
    client_busy: f64,
    other: f64,
}

/// How trafgen sent.
#[derive(Debug, Clone)]
enum Mode {
    /// Its transmit ring, as fast as it goes.
    Ring,
    /// Its slow mode (`-b`), after the ring mode gave up with this message.
    Slow { ring_aborted: String },
}

/// Everything measured for one peer.
struct Measured {
    mode: Mode,
    runs: Vec<Run>,
    /// dnsperf as fast as `DNSPERF_OUTSTANDING` allows, and at `LATENCY_RATE`.
    dnsperf: Vec<DnsperfReport>,
    latency: Vec<DnsperfReport>,
    /// Background CPU use just before this peer.
    background: f64,
}

impl Measured {
    fn answered(&self) -> Option<f64> {
        median(
            &self
                .runs
                .iter()
                .map(|run| run.report.answered_qps)
                .collect::<Vec<_>>(),
        )
    }

    /// The median run by answered rate.
    fn median_run(&self) -> Option<&Run> {
        let mut runs: Vec<&Run> = self.runs.iter().collect();
        runs.sort_by(|a, b| a.report.answered_qps.total_cmp(&b.report.answered_qps));
        runs.get(runs.len() / 2).copied()
    }

    fn disturbance(&self) -> f64 {
        self.runs.iter().map(|run| run.other).fold(0.0, f64::max)
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
}

/// What held a run's answered rate down. On this kernel a veth whose receiving end is full
/// pushes back on the sender instead of dropping, so a saturated server slows the generator down
/// and still answers nearly all it was sent: the cores' busy time tells which side was full.
fn limit(run: &Run) -> String {
    if run.server_busy >= CORE_BUSY_ABOVE {
        format!(
            "server core (CPU {SERVER_CPU} {:.0} % busy)",
            run.server_busy * 100.0
        )
    } else if run.report.answered_share() < SERVER_BOUND_BELOW {
        format!(
            "server (answered {:.0} % of sent)",
            run.report.answered_share() * 100.0
        )
    } else if run.client_busy >= CORE_BUSY_ABOVE {
        format!(
            "generator (CPU {CLIENT_CPU} {:.0} % busy)",
            run.client_busy * 100.0
        )
    } else {
        "kernel path (neither core saturated)".into()
    }
}

enum Outcome {
    Measured(Measured),
    Skipped(String),
    Failed(String),
}

/// The generated files of one zone size and sample.
struct ZoneFiles {
    zone_file: PathBuf,
    /// dnsperf's `name type` lines.
    queries: PathBuf,
    /// trafgen's packet definitions, one per name asked.
    frames: PathBuf,
}

struct Bench<'a> {
    args: &'a Args,
    /// edge serving the million-name zone, kept from the first million-name row to the next.
    large_edge: std::cell::RefCell<Option<EdgeProcess>>,
    topology: Topology,
    addresses: Addresses,
    /// The PoP end's NAPI kthread.
    napi: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // ^C fails the running step at its next poll; everything started is stopped on the way out.
    interrupt::catch();
    let started = Instant::now();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?;
    let topology =
        Topology::client_and_pop_with("bench-dns", edge_tests::topology::ClientXdp::None)?;
    // IPv4 alone: IPv6's own chatter (router solicitations, MLD reports) would count as queries
    // sent or replies received.
    for netns in [&topology.client, &topology.pop] {
        netns.run("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"])?;
    }
    let bench = Bench {
        napi: cpus::prepare_pop(&topology.pop, INTERFACE)?,
        addresses: Addresses {
            client_mac: topology.client.mac_octets(INTERFACE)?,
            server_mac: topology.pop.mac_octets(INTERFACE)?,
            client: Topology::CLIENT_V4.octets(),
            server: SERVER.octets(),
        },
        topology,
        args: &args,
        large_edge: Default::default(),
    };

    let mut results = Vec::new();
    if !args.skip_throughput {
        for peer in Peer::ALL {
            if !args.peers.is_empty() && !args.peers.contains(&peer) {
                continue;
            }
            interrupt::check()?;
            let label = peer.label(args.wide);
            eprintln!("bench: {label}");
            let outcome = match bench.measure(peer) {
                Ok(outcome) => outcome,
                Err(error) => Outcome::Failed(format!("{error:#}")),
            };
            if let Outcome::Failed(error) | Outcome::Skipped(error) = &outcome {
                eprintln!("bench: {label}: {error}");
            }
            results.push((peer, outcome));
        }
        bench.large_edge.take();
    }
    let mut scale = Vec::new();
    if !args.skip_scale {
        let mut sizes = if args.scale_names.is_empty() {
            vec![SMALL_ZONE, LARGE_ZONE]
        } else {
            args.scale_names.clone()
        };
        if args.ten_million {
            sizes.push(HUGE_ZONE);
        }
        for names in sizes {
            interrupt::check()?;
            eprintln!("bench: scale, {} names", count(names as u64));
            scale.push((names, bench.scale(names)));
        }
    }
    let steering = if args.skip_steering {
        None
    } else {
        eprintln!(
            "bench: steering changes with {} static names",
            count(args.steering_names as u64)
        );
        Some(bench.steering(args.steering_names))
    };
    drop(bench);
    let (costs, case_costs) = if args.skip_program_cost {
        (Vec::new(), Vec::new())
    } else {
        eprintln!("bench: XDP program cost per case");
        let mut cases = program_cost::cases(program_cost::ROUNDS)?;
        cases.extend(program_cost::rrl_cases(program_cost::ROUNDS)?);
        (program_costs(args.baseline_object.as_deref())?, cases)
    };

    let mut section = report(
        &args,
        &date,
        started.elapsed(),
        &results,
        &costs,
        &case_costs,
    )?;
    if !scale.is_empty() {
        section.push_str(&scale_section(&scale, &stamp(&args, &date)));
    }
    if let Some(steering) = &steering {
        section.push_str(&steering_section(
            args.steering_names,
            steering,
            &stamp(&args, &date),
        ));
    }
    section.push_str(&method(&args));
    print!("{section}");
    if let Some(out) = &args.out {
        let document = std::fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".into());
        // A partial run keeps the tables it did not measure.
        let document = if args.partial() {
            merge_section(&document, "DNS", &section)
        } else {
            replace_section(&document, "DNS", &section)
        };
        std::fs::write(out, document).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote the DNS section of {}", out.display());
    }
    let mut failed: Vec<String> = results
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Failed(_)))
        .map(|(peer, _)| peer.label(args.wide))
        .collect();
    failed.extend(
        scale
            .iter()
            .filter(|(_, row)| row.is_err())
            .map(|(names, _)| format!("scale, {} names", count(*names as u64))),
    );
    if matches!(steering, Some(Err(_))) {
        failed.push("steering".into());
    }
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

impl Bench<'_> {
    fn measure(&self, peer: Peer) -> Result<Outcome> {
        if !matches!(peer, Peer::EdgeXdpMillionHot | Peer::EdgeXdpMillionWide) {
            // The million-name edge holds the PoP end's XDP hook: stopped before anyone else.
            if self.large_edge.take().is_some() {
                self.clear_pop();
            }
        }
        let files = self.zone_files(peer.zone(), peer.asked(self.args.wide))?;
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
        drop(running);
        if peer == Peer::EdgeXdp || peer == Peer::EdgeUserspace {
            self.clear_pop();
        }
        if peer == Peer::KnotXdp {
            // Knot leaves its redirect program attached when it exits.
            self.topology.pop.detach_xdp(INTERFACE)?;
        }
        Ok(Outcome::Measured(result?))
    }

    /// Writes the zone file of `zone`, and the query file and trafgen frames asking `asked` of
    /// its names (once each, spread over the zone, in a fixed shuffled order).
    fn zone_files(&self, zone: BenchZone, asked: usize) -> Result<ZoneFiles> {
        let dir = self.topology.work_dir();
        let zone_file = dir.join(format!("bench-{}.zone", zone.names));
        let queries = dir.join(format!("queries-{}-{asked}.txt", zone.names));
        let frames = dir.join(format!("frames-{}-{asked}.cfg", zone.names));
        if !zone_file.exists() {
            std::fs::write(&zone_file, zone.zone_file(SERVER))?;
        }
        if !queries.exists() {
            let text = zone.sample_query_file(asked);
            let frame_text = trafgen::config(text.lines().filter_map(|line| {
                let name = line.split_whitespace().next()?;
                Some(trafgen::query_frame(&self.addresses, name))
            }));
            std::fs::write(&frames, frame_text)?;
            std::fs::write(&queries, text)?;
        }
        Ok(ZoneFiles {
            zone_file,
            queries,
            frames,
        })
    }

    fn setup<'s>(&'s self, dir: &'s Path, zone_file: &'s Path) -> PeerSetup<'s> {
        PeerSetup {
            netns: &self.topology.pop,
            dir,
            zone_file,
            listen: SERVER,
            cpu: SERVER_CPU,
        }
    }

    /// Starts `peer` in the PoP namespace, or says why it cannot run here.
    fn start(&self, peer: Peer, files: &ZoneFiles) -> Result<Result<Running, String>> {
        let pop = &self.topology.pop;
        let dir = self.topology.work_dir().join(format!("{peer:?}"));
        let setup = self.setup(&dir, &files.zone_file);
        let running: Running = match peer {
            Peer::EdgeXdp => {
                Box::new(self.start_edge(peer, "native", None, SMALL_START_TIMEOUT)?)
            }
            Peer::EdgeXdpMillionHot | Peer::EdgeXdpMillionWide => {
                // Both million-name rows ask the same running edge: a load takes long.
                let mut large = self.large_edge.borrow_mut();
                if large.is_none() {
                    *large = Some(self.start_edge(peer, "native", None, LARGE_START_TIMEOUT)?);
                }
                Box::new(())
            }
            Peer::EdgeUserspace => {
                let listen = SocketAddr::from((SERVER, 53));
                let config = self.edge_config(peer, "generic", Some(listen))?;
                if let Err(refused) = edge_check(&config)? {
                    return Ok(Err(format!(
                        "skipped: this edge has no userspace DNS server (`edge check` refuses \
                         `[dns] listen`: {refused})"
                    )));
                }
                Box::new(self.start_edge(peer, "generic", Some(listen), SMALL_START_TIMEOUT)?)
            }
            Peer::KnotXdp => {
                let mut knot = peers::start_knot(&setup, Some(INTERFACE))?;
                match self.wait_started(&mut knot, peer) {
                    Ok(()) => Box::new(knot),
                    Err(error) => {
                        let log = knot.log();
                        let reasons: Vec<&str> = log
                            .lines()
                            .filter(|line| {
                                let lower = line.to_ascii_lowercase();
                                lower.contains("xdp") && lower.contains("fail")
                                    || lower.contains("cannot use helper")
                            })
                            .collect();
                        drop(knot);
                        let _ = pop.detach_xdp(INTERFACE);
                        if reasons.is_empty() {
                            return Err(error);
                        }
                        return Ok(Err(format!(
                            "not measured: Knot's XDP mode did not start on this kernel; knotd \
                             said: {}",
                            reasons.join(" / ")
                        )));
                    }
                }
            }
            Peer::KnotSockets => Box::new(peers::start_knot(&setup, None)?),
            Peer::Nsd => Box::new(peers::start_nsd(&setup)?),
            Peer::Gdnsd => Box::new(peers::start_gdnsd(&setup)?),
            Peer::Reflector => Box::new(pop.attach_xdp(INTERFACE, program_name::REFLECT)?),
        };
        Ok(Ok(running))
    }

    /// Waits until `daemon` answers the first name, failing if it exits first.
    fn wait_started(&self, daemon: &mut Daemon, peer: Peer) -> Result<()> {
        let _pass = self.topology.attach_client_pass()?;
        let deadline = Instant::now() + SMALL_START_TIMEOUT;
        loop {
            daemon.check_running()?;
            if self.answers(0, BenchZone::address(0))? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} does not answer", peer.label(self.args.wide));
            }
            thread::sleep(Duration::from_millis(100));
        }
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
        let name = match peer {
            Peer::EdgeXdpMillionHot | Peer::EdgeXdpMillionWide => "EdgeXdpMillion".to_string(),
            _ => format!("{peer:?}"),
        };
        self.topology.write_file(&format!("{name}.toml"), &text)
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

    /// dnsperf (with XDP_PASS on the client end, so that XDP_TX replies arrive), then trafgen
    /// (with the reply sink there).
    fn load(&self, peer: Peer, files: &ZoneFiles, background: f64) -> Result<Measured> {
        let runs = self.args.runs;
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
            let dnsperf = (0..runs)
                .map(|_| run(None, self.args.seconds))
                .collect::<Result<Vec<_>>>()?;
            let latency = (0..runs)
                .map(|_| run(Some(LATENCY_RATE), self.args.seconds))
                .collect::<Result<Vec<_>>>()?;
            (dnsperf, latency)
        };
        let _sink = ReplySink::attach(
            &self.topology.client,
            INTERFACE,
            self.topology.pin_root().join("reply-sink"),
        )?;
        let mut mode = Mode::Ring;
        let mut kept = Vec::new();
        while kept.len() < runs {
            let offered = match mode {
                Mode::Ring => None,
                Mode::Slow { .. } => Some(AS_FAST_AS_SLOW_MODE_GOES),
            };
            let run = self.trafgen(&files.frames, offered, kept.len())?;
            if let (Mode::Ring, Some(aborted)) = (&mode, &run.report.aborted) {
                eprintln!("bench:   trafgen's ring mode gave up ({aborted}); slow mode from here");
                mode = Mode::Slow {
                    ring_aborted: aborted.clone(),
                };
                continue;
            }
            eprintln!(
                "bench:   sent {:>8}, answered {:>8}; CPU {SERVER_CPU} {:.0} %, CPU {CLIENT_CPU} \
                 {:.0} % busy; other processes used {:.2} CPUs",
                rate(run.report.sent_qps),
                rate(run.report.answered_qps),
                run.server_busy * 100.0,
                run.client_busy * 100.0,
                run.other
            );
            kept.push(run);
        }
        Ok(Measured {
            mode,
            runs: kept,
            dnsperf,
            latency,
            background,
        })
    }

    /// One trafgen run, with the cores' busy time and other processes' CPU use.
    fn trafgen(&self, frames: &Path, rate: Option<u64>, number: usize) -> Result<Run> {
        let other = cpus::OtherWork::start()?;
        let busy = cpus::CpuBusy::start()?;
        let report = trafgen::measure(
            &self.topology.client,
            &TrafgenRun {
                config: frames,
                interface: INTERFACE,
                rate,
                seconds: self.args.seconds as f64,
                cpu: CLIENT_CPU,
            },
            &self
                .topology
                .work_dir()
                .join(format!("trafgen-{number}.log")),
        )?;
        Ok(Run {
            server_busy: busy.share(SERVER_CPU)?,
            client_busy: busy.share(CLIENT_CPU)?,
            other: other.cpus_used()?,
            report,
        })
    }

    /// Whether the `i`-th name gets `expected` from the PoP (through kdig on the client, which
    /// needs the XDP_PASS program on the client end).
    fn answers(&self, i: usize, expected: Ipv4Addr) -> Result<bool> {
        let reply = kdig(
            &self.topology.client,
            &[
                &format!("@{SERVER}"),
                &BenchZone::name(i),
                "A",
                "+time=1",
                "+retry=0",
            ],
        )?;
        let expected = expected.to_string();
        Ok(reply.status().as_deref() == Some("NOERROR")
            && reply
                .section("ANSWER")
                .iter()
                .any(|record| record.get(4) == Some(&expected)))
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
            peer.label(self.args.wide)
        )
    }
}

/// What a server took to load a zone, measured from outside.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    /// From starting the process to its first right answer for the zone's last name.
    ready: Duration,
    /// PSS over its process tree once ready, its peak RSS, the kernel memory its BPF maps
    /// lock, and the part of its PSS that is maps mapped into it (counted in both).
    pss: u64,
    peak: u64,
    memlock: u64,
    mapped: u64,
}

impl Footprint {
    /// The process and its maps, each page once.
    fn in_all(&self) -> u64 {
        (self.pss + self.memlock).saturating_sub(self.mapped)
    }
}

/// One change of one name in a running edge: a reload or a dynamic update.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// From SIGHUP (or sending the update) to the first answer with the changed address.
    visible: Duration,
    /// Queries trafgen sent from before the change until after it was visible, and replies
    /// counted.
    sent: u64,
    answered: u64,
    /// Frames the client end's veth dropped meanwhile instead of sending them (the PoP end's
    /// receive ring was full): trafgen's and the watching queries', in no count above.
    dropped: u64,
    /// Of the queries that watched for the change (back to back), those without an answer
    /// within `WATCH_RETRY`, asked again.
    unanswered: usize,
}

struct ScaleRow {
    edge: Result<Footprint>,
    reload: Result<Change>,
    update: Result<Change>,
    knot: Result<Footprint>,
    nsd: Result<Footprint>,
}

/// One steering change.
struct SteeringChange {
    action: &'static str,
    visible: Duration,
    cpu_seconds: f64,
}

struct SteeringRow {
    ready: Duration,
    rss: u64,
    changes: Vec<SteeringChange>,
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn memory_available() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .context("no MemAvailable in /proc/meminfo")
}

/// The A records kdig gets for `name` from the PoP.
fn addresses_of(client: &Netns, name: &str) -> Result<BTreeSet<String>> {
    let reply = kdig(
        client,
        &[&format!("@{SERVER}"), name, "A", "+time=1", "+retry=0"],
    )?;
    Ok(reply
        .section("ANSWER")
        .iter()
        .filter(|record| record.get(3).map(String::as_str) == Some("A"))
        .filter_map(|record| record.get(4).cloned())
        .collect())
}

impl Bench<'_> {
    /// `edge run` (pinned to the server core) in the PoP namespace.
    fn spawn_edge(&self, config: &Path) -> Result<Daemon> {
        let mut command = self.topology.pop.command("taskset");
        command
            .args(["-c", &SERVER_CPU.to_string()])
            .arg(edge_tests::edge::binary())
            .args(["run", "--config"])
            .arg(config);
        Daemon::spawn("edge", command, &config.with_extension("log"))
    }

    /// Waits until `daemon` answers the `last`-th name with its address; stops waiting (and
    /// fails) when it exits, passes `memory_cap` bytes resident, or `timeout` passes.
    fn wait_ready(
        &self,
        daemon: &mut Daemon,
        started: Instant,
        last: usize,
        timeout: Duration,
        memory_cap: u64,
    ) -> Result<Duration> {
        loop {
            daemon.check_running()?;
            // VmRSS, not PSS: reading smaps_rollup walks the page tables under the lock the
            // loading server's allocations need.
            let resident = footprint::rss(daemon.id())?;
            if resident > memory_cap {
                bail!(
                    "stopped: it passed {} MB resident before answering (cap {} MB, {:.0} % of \
                     the memory available when it started)",
                    resident >> 20,
                    memory_cap >> 20,
                    MEMORY_SHARE_CAP * 100.0
                );
            }
            if self.answers(last, BenchZone::address(last))? {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("no answer for name{last} within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leaves the PoP end's XDP hook empty: edge pins its program and maps (so that a crashed
    /// daemon's data plane keeps answering), and one stopped by SIGKILL leaves them attached.
    fn clear_pop(&self) {
        remove_pins(self.topology.pin_root());
        let _ = self.topology.pop.detach_xdp(INTERFACE);
    }

    /// Starts a server with `spawn`, waits until it answers (and, with `ready_line`, until its
    /// log says so), and reads its footprint.
    fn footprint(
        &self,
        names: usize,
        ready_line: Option<&str>,
        spawn: impl FnOnce() -> Result<Daemon>,
    ) -> Result<(Daemon, Footprint)> {
        self.clear_pop();
        if self.answers(names - 1, BenchZone::address(names - 1))? {
            bail!("name{} is answered before the server starts", names - 1);
        }
        let cap = (memory_available()? as f64 * MEMORY_SHARE_CAP) as u64;
        let timeout = start_timeout(names);
        let started = Instant::now();
        let mut daemon = spawn()?;
        let ready = self.wait_ready(&mut daemon, started, names - 1, timeout, cap)?;
        // edge answers from the maps a moment before it has dropped what it built them from
        // (a million names' entries): its memory is read once it says it is ready.
        if let Some(line) = ready_line {
            while !daemon.log().contains(line) {
                daemon.check_running()?;
                if started.elapsed() > timeout {
                    bail!("no {line:?} in the log within {timeout:?}");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let pid = daemon.id();
        let footprint = Footprint {
            ready,
            pss: footprint::pss(pid)?,
            peak: footprint::peak_rss(pid)?,
            memlock: footprint::map_memlock(pid)?,
            mapped: footprint::mapped_maps_pss(pid)?,
        };
        Ok((daemon, footprint))
    }

    /// The scale row of a zone of `names` names.
    fn scale(&self, names: usize) -> Result<ScaleRow> {
        let zone = BenchZone::new(names);
        let files = self.zone_files(zone, SMALL_ZONE)?;
        let _pass = self.topology.attach_client_pass()?;
        // trafgen's replies end at this socket, which is never read: a full receive buffer
        // drops them quietly, where a closed port would send ICMP back to the server.
        let _absorb = self
            .topology
            .client
            .run_inside(|| UdpSocket::bind((Topology::CLIENT_V4, trafgen::CLIENT_PORT)))??;
        // The userspace server listens for the update row's UPDATE (the XDP program passes it).
        let journal = self.topology.work_dir().join(format!("journal-{names}"));
        let text = zone.edge_config(&EdgeSettings {
            interface: INTERFACE,
            pin_root: self.topology.pin_root(),
            mode: "native",
            dns_listen: Some(SocketAddr::from((SERVER, 53))),
        });
        let text = text.replacen(
            "\n[[zones]]",
            &format!("{}\n[[zones]]", UPDATE_KEY.dns_config(APEX, &journal)),
            1,
        );
        let config = self
            .topology
            .write_file(&format!("scale-{names}.toml"), &text)?;
        let edge = self.footprint(names, Some(EDGE_READY), || self.spawn_edge(&config));
        let (edge, reload, update) = match edge {
            Ok((mut daemon, footprint)) => {
                eprintln!(
                    "bench:   edge ready in {:.2} s, {} MB PSS, {} MB maps",
                    footprint.ready.as_secs_f64(),
                    footprint.pss >> 20,
                    footprint.memlock >> 20
                );
                let reload = self.reload(&mut daemon, &config, &text, &files.frames);
                let update = self.update(&mut daemon, &files.frames);
                drop(daemon);
                self.clear_pop();
                (Ok(footprint), reload, update)
            }
            Err(error) => (
                Err(error),
                Err(anyhow::anyhow!("edge did not start")),
                Err(anyhow::anyhow!("edge did not start")),
            ),
        };
        drop(text);
        let peer = |name: &str, start: fn(&PeerSetup) -> Result<Daemon>| {
            let dir = self
                .topology
                .work_dir()
                .join(format!("scale-{name}-{names}"));
            let setup = self.setup(&dir, &files.zone_file);
            let result = self
                .footprint(names, None, || start(&setup))
                .map(|(_, f)| f);
            if let Ok(footprint) = &result {
                eprintln!(
                    "bench:   {name} ready in {:.2} s, {} MB PSS",
                    footprint.ready.as_secs_f64(),
                    footprint.pss >> 20
                );
            }
            result
        };
        let knot = peer("knot", |setup| peers::start_knot(setup, None));
        let nsd = peer("nsd", peers::start_nsd);
        Ok(ScaleRow {
            edge,
            reload,
            update,
            knot,
            nsd,
        })
    }

    /// Changes the first name's address in `config`, sends SIGHUP and waits for kdig to see the
    /// change, while trafgen offers `RELOAD_RATE` queries per second for the hot names.
    fn reload(
        &self,
        daemon: &mut Daemon,
        config: &Path,
        text: &str,
        frames: &Path,
    ) -> Result<Change> {
        let old = format!("a = [\"{}\"]", BenchZone::address(0));
        let changed = text.replacen(&old, &format!("a = [\"{CHANGED_ADDRESS}\"]"), 1);
        if changed == text {
            bail!("the config has no {old}");
        }
        // Written aside and renamed, so that the daemon never reads half a file.
        let fresh = config.with_extension("toml.new");
        std::fs::write(&fresh, changed)?;
        std::fs::rename(&fresh, config)?;
        let name = Name::from_ascii(format!("{}.", BenchZone::name(0)))?;
        let change = self.under_load(frames, "reload", |client| {
            let signalled = Instant::now();
            // SAFETY: kill(2) on the daemon we started.
            if unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGHUP) } != 0 {
                bail!("SIGHUP: {}", std::io::Error::last_os_error());
            }
            client.run_inside(|| {
                wait_for_address(
                    SocketAddr::from((SERVER, 53)),
                    None,
                    &name,
                    CHANGED_ADDRESS,
                    signalled,
                    RELOAD_TIMEOUT,
                    WATCH_RETRY,
                )
            })?
        })?;
        daemon.check_running()?;
        Ok(change)
    }

    /// Replaces name1's address by a TSIG-signed dynamic update (RFC 2136) and asks it back to
    /// back until the new address is answered, while trafgen offers `RELOAD_RATE` queries per
    /// second for the hot names.
    fn update(&self, daemon: &mut Daemon, frames: &Path) -> Result<Change> {
        let apex = Name::from_ascii(format!("{APEX}."))?;
        let name = Name::from_ascii(format!("{}.", BenchZone::name(1)))?;
        let signed = UPDATE_KEY.replace_a(&apex, &name, UPDATED_ADDRESS)?;
        let change = self.under_load(frames, "update", |client| {
            let timed = client.run_inside(|| {
                wait_for_address(
                    SocketAddr::from((SERVER, 53)),
                    Some(Update {
                        message: &signed,
                        resend: UPDATE_RESEND,
                    }),
                    &name,
                    UPDATED_ADDRESS,
                    Instant::now(),
                    RELOAD_TIMEOUT,
                    WATCH_RETRY,
                )
            })??;
            if timed.update_sends > 1 {
                eprintln!("bench:   the update was sent {} times", timed.update_sends);
            }
            Ok(timed)
        })?;
        daemon.check_running()?;
        Ok(change)
    }

    /// Runs `change` (which returns when its change was first seen) while trafgen offers
    /// `RELOAD_RATE` queries per second for the hot names, and counts what the client end sent
    /// and received from before it until `RELOAD_TAIL` after.
    fn under_load(
        &self,
        frames: &Path,
        what: &str,
        change: impl FnOnce(&Netns) -> Result<Timed>,
    ) -> Result<Change> {
        let client = &self.topology.client;
        let trafgen = trafgen::Trafgen::start(
            client,
            &TrafgenRun {
                config: frames,
                interface: INTERFACE,
                rate: Some(RELOAD_RATE),
                seconds: 0.0,
                cpu: CLIENT_CPU,
            },
            &self.topology.work_dir().join(format!("trafgen-{what}.log")),
        )?;
        let window = trafgen::Window::open(client, INTERFACE)?;
        let timed = change(client)?;
        thread::sleep(RELOAD_TAIL);
        drop(trafgen);
        let counted = window.settle()?;
        eprintln!(
            "bench:   {what} visible after {:.1} ms; {} sent, {} answered, {} dropped by the \
             veth; {} of the {} watching queries unanswered",
            timed.visible.as_secs_f64() * 1e3,
            counted.sent,
            counted.answered,
            counted.dropped,
            timed.unanswered,
            timed.asked
        );
        Ok(Change {
            visible: timed.visible,
            sent: counted.sent,
            answered: counted.answered,
            dropped: counted.dropped,
            unanswered: timed.unanswered,
        })
    }

    /// `names` static names and one steered name on a pool of two unreachable members
    /// (`all_down = "answer-all"`: both answered until one is drained).
    fn steering(&self, names: usize) -> Result<SteeringRow> {
        let zone = BenchZone::new(names);
        let _pass = self.topology.attach_client_pass()?;
        let pool = format!(
            "[[pools]]\nname = \"p\"\nkind = \"origin\"\n[pools.steering]\nall_down = \
             \"answer-all\"\n[[pools.members]]\nname = \"m1\"\naddress = \"{MEMBER_1}\"\n\
             [[pools.members]]\nname = \"m2\"\naddress = \"{MEMBER_2}\"\n\n"
        );
        let text = zone
            .edge_config(&EdgeSettings {
                interface: INTERFACE,
                pin_root: self.topology.pin_root(),
                mode: "native",
                dns_listen: None,
            })
            .replacen("[[zones]]", &format!("{pool}[[zones]]"), 1)
            + "\n[[zones.names]]\nname = \"steered\"\npool = \"p\"\n";
        let config = self.topology.write_file("steering.toml", &text)?;
        drop(text);
        let (mut daemon, footprint) =
            self.footprint(names, Some(EDGE_READY), || self.spawn_edge(&config))?;
        let steered = format!("steered.{APEX}");
        let both: BTreeSet<String> = [MEMBER_1, MEMBER_2].iter().map(|a| a.to_string()).collect();
        let second: BTreeSet<String> = [MEMBER_2.to_string()].into();
        let timeout = start_timeout(names);
        let wait_for = |daemon: &mut Daemon, expected: &BTreeSet<String>| -> Result<()> {
            let deadline = Instant::now() + timeout;
            loop {
                daemon.check_running()?;
                if addresses_of(&self.topology.client, &steered)? == *expected {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("{steered} did not answer {expected:?} within {timeout:?}");
                }
            }
        };
        wait_for(&mut daemon, &both)?;
        let mut changes = Vec::new();
        for (action, expected) in [("drain", &second), ("undrain", &both)] {
            let cpu = footprint::cpu_seconds(daemon.id())?;
            let started = Instant::now();
            let output = self
                .topology
                .pop
                .command(edge_tests::edge::binary())
                .args([action, "--config"])
                .arg(&config)
                .args(["p", "m1"])
                .output()?;
            if !output.status.success() {
                bail!("edge {action}: {}", String::from_utf8_lossy(&output.stderr));
            }
            wait_for(&mut daemon, expected)?;
            let visible = started.elapsed();
            let cpu_seconds = footprint::cpu_seconds(daemon.id())? - cpu;
            eprintln!(
                "bench:   {action}: visible after {:.1} ms, {cpu_seconds:.3} s of CPU",
                visible.as_secs_f64() * 1e3
            );
            changes.push(SteeringChange {
                action,
                visible,
                cpu_seconds,
            });
        }
        let row = SteeringRow {
            ready: footprint.ready,
            rss: footprint::rss(daemon.id())?,
            changes,
        };
        drop(daemon);
        self.clear_pop();
        Ok(row)
    }
}

fn start_timeout(names: usize) -> Duration {
    if names >= HUGE_ZONE {
        HUGE_START_TIMEOUT
    } else if names >= LARGE_ZONE {
        LARGE_START_TIMEOUT
    } else {
        SMALL_START_TIMEOUT
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
            .filter(|line| {
                line.to_ascii_lowercase().contains("version") || line.starts_with(program)
            })
            .find_map(|line| {
                line.split_whitespace()
                    .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))
                    .map(str::to_string)
            })
    });
    format!(
        "{program} {}",
        reported.as_deref().unwrap_or("(version unknown)")
    )
}

/// Zone size, names asked and which of each program-cost row: the two zones of the table, a
/// sample of the large one spread thinly enough that its lookups miss the caches and the TLB,
/// and as many of its names side by side in the name table, on about a 24th of the pages.
const COST_ROWS: [(usize, usize, Asked); 4] = [
    (SMALL_ZONE, SMALL_ZONE, Asked::Spread),
    (LARGE_ZONE, SMALL_ZONE, Asked::Spread),
    (LARGE_ZONE, 10 * SMALL_ZONE, Asked::Spread),
    (LARGE_ZONE, 10 * SMALL_ZONE, Asked::Adjacent),
];

/// A program-cost row: zone size, names asked, which, and the cost.
type CostRow = (usize, usize, Asked, ProgramCost);

/// Each [`COST_ROWS`] row's cost, timed with BPF_PROG_TEST_RUN, beside the object at `baseline`
/// if given.
fn program_costs(baseline: Option<&Path>) -> Result<Vec<CostRow>> {
    let baseline = baseline.map(program_cost::Object::read).transpose()?;
    let baseline = baseline.as_ref().map(program_cost::Object::bytes);
    COST_ROWS
        .iter()
        .map(|&(names, asked, how)| {
            eprintln!("bench: XDP program cost, {names} names, {asked} asked ({how:?})");
            Ok((
                names,
                asked,
                how,
                program_cost::measure(BenchZone::new(names), asked, how, baseline)?,
            ))
        })
        .collect()
}

/// The program-cost table.
fn program_cost_section(costs: &[CostRow], stamp: &str) -> String {
    let with_baseline = costs.iter().any(|(.., cost)| cost.baseline.is_some());
    let mut columns = vec!["zone", "names asked", "edge_dns"];
    if with_baseline {
        columns.push("baseline edge_dns");
    }
    columns.extend(["reflector", "edge_dns − reflector"]);
    let mut table = Table::new(&columns);
    for (names, asked, how, cost) in costs {
        let mut row = vec![
            count(*names as u64),
            match how {
                Asked::Spread => count(*asked as u64),
                Asked::Adjacent => format!("{}, adjacent slots", count(*asked as u64)),
            },
            format!("{:.0} ns", cost.edge),
        ];
        if with_baseline {
            row.push(cost.baseline.map_or("–".into(), |b| format!("{b:.0} ns")));
        }
        row.extend([
            format!("{:.0} ns", cost.reflector),
            format!("{:.0} ns", cost.edge - cost.reflector),
        ]);
        table.row(row);
    }
    let baseline = if with_baseline {
        " *baseline edge_dns* is another build of the program (`--baseline-object`), loaded with \
         the same zone and timed on the same frames in turn with this one (their two tables \
         compete for the caches and the TLB, so both run slower than either alone)."
    } else {
        ""
    };
    format!(
        "\n### XDP program cost per query\n\n{stamp}\n\n\
         Apart from the veth pair, the load generator and their scheduling: every query frame of the row runs \
         through `edge_dns` (the zone loaded as edge publishes it) and through the reflector with \
         BPF_PROG_TEST_RUN, one run per call, {ROUNDS} rounds; the kernel times each run and a \
         frame's figure is its fastest round (which filters out other work on the machine). The \
         figures include the test-run call's own overhead, the same for both programs; the last \
         column is what answering from the maps adds.{baseline} Each run enters the kernel anew, so in the \
         million-name rows the TLB and caches are colder than in the receive loop of the table \
         above, where the million-name zone with 1,000 names asked keeps up with the \
         1,000-name zone. Names spread over the million-name zone each have their slot on a \
         4 KiB page of their own; the *adjacent slots* row asks as many names whose slots lie \
         side by side (32 slots to a 4 KiB page, three in four in use): what the spread row costs beyond it is the TLB miss, a \
         page walk per query (in a VM, through the guest's and the host's page tables).\n\n{}",
        table.markdown(),
        ROUNDS = program_cost::ROUNDS,
    )
}

/// The per-case table: the XDP program's test cases, timed.
fn case_cost_section(costs: &[CaseCost], stamp: &str) -> String {
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
        "\n### XDP program cost per case\n\n{stamp}\n\n\
         The cases the tests run (`tests/src/xdp_cases.rs`: frame in, verdict, frame out, \
         counter), each checked as the tests check it, then run through `edge_dns` with \
         BPF_PROG_TEST_RUN over the shared test zone, {ROUNDS} rounds; a case's figure is its \
         fastest round, the test-run call's overhead included. What a passed frame costs before \
         the kernel stack sees it, and what each answered shape costs.\n\n{}",
        table.markdown(),
        ROUNDS = program_cost::ROUNDS,
    )
}

fn megabytes(bytes: u64) -> String {
    format!("{} MB", count(bytes / 1_000_000))
}

fn seconds(duration: Duration) -> String {
    let s = duration.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A cell for a result, or why there is none.
fn cell<T>(result: &Result<T>, show: impl Fn(&T) -> String) -> String {
    match result {
        Ok(value) => show(value),
        Err(error) => format!("failed: {}", first_line(&format!("{error:#}"))),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}

fn report(
    args: &Args,
    date: &str,
    took: Duration,
    results: &[(Peer, Outcome)],
    costs: &[CostRow],
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
        "answered qps",
        "sent qps",
        "limited by",
        "answered qps, each run",
        "dnsperf qps",
        "dnsperf latency at 10 k qps",
    ]);
    let mut notes = Vec::new();
    for (peer, outcome) in results {
        let label = peer.label(args.wide);
        let mut cells = vec![label.clone()];
        match outcome {
            Outcome::Measured(m) => {
                let optional = |value: Option<f64>| value.map(rate).unwrap_or_default();
                cells.push(optional(m.answered()));
                cells.push(
                    m.median_run()
                        .map(|run| rate(run.report.sent_qps))
                        .unwrap_or_default(),
                );
                cells.push(m.median_run().map(limit).unwrap_or_default());
                cells.push(
                    m.runs
                        .iter()
                        .map(|run| rate(run.report.answered_qps))
                        .collect::<Vec<_>>()
                        .join(" / "),
                );
                cells.push(optional(m.dnsperf_qps()));
                cells.push(
                    m.latency_us()
                        .map(|us| format!("{us:.0} µs"))
                        .unwrap_or_default(),
                );
                if let Mode::Slow { ring_aborted } = &m.mode {
                    notes.push(format!(
                        "{label}: trafgen's transmit ring gave up on the veth's push-back \
                         ({ring_aborted}); the runs kept used its slow mode (one sendto per \
                         frame)."
                    ));
                }
                if m.disturbance() > DISTURBED_ABOVE {
                    notes.push(format!(
                        "{label}: other processes used up to {:.2} CPUs during the trafgen runs: \
                         noisy.",
                        m.disturbance()
                    ));
                }
                let lost: u64 = m.latency.iter().map(|run| run.lost).sum();
                if lost > 0 {
                    notes.push(format!(
                        "{label}: dnsperf lost {lost} queries at {} qps.",
                        rate(LATENCY_RATE as f64)
                    ));
                }
            }
            Outcome::Skipped(why) | Outcome::Failed(why) => {
                cells.push(match outcome {
                    Outcome::Failed(_) => "failed".to_string(),
                    _ => "not measured".to_string(),
                });
                notes.push(format!("{label}: {why}"));
            }
        }
        table.row(cells);
    }

    let busiest = results
        .iter()
        .filter_map(|(_, outcome)| match outcome {
            Outcome::Measured(m) => Some(m.background),
            _ => None,
        })
        .fold(0.0, f64::max);
    if busiest > QUIET_BELOW {
        notes.push(format!(
            "Other work shared the machine during this run (up to {:.0} % of all CPU time was \
             busy between peers, when the benchmark itself was idle, after waiting up to {} s \
             for quiet): the numbers are noisy.",
            busiest * 100.0,
            QUIET_WAIT.as_secs()
        ));
    }

    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let nproc = thread::available_parallelism()?.get();

    let stamp = stamp(args, date);
    let mut text = String::new();
    text.push_str("## DNS\n\n");
    text.push_str(&format!(
        "Produced by `{}` on {date}, in {:.0} s.",
        args.command,
        took.as_secs_f64()
    ));
    if args.partial() {
        text.push_str(
            " It measured only some of the tables; each table names the run that produced it.",
        );
    }
    text.push_str("\n\n");
    text.push_str(&format!(
        "Machine: {nproc} CPUs ({cpu_model}), kernel {}. Tools: {}; {}; {}; {}; {}.\n\n",
        kernel.trim(),
        version("trafgen", &["-v"]),
        version("dnsperf", &["-h"]),
        version("knotd", &["-V"]),
        version("nsd", &["-v"]),
        version("gdnsd", &["-h"]),
    ));
    if !results.is_empty() {
        text.push_str(&format!("### Throughput\n\n{stamp}\n\n"));
        text.push_str(&table.markdown());
        text.push_str(&format!(
            "\n- edge XDP path vs the reflector: {}\n\
             - 1,000,000-name zone vs 1,000-name zone, 1,000 names asked of each: {}\n\
             - 1,000,000-name zone, {} names asked, vs 1,000-name zone: {}\n",
            percent(answered(Peer::EdgeXdp), answered(Peer::Reflector)),
            percent(answered(Peer::EdgeXdpMillionHot), answered(Peer::EdgeXdp)),
            count(args.wide as u64),
            percent(answered(Peer::EdgeXdpMillionWide), answered(Peer::EdgeXdp)),
        ));
        if !notes.is_empty() {
            text.push_str("\nNotes:\n\n");
            for note in &notes {
                text.push_str(&format!("- {note}\n"));
            }
        }
    }
    if !costs.is_empty() {
        text.push_str(&program_cost_section(costs, &stamp));
    }
    if !case_costs.is_empty() {
        text.push_str(&case_cost_section(case_costs, &stamp));
    }
    Ok(text)
}

/// The line under each table that says which run produced it: a partial run leaves the other
/// tables of the section as they were.
fn stamp(args: &Args, date: &str) -> String {
    format!("*From `{}`, {date}.*", args.command)
}

/// The scale table.
fn scale_section(rows: &[(usize, Result<ScaleRow>)], stamp: &str) -> String {
    let mut table = Table::new(&[
        "names",
        "edge ready",
        "edge PSS",
        "edge peak RSS",
        "edge kernel maps",
        "edge in all",
        "1-name reload → visible",
        "queries lost during it",
        "1-name UPDATE → visible",
        "queries lost during it",
        "Knot ready",
        "Knot PSS",
        "NSD ready",
        "NSD PSS",
    ]);
    for (names, row) in rows {
        let mut cells = vec![count(*names as u64)];
        match row {
            Ok(row) => {
                cells.push(cell(&row.edge, |f| seconds(f.ready)));
                cells.push(cell(&row.edge, |f| megabytes(f.pss)));
                cells.push(cell(&row.edge, |f| megabytes(f.peak)));
                cells.push(cell(&row.edge, |f| megabytes(f.memlock)));
                cells.push(cell(&row.edge, |f| megabytes(f.in_all())));
                for change in [&row.reload, &row.update] {
                    cells.push(cell(change, |c| seconds(c.visible)));
                    cells.push(cell(change, |c| {
                        let mut text = format!(
                            "{} of {}",
                            count(c.sent.saturating_sub(c.answered)),
                            count(c.sent)
                        );
                        if c.dropped > 0 {
                            text += &format!("; {} dropped by the veth", count(c.dropped));
                        }
                        if c.unanswered > 0 {
                            text += &format!(" ({} watching unanswered)", c.unanswered);
                        }
                        text
                    }));
                }
                cells.push(cell(&row.knot, |f| seconds(f.ready)));
                cells.push(cell(&row.knot, |f| megabytes(f.pss)));
                cells.push(cell(&row.nsd, |f| seconds(f.ready)));
                cells.push(cell(&row.nsd, |f| megabytes(f.pss)));
            }
            Err(error) => cells.push(format!("failed: {}", first_line(&format!("{error:#}")))),
        }
        table.row(cells);
    }
    format!(
        "\n### Scale\n\n{stamp}\n\n{}\n\
         Each server in turn, pinned to CPU {SERVER_CPU}, serves a zone of that many names with \
         one A record each (edge: its TOML config; Knot DNS and NSD: the same names in one zone \
         file). *Ready*: from starting the process to kdig's first right answer for the zone's \
         last name, polled every 20 ms. *PSS*: proportional set size over the process tree once \
         ready (smaps_rollup; NSD's forked server shares pages with its parent); *peak RSS*: \
         VmHWM. *Kernel maps*: the `memlock` of every BPF map the daemon holds open (fdinfo), \
         each map once. *In all*: PSS plus kernel maps, less the maps' pages mapped into the \
         daemon (edge writes its name table through such a mapping, so those pages are in both). \
         *Reload*: the config rewritten with one name's address changed, then \
         SIGHUP; the time until the name's A query, asked back to back from the client \
         namespace (each waiting up to {} ms, then asked again), gets the new address, while trafgen \
         offers {} qps for 1,000 names; *lost*: queries the client end's interface sent minus \
         replies it received, from before the SIGHUP until trafgen stopped {} ms after the \
         change was visible (and its last replies had up to 2 s to arrive). *UPDATE*: another \
         name's address replaced by an RFC 2136 update signed with TSIG (HMAC-SHA256), sent \
         from the client namespace; the time from sending it until that name's A query, asked \
         back to back from the same namespace, gets the new address (the update is journaled \
         with fsync on the benchmark's disk before it applies; it is sent again if no \
         response comes within {} ms), under the same load, lost counted the same way; \
         *dropped by the veth*: frames the client end dropped instead of sending, because the \
         PoP end's receive ring was full, counted by neither side (trafgen's slow mode sends in \
         bursts: about as many a second whether the server is busy with a change for 30 ms \
         or for 2 s, so not queries the server lost); watching queries that went unanswered \
         (so dropped, asked again) are noted in the cell. A server passing {:.0} % of the memory available when it started is stopped.\n",
        table.markdown(),
        WATCH_RETRY.as_millis(),
        rate(RELOAD_RATE as f64),
        RELOAD_TAIL.as_millis(),
        UPDATE_RESEND.as_millis(),
        MEMORY_SHARE_CAP * 100.0,
    )
}

/// The steering table.
fn steering_section(names: usize, row: &Result<SteeringRow>, stamp: &str) -> String {
    let mut table = Table::new(&[
        "static names",
        "change",
        "command → answer visible",
        "daemon CPU time",
        "daemon RSS",
        "edge ready",
    ]);
    match row {
        Ok(row) => {
            for change in &row.changes {
                table.row(vec![
                    count(names as u64),
                    format!("edge {} p m1", change.action),
                    seconds(change.visible),
                    format!("{:.0} ms", change.cpu_seconds * 1e3),
                    megabytes(row.rss),
                    seconds(row.ready),
                ]);
            }
        }
        Err(error) => table.row(vec![
            count(names as u64),
            format!("failed: {}", first_line(&format!("{error:#}"))),
        ]),
    }
    format!(
        "\n### Steering changes with many static names\n\n{stamp}\n\n{}\n\
         edge serves {} static names and one steered name on a pool of two members that no probe \
         reaches (`all_down = \"answer-all\"`: both are answered while neither is drained). \
         `edge drain --config … p m1` (then `undrain`) runs in the PoP namespace; the time is \
         from starting the command to kdig's first answer with the new member set, polled back \
         to back; the CPU time is the daemon's (utime + stime) over the same span, probe rounds \
         included.\n",
        table.markdown(),
        count(names as u64),
    )
}

fn method(args: &Args) -> String {
    format!(
        "\n### Method\n\n\
         - Topology: two network namespaces, client ({client}) and PoP ({SERVER}), joined by one \
         veth pair; every server runs in the PoP namespace in turn. IPv4, UDP, A queries.\n\
         - Zone `{APEX}`: {small} names with one A record each (edge: TOML config; Knot, NSD and \
         gdnsd: the same names in a zone file). The million-name rows serve {large} names: one \
         asks {small} of them, spread evenly (every {stride}th name), so that the same query \
         load meets a table a thousand times larger; the other asks {wide}, spread evenly too, \
         so that most lookups miss the CPU caches. Queries ask every name of their set once, in \
         a fixed shuffled order, round robin.\n\
         - CPUs: {layout}\n\
         - trafgen (netsniff-ng; kxdpgun and Knot's XDP mode do not load their XDP programs on \
         kernels that refuse `bpf_xdp_adjust_meta` to them): one process (`--cpus 1`) pinned \
         to CPU {CLIENT_CPU}, sending one prebuilt frame per name asked, as fast as its \
         transmit ring goes; where the veth's push-back makes it give up (`Flushing TX_RING \
         failed`), its slow mode (`-b`, one sendto per frame) at a rate it cannot reach. \
         Runs of {seconds} s ({runs} per row) after 0.5 s of warm-up; the table shows the median and \
         each run. Sent and answered are the client end's interface counters (transmitted, \
         received) over the window, never trafgen's own: the replies end in an XDP program on \
         the client end that drops them after the veth counted them. *Limited by* reads the \
         median run: *server core* when CPU {SERVER_CPU} was busy at least {busy:.0} % of \
         it; *server* when fewer than {bound:.0} % of the sent queries were answered; \
         *generator* when CPU {CLIENT_CPU} (trafgen) was busy at least {busy:.0} %; otherwise \
         *kernel path*. On this kernel a full veth receive ring pushes back on the sender \
         instead of dropping, so a saturated server slows the generator down and still answers \
         nearly all it was sent.\n\
         - dnsperf (pinned to CPU {CLIENT_CPU}): runs of {seconds} s ({runs} of each kind) with \
         {DNSPERF_OUTSTANDING} queries in flight (median qps; the socket client is usually the \
         limit), and runs at {latency_rate} qps (median of the average latency).\n\
         - Knot DNS, NSD and gdnsd: one UDP worker each; Knot's XDP mode with `xdp: listen: \
         eth0`, started and asked at run time, reported as not measured with knotd's own words \
         when it does not start; NSD with minimal responses. edge's userspace path: `[dns] \
         listen` on the veth address with the XDP program attached to `lo` (generic mode), so \
         that every query reaches the userspace server.\n\
         - The reflector is `edge_reflect` in edge-ebpf/src/reflect.rs: it swaps addresses and \
         ports and sets QR, without parsing the question or any lookup.\n",
        client = Topology::CLIENT_V4,
        small = count(SMALL_ZONE as u64),
        large = count(LARGE_ZONE as u64),
        wide = count(args.wide as u64),
        stride = LARGE_ZONE / SMALL_ZONE,
        layout = cpus::LAYOUT,
        runs = args.runs,
        seconds = args.seconds,
        busy = CORE_BUSY_ABOVE * 100.0,
        bound = SERVER_BOUND_BELOW * 100.0,
        latency_rate = rate(LATENCY_RATE as f64),
    )
}
