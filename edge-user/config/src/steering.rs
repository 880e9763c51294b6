//! A pool's `probe` and `steering` tables: how its members are measured and judged, and how a
//! steered name answers. Every field has a default; see docs/STEERING.md.

use std::{path::Path, time::Duration};

use serde::Deserialize;

use crate::error::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Customer web servers: a page hostname resolves to the least-loaded one.
    Origin,
    /// CDN points of presence: a static hostname resolves to the best one.
    Pop,
}

/// How and how often every member of a pool is measured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Time between two probe rounds of the pool.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Each wait is the interval times a random factor in [1 − jitter, 1 + jitter], so that
    /// PoPs do not probe in step.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// A probe (connect, HTTP, agent, FTP) not done within this is a failure; below `interval`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Fetched with GET from each member's `http_port`; a status below 400 is healthy. For PoP
    /// pools, name a small object the PoP's cache serves.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// The Host header of the health GET; none: the member's address. A PoP's HTTP server
    /// answers only the hostnames of its sites (421 otherwise), so a PoP pool names one of them.
    #[serde(default)]
    pub host: Option<String>,
    /// Consecutive good probes that bring a down member back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failed probes that take an up member out.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// How the measurements become an answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// What a steered name answers when no member is up.
    #[serde(default)]
    pub all_down: AllDown,
    /// TTL of the pool's steered names.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// TTL while a member's state is changing (a failure seen on an up member, a success on a
    /// down one, and for max(rise, fall) rounds after a member went up, down, or was drained),
    /// so that resolvers come back soon.
    #[serde(default = "default_changing_ttl")]
    pub changing_ttl: u32,
    /// The answer moves only to a member whose score is lower than the current one's by more
    /// than this fraction.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Weight of a new measurement in its moving average (1: no smoothing).
    #[serde(default = "default_ewma")]
    pub ewma: f64,
    /// A challenger must beat the current member even with its score taken this many standard
    /// errors of its moving average worse (0: the margin alone decides), so that a swinging
    /// figure does not move the answer back and forth.
    #[serde(default = "default_deviations")]
    pub deviations: f64,
    /// The score formula's weights; defaults depend on the pool's kind.
    pub weights: Option<ScoreWeights>,
}

/// What a pool answers when none of its members is up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Every member that is not drained: a client may find one that still works.
    AnswerAll,
    /// The last answer given while a member was up (every member if there never was one).
    #[default]
    KeepLastGood,
    /// SERVFAIL: resolvers try again, or elsewhere.
    Servfail,
}

/// Weights of the score, lower is better: milliseconds for times, percent for loads.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreWeights {
    /// TCP connect time (one round trip), ms.
    #[serde(default)]
    pub rtt: f64,
    /// HTTP health GET, request to full response, ms.
    #[serde(default)]
    pub http: f64,
    /// FTP connect, banner, anonymous login and quit, ms.
    #[serde(default)]
    pub ftp: f64,
    /// CPU utilisation, percent.
    #[serde(default)]
    pub cpu: f64,
    /// Memory in use, percent.
    #[serde(default)]
    pub memory: f64,
    /// One-minute load average per CPU, percent.
    #[serde(default)]
    pub load: f64,
}

impl ScoreWeights {
    /// Origins: the load the agent reports (CPU).
    pub const ORIGIN: Self = Self {
        rtt: 0.0,
        http: 0.0,
        ftp: 0.0,
        cpu: 1.0,
        memory: 0.0,
        load: 0.0,
    };
    /// PoPs: latency and load alike; one millisecond weighs as much as one percent of CPU.
    pub const POP: Self = Self {
        rtt: 1.0,
        http: 1.0,
        ftp: 0.5,
        cpu: 1.0,
        memory: 0.5,
        load: 0.0,
    };
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            jitter: default_jitter(),
            timeout: default_timeout(),
            health_path: default_health_path(),
            host: None,
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

impl Default for SteeringConfig {
    fn default() -> Self {
        Self {
            all_down: AllDown::default(),
            ttl: default_ttl(),
            changing_ttl: default_changing_ttl(),
            hysteresis: default_hysteresis(),
            ewma: default_ewma(),
            deviations: default_deviations(),
            weights: None,
        }
    }
}

impl SteeringConfig {
    /// The configured weights, or the defaults of `kind`.
    pub fn weights(&self, kind: PoolKind) -> ScoreWeights {
        self.weights.unwrap_or(match kind {
            PoolKind::Origin => ScoreWeights::ORIGIN,
            PoolKind::Pop => ScoreWeights::POP,
        })
    }
}

/// With `fall` 2 and the default jitter and timeout, a dead member leaves the answers within
/// 2 × 0.55 s + 0.4 s = 1.5 s.
fn default_interval() -> Duration {
    Duration::from_millis(500)
}

fn default_jitter() -> f64 {
    0.1
}

fn default_timeout() -> Duration {
    Duration::from_millis(400)
}

fn default_health_path() -> String {
    "/".into()
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    2
}

fn default_ttl() -> u32 {
    20
}

fn default_changing_ttl() -> u32 {
    5
}

fn default_hysteresis() -> f64 {
    0.1
}

fn default_ewma() -> f64 {
    0.5
}

/// With 1.75 a member alternating between 10 and 50 ms against a steady 30 ms one moves the
/// default answer about once in 130 rounds instead of every other round, and a member a third
/// better than the current one but swinging ±30 % takes over in a median of 4 rounds (issue 21;
/// simulated, see docs/STEERING.md).
fn default_deviations() -> f64 {
    1.75
}

/// Checks the probe and steering settings of `pools[p]`.
pub fn check(
    path: &Path,
    p: usize,
    probe: &ProbeConfig,
    steering: &SteeringConfig,
) -> Result<(), ConfigError> {
    let refuse = |field: &str, reason: String| ConfigError {
        file: path.to_path_buf(),
        field: format!("pools[{p}].{field}"),
        reason,
    };
    if probe.interval < Duration::from_millis(10) {
        return Err(refuse("probe.interval", "at least 10ms".into()));
    }
    if probe.interval > crate::MAX_DURATION {
        return Err(refuse("probe.interval", "at most 1 day".into()));
    }
    if probe.timeout.is_zero() || probe.timeout >= probe.interval {
        return Err(refuse(
            "probe.timeout",
            format!(
                "must be above 0 and below probe.interval ({:?})",
                probe.interval
            ),
        ));
    }
    if !(0.0..1.0).contains(&probe.jitter) {
        return Err(refuse("probe.jitter", "a fraction in [0, 1)".into()));
    }
    if !probe.health_path.starts_with('/') {
        return Err(refuse("probe.health_path", "must start with '/'".into()));
    }
    if probe
        .health_path
        .parse::<http::uri::PathAndQuery>()
        .is_err()
    {
        return Err(refuse("probe.health_path", "not a valid URL path".into()));
    }
    if let Some(host) = &probe.host
        && (host.is_empty() || host.parse::<http::uri::Authority>().is_err())
    {
        return Err(refuse(
            "probe.host",
            "not a host name (a Host header such as static.example.com)".into(),
        ));
    }
    if probe.rise == 0 {
        return Err(refuse("probe.rise", "at least 1".into()));
    }
    if probe.fall == 0 {
        return Err(refuse("probe.fall", "at least 1".into()));
    }
    if steering.changing_ttl > steering.ttl {
        return Err(refuse(
            "steering.changing_ttl",
            format!("at most steering.ttl ({})", steering.ttl),
        ));
    }
    if steering.ttl > i32::MAX as u32 {
        return Err(refuse("steering.ttl", format!("at most {}", i32::MAX)));
    }
    if !(0.0..1.0).contains(&steering.hysteresis) {
        return Err(refuse("steering.hysteresis", "a fraction in [0, 1)".into()));
    }
    if !(steering.ewma > 0.0 && steering.ewma <= 1.0) {
        return Err(refuse("steering.ewma", "a fraction in (0, 1]".into()));
    }
    if !(steering.deviations.is_finite() && steering.deviations >= 0.0) {
        return Err(refuse("steering.deviations", "a number ≥ 0".into()));
    }
    if let Some(weights) = &steering.weights {
        let all = [
            weights.rtt,
            weights.http,
            weights.ftp,
            weights.cpu,
            weights.memory,
            weights.load,
        ];
        if all.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(refuse(
                "steering.weights",
                "weights are finite and not negative".into(),
            ));
        }
    }
    Ok(())
}
