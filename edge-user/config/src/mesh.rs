//! The `[mesh]` table: who this PoP is in the mesh, where it gossips, whom it asks first, and
//! the cluster id and secret that keep other meshes and strangers out.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

/// A PoP's place in the mesh.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// This PoP's name, unique in the cluster; the other PoPs' reports and `edge status` use it.
    pub name: String,
    /// UDP address the gossip listens on.
    pub listen: SocketAddr,
    /// The address the other PoPs reach this one at, when it is not `listen` (NAT, 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// `host:port` of PoPs to ask first (any live PoP will do; names are resolved again every
    /// minute).
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Gossip carrying another cluster id is ignored and counted.
    pub cluster_id: String,
    /// The key of the HMAC-SHA256 over every datagram; at least 16 bytes. Every PoP of the
    /// cluster has the same.
    pub secret: String,
    /// Time between two gossip rounds (each PoP talks to up to three others a round).
    #[serde(default = "default_gossip_interval", with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// A PoP is dead once nothing new was heard from it for this many mean intervals between
    /// its heartbeats (the phi-accrual threshold).
    #[serde(default = "default_phi_threshold")]
    pub phi_threshold: f64,
    /// A live PoP whose report did not change for this long is left out of the choices: its
    /// gossip runs but its measurements stopped.
    #[serde(default = "default_stale_after", with = "humantime_serde")]
    pub stale_after: Duration,
}

/// With the default phi threshold (8) a silent PoP is declared dead about 8 × 100 ms after its
/// last heartbeat reached a peer, plus up to one round: within 1.2 s, under the 2 s that issue
/// 21 asks.
fn default_gossip_interval() -> Duration {
    Duration::from_millis(100)
}

fn default_phi_threshold() -> f64 {
    8.0
}

/// Three missed probe rounds at the default 500 ms interval; with one gossip round of delay a
/// PoP whose measurements stopped is out of the others' choices within 2 s.
fn default_stale_after() -> Duration {
    Duration::from_millis(1500)
}

/// A refused `[mesh]` field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfigError {
    /// The field under `mesh.`.
    pub field: &'static str,
    pub reason: String,
}

impl std::fmt::Display for MeshConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mesh.{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for MeshConfigError {}

/// The shortest secret accepted: 128 bits.
pub const MIN_SECRET_LEN: usize = 16;

impl MeshConfig {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), MeshConfigError> {
        let refuse = |field, reason: &str| {
            Err(MeshConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.name.is_empty() || self.name.contains(['/', ' ']) {
            return refuse("name", "a non-empty name without '/' or spaces");
        }
        if self.cluster_id.is_empty() {
            return refuse("cluster_id", "must not be empty");
        }
        if self.secret.len() < MIN_SECRET_LEN {
            return refuse("secret", "at least 16 bytes");
        }
        if self.listen.port() == 0 {
            return refuse("listen", "needs a port: the other PoPs gossip to it");
        }
        if self.advertise.is_none() && self.listen.ip().is_unspecified() {
            return refuse(
                "advertise",
                "needed when listen is a wildcard address: the others cannot reach 0.0.0.0",
            );
        }
        if self.gossip_interval < Duration::from_millis(10)
            || self.gossip_interval > Duration::from_secs(10)
        {
            return refuse("gossip_interval", "between 10ms and 10s");
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold >= 1.0) {
            return refuse("phi_threshold", "a number ≥ 1");
        }
        if self.stale_after <= self.gossip_interval {
            return refuse("stale_after", "longer than gossip_interval");
        }
        Ok(())
    }

    /// Where the other PoPs send gossip to.
    pub fn advertise(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name = \"pop1\"\nlisten = \"192.0.2.1:7946\"\ncluster_id = \"shop\"\nsecret = \"0123456789abcdef\"\n";

    #[test]
    fn defaults_and_refusals() {
        let config: MeshConfig = toml::from_str(BASE).unwrap();
        assert_eq!(config.check(), Ok(()));
        assert_eq!(config.gossip_interval, Duration::from_millis(100));
        assert_eq!(config.advertise(), "192.0.2.1:7946".parse().unwrap());
        for (line, field) in [
            ("secret = \"short\"", "secret"),
            ("name = \"a/b\"", "name"),
            ("cluster_id = \"\"", "cluster_id"),
            ("listen = \"0.0.0.0:7946\"", "advertise"),
            ("gossip_interval = \"1ms\"", "gossip_interval"),
            ("phi_threshold = 0.5", "phi_threshold"),
            ("stale_after = \"50ms\"", "stale_after"),
        ] {
            let key = line.split(' ').next().unwrap();
            let text: String = BASE
                .lines()
                .filter(|kept| !kept.starts_with(key))
                .map(|kept| format!("{kept}\n"))
                .collect::<String>()
                + line;
            let config: MeshConfig = toml::from_str(&text).unwrap();
            assert_eq!(config.check().unwrap_err().field, field, "{line}");
        }
        assert!(toml::from_str::<MeshConfig>(&format!("{BASE}nmae = 1\n")).is_err());
    }
}
