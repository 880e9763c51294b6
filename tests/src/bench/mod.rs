//! The parts of `cargo xtask bench`: the generated zone and query set, the peer servers, the
//! load generators and who runs on which core. `tests/examples/bench_dns.rs` and
//! `tests/examples/bench_http.rs` (and `bench_steer.rs`) put them together. Benchmarks print and record numbers;
//! nothing here asserts a timing.

pub mod cpus;
pub mod footprint;
pub mod h2load;
pub mod load;
pub mod peers;
pub mod program_cost;
pub mod reply_sink;
pub mod report;
pub mod trafgen;
pub mod web;
pub mod wrk;
pub mod zone;

use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// What `program args…` prints (stdout, then stderr), trimmed: versions, dates, machine facts
/// for the reports.
pub fn command_output(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_string())
}

/// Runs a load generator to its end and returns its report (stdout, then stderr); fails with
/// that report when it exits unsuccessfully. `install` says where the tool comes from.
pub fn run_tool(command: &mut Command, tool: &str, install: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {tool} ({install})"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("{tool} failed ({}):\n{text}", output.status);
    }
    Ok(text)
}
