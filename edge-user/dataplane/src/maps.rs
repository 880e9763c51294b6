//! The only module that reads or writes BPF maps, but for the rate limiter's ([`crate::rrl`]).
//! Everything else goes through these named operations.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    io::ErrorKind,
    os::fd::AsFd as _,
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use edge_common::{
    Answer, Counter, KeyedAnswer, LongNameKey, SHORT_NAME_LEN, Services, ShortNameKey, State,
    selection_key, state_slot,
};

use edge_config::XdpConfig;
use edge_dns::fast_path::Entry;

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
    ///
    /// Entries no longer wanted are removed first, so the maps never need room for more than
    /// the new set: a set that fits ([`Capacity::needed`]) is written whole, even into a full
    /// map. After an error the maps may hold part of the new set; the next publish reads them
    /// back from the kernel and completes it.
    pub fn publish(&mut self, entries: &[Entry]) -> Result<Publication> {
        let mut changes = AnswerChanges::default();
        let mut current = self.answers.take_contents(&mut changes)?;
        let wanted: HashSet<&LongNameKey> = entries.iter().map(|entry| &entry.key).collect();
        self.answers
            .remove_unwanted(&mut current, &wanted, &mut changes)?;
        let mut hashes = short_hashes(&current);
        // Static answers next, former steered names among them: their slots are free after this.
        for entry in entries.iter().filter(|entry| !entry.steered) {
            self.answers.write(
                &mut current,
                &mut hashes,
                &entry.key,
                &entry.answer,
                &mut changes,
            )?;
        }
        // A steered name keeps its slot; new ones take the lowest slots no entry points to, so
        // no reader can see another name's answer through a slot that changed hands.
        let mut used: HashSet<u16> = current.values().map(|a| a.selection).collect();
        let mut candidate = 0_u16;
        let mut steered = BTreeMap::new();
        let mut markers = Vec::new();
        for entry in entries.iter().filter(|entry| entry.steered) {
            let slot = match current.get(&entry.key).map(|a| a.selection) {
                Some(slot) if slot != 0 && slot <= self.selections.capacity => slot,
                _ => loop {
                    candidate += 1;
                    if candidate > self.selections.capacity {
                        bail!(
                            "more steered answers than the selection map holds ({})",
                            self.selections.capacity
                        );
                    }
                    if !used.contains(&candidate) {
                        break candidate;
                    }
                },
            };
            used.insert(slot);
            steered.insert(slot, entry.answer);
            markers.push((entry.key, Answer::selected(slot)));
        }
        let (steered_written, flipped) = self.selections.publish(&steered)?;
        // Steered names point at their slots only once the generation holding them is live.
        for (key, marker) in &markers {
            self.answers
                .write(&mut current, &mut hashes, key, marker, &mut changes)?;
        }
        self.answers.known = Some(current);
        Ok(Publication {
            answers: changes,
            steered_written,
            flipped,
        })
    }

    /// How many entries each map holds, as the kernel says (a map adopted from an earlier run
    /// keeps the size it was created with).
    pub fn capacity(&self) -> Result<Capacity> {
        let (answers, long_answers) = self.answers.capacity()?;
        Ok(Capacity {
            answers,
            long_answers,
            steered: u32::from(self.selections.capacity),
        })
    }
}

/// Entries per map: what a set of answers needs, or what the maps hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Answers for names of up to [`SHORT_NAME_LEN`] octets, steered ones included.
    pub answers: u32,
    /// Answers for longer names.
    pub long_answers: u32,
    /// Steered answers (each held in two generations).
    pub steered: u32,
}

impl Capacity {
    /// The map sizes `xdp` asks for.
    pub fn of(xdp: &XdpConfig) -> Self {
        Self {
            answers: xdp.max_answers,
            long_answers: xdp.max_long_answers,
            steered: u32::from(xdp.max_steered),
        }
    }

    /// What `entries` need: one entry each in the map its name's length picks, and a slot for
    /// each steered one. Hash collisions (rare) would leave some out, so this may overcount.
    pub fn needed(entries: &[Entry]) -> Self {
        let mut needed = Self::default();
        for entry in entries {
            match narrow(&entry.key) {
                Some(_) => needed.answers += 1,
                None => needed.long_answers += 1,
            }
            needed.steered += u32::from(entry.steered);
        }
        needed
    }

    /// The first map that cannot hold what `self` needs: its config field, the entries needed
    /// and the entries it holds.
    pub fn shortfall(&self, held: &Capacity) -> Option<(&'static str, u32, u32)> {
        [
            ("xdp.max_answers", self.answers, held.answers),
            ("xdp.max_long_answers", self.long_answers, held.long_answers),
            ("xdp.max_steered", self.steered, held.steered),
        ]
        .into_iter()
        .find(|(_, needed, held)| needed > held)
    }
}

/// The name/type → answer maps that the XDP program answers from: one for short names (keyed by
/// [`ShortNameKey::hash`], the value carrying the key), one keyed by long names. Callers see one
/// map keyed by [`LongNameKey`].
pub struct AnswerMap {
    short: HashMap<MapData, u64, KeyedAnswer>,
    long: HashMap<MapData, LongNameKey, Answer>,
    /// What the maps hold, read once (we are their only writer) and kept up to date, so that a
    /// round does not read every entry back from the kernel.
    known: Option<StdHashMap<LongNameKey, Answer>>,
}

/// What [`AnswerMap::replace`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerChanges {
    pub written: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Entries left out because another short name has the same hash: userspace answers them.
    pub collisions: usize,
}

impl AnswerMap {
    pub fn new(short: Map, long: Map) -> Result<Self> {
        Ok(Self {
            short: HashMap::try_from(short).context("answer map")?,
            long: HashMap::try_from(long).context("long-name answer map")?,
            known: None,
        })
    }

    /// Every entry, taken out of the cache (read from the kernel if there is none); `publish`
    /// puts it back. Short-map entries not stored under their own key's hash were not written by
    /// us and could never answer: they are removed, and counted in `changes`.
    fn take_contents(
        &mut self,
        changes: &mut AnswerChanges,
    ) -> Result<StdHashMap<LongNameKey, Answer>> {
        if let Some(known) = self.known.take() {
            return Ok(known);
        }
        let mut contents = StdHashMap::new();
        let mut foreign = Vec::new();
        for entry in self.short.iter() {
            let (hash, keyed) = entry.context("reading the answer map")?;
            if hash == keyed.key.hash() && narrow(&widen(&keyed.key)) == Some(keyed.key) {
                contents.insert(widen(&keyed.key), keyed.answer);
            } else {
                foreign.push(hash);
            }
        }
        for hash in foreign {
            absent_is_removed(self.short.remove(&hash)).context("removing from the answer map")?;
            changes.removed += 1;
        }
        for entry in self.long.iter() {
            let (key, answer) = entry.context("reading the long-name answer map")?;
            contents.insert(key, answer);
        }
        Ok(contents)
    }

    fn insert(&mut self, key: &LongNameKey, answer: &Answer) -> Result<()> {
        match narrow(key) {
            Some(short) => self.short.insert(
                short.hash(),
                KeyedAnswer {
                    key: short,
                    answer: *answer,
                },
                0,
            ),
            None => self.long.insert(key, answer, 0),
        }
        .context(
            "writing an answer map (are xdp.max_answers and xdp.max_long_answers large enough?)",
        )
    }

    fn remove(&mut self, key: &LongNameKey) -> Result<()> {
        absent_is_removed(match narrow(key) {
            Some(short) => self.short.remove(&short.hash()),
            None => self.long.remove(key),
        })
        .context("removing from an answer map")
    }

    /// The sizes of the short-name and long-name maps, as created.
    fn capacity(&self) -> Result<(u32, u32)> {
        let short = self
            .short
            .map()
            .info()
            .context("reading the answer map's size")?;
        let long = self
            .long
            .map()
            .info()
            .context("reading the long-name answer map's size")?;
        Ok((short.max_entries(), long.max_entries()))
    }

    /// Removes from the map, which holds `current`, every entry not in `wanted`.
    fn remove_unwanted(
        &mut self,
        current: &mut StdHashMap<LongNameKey, Answer>,
        wanted: &HashSet<&LongNameKey>,
        changes: &mut AnswerChanges,
    ) -> Result<()> {
        let stale: Vec<LongNameKey> = current
            .keys()
            .filter(|key| !wanted.contains(key))
            .copied()
            .collect();
        for key in stale {
            self.remove(&key)?;
            current.remove(&key);
            changes.removed += 1;
        }
        Ok(())
    }

    /// Makes the map, which holds `current` (short-key hashes in `hashes`), answer `key` with
    /// `answer`; nothing is written when it already does, or when another short name holds the
    /// key's hash (a collision, left to userspace).
    fn write(
        &mut self,
        current: &mut StdHashMap<LongNameKey, Answer>,
        hashes: &mut StdHashMap<u64, LongNameKey>,
        key: &LongNameKey,
        answer: &Answer,
        changes: &mut AnswerChanges,
    ) -> Result<()> {
        if current.get(key) == Some(answer) {
            changes.unchanged += 1;
            return Ok(());
        }
        if let Some(short) = narrow(key) {
            match hashes.get(&short.hash()) {
                Some(holder) if holder != key => {
                    changes.collisions += 1;
                    return Ok(());
                }
                _ => hashes.insert(short.hash(), *key),
            };
        }
        self.insert(key, answer)?;
        current.insert(*key, *answer);
        changes.written += 1;
        Ok(())
    }
}

/// A removal that found nothing to remove (another writer got there first) did its job.
fn absent_is_removed(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The hash of every short key in `contents`, and its key.
fn short_hashes(contents: &StdHashMap<LongNameKey, Answer>) -> StdHashMap<u64, LongNameKey> {
    contents
        .keys()
        .filter_map(|key| narrow(key).map(|short| (short.hash(), *key)))
        .collect()
}

/// The short-map key for `key`, if its name fits.
fn narrow(key: &LongNameKey) -> Option<ShortNameKey> {
    if key.name[SHORT_NAME_LEN..].iter().any(|&byte| byte != 0)
        || wire_len(&key.name)? > SHORT_NAME_LEN
    {
        return None;
    }
    let mut short = ShortNameKey::zeroed();
    short.name.copy_from_slice(&key.name[..SHORT_NAME_LEN]);
    short.qtype = key.qtype;
    Some(short)
}

fn widen(key: &ShortNameKey) -> LongNameKey {
    let mut long = LongNameKey::zeroed();
    long.name[..SHORT_NAME_LEN].copy_from_slice(&key.name);
    long.qtype = key.qtype;
    long
}

/// Length of the wire-format name at the start of `name`, root label included.
fn wire_len(name: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let label = usize::from(*name.get(pos)?);
        pos += 1 + label;
        if label == 0 {
            return Some(pos);
        }
    }
}

/// Steered answers in two generations, and the generation the XDP program reads.
pub struct SelectionMap {
    map: HashMap<MapData, u32, Answer>,
    state: Array<MapData, State>,
    /// Slots per generation.
    capacity: u16,
    /// Both generations as the map holds them, and the live one: read once, then kept up to
    /// date (as for [`AnswerMap`]).
    known: Option<([BTreeMap<u16, Answer>; 2], u32)>,
}

impl SelectionMap {
    /// `capacity` slots per generation, at most half of what the map (perhaps adopted from an
    /// earlier run with another size) holds.
    pub fn new(map: Map, state: Map, capacity: u16) -> Result<Self> {
        let map: HashMap<MapData, u32, Answer> = HashMap::try_from(map).context("selection map")?;
        let held = map
            .map()
            .info()
            .context("reading the selection map's size")?
            .max_entries()
            / 2;
        Ok(Self {
            map,
            state: Array::try_from(state).context("state map")?,
            capacity: capacity.min(u16::try_from(held).unwrap_or(u16::MAX)),
            known: None,
        })
    }

    /// Both generations and the live one, read from the kernel. Keys that name no generation
    /// were not written by us: they are removed.
    fn read(&mut self) -> Result<([BTreeMap<u16, Answer>; 2], u32)> {
        let mut generations: [BTreeMap<u16, Answer>; 2] = Default::default();
        let mut foreign = Vec::new();
        for entry in self.map.iter() {
            let (key, answer) = entry.context("reading the selection map")?;
            if key >> 17 == 0 {
                generations[(key >> 16) as usize].insert(key as u16, answer);
            } else {
                foreign.push(key);
            }
        }
        for key in foreign {
            absent_is_removed(self.map.remove(&key)).context("removing from the selection map")?;
        }
        Ok((generations, self.generation()?))
    }

    /// The generation the XDP program reads.
    pub fn generation(&self) -> Result<u32> {
        Ok(self
            .state
            .get(&state_slot::SELECTIONS, 0)
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
        let (mut generations, live) = match self.known.take() {
            Some(known) => known,
            None => self.read()?,
        };
        if generations[live as usize & 1] == *answers {
            self.known = Some((generations, live));
            return Ok((0, false));
        }
        let next = live ^ 1;
        let staged = &generations[next as usize & 1];
        // Stale slots go first, so the generation never needs room for more than `answers`.
        for slot in staged.keys().filter(|slot| !answers.contains_key(slot)) {
            absent_is_removed(self.map.remove(&selection_key(next, *slot)))
                .context("removing from the selection map")?;
        }
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
        self.state
            .set(state_slot::SELECTIONS, State { generation: next }, 0)
            .context("flipping the generation")?;
        generations[next as usize & 1] = answers.clone();
        self.known = Some((generations, next));
        Ok((written, true))
    }
}

/// The addresses and ports the XDP program answers on: two copies of the service array, and the
/// state entry that names the live one.
pub struct ServiceMap {
    map: Array<MapData, Services>,
    state: Array<MapData, State>,
}

impl ServiceMap {
    /// `state` is a handle of its own on the state map (see [`second_handle`]).
    pub fn new(map: Map, state: Map) -> Result<Self> {
        Ok(Self {
            map: Array::try_from(map).context("service map")?,
            state: Array::try_from(state).context("state map")?,
        })
    }

    /// Makes the program answer on exactly `services`: written into the copy it does not read,
    /// then the state entry flips to it, so a query sees the old set or the new one, never a mix.
    /// Nothing is written when the live copy already holds `services`.
    pub fn replace(&mut self, services: &Services) -> Result<()> {
        let live = self
            .state
            .get(&state_slot::SERVICES, 0)
            .context("reading the state map")?
            .generation
            & 1;
        if self.map.get(&live, 0).context("reading the service map")? == *services {
            return Ok(());
        }
        let next = live ^ 1;
        self.map
            .set(next, services, 0)
            .context("writing the service map")?;
        self.state
            .set(state_slot::SERVICES, State { generation: next }, 0)
            .context("flipping the service copy")
    }
}

/// Another handle on the array map `map`, for a second owner that writes other entries (the
/// state map has one entry per double-buffered map).
pub fn second_handle(map: &Map) -> Result<Map> {
    let Map::Array(data) = map else {
        bail!("expected an array map");
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating a map descriptor")?;
    Ok(Map::Array(MapData::from_fd(fd)?))
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

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use edge_dns::fast_path::name_key;

    /// Names that differ in a few characters (the usual shape of a large zone) must not share
    /// hashes: each collision leaves a name out of the fast path.
    #[test]
    fn short_key_hashes_of_similar_names_differ() {
        let mut hashes = HashSet::new();
        for i in 0..200_000 {
            for (name, qtype) in [
                (format!("name{i}.bench.example."), RecordType::A),
                (format!("www{i}.example.com."), RecordType::AAAA),
                (format!("s{i}.cdn.example."), RecordType::A),
            ] {
                let key = name_key(&Name::from_ascii(&name).unwrap(), qtype).unwrap();
                let short = narrow(&key).unwrap();
                assert!(hashes.insert(short.hash()), "{name} collides");
            }
        }
    }

    /// A name of exactly `len` wire octets.
    fn name_of(len: usize) -> LongNameKey {
        // The "x…" label with its length octet, "example" with its, and the root.
        let label = "x".repeat(len - 1 - 8 - 1);
        let key = name_key(
            &Name::from_ascii(format!("{label}.example.")).unwrap(),
            RecordType::A,
        );
        let key = key.unwrap();
        assert_eq!(wire_len(&key.name), Some(len));
        key
    }

    #[test]
    fn names_up_to_the_short_length_take_the_short_key() {
        for len in [12, SHORT_NAME_LEN - 1, SHORT_NAME_LEN] {
            let key = name_of(len);
            let short = narrow(&key).expect("fits");
            assert_eq!(widen(&short), key);
        }
        assert_eq!(narrow(&name_of(SHORT_NAME_LEN + 1)), None);
    }
}
