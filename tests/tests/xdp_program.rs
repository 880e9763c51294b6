//! The XDP program on crafted frames through BPF_PROG_TEST_RUN, Katran-style: this frame in, that
//! frame out, this verdict, this counter. No NIC involved; the kernel's verifier and helpers are.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};
use edge_common::{Counter, map_name, program_name};
use edge_user::{
    config::Config,
    dns::fast_path,
    maps::{AnswerMap, Counters, ServiceMap},
    zone::Zones,
};
use etherparse::PacketBuilder;

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const POP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const CLIENT_IP: [u8; 4] = [198, 18, 0, 1];
const POP_IP: [u8; 4] = [198, 18, 0, 2];
const CLIENT_PORT: u16 = 40_000;
const CLIENT_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const POP_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const VLAN_ID: u16 = 42;

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

struct Program {
    ebpf: Ebpf,
    counters: Counters,
    _answers: AnswerMap,
    _services: ServiceMap,
}

impl Program {
    /// The embedded object, loaded with private (unpinned) maps holding [`zone`], answering on
    /// port 53 of every address.
    fn load() -> Result<Self> {
        Self::serving(&[])
    }

    /// As [`Program::load`], answering on `listen` only.
    fn serving(listen: &[SocketAddr]) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_name::ANSWERS, 64)
            .load(edge_user::EBPF_OBJECT)?;
        let mut answers = AnswerMap::new(ebpf.take_map(map_name::ANSWERS).context("answers")?)?;
        let mut services = ServiceMap::new(ebpf.take_map(map_name::SERVICES).context("services")?)?;
        let counters = Counters::new(ebpf.take_map(map_name::COUNTERS).context("counters")?)?;
        let path = Path::new("fixture.toml");
        let config = Config::parse(path, &zone())?;
        answers.replace(&fast_path::entries(&Zones::build(path, &config)?)?)?;
        services.replace(&fast_path::services(listen))?;
        let program: &mut Xdp = ebpf.program_mut(program_name::DNS).unwrap().try_into()?;
        program.load()?;
        Ok(Self {
            ebpf,
            counters,
            _answers: answers,
            _services: services,
        })
    }

    /// Runs `frame` through the program: its verdict and the frame it leaves.
    fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(program_name::DNS)
            .unwrap()
            .try_into()?;
        let mut out = vec![0_u8; 4096];
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    fn counts(&self) -> Result<BTreeMap<&'static str, u64>> {
        Ok(self
            .counters
            .read()?
            .into_iter()
            .map(|(counter, count)| (counter.name(), count))
            .collect())
    }

    /// Asserts that `frame` is passed untouched and counted under `reason`.
    fn assert_passed(&mut self, frame: &[u8], reason: Counter) -> Result<()> {
        let before = self.counts()?;
        let (verdict, out) = self.run(frame)?;
        assert_eq!(verdict, XDP_PASS, "expected XDP_PASS for {}", reason.name());
        assert_eq!(
            out,
            frame,
            "a passed frame must be left as it was ({})",
            reason.name()
        );
        let after = self.counts()?;
        assert_eq!(after[reason.name()], before[reason.name()] + 1, "{after:?}");
        assert_eq!(after["answered"], before["answered"]);
        Ok(())
    }
}

/// Wire-format name from dotted text (no escapes needed here).
fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

struct Query {
    id: u16,
    flags: u16,
    counts: [u16; 4],
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    /// Bytes after the question (an OPT record, or junk).
    additional: Vec<u8>,
}

/// An OPT record: payload size 4096, `version`, DO if `dnssec_ok`, and `options` as RDATA.
fn opt(version: u8, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0,
        0,
        41,
        0x10,
        0x00,
        0,
        version,
        if dnssec_ok { 0x80 } else { 0 },
        0,
    ];
    out.extend_from_slice(&(options.len() as u16).to_be_bytes());
    out.extend_from_slice(options);
    out
}

impl Query {
    fn new(name: &str) -> Self {
        Self {
            id: 0xbeef,
            flags: 0x0100,
            counts: [1, 0, 0, 0],
            name: wire(name),
            qtype: 1,
            qclass: 1,
            additional: Vec::new(),
        }
    }

    /// The query with an OPT record.
    fn with_edns(name: &str, dnssec_ok: bool) -> Self {
        Self {
            counts: [1, 0, 0, 1],
            additional: opt(0, dnssec_ok, &[]),
            ..Self::new(name)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for count in self.counts {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.qtype.to_be_bytes());
        out.extend_from_slice(&self.qclass.to_be_bytes());
        out.extend_from_slice(&self.additional);
        out
    }

    fn frame(&self) -> Vec<u8> {
        udp_frame(
            CLIENT_MAC,
            POP_MAC,
            CLIENT_IP,
            POP_IP,
            CLIENT_PORT,
            53,
            &self.bytes(),
        )
    }

    fn frame_v6(&self) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
            .ipv6(CLIENT_IP6, POP_IP6, 64)
            .udp(CLIENT_PORT, 53);
        let mut out = Vec::new();
        builder.write(&mut out, &self.bytes()).unwrap();
        out
    }

    /// The query in an 802.1Q frame.
    fn vlan_frame(&self, ipv6: bool) -> Vec<u8> {
        let builder =
            PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC).single_vlan(VLAN_ID.try_into().unwrap());
        let mut out = Vec::new();
        if ipv6 {
            let builder = builder.ipv6(CLIENT_IP6, POP_IP6, 64).udp(CLIENT_PORT, 53);
            builder.write(&mut out, &self.bytes()).unwrap();
        } else {
            let builder = builder.ipv4(CLIENT_IP, POP_IP, 64).udp(CLIENT_PORT, 53);
            builder.write(&mut out, &self.bytes()).unwrap();
        }
        out
    }
}

/// Checks a reply frame's headers (addresses and ports swapped, lengths and checksums right) and
/// returns its DNS message.
fn dns_of_reply(frame: &[u8], ipv6: bool, vlan: bool) -> Vec<u8> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let packet = SlicedPacket::from_ethernet(frame).expect("reply parses");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("not Ethernet")
    };
    assert_eq!((eth.source(), eth.destination()), (POP_MAC, CLIENT_MAC));
    assert_eq!(packet.vlan().is_some(), vlan);
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        panic!("not UDP")
    };
    assert_eq!(
        (udp.source_port(), udp.destination_port()),
        (53, CLIENT_PORT)
    );
    let payload = udp.payload().to_vec();
    assert_eq!(usize::from(udp.length()), 8 + payload.len());
    match packet.net.as_ref().unwrap() {
        NetSlice::Ipv6(ip) => {
            assert!(ipv6);
            let header = ip.header().to_header();
            assert_eq!((header.source, header.destination), (POP_IP6, CLIENT_IP6));
            assert_eq!(usize::from(header.payload_length), 8 + payload.len());
            let expected = udp
                .to_header()
                .calc_checksum_ipv6(&header, &payload)
                .unwrap();
            assert_eq!(udp.checksum(), expected, "UDP checksum over IPv6");
        }
        NetSlice::Ipv4(ip) => {
            assert!(!ipv6);
            let header = ip.header().to_header();
            assert_eq!((header.source, header.destination), (POP_IP, CLIENT_IP));
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            assert_eq!(udp.checksum(), 0);
        }
        NetSlice::Arp(_) => panic!("ARP"),
    }
    payload
}

fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn known_query_gets_the_exact_reply() -> Result<()> {
    let mut program = Program::load()?;
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
    let mut program = Program::load()?;
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
    let mut program = Program::load()?;
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
    let mut program = Program::load()?;
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
    let mut program = Program::load()?;
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
    let mut program = Program::load()?;
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
    let mut program = Program::load()?;
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
    let mut program = Program::serving(&listen)?;
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
    Ok(())
}
