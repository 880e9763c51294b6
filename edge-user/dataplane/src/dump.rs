//! Everything the pinned maps hold, read back and decoded (`edge maps`): the answers with
//! their names and types, the live selections, the service addresses and the counters. Only
//! reads, through the layouts the writers in [`crate::maps`] use, so it can run beside the
//! daemon or while the data plane runs without one.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap, IterableMap as _, MapData};
use edge_common::{
    Answer, Counter, LongNameKey, NameSlot, SLOT_REMOVED, Services, State, pin, state_slot,
};
use edge_dns::fast_path::{self, DecodedAnswer};

use crate::maps::{Counters, open_pinned, slot_answer};

/// The pinned maps of one data plane, decoded.
#[derive(Debug, Clone)]
pub struct Dump {
    /// Every answer, sorted by name and type.
    pub answers: Vec<NameAnswer>,
    /// The selection generation the program reads.
    pub generation: u32,
    /// The addresses and ports the program answers on (the live copy).
    pub services: Vec<SocketAddr>,
    /// Every counter, summed over CPUs.
    pub counters: Vec<(Counter, u64)>,
}

/// One name and type the fast path answers.
#[derive(Debug, Clone)]
pub struct NameAnswer {
    /// The name, type and records; for a steered name, those of its live selection (none when
    /// the live generation holds nothing for it: the program passes it to userspace).
    pub answer: DecodedAnswer,
    /// For a steered name, its slot in the selection map.
    pub selection: Option<u16>,
    /// Where the entry is.
    pub place: Place,
}

/// The map holding an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Slot of the name table (`edge_names`).
    Table(u32),
    /// The long-answer map (`edge_long_names`).
    Long,
}

impl Place {
    pub fn map_name(self) -> &'static str {
        match self {
            Self::Table(_) => edge_common::map_name::NAMES,
            Self::Long => edge_common::map_name::LONG_ANSWERS,
        }
    }
}

/// Reads and decodes the maps pinned in `pin_dir`.
pub fn read(pin_dir: &Path) -> Result<Dump> {
    let state: Array<MapData, State> =
        Array::try_from(open_pinned(&pin_dir.join(pin::STATE))?).context("state map")?;
    let generation = state
        .get(&state_slot::SELECTIONS, 0)
        .context("reading the state map")?
        .generation;
    let live_services = state
        .get(&state_slot::SERVICES, 0)
        .context("reading the state map")?
        .generation
        & 1;

    let selection_map: HashMap<MapData, u32, Answer> =
        HashMap::try_from(open_pinned(&pin_dir.join(pin::SELECTIONS))?).context("selection map")?;
    let mut selections = BTreeMap::new();
    for entry in selection_map.iter() {
        let (key, answer) = entry.context("reading the selection map")?;
        if key >> 16 == generation {
            selections.insert(key as u16, answer);
        }
    }

    let mut entries: Vec<(LongNameKey, Answer, Place)> = table_entries(pin_dir)?;
    let long: HashMap<MapData, LongNameKey, Answer> =
        HashMap::try_from(open_pinned(&pin_dir.join(pin::LONG_ANSWERS))?)
            .context("long-name answer map")?;
    for entry in long.iter() {
        let (key, answer) = entry.context("reading the long-name answer map")?;
        entries.push((key, answer, Place::Long));
    }

    let mut answers = Vec::with_capacity(entries.len());
    for (key, answer, place) in entries {
        let selection = (answer.selection != 0).then_some(answer.selection);
        let held = match selection {
            Some(slot) => selections
                .get(&slot)
                .copied()
                .unwrap_or(Answer::selected(slot)),
            None => answer,
        };
        let decoded = fast_path::decode_answer(
            &key.name,
            key.qtype,
            held.ancount,
            &held.data[..usize::from(held.len).min(held.data.len())],
        )
        .with_context(|| format!("decoding the answer in {}", place.map_name()))?;
        answers.push(NameAnswer {
            answer: decoded,
            selection,
            place,
        });
    }
    answers
        .sort_by(|a, b| (&a.answer.name, &a.answer.qtype).cmp(&(&b.answer.name, &b.answer.qtype)));

    let services: Array<MapData, Services> =
        Array::try_from(open_pinned(&pin_dir.join(pin::SERVICES))?).context("service map")?;
    let services = service_addresses(
        &services
            .get(&live_services, 0)
            .context("reading the service map")?,
    );
    let counters = Counters::from_pin(&pin_dir.join(pin::COUNTERS))?.read()?;
    Ok(Dump {
        answers,
        generation,
        services,
        counters,
    })
}

/// The live entries of the name table, read through a read-only mapping of it. A slot that
/// changes while it is copied (its tag differs after the copy) is being moved by a publish: it
/// is left out, as the program would miss it for that moment.
fn table_entries(pin_dir: &Path) -> Result<Vec<(LongNameKey, Answer, Place)>> {
    let table: Array<MapData, NameSlot> =
        Array::try_from(open_pinned(&pin_dir.join(pin::NAMES))?).context("name table")?;
    let slots = table
        .map()
        .info()
        .context("reading the name table's size")?
        .max_entries() as usize;
    let bytes = slots * size_of::<NameSlot>();
    // SAFETY: maps `bytes` of the array (created BPF_F_MMAPABLE by the XDP object) shared and
    // read-only; the kernel checks the length. Unmapped below, before returning.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ,
            libc::MAP_SHARED,
            table.map().fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mapping the name table");
    }
    let base = base.cast::<NameSlot>();
    let mut entries = Vec::new();
    for index in 0..slots {
        // SAFETY: `index` is within the mapping of `slots` NameSlots; the daemon writes slots
        // concurrently, so the tag is read atomically (it is written last, with release
        // ordering) and the slot copied with a volatile read; any bit pattern is a NameSlot.
        let (before, slot, after) = unsafe {
            let slot = base.add(index);
            let tag = AtomicU64::from_ptr(&raw mut (*slot).tag);
            let before = tag.load(Ordering::Acquire);
            let copy = std::ptr::read_volatile(slot);
            (before, copy, tag.load(Ordering::Acquire))
        };
        if before <= SLOT_REMOVED || before != after {
            continue;
        }
        let mut key = LongNameKey::zeroed();
        key.name[..slot.name.len()].copy_from_slice(&slot.name);
        key.qtype = slot.qtype;
        entries.push((key, slot_answer(&slot), Place::Table(index as u32)));
    }
    // SAFETY: unmaps exactly the mapping made above; `base` is not used after this.
    unsafe { libc::munmap(base.cast(), bytes) };
    Ok(entries)
}

/// The addresses of a service array, as socket addresses (an address of zeros is the wildcard).
fn service_addresses(services: &Services) -> Vec<SocketAddr> {
    let v4 = services
        .v4
        .iter()
        .take(services.v4_len as usize)
        .map(|service| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(service.addr.to_ne_bytes())),
                u16::from_be(service.port),
            )
        });
    let v6 = services
        .v6
        .iter()
        .take(services.v6_len as usize)
        .map(|service| {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(service.addr)),
                u16::from_be(service.port),
            )
        });
    v4.chain(v6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_addresses_are_what_was_configured() {
        let listen: Vec<SocketAddr> = vec![
            "192.0.2.1:5353".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        ];
        assert_eq!(service_addresses(&fast_path::services(&listen)), listen);
    }
}
