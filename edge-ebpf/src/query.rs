//! Parsing a DNS query frame down to the answer-map key.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use edge_common::{
    Counter, EDNS_OPTIONS_MAX, LongNameKey, SERVICES_MAX, SHORT_NAME_LEN, ShortNameKey,
    USERSPACE_EDNS_OPTIONS, flags, state_slot,
};

use crate::{
    SERVICES,
    headers::{
        DNS_HEADER_LEN, DnsHdr, IPPROTO_UDP, IPV4_LEN, Ipv4Hdr, Ipv6Hdr, Layout, UDP_LEN, UdpHdr,
        ptr_at, ptr_at_var,
    },
    words::{self, WORD},
};

/// Wire-format names are at most 255 octets (RFC 1035 §3.1), root label included.
pub const NAME_MAX: usize = 255;
/// A name of 255 octets holds at most 127 labels; the walk stops there.
const LABELS_MAX: usize = 128;
const CLASS_IN: u16 = 1;
const TYPE_OPT: u16 = 41;
/// An OPT record without options: root name, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;
/// The DO bit in the OPT record's flags (RFC 3225).
pub const EDNS_DO: u16 = 0x8000;

/// What the reply needs to know about the query.
#[derive(Clone, Copy)]
pub struct Query {
    /// The question name fits the short key (and `Scratch::short` holds it).
    pub short: bool,
    /// The question name's wire length.
    pub name_len: usize,
    /// The query's header flags, host order.
    pub flags: u16,
    /// The query's EDNS flags (host order) if it carried an OPT record.
    pub edns: Option<u16>,
}

impl Query {
    /// Frame offset just past the question: where the answer goes.
    #[inline(always)]
    pub fn question_end<L: Layout>(&self) -> usize {
        L::QNAME + self.name_len + 4
    }
}

/// Per-CPU working memory: the keys (the long one, 264 bytes, would crowd the 512-byte stack)
/// and the name length. The length goes through map memory on purpose: read back, it is an
/// unknown scalar for the verifier, so every exit of the label walk continues as one state
/// instead of 128. `frame` holds the headers and question while the reply grows at the head
/// (see [`crate::reply`]).
#[repr(C)]
pub struct Scratch {
    /// The question and OPT record as read from the frame, in words for the case folding.
    pub raw: [u64; RAW_WORDS],
    /// The key for long names.
    pub key: LongNameKey,
    /// The key for names up to [`SHORT_NAME_LEN`] octets.
    pub short: ShortNameKey,
    pub name_len: u32,
    /// The query while the RRL step runs (see `answer` in main.rs).
    pub held: Query,
    /// Why a query is passed, while the RRL step runs (see `limit_passed` in main.rs).
    pub reason: Counter,
    pub frame: [u8; FRAME_COPY_MAX],
}

impl Scratch {
    /// The message bytes read into `raw`.
    #[inline(always)]
    fn raw_bytes(&self) -> &[u8; RAW_LEN] {
        // SAFETY: `raw` is RAW_LEN bytes of plain data, readable as bytes.
        unsafe { &*(self.raw.as_ptr() as *const [u8; RAW_LEN]) }
    }
}

/// Bytes of the message copied into scratch: a 255-octet name, type and class, and an OPT
/// record without its options, rounded up to whole words.
const RAW_LEN: usize = 272;
const RAW_WORDS: usize = RAW_LEN / WORD;
/// Beyond where any question starts.
const OFFSET_MAX: usize = 128;

/// Bytes before the answer in the longest query we answer: Ethernet, VLAN, IPv6, UDP, DNS
/// header and a 255-octet question, rounded up.
pub const FRAME_COPY_MAX: usize = 384;

/// Checks that the frame is a DNS query over UDP to one of our services, with one question and at
/// most an OPT record besides, and writes its lower-cased name and type into the scratch key.
#[inline(always)]
pub fn parse<L: Layout>(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Query, Counter> {
    // A 16-bit length, but verifiers before 6.2 forget every bound of a byte swap's result:
    // the mask (kept by the barrier) gives them this one, for the frame offsets below.
    let udp_len = core::hint::black_box(check_ip::<L>(ctx)?) & 0xffff;
    let udp: *const UdpHdr = ptr_at(ctx, L::L4)?;
    // Fetch the DNS header before the length checks below, which would otherwise let the
    // compiler drop this constant-offset bounds check that the verifier needs.
    let dns: *const DnsHdr = ptr_at(ctx, L::DNS)?;
    // SAFETY: `ptr_at` checked that both headers lie inside the frame.
    let (udp, dns) = unsafe { (&*udp, &*dns) };
    if usize::from(u16::from_be(udp.len)) != udp_len || udp_len < UDP_LEN + DNS_HEADER_LEN + 5 {
        return Err(Counter::Malformed);
    }
    // The DNS message ends where UDP says, not where the frame does (Ethernet may pad).
    let end = L::L4 + udp_len;
    if ctx.data() + end > ctx.data_end() {
        return Err(Counter::Malformed);
    }
    let query_flags = u16::from_be(dns.flags);
    if query_flags & (flags::QR | flags::OPCODE) != 0 {
        return Err(Counter::NotQuery);
    }
    if dns.qdcount != 1_u16.to_be() {
        return Err(Counter::QuestionCount);
    }
    let arcount = u16::from_be(dns.arcount);
    if dns.ancount != 0 || dns.nscount != 0 || arcount > 1 {
        return Err(Counter::ExtraRecords);
    }

    let available = end - L::QNAME;
    // At most NAME_MAX (255), so the mask changes nothing; kept by the barrier, it gives the
    // value its bound where it is made, which verifiers before 6.11 need: they lose the bound
    // of a check made on another copy of it.
    let name_len = core::hint::black_box(read_name::<L>(ctx, scratch, available)?) & NAME_MAX;
    let question_end = L::QNAME + name_len + 4;
    let raw = scratch.raw_bytes();
    let type_class = raw.get(name_len..name_len + 4).ok_or(Counter::Malformed)?;
    if u16::from_be_bytes([type_class[2], type_class[3]]) != CLASS_IN {
        return Err(Counter::NotInClass);
    }
    let qtype = u16::from_ne_bytes([type_class[0], type_class[1]]);
    let edns = if arcount == 1 {
        let (edns_flags, options) = read_opt(raw, name_len + 4, available)?;
        if options > 0 {
            let start = question_end + OPT_LEN;
            match edge_check_options(ctx.ctx, start as u64, end as u64) {
                0 => {}
                1 => return Err(Counter::EdnsOption),
                _ => return Err(Counter::Malformed),
            }
        }
        Some(edns_flags)
    } else if question_end != end {
        return Err(Counter::Malformed);
    } else {
        None
    };
    scratch.key.qtype = qtype;
    scratch.short.qtype = qtype;
    Ok(Query {
        short: name_len <= SHORT_NAME_LEN,
        name_len,
        flags: query_flags,
        edns,
    })
}

/// Checks the IP header and that the datagram is for one of our services; returns the UDP
/// length that the IP header implies.
#[inline(always)]
fn check_ip<L: Layout>(ctx: &XdpContext) -> Result<usize, Counter> {
    if L::IPV6 {
        let ip: *const Ipv6Hdr = ptr_at(ctx, L::L3)?;
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let ip = unsafe { &*ip };
        if ip.version_class_flow[0] >> 4 != 6 {
            return Err(Counter::NotIp);
        }
        // Extension headers (fragments among them) are left to the kernel.
        if ip.next_header != IPPROTO_UDP {
            return Err(if ip.next_header == 6 || ip.next_header == 58 {
                Counter::NotUdp
            } else {
                Counter::IpUnsupported
            });
        }
        is_service_v6(&ip.dst, dst_port::<L>(ctx)?)?;
        Ok(usize::from(u16::from_be(ip.payload_len)))
    } else {
        let ip: *const Ipv4Hdr = ptr_at(ctx, L::L3)?;
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let ip = unsafe { &*ip };
        // Version 4 with a 20-byte header, and not a fragment (MF clear, offset 0).
        if ip.version_ihl != 0x45 || ip.frag_off & 0x3fff_u16.to_be() != 0 {
            return Err(Counter::IpUnsupported);
        }
        if ip.proto != IPPROTO_UDP {
            return Err(Counter::NotUdp);
        }
        is_service_v4(u32::from_ne_bytes(ip.dst), dst_port::<L>(ctx)?)?;
        usize::from(u16::from_be(ip.tot_len))
            .checked_sub(IPV4_LEN)
            .ok_or(Counter::Malformed)
    }
}

#[inline(always)]
fn dst_port<L: Layout>(ctx: &XdpContext) -> Result<u16, Counter> {
    let udp: *const UdpHdr = ptr_at(ctx, L::L4)?;
    // SAFETY: `ptr_at` checked that the header lies inside the frame.
    Ok(unsafe { (*udp).dst })
}

/// Whether IPv4 `addr` (or the wildcard) serves `port`; both in network order.
#[inline(always)]
fn is_service_v4(addr: u32, port: u16) -> Result<(), Counter> {
    let services = live_services()?;
    let live = (services.v4_len as usize).min(SERVICES_MAX);
    let mut i = 0;
    while i < live {
        let s = &services.v4[i];
        i += 1;
        if s.port == port && (s.addr == 0 || s.addr == addr) {
            return Ok(());
        }
    }
    Err(Counter::NotService)
}

/// Whether IPv6 `addr` (or the wildcard) serves `port` (network order).
#[inline(always)]
fn is_service_v6(addr: &[u8; 16], port: u16) -> Result<(), Counter> {
    let services = live_services()?;
    let addr = u128::from_ne_bytes(*addr);
    let live = (services.v6_len as usize).min(SERVICES_MAX);
    let mut i = 0;
    while i < live {
        let s = &services.v6[i];
        i += 1;
        let served = u128::from_ne_bytes(s.addr);
        if s.port == port && (served == 0 || served == addr) {
            return Ok(());
        }
    }
    Err(Counter::NotService)
}

#[inline(always)]
fn live_services() -> Result<&'static edge_common::Services, Counter> {
    SERVICES
        .get(crate::live(state_slot::SERVICES))
        .ok_or(Counter::NotService)
}

/// Reads the OPT record at `offset` of the message bytes `raw`, which must end the message
/// (`len` bytes); returns its flags and the length of its options.
#[inline(always)]
fn read_opt(raw: &[u8; RAW_LEN], offset: usize, len: usize) -> Result<(u16, usize), Counter> {
    if offset + OPT_LEN > len {
        return Err(Counter::Malformed);
    }
    let opt = raw
        .get(offset..offset + OPT_LEN)
        .ok_or(Counter::Malformed)?;
    if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
        return Err(Counter::ExtraRecords);
    }
    let rdlength = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
    if offset + OPT_LEN + rdlength != len {
        return Err(Counter::Malformed);
    }
    // TTL field: extended RCODE, version, flags.
    if opt[6] != 0 {
        return Err(Counter::EdnsVersion);
    }
    Ok((u16::from_be_bytes([opt[7], opt[8]]), rdlength))
}

/// Walks the EDNS options from frame `offset` to `end` (the end of the OPT record and the
/// message): 0 if they fill it exactly and the userspace server would ignore every one of them,
/// 1 if one is for the userspace server ([`USERSPACE_EDNS_OPTIONS`]) or there are more than
/// [`EDNS_OPTIONS_MAX`], -1 if one runs past the record (userspace answers FORMERR). A global
/// function, so that the verifier checks its loop once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_check_options(ctx: *mut xdp_md, offset: u64, end: u64) -> i64 {
    let ctx = XdpContext::new(ctx);
    let (mut at, end) = (offset as usize, end as usize);
    if at > OPTIONS_OFFSET_MAX || end > FRAME_MAX {
        return 1;
    }
    for _ in 0..EDNS_OPTIONS_MAX {
        if at == end {
            return 0;
        }
        if at + 4 > end {
            return -1;
        }
        let Ok(header) = ptr_at_var::<[u8; 4]>(&ctx, at) else {
            return -1;
        };
        // SAFETY: `ptr_at_var` checked that the four bytes lie inside the frame.
        let header = unsafe { header.read_unaligned() };
        let code = u16::from_be_bytes([header[0], header[1]]);
        at += 4 + usize::from(u16::from_be_bytes([header[2], header[3]]));
        // The first test bounds `at` for the verifier; the second is the check.
        if at > FRAME_MAX || at > end {
            return -1;
        }
        if USERSPACE_EDNS_OPTIONS.contains(&code) {
            return 1;
        }
    }
    if at == end { 0 } else { 1 }
}

/// Beyond where any OPT record's options start: headers, a 255-octet question, the OPT header.
const OPTIONS_OFFSET_MAX: usize = 512;
/// Longer than any frame XDP sees in one piece (a page); longer messages go to userspace.
const FRAME_MAX: usize = 4096;

/// Copies the question (and what follows, up to [`RAW_LEN`] bytes) into `raw` with plain word
/// loads ([`edge_read_message`]), walks the name label by label, then writes it lower-cased and
/// zero-padded into the key its length calls for. Returns the name's wire length.
#[inline(always)]
fn read_name<L: Layout>(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    available: usize,
) -> Result<usize, Counter> {
    // The type and class follow the name.
    if available < 5 {
        return Err(Counter::Malformed);
    }
    let copy = if available > RAW_LEN {
        RAW_LEN
    } else {
        available
    };
    if edge_read_message(ctx.ctx, L::QNAME as u64, copy as u64, scratch) != 0 {
        return Err(Counter::Malformed);
    }
    scratch.name_len = walk_labels(scratch.raw_bytes(), copy)? as u32;
    // SAFETY: a read of a field of our own per-CPU scratch; volatile so that the verifier
    // sees the length reloaded from map memory (see ARCHITECTURE.md).
    let name_len = unsafe { core::ptr::read_volatile(&scratch.name_len) } as usize;
    if name_len > NAME_MAX || name_len + 4 > available {
        return Err(Counter::Malformed);
    }
    if name_len <= SHORT_NAME_LEN {
        fold_case(&scratch.raw, words_mut(&mut scratch.short.name), name_len);
    } else {
        fold_case(&scratch.raw, words_mut(&mut scratch.key.name), name_len);
    }
    Ok(name_len)
}

/// Copies `len` bytes (at least 5, at most [`RAW_LEN`]) of the frame from `offset` into
/// `scratch.raw`; returns 0 on success. Plain word loads, cheaper than a helper call; a global
/// function, so that the verifier checks its loop once on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_read_message(
    ctx: *mut xdp_md,
    offset: u64,
    len: u64,
    scratch: *mut Scratch,
) -> i64 {
    // SAFETY: the verifier holds `scratch` to point at a whole `Scratch`, or to be null.
    let Some(scratch) = (unsafe { scratch.as_mut() }) else {
        return -1;
    };
    match read_message(
        &XdpContext::new(ctx),
        offset as usize,
        len as usize,
        &mut scratch.raw,
    ) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

/// The message's words (see [`words::each_word`]). A message shorter than a word comes from
/// the word that ends where it ends: that word lies inside the frame, its first bytes in the DNS
/// header before the message, and they are shifted out.
#[inline(always)]
#[expect(
    clippy::manual_range_contains,
    reason = "two comparisons give the verifier both bounds; `contains` compiles to one \
              subtract-and-compare that it cannot follow (seen: the program failed to load)"
)]
fn read_message(
    ctx: &XdpContext,
    offset: usize,
    len: usize,
    raw: &mut [u64; RAW_WORDS],
) -> Result<(), Counter> {
    // `len == 0` is tested apart: LLVM would fold it and `len > RAW_LEN` into one
    // subtract-and-compare, from which 6.1's verifier learns no bound on `len`.
    if offset < WORD || offset > OFFSET_MAX || len > RAW_LEN {
        return Err(Counter::Malformed);
    }
    if len < WORD {
        if len == 0 {
            return Err(Counter::Malformed);
        }
        raw[0] = words::read_frame(ctx, offset + len - WORD)? >> ((WORD - len) * 8);
        return Ok(());
    }
    words::each_word::<RAW_WORDS>(len, |at| {
        words::store(raw, at, words::read_frame(ctx, offset + at)?)
    })
}

/// A key's name buffer as words.
#[inline(always)]
fn words_mut<const N: usize>(name: &mut [u8; N]) -> &mut [u64] {
    // SAFETY: `NameKey` is 8-aligned with `name` at offset 0, and N is a multiple of 8.
    unsafe { core::slice::from_raw_parts_mut(name.as_mut_ptr() as *mut u64, N / 8) }
}

/// Wire length of the name at the start of `name`, of which `copy` bytes came from the frame.
#[inline(always)]
fn walk_labels(name: &[u8; RAW_LEN], copy: usize) -> Result<usize, Counter> {
    let mut pos = 0_usize;
    for _ in 0..LABELS_MAX {
        if pos >= copy {
            return Err(Counter::Malformed);
        }
        let label = usize::from(*name.get(pos).ok_or(Counter::Malformed)?);
        if label == 0 {
            return Ok(pos + 1);
        }
        // Compression pointers (0xc0) and the reserved label types have no place in a question.
        if label & 0xc0 != 0 {
            return Err(Counter::BadName);
        }
        pos += label + 1;
        if pos >= NAME_MAX {
            return Err(Counter::NameTooLong);
        }
    }
    Err(Counter::NameTooLong)
}

/// Writes the first `len` bytes of `source` lower-cased into `key`, eight at a time without
/// branches per byte, and zeroes the rest of `key`. Length octets are below 64, so only label
/// bytes can be upper-case letters.
#[inline(always)]
fn fold_case(source: &[u64; RAW_WORDS], key: &mut [u64], len: usize) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    for (i, (word, source)) in key.iter_mut().zip(source).enumerate() {
        let start = i * 8;
        if len <= start {
            *word = 0;
            continue;
        }
        let w = if len >= start + 8 {
            *source
        } else {
            *source & ((1_u64 << ((len - start) * 8)) - 1)
        };
        let low7 = w & !HIGH;
        // High bit set in each byte that is at least 'A', and in each that is above 'Z'.
        let at_least_a = low7 + (0x80 - u64::from(b'A')) * ONES;
        let above_z = low7 + (0x7f - u64::from(b'Z')) * ONES;
        let upper = (at_least_a ^ above_z) & !w & HIGH;
        *word = w | (upper >> 2);
    }
}
