//! Turning the query frame into its response in place: the question stays where it is (with its
//! letter case), the prebuilt answer section goes after it, then our OPT record if the query had
//! one; addresses and ports swap.

use aya_ebpf::{
    bindings::xdp_md,
    helpers::generated::{
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use edge_common::{
    ANSWER_DATA_LEN, Answer, Counter, EDNS_PAYLOAD_SIZE, NameSlot, SLOT_DATA_LEN, flags,
};

use crate::{
    checksum,
    headers::{DnsHdr, EthHdr, Ipv4Hdr, Ipv6Hdr, Layout, UdpHdr, ptr_at},
    query::{EDNS_DO, FRAME_COPY_MAX, OPT_LEN, Query, Scratch},
    words::{self, WORD},
};

/// Beyond where any reply's answer section starts.
const OFFSET_MAX: usize = 512;

/// TTL / hop limit of the replies we send.
const REPLY_TTL: u8 = 64;

/// Where the answer was found: a slot of the name table, or a full answer (long-answer map,
/// selection map). Both are map values, valid for this invocation.
#[derive(Clone, Copy)]
pub enum Found {
    Slot(&'static NameSlot),
    Full(&'static Answer),
}

impl Found {
    /// The selection slot of a steered name's entry; 0 for an answer.
    #[inline(always)]
    pub fn selection(self) -> u16 {
        match self {
            Self::Slot(slot) => slot.selection,
            Self::Full(answer) => answer.selection,
        }
    }

    /// Header flags, records, and bytes of the answer section.
    #[inline(always)]
    fn header(self) -> (u16, u16, usize) {
        match self {
            Self::Slot(slot) => (slot.flags, u16::from(slot.ancount), usize::from(slot.len)),
            Self::Full(answer) => (answer.flags, answer.ancount, usize::from(answer.len)),
        }
    }
}

#[inline(always)]
#[expect(
    clippy::manual_range_contains,
    reason = "two comparisons give the verifier both bounds; `contains` compiles to one \
              subtract-and-compare that it cannot follow (seen: the program failed to load)"
)]
pub fn write<L: Layout>(
    ctx: &XdpContext,
    query: &Query,
    found: Found,
    scratch: &mut Scratch,
) -> Result<(), Counter> {
    let (answer_flags, ancount, len) = found.header();
    if len < WORD || len > ANSWER_DATA_LEN {
        return Err(Counter::ReplyFailed);
    }
    let question_end = query.question_end::<L>();
    let opt_len = if query.edns.is_some() { OPT_LEN } else { 0 };
    let reply_end = question_end + len + opt_len;
    let delta = reply_end as i32 - (ctx.data_end() - ctx.data()) as i32;
    resize(ctx, delta, question_end, scratch)?;
    let offset = question_end as u64;
    let written = match found {
        Found::Slot(slot) => edge_write_slot(ctx.ctx, offset, slot),
        Found::Full(answer) => edge_write_answer(ctx.ctx, offset, answer),
    };
    if written != 0 {
        return Err(Counter::ReplyFailed);
    }
    if let Some(edns) = query.edns {
        write_opt(ctx, question_end + len, edns & EDNS_DO)?;
    }

    let copied = query.flags & (flags::RD | flags::CD);
    let arcount = u16::from(query.edns.is_some());
    headers::<L>(ctx, reply_end, answer_flags | copied, ancount, arcount)
}

/// Turns the query into a truncated response: TC set, the question only (no OPT record), as
/// NSD slips. A rate-limited source gets one now and then ([`crate::rrl`]): a real client
/// retries over TCP, which a spoofed one cannot, and the reply is no larger than the query.
#[inline(always)]
pub fn truncated<L: Layout>(ctx: &XdpContext, query: &Query) -> Result<(), Counter> {
    let question_end = query.question_end::<L>();
    let delta = question_end as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the helper checks `delta` against the frame itself; here it only shrinks.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(Counter::ReplyFailed);
    }
    let copied = query.flags & (flags::RD | flags::CD);
    headers::<L>(ctx, question_end, flags::QR | flags::TC | copied, 0, 0)
}

/// Rewrites the headers of a reply that ends at frame offset `reply_end`: addresses and ports
/// swapped, lengths, checksums, and the DNS header's `dns_flags` and counts.
#[inline(always)]
fn headers<L: Layout>(
    ctx: &XdpContext,
    reply_end: usize,
    dns_flags: u16,
    ancount: u16,
    arcount: u16,
) -> Result<(), Counter> {
    // Packet pointers are stale after the tail moved: look the headers up again.
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let udp: *mut UdpHdr = ptr_at(ctx, L::L4)?;
    let dns: *mut DnsHdr = ptr_at(ctx, L::DNS)?;
    // SAFETY: `ptr_at` checked that the three headers lie inside the frame, after the resize.
    let (eth, udp, dns) = unsafe { (&mut *eth, &mut *udp, &mut *dns) };
    core::mem::swap(&mut eth.dst, &mut eth.src);

    dns.flags = dns_flags.to_be();
    dns.ancount = ancount.to_be();
    dns.arcount = arcount.to_be();

    let udp_len = reply_end - L::L4;
    core::mem::swap(&mut udp.src, &mut udp.dst);
    udp.len = (udp_len as u16).to_be();
    udp.check = 0;

    if L::IPV6 {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, L::L3)?;
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let ip = unsafe { &mut *ip };
        core::mem::swap(&mut ip.src, &mut ip.dst);
        ip.payload_len = (udp_len as u16).to_be();
        ip.hop_limit = REPLY_TTL;
        let sum = checksum::edge_udp6_checksum(ctx.ctx, L::L3 as u64, udp_len as u64);
        if sum == 0 {
            return Err(Counter::ReplyFailed);
        }
        // Headers again: the verifier forgets packet bounds across the call.
        let udp: *mut UdpHdr = ptr_at(ctx, L::L4)?;
        // SAFETY: `ptr_at` checked that the UDP header lies inside the frame.
        unsafe { (*udp).check = sum as u16 };
    } else {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, L::L3)?;
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let ip = unsafe { &mut *ip };
        core::mem::swap(&mut ip.src, &mut ip.dst);
        ip.tot_len = ((L::L4 - L::L3 + udp_len) as u16).to_be();
        ip.ttl = REPLY_TTL;
        ip.check = 0;
        ip.check = checksum::ipv4_header(ip);
        // UDP checksum zero: "none", allowed over IPv4 (RFC 768).
    }
    Ok(())
}

/// Makes the frame `delta` bytes longer (or shorter), keeping its first `keep` bytes (headers
/// and question) in place. Growing the tail needs tailroom, which a driver's page has but a
/// veth or generic-XDP frame (the sender's skb) often lacks; then the frame grows at the head,
/// where XDP always has room, and the kept bytes move to the new start.
#[inline(always)]
fn resize(ctx: &XdpContext, delta: i32, keep: usize, scratch: &mut Scratch) -> Result<(), Counter> {
    // SAFETY: the helper checks `delta` against the frame's room itself.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0 {
        return Ok(());
    }
    if delta <= 0 || keep == 0 || keep > FRAME_COPY_MAX {
        return Err(Counter::ReplyFailed);
    }
    let buf = scratch.frame.as_mut_ptr();
    // SAFETY: the helper writes at most `keep` bytes into `buf`, our per-CPU frame copy of
    // `FRAME_COPY_MAX` bytes, and `keep` is at most that.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, buf.cast(), keep as u32) } != 0 {
        return Err(Counter::ReplyFailed);
    }
    // SAFETY: the helper checks `-delta` against the headroom itself.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return Err(Counter::ReplyFailed);
    }
    store(ctx, 0, buf, keep)
}

/// Writes the answer section of `answer` (at least a word long) to the frame at `offset`;
/// returns 0 on success. A global function, so that the verifier checks its loop once on its
/// own instead of once for every path that leads to it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_write_answer(ctx: *mut xdp_md, offset: u64, answer: *const Answer) -> i64 {
    // SAFETY: the verifier holds `answer` to point at a whole `Answer`, or to be null.
    let Some(answer) = (unsafe { answer.as_ref() }) else {
        return -1;
    };
    match write_data::<ANSWER_DATA_LEN, { ANSWER_DATA_LEN / WORD }>(
        &XdpContext::new(ctx),
        offset as usize,
        &answer.data,
        usize::from(answer.len),
    ) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// [`edge_write_answer`] for an answer held in a name-table slot.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_write_slot(ctx: *mut xdp_md, offset: u64, slot: *const NameSlot) -> i64 {
    // SAFETY: the verifier holds `slot` to point at a whole `NameSlot`, or to be null.
    let Some(slot) = (unsafe { slot.as_ref() }) else {
        return -1;
    };
    match write_data::<SLOT_DATA_LEN, { SLOT_DATA_LEN / WORD }>(
        &XdpContext::new(ctx),
        offset as usize,
        &slot.data,
        usize::from(slot.len),
    ) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// Plain word stores (see [`words::each_word`]), cheaper than a helper call. Both bounds of
/// `len` are checked apart: one subtract-and-compare is a form the verifier cannot follow.
#[inline(always)]
fn write_data<const N: usize, const WORDS: usize>(
    ctx: &XdpContext,
    offset: usize,
    data: &[u8; N],
    len: usize,
) -> Result<(), Counter> {
    if offset > OFFSET_MAX || len < WORD || len > N {
        return Err(Counter::ReplyFailed);
    }
    words::each_word::<WORDS>(len, |at| {
        words::write_frame(ctx, offset + at, words::load(data, at)?)
    })
}

/// Writes our OPT record at frame `offset`: no options, our payload size, version 0, the query's
/// DO bit echoed, as two overlapping words. The userspace server writes the same bytes (the
/// differential test holds the two equal).
#[inline(always)]
fn write_opt(ctx: &XdpContext, offset: usize, dnssec_ok: u16) -> Result<(), Counter> {
    // The record's bytes are 0, 0, 41, size (2), 0, 0, flags (2), 0, 0; as words read in memory
    // order, bytes 0-7 and bytes 3-10. Built in registers: the stack allows no unaligned loads.
    let size = u64::from(EDNS_PAYLOAD_SIZE.to_be());
    let flags = u64::from(dnssec_ok.to_be());
    words::write_frame(ctx, offset, 41 << 16 | size << 24 | flags << 56)?;
    words::write_frame(ctx, offset + OPT_LEN - WORD, size | flags << 32)
}

#[inline(always)]
fn store(ctx: &XdpContext, offset: usize, bytes: *const u8, len: usize) -> Result<(), Counter> {
    // SAFETY: the helper reads `len` bytes from `bytes`, which the caller holds readable, and
    // checks the frame range itself.
    let ret = unsafe { bpf_xdp_store_bytes(ctx.ctx, offset as u32, bytes as *mut _, len as u32) };
    if ret != 0 {
        return Err(Counter::ReplyFailed);
    }
    Ok(())
}
