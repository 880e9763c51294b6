//! The rate limiter's maps (see [`edge_common::rrl`]): its settings and exempt prefixes, which
//! only this module writes. The buckets are the XDP program's own; they are not pinned, so a
//! restarted daemon starts every prefix with a full burst.

use std::{collections::HashSet, net::IpAddr};

use anyhow::{Context as _, Result};
use aya::maps::{Array, LpmTrie, Map, MapData, lpm_trie::Key};
use edge_common::{RrlSettings, rrl};
use edge_config::rrl::{Prefix, RrlConfig};

/// Size of the bucket table when RRL is off: the program reads only the settings then.
pub const OFF_TABLE_SIZE: u32 = 1;

/// The bucket table size a config loads the program with.
pub fn table_size(config: Option<&RrlConfig>) -> u32 {
    config.map_or(OFF_TABLE_SIZE, |rrl| rrl.table_size)
}

/// The settings and exempt prefixes the XDP program limits by.
pub struct RrlMaps {
    settings: Array<MapData, RrlSettings>,
    exempt: LpmTrie<MapData, [u8; 16], u8>,
    /// The bucket table's size, fixed at load.
    table_size: u32,
}

impl RrlMaps {
    pub fn new(settings: Map, exempt: Map, buckets: &Map) -> Result<Self> {
        let table_size = match buckets {
            Map::LruHashMap(data) => data.info().context("bucket map")?.max_entries(),
            _ => anyhow::bail!("the bucket map is not an LRU hash map"),
        };
        Ok(Self {
            settings: Array::try_from(settings).context("RRL settings map")?,
            exempt: LpmTrie::try_from(exempt).context("RRL exempt map")?,
            table_size,
        })
    }

    /// Whether `config` can apply to the running program: its bucket table (sized at load)
    /// is the size the config asks for.
    pub fn fits(&self, config: Option<&RrlConfig>) -> bool {
        config.is_none() || table_size(config) == self.table_size
    }

    /// Makes the program limit as `config` says, or not at all. The exempt prefixes are
    /// written before the settings that turn limiting on, and the settings turned off first.
    pub fn apply(&mut self, config: Option<&RrlConfig>) -> Result<()> {
        let Some(config) = config else {
            self.set_settings(RrlSettings::default())?;
            return self.set_exempt(&[]);
        };
        self.set_exempt(&config.exempt)?;
        self.set_settings(settings(config))
    }

    /// Writes `settings` as they are, for tests that want a schedule no config gives (a reply
    /// an hour, so that no bucket refills while they run).
    pub fn set_settings(&mut self, settings: RrlSettings) -> Result<()> {
        self.settings
            .set(0, settings, 0)
            .context("writing the RRL settings")
    }

    /// Makes the exempt trie hold exactly `prefixes`: new ones added, then old ones removed.
    fn set_exempt(&mut self, prefixes: &[Prefix]) -> Result<()> {
        let wanted: HashSet<(u32, [u8; 16])> = prefixes.iter().map(trie_key).collect();
        let present: Vec<(u32, [u8; 16])> = self
            .exempt
            .keys()
            .map(|key| key.map(|key| (key.prefix_len(), key.data())))
            .collect::<Result<_, _>>()
            .context("reading the RRL exempt map")?;
        for &(len, data) in &wanted {
            self.exempt
                .insert(&Key::new(len, data), 1, 0)
                .context("writing the RRL exempt map")?;
        }
        for (len, data) in present {
            if !wanted.contains(&(len, data)) {
                self.exempt
                    .remove(&Key::new(len, data))
                    .context("removing from the RRL exempt map")?;
            }
        }
        Ok(())
    }
}

/// The program's settings for `config`: a reply every `1 s / rate` of a prefix's schedule,
/// which may run `burst - 1` replies ahead.
pub fn settings(config: &RrlConfig) -> RrlSettings {
    let interval_ns = 1_000_000_000 / u64::from(config.rate.max(1));
    RrlSettings {
        interval_ns,
        tolerance_ns: u64::from(config.burst().saturating_sub(1)) * interval_ns,
        slip: config.slip,
        reserved: 0,
    }
}

/// A prefix as the exempt trie's key: IPv6, or IPv4 mapped into it.
fn trie_key(prefix: &Prefix) -> (u32, [u8; 16]) {
    match prefix.addr {
        IpAddr::V4(addr) => (96 + u32::from(prefix.len), rrl::mapped_v4(addr.octets())),
        IpAddr::V6(addr) => (u32::from(prefix.len), addr.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_space_replies_by_the_rate_and_allow_the_burst() {
        let config = RrlConfig {
            rate: 4,
            burst: Some(10),
            slip: 3,
            table_size: 16,
            exempt: Vec::new(),
        };
        let settings = settings(&config);
        assert_eq!(settings.interval_ns, 250_000_000);
        assert_eq!(settings.tolerance_ns, 9 * 250_000_000);
        assert_eq!(settings.slip, 3);
    }

    #[test]
    fn ipv4_prefixes_are_mapped_into_ipv6() {
        let (len, data) = trie_key(&"192.0.2.0/24".parse().unwrap());
        assert_eq!(len, 120);
        assert_eq!(&data[10..], &[0xff, 0xff, 192, 0, 2, 0]);
        let (len, data) = trie_key(&"2001:db8::/32".parse().unwrap());
        assert_eq!((len, &data[..4]), (32, &[0x20, 0x01, 0x0d, 0xb8][..]));
    }
}
