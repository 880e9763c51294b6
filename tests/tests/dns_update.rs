//! Dynamic updates (RFC 2136) with TSIG (RFC 8945), sent by the real clients, Knot's
//! `knsupdate` and BIND's `nsupdate`, to a PoP in a namespace: answers checked with kdig before
//! and after, from the XDP program (UDP, its answered counter) and from the userspace server
//! (TCP); the refusals (no key, a wrong secret, an unknown key, a zone the key may not change, a
//! failed prerequisite, a steered name); and what an update becomes across a reload, a restart
//! and a change of the zone's source.

use std::{io::Write as _, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};
use edge_tests::{
    dig::kdig,
    edge::{EdgeProcess, counters},
    test_zone,
    topology::Topology,
};

const KEY: &str = "ddns-key";
const SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";

fn config(topology: &Topology, zone: &str) -> String {
    format!(
        r#"
[xdp]
interface = "{interface}"
pin_root = "{pin_root}"

[dns]
listen = ["{pop}:53"]
journal_dir = "{journal}"
[[dns.update_keys]]
name = "{KEY}"
algorithm = "hmac-sha256"
secret = "{SECRET}"
zones = ["example.com"]
{zone}
[[zones]]
apex = "other.example"
"#,
        interface = Topology::INTERFACE,
        pin_root = topology.pin_root().display(),
        pop = Topology::POP_V4,
        journal = topology.work_dir().join("journal").display(),
    )
}

/// Runs `knsupdate` in the client's namespace with `commands` (one a line, `send` added) and
/// returns what it printed.
fn knsupdate(topology: &Topology, key: Option<&str>, commands: &str) -> Result<String> {
    let mut script = format!("server {} 53\n", Topology::POP_V4);
    if let Some(key) = key {
        script += &format!("key {key}\n");
    }
    script += commands;
    script += "\nsend\nanswer\n";
    run_with_input(topology, "knsupdate", &[], &script)
}

fn run_with_input(
    topology: &Topology,
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<String> {
    let mut child = topology
        .client
        .command("timeout")
        .args(["20", program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The status knsupdate printed for the update's response.
fn status(output: &str) -> &str {
    output
        .lines()
        .find_map(|line| line.split("status: ").nth(1))
        .and_then(|rest| rest.split([';', ',']).next())
        .unwrap_or("no response")
        .trim()
}

fn signed() -> Option<&'static str> {
    Some("hmac-sha256:ddns-key:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=")
}

/// The answer records (data fields) or the status for `name` and `qtype`, over UDP (answered
/// by XDP when the maps hold it) or TCP (the userspace server).
fn ask(topology: &Topology, name: &str, qtype: &str, tcp: bool) -> Result<Vec<String>> {
    let server = format!("@{}", Topology::POP_V4);
    let mut args = vec![server.as_str(), name, qtype, "+retry=1", "+time=2"];
    if tcp {
        args.push("+tcp");
    }
    let reply = kdig(&topology.client, &args)?;
    Ok(reply
        .section("ANSWER")
        .iter()
        .map(|fields| fields[4..].join(" "))
        .chain(reply.status().filter(|status| status != "NOERROR"))
        .collect())
}

/// `ask` over UDP, checking that the XDP program answered it.
fn ask_xdp(topology: &Topology, config: &Path, name: &str) -> Result<Vec<String>> {
    let before = counters(config)?["answered"];
    let answer = ask(topology, name, "A", false)?;
    anyhow::ensure!(
        counters(config)?["answered"] == before + 1,
        "{name} was not answered by XDP: {answer:?}"
    );
    Ok(answer)
}

fn serial(topology: &Topology) -> Result<String> {
    let soa = ask(topology, "example.com", "SOA", true)?;
    Ok(soa[0].split(' ').nth(2).context("serial")?.to_string())
}

#[test]
fn signed_updates_change_both_paths_and_the_rest_are_refused() -> Result<()> {
    let topology = Topology::client_and_pop("dns-update")?;
    let path = topology.write_file("edge.toml", &config(&topology, &test_zone::zone()))?;
    let edge = EdgeProcess::start(&topology.pop, &path, &[])?;
    assert_eq!(
        ask_xdp(&topology, &path, "www.example.com")?,
        ["192.0.2.10", "192.0.2.11"]
    );
    assert_eq!(ask(&topology, "new.example.com", "A", true)?, ["NXDOMAIN"]);
    assert_eq!(serial(&topology)?, "1");

    let added = knsupdate(
        &topology,
        signed(),
        "zone example.com.\nupdate add new.example.com. 60 A 192.0.2.77",
    )?;
    assert_eq!(status(&added), "NOERROR", "{added}");
    assert_eq!(
        ask_xdp(&topology, &path, "new.example.com")?,
        ["192.0.2.77"]
    );
    assert_eq!(
        ask(&topology, "new.example.com", "A", true)?,
        ["192.0.2.77"]
    );
    assert_eq!(serial(&topology)?, "2");

    // An RRset replaced: deleted and added in one update, the answer changes at once.
    let replaced = knsupdate(
        &topology,
        signed(),
        "zone example.com.\nupdate delete www.example.com. A\nupdate add www.example.com. 60 A 192.0.2.88",
    )?;
    assert_eq!(status(&replaced), "NOERROR", "{replaced}");
    assert_eq!(
        ask_xdp(&topology, &path, "www.example.com")?,
        ["192.0.2.88"]
    );
    // A name deleted: the maps no longer answer it, the userspace server says NXDOMAIN.
    let deleted = knsupdate(
        &topology,
        signed(),
        "zone example.com.\nupdate delete mail.example.com.",
    )?;
    assert_eq!(status(&deleted), "NOERROR", "{deleted}");
    assert_eq!(
        ask(&topology, "mail.example.com", "A", false)?,
        ["NXDOMAIN"]
    );
    assert_eq!(ask(&topology, "mail.example.com", "A", true)?, ["NXDOMAIN"]);
    assert_eq!(serial(&topology)?, "4");

    // BIND's client, another TSIG implementation.
    let bind = run_with_input(
        &topology,
        "nsupdate",
        &[
            "-y",
            "hmac-sha256:ddns-key:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
        ],
        &format!(
            "server {} 53\nzone example.com.\nupdate add bind.example.com. 30 A 192.0.2.99\nsend\nanswer\n",
            Topology::POP_V4
        ),
    )?;
    assert_eq!(status(&bind), "NOERROR", "{bind}");
    assert_eq!(
        ask_xdp(&topology, &path, "bind.example.com")?,
        ["192.0.2.99"]
    );

    // Refusals: nothing changes, the serial stays.
    let change = "zone example.com.\nupdate add refused.example.com. 60 A 192.0.2.1";
    let unsigned = knsupdate(&topology, None, change)?;
    assert_eq!(status(&unsigned), "NOTAUTH", "{unsigned}");
    let wrong = knsupdate(
        &topology,
        Some("hmac-sha256:ddns-key:d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmdr"),
        change,
    )?;
    assert_eq!(status(&wrong), "BADSIG", "{wrong}");
    let unknown = knsupdate(
        &topology,
        Some("hmac-sha256:another-key:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="),
        change,
    )?;
    assert_eq!(status(&unknown), "BADKEY", "{unknown}");
    let other_zone = knsupdate(
        &topology,
        signed(),
        "zone other.example.\nupdate add a.other.example. 60 A 192.0.2.1",
    )?;
    assert_eq!(status(&other_zone), "BADKEY", "{other_zone}");
    let prerequisite = knsupdate(
        &topology,
        signed(),
        "zone example.com.\nprereq nxdomain new.example.com.\nupdate add refused.example.com. 60 A 192.0.2.1",
    )?;
    assert_eq!(status(&prerequisite), "YXDOMAIN", "{prerequisite}");
    let position = edge.log_position();
    let steered = knsupdate(
        &topology,
        signed(),
        "zone example.com.\nupdate add shop.example.com. 60 A 192.0.2.1",
    )?;
    assert_eq!(status(&steered), "REFUSED", "{steered}");
    assert!(
        edge.log_since(position).contains("is steered"),
        "{}",
        edge.log_since(position)
    );
    assert_eq!(
        ask(&topology, "refused.example.com", "A", true)?,
        ["NXDOMAIN"]
    );
    assert_eq!(serial(&topology)?, "5");
    assert!(edge.stop()?, "edge did not exit cleanly");
    Ok(())
}

#[test]
fn updates_outlive_reloads_and_restarts_until_the_source_changes() -> Result<()> {
    let topology = Topology::client_and_pop("dns-update-journal")?;
    let path = topology.write_file("edge.toml", &config(&topology, &test_zone::zone()))?;
    let mut edge = EdgeProcess::start(&topology.pop, &path, &[])?;
    let added = knsupdate(
        &topology,
        signed(),
        "zone example.com.\nupdate add kept.example.com. 60 A 192.0.2.66",
    )?;
    assert_eq!(status(&added), "NOERROR", "{added}");

    // A reload of an unchanged config keeps the zone, and with it the update.
    let reloaded = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(reloaded, "reload applied", Duration::from_secs(20))?;
    assert_eq!(
        ask_xdp(&topology, &path, "kept.example.com")?,
        ["192.0.2.66"]
    );

    // A restart replays the journal over the zone as the config builds it.
    assert!(edge.stop()?, "edge did not exit cleanly");
    edge = EdgeProcess::start(&topology.pop, &path, &[])?;
    assert!(edge.log().contains("journal replayed"), "{}", edge.log());
    assert_eq!(
        ask_xdp(&topology, &path, "kept.example.com")?,
        ["192.0.2.66"]
    );
    assert_eq!(
        ask(&topology, "kept.example.com", "A", true)?,
        ["192.0.2.66"]
    );
    assert_eq!(serial(&topology)?, "2");

    // The zone's source changes: it is rebuilt from it, and the update is dropped, logged.
    let changed = test_zone::zone().replace(
        "name = \"mail\"\na = [\"192.0.2.25\"]",
        "name = \"mail\"\na = [\"192.0.2.26\"]",
    );
    assert_ne!(changed, test_zone::zone());
    topology.write_file("edge.toml", &config(&topology, &changed))?;
    let reloaded = edge.signal(libc::SIGHUP)?;
    edge.wait_for_log(reloaded, "reload applied", Duration::from_secs(20))?;
    let log = edge.log_since(reloaded);
    assert!(
        log.contains("source changed") && log.contains("dropped"),
        "{log}"
    );
    assert_eq!(
        ask(&topology, "kept.example.com", "A", false)?,
        ["NXDOMAIN"]
    );
    assert_eq!(
        ask_xdp(&topology, &path, "mail.example.com")?,
        ["192.0.2.26"]
    );
    assert_eq!(serial(&topology)?, "1");
    assert!(
        !topology
            .work_dir()
            .join("journal/example.com.journal")
            .exists()
    );
    // And a restart has nothing to replay.
    assert!(edge.stop()?, "edge did not exit cleanly");
    let edge = EdgeProcess::start(&topology.pop, &path, &[])?;
    assert!(!edge.log().contains("journal replayed"), "{}", edge.log());
    assert_eq!(ask(&topology, "kept.example.com", "A", true)?, ["NXDOMAIN"]);
    assert!(edge.stop()?, "edge did not exit cleanly");
    Ok(())
}
