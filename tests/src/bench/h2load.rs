//! h2load (nghttp2), the HTTP/2 load generator, run inside the client namespace for a fixed
//! time with a fixed number of connections and streams each, its report read into the shape of
//! wrk's.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::wrk::WrkReport;
use crate::topology::Netns;

/// One h2load run.
#[derive(Debug, Clone)]
pub struct H2loadRun<'a> {
    pub url: &'a str,
    /// The `:authority` (edge picks the site by it).
    pub authority: &'a str,
    pub connections: u32,
    /// Streams open at once on each connection.
    pub streams: u32,
    pub seconds: u64,
    /// The CPU h2load is pinned to.
    pub cpu: usize,
}

/// Runs h2load in `netns`, one thread.
pub fn h2load(netns: &Netns, run: &H2loadRun) -> Result<WrkReport> {
    let text = super::run_tool(
        netns
            .command("taskset")
            .args(["-c", &run.cpu.to_string(), "h2load", "-t", "1"])
            .args(["-c", &run.connections.to_string()])
            .args(["-m", &run.streams.to_string()])
            .args(["-D", &run.seconds.to_string()])
            .args(["-H", &format!(":authority: {}", run.authority)])
            .arg(run.url),
        "h2load",
        "cargo xtask setup installs nghttp2-client",
    )?;
    parse_h2load(&text).with_context(|| format!("h2load said:\n{text}"))
}

/// Reads h2load's report: `finished in Ts, X req/s, Y/s`, the `requests:` counts and the mean
/// of `time for request:`. h2load gives no percentiles: p50 and p99 both hold the mean.
pub fn parse_h2load(text: &str) -> Result<WrkReport> {
    let line = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} line"))
    };
    let finished: Vec<&str> = line("finished in")?.split(", ").collect();
    let [_, rate, transfer] = finished[..] else {
        bail!("unexpected `finished in` line");
    };
    let requests_per_second = rate.trim_end_matches(" req/s").parse()?;
    let bytes_per_second = bytes(transfer.trim_end_matches("/s"))?;
    let counts = line("requests:")?;
    let count = |what: &str| -> Result<u64> {
        let before = counts
            .split(&format!(" {what}"))
            .next()
            .with_context(|| format!("no {what} count"))?;
        Ok(before.rsplit(' ').next().unwrap_or_default().parse()?)
    };
    let requests = count("succeeded")?;
    let errors = count("failed")? + count("errored")? + count("timeout")?;
    let times: Vec<&str> = line("time for request:")?.split_whitespace().collect();
    let mean = duration(times.get(2).context("no mean request time")?)?;
    Ok(WrkReport {
        requests,
        requests_per_second,
        bytes_per_second,
        p50: mean,
        p99: mean,
        errors,
    })
}

/// h2load's sizes: `14.52MB`, binary multiples.
fn bytes(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "" | "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => bail!("unknown size unit in {text:?}"),
    };
    Ok(number.parse::<f64>()? * scale)
}

/// h2load's times: `1.23ms`, `512us`, `2.1s`.
fn duration(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = number.parse::<f64>()?
        * match unit {
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            _ => bail!("unknown time unit in {text:?}"),
        };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_report() {
        let text = "starting benchmark...\n\
finished in 4.00s, 25123.50 req/s, 29.01MB/s\n\
requests: 100494 total, 100814 started, 100494 done, 100490 succeeded, 4 failed, 0 errored, 0 timeout\n\
status codes: 100490 2xx, 0 3xx, 0 4xx, 0 5xx\n\
                     min         max         mean         sd        +/- sd\n\
time for request:      120us     30.12ms      1.25ms       512us    80.00%\n";
        let report = parse_h2load(text).unwrap();
        assert_eq!(report.requests, 100_490);
        assert_eq!(report.requests_per_second, 25_123.5);
        assert_eq!(report.bytes_per_second, 29.01 * 1024.0 * 1024.0);
        assert_eq!(report.errors, 4);
        assert_eq!(report.p50, Duration::from_micros(1250));
    }
}
