//! Who runs where. On a veth pair the receive work, XDP included, runs in softirq on the core
//! that sent the frame, so without help the server's work would land on the load generator's
//! core. The benchmark gives the load generator one core and the server side the other: the PoP
//! end of the pair gets a NAPI instance of its own (GRO on, which makes veth receive through
//! NAPI whether or not an XDP program is attached), run by a kthread (threaded NAPI) pinned to
//! the server core. Server processes are pinned there too; the load generators to the other.

use std::{
    collections::{BTreeMap, BTreeSet},
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
pub const LAYOUT: &str = "load generator (trafgen, dnsperf) pinned to CPU 0. The PoP end of the \
veth pair receives through threaded NAPI (GRO on, so also without XDP), its kthread pinned to \
CPU 1: the XDP programs (edge, the reflector) and the socket receive of the socket servers run \
there; server processes are pinned to CPU 1 as well. The client end's NAPI is not threaded: the \
replies' receive (the XDP program that counts and drops them there) is raised by the sender and \
runs in softirq on CPU 1 too.";

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
    let busy = CpuBusy::start()?;
    std::thread::sleep(window);
    let cpus = busy.before.len();
    let total: f64 = (0..cpus).map(|cpu| busy.share(cpu)).sum::<Result<f64>>()?;
    Ok(total / cpus.max(1) as f64)
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

/// CPU time used by processes outside the benchmark's own process tree, to tell whether other
/// work ran during a measurement. Kernel threads are left out: NAPI and softirq threads serve
/// the benchmark's own traffic. Only processes alive at the end of the window count (children
/// reaped within it would bring their whole lifetime along), so this errs low.
pub struct OtherWork {
    ticks: BTreeMap<u32, u64>,
    since: Instant,
}

impl OtherWork {
    pub fn start() -> Result<Self> {
        Ok(Self {
            ticks: other_ticks()?,
            since: Instant::now(),
        })
    }

    /// CPUs' worth of time other processes used since [`Self::start`] (1.0: one whole CPU).
    pub fn cpus_used(&self) -> Result<f64> {
        let now = other_ticks()?;
        let used: u64 = now
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(self.ticks.get(pid).copied().unwrap_or(0)))
            .sum();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(used as f64 / per_second / self.since.elapsed().as_secs_f64())
    }
}

/// `flags` bit of a kernel thread (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// User and system ticks of every process other than this one, its ancestors and its
/// descendants, and other than kernel threads.
fn other_ticks() -> Result<BTreeMap<u32, u64>> {
    struct Stat {
        ppid: u32,
        kernel: bool,
        ticks: u64,
    }
    let mut processes = BTreeMap::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between listing and reading.
        let Ok(text) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // proc(5): the fields after the parenthesised command name, from `state` (field 3).
        let Some((_, rest)) = text.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        let field = |number: usize| fields.get(number - 4).copied().unwrap_or(0);
        processes.insert(
            pid,
            Stat {
                ppid: field(4) as u32,
                kernel: field(9) & PF_KTHREAD != 0,
                ticks: field(14) + field(15),
            },
        );
    }
    let me = std::process::id();
    let mut ancestors = BTreeSet::new();
    let mut pid = me;
    while pid > 1 && ancestors.insert(pid) {
        pid = processes.get(&pid).map_or(0, |stat| stat.ppid);
    }
    let descends_from_me = |mut pid: u32| {
        let mut hops = 0;
        while pid > 1 && hops < 64 {
            if pid == me {
                return true;
            }
            pid = processes.get(&pid).map_or(0, |stat| stat.ppid);
            hops += 1;
        }
        false
    };
    Ok(processes
        .iter()
        .filter(|(pid, stat)| !stat.kernel && !ancestors.contains(pid) && !descends_from_me(**pid))
        .map(|(pid, stat)| (*pid, stat.ticks))
        .collect())
}

/// Per-CPU busy time over a window, from /proc/stat: whether the server core had time to spare.
pub struct CpuBusy {
    before: Vec<(u64, u64)>,
}

impl CpuBusy {
    pub fn start() -> Result<Self> {
        Ok(Self {
            before: per_cpu_times()?,
        })
    }

    /// Share of the window `cpu` was busy (softirq included).
    pub fn share(&self, cpu: usize) -> Result<f64> {
        let after = per_cpu_times()?;
        let (Some(&(total_0, idle_0)), Some(&(total_1, idle_1))) =
            (self.before.get(cpu), after.get(cpu))
        else {
            bail!("no CPU {cpu} in /proc/stat");
        };
        let total = total_1.saturating_sub(total_0);
        if total == 0 {
            return Ok(0.0);
        }
        Ok(1.0 - idle_1.saturating_sub(idle_0) as f64 / total as f64)
    }
}

/// (total, idle + iowait) ticks of each CPU.
fn per_cpu_times() -> Result<Vec<(u64, u64)>> {
    let stat = fs::read_to_string("/proc/stat")?;
    stat.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            // user nice system idle iowait irq softirq steal …
            let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
            Ok((fields.iter().take(8).sum(), idle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A busy loop orphaned to init is someone else's work, and it shows.
    #[test]
    fn other_processes_cpu_time_is_counted() {
        let other = OtherWork::start().unwrap();
        let status = Command::new("sh")
            .args([
                "-c",
                "timeout 2 sh -c 'while :; do :; done' >/dev/null 2>&1 &",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(1500));
        let used = other.cpus_used().unwrap();
        assert!(
            used > 0.5,
            "a busy loop for 1.5 s counted as {used:.2} CPUs"
        );
    }
}
