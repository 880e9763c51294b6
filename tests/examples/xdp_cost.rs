//! Cost of the XDP program per query, measured by the kernel (BPF_PROG_TEST_RUN, one run per
//! frame) over the benchmark's zone and query set: edge_dns and the reflector. Each frame's
//! figure is its fastest of several rounds, which filters out other work on the machine.

use anyhow::Result;
use aya::EbpfLoader;
use edge_common::{map_name, program_name};
use edge_tests::{
    bench::zone::{BenchZone, EdgeSettings},
    xdp::{Loaded, Program, Query, XDP_TX},
};
use std::time::Duration;

fn main() -> Result<()> {
    let names: usize = std::env::args().nth(1).map_or(Ok(1000), |n| n.parse())?;
    let rounds: usize = std::env::args().nth(2).map_or(Ok(5), |n| n.parse())?;
    let asked = names.min(10_000);
    let zone = BenchZone::new(names);
    let config = zone.edge_config(&EdgeSettings {
        interface: "lo",
        pin_root: std::path::Path::new("/sys/fs/bpf/unused"),
        mode: "generic",
        dns_listen: None,
    });
    let mut program = Program::load_sized(&config, &[], (names + 2048) as u32)?;
    let ebpf = EbpfLoader::new()
        .map_max_entries(map_name::ANSWERS, 1)
        .load(edge_user::EBPF_OBJECT)?;
    let mut reflector = Loaded::new(ebpf, program_name::REFLECT)?;
    let frames: Vec<Vec<u8>> = (0..asked)
        .map(|i| Query::new(&BenchZone::name((i * 7919) % names)).frame())
        .collect();
    let mut edge = vec![Duration::MAX; asked];
    let mut reflect = vec![Duration::MAX; asked];
    let mut answered = 0;
    for _ in 0..rounds {
        for (i, frame) in frames.iter().enumerate() {
            let (verdict, took) = program.time(frame)?;
            answered += usize::from(verdict == XDP_TX);
            edge[i] = edge[i].min(took);
            let (_, took) = reflector.time(frame)?;
            reflect[i] = reflect[i].min(took);
        }
    }
    let mean = |times: &[Duration]| {
        times.iter().map(|t| t.as_nanos()).sum::<u128>() as f64 / times.len() as f64
    };
    println!(
        "edge_dns {:.0} ns ({:.0} % answered), edge_reflect {:.0} ns per query",
        mean(&edge),
        100.0 * answered as f64 / (asked * rounds) as f64,
        mean(&reflect)
    );
    Ok(())
}
