//! Turning the query frame into its response in place: the question stays where it is (with its
//! letter case), the prebuilt answer section goes after it, addresses and ports swap.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_tail, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use edge_common::{ANSWER_DATA_LEN, Answer, Counter, flags};

use crate::{
    headers::{DnsHdr, ETH_LEN, EthHdr, IPV4_LEN, Ipv4Hdr, UdpHdr, ipv4_checksum, ptr_at},
    query::{DNS_OFFSET, Query},
};

/// TTL of the replies we send.
const REPLY_TTL: u8 = 64;

#[inline(always)]
pub fn write(ctx: &XdpContext, query: &Query, answer: &Answer) -> Result<(), Counter> {
    let len = usize::from(answer.len);
    if len == 0 || len > ANSWER_DATA_LEN {
        return Err(Counter::ReplyFailed);
    }
    let reply_end = query.end + len;
    let delta = reply_end as i32 - (ctx.data_end() - ctx.data()) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(Counter::ReplyFailed);
    }
    let ret = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            query.end as u32,
            answer.data.as_ptr() as *mut _,
            len as u32,
        )
    };
    if ret != 0 {
        return Err(Counter::ReplyFailed);
    }

    // Packet pointers are stale after the tail moved: look the headers up again.
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN)?;
    let udp: *mut UdpHdr = ptr_at(ctx, ETH_LEN + IPV4_LEN)?;
    let dns: *mut DnsHdr = ptr_at(ctx, DNS_OFFSET)?;
    let (eth, ip, udp, dns) = unsafe { (&mut *eth, &mut *ip, &mut *udp, &mut *dns) };

    core::mem::swap(&mut eth.dst, &mut eth.src);

    let udp_len = (reply_end - ETH_LEN - IPV4_LEN) as u16;
    core::mem::swap(&mut ip.src, &mut ip.dst);
    ip.tot_len = (IPV4_LEN as u16 + udp_len).to_be();
    ip.ttl = REPLY_TTL;
    ip.check = 0;
    ip.check = ipv4_checksum(ip);

    core::mem::swap(&mut udp.src, &mut udp.dst);
    udp.len = udp_len.to_be();
    // Zero means "no checksum" for UDP over IPv4 (RFC 768).
    udp.check = 0;

    let copied = query.flags & (flags::RD | flags::CD);
    dns.flags = (answer.flags | copied).to_be();
    dns.ancount = answer.ancount.to_be();
    Ok(())
}
