//! `edge agent`: runs on an origin (or PoP) host and serves its load, read from /proc, as JSON
//! on `GET /load`. The steering probes read it.
//!
//! `--proc-root` reads another directory laid out like /proc (tests use it to set the load a
//! host reports).

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

/// The path the report is served on.
pub const LOAD_PATH: &str = "/load";
/// How often CPU counters are sampled by default: utilisation is the busy share between two
/// samples.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// A host's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// CPU utilisation over the last sample interval, percent of all CPUs.
    pub cpu: f64,
    /// One-, five- and fifteen-minute load averages.
    pub load: [f64; 3],
    /// CPUs counted in /proc/stat.
    pub cpus: u32,
    /// Memory in use (total less available), percent.
    pub memory: f64,
    /// Established TCP connections (IPv4 and IPv6) in the agent's network namespace.
    pub connections: u64,
}

impl LoadReport {
    /// The one-minute load average per CPU, percent.
    pub fn load_per_cpu(&self) -> f64 {
        100.0 * self.load[0] / f64::from(self.cpus.max(1))
    }
}

/// Reads the load of the host whose /proc is at `root`; `cpu` comes from the sampler.
pub struct Proc {
    root: PathBuf,
}

/// Busy and total jiffies of all CPUs, and the number of CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
    cpus: u32,
}

impl Proc {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> Result<String> {
        let path = self.root.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    fn cpu_times(&self) -> Result<CpuTimes> {
        parse_stat(&self.read("stat")?).context("parsing stat")
    }

    /// Everything but the CPU utilisation, which needs two samples.
    fn report(&self) -> Result<LoadReport> {
        let cpus = self.cpu_times()?.cpus;
        let load = parse_loadavg(&self.read("loadavg")?).context("parsing loadavg")?;
        let memory = parse_meminfo(&self.read("meminfo")?).context("parsing meminfo")?;
        let mut connections = 0;
        for table in ["net/tcp", "net/tcp6"] {
            // A host without IPv6 has no tcp6 table.
            if let Ok(text) = self.read(table) {
                connections += count_established(&text);
            }
        }
        Ok(LoadReport {
            cpu: 0.0,
            load,
            cpus,
            memory,
            connections,
        })
    }
}

/// The first line of /proc/stat: `cpu user nice system idle iowait irq softirq steal …`.
fn parse_stat(text: &str) -> Option<CpuTimes> {
    let mut lines = text.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // Guest time is already counted in user time.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    let cpus = lines
        .filter(|line| {
            line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        })
        .count() as u32;
    Some(CpuTimes {
        busy: total - idle,
        total,
        cpus: cpus.max(1),
    })
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|field| field.parse().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Percent of memory in use: total less available.
fn parse_meminfo(text: &str) -> Option<f64> {
    let value = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let total = value("MemTotal")?;
    let available = value("MemAvailable")?;
    (total > 0.0).then(|| 100.0 * (total - available).max(0.0) / total)
}

/// Rows of /proc/net/tcp{,6} in state 01 (ESTABLISHED).
fn count_established(text: &str) -> u64 {
    text.lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(3) == Some("01"))
        .count() as u64
}

/// Utilisation between two samples, percent.
fn utilisation(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    100.0 * after.busy.saturating_sub(before.busy) as f64 / total as f64
}

/// Serves the load report on `listen` until the process is stopped, sampling the CPU counters
/// every `sample_interval`.
pub async fn serve(listen: SocketAddr, proc_root: &Path, sample_interval: Duration) -> Result<()> {
    let proc = Arc::new(Proc::new(proc_root));
    proc.report()
        .with_context(|| format!("{} does not look like /proc", proc_root.display()))?;
    let cpu = Arc::new(Mutex::new(0.0));
    tokio::spawn(sample(proc.clone(), cpu.clone(), sample_interval));
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    info!(%listen, proc = %proc_root.display(), "agent serving {LOAD_PATH}");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (proc, cpu) = (proc.clone(), cpu.clone());
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let response = if request.uri().path() == LOAD_PATH {
                match proc.report() {
                    Ok(mut report) => {
                        report.cpu = *cpu.lock().expect("not poisoned");
                        json(
                            StatusCode::OK,
                            serde_json::to_vec(&report).expect("serialises"),
                        )
                    }
                    Err(error) => json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::to_vec(&format!("{error:#}")).expect("serialises"),
                    ),
                }
            } else {
                json(StatusCode::NOT_FOUND, b"\"try GET /load\"".to_vec())
            };
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "agent connection");
            }
        });
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// Keeps `cpu` at the utilisation between the two latest samples.
async fn sample(proc: Arc<Proc>, cpu: Arc<Mutex<f64>>, interval: Duration) {
    let mut before = proc.cpu_times().ok();
    loop {
        tokio::time::sleep(interval).await;
        let after = match proc.cpu_times() {
            Ok(after) => after,
            Err(error) => {
                warn!("{error:#}");
                continue;
            }
        };
        if let Some(before) = before {
            *cpu.lock().expect("not poisoned") = utilisation(before, after);
        }
        before = Some(after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1\n";
        let times = parse_stat(stat).unwrap();
        assert_eq!(
            times,
            CpuTimes {
                busy: 200,
                total: 1000,
                cpus: 2
            }
        );
        let later = parse_stat("cpu  400 0 100 800 100 0 0 0 0 0\ncpu0 1\n").unwrap();
        assert_eq!(utilisation(times, later), 75.0);
        assert_eq!(utilisation(times, times), 0.0);
        assert_eq!(
            parse_loadavg("0.50 1.25 2.00 1/123 456\n"),
            Some([0.5, 1.25, 2.0])
        );
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(75.0));
        let tcp = "  sl  local_address rem_address   st tx_queue\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:1F90 0100007F:C000 01 0\n";
        assert_eq!(count_established(tcp), 1);
        assert!(parse_stat("intr 1\n").is_none());
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_none());
    }

    #[test]
    fn this_hosts_proc_reads() {
        let report = Proc::new(Path::new("/proc")).report().unwrap();
        assert!(report.cpus >= 1);
        assert!(report.memory > 0.0 && report.memory <= 100.0);
    }
}
