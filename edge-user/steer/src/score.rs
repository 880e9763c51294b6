//! Smoothed measurements and the score that ranks members (lower is better):
//!
//! score = (rtt·rtt_ms + http·http_ms + ftp·ftp_ms + cpu·cpu_% + memory·memory_% +
//!          load·load_per_cpu_%) / member weight
//!
//! each measurement an exponentially weighted moving average. A term with a weight counts when
//! at least one candidate has its measurement; a candidate without it (an origin whose agent
//! stopped) is scored with the worst value the others have, so that a missing figure neither
//! helps it nor changes how the others rank. When no term with a weight is left, members are
//! ranked by HTTP response time.
//!
//! Each figure also keeps its mean deviation (as TCP's RTTVAR does), so that the selection can
//! tell a member that is better from one whose figure only swings below the others'.

use std::time::Duration;

use edge_config::steering::ScoreWeights;

use crate::probe::Sample;

/// Gains of the mean deviation: it follows a larger difference at once (as RFC 6298's RTTVAR,
/// 1/4) and forgets slowly, so that a figure that swings keeps its deviation through a run of
/// similar samples (a member alternating 10 and 50 ms has runs of five 10s).
const DEVIATION_RISE: f64 = 0.25;
const DEVIATION_FALL: f64 = 1.0 / 16.0;

/// An exponentially weighted moving average and its mean deviation; empty until the first value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    average: Option<f64>,
    deviation: f64,
}

impl Ewma {
    /// Folds `value` in with weight `alpha`; the deviation with [`DEVIATION_RISE`] or
    /// [`DEVIATION_FALL`].
    pub fn add(&mut self, value: f64, alpha: f64) {
        self.average = Some(match self.average {
            Some(average) => {
                let difference = (value - average).abs();
                let gain = if difference > self.deviation {
                    DEVIATION_RISE
                } else {
                    DEVIATION_FALL
                };
                self.deviation += gain * (difference - self.deviation);
                alpha * value + (1.0 - alpha) * average
            }
            None => value,
        });
    }

    pub fn get(&self) -> Option<f64> {
        self.average
    }

    /// Mean absolute difference between a new value and the average before it.
    pub fn deviation(&self) -> f64 {
        self.deviation
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

    /// The terms of the formula, in [`TERMS`] order: weight and measurement.
    fn terms(&self, weights: &ScoreWeights) -> [(f64, &Ewma); 6] {
        [
            (weights.rtt, &self.rtt_ms),
            (weights.http, &self.http_ms),
            (weights.ftp, &self.ftp_ms),
            (weights.cpu, &self.cpu),
            (weights.memory, &self.memory),
            (weights.load, &self.load),
        ]
    }
}

/// The names of the formula's terms, as `edge status` shows them.
pub const TERMS: [&str; 6] = ["rtt", "http", "ftp", "cpu", "memory", "load"];

/// The fallback when no term with a weight has a figure.
pub const FALLBACK: &str = "http (fallback)";

/// The candidates' scores and what they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Per candidate, in order: its score and that score's mean deviation.
    pub scores: Vec<(f64, f64)>,
    /// The terms that counted ([`TERMS`] names, or [`FALLBACK`]).
    pub terms: Vec<&'static str>,
}

/// Scores `members` (smoothed measurements and member weight).
pub fn scores(members: &[(&Smoothed, f64)], weights: &ScoreWeights) -> Ranking {
    let terms: Vec<[(f64, &Ewma); 6]> = members
        .iter()
        .map(|(smoothed, _)| smoothed.terms(weights))
        .collect();
    // Per term: the worst figure among the candidates that have one; `None` when none has.
    let worst = |t: usize| {
        terms
            .iter()
            .filter_map(|member| member[t].1.get())
            .reduce(f64::max)
    };
    let mut active: Vec<(usize, f64)> = (0..TERMS.len())
        .filter(|&t| weights_of(&terms, t) > 0.0)
        .filter_map(|t| Some((t, worst(t)?)))
        .collect();
    let mut names: Vec<&'static str> = active.iter().map(|&(t, _)| TERMS[t]).collect();
    let fallback = active.is_empty();
    if fallback {
        if let Some(worst) = worst(1) {
            active.push((1, worst));
        }
        names = vec![FALLBACK];
    }
    let scores = members
        .iter()
        .zip(&terms)
        .map(|((_, weight), member)| {
            let (sum, deviation) = active.iter().fold((0.0, 0.0), |(sum, dev), &(t, worst)| {
                let (term_weight, figure) = member[t];
                let term_weight = if fallback { 1.0 } else { term_weight };
                match figure.get() {
                    Some(value) => (
                        sum + term_weight * value,
                        dev + term_weight * figure.deviation(),
                    ),
                    None => (sum + term_weight * worst, dev),
                }
            });
            (sum / weight, deviation / weight)
        })
        .collect();
    Ranking {
        scores,
        terms: names,
    }
}

/// The weight of term `t` (the same for every member).
fn weights_of(terms: &[[(f64, &Ewma); 6]], t: usize) -> f64 {
    terms.first().map_or(0.0, |member| member[t].0)
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
    fn ewma_smooths_and_keeps_its_deviation() {
        let mut average = Ewma::default();
        average.add(10.0, 0.5);
        assert_eq!((average.get(), average.deviation()), (Some(10.0), 0.0));
        average.add(20.0, 0.5);
        assert_eq!((average.get(), average.deviation()), (Some(15.0), 2.5));
        average.add(15.0, 0.5);
        assert_eq!(average.deviation(), 2.5 - 2.5 / 16.0);
    }

    #[test]
    fn formula_and_fallback() {
        let (mut a, mut b) = (Smoothed::default(), Smoothed::default());
        a.update(&sample(30, Some(10.0)), 1.0);
        b.update(&sample(10, Some(60.0)), 1.0);
        assert_eq!(a.load.get(), Some(50.0));
        let only = |ranking: Ranking| -> Vec<f64> { ranking.scores.iter().map(|s| s.0).collect() };
        let origin = ScoreWeights::ORIGIN;
        assert_eq!(only(scores(&[(&a, 1.0), (&b, 1.0)], &origin)), [10.0, 60.0]);
        assert_eq!(only(scores(&[(&a, 1.0), (&b, 4.0)], &origin)), [10.0, 15.0]);
        let pop = ScoreWeights::POP;
        // rtt 1 + http 30 + cpu 10 + memory 0.5·40 (no FTP figures: the term is left out).
        let ranking = scores(&[(&a, 1.0)], &pop);
        assert_eq!(only(ranking.clone()), [61.0]);
        assert_eq!(ranking.terms, ["rtt", "http", "cpu", "memory"]);
        // No candidate has a load report: response time decides.
        let (mut c, mut d) = (Smoothed::default(), Smoothed::default());
        c.update(&sample(30, None), 1.0);
        d.update(&sample(10, None), 1.0);
        let ranking = scores(&[(&c, 1.0), (&d, 1.0)], &origin);
        assert_eq!(
            (only(ranking.clone()), ranking.terms),
            (vec![30.0, 10.0], vec![FALLBACK])
        );
    }

    #[test]
    fn a_missing_figure_scores_as_the_worst_and_leaves_the_others_ranked() {
        // Issue 21: one agent stopped made the pool rank by response time, and the most loaded
        // origin (the fastest to answer) won.
        let mut members = [
            Smoothed::default(),
            Smoothed::default(),
            Smoothed::default(),
        ];
        for (member, (http, cpu)) in
            members
                .iter_mut()
                .zip([(5, Some(20.0)), (4, None), (1, Some(80.0))])
        {
            member.update(&sample(http, cpu), 1.0);
        }
        let refs: Vec<(&Smoothed, f64)> = members.iter().map(|m| (m, 1.0)).collect();
        let ranking = scores(&refs, &ScoreWeights::ORIGIN);
        assert_eq!(ranking.terms, ["cpu"]);
        assert_eq!(ranking.scores, [(20.0, 0.0), (80.0, 0.0), (80.0, 0.0)]);
    }
}
