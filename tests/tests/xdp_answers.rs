//! A real DNS client (kdig, dig) in one namespace queries the PoP in another; the `edge` binary
//! answers from XDP. The counters prove the kernel stack never saw the answered queries.

use std::time::Duration;

use anyhow::Result;
use edge_tests::{
    dig::{dig, kdig},
    edge::{EdgeProcess, counters},
    test_zone,
    topology::Topology,
};

/// The PoP's config: XDP on the veth, the shared test zone.
fn config(topology: &Topology) -> String {
    format!(
        r#"
[xdp]
interface = "{interface}"
pin_root = "{pin_root}"
{zone}"#,
        interface = Topology::INTERFACE,
        pin_root = topology.pin_root().display(),
        zone = test_zone::zone(),
    )
}

#[test]
fn kdig_gets_its_answer_from_xdp() -> Result<()> {
    let topology = Topology::client_and_pop("xdp-answer")?;
    let config = topology.write_file("edge.toml", &config(&topology))?;
    let edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    let server = format!("@{}", Topology::POP_V4);

    let reply = kdig(
        &topology.client,
        &[&server, "www.example.com", "A", "+retry=0", "+time=2"],
    )?;
    assert_eq!(reply.status().as_deref(), Some("NOERROR"), "{}", reply.text);
    let flags = reply.flags();
    assert!(
        flags.contains(&"qr".into()) && flags.contains(&"aa".into()),
        "{flags:?}"
    );
    assert!(!flags.contains(&"ra".into()), "RA must be clear: {flags:?}");
    let answers = reply.section("ANSWER");
    let records: Vec<(&str, &str, &str)> = answers
        .iter()
        .map(|fields| (fields[1].as_str(), fields[3].as_str(), fields[4].as_str()))
        .collect();
    assert_eq!(
        records,
        [("60", "A", "192.0.2.10"), ("60", "A", "192.0.2.11")],
        "{}",
        reply.text
    );

    // dig prints the question as it came back: the letter case must be the client's.
    let reply = dig(
        &topology.client,
        &[
            &server,
            "WwW.ExAmple.CoM",
            "A",
            "+noedns",
            "+tries=1",
            "+time=2",
        ],
    )?;
    assert_eq!(
        reply.section("QUESTION")[0][0],
        "WwW.ExAmple.CoM.",
        "{}",
        reply.text
    );
    assert_eq!(reply.section("ANSWER").len(), 2, "{}", reply.text);

    // The apex is answered too; the zone's default TTL applies.
    let reply = kdig(&topology.client, &[&server, "example.com", "A", "+retry=0"])?;
    assert_eq!(reply.section("ANSWER")[0][1], "300", "{}", reply.text);

    // Over IPv6 (UDP checksum computed by the program), with EDNS and DO: our OPT comes back.
    let server6 = format!("@{}", Topology::POP_V6);
    let reply = kdig(
        &topology.client,
        &[
            &server6,
            "www.example.com",
            "A",
            "+edns",
            "+dnssec",
            "+retry=0",
            "+time=2",
        ],
    )?;
    assert_eq!(reply.section("ANSWER").len(), 2, "{}", reply.text);
    assert!(
        reply
            .text
            .contains("Version: 0; flags: do; UDP size: 1232 B"),
        "{}",
        reply.text
    );
    // dig's defaults: EDNS with a cookie option, which we do not echo.
    let reply = dig(
        &topology.client,
        &[&server, "www.example.com", "+tries=1", "+time=2"],
    )?;
    assert_eq!(reply.section("ANSWER").len(), 2, "{}", reply.text);
    assert!(reply.text.contains("udp: 1232"), "{}", reply.text);

    let before = counters(&config)?;
    assert_eq!(before["answered"], 5, "{before:?}");

    // No entry: passed to the kernel stack, where nothing listens, so no answer.
    let reply = kdig(
        &topology.client,
        &[&server, "nope.example.com", "A", "+retry=0", "+time=1"],
    )?;
    assert!(reply.section("ANSWER").is_empty(), "{}", reply.text);
    let after = counters(&config)?;
    assert_eq!(after["answered"], 5, "{after:?}");
    assert!(after["unknown_name"] >= 1, "{after:?}");

    assert!(edge.stop()?, "edge did not exit cleanly");
    assert!(
        !topology.pin_root().join(Topology::INTERFACE).exists(),
        "pins left behind after a clean stop"
    );
    Ok(())
}

#[test]
fn data_plane_outlives_the_daemon_and_is_adopted() -> Result<()> {
    let topology = Topology::client_and_pop("xdp-adopt")?;
    let config = topology.write_file("edge.toml", &config(&topology))?;
    let server = format!("@{}", Topology::POP_V4);
    let query = [
        server.as_str(),
        "www.example.com",
        "A",
        "+short",
        "+retry=0",
        "+time=2",
    ];

    // A crash leaves the pinned program answering.
    EdgeProcess::start(&topology.pop, &config, &[])?.kill()?;
    let reply = kdig(&topology.client, &query)?;
    assert_eq!(reply.text.lines().count(), 2, "{}", reply.text);

    // A new daemon adopts the pins and applies its config.
    let changed = config_text_with_address(&topology, "192.0.2.99");
    let config = topology.write_file("edge.toml", &changed)?;
    let edge = EdgeProcess::start(&topology.pop, &config, &["--keep-data-plane"])?;
    assert!(edge.log().contains("adopted=true"), "{}", edge.log());
    let reply = kdig(&topology.client, &query)?;
    assert_eq!(reply.text.trim(), "192.0.2.99", "{}", reply.text);

    // --keep-data-plane: still answering after a clean stop.
    assert!(edge.stop()?);
    std::thread::sleep(Duration::from_millis(100));
    let reply = kdig(&topology.client, &query)?;
    assert_eq!(reply.text.trim(), "192.0.2.99", "{}", reply.text);

    // `edge detach` takes it down.
    let status = std::process::Command::new(edge_tests::edge::binary())
        .args(["detach", "--config"])
        .arg(&config)
        .status()?;
    assert!(status.success());
    let reply = kdig(&topology.client, &query)?;
    assert!(
        reply.text.trim().is_empty()
            || reply.text.contains("timeout")
            || reply.text.contains("refused"),
        "{}",
        reply.text
    );
    Ok(())
}

#[test]
fn sighup_applies_a_good_config_and_refuses_a_bad_one() -> Result<()> {
    let topology = Topology::client_and_pop("xdp-reload")?;
    let config = topology.write_file("edge.toml", &config(&topology))?;
    let mut edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    let server = format!("@{}", Topology::POP_V4);
    let query = [
        server.as_str(),
        "www.example.com",
        "A",
        "+short",
        "+retry=0",
        "+time=2",
    ];

    topology.write_file(
        "edge.toml",
        &config_text_with_address(&topology, "192.0.2.77"),
    )?;
    let reloaded = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(reloaded, "written=1", Duration::from_secs(10))?;
    assert_eq!(kdig(&topology.client, &query)?.text.trim(), "192.0.2.77");

    topology.write_file("edge.toml", "[xdp]\ninterface = \"eth0\"\nbogus = 1\n")?;
    let refused = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(refused, "reload refused", Duration::from_secs(10))?;
    assert!(
        edge.log_since(refused).contains("unknown field `bogus`"),
        "{}",
        edge.log()
    );
    assert_eq!(kdig(&topology.client, &query)?.text.trim(), "192.0.2.77");
    assert!(edge.stop()?);
    Ok(())
}

fn config_text_with_address(topology: &Topology, address: &str) -> String {
    config(topology).replace(test_zone::WWW_A, &format!("a = [\"{address}\"]"))
}
