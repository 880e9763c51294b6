//! The last hour of what the status page plots, one sample per `admin.history_interval`, in a
//! ring that never grows past an hour's worth: origin and PoP figures as steering last measured
//! them, and the running totals of DNS answers and cache lookups, whose differences between
//! samples are the rates.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use edge_dns::message::Transport;

use crate::metrics::Sources;

/// How far back the plots go.
pub const SPAN: Duration = Duration::from_secs(3600);

/// What one sample holds.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// `pool/member` of origin pools → CPU %, as its agent last reported (smoothed).
    pub origin_cpu: Vec<(String, f64)>,
    /// `pool/member` of PoP pools → connect time (one round trip), ms, smoothed.
    pub pop_rtt: Vec<(String, f64)>,
    /// `pool/member` of PoP pools → CPU %, smoothed.
    pub pop_cpu: Vec<(String, f64)>,
    /// Replies the XDP program sent so far; `None` without `[xdp]`.
    pub xdp_answered: Option<u64>,
    /// Queries the userspace DNS server answered so far.
    pub userspace_answered: u64,
    /// Cache hits (fresh, stale or revalidated) and lookups that could have hit (those and
    /// misses) so far; `None` without `[http]`.
    pub cache: Option<(u64, u64)>,
}

impl Sample {
    /// Everything as it is now.
    pub fn take(sources: &Sources) -> Self {
        let status = sources.steering.status();
        let mut sample = Self {
            at: Instant::now(),
            origin_cpu: Vec::new(),
            pop_rtt: Vec::new(),
            pop_cpu: Vec::new(),
            xdp_answered: sources
                .pin_dir
                .as_ref()
                .and_then(|pin_dir| edge_dataplane::pinned_counters(pin_dir).ok())
                .and_then(|counters| counters.read().ok())
                .map(|counters| {
                    counters
                        .iter()
                        .filter(|(reason, _)| reason.name() == "answered")
                        .map(|(_, count)| *count)
                        .sum()
                }),
            userspace_answered: [Transport::Udp, Transport::Tcp]
                .iter()
                .map(|&transport| sources.dns.answered(transport).iter().sum::<u64>())
                .sum(),
            cache: sources.responses.as_ref().map(|responses| {
                let counts = responses.read();
                let count = |wanted: &[&str]| -> u64 {
                    counts
                        .iter()
                        .filter(|(status, _)| wanted.contains(status))
                        .map(|(_, count)| count)
                        .sum()
                };
                let hits = count(&["hit", "stale", "revalidated"]);
                (hits, hits + count(&["miss"]))
            }),
        };
        for pool in &status.pools {
            for member in &pool.members {
                let name = format!("{}/{}", pool.name, member.name);
                match pool.kind.as_str() {
                    "origin" => {
                        if let Some(cpu) = member.cpu {
                            sample.origin_cpu.push((name, cpu));
                        }
                    }
                    _ => {
                        if let Some(rtt) = member.rtt_ms {
                            sample.pop_rtt.push((name.clone(), rtt));
                        }
                        if let Some(cpu) = member.cpu {
                            sample.pop_cpu.push((name, cpu));
                        }
                    }
                }
            }
        }
        sample
    }
}

/// The samples of the last hour, oldest first.
#[derive(Debug)]
pub struct History {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    samples: VecDeque<Sample>,
    interval: Duration,
    capacity: usize,
}

/// Samples in an hour at `interval`.
fn capacity(interval: Duration) -> usize {
    let capacity = (SPAN.as_secs_f64() / interval.as_secs_f64().max(0.001)).ceil() as usize;
    capacity.clamp(2, 3600)
}

impl History {
    /// Room for an hour of samples taken every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            ring: Mutex::new(Ring {
                samples: VecDeque::with_capacity(capacity(interval)),
                interval,
                capacity: capacity(interval),
            }),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Samples every `interval` from the next one on (a reload); keeps an hour's worth.
    pub fn set_interval(&self, interval: Duration) {
        let mut ring = self.ring();
        ring.interval = interval;
        ring.capacity = capacity(interval);
        while ring.samples.len() > ring.capacity {
            ring.samples.pop_front();
        }
    }

    pub fn interval(&self) -> Duration {
        self.ring().interval
    }

    /// Adds `sample`, dropping the oldest beyond an hour's worth.
    pub fn record(&self, sample: Sample) {
        let mut ring = self.ring();
        while ring.samples.len() >= ring.capacity {
            ring.samples.pop_front();
        }
        ring.samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.ring().samples.iter().cloned().collect()
    }

    pub fn capacity(&self) -> usize {
        self.ring().capacity
    }
}

/// Takes a sample now and then every interval of `history`, until aborted.
pub async fn sample(history: std::sync::Arc<History>, sources: Sources) {
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        history.record(Sample::take(&sources));
        next += history.interval();
        // Behind by more than an interval (a stalled runtime): from now, not a burst.
        next = next.max(tokio::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(at: Instant) -> Sample {
        Sample {
            at,
            origin_cpu: Vec::new(),
            pop_rtt: Vec::new(),
            pop_cpu: Vec::new(),
            xdp_answered: None,
            userspace_answered: 0,
            cache: None,
        }
    }

    #[test]
    fn holds_an_hour_and_no_more() {
        let history = History::new(Duration::from_secs(10));
        assert_eq!(history.capacity(), 360);
        let start = Instant::now();
        for n in 0..1000u64 {
            let mut sample = empty(start + Duration::from_secs(10 * n));
            sample.userspace_answered = n;
            history.record(sample);
        }
        let samples = history.samples();
        assert_eq!(samples.len(), 360);
        assert_eq!(samples[0].userspace_answered, 640);
        assert_eq!(samples[359].userspace_answered, 999);
        history.set_interval(Duration::from_secs(60));
        assert_eq!(history.capacity(), 60);
        assert_eq!(history.samples().len(), 60);
        assert_eq!(history.samples()[0].userspace_answered, 940);
    }
}
