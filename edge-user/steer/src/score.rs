//! Smoothed measurements and the score that ranks members (lower is better):
//!
//! score = (rtt·rtt_ms + http·http_ms + ftp·ftp_ms + cpu·cpu_% + memory·memory_% +
//!          load·load_per_cpu_%) / member weight
//!
//! each measurement an exponentially weighted moving average. A term counts only when every
//! candidate has its measurement (an origin without an agent has no CPU figure); when no term
//! with a weight is left, members are ranked by HTTP response time.

use std::time::Duration;

use edge_config::steering::ScoreWeights;

use crate::probe::Sample;

/// An exponentially weighted moving average; empty until the first value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma(Option<f64>);

impl Ewma {
    /// Folds `value` in with weight `alpha`.
    pub fn add(&mut self, value: f64, alpha: f64) {
        self.0 = Some(match self.0 {
            Some(average) => alpha * value + (1.0 - alpha) * average,
            None => value,
        });
    }

    pub fn get(&self) -> Option<f64> {
        self.0
    }
}

/// A member's smoothed measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Smoothed {
    pub rtt_ms: Ewma,
    pub http_ms: Ewma,
    pub ftp_ms: Ewma,
    pub cpu: Ewma,
    pub memory: Ewma,
    pub load: Ewma,
    /// The latest report's count, not smoothed (shown, not scored).
    pub connections: Option<u64>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Smoothed {
    /// Folds in one probe round. Times of a failed probe are left out; a missing load report
    /// clears the load, so that a member whose agent stopped is not ranked on old figures.
    pub fn update(&mut self, sample: &Sample, alpha: f64) {
        for (average, value) in [
            (&mut self.rtt_ms, sample.rtt),
            (&mut self.http_ms, sample.http),
            (&mut self.ftp_ms, sample.ftp),
        ] {
            if let Some(value) = value {
                average.add(ms(value), alpha);
            }
        }
        match &sample.load {
            Some(report) => {
                self.cpu.add(report.cpu, alpha);
                self.memory.add(report.memory, alpha);
                self.load.add(report.load_per_cpu(), alpha);
                self.connections = Some(report.connections);
            }
            None => {
                self.cpu = Ewma::default();
                self.memory = Ewma::default();
                self.load = Ewma::default();
                self.connections = None;
            }
        }
    }

    /// The terms of the formula: weight and measurement.
    fn terms(&self, weights: &ScoreWeights) -> [(f64, Option<f64>); 6] {
        [
            (weights.rtt, self.rtt_ms.get()),
            (weights.http, self.http_ms.get()),
            (weights.ftp, self.ftp_ms.get()),
            (weights.cpu, self.cpu.get()),
            (weights.memory, self.memory.get()),
            (weights.load, self.load.get()),
        ]
    }
}

/// The scores of `members` (smoothed measurements and member weight), in order.
pub fn scores(members: &[(&Smoothed, f64)], weights: &ScoreWeights) -> Vec<f64> {
    let terms: Vec<[(f64, Option<f64>); 6]> = members
        .iter()
        .map(|(smoothed, _)| smoothed.terms(weights))
        .collect();
    let counts = |t: usize| {
        terms
            .iter()
            .all(|member| member[t].0 > 0.0 && member[t].1.is_some())
    };
    let active: Vec<usize> = (0..6).filter(|&t| counts(t)).collect();
    members
        .iter()
        .zip(&terms)
        .map(|((smoothed, weight), member)| {
            let sum: f64 = if active.is_empty() {
                smoothed.http_ms.get().unwrap_or(0.0)
            } else {
                active
                    .iter()
                    .map(|&t| member[t].0 * member[t].1.unwrap_or(0.0))
                    .sum()
            };
            sum / weight
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::LoadReport;

    fn sample(http_ms: u64, cpu: Option<f64>) -> Sample {
        Sample {
            healthy: true,
            rtt: Some(Duration::from_millis(1)),
            http: Some(Duration::from_millis(http_ms)),
            load: cpu.map(|cpu| LoadReport {
                cpu,
                cpus: 2,
                load: [1.0, 0.0, 0.0],
                memory: 40.0,
                connections: 3,
            }),
            ..Sample::default()
        }
    }

    #[test]
    fn ewma_smooths() {
        let mut average = Ewma::default();
        average.add(10.0, 0.5);
        assert_eq!(average.get(), Some(10.0));
        average.add(20.0, 0.5);
        assert_eq!(average.get(), Some(15.0));
    }

    #[test]
    fn formula_and_fallback() {
        let (mut a, mut b) = (Smoothed::default(), Smoothed::default());
        a.update(&sample(30, Some(10.0)), 1.0);
        b.update(&sample(10, Some(60.0)), 1.0);
        assert_eq!(a.load.get(), Some(50.0));
        let origin = ScoreWeights::ORIGIN;
        assert_eq!(scores(&[(&a, 1.0), (&b, 1.0)], &origin), [10.0, 60.0]);
        assert_eq!(scores(&[(&a, 1.0), (&b, 4.0)], &origin), [10.0, 15.0]);
        let pop = ScoreWeights::POP;
        // rtt 1 + http 30 + cpu 10 + memory 0.5·40 (no FTP figures: the term is left out).
        assert_eq!(scores(&[(&a, 1.0)], &pop), [61.0]);
        // b's agent went away: no CPU for every candidate, so response time decides.
        b.update(&sample(10, None), 1.0);
        assert_eq!(scores(&[(&a, 1.0), (&b, 1.0)], &origin), [30.0, 10.0]);
    }
}
