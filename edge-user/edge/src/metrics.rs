//! `GET /metrics` on the admin server: the Prometheus text format, written with
//! `prometheus-client`. Everything is read at scrape time from where it is already kept (the
//! pinned per-CPU counter map, the steering state, the cache's size) plus the daemon's own
//! counts of reloads and publishes, so serving DNS and HTTP pays nothing for it. docs/OPERATIONS.md
//! lists every metric.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use edge_cache::Cache;
use edge_dns::{message::Transport, server::QueryCounts};
use edge_http::counts::{OriginRequests, Responses};
use edge_mesh::view::State;
use edge_steer::{
    Shared,
    probe_stats::{BUCKETS, Times},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// What the daemon loop counts; everything else is read from its owner at scrape time.
#[derive(Debug, Default)]
pub struct DaemonCounts {
    /// Reloads (SIGHUP) applied.
    pub reloads_applied: AtomicU64,
    /// Reloads refused: the running config stayed.
    pub reloads_refused: AtomicU64,
    /// Publishes to the maps that failed (each is retried).
    pub publish_failures: AtomicU64,
}

impl DaemonCounts {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The sources of the metrics; one per daemon.
#[derive(Clone)]
pub struct Sources {
    pub steering: Arc<Shared>,
    pub cache: Option<Arc<Cache>>,
    /// The HTTP server's responses by cache status, with `[http]`.
    pub responses: Option<Arc<Responses>>,
    /// The HTTP server's requests to origins by result, with `[http]`.
    pub origin_requests: Option<Arc<OriginRequests>>,
    /// Where the data plane's counters are pinned; `None` without `[xdp]`.
    pub pin_dir: Option<PathBuf>,
    pub daemon: Arc<DaemonCounts>,
    pub dns: Arc<QueryCounts>,
}

/// RCODE names (RFC 1035, 2136), lower-case as in the metric's labels; the rest by number.
const RCODES: [&str; 11] = [
    "noerror", "formerr", "servfail", "nxdomain", "notimp", "refused", "yxdomain", "yxrrset",
    "nxrrset", "notauth", "notzone",
];

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

/// The text of one scrape.
pub fn render(sources: &Sources) -> String {
    let mut registry = Registry::with_prefix("edge");
    registry.register_collector(Box::new(sources.clone()));
    let mut text = String::new();
    // Writing to a String cannot fail, and the collector only fails where its writer does.
    let _ = encode(&mut text, &registry);
    text
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, M)>,
    metric_type: MetricType,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A metric without labels.
fn single(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> std::fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

fn seconds(value: f64) -> ConstGauge<f64> {
    ConstGauge::new(value)
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if let Some(counters) = self
            .pin_dir
            .as_ref()
            .and_then(|pin_dir| edge_dataplane::pinned_counters(pin_dir).ok())
            .and_then(|counters| counters.read().ok())
        {
            family(
                &mut encoder,
                "xdp_packets",
                "Packets the XDP program saw, by what it did: answered, rate_limited (dropped), \
                 slipped (a truncated reply), or the reason it passed the packet to the kernel \
                 (summed over CPUs)",
                counters.iter().map(|(reason, count)| {
                    (vec![("reason", reason.name().into())], counter(*count))
                }),
                MetricType::Counter,
            )?;
        }
        self.encode_dns(&mut encoder)?;
        let daemon = &self.daemon;
        family(
            &mut encoder,
            "reloads",
            "Config reloads (SIGHUP) by result: applied, or refused with the running config kept",
            [
                ("applied", &daemon.reloads_applied),
                ("refused", &daemon.reloads_refused),
            ]
            .map(|(result, count)| {
                (
                    vec![("result", result.into())],
                    counter(count.load(Ordering::Relaxed)),
                )
            }),
            MetricType::Counter,
        )?;
        single(
            &mut encoder,
            "publish_failures",
            "Publishes of the answers to the XDP maps that failed (each is retried with backoff)",
            counter(daemon.publish_failures.load(Ordering::Relaxed)),
        )?;
        self.encode_steering(&mut encoder)?;
        if let Some(responses) = &self.responses {
            family(
                &mut encoder,
                "http_responses",
                "HTTP responses by cache status (x-cache): hit, miss (fetched from the origin), \
                 stale, revalidated (a 304 from the origin), pass (not cacheable, handed \
                 through), none (no cache involved: an unknown site, an origin error)",
                responses
                    .read()
                    .map(|(status, count)| (vec![("cache", status.into())], counter(count))),
                MetricType::Counter,
            )?;
        }
        if let Some(cache) = &self.cache {
            single(
                &mut encoder,
                "cache_bytes",
                "Bytes of response bodies the cache holds",
                gauge(i64::try_from(cache.used()).unwrap_or(i64::MAX)),
            )?;
            single(
                &mut encoder,
                "cache_stale_on_error",
                "Stale responses served because the origin failed (RFC 9111 section 4.2.4, \
                 http.stale_on_error)",
                counter(cache.counters.stale_on_error.load(Ordering::Relaxed)),
            )?;
            single(
                &mut encoder,
                "cache_objects",
                "Objects the cache holds (each stored Vary variant counts)",
                gauge(i64::try_from(cache.objects()).unwrap_or(i64::MAX)),
            )?;
            single(
                &mut encoder,
                "cache_evictions",
                "Objects removed to keep the cache within http.cache_capacity, least recently \
                 used first (purges and replacements not counted)",
                counter(cache.counters.evictions.load(Ordering::Relaxed)),
            )?;
            single(
                &mut encoder,
                "cache_mapped_bodies",
                "Large bodies memory-mapped now: those kept for hits (at most \
                 http.mapped_bodies) and those only responses in flight hold",
                gauge(i64::try_from(edge_cache::mapped::count()).unwrap_or(i64::MAX)),
            )?;
        }
        if let Some(requests) = &self.origin_requests {
            family(
                &mut encoder,
                "origin_requests",
                "Requests to origins (fills, revalidations, passes) by result: response (a \
                 response head came), unreachable (connect refused or failed), timeout \
                 (http.origin_connect_timeout or origin_read_timeout), broken (the exchange \
                 failed)",
                requests
                    .read()
                    .map(|(result, count)| (vec![("result", result.into())], counter(count))),
                MetricType::Counter,
            )?;
        }
        self.encode_mesh(&mut encoder)
    }
}

impl Sources {
    /// With `[mesh]`: its members by state, and the gossip datagrams by what became of them.
    fn encode_mesh(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some(mesh) = self.steering.mesh() else {
            return Ok(());
        };
        let view = mesh.view();
        family(
            encoder,
            "mesh_members",
            "PoPs of the mesh as this one sees them, itself included, by state: live (its \
             report counts), stale (gossips, but its report stopped changing), dead (silent)",
            [
                ("live", State::Live),
                ("stale", State::Stale),
                ("dead", State::Dead),
            ]
            .map(|(name, state)| {
                let count = view.members.iter().filter(|m| m.state == state).count();
                (
                    vec![("state", name.into())],
                    gauge(i64::try_from(count).unwrap_or(i64::MAX)),
                )
            }),
            MetricType::Gauge,
        )?;
        let counters = mesh.counters();
        family(
            encoder,
            "mesh_datagrams_received",
            "Gossip datagrams received, by result: accepted (handed to chitchat), or why they \
             were dropped: bad_mac (short, unknown version, or not sealed with mesh.secret), \
             stale (sent outside the replay window), replayed, wrong_cluster, undecodable",
            [
                ("accepted", counters.accepted),
                ("bad_mac", counters.bad_mac),
                ("stale", counters.stale),
                ("replayed", counters.replayed),
                ("wrong_cluster", counters.wrong_cluster),
                ("undecodable", counters.undecodable),
            ]
            .map(|(result, count)| (vec![("result", result.into())], counter(count))),
            MetricType::Counter,
        )?;
        single(
            encoder,
            "mesh_datagrams_sent",
            "Gossip datagrams sent",
            counter(counters.sent),
        )?;
        family(
            encoder,
            "mesh_bytes",
            "Bytes of gossip datagrams by direction (received counts dropped ones too)",
            [
                ("sent", counters.bytes_sent),
                ("received", counters.bytes_received),
            ]
            .map(|(direction, count)| (vec![("direction", direction.into())], counter(count))),
            MetricType::Counter,
        )
    }
}

impl Sources {
    /// The userspace server's queries: NOERROR always, other RCODEs once seen.
    fn encode_dns(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let transports = [(Transport::Udp, "udp"), (Transport::Tcp, "tcp")];
        let mut samples = Vec::new();
        for (transport, name) in transports {
            let answered = self.dns.answered(transport);
            for (rcode, &count) in answered.iter().enumerate() {
                if rcode == 0 || count > 0 {
                    let rcode = RCODES
                        .get(rcode)
                        .map_or_else(|| rcode.to_string(), |name| (*name).to_string());
                    let labels = vec![("transport", name.into()), ("rcode", rcode)];
                    samples.push((labels, counter(count)));
                }
            }
        }
        family(
            encoder,
            "dns_queries",
            "Queries the userspace DNS server answered, by transport and response RCODE",
            samples,
            MetricType::Counter,
        )?;
        family(
            encoder,
            "dns_unanswered",
            "Messages the userspace DNS server left unanswered (too short for a header, or \
             themselves responses), by transport",
            transports.map(|(transport, name)| {
                (
                    vec![("transport", name.into())],
                    counter(self.dns.unanswered(transport)),
                )
            }),
            MetricType::Counter,
        )
    }

    fn encode_steering(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let status = self.steering.status();
        let pool = |name: &str| vec![("pool", name.to_string())];
        family(
            encoder,
            "probe_rounds",
            "Probe rounds of each pool (every member probed once per round)",
            status
                .pools
                .iter()
                .map(|p| (pool(&p.name), counter(p.rounds))),
            MetricType::Counter,
        )?;
        family(
            encoder,
            "selection_changes",
            "Times each pool's answer changed (the first selection included)",
            status
                .pools
                .iter()
                .map(|p| (pool(&p.name), counter(p.changes))),
            MetricType::Counter,
        )?;
        let members = || {
            status.pools.iter().flat_map(|p| {
                p.members.iter().map(move |m| {
                    let labels = vec![("pool", p.name.clone()), ("member", m.name.clone())];
                    (p, m, labels)
                })
            })
        };
        family(
            encoder,
            "member_up",
            "1 while a member is up (its probes pass), 0 while down or not yet checked",
            members().map(|(_, m, labels)| (labels, gauge(i64::from(m.state == "up")))),
            MetricType::Gauge,
        )?;
        family(
            encoder,
            "member_selected",
            "1 while a member's address is in its pool's answer",
            members().map(|(p, m, labels)| {
                let selected = p.selection.contains(&m.address);
                (labels, gauge(i64::from(selected)))
            }),
            MetricType::Gauge,
        )?;
        let probes = self.steering.probe_stats.snapshot();
        let member = |(pool, member): &(String, String)| {
            vec![("pool", pool.clone()), ("member", member.clone())]
        };
        family(
            encoder,
            "probes",
            "Probe rounds of each member by result: healthy (the health GET answered below 400 in \
             time) or failed",
            probes.iter().flat_map(|(key, probes)| {
                [("healthy", probes.healthy), ("failed", probes.failed)].map(|(result, count)| {
                    let mut labels = member(key);
                    labels.push(("result", result.into()));
                    (labels, counter(count))
                })
            }),
            MetricType::Counter,
        )?;
        for (name, help, times) in [
            (
                "probe_connect_seconds",
                "TCP connect time of each member's health GET, every probe",
                (|probes: &edge_steer::probe_stats::MemberProbes| &probes.connect)
                    as fn(&_) -> &Times,
            ),
            (
                "probe_http_seconds",
                "Each member's health GET, request to full response, every probe",
                |probes| &probes.http,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (key, probes) in &probes {
                let times = times(probes);
                let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(times.buckets).collect();
                let labels = member(key);
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(times.sum, times.count, &buckets, None)?;
            }
        }
        for (name, help, value) in [
            (
                "member_connect_seconds",
                "A member's TCP connect time, smoothed (EWMA)",
                (|m: &edge_steer::status::MemberStatus| m.rtt_ms) as fn(&_) -> Option<f64>,
            ),
            (
                "member_http_seconds",
                "A member's health GET, request to full response, smoothed (EWMA)",
                |m| m.http_ms,
            ),
        ] {
            family(
                encoder,
                name,
                help,
                members().filter_map(|(_, m, labels)| Some((labels, seconds(value(m)? / 1000.0)))),
                MetricType::Gauge,
            )?;
        }
        Ok(())
    }
}
