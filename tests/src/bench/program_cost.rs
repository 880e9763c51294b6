//! What the XDP program itself costs per query, apart from the veth, the load generator and
//! their scheduling: each query frame of a zone's query set runs through `edge_dns` and through
//! the reflector with BPF_PROG_TEST_RUN, one run per call, and the kernel times each run. A
//! frame's figure is its fastest of several rounds, which filters out other work on the machine;
//! the timing includes the test-run call's own overhead, the same for both programs.

use std::{path::Path, time::Duration};

use anyhow::{Result, ensure};

use super::zone::{BenchZone, EdgeSettings};
use crate::xdp::{Loaded, Program, Query, XDP_TX};

/// Rounds over the query set; each frame keeps its fastest.
pub const ROUNDS: usize = 20;

/// Mean nanoseconds per query.
#[derive(Debug, Clone, Copy)]
pub struct ProgramCost {
    pub edge: f64,
    pub reflector: f64,
}

/// Times `asked` names of `zone` (spread evenly over it, as [`BenchZone::sample_query_file`]).
pub fn measure(zone: BenchZone, asked: usize) -> Result<ProgramCost> {
    let config = zone.edge_config(&EdgeSettings {
        interface: "lo",
        pin_root: Path::new("/sys/fs/bpf/unused"),
        mode: "generic",
        dns_listen: None,
    });
    let mut edge = Program::load_sized(&config, &[], (zone.names + 1024) as u32)?;
    let mut reflector = Loaded::reflector()?;
    let frames: Vec<Vec<u8>> = (0..asked)
        .map(|i| Query::new(&BenchZone::name(i * zone.names / asked)).frame())
        .collect();
    let mut fastest = vec![(Duration::MAX, Duration::MAX); frames.len()];
    for _ in 0..ROUNDS {
        for (frame, fastest) in frames.iter().zip(&mut fastest) {
            let (verdict, took) = edge.time(frame)?;
            ensure!(
                verdict == XDP_TX,
                "edge_dns did not answer a query of the zone"
            );
            fastest.0 = fastest.0.min(took);
            let (verdict, took) = reflector.time(frame)?;
            ensure!(verdict == XDP_TX, "the reflector did not answer");
            fastest.1 = fastest.1.min(took);
        }
    }
    let mean = |pick: fn(&(Duration, Duration)) -> Duration| {
        fastest
            .iter()
            .map(|f| pick(f).as_nanos() as f64)
            .sum::<f64>()
            / fastest.len() as f64
    };
    Ok(ProgramCost {
        edge: mean(|f| f.0),
        reflector: mean(|f| f.1),
    })
}
