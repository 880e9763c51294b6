//! `cargo xtask`: everything that is not `cargo build`. Each command installs what it needs first
//! (see [`setup`]), so the README's two commands work on a fresh machine.

mod interrupt;
mod setup;
mod vm;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building, testing and the demo need (idempotent; prints what it does).
    Setup,
    /// Build the workspace, the XDP object included.
    Build,
    /// Run every test: formatting, lints, unit and integration tests, `vagrant validate`.
    Test,
    /// Run the tests in a Debian 12 VM (kernel 6.1) with Vagrant and libvirt: build them here,
    /// boot the VM, run them as root in it, print its kernel and the tally, destroy the VM.
    VmTest {
        /// Which box: debian/bookworm64, or one built here from Debian's packages.
        #[arg(long = "box", value_enum, default_value_t = vm::BoxSource::Auto)]
        box_source: vm::BoxSource,
        /// KVM, or QEMU's emulated CPU where KVM cannot boot a kernel.
        #[arg(long, value_enum, default_value_t = vm::Accel::Auto)]
        accel: vm::Accel,
        /// Run only these test targets, by cargo's names: `--only mesh,steering` (the files of
        /// tests/tests/), `edge_steer` (a crate's unit tests).
        #[arg(long, value_delimiter = ',', value_name = "TARGETS")]
        only: Vec<String>,
    },
    /// The PoP network in namespaces: three PoPs with the mesh, three origins, the customer's
    /// DNS and a resolver; a client resolves and fetches, then an origin is loaded and a PoP
    /// killed.
    Demo,
    /// Run 1,000,000 random and mutated frames through the XDP program.
    FuzzXdp {
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
    },
    /// Measure edge against its peers; prints a table and rewrites its section of
    /// docs/BENCHMARKS.md.
    Bench {
        #[arg(value_enum)]
        what: Benchmark,
        /// Passed on to the benchmark's driver, e.g. `cargo xtask bench dns -- --ten-million`
        /// (`-- --help` lists them).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Benchmark {
    /// Authoritative DNS: throughput of edge's XDP and userspace paths, Knot DNS, NSD, gdnsd and
    /// an XDP reflector (trafgen); the XDP program's cost per query; load time, memory and
    /// reloads at 1 k and 1 M names (10 M with `-- --ten-million`); steering changes beside a
    /// million static names.
    Dns,
    /// HTTP cache: edge, nginx (sendfile) and Varnish; 1 KB hits, 10 MB hits, misses.
    Http,
    /// Steering: decision to visible answer, origin death to moved answers, queries lost while
    /// the maps are rewritten.
    Steer,
    /// The PoP mesh, 5 and 20 PoPs: load change and PoP death to every PoP's new answer,
    /// gossip bytes per PoP.
    Mesh,
}

fn main() -> Result<()> {
    let started = Instant::now();
    match Cli::parse().command {
        Task::Setup => setup::run()?,
        Task::Test => {
            let mut tally = Tally::default();
            let result = test(&mut tally);
            eprintln!("xtask: done in {:.0?}", started.elapsed());
            // The closing line CI reads, printed on failure too, with the tests counted so far.
            println!("xtask: {} passed, {} failed", tally.passed, tally.failed);
            return result;
        }
        Task::VmTest {
            box_source,
            accel,
            only,
        } => {
            let outcome = vm::run(box_source, accel, &only)?;
            eprintln!("xtask: done in {:.0?}", started.elapsed());
            for name in &outcome.broken {
                eprintln!("xtask: {name} ended without a test summary");
            }
            // The closing lines.
            println!("xtask: guest kernel {}", outcome.kernel);
            println!(
                "xtask: {} passed, {} failed",
                outcome.tally.passed, outcome.tally.failed
            );
            if outcome.tally.failed > 0 || !outcome.broken.is_empty() {
                bail!("tests failed in the VM");
            }
            return Ok(());
        }
        Task::Build => {
            setup::run()?;
            cargo(&["build", "--workspace", "--exclude", "edge-ebpf"])?;
        }
        Task::FuzzXdp { frames } => {
            setup::run()?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            step(
                &format!("fuzz the XDP program with {frames} frames"),
                || {
                    exec(
                        Command::new(cargo)
                            .args([
                                "test",
                                "--release",
                                "-p",
                                "edge-tests",
                                "--test",
                                "xdp_fuzz",
                            ])
                            .args(["--", "--nocapture"])
                            .env("EDGE_FUZZ_FRAMES", frames.to_string())
                            .current_dir(workspace_root()),
                    )
                },
            )?;
        }
        Task::Demo => {
            setup::run()?;
            cargo(&["build", "--workspace", "--exclude", "edge-ebpf"])?;
            cargo(&["build", "--quiet", "-p", "edge-tests", "--example", "demo"])?;
            // In a process group of its own: Ctrl-C reaches xtask, which stops the demo with
            // SIGTERM and waits while it removes what it built.
            interrupt::catch();
            step("the demo", || {
                interrupt::exec(
                    Command::new(target_dir().join("debug/examples/demo"))
                        .current_dir(workspace_root()),
                )
            })?;
        }
        Task::Bench { what, args } => {
            setup::run()?;
            bench(what, &args)?;
        }
    }
    eprintln!("xtask: done in {:.0?}", started.elapsed());
    Ok(())
}

/// Builds the release `edge` binary and runs the benchmark's driver (an example of edge-tests,
/// which this crate cannot depend on: it must build before bpf-linker is installed), with
/// `args` after its own; the report names the whole command.
fn bench(what: Benchmark, args: &[String]) -> Result<()> {
    let (example, command) = match what {
        Benchmark::Dns => ("bench_dns", "cargo xtask bench dns"),
        Benchmark::Http => ("bench_http", "cargo xtask bench http"),
        Benchmark::Steer => ("bench_steer", "cargo xtask bench steer"),
        Benchmark::Mesh => ("bench_mesh", "cargo xtask bench mesh"),
    };
    let command = if args.is_empty() {
        command.to_string()
    } else {
        format!("{command} -- {}", args.join(" "))
    };
    cargo(&["build", "--release", "-p", "edge"])?;
    let root = workspace_root();
    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step(&command, || {
        exec(
            Command::new(&cargo)
                .args([
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "edge-tests",
                    "--example",
                ])
                .arg(example)
                .arg("--")
                .arg("--out")
                .arg(root.join("docs/BENCHMARKS.md"))
                .args(["--command", &command])
                .args(args)
                .env("EDGE_BIN", target.join("release/edge"))
                .current_dir(&root),
        )
    })
}

/// Tests counted over every test binary.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Every check of the test command; every test binary runs even when one fails
/// (`--no-fail-fast`), and `tally` counts their results.
fn test(tally: &mut Tally) -> Result<()> {
    setup::run()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["build", "--workspace", "--exclude", "edge-ebpf"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "edge-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The XDP crate builds only for the BPF target, with nightly's build-std: its own clippy run.
    let nightly = setup::xdp_toolchain()?;
    step("clippy on edge-ebpf (BPF target)", || {
        exec(
            Command::new("cargo")
                .arg(format!("+{nightly}"))
                .args([
                    "clippy",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                    "-D",
                    "clippy::undocumented_unsafe_blocks",
                ])
                .current_dir(workspace_root().join("edge-ebpf")),
        )
    })?;
    step(
        "cargo test --workspace --exclude edge-ebpf --no-fail-fast",
        || {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut child = Command::new(cargo)
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "edge-ebpf",
                    "--no-fail-fast",
                ])
                .current_dir(workspace_root())
                .stdout(Stdio::piped())
                .spawn()?;
            let stdout = child.stdout.take().context("cargo test stdout")?;
            for line in BufReader::new(stdout).lines() {
                let line = line?;
                println!("{line}");
                tally.add(&line);
            }
            let status = child.wait()?;
            if !status.success() {
                bail!(
                    "cargo test failed: {} passed, {} failed",
                    tally.passed,
                    tally.failed
                );
            }
            Ok(())
        },
    )?;
    // The Vagrantfile's syntax and settings, without asking for a provider: which one a machine
    // has (VirtualBox, libvirt, none) is not what this step tests.
    step("vagrant validate --ignore-provider", || {
        exec(
            Command::new("vagrant")
                .args(["validate", "--ignore-provider"])
                .current_dir(workspace_root().join("vagrant")),
        )
    })?;
    Ok(())
}

impl Tally {
    /// Adds a libtest summary line (`test result: ok. 3 passed; 0 failed; …`).
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Where cargo builds: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The workspace root (xtask's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step(&format!("cargo {}", args.join(" ")), || {
        exec(
            Command::new(&cargo)
                .args(args)
                .current_dir(workspace_root()),
        )
    })
}

/// Runs `body`, announcing it and how long it took.
pub fn step(what: &str, body: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("xtask: {what}");
    let started = Instant::now();
    body()?;
    eprintln!("xtask: {what}: ok ({:.1?})", started.elapsed());
    Ok(())
}

/// Runs `command` with inherited output; fails if it does.
pub fn exec(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
