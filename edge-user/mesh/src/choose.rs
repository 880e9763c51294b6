//! The rules every PoP applies to its [`View`]: pure functions, so that PoPs holding the same
//! data reach the same answers.
//!
//! - **Origin health by quorum**: an origin is down when a strict majority of the live PoPs
//!   that probe it say so; one PoP's broken path does not move the network, and a PoP that
//!   cannot reach an origin itself still answers what the quorum says.
//! - **The agreed origin** of a pool: among the origins up by quorum, the lowest median of the
//!   scores the PoPs published (ties: the configured order). Hysteresis is applied against a
//!   shared reference, the choice published by the live PoP whose name sorts first, so that
//!   every PoP keeps or moves the same answer.
//! - **The best PoP relative to the asker** (static hostnames): each PoP scores every live PoP
//!   from its own point of view, its own round trip and HTTP time to it (itself at 0 and its
//!   own response time) and that PoP's published load; see [`pop_score`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::view::{Member, View};

/// Votes of the live PoPs on one origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub up: usize,
    pub down: usize,
}

impl Quorum {
    /// Down only when a strict majority of the PoPs that probe it say so; unprobed is down.
    pub fn is_up(&self) -> bool {
        self.up + self.down > 0 && self.down * 2 <= self.up + self.down
    }
}

/// `origin/<pool>/<member>` as the report keys it.
fn origin_key(pool: &str, member: &str) -> String {
    format!("{pool}/{member}")
}

/// How the live PoPs see `member` of `pool`.
pub fn origin_health(view: &View, pool: &str, member: &str) -> Quorum {
    let key = origin_key(pool, member);
    let mut quorum = Quorum::default();
    for report in view.live().filter_map(|pop| pop.report.origins.get(&key)) {
        if report.healthy {
            quorum.up += 1;
        } else {
            quorum.down += 1;
        }
    }
    quorum
}

/// One origin as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginVerdict {
    pub member: String,
    pub quorum: Quorum,
    /// Median of the scores the live PoPs published for it.
    pub score: Option<f64>,
}

/// A pool's agreed answer and the data it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreed {
    /// The member to answer with; `None`: no member is up by quorum (the pool's all-down policy
    /// applies).
    pub choice: Option<String>,
    /// The PoP whose published choice was the reference for hysteresis, if any.
    pub reference: Option<String>,
    pub verdicts: Vec<OriginVerdict>,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The origin of `pool` (its `members` in configured order) every PoP answers with, once they
/// hold the same view. The current answer stays unless the best beats it by more than
/// `hysteresis` (a fraction of its score).
pub fn agreed_origin(view: &View, pool: &str, members: &[String], hysteresis: f64) -> Agreed {
    let verdicts: Vec<OriginVerdict> = members
        .iter()
        .map(|member| {
            let key = origin_key(pool, member);
            OriginVerdict {
                member: member.clone(),
                quorum: origin_health(view, pool, member),
                score: median(
                    view.live()
                        .filter_map(|pop| pop.report.origins.get(&key)?.score)
                        .collect(),
                ),
            }
        })
        .collect();
    let candidates: Vec<&OriginVerdict> = verdicts
        .iter()
        .filter(|verdict| verdict.quorum.is_up())
        .collect();
    // A candidate without a score counts as the worst of the others (see the steering's rule).
    let worst = candidates
        .iter()
        .filter_map(|verdict| verdict.score)
        .reduce(f64::max)
        .unwrap_or(0.0);
    let score = |verdict: &OriginVerdict| verdict.score.unwrap_or(worst);
    let best = candidates.iter().copied().reduce(|best, next| {
        if score(next) < score(best) {
            next
        } else {
            best
        }
    });
    let reference = view
        .live()
        .find_map(|pop| Some((pop.name.clone(), pop.report.choices.get(pool)?.clone())));
    let kept = reference.as_ref().and_then(|(_, current)| {
        candidates
            .iter()
            .copied()
            .find(|verdict| verdict.member == *current)
    });
    let choice = match (kept, best) {
        (Some(kept), Some(best)) if score(best) >= score(kept) * (1.0 - hysteresis) => Some(kept),
        (_, best) => best,
    };
    Agreed {
        choice: choice.map(|verdict| verdict.member.clone()),
        reference: reference.map(|(pop, _)| pop),
        verdicts,
    }
}

/// Weights of the PoP score, as the steering's PoP pools have them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopWeights {
    pub rtt: f64,
    pub http: f64,
    pub ftp: f64,
    pub cpu: f64,
    pub memory: f64,
    pub load: f64,
}

impl Default for PopWeights {
    /// One millisecond weighs as much as one percent of CPU (docs/STEERING.md).
    fn default() -> Self {
        Self {
            rtt: 1.0,
            http: 1.0,
            ftp: 0.5,
            cpu: 1.0,
            memory: 0.5,
            load: 0.0,
        }
    }
}

/// A PoP scored from the asker's point of view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopScore {
    pub name: String,
    pub service: IpAddr,
    /// Lower is better.
    pub score: f64,
}

/// The figures of `pop` seen from `asker`, in [`PopWeights`] order: the asker's round trip and
/// HTTP time to it (to itself: 0 and its own response time), and what `pop` published of its
/// FTP time and load. `None` where unknown, or when the asker finds it unhealthy (the whole).
fn figures(asker: &Member, pop: &Member) -> Option<[Option<f64>; 6]> {
    let own = &pop.report.pop;
    let (rtt, http) = if pop.name == asker.name {
        (Some(0.0), own.http_ms)
    } else {
        let measured = asker.report.peers.get(&pop.name)?;
        if !measured.healthy {
            return None;
        }
        (measured.rtt_ms, measured.http_ms)
    };
    Some([rtt, http, own.ftp_ms, own.cpu, own.memory, own.load])
}

/// Every live PoP named in `among` with a service address that `view.me` finds healthy, scored
/// from its point of view:
///
/// score = rtt·rtt_ms + http·http_ms + ftp·ftp_ms + cpu·cpu_% + memory·memory_% + load·load_%
///
/// A term counts when a weight is set and some PoP has the figure; a PoP without it is scored
/// with the worst the others have. Sorted best first (ties: by name).
pub fn pop_scores(view: &View, weights: &PopWeights, among: &[String]) -> Vec<PopScore> {
    let Some(asker) = view.member(&view.me) else {
        return Vec::new();
    };
    let weights = [
        weights.rtt,
        weights.http,
        weights.ftp,
        weights.cpu,
        weights.memory,
        weights.load,
    ];
    let candidates: Vec<(&Member, IpAddr, [Option<f64>; 6])> = view
        .live()
        .filter(|pop| among.contains(&pop.name))
        .filter_map(|pop| Some((pop, pop.report.pop.service?, figures(asker, pop)?)))
        .collect();
    let worst: Vec<Option<f64>> = (0..weights.len())
        .map(|t| {
            candidates
                .iter()
                .filter_map(|(_, _, figures)| figures[t])
                .reduce(f64::max)
        })
        .collect();
    let mut scores: Vec<PopScore> = candidates
        .iter()
        .map(|(pop, service, figures)| PopScore {
            name: pop.name.clone(),
            service: *service,
            score: (0..weights.len())
                .filter(|&t| weights[t] > 0.0)
                .filter_map(|t| Some(weights[t] * figures[t].or(worst[t])?))
                .sum(),
        })
        .collect();
    scores.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.name.cmp(&b.name)));
    scores
}

/// The PoP of `among` a static hostname answers with when asked at `view.me`: the best score, unless
/// `current` is still a candidate and the best does not beat it by more than `hysteresis`.
pub fn best_pop(
    view: &View,
    weights: &PopWeights,
    among: &[String],
    current: Option<&str>,
    hysteresis: f64,
) -> Option<PopScore> {
    let scores = pop_scores(view, weights, among);
    let best = scores.first()?.clone();
    match current.and_then(|current| scores.iter().find(|pop| pop.name == current)) {
        Some(kept) if best.score >= kept.score * (1.0 - hysteresis) => Some(kept.clone()),
        _ => Some(best),
    }
}

/// The score of `pop` as `view.me` sees it (for `edge status`).
pub fn pop_score(view: &View, weights: &PopWeights, pop: &str) -> Option<f64> {
    pop_scores(view, weights, &[pop.to_string()])
        .into_iter()
        .find(|scored| scored.name == pop)
        .map(|scored| scored.score)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        report::{OriginReport, PeerReport, Report},
        view::State,
    };

    fn member(name: &str, state: State) -> Member {
        Member {
            name: name.into(),
            gossip: "192.0.2.1:7946".parse().unwrap(),
            state,
            age: Duration::ZERO,
            report: Report::default(),
        }
    }

    /// Three live PoPs and a dead one; each reports the origins `o1`, `o2` of pool `shop`.
    /// A PoP's name, state, and its (healthy, score) of `o1` and `o2`.
    type Votes<'a> = (&'a str, State, [(bool, f64); 2]);

    fn view(reports: &[Votes]) -> View {
        View {
            me: "a".into(),
            members: reports
                .iter()
                .map(|(name, state, origins)| {
                    let mut pop = member(name, *state);
                    for (i, (healthy, score)) in origins.iter().enumerate() {
                        pop.report.origins.insert(
                            format!("shop/o{}", i + 1),
                            OriginReport {
                                healthy: *healthy,
                                score: healthy.then_some(*score),
                                ..OriginReport::default()
                            },
                        );
                    }
                    pop
                })
                .collect(),
            ..View::default()
        }
    }

    fn origins() -> Vec<String> {
        vec!["o1".into(), "o2".into()]
    }

    #[test]
    fn quorum_needs_a_majority_to_call_an_origin_down() {
        // b cannot reach o1; a and c can: o1 stays up, and is still the least loaded.
        let mut shared = view(&[
            ("a", State::Live, [(true, 20.0), (true, 50.0)]),
            ("b", State::Live, [(false, 0.0), (true, 50.0)]),
            ("c", State::Live, [(true, 22.0), (true, 52.0)]),
            ("d", State::Dead, [(false, 0.0), (false, 0.0)]),
        ]);
        assert_eq!(
            origin_health(&shared, "shop", "o1"),
            Quorum { up: 2, down: 1 }
        );
        let agreed = agreed_origin(&shared, "shop", &origins(), 0.1);
        assert_eq!(agreed.choice.as_deref(), Some("o1"));
        assert_eq!(agreed.verdicts[0].score, Some(21.0));
        // c loses it too: a majority says down.
        shared.members[2]
            .report
            .origins
            .get_mut("shop/o1")
            .unwrap()
            .healthy = false;
        assert!(!origin_health(&shared, "shop", "o1").is_up());
        let agreed = agreed_origin(&shared, "shop", &origins(), 0.1);
        assert_eq!(agreed.choice.as_deref(), Some("o2"));
        // A tie (one up, one down) is up; no votes is down.
        assert!(Quorum { up: 1, down: 1 }.is_up());
        assert!(!Quorum::default().is_up());
    }

    #[test]
    fn every_pop_agrees_and_hysteresis_follows_the_reference() {
        let mut shared = view(&[
            ("a", State::Live, [(true, 50.0), (true, 48.0)]),
            ("b", State::Live, [(true, 50.0), (true, 47.0)]),
        ]);
        // The reference (a, first by name) answers o1; o2 is not better by 10 %: kept.
        shared.members[0]
            .report
            .choices
            .insert("shop".into(), "o1".into());
        // b's own choice differs; it does not matter.
        shared.members[1]
            .report
            .choices
            .insert("shop".into(), "o2".into());
        for me in ["a", "b"] {
            shared.me = me.into();
            let agreed = agreed_origin(&shared, "shop", &origins(), 0.1);
            assert_eq!(agreed.choice.as_deref(), Some("o1"), "at {me}");
            assert_eq!(agreed.reference.as_deref(), Some("a"));
        }
        // o2 far better: every PoP moves.
        for pop in &mut shared.members {
            pop.report.origins.get_mut("shop/o2").unwrap().score = Some(20.0);
        }
        let agreed = agreed_origin(&shared, "shop", &origins(), 0.1);
        assert_eq!(agreed.choice.as_deref(), Some("o2"));
        // Equal scores and no reference: the configured order.
        let tie = view(&[("a", State::Live, [(true, 30.0), (true, 30.0)])]);
        let agreed = agreed_origin(&tie, "shop", &["o2".into(), "o1".into()], 0.1);
        assert_eq!(agreed.choice.as_deref(), Some("o2"));
    }

    #[test]
    fn stale_and_dead_pops_do_not_vote() {
        let shared = view(&[
            ("a", State::Live, [(true, 50.0), (true, 40.0)]),
            ("b", State::Stale, [(false, 0.0), (false, 0.0)]),
            ("c", State::Dead, [(false, 0.0), (false, 0.0)]),
        ]);
        let agreed = agreed_origin(&shared, "shop", &origins(), 0.1);
        assert_eq!(agreed.choice.as_deref(), Some("o2"));
        assert_eq!(agreed.verdicts[1].quorum, Quorum { up: 1, down: 0 });
    }

    /// PoPs `a`, `b`, `c`; `rtt[i][j]` is i's round trip to j.
    fn pops(rtt: [[f64; 3]; 3], cpu: [f64; 3]) -> View {
        let names = ["a", "b", "c"];
        View {
            me: "a".into(),
            members: names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let mut pop = member(name, State::Live);
                    pop.report.pop.service = Some(format!("192.0.2.{}", i + 1).parse().unwrap());
                    pop.report.pop.cpu = Some(cpu[i]);
                    pop.report.pop.http_ms = Some(1.0);
                    for (j, other) in names.iter().enumerate().filter(|&(j, _)| j != i) {
                        pop.report.peers.insert(
                            other.to_string(),
                            PeerReport {
                                healthy: true,
                                rtt_ms: Some(rtt[i][j]),
                                http_ms: Some(rtt[i][j] + 1.0),
                            },
                        );
                    }
                    pop
                })
                .collect(),
            ..View::default()
        }
    }

    #[test]
    fn each_pop_picks_the_best_from_where_it_stands() {
        // a and b are near each other, c is far from both; a is busy.
        let rtt = [[0.0, 5.0, 80.0], [5.0, 0.0, 80.0], [80.0, 80.0, 0.0]];
        let mut shared = pops(rtt, [60.0, 20.0, 10.0]);
        let weights = PopWeights::default();
        let all = ["a".to_string(), "b".into(), "c".into()];
        let best = |view: &View| best_pop(view, &weights, &all, None, 0.1).unwrap().name;
        // a: itself 0 + 1 + 60 = 61; b: 5 + 6 + 20 = 31; c: 80 + 81 + 10 = 171.
        assert_eq!(best(&shared), "b");
        assert_eq!(pop_score(&shared, &weights, "a"), Some(61.0));
        shared.me = "b".into();
        assert_eq!(best(&shared), "b");
        shared.me = "c".into();
        assert_eq!(best(&shared), "c");
        // b found unhealthy by a: not a candidate for a.
        shared.me = "a".into();
        shared.members[0].report.peers.get_mut("b").unwrap().healthy = false;
        assert_eq!(best(&shared), "a");
        // Hysteresis: a stays with c's answer... only if c is within the margin.
        assert_eq!(
            best_pop(&shared, &weights, &all, Some("c"), 0.1)
                .unwrap()
                .name,
            "a"
        );
        // Only the pool's members count.
        let pool = ["c".to_string()];
        assert_eq!(
            best_pop(&shared, &weights, &pool, None, 0.1).unwrap().name,
            "c"
        );
    }

    #[test]
    fn a_pop_without_a_figure_scores_as_the_worst() {
        let rtt = [[0.0, 5.0, 5.0], [5.0, 0.0, 5.0], [5.0, 5.0, 0.0]];
        let mut shared = pops(rtt, [50.0, 20.0, 90.0]);
        shared.members[1].report.pop.cpu = None;
        let all = ["a".to_string(), "b".into(), "c".into()];
        let scores = pop_scores(&shared, &PopWeights::default(), &all);
        let b = scores.iter().find(|pop| pop.name == "b").unwrap();
        // rtt 5 + http 6 + cpu 90 (the worst of the others).
        assert_eq!(b.score, 101.0);
    }
}
