//! The XDP program on crafted frames through BPF_PROG_TEST_RUN, Katran-style: this frame in, that
//! frame out, this verdict, this counter. No NIC involved; the kernel's verifier and helpers are.

use std::net::SocketAddr;

use anyhow::Result;
use edge_common::Counter;
use edge_dns::fast_path;
use edge_tests::xdp::*;
use etherparse::PacketBuilder;

/// A 255-octet name (the RFC 1035 maximum) inside example.com.
fn longest_name() -> String {
    format!(
        "{}.{}.{}.{}.example.com.",
        "a".repeat(63),
        "a".repeat(63),
        "a".repeat(63),
        "b".repeat(49)
    )
}

fn zone() -> String {
    format!(
        r#"
[xdp]
interface = "eth0"
[[zones]]
apex = "example.com"
[[zones.names]]
name = "www"
ttl = 60
a = ["192.0.2.10", "192.0.2.11"]
[[zones.names]]
name = "{}"
ttl = 5
a = ["192.0.2.12"]
"#,
        longest_name()
    )
}

/// The verifier walks every path of the program and gives up at 1 M instructions: past that
/// the program does not load at all. A change that multiplies the paths (an inlined loop, one
/// more length class) shows here while there is still room, not as a load failure.
#[test]
fn verification_leaves_headroom() -> Result<()> {
    const LIMIT: u32 = 1_000_000;
    let verified = Program::load(&zone(), &[])?.verified_instructions()?;
    assert!(
        verified < LIMIT * 3 / 4,
        "the verifier walked {verified} instructions of its {LIMIT}"
    );
    Ok(())
}

#[test]
fn known_query_gets_the_exact_reply() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    let query = Query::new("WwW.ExAmple.COM");
    let (verdict, out) = program.run(&query.frame())?;
    assert_eq!(verdict, XDP_TX);

    // Header: same ID; QR AA RD; one question, two answers. Question as sent, letter case and all.
    // Answers: owner is a pointer to the question (0xc00c), A IN, TTL 60, RDLENGTH 4, address.
    let dns = hex("beef 8500 0001 0002 0000 0000
         03 577757 07 4578416d706c65 03 434f4d 00 0001 0001
         c00c 0001 0001 0000003c 0004 c000020a
         c00c 0001 0001 0000003c 0004 c000020b");
    let mut expected = udp_frame(
        POP_MAC,
        CLIENT_MAC,
        POP_IP,
        CLIENT_IP,
        53,
        CLIENT_PORT,
        &dns,
    );
    // UDP checksum zero: "none" over IPv4. The IPv4 header checksum is etherparse's, and must match.
    expected[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(out, expected);
    assert_eq!(program.counts()?["answered"], 1);
    Ok(())
}

#[test]
fn longest_name_is_answered() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    let name = longest_name().to_uppercase();
    assert_eq!(wire(&name).len(), 255);
    let (verdict, out) = program.run(&Query::new(&name).frame())?;
    assert_eq!(verdict, XDP_TX);
    // The answer ends with the address.
    assert_eq!(&out[out.len() - 4..], [192, 0, 2, 12]);
    Ok(())
}

#[test]
fn every_truncation_is_passed() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    let frame = Query::new("www.example.com").frame();
    // The kernel refuses test frames shorter than an Ethernet header.
    for len in 14..frame.len() {
        let (verdict, out) = program.run(&frame[..len])?;
        assert_eq!(verdict, XDP_PASS, "truncated to {len}");
        assert_eq!(out, &frame[..len]);
    }
    Ok(())
}

#[test]
fn frames_we_must_not_answer_are_passed_with_their_reason() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    let query = || Query::new("www.example.com");

    let wrong_port = udp_frame(
        CLIENT_MAC,
        POP_MAC,
        CLIENT_IP,
        POP_IP,
        CLIENT_PORT,
        5353,
        &query().bytes(),
    );
    program.assert_passed(&wrong_port, Counter::NotService)?;

    let response = Query {
        flags: 0x8500,
        ..query()
    };
    program.assert_passed(&response.frame(), Counter::NotQuery)?;
    let status = Query {
        flags: 0x1000,
        ..query()
    };
    program.assert_passed(&status.frame(), Counter::NotQuery)?;

    for qdcount in [0, 2] {
        let frame = Query {
            counts: [qdcount, 0, 0, 0],
            ..query()
        }
        .frame();
        program.assert_passed(&frame, Counter::QuestionCount)?;
    }
    for counts in [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 2]] {
        let frame = Query { counts, ..query() }.frame();
        program.assert_passed(&frame, Counter::ExtraRecords)?;
    }
    // ARCOUNT 1 but no record follows the question.
    let missing_opt = Query {
        counts: [1, 0, 0, 1],
        ..query()
    };
    program.assert_passed(&missing_opt.frame(), Counter::Malformed)?;

    let too_long = format!(
        "{}.x.example.com",
        longest_name().trim_end_matches(".example.com.")
    );
    program.assert_passed(&Query::new(&too_long).frame(), Counter::NameTooLong)?;

    let mut pointer = query();
    pointer.name = hex("03 777777 c00c");
    program.assert_passed(&pointer.frame(), Counter::BadName)?;

    let chaos = Query {
        qclass: 3,
        ..query()
    };
    program.assert_passed(&chaos.frame(), Counter::NotInClass)?;

    program.assert_passed(
        &Query::new("nope.example.com").frame(),
        Counter::UnknownName,
    )?;
    let aaaa = Query {
        qtype: 28,
        ..query()
    };
    program.assert_passed(&aaaa.frame(), Counter::UnknownName)?;

    let mut trailing = query().frame();
    trailing.extend_from_slice(&[0; 3]);
    // Keep the IP and UDP lengths consistent with the longer payload: only DNS is malformed.
    fix_lengths(&mut trailing);
    program.assert_passed(&trailing, Counter::Malformed)?;

    let mut udp_len_lies = query().frame();
    udp_len_lies[38..40].copy_from_slice(&200_u16.to_be_bytes());
    program.assert_passed(&udp_len_lies, Counter::Malformed)?;
    Ok(())
}

#[test]
fn non_dns_frames_are_passed_with_their_reason() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    let payload = Query::new("www.example.com").bytes();

    let mut v6_fragment = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
        .ipv6(CLIENT_IP6, POP_IP6, 64)
        .udp(CLIENT_PORT, 53)
        .write(&mut v6_fragment, &payload)?;
    v6_fragment[20] = 44; // next header: a fragment header, not UDP
    program.assert_passed(&v6_fragment, Counter::IpUnsupported)?;

    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
        .ipv4(CLIENT_IP, POP_IP, 64)
        .tcp(CLIENT_PORT, 53, 1, 1000)
        .write(&mut tcp, &payload)?;
    program.assert_passed(&tcp, Counter::NotUdp)?;

    let mut fragment = Query::new("www.example.com").frame();
    fragment[20] |= 0x20; // More Fragments
    program.assert_passed(&fragment, Counter::IpUnsupported)?;

    let mut options = Query::new("www.example.com").frame();
    options[14] = 0x46; // IHL 6: four bytes of options
    program.assert_passed(&options, Counter::IpUnsupported)?;

    let mut arp = Query::new("www.example.com").frame();
    arp[12..14].copy_from_slice(&0x0806_u16.to_be_bytes());
    program.assert_passed(&arp, Counter::NotIp)?;

    let mut qinq = Query::new("www.example.com").vlan_frame(false);
    qinq[16..18].copy_from_slice(&0x8100_u16.to_be_bytes());
    program.assert_passed(&qinq, Counter::NotIp)?;
    Ok(())
}

/// Rewrites the IPv4 total length and UDP length of `frame` to match its size.
fn fix_lengths(frame: &mut [u8]) {
    let ip_len = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
}

#[test]
fn ipv6_and_vlan_queries_are_answered_with_valid_checksums() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    let query = Query::new("WWW.example.com");
    let v4 = dns_of_reply(&program.run(&query.frame())?.1, false, false);
    let shapes: [(Vec<u8>, bool, bool); 3] = [
        (query.frame_v6(), true, false),
        (query.vlan_frame(false), false, true),
        (query.vlan_frame(true), true, true),
    ];
    for (frame, ipv6, vlan) in shapes {
        let (verdict, out) = program.run(&frame)?;
        assert_eq!(verdict, XDP_TX, "ipv6 {ipv6} vlan {vlan}");
        // The DNS message does not depend on the frame's shape.
        assert_eq!(dns_of_reply(&out, ipv6, vlan), v4);
    }
    assert_eq!(program.counts()?["answered"], 4);
    // Every length of the UDP checksum's tail, with and without OPT.
    for name in ["www.example.com", "wWw.example.com", &longest_name()] {
        for edns in [false, true] {
            let query = if edns {
                Query::with_edns(name, true)
            } else {
                Query::new(name)
            };
            let (verdict, out) = program.run(&query.frame_v6())?;
            assert_eq!(verdict, XDP_TX, "{name} edns {edns}");
            dns_of_reply(&out, true, false);
        }
    }
    Ok(())
}

#[test]
fn edns_query_gets_our_opt_record() -> Result<()> {
    let mut program = Program::load(&zone(), &[])?;
    for dnssec_ok in [false, true] {
        let (verdict, out) =
            program.run(&Query::with_edns("www.example.com", dnssec_ok).frame())?;
        assert_eq!(verdict, XDP_TX);
        let dns = dns_of_reply(&out, false, false);
        assert_eq!(
            &dns[6..12],
            [0, 2, 0, 0, 0, 1],
            "ANCOUNT 2, NSCOUNT 0, ARCOUNT 1"
        );
        let flags = if dnssec_ok { "8000" } else { "0000" };
        assert_eq!(
            dns[dns.len() - 11..],
            hex(&format!("00 0029 04d0 00 00 {flags} 0000"))
        );
    }
    // Options the client sent (a cookie here) are not echoed: we support none.
    let cookie = Query {
        counts: [1, 0, 0, 1],
        additional: opt(0, false, &hex("000a 0008 0102030405060708")),
        ..Query::new("www.example.com")
    };
    let (verdict, out) = program.run(&cookie.frame())?;
    assert_eq!(verdict, XDP_TX);
    let dns = dns_of_reply(&out, false, false);
    assert_eq!(dns[dns.len() - 11..], hex("00 0029 04d0 00 00 0000 0000"));

    let version_one = Query {
        counts: [1, 0, 0, 1],
        additional: opt(1, false, &[]),
        ..Query::new("www.example.com")
    };
    program.assert_passed(&version_one.frame(), Counter::EdnsVersion)?;
    let not_opt = Query {
        counts: [1, 0, 0, 1],
        additional: hex("00 0001 0001 00000000 0004 c0000201"),
        ..Query::new("www.example.com")
    };
    program.assert_passed(&not_opt.frame(), Counter::ExtraRecords)?;
    let mut short_rdata = Query::with_edns("www.example.com", false);
    short_rdata.additional[10] = 4; // RDLENGTH 4 with no RDATA following
    program.assert_passed(&short_rdata.frame(), Counter::Malformed)?;
    Ok(())
}

#[test]
fn only_service_addresses_are_answered() -> Result<()> {
    let listen: Vec<SocketAddr> = vec!["198.18.0.2:53".parse()?, "[2001:db8::2]:5353".parse()?];
    let mut program = Program::load(&zone(), &listen)?;
    let query = Query::new("www.example.com");
    assert_eq!(program.run(&query.frame())?.0, XDP_TX);
    let other_address = udp_frame(
        CLIENT_MAC,
        POP_MAC,
        CLIENT_IP,
        [198, 18, 0, 3],
        CLIENT_PORT,
        53,
        &query.bytes(),
    );
    program.assert_passed(&other_address, Counter::NotService)?;
    // IPv6 is served on port 5353 only.
    program.assert_passed(&query.frame_v6(), Counter::NotService)?;
    let mut v6_5353 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
        .ipv6(CLIENT_IP6, POP_IP6, 64)
        .udp(CLIENT_PORT, 5353)
        .write(&mut v6_5353, &query.bytes())?;
    assert_eq!(program.run(&v6_5353)?.0, XDP_TX);

    // A new set (a restart with another `dns.listen`) replaces the old one whole: the program
    // flips to the other copy of the table.
    program
        .services
        .replace(&fast_path::services(&["198.18.0.3:53".parse()?]))?;
    assert_eq!(program.run(&other_address)?.0, XDP_TX);
    program.assert_passed(&query.frame(), Counter::NotService)?;
    program.assert_passed(&v6_5353, Counter::NotService)?;
    // And back: the first copy is written again.
    program.services.replace(&fast_path::services(&listen))?;
    assert_eq!(program.run(&query.frame())?.0, XDP_TX);
    program.assert_passed(&other_address, Counter::NotService)?;
    Ok(())
}

/// A zone with two steered names on one pool, whose member order is `members`, and a static name.
fn steered_zone(members: [&str; 2]) -> String {
    format!(
        r#"
[xdp]
interface = "eth0"
[[pools]]
name = "shop"
kind = "origin"
members = [{{ name = "m1", address = "{}" }}, {{ name = "m2", address = "{}" }}]
[[zones]]
apex = "example.com"
[[zones.names]]
name = "www"
pool = "shop"
[[zones.names]]
name = "shop"
pool = "shop"
[[zones.names]]
name = "static"
a = ["192.0.2.99"]
"#,
        members[0], members[1]
    )
}

fn publish(program: &mut Program, zone: &str) -> Result<edge_dataplane::maps::Publication> {
    let path = std::path::Path::new("steered.toml");
    let config = edge_config::Config::parse(path, zone)?;
    let zones = edge_dns::zone::Zones::build(path, &config)?;
    program
        .answers
        .publish(&edge_dns::fast_path::entries(&zones)?)
}

/// The first address a name's answer carries.
fn first_address(program: &mut Program, name: &str) -> Result<[u8; 4]> {
    let (verdict, out) = program.run(&Query::new(name).frame())?;
    assert_eq!(verdict, XDP_TX, "{name}");
    let dns = dns_of_reply(&out, false, false);
    let question_end = 12 + wire(name).len() + 4;
    // First record: pointer, type, class, TTL, RDLENGTH, then the address.
    Ok(dns[question_end + 12..question_end + 16].try_into()?)
}

#[test]
fn steered_answers_change_together_by_a_generation_flip() -> Result<()> {
    let forward = steered_zone(["198.51.100.1", "198.51.100.2"]);
    let backward = steered_zone(["198.51.100.2", "198.51.100.1"]);
    let mut program = Program::load(&forward, &[])?;
    for name in ["www.example.com", "shop.example.com"] {
        assert_eq!(first_address(&mut program, name)?, [198, 51, 100, 1]);
    }

    let swap = publish(&mut program, &backward)?;
    assert!(swap.flipped);
    assert_eq!(
        swap.steered_written, 2,
        "both steered names, into the other generation"
    );
    assert_eq!(
        swap.answers.written, 0,
        "the answer map only points at the selection"
    );
    for name in ["www.example.com", "shop.example.com"] {
        assert_eq!(first_address(&mut program, name)?, [198, 51, 100, 2]);
    }
    assert_eq!(
        first_address(&mut program, "static.example.com")?,
        [192, 0, 2, 99]
    );

    let again = publish(&mut program, &backward)?;
    assert!(!again.flipped, "an unchanged selection is not rewritten");
    assert_eq!(again.steered_written, 0);

    // Back to the first order: the other generation still holds it, so only the flip is written.
    let back = publish(&mut program, &forward)?;
    assert!(back.flipped);
    assert_eq!(back.steered_written, 0);
    for name in ["www.example.com", "shop.example.com"] {
        assert_eq!(first_address(&mut program, name)?, [198, 51, 100, 1]);
    }
    Ok(())
}
