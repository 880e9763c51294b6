//! Compiles the XDP program (edge-ebpf) for the BPF target so that the binary can embed it, with
//! the nightly pinned in edge-ebpf/rust-toolchain.toml.

use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "edge-ebpf")
        .ok_or_else(|| anyhow!("edge-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let pin = root_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={pin}");
    let toolchain = pinned_toolchain(&std::fs::read_to_string(&pin).context(pin.clone())?)?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}

/// The installed toolchain that is the pinned nightly: the pinned name itself, or `nightly` where
/// it is of the pinned date (a machine that cannot download toolchains).
fn pinned_toolchain(pin: &str) -> anyhow::Result<String> {
    let channel = pin
        .lines()
        .find_map(|line| line.trim().strip_prefix("channel = "))
        .map(|value| value.trim_matches('"').to_owned())
        .ok_or_else(|| anyhow!("edge-ebpf/rust-toolchain.toml: no channel"))?;
    let date = channel.strip_prefix("nightly-").unwrap_or(&channel);
    for candidate in [channel.as_str(), "nightly"] {
        let version = Command::new("rustc")
            .arg(format!("+{candidate}"))
            .arg("--version")
            .output();
        if let Ok(out) = version
            && out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!(" {date})"))
        {
            return Ok(candidate.to_owned());
        }
    }
    bail!(
        "the XDP program builds with {channel} (edge-ebpf/rust-toolchain.toml): \
         `rustup toolchain install {channel} --component rust-src`, or run `cargo xtask setup`"
    )
}
