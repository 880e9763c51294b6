//! Random and mutated frames through the XDP program (BPF_PROG_TEST_RUN), differentially: the
//! program either passes the frame untouched, or sends exactly the DNS message that the
//! userspace server (`edge_dns::respond`) sends for that query, byte for byte. A query the userspace
//! server finds malformed (FORMERR, or no response at all) is never answered by the program.
//! `EDGE_FUZZ_FRAMES` sets the count (50,000 by default; `cargo xtask fuzz-xdp` runs
//! 1,000,000); `EDGE_FUZZ_SEED` replays a run.

use std::path::Path;

use anyhow::Result;
use edge_config::Config;
use edge_dns::{
    message::{Transport, respond},
    zone::Zones,
};
use edge_tests::xdp::*;

const DEFAULT_FRAMES: usize = 50_000;

fn zone() -> String {
    let mut names = String::new();
    for i in 0..64 {
        names.push_str(&format!(
            "[[zones.names]]\nname = \"host{i}\"\na = [\"192.0.2.{}\"]\n",
            i + 1
        ));
    }
    format!(
        "[xdp]\ninterface = \"eth0\"\n[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.10\", \"192.0.2.11\", \"192.0.2.12\"]\n[[zones.names]]\nname = \"*.wild\"\na = [\"192.0.2.99\"]\n{names}"
    )
}

/// A valid query for a random known or unknown name, random letter case, type, EDNS, shape.
fn query_frame(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut name: String = match rng.u8(..5) {
        0 => "www.example.com".into(),
        4 => format!("{}.wild.example.com", ["*", "x", "y.z"][rng.usize(..3)]),
        1 => format!("host{}.example.com", rng.u8(..80)),
        2 => format!("{}.example.com", "x".repeat(rng.usize(1..64))),
        _ => format!("host{}.example.com", rng.u8(..64)),
    };
    name = name
        .chars()
        .map(|c| {
            if rng.bool() {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let mut query = if rng.bool() {
        let mut query = Query::with_edns(&name, rng.bool());
        if rng.bool() {
            query.additional = opt(0, rng.bool(), &options(rng));
        }
        query
    } else {
        Query::new(&name)
    };
    query.id = rng.u16(..);
    query.flags = if rng.bool() { 0x0100 } else { 0 };
    query.qtype = *rng.choice(&[1, 1, 1, 28, 16, 255]).unwrap();
    match rng.u8(..4) {
        0 => query.frame_v6(),
        1 => query.vlan_frame(rng.bool()),
        2 => query.vlan_frame(false),
        _ => query.frame(),
    }
}

/// EDNS options, mostly well-formed: cookies, client subnets (valid or not), padding, NSID and
/// EXPIRE (answered in userspace), unknown codes, sometimes a length that runs past the end.
fn options(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.usize(1..4) {
        let code: u16 = *rng.choice(&[3, 8, 9, 10, 10, 12, 15, 65001]).unwrap();
        let data: Vec<u8> = (0..rng.usize(..24)).map(|_| rng.u8(..)).collect();
        let len = if rng.u8(..8) == 0 {
            data.len() as u16 + rng.u16(1..8)
        } else {
            data.len() as u16
        };
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// `frame` with a few random edits: byte flips, truncation, extension, insertion, deletion.
fn mutate(rng: &mut fastrand::Rng, mut frame: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.usize(1..4) {
        match rng.u8(..6) {
            0 | 1 => {
                let i = rng.usize(..frame.len());
                frame[i] = rng.u8(..);
            }
            2 => frame.truncate(rng.usize(14..=frame.len())),
            3 => frame.extend((0..rng.usize(1..32)).map(|_| rng.u8(..))),
            4 => {
                let i = rng.usize(14..=frame.len());
                frame.insert(i, rng.u8(..));
            }
            _ if frame.len() > 14 => {
                frame.remove(rng.usize(14..frame.len()));
            }
            _ => {}
        }
    }
    frame
}

/// The DNS message of a UDP frame (any shape), if it is one.
fn dns_payload(frame: &[u8]) -> Option<Vec<u8>> {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match packet.transport? {
        etherparse::TransportSlice::Udp(udp) => Some(udp.payload().to_vec()),
        _ => None,
    }
}

#[test]
fn any_frame_is_passed_untouched_or_answered_as_userspace_answers() -> Result<()> {
    let frames: usize = std::env::var("EDGE_FUZZ_FRAMES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_FRAMES);
    let seed: u64 = std::env::var("EDGE_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("fuzzing {frames} frames with EDGE_FUZZ_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let text = zone();
    let path = Path::new("fuzz.toml");
    let zones = Zones::build(path, &Config::parse(path, &text)?)?;
    let mut program = Program::load(&text, &[])?;
    let (mut answered, mut passed) = (0, 0);
    for n in 0..frames {
        let frame = match rng.u8(..10) {
            // Pure noise, sometimes behind a plausible Ethernet + IPv4 start.
            0 => {
                let mut noise: Vec<u8> = (0..rng.usize(14..600)).map(|_| rng.u8(..)).collect();
                if rng.bool() {
                    noise[12..14].copy_from_slice(&[0x08, 0x00]);
                }
                noise
            }
            1..=3 => query_frame(&mut rng),
            _ => {
                let frame = query_frame(&mut rng);
                mutate(&mut rng, frame)
            }
        };
        let (verdict, out) = program.run(&frame)?;
        let context = || format!("frame {n} (seed {seed}): {frame:02x?}");
        match verdict {
            XDP_PASS => {
                assert_eq!(out, frame, "passed frame modified: {}", context());
                passed += 1;
            }
            XDP_TX => {
                let query = dns_payload(&frame)
                    .unwrap_or_else(|| panic!("answered a non-UDP frame: {}", context()));
                let reply =
                    dns_payload(&out).unwrap_or_else(|| panic!("reply is not UDP: {}", context()));
                let userspace = respond(&zones, &query, Transport::Udp);
                let Some(userspace) = userspace else {
                    panic!("answered a query userspace drops: {}", context());
                };
                assert_ne!(
                    userspace[3] & 0x0f,
                    1,
                    "answered a query userspace finds malformed: {}",
                    context()
                );
                assert_eq!(
                    hex_of(&reply),
                    hex_of(&userspace),
                    "XDP (left) and userspace (right) differ: {}",
                    context()
                );
                answered += 1;
            }
            other => panic!("verdict {other}: {}", context()),
        }
    }
    eprintln!("{answered} answered (each equal to userspace's reply), {passed} passed");
    // The generator must exercise both sides, or the test proves nothing.
    assert!(
        answered > frames / 20 && passed > frames / 20,
        "{answered} answered, {passed} passed"
    );
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
