//! `edge maps`: the pinned maps of a running daemon read back and decoded, checked against the
//! zone it serves, and against a query the program answers.

use std::{path::Path, process::Command};

use anyhow::{Result, bail, ensure};
use edge_tests::{
    dig::kdig,
    edge::{EdgeProcess, binary},
    test_zone,
    topology::Topology,
};

/// `edge maps` with `args`, its stdout.
fn maps(config: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(binary())
        .args(["maps", "--config"])
        .arg(config)
        .args(args)
        .output()?;
    if !output.status.success() {
        bail!("edge maps: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The records of the `answer` line for `name` and `qtype`, and the rest of the line after
/// them (where the entry is, and a steered name's selection).
fn answer_line<'a>(listing: &'a str, name: &str, qtype: &str) -> Option<&'a str> {
    let prefix = format!("answer    {name} {qtype} ");
    listing
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
}

#[test]
fn maps_show_every_answer_the_selection_the_services_and_moving_counters() -> Result<()> {
    let topology = Topology::client_and_pop("maps")?;
    let text = format!(
        "[xdp]\ninterface = \"{}\"\npin_root = \"{}\"\n[dns]\nlisten = [\"{}:53\"]\n{}",
        Topology::INTERFACE,
        topology.pin_root().display(),
        Topology::POP_V4,
        test_zone::zone()
    );
    let config = topology.write_file("edge.toml", &text)?;
    let edge = EdgeProcess::start(&topology.pop, &config, &[])?;

    let listing = maps(&config, &[])?;
    let longest = test_zone::longest_name();
    // Every name of the zone the fast path answers, with its addresses and TTL.
    let expected = [
        ("example.com.", "A", vec!["300 A 192.0.2.1"]),
        (
            "www.example.com.",
            "A",
            vec!["60 A 192.0.2.10", "60 A 192.0.2.11"],
        ),
        ("www.example.com.", "AAAA", vec!["60 AAAA 2001:db8::10"]),
        ("ns1.example.com.", "A", vec!["300 A 192.0.2.53"]),
        ("ns1.example.com.", "AAAA", vec!["300 AAAA 2001:db8::53"]),
        ("mail.example.com.", "A", vec!["300 A 192.0.2.25"]),
        (longest.as_str(), "A", vec!["5 A 192.0.2.12"]),
    ];
    for (name, qtype, records) in &expected {
        let line = answer_line(&listing, name, qtype)
            .unwrap_or_else(|| panic!("no {name} {qtype} in:\n{listing}"));
        assert!(
            line.starts_with(&records.join(", ")),
            "{name} {qtype}: {line}"
        );
        assert!(!line.contains("selection"), "{name} {qtype}: {line}");
    }
    // Short names sit in the name table, the 255-octet one in the long-answer map.
    assert!(
        answer_line(&listing, "www.example.com.", "A")
            .unwrap()
            .contains("(edge_names[")
    );
    assert!(
        answer_line(&listing, &longest, "A")
            .unwrap()
            .contains("(edge_long_names")
    );
    // The steered name: its selection slot and the answer of the live generation.
    for (qtype, records) in [
        ("A", "20 A 192.0.2.101, 20 A 192.0.2.102"),
        ("AAAA", "20 AAAA 2001:db8::101"),
    ] {
        let line = answer_line(&listing, "shop.example.com.", qtype)
            .unwrap_or_else(|| panic!("no shop {qtype} in:\n{listing}"));
        assert!(line.starts_with(records), "shop {qtype}: {line}");
        assert!(line.contains(" selection "), "shop {qtype}: {line}");
    }
    // Answered by userspace only: no entry.
    assert!(
        answer_line(&listing, "alias.example.com.", "A").is_none(),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("service   {}:53\n", Topology::POP_V4)),
        "{listing}"
    );

    // One name asked for, in any case: its lines only.
    let one = maps(&config, &["--name", "SHOP.example.com"])?;
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(
        one.lines().all(|line| line.contains(" shop.example.com. ")),
        "{one}"
    );

    // A query the program answers moves its counter.
    let answered = |json: &str| -> Result<u64> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        value["counters"]["answered"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no answered counter in {json}"))
    };
    let before = answered(&maps(&config, &["--json"])?)?;
    let server = format!("@{}", Topology::POP_V4);
    let reply = kdig(
        &topology.client,
        &[&server, "www.example.com", "A", "+retry=1", "+time=2"],
    )?;
    assert_eq!(reply.status().as_deref(), Some("NOERROR"), "{}", reply.text);
    let json = maps(&config, &["--json"])?;
    assert_eq!(answered(&json)? - before, 1, "{json}");
    let value: serde_json::Value = serde_json::from_str(&json)?;
    assert_eq!(
        value["services"],
        serde_json::json!([format!("{}:53", Topology::POP_V4)])
    );
    ensure!(edge.stop()?, "edge did not stop cleanly");
    Ok(())
}

#[test]
fn maps_refuse_a_config_without_xdp() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("edge-maps-no-xdp-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("edge.toml");
    let text = format!("[dns]\nlisten = [\"127.0.0.1:53\"]\n{}", test_zone::zone());
    std::fs::write(&config, text)?;
    let output = Command::new(binary())
        .args(["maps", "--config"])
        .arg(&config)
        .output();
    std::fs::remove_dir_all(&dir)?;
    let output = output?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("no [xdp] section"), "{stderr}");
    Ok(())
}
