//! dnsperf (a socket client; rate and latency), run inside the client namespace, and the numbers
//! read back from its report. The packet generator is trafgen ([`super::trafgen`]).

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::topology::Netns;

/// One dnsperf run.
#[derive(Debug, Clone)]
pub struct DnsperfRun<'a> {
    pub server: Ipv4Addr,
    pub queries: &'a Path,
    /// Queries per second to hold; `None` sends as fast as `outstanding` allows.
    pub rate: Option<u64>,
    /// Queries in flight at most.
    pub outstanding: u32,
    pub seconds: u64,
    pub cpu: usize,
}

/// What dnsperf reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DnsperfReport {
    pub qps: f64,
    pub completed: u64,
    pub lost: u64,
    pub average_latency: Duration,
    pub max_latency: Duration,
}

/// Runs dnsperf in `netns`, pinned to `run.cpu`.
pub fn dnsperf(netns: &Netns, run: &DnsperfRun) -> Result<DnsperfReport> {
    let mut command = netns.command("taskset");
    command
        .args(["-c", &run.cpu.to_string(), "dnsperf"])
        .args(["-s", &run.server.to_string(), "-d"])
        .arg(run.queries)
        .args(["-l", &run.seconds.to_string()])
        .args(["-q", &run.outstanding.to_string()])
        // A second is long enough to call a query lost on a veth pair.
        .args(["-t", "1"]);
    if let Some(rate) = run.rate {
        command.args(["-Q", &rate.to_string()]);
    }
    let output = command
        .output()
        .context("running dnsperf (cargo xtask setup)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("dnsperf failed ({}):\n{text}", output.status);
    }
    parse_dnsperf(&text).with_context(|| format!("dnsperf said:\n{text}"))
}

/// Reads dnsperf's statistics block.
pub fn parse_dnsperf(text: &str) -> Result<DnsperfReport> {
    let field = |label: &str| -> Result<&str> {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(str::trim)
            .with_context(|| format!("no `{label}` line"))
    };
    let first_number = |value: &str| -> Result<f64> {
        let number = value.split_whitespace().next().context("empty")?;
        Ok(number.parse()?)
    };
    let latency = field("Average Latency (s):")?;
    // `0.000888 (min 0.000029, max 0.005015)`
    let max = latency
        .split("max ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(')'))
        .context("no max latency")?;
    Ok(DnsperfReport {
        qps: first_number(field("Queries per second:")?)?,
        completed: first_number(field("Queries completed:")?)? as u64,
        lost: first_number(field("Queries lost:")?)? as u64,
        average_latency: Duration::from_secs_f64(first_number(latency)?),
        max_latency: Duration::from_secs_f64(max.trim().parse()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsperf 2.10.0 against Knot DNS.
    const DNSPERF: &str = "[Status] Testing complete (time limit)

Statistics:

  Queries sent:         288177
  Queries completed:    288177 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 288177 (100.00%)
  Average packet size:  request 35, response 51
  Run time (s):         2.000375
  Queries per second:   144061.488471

  Average Latency (s):  0.000888 (min 0.000029, max 0.005015)
  Latency StdDev (s):   0.000231
";

    #[test]
    fn reads_dnsperf_statistics() {
        let report = parse_dnsperf(DNSPERF).unwrap();
        assert!((report.qps - 144_061.488_471).abs() < 1e-3);
        assert_eq!(report.completed, 288_177);
        assert_eq!(report.lost, 0);
        assert_eq!(report.average_latency, Duration::from_micros(888));
        assert_eq!(report.max_latency, Duration::from_micros(5015));
    }

    #[test]
    fn dnsperf_without_statistics_is_an_error() {
        assert!(parse_dnsperf("[Status] Sending queries\n").is_err());
    }
}
