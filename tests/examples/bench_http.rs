//! `cargo xtask bench http`: requests per second, throughput and latency (wrk) of edge's HTTP
//! cache, nginx serving the same files from disk with sendfile, nginx's own cache
//! (`proxy_cache`) and Varnish caching in memory, for 1 KB hits, 10 MB hits, the miss path
//! (`no-store`) and stored misses (a new URL per request, each stored). Every server runs in turn in the PoP namespace of
//! the same two-namespace topology; the origin (tests/src/origin.rs) runs in the client
//! namespace. Prints a Markdown table and, with `--out`, writes it with the method, the machine
//! and the date. Nothing here asserts a timing.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Parser;
use edge_tests::{
    bench::command_output,
    bench::{
        cpus::{self, CLIENT_CPU, SERVER_CPU},
        h2load::{H2loadRun, h2load},
        peers::Daemon,
        report::{Table, median, rate, replace_section},
        web::{self, WebSetup, WebTls},
        wrk::{NEW_URL_PER_REQUEST, WrkReport, WrkRun, wrk},
    },
    certs::{Made, TestCa, VALID},
    curl::{Reply, curl},
    edge::EdgeProcess,
    origin::{Origin, pattern},
    topology::{ClientXdp, Topology},
};

const INTERFACE: &str = Topology::INTERFACE;
const SERVER: Ipv4Addr = Topology::POP_V4;
const ORIGIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Topology::CLIENT_V4), 8080);
/// The site edge serves; nginx and Varnish ignore it.
const HOST: &str = "static.example.com";
/// The TLS port of edge and nginx, with the same ECDSA P-256 certificate for [`HOST`].
const TLS_PORT: u16 = 443;
/// h2load: streams open at once on each of its `CONNECTIONS` connections.
const H2_STREAMS: u32 = 10;
/// Runs per reported point, and their length.
const RUNS: usize = 3;
const RUN_SECONDS: u64 = 4;
/// One run before the measured ones, not kept: connections, caches and page cache warm up.
const WARM_SECONDS: u64 = 1;
/// wrk: one thread (it has one CPU), this many keep-alive connections.
const THREADS: u32 = 1;
const CONNECTIONS: u32 = 32;
const SMALL: usize = 1024;
const LARGE: usize = 10 * 1024 * 1024;
/// A run during which processes outside the benchmark used more CPUs than this is repeated, up
/// to `MAX_ATTEMPTS` runs in all.
const DISTURBED_ABOVE: f64 = 0.1;
const MAX_ATTEMPTS: usize = 5;
/// Before each measurement, wait up to this long for the machine to be quiet.
const QUIET_WAIT: Duration = Duration::from_secs(5);
const QUIET_BELOW: f64 = 0.05;
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Args {
    /// Write the report into the `## HTTP` section of this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The command that ran this benchmark, for the report.
    #[arg(long, default_value = "cargo xtask bench http")]
    command: String,
    /// Measure only these servers (default: all), e.g. `--servers edge,nginx` while working on
    /// one of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<Server>,
    /// Measure only these workloads (default: all), e.g. `--workloads tls-small-hit,tls-handshake`.
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Server {
    /// edge with its XDP program on the PoP namespace's `lo`, so that the veth keeps the
    /// client end's TSO as for nginx and Varnish (see [`Bench::client_tso`]).
    Edge,
    /// edge with its XDP program natively on the PoP end of the veth, as a PoP runs it on its
    /// NIC; on a veth this turns the client end's TSO off.
    EdgeXdpOnVeth,
    Nginx,
    /// nginx as a cache on disk in front of the origin, for the stored misses.
    NginxProxyCache,
    Varnish,
    /// nginx again, with the client end's TSO off: its requests are then received by the PoP
    /// end's NAPI kthread on the server CPU, as edge's are (see [`Bench::client_tso`]).
    NginxClientTsoOff,
}

impl Server {
    const ALL: [Self; 6] = [
        Self::Edge,
        Self::EdgeXdpOnVeth,
        Self::Nginx,
        Self::NginxProxyCache,
        Self::Varnish,
        Self::NginxClientTsoOff,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::EdgeXdpOnVeth => "edge, XDP program on the veth",
            Self::Nginx => "nginx 1.22, sendfile",
            Self::NginxProxyCache => "nginx 1.22, proxy_cache",
            Self::Varnish => "Varnish 7.1, malloc",
            Self::NginxClientTsoOff => "nginx, client TSO off",
        }
    }

    fn is_edge(self) -> bool {
        matches!(self, Self::Edge | Self::EdgeXdpOnVeth)
    }

    fn is_nginx(self) -> bool {
        matches!(self, Self::Nginx | Self::NginxClientTsoOff)
    }

    /// nginx serves files; it has no miss path. Its proxy_cache is measured on stored
    /// misses, which nginx serving files cannot have. TLS is measured for edge and nginx.
    fn serves(self, workload: Workload) -> bool {
        match self {
            Self::Nginx => {
                matches!(workload, Workload::SmallHit | Workload::LargeHit) || workload.is_tls()
            }
            Self::NginxClientTsoOff => {
                matches!(workload, Workload::SmallHit | Workload::LargeHit)
            }
            Self::NginxProxyCache => workload.stores_each_request(),
            Self::Edge => true,
            Self::EdgeXdpOnVeth | Self::Varnish => !workload.is_tls(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    SmallHit,
    LargeHit,
    Miss,
    /// A new URL on every request (see [`NEW_URL_PER_REQUEST`]), each answer stored.
    StoredMissSmall,
    StoredMissLarge,
    /// 1 KB hits over keep-alive TLS connections, HTTP/1.1 (wrk).
    TlsSmallHit,
    /// 1 KB hits over keep-alive TLS connections, HTTP/2 (h2load, [`H2_STREAMS`] streams each).
    TlsSmallHitH2,
    /// A new TLS connection (full handshake, no resumption) for every 1 KB hit (wrk with
    /// `Connection: close`): handshakes per second.
    TlsHandshake,
    TlsLargeHit,
}

impl Workload {
    const ALL: [Self; 9] = [
        Self::SmallHit,
        Self::LargeHit,
        Self::Miss,
        Self::StoredMissSmall,
        Self::StoredMissLarge,
        Self::TlsSmallHit,
        Self::TlsSmallHitH2,
        Self::TlsHandshake,
        Self::TlsLargeHit,
    ];

    fn is_tls(self) -> bool {
        matches!(
            self,
            Self::TlsSmallHit | Self::TlsSmallHitH2 | Self::TlsHandshake | Self::TlsLargeHit
        )
    }

    fn label(self) -> &'static str {
        match self {
            Self::SmallHit => "1 KB hit",
            Self::LargeHit => "10 MB hit",
            Self::Miss => "1 KB miss (no-store)",
            Self::StoredMissSmall => "1 KB stored miss (new URL each)",
            Self::StoredMissLarge => "10 MB stored miss (new URL each)",
            Self::TlsSmallHit => "1 KB hit, TLS, HTTP/1.1",
            Self::TlsSmallHitH2 => "1 KB hit, TLS, HTTP/2 (h2load)",
            Self::TlsHandshake => "1 KB hit, new TLS connection each",
            Self::TlsLargeHit => "10 MB hit, TLS",
        }
    }

    fn stores_each_request(self) -> bool {
        matches!(self, Self::StoredMissSmall | Self::StoredMissLarge)
    }

    /// The request target. The origin answers by the query string (size, Cache-Control); nginx
    /// ignores the query and serves the file named by the path, which holds the same bytes.
    fn target(self) -> String {
        match self {
            Self::SmallHit | Self::TlsSmallHit | Self::TlsSmallHitH2 | Self::TlsHandshake => {
                format!("/1k?size={SMALL}&cc=max-age=3600")
            }
            Self::LargeHit | Self::TlsLargeHit => format!("/10m?size={LARGE}&cc=max-age=3600"),
            Self::Miss => format!("/miss?size={SMALL}&cc=no-store"),
            // wrk's script appends what makes each request's target new.
            Self::StoredMissSmall => format!("/new1k?size={SMALL}&cc=max-age=3600&u="),
            Self::StoredMissLarge => format!("/new10m?size={LARGE}&cc=max-age=3600&u="),
        }
    }

    fn size(self) -> usize {
        match self {
            Self::LargeHit | Self::StoredMissLarge | Self::TlsLargeHit => LARGE,
            Self::SmallHit
            | Self::Miss
            | Self::StoredMissSmall
            | Self::TlsSmallHit
            | Self::TlsSmallHitH2
            | Self::TlsHandshake => SMALL,
        }
    }

    /// By address: the load generators send no server name, and the default certificate
    /// (edge's `tls_default_host`, nginx's only server) answers.
    fn url(self) -> String {
        if self.is_tls() {
            format!("https://{SERVER}:{TLS_PORT}{}", self.target())
        } else {
            format!("http://{SERVER}{}", self.target())
        }
    }
}

/// The kept runs of one server and workload.
struct Measured {
    /// The kept runs, each with the CPUs other processes used during it.
    runs: Vec<(WrkReport, f64)>,
    /// Runs made to keep `RUNS`.
    attempts: usize,
    /// Requests wrk completed, and requests the origin received, over every run.
    requests: u64,
    origin_requests: usize,
    /// Background CPU use just before the runs.
    background: f64,
}

impl Measured {
    fn median(&self, value: impl Fn(&WrkReport) -> f64) -> Option<f64> {
        median(
            &self
                .runs
                .iter()
                .map(|(run, _)| value(run))
                .collect::<Vec<_>>(),
        )
    }

    fn requests_per_second(&self) -> Option<f64> {
        self.median(|run| run.requests_per_second)
    }

    fn bytes_per_second(&self) -> Option<f64> {
        self.median(|run| run.bytes_per_second)
    }

    fn errors(&self) -> u64 {
        self.runs.iter().map(|(run, _)| run.errors).sum()
    }

    fn disturbance(&self) -> f64 {
        self.runs
            .iter()
            .map(|(_, other)| *other)
            .fold(0.0, f64::max)
    }
}

type Results = Vec<(Server, Workload, Result<Measured, String>)>;

struct Bench {
    /// The workloads asked for (empty: all).
    workloads: Vec<Workload>,
    topology: Topology,
    origin: Origin,
    /// nginx's document root: the objects as files.
    root: PathBuf,
    /// NAPI kthreads that are not this topology's.
    foreign_napi: BTreeSet<u32>,
    /// The CA of the certificate edge and nginx both serve.
    ca: TestCa,
    certificate: Made,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?;
    // Before this process pins itself to one.
    let nproc = thread::available_parallelism()?.get();
    let load_before = load_average()?;
    // No XDP program on the client end: HTTP needs no XDP_TX replies, and on a veth any XDP
    // program turns its peer's segmentation offloads off, which would make every server
    // segment its responses in software.
    let topology = Topology::client_and_pop_with("bench-http", ClientXdp::None)?;
    // Other topologies' NAPI threads (another benchmark's), which this one leaves alone.
    let foreign_napi = cpus::napi_threads(INTERFACE)?;
    cpus::prepare_pop(&topology.pop, INTERFACE)?;
    let origin = Origin::start(&topology.client, ORIGIN)?;
    // The origin's threads are this process's: with wrk, on the client side's CPU.
    cpus::pin(std::process::id(), CLIENT_CPU)?;
    let root = topology.work_dir().join("www");
    std::fs::create_dir_all(&root)?;
    for workload in [Workload::SmallHit, Workload::LargeHit] {
        let path = workload.target();
        let name = path[1..].split('?').next().unwrap_or_default();
        std::fs::write(root.join(name), pattern(workload.size()))?;
    }
    let ca = TestCa::new("bench-http")?;
    let certificate = ca.certificate("site", &[HOST], VALID)?;
    let bench = Bench {
        workloads: args.workloads.clone(),
        topology,
        origin,
        root,
        foreign_napi,
        ca,
        certificate,
    };

    let mut results: Results = Vec::new();
    for server in Server::ALL {
        if !args.servers.is_empty() && !args.servers.contains(&server) {
            continue;
        }
        eprintln!("bench: {}", server.label());
        if let Err(error) = bench.measure(server, &mut results) {
            let error = format!("{error:#}");
            eprintln!("bench: {}: {error}", server.label());
            for workload in Workload::ALL {
                let done = results
                    .iter()
                    .any(|(s, w, _)| *s == server && *w == workload);
                if bench.measures(server, workload) && !done {
                    results.push((server, workload, Err(error.clone())));
                }
            }
        }
    }
    drop(bench);

    let machine = Machine {
        nproc,
        load: [load_before, load_average()?],
    };
    let section = report(&args.command, &date, &machine, started.elapsed(), &results)?;
    print!("{section}");
    if let Some(out) = &args.out {
        let document = std::fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n".into());
        std::fs::write(out, replace_section(&document, "HTTP", &section))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: wrote the HTTP section of {}", out.display());
    }
    let failed = results
        .iter()
        .filter(|(_, _, result)| result.is_err())
        .count();
    if failed > 0 {
        bail!("{failed} measurements failed");
    }
    Ok(())
}

/// A server started for the benchmark, held only to be dropped, which stops it.
enum Running {
    Edge(EdgeProcess),
    Daemon(Daemon),
}

impl Bench {
    /// Starts `server`, then measures every workload it serves, appending to `results`.
    fn measure(&self, server: Server, results: &mut Results) -> Result<()> {
        self.client_tso(server != Server::NginxClientTsoOff)?;
        let mut running = self.start(server)?;
        self.wait_serving(server, &mut running)?;
        self.thread_napi()?;
        for workload in Workload::ALL {
            if !self.measures(server, workload) {
                continue;
            }
            eprintln!("bench:   {}", workload.label());
            let measured = self
                .warm(server, workload)
                .and_then(|()| self.runs(workload))
                .map_err(|error| format!("{error:#}"));
            if let Err(error) = &measured {
                eprintln!("bench:   {}: {error}", workload.label());
            }
            results.push((server, workload, measured));
        }
        match running {
            Running::Daemon(mut daemon) => daemon.check_running(),
            Running::Edge(edge) => self.stop_edge(edge),
        }
    }

    fn measures(&self, server: Server, workload: Workload) -> bool {
        server.serves(workload) && (self.workloads.is_empty() || self.workloads.contains(&workload))
    }

    /// Stops edge and makes sure its XDP program is gone. One left on the PoP end of the veth
    /// (edge killed after ignoring SIGTERM for its stop timeout, say while its last row's
    /// fills drain, so that its pinned link stays) would turn the client end's TSO off: the
    /// next server's `ethtool -K eth0 tso on` then fails with "Could not change any device
    /// features", and every row after measures another receive path. `edge detach` removes it.
    fn stop_edge(&self, edge: EdgeProcess) -> Result<()> {
        if let Err(error) = edge.stop() {
            eprintln!("bench: edge did not stop cleanly: {error:#}");
        }
        let pins = self.topology.pin_root().join(INTERFACE);
        if self.xdp_on_pop_end()? || pins.exists() {
            eprintln!("bench: edge left its data plane behind; detaching it");
            let output = self
                .topology
                .pop
                .command(edge_tests::edge::binary())
                .args(["detach", "--config"])
                .arg(self.topology.work_dir().join("edge.toml"))
                .output()?;
            ensure!(
                output.status.success() && !self.xdp_on_pop_end()?,
                "edge detach left an XDP program on the PoP end: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Whether the PoP end of the veth has an XDP program attached.
    fn xdp_on_pop_end(&self) -> Result<bool> {
        let output = self
            .topology
            .pop
            .run("ip", &["-details", "link", "show", INTERFACE])?;
        Ok(String::from_utf8_lossy(&output.stdout).contains("prog/xdp"))
    }

    /// Turns threaded NAPI on for the PoP end again and pins its kthread to the server CPU:
    /// detaching an XDP program from a veth (edge's, when edge stops) turns it off, and the
    /// receive work would then run on the client's CPU.
    fn thread_napi(&self) -> Result<()> {
        self.topology
            .pop
            .set_device_attribute(INTERFACE, "threaded", "1")?;
        let ours: Vec<u32> = cpus::napi_threads(INTERFACE)?
            .difference(&self.foreign_napi)
            .copied()
            .collect();
        ensure!(!ours.is_empty(), "no NAPI thread for the PoP end");
        for pid in ours {
            cpus::pin(pid, SERVER_CPU)?;
        }
        Ok(())
    }

    /// Turns the client end's TCP segmentation offload on (the default) or off. A veth passes a
    /// packet to the peer's NAPI (GRO) only when the sending end has no TSO; otherwise the peer
    /// receives it on the sender's CPU. Off, a server's requests are received by the PoP end's
    /// NAPI kthread on the server CPU, as edge's always are: its native XDP program on a veth
    /// turns the peer's segmentation offloads off whatever this says. Set before a server
    /// starts, while no program holds TSO off.
    fn client_tso(&self, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        self.topology
            .client
            .run("ethtool", &["-K", INTERFACE, "tso", state])
            .with_context(|| {
                format!(
                    "client TSO {state} (an XDP program on the PoP end forces it off: {})",
                    match self.xdp_on_pop_end() {
                        Ok(true) => "one is attached",
                        Ok(false) => "none is attached",
                        Err(_) => "unknown",
                    }
                )
            })?;
        Ok(())
    }

    fn start(&self, server: Server) -> Result<Running> {
        let dir = self.topology.work_dir().join(format!("{server:?}"));
        let setup = WebSetup {
            netns: &self.topology.pop,
            dir: &dir,
            listen: SocketAddr::from((SERVER, 80)),
            cpu: SERVER_CPU,
        };
        Ok(match server {
            Server::Edge | Server::EdgeXdpOnVeth => {
                let config = self
                    .topology
                    .write_file("edge.toml", &self.edge_config(server))?;
                let edge = EdgeProcess::start(&self.topology.pop, &config, &[])?;
                cpus::pin(edge.id(), SERVER_CPU)?;
                Running::Edge(edge)
            }
            Server::Nginx | Server::NginxClientTsoOff => {
                let tls = WebTls {
                    listen: SocketAddr::from((SERVER, TLS_PORT)),
                    certificate: &self.certificate.certificate,
                    key: &self.certificate.key,
                };
                Running::Daemon(web::start_nginx(&setup, &self.root, Some(&tls))?)
            }
            Server::NginxProxyCache => {
                Running::Daemon(web::start_nginx_proxy_cache(&setup, ORIGIN, "256m")?)
            }
            Server::Varnish => Running::Daemon(web::start_varnish(&setup, ORIGIN, "256m")?),
        })
    }

    fn edge_config(&self, server: Server) -> String {
        let (interface, mode) = if server == Server::EdgeXdpOnVeth {
            (INTERFACE, "native")
        } else {
            ("lo", "generic")
        };
        format!(
            r#"[xdp]
interface = "{interface}"
mode = "{mode}"
pin_root = "{pin_root}"

[[pools]]
name = "origins"
kind = "origin"
[[pools.members]]
name = "o1"
address = "{origin}"
http_port = {port}

[http]
listen = "{SERVER}:80"
tls_listen = "{SERVER}:{TLS_PORT}"
tls_default_host = "{HOST}"
cache_dir = "{cache_dir}"
cache_capacity = "256 MiB"

[[http.sites]]
host = "{HOST}"
pool = "origins"
certificate = "{certificate}"
key = "{key}"
"#,
            certificate = self.certificate.certificate.display(),
            key = self.certificate.key.display(),
            pin_root = self.topology.pin_root().display(),
            origin = ORIGIN.ip(),
            port = ORIGIN.port(),
            cache_dir = self.topology.work_dir().join("edge-cache").display(),
        )
    }

    /// Waits until `server` answers on port 80.
    fn wait_serving(&self, server: Server, running: &mut Running) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://{SERVER}/");
        loop {
            let reply = self.topology.client.run(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "-H",
                    &format!("Host: {HOST}"),
                    &url,
                ],
            );
            if reply.is_ok() {
                return Ok(());
            }
            if let Running::Daemon(daemon) = running {
                daemon.check_running()?;
            }
            if Instant::now() > deadline {
                bail!("{} does not answer {url}", server.label());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fetches the object twice and checks the bytes, and that the second answer came from the
    /// cache (hits, and stored misses: a target of their own, stored by the first GET) or from
    /// the origin (misses).
    fn warm(&self, server: Server, workload: Workload) -> Result<()> {
        let mut url = workload.url();
        if workload.stores_each_request() {
            url.push_str(&format!("warm-{server:?}"));
        }
        // Over TLS by name, the certificate checked against the bench's CA.
        let resolve = format!("{HOST}:{TLS_PORT}:{SERVER}");
        let cacert = self.ca.ca.display().to_string();
        if workload.is_tls() {
            url = format!("https://{HOST}{}", workload.target());
        }
        let get = || -> Result<Reply> {
            let mut args = vec!["-H".to_string(), format!("Host: {HOST}")];
            if workload.is_tls() {
                args = vec![
                    "--resolve".into(),
                    resolve.clone(),
                    "--cacert".into(),
                    cacert.clone(),
                ];
            }
            if workload == Workload::TlsSmallHitH2 {
                args.push("--http2".into());
            }
            args.push(url.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let reply = curl(&self.topology.client, &args)?;
            ensure!(reply.status == 200, "{url}: status {}", reply.status);
            ensure!(
                reply.body == pattern(workload.size()),
                "{url}: {} bytes, not the expected {}",
                reply.body.len(),
                workload.size()
            );
            Ok(reply)
        };
        get()?;
        // Counted for this target alone: fills a slow earlier row left running (its clients
        // gave up, the fetches go on) must not count here.
        let mut target = workload.target();
        if workload.stores_each_request() {
            target.push_str(&format!("warm-{server:?}"));
        }
        let before = self.origin.count(&target);
        let second = get()?;
        let fetched = self.origin.count(&target) - before;
        let expected = usize::from(workload == Workload::Miss && !server.is_nginx());
        ensure!(
            fetched == expected,
            "{}: the second GET of {url} made {fetched} origin requests, not {expected}",
            server.label()
        );
        if server.is_edge() {
            let status = if workload == Workload::Miss {
                "miss"
            } else {
                "hit"
            };
            ensure!(
                second.cache() == status,
                "edge: the second GET of {url} says x-cache: {:?}, not {status}",
                second.cache()
            );
        }
        Ok(())
    }

    /// A warm-up run, then `RUNS` measured ones. A run during which other processes used more
    /// than `DISTURBED_ABOVE` CPUs is repeated, up to `MAX_ATTEMPTS` runs in all; the `RUNS`
    /// least disturbed are kept.
    fn runs(&self, workload: Workload) -> Result<Measured> {
        let url = workload.url();
        let script = if workload.stores_each_request() {
            Some(
                self.topology
                    .write_file("new-url-per-request.lua", NEW_URL_PER_REQUEST)?,
            )
        } else {
            None
        };
        let run = |seconds| {
            if workload == Workload::TlsSmallHitH2 {
                return h2load(
                    &self.topology.client,
                    &H2loadRun {
                        url: &url,
                        authority: HOST,
                        connections: CONNECTIONS,
                        streams: H2_STREAMS,
                        seconds,
                        cpu: CLIENT_CPU,
                    },
                );
            }
            wrk(
                &self.topology.client,
                &WrkRun {
                    url: &url,
                    host: HOST,
                    threads: THREADS,
                    connections: CONNECTIONS,
                    seconds,
                    cpu: CLIENT_CPU,
                    script: script.as_deref(),
                    close_each: workload == Workload::TlsHandshake,
                },
            )
        };
        run(WARM_SECONDS)?;
        let background = cpus::wait_quiet(QUIET_BELOW, QUIET_WAIT)?;
        let before = self.origin.seen().len();
        let mut runs: Vec<(WrkReport, f64)> = Vec::new();
        let undisturbed = |runs: &[(WrkReport, f64)]| {
            runs.iter()
                .filter(|(_, other)| *other <= DISTURBED_ABOVE)
                .count()
        };
        while runs.len() < RUNS || (undisturbed(&runs) < RUNS && runs.len() < MAX_ATTEMPTS) {
            let other = cpus::OtherWork::start()?;
            let report = run(RUN_SECONDS)?;
            let used = other.cpus_used()?;
            eprintln!(
                "bench:     {:>7} requests/s, {:.2} Gbit/s; other processes used {used:.2} CPUs",
                rate(report.requests_per_second),
                gbits(report.bytes_per_second)
            );
            runs.push((report, used));
        }
        let attempts = runs.len();
        // Counted over every run, kept or not, as is the origin's count.
        let requests = runs.iter().map(|(run, _)| run.requests).sum();
        runs.sort_by(|a, b| a.1.total_cmp(&b.1));
        runs.truncate(RUNS);
        Ok(Measured {
            runs,
            attempts,
            requests,
            origin_requests: self.origin.seen().len() - before,
            background,
        })
    }
}

fn gbits(bytes_per_second: f64) -> f64 {
    bytes_per_second * 8.0 / 1e9
}

/// `part / whole` as a ratio, or `n/a` when either is missing.
fn times(part: Option<f64>, whole: Option<f64>) -> String {
    match (part, whole) {
        (Some(part), Some(whole)) if whole > 0.0 => format!("{:.2}×", part / whole),
        _ => "n/a".to_string(),
    }
}

/// What the report says about the machine besides its CPU model and kernel.
struct Machine {
    /// CPUs before the benchmark pinned itself to one.
    nproc: usize,
    /// /proc/loadavg's first three fields at the start and at the end.
    load: [String; 2],
}

/// The 1, 5 and 15 minute load averages: runnable processes, short-lived ones (compilers)
/// included, which the per-run count of other processes' CPU time misses.
fn load_average() -> Result<String> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "))
}

fn report(
    command: &str,
    date: &str,
    machine: &Machine,
    took: Duration,
    results: &Results,
) -> Result<String> {
    let measured = |server: Server, workload: Workload| {
        results.iter().find_map(|(s, w, result)| match result {
            Ok(measured) if *s == server && *w == workload => Some(measured),
            _ => None,
        })
    };
    let mut table = Table::new(&[
        "server",
        "workload",
        "requests/s",
        "throughput",
        "p50 latency",
        "p99 latency",
        "requests/s, 3 runs",
        "origin requests per request",
    ]);
    let mut notes = Vec::new();
    let millis = |duration: Duration| {
        let ms = duration.as_secs_f64() * 1e3;
        if ms >= 100.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{ms:.2} ms")
        }
    };
    for (server, workload, result) in results {
        let mut cells = vec![server.label().to_string(), workload.label().to_string()];
        match result {
            Ok(m) => {
                let optional = |value: Option<f64>| value.map(rate).unwrap_or_default();
                cells.push(optional(m.requests_per_second()));
                cells.push(
                    m.bytes_per_second()
                        .map(|bytes| format!("{:.2} Gbit/s", gbits(bytes)))
                        .unwrap_or_default(),
                );
                let latency = |value: fn(&WrkReport) -> Duration| {
                    m.median(|run| value(run).as_secs_f64())
                        .map(|seconds| millis(Duration::from_secs_f64(seconds)))
                        .unwrap_or_default()
                };
                cells.push(latency(|run| run.p50));
                cells.push(latency(|run| run.p99));
                cells.push(
                    m.runs
                        .iter()
                        .map(|(run, _)| rate(run.requests_per_second))
                        .collect::<Vec<_>>()
                        .join(" / "),
                );
                cells.push(format!(
                    "{:.3}",
                    m.origin_requests as f64 / m.requests.max(1) as f64
                ));
                if m.errors() > 0 {
                    notes.push(format!(
                        "{}, {}: {} errors (non-2xx answers or socket errors).",
                        server.label(),
                        workload.label(),
                        m.errors()
                    ));
                }
                if m.disturbance() > DISTURBED_ABOVE {
                    notes.push(format!(
                        "{}, {}: other processes used up to {:.2} CPUs during the runs kept \
                         ({} runs were needed for {RUNS}): noisy.",
                        server.label(),
                        workload.label(),
                        m.disturbance(),
                        m.attempts
                    ));
                }
            }
            Err(error) => {
                cells.push("failed".to_string());
                notes.push(format!("{}, {}: {error}", server.label(), workload.label()));
            }
        }
        table.row(cells);
    }
    let busiest = results
        .iter()
        .filter_map(|(_, _, result)| result.as_ref().ok().map(|m| m.background))
        .fold(0.0, f64::max);
    notes.push(
        "This machine is shared: another benchmark or a build may run at the same time, so \
         a row can differ much between invocations. The per-run count of other \
         processes' CPU time only sees processes still alive at the end of a run, so it misses \
         short-lived ones such as compilers; the load averages above show them. Compare rows \
         of one invocation rather than invocations."
            .to_string(),
    );
    if busiest > QUIET_BELOW {
        notes.push(format!(
            "Other work shared the machine during this run (up to {:.0} % of all CPU time was \
             busy just before a measurement, with the benchmark itself idle, after waiting up \
             to {} s for quiet): the numbers are noisy.",
            busiest * 100.0,
            QUIET_WAIT.as_secs()
        ));
    }

    let rps = |server, workload| measured(server, workload).and_then(Measured::requests_per_second);
    let bps = |server, workload| measured(server, workload).and_then(Measured::bytes_per_second);
    // Throughput for large bodies, requests per second for the rest.
    let versus = |server, peer, workload| {
        let metric = |of| match workload {
            Workload::LargeHit | Workload::StoredMissLarge | Workload::TlsLargeHit => {
                bps(of, workload)
            }
            _ => rps(of, workload),
        };
        times(metric(server), metric(peer))
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;

    let mut text = String::new();
    text.push_str("## HTTP\n\n");
    text.push_str(&format!(
        "Produced by `{command}` on {date}, in {:.0} s.\n\n",
        took.as_secs_f64()
    ));
    text.push_str(&format!(
        "Machine: {} CPUs ({cpu_model}), kernel {}; load average (1, 5, 15 min) {} at the \
         start, {} at the end. Tools: {}; {}; {}.\n\n",
        machine.nproc,
        kernel.trim(),
        machine.load[0],
        machine.load[1],
        version("wrk", &["-v"]),
        version("nginx", &["-v"]),
        version("varnishd", &["-V"]),
    ));
    text.push_str(&table.markdown());
    text.push_str(&format!(
        "\n- edge 1 KB hits vs nginx, requests per second (aim ≥ 1.2×): {}\n\
         - edge 10 MB hits vs nginx, throughput (aim ≥ 1×): {}\n\
         - edge vs Varnish: 1 KB hits {}, 10 MB hits {}, misses {}\n\
         - edge stored misses vs nginx proxy_cache (aim ≥ 1×): 1 KB {}, 10 MB {}; vs Varnish: \
         1 KB {}, 10 MB {}\n\
         - `edge, XDP program on the veth` vs `nginx, client TSO off` (requests received on CPU \
         {SERVER_CPU} for both, see Receive path): 1 KB hits {}, 10 MB hits {}\n\
         - edge vs nginx over TLS (aim ≥ 1×): 1 KB hits HTTP/1.1 {}, HTTP/2 {}; new TLS \
         connections per second {}; 10 MB hits {}\n",
        versus(Server::Edge, Server::Nginx, Workload::SmallHit),
        versus(Server::Edge, Server::Nginx, Workload::LargeHit),
        versus(Server::Edge, Server::Varnish, Workload::SmallHit),
        versus(Server::Edge, Server::Varnish, Workload::LargeHit),
        versus(Server::Edge, Server::Varnish, Workload::Miss),
        versus(
            Server::Edge,
            Server::NginxProxyCache,
            Workload::StoredMissSmall
        ),
        versus(
            Server::Edge,
            Server::NginxProxyCache,
            Workload::StoredMissLarge
        ),
        versus(Server::Edge, Server::Varnish, Workload::StoredMissSmall),
        versus(Server::Edge, Server::Varnish, Workload::StoredMissLarge),
        versus(
            Server::EdgeXdpOnVeth,
            Server::NginxClientTsoOff,
            Workload::SmallHit
        ),
        versus(
            Server::EdgeXdpOnVeth,
            Server::NginxClientTsoOff,
            Workload::LargeHit
        ),
        versus(Server::Edge, Server::Nginx, Workload::TlsSmallHit),
        versus(Server::Edge, Server::Nginx, Workload::TlsSmallHitH2),
        versus(Server::Edge, Server::Nginx, Workload::TlsHandshake),
        versus(Server::Edge, Server::Nginx, Workload::TlsLargeHit),
    ));
    if !notes.is_empty() {
        text.push_str("\nNotes:\n\n");
        for note in &notes {
            text.push_str(&format!("- {note}\n"));
        }
    }
    text.push_str(&format!(
        "\n### Method\n\n\
         - Topology: two network namespaces, client ({client}) and PoP ({SERVER}), joined by one \
         veth pair. edge, nginx and Varnish run in turn in the PoP namespace on port 80. The \
         origin is tests/src/origin.rs (hyper, HTTP/1.1, two threads) at {ORIGIN} in the client \
         namespace; it answers with the size and Cache-Control its query string asks for.\n\
         - Objects: `{small}` and `{large}` (`Cache-Control: max-age=3600`); nginx serves files \
         with the same bytes from its document root on disk (its query string is ignored). \
         The miss path asks for `{miss}`: the origin answers `Cache-Control: no-store`, so \
         edge and Varnish (a hit-for-miss object, from its built-in VCL) forward every request \
         to the origin; the last column counts what the origin received during the runs. nginx \
         has no miss path.\n\
         - Stored misses: every request asks for a new target (`{stored_small}` and \
         `{stored_large}` with a part wrk's script makes new for each request), each answer \
         `max-age=3600`, so each is fetched from the origin and stored: edge (on disk, under \
         its 256 MiB capacity), nginx with `proxy_cache` (on disk, `max_size=256m`, keep-alive \
         to the origin) and Varnish (malloc). The last column should be 1.\n\
         - Bodies: edge answers a 1 KB hit with `Bytes` read once into memory (bodies under \
         64 KiB are held, not mapped); hyper writes the body from it (one copy into the kernel, with the head in one writev), \
         and edge's stream sends pieces of 64 KiB and more of the 10 MB body with sendfile \
         from the object's file (no copy); nginx uses sendfile; Varnish writes from its \
         malloc storage.\n\
         - Servers: edge with `[http]` (one site, `cache_capacity = \"256 MiB\"`, bodies \
         under 64 KiB held in memory and larger ones memory-mapped, one runtime thread: it starts with the benchmark's one-CPU affinity) \
         and its XDP program on the PoP namespace's `lo` (generic mode, as for the DNS \
         benchmark's userspace row), so that the veth carries its traffic as it carries \
         nginx's; the row `edge, XDP program on the veth` attaches it natively to the PoP end \
         instead, as a PoP runs it on its NIC; nginx with one worker, `sendfile \
         on`, `tcp_nopush on`, no access log; Varnish with the built-in VCL, `-b {ORIGIN}`, \
         `-s malloc,256m`, default thread pools. Each is started from its own config in a \
         scratch directory (not the system service) and stopped afterwards.\n\
         - CPUs: wrk and the origin pinned to CPU {CLIENT_CPU}; the server's processes and the \
         PoP end's NAPI kthread (threaded NAPI, turned on again before each server: \
         detaching edge's XDP program turns it off) pinned to CPU {SERVER_CPU}, as in the DNS \
         benchmark. Two CPUs in all, so the client side (wrk, and the origin on the miss \
         path) shares one CPU and can be the limit, for 10 MB objects above all.\n\
         - Receive path, which differs between edge and the others: a veth hands a packet to \
         the peer's GRO, and so to the PoP end's NAPI kthread on CPU {SERVER_CPU}, only when the \
         sending end has no TSO. With the client end's TSO on (the default), nginx's and \
         Varnish's requests and ACKs are received on the sender's CPU ({CLIENT_CPU}, wrk's), \
         outside the server's CPU. Any XDP program on the PoP end of a veth makes the kernel \
         turn the client end's segmentation offloads off (a veth peculiarity: a physical NIC's \
         XDP program does not change its link partner's offloads), so the requests of `edge, \
         XDP program on the veth` are received by the NAPI kthread on CPU {SERVER_CPU}, each \
         packet copied for the XDP program first. The row `nginx, client TSO off` (`ethtool -K \
         eth0 tso off` in the client namespace) gives nginx that receive path. The client end \
         runs no XDP program (HTTP needs no XDP_TX replies), so the PoP end keeps its \
         segmentation offloads and sends large responses as GSO packets for every server.\n\
         - Warm-up: each object is fetched twice with curl (bytes checked; edge's second answer \
         must say `x-cache: hit`, or `miss` for the miss path; a hit must not reach the \
         origin), then a {WARM_SECONDS} s wrk run that is not kept.\n\
         - wrk: {THREADS} thread, {CONNECTIONS} keep-alive connections, `--latency`, \
         `--timeout 10s`, {RUNS} runs of {RUN_SECONDS} s (a run during which processes outside \
         the benchmark's process tree used more than {DISTURBED_ABOVE} CPUs is repeated, up to \
         {MAX_ATTEMPTS} runs, and the {RUNS} least disturbed are kept, as in the DNS benchmark); \
         the table shows the medians (requests per second, response bytes \
         per second, and wrk's 50th and 99th latency percentiles) and each run's rate.\n\
         - TLS: edge and nginx serve the same files over TLS on port {TLS_PORT} with the same \
         ECDSA P-256 certificate (made by the benchmark, tests/src/certs.rs), TLS 1.2 and 1.3, \
         HTTP/2 and HTTP/1.1 by ALPN; edge with rustls (ring), nginx with OpenSSL \
         (`ssl_session_cache shared:SSL:10m`). The load generators connect by address, without \
         a server name: edge's `tls_default_host` and nginx's only TLS server answer. HTTP/1.1 \
         rows are wrk over keep-alive TLS connections; the HTTP/2 row is h2load (one thread, \
         {CONNECTIONS} connections, {H2_STREAMS} streams each; h2load gives no percentiles, so \
         both latency columns hold its mean request time); the new-connection row is wrk with \
         `Connection: close`, so every request is a new TCP connection and a full TLS \
         handshake (wrk resumes no session): its rate is handshakes per second. edge writes \
         TLS records from userspace (no kTLS), so its 10 MB TLS hits are copied and encrypted \
         rather than sent with sendfile; nginx likewise (kTLS needs a kernel with \
         `CONFIG_TLS`, and nginx `ssl_conf_command Options KTLS`).\n",
        client = Topology::CLIENT_V4,
        small = Workload::SmallHit.target(),
        large = Workload::LargeHit.target(),
        miss = Workload::Miss.target(),
        stored_small = Workload::StoredMissSmall.target(),
        stored_large = Workload::StoredMissLarge.target(),
    ));
    Ok(text)
}

/// `program` and the version it prints in `program args…`: the first word of its first line
/// with a digit in it, cut to the digits and dots (`wrk debian/4.1.0-3+b2`, `nginx/1.22.1`,
/// `(varnish-7.1.1`).
fn version(program: &str, args: &[&str]) -> String {
    let reported = command_output(program, args).ok().and_then(|text| {
        let word = text
            .lines()
            .next()?
            .split_whitespace()
            .find(|word| word.contains(|c: char| c.is_ascii_digit()))?;
        let start = word.find(|c: char| c.is_ascii_digit())?;
        let number: String = word[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        Some(number)
    });
    format!(
        "{program} {}",
        reported.as_deref().unwrap_or("(version unknown)")
    )
}
