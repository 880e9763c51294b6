//! The benchmark's zone and query set, written in every server's format from one generator so
//! that each peer holds the same names with the same records and is asked the same questions.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

/// The zone every peer serves.
pub const APEX: &str = "bench.example";
/// TTL of every record.
pub const TTL: u32 = 300;
/// Room in edge's answer map beyond one entry per name, for the apex records edge may add.
const ANSWER_MAP_HEADROOM: usize = 1024;

/// A zone of `names` owner names, each with one A record.
#[derive(Debug, Clone, Copy)]
pub struct BenchZone {
    pub names: usize,
}

/// How edge runs the zone.
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings<'a> {
    pub interface: &'a str,
    pub pin_root: &'a Path,
    /// `native` or `generic`.
    pub mode: &'a str,
    /// Where edge's userspace server listens; `None` for the XDP path alone.
    pub dns_listen: Option<std::net::SocketAddr>,
}

impl BenchZone {
    pub const fn new(names: usize) -> Self {
        Self { names }
    }

    /// The `i`-th owner name, relative to the apex.
    pub fn label(i: usize) -> String {
        format!("name{i}")
    }

    /// The `i`-th absolute name, as the load generators ask it.
    pub fn name(i: usize) -> String {
        format!("{}.{APEX}", Self::label(i))
    }

    /// The address of the `i`-th name: distinct for every name of a million-name zone.
    pub fn address(i: usize) -> Ipv4Addr {
        let n = (i + 1) as u32;
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)
    }

    /// edge's TOML config, sized so that the answer map holds every name.
    pub fn edge_config(&self, settings: &EdgeSettings) -> String {
        let mut text = String::with_capacity(64 * self.names + 512);
        let _ = write!(
            text,
            "[xdp]\ninterface = \"{}\"\nmode = \"{}\"\npin_root = \"{}\"\nmax_answers = {}\n\n",
            settings.interface,
            settings.mode,
            settings.pin_root.display(),
            self.names + ANSWER_MAP_HEADROOM,
        );
        if let Some(listen) = settings.dns_listen {
            let _ = write!(text, "[dns]\nlisten = [\"{listen}\"]\n\n");
        }
        let _ = write!(text, "[[zones]]\napex = \"{APEX}\"\nttl = {TTL}\n");
        for i in 0..self.names {
            let _ = write!(
                text,
                "\n[[zones.names]]\nname = \"{}\"\na = [\"{}\"]\n",
                Self::label(i),
                Self::address(i)
            );
        }
        text
    }

    /// The zone as an RFC 1035 master file for Knot DNS and NSD: SOA, NS with glue at
    /// `server`, then the names.
    pub fn zone_file(&self, server: Ipv4Addr) -> String {
        let mut text = String::with_capacity(32 * self.names + 256);
        let _ = writeln!(text, "$ORIGIN {APEX}.\n$TTL {TTL}");
        let _ = writeln!(text, "@ SOA ns hostmaster 1 3600 600 86400 {TTL}");
        let _ = writeln!(text, "@ NS ns\nns A {server}");
        for i in 0..self.names {
            let _ = writeln!(text, "{} A {}", Self::label(i), Self::address(i));
        }
        text
    }

    /// Every name once as an A query, in a fixed shuffled order so that consecutive queries
    /// do not walk the zone in creation order, as `name type` lines: dnsperf (`-d`) reads them,
    /// and the trafgen frames are built from them.
    pub fn query_file(&self) -> String {
        self.sample_query_file(self.names)
    }

    /// `asked` names spread evenly over the zone (every name when `asked` is the zone's size),
    /// each once as an A query, in a fixed shuffled order: a hot set of a large zone whose
    /// entries lie all over the answer table.
    pub fn sample_query_file(&self, asked: usize) -> String {
        let mut order: Vec<usize> = (0..asked).map(|i| i * self.names / asked).collect();
        shuffle(&mut order);
        let mut text = String::with_capacity(32 * self.names);
        for i in order {
            let _ = writeln!(text, "{} A", Self::name(i));
        }
        text
    }
}

/// Fisher–Yates with splitmix64 from a fixed seed: the same order on every run and machine.
fn shuffle(items: &mut [usize]) {
    let mut state: u64 = 0x5eed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, process::Command};

    use edge_config::Config;
    use edge_dns::zone::Zones;

    use super::*;

    #[test]
    fn edge_config_holds_every_name_with_its_address() {
        let zone = BenchZone::new(1000);
        let path = Path::new("bench.toml");
        let text = zone.edge_config(&EdgeSettings {
            interface: "eth0",
            pin_root: Path::new("/sys/fs/bpf/bench"),
            mode: "native",
            dns_listen: None,
        });
        let config = Config::parse(path, &text).expect("edge accepts the generated config");
        let zones = Zones::build(path, &config).expect("edge accepts the generated zone");
        let names: Vec<_> = zones.names().collect();
        // The names and the apex, which holds the SOA.
        assert_eq!(names.len(), 1001);
        assert!(config.xdp.unwrap().max_answers as usize >= 1000);
        let (owner, records) = names
            .iter()
            .find(|(owner, _)| owner.to_ascii() == "name999.bench.example.")
            .expect("name999 present");
        assert_eq!(owner.num_labels(), 3);
        let a = records
            .rrset(owner, hickory_proto::rr::RecordType::A)
            .expect("an A record");
        assert_eq!(
            a.rdatas,
            [hickory_proto::rr::RData::A(BenchZone::address(999).into())]
        );
        assert_eq!(a.ttl, TTL);
    }

    #[test]
    fn addresses_are_distinct_across_a_million_names() {
        let addresses: BTreeSet<Ipv4Addr> = (0..1_000_000).map(BenchZone::address).collect();
        assert_eq!(addresses.len(), 1_000_000);
    }

    #[test]
    fn query_file_asks_every_name_once() {
        let zone = BenchZone::new(1000);
        let text = zone.query_file();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        let asked: BTreeSet<&str> = lines.iter().map(|line| line.as_ref()).collect();
        let expected: BTreeSet<String> = (0..1000)
            .map(|i| format!("{} A", BenchZone::name(i)))
            .collect();
        assert_eq!(asked, expected.iter().map(String::as_str).collect());
        assert_ne!(lines[0], "name0.bench.example A", "the order is shuffled");
        assert_eq!(text, zone.query_file(), "the order is the same every run");
    }

    #[test]
    fn sample_spreads_over_the_zone() {
        let text = BenchZone::new(1_000_000).sample_query_file(1000);
        let asked: BTreeSet<&str> = text.lines().collect();
        assert_eq!(asked.len(), 1000);
        assert!(asked.contains("name0.bench.example A"));
        assert!(asked.contains("name999000.bench.example A"));
        assert!(!asked.contains("name1.bench.example A"));
    }

    /// NSD's own zone checker reads the file the peers load.
    #[test]
    fn zone_file_passes_nsd_checkzone() {
        let dir = std::env::temp_dir().join(format!("edge-bench-zone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bench.example.zone");
        std::fs::write(
            &file,
            BenchZone::new(1000).zone_file(Ipv4Addr::new(198, 18, 0, 2)),
        )
        .unwrap();
        let output = Command::new("nsd-checkzone")
            .arg(APEX)
            .arg(&file)
            .output()
            .expect("nsd-checkzone (nsd package: cargo xtask setup)");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
