//! Who runs where. On a veth pair the receive work, XDP included, runs in softirq on the core
//! that sent the frame, so without help the server's work would land on the load generator's
//! core. The benchmark gives the load generator one core and the server side the other: the PoP
//! end of the pair gets a NAPI instance of its own (GRO on, which makes veth receive through
//! NAPI whether or not an XDP program is attached), run by a kthread (threaded NAPI) pinned to
//! the server core. Server processes are pinned there too; the load generators to the other.

use std::{
    collections::BTreeSet,
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::topology::Netns;

/// The load generator's core.
pub const CLIENT_CPU: usize = 0;
/// The server side's core.
pub const SERVER_CPU: usize = 1;

/// What the benchmark's CPU layout is, for the report.
pub const LAYOUT: &str = "load generator (kxdpgun, dnsperf) pinned to CPU 0. The PoP end of the \
veth pair receives through threaded NAPI (GRO on, so also without XDP), its kthread pinned to \
CPU 1: the XDP programs (edge, Knot's redirect, the reflector) and the socket receive of the \
socket servers run there; server processes are pinned to CPU 1 as well. The client end's NAPI is \
not threaded: the replies' receive (kxdpgun's XDP redirect into its AF_XDP socket) is raised by \
the sender and runs in softirq on CPU 1 too.";

/// Gives the PoP end of the pair its own NAPI kthread: GRO on (veth then receives through NAPI
/// even without an XDP program), threaded NAPI on. Returns the kthread's process id, found as
/// the NAPI thread of `interface` that did not exist before.
pub fn prepare_pop(pop: &Netns, interface: &str) -> Result<u32> {
    if std::thread::available_parallelism()?.get() <= SERVER_CPU {
        bail!("the benchmark gives the load generator and the server a core each: needs 2 CPUs");
    }
    let before = napi_threads(interface)?;
    pop.run("ethtool", &["-K", interface, "gro", "on"])?;
    pop.set_device_attribute(interface, "threaded", "1")?;
    let created: Vec<u32> = napi_threads(interface)?
        .difference(&before)
        .copied()
        .collect();
    match created[..] {
        [pid] => Ok(pid),
        _ => bail!("expected one new NAPI thread for {interface}, found {created:?}"),
    }
}

/// Process ids of every NAPI kthread of an interface called `interface`, in any namespace.
pub fn napi_threads(interface: &str) -> Result<BTreeSet<u32>> {
    let prefix = format!("napi/{interface}-");
    let mut pids = BTreeSet::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with(&prefix) {
            pids.insert(pid);
        }
    }
    Ok(pids)
}

/// Pins every thread of process `pid` to `cpu`.
pub fn pin(pid: u32, cpu: usize) -> Result<()> {
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: libc::pid_t = task?
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
            .context("task id")?;
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
        let result = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set)
        };
        if result != 0 {
            bail!(
                "pinning task {tid} of {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Share of all CPUs' time spent busy over `window`. Sampled while the benchmark itself is idle,
/// it tells whether other work shares the machine.
pub fn busy_share(window: Duration) -> Result<f64> {
    let sample = || -> Result<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // user nice system idle iowait irq softirq steal …
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let total = fields.iter().take(8).sum();
        Ok((total, idle))
    };
    let (total_before, idle_before) = sample()?;
    std::thread::sleep(window);
    let (total_after, idle_after) = sample()?;
    let total = total_after.saturating_sub(total_before);
    if total == 0 {
        return Ok(0.0);
    }
    Ok(1.0 - idle_after.saturating_sub(idle_before) as f64 / total as f64)
}

/// Samples [`busy_share`] a second at a time until it is below `quiet` or `max_wait` has passed;
/// returns the last sample.
pub fn wait_quiet(quiet: f64, max_wait: Duration) -> Result<f64> {
    let deadline = Instant::now() + max_wait;
    loop {
        let busy = busy_share(Duration::from_secs(1))?;
        if busy < quiet || Instant::now() >= deadline {
            return Ok(busy);
        }
    }
}
