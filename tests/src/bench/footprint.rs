//! What a running server costs, read from outside it through procfs: resident memory (PSS over
//! its process tree, so that forked workers sharing pages are not counted twice), peak resident
//! memory, the kernel memory its BPF maps lock (`memlock` in the fdinfo of each map it holds),
//! and CPU time used.

use std::{collections::BTreeMap, fs};

use anyhow::{Context as _, Result};

/// Bytes, from a `Key:   1234 kB` line of a procfs file.
fn kilobytes(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|number| number.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// `pid` and every process descended from it.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // proc(5): `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse().ok());
            if let Some(ppid) = ppid {
                parents.insert(child, ppid);
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| **ppid == parent)
                .map(|(child, _)| *child),
        );
        i += 1;
    }
    tree
}

/// Proportional set size of `pid`'s process tree, in bytes.
pub fn pss(pid: u32) -> Result<u64> {
    let mut total = 0;
    for process in process_tree(pid) {
        if let Ok(text) = fs::read_to_string(format!("/proc/{process}/smaps_rollup")) {
            total += kilobytes(&text, "Pss").unwrap_or(0);
        }
    }
    Ok(total)
}

/// The part of `pid`'s process tree's PSS that is BPF maps mapped into it (edge maps its name
/// table to write it): kernel memory that [`map_memlock`] counts too, in bytes.
pub fn mapped_maps_pss(pid: u32) -> Result<u64> {
    let mut total = 0;
    for process in process_tree(pid) {
        let Ok(text) = fs::read_to_string(format!("/proc/{process}/smaps")) else {
            continue;
        };
        let mut in_map = false;
        for line in text.lines() {
            let Some(first) = line.split_whitespace().next() else {
                continue;
            };
            // A mapping's header (`start-end perms offset dev inode [name]`), else its fields
            // (`Pss:   1024 kB`).
            if !first.ends_with(':') {
                in_map = line.ends_with("anon_inode:bpf-map");
            } else if in_map && first == "Pss:" {
                total += kilobytes(line, "Pss").unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Peak resident set size of `pid` (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    kilobytes(&text, "VmHWM").context("no VmHWM")
}

/// Resident set size of `pid` (VmRSS), in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    kilobytes(&text, "VmRSS").context("no VmRSS")
}

/// Kernel memory locked by the BPF maps `pid`'s process tree holds open, in bytes, each map
/// counted once (by its id).
pub fn map_memlock(pid: u32) -> Result<u64> {
    let mut maps: BTreeMap<u64, u64> = BTreeMap::new();
    for process in process_tree(pid) {
        let Ok(fds) = fs::read_dir(format!("/proc/{process}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(text) = fs::read_to_string(fd.path()) else {
                continue;
            };
            let field = |key: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(key))
                    .and_then(|value| value.trim().parse::<u64>().ok())
            };
            if let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) {
                maps.insert(id, memlock);
            }
        }
    }
    Ok(maps.values().sum())
}

/// CPU time (user and system) `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no comm in stat")?
        .1
        .split_whitespace()
        .collect();
    // After the comm: state is field 3, utime 14, stime 15.
    let ticks = |number: usize| -> Result<u64> {
        Ok(fields
            .get(number - 3)
            .context("short stat")?
            .parse::<u64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(14)? + ticks(15)?) as f64 / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        let spent: u64 = (0..5_000_000_u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert_ne!(spent, 1);
        assert!(pss(me).unwrap() > 1 << 20);
        assert!(peak_rss(me).unwrap() >= rss(me).unwrap());
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(process_tree(me).contains(&me));
    }

    #[test]
    fn reads_kilobyte_lines() {
        assert_eq!(kilobytes("Rss:  10 kB\nPss:   4 kB\n", "Pss"), Some(4096));
        assert_eq!(kilobytes("Rss: 10 kB\n", "Pss"), None);
    }
}
