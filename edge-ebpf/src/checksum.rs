//! Internet checksums (RFC 1071) for the headers the reply rewrites.

use aya_ebpf::{bindings::xdp_md, helpers::generated::bpf_csum_diff, programs::XdpContext};
use edge_common::Counter;

use crate::headers::{ETH_LEN, IPPROTO_UDP, IPV4_LEN, IPV6_LEN, Ipv4Hdr, VLAN_LEN, ptr_at_var};

/// Longest UDP datagram a reply can be: header, DNS header, a 255-octet question, the largest
/// answer, our OPT. Bounds the summing loops.
const UDP_MAX: usize = 8 + 12 + 259 + edge_common::ANSWER_DATA_LEN + 11;
const CHUNK: usize = 64;

/// Checksum of an IPv4 header without options (its `check` field must be zero).
#[inline(always)]
pub fn ipv4_header(ip: &Ipv4Hdr) -> u16 {
    // SAFETY: `Ipv4Hdr` is 20 bytes of plain data, readable as ten u16 words.
    let words = unsafe { &*(ip as *const Ipv4Hdr as *const [u16; IPV4_LEN / 2]) };
    let mut sum: u32 = 0;
    for word in words {
        sum += u32::from(*word);
    }
    fold(sum)
}

/// UDP checksum over IPv6 (mandatory there, RFC 8200 §8.1) of the `len`-byte datagram behind
/// the IPv6 header at frame offset `l3`; its `check` field must be zero. Sums in memory order,
/// so the result is stored as is; 0 if the frame is shorter than that. A global function, so
/// the verifier checks its loops once instead of once per path leading to it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn edge_udp6_checksum(ctx: *mut xdp_md, l3: u64, len: u64) -> u32 {
    udp_ipv6(&XdpContext::new(ctx), l3 as usize, len as usize).unwrap_or(0)
}

#[inline(always)]
fn udp_ipv6(ctx: &XdpContext, l3: usize, len: usize) -> Result<u32, Counter> {
    if l3 > ETH_LEN + VLAN_LEN || len > UDP_MAX {
        return Err(Counter::ReplyFailed);
    }
    // The pseudo-header: both addresses as they sit in the IP header, then length and protocol.
    let addresses: *mut [u8; 32] = ptr_at_var(ctx, l3 + 8)?;
    let mut sum = csum(addresses as *const u8, 32, 0);
    // Length and protocol as network-order words, read in memory order like the rest.
    sum += u32::from((len as u16 + u16::from(IPPROTO_UDP)).to_be());

    let l4 = l3 + IPV6_LEN;
    let end = l4 + len;
    let mut offset = l4;
    for _ in 0..UDP_MAX / CHUNK + 1 {
        if offset + CHUNK > end {
            break;
        }
        let chunk: *mut [u8; CHUNK] = ptr_at_var(ctx, offset)?;
        sum = csum(chunk as *const u8, CHUNK, sum);
        offset += CHUNK;
    }
    for _ in 0..CHUNK / 4 {
        if offset + 4 > end {
            break;
        }
        let word: *mut [u8; 4] = ptr_at_var(ctx, offset)?;
        sum = csum(word as *const u8, 4, sum);
        offset += 4;
    }
    // Up to three odd bytes, zero-padded.
    let mut tail = [0_u8; 4];
    for (i, byte) in tail.iter_mut().enumerate().take(3) {
        if offset + i < end {
            let source: *mut u8 = ptr_at_var(ctx, offset + i)?;
            // SAFETY: `ptr_at_var` checked that the byte lies inside the frame.
            *byte = unsafe { *source };
        }
    }
    sum = csum(tail.as_ptr(), 4, sum);
    // Zero means "no checksum"; over IPv6 the all-ones form is sent instead.
    Ok(match fold(sum) {
        0 => 0xffff,
        checksum => u32::from(checksum),
    })
}

#[inline(always)]
fn csum(data: *const u8, len: usize, seed: u32) -> u32 {
    // SAFETY: `data` points at `len` readable bytes (a bounds-checked frame word or a stack
    // array); the helper only reads them.
    unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, data as *mut u32, len as u32, seed) as u32 }
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
