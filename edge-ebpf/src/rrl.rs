//! Response rate limiting (see [`edge_common::rrl`]): whether a query from this source prefix
//! is answered, dropped or gets a truncated reply. Userspace writes the settings and the exempt
//! prefixes; the buckets are the program's own.

use aya_ebpf::{
    btf_maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    helpers::generated::bpf_ktime_get_ns,
    macros::btf_map,
    programs::XdpContext,
};
use edge_common::{RrlBucket, RrlSettings, rrl};

use crate::headers::{Ipv4Hdr, Ipv6Hdr, Layout, ptr_at};

/// The settings; all zero (the default) leaves RRL off.
#[btf_map(name = "edge_rrl")]
static SETTINGS: Array<RrlSettings, 1> = Array::new();

/// Source prefix ([`rrl::key_v4`], [`rrl::key_v6`]) → its bucket. LRU: a flood from many
/// prefixes evicts the quiet ones, which then start again with a full burst. Userspace sizes it
/// at load time (`xdp.rrl.table_size`).
#[btf_map(name = "edge_rrl_buckets")]
static BUCKETS: LruHashMap<u64, RrlBucket, 65536> = LruHashMap::new();

/// Prefixes never limited, IPv4 mapped into IPv6 ([`rrl::mapped_v4`]).
#[btf_map(name = "edge_rrl_exempt")]
static EXEMPT: LpmTrie<[u8; 16], u8, { rrl::EXEMPT_MAX as usize }> = LpmTrie::new();

/// Where the exempt trie's lookup key is built: in map memory, because the key's address sits
/// four bytes into it, and the stack allows no unaligned word stores.
#[btf_map(name = "edge_rrl_key")]
static KEY: PerCpuArray<Key<[u8; 16]>, 1> = PerCpuArray::new();

/// What becomes of a query.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    Drop,
    /// A truncated reply.
    Slip,
}

const ANSWER: i64 = 0;
const DROP: i64 = 1;
const SLIP: i64 = 2;

/// The verdict for the frame's source; [`Verdict::Answer`] when the IP header cannot be read.
#[inline(always)]
pub fn check<L: Layout>(ctx: &XdpContext) -> Verdict {
    let verdict = if L::IPV6 {
        let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, L::L3) else {
            return Verdict::Answer;
        };
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let src = unsafe { (*ip).src };
        let (high, low) = words(&src);
        edge_rrl_check(rrl::key_v6(&src), high, low)
    } else {
        let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, L::L3) else {
            return Verdict::Answer;
        };
        // SAFETY: as above.
        let src = unsafe { (*ip).src };
        let (high, low) = words(&rrl::mapped_v4(src));
        edge_rrl_check(rrl::key_v4(src), high, low)
    };
    match verdict {
        DROP => Verdict::Drop,
        SLIP => Verdict::Slip,
        _ => Verdict::Answer,
    }
}

/// An address as two words in memory order: a global function takes scalars more simply than
/// a pointer, which it would have to check for null.
#[inline(always)]
fn words(addr: &[u8; 16]) -> (u64, u64) {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
    ] = *addr;
    (
        u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

/// The verdict for the source prefix `key` of the address `high`, `low` (IPv6, or IPv4 mapped,
/// as [`words`]): [`ANSWER`], [`DROP`] or [`SLIP`]. A global function, so that the verifier checks
/// it once, not once per frame layout and path.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_rrl_check(key: u64, high: u64, low: u64) -> i64 {
    let Some(settings) = SETTINGS.get(0) else {
        return ANSWER;
    };
    let interval = settings.interval_ns;
    if interval == 0 {
        return ANSWER;
    }
    // SAFETY: the helper takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(bucket) = BUCKETS.get_ptr_mut(key) else {
        // A new prefix: this reply is the first of its schedule. A failed insert (another CPU
        // raced us to it) loses nothing that matters.
        let _ = BUCKETS.insert(
            key,
            RrlBucket {
                due_ns: now + interval,
                limited: 0,
            },
            0,
        );
        return ANSWER;
    };
    // SAFETY: an LRU map value, valid for this invocation; CPUs updating one prefix at once may
    // lose an update, which lets a reply or two more through.
    let bucket = unsafe { &mut *bucket };
    let due = if bucket.due_ns > now {
        bucket.due_ns
    } else {
        now
    };
    if due - now <= settings.tolerance_ns {
        bucket.due_ns = due + interval;
        return ANSWER;
    }
    if exempt(high, low) {
        return ANSWER;
    }
    bucket.limited += 1;
    let slip = u64::from(settings.slip);
    if slip != 0 && bucket.limited % slip == 0 {
        SLIP
    } else {
        DROP
    }
}

/// Whether the address `high`, `low` lies in an exempt prefix.
#[inline(always)]
fn exempt(high: u64, low: u64) -> bool {
    let Some(key) = KEY.get_ptr_mut(0) else {
        return false;
    };
    let mut data = [0_u8; 16];
    data[..8].copy_from_slice(&high.to_ne_bytes());
    data[8..].copy_from_slice(&low.to_ne_bytes());
    // SAFETY: a per-CPU slot, used only by this program invocation.
    let key = unsafe {
        key.write(Key::new(128, data));
        &*key
    };
    EXEMPT.get(key).is_some()
}
