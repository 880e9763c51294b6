//! Idempotent machine setup: Debian packages, the nightly toolchain's rust-src, bpf-linker, and a
//! mounted bpffs. Each check prints what it found and what it installs.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{exec, step};

/// Debian packages the tests, the demo and the benchmarks use.
const PACKAGES: &[&str] = &[
    "iproute2",       // ip, netns, veth
    "util-linux",     // nsenter
    "bpftool",        // inspecting maps
    "ethtool",        // benchmarks: GRO on the veth end, for threaded NAPI
    "knot-dnsutils",  // kdig, kxdpgun
    "bind9-dnsutils", // dig
    "dnsperf",
    "knot",
    "nsd",
    "unbound",
    "nginx",
    "varnish",
    "wrk",
    "vsftpd",
    "curl",
    "vagrant", // vagrant validate
];

const BPF_LINKER_VERSION: &str = "0.10.2";
const NIGHTLY: &str = "nightly";

pub fn run() -> Result<()> {
    if effective_uid() != 0 {
        bail!("edge loads XDP programs and creates network namespaces: run as root");
    }
    step("setup: Debian packages", debian_packages)?;
    step("setup: rust-src for the nightly toolchain", rust_src)?;
    step("setup: bpf-linker", bpf_linker)?;
    step("setup: bpffs at /sys/fs/bpf", bpffs)
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if missing.is_empty() {
        eprintln!("  all {} packages present", PACKAGES.len());
        return Ok(());
    }
    eprintln!("  installing: {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-q"]))?;
    // The servers among these are peers for benchmarks, started by the benchmark itself; keep
    // the package scripts from starting them on the host.
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let had_policy = policy.exists();
    if !had_policy {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        exec(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
    }
    let result = exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if !had_policy {
        std::fs::remove_file(policy)?;
    }
    result
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|line| line.starts_with(NIGHTLY)) {
        bail!("the XDP program builds with the `{NIGHTLY}` toolchain, which rustup does not list");
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if components.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("  present");
        return Ok(());
    }
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker() -> Result<()> {
    if let Ok(version) = output(Command::new("bpf-linker").arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        eprintln!("  {}", version.trim());
        return Ok(());
    }
    // 0.10.2 links with rustc's own LLVM; newer releases need an external LLVM.
    exec(Command::new("cargo").args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if mounts
        .lines()
        .any(|line| line.split_whitespace().nth(1) == Some("/sys/fs/bpf") && line.contains(" bpf "))
    {
        eprintln!("  mounted");
        return Ok(());
    }
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .unwrap_or(u32::MAX)
}
