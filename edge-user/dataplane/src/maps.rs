//! The only module that reads or writes BPF maps, but for the rate limiter's ([`crate::rrl`]).
//! Everything else goes through these named operations.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    io::ErrorKind,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray},
    sys::SyscallError,
};
use edge_common::{
    Answer, Counter, LongNameKey, NameSlot, PROBES, SHORT_NAME_LEN, SLOT_DATA_LEN, SLOT_EMPTY,
    SLOT_REMOVED, Services, ShortNameKey, State, home_slot, selection_key, slot_tag, state_slot,
};

use edge_config::XdpConfig;
use edge_dns::fast_path::Entry;

/// What the fast path answers from: the name table and the long-answer map, and for steered
/// names the selection map with its generation.
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
    /// Makes the maps answer exactly `entries`, writing only what differs from what they hold.
    /// Steered answers go through the selection map: all of a round's are written into the
    /// generation readers do not use, then one write flips the generation, so every CPU moves
    /// from one complete selection to the next at once. A changed answer is written beside the
    /// old one before the old one is removed, so a query finds one or the other.
    ///
    /// After an error the maps may hold part of the new set; the next publish completes it.
    pub fn publish(&mut self, entries: &[Entry]) -> Result<Publication> {
        let mut round = self.answers.begin()?;
        // Static answers first, former steered names among them: their slots are free after this.
        for entry in entries.iter().filter(|entry| !entry.steered) {
            self.answers
                .stage(&mut round, entry, Staged::Answer(entry.answer()))?;
        }
        // A steered name keeps its slot; new ones take the lowest slots no entry points to, so
        // no reader can see another name's answer through a slot that changed hands.
        let steered_entries: Vec<&Entry> = entries.iter().filter(|entry| entry.steered).collect();
        let kept: Vec<Option<u16>> = steered_entries
            .iter()
            .map(|entry| {
                self.answers
                    .selection_of(&round, entry)
                    .filter(|&slot| slot <= self.selections.capacity)
            })
            .collect();
        let mut used: HashSet<u16> = if kept.iter().any(Option::is_none) {
            self.answers.selections_in_use(&round)
        } else {
            HashSet::new()
        };
        let mut candidate = 0_u16;
        let mut steered = BTreeMap::new();
        let mut markers = Vec::with_capacity(steered_entries.len());
        for (entry, kept) in steered_entries.iter().zip(kept) {
            let slot = match kept {
                Some(slot) => slot,
                None => loop {
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
            steered.insert(slot, entry.answer());
            markers.push((*entry, slot));
        }
        // The static answers are written now: what they replace stays readable until then.
        self.answers.write_staged(&mut round)?;
        let (steered_written, flipped) = self.selections.publish(&steered)?;
        // Steered names point at their slots only once the generation holding them is live.
        for (entry, slot) in markers {
            self.answers
                .stage(&mut round, entry, Staged::Selection(slot))?;
        }
        self.answers.write_staged(&mut round)?;
        let changes = self.answers.finish(round)?;
        Ok(Publication {
            answers: changes,
            steered_written,
            flipped,
        })
    }

    /// A steering round: makes the steered names of `steered` (entries of steered names only)
    /// answer as given, through the selection map and a generation flip alone, when every one
    /// of them already points at a selection slot. The name table and the long-answer map are
    /// not read past those names nor written. `None` when a name has no slot yet (a reload
    /// added it): then a full [`Self::publish`] is needed. A steered name left out (its pool
    /// has nothing to answer with) keeps its slot, now empty in the live generation, so the
    /// program passes its queries to the userspace server, which answers SERVFAIL.
    pub fn publish_selections(&mut self, steered: &[Entry]) -> Result<Option<Publication>> {
        let round = Round {
            seen: Vec::new(),
            long_wanted: HashSet::new(),
            long: match self.answers.long_known.take() {
                Some(known) => known,
                None => self.answers.read_long()?,
            },
            pending: Vec::new(),
            empty: false,
            changes: AnswerChanges::default(),
        };
        let mut answers = BTreeMap::new();
        for entry in steered {
            match self.answers.selection_of(&round, entry) {
                Some(slot) if slot <= self.selections.capacity && entry.steered => {
                    answers.insert(slot, entry.answer());
                }
                _ => {
                    self.answers.long_known = Some(round.long);
                    return Ok(None);
                }
            }
        }
        self.answers.long_known = Some(round.long);
        let (steered_written, flipped) = self.selections.publish(&answers)?;
        Ok(Some(Publication {
            answers: AnswerChanges::default(),
            steered_written,
            flipped,
        }))
    }

    /// A dynamic update: writes the static entries `write` (new, or answering differently)
    /// and removes `remove`, touching nothing else; each written entry through the same path as
    /// [`Self::publish`] (beside the entry it replaces, which is removed after), so a query
    /// finds the old answer or the new one. Steered names never come here (updates to them are
    /// refused).
    pub fn patch(&mut self, write: &[Entry], remove: &[Entry]) -> Result<AnswerChanges> {
        let mut round = self.answers.begin()?;
        for entry in write {
            if entry.steered {
                bail!("a steered answer cannot be patched");
            }
            let staged = Staged::Answer(entry.answer());
            if !fits_slot(entry) {
                // Bound for the long-answer map: a copy in the table would shadow it.
                self.answers.remove_from_table(entry, &mut round);
            }
            self.answers.stage(&mut round, entry, staged)?;
        }
        self.answers.write_staged(&mut round)?;
        for entry in write {
            // Moved from the long-answer map into the table: the old copy goes.
            let key = entry.key();
            if fits_slot(entry)
                && !round.long_wanted.contains(&key)
                && round.long.contains_key(&key)
            {
                self.answers.remove_long(&mut round, &key)?;
            }
        }
        for entry in remove {
            self.answers.remove_from_table(entry, &mut round);
            let key = entry.key();
            if round.long.contains_key(&key) {
                self.answers.remove_long(&mut round, &key)?;
            }
        }
        self.answers.long_known = Some(round.long);
        Ok(round.changes)
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
    /// Answers for names of up to [`SHORT_NAME_LEN`] octets whose answer fits a slot
    /// ([`SLOT_DATA_LEN`]), steered ones included: the name table's share.
    pub answers: u32,
    /// Answers for longer names, and larger answers.
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

    /// What `entries` need: one entry each in the map its name and answer pick, and a slot for
    /// each steered one.
    pub fn needed<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut needed = Self::default();
        for entry in entries {
            let short = entry.name().len() <= SHORT_NAME_LEN;
            if short && (entry.steered || fits_slot(entry)) {
                needed.answers += 1;
            } else {
                needed.long_answers += 1;
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

/// Slots of the name table for `answers` entries: a third more, so that probe windows stay
/// short (placed in order of home slot, a million entries then average 1.5 slots from home and
/// about 50 find their window full), and [`PROBES`] beyond the last home slot, so that no
/// window wraps.
pub fn table_slots(answers: u32) -> u32 {
    answers
        .max(1)
        .saturating_add(answers / 3)
        .saturating_add(PROBES as u32)
}

/// Entries of the long-answer map for `long_answers` and `answers`: beyond the configured
/// entries, room for the table's entries whose window is full (a few per ten thousand).
pub fn long_entries(long_answers: u32, answers: u32) -> u32 {
    long_answers
        .saturating_add(answers / 256)
        .saturating_add(64)
}

/// Whether `entry`'s name and answer fit a name-table slot.
fn fits_slot(entry: &Entry) -> bool {
    entry.name().len() <= SHORT_NAME_LEN && entry.section().len() <= SLOT_DATA_LEN
}

/// What an entry is to answer: an answer, or a steered name's selection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one lives at a time, on the stack; boxing would allocate for every entry"
)]
enum Staged {
    Answer(Answer),
    Selection(u16),
}

impl Staged {
    fn full(&self) -> Answer {
        match self {
            Self::Answer(answer) => *answer,
            Self::Selection(slot) => Answer::selected(*slot),
        }
    }
}

/// The name table and the long-answer map, which callers see as one map from name and type to
/// answer. Names up to [`SHORT_NAME_LEN`] octets whose answer fits a slot live in the table
/// (written through a memory mapping, no system call per entry); longer names, larger answers
/// and entries whose probe window is full live in the long-answer map.
pub struct AnswerMap {
    table: NameTable,
    long: HashMap<MapData, LongNameKey, Answer>,
    /// What the long-answer map holds, read once (we are its only writer) and kept up to date.
    long_known: Option<StdHashMap<LongNameKey, Answer>>,
}

/// One publish in progress: what it has seen and what it still has to write.
pub struct Round {
    /// Table slots holding a wanted entry, as a bitmap.
    seen: Vec<u64>,
    /// Long-answer keys wanted.
    long_wanted: HashSet<LongNameKey>,
    long: StdHashMap<LongNameKey, Answer>,
    /// Table entries to write: home slot, slot content, the slot it replaces.
    pending: Vec<(u32, NameSlot, Option<u32>)>,
    /// Whether the table held no entry when the round began (a map this daemon created): then
    /// no entry is looked up (none is there to find), and nothing is left to sweep.
    empty: bool,
    changes: AnswerChanges,
}

/// What [`AnswerMaps::publish`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerChanges {
    pub written: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Entries of the table's share that went to the long-answer map, their window full.
    pub overflowed: usize,
}

impl AnswerMap {
    /// `names` is the name table (its entry [`state_slot::NAME_SLOTS`] of `state` is set to its
    /// home slots), `long` the long-answer map.
    pub fn new(names: Map, long: Map, state: Map) -> Result<Self> {
        let names: Array<MapData, NameSlot> = Array::try_from(names).context("name table")?;
        let mut state: Array<MapData, State> = Array::try_from(state).context("state map")?;
        let table = NameTable::map(names)?;
        state
            .set(
                state_slot::NAME_SLOTS,
                State {
                    generation: table.homes,
                },
                0,
            )
            .context("writing the name table's size")?;
        Ok(Self {
            table,
            long: HashMap::try_from(long).context("long-name answer map")?,
            long_known: None,
        })
    }

    fn read_long(&self) -> Result<StdHashMap<LongNameKey, Answer>> {
        self.long
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the long-name answer map")
    }

    fn begin(&mut self) -> Result<Round> {
        let long = match self.long_known.take() {
            Some(known) => known,
            None => self.read_long()?,
        };
        Ok(Round {
            seen: vec![0; self.table.slots.len().div_ceil(64)],
            long_wanted: HashSet::new(),
            long,
            pending: Vec::new(),
            empty: self.table.empty,
            changes: AnswerChanges::default(),
        })
    }

    /// Notes that `entry` is to answer `staged`: unchanged if it already does, else queued for
    /// [`Self::write_staged`] (the table's share) or written at once (the long-answer map).
    fn stage(&mut self, round: &mut Round, entry: &Entry, staged: Staged) -> Result<()> {
        let short = entry.short_key();
        // Keys are unique within a round: in a table that began it empty, the entry is not
        // there yet.
        let found = match (&short, round.empty) {
            (Some(key), false) => self.table.find(key),
            _ => None,
        };
        let fits = matches!(staged, Staged::Selection(_)) || fits_slot(entry);
        if let (Some(key), true) = (short, fits) {
            let slot = slot_for(&key, &staged);
            match found {
                Some(index) if self.table.slots[index as usize] == slot => {
                    set_bit(&mut round.seen, index);
                    round.changes.unchanged += 1;
                }
                _ => {
                    let home = home_slot(key.hash(), self.table.homes);
                    round.pending.push((home, slot, found));
                }
            }
            return Ok(());
        }
        // The long-answer map's share; its table copy, if any, is removed by the sweep.
        self.write_long(round, entry.key(), staged.full())
    }

    fn write_long(&mut self, round: &mut Round, key: LongNameKey, answer: Answer) -> Result<()> {
        round.long_wanted.insert(key);
        if round.long.get(&key) == Some(&answer) {
            round.changes.unchanged += 1;
            return Ok(());
        }
        self.long
            .insert(key, answer, 0)
            .context("writing the long-name answer map (is xdp.max_long_answers large enough?)")?;
        round.long.insert(key, answer);
        round.changes.written += 1;
        Ok(())
    }

    /// Writes the queued table entries, in order of home slot (which keeps windows short),
    /// each into a free slot of its window before the slot it replaces is removed. An entry
    /// whose window is full goes to the long-answer map.
    fn write_staged(&mut self, round: &mut Round) -> Result<()> {
        let pending = std::mem::take(&mut round.pending);
        // Sorted as home slot and place in the queue, a number each: a million entries of 144
        // bytes each would otherwise be moved about by the sort (a tenth of a load's time).
        let mut order: Vec<u64> = pending
            .iter()
            .enumerate()
            .map(|(at, (home, ..))| u64::from(*home) << 32 | at as u64)
            .collect();
        order.sort_unstable();
        for at in order {
            let (home, slot, replaces) = pending[(at & u64::from(u32::MAX)) as usize];
            let index = match self.table.free_slot(home) {
                Some(index) => Some(index),
                None if self.table.grace()? => self.table.free_slot(home),
                None => None,
            };
            match index {
                Some(index) => {
                    self.table.write(index, &slot);
                    set_bit(&mut round.seen, index);
                    round.changes.written += 1;
                }
                None => {
                    let mut key = LongNameKey::zeroed();
                    key.name[..SHORT_NAME_LEN].copy_from_slice(&slot.name);
                    key.qtype = slot.qtype;
                    self.write_long(round, key, slot_answer(&slot))?;
                    round.changes.overflowed += 1;
                }
            }
            if let Some(old) = replaces {
                self.table.remove(old);
            }
        }
        Ok(())
    }

    /// Removes `entry`'s slot from the table, if it has one.
    fn remove_from_table(&mut self, entry: &Entry, round: &mut Round) {
        if let Some(index) = entry.short_key().and_then(|key| self.table.find(&key)) {
            self.table.remove(index);
            round.changes.removed += 1;
        }
    }

    fn remove_long(&mut self, round: &mut Round, key: &LongNameKey) -> Result<()> {
        absent_is_removed(self.long.remove(key))
            .context("removing from the long-name answer map")?;
        round.long.remove(key);
        round.changes.removed += 1;
        Ok(())
    }

    /// Removes every entry the round did not want: table slots it did not see, long-answer
    /// keys it did not ask for.
    fn finish(&mut self, mut round: Round) -> Result<AnswerChanges> {
        // A round that began on an empty table wrote every live slot.
        if !round.empty {
            round.changes.removed += self.table.sweep(&round.seen);
        }
        let stale: Vec<LongNameKey> = round
            .long
            .keys()
            .filter(|key| !round.long_wanted.contains(key))
            .copied()
            .collect();
        for key in stale {
            absent_is_removed(self.long.remove(&key))
                .context("removing from the long-name answer map")?;
            round.long.remove(&key);
            round.changes.removed += 1;
        }
        self.long_known = Some(round.long);
        Ok(round.changes)
    }

    /// The selection slot `entry` points at now, if it is a steered name's marker.
    fn selection_of(&self, round: &Round, entry: &Entry) -> Option<u16> {
        let in_table = entry
            .short_key()
            .and_then(|key| self.table.find(&key))
            .map(|index| self.table.slots[index as usize].selection);
        in_table
            .or_else(|| round.long.get(&entry.key()).map(|answer| answer.selection))
            .filter(|&slot| slot != 0)
    }

    /// Every selection slot an entry points at.
    fn selections_in_use(&self, round: &Round) -> HashSet<u16> {
        self.table
            .slots
            .iter()
            .filter(|slot| slot.tag > SLOT_REMOVED && slot.selection != 0)
            .map(|slot| slot.selection)
            .chain(round.long.values().map(|answer| answer.selection))
            .filter(|&slot| slot != 0)
            .collect()
    }

    /// The entries each map is meant for: the table's share (its slots less the third kept
    /// free and the window room), and the long-answer map's configured share.
    fn capacity(&self) -> Result<(u32, u32)> {
        let long = self
            .long
            .map()
            .info()
            .context("reading the long-name answer map's size")?
            .max_entries();
        let table = self.table.slots.len() as u32;
        let answers = (u64::from(table.saturating_sub(PROBES as u32)) * 3).div_ceil(4) as u32;
        Ok((answers, long.saturating_sub(answers / 256 + 64)))
    }
}

/// The slot answering `key` with `staged`.
fn slot_for(key: &ShortNameKey, staged: &Staged) -> NameSlot {
    let mut slot = NameSlot::empty();
    slot.tag = slot_tag(key.hash());
    slot.name = key.name;
    slot.qtype = key.qtype;
    match staged {
        Staged::Answer(answer) => {
            let len = usize::from(answer.len);
            slot.flags = answer.flags;
            slot.ancount = answer.ancount as u8;
            slot.len = len as u8;
            slot.data[..len].copy_from_slice(&answer.data[..len]);
        }
        Staged::Selection(selection) => slot.selection = *selection,
    }
    slot
}

/// The full answer a slot holds.
pub(crate) fn slot_answer(slot: &NameSlot) -> Answer {
    if slot.selection != 0 {
        return Answer::selected(slot.selection);
    }
    let mut answer = Answer::selected(0);
    answer.flags = slot.flags;
    answer.ancount = u16::from(slot.ancount);
    answer.len = u16::from(slot.len);
    answer.data[..SLOT_DATA_LEN].copy_from_slice(&slot.data);
    answer
}

fn set_bit(bits: &mut [u64], index: u32) {
    bits[index as usize / 64] |= 1 << (index % 64);
}

fn bit(bits: &[u64], index: usize) -> bool {
    bits[index / 64] & (1 << (index % 64)) != 0
}

/// The name table, mapped into our memory: the XDP program reads the same pages.
///
/// Readers run concurrently, so a slot is never changed while it may be read: an entry is
/// written into a free slot (all of it, then its tag, with release ordering), and removed by
/// setting its tag to [`SLOT_REMOVED`]; a removed slot is written again only after an RCU
/// grace period ([`Self::grace`]), when no XDP run that could have read it is still going.
struct NameTable {
    /// The array's memory, as the kernel lays it out (`NameSlot`s back to back).
    slots: &'static mut [NameSlot],
    /// Home slots: the windows of the last one end at the array's end.
    homes: u32,
    /// Slots removed since the last grace period, not to be written yet.
    fresh: HashSet<u32>,
    /// No slot has been written since the map was created (read once, when mapped).
    empty: bool,
    /// Keeps the map (and the mapping's file) open.
    _map: Array<MapData, NameSlot>,
}

impl NameTable {
    fn map(map: Array<MapData, NameSlot>) -> Result<Self> {
        // The kernel's size, not the object's: a map adopted from an earlier run keeps the size
        // it was created with.
        let entries = map
            .map()
            .info()
            .context("reading the name table's size")?
            .max_entries() as usize;
        if entries <= PROBES {
            bail!("the name table has {entries} slots, fewer than one probe window");
        }
        let bytes = entries * size_of::<NameSlot>();
        // SAFETY: maps `bytes` of the array (created BPF_F_MMAPABLE by the XDP object) shared;
        // the kernel checks the length and flags. The mapping lives until `drop`, after which
        // nothing reads the slice.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.map().fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the name table");
        }
        // SAFETY: the mapping is `entries` NameSlots (elements of an array map are laid out
        // at their size rounded up to 8, which NameSlot is), any bit pattern is a valid
        // NameSlot, and nothing else in this process aliases it.
        let slots = unsafe { std::slice::from_raw_parts_mut(base.cast::<NameSlot>(), entries) };
        let empty = slots.iter().all(|slot| slot.tag == SLOT_EMPTY);
        Ok(Self {
            empty,
            slots,
            homes: (entries - PROBES) as u32,
            // Removals of an earlier run may be recent: one grace period before any reuse.
            fresh: HashSet::from([u32::MAX]),
            _map: map,
        })
    }

    /// The slot holding `key`, as the XDP program finds it.
    fn find(&self, key: &ShortNameKey) -> Option<u32> {
        let hash = key.hash();
        let tag = slot_tag(hash);
        let home = home_slot(hash, self.homes) as usize;
        for index in home..home + PROBES {
            let slot = &self.slots[index];
            if slot.tag == SLOT_EMPTY {
                return None;
            }
            if slot.tag == tag && slot.name == key.name && slot.qtype == key.qtype {
                return Some(index as u32);
            }
        }
        None
    }

    /// A slot of the window at `home` that may be written: empty, or removed before the last
    /// grace period.
    fn free_slot(&self, home: u32) -> Option<u32> {
        (home..home + PROBES as u32).find(|&index| {
            let tag = self.slots[index as usize].tag;
            tag == SLOT_EMPTY || (tag == SLOT_REMOVED && !self.fresh.contains(&index))
        })
    }

    /// Waits for an RCU grace period if slots were removed since the last one, after which
    /// they may be written; whether it did.
    fn grace(&mut self) -> Result<bool> {
        if self.fresh.is_empty() {
            return Ok(false);
        }
        grace_period()?;
        self.fresh.clear();
        Ok(true)
    }

    fn write(&mut self, index: u32, slot: &NameSlot) {
        self.empty = false;
        let target = &mut self.slots[index as usize];
        let tag = slot.tag;
        // Everything but the tag, which keeps its value (empty or removed) meanwhile.
        *target = NameSlot {
            tag: target.tag,
            ..*slot
        };
        // SAFETY: `tag` is an aligned u64 inside our mapping; the XDP program reads it with
        // plain loads.
        unsafe { AtomicU64::from_ptr(&mut target.tag) }.store(tag, Ordering::Release);
    }

    fn remove(&mut self, index: u32) {
        let target = &mut self.slots[index as usize];
        // SAFETY: as in `write`.
        unsafe { AtomicU64::from_ptr(&mut target.tag) }.store(SLOT_REMOVED, Ordering::Release);
        self.fresh.insert(index);
    }

    /// Removes every live slot not in `seen`; returns how many.
    fn sweep(&mut self, seen: &[u64]) -> usize {
        let stale: Vec<u32> = (0..self.slots.len())
            .filter(|&index| self.slots[index].tag > SLOT_REMOVED && !bit(seen, index))
            .map(|index| index as u32)
            .collect();
        for &index in &stale {
            self.remove(index);
        }
        stale.len()
    }
}

impl Drop for NameTable {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; the slice is not used after this.
        unsafe {
            libc::munmap(
                self.slots.as_mut_ptr().cast(),
                std::mem::size_of_val(self.slots),
            )
        };
    }
}

/// Waits until every XDP run that started before the call has ended: `membarrier`'s global
/// command waits for an RCU grace period (`synchronize_rcu`), and XDP programs run inside RCU
/// read-side sections. Where the command is unavailable (nohz_full kernels), a wait of 100 ms,
/// far longer than any XDP run.
fn grace_period() -> Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
    // SAFETY: membarrier takes no pointers.
    if unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) } != 0 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
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

pub(crate) fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Name, RecordType};

    use super::*;
    use edge_dns::fast_path::name_key;

    /// Names that differ in a few characters (the usual shape of a large zone) must not share
    /// hashes: they would share home slots and tags, and lengthen windows.
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
                let mut short = ShortNameKey::zeroed();
                short.name.copy_from_slice(&key.name[..SHORT_NAME_LEN]);
                short.qtype = key.qtype;
                assert!(hashes.insert(short.hash()), "{name} collides");
            }
        }
    }

    #[test]
    fn table_keeps_a_third_free_and_a_window_at_the_end() {
        assert_eq!(table_slots(3_000), 4_000 + PROBES as u32);
        assert!(u64::from(table_slots(1_000_000)) * size_of::<NameSlot>() as u64 <= 171 << 20);
        assert_eq!(size_of::<NameSlot>(), 128);
    }
}
