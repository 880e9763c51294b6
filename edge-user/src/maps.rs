//! The only module that reads or writes BPF maps. Everything else goes through these named
//! operations.

use std::{collections::HashMap as StdHashMap, path::Path};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use edge_common::{Answer, Counter, NameKey, ServiceKey};

/// The name/type → answer map that the XDP program answers from.
pub struct AnswerMap {
    map: HashMap<MapData, NameKey, Answer>,
}

/// What [`AnswerMap::replace`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerChanges {
    pub written: usize,
    pub removed: usize,
    pub unchanged: usize,
}

impl AnswerMap {
    pub fn new(map: Map) -> Result<Self> {
        Ok(Self {
            map: HashMap::try_from(map).context("answer map")?,
        })
    }

    pub fn from_pin(path: &Path) -> Result<Self> {
        Self::new(open_pinned(path)?)
    }

    /// Makes the map hold exactly `entries`. New and changed entries are written first (each
    /// update is atomic for readers), then entries no longer wanted are removed; unchanged ones
    /// are not touched.
    pub fn replace(&mut self, entries: &[(NameKey, Answer)]) -> Result<AnswerChanges> {
        let current: StdHashMap<NameKey, Answer> = self
            .map
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the answer map")?;
        let mut changes = AnswerChanges::default();
        for (key, answer) in entries {
            if current.get(key) == Some(answer) {
                changes.unchanged += 1;
                continue;
            }
            self.map
                .insert(key, answer, 0)
                .context("writing the answer map (is xdp.max_answers large enough?)")?;
            changes.written += 1;
        }
        let wanted: std::collections::HashSet<&NameKey> = entries.iter().map(|(k, _)| k).collect();
        for key in current.keys().filter(|key| !wanted.contains(key)) {
            self.map
                .remove(key)
                .context("removing from the answer map")?;
            changes.removed += 1;
        }
        Ok(changes)
    }

    /// Number of entries in the map.
    pub fn len(&self) -> usize {
        self.map.keys().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The addresses and ports the XDP program answers on.
pub struct ServiceMap {
    map: HashMap<MapData, ServiceKey, u8>,
}

impl ServiceMap {
    pub fn new(map: Map) -> Result<Self> {
        Ok(Self {
            map: HashMap::try_from(map).context("service map")?,
        })
    }

    /// Makes the map hold exactly `services`. Additions go first, so a service present before and
    /// after is never missing in between.
    pub fn replace(&mut self, services: &[ServiceKey]) -> Result<()> {
        for service in services {
            self.map
                .insert(service, 1, 0)
                .context("writing the service map")?;
        }
        let stale: Vec<ServiceKey> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !services.contains(key))
            .collect();
        for key in stale {
            self.map
                .remove(&key)
                .context("removing from the service map")?;
        }
        Ok(())
    }
}

/// The XDP program's per-CPU counters.
pub struct Counters {
    map: PerCpuArray<MapData, u64>,
}

impl Counters {
    pub fn new(map: Map) -> Result<Self> {
        Ok(Self {
            map: PerCpuArray::try_from(map).context("counter map")?,
        })
    }

    pub fn from_pin(path: &Path) -> Result<Self> {
        Self::new(open_pinned(path)?)
    }

    /// Every counter, summed over CPUs.
    pub fn read(&self) -> Result<Vec<(Counter, u64)>> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = self
                    .map
                    .get(&(counter as u32), 0)
                    .with_context(|| format!("reading counter {}", counter.name()))?;
                Ok((counter, per_cpu.iter().sum()))
            })
            .collect()
    }
}

fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}
