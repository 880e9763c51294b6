//! The daemon as an operator runs it: roles that need no fast path (an HTTP-only PoP, a DNS
//! server without XDP) started with `ip netns exec`, where /sys/fs/bpf is not mounted; what a
//! stop leaves behind; and config values the daemon cannot act on, refused.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Result, ensure};
use edge_tests::{
    curl::curl,
    dig::kdig,
    edge::{EdgeProcess, START_TIMEOUT, binary},
    origin::Origin,
    test_zone,
    topology::Topology,
};

const ORIGIN_PORT: u16 = 8080;

/// A cache-only PoP: a pool, a site and `[http]`; no `[xdp]`, no zones.
fn http_only(topology: &Topology) -> String {
    format!(
        r#"
[[pools]]
name = "origins"
kind = "origin"
[[pools.members]]
name = "o1"
address = "{client}"
http_port = {ORIGIN_PORT}

[http]
listen = "{pop}:80"
cache_dir = "{cache_dir}"
cache_capacity = "16 MiB"

[[http.sites]]
host = "static.example.com"
pool = "origins"
"#,
        client = Topology::CLIENT_V4,
        pop = Topology::POP_V4,
        cache_dir = topology.work_dir().join("cache").display(),
    )
}

#[test]
fn http_only_pop_runs_without_bpffs() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-http-only")?;
    let origin = Origin::start(
        &topology.client,
        SocketAddr::from((Topology::CLIENT_V4, ORIGIN_PORT)),
    )?;
    let config = topology.write_file("edge.toml", &http_only(&topology))?;
    let edge = EdgeProcess::spawn(
        topology.pop.exec_command(binary()),
        &config,
        &[],
        "daemon ready",
        START_TIMEOUT,
    )?;
    let resolve = format!("static.example.com:80:{}", Topology::POP_V4);
    let url = "http://static.example.com/a?cc=max-age=60";
    let first = curl(&topology.client, &["--resolve", &resolve, url])?;
    let second = curl(&topology.client, &["--resolve", &resolve, url])?;
    assert_eq!((first.status, first.cache()), (200, "miss"), "{first:?}");
    assert_eq!((second.status, second.cache()), (200, "hit"), "{second:?}");
    assert_eq!(origin.count("/a?cc=max-age=60"), 1);
    let log = edge.log();
    assert!(log.contains("fast_path=false"), "{log}");
    assert!(!log.contains("XDP program attached"), "{log}");
    ensure!(edge.stop()?, "edge did not stop cleanly");
    Ok(())
}

#[test]
fn dns_server_without_the_fast_path_runs_without_bpffs() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-dns-only")?;
    let text = format!(
        "[dns]\nlisten = [\"{}:53\"]\n{}",
        Topology::POP_V4,
        test_zone::zone()
    );
    let config = topology.write_file("edge.toml", &text)?;
    let edge = EdgeProcess::spawn(
        topology.pop.exec_command(binary()),
        &config,
        &[],
        "daemon ready",
        START_TIMEOUT,
    )?;
    let server = format!("@{}", Topology::POP_V4);
    for over in ["+notcp", "+tcp"] {
        let reply = kdig(&topology.client, &[&server, over, "www.example.com", "A"])?;
        assert_eq!(reply.status().as_deref(), Some("NOERROR"), "{}", reply.text);
        let answers = reply.section("ANSWER");
        assert_eq!(answers.len(), 2, "{}", reply.text);
    }
    let log = edge.log();
    assert!(log.contains("fast_path=false"), "{log}");
    assert!(!log.contains("XDP program attached"), "{log}");
    ensure!(edge.stop()?, "edge did not stop cleanly");
    Ok(())
}

#[test]
fn stop_removes_the_pin_root() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-pin-root")?;
    // A pin root the daemon creates, as /sys/fs/bpf/edge is on a fresh host.
    let pin_root = topology.pin_root().join("edge");
    let config = topology.write_file(
        "edge.toml",
        &fast_path_config(&pin_root, &test_zone::zone()),
    )?;
    let edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    let pin_dir = pin_root.join(Topology::INTERFACE);
    assert!(pin_dir.join("link").exists());
    ensure!(edge.stop()?, "edge did not stop cleanly");
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    assert!(!pin_root.exists(), "{} left behind", pin_root.display());
    Ok(())
}

/// The program is loaded and its maps created while the zones are built: a config refused
/// then leaves nothing behind, neither pins nor a program on the interface.
#[test]
fn a_config_refused_at_start_leaves_no_pins() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-refused-start")?;
    let pin_root = topology.pin_root().join("edge");
    let zone = format!(
        "{}[[zones.names]]\nname = \"twice\"\na = [\"192.0.2.1\"]\n\
         [[zones.names]]\nname = \"TWICE\"\na = [\"192.0.2.2\"]\n",
        test_zone::zone()
    );
    let config = topology.write_file("edge.toml", &fast_path_config(&pin_root, &zone))?;
    let output = topology
        .pop
        .command(binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(!output.status.success(), "started: {said}");
    ensure!(said.contains("already defined by"), "{said}");
    assert!(!pin_root.exists(), "{} left behind", pin_root.display());
    let link = topology
        .pop
        .run("ip", &["-d", "link", "show", Topology::INTERFACE])?;
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("prog/xdp"), "{link}");
    Ok(())
}

/// `edge check` refuses `config` naming `field` and `reason`.
fn refused(config: &Path, field: &str, reason: &str) -> Result<()> {
    let output = std::process::Command::new(binary())
        .args(["check", "--config"])
        .arg(config)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "accepted: {stderr}");
    let expected = format!("{}: {field}: ", config.display());
    ensure!(
        stderr.contains(&expected) && stderr.contains(reason),
        "wanted {expected:?} and {reason:?} in {stderr:?}"
    );
    Ok(())
}

#[test]
fn durations_past_a_day_are_refused_at_load_and_at_reload() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-durations")?;
    let pool = "[[pools]]\nname = \"p\"\nkind = \"origin\"\n[[pools.members]]\nname = \"a\"\naddress = \"192.0.2.1\"\n";
    for (extra, field) in [
        (
            format!("{pool}[pools.probe]\ninterval = \"2days\"\n"),
            "pools[0].probe.interval",
        ),
        (
            "[dns]\ntcp_idle_timeout = \"30days\"\n".to_string(),
            "dns.tcp_idle_timeout",
        ),
    ] {
        let config = topology.write_file("bad.toml", &extra)?;
        refused(&config, field, "at most 1 day")?;
    }
    // A running daemon keeps probing on its interval when a reload names one too long.
    let good = format!(
        "{pool}[pools.probe]\ninterval = \"50ms\"\ntimeout = \"20ms\"\n{}",
        http_only(&topology)
    );
    let config = topology.write_file("edge.toml", &good)?;
    let mut edge = EdgeProcess::spawn(
        topology.pop.exec_command(binary()),
        &config,
        &[],
        "daemon ready",
        START_TIMEOUT,
    )?;
    std::fs::write(&config, good.replace("\"50ms\"", "\"2days\""))?;
    let position = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(
        position,
        "pools[0].probe.interval: at most 1 day",
        Duration::from_secs(10),
    )?;
    // Back to the running config's text, which `edge status` reads for the admin address.
    std::fs::write(&config, &good)?;
    let rounds = |status: edge_steer::status::Status| {
        status
            .pools
            .iter()
            .find(|pool| pool.name == "p")
            .map(|pool| pool.rounds)
    };
    let before = rounds(edge_tests::edge::status(&topology.pop, &config)?);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = rounds(edge_tests::edge::status(&topology.pop, &config)?);
        if now > before.map(|rounds| rounds + 3) {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "pool p stopped probing at {now:?} rounds"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(edge.stop()?, "edge did not stop cleanly");
    Ok(())
}

/// `[dns]` and the admin address with the test zone, the XDP fast path on.
fn listeners(topology: &Topology, dns: &str, admin: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{}\"\npin_root = \"{}\"\n[admin]\nlisten = \"{admin}\"\n[dns]\n{dns}\n{}",
        Topology::INTERFACE,
        topology.pin_root().display(),
        test_zone::zone()
    )
}

/// One scrape of `/metrics` at `admin` inside the PoP's namespace; `None` if nothing answers.
fn scrape(topology: &Topology, admin: &str) -> Option<String> {
    let output = topology
        .pop
        .command("curl")
        .args(["-sf", "--max-time", "5", &format!("http://{admin}/metrics")])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether a TCP connection from the client to `address`, left idle, is closed within 2 s
/// once a second one from the same client opens.
fn taken_over(topology: &Topology, address: SocketAddr) -> Result<bool> {
    use std::io::Read as _;
    topology.client.run_inside(|| -> Result<bool> {
        let mut first = std::net::TcpStream::connect(address)?;
        // The server has admitted the first before the second comes.
        std::thread::sleep(Duration::from_millis(200));
        let _second = std::net::TcpStream::connect(address)?;
        first.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut byte = [0; 1];
        Ok(match first.read(&mut byte) {
            // Closed, or reset.
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        })
    })?
}

/// SIGHUP moves the DNS server to new addresses with new limits, the fast path with it, and
/// the admin server to a new address, validated first: a reload naming an address that cannot
/// be bound is refused whole, and everything stays where it was.
#[test]
fn dns_addresses_limits_and_the_admin_address_reload_on_sighup() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-listeners")?;
    let pop = Topology::POP_V4;
    let first = format!("listen = [\"{pop}:53\"]");
    let config =
        topology.write_file("edge.toml", &listeners(&topology, &first, "127.0.0.1:9081"))?;
    let mut edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    let ask = |port: u16, over: &str| -> Result<Option<String>> {
        let server = format!("@{pop}");
        let port = format!("-p{port}");
        let reply = kdig(
            &topology.client,
            &[
                &server,
                &port,
                over,
                "+retry=0",
                "+time=1",
                "www.example.com",
                "A",
            ],
        )?;
        Ok(reply.status())
    };
    assert_eq!(ask(53, "+notcp")?.as_deref(), Some("NOERROR"));
    assert_eq!(ask(53, "+tcp")?.as_deref(), Some("NOERROR"));
    // With the default limit, a second connection leaves the first alone.
    assert!(!taken_over(&topology, SocketAddr::from((pop, 53)))?);
    let answered = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("edge_xdp_packets_total{reason=\"answered\"} "))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    let before = answered(&scrape(&topology, "127.0.0.1:9081").expect("admin on 9081"));

    let moved = format!("listen = [\"{pop}:5353\"]\ntcp_max_clients_per_source = 1");
    std::fs::write(&config, listeners(&topology, &moved, "127.0.0.1:9082"))?;
    let position = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(position, "reload applied", Duration::from_secs(10))?;
    assert_eq!(ask(5353, "+tcp")?.as_deref(), Some("NOERROR"));
    assert_eq!(ask(5353, "+notcp")?.as_deref(), Some("NOERROR"));
    assert_eq!(ask(53, "+notcp")?, None, "port 53 still answers");
    assert_eq!(ask(53, "+tcp")?, None, "port 53 still answers over TCP");
    let metrics = scrape(&topology, "127.0.0.1:9082").expect("admin moved to 9082");
    assert_eq!(
        answered(&metrics) - before,
        1.0,
        "the UDP query to port 5353 was answered by XDP"
    );
    assert!(scrape(&topology, "127.0.0.1:9081").is_none(), "9081 closed");
    // One connection per source now: the second takes the idle first one's slot.
    assert!(taken_over(&topology, SocketAddr::from((pop, 5353)))?);

    // An address this host does not have cannot be bound: refused whole.
    let unbindable = format!("listen = [\"{pop}:5353\", \"192.0.2.99:53\"]");
    std::fs::write(&config, listeners(&topology, &unbindable, "127.0.0.1:9083"))?;
    let position = edge.signal(libc::SIGHUP)?;
    let refused = edge.wait_for_log(position, "reload refused", Duration::from_secs(10))?;
    let log = edge.log_since(position);
    assert!(log.contains("dns.listen[1] = 192.0.2.99:53"), "{log}");
    assert!(!edge.log_since(refused).contains("reload applied"));
    assert!(
        scrape(&topology, "127.0.0.1:9083").is_none(),
        "admin not moved"
    );
    let metrics = scrape(&topology, "127.0.0.1:9082").expect("admin stays on 9082");
    assert!(
        metrics.contains("edge_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    assert_eq!(ask(5353, "+tcp")?.as_deref(), Some("NOERROR"));
    ensure!(edge.stop()?, "edge did not stop cleanly");
    Ok(())
}

/// A stop that comes while the first answers are still being published (here, as soon as the
/// program is attached) is acted on once they are: edge exits cleanly and removes its pins,
/// instead of the signal's default action ending it with the program left attached.
#[test]
fn a_stop_during_the_first_publish_is_clean() -> Result<()> {
    let topology = Topology::client_and_pop("daemon-early-stop")?;
    let mut zone = String::from("[[zones]]\napex = \"example.com\"\n");
    for i in 0..40_000 {
        zone += &format!(
            "[[zones.names]]\nname = \"n{i}\"\na = [\"10.{}.{}.10\"]\n",
            i / 256 % 256,
            i % 256
        );
    }
    let config = topology.write_file("edge.toml", &fast_path_config(topology.pin_root(), &zone))?;
    let edge = EdgeProcess::spawn(
        topology.pop.command(binary()),
        &config,
        &[],
        "XDP program attached",
        START_TIMEOUT,
    )?;
    ensure!(edge.stop()?, "edge did not stop cleanly");
    let pin_dir = topology.pin_root().join(Topology::INTERFACE);
    assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    Ok(())
}

/// A DNS server with the fast path on the PoP's interface, pinned under `pin_root`.
fn fast_path_config(pin_root: &Path, zone: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{}\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n{zone}",
        Topology::INTERFACE,
        pin_root.display(),
        Topology::POP_V4,
    )
}
