//! Idempotent machine setup: Debian packages, the nightly toolchain's rust-src, bpf-linker, and a
//! mounted bpffs. Each check prints what it found and what it installs.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{exec, step};

/// Debian packages the tests, the demo and the benchmarks run; `vm-test` puts them in the guest.
pub const RUNTIME_PACKAGES: &[&str] = &[
    "iproute2",       // ip, netns, veth
    "util-linux",     // nsenter
    "bpftool",        // inspecting maps
    "ethtool",        // benchmarks: GRO on the veth end, for threaded NAPI
    "knot-dnsutils",  // kdig
    "bind9-dnsutils", // dig
    "dnsperf",
    "netsniff-ng", // trafgen: the DNS benchmark's load generator
    "knot",
    "nsd",
    "gdnsd",
    "unbound",
    "nginx",
    "varnish",
    "wrk",
    "vsftpd",
    "curl",
    "openssl",        // s_client: TLS tests (SNI, resumption)
    "nghttp2-client", // h2load: HTTP/2 tests and benchmark rows
    "chromium",       // the status page's test: headless screenshot and rendered DOM
];

/// What the test command needs besides: `vagrant validate`.
const HOST_PACKAGES: &[&str] = &["vagrant"];

const BPF_LINKER_VERSION: &str = "0.10.2";

pub fn run() -> Result<()> {
    if effective_uid() != 0 {
        bail!("edge loads XDP programs and creates network namespaces: run as root");
    }
    step("setup: Debian packages", || {
        install(&[RUNTIME_PACKAGES, HOST_PACKAGES].concat())
    })?;
    step(
        "setup: the XDP crate's pinned nightly, with rust-src",
        rust_src,
    )?;
    step("setup: bpf-linker", bpf_linker)?;
    step("setup: bpffs at /sys/fs/bpf", bpffs)
}

/// Installs the Debian packages of `packages` that are missing.
pub fn install(packages: &[&str]) -> Result<()> {
    install_with(packages, &[])
}

/// As [`install`], with extra apt-get options (another sources list, for packages named
/// `package/release`). A package is looked up installed by its name before the `/`.
pub fn install_with(packages: &[&str], apt_options: &[String]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !installed(package.split('/').next().unwrap_or(package)))
        .collect();
    if missing.is_empty() {
        eprintln!("  all {} packages present", packages.len());
        return Ok(());
    }
    eprintln!("  installing: {}", missing.join(" "));
    exec(
        Command::new("apt-get")
            .args(apt_options)
            .args(["update", "-q"]),
    )?;
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
            .args(apt_options)
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
    installed_version(package).is_some()
}

/// The installed version of `package`, if it is installed.
pub fn installed_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}|${Version}", package])
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&out.stdout);
    let (status, version) = out.split_once('|')?;
    status
        .contains("install ok installed")
        .then(|| version.to_string())
}

/// The XDP crate's nightly, pinned by date in edge-ebpf/rust-toolchain.toml (edge-dataplane's
/// build script picks it the same way): installed under its own name if rustup can download it,
/// else a `nightly` toolchain of that date; with rust-src, which build-std needs.
pub fn xdp_toolchain() -> Result<String> {
    let pin =
        std::fs::read_to_string(crate::workspace_root().join("edge-ebpf/rust-toolchain.toml"))?;
    let Some(channel) = pin
        .lines()
        .find_map(|line| line.trim().strip_prefix("channel = "))
        .map(|value| value.trim_matches('"').to_owned())
    else {
        bail!("edge-ebpf/rust-toolchain.toml: no channel");
    };
    let date = channel
        .strip_prefix("nightly-")
        .unwrap_or(&channel)
        .to_owned();
    let of_date = |toolchain: &str| {
        output(
            Command::new("rustc")
                .arg(format!("+{toolchain}"))
                .arg("--version"),
        )
        .is_ok_and(|version| version.contains(&format!(" {date})")))
    };
    if !of_date(&channel) && !of_date("nightly") {
        eprintln!("  installing {channel}");
        exec(Command::new("rustup").args([
            "toolchain",
            "install",
            &channel,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let toolchain = if of_date(&channel) {
        channel
    } else {
        "nightly".to_owned()
    };
    Ok(toolchain)
}

fn rust_src() -> Result<()> {
    let toolchain = xdp_toolchain()?;
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))?;
    if components.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("  {toolchain}: rust-src present");
        return Ok(());
    }
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", &toolchain]))
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

pub fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .unwrap_or(u32::MAX)
}
