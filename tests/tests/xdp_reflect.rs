//! The benchmark's ceiling, `edge_reflect`, on crafted frames through BPF_PROG_TEST_RUN: every
//! DNS query to port 53 comes back as its own response (QR set, addresses and ports swapped,
//! checksums right), everything else is passed untouched. A ceiling that answered wrongly would
//! make the benchmark's comparison meaningless.

use anyhow::Result;
use edge_tests::xdp::{
    CLIENT_IP as CLIENT_V4, CLIENT_IP6 as CLIENT_V6, CLIENT_MAC, CLIENT_PORT, Loaded,
    POP_IP as POP_V4, POP_IP6 as POP_V6, POP_MAC, XDP_PASS, XDP_TX,
};
use etherparse::PacketBuilder;

/// A DNS message for `www.example.com A` with the given header flags.
fn dns(flags: u16) -> Vec<u8> {
    let mut message = vec![0xbe, 0xef];
    message.extend_from_slice(&flags.to_be_bytes());
    message.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    message.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    message
}

/// An Ethernet/IP/UDP frame under construction, all but the payload.
type PacketBuilderStep = etherparse::PacketBuilderStep<etherparse::UdpHeader>;

fn frame(builder: PacketBuilderStep, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

fn v4(from: ([u8; 6], [u8; 4], u16), to: ([u8; 6], [u8; 4], u16)) -> PacketBuilderStep {
    PacketBuilder::ethernet2(from.0, to.0)
        .ipv4(from.1, to.1, 64)
        .udp(from.2, to.2)
}

fn v6(from: ([u8; 6], [u8; 16], u16), to: ([u8; 6], [u8; 16], u16)) -> PacketBuilderStep {
    PacketBuilder::ethernet2(from.0, to.0)
        .ipv6(from.1, to.1, 64)
        .udp(from.2, to.2)
}

#[test]
fn ipv4_query_is_reflected_as_its_response() -> Result<()> {
    let mut reflector = Loaded::reflector()?;
    let client = (CLIENT_MAC, CLIENT_V4, CLIENT_PORT);
    let pop = (POP_MAC, POP_V4, 53);
    let (verdict, out) = reflector.run(&frame(v4(client, pop), &dns(0x0100)))?;
    assert_eq!(verdict, XDP_TX);
    let mut expected = frame(v4(pop, client), &dns(0x8100));
    // UDP checksum zero: "none" over IPv4. etherparse's IPv4 header checksum must match.
    expected[40..42].copy_from_slice(&[0, 0]);
    assert_eq!(out, expected);
    Ok(())
}

#[test]
fn ipv6_query_is_reflected_with_a_valid_udp_checksum() -> Result<()> {
    let mut reflector = Loaded::reflector()?;
    let client = (CLIENT_MAC, CLIENT_V6, CLIENT_PORT);
    let pop = (POP_MAC, POP_V6, 53);
    let (verdict, out) = reflector.run(&frame(v6(client, pop), &dns(0x0100)))?;
    assert_eq!(verdict, XDP_TX);
    // etherparse computes the checksum of the expected response from scratch.
    assert_eq!(out, frame(v6(pop, client), &dns(0x8100)));
    Ok(())
}

#[test]
fn everything_else_is_passed_untouched() -> Result<()> {
    let mut reflector = Loaded::reflector()?;
    let client = (CLIENT_MAC, CLIENT_V4, CLIENT_PORT);
    let pop = (POP_MAC, POP_V4, 53);
    let not_dns_port = (POP_MAC, POP_V4, 5353);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let frames = [
        ("a response", frame(v4(client, pop), &dns(0x8180))),
        (
            "another port",
            frame(v4(client, not_dns_port), &dns(0x0100)),
        ),
        (
            "shorter than a DNS header",
            frame(v4(client, pop), &[0xbe, 0xef]),
        ),
        ("ARP", arp),
    ];
    for (what, frame) in frames {
        let (verdict, out) = reflector.run(&frame)?;
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, frame, "{what} must be left as it was");
    }
    Ok(())
}
