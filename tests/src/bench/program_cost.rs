//! What the XDP program itself costs per query, apart from the veth, the load generator and
//! their scheduling: each query frame of a zone's query set runs through `edge_dns` (and a
//! baseline build of it, when given) and through the reflector with BPF_PROG_TEST_RUN, one run
//! per call, and the kernel times each run. A frame's figure is its fastest of several rounds,
//! which filters out other work on the machine; the timing includes the test-run call's own
//! overhead, the same for every program. The XDP program's cases ([`crate::xdp_cases`], the
//! table the tests run) are timed the same way, each checked first as the tests check it.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use edge_common::{Counter, PROBES, RrlSettings, SHORT_NAME_LEN, ShortNameKey, home_slot};
use edge_dataplane::maps;
use edge_dns::fast_path;
use hickory_proto::rr::{Name, RecordType};

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
    /// Another build of `edge_dns` (`--baseline-object`), timed beside this one.
    pub baseline: Option<f64>,
}

/// An XDP object read from a file, 8-aligned as aya reads it (as `include_bytes_aligned!`
/// embeds the program's own).
pub struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut words = vec![0_u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut buf = [0; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(buf);
        }
        Ok(Self {
            words,
            len: bytes.len(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// Which names of the zone a row asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// Spread evenly over the zone (as [`BenchZone::sample_query_file`]): in a large zone each
    /// name's slot lies on a page of its own.
    Spread,
    /// The names whose slots come first in the name table, side by side: as many cache lines
    /// as [`Self::Spread`], on about a 24th of the pages (a 4 KiB page holds 32 slots, three
    /// in four of them in use).
    Adjacent,
}

/// Times `asked` names of `zone`, picked as `how`; `baseline` is another build of the XDP
/// object (an ELF file's bytes, 8-aligned) to time beside the embedded one.
pub fn measure(
    zone: BenchZone,
    asked: usize,
    how: Asked,
    baseline: Option<&[u8]>,
) -> Result<ProgramCost> {
    let config = zone.edge_config(&EdgeSettings {
        interface: "lo",
        pin_root: Path::new("/sys/fs/bpf/unused"),
        mode: "generic",
        dns_listen: None,
    });
    let answers = (zone.names + 1024) as u32;
    let mut programs = vec![Program::load_sized(&config, &[], answers)?];
    if let Some(object) = baseline {
        programs.push(Program::load_object(object, &config, &[], answers)?);
    }
    let mut reflector = Loaded::reflector()?;
    let names: Vec<usize> = match how {
        Asked::Spread => (0..asked).map(|i| i * zone.names / asked).collect(),
        Asked::Adjacent => by_slot(zone, answers)?.into_iter().take(asked).collect(),
    };
    let frames: Vec<Vec<u8>> = names
        .iter()
        .map(|&i| Query::new(&BenchZone::name(i)).frame())
        .collect();
    // Per frame, the fastest run of each edge program, then of the reflector.
    let mut fastest = vec![vec![Duration::MAX; programs.len() + 1]; frames.len()];
    for _ in 0..ROUNDS {
        for (frame, fastest) in frames.iter().zip(&mut fastest) {
            for (program, fastest) in programs.iter_mut().zip(fastest.iter_mut()) {
                let (verdict, took) = program.time(frame)?;
                ensure!(
                    verdict == XDP_TX,
                    "edge_dns did not answer a query of the zone"
                );
                *fastest = (*fastest).min(took);
            }
            let (verdict, took) = reflector.time(frame)?;
            ensure!(verdict == XDP_TX, "the reflector did not answer");
            let last = fastest.len() - 1;
            fastest[last] = fastest[last].min(took);
        }
    }
    let mean = |column: usize| {
        fastest
            .iter()
            .map(|f| f[column].as_nanos() as f64)
            .sum::<f64>()
            / fastest.len() as f64
    };
    Ok(ProgramCost {
        edge: mean(0),
        reflector: mean(programs.len()),
        baseline: baseline.map(|_| mean(1)),
    })
}

/// The zone's names in the order of their home slots in a table for `answers` entries, where
/// the publish places them (in order of home slot, each at or just after its home).
fn by_slot(zone: BenchZone, answers: u32) -> Result<Vec<usize>> {
    let homes = maps::table_slots(answers) - PROBES as u32;
    let mut names = (0..zone.names)
        .map(|i| {
            let name = Name::from_ascii(BenchZone::name(i))?;
            let key = fast_path::name_key(&name, RecordType::A)?;
            let mut short = ShortNameKey::zeroed();
            short.name.copy_from_slice(&key.name[..SHORT_NAME_LEN]);
            short.qtype = key.qtype;
            Ok((home_slot(short.hash(), homes), i))
        })
        .collect::<Result<Vec<_>>>()?;
    names.sort_unstable();
    Ok(names.into_iter().map(|(_, i)| i).collect())
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
