//! What each PoP publishes, and how it sits in chitchat's key-value state: one key per item, its
//! value JSON, so that gossip carries only the items that changed.
//!
//! | key | value |
//! |---|---|
//! | `pop` | [`PopReport`]: the PoP's own load and service metrics |
//! | `origin/<pool>/<member>` | [`OriginReport`]: its measurement of an origin |
//! | `peer/<pop>` | [`PeerReport`]: its measurement of another PoP |
//! | `choice/<pool>` | the member it answers with for an origin pool |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A PoP's own load and service metrics. `round` changes with every publish, so that the
/// others can tell a PoP whose measurements stopped from one whose figures stay the same.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PopReport {
    /// Publishes so far.
    pub round: u64,
    /// Where it serves DNS and HTTP (what a static hostname answers with).
    pub service: Option<std::net::IpAddr>,
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    /// One-minute load average per CPU, percent.
    pub load: Option<f64>,
    /// Its own HTTP response time (a GET of its health path on itself), ms.
    pub http_ms: Option<f64>,
    /// Its own FTP session time, ms.
    pub ftp_ms: Option<f64>,
}

/// One PoP's measurement of an origin (smoothed, as its steering keeps them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OriginReport {
    /// Up by this PoP's own probes (rise and fall applied).
    pub healthy: bool,
    /// Its score by this PoP's steering formula (lower is better); `None` when not a candidate.
    pub score: Option<f64>,
    /// The CPU load the origin's agent reported.
    pub cpu: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub http_ms: Option<f64>,
}

/// One PoP's measurement of another PoP's service address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    pub healthy: bool,
    /// TCP connect time: one round trip, ms.
    pub rtt_ms: Option<f64>,
    /// HTTP GET of the health path, request to end of body, ms.
    pub http_ms: Option<f64>,
}

/// Everything a PoP publishes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub pop: PopReport,
    /// `<pool>/<member>` → its measurement.
    pub origins: BTreeMap<String, OriginReport>,
    /// PoP name → its measurement.
    pub peers: BTreeMap<String, PeerReport>,
    /// Origin pool → the member this PoP answers with.
    pub choices: BTreeMap<String, String>,
}

pub(crate) const POP: &str = "pop";
pub(crate) const ORIGIN: &str = "origin/";
pub(crate) const PEER: &str = "peer/";
pub(crate) const CHOICE: &str = "choice/";

/// Figures are rounded to 0.1 before publishing: finer changes are noise, and every change is
/// a new version that gossip must carry.
fn rounded(value: Option<f64>) -> Option<f64> {
    value.map(|value| (value * 10.0).round() / 10.0)
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("report parts serialise")
}

impl Report {
    /// The key-value pairs of this report, figures rounded.
    pub(crate) fn key_values(&self) -> Vec<(String, String)> {
        let mut pairs = vec![(POP.to_string(), json(&self.pop.rounded()))];
        pairs.extend(
            self.origins
                .iter()
                .map(|(key, origin)| (format!("{ORIGIN}{key}"), json(&origin.rounded()))),
        );
        pairs.extend(
            self.peers
                .iter()
                .map(|(name, peer)| (format!("{PEER}{name}"), json(&peer.rounded()))),
        );
        pairs.extend(
            self.choices
                .iter()
                .map(|(pool, member)| (format!("{CHOICE}{pool}"), member.clone())),
        );
        pairs
    }

    /// The report a PoP's key-value pairs hold; items that do not parse are left out (a PoP
    /// of a newer version may publish more).
    pub(crate) fn from_key_values<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut report = Report::default();
        for (key, value) in pairs {
            if key == POP {
                if let Ok(pop) = serde_json::from_str(value) {
                    report.pop = pop;
                }
            } else if let Some(origin) = key.strip_prefix(ORIGIN) {
                if let Ok(measured) = serde_json::from_str(value) {
                    report.origins.insert(origin.to_string(), measured);
                }
            } else if let Some(peer) = key.strip_prefix(PEER) {
                if let Ok(measured) = serde_json::from_str(value) {
                    report.peers.insert(peer.to_string(), measured);
                }
            } else if let Some(pool) = key.strip_prefix(CHOICE) {
                report.choices.insert(pool.to_string(), value.to_string());
            }
        }
        report
    }
}

impl PopReport {
    fn rounded(&self) -> Self {
        Self {
            round: self.round,
            service: self.service,
            cpu: rounded(self.cpu),
            memory: rounded(self.memory),
            load: rounded(self.load),
            http_ms: rounded(self.http_ms),
            ftp_ms: rounded(self.ftp_ms),
        }
    }
}

impl OriginReport {
    fn rounded(&self) -> Self {
        Self {
            healthy: self.healthy,
            score: rounded(self.score),
            cpu: rounded(self.cpu),
            rtt_ms: rounded(self.rtt_ms),
            http_ms: rounded(self.http_ms),
        }
    }
}

impl PeerReport {
    fn rounded(&self) -> Self {
        Self {
            healthy: self.healthy,
            rtt_ms: rounded(self.rtt_ms),
            http_ms: rounded(self.http_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_key_values() {
        let mut report = Report::default();
        report.pop.round = 3;
        report.pop.cpu = Some(12.34);
        report.origins.insert(
            "shop/o1".into(),
            OriginReport {
                healthy: true,
                score: Some(20.06),
                ..OriginReport::default()
            },
        );
        report.peers.insert(
            "pop2".into(),
            PeerReport {
                healthy: true,
                rtt_ms: Some(4.0),
                http_ms: None,
            },
        );
        report.choices.insert("shop".into(), "o1".into());
        let pairs = report.key_values();
        let back = Report::from_key_values(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(back.pop.cpu, Some(12.3));
        assert_eq!(back.origins["shop/o1"].score, Some(20.1));
        assert_eq!(back.peers["pop2"], report.peers["pop2"]);
        assert_eq!(back.choices, report.choices);
        let junk = [("pop", "{"), ("origin/x/y", "[]"), ("other", "1")];
        assert_eq!(Report::from_key_values(junk.into_iter()), Report::default());
    }
}
