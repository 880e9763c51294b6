//! Parsing a DNS query frame down to the answer-map key.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use edge_common::{Counter, NAME_KEY_LEN, NameKey, flags};

use crate::headers::{
    DNS_HEADER_LEN, DnsHdr, ETH_LEN, ETH_P_IPV4, EthHdr, IPPROTO_UDP, IPV4_LEN, Ipv4Hdr, UDP_LEN,
    UdpHdr, ptr_at,
};

const DNS_PORT: u16 = 53;
/// Offset of the DNS header in an untagged IPv4/UDP frame.
pub const DNS_OFFSET: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
const QNAME_OFFSET: usize = DNS_OFFSET + DNS_HEADER_LEN;
/// Wire-format names are at most 255 octets (RFC 1035 §3.1), root label included.
const NAME_MAX: usize = 255;
/// A name of 255 octets holds at most 127 labels; the walk stops there.
const LABELS_MAX: usize = 128;
const CLASS_IN: u16 = 1;

/// What the reply needs to know about the query.
pub struct Query {
    /// Frame offset just past the question: where the answer goes.
    pub end: usize,
    /// The query's header flags, host order.
    pub flags: u16,
}

/// Checks that the frame is a plain IPv4/UDP DNS query with one question and nothing else, and
/// writes its lower-cased name and type into the scratch key.
#[inline(always)]
pub fn parse(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Query, Counter> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    if unsafe { (*eth).proto } != ETH_P_IPV4.to_be() {
        return Err(Counter::NotIp);
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_LEN)?;
    let ip = unsafe { &*ip };
    // Version 4 with a 20-byte header, and not a fragment (MF clear, offset 0).
    if ip.version_ihl != 0x45 || ip.frag_off & 0x3fff_u16.to_be() != 0 {
        return Err(Counter::IpUnsupported);
    }
    if ip.proto != IPPROTO_UDP {
        return Err(Counter::NotUdp);
    }
    let udp: *const UdpHdr = ptr_at(ctx, ETH_LEN + IPV4_LEN)?;
    let udp = unsafe { &*udp };
    if udp.dst != DNS_PORT.to_be() {
        return Err(Counter::NotDnsPort);
    }
    // Fetch the DNS header before the length checks below, which would otherwise let the
    // compiler drop this constant-offset bounds check that the verifier needs.
    let dns: *const DnsHdr = ptr_at(ctx, DNS_OFFSET)?;
    let dns = unsafe { &*dns };
    let udp_len = usize::from(u16::from_be(udp.len));
    // The DNS message ends where UDP says, not where the frame does (Ethernet may pad).
    let end = ETH_LEN + IPV4_LEN + udp_len;
    if udp_len < UDP_LEN + DNS_HEADER_LEN + 5
        || ctx.data() + end > ctx.data_end()
        || usize::from(u16::from_be(ip.tot_len)) != IPV4_LEN + udp_len
    {
        return Err(Counter::Malformed);
    }

    let query_flags = u16::from_be(dns.flags);
    if query_flags & (flags::QR | flags::OPCODE) != 0 {
        return Err(Counter::NotQuery);
    }
    if dns.qdcount != 1_u16.to_be() {
        return Err(Counter::QuestionCount);
    }
    if dns.ancount != 0 || dns.nscount != 0 || dns.arcount != 0 {
        return Err(Counter::ExtraRecords);
    }

    let name_len = read_name(ctx, scratch, end - QNAME_OFFSET)?;
    let question_end = QNAME_OFFSET + name_len + 4;
    if question_end != end {
        return Err(Counter::Malformed);
    }
    let mut type_class = [0_u8; 4];
    load(ctx, QNAME_OFFSET + name_len, &mut type_class)?;
    if u16::from_be_bytes([type_class[2], type_class[3]]) != CLASS_IN {
        return Err(Counter::NotInClass);
    }
    scratch.key.qtype = u16::from_ne_bytes([type_class[0], type_class[1]]);
    Ok(Query {
        end,
        flags: query_flags,
    })
}

/// Per-CPU working memory: the key (258 bytes would crowd the 512-byte stack) and the name
/// length. The length goes through map memory on purpose: read back, it is an unknown scalar for
/// the verifier, so every exit of the label walk continues as one state instead of 128.
#[repr(C)]
pub struct Scratch {
    pub key: NameKey,
    pub name_len: u32,
}

/// Copies the question name into the key (one helper call), walks it label by label, then
/// lower-cases it and clears the rest of the key. Returns the name's wire length.
#[inline(always)]
fn read_name(ctx: &XdpContext, scratch: &mut Scratch, available: usize) -> Result<usize, Counter> {
    let copy = if available > NAME_KEY_LEN {
        NAME_KEY_LEN
    } else {
        available
    };
    if copy == 0 {
        return Err(Counter::Malformed);
    }
    let name = &mut scratch.key.name;
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            QNAME_OFFSET as u32,
            name.as_mut_ptr().cast(),
            copy as u32,
        )
    };
    if ret != 0 {
        return Err(Counter::Malformed);
    }
    scratch.name_len = walk_labels(name, copy)? as u32;
    let name_len = unsafe { core::ptr::read_volatile(&scratch.name_len) } as usize;
    if name_len > NAME_MAX {
        return Err(Counter::NameTooLong);
    }
    fold_case(name, name_len);
    Ok(name_len)
}

/// Wire length of the name at the start of `name`, of which `copy` bytes came from the frame.
#[inline(always)]
fn walk_labels(name: &[u8; NAME_KEY_LEN], copy: usize) -> Result<usize, Counter> {
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

/// Lower-cases the first `len` bytes eight at a time, without branches per byte, and zeroes the
/// rest. Length octets are below 64, so only label bytes can be upper-case letters.
#[inline(always)]
fn fold_case(name: &mut [u8; NAME_KEY_LEN], len: usize) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // SAFETY: `NameKey` is 8-aligned with `name` at offset 0, and 256 bytes are 32 words.
    let words = unsafe { &mut *(name.as_mut_ptr() as *mut [u64; NAME_KEY_LEN / 8]) };
    for (i, word) in words.iter_mut().enumerate() {
        let start = i * 8;
        let keep = if len >= start + 8 {
            u64::MAX
        } else if len <= start {
            0
        } else {
            (1_u64 << ((len - start) * 8)) - 1
        };
        let w = *word & keep;
        let low7 = w & !HIGH;
        // High bit set in each byte that is at least 'A', and in each that is above 'Z'.
        let at_least_a = low7 + (0x80 - u64::from(b'A')) * ONES;
        let above_z = low7 + (0x7f - u64::from(b'Z')) * ONES;
        let upper = (at_least_a ^ above_z) & !w & HIGH;
        *word = w | (upper >> 2);
    }
}

#[inline(always)]
fn load(ctx: &XdpContext, offset: usize, buf: &mut [u8; 4]) -> Result<(), Counter> {
    let ret = unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr().cast(), 4) };
    if ret != 0 {
        return Err(Counter::Malformed);
    }
    Ok(())
}
