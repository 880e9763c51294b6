//! The userspace authoritative server, asked by real clients (kdig and dig) over UDP and TCP
//! from another namespace. The XDP program sits on the PoP's loopback, so every query on the
//! veth reaches the userspace server.

use std::time::Duration;

use anyhow::Result;
use edge_tests::{
    dig::{DigOutput, dig, kdig},
    edge::EdgeProcess,
    test_zone,
    topology::Topology,
};

/// The PoP's config: the shared test zone, its apex TXT record reading `txt`.
fn config(topology: &Topology, txt: &str) -> String {
    format!(
        r#"
[xdp]
interface = "lo"
mode = "generic"
pin_root = "{pin_root}"

[dns]
listen = ["{v4}:53", "[{v6}]:53"]
identity = "pop-test"
{zone}"#,
        pin_root = topology.pin_root().display(),
        v4 = Topology::POP_V4,
        v6 = Topology::POP_V6,
        zone = test_zone::zone().replace(test_zone::SPF, txt),
    )
}

/// A running PoP with the test zone.
struct Pop {
    topology: Topology,
    edge: EdgeProcess,
}

impl Pop {
    fn start(test: &str) -> Result<Self> {
        let topology = Topology::client_and_pop(test)?;
        let config = topology.write_file("edge.toml", &config(&topology, test_zone::SPF))?;
        let edge = EdgeProcess::start(&topology.pop, &config, &[])?;
        Ok(Self { topology, edge })
    }
}

#[derive(Debug, Clone, Copy)]
enum Client {
    Kdig,
    Dig,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Over {
    Udp,
    Tcp,
}

const CLIENTS: [Client; 2] = [Client::Kdig, Client::Dig];
const TRANSPORTS: [Over; 2] = [Over::Udp, Over::Tcp];

impl Pop {
    /// `client` asks the PoP's IPv4 address over `over`.
    fn ask(&self, client: Client, over: Over, args: &[&str]) -> Result<DigOutput> {
        self.ask_at(&Topology::POP_V4.to_string(), client, over, args)
    }

    fn ask_at(&self, server: &str, client: Client, over: Over, args: &[&str]) -> Result<DigOutput> {
        let server = format!("@{server}");
        let mut all = vec![server.as_str()];
        all.extend_from_slice(args);
        if over == Over::Tcp {
            all.push("+tcp");
        }
        match client {
            Client::Kdig => {
                all.extend_from_slice(&["+retry=0", "+time=2"]);
                kdig(&self.topology.client, &all)
            }
            Client::Dig => {
                all.extend_from_slice(&["+tries=1", "+time=2"]);
                dig(&self.topology.client, &all)
            }
        }
    }
}

/// (owner, ttl, type, data) of each record of a section, owner lower-cased.
fn records(reply: &DigOutput, section: &str) -> Vec<(String, String, String, String)> {
    reply
        .section(section)
        .into_iter()
        .filter(|fields| fields.len() >= 5 && fields[2] == "IN")
        .map(|fields| {
            (
                fields[0].to_lowercase(),
                fields[1].clone(),
                fields[3].clone(),
                fields[4..].join(" "),
            )
        })
        .collect()
}

fn record(owner: &str, ttl: &str, rtype: &str, data: &str) -> (String, String, String, String) {
    (owner.into(), ttl.into(), rtype.into(), data.into())
}

fn has_flag(reply: &DigOutput, flag: &str) -> bool {
    reply.flags().iter().any(|f| f == flag)
}

/// Asserts the status and the AA bit, and that RA is clear (we never recurse).
fn assert_status(reply: &DigOutput, status: &str, authoritative: bool) {
    assert_eq!(reply.status().as_deref(), Some(status), "{}", reply.text);
    assert_eq!(has_flag(reply, "aa"), authoritative, "{}", reply.text);
    assert!(!has_flag(reply, "ra"), "RA set: {}", reply.text);
    assert!(has_flag(reply, "qr"), "{}", reply.text);
}

const SOA_DATA: &str = "ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60";

#[test]
fn answers_each_kind_of_question_over_udp_and_tcp() -> Result<()> {
    let pop = Pop::start("dns-user-answers")?;
    for client in CLIENTS {
        for over in TRANSPORTS {
            let ask = |args: &[&str]| pop.ask(client, over, args);
            let context = format!("{client:?} over {over:?}");

            // Addresses; the question's letter case comes back as sent (dig prints it as
            // received; kdig prints it lower-case).
            let reply = ask(&["WwW.ExAmple.CoM", "A"])?;
            assert_status(&reply, "NOERROR", true);
            assert_eq!(
                records(&reply, "ANSWER"),
                [
                    record("www.example.com.", "60", "A", "192.0.2.10"),
                    record("www.example.com.", "60", "A", "192.0.2.11"),
                ],
                "{context}: {}",
                reply.text
            );
            if let Client::Dig = client {
                assert_eq!(
                    reply.section("QUESTION")[0][0],
                    "WwW.ExAmple.CoM.",
                    "{context}"
                );
            }
            let reply = ask(&["www.example.com", "AAAA"])?;
            assert_eq!(
                records(&reply, "ANSWER"),
                [record("www.example.com.", "60", "AAAA", "2001:db8::10")],
                "{context}"
            );

            // SOA and NS at the apex; glue for the in-zone name server.
            let reply = ask(&["example.com", "SOA"])?;
            assert_status(&reply, "NOERROR", true);
            assert_eq!(
                records(&reply, "ANSWER"),
                [record("example.com.", "300", "SOA", SOA_DATA)],
                "{context}"
            );
            let reply = ask(&["example.com", "NS"])?;
            assert_eq!(
                records(&reply, "ANSWER"),
                [
                    record("example.com.", "300", "NS", "ns1.example.com."),
                    record("example.com.", "300", "NS", "ns2.example.net."),
                ],
                "{context}"
            );
            assert_eq!(
                records(&reply, "ADDITIONAL"),
                [
                    record("ns1.example.com.", "300", "A", "192.0.2.53"),
                    record("ns1.example.com.", "300", "AAAA", "2001:db8::53"),
                ],
                "{context}: {}",
                reply.text
            );
            let reply = ask(&["example.com", "MX"])?;
            assert_eq!(
                records(&reply, "ANSWER"),
                [record("example.com.", "300", "MX", "10 mail.example.com.")],
                "{context}"
            );
            assert_eq!(
                records(&reply, "ADDITIONAL"),
                [record("mail.example.com.", "300", "A", "192.0.2.25")],
                "{context}"
            );
            let reply = ask(&["example.com", "TXT"])?;
            assert_eq!(
                records(&reply, "ANSWER"),
                [record("example.com.", "300", "TXT", "\"v=spf1 -all\"")],
                "{context}"
            );

            // NXDOMAIN and NODATA: the SOA in the authority section, with the negative TTL.
            for (name, rtype, status) in [
                ("nope.example.com", "A", "NXDOMAIN"),
                ("www.example.com", "TXT", "NOERROR"),
            ] {
                let reply = ask(&[name, rtype])?;
                assert_status(&reply, status, true);
                assert!(
                    records(&reply, "ANSWER").is_empty(),
                    "{context}: {}",
                    reply.text
                );
                assert_eq!(
                    records(&reply, "AUTHORITY"),
                    [record("example.com.", "60", "SOA", SOA_DATA)],
                    "{context}: {}",
                    reply.text
                );
            }

            // A CNAME chain, followed inside the zone.
            let reply = ask(&["chain.example.com", "A"])?;
            assert_status(&reply, "NOERROR", true);
            assert_eq!(
                records(&reply, "ANSWER"),
                [
                    record("chain.example.com.", "300", "CNAME", "alias.example.com."),
                    record("alias.example.com.", "300", "CNAME", "www.example.com."),
                    record("www.example.com.", "60", "A", "192.0.2.10"),
                    record("www.example.com.", "60", "A", "192.0.2.11"),
                ],
                "{context}"
            );

            // A referral: AA clear, NS in authority, glue in additional.
            let reply = ask(&["host.sub.example.com", "A"])?;
            assert_status(&reply, "NOERROR", false);
            assert!(records(&reply, "ANSWER").is_empty(), "{context}");
            assert_eq!(
                records(&reply, "AUTHORITY"),
                [record(
                    "sub.example.com.",
                    "300",
                    "NS",
                    "ns.sub.example.com."
                )],
                "{context}"
            );
            assert_eq!(
                records(&reply, "ADDITIONAL"),
                [record("ns.sub.example.com.", "300", "A", "192.0.2.54")],
                "{context}: {}",
                reply.text
            );

            // Not ours: refused, even when recursion is desired.
            let reply = ask(&["www.example.org", "A", "+rec"])?;
            assert_status(&reply, "REFUSED", false);
            assert!(has_flag(&reply, "rd"), "RD copied: {}", reply.text);

            // Which PoP answered: CHAOS TXT and NSID.
            let reply = ask(&["id.server", "CH", "TXT"])?;
            assert_status(&reply, "NOERROR", false);
            assert!(
                reply.text.contains("\"pop-test\""),
                "{context}: {}",
                reply.text
            );
            let reply = ask(&["www.example.com", "A", "+nsid"])?;
            assert!(reply.text.contains("pop-test"), "{context}: {}", reply.text);

            // ANY (RFC 8482): one RRset.
            let reply = ask(&["www.example.com", "ANY"])?;
            assert_status(&reply, "NOERROR", true);
            let types: Vec<String> = records(&reply, "ANSWER")
                .into_iter()
                .map(|(_, _, rtype, _)| rtype)
                .collect();
            assert_eq!(types, ["A", "A"], "{context}: {}", reply.text);

            // A steered name: its pool's members in configured order, per family.
            let reply = ask(&["shop.example.com", "A"])?;
            assert_eq!(
                records(&reply, "ANSWER"),
                [
                    record("shop.example.com.", "20", "A", "192.0.2.101"),
                    record("shop.example.com.", "20", "A", "192.0.2.102"),
                ],
                "{context}"
            );
            let reply = ask(&["shop.example.com", "AAAA"])?;
            assert_eq!(
                records(&reply, "ANSWER"),
                [record("shop.example.com.", "20", "AAAA", "2001:db8::101")],
                "{context}"
            );
        }
    }

    // The IPv6 address answers too.
    for over in TRANSPORTS {
        let reply = pop.ask_at(
            &Topology::POP_V6.to_string(),
            Client::Kdig,
            over,
            &["www.example.com", "A"],
        )?;
        assert_eq!(
            records(&reply, "ANSWER").len(),
            2,
            "{over:?}: {}",
            reply.text
        );
    }
    assert!(pop.edge.stop()?);
    Ok(())
}

#[test]
fn edns_truncation_and_errors_over_udp_and_tcp() -> Result<()> {
    let pop = Pop::start("dns-user-edns")?;
    for over in TRANSPORTS {
        // OPT echoed with our payload size, DO echoed.
        let reply = pop.ask(
            Client::Kdig,
            over,
            &["www.example.com", "A", "+dnssec", "+bufsize=4096"],
        )?;
        assert!(
            reply
                .text
                .contains("Version: 0; flags: do; UDP size: 1232 B"),
            "{over:?}: {}",
            reply.text
        );
        let reply = pop.ask(Client::Dig, over, &["www.example.com", "A", "+dnssec"])?;
        assert!(
            reply
                .text
                .contains("EDNS: version: 0, flags: do; udp: 1232"),
            "{over:?}: {}",
            reply.text
        );
        let reply = pop.ask(Client::Kdig, over, &["www.example.com", "A", "+edns"])?;
        assert!(
            reply.text.contains("Version: 0; flags: ; UDP size: 1232 B"),
            "{over:?}: {}",
            reply.text
        );
        // No OPT in the query, none in the response.
        let reply = pop.ask(Client::Dig, over, &["www.example.com", "A", "+noedns"])?;
        assert!(!reply.text.contains("EDNS"), "{over:?}: {}", reply.text);
        assert_eq!(records(&reply, "ANSWER").len(), 2, "{over:?}");

        // EDNS version 1: BADVERS, our OPT at version 0.
        let reply = pop.ask(
            Client::Dig,
            over,
            &["www.example.com", "A", "+edns=1", "+noednsnegotiation"],
        )?;
        assert_eq!(
            reply.status().as_deref(),
            Some("BADVERS"),
            "{over:?}: {}",
            reply.text
        );
        assert!(
            reply.text.contains("EDNS: version: 0"),
            "{over:?}: {}",
            reply.text
        );
        assert!(records(&reply, "ANSWER").is_empty(), "{over:?}");

        // No question: FORMERR.
        let reply = pop.ask(Client::Dig, over, &["+header-only"])?;
        assert_eq!(
            reply.status().as_deref(),
            Some("FORMERR"),
            "{over:?}: {}",
            reply.text
        );

        // A STATUS request: NOTIMP, the question echoed.
        let reply = pop.ask(
            Client::Dig,
            over,
            &["www.example.com", "A", "+opcode=status"],
        )?;
        assert_eq!(
            reply.status().as_deref(),
            Some("NOTIMP"),
            "{over:?}: {}",
            reply.text
        );

        // No zone transfers (kdig asks for AXFR over TCP whatever `over` says): NOTAUTH, as
        // Knot refuses a transfer it does not allow.
        let reply = pop.ask(Client::Kdig, over, &["example.com", "AXFR"])?;
        assert!(reply.text.contains("NOTAUTH"), "{over:?}: {}", reply.text);
    }

    // Three TXT records of about 200 bytes: more than 512, less than 1232.
    for client in CLIENTS {
        // Over UDP without EDNS: truncated to the question, TC set.
        let reply = pop.ask(
            client,
            Over::Udp,
            &["big.example.com", "TXT", "+noedns", "+ignore"],
        )?;
        assert!(has_flag(&reply, "tc"), "{client:?}: {}", reply.text);
        assert!(
            records(&reply, "ANSWER").is_empty(),
            "{client:?}: {}",
            reply.text
        );
        // The client retries over TCP and gets everything.
        let reply = pop.ask(client, Over::Udp, &["big.example.com", "TXT", "+noedns"])?;
        assert!(!has_flag(&reply, "tc"), "{client:?}: {}", reply.text);
        assert_eq!(
            records(&reply, "ANSWER").len(),
            3,
            "{client:?}: {}",
            reply.text
        );
        // A 1232-byte payload holds it over UDP.
        let reply = pop.ask(
            client,
            Over::Udp,
            &["big.example.com", "TXT", "+bufsize=1232", "+ignore"],
        )?;
        assert!(!has_flag(&reply, "tc"), "{client:?}: {}", reply.text);
        assert_eq!(
            records(&reply, "ANSWER").len(),
            3,
            "{client:?}: {}",
            reply.text
        );
    }
    assert!(pop.edge.stop()?);
    Ok(())
}

#[test]
fn sighup_gives_the_server_the_new_zones() -> Result<()> {
    let mut pop = Pop::start("dns-user-reload")?;
    let txt = |pop: &Pop| -> Result<Vec<String>> {
        let reply = pop.ask(Client::Kdig, Over::Tcp, &["example.com", "TXT"])?;
        Ok(records(&reply, "ANSWER")
            .into_iter()
            .map(|(_, _, _, data)| data)
            .collect())
    };
    assert_eq!(txt(&pop)?, ["\"v=spf1 -all\""]);
    pop.topology
        .write_file("edge.toml", &config(&pop.topology, "v=spf1 mx -all"))?;
    let reloaded = pop.edge.signal(libc::SIGHUP)?;
    pop.edge
        .wait_for_log(reloaded, "written=0", Duration::from_secs(10))?;
    assert_eq!(txt(&pop)?, ["\"v=spf1 mx -all\""]);
    assert!(pop.edge.stop()?);
    Ok(())
}
