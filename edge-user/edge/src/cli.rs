//! The `edge` command line: the PoP daemon (`edge run`) and its tools.

use std::{
    io::IsTerminal as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use edge_config::{Config, ConfigError};
use edge_dataplane::{
    self as dataplane, DataPlane, Prepared,
    maps::Capacity,
    publish::{self, Publisher},
};
use edge_dns::{
    fast_path::{self, Entry},
    journal::Journal,
    zone::Zones,
};
use edge_http::HttpServer;
use edge_steer::{Steering, agent};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, watch},
};
use tracing::{debug, error, info, warn};

use crate::{
    admin,
    listeners::Listeners,
    metrics::{self, DaemonCounts},
    service, updates,
};

/// Updates waiting for the daemon loop; more wait in the server (each client's until answered).
const QUEUED_UPDATES: usize = 64;

#[derive(Parser)]
#[command(name = "edge", version, about = "eBPF/XDP-accelerated CDN edge")]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object a line) for
    /// log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP program, fill its maps from the config, and serve until SIGINT/SIGTERM.
    /// SIGHUP reloads the config; a bad one is refused and the running one stays.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// On exit, leave the program attached and answering from the pinned maps.
        #[arg(long)]
        keep_data_plane: bool,
    },
    /// Check a config file and print what it defines.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the XDP counters of the interface in the config.
    Stats {
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON object of counter → count.
        #[arg(long)]
        json: bool,
    },
    /// Print everything the XDP program's pinned maps hold, decoded: each name and type with
    /// its answer (steered ones with their selection slot), the service addresses and the
    /// counters.
    Maps {
        #[arg(long, short)]
        config: PathBuf,
        /// Only the answers for this name (any case, trailing dot optional).
        #[arg(long)]
        name: Option<String>,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Remove every cached variant of URL from the running daemon's cache (via its admin address).
    Purge {
        #[arg(long, short)]
        config: PathBuf,
        url: String,
    },
    /// Detach a data plane left running (`run --keep-data-plane`) and remove its pins.
    Detach {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the running daemon's measurements, health states and selections (via [admin]).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// The whole status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Take a pool member out of every answer (it is still probed) until `undrain`.
    Drain {
        #[arg(long, short)]
        config: PathBuf,
        pool: String,
        member: String,
    },
    /// Put a drained member back.
    Undrain {
        #[arg(long, short)]
        config: PathBuf,
        pool: String,
        member: String,
    },
    /// Serve this host's load (CPU, load average, memory, connections) as JSON on GET /load,
    /// for the steering probes of the PoPs.
    Agent {
        #[arg(long, default_value = "0.0.0.0:9100")]
        listen: SocketAddr,
        /// Where to read /proc from (another directory laid out the same way, for tests).
        #[arg(long, default_value = "/proc")]
        proc_root: PathBuf,
        /// CPU utilisation is measured over this many milliseconds.
        #[arg(long, default_value_t = agent::DEFAULT_SAMPLE_INTERVAL.as_millis() as u64)]
        sample_ms: u64,
    },
}

/// The daemon's runtime: one worker thread per CPU the process may use (its affinity mask and
/// cgroup quota, as `available_parallelism` reads them), and a single thread without a
/// work-stealing scheduler when that is one CPU, where more threads only add wake-ups and
/// context switches.
fn daemon_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cpus);
        builder
    };
    builder.enable_all().build()
}

/// Runs the command line; the `edge` binary's whole `main`.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match execute(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`edge status | head -1`): what it wanted, it has.
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edge: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` and a newline to stdout. Unlike `println!`, which panics, a closed stdout is an
/// error that [`main`] ends quietly on.
fn print_line(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// Logs to stderr at `RUST_LOG`'s levels (`info` by default), in `format`.
fn init_logs(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Run {
            config,
            keep_data_plane,
        } => daemon_runtime()?.block_on(run(&config, keep_data_plane)),
        Command::Check { config } => check(&config),
        Command::Stats { config, json } => stats(&config, json),
        Command::Maps { config, name, json } => maps(&config, name.as_deref(), json),
        Command::Purge { config, url } => purge(&config, &url),
        Command::Detach { config } => dataplane::detach(&xdp_of(&config)?.pin_dir()),
        Command::Status { config, json } => status(&config, json),
        Command::Drain {
            config,
            pool,
            member,
        } => drain(&config, &pool, &member, true),
        Command::Undrain {
            config,
            pool,
            member,
        } => drain(&config, &pool, &member, false),
        Command::Agent {
            listen,
            proc_root,
            sample_ms,
        } => tokio::runtime::Runtime::new()?.block_on(agent::serve(
            listen,
            &proc_root,
            std::time::Duration::from_millis(sample_ms),
        )),
    }
}

/// A config with its zones validated (those unchanged since `previous` taken from it), and
/// refused if the maps it sizes cannot hold its answers.
struct Loaded {
    config: Config,
    zones: Zones,
    /// What the zones need of the maps.
    needed: Capacity,
    /// The fast path's entries for the names that are not steered, built once: they size the
    /// maps, then the publish writes them.
    static_entries: Vec<Entry>,
}

/// Whether [`load`] applies the journal of dynamic updates: at start the daemon does, over the
/// zones as their source builds them; a reload keeps the updated zones whose source is unchanged,
/// and `edge check` checks the source alone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Journaled {
    Replay,
    Ignore,
}

fn load(path: &Path, previous: Option<&Zones>, journaled: Journaled) -> Result<Loaded> {
    let started = Instant::now();
    let config = read_config(path)?;
    build(path, config, previous, journaled, started)
}

/// The config at `path`, parsed and checked but for its zones.
fn read_config(path: &Path) -> Result<Config> {
    let config = Config::load(path)?;
    for deprecation in config.deprecations() {
        warn!("{}: {deprecation}", path.display());
    }
    Ok(config)
}

/// The second half of [`load`], on the config read (from `started` on, for the timings).
fn build(
    path: &Path,
    mut config: Config,
    previous: Option<&Zones>,
    journaled: Journaled,
    started: Instant,
) -> Result<Loaded> {
    let read = started.elapsed();
    let mut zones = Zones::rebuild(path, &config, previous)?;
    if journaled == Journaled::Replay {
        // Before the answers are built: they size the maps and are published as they are.
        Journal::new(&config.dns.journal_dir).replay(&mut zones);
    }
    let built = started.elapsed();
    // The zones hold the names now; the config's copy (hundreds of bytes a name) would only
    // double what a large zone takes.
    for zone in &mut config.zones {
        zone.names = Vec::new();
    }
    let static_entries = fast_path::static_entries(&zones).context("building answers")?;
    // Unselected, a steered name answers with all its pool's members: the most it ever needs.
    let steered = fast_path::steered_entries(&zones).context("building answers")?;
    let needed = Capacity::needed(static_entries.iter().chain(&steered));
    debug!(
        ?read,
        zones = ?built - read,
        answers = ?started.elapsed() - built,
        "config loaded"
    );
    if let Some((field, needed, held)) = config
        .xdp
        .as_ref()
        .and_then(|xdp| needed.shortfall(&Capacity::of(xdp)))
    {
        return Err(ConfigError {
            file: path.to_path_buf(),
            field: field.to_string(),
            reason: format!("the zones need {needed} entries, the map holds {held}"),
        }
        .into());
    }
    Ok(Loaded {
        config,
        zones,
        needed,
        static_entries,
    })
}

/// The signals the daemon acts on. Taken before anything is attached: a stop that comes
/// while the data plane starts or the first answers are published is then acted on by the
/// daemon loop, instead of the default action ending the process with the program attached
/// and its pins left.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

async fn run(path: &Path, keep_data_plane: bool) -> Result<()> {
    let signals = Signals {
        terminate: signal(SignalKind::terminate())?,
        interrupt: signal(SignalKind::interrupt())?,
        hangup: signal(SignalKind::hangup())?,
    };
    let started = Instant::now();
    let config = read_config(path)?;
    // The program is loaded and its maps created (the kernel clears them: a tenth of a million
    // names' start) while the zones are built, on another CPU if there is one. It is attached
    // where it was, once the config is accepted; until then nothing is written.
    let preparing = config
        .xdp
        .clone()
        .map(|xdp| std::thread::spawn(move || DataPlane::prepare(&xdp)));
    let loaded = build(path, config, None, Journaled::Replay, started);
    let prepared = preparing.map(|thread| {
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    let (loaded, prepared) = match (loaded, prepared.transpose()) {
        (Ok(loaded), Ok(prepared)) => (loaded, prepared),
        (Err(error), prepared) => {
            if let Ok(Some(prepared)) = prepared {
                prepared.abandon();
            }
            return Err(error);
        }
        (Ok(_), Err(error)) => return Err(error),
    };
    let config = &loaded.config;
    // The first probe round ends before anything is served: no answer from an unchecked state.
    let servers = async {
        let steering = Steering::start(config).await?;
        let http = HttpServer::start(config, &steering.watch()).await?;
        anyhow::Ok((steering, http))
    };
    let (mut steering, http) = match servers.await {
        Ok(servers) => servers,
        Err(error) => {
            if let Some(prepared) = prepared {
                prepared.abandon();
            }
            return Err(error);
        }
    };
    let sources = metrics::Sources {
        steering: steering.shared.clone(),
        cache: http.as_ref().map(|http| http.cache.clone()),
        responses: http.as_ref().map(|http| http.responses.clone()),
        origin_requests: http.as_ref().map(|http| http.origin_requests.clone()),
        pin_dir: pin_dir(config),
        daemon: Arc::default(),
        dns: Arc::default(),
    };
    // Without [xdp] nothing is attached and nothing pinned: no bpffs needed.
    let mut plane = prepared.map(Prepared::attach).transpose()?;
    let result = serve(
        path,
        loaded,
        &mut steering,
        plane.as_mut(),
        http.as_ref(),
        (sources, signals),
    )
    .await;
    if let Some(plane) = plane {
        // A data plane adopted from an earlier run stays answering if this one cannot serve.
        let keep = keep_data_plane || (result.is_err() && plane.adopted);
        plane.stop(keep)?;
    }
    result
}

/// Gives the running program the rate limits of a reloaded config: rate, burst, slip and the
/// exempt prefixes apply at once; the bucket table is sized at load, so a new `table_size` (or
/// turning RRL on) waits for a restart and the running limits stay.
fn apply_rrl(plane: &mut DataPlane, config: &Config) {
    let rrl = config.xdp.as_ref().and_then(|xdp| xdp.rrl.as_ref());
    if !plane.rrl.fits(rrl) {
        warn!(
            "xdp.rrl.table_size changes, and turning RRL on, need a restart; the running rate limits stay"
        );
    } else if let Err(error) = plane.rrl.apply(rrl) {
        error!("applying [xdp.rrl] failed: {error:#}");
    }
}

/// The `[xdp]` table of the config at `path`, for the commands that work on the data plane.
fn xdp_of(path: &Path) -> Result<edge_config::XdpConfig> {
    Config::load_settings(path)?.xdp.with_context(|| {
        format!(
            "{}: no [xdp] section: this PoP has no fast path",
            path.display()
        )
    })
}

/// The reloaded `[http]` checked and built (certificates read), to apply with the rest;
/// `None` when the daemon serves no HTTP (adding `[http]` needs a restart).
fn prepare_http(
    http: Option<&HttpServer>,
    reloaded: &Config,
) -> Result<Option<edge_http::Prepared>> {
    match http {
        Some(http) => http.prepare(reloaded).map(Some),
        None => {
            if reloaded.http.is_some() {
                warn!("adding [http] needs a restart");
            }
            Ok(None)
        }
    }
}

/// Serves `zones` with the steered names answering as `steering` selects; every change of the
/// selections or the config goes to the userspace server and, in one call, to the maps. Once
/// serving, no error ends it: a reload is refused (the running config stays) and a publish that
/// fails is retried.
async fn serve(
    path: &Path,
    loaded: Loaded,
    steering: &mut Steering,
    mut plane: Option<&mut DataPlane>,
    http: Option<&HttpServer>,
    (sources, signals): (metrics::Sources, Signals),
) -> Result<()> {
    let Signals {
        mut terminate,
        mut interrupt,
        mut hangup,
    } = signals;
    let Loaded {
        config,
        mut zones,
        needed,
        static_entries,
    } = loaded;
    let config = &config;
    let counts = sources.daemon.clone();
    let mut running = config.clone();
    let mut selections = steering.watch();
    if let Some(plane) = &plane {
        publish::check_fits(plane, &needed).map_err(|error| {
            anyhow::anyhow!(
                "{}: {error:#} (maps pinned by an earlier run keep their size; `edge detach` removes them)",
                path.display()
            )
        })?;
    }
    let steered = zones.with_selections(&selections.borrow_and_update());
    let (current_zones, zones_watch) = watch::channel(Arc::new(steered));
    let (update_requests, mut updates_waiting) = mpsc::channel(QUEUED_UPDATES);
    let mut journal = Journal::new(&config.dns.journal_dir);
    let mut listeners = Listeners::start(config, sources, &zones_watch, update_requests).await?;
    let mut publisher = Publisher::new(&config.dns.listen);
    if let Some(plane) = plane.as_deref_mut() {
        publisher.try_publish_loaded(plane, &current_zones.borrow(), static_entries)?;
    }
    release_freed_memory();
    info!(fast_path = plane.is_some(), "daemon ready");
    service::ready();
    let mut watchdog = service::watchdog_period().map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            Ok(()) = selections.changed() => {
                let steered = Arc::new(zones.with_selections(&selections.borrow_and_update()));
                current_zones.send_replace(steered.clone());
                if let Some(plane) = plane.as_deref_mut() {
                    publisher.publish_steering(plane, &steered);
                }
            }
            Some(request) = updates_waiting.recv() => {
                let selected = selections.borrow().clone();
                updates::apply(request, updates::Apply {
                    zones: &mut zones,
                    journal: &journal,
                    selections: &selected,
                    serving: &current_zones,
                    plane: plane.as_deref_mut().map(|plane| (plane, &mut publisher)),
                });
            }
            _ = tick(watchdog.as_mut()) => service::watchdog(),
            () = publisher.retry_due() => {
                if let Some(plane) = plane.as_deref_mut() {
                    publisher.retry(plane);
                }
            }
            _ = hangup.recv() => {
                service::reloading();
                match load(path, Some(&zones), Journaled::Ignore) {
                    Ok(Loaded { config: reloaded, zones: reloaded_zones, needed, static_entries }) if pin_dir(&reloaded) == pin_dir(config) => {
                        if let Some(Err(error)) = plane.as_deref().map(|plane| publish::check_fits(plane, &needed)) {
                            error!(
                                "reload refused, keeping the running config: {}: {error:#} (map sizes change at a restart)",
                                path.display()
                            );
                            DaemonCounts::count(&counts.reloads_refused);
                            service::ready();
                            continue;
                        }
                        // [http] first: it binds nothing, so a refusal leaves nothing to undo.
                        let http_reload = match prepare_http(http, &reloaded) {
                            Ok(prepared) => prepared,
                            Err(error) => {
                                error!("reload refused, keeping the running config: {error:#}");
                                DaemonCounts::count(&counts.reloads_refused);
                                service::ready();
                                continue;
                            }
                        };
                        // The new addresses are bound before anything changes: one that
                        // cannot be refuses the whole reload.
                        let rebind = match listeners.prepare(&reloaded).await {
                            Ok(rebind) => rebind,
                            Err(error) => {
                                error!("reload refused, keeping the running config: {}: {error:#}", path.display());
                                DaemonCounts::count(&counts.reloads_refused);
                                service::ready();
                                continue;
                            }
                        };
                        steering.reload(&reloaded).await;
                        let steered = Arc::new(reloaded_zones.with_selections(&selections.borrow_and_update()));
                        publisher.set_listen(&reloaded.dns.listen);
                        let published = match plane.as_deref_mut() {
                            Some(plane) => publisher.try_publish_loaded(plane, &steered, static_entries),
                            None => Ok(()),
                        };
                        match published {
                            Ok(()) => {
                                listeners.apply(rebind);
                                if let (Some(http), Some(prepared)) = (http, http_reload) {
                                    http.apply(prepared);
                                }
                                if let Some(plane) = plane.as_deref_mut() {
                                    apply_rrl(plane, &reloaded);
                                }
                                DaemonCounts::count(&counts.reloads_applied);
                                zones = reloaded_zones;
                                running = reloaded;
                                // Updates to zones rebuilt from a changed source went with them.
                                journal = Journal::new(&running.dns.journal_dir);
                                journal.reconcile(&zones);
                                current_zones.send_replace(steered);
                                release_freed_memory();
                                // Once the zones it replaced are given back: a reload of a large
                                // zone is done when the memory is.
                                info!("reload applied");
                            }
                            Err(error) => {
                                error!("reload refused, keeping the running config: publishing its answers failed: {error:#}");
                                DaemonCounts::count(&counts.reloads_refused);
                                drop(rebind);
                                steering.reload(&running).await;
                                publisher.set_listen(&running.dns.listen);
                                let steered = Arc::new(zones.with_selections(&selections.borrow_and_update()));
                                current_zones.send_replace(steered.clone());
                                if let Some(plane) = plane.as_deref_mut() {
                                    publisher.publish(plane, &steered);
                                }
                            }
                        }
                    }
                    Ok(_) => {
                        error!("reload refused: adding or removing [xdp], xdp.interface and xdp.pin_root need a restart");
                        DaemonCounts::count(&counts.reloads_refused);
                    }
                    Err(err) => {
                        error!("reload refused, keeping the running config: {err:#}");
                        DaemonCounts::count(&counts.reloads_refused);
                    }
                }
                service::ready();
            }
        }
        counts
            .publish_failures
            .store(publisher.failures(), std::sync::atomic::Ordering::Relaxed);
    }
    info!("stopping");
    service::stopping();
    Ok(())
}

/// Gives the memory freed after a load (the parsed config, the map entries: hundreds of
/// megabytes for a million names) back to the system; glibc's allocator keeps it otherwise.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The next tick of `interval`; never, without one.
async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Where the data plane of `config` is pinned; `None` without one.
fn pin_dir(config: &Config) -> Option<PathBuf> {
    config.xdp.as_ref().map(edge_config::XdpConfig::pin_dir)
}

fn check(path: &Path) -> Result<()> {
    let Loaded {
        config,
        zones,
        needed,
        ..
    } = load(path, None, Journaled::Ignore)?;
    // Certificates are files of their own: read and checked as `edge run` would.
    if let Some(http) = &config.http {
        edge_http::tls::server_config(
            http,
            &edge_http::tls::Resumption::new()?,
            std::time::SystemTime::now(),
        )?;
    }
    for deprecation in config.deprecations() {
        print_line(format_args!("{}: warning: {deprecation}", path.display()))?;
    }
    match &config.xdp {
        Some(xdp) => print_line(format_args!(
            "{}: ok: interface {} ({:?} mode), pins in {}",
            path.display(),
            xdp.interface,
            xdp.mode,
            xdp.pin_dir().display()
        ))?,
        None => print_line(format_args!(
            "{}: ok: no fast path (no [xdp])",
            path.display()
        ))?,
    }
    for zone in &zones.zones {
        print_line(format_args!(
            "zone {}: {} names",
            zone.apex,
            zone.names.len()
        ))?;
    }
    let Some(xdp) = &config.xdp else {
        return Ok(());
    };
    let held = Capacity::of(xdp);
    print_line(format_args!(
        "fast path: {} of {} answers, {} of {} long-name answers, {} of {} steered",
        needed.answers,
        held.answers,
        needed.long_answers,
        held.long_answers,
        needed.steered,
        held.steered
    ))?;
    Ok(())
}

fn purge(path: &Path, url: &str) -> Result<()> {
    let config = Config::load_settings(path)?;
    if config.http.is_none() {
        anyhow::bail!("{}: no [http] section", path.display());
    }
    let answer =
        tokio::runtime::Runtime::new()?.block_on(admin::purge(config.admin.listen, url))?;
    print_line(answer)?;
    Ok(())
}

fn status(path: &Path, json: bool) -> Result<()> {
    let config = Config::load_settings(path)?;
    let status = tokio::runtime::Runtime::new()?.block_on(admin::status(config.admin.listen))?;
    if json {
        print_line(serde_json::to_string(&status)?)?;
    } else {
        let table = status.to_string();
        if !table.is_empty() {
            print_line(table.trim_end())?;
        }
    }
    Ok(())
}

fn drain(path: &Path, pool: &str, member: &str, drained: bool) -> Result<()> {
    let config = Config::load_settings(path)?;
    let answer = tokio::runtime::Runtime::new()?.block_on(admin::drain(
        config.admin.listen,
        pool,
        member,
        drained,
    ))?;
    print_line(answer)?;
    Ok(())
}

fn stats(path: &Path, json: bool) -> Result<()> {
    let counters = dataplane::pinned_counters(&xdp_of(path)?.pin_dir())?.read()?;
    if json {
        let object: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(counter, count)| (counter.name().to_string(), (*count).into()))
            .collect();
        print_line(serde_json::Value::Object(object))?;
    } else {
        for (counter, count) in counters {
            print_line(format_args!("{:<16} {count}", counter.name()))?;
        }
    }
    Ok(())
}

fn maps(path: &Path, name: Option<&str>, json: bool) -> Result<()> {
    let mut dump = dataplane::dump::read(&xdp_of(path)?.pin_dir())?;
    if let Some(name) = name {
        let wanted = format!("{}.", name.trim_end_matches('.')).to_ascii_lowercase();
        dump.answers.retain(|entry| entry.answer.name == wanted);
        if dump.answers.is_empty() {
            anyhow::bail!("{name}: no answer in the maps");
        }
    }
    if json {
        print_line(maps_json(&dump, name.is_none()))?;
        return Ok(());
    }
    for entry in &dump.answers {
        let answer = &entry.answer;
        let place = match entry.place {
            dataplane::dump::Place::Table(slot) => format!("{}[{slot}]", entry.place.map_name()),
            dataplane::dump::Place::Long => entry.place.map_name().to_string(),
        };
        let selection = entry
            .selection
            .map(|slot| format!(" selection {slot}"))
            .unwrap_or_default();
        let records = if answer.records.is_empty() {
            "(nothing selected: passed to userspace)".to_string()
        } else {
            answer.records.join(", ")
        };
        print_line(format_args!(
            "answer    {} {} {records}  ({place}{selection})",
            answer.name, answer.qtype
        ))?;
    }
    if name.is_some() {
        return Ok(());
    }
    print_line(format_args!("selection generation {}", dump.generation))?;
    for service in &dump.services {
        print_line(format_args!("service   {service}"))?;
    }
    for (counter, count) in &dump.counters {
        print_line(format_args!("counter   {:<16} {count}", counter.name()))?;
    }
    Ok(())
}

/// `edge maps --json`: the answers, and unless one name was asked for, the rest.
fn maps_json(dump: &dataplane::dump::Dump, everything: bool) -> serde_json::Value {
    let answers: Vec<serde_json::Value> = dump
        .answers
        .iter()
        .map(|entry| {
            serde_json::json!({
                "name": entry.answer.name,
                "type": entry.answer.qtype,
                "records": entry.answer.records,
                "selection": entry.selection,
                "map": entry.place.map_name(),
                "slot": match entry.place {
                    dataplane::dump::Place::Table(slot) => Some(slot),
                    dataplane::dump::Place::Long => None,
                },
            })
        })
        .collect();
    if !everything {
        return serde_json::json!({ "answers": answers });
    }
    let counters: serde_json::Map<String, serde_json::Value> = dump
        .counters
        .iter()
        .map(|(counter, count)| (counter.name().to_string(), (*count).into()))
        .collect();
    serde_json::json!({
        "answers": answers,
        "generation": dump.generation,
        "services": dump.services.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "counters": counters,
    })
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    /// This thread's affinity mask, set to `set`; returns the previous one.
    fn set_affinity(set: &libc::cpu_set_t) -> libc::cpu_set_t {
        // SAFETY: both masks are valid cpu_set_t values; pid 0 is the calling thread.
        unsafe {
            let mut previous = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut previous),
                0
            );
            assert_eq!(
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set),
                0
            );
            previous
        }
    }

    #[test]
    fn one_allowed_cpu_gets_a_single_threaded_runtime() {
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
        let one = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            set
        };
        let previous = set_affinity(&one);
        let flavor = daemon_runtime().unwrap().handle().runtime_flavor();
        set_affinity(&previous);
        assert_eq!(flavor, RuntimeFlavor::CurrentThread);
        let cpus = std::thread::available_parallelism().unwrap().get();
        let flavor = daemon_runtime().unwrap().handle().runtime_flavor();
        let expected = if cpus == 1 {
            RuntimeFlavor::CurrentThread
        } else {
            RuntimeFlavor::MultiThread
        };
        assert_eq!(flavor, expected);
    }
}
