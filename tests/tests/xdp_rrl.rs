//! Response rate limiting in the XDP program: through BPF_PROG_TEST_RUN, exactly which query of
//! a prefix is answered, dropped or slipped; then a spoofed flood at a real `edge` in a
//! namespace, with a real client (kdig) answered beside it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use edge_common::{Counter, RrlSettings};
use edge_config::rrl::RrlConfig;
use edge_tests::{
    dig::kdig,
    edge::{EdgeProcess, counters},
    test_zone,
    topology::{Netns, Topology},
    xdp::*,
    xdp_cases,
};
use etherparse::PacketBuilder;

/// A reply an hour once the burst of three is spent, every second limited query slipped; so
/// slow that no bucket refills while a test runs, however loaded the machine.
const HOUR: u64 = 3_600_000_000_000;
const SETTINGS: RrlSettings = RrlSettings {
    interval_ns: HOUR,
    tolerance_ns: 2 * HOUR,
    slip: 2,
    reserved: 0,
};
const BURST: usize = 3;

/// The test program with RRL on: [`SETTINGS`], 198.51.100.0/24 exempt.
fn limited_program() -> Result<Program> {
    let mut program = xdp_cases::program()?;
    let config = RrlConfig {
        rate: 1,
        burst: Some(BURST as u32),
        slip: 2,
        table_size: RRL_TABLE_SIZE,
        exempt: vec!["198.51.100.0/24".parse().map_err(anyhow::Error::msg)?],
    };
    program.rrl.apply(Some(&config))?;
    program.rrl.set_settings(SETTINGS)?;
    Ok(program)
}

fn from_v4(src: [u8; 4], query: &Query) -> Vec<u8> {
    udp_frame(
        CLIENT_MAC,
        POP_MAC,
        src,
        POP_IP,
        CLIENT_PORT,
        53,
        &query.bytes(),
    )
}

fn from_v6(src: [u8; 16], query: &Query) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, POP_MAC)
        .ipv6(src, POP_IP6, 64)
        .udp(CLIENT_PORT, 53)
        .write(&mut out, &query.bytes())
        .unwrap();
    out
}

/// The truncated reply to `query`: its header with QR and TC set (RD kept), the question only.
fn slipped(query: &Query) -> Vec<u8> {
    let mut dns = query.bytes();
    let question_end = 12 + query.name.len() + 4;
    dns.truncate(question_end);
    dns[2..4].copy_from_slice(&(query.flags | 0x8000 | 0x0200).to_be_bytes());
    dns[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    dns
}

/// Runs `frame` and says what became of it: the counter that moved, and the frame out.
fn outcome(program: &mut Program, frame: &[u8]) -> Result<(Counter, u32, Vec<u8>)> {
    let before = program.counts()?;
    let (verdict, out) = program.run(frame)?;
    let after = program.counts()?;
    let moved: Vec<Counter> = Counter::ALL
        .into_iter()
        .filter(|counter| after[counter.name()] != before[counter.name()])
        .collect();
    ensure!(moved.len() == 1, "counters moved: {moved:?}");
    let expected = match moved[0] {
        Counter::Answered | Counter::Slipped => XDP_TX,
        Counter::RateLimited => XDP_DROP,
        _ => XDP_PASS,
    };
    ensure!(verdict == expected, "{:?} with verdict {verdict}", moved[0]);
    Ok((moved[0], verdict, out))
}

#[test]
fn a_prefix_over_its_burst_is_dropped_and_every_second_limited_query_slips() -> Result<()> {
    let mut program = limited_program()?;
    let query = Query::new("www.example.com");
    for i in 0..BURST {
        let (counter, ..) = outcome(&mut program, &query.frame())?;
        assert_eq!(counter, Counter::Answered, "query {i} of the burst");
    }
    // Limited: the first dropped, the second slipped, and so on.
    let (counter, _, out) = outcome(&mut program, &query.frame())?;
    assert_eq!(counter, Counter::RateLimited);
    assert_eq!(out, query.frame(), "a dropped frame is left as it was");
    let (counter, _, out) = outcome(&mut program, &query.frame())?;
    assert_eq!(counter, Counter::Slipped);
    assert_eq!(dns_of_reply(&out, false, false), slipped(&query));
    // The whole /24 shares the bucket.
    let (counter, ..) = outcome(&mut program, &from_v4([198, 18, 0, 200], &query))?;
    assert_eq!(counter, Counter::RateLimited);
    // The slip drops the OPT record too, and the reply keeps the query's RD and CD.
    let mut edns = Query::with_edns("www.example.com", true);
    edns.flags = 0x0110;
    let (counter, _, out) = outcome(&mut program, &edns.frame())?;
    assert_eq!(counter, Counter::Slipped);
    assert_eq!(dns_of_reply(&out, false, false), slipped(&edns));

    // Another /24 has its own bucket; an exempt one is never limited.
    for _ in 0..BURST + 3 {
        assert_eq!(
            outcome(&mut program, &from_v4([198, 51, 100, 9], &query))?.0,
            Counter::Answered
        );
    }
    assert_eq!(
        outcome(&mut program, &from_v4([198, 18, 1, 1], &query))?.0,
        Counter::Answered
    );
    Ok(())
}

/// Queries the program leaves to the userspace server count against the prefix too: over the
/// limit they are dropped, not passed; frames that are no query to a service stay untouched.
#[test]
fn the_limit_covers_queries_left_to_userspace_but_no_other_frame() -> Result<()> {
    let mut program = limited_program()?;
    let unknown = Query::new("nowhere.example.com");
    for _ in 0..BURST {
        assert_eq!(
            outcome(&mut program, &unknown.frame())?.0,
            Counter::UnknownName
        );
    }
    assert_eq!(
        outcome(&mut program, &unknown.frame())?.0,
        Counter::RateLimited
    );
    // NSID (option 3) is the userspace server's to answer.
    let mut nsid = Query::new("www.example.com");
    nsid.counts[3] = 1;
    nsid.additional = opt(0, false, &[0, 3, 0, 0]);
    let (counter, _, out) = outcome(&mut program, &nsid.frame())?;
    assert_eq!(counter, Counter::RateLimited);
    assert_eq!(out, nsid.frame());
    // Not to a service port: passed as before.
    let other_port = udp_frame(
        CLIENT_MAC,
        POP_MAC,
        CLIENT_IP,
        POP_IP,
        CLIENT_PORT,
        5300,
        &unknown.bytes(),
    );
    assert_eq!(outcome(&mut program, &other_port)?.0, Counter::NotService);
    Ok(())
}

#[test]
fn ipv6_sources_share_a_bucket_per_56() -> Result<()> {
    let mut program = limited_program()?;
    let query = Query::new("www.example.com");
    for _ in 0..BURST {
        assert_eq!(
            outcome(&mut program, &query.frame_v6())?.0,
            Counter::Answered
        );
    }
    assert_eq!(
        outcome(&mut program, &query.frame_v6())?.0,
        Counter::RateLimited
    );
    // 2001:db8:0:ff::1 is in 2001:db8::/56 with the client; 2001:db8:0:100::1 is not.
    let mut same = CLIENT_IP6;
    same[7] = 0xff;
    let (counter, _, out) = outcome(&mut program, &from_v6(same, &query))?;
    assert_eq!(counter, Counter::Slipped);
    let reply = etherparse::SlicedPacket::from_ethernet(&out)?;
    let Some(etherparse::TransportSlice::Udp(udp)) = reply.transport else {
        bail!("the slip is not UDP");
    };
    assert_eq!(udp.payload(), slipped(&query));
    let mut other = CLIENT_IP6;
    other[6] = 0x01;
    assert_eq!(
        outcome(&mut program, &from_v6(other, &query))?.0,
        Counter::Answered
    );
    Ok(())
}

/// Off again (a reload without `[xdp.rrl]`), a limited prefix is answered.
#[test]
fn turned_off_nothing_is_limited() -> Result<()> {
    let mut program = limited_program()?;
    let query = Query::new("www.example.com");
    for _ in 0..BURST + 1 {
        program.run(&query.frame())?;
    }
    assert_eq!(outcome(&mut program, &query.frame())?.0, Counter::Slipped);
    program.rrl.apply(None)?;
    assert_eq!(outcome(&mut program, &query.frame())?.0, Counter::Answered);
    Ok(())
}

/// The program-cost benchmark's rows with RRL on: each path checked, then timed.
#[test]
fn the_benchmark_times_each_rrl_path() -> Result<()> {
    let costs = edge_tests::bench::program_cost::rrl_cases(1)?;
    assert_eq!(costs.len(), 3);
    assert!(costs.iter().all(|cost| cost.nanos > 0.0), "{costs:?}");
    Ok(())
}

/// The spoofed sources: one /24, hosts 1 to 254 in turn.
const FLOOD_PREFIX: [u8; 3] = [203, 0, 113];
const FLOOD_FRAMES: usize = 3000;
/// Sent in bursts this large, a pause between them, so that the flood lasts over a second (kdig
/// asks meanwhile) and no burst overruns the veth's queue.
const FLOOD_BURST: usize = 25;
const FLOOD_PAUSE: Duration = Duration::from_millis(10);
const RATE: u32 = 20;
const KDIG_PAUSE: Duration = Duration::from_millis(200);

fn pop_config(topology: &Topology) -> String {
    format!(
        r#"
[xdp]
interface = "{interface}"
pin_root = "{pin_root}"
[xdp.rrl]
rate = {RATE}
slip = 2
{zone}"#,
        interface = Topology::INTERFACE,
        pin_root = topology.pin_root().display(),
        zone = test_zone::zone(),
    )
}

/// A real `edge` with `[xdp.rrl]`; from the client's namespace a sender floods it with raw
/// frames whose sources are spoofed across one /24, while kdig, from its own address, keeps
/// asking. The flood's prefix gets its burst and its rate, the rest of its queries dropped or
/// slipped; kdig gets every answer.
#[test]
fn a_spoofed_flood_from_one_prefix_is_limited_while_another_client_is_answered() -> Result<()> {
    let topology = Topology::client_and_pop("xdp-rrl")?;
    let config = topology.write_file("edge.toml", &pop_config(&topology))?;
    let _edge = EdgeProcess::start(&topology.pop, &config, &[])?;
    let before = counters(&config)?;

    let started = Instant::now();
    let mut kdig_answers = 0_u64;
    let flood = std::thread::scope(|scope| -> Result<usize> {
        let sender = scope.spawn(|| flood(&topology.client, &topology.pop));
        let server = format!("@{}", Topology::POP_V4);
        while !sender.is_finished() || kdig_answers < 3 {
            let reply = kdig(
                &topology.client,
                // One retry, as any client has: a frame can be lost on a flooded veth.
                &[&server, "www.example.com", "A", "+retry=1", "+time=1"],
            )?;
            ensure!(
                reply.status().as_deref() == Some("NOERROR"),
                "kdig during the flood: {}; counters {:?}",
                reply.text,
                counters(&config)?
            );
            kdig_answers += 1;
            // kdig's own /24 has the same limit: it asks well below the rate.
            std::thread::sleep(KDIG_PAUSE);
        }
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender panicked"))?
    })?;
    let elapsed = started.elapsed();
    // The counters are summed from per-CPU slots; the last frames may still be on their way.
    let deadline = Instant::now() + Duration::from_secs(5);
    let moved =
        |name: &str, after: &std::collections::BTreeMap<String, u64>| after[name] - before[name];
    let after = loop {
        let after = counters(&config)?;
        let seen: u64 = ["answered", "rate_limited", "slipped"]
            .iter()
            .map(|name| moved(name, &after))
            .sum();
        if seen >= flood as u64 + kdig_answers || Instant::now() > deadline {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (answered, dropped, slipped) = (
        moved("answered", &after),
        moved("rate_limited", &after),
        moved("slipped", &after),
    );
    eprintln!(
        "{flood} spoofed frames in {elapsed:.1?}: {answered} answered ({kdig_answers} of them \
         kdig's), {dropped} dropped, {slipped} slipped"
    );
    // The flood's prefix: a burst of RATE, then RATE a second. kdig's answers (a retry at
    // most each) come on top.
    let allowed = u64::from(RATE) * (2 + elapsed.as_secs());
    ensure!(
        answered <= allowed + 2 * kdig_answers,
        "{answered} answered; the flood's prefix may have {allowed}, kdig asked {kdig_answers} \
         times"
    );
    ensure!(
        dropped + slipped + allowed >= flood as u64,
        "of {flood} spoofed queries {dropped} dropped and {slipped} slipped; at most {allowed} \
         may be answered"
    );
    ensure!(
        dropped.abs_diff(slipped) <= 2 + (dropped + slipped) / 20,
        "every second limited query slips: {dropped} dropped, {slipped} slipped"
    );
    Ok(())
}

/// Sends [`FLOOD_FRAMES`] queries from [`FLOOD_PREFIX`] to the PoP as raw Ethernet frames from
/// the client's end of the veth; returns how many went out.
fn flood(client: &Netns, pop: &Netns) -> Result<usize> {
    let client_mac = client.mac_octets(Topology::INTERFACE)?;
    let pop_mac = pop.mac_octets(Topology::INTERFACE)?;
    let query = Query::new("www.example.com");
    let frames: Vec<Vec<u8>> = (0..FLOOD_FRAMES)
        .map(|i| {
            let host = (i % 254 + 1) as u8;
            let src = [FLOOD_PREFIX[0], FLOOD_PREFIX[1], FLOOD_PREFIX[2], host];
            udp_frame(
                client_mac,
                pop_mac,
                src,
                Topology::POP_V4.octets(),
                CLIENT_PORT + host as u16,
                53,
                &query.bytes(),
            )
        })
        .collect();
    client.run_inside(|| send_raw(Topology::INTERFACE, &frames))?
}

/// Sends each frame as it is on `interface` of the calling thread's namespace (AF_PACKET).
fn send_raw(interface: &str, frames: &[Vec<u8>]) -> Result<usize> {
    let name = std::ffi::CString::new(interface)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(index != 0, "no interface {interface}");
    // SAFETY: plain socket creation; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: all-zero is a valid `sockaddr_ll`.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = index as i32;
    address.sll_halen = 6;
    let mut sent = 0;
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 && i % FLOOD_BURST == 0 {
            std::thread::sleep(FLOOD_PAUSE);
        }
        // SAFETY: `frame` and `address` are valid for the lengths given.
        let written = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if written == frame.len() as isize {
            sent += 1;
        }
    }
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(fd) };
    ensure!(
        sent > 0,
        "no frame sent: {}",
        std::io::Error::last_os_error()
    );
    Ok(sent)
}
