//! The one place that builds answer sections. The XDP maps hold its output, and the userspace
//! server frames the same output, so the two paths cannot disagree.

use edge_common::flags;
use hickory_proto::{
    ProtoError,
    rr::{DNSClass, RData},
    serialize::binary::{BinEncodable, BinEncoder},
};

/// Header flags of an authoritative answer: QR and AA. RA stays clear: we never recurse.
pub const AUTHORITATIVE_ANSWER: u16 = flags::QR | flags::AA;

/// Offset of the question name in every DNS message: right after the 12-byte header.
const QUESTION_NAME_POINTER: u16 = 0xc000 | 12;

/// The answer section holding `rdatas` for the question's name, with `ttl`: what an answer map
/// entry holds. The userspace server writes the same records with [`emit_at_question`] too.
pub fn answer_section(ttl: u32, rdatas: &[RData]) -> Result<Vec<u8>, ProtoError> {
    let mut bytes = Vec::with_capacity(rdatas.len() * 28);
    answer_into(&mut bytes, ttl, rdatas)?;
    Ok(bytes)
}

/// [`answer_section`] appended to `bytes` (which it must start empty: names compress against
/// offsets in the message), reusing its allocation.
pub fn answer_into(bytes: &mut Vec<u8>, ttl: u32, rdatas: &[RData]) -> Result<(), ProtoError> {
    let mut encoder = BinEncoder::new(bytes);
    for rdata in rdatas {
        emit_at_question(&mut encoder, DNSClass::IN, ttl, rdata)?;
    }
    Ok(())
}

/// Writes one record owned by the question name.
///
/// The owner is a compression pointer to the question name, as Knot DNS writes it, so the same
/// bytes answer the question whatever its letter case. Names inside `rdata` compress against
/// what `encoder` already holds.
pub fn emit_at_question(
    encoder: &mut BinEncoder<'_>,
    class: DNSClass,
    ttl: u32,
    rdata: &RData,
) -> Result<(), ProtoError> {
    encoder.emit_u16(QUESTION_NAME_POINTER)?;
    rdata.record_type().emit(encoder)?;
    class.emit(encoder)?;
    encoder.emit_u32(ttl)?;
    let length = encoder.place::<u16>()?;
    rdata.emit(encoder)?;
    let written = encoder.len_since_place(&length) as u16;
    length.replace(encoder, written)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::rdata::A;

    use super::*;

    #[test]
    fn a_records_point_at_the_question() {
        let rdatas = [
            RData::A(A(Ipv4Addr::new(192, 0, 2, 10))),
            RData::A(A(Ipv4Addr::new(192, 0, 2, 11))),
        ];
        let bytes = answer_section(60, &rdatas).unwrap();
        // What Knot DNS 3.2 sends for the same zone (captured on the wire).
        let knot = "c00c000100010000003c0004c000020ac00c000100010000003c0004c000020b";
        assert_eq!(hex(&bytes), knot);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}
