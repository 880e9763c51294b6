//! What the XDP program answers: one map entry per owner name and record type, keyed by the
//! lower-case wire name, holding the answer built by [`super::answer`].

use std::net::{IpAddr, SocketAddr};

use edge_common::{
    ANSWER_DATA_LEN, Answer, LongNameKey, NAME_KEY_LEN, SERVICES_MAX, SHORT_NAME_LEN, ServiceV4,
    ServiceV6, Services, ShortNameKey,
};
use hickory_proto::{
    ProtoError,
    rr::{Name, RData, RecordType},
    serialize::binary::BinEncodable,
};

use super::answer::{AUTHORITATIVE_ANSWER, answer_into, answer_section};
use crate::zone::{NameRecords, Zone, Zones};

/// The DNS port, answered on every address when no service address is configured.
pub const DNS_PORT: u16 = 53;

/// The service array for the configured listen addresses; without any, port 53 of every IPv4
/// and IPv6 address (the wildcards). The config check keeps each family within
/// [`SERVICES_MAX`]; beyond that, addresses are left out.
pub fn services(listen: &[SocketAddr]) -> Services {
    let wildcards = [
        SocketAddr::from(([0, 0, 0, 0], DNS_PORT)),
        SocketAddr::from(([0_u16; 8], DNS_PORT)),
    ];
    let listen = if listen.is_empty() {
        &wildcards[..]
    } else {
        listen
    };
    let mut services = Services::default();
    for socket in listen {
        let port = socket.port().to_be();
        match socket.ip() {
            IpAddr::V4(ip) if (services.v4_len as usize) < SERVICES_MAX => {
                services.v4[services.v4_len as usize] = ServiceV4 {
                    addr: u32::from_ne_bytes(ip.octets()),
                    port,
                    reserved: 0,
                };
                services.v4_len += 1;
            }
            IpAddr::V6(ip) if (services.v6_len as usize) < SERVICES_MAX => {
                services.v6[services.v6_len as usize] = ServiceV6 {
                    addr: ip.octets(),
                    port,
                    reserved: 0,
                };
                services.v6_len += 1;
            }
            _ => {}
        }
    }
    services
}

/// The map key for `name` (any case) and `qtype`.
pub fn name_key(name: &Name, qtype: RecordType) -> Result<LongNameKey, ProtoError> {
    let wire = name.to_lowercase().to_bytes()?;
    let mut key = LongNameKey::zeroed();
    if wire.len() > NAME_KEY_LEN {
        return Err(ProtoError::from(format!(
            "{name} is longer than {NAME_KEY_LEN} octets"
        )));
    }
    key.name[..wire.len()].copy_from_slice(&wire);
    key.qtype = u16::from(qtype).to_be();
    Ok(key)
}

/// The map value answering with `rdatas` at `ttl`.
pub fn answer_entry(ttl: u32, rdatas: &[RData]) -> Result<Answer, ProtoError> {
    let section = answer_section(ttl, rdatas)?;
    checked_len(&section)?;
    Ok(full_answer(rdatas.len() as u16, &section))
}

fn checked_len(section: &[u8]) -> Result<(), ProtoError> {
    if section.len() > ANSWER_DATA_LEN {
        return Err(ProtoError::from(format!(
            "answer of {} bytes exceeds the {ANSWER_DATA_LEN} the fast path holds",
            section.len()
        )));
    }
    Ok(())
}

/// An [`Answer`] holding `section` (at most [`ANSWER_DATA_LEN`] bytes).
fn full_answer(ancount: u16, section: &[u8]) -> Answer {
    let mut answer = Answer {
        flags: AUTHORITATIVE_ANSWER,
        ancount,
        len: section.len() as u16,
        selection: 0,
        data: [0; ANSWER_DATA_LEN],
    };
    answer.data[..section.len()].copy_from_slice(section);
    answer
}

/// One answer of the fast path: a name and type and the answer section, in one allocation so
/// that a million of them stay small (the map layouts are built from it when written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The lower-case wire-format name, then the answer section.
    bytes: Box<[u8]>,
    name_len: u8,
    /// Query type in network byte order.
    pub qtype: u16,
    /// Records in the answer section.
    pub ancount: u16,
    /// A steered name's answer, which changes with each steering round.
    pub steered: bool,
}

impl Entry {
    /// The entry answering `name` (lower-case wire format) and `qtype` with `section`.
    pub fn new(
        name: &[u8],
        qtype: RecordType,
        ancount: u16,
        section: &[u8],
        steered: bool,
    ) -> Result<Self, ProtoError> {
        if name.len() > NAME_KEY_LEN {
            return Err(ProtoError::from("name longer than 255 octets"));
        }
        checked_len(section)?;
        Ok(Self {
            bytes: [name, section].concat().into_boxed_slice(),
            name_len: name.len() as u8,
            qtype: u16::from(qtype).to_be(),
            ancount,
            steered,
        })
    }

    /// The lower-case wire-format name.
    pub fn name(&self) -> &[u8] {
        &self.bytes[..usize::from(self.name_len)]
    }

    /// The answer section.
    pub fn section(&self) -> &[u8] {
        &self.bytes[usize::from(self.name_len)..]
    }

    /// The key of the long-answer map.
    pub fn key(&self) -> LongNameKey {
        let mut key = LongNameKey::zeroed();
        key.name[..self.name().len()].copy_from_slice(self.name());
        key.qtype = self.qtype;
        key
    }

    /// The name table's key, if the name is short enough for it.
    pub fn short_key(&self) -> Option<ShortNameKey> {
        let name = self.name();
        if name.len() > SHORT_NAME_LEN {
            return None;
        }
        let mut key = ShortNameKey::zeroed();
        key.name[..name.len()].copy_from_slice(name);
        key.qtype = self.qtype;
        Some(key)
    }

    /// The answer as the long-answer and selection maps hold it.
    pub fn answer(&self) -> Answer {
        full_answer(self.ancount, self.section())
    }
}

/// A fast-path answer read back from the maps: the name and type it answers and its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedAnswer {
    /// The name, in presentation format (`www.example.`).
    pub name: String,
    /// The query type (`A`, `AAAA`).
    pub qtype: String,
    /// Each record of the answer section: TTL, type and data (`300 A 192.0.2.1`).
    pub records: Vec<String>,
}

/// Decodes the answer `section` (`ancount` records, owners compressed to the question name)
/// for `name` (wire format, perhaps zero-padded as in a map key) and `qtype` (network byte order), as the maps hold them: the
/// inverse of [`Entry::new`], for `edge maps`. Parsed as the reply the program would send.
pub fn decode_answer(
    name: &[u8],
    qtype: u16,
    ancount: u16,
    section: &[u8],
) -> Result<DecodedAnswer, ProtoError> {
    let mut end = 0;
    while let Some(&len) = name.get(end) {
        end += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    let name = name
        .get(..end)
        .ok_or_else(|| ProtoError::from("name runs past its key"))?;
    let mut reply = Vec::with_capacity(12 + name.len() + 4 + section.len());
    reply.extend_from_slice(&[0, 0, 0x84, 0, 0, 1]);
    reply.extend_from_slice(&ancount.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(name);
    reply.extend_from_slice(&qtype.to_ne_bytes());
    reply.extend_from_slice(&1_u16.to_be_bytes());
    reply.extend_from_slice(section);
    let message = hickory_proto::op::Message::from_vec(&reply)
        .map_err(|error| ProtoError::from(format!("undecodable answer: {error}")))?;
    let query = message
        .queries
        .first()
        .ok_or_else(|| ProtoError::from("answer without its question"))?;
    Ok(DecodedAnswer {
        name: query.name().to_string(),
        qtype: query.query_type().to_string(),
        records: message
            .answers
            .iter()
            .map(|record| format!("{} {} {}", record.ttl, record.record_type(), record.data))
            .collect(),
    })
}

/// Writes `name` into `wire` in lower-case wire format (the map keys' form), without the
/// allocations of `to_lowercase` and `to_bytes`.
pub fn lower_wire(name: &Name, wire: &mut Vec<u8>) {
    wire.clear();
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    wire.push(0);
}

/// Every answer the fast path should hold for `zones`: one per name and address type, for each
/// name we answer authoritatively. Names below a delegation (glue) get a referral, aliases a
/// CNAME and unavailable steered names SERVFAIL, all from the userspace server, so they have no
/// entry.
pub fn entries(zones: &Zones) -> Result<Vec<Entry>, ProtoError> {
    entries_of(zones, Names::All)
}

/// The entries of [`entries`] for steered names only: what a steering round changes.
pub fn steered_entries(zones: &Zones) -> Result<Vec<Entry>, ProtoError> {
    entries_of(zones, Names::Steered)
}

/// The entries of [`entries`] for names that are not steered: the same for every selection, so
/// that a load builds them once (with [`steered_entries`] of the zones as selected, they are
/// [`entries`]).
pub fn static_entries(zones: &Zones) -> Result<Vec<Entry>, ProtoError> {
    entries_of(zones, Names::Static)
}

/// Which names' entries to build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    All,
    Steered,
    Static,
}

fn entries_of(zones: &Zones, which: Names) -> Result<Vec<Entry>, ProtoError> {
    let mut entries = Vec::new();
    let mut buffers = Buffers::default();
    for zone in &zones.zones {
        // Most zones delegate nothing: then no name needs the walk up to the apex.
        let delegates = zone.cuts().next().is_some();
        // A steering round writes the steered names' entries and reads no other.
        let names: Box<dyn Iterator<Item = _>> = if which == Names::Steered {
            Box::new(zone.steered.iter())
        } else {
            entries.reserve(zone.names.len().saturating_sub(zone.steered.len()));
            Box::new(zone.iter())
        };
        for (owner, records) in names {
            if which == Names::Static && records.pool.is_some() {
                continue;
            }
            let delegated = delegates && zone.delegation(owner).is_some();
            name_entries(owner, records, delegated, &mut buffers, &mut entries)?;
        }
    }
    Ok(entries)
}

/// The fast-path entries a change of `names` alters, from the zone as it was (`before`) to
/// the zone as it is (`after`): those to write (new, or answering differently), and those to
/// remove.
pub fn changed_entries(
    before: &Zone,
    after: &Zone,
    names: &[Name],
) -> Result<(Vec<Entry>, Vec<Entry>), ProtoError> {
    let mut buffers = Buffers::default();
    let (mut old, mut new) = (Vec::new(), Vec::new());
    for name in names {
        for (zone, out) in [(before, &mut old), (after, &mut new)] {
            if let Some(records) = zone.records(name) {
                let delegated = zone.delegation(name).is_some();
                name_entries(name, records, delegated, &mut buffers, out)?;
            }
        }
    }
    let same_key = |a: &Entry, b: &Entry| a.name() == b.name() && a.qtype == b.qtype;
    let remove = old
        .iter()
        .filter(|entry| !new.iter().any(|now| same_key(entry, now)))
        .cloned()
        .collect();
    new.retain(|entry| !old.contains(entry));
    Ok((new, remove))
}

/// Scratch space for building entries.
#[derive(Default)]
struct Buffers {
    section: Vec<u8>,
    name: Vec<u8>,
}

/// The entries of one owner name (`delegated`: at or below a delegation): its A and AAAA
/// answers, built by [`answer_into`] as the userspace server writes them.
fn name_entries(
    owner: &Name,
    records: &NameRecords,
    delegated: bool,
    buffers: &mut Buffers,
    entries: &mut Vec<Entry>,
) -> Result<(), ProtoError> {
    // SERVFAIL comes from userspace: the XDP program only answers NOERROR.
    if records.unavailable || delegated {
        return Ok(());
    }
    let mut named = false;
    for rtype in [RecordType::A, RecordType::AAAA] {
        let Some(set) = records.sets.get(&u16::from(rtype)) else {
            continue;
        };
        if !named {
            lower_wire(owner, &mut buffers.name);
            named = true;
        }
        buffers.section.clear();
        answer_into(&mut buffers.section, set.ttl, &set.rdatas())?;
        entries.push(Entry::new(
            &buffers.name,
            rtype,
            set.len() as u16,
            &buffers.section,
            records.pool.is_some(),
        )?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_default_to_port_53_everywhere() {
        let wildcards = services(&[]);
        assert_eq!((wildcards.v4_len, wildcards.v6_len), (1, 1));
        assert_eq!(wildcards.v4[0].addr, 0);
        assert_eq!(wildcards.v6[0].addr, [0; 16]);
        assert_eq!(wildcards.v4[0].port, 53_u16.to_be());
        assert_eq!(wildcards.v6[0].port, 53_u16.to_be());
        let listen: Vec<SocketAddr> = vec![
            "192.0.2.1:5353".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        ];
        let table = services(&listen);
        assert_eq!((table.v4_len, table.v6_len), (1, 1));
        assert_eq!(table.v4[0].addr.to_ne_bytes(), [192, 0, 2, 1]);
        assert_eq!(table.v4[0].port, 5353_u16.to_be());
        assert_eq!(
            (table.v6[0].addr[0], table.v6[0].port),
            (0x20, 53_u16.to_be())
        );
    }

    #[test]
    fn key_is_lower_case_wire_name_with_type_in_network_order() {
        let key = name_key(
            &Name::from_ascii("WwW.Example.COM.").unwrap(),
            RecordType::A,
        )
        .unwrap();
        assert_eq!(&key.name[..17], b"\x03www\x07example\x03com\x00");
        assert!(key.name[17..].iter().all(|&byte| byte == 0));
        assert_eq!(key.qtype.to_ne_bytes(), [0, 1]);
    }

    #[test]
    fn decoded_answer_is_what_was_built() {
        let name = Name::from_ascii("WwW.Example.").unwrap();
        let rdatas = [
            RData::A("192.0.2.1".parse().unwrap()),
            RData::A("192.0.2.2".parse().unwrap()),
        ];
        let answer = answer_entry(300, &rdatas).unwrap();
        let key = name_key(&name, RecordType::A).unwrap();
        let decoded = decode_answer(
            &key.name,
            key.qtype,
            answer.ancount,
            &answer.data[..usize::from(answer.len)],
        )
        .unwrap();
        assert_eq!(decoded.name, "www.example.");
        assert_eq!(decoded.qtype, "A");
        assert_eq!(decoded.records, ["300 A 192.0.2.1", "300 A 192.0.2.2"]);
    }
}
