//! The XDP program in a test harness: loaded from the embedded object with private maps, run on
//! crafted frames through BPF_PROG_TEST_RUN (Katran-style: this frame in, that frame out, this
//! verdict, this counter; the cases themselves are in [`crate::xdp_cases`]), and the frame
//! builders they share.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    programs::{TestRun, TestRunOptions, Xdp},
};
use edge_common::{Counter, map_name, program_name};
use edge_config::Config;
use edge_dataplane::{
    maps::{self, AnswerMap, AnswerMaps, Counters, SelectionMap, ServiceMap},
    rrl::RrlMaps,
};
use edge_dns::{fast_path, zone::Zones};
use etherparse::PacketBuilder;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const POP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const CLIENT_IP: [u8; 4] = [198, 18, 0, 1];
pub const POP_IP: [u8; 4] = [198, 18, 0, 2];
pub const CLIENT_PORT: u16 = 40_000;
pub const CLIENT_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const POP_IP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const VLAN_ID: u16 = 42;

/// Steered answers the harness's maps hold.
const STEERED: u16 = 1024;
/// Source prefixes the harness's rate limiter tracks.
pub const RRL_TABLE_SIZE: u32 = 1024;

/// One program of edge's XDP object, loaded, run on crafted frames.
pub struct Loaded {
    ebpf: Ebpf,
    name: &'static str,
}

impl Loaded {
    /// Loads `name` (from [`program_name`]) of the already loaded object `ebpf`.
    pub fn new(mut ebpf: Ebpf, name: &'static str) -> Result<Self> {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the object"))?
            .try_into()?;
        program.load()?;
        Ok(Self { ebpf, name })
    }

    /// The benchmark's ceiling, `edge_reflect`, which reads no map: the object loads with the
    /// answer map at its smallest.
    pub fn reflector() -> Result<Self> {
        let ebpf = EbpfLoader::new()
            .map_max_entries(map_name::NAMES, 1)
            .load(edge_dataplane::EBPF_OBJECT)?;
        Self::new(ebpf, program_name::REFLECT)
    }

    /// Runs `frame` through the program: its verdict and the frame it leaves.
    pub fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let program: &mut Xdp = self.ebpf.program_mut(self.name).unwrap().try_into()?;
        let mut out = vec![0_u8; 4096];
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Instructions the verifier walked to accept the program.
    pub fn verified_instructions(&self) -> Result<u32> {
        let program: &Xdp = self.ebpf.program(self.name).unwrap().try_into()?;
        program
            .info()?
            .verified_instruction_count()
            .context("the kernel reports no verified instruction count")
    }

    /// Runs `frame` through the program once: its verdict and how long the run took, as the
    /// kernel measured it.
    pub fn time(&mut self, frame: &[u8]) -> Result<(u32, std::time::Duration)> {
        let program: &mut Xdp = self.ebpf.program_mut(self.name).unwrap().try_into()?;
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        })?;
        Ok((result.return_value, result.duration))
    }
}

/// The DNS responder with its maps.
pub struct Program {
    loaded: Loaded,
    counters: Counters,
    pub answers: AnswerMaps,
    pub services: ServiceMap,
    /// Off unless a test turns it on.
    pub rrl: RrlMaps,
}

impl Program {
    /// The embedded object, loaded with private (unpinned) maps holding the zones of `config`
    /// (TOML), answering on `listen` (port 53 of every address if empty).
    pub fn load(config: &str, listen: &[SocketAddr]) -> Result<Self> {
        Self::load_sized(config, listen, 4096)
    }

    /// [`Self::load`] with room for `answers` short-name answers.
    pub fn load_sized(config: &str, listen: &[SocketAddr], answers: u32) -> Result<Self> {
        Self::load_object(edge_dataplane::EBPF_OBJECT, config, listen, answers)
    }

    /// [`Self::load_sized`] from another build of the XDP object (`object`, an ELF file's
    /// bytes): the benchmark's baseline.
    pub fn load_object(
        object: &[u8],
        config: &str,
        listen: &[SocketAddr],
        answers: u32,
    ) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(map_name::NAMES, maps::table_slots(answers))
            .map_max_entries(map_name::LONG_ANSWERS, maps::long_entries(1024, answers))
            .map_max_entries(map_name::SELECTIONS, 2 * u32::from(STEERED))
            .map_max_entries(map_name::RRL_BUCKETS, RRL_TABLE_SIZE)
            .load(object)?;
        let rrl = RrlMaps::new(
            ebpf.take_map(map_name::RRL_SETTINGS).context("rrl")?,
            ebpf.take_map(map_name::RRL_EXEMPT).context("rrl exempt")?,
            ebpf.map(map_name::RRL_BUCKETS).context("rrl buckets")?,
        )?;
        let state = ebpf.take_map(map_name::STATE).context("state")?;
        let mut services = ServiceMap::new(
            ebpf.take_map(map_name::SERVICES).context("services")?,
            maps::second_handle(&state)?,
        )?;
        let mut answers = AnswerMaps {
            answers: AnswerMap::new(
                ebpf.take_map(map_name::NAMES).context("names")?,
                ebpf.take_map(map_name::LONG_ANSWERS)
                    .context("long answers")?,
                maps::second_handle(&state)?,
            )?,
            selections: SelectionMap::new(
                ebpf.take_map(map_name::SELECTIONS).context("selections")?,
                state,
                STEERED,
            )?,
        };
        let counters = Counters::new(ebpf.take_map(map_name::COUNTERS).context("counters")?)?;
        let path = Path::new("fixture.toml");
        let config = Config::parse(path, config)?;
        answers.publish(&fast_path::entries(&Zones::build(path, &config)?)?)?;
        services.replace(&fast_path::services(listen))?;
        Ok(Self {
            loaded: Loaded::new(ebpf, program_name::DNS)?,
            counters,
            answers,
            services,
            rrl,
        })
    }

    /// Runs `frame` through the program: its verdict and the frame it leaves.
    pub fn run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.loaded.run(frame)
    }

    /// Runs `frame` through the program: its verdict and the kernel's measure of the run.
    pub fn time(&mut self, frame: &[u8]) -> Result<(u32, std::time::Duration)> {
        self.loaded.time(frame)
    }

    pub fn verified_instructions(&self) -> Result<u32> {
        self.loaded.verified_instructions()
    }

    pub fn counts(&self) -> Result<BTreeMap<&'static str, u64>> {
        Ok(self
            .counters
            .read()?
            .into_iter()
            .map(|(counter, count)| (counter.name(), count))
            .collect())
    }

    /// Asserts that `frame` is passed untouched and counted under `reason`.
    pub fn assert_passed(&mut self, frame: &[u8], reason: Counter) -> Result<()> {
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
pub fn wire(name: &str) -> Vec<u8> {
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

pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub counts: [u16; 4],
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    /// Bytes after the question (an OPT record, or junk).
    pub additional: Vec<u8>,
}

/// An OPT record: payload size 4096, `version`, DO if `dnssec_ok`, and `options` as RDATA.
pub fn opt(version: u8, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
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
    pub fn new(name: &str) -> Self {
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
    pub fn with_edns(name: &str, dnssec_ok: bool) -> Self {
        Self {
            counts: [1, 0, 0, 1],
            additional: opt(0, dnssec_ok, &[]),
            ..Self::new(name)
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
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

    pub fn frame(&self) -> Vec<u8> {
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

    pub fn frame_v6(&self) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
            .ipv6(CLIENT_IP6, POP_IP6, 64)
            .udp(CLIENT_PORT, 53);
        let mut out = Vec::new();
        builder.write(&mut out, &self.bytes()).unwrap();
        out
    }

    /// The query in an 802.1Q frame.
    pub fn vlan_frame(&self, ipv6: bool) -> Vec<u8> {
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
pub fn dns_of_reply(frame: &[u8], ipv6: bool, vlan: bool) -> Vec<u8> {
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

pub fn udp_frame(
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

pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}
