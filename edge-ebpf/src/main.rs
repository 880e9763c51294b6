//! edge's XDP program: answers DNS queries for names in the answer map straight from the NIC
//! (XDP_TX) and passes everything else to the kernel stack, counting why.
#![no_std]
#![no_main]

mod checksum;
mod headers;
mod lookup;
mod query;
mod reflect;
mod reply;
mod rrl;
mod words;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use edge_common::{
    Answer, Counter, LongNameKey, NameSlot, Services, State, selection_key, state_slot,
};
use headers::{ETH_LEN, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, EthHdr, Layout, ptr_at};
use query::Scratch;
use reply::Found;

/// The name table: names up to 48 octets with their answers, each in the probe window of its
/// hash's home slot (`lookup`). An array the daemon writes through a memory mapping and sizes
/// at load time.
#[btf_map(name = "edge_names")]
static NAMES: Array<NameSlot, 65536, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Full key → answer, for longer names, answers larger than a slot holds and names whose
/// probe window was full.
#[btf_map(name = "edge_long_names")]
static LONG_ANSWERS: HashMap<LongNameKey, Answer, 4096> = HashMap::new();

/// Answers of steered names: `selection_key(generation, selection)` → answer.
#[btf_map(name = "edge_selections")]
static SELECTIONS: HashMap<u32, Answer, 8192> = HashMap::new();

/// The generation of `SELECTIONS` and the copy of `SERVICES` in use, indexed by
/// [`state_slot`]; userspace flips one after writing a whole new copy.
#[btf_map(name = "edge_state")]
static STATE: Array<State, { state_slot::COUNT }> = Array::new();

/// Addresses and ports we answer on, two copies.
#[btf_map(name = "edge_services")]
static SERVICES: Array<Services, 2> = Array::new();

/// Per-CPU count of every verdict, indexed by [`Counter`].
#[btf_map(name = "edge_counters")]
static COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

#[btf_map(name = "edge_scratch")]
static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

#[xdp]
pub fn edge_dns(ctx: XdpContext) -> u32 {
    match dispatch(&ctx) {
        Ok(Counter::RateLimited) => {
            count(Counter::RateLimited);
            xdp_action::XDP_DROP
        }
        Ok(sent) => {
            count(sent);
            xdp_action::XDP_TX
        }
        Err(reason) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

/// Attached to the far end of a veth pair so that it receives our XDP_TX frames.
#[xdp]
pub fn edge_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Picks the frame's shape (IPv4 or IPv6, at most one VLAN tag) so that the rest of the work
/// runs with constant header offsets. `Ok` is what was sent (answered, slipped) or that the
/// frame is dropped (rate limited); `Err` why it is passed.
#[inline(always)]
fn dispatch(ctx: &XdpContext) -> Result<Counter, Counter> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the header lies inside the frame.
    match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_IPV4 => answer::<headers::V4>(ctx),
        ETH_P_IPV6 => answer::<headers::V6>(ctx),
        ETH_P_8021Q => {
            // The tag's TCI, then the encapsulated EtherType.
            let inner: *const u16 = ptr_at(ctx, ETH_LEN + 2)?;
            // SAFETY: `ptr_at` checked that the header lies inside the frame.
            match u16::from_be(unsafe { *inner }) {
                ETH_P_IPV4 => answer::<headers::VlanV4>(ctx),
                ETH_P_IPV6 => answer::<headers::VlanV6>(ctx),
                _ => Err(Counter::NotIp),
            }
        }
        _ => Err(Counter::NotIp),
    }
}

#[inline(always)]
fn answer<L: Layout>(ctx: &XdpContext) -> Result<Counter, Counter> {
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Counter::ReplyFailed)?;
    // SAFETY: a per-CPU slot, used only by this program invocation.
    let scratch = unsafe { &mut *scratch };
    let query = match query::parse::<L>(ctx, scratch) {
        Ok(query) => query,
        Err(reason) => return limit_passed::<L>(ctx, reason, scratch),
    };
    // The query crosses the RRL step through map memory: verifiers before 6.4 cannot trace a
    // value back across a function call (here `edge_rrl_check`); where they must (a bound or
    // a branch that depends on it), they mark every value exact in every state before and stop
    // pruning, and 6.1 gave up at 1 M instructions. Read back, each field is an unknown value
    // whose trace ends at the load; the mask bounds the name's length again (it is at most
    // 255, so the mask changes nothing).
    scratch.held = query;
    let verdict = rrl::check::<L>(ctx);
    // SAFETY: a read of a field of our own per-CPU scratch; volatile so that it is a load.
    let mut query = unsafe { core::ptr::read_volatile(&scratch.held) };
    query.name_len &= query::NAME_MAX;
    match verdict {
        rrl::Verdict::Answer => {}
        rrl::Verdict::Drop => return Ok(Counter::RateLimited),
        rrl::Verdict::Slip => {
            reply::truncated::<L>(ctx, &query)?;
            return Ok(Counter::Slipped);
        }
    }
    let mut found = None;
    if query.short {
        let index = lookup::edge_find_slot(scratch);
        if index >= 0 {
            found = NAMES.get(index as u32).map(Found::Slot);
        } else if lookup::edge_widen_key(scratch) != 0 {
            return Err(Counter::UnknownName);
        }
    }
    let mut found = match found {
        Some(found) => found,
        None => {
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "by value the key would be copied onto the 512-byte BPF stack"
            )]
            // SAFETY: hash map values stay valid for this invocation (RCU), even if replaced
            // meanwhile.
            let answer = unsafe { LONG_ANSWERS.get(&scratch.key) };
            Found::Full(answer.ok_or(Counter::UnknownName)?)
        }
    };
    let selection = found.selection();
    if selection != 0 {
        let generation = live(state_slot::SELECTIONS);
        let key = selection_key(generation, selection);
        // SAFETY: as above.
        found = Found::Full(unsafe { SELECTIONS.get(key) }.ok_or(Counter::UnknownName)?);
    }
    reply::write::<L>(ctx, &query, found, scratch)?;
    Ok(Counter::Answered)
}

/// A query to one of our services that the program leaves to the userspace server (`reason`)
/// counts against its source prefix as well, so that the limit holds for every UDP query, not
/// just those answered here; over the limit it is dropped (no truncated reply: the question
/// may not have been read).
#[inline(always)]
fn limit_passed<L: Layout>(
    ctx: &XdpContext,
    reason: Counter,
    scratch: &mut Scratch,
) -> Result<Counter, Counter> {
    if matches!(
        reason,
        Counter::NotIp | Counter::IpUnsupported | Counter::NotUdp | Counter::NotService
    ) {
        return Err(reason);
    }
    // Through map memory, as the query in `answer`.
    scratch.reason = reason;
    let verdict = rrl::check::<L>(ctx);
    // SAFETY: as in `answer`.
    let reason = unsafe { core::ptr::read_volatile(&scratch.reason) };
    match verdict {
        rrl::Verdict::Answer => Err(reason),
        rrl::Verdict::Drop | rrl::Verdict::Slip => Ok(Counter::RateLimited),
    }
}

/// Which copy of a double-buffered map to read.
#[inline(always)]
fn live(slot: u32) -> u32 {
    STATE.get(slot).map_or(0, |state| state.generation)
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; no other writer on this CPU while we run.
        unsafe { *value += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
