//! One pool's steering state: per member its health and smoothed measurements, and the answer
//! chosen from them with hysteresis, or the all-down policy's.

use std::net::IpAddr;

use edge_common::MAX_ANSWER_RECORDS;
use edge_config::{
    PoolConfig,
    steering::{AllDown, ScoreWeights},
};

use super::score::{Smoothed, scores};
use crate::{health::Health, probe::Sample};

/// A member as steering sees it.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub address: IpAddr,
    pub weight: f64,
    pub health: Health,
    pub smoothed: Smoothed,
    /// The latest probe's error, if any.
    pub error: Option<String>,
    /// Its score in the latest selection; `None` when it was not a candidate.
    pub score: Option<f64>,
}

/// A pool's members and its current answer.
#[derive(Debug, Clone)]
pub struct Pool {
    pub config: PoolConfig,
    pub members: Vec<Member>,
    /// The answer: best first, at most one address of each family unless the all-down policy
    /// answers with more; empty means SERVFAIL.
    pub selection: Vec<IpAddr>,
    pub ttl: u32,
    /// The last answer made while a member was up.
    last_good: Option<Vec<IpAddr>>,
    /// Selections that differed from the one before.
    pub changes: u64,
    pub rounds: u64,
    /// Rounds the short TTL stays in force after a member changed state (or was drained).
    settling: u32,
}

impl Pool {
    pub fn new(config: &PoolConfig) -> Self {
        Self {
            members: config
                .members
                .iter()
                .map(|member| Member {
                    name: member.name.clone(),
                    address: member.address,
                    weight: member.weight,
                    health: Health::new(),
                    smoothed: Smoothed::default(),
                    error: None,
                    score: None,
                })
                .collect(),
            config: config.clone(),
            selection: Vec::new(),
            ttl: config.steering.ttl,
            last_good: None,
            changes: 0,
            rounds: 0,
            settling: 0,
        }
    }

    /// Counts one probe round: `samples` in member order.
    pub fn record(&mut self, samples: &[Sample]) {
        let probe = &self.config.probe;
        let alpha = self.config.steering.ewma;
        self.settling = self.settling.saturating_sub(1);
        let mut changed = false;
        for (member, sample) in self.members.iter_mut().zip(samples) {
            changed |= member.health.record(sample.healthy, probe.rise, probe.fall);
            member.smoothed.update(sample, alpha);
            member.error = sample.error.clone();
        }
        if changed {
            self.settle();
        }
        self.rounds += 1;
    }

    /// Drains or undrains the member called `name`; false if there is none.
    pub fn drain(&mut self, name: &str, drained: bool) -> bool {
        match self.members.iter_mut().find(|member| member.name == name) {
            Some(member) => {
                if member.health.drained != drained {
                    member.health.drained = drained;
                    self.settle();
                }
                true
            }
            None => false,
        }
    }

    /// Keeps the short TTL for as many rounds as a state change needs to be confirmed, so that
    /// resolvers come back soon while members flip.
    fn settle(&mut self) {
        self.settling = self.config.probe.rise.max(self.config.probe.fall);
    }

    /// Chooses the answer from the current state; returns whether it changed.
    pub fn select(&mut self) -> bool {
        let steering = &self.config.steering;
        let weights: ScoreWeights = steering.weights(self.config.kind);
        let candidates: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].health.serves())
            .collect();
        let smoothed: Vec<(&Smoothed, f64)> = candidates
            .iter()
            .map(|&i| (&self.members[i].smoothed, self.members[i].weight))
            .collect();
        let candidate_scores = scores(&smoothed, &weights);
        for member in &mut self.members {
            member.score = None;
        }
        for (&i, &score) in candidates.iter().zip(&candidate_scores) {
            self.members[i].score = Some(score);
        }
        let next = if candidates.is_empty() {
            match steering.all_down {
                AllDown::AnswerAll => self.every_member(),
                AllDown::KeepLastGood => self
                    .last_good
                    .clone()
                    .unwrap_or_else(|| self.every_member()),
                AllDown::Servfail => Vec::new(),
            }
        } else {
            let mut chosen: Vec<(IpAddr, f64)> = [true, false]
                .into_iter()
                .filter_map(|v4| {
                    let family: Vec<(IpAddr, f64)> = candidates
                        .iter()
                        .zip(&candidate_scores)
                        .map(|(&i, &score)| (self.members[i].address, score))
                        .filter(|(address, _)| address.is_ipv4() == v4)
                        .collect();
                    let current = self
                        .selection
                        .iter()
                        .find(|address| address.is_ipv4() == v4)
                        .copied();
                    choose(current, &family, steering.hysteresis)
                })
                .collect();
            chosen.sort_by(|a, b| a.1.total_cmp(&b.1));
            let next: Vec<IpAddr> = chosen.into_iter().map(|(address, _)| address).collect();
            self.last_good = Some(next.clone());
            next
        };
        let changing = self.settling > 0
            || self
                .members
                .iter()
                .any(|member| member.health.is_changing());
        self.ttl = if changing {
            steering.changing_ttl
        } else {
            steering.ttl
        };
        let changed = next != self.selection;
        if changed {
            self.changes += 1;
            self.selection = next;
        }
        changed
    }

    /// Every member not drained, in configured order, within the fast path's limit per family.
    fn every_member(&self) -> Vec<IpAddr> {
        let mut v4 = 0;
        let mut v6 = 0;
        self.members
            .iter()
            .filter(|member| !member.health.drained)
            .map(|member| member.address)
            .filter(|address| {
                let count = if address.is_ipv4() { &mut v4 } else { &mut v6 };
                *count += 1;
                *count <= MAX_ANSWER_RECORDS
            })
            .collect()
    }
}

/// The member to answer with among `candidates` (address, score; lower is better): the best,
/// unless `current` is still a candidate and the best does not beat it by more than `margin`.
/// Ties go to the earlier candidate (configured order).
fn choose(
    current: Option<IpAddr>,
    candidates: &[(IpAddr, f64)],
    margin: f64,
) -> Option<(IpAddr, f64)> {
    let best = candidates
        .iter()
        .copied()
        .reduce(|best, next| if next.1 < best.1 { next } else { best })?;
    match current.and_then(|current| candidates.iter().find(|(address, _)| *address == current)) {
        Some(&kept) if best.1 >= kept.1 * (1.0 - margin) => Some(kept),
        _ => Some(best),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use edge_config::{MemberConfig, PoolKind};

    use crate::agent::LoadReport;

    fn pool(kind: PoolKind, addresses: &[&str]) -> Pool {
        let members = addresses
            .iter()
            .enumerate()
            .map(|(i, address)| MemberConfig {
                name: format!("m{i}"),
                address: address.parse().unwrap(),
                http_port: 80,
                agent_port: Some(9100),
                ftp_port: None,
                weight: 1.0,
            })
            .collect();
        let mut config = PoolConfig {
            name: "p".into(),
            kind,
            members,
            probe: Default::default(),
            steering: Default::default(),
        };
        config.probe.rise = 2;
        config.probe.fall = 2;
        config.steering.ewma = 1.0;
        Pool::new(&config)
    }

    fn loaded(cpu: f64) -> Sample {
        Sample {
            healthy: true,
            rtt: Some(Duration::from_millis(1)),
            http: Some(Duration::from_millis(5)),
            load: Some(LoadReport {
                cpu,
                cpus: 1,
                ..LoadReport::default()
            }),
            ..Sample::default()
        }
    }

    fn down() -> Sample {
        Sample::default()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn least_loaded_wins_and_hysteresis_holds_near_ties() {
        let mut pool = pool(PoolKind::Origin, &["192.0.2.1", "192.0.2.2"]);
        assert!(pool.selection.is_empty());
        pool.record(&[loaded(50.0), loaded(20.0)]);
        assert!(pool.select());
        assert_eq!(pool.selection, [ip("192.0.2.2")]);
        // 45 does not beat 50 by more than 10 %: the answer stays.
        pool.record(&[loaded(45.0), loaded(50.0)]);
        assert!(!pool.select());
        assert_eq!(pool.selection, [ip("192.0.2.2")]);
        pool.record(&[loaded(40.0), loaded(50.0)]);
        assert!(pool.select());
        assert_eq!(pool.selection, [ip("192.0.2.1")]);
        assert_eq!(pool.changes, 2);
    }

    #[test]
    fn falls_after_fall_failures_and_returns_after_rise_successes() {
        let mut pool = pool(PoolKind::Origin, &["192.0.2.1", "192.0.2.2"]);
        pool.record(&[loaded(10.0), loaded(50.0)]);
        pool.select();
        pool.record(&[down(), loaded(50.0)]);
        pool.select();
        assert_eq!(
            pool.selection,
            [ip("192.0.2.1")],
            "one failure is not a fall"
        );
        assert_eq!(pool.ttl, pool.config.steering.changing_ttl);
        pool.record(&[down(), loaded(50.0)]);
        pool.select();
        assert_eq!(pool.selection, [ip("192.0.2.2")]);
        pool.record(&[loaded(10.0), loaded(50.0)]);
        pool.select();
        assert_eq!(
            pool.selection,
            [ip("192.0.2.2")],
            "one success is not a rise"
        );
        pool.record(&[loaded(10.0), loaded(50.0)]);
        pool.select();
        assert_eq!(pool.selection, [ip("192.0.2.1")]);
        assert_eq!(pool.ttl, pool.config.steering.changing_ttl);
        for _ in 0..2 {
            pool.record(&[loaded(10.0), loaded(50.0)]);
            pool.select();
        }
        assert_eq!(pool.ttl, pool.config.steering.ttl);
    }

    #[test]
    fn all_down_policies() {
        for (policy, expected) in [
            (AllDown::Servfail, vec![]),
            (AllDown::AnswerAll, vec![ip("192.0.2.1"), ip("2001:db8::2")]),
            (AllDown::KeepLastGood, vec![ip("2001:db8::2")]),
        ] {
            let mut pool = pool(PoolKind::Origin, &["192.0.2.1", "2001:db8::2"]);
            pool.config.steering.all_down = policy;
            pool.config.probe.fall = 1;
            pool.record(&[down(), loaded(10.0)]);
            pool.select();
            assert_eq!(pool.selection, [ip("2001:db8::2")]);
            pool.record(&[down(), down()]);
            pool.select();
            assert_eq!(pool.selection, expected, "{policy:?}");
        }
    }

    #[test]
    fn one_answer_per_family_and_drain() {
        let mut pool = pool(
            PoolKind::Origin,
            &["192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2"],
        );
        pool.record(&[loaded(40.0), loaded(30.0), loaded(20.0), loaded(50.0)]);
        pool.select();
        assert_eq!(pool.selection, [ip("192.0.2.2"), ip("2001:db8::1")]);
        assert!(pool.drain("m2", true));
        assert!(!pool.drain("nobody", true));
        pool.select();
        assert_eq!(pool.selection, [ip("2001:db8::1"), ip("192.0.2.1")]);
    }
}
