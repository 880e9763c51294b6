//! Packet header layouts and bounds-checked access. Every read goes through [`ptr_at`], which
//! checks the access against `data_end` right before it, the shape the verifier accepts.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use edge_common::Counter;

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const DNS_HEADER_LEN: usize = 12;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const IPPROTO_UDP: u8 = 17;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

#[repr(C)]
pub struct UdpHdr {
    pub src: u16,
    pub dst: u16,
    pub len: u16,
    pub check: u16,
}

/// DNS header, all fields in network byte order.
#[repr(C)]
pub struct DnsHdr {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

/// A pointer to a `T` at `offset` in the frame, or `Malformed` when the frame is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Counter> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return Err(Counter::Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// RFC 1071 checksum of an IPv4 header without options.
#[inline(always)]
pub fn ipv4_checksum(ip: &Ipv4Hdr) -> u16 {
    // SAFETY: `Ipv4Hdr` is 20 bytes of plain data, readable as ten u16 words.
    let words = unsafe { &*(ip as *const Ipv4Hdr as *const [u16; IPV4_LEN / 2]) };
    let mut sum: u32 = 0;
    for word in words {
        sum += u32::from(*word);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
