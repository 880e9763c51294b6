//! The status page (`GET /` on the admin server): one self-contained HTML document, tables of
//! the PoPs of the mesh, the pools' members with their health and measurements, and the
//! current selections with why; then SVG plots of the last hour from [`History`]. No script: it
//! reloads itself every sampling interval with a meta refresh.

use std::{fmt::Write as _, time::Instant};

use edge_steer::status::{PoolStatus, Status};

use crate::{
    history::{History, SPAN, Sample},
    metrics::Sources,
    plot::{Series, chart, escape},
};

/// The page, as of now.
pub fn render(sources: &Sources, history: &History, refresh_secs: u64) -> String {
    let status = sources.steering.status();
    let samples = history.samples();
    let mut page = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_secs}">
<title>edge status</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; font-size: 0.9em; }}
th {{ background: #f0f0f0; }}
.up, .live {{ color: #1a7f37; }} .down, .dead {{ color: #c62828; }} .stale, .unchecked {{ color: #b26a00; }}
.plots svg {{ margin: 0 1em 1em 0; border: 1px solid #ddd; }}
</style></head><body>
<h1>edge status</h1>
"#
    );
    pops(&mut page, &status);
    pools(&mut page, &status, "origin", "Origins");
    pools(&mut page, &status, "pop", "PoPs measured from here");
    selections(&mut page, &status);
    plots(&mut page, &samples, sources);
    page.push_str("</body></html>\n");
    page
}

fn pops(page: &mut String, status: &Status) {
    let Some(mesh) = &status.mesh else {
        page.push_str("<h2>PoPs</h2><p id=\"no-mesh\">No <code>[mesh]</code>: this PoP steers on its own measurements.</p>\n");
        return;
    };
    let _ = write!(
        page,
        "<h2>PoPs</h2><table id=\"mesh\"><tr><th>PoP</th><th>state</th><th>data age</th><th>gossip</th></tr>"
    );
    for member in &mesh.members {
        let state = format!("{:?}", member.state).to_lowercase();
        let me = if member.name == mesh.me {
            " (this PoP)"
        } else {
            ""
        };
        let _ = write!(
            page,
            "<tr><td>{}{me}</td><td class=\"{state}\">{state}</td><td>{:.1} s</td><td>{}</td></tr>",
            escape(&member.name),
            member.age_ms as f64 / 1000.0,
            member.gossip,
        );
    }
    let counters = &mesh.counters;
    let _ = writeln!(
        page,
        "</table><p>Gossip: {} datagrams accepted, {} sent; dropped: {} bad MAC, {} stale, {} replayed, {} wrong cluster, {} undecodable.</p>",
        counters.accepted,
        counters.sent,
        counters.bad_mac,
        counters.stale,
        counters.replayed,
        counters.wrong_cluster,
        counters.undecodable,
    );
}

fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.1}"))
}

fn pools(page: &mut String, status: &Status, kind: &str, title: &str) {
    let pools: Vec<&PoolStatus> = status.pools.iter().filter(|p| p.kind == kind).collect();
    if pools.is_empty() {
        return;
    }
    let _ = write!(
        page,
        "<h2>{title}</h2><table id=\"{kind}-pools\"><tr><th>pool</th><th>member</th><th>address</th><th>health</th><th>selected</th><th>score</th><th>rtt ms</th><th>http ms</th><th>cpu %</th><th>load %</th><th>connections</th><th>quorum</th><th>error</th></tr>"
    );
    for pool in pools {
        for member in &pool.members {
            let mut health = member.state.clone();
            if member.drained {
                health += ", drained";
            }
            if member.changing {
                health += ", changing";
            }
            let selected = if pool.selection.contains(&member.address) {
                "yes"
            } else {
                "no"
            };
            let quorum = member.quorum.as_ref().map_or_else(
                || "-".into(),
                |quorum| format!("{} up, {} down", quorum.up, quorum.down),
            );
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{selected}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{quorum}</td><td>{}</td></tr>",
                escape(&pool.name),
                escape(&member.name),
                member.address,
                escape(&member.state),
                escape(&health),
                figure(member.score),
                figure(member.rtt_ms),
                figure(member.http_ms),
                figure(member.cpu),
                figure(member.load),
                member
                    .connections
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                escape(member.error.as_deref().unwrap_or("")),
            );
        }
    }
    page.push_str("</table>\n");
}

fn selections(page: &mut String, status: &Status) {
    page.push_str("<h2>Selections</h2><table id=\"selections\"><tr><th>pool</th><th>kind</th><th>answer</th><th>ttl</th><th>why</th><th>changes</th><th>rounds</th></tr>");
    for pool in &status.pools {
        let answer: Vec<String> = pool.selection.iter().map(ToString::to_string).collect();
        let answer = if answer.is_empty() {
            "none (SERVFAIL)".to_string()
        } else {
            answer.join(", ")
        };
        let why = format!(
            "{}; ranked by {}",
            pool.source,
            if pool.terms.is_empty() {
                "-".to_string()
            } else {
                pool.terms.join(" + ")
            }
        );
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{answer}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&pool.name),
            escape(&pool.kind),
            pool.ttl,
            escape(&why),
            pool.changes,
            pool.rounds,
        );
    }
    page.push_str("</table>\n");
}

/// Seconds before now of a sample.
fn ago(now: Instant, sample: &Sample) -> f64 {
    now.saturating_duration_since(sample.at).as_secs_f64()
}

/// One line per name found in `figures` of the samples.
fn by_name(
    now: Instant,
    samples: &[Sample],
    figures: impl Fn(&Sample) -> &Vec<(String, f64)>,
) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for sample in samples {
        for (name, value) in figures(sample) {
            let point = (ago(now, sample), *value);
            match series.iter_mut().find(|line| line.name == *name) {
                Some(line) => line.points.push(point),
                None => series.push(Series {
                    name: name.clone(),
                    points: vec![point],
                }),
            }
        }
    }
    series
}

/// A rate between consecutive samples, at the later one's time: `value` gives the running
/// totals (numerator, denominator; per second when the denominator is `None`).
fn rates(
    now: Instant,
    samples: &[Sample],
    value: impl Fn(&Sample) -> Option<(u64, Option<u64>)>,
) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|pair| {
            let (before, after) = (value(&pair[0])?, value(&pair[1])?);
            let numerator = after.0.checked_sub(before.0)? as f64;
            let rate = match (before.1, after.1) {
                (Some(below), Some(above)) => {
                    let denominator = above.checked_sub(below)?;
                    (denominator > 0).then(|| numerator / denominator as f64)?
                }
                _ => {
                    let seconds = pair[1].at.duration_since(pair[0].at).as_secs_f64();
                    (seconds > 0.0).then(|| numerator / seconds)?
                }
            };
            Some((ago(now, &pair[1]), rate))
        })
        .collect()
}

fn plots(page: &mut String, samples: &[Sample], sources: &Sources) {
    let now = Instant::now();
    let span = SPAN.as_secs_f64();
    page.push_str("<h2>The last hour</h2><div class=\"plots\">\n");
    let origin_cpu = by_name(now, samples, |sample| &sample.origin_cpu);
    page.push_str(&chart(
        "plot-origin-load",
        "Origin load: CPU",
        "%",
        &origin_cpu,
        span,
        Some(100.0),
    ));
    let pop_rtt = by_name(now, samples, |sample| &sample.pop_rtt);
    page.push_str(&chart(
        "plot-pop-rtt",
        "PoP round trip from here",
        "ms",
        &pop_rtt,
        span,
        None,
    ));
    let pop_cpu = by_name(now, samples, |sample| &sample.pop_cpu);
    page.push_str(&chart(
        "plot-pop-load",
        "PoP load: CPU",
        "%",
        &pop_cpu,
        span,
        Some(100.0),
    ));
    let mut dns = Vec::new();
    if sources.pin_dir.is_some() {
        dns.push(Series {
            name: "XDP".into(),
            points: rates(now, samples, |sample| Some((sample.xdp_answered?, None))),
        });
    }
    dns.push(Series {
        name: "userspace".into(),
        points: rates(now, samples, |sample| {
            Some((sample.userspace_answered, None))
        }),
    });
    page.push_str(&chart(
        "plot-dns-qps",
        "DNS queries answered",
        "per second",
        &dns,
        span,
        None,
    ));
    let hit_ratio = Series {
        name: "hits / (hits + misses)".into(),
        points: rates(now, samples, |sample| {
            let (hits, lookups) = sample.cache?;
            Some((hits, Some(lookups)))
        }),
    };
    page.push_str(&chart(
        "plot-cache-hit-ratio",
        "Cache hit ratio",
        "fraction",
        &[hit_ratio],
        span,
        Some(1.0),
    ));
    page.push_str("</div>\n");
}
