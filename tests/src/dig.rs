//! Real DNS clients (kdig, dig) run inside a namespace, and the few facts the tests read back
//! from their text output.

use anyhow::{Context as _, Result};

use crate::topology::Netns;

/// A DNS client's answer, as printed.
#[derive(Debug)]
pub struct DigOutput {
    pub text: String,
}

impl DigOutput {
    /// Header flags as printed on the `flags:` line, lower-case (`qr aa rd`).
    pub fn flags(&self) -> Vec<String> {
        self.text
            .lines()
            .find_map(|line| {
                let lower = line.to_ascii_lowercase();
                let start = lower.find("flags:")? + "flags:".len();
                let rest = &lower[start..];
                let end = rest.find(';').unwrap_or(rest.len());
                Some(rest[..end].split_whitespace().map(str::to_string).collect())
            })
            .unwrap_or_default()
    }

    /// Response status (`NOERROR`, `NXDOMAIN`, …).
    pub fn status(&self) -> Option<String> {
        self.text.lines().find_map(|line| {
            let start = line.find("status: ")? + "status: ".len();
            let rest = &line[start..];
            Some(rest.split([',', ';']).next()?.trim().to_string())
        })
    }

    /// Records of a section (`ANSWER`, `AUTHORITY`, `ADDITIONAL`, `QUESTION`) as whitespace-split
    /// fields, comment markers stripped.
    pub fn section(&self, name: &str) -> Vec<Vec<String>> {
        let header = format!("{name} SECTION:");
        let mut lines = self.text.lines().skip_while(|line| !line.contains(&header));
        lines.next();
        lines
            .take_while(|line| !line.trim().is_empty())
            .map(|line| {
                line.trim_start_matches(";;")
                    .trim_start_matches(';')
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }
}

impl DigOutput {
    /// The addresses of the A records in the answer section (the CNAMEs before them left out).
    pub fn a_records(&self) -> Vec<std::net::Ipv4Addr> {
        self.section("ANSWER")
            .into_iter()
            .filter(|fields| fields.get(3).map(String::as_str) == Some("A"))
            .filter_map(|fields| fields.get(4)?.parse().ok())
            .collect()
    }
}

/// Runs `kdig args…` in `netns`; kdig's exit status is not checked, so timeouts show in `text`.
pub fn kdig(netns: &Netns, args: &[&str]) -> Result<DigOutput> {
    client(netns, "kdig", args)
}

/// Runs `dig args…` in `netns`. dig prints names with the letter case it received.
pub fn dig(netns: &Netns, args: &[&str]) -> Result<DigOutput> {
    client(netns, "dig", args)
}

fn client(netns: &Netns, program: &str, args: &[&str]) -> Result<DigOutput> {
    let output = netns
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (install it: cargo xtask setup)"))?;
    Ok(DigOutput {
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}
