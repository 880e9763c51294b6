//! The benchmark's ceiling: a responder that turns every DNS query to port 53 into a response in
//! place, with no parsing of the question and no map lookup. `cargo xtask bench dns` measures it
//! next to `edge_dns` to show how much of what the path allows the real responder reaches. The
//! daemon never attaches it.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use edge_common::{Counter, flags};

use crate::headers::{
    DNS_HEADER_LEN, DnsHdr, ETH_LEN, ETH_P_IPV4, ETH_P_IPV6, EthHdr, IPPROTO_UDP, IPV4_LEN,
    IPV6_LEN, Ipv4Hdr, Ipv6Hdr, UDP_LEN, UdpHdr, ptr_at,
};

const DNS_PORT: u16 = 53;

/// Reflects DNS queries (XDP_TX); passes everything else.
#[xdp]
pub fn edge_reflect(ctx: XdpContext) -> u32 {
    match reflect(&ctx) {
        Ok(()) => xdp_action::XDP_TX,
        Err(_) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn reflect(ctx: &XdpContext) -> Result<(), Counter> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked that the header lies inside the frame.
    let eth = unsafe { &mut *eth };
    if eth.proto == ETH_P_IPV4.to_be() {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN)?;
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let ip = unsafe { &mut *ip };
        if ip.version_ihl != 0x45 || ip.proto != IPPROTO_UDP {
            return Err(Counter::IpUnsupported);
        }
        let udp = respond(ctx, ETH_LEN + IPV4_LEN)?;
        // Swapping the addresses leaves the header sum, and so its checksum, unchanged.
        core::mem::swap(&mut ip.src, &mut ip.dst);
        // Zero means "no checksum" for UDP over IPv4 (RFC 768).
        udp.check = 0;
    } else if eth.proto == ETH_P_IPV6.to_be() {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_LEN)?;
        // SAFETY: `ptr_at` checked that the header lies inside the frame.
        let ip = unsafe { &mut *ip };
        if ip.next_header != IPPROTO_UDP {
            return Err(Counter::NotUdp);
        }
        let udp = respond(ctx, ETH_LEN + IPV6_LEN)?;
        core::mem::swap(&mut ip.src, &mut ip.dst);
        // IPv6 requires the UDP checksum. The swaps do not change the sum; setting QR adds
        // 0x8000 to one word, folded in incrementally (RFC 1624, eqn. 3).
        udp.check = checksum_add(udp.check, flags::QR);
    } else {
        return Err(Counter::NotIp);
    }
    core::mem::swap(&mut eth.src, &mut eth.dst);
    Ok(())
}

/// Checks that the UDP datagram at `udp_offset` is a DNS query to port 53, turns it into a
/// response (ports swapped, QR set) and returns its UDP header for the checksum.
#[inline(always)]
#[expect(
    clippy::mut_from_ref,
    reason = "the header lives in the frame, which this invocation owns, not in `ctx`"
)]
fn respond(ctx: &XdpContext, udp_offset: usize) -> Result<&mut UdpHdr, Counter> {
    let udp: *mut UdpHdr = ptr_at(ctx, udp_offset)?;
    let dns: *mut DnsHdr = ptr_at(ctx, udp_offset + UDP_LEN)?;
    // SAFETY: `ptr_at` checked that both headers lie inside the frame.
    let (udp, dns) = unsafe { (&mut *udp, &mut *dns) };
    if udp.dst != DNS_PORT.to_be() {
        return Err(Counter::NotService);
    }
    if usize::from(u16::from_be(udp.len)) < UDP_LEN + DNS_HEADER_LEN {
        return Err(Counter::Malformed);
    }
    if u16::from_be(dns.flags) & flags::QR != 0 {
        return Err(Counter::NotQuery);
    }
    dns.flags |= flags::QR.to_be();
    core::mem::swap(&mut udp.src, &mut udp.dst);
    Ok(udp)
}

/// A network-order checksum after `added` (host order) joins the summed words.
#[inline(always)]
fn checksum_add(check: u16, added: u16) -> u16 {
    let mut sum = u32::from(!u16::from_be(check)) + u32::from(added);
    sum = (sum & 0xffff) + (sum >> 16);
    let folded = !(sum as u16);
    // A computed zero goes on the wire as all ones (RFC 768).
    if folded == 0 { 0xffff } else { folded }.to_be()
}
