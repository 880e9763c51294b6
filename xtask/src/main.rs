//! `cargo xtask`: everything that is not `cargo build`. Each command installs what it needs first
//! (see [`setup`]), so the README's two commands work on a fresh machine.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

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
    /// Start edge in a two-namespace topology and query it with kdig.
    Demo,
}

fn main() -> Result<()> {
    let started = Instant::now();
    match Cli::parse().command {
        Task::Setup => setup::run()?,
        Task::Build => {
            setup::run()?;
            cargo(&["build", "--workspace", "--exclude", "edge-ebpf"])?;
        }
        Task::Test => test()?,
        Task::Demo => {
            setup::run()?;
            cargo(&["build", "--workspace", "--exclude", "edge-ebpf"])?;
            cargo(&["run", "--quiet", "-p", "edge-tests", "--example", "demo"])?;
        }
    }
    eprintln!("xtask: done in {:.0?}", started.elapsed());
    Ok(())
}

fn test() -> Result<()> {
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
    cargo(&["test", "--workspace", "--exclude", "edge-ebpf"])?;
    step("vagrant validate", || {
        exec(
            Command::new("vagrant")
                .arg("validate")
                .current_dir(workspace_root().join("vagrant")),
        )
    })
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
