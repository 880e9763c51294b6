//! The framing layer: a query's bytes in, the response's bytes out. It checks the query, asks
//! [`super::authority`] what to answer, and writes the sections; answers at the question name go
//! through [`super::answer::emit_at_question`], the same code that fills the XDP maps.
//!
//! Where the RFCs leave room, Knot DNS is the reference: the question is echoed as received,
//! names compress case-insensitively against it, a truncated response keeps only the question.

use hickory_proto::{
    ProtoError,
    op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder, EncodedSize as _},
};

use super::{
    answer::emit_at_question,
    authority::{Lookup, lookup},
};
use crate::zone::{RrSet, Zones};

/// The UDP payload size we advertise and the most we send (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// What a UDP response must fit without EDNS, and the least an OPT may ask for (RFC 6891 §6.2.5).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The response to `query`, or `None` when it gets none: too short for a header, or itself a
/// response.
pub fn respond(zones: &Zones, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(query);
    let header = Header::read(&mut decoder).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut response = Response {
        metadata: Metadata::response_from_request(&header.metadata),
        question: None,
        lookup: Lookup::refused(),
        edns: None,
    };
    response.lookup.rcode = ResponseCode::FormErr;
    if header.counts.queries != 1 {
        return response.write(transport, CLASSIC_UDP_PAYLOAD).ok();
    }
    let Ok(question) = Question::read(&mut decoder) else {
        return response.write(transport, CLASSIC_UDP_PAYLOAD).ok();
    };
    let request_edns = read_edns(&mut decoder, &header);
    let well_formed = request_edns.is_ok() && decoder.is_empty();
    let request_edns = request_edns.ok().flatten();
    if well_formed {
        response.lookup = answer(
            zones,
            &header.metadata,
            &question.query,
            request_edns.as_ref(),
        );
    }
    response.question = Some(question);
    if !well_formed {
        return response.write(transport, CLASSIC_UDP_PAYLOAD).ok();
    }

    let payload = match (&request_edns, transport) {
        (_, Transport::Tcp) => u16::MAX,
        (None, Transport::Udp) => CLASSIC_UDP_PAYLOAD,
        (Some(edns), Transport::Udp) => edns.max_payload().min(MAX_UDP_PAYLOAD),
    };
    response.edns = request_edns.as_ref().map(|request| {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD)
            .set_dnssec_ok(request.flags().dnssec_ok);
        edns
    });
    response.write(transport, payload).ok()
}

/// What a well-formed query gets.
fn answer(zones: &Zones, request: &Metadata, question: &Query, edns: Option<&Edns>) -> Lookup {
    let with = |rcode| Lookup {
        rcode,
        ..Lookup::refused()
    };
    if edns.is_some_and(|edns| edns.version() > 0) {
        return with(ResponseCode::BADVERS);
    }
    if request.op_code != OpCode::Query {
        return with(ResponseCode::NotImp);
    }
    if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) {
        return with(ResponseCode::Refused);
    }
    match question.query_type() {
        // No zone transfers, and the obsolete mailbox queries (RFC 1035 §3.2.3).
        RecordType::AXFR | RecordType::IXFR | RecordType::Unknown(253 | 254) => {
            with(ResponseCode::NotImp)
        }
        // OPT is a pseudo-record: it cannot be asked for (RFC 6891 §6.1.1).
        RecordType::OPT => with(ResponseCode::FormErr),
        qtype => lookup(zones, question.name(), qtype),
    }
}

/// The query's question: parsed, its name lower-cased for lookups, and its bytes as received.
struct Question<'q> {
    query: Query,
    raw: &'q [u8],
}

impl<'q> Question<'q> {
    fn read(decoder: &mut BinDecoder<'q>) -> Result<Self, ProtoError> {
        let start = decoder.index();
        let mut query = Query::read(decoder)?;
        let raw = decoder.slice_from(start)?;
        // A compression pointer in the question has nothing to point at: malformed.
        if query.to_bytes()? != raw {
            return Err(ProtoError::from("compressed question name"));
        }
        let name = query.name().to_lowercase();
        query.set_name(name);
        Ok(Self { query, raw })
    }
}

/// The query's OPT record, if any: the rest of the message is read (and must be well-formed)
/// but otherwise ignored.
fn read_edns(decoder: &mut BinDecoder<'_>, header: &Header) -> Result<Option<Edns>, ProtoError> {
    let op = header.metadata.op_code;
    Message::read_records(decoder, usize::from(header.counts.answers), false, op)?;
    Message::read_records(decoder, usize::from(header.counts.authorities), false, op)?;
    let (_, edns, _) =
        Message::read_records(decoder, usize::from(header.counts.additionals), true, op)?;
    Ok(edns)
}

struct Response<'q> {
    metadata: Metadata,
    question: Option<Question<'q>>,
    lookup: Lookup,
    /// Our OPT record: present when the query had one, except on FORMERR.
    edns: Option<Edns>,
}

impl Response<'_> {
    /// The response's bytes. One that does not fit in `payload` bytes over UDP is sent with only
    /// its question and OPT, and TC set, so that the client retries over TCP.
    fn write(&self, transport: Transport, payload: u16) -> Result<Vec<u8>, ProtoError> {
        let bytes = self.encode(true)?;
        if transport == Transport::Tcp || bytes.len() <= usize::from(payload) {
            return Ok(bytes);
        }
        self.encode(false)
    }

    fn encode(&self, complete: bool) -> Result<Vec<u8>, ProtoError> {
        let mut metadata = self.metadata;
        metadata.response_code = self.lookup.rcode;
        metadata.authoritative = self.lookup.authoritative;
        metadata.truncation = !complete;
        let edns = self
            .edns
            .as_ref()
            .filter(|_| self.lookup.rcode != ResponseCode::FormErr);

        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        let header = encoder.place::<Header>()?;
        let mut counts = HeaderCounts::default();
        if let Some(question) = &self.question {
            // Written lower-case so that later names compress against it whatever its case;
            // the client's bytes go back in below.
            question.query.emit(&mut encoder)?;
            counts.queries = 1;
        }
        if complete {
            let qname = self.question.as_ref().map(|question| question.query.name());
            counts.answers = self.emit_section(&mut encoder, &self.lookup.answers, qname)?;
            counts.authorities = self.emit_section(&mut encoder, &self.lookup.authorities, None)?;
            counts.additionals = self.emit_section(&mut encoder, &self.lookup.additionals, None)?;
        }
        if let Some(edns) = edns {
            let mut edns = edns.clone();
            edns.set_rcode_high(self.lookup.rcode.high());
            edns.emit(&mut encoder)?;
            counts.additionals += 1;
        }
        header.replace(&mut encoder, Header { metadata, counts })?;
        if let Some(question) = &self.question {
            let start = Header::LEN;
            bytes[start..start + question.raw.len()].copy_from_slice(question.raw);
        }
        Ok(bytes)
    }

    /// Writes `sets` and returns how many records they hold. In the answer section, records of
    /// the question name (`qname`) are written as the XDP maps hold them.
    fn emit_section(
        &self,
        encoder: &mut BinEncoder<'_>,
        sets: &[RrSet],
        qname: Option<&Name>,
    ) -> Result<u16, ProtoError> {
        let mut count = 0;
        for set in sets {
            for rdata in &set.rdatas {
                if Some(&set.name) == qname {
                    emit_at_question(encoder, set.ttl, rdata)?;
                } else {
                    Record::from_rdata(set.name.clone(), set.ttl, rdata.clone()).emit(encoder)?;
                }
                count += 1;
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    //! Expected bytes were captured from Knot DNS 3.2 serving the same zone: where the RFCs
    //! leave room, we answer as Knot does. Knot's zone file:
    //!
    //! ```text
    //! $ORIGIN example.com.
    //! $TTL 300
    //! @ SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60
    //! @ NS ns1
    //! @ NS ns2.example.net.
    //! @ MX 10 mail
    //! @ TXT "v=spf1 -all"
    //! ns1 A 192.0.2.53
    //! ns1 AAAA 2001:db8::53
    //! www 60 A 192.0.2.10
    //! www 60 A 192.0.2.11
    //! alias CNAME www
    //! chain CNAME alias
    //! out CNAME www.example.org.
    //! sub NS ns.sub
    //! ns.sub A 192.0.2.54
    //! other NS ns.example.net.
    //! mail A 192.0.2.25
    //! big TXT "aaa…" ; three records: 203 a, 203 b, 204 c
    //! ```

    use std::path::Path;

    use super::*;
    use edge_config::Config;

    use crate::{fast_path, zone::Zones};

    /// The same zone in our config.
    fn zones() -> Zones {
        let text = format!(
            r#"
[xdp]
interface = "eth0"
[[zones]]
apex = "example.com"
[zones.soa]
rname = "hostmaster"
refresh = 3600
retry = 600
expire = 86400
minimum = 60
[[zones.nameservers]]
name = "ns1"
addresses = ["192.0.2.53", "2001:db8::53"]
[[zones.nameservers]]
name = "ns2.example.net."
[[zones.names]]
name = "@"
mx = [{{ preference = 10, exchange = "mail" }}]
txt = ["v=spf1 -all"]
[[zones.names]]
name = "www"
ttl = 60
a = ["192.0.2.10", "192.0.2.11"]
[[zones.names]]
name = "alias"
cname = "www"
[[zones.names]]
name = "chain"
cname = "alias"
[[zones.names]]
name = "out"
cname = "www.example.org."
[[zones.names]]
name = "sub"
ns = ["ns.sub"]
[[zones.names]]
name = "ns.sub"
a = ["192.0.2.54"]
[[zones.names]]
name = "other"
ns = ["ns.example.net."]
[[zones.names]]
name = "mail"
a = ["192.0.2.25"]
[[zones.names]]
name = "big"
txt = ["{}", "{}", "{}"]
"#,
            "a".repeat(203),
            "b".repeat(203),
            "c".repeat(204)
        );
        let path = Path::new("test.toml");
        Zones::build(path, &Config::parse(path, &text).unwrap()).unwrap()
    }

    /// EDNS in a query.
    #[derive(Clone, Copy)]
    enum Opt {
        None,
        Plain,
        Do,
        Version(u8),
        Payload(u16),
    }

    /// A query with ID 0x1234, the given header flags (host order), question and OPT.
    fn query(flags: u16, name: &str, qtype: u16, qclass: u16, opt: Opt) -> Vec<u8> {
        let mut bytes = vec![0x12, 0x34];
        bytes.extend_from_slice(&flags.to_be_bytes());
        let arcount = u16::from(!matches!(opt, Opt::None));
        for count in [1, 0, 0, arcount] {
            bytes.extend_from_slice(&u16::to_be_bytes(count));
        }
        for label in name.split('.').filter(|label| !label.is_empty()) {
            bytes.push(label.len() as u8);
            bytes.extend_from_slice(label.as_bytes());
        }
        bytes.push(0);
        bytes.extend_from_slice(&qtype.to_be_bytes());
        bytes.extend_from_slice(&qclass.to_be_bytes());
        let (payload, version, flags) = match opt {
            Opt::None => return bytes,
            Opt::Plain => (1232, 0, 0),
            Opt::Do => (1232, 0, 0x8000),
            Opt::Version(version) => (1232, version, 0x8000),
            Opt::Payload(payload) => (payload, 0, 0),
        };
        bytes.extend_from_slice(&[0, 0, 41]);
        bytes.extend_from_slice(&u16::to_be_bytes(payload));
        bytes.extend_from_slice(&[0, version]);
        bytes.extend_from_slice(&u16::to_be_bytes(flags));
        bytes.extend_from_slice(&[0, 0]);
        bytes
    }

    fn ask(name: &str, qtype: u16, opt: Opt) -> String {
        let response = respond(&zones(), &query(0, name, qtype, 1, opt), Transport::Udp);
        hex(&response.expect("a response"))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    const A: u16 = 1;
    const NS: u16 = 2;
    const SOA: u16 = 6;
    const MX: u16 = 15;
    const TXT: u16 = 16;
    const AAAA: u16 = 28;
    const DS: u16 = 43;
    const ANY: u16 = 255;

    /// Each case: question, type, and Knot's response to it with an OPT (payload 1232).
    const KNOT_ANSWERS: &[(&str, u16, &str)] = &[
        // Addresses, the question's letter case echoed; owners point at the question.
        (
            "WwW.ExAmple.CoM",
            A,
            "12348400000100020000000103577757074578416d706c6503436f4d0000010001c00c000100010000003c0004c000020ac00c000100010000003c0004c000020b00002904d0000000000000",
        ),
        // A CNAME chain followed inside the zone; names compress against the question.
        (
            "chain.EXAMPLE.com",
            A,
            "12348400000100040000000105636861696e074558414d504c4503636f6d0000010001c00c000500010000012c000805616c696173c012c02f000500010000012c000603777777c012c043000100010000003c0004c000020ac043000100010000003c0004c000020b00002904d0000000000000",
        ),
        // NXDOMAIN: the SOA in the authority section, with the negative TTL.
        (
            "nope.ExAmple.com",
            A,
            "123484030001000000010001046e6f7065074578416d706c6503636f6d0000010001c011000600010000003c0027036e7331c0110a686f73746d6173746572c0110000000100000e1000000258000151800000003c00002904d0000000000000",
        ),
        // NODATA.
        (
            "www.Example.com",
            TXT,
            "12348400000100000001000103777777074578616d706c6503636f6d0000100001c010000600010000003c0027036e7331c0100a686f73746d6173746572c0100000000100000e1000000258000151800000003c00002904d0000000000000",
        ),
        // SOA and NS at the apex; glue for the in-zone name server.
        (
            "example.com",
            SOA,
            "123484000001000100000001076578616d706c6503636f6d0000060001c00c000600010000012c0027036e7331c00c0a686f73746d6173746572c00c0000000100000e1000000258000151800000003c00002904d0000000000000",
        ),
        (
            "example.com",
            NS,
            "123484000001000200000003076578616d706c6503636f6d0000020001c00c000200010000012c0006036e7331c00cc00c000200010000012c0011036e7332076578616d706c65036e657400c029000100010000012c0004c0000235c029001c00010000012c001020010db800000000000000000000005300002904d0000000000000",
        ),
        (
            "example.com",
            MX,
            "123484000001000100000002076578616d706c6503636f6d00000f0001c00c000f00010000012c0009000a046d61696cc00cc02b000100010000012c0004c000021900002904d0000000000000",
        ),
        (
            "example.com",
            TXT,
            "123484000001000100000001076578616d706c6503636f6d0000100001c00c001000010000012c000c0b763d73706631202d616c6c00002904d0000000000000",
        ),
        // ANY (RFC 8482): one RRset.
        (
            "example.com",
            ANY,
            "123484000001000200000003076578616d706c6503636f6d0000ff0001c00c000200010000012c0006036e7331c00cc00c000200010000012c0011036e7332076578616d706c65036e657400c029000100010000012c0004c0000235c029001c00010000012c001020010db800000000000000000000005300002904d0000000000000",
        ),
        (
            "www.example.com",
            ANY,
            "12348400000100020000000103777777076578616d706c6503636f6d0000ff0001c00c000100010000003c0004c000020ac00c000100010000003c0004c000020b00002904d0000000000000",
        ),
        (
            "alias.example.com",
            ANY,
            "12348400000100010000000105616c696173076578616d706c6503636f6d0000ff0001c00c000500010000012c000603777777c01200002904d0000000000000",
        ),
        // A CNAME out of our zones is not followed.
        (
            "out.example.com",
            A,
            "123484000001000100000001036f7574076578616d706c6503636f6d0000010001c00c000500010000012c001103777777076578616d706c65036f72670000002904d0000000000000",
        ),
        // Referrals: AA clear, NS in authority, glue in additional.
        (
            "SUB.example.com",
            A,
            "12348000000100000001000203535542076578616d706c6503636f6d0000010001c00c000200010000012c0005026e73c00cc02d000100010000012c0004c000023600002904d0000000000000",
        ),
        (
            "x.Sub.example.com",
            A,
            "123480000001000000010002017803537562076578616d706c6503636f6d0000010001c00e000200010000012c0005026e73c00ec02f000100010000012c0004c000023600002904d0000000000000",
        ),
        (
            "sub.example.com",
            NS,
            "12348000000100000001000203737562076578616d706c6503636f6d0000020001c00c000200010000012c0005026e73c00cc02d000100010000012c0004c000023600002904d0000000000000",
        ),
        (
            "ns.sub.example.com",
            A,
            "123480000001000000010002026e7303737562076578616d706c6503636f6d0000010001c00f000200010000012c0002c00cc00c000100010000012c0004c000023600002904d0000000000000",
        ),
        (
            "other.example.com",
            AAAA,
            "123480000001000000010001056f74686572076578616d706c6503636f6d00001c0001c00c000200010000012c0010026e73076578616d706c65036e65740000002904d0000000000000",
        ),
        // The DS record of a delegation is the parent's: NODATA from us.
        (
            "sub.example.com",
            DS,
            "12348400000100000001000103737562076578616d706c6503636f6d00002b0001c010000600010000003c0027036e7331c0100a686f73746d6173746572c0100000000100000e1000000258000151800000003c00002904d0000000000000",
        ),
    ];

    #[test]
    fn answers_match_knot_byte_for_byte() {
        for (name, qtype, knot) in KNOT_ANSWERS {
            assert_eq!(&ask(name, *qtype, Opt::Plain), knot, "{name} {qtype}");
        }
    }

    #[test]
    fn do_bit_is_echoed() {
        // Knot's NXDOMAIN for a query with DO set.
        let knot = "123484030001000000010001046e6f7065076578616d706c6503636f6d0000010001c011000600010000003c0027036e7331c0110a686f73746d6173746572c0110000000100000e1000000258000151800000003c00002904d0000080000000";
        assert_eq!(ask("nope.example.com", A, Opt::Do), knot);
    }

    #[test]
    fn unknown_edns_version_gets_badvers() {
        // Knot: RCODE 16 split into header (0) and OPT (1); DO echoed; no answer, AA clear.
        let knot = "12348000000100000000000103777777076578616d706c6503636f6d000001000100002904d0010080000000";
        assert_eq!(ask("www.example.com", A, Opt::Version(1)), knot);
    }

    #[test]
    fn names_outside_our_zones_are_refused_without_recursion() {
        let response = respond(
            &zones(),
            &query(0x0100, "example.org", A, 1, Opt::None),
            Transport::Udp,
        )
        .unwrap();
        let message = Message::from_vec(&response).unwrap();
        assert_eq!(message.response_code, ResponseCode::Refused);
        assert!(!message.authoritative && !message.recursion_available);
        assert!(message.recursion_desired, "RD is copied");
        assert_eq!(message.answers.len() + message.authorities.len(), 0);
        // Knot answers the same, plus an Extended DNS Error option that we do not send.
        assert_eq!(
            hex(&response),
            "123481050001000000000000076578616d706c65036f72670000010001"
        );
    }

    #[test]
    fn oversized_udp_answers_are_truncated_to_the_question() {
        // Knot's response without EDNS (512 bytes) and with a 512-byte OPT.
        let knot = "12348600000100000000000003626967076578616d706c6503636f6d0000100001";
        assert_eq!(ask("big.example.com", TXT, Opt::None), knot);
        let knot = "12348600000100000000000103626967076578616d706c6503636f6d000010000100002904d0000000000000";
        assert_eq!(ask("big.example.com", TXT, Opt::Payload(512)), knot);
        // It fits what a larger OPT allows, and TCP.
        let full = ask("big.example.com", TXT, Opt::Payload(4096));
        assert_eq!(&full[4..8], "8400", "{full}");
        let tcp = respond(
            &zones(),
            &query(0, "big.example.com", TXT, 1, Opt::None),
            Transport::Tcp,
        )
        .unwrap();
        assert_eq!(Message::from_vec(&tcp).unwrap().answers.len(), 3);
    }

    #[test]
    fn udp_payload_is_clamped_to_1232() {
        // Six TXT strings of 250 bytes: about 1.5 kB, more than 1232.
        let mut zones = zones();
        let owner = Name::from_ascii("big.example.com.").unwrap();
        let records = zones.zones[0].names.get_mut(&owner).unwrap();
        records.txt = (0..6)
            .map(|_| hickory_proto::rr::rdata::TXT::new(vec!["x".repeat(250)]))
            .collect();
        let ask = |payload| {
            let query = query(0, "big.example.com", TXT, 1, Opt::Payload(payload));
            respond(&zones, &query, Transport::Udp).unwrap()
        };
        let response = ask(4096);
        assert!(Message::from_vec(&response).unwrap().truncation);
        assert!(response.len() <= usize::from(MAX_UDP_PAYLOAD));
        // Our OPT advertises 1232 whatever the client's.
        assert_eq!(
            hex(&response[response.len() - 11..]),
            "00002904d0000000000000"
        );
    }

    #[test]
    fn opcodes_other_than_query_are_not_implemented() {
        // Knot's response to an IQUERY (opcode 1) and a STATUS (opcode 2).
        for (flags, knot) in [
            (
                0x0800,
                "12348804000100000000000003777777076578616d706c6503636f6d0000010001",
            ),
            (
                0x1000,
                "12349004000100000000000003777777076578616d706c6503636f6d0000010001",
            ),
        ] {
            let query = query(flags, "www.example.com", A, 1, Opt::None);
            assert_eq!(
                hex(&respond(&zones(), &query, Transport::Udp).unwrap()),
                knot
            );
        }
        // NOTIFY and UPDATE as well (Knot says NOTAUTH: it implements them).
        for flags in [0x2000, 0x2800] {
            let query = query(flags, "example.com", SOA, 1, Opt::Plain);
            let message =
                Message::from_vec(&respond(&zones(), &query, Transport::Udp).unwrap()).unwrap();
            assert_eq!(message.response_code, ResponseCode::NotImp);
            assert!(message.edns.is_some(), "OPT echoed");
        }
        // No zone transfers, over either transport.
        for transport in [Transport::Udp, Transport::Tcp] {
            for qtype in [251, 252] {
                let query = query(0, "example.com", qtype, 1, Opt::None);
                let response = respond(&zones(), &query, transport).unwrap();
                assert_eq!(response[3] & 0x0f, 4, "{qtype} over {transport:?}");
            }
        }
    }

    #[test]
    fn classes_other_than_in_are_refused() {
        // Knot's response for class CH; class ANY is answered as IN.
        let chaos = query(0, "www.example.com", A, 3, Opt::None);
        assert_eq!(
            hex(&respond(&zones(), &chaos, Transport::Udp).unwrap()),
            "12348005000100000000000003777777076578616d706c6503636f6d0000010003"
        );
        let any = query(0, "www.example.com", A, 255, Opt::None);
        let message = Message::from_vec(&respond(&zones(), &any, Transport::Udp).unwrap()).unwrap();
        assert_eq!(message.answers.len(), 2);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        let zones = zones();
        let good = query(0x0100, "www.example.com", A, 1, Opt::Plain);
        let formerr = |bytes: &[u8]| {
            let response = respond(&zones, bytes, Transport::Udp).expect("a response");
            let message = Message::from_vec(&response).unwrap();
            assert_eq!(
                message.response_code,
                ResponseCode::FormErr,
                "{}",
                hex(bytes)
            );
            assert_eq!(message.id, 0x1234);
            assert!(message.recursion_desired);
            assert!(message.edns.is_none(), "no OPT on FORMERR");
            message
        };
        // Trailing bytes (Knot: FORMERR with the question).
        let mut trailing = good.clone();
        trailing.push(0xff);
        assert_eq!(formerr(&trailing).queries.len(), 1);
        // No question, two questions.
        let mut none = good[..12].to_vec();
        none[5] = 0;
        none[11] = 0;
        assert!(formerr(&none).queries.is_empty());
        let mut two = query(0x0100, "www.example.com", A, 1, Opt::None);
        two[5] = 2;
        two.extend_from_within(12..);
        formerr(&two);
        // Two OPT records; an OPT option running past its record.
        let mut two_opts = good.clone();
        two_opts[11] = 2;
        two_opts.extend_from_slice(&good[good.len() - 11..]);
        formerr(&two_opts);
        let mut bad_option = good.clone();
        let len = bad_option.len();
        bad_option[len - 1] = 3;
        bad_option.extend_from_slice(&[0, 10, 0]);
        formerr(&bad_option);
        // A compression pointer in the question, and a truncated question.
        let pointer = unhex("1234010000010000000000000377777707c00c00010001");
        formerr(&pointer);
        formerr(&good[..20]);
        // Asking for the OPT pseudo-type.
        formerr(&query(0x0100, "www.example.com", 41, 1, Opt::Plain));

        // Nothing at all for a response or for less than a header.
        let mut response = good.clone();
        response[2] |= 0x80;
        assert_eq!(respond(&zones, &response, Transport::Udp), None);
        assert_eq!(respond(&zones, &good[..11], Transport::Udp), None);
    }

    #[test]
    fn header_flags_copy_rd_and_cd_only() {
        // RD, AD, CD and the reserved Z bit set in the query.
        let query = query(0x0170, "www.example.com", A, 1, Opt::None);
        let response = respond(&zones(), &query, Transport::Udp).unwrap();
        assert_eq!(hex(&response[2..4]), "8510");
    }

    #[test]
    fn empty_non_terminals_are_nodata() {
        // ns.sub exists below the cut; `sub` is a cut. `mail` has nothing below it, so
        // a name between the apex and a deeper name is needed: add one.
        let mut zones = zones();
        let deep = Name::from_ascii("a.b.example.com.").unwrap();
        let mail = zones.zones[0].names[&Name::from_ascii("mail.example.com.").unwrap()].clone();
        zones.zones[0].names.insert(deep, mail);
        let query = query(0, "b.example.com", A, 1, Opt::None);
        let message = Message::from_vec(&respond(&zones, &query, Transport::Udp).unwrap()).unwrap();
        assert_eq!(message.response_code, ResponseCode::NoError);
        assert!(message.answers.is_empty());
        assert_eq!(message.authorities[0].record_type(), RecordType::SOA);
    }

    /// The userspace response to an A or AAAA query is the header, the question as received,
    /// the answer map entry's bytes and the OPT: what the XDP program sends.
    #[test]
    fn address_answers_are_the_fast_path_bytes() {
        let zones = zones();
        let entries = fast_path::entries(&zones).unwrap();
        let mut names: Vec<(String, u16)> = entries
            .iter()
            .map(|entry| {
                let name = Name::from_bytes(&entry.key.name).unwrap().to_string();
                (name, u16::from_be(entry.key.qtype))
            })
            .collect();
        names.sort();
        // Names answered authoritatively with addresses; not aliases, delegations or glue.
        assert_eq!(
            names,
            [
                ("mail.example.com.".to_string(), A),
                ("ns1.example.com.".to_string(), A),
                ("ns1.example.com.".to_string(), AAAA),
                ("www.example.com.".to_string(), A),
            ]
        );
        for fast_path::Entry {
            key, answer: entry, ..
        } in &entries
        {
            let name = Name::from_bytes(&key.name).unwrap();
            let qtype = u16::from_be(key.qtype);
            for (case, opt) in [
                (name.to_string(), Opt::None),
                (name.to_string().to_uppercase(), Opt::Do),
            ] {
                let query = query(0x0110, &case, qtype, 1, opt);
                let response = respond(&zones, &query, Transport::Udp).unwrap();
                let flags = entry.flags | 0x0110;
                let mut expected = vec![0x12, 0x34];
                expected.extend_from_slice(&flags.to_be_bytes());
                expected.extend_from_slice(&[0, 1]);
                expected.extend_from_slice(&entry.ancount.to_be_bytes());
                expected.extend_from_slice(&[0, 0, 0, u8::from(!matches!(opt, Opt::None))]);
                expected.extend_from_slice(
                    &query[12..query.len() - if matches!(opt, Opt::None) { 0 } else { 11 }],
                );
                expected.extend_from_slice(&entry.data[..usize::from(entry.len)]);
                if matches!(opt, Opt::Do) {
                    expected.extend_from_slice(&unhex("00002904d0000080000000"));
                }
                assert_eq!(hex(&response), hex(&expected), "{case} {qtype}");
            }
        }
    }
}
