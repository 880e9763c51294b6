//! The XDP program on crafted frames through BPF_PROG_TEST_RUN, Katran-style: this frame in, that
//! frame out, this verdict, this counter. No NIC involved; the kernel's verifier and helpers are.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};
use edge_common::{Counter, map_name, program_name};
use edge_user::{
    config::Config,
    dns::fast_path,
    maps::{AnswerMap, Counters},
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
}

impl Program {
    /// The embedded object, loaded with private (unpinned) maps holding [`zone`].
    fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_name::ANSWERS, 64)
            .load(edge_user::EBPF_OBJECT)?;
        let mut answers = AnswerMap::new(ebpf.take_map(map_name::ANSWERS).context("answers")?)?;
        let counters = Counters::new(ebpf.take_map(map_name::COUNTERS).context("counters")?)?;
        let path = Path::new("fixture.toml");
        let config = Config::parse(path, &zone())?;
        answers.replace(&fast_path::entries(&Zones::build(path, &config)?)?)?;
        let program: &mut Xdp = ebpf.program_mut(program_name::DNS).unwrap().try_into()?;
        program.load()?;
        Ok(Self {
            ebpf,
            counters,
            _answers: answers,
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
    program.assert_passed(&wrong_port, Counter::NotDnsPort)?;

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
    let with_opt = Query {
        counts: [1, 0, 0, 1],
        ..query()
    };
    program.assert_passed(&with_opt.frame(), Counter::ExtraRecords)?;

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

    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
        .ipv6([0x20; 16], [0x21; 16], 64)
        .udp(CLIENT_PORT, 53)
        .write(&mut v6, &payload)?;
    program.assert_passed(&v6, Counter::NotIp)?;

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
    Ok(())
}

/// Rewrites the IPv4 total length and UDP length of `frame` to match its size.
fn fix_lengths(frame: &mut [u8]) {
    let ip_len = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
}
