//! The XDP program's cases as data, as Katran's fixtures are: each case is a name, the frame
//! that comes in, the verdict, the frame that must leave and the counter that must move by one.
//! One table, two readers: `tests/xdp_program.rs` runs every case through BPF_PROG_TEST_RUN and
//! checks all four, and the program-cost benchmark ([`crate::bench::program_cost::cases`])
//! checks each case the same way, then times it.
//!
//! The program answers from the shared test zone ([`crate::test_zone`]). Expected replies are
//! built here from the query, independently of the program: the header, the question as sent,
//! one record per address behind a pointer to the question, our OPT record when the query had
//! one; one reply is also written out in hex, byte by byte, to pin that builder down.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use edge_common::Counter;
use etherparse::PacketBuilder;

use crate::{
    test_zone,
    xdp::{
        CLIENT_IP, CLIENT_IP6, CLIENT_MAC, CLIENT_PORT, POP_IP, POP_IP6, POP_MAC, Program, Query,
        VLAN_ID, XDP_DROP, XDP_PASS, XDP_TX, hex, opt, udp_frame,
    },
};

/// One frame through the program and what must come of it.
pub struct Case {
    pub name: String,
    pub input: Vec<u8>,
    pub verdict: u32,
    pub output: Vec<u8>,
    /// The one counter the run adds to; every other stays as it was.
    pub counter: Counter,
}

/// The program's config: XDP on `eth0` (never attached: the frames come by test run) and the
/// shared test zone.
pub fn config() -> String {
    format!("[xdp]\ninterface = \"eth0\"\n{}", test_zone::zone())
}

/// The DNS responder loaded with [`config`], answering on port 53 of every address.
pub fn program() -> Result<Program> {
    Program::load(&config(), &[])
}

impl Case {
    /// Runs the case through `program`: an error naming the case if the verdict, the frame
    /// out or a counter differs from what the case expects.
    pub fn check(&self, program: &mut Program) -> Result<()> {
        let before = program.counts()?;
        let (verdict, output) = program.run(&self.input)?;
        let after = program.counts()?;
        let name = &self.name;
        ensure!(
            verdict == self.verdict,
            "{name}: verdict {}, expected {}",
            verdict_name(verdict),
            verdict_name(self.verdict)
        );
        if let Some(at) = first_difference(&output, &self.output) {
            anyhow::bail!(
                "{name}: the frame out differs at byte {at} ({} bytes, expected {})\n   got: {}\
                 \nwanted: {}",
                output.len(),
                self.output.len(),
                hex_of(&output),
                hex_of(&self.output)
            );
        }
        let moved: BTreeMap<&str, u64> = after
            .iter()
            .map(|(counter, count)| (*counter, count - before[counter]))
            .filter(|(_, delta)| *delta != 0)
            .collect();
        ensure!(
            moved == BTreeMap::from([(self.counter.name(), 1)]),
            "{name}: counters moved {moved:?}, expected {} by one",
            self.counter.name()
        );
        Ok(())
    }
}

/// XDP_TX, XDP_PASS or XDP_DROP, as the tables print it.
pub fn verdict_name(verdict: u32) -> String {
    match verdict {
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_TX => "XDP_TX".into(),
        other => format!("verdict {other}"),
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The link and network layers a query comes in.
#[derive(Clone, Copy)]
enum Shape {
    Ipv4,
    Ipv6,
    VlanIpv4,
    VlanIpv6,
}

impl Shape {
    fn query(self, query: &Query) -> Vec<u8> {
        match self {
            Self::Ipv4 => query.frame(),
            Self::Ipv6 => query.frame_v6(),
            Self::VlanIpv4 => query.vlan_frame(false),
            Self::VlanIpv6 => query.vlan_frame(true),
        }
    }

    /// The reply frame carrying `dns`: addresses and ports swapped, the VLAN tag kept; the UDP
    /// checksum computed over IPv6, zero ("none") over IPv4.
    fn reply(self, dns: &[u8]) -> Vec<u8> {
        let ethernet = || PacketBuilder::ethernet2(POP_MAC, CLIENT_MAC);
        let vlan = || ethernet().single_vlan(VLAN_ID.try_into().unwrap());
        let mut out = Vec::new();
        match self {
            Self::Ipv4 => ethernet()
                .ipv4(POP_IP, CLIENT_IP, 64)
                .udp(53, CLIENT_PORT)
                .write(&mut out, dns),
            Self::Ipv6 => ethernet()
                .ipv6(POP_IP6, CLIENT_IP6, 64)
                .udp(53, CLIENT_PORT)
                .write(&mut out, dns),
            Self::VlanIpv4 => vlan()
                .ipv4(POP_IP, CLIENT_IP, 64)
                .udp(53, CLIENT_PORT)
                .write(&mut out, dns),
            Self::VlanIpv6 => vlan()
                .ipv6(POP_IP6, CLIENT_IP6, 64)
                .udp(53, CLIENT_PORT)
                .write(&mut out, dns),
        }
        .expect("a reply frame builds");
        let udp_checksum = match self {
            Self::Ipv4 => Some(14 + 20 + 6),
            Self::VlanIpv4 => Some(18 + 20 + 6),
            Self::Ipv6 | Self::VlanIpv6 => None,
        };
        if let Some(at) = udp_checksum {
            out[at..at + 2].copy_from_slice(&[0, 0]);
        }
        out
    }
}

/// The DNS reply to `query`: QR and AA set, RD copied; the question as sent; an A record of
/// `ttl` per address, its owner a pointer to the question; our OPT (payload 1232, DO copied)
/// if the query carried one (`edns`: whether it asked for DO).
fn answer(query: &Query, edns: Option<bool>, ttl: u32, addresses: &[[u8; 4]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&(0x8400 | (query.flags & 0x0100)).to_be_bytes());
    let additional = u16::from(edns.is_some());
    for count in [1, addresses.len() as u16, 0, additional] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(&query.name);
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    for address in addresses {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(address);
    }
    if let Some(dnssec_ok) = edns {
        out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0]);
        out.extend_from_slice(if dnssec_ok { &[0x80, 0] } else { &[0, 0] });
        out.extend_from_slice(&[0, 0]);
    }
    out
}

/// `www`'s two addresses.
const WWW: [[u8; 4]; 2] = [[192, 0, 2, 10], [192, 0, 2, 11]];
/// The longest name's address and TTL.
const LONGEST: [[u8; 4]; 1] = [[192, 0, 2, 12]];
const LONGEST_TTL: u32 = 5;

fn www() -> Query {
    Query::new("www.example.com")
}

/// A case the program answers.
fn answered(name: impl Into<String>, input: Vec<u8>, output: Vec<u8>) -> Case {
    Case {
        name: name.into(),
        input,
        verdict: XDP_TX,
        output,
        counter: Counter::Answered,
    }
}

/// A case the program passes to the kernel untouched, counted under `counter`.
fn passed(name: &str, input: Vec<u8>, counter: Counter) -> Case {
    Case {
        name: name.into(),
        output: input.clone(),
        input,
        verdict: XDP_PASS,
        counter,
    }
}

/// Rewrites the IPv4 total length and UDP length of a plain IPv4 frame to match its size.
fn fix_lengths(frame: &mut [u8]) {
    let ip_len = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
}

/// Every case, answered ones first.
pub fn cases() -> Vec<Case> {
    let mut cases = answered_cases();
    cases.extend(dns_passed_cases());
    cases.extend(frame_passed_cases());
    cases
}

fn answered_cases() -> Vec<Case> {
    let mut cases = Vec::new();

    // Written out: same ID; QR AA RD; one question, two answers; the question as sent, letter
    // case and all; each answer a pointer to the question (0xc00c), A IN, TTL 60, RDLENGTH 4.
    let mixed_case = Query::new("WwW.ExAmple.COM");
    let dns = hex("beef 8500 0001 0002 0000 0000
         03 577757 07 4578416d706c65 03 434f4d 00 0001 0001
         c00c 0001 0001 0000003c 0004 c000020a
         c00c 0001 0001 0000003c 0004 c000020b");
    cases.push(answered(
        "A query in mixed case: the reply, byte by byte",
        mixed_case.frame(),
        Shape::Ipv4.reply(&dns),
    ));

    let query = Query::new("WWW.example.com");
    let dns = answer(&query, None, 60, &WWW);
    for (name, shape) in [
        ("A query over IPv6", Shape::Ipv6),
        ("A query in an 802.1Q frame", Shape::VlanIpv4),
        ("A query over IPv6 in an 802.1Q frame", Shape::VlanIpv6),
    ] {
        cases.push(answered(name, shape.query(&query), shape.reply(&dns)));
    }

    let longest = Query::new(&test_zone::longest_name().to_uppercase());
    cases.push(answered(
        "the longest name (255 octets)",
        longest.frame(),
        Shape::Ipv4.reply(&answer(&longest, None, LONGEST_TTL, &LONGEST)),
    ));

    for dnssec_ok in [false, true] {
        let query = Query::with_edns("www.example.com", dnssec_ok);
        cases.push(answered(
            format!("EDNS query (DO {dnssec_ok}): our OPT record, DO copied"),
            query.frame(),
            Shape::Ipv4.reply(&answer(&query, Some(dnssec_ok), 60, &WWW)),
        ));
    }
    let cookie = Query {
        counts: [1, 0, 0, 1],
        additional: opt(0, false, &hex("000a 0008 0102030405060708")),
        ..www()
    };
    cases.push(answered(
        "EDNS option (a cookie): not echoed, we support none",
        cookie.frame(),
        Shape::Ipv4.reply(&answer(&cookie, Some(false), 60, &WWW)),
    ));
    // Options the userspace server ignores, well-formed: answered (a cookie and padding, a client
    // subnet with an unknown family, as many options as the program walks).
    for (label, options) in [
        (
            "a cookie and padding",
            "000a 0008 0102030405060708 000c 0000".to_string(),
        ),
        (
            "a malformed client subnet",
            "0008 0007 0009 1800 0a0000".into(),
        ),
        ("16 options", "000c 0000 ".repeat(16)),
    ] {
        let query = Query {
            counts: [1, 0, 0, 1],
            additional: opt(0, false, &hex(&options)),
            ..www()
        };
        cases.push(answered(
            format!("EDNS options ignored by userspace ({label}): answered"),
            query.frame(),
            Shape::Ipv4.reply(&answer(&query, Some(false), 60, &WWW)),
        ));
    }

    // Every length of the UDP checksum's tail over IPv6, with and without OPT.
    let longest_name = test_zone::longest_name();
    for (label, name, ttl, addresses) in [
        ("www", "www.example.com", 60, &WWW[..]),
        ("wWw", "wWw.example.com", 60, &WWW[..]),
        (
            "the longest name",
            longest_name.as_str(),
            LONGEST_TTL,
            &LONGEST[..],
        ),
    ] {
        for edns in [None, Some(true)] {
            let query = match edns {
                Some(dnssec_ok) => Query::with_edns(name, dnssec_ok),
                None => Query::new(name),
            };
            let dns = answer(&query, edns, ttl, addresses);
            let opt = if edns.is_some() { ", OPT" } else { "" };
            cases.push(answered(
                format!(
                    "IPv6 UDP checksum: {label}{opt} ({}-octet UDP payload)",
                    dns.len()
                ),
                Shape::Ipv6.query(&query),
                Shape::Ipv6.reply(&dns),
            ));
        }
    }
    cases
}

/// UDP to the service that is not a query the map answers.
fn dns_passed_cases() -> Vec<Case> {
    let mut cases = vec![
        passed(
            "UDP to another port",
            udp_frame(
                CLIENT_MAC,
                POP_MAC,
                CLIENT_IP,
                POP_IP,
                CLIENT_PORT,
                5353,
                &www().bytes(),
            ),
            Counter::NotService,
        ),
        passed(
            "a response (QR set)",
            Query {
                flags: 0x8500,
                ..www()
            }
            .frame(),
            Counter::NotQuery,
        ),
        passed(
            "opcode STATUS",
            Query {
                flags: 0x1000,
                ..www()
            }
            .frame(),
            Counter::NotQuery,
        ),
    ];
    for (name, counts) in [("QDCOUNT 0", [0, 0, 0, 0]), ("QDCOUNT 2", [2, 0, 0, 0])] {
        let frame = Query { counts, ..www() }.frame();
        cases.push(passed(name, frame, Counter::QuestionCount));
    }
    for (name, counts) in [
        ("ANCOUNT 1", [1, 1, 0, 0]),
        ("NSCOUNT 1", [1, 0, 1, 0]),
        ("ARCOUNT 2", [1, 0, 0, 2]),
    ] {
        let frame = Query { counts, ..www() }.frame();
        cases.push(passed(name, frame, Counter::ExtraRecords));
    }
    let missing_opt = Query {
        counts: [1, 0, 0, 1],
        ..www()
    };
    cases.push(passed(
        "ARCOUNT 1 and no record after the question",
        missing_opt.frame(),
        Counter::Malformed,
    ));
    let too_long = format!(
        "{}.x.example.com",
        test_zone::longest_name().trim_end_matches(".example.com.")
    );
    cases.push(passed(
        "a name over 255 octets",
        Query::new(&too_long).frame(),
        Counter::NameTooLong,
    ));
    let mut pointer = www();
    pointer.name = hex("03 777777 c00c");
    cases.push(passed(
        "a compression pointer in the question",
        pointer.frame(),
        Counter::BadName,
    ));
    cases.push(passed(
        "class CHAOS",
        Query { qclass: 3, ..www() }.frame(),
        Counter::NotInClass,
    ));
    cases.push(passed(
        "a name the zone lacks",
        Query::new("nope.example.com").frame(),
        Counter::UnknownName,
    ));
    cases.push(passed(
        "a type the name lacks (AAAA of mail)",
        Query {
            qtype: 28,
            ..Query::new("mail.example.com")
        }
        .frame(),
        Counter::UnknownName,
    ));
    let mut trailing = www().frame();
    trailing.extend_from_slice(&[0; 3]);
    // The IP and UDP lengths agree with the longer payload: only the DNS message is malformed.
    fix_lengths(&mut trailing);
    cases.push(passed(
        "bytes after the question",
        trailing,
        Counter::Malformed,
    ));
    let mut udp_len_lies = www().frame();
    udp_len_lies[38..40].copy_from_slice(&200_u16.to_be_bytes());
    cases.push(passed(
        "a UDP length past the frame's end",
        udp_len_lies,
        Counter::Malformed,
    ));

    let version_one = Query {
        counts: [1, 0, 0, 1],
        additional: opt(1, false, &[]),
        ..www()
    };
    cases.push(passed(
        "EDNS version 1",
        version_one.frame(),
        Counter::EdnsVersion,
    ));
    // Each EDNS option must lie inside the OPT record, as userspace and Knot require; NSID and
    // EXPIRE, and more options than the program walks, are answered by userspace.
    let seventeen = "000c 0000 ".repeat(17);
    for (label, options, counter) in [
        (
            "an option running past its OPT record",
            "000a 0008 01020304",
            Counter::Malformed,
        ),
        (
            "an option cut short by the record",
            "000a 0008 0102030405060708 00",
            Counter::Malformed,
        ),
        ("half an option header", "000a 00", Counter::Malformed),
        ("NSID", "0003 0000", Counter::EdnsOption),
        (
            "EXPIRE after a cookie",
            "000a 0000 0009 0000",
            Counter::EdnsOption,
        ),
        ("17 options", seventeen.as_str(), Counter::EdnsOption),
    ] {
        let query = Query {
            counts: [1, 0, 0, 1],
            additional: opt(0, false, &hex(options)),
            ..www()
        };
        cases.push(passed(&format!("EDNS: {label}"), query.frame(), counter));
    }
    let not_opt = Query {
        counts: [1, 0, 0, 1],
        additional: hex("00 0001 0001 00000000 0004 c0000201"),
        ..www()
    };
    cases.push(passed(
        "an additional record that is not OPT",
        not_opt.frame(),
        Counter::ExtraRecords,
    ));
    let mut short_rdata = Query::with_edns("www.example.com", false);
    short_rdata.additional[10] = 4; // RDLENGTH 4 with no RDATA following
    cases.push(passed(
        "an OPT RDLENGTH past the message's end",
        short_rdata.frame(),
        Counter::Malformed,
    ));
    cases
}

/// Frames that are not DNS over UDP over plain IP.
fn frame_passed_cases() -> Vec<Case> {
    let mut v6_fragment = www().frame_v6();
    v6_fragment[20] = 44; // next header: a fragment header, not UDP

    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
        .ipv4(CLIENT_IP, POP_IP, 64)
        .tcp(CLIENT_PORT, 53, 1, 1000)
        .write(&mut tcp, &www().bytes())
        .expect("frame builds");

    let mut fragment = www().frame();
    fragment[20] |= 0x20; // More Fragments
    let mut options = www().frame();
    options[14] = 0x46; // IHL 6: four bytes of options
    let mut arp = www().frame();
    arp[12..14].copy_from_slice(&0x0806_u16.to_be_bytes());
    let mut qinq = www().vlan_frame(false);
    qinq[16..18].copy_from_slice(&0x8100_u16.to_be_bytes());

    vec![
        passed(
            "IPv6 with a fragment header",
            v6_fragment,
            Counter::IpUnsupported,
        ),
        passed("TCP to port 53", tcp, Counter::NotUdp),
        passed("an IPv4 fragment", fragment, Counter::IpUnsupported),
        passed("IPv4 with options", options, Counter::IpUnsupported),
        passed("ethertype ARP", arp, Counter::NotIp),
        passed("two VLAN tags (QinQ)", qinq, Counter::NotIp),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::cases;

    /// A failure names its case, and the benchmark's table lists them: one name, one case.
    #[test]
    fn case_names_are_unique() {
        let cases = cases();
        let names: BTreeSet<&str> = cases.iter().map(|case| case.name.as_str()).collect();
        assert_eq!(names.len(), cases.len());
    }
}
