//! Finding a short name in the name table: its home slot, then the slots after it, at most
//! [`PROBES`] of them. The daemon places every entry inside that window (or in the long-answer
//! map), and a probe that meets an empty slot stops: no entry lies beyond one.

use edge_common::{
    LongNameKey, PROBES, SHORT_NAME_LEN, SLOT_EMPTY, home_slot, slot_tag, state_slot,
};

use crate::{NAMES, live, query::Scratch};

/// The index of the slot holding `scratch.short` (name and type), or -1. A global function, so
/// that the verifier checks its loop once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_find_slot(scratch: *const Scratch) -> i64 {
    // SAFETY: the verifier holds `scratch` to point at a whole `Scratch`, or to be null.
    let Some(scratch) = (unsafe { scratch.as_ref() }) else {
        return -1;
    };
    let key = &scratch.short;
    let hash = key.hash();
    let tag = slot_tag(hash);
    let slots = live(state_slot::NAME_SLOTS);
    let home = home_slot(hash, slots);
    for i in 0..PROBES as u32 {
        let index = home + i;
        let Some(slot) = NAMES.get(index) else {
            return -1;
        };
        // The answer (the slot's second cache line) is read only once the reply is written,
        // after helper calls; loaded now, its miss overlaps the tag's instead of following it.
        // SAFETY: a byte inside the slot, which `get` returned.
        unsafe { core::ptr::read_volatile(slot.data.as_ptr()) };
        if slot.tag == SLOT_EMPTY {
            return -1;
        }
        if slot.tag == tag && key.same_name(slot) {
            return i64::from(index);
        }
    }
    -1
}

/// Copies the short key of `scratch` into its long key (the rest of the name zeroed), for the
/// long-answer map, which holds short names too when their answer or probe window did not fit
/// the table; 0 on success.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_widen_key(scratch: *mut Scratch) -> i64 {
    // SAFETY: the verifier holds `scratch` to point at a whole `Scratch`, or to be null.
    let Some(scratch) = (unsafe { scratch.as_mut() }) else {
        return -1;
    };
    widen(&scratch.short.name, &mut scratch.key);
    0
}

#[inline(always)]
fn widen(short: &[u8; SHORT_NAME_LEN], key: &mut LongNameKey) {
    const SHORT_WORDS: usize = SHORT_NAME_LEN / 8;
    // SAFETY: both names start at offset 0 of 8-aligned keys and are whole words long.
    let (from, to) = unsafe {
        (
            &*(short.as_ptr() as *const [u64; SHORT_WORDS]),
            &mut *(key.name.as_mut_ptr() as *mut [u64; edge_common::NAME_KEY_LEN / 8]),
        )
    };
    for i in 0..edge_common::NAME_KEY_LEN / 8 {
        to[i] = if i < SHORT_WORDS { from[i] } else { 0 };
    }
}
