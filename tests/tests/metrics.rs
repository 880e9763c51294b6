//! `GET /metrics` on the admin server of the real `edge` binary, scraped with curl before and
//! after real traffic: kdig answered by the XDP program and by the userspace server, curl
//! through the cache (a miss, then a hit), and a reload.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use edge_tests::{
    curl::curl,
    dig::kdig,
    edge::{EdgeProcess, slowdown},
    origin::Origin,
    test_zone,
    topology::Topology,
};

const ORIGIN_PORT: u16 = 8080;
/// Nothing listens there: connections to it are refused.
const REFUSING_PORT: u16 = 8082;

/// `origin_read_timeout` is 1 s times [`slowdown`]: under TCG (`cargo xtask vm-test`) the test
/// origin took longer than 1 s to start a 9 MiB body.
fn config(topology: &Topology) -> Result<String> {
    let read_timeout = slowdown()?;
    Ok(format!(
        r#"
[xdp]
interface = "{interface}"
pin_root = "{pin_root}"

[dns]
listen = ["{pop}:53"]

[http]
listen = "{pop}:80"
cache_dir = "{cache_dir}"
cache_capacity = "16 MiB"
origin_read_timeout = "{read_timeout}s"

[[http.sites]]
host = "static.example.com"
pool = "origins"

[[http.sites]]
host = "refusing.example.com"
pool = "refusing"

[[pools]]
name = "refusing"
kind = "origin"
[[pools.members]]
name = "r1"
address = "{client}"
http_port = {REFUSING_PORT}

[[pools]]
name = "origins"
kind = "origin"
[pools.probe]
interval = "100ms"
timeout = "50ms"
[[pools.members]]
name = "o1"
address = "{client}"
http_port = {ORIGIN_PORT}
{zone}"#,
        interface = Topology::INTERFACE,
        pin_root = topology.pin_root().display(),
        pop = Topology::POP_V4,
        client = Topology::CLIENT_V4,
        cache_dir = topology.work_dir().join("cache").display(),
        zone = test_zone::zone(),
    ))
}

/// One scrape of the daemon's `/metrics`, from inside the PoP's namespace.
struct Scrape(String);

impl Scrape {
    fn take(topology: &Topology) -> Result<Self> {
        let output = topology
            .pop
            .run("curl", &["-sf", "http://127.0.0.1:9081/metrics"])?;
        Ok(Self(String::from_utf8(output.stdout)?))
    }

    /// The value of the sample `series` (name and labels as exposed), 0 if absent.
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }
}

#[test]
fn counters_move_with_real_traffic() -> Result<()> {
    let topology = Topology::client_and_pop("metrics")?;
    let _origin = Origin::start(
        &topology.client,
        SocketAddr::from((Topology::CLIENT_V4, ORIGIN_PORT)),
    )?;
    let config = topology.write_file("edge.toml", &config(&topology)?)?;
    let mut edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    let before = Scrape::take(&topology)?;
    assert!(before.0.ends_with("# EOF\n"), "{}", before.0);

    let server = format!("@{}", Topology::POP_V4);
    // Answered by XDP; over TCP, MX and for an unknown name by the userspace server.
    for (over, name, rtype, status) in [
        ("+notcp", "www.example.com", "A", "NOERROR"),
        ("+tcp", "www.example.com", "A", "NOERROR"),
        ("+notcp", "example.com", "MX", "NOERROR"),
        ("+notcp", "nope.example.com", "A", "NXDOMAIN"),
    ] {
        let reply = kdig(&topology.client, &[&server, over, name, rtype])?;
        ensure!(reply.status().as_deref() == Some(status), "{}", reply.text);
    }
    let resolve = format!("static.example.com:80:{}", Topology::POP_V4);
    let url = "http://static.example.com/m?cc=max-age=60&size=1000";
    let miss = curl(&topology.client, &["--resolve", &resolve, url])?;
    let hit = curl(&topology.client, &["--resolve", &resolve, url])?;
    assert_eq!((miss.cache(), hit.cache()), ("miss", "hit"));
    // Two objects of 9 MiB in a 16 MiB cache: the second evicts, least recently used first, the
    // small object and the first large one.
    for n in 1..=2 {
        let big = format!("http://static.example.com/big{n}?cc=max-age=60&size=9437184");
        let reply = curl(&topology.client, &["--resolve", &resolve, &big])?;
        assert_eq!((reply.status, reply.cache()), (200, "miss"));
    }
    // The origin answers after origin_read_timeout, three times over; the refusing origin
    // refuses.
    let late = format!(
        "http://static.example.com/late?delay={}",
        3_000 * slowdown()?
    );
    let timeout = curl(&topology.client, &["--resolve", &resolve, &late])?;
    assert_eq!(timeout.status, 504);
    let refusing = format!("refusing.example.com:80:{}", Topology::POP_V4);
    let refused = curl(
        &topology.client,
        &["--resolve", &refusing, "http://refusing.example.com/x"],
    )?;
    assert_eq!(refused.status, 502);
    let position = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(position, "answers published", Duration::from_secs(10))?;

    // Probes run on their own clock: scrape until two more rounds are counted.
    let rounds = r#"edge_probe_rounds_total{pool="origins"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = Scrape::take(&topology).context("second scrape")?;
        if after.value(rounds) >= before.value(rounds) + 2.0 {
            break after;
        }
        ensure!(Instant::now() < deadline, "no probe rounds: {}", after.0);
        std::thread::sleep(Duration::from_millis(20));
    };
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(
        moved(r#"edge_xdp_packets_total{reason="answered"}"#),
        1.0,
        "{}",
        after.0
    );
    assert!(
        moved(r#"edge_xdp_packets_total{reason="not_udp"}"#) >= 1.0,
        "{}",
        after.0
    );
    // The MX query and the unknown name: no such (name, type) in the maps.
    assert_eq!(
        moved(r#"edge_xdp_packets_total{reason="unknown_name"}"#),
        2.0,
        "{}",
        after.0
    );
    for (series, count) in [
        (
            r#"edge_dns_queries_total{transport="udp",rcode="noerror"}"#,
            1.0,
        ),
        (
            r#"edge_dns_queries_total{transport="udp",rcode="nxdomain"}"#,
            1.0,
        ),
        (
            r#"edge_dns_queries_total{transport="tcp",rcode="noerror"}"#,
            1.0,
        ),
    ] {
        assert_eq!(moved(series), count, "{series}: {}", after.0);
    }
    assert_eq!(
        moved(r#"edge_reloads_total{result="applied"}"#),
        1.0,
        "{}",
        after.0
    );
    assert_eq!(after.value("edge_publish_failures_total"), 0.0);
    assert!(after.value("edge_cache_bytes") >= 1000.0, "{}", after.0);
    assert!(
        after.0.contains("\nedge_cache_stale_on_error_total 0\n"),
        "the origin never failed: {}",
        after.0
    );
    for (status, count) in [("miss", 3.0), ("hit", 1.0)] {
        let series = format!("edge_http_responses_total{{cache=\"{status}\"}}");
        assert_eq!(moved(&series), count, "{series}: {}", after.0);
    }
    for (series, count) in [
        ("edge_cache_objects", 1.0),
        ("edge_cache_evictions_total", 2.0),
        (r#"edge_origin_requests_total{result="response"}"#, 3.0),
        (r#"edge_origin_requests_total{result="timeout"}"#, 1.0),
        (r#"edge_origin_requests_total{result="unreachable"}"#, 1.0),
        (r#"edge_origin_requests_total{result="broken"}"#, 0.0),
    ] {
        assert_eq!(moved(series), count, "{series}: {}", after.0);
    }
    // The two 9 MiB bodies were mapped to be sent; the one evicted is unmapped.
    assert!(
        after.value("edge_cache_mapped_bodies") <= 1.0,
        "{}",
        after.0
    );
    assert_eq!(
        after.value(r#"edge_member_up{pool="origins",member="o1"}"#),
        1.0
    );
    assert_eq!(
        after.value(r#"edge_member_selected{pool="origins",member="o1"}"#),
        1.0
    );
    assert!(after.value(r#"edge_member_connect_seconds{pool="origins",member="o1"}"#) > 0.0);
    let probes = moved(r#"edge_probes_total{pool="origins",member="o1",result="healthy"}"#);
    assert!(probes >= 2.0, "{}", after.0);
    assert_eq!(
        moved(r#"edge_probe_connect_seconds_count{pool="origins",member="o1"}"#),
        probes,
        "one connect time per healthy probe: {}",
        after.0
    );
    assert!(
        after.value(r#"edge_probe_http_seconds_bucket{le="+Inf",pool="origins",member="o1"}"#)
            >= probes,
        "{}",
        after.0
    );
    ensure!(edge.stop()?, "edge did not stop cleanly");
    Ok(())
}
