//! The two answer paths agree: for every name and type of a generated zone of well over 1,000
//! names, and a mix of queries (letter case, EDNS off/on/DO, IPv4/IPv6, with and without a VLAN
//! tag), the XDP program's reply carries exactly the DNS message that the userspace server
//! (`edge_dns::respond`) builds for the same query. Queries the XDP program passes on must be those it
//! holds no answer for.

use std::path::Path;

use anyhow::Result;
use edge_config::Config;
use edge_dns::{
    message::{Transport, respond},
    zone::Zones,
};
use edge_tests::xdp::*;

const NAMES: usize = 1_200;

/// A zone with every kind of owner the fast path meets: 1 to 8 A and/or AAAA records, names up
/// to 255 octets, steered names (a pool of IPv4 and IPv6 members), aliases, and a delegation.
fn zone() -> String {
    let mut text = String::from(
        r#"
[xdp]
interface = "eth0"

[[pools]]
name = "origins"
kind = "origin"
members = [
  { name = "a", address = "198.51.100.1" },
  { name = "b", address = "198.51.100.2" },
  { name = "c", address = "2001:db8:51::3" },
]

[[zones]]
apex = "example.com"
ttl = 120
[[zones.nameservers]]
name = "ns1"
addresses = ["192.0.2.53", "2001:db8::53"]
[[zones.names]]
name = "sub"
ns = ["ns.sub"]
[[zones.names]]
name = "ns.sub"
a = ["192.0.2.54"]
[[zones.names]]
name = "*.wild"
a = ["192.0.2.99"]
aaaa = ["2001:db8::99"]
"#,
    );
    for i in 0..NAMES {
        let name = match i % 50 {
            // Long names, up to the 255-octet limit.
            0 => format!(
                "{}.{}.{}.n{i:04}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63 - 12)
            ),
            _ => format!("host{i}"),
        };
        text.push_str(&format!(
            "[[zones.names]]\nname = \"{name}\"\nttl = {}\n",
            30 + i % 7
        ));
        match i % 10 {
            0..=4 => {
                let a: Vec<String> = (0..1 + i % 8)
                    .map(|k| format!("\"10.{}.{}.{k}\"", i / 256, i % 256))
                    .collect();
                text.push_str(&format!("a = [{}]\n", a.join(", ")));
            }
            5 | 6 => {
                let aaaa: Vec<String> = (0..1 + i % 8)
                    .map(|k| format!("\"2001:db8:{i:x}::{k}\""))
                    .collect();
                text.push_str(&format!("aaaa = [{}]\n", aaaa.join(", ")));
            }
            7 => text.push_str(&format!(
                "a = [\"10.9.{}.{}\"]\naaaa = [\"2001:db8:9::{i:x}\"]\n",
                i / 256,
                i % 256
            )),
            8 => text.push_str("pool = \"origins\"\n"),
            _ => text.push_str("cname = \"host1\"\n"),
        }
    }
    text
}

/// `name` in one of three letter cases.
fn cased(name: &str, variant: usize) -> String {
    match variant {
        0 => name.to_string(),
        1 => name.to_uppercase(),
        _ => name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

#[test]
fn xdp_replies_equal_userspace_replies() -> Result<()> {
    let text = zone();
    let path = Path::new("differential.toml");
    let config = Config::parse(path, &text)?;
    let zones = Zones::build(path, &config)?;
    let mut program = Program::load(&text, &[])?;

    let mut names: Vec<String> = zones.names().map(|(name, _)| name.to_string()).collect();
    names.push("nonexistent.example.com.".into());
    names.push("deep.below.sub.example.com.".into());
    // Names a wildcard answers for: synthesised in userspace, so the program passes them.
    let synthesised = ["x.wild.example.com.", "y.x.wild.example.com."];
    names.extend(synthesised.iter().map(|name| name.to_string()));
    assert!(names.len() > 1_000, "{} names", names.len());

    let (mut compared, mut passed) = (0_usize, 0_usize);
    for (n, name) in names.iter().enumerate() {
        for qtype in [1_u16, 28, 15] {
            // Every variant for the first names; then one rotating variant per name and type,
            // so each case, EDNS mode and frame shape meets every kind of owner.
            let variants: Vec<usize> = if n < 60 {
                (0..36).collect()
            } else {
                vec![(n * 7 + usize::from(qtype)) % 36]
            };
            for variant in variants {
                let (case, edns, shape) = (variant % 3, (variant / 3) % 3, variant / 9);
                let mut query = match edns {
                    0 => Query::new(&cased(name, case)),
                    mode => Query::with_edns(&cased(name, case), mode == 2),
                };
                query.qtype = qtype;
                query.id = (n as u16).wrapping_mul(31).wrapping_add(variant as u16);
                query.flags = if variant % 2 == 0 { 0x0100 } else { 0x0110 };
                let frame = match shape {
                    0 => query.frame(),
                    1 => query.frame_v6(),
                    2 => query.vlan_frame(false),
                    _ => query.vlan_frame(true),
                };
                let (verdict, out) = program.run(&frame)?;
                let userspace = respond(&zones, &query.bytes(), Transport::Udp)
                    .expect("userspace answers every query here");
                match verdict {
                    XDP_TX => {
                        let xdp = dns_of_reply(&out, shape % 2 == 1, shape >= 2);
                        assert_eq!(xdp, userspace, "{name} type {qtype} variant {variant}");
                        compared += 1;
                    }
                    XDP_PASS => {
                        // Only what the fast path cannot answer: no A/AAAA data at that name.
                        let rcode = userspace[3] & 0x0f;
                        let ancount = u16::from_be_bytes([userspace[6], userspace[7]]);
                        let aa = userspace[2] & 0x04 != 0;
                        assert!(
                            qtype == 15
                                || synthesised.contains(&name.as_str())
                                || rcode != 0
                                || ancount == 0
                                || !aa
                                || is_alias(&userspace),
                            "passed although userspace has an address answer: {name} type {qtype}"
                        );
                        passed += 1;
                    }
                    other => panic!("verdict {other} for {name}"),
                }
            }
        }
    }
    // The server's identity comes from userspace: CHAOS TXT and NSID queries are passed on.
    for (name, qclass, nsid) in [
        ("id.server", 3, false),
        ("version.bind", 3, false),
        ("host1.example.com", 1, true),
        ("x.wild.example.com", 1, true),
    ] {
        let mut query = Query::new(name);
        (query.qtype, query.qclass) = (if qclass == 3 { 16 } else { 1 }, qclass);
        if nsid {
            query.counts = [1, 0, 0, 1];
            query.additional = opt(0, false, &[0, 3, 0, 0]);
        }
        let (verdict, _) = program.run(&query.frame())?;
        assert_eq!(verdict, XDP_PASS, "{name} class {qclass} nsid {nsid}");
        let userspace = respond(&zones, &query.bytes(), Transport::Udp).expect("a response");
        assert_eq!(userspace[3] & 0x0f, 0, "userspace answers {name}");
        passed += 1;
    }
    eprintln!("{compared} replies compared byte for byte, {passed} passed to userspace");
    assert!(
        compared > 2_000 && passed > 1_000,
        "{compared} compared, {passed} passed"
    );
    Ok(())
}

/// Whether the first answer record is a CNAME (answers through an alias stay in userspace).
fn is_alias(message: &[u8]) -> bool {
    let mut pos = 12;
    while message[pos] != 0 {
        pos += usize::from(message[pos]) + 1;
    }
    pos += 5; // root label, type, class
    // The first answer's owner is a pointer to the question: two bytes, then its type.
    message.get(pos + 2..pos + 4) == Some(&[0, 5][..])
}
