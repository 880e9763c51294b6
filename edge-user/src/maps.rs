//! The only module that reads or writes BPF maps. Everything else goes through these named
//! operations.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use edge_common::{Answer, Counter, NameKey, ServiceKey, State, selection_key};

use crate::dns::fast_path::Entry;

/// What the fast path answers from: the answer map, and for steered names the selection map
/// with its generation.
pub struct AnswerMaps {
    pub answers: AnswerMap,
    pub selections: SelectionMap,
}

/// What [`AnswerMaps::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Publication {
    pub answers: AnswerChanges,
    /// Steered answers written into the next generation.
    pub steered_written: usize,
    /// Whether the generation flipped (a steered answer changed).
    pub flipped: bool,
}

impl AnswerMaps {
    /// Makes the maps answer exactly `entries`. Steered answers go through the selection map:
    /// all of a round's are written into the generation readers do not use, then one write flips
    /// the generation, so every CPU moves from one complete selection to the next at once. Other
    /// answers are written in place (each update atomic for readers). Unchanged entries are not
    /// rewritten.
    pub fn publish(&mut self, entries: &[Entry]) -> Result<Publication> {
        let current = self.answers.contents()?;
        // A steered name keeps its slot; new ones take the lowest free slots.
        let mut used: HashSet<u16> = current.values().map(|a| a.selection).collect();
        let mut candidate = 0_u16;
        let mut steered = BTreeMap::new();
        let mut wanted = Vec::with_capacity(entries.len());
        for entry in entries {
            if !entry.steered {
                wanted.push((entry.key, entry.answer));
                continue;
            }
            let slot = match current.get(&entry.key).map(|a| a.selection) {
                Some(slot) if slot != 0 => slot,
                _ => loop {
                    candidate += 1;
                    if candidate > self.selections.capacity {
                        bail!("more steered answers than xdp.max_steered");
                    }
                    if !used.contains(&candidate) {
                        break candidate;
                    }
                },
            };
            used.insert(slot);
            steered.insert(slot, entry.answer);
            wanted.push((entry.key, Answer::selected(slot)));
        }
        let (steered_written, flipped) = self.selections.publish(&steered)?;
        let answers = self.answers.replace(&current, &wanted)?;
        Ok(Publication {
            answers,
            steered_written,
            flipped,
        })
    }
}

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

    /// Every entry.
    pub fn contents(&self) -> Result<StdHashMap<NameKey, Answer>> {
        self.map
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the answer map")
    }

    /// Makes the map, which holds `current`, hold exactly `entries`. New and changed entries are
    /// written first (each update is atomic for readers), then entries no longer wanted are
    /// removed; unchanged ones are not touched.
    fn replace(
        &mut self,
        current: &StdHashMap<NameKey, Answer>,
        entries: &[(NameKey, Answer)],
    ) -> Result<AnswerChanges> {
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
        let wanted: HashSet<&NameKey> = entries.iter().map(|(k, _)| k).collect();
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

/// Steered answers in two generations, and the generation the XDP program reads.
pub struct SelectionMap {
    map: HashMap<MapData, u32, Answer>,
    state: Array<MapData, State>,
    /// Slots per generation.
    capacity: u16,
}

impl SelectionMap {
    pub fn new(map: Map, state: Map, capacity: u16) -> Result<Self> {
        Ok(Self {
            map: HashMap::try_from(map).context("selection map")?,
            state: Array::try_from(state).context("state map")?,
            capacity,
        })
    }

    /// The generation the XDP program reads.
    pub fn generation(&self) -> Result<u32> {
        Ok(self
            .state
            .get(&0, 0)
            .context("reading the state map")?
            .generation)
    }

    /// Makes `answers` (slot → answer) the live selection: written into the other generation
    /// where it differs from what that generation holds, then the generation flips. Nothing is
    /// written when the live generation already holds exactly `answers`. Returns the answers
    /// written and whether it flipped.
    ///
    /// Readers of the old generation are safe: hash map values are replaced, never overwritten
    /// in place, and a reader's value stays valid until it is done (RCU).
    fn publish(&mut self, answers: &BTreeMap<u16, Answer>) -> Result<(usize, bool)> {
        let live = self.generation()?;
        let mut generations: [BTreeMap<u16, Answer>; 2] = Default::default();
        for entry in self.map.iter() {
            let (key, answer) = entry.context("reading the selection map")?;
            generations[(key >> 16) as usize & 1].insert(key as u16, answer);
        }
        if generations[live as usize & 1] == *answers {
            return Ok((0, false));
        }
        let next = live ^ 1;
        let staged = &generations[next as usize & 1];
        let mut written = 0;
        for (&slot, answer) in answers {
            if slot > self.capacity {
                bail!("selection slot {slot} beyond xdp.max_steered");
            }
            if staged.get(&slot) != Some(answer) {
                self.map
                    .insert(selection_key(next, slot), answer, 0)
                    .context("writing the selection map")?;
                written += 1;
            }
        }
        for slot in staged.keys().filter(|slot| !answers.contains_key(slot)) {
            self.map
                .remove(&selection_key(next, *slot))
                .context("removing from the selection map")?;
        }
        self.state
            .set(0, State { generation: next }, 0)
            .context("flipping the generation")?;
        Ok((written, true))
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
