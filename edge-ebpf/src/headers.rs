//! Packet header layouts and bounds-checked access. Every read goes through [`ptr_at`], which
//! checks the access against `data_end` right before it, the shape the verifier accepts.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use edge_common::Counter;

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
pub const DNS_HEADER_LEN: usize = 12;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
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
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
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

/// [`ptr_at`] for an offset known only at run time. The barriers keep the compiler from folding
/// the access size into the offset before adding it to the frame start: the verifier only
/// follows a bounds check made on the very pointer that is then dereferenced.
#[inline(always)]
pub fn ptr_at_var<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Counter> {
    let ptr = core::hint::black_box(ctx.data() + core::hint::black_box(offset));
    if ptr + size_of::<T>() > ctx.data_end() {
        return Err(Counter::Malformed);
    }
    Ok(ptr as *mut T)
}

/// Where the headers sit in a frame: known at compile time for each of the four shapes
/// (IPv4/IPv6, with or without a VLAN tag), so every offset below is a constant.
pub trait Layout {
    /// Offset of the IP header.
    const L3: usize;
    const IPV6: bool;
    /// Offset of the UDP header.
    const L4: usize = Self::L3 + if Self::IPV6 { IPV6_LEN } else { IPV4_LEN };
    /// Offset of the DNS header.
    const DNS: usize = Self::L4 + UDP_LEN;
    /// Offset of the question name.
    const QNAME: usize = Self::DNS + DNS_HEADER_LEN;
}

pub struct V4;
pub struct V6;
pub struct VlanV4;
pub struct VlanV6;

impl Layout for V4 {
    const L3: usize = ETH_LEN;
    const IPV6: bool = false;
}
impl Layout for V6 {
    const L3: usize = ETH_LEN;
    const IPV6: bool = true;
}
impl Layout for VlanV4 {
    const L3: usize = ETH_LEN + VLAN_LEN;
    const IPV6: bool = false;
}
impl Layout for VlanV6 {
    const L3: usize = ETH_LEN + VLAN_LEN;
    const IPV6: bool = true;
}
