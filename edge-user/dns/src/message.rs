//! The framing layer: a query's bytes in, the response's bytes out. It checks the query, asks
//! [`super::authority`] what to answer, and writes the sections; answers at the question name go
//! through [`super::answer::emit_at_question`], the same code that fills the XDP maps.
//!
//! Where the RFCs leave room, Knot DNS is the reference: the question is echoed as received,
//! names compress case-insensitively against it, a truncated response keeps only the question,
//! and what Knot drops (several questions, a question it cannot read) gets no response.

use hickory_proto::{
    ProtoError,
    op::{Header, HeaderCounts, MessageType, Metadata, OpCode, Query, ResponseCode},
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

/// EDNS option codes we act on.
mod option {
    /// RFC 5001: the client asks for our identity.
    pub const NSID: u16 = 3;
    /// RFC 7314: the zone's SOA expire timer.
    pub const EXPIRE: u16 = 9;
    /// RFC 8914: why we answered as we did.
    pub const EXTENDED_ERROR: u16 = 15;
}

const TYPE_OPT: u16 = 41;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The response to `query`, or `None` when it gets none: too short for a header, itself a
/// response, or without exactly one readable question (Knot drops those too; a query without
/// a question gets FORMERR).
pub fn respond(zones: &Zones, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(query);
    let header = Header::read(&mut decoder).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let question = match header.counts.queries {
        0 => None,
        1 => Some(Question::read(&mut decoder).ok()?),
        _ => return None,
    };
    let mut response = Response {
        metadata: Metadata::response_from_request(&header.metadata),
        question,
        lookup: Lookup::with(ResponseCode::FormErr, false),
        edns: None,
    };
    // A record that does not parse, trailing bytes, two OPT records or an option running past
    // its record: the message is malformed, and its OPT cannot be trusted (Knot: FORMERR
    // without OPT).
    let request_edns = match read_records(&mut decoder, &header.counts) {
        Ok(edns) if decoder.is_empty() => edns,
        _ => return response.write(transport, CLASSIC_UDP_PAYLOAD).ok(),
    };
    let payload = match (&request_edns, transport) {
        (_, Transport::Tcp) => u16::MAX,
        (None, Transport::Udp) => CLASSIC_UDP_PAYLOAD,
        (Some(edns), Transport::Udp) => edns.payload.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
    };
    if let Some(question) = &response.question {
        response.lookup = answer(
            zones,
            &header.metadata,
            &question.query,
            request_edns.as_ref(),
            transport,
        );
    }
    response.edns = request_edns.map(|request| {
        let mut options = Vec::new();
        if request.nsid
            && let Some(nsid) = zones.identity.nsid()
        {
            options.push((option::NSID, nsid.to_vec()));
        }
        if request.expire
            && let Some(expire) = response.lookup.expire
        {
            options.push((option::EXPIRE, expire.to_be_bytes().to_vec()));
        }
        if let Some(code) = response.lookup.extended_error {
            options.push((option::EXTENDED_ERROR, code.to_be_bytes().to_vec()));
        }
        ResponseEdns {
            dnssec_ok: request.dnssec_ok,
            options,
        }
    });
    response.write(transport, payload).ok()
}

/// What a well-formed query gets. Where no RFC decides, as Knot DNS answers.
fn answer(
    zones: &Zones,
    request: &Metadata,
    question: &Query,
    edns: Option<&RequestEdns>,
    transport: Transport,
) -> Lookup {
    let with = |rcode| Lookup::with(rcode, false);
    if edns.is_some_and(|edns| edns.version > 0) {
        return with(ResponseCode::BADVERS);
    }
    match request.op_code {
        OpCode::Query => {}
        // NOTIFY we take from no one. An UPDATE comes here only from a caller without the
        // update path: the server gives UPDATE to `updates::respond`, which answers NOTAUTH to
        // what no key may change, as here.
        OpCode::Notify | OpCode::Update => return with(ResponseCode::NotAuth),
        _ => return with(ResponseCode::NotImp),
    }
    match question.query_class() {
        DNSClass::IN | DNSClass::ANY => {}
        DNSClass::CH => return zones.identity.chaos(question.name(), question.query_type()),
        _ => return with(ResponseCode::Refused),
    }
    match question.query_type() {
        // No zone transfers: none are allowed (Knot: NOTAUTH, or NOTIMP for AXFR over UDP).
        RecordType::AXFR if transport == Transport::Udp => with(ResponseCode::NotImp),
        RecordType::AXFR | RecordType::IXFR => with(ResponseCode::NotAuth),
        // Type 0 is reserved (RFC 6895 §3.1).
        RecordType::ZERO => with(ResponseCode::NotImp),
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

/// What the query's OPT record asks for.
struct RequestEdns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
    nsid: bool,
    expire: bool,
}

/// Reads the answer, authority and additional sections: every record must be whole, and at
/// most one OPT, in the additional section, its options filling its RDATA exactly. Other
/// records are ignored, as is an OPT's owner name (Knot accepts any).
fn read_records(
    decoder: &mut BinDecoder<'_>,
    counts: &HeaderCounts,
) -> Result<Option<RequestEdns>, ProtoError> {
    let mut edns = None;
    let sections = [counts.answers, counts.authorities, counts.additionals];
    for (section, &count) in sections.iter().enumerate() {
        for _ in 0..count {
            Name::read(decoder)?;
            let rtype = decoder.read_u16()?.unverified();
            let class = decoder.read_u16()?.unverified();
            let ttl = decoder.read_u32()?.unverified();
            let rdlength = decoder.read_u16()?.unverified();
            let rdata = decoder.read_slice(usize::from(rdlength))?.unverified();
            if rtype != TYPE_OPT {
                continue;
            }
            if section != 2 || edns.is_some() {
                return Err(ProtoError::from("misplaced or second OPT record"));
            }
            let (mut nsid, mut expire) = (false, false);
            let mut options = rdata;
            while !options.is_empty() {
                let [c0, c1, l0, l1, rest @ ..] = options else {
                    return Err(ProtoError::from("truncated EDNS option"));
                };
                let len = usize::from(u16::from_be_bytes([*l0, *l1]));
                if len > rest.len() {
                    return Err(ProtoError::from("EDNS option runs past its record"));
                }
                match u16::from_be_bytes([*c0, *c1]) {
                    option::NSID => nsid = true,
                    option::EXPIRE => expire = true,
                    _ => {}
                }
                options = &rest[len..];
            }
            let [_, version, flags, _] = ttl.to_be_bytes();
            edns = Some(RequestEdns {
                payload: class,
                version,
                dnssec_ok: flags & 0x80 != 0,
                nsid,
                expire,
            });
        }
    }
    Ok(edns)
}

/// Our OPT record: payload 1232, version 0, the query's DO bit, and `options` in order.
struct ResponseEdns {
    dnssec_ok: bool,
    options: Vec<(u16, Vec<u8>)>,
}

impl ResponseEdns {
    fn emit(&self, encoder: &mut BinEncoder<'_>, rcode: ResponseCode) -> Result<(), ProtoError> {
        encoder.emit(0)?;
        encoder.emit_u16(TYPE_OPT)?;
        encoder.emit_u16(MAX_UDP_PAYLOAD)?;
        encoder.emit(rcode.high())?;
        encoder.emit(0)?;
        encoder.emit_u16(if self.dnssec_ok { 0x8000 } else { 0 })?;
        let length = encoder.place::<u16>()?;
        for (code, data) in &self.options {
            encoder.emit_u16(*code)?;
            encoder.emit_u16(data.len() as u16)?;
            encoder.emit_vec(data)?;
        }
        let written = encoder.len_since_place(&length) as u16;
        length.replace(encoder, written)?;
        Ok(())
    }
}

struct Response<'q> {
    metadata: Metadata,
    question: Option<Question<'q>>,
    lookup: Lookup,
    /// Our OPT record: present when the query had a valid one.
    edns: Option<ResponseEdns>,
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
        if let Some(edns) = &self.edns {
            edns.emit(&mut encoder, self.lookup.rcode)?;
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
                    emit_at_question(encoder, self.lookup.class, set.ttl, rdata)?;
                } else {
                    let mut record = Record::from_rdata(set.name.clone(), set.ttl, rdata.clone());
                    record.dns_class = self.lookup.class;
                    record.emit(encoder)?;
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
    use hickory_proto::op::Message;

    use crate::{fast_path, zone::Zones};

    /// The same zone in our config.
    fn zones() -> Zones {
        let text = format!(
            r#"
[xdp]
interface = "eth0"
[dns]
identity = "pop-test"
version = "edge-test"
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
        assert_eq!(
            hex(&response),
            "123481050001000000000000076578616d706c65036f72670000010001"
        );
        // With EDNS, Knot says why: Extended DNS Error 20, Not Authoritative (RFC 8914).
        let knot = "12348005000100000000000103777777076578616d706c65036f7267000001000100002904d0000000000006000f00020014";
        assert_eq!(ask("www.example.org", A, Opt::Plain), knot);
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
        let records = std::sync::Arc::make_mut(&mut zones.zones[0].names)
            .get_mut(&owner)
            .unwrap();
        records.sets.remove(&u16::from(RecordType::TXT));
        for i in 0..6 {
            let text = format!("{i}").repeat(250);
            let txt = hickory_proto::rr::rdata::TXT::new(vec![text]);
            records.add(300, hickory_proto::rr::RData::TXT(txt));
        }
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
    fn opcodes_other_than_query_are_refused_as_knot_does() {
        // Knot's response to an IQUERY (opcode 1) and a STATUS (opcode 2): NOTIMP.
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
        // NOTIFY and UPDATE: NOTAUTH, our OPT included.
        for (flags, knot) in [
            (
                0x2000,
                "1234a0090001000000000001076578616d706c6503636f6d000006000100002904d0000000000000",
            ),
            (
                0x2800,
                "1234a8090001000000000001076578616d706c6503636f6d000006000100002904d0000000000000",
            ),
        ] {
            let query = query(flags, "example.com", SOA, 1, Opt::Plain);
            assert_eq!(
                hex(&respond(&zones(), &query, Transport::Udp).unwrap()),
                knot
            );
        }
        // No zone transfers: AXFR over UDP is NOTIMP, over TCP NOTAUTH; IXFR NOTAUTH.
        for (transport, qtype, rcode) in [
            (Transport::Udp, 252, 4),
            (Transport::Tcp, 252, 9),
            (Transport::Udp, 251, 9),
            (Transport::Tcp, 251, 9),
        ] {
            let query = query(0, "example.com", qtype, 1, Opt::None);
            let response = respond(&zones(), &query, transport).unwrap();
            assert_eq!(response[3] & 0x0f, rcode, "{qtype} over {transport:?}");
        }
        // QTYPE 0 is NOTIMP; MAILA, MAILB and OPT are looked up like any type (NODATA here).
        let knot = "12348004000100000000000103777777076578616d706c6503636f6d000000000100002904d0000000000000";
        assert_eq!(ask("www.example.com", 0, Opt::Plain), knot);
        for (qtype, knot) in [
            (
                41,
                "12348400000100000001000103777777076578616d706c6503636f6d0000290001c010000600010000003c0027036e7331c0100a686f73746d6173746572c0100000000100000e1000000258000151800000003c00002904d0000000000000",
            ),
            (
                253,
                "12348400000100000001000103777777076578616d706c6503636f6d0000fd0001c010000600010000003c0027036e7331c0100a686f73746d6173746572c0100000000100000e1000000258000151800000003c00002904d0000000000000",
            ),
            (
                254,
                "12348400000100000001000103777777076578616d706c6503636f6d0000fe0001c010000600010000003c0027036e7331c0100a686f73746d6173746572c0100000000100000e1000000258000151800000003c00002904d0000000000000",
            ),
        ] {
            assert_eq!(ask("www.example.com", qtype, Opt::Plain), knot, "{qtype}");
        }
    }

    #[test]
    fn classes_other_than_in_are_refused() {
        // Knot's response for class CH (not a name of ours there) and NONE: REFUSED without
        // an Extended DNS Error; class ANY is answered as IN.
        let chaos = query(0, "www.example.com", A, 3, Opt::None);
        assert_eq!(
            hex(&respond(&zones(), &chaos, Transport::Udp).unwrap()),
            "12348005000100000000000003777777076578616d706c6503636f6d0000010003"
        );
        let none = query(0, "www.example.com", A, 254, Opt::Plain);
        assert_eq!(
            hex(&respond(&zones(), &none, Transport::Udp).unwrap()),
            "12348005000100000000000103777777076578616d706c6503636f6d00000100fe00002904d0000000000000"
        );
        let any = query(0, "www.example.com", A, 255, Opt::None);
        let message = Message::from_vec(&respond(&zones(), &any, Transport::Udp).unwrap()).unwrap();
        assert_eq!(message.answers.len(), 2);
    }

    /// `query` (ending in an OPT record without options) with `options` as the OPT's RDATA.
    fn with_options(mut query: Vec<u8>, options: &[u8]) -> Vec<u8> {
        let len = query.len();
        query[len - 2..].copy_from_slice(&(options.len() as u16).to_be_bytes());
        query.extend_from_slice(options);
        query
    }

    fn answer(query: &[u8]) -> String {
        hex(&respond(&zones(), query, Transport::Udp).expect("a response"))
    }

    #[test]
    fn identity_is_answered_for_chaos_and_nsid_as_knot_does() {
        const NSID: &[u8] = &[0, 3, 0, 0];
        // CHAOS TXT: TTL 0, AA clear, the question's case echoed.
        let knot = "123480000001000100000001026964067365727665720000100003c00c0010000300000000000908706f702d7465737400002904d0000000000000";
        assert_eq!(answer(&query(0, "id.server", TXT, 3, Opt::Plain)), knot);
        let knot = "123480000001000100000000024944065365727665720000100003c00c0010000300000000000908706f702d74657374";
        assert_eq!(answer(&query(0, "ID.Server", TXT, 3, Opt::None)), knot);
        let knot = "1234800000010001000000010776657273696f6e0462696e640000100003c00c0010000300000000000a09656467652d7465737400002904d000000000000c00030008706f702d74657374";
        let version = query(0, "version.bind", TXT, 3, Opt::Plain);
        assert_eq!(answer(&with_options(version, NSID)), knot);
        // Other CHAOS names and types: REFUSED; id.server in class IN is not ours.
        let knot = "12348005000100000000000102696406736572766572000001000300002904d0000000000000";
        assert_eq!(answer(&query(0, "id.server", A, 3, Opt::Plain)), knot);
        let knot =
            "123480050001000000000001017802696406736572766572000010000300002904d0000000000000";
        assert_eq!(answer(&query(0, "x.id.server", TXT, 3, Opt::Plain)), knot);
        let knot = "12348005000100000000000102696406736572766572000010000100002904d0000000000006000f00020014";
        assert_eq!(answer(&query(0, "id.server", TXT, 1, Opt::Plain)), knot);
        // NSID on every response to a query with a valid OPT that asks for it.
        for (query, knot) in [
            (
                query(0, "nope.example.com", A, 1, Opt::Plain),
                "123484030001000000010001046e6f7065076578616d706c6503636f6d0000010001c011000600010000003c0027036e7331c0110a686f73746d6173746572c0110000000100000e1000000258000151800000003c00002904d000000000000c00030008706f702d74657374",
            ),
            (
                query(0, "www.example.org", A, 1, Opt::Plain),
                "12348005000100000000000103777777076578616d706c65036f7267000001000100002904d000000000001200030008706f702d74657374000f00020014",
            ),
            (
                query(0, "www.example.com", A, 1, Opt::Version(1)),
                "12348000000100000000000103777777076578616d706c6503636f6d000001000100002904d001008000000c00030008706f702d74657374",
            ),
            (
                query(0x1000, "www.example.com", A, 1, Opt::Plain),
                "12349004000100000000000103777777076578616d706c6503636f6d000001000100002904d000000000000c00030008706f702d74657374",
            ),
        ] {
            assert_eq!(answer(&with_options(query, NSID)), knot);
        }
        // A query without a question: FORMERR, with our OPT since the query's was valid.
        let mut empty = with_options(query(0, "x", A, 1, Opt::Plain), NSID);
        empty.drain(12..12 + 7);
        empty[5] = 0;
        let knot = "12348001000000000000000100002904d000000000000c00030008706f702d74657374";
        assert_eq!(answer(&empty), knot);
    }

    #[test]
    fn expire_option_carries_the_soa_expire() {
        const EXPIRE: &[u8] = &[0, 9, 0, 0];
        let knot = "123484030001000000010001046e6f7065076578616d706c6503636f6d0000010001c011000600010000003c0027036e7331c0110a686f73746d6173746572c0110000000100000e1000000258000151800000003c00002904d00000000000080009000400015180";
        let nope = query(0, "nope.example.com", A, 1, Opt::Plain);
        assert_eq!(answer(&with_options(nope, EXPIRE)), knot);
        // Not for names outside our zones; after NSID when both are asked for.
        let knot = "12348005000100000000000103777777076578616d706c65036f7267000001000100002904d0000000000006000f00020014";
        let out = query(0, "www.example.org", A, 1, Opt::Plain);
        assert_eq!(answer(&with_options(out, EXPIRE)), knot);
        let knot = "12348400000100020000000103777777076578616d706c6503636f6d0000010001c00c000100010000003c0004c000020ac00c000100010000003c0004c000020b00002904d000000000001400030008706f702d746573740009000400015180";
        let both = query(0, "www.example.com", A, 1, Opt::Plain);
        assert_eq!(answer(&with_options(both, &[0, 9, 0, 0, 0, 3, 0, 0])), knot);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing_as_knot_does() {
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
            assert!(
                message.edns.is_none(),
                "no OPT: the query's is not to be trusted"
            );
            assert_eq!(message.queries.len(), 1, "the question echoed");
        };
        // Trailing bytes.
        let mut trailing = good.clone();
        trailing.push(0xff);
        formerr(&trailing);
        // Two OPT records; an OPT in the answer section.
        let mut two_opts = good.clone();
        two_opts[11] = 2;
        two_opts.extend_from_slice(&good[good.len() - 11..]);
        formerr(&two_opts);
        let mut opt_in_answer = good.clone();
        (opt_in_answer[7], opt_in_answer[11]) = (1, 0);
        formerr(&opt_in_answer);
        // An option running past its OPT record, and the OPT's RDATA cutting an option short
        // (Knot's response, byte for byte).
        let knot = "12348101000100000000000003777777076578616d706c6503636f6d0000010001";
        let overrun = with_options(good.clone(), &[0, 10, 0, 8, 1, 1, 1, 1]);
        assert_eq!(answer(&overrun), knot);
        formerr(&overrun);
        let mut cut = with_options(good.clone(), &[0, 10, 0, 8, 1, 1, 1, 1, 1, 1, 1, 1]);
        let len = cut.len();
        cut[len - 14..len - 12].copy_from_slice(&[0, 6]);
        formerr(&cut);
        // Options we do not implement are ignored, malformed or not (Knot: a client subnet
        // with an unknown family, a cookie of the wrong length).
        for options in [
            &[0, 8, 0, 7, 0, 9, 24, 0, 10, 0, 0][..],
            &[0, 10, 0, 5, 1, 2, 3, 4, 5],
        ] {
            let message = Message::from_vec(
                &respond(&zones, &with_options(good.clone(), options), Transport::Udp).unwrap(),
            )
            .unwrap();
            assert_eq!(message.answers.len(), 2);
        }

        // Nothing at all for several questions, a question that cannot be read (a compression
        // pointer, cut short), a response, or less than a header.
        let mut two = query(0x0100, "www.example.com", A, 1, Opt::None);
        two[5] = 2;
        two.extend_from_within(12..);
        let pointer = unhex("1234010000010000000000000377777707c00c00010001");
        let mut response = good.clone();
        response[2] |= 0x80;
        for silent in [&two[..], &pointer, &good[..20], &response, &good[..11]] {
            assert_eq!(
                respond(&zones, silent, Transport::Udp),
                None,
                "{}",
                hex(silent)
            );
        }
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
        std::sync::Arc::make_mut(&mut zones.zones[0].names).insert(deep, mail);
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
                let name = Name::from_bytes(entry.name()).unwrap().to_string();
                (name, u16::from_be(entry.qtype))
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
        for fast_path_entry in &entries {
            let name = Name::from_bytes(fast_path_entry.name()).unwrap();
            let qtype = u16::from_be(fast_path_entry.qtype);
            let entry = fast_path_entry.answer();
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
