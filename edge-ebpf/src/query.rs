//! Parsing a DNS query frame down to the answer-map key.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use edge_common::{
    Counter, LongNameKey, NAME_KEY_LEN, SHORT_NAME_LEN, ServiceKey, ShortNameKey, flags,
};

use crate::{
    SERVICES,
    headers::{
        DNS_HEADER_LEN, DnsHdr, IPPROTO_UDP, IPV4_LEN, Ipv4Hdr, Ipv6Hdr, Layout, UDP_LEN, UdpHdr,
        ptr_at,
    },
};

/// Wire-format names are at most 255 octets (RFC 1035 §3.1), root label included.
const NAME_MAX: usize = 255;
/// A name of 255 octets holds at most 127 labels; the walk stops there.
const LABELS_MAX: usize = 128;
const CLASS_IN: u16 = 1;
const TYPE_OPT: u16 = 41;
/// An OPT record without options: root name, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;
/// The DO bit in the OPT record's flags (RFC 3225).
pub const EDNS_DO: u16 = 0x8000;

/// What the reply needs to know about the query.
pub struct Query {
    /// The question name fits the short key (and `Scratch::short` holds it).
    pub short: bool,
    /// Frame offset just past the question: where the answer goes.
    pub question_end: usize,
    /// The query's header flags, host order.
    pub flags: u16,
    /// The query's EDNS flags (host order) if it carried an OPT record.
    pub edns: Option<u16>,
}

/// Per-CPU working memory: the key (258 bytes would crowd the 512-byte stack) and the name
/// length. The length goes through map memory on purpose: read back, it is an unknown scalar for
/// the verifier, so every exit of the label walk continues as one state instead of 128.
/// `frame` holds the headers and question while the reply grows at the head (see
/// [`crate::reply`]).
#[repr(C)]
pub struct Scratch {
    /// The name as read, then the key for long names.
    pub key: LongNameKey,
    /// The key for names up to [`SHORT_NAME_LEN`] octets.
    pub short: ShortNameKey,
    pub name_len: u32,
    pub frame: [u8; FRAME_COPY_MAX],
}

/// Bytes before the answer in the longest query we answer: Ethernet, VLAN, IPv6, UDP, DNS
/// header and a 255-octet question, rounded up.
pub const FRAME_COPY_MAX: usize = 384;

/// Checks that the frame is a DNS query over UDP to one of our services, with one question and at
/// most an OPT record besides, and writes its lower-cased name and type into the scratch key.
#[inline(always)]
pub fn parse<L: Layout>(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Query, Counter> {
    let udp_len = check_ip::<L>(ctx)?;
    let udp: *const UdpHdr = ptr_at(ctx, L::L4)?;
    // Fetch the DNS header before the length checks below, which would otherwise let the
    // compiler drop this constant-offset bounds check that the verifier needs.
    let dns: *const DnsHdr = ptr_at(ctx, L::DNS)?;
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

    let name_len = read_name::<L>(ctx, scratch, end - L::QNAME)?;
    let question_end = L::QNAME + name_len + 4;
    let mut type_class = [0_u8; 4];
    load(ctx, L::QNAME + name_len, &mut type_class)?;
    if u16::from_be_bytes([type_class[2], type_class[3]]) != CLASS_IN {
        return Err(Counter::NotInClass);
    }
    let qtype = u16::from_ne_bytes([type_class[0], type_class[1]]);
    scratch.key.qtype = qtype;
    scratch.short.qtype = qtype;

    let edns = if arcount == 1 {
        Some(read_opt(ctx, question_end, end)?)
    } else if question_end != end {
        return Err(Counter::Malformed);
    } else {
        None
    };
    Ok(Query {
        short: name_len <= SHORT_NAME_LEN,
        question_end,
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
        is_service(ServiceKey::new(6, ip.dst, 0), dst_port::<L>(ctx)?)?;
        Ok(usize::from(u16::from_be(ip.payload_len)))
    } else {
        let ip: *const Ipv4Hdr = ptr_at(ctx, L::L3)?;
        let ip = unsafe { &*ip };
        // Version 4 with a 20-byte header, and not a fragment (MF clear, offset 0).
        if ip.version_ihl != 0x45 || ip.frag_off & 0x3fff_u16.to_be() != 0 {
            return Err(Counter::IpUnsupported);
        }
        if ip.proto != IPPROTO_UDP {
            return Err(Counter::NotUdp);
        }
        let mut addr = [0_u8; 16];
        addr[..4].copy_from_slice(&ip.dst);
        is_service(ServiceKey::new(4, addr, 0), dst_port::<L>(ctx)?)?;
        usize::from(u16::from_be(ip.tot_len))
            .checked_sub(IPV4_LEN)
            .ok_or(Counter::Malformed)
    }
}

#[inline(always)]
fn dst_port<L: Layout>(ctx: &XdpContext) -> Result<u16, Counter> {
    let udp: *const UdpHdr = ptr_at(ctx, L::L4)?;
    Ok(unsafe { (*udp).dst })
}

/// Whether `key`'s address (or its family's wildcard) serves `port` (network order).
#[inline(always)]
fn is_service(mut key: ServiceKey, port: u16) -> Result<(), Counter> {
    key.port = port;
    if SERVICES.get_ptr(&key).is_some() {
        return Ok(());
    }
    key.addr = [0; 16];
    if SERVICES.get_ptr(&key).is_some() {
        return Ok(());
    }
    Err(Counter::NotService)
}

/// Reads the OPT record at `offset`, which must end the message; returns its flags.
#[inline(always)]
fn read_opt(ctx: &XdpContext, offset: usize, end: usize) -> Result<u16, Counter> {
    let mut opt = [0_u8; OPT_LEN];
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            offset as u32,
            opt.as_mut_ptr().cast(),
            OPT_LEN as u32,
        )
    };
    if ret != 0 {
        return Err(Counter::Malformed);
    }
    if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
        return Err(Counter::ExtraRecords);
    }
    let rdlength = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
    if offset + OPT_LEN + rdlength != end {
        return Err(Counter::Malformed);
    }
    // TTL field: extended RCODE, version, flags.
    if opt[6] != 0 {
        return Err(Counter::EdnsVersion);
    }
    Ok(u16::from_be_bytes([opt[7], opt[8]]))
}

/// Copies the question name into the key (one helper call), walks it label by label, then
/// lower-cases it and clears the rest of the key. Returns the name's wire length.
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
    let copy = if available > NAME_KEY_LEN {
        NAME_KEY_LEN
    } else {
        available
    };
    let name = &mut scratch.key.name;
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            L::QNAME as u32,
            name.as_mut_ptr().cast(),
            copy as u32,
        )
    };
    if ret != 0 {
        return Err(Counter::Malformed);
    }
    scratch.name_len = walk_labels(name, copy)? as u32;
    let name_len = unsafe { core::ptr::read_volatile(&scratch.name_len) } as usize;
    if name_len > NAME_MAX || name_len + 4 > available {
        return Err(Counter::Malformed);
    }
    if name_len <= SHORT_NAME_LEN {
        fold_case::<{ SHORT_NAME_LEN / 8 }>(&mut scratch.key.name, name_len);
        scratch
            .short
            .name
            .copy_from_slice(&scratch.key.name[..SHORT_NAME_LEN]);
    } else {
        fold_case::<{ NAME_KEY_LEN / 8 }>(&mut scratch.key.name, name_len);
    }
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
/// rest of the first `WORDS` words. Length octets are below 64, so only label bytes can be
/// upper-case letters.
#[inline(always)]
fn fold_case<const WORDS: usize>(name: &mut [u8; NAME_KEY_LEN], len: usize) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // SAFETY: `NameKey` is 8-aligned with `name` at offset 0; WORDS is at most 256 / 8.
    let words = unsafe { &mut *(name.as_mut_ptr() as *mut [u64; WORDS]) };
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
