//! Every probe's outcome, per member, for the daemon's metrics: how many passed and failed,
//! and its connect and health-GET times in fixed buckets (a histogram each). The smoothed
//! values steering decides on are in [`crate::status`]; these are the raw ones.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use edge_config::PoolConfig;

use crate::probe::Sample;

/// Upper bounds of the time buckets, in seconds; the last one is every time.
pub const BUCKETS: [f64; 13] = [
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    f64::MAX,
];

/// Times seen, counted per bucket (not cumulative).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Times {
    pub buckets: [u64; BUCKETS.len()],
    /// Seconds.
    pub sum: f64,
    pub count: u64,
}

impl Times {
    fn observe(&mut self, time: Duration) {
        let seconds = time.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len() - 1);
        self.buckets[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// One member's probes so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberProbes {
    pub healthy: u64,
    pub failed: u64,
    /// TCP connect of the health GET.
    pub connect: Times,
    /// Health GET, request to full response.
    pub http: Times,
}

/// Probes of every member, keyed by (pool, member).
#[derive(Debug, Default)]
pub struct ProbeStats(Mutex<BTreeMap<(String, String), MemberProbes>>);

impl ProbeStats {
    /// Counts one round of `pool`: `samples` in member order.
    pub fn record(&self, pool: &PoolConfig, samples: &[Sample]) {
        let mut members = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (member, sample) in pool.members.iter().zip(samples) {
            let probes = members
                .entry((pool.name.clone(), member.name.clone()))
                .or_default();
            if sample.healthy {
                probes.healthy += 1;
            } else {
                probes.failed += 1;
            }
            if let Some(rtt) = sample.rtt {
                probes.connect.observe(rtt);
            }
            if let Some(http) = sample.http {
                probes.http.observe(http);
            }
        }
    }

    /// Forgets the members that `pools` no longer has.
    pub fn retain(&self, pools: &[PoolConfig]) {
        let mut members = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        members.retain(|(pool, member), _| {
            pools.iter().any(|config| {
                config.name == *pool && config.members.iter().any(|m| m.name == *member)
            })
        });
    }

    /// Every member's probes, by (pool, member).
    pub fn snapshot(&self) -> BTreeMap<(String, String), MemberProbes> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_fall_in_their_bucket() {
        let mut times = Times::default();
        times.observe(Duration::from_micros(300));
        times.observe(Duration::from_millis(1));
        times.observe(Duration::from_secs(60));
        assert_eq!(times.buckets[0], 1);
        assert_eq!(times.buckets[1], 1, "a bound is inclusive");
        assert_eq!(times.buckets[BUCKETS.len() - 1], 1);
        assert_eq!(times.count, 3);
        assert!((times.sum - 60.0013).abs() < 1e-9);
    }
}
