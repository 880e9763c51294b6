//! The load generators, run inside the client namespace, and the numbers read back from their
//! reports: kxdpgun (Knot DNS's AF_XDP generator; offered and answered rate) and dnsperf (a
//! socket client; rate and latency).

use std::{net::Ipv4Addr, path::Path, thread, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::topology::Netns;

/// Attempts when kxdpgun's AF_XDP socket is still held by the previous run.
const KXDPGUN_ATTEMPTS: usize = 5;

/// One kxdpgun run.
#[derive(Debug, Clone)]
pub struct KxdpgunRun<'a> {
    pub server: Ipv4Addr,
    pub queries: &'a Path,
    pub interface: &'a str,
    /// The server's MAC: kxdpgun writes Ethernet frames itself.
    pub server_mac: &'a str,
    /// Offered queries per second.
    pub rate: u64,
    pub seconds: u64,
    /// The CPU kxdpgun's one thread (one veth queue) runs on.
    pub cpu: usize,
}

/// What kxdpgun reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KxdpgunReport {
    /// Queries sent per second: below the offered rate when kxdpgun itself is the limit.
    pub sent_qps: f64,
    /// Replies received per second.
    pub answered_qps: f64,
    /// Replies with RCODE NOERROR.
    pub noerror: u64,
    pub queries: u64,
    pub replies: u64,
}

impl KxdpgunReport {
    /// Share of sent queries answered.
    pub fn answered_share(&self) -> f64 {
        if self.sent_qps == 0.0 {
            0.0
        } else {
            self.answered_qps / self.sent_qps
        }
    }
}

/// Runs kxdpgun in `netns`. kxdpgun attaches its own XDP program to the interface and leaves it
/// there; the caller detaches it when it needs the interface back.
pub fn kxdpgun(netns: &Netns, run: &KxdpgunRun) -> Result<KxdpgunReport> {
    for attempt in 1..=KXDPGUN_ATTEMPTS {
        let output = netns
            .command("kxdpgun")
            .args(["-t", &run.seconds.to_string()])
            .args(["-Q", &run.rate.to_string()])
            // Batches of 64 let one thread offer about twice the rate of the default 10.
            .args(["-b", "64"])
            .args(["-F", &run.cpu.to_string()])
            .args(["-I", run.interface, "-R", run.server_mac, "-i"])
            .arg(run.queries)
            .arg(run.server.to_string())
            .output()
            .context("running kxdpgun (knot-dnsutils: cargo xtask setup)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The kernel releases the previous run's AF_XDP socket asynchronously.
        if text.contains("resource is busy") && attempt < KXDPGUN_ATTEMPTS {
            thread::sleep(Duration::from_secs(1));
            continue;
        }
        return parse_kxdpgun(&text).with_context(|| format!("kxdpgun said:\n{text}"));
    }
    unreachable!("the last attempt returns")
}

/// Reads kxdpgun's summary (`total queries: N (R pps)`, `total replies: N (R pps) (P%)`,
/// `responded NOERROR: N`).
pub fn parse_kxdpgun(text: &str) -> Result<KxdpgunReport> {
    let total = |what: &str| -> Result<(u64, f64)> {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("total {what}:")))
            .with_context(|| format!("no `total {what}` line"))?;
        let mut fields = line.split_whitespace().skip(2);
        let count = fields.next().context("no count")?.parse()?;
        let rate = fields
            .next()
            .and_then(|field| field.strip_prefix('('))
            .context("no rate")?
            .parse()?;
        Ok((count, rate))
    };
    let (queries, sent_qps) = total("queries")?;
    let (replies, answered_qps) = total("replies")?;
    let noerror = text
        .lines()
        .find_map(|line| line.strip_prefix("responded NOERROR:"))
        .map(|count| count.trim().parse())
        .transpose()?
        .unwrap_or(0);
    Ok(KxdpgunReport {
        sent_qps,
        answered_qps,
        noerror,
        queries,
        replies,
    })
}

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

    /// kxdpgun 3.2.6 against edge's XDP path on this topology.
    const KXDPGUN: &str = "using interface eth0, XDP threads 1, UDP, native mode
thread#00: sent 2822853, received 2205424, lost 127
total queries:     2822853 (940951 pps)
total replies:     2205424 (735141 pps) (78%)
average DNS reply size: 51 B
average Ethernet reply rate: 362595440 bps (362.60 Mbps)
responded NOERROR:   2205424
duration: 3 s
";

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
    fn reads_kxdpgun_summary() {
        let report = parse_kxdpgun(KXDPGUN).unwrap();
        assert_eq!(report.sent_qps, 940_951.0);
        assert_eq!(report.answered_qps, 735_141.0);
        assert_eq!(report.replies, 2_205_424);
        assert_eq!(report.noerror, 2_205_424);
        assert!((report.answered_share() - 0.78).abs() < 0.01);
    }

    #[test]
    fn kxdpgun_without_a_summary_is_an_error() {
        let error = parse_kxdpgun(
            "error: failed to initialize XDP socket#0 (requested resource is busy)\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("total queries"), "{error}");
    }

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
