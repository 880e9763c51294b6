//! What the XDP program itself costs per query, apart from the veth, the load generator and
//! their scheduling: each query frame of a zone's query set runs through `edge_dns` and through
//! the reflector with BPF_PROG_TEST_RUN, one run per call, and the kernel times each run. A
//! frame's figure is its fastest of several rounds, which filters out other work on the machine;
//! the timing includes the test-run call's own overhead, the same for both programs. The XDP
//! program's cases ([`crate::xdp_cases`], the table the tests run) are timed the same way, each
//! checked first as the tests check it.

use std::{path::Path, time::Duration};

use anyhow::{Result, ensure};
use edge_common::{Counter, RrlSettings};

use super::zone::{BenchZone, EdgeSettings};
use crate::{
    xdp::{Loaded, Program, Query, XDP_DROP, XDP_TX},
    xdp_cases,
};

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

/// One case of [`xdp_cases::cases`], timed.
#[derive(Debug, Clone)]
pub struct CaseCost {
    pub name: String,
    pub verdict: u32,
    pub counter: &'static str,
    /// The fastest round, in nanoseconds.
    pub nanos: f64,
}

/// Checks every case of the XDP program's table (verdict, frame out, counter, as the tests do),
/// then times each over `rounds` rounds, keeping its fastest.
pub fn cases(rounds: usize) -> Result<Vec<CaseCost>> {
    let mut program = xdp_cases::program()?;
    let cases = xdp_cases::cases();
    for case in &cases {
        case.check(&mut program)?;
    }
    let mut fastest = vec![Duration::MAX; cases.len()];
    for _ in 0..rounds {
        for (case, fastest) in cases.iter().zip(&mut fastest) {
            let (verdict, took) = program.time(&case.input)?;
            ensure!(
                verdict == case.verdict,
                "{}: verdict {verdict} while timed",
                case.name
            );
            *fastest = (*fastest).min(took);
        }
    }
    Ok(cases
        .into_iter()
        .zip(fastest)
        .map(|(case, took)| CaseCost {
            name: case.name,
            verdict: case.verdict,
            counter: case.counter.name(),
            nanos: took.as_nanos() as f64,
        })
        .collect())
}

/// The query of the answered case, timed with response rate limiting on (`[xdp.rrl]`): answered
/// within its rate (the clock read and the bucket updated), dropped over it, and slipped (the
/// truncated reply written). Each is checked first: its verdict and its counter.
pub fn rrl_cases(rounds: usize) -> Result<Vec<CaseCost>> {
    const HOUR: u64 = 3_600_000_000_000;
    let frame = Query::new("www.example.com").frame();
    let paths = [
        // A reply a nanosecond, up to an hour ahead: no query is ever limited.
        ("RRL on, answered", 1, HOUR, 0, XDP_TX, Counter::Answered),
        // A reply an hour and no burst: every query after the first is limited.
        (
            "RRL on, over the rate: dropped",
            HOUR,
            0,
            0,
            XDP_DROP,
            Counter::RateLimited,
        ),
        (
            "RRL on, over the rate: slipped",
            HOUR,
            0,
            1,
            XDP_TX,
            Counter::Slipped,
        ),
    ];
    let mut costs = Vec::new();
    for (name, interval_ns, tolerance_ns, slip, verdict, counter) in paths {
        let mut program = xdp_cases::program()?;
        program.rrl.set_settings(RrlSettings {
            interval_ns,
            tolerance_ns,
            slip,
            reserved: 0,
        })?;
        // The prefix's first query starts its bucket.
        program.run(&frame)?;
        let before = program.counts()?;
        let (got, _) = program.run(&frame)?;
        let after = program.counts()?;
        ensure!(got == verdict, "{name}: verdict {got}, expected {verdict}");
        ensure!(
            after[counter.name()] == before[counter.name()] + 1,
            "{name}: {} did not move",
            counter.name()
        );
        let mut fastest = Duration::MAX;
        for _ in 0..rounds {
            let (got, took) = program.time(&frame)?;
            ensure!(got == verdict, "{name}: verdict {got} while timed");
            fastest = fastest.min(took);
        }
        costs.push(CaseCost {
            name: name.to_string(),
            verdict,
            counter: counter.name(),
            nanos: fastest.as_nanos() as f64,
        });
    }
    Ok(costs)
}
