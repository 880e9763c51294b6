//! The XDP program on crafted frames through BPF_PROG_TEST_RUN, Katran-style: this frame in, that
//! frame out, this verdict, this counter. The cases are data (`edge_tests::xdp_cases`), shared
//! with the program-cost benchmark; what a table row cannot say (every truncation of a frame, a
//! change of the service addresses, a generation flip, the verifier's headroom) is a test here.
//! No NIC involved; the kernel's verifier and helpers are.

use std::net::SocketAddr;

use anyhow::Result;
use edge_common::Counter;
use edge_dns::fast_path;
use edge_tests::{bench::program_cost, xdp::*, xdp_cases};
use etherparse::PacketBuilder;

/// The verifier walks every path of the program and gives up at 1 M instructions: past that
/// the program does not load at all. A change that multiplies the paths (an inlined loop, one
/// more length class) shows here while there is still room, not as a load failure.
#[test]
fn verification_leaves_headroom() -> Result<()> {
    const LIMIT: u32 = 1_000_000;
    let verified = xdp_cases::program()?.verified_instructions()?;
    eprintln!("the verifier walked {verified} instructions");
    assert!(
        verified < LIMIT * 3 / 4,
        "the verifier walked {verified} instructions of its {LIMIT}"
    );
    Ok(())
}

/// Every case of the table (`edge_tests::xdp_cases`): its verdict, its frame out, its counter.
/// All cases run; the failures are reported together.
#[test]
fn every_case_gives_its_verdict_frame_and_counter() -> Result<()> {
    let mut program = xdp_cases::program()?;
    let cases = xdp_cases::cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| case.check(&mut program).err())
        .map(|error| format!("{error:#}"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    Ok(())
}

/// The program-cost benchmark times the same table: each case checked, then timed.
#[test]
fn the_benchmark_checks_and_times_every_case() -> Result<()> {
    let costs = program_cost::cases(1)?;
    assert_eq!(costs.len(), xdp_cases::cases().len());
    assert!(costs.iter().all(|cost| cost.nanos > 0.0), "{costs:?}");
    Ok(())
}

#[test]
fn every_truncation_is_passed() -> Result<()> {
    let mut program = xdp_cases::program()?;
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
fn only_service_addresses_are_answered() -> Result<()> {
    let listen: Vec<SocketAddr> = vec!["198.18.0.2:53".parse()?, "[2001:db8::2]:5353".parse()?];
    let mut program = Program::load(&xdp_cases::config(), &listen)?;
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

/// A zone of `names` names with one A record each; name `changed` (if any) answers another
/// address.
fn many_names(names: usize, changed: Option<usize>) -> String {
    let mut zone = String::from("[[zones]]\napex = \"example.com\"\n");
    for i in 0..names {
        let last = if Some(i) == changed { 200 } else { 10 };
        zone += &format!(
            "[[zones.names]]\nname = \"n{i}\"\na = [\"10.{}.{}.{last}\"]\n",
            i / 256 % 256,
            i % 256
        );
    }
    zone
}

/// Reloads write what changed, not the whole zone: in the name table a changed answer is one
/// slot written (beside the old one, which is then removed), an unchanged one none, a removed
/// name one slot marked removed; and the program answers the new data at once.
#[test]
fn a_publish_writes_only_what_changed() -> Result<()> {
    const NAMES: usize = 20_000;
    let mut program = Program::load_sized(&many_names(NAMES, None), &[], NAMES as u32 + 64)?;
    assert_eq!(
        first_address(&mut program, "n777.example.com")?,
        [10, 3, 9, 10]
    );

    let one = publish(&mut program, &many_names(NAMES, Some(777)))?;
    assert_eq!(
        (
            one.answers.written,
            one.answers.removed,
            one.answers.unchanged
        ),
        (1, 0, NAMES - 1)
    );
    assert_eq!(
        first_address(&mut program, "n777.example.com")?,
        [10, 3, 9, 200]
    );
    assert_eq!(
        first_address(&mut program, "n778.example.com")?,
        [10, 3, 10, 10]
    );

    let again = publish(&mut program, &many_names(NAMES, Some(777)))?;
    assert_eq!((again.answers.written, again.answers.removed), (0, 0));

    // Back, and one name fewer: its slot is removed and the program passes it to userspace.
    let fewer = publish(&mut program, &many_names(NAMES - 1, None))?;
    assert_eq!((fewer.answers.written, fewer.answers.removed), (1, 1));
    assert_eq!(
        first_address(&mut program, "n777.example.com")?,
        [10, 3, 9, 10]
    );
    let last = format!("n{}.example.com", NAMES - 1);
    program.assert_passed(
        &Query::new(&last).frame(),
        edge_common::Counter::UnknownName,
    )?;

    // Many rounds of changes reuse removed slots (after a grace period) instead of filling the
    // table: every name still answers.
    for round in 0..5 {
        publish(&mut program, &many_names(NAMES, Some(round)))?;
    }
    for i in (0..NAMES).step_by(997) {
        let expected = if i == 4 { 200 } else { 10 };
        let name = format!("n{i}.example.com");
        assert_eq!(
            first_address(&mut program, &name)?,
            [10, (i / 256 % 256) as u8, (i % 256) as u8, expected],
            "{name}"
        );
    }
    Ok(())
}

fn zones_of(zone: &str) -> Result<edge_dns::zone::Zones> {
    let path = std::path::Path::new("steered.toml");
    Ok(edge_dns::zone::Zones::build(
        path,
        &edge_config::Config::parse(path, zone)?,
    )?)
}

/// A steering round whose names all hold selection slots writes the selection map and flips
/// the generation, nothing else: no other name's entry is built, read or written.
#[test]
fn a_steering_round_writes_only_the_selections() -> Result<()> {
    let forward = steered_zone(["198.51.100.1", "198.51.100.2"]);
    let backward = steered_zone(["198.51.100.2", "198.51.100.1"]);
    let mut program = Program::load(&forward, &[])?;
    let steered = edge_dns::fast_path::steered_entries(&zones_of(&backward)?)?;
    assert_eq!(steered.len(), 2, "www and shop, not static");
    let round = program
        .answers
        .publish_selections(&steered)?
        .expect("both names hold slots");
    assert!(round.flipped);
    assert_eq!(round.steered_written, 2);
    assert_eq!(
        round.answers,
        edge_dataplane::maps::AnswerChanges::default()
    );
    for name in ["www.example.com", "shop.example.com"] {
        assert_eq!(first_address(&mut program, name)?, [198, 51, 100, 2]);
    }
    assert_eq!(
        first_address(&mut program, "static.example.com")?,
        [192, 0, 2, 99]
    );

    // A steered name without a slot yet (a reload added it) needs the full publish.
    let added = backward + "[[zones.names]]\nname = \"new\"\npool = \"shop\"\n";
    let steered = edge_dns::fast_path::steered_entries(&zones_of(&added)?)?;
    assert!(program.answers.publish_selections(&steered)?.is_none());
    Ok(())
}
