//! wrk, the HTTP load generator, run inside the client namespace with a fixed number of threads
//! and keep-alive connections, and the numbers read back from its report.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::topology::Netns;

/// One wrk run.
#[derive(Debug, Clone)]
pub struct WrkRun<'a> {
    pub url: &'a str,
    /// The Host header (edge picks the site by it).
    pub host: &'a str,
    pub threads: u32,
    pub connections: u32,
    pub seconds: u64,
    /// The CPU wrk is pinned to.
    pub cpu: usize,
    /// A Lua script (`wrk -s`), e.g. one that makes every request's target new.
    pub script: Option<&'a Path>,
    /// `Connection: close` on every request: a new connection (and TLS handshake) each.
    pub close_each: bool,
}

/// A wrk script that appends a part no other request has (a random run prefix, the thread,
/// a counter) to the URL's target: with a URL ending in `&u=`, every request is a new object.
pub const NEW_URL_PER_REQUEST: &str = r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  math.randomseed(os.time() + id)
  prefix = wrk.path .. math.random(1, 1000000000) .. "-" .. id .. "-"
  n = 0
end
function request()
  n = n + 1
  return wrk.format(nil, prefix .. n)
end
"#;

/// What wrk reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_second: f64,
    /// Response bytes (heads and bodies) per second.
    pub bytes_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Responses that were not 2xx or 3xx, plus socket errors (connect, read, write, timeout).
    pub errors: u64,
}

/// Runs wrk in `netns`.
pub fn wrk(netns: &Netns, run: &WrkRun) -> Result<WrkReport> {
    let text = super::run_tool(
        netns
            .command("taskset")
            .args(["-c", &run.cpu.to_string(), "wrk", "--latency"])
            .args(["-t", &run.threads.to_string()])
            .args(["-c", &run.connections.to_string()])
            .args(["-d", &format!("{}s", run.seconds)])
            // wrk's default of 2 s is shorter than a 10 MB answer can take on a busy server.
            .args(["--timeout", "10s"])
            .args(["-H", &format!("Host: {}", run.host)])
            .args(
                run.close_each
                    .then_some(["-H", "Connection: close"])
                    .into_iter()
                    .flatten(),
            )
            .args(
                run.script
                    .iter()
                    .flat_map(|script| [std::ffi::OsStr::new("-s"), script.as_os_str()]),
            )
            .arg(run.url),
        "wrk",
        "cargo xtask setup installs it",
    )?;
    parse_wrk(&text).with_context(|| format!("wrk said:\n{text}"))
}

/// Reads wrk's report: `N requests in Ts, X read`, `Requests/sec:`, `Transfer/sec:`, the
/// `--latency` distribution, and the optional error lines.
pub fn parse_wrk(text: &str) -> Result<WrkReport> {
    let after = |prefix: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .context("no `requests in` line")?
        .0
        .parse()?;
    let requests_per_second = after("Requests/sec:").context("no Requests/sec")?.parse()?;
    let bytes_per_second = bytes(after("Transfer/sec:").context("no Transfer/sec")?)?;
    let p50 = duration(after("50%").context("no 50% latency (--latency)")?)?;
    let p99 = duration(after("99%").context("no 99% latency (--latency)")?)?;
    let mut errors = 0;
    if let Some(count) = after("Non-2xx or 3xx responses:") {
        errors += count.parse::<u64>()?;
    }
    if let Some(sockets) = after("Socket errors:") {
        for part in sockets.split(',') {
            errors += part
                .split_whitespace()
                .last()
                .context("socket error count")?
                .parse::<u64>()?;
        }
    }
    Ok(WrkReport {
        requests,
        requests_per_second,
        bytes_per_second,
        p50,
        p99,
        errors,
    })
}

/// wrk's sizes: `92.53MB`, binary multiples.
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
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => bail!("unknown size unit in {text:?}"),
    };
    Ok(number.parse::<f64>()? * scale)
}

/// wrk's times: `390.00us`, `1.20ms`, `2.00s`, `1.00m`.
fn duration(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a time without a unit")?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("unknown time unit in {text:?}"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 4s test @ http://198.18.0.2/1k
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   405.23us  100.12us   5.12ms   90.00%
    Req/Sec    78.90k     3.21k   85.00k    75.00%
  Latency Distribution
     50%  390.00us
     75%  420.00us
     90%  480.00us
     99%    1.20ms
  315600 requests in 4.00s, 370.12MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:  78900.00
Transfer/sec:     92.53MB
";

    #[test]
    fn reads_wrk_report() {
        let report = parse_wrk(WRK).unwrap();
        assert_eq!(report.requests, 315_600);
        assert_eq!(report.requests_per_second, 78_900.0);
        assert!((report.bytes_per_second - 92.53 * 1024.0 * 1024.0).abs() < 1.0);
        assert_eq!(report.p50, Duration::from_micros(390));
        assert_eq!(report.p99, Duration::from_micros(1200));
        assert_eq!(report.errors, 16);
    }

    #[test]
    fn wrk_without_a_report_is_an_error() {
        let error =
            parse_wrk("unable to connect to 198.18.0.2:80 Connection refused\n").unwrap_err();
        assert!(error.to_string().contains("requests in"), "{error}");
    }
}
