//! The DNS benchmark's measuring chain on a real veth pair: trafgen sends prebuilt query frames
//! from the client end, the no-lookup reflector answers them in the PoP's XDP hook, and the reply
//! sink on the client end drops the replies after the veth counted them. The counters must show
//! every query answered, nothing reaching the client's stack, and the maps the process holds must
//! show up in its locked memory: the numbers `bench dns` reports rest on these.

use std::time::{Duration, Instant};

use anyhow::Result;
use edge_common::program_name;
use edge_tests::{
    bench::{
        footprint,
        reply_sink::ReplySink,
        trafgen::{self, Addresses, LinkCounters, TrafgenRun},
        zone::BenchZone,
    },
    topology::{ClientXdp, Topology},
    xdp::Loaded,
};

const INTERFACE: &str = Topology::INTERFACE;

#[test]
fn trafgen_queries_are_answered_and_counted_at_the_client_end() -> Result<()> {
    let topology = Topology::client_and_pop_with("bench-load", ClientXdp::None)?;
    let addresses = Addresses {
        client_mac: topology.client.mac_octets(INTERFACE)?,
        server_mac: topology.pop.mac_octets(INTERFACE)?,
        client: Topology::CLIENT_V4.octets(),
        server: Topology::POP_V4.octets(),
    };
    let frames =
        trafgen::config((0..100).map(|i| trafgen::query_frame(&addresses, &BenchZone::name(i))));
    let config = topology.write_file("frames.cfg", &frames)?;

    // The object loaded in this process holds its maps open: their memory is counted.
    let without_maps = footprint::map_memlock(std::process::id())?;
    let loaded = Loaded::reflector()?;
    assert!(footprint::map_memlock(std::process::id())? > without_maps);
    drop(loaded);
    assert_eq!(footprint::map_memlock(std::process::id())?, without_maps);

    let _reflector = topology.pop.attach_xdp(INTERFACE, program_name::REFLECT)?;
    let _sink = ReplySink::attach(
        &topology.client,
        INTERFACE,
        topology.pin_root().join("reply-sink"),
    )?;
    // IPv4 alone: IPv6's own chatter after link-up (router solicitations, MLD reports) would
    // count as queries sent or replies received.
    for netns in [&topology.client, &topology.pop] {
        netns.run("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"])?;
    }
    let before = LinkCounters::read(&topology.client, INTERFACE)?;
    let udp_before = udp_datagrams(&topology)?;
    let report = trafgen::measure(
        &topology.client,
        &TrafgenRun {
            config: &config,
            interface: INTERFACE,
            rate: Some(5_000),
            seconds: 1.0,
            cpu: 0,
        },
        &topology.work_dir().join("trafgen.log"),
    )?;
    assert_eq!(report.aborted, None);
    assert!(report.sent >= 2_000, "{report:?}");
    // The window closes while trafgen still sends: a reply or two may still be on its way.
    assert!(
        report.answered + 5 >= report.sent && report.answered <= report.sent + 5,
        "{report:?}"
    );
    // The sink dropped them all before the client's stack saw one.
    assert_eq!(udp_datagrams(&topology)?, udp_before);
    // With trafgen stopped, every query sent was answered: the last replies arrive soon.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counters = LinkCounters::read(&topology.client, INTERFACE)?;
        if counters.rx_packets - before.rx_packets == counters.tx_packets - before.tx_packets {
            break;
        }
        assert!(Instant::now() < deadline, "{before:?} → {counters:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// UDP datagrams the client namespace's stack received (delivered or not), from `nstat`'s
/// absolute counters.
fn udp_datagrams(topology: &Topology) -> Result<u64> {
    let output = topology.client.run(
        "nstat",
        &["-a", "-z", "UdpInDatagrams", "UdpNoPorts", "UdpInErrors"],
    )?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}
