//! The real `edge agent` in a namespace, reading a fake /proc (`--proc-root`) whose load the
//! test sets: a thread advances the CPU counters of /proc/stat at the chosen utilisation.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{edge::binary, origin::connect, topology::Netns};

/// How often the fake CPU counters advance (100 jiffies each time).
const TICK: Duration = Duration::from_millis(20);
/// The agent's CPU sampling window in tests.
pub const SAMPLE: Duration = Duration::from_millis(100);

/// A running `edge agent` and the fake /proc it reads; both stop on drop.
pub struct Agent {
    child: Child,
    cpu: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Agent {
    /// Writes a fake /proc under `dir` (one CPU at `cpu` percent, memory 40 % in use, load 0.5)
    /// and starts `edge agent` on `listen` in `netns`.
    pub fn start(netns: &Netns, listen: SocketAddr, dir: &Path, cpu: u64) -> Result<Self> {
        fs::create_dir_all(dir.join("net"))?;
        fs::write(dir.join("loadavg"), "0.50 0.40 0.30 1/100 1000\n")?;
        fs::write(
            dir.join("meminfo"),
            "MemTotal: 1000000 kB\nMemFree: 500000 kB\nMemAvailable: 600000 kB\n",
        )?;
        fs::write(
            dir.join("net/tcp"),
            "  sl  local_address rem_address   st\n   0: 0100007F:1F90 0100007F:C000 01\n",
        )?;
        let cpu = Arc::new(AtomicU64::new(cpu));
        let stop = Arc::new(AtomicBool::new(false));
        write_stat(dir, 0, 0)?;
        let ticker = {
            let (cpu, stop, dir) = (cpu.clone(), stop.clone(), dir.to_path_buf());
            thread::spawn(move || {
                let (mut busy, mut idle) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let percent = cpu.load(Ordering::SeqCst).min(100);
                    busy += percent;
                    idle += 100 - percent;
                    let _ = write_stat(&dir, busy, idle);
                    thread::sleep(TICK);
                }
            })
        };
        let log = fs::File::create(dir.with_extension("log"))?;
        let child = netns
            .command(binary())
            .args(["agent", "--listen", &listen.to_string(), "--proc-root"])
            .arg(dir)
            .args(["--sample-ms", &SAMPLE.as_millis().to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting edge agent")?;
        let agent = Self {
            child,
            cpu,
            stop,
            ticker: Some(ticker),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect(netns, listen).is_err() {
            if Instant::now() > deadline {
                bail!("edge agent did not listen on {listen} within 10 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Two samples: the first utilisation is known.
        thread::sleep(SAMPLE * 2);
        Ok(agent)
    }

    /// The CPU utilisation the host reports from now on (after one sample window).
    pub fn set_cpu(&self, percent: u64) {
        self.cpu.store(percent, Ordering::SeqCst);
    }
}

/// Replaces /proc/stat in one step (rename), so that the agent never reads half a file.
fn write_stat(dir: &Path, busy: u64, idle: u64) -> Result<()> {
    let text = format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n");
    let temporary: PathBuf = dir.join("stat.new");
    fs::write(&temporary, text)?;
    fs::rename(&temporary, dir.join("stat"))?;
    Ok(())
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}
