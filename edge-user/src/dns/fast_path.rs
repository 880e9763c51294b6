//! What the XDP program answers: one map entry per owner name and record type, keyed by the
//! lower-case wire name, holding the answer built by [`super::answer`].

use std::net::{IpAddr, SocketAddr};

use edge_common::{ANSWER_DATA_LEN, Answer, LongNameKey, NAME_KEY_LEN, ServiceKey};
use hickory_proto::{
    ProtoError,
    rr::{Name, RData, RecordType},
    serialize::binary::BinEncodable,
};

use super::answer::{AUTHORITATIVE_ANSWER, answer_section};
use crate::zone::Zones;

/// The DNS port, answered on every address when no service address is configured.
pub const DNS_PORT: u16 = 53;

/// The service map's keys for the configured listen addresses; without any, port 53 of every
/// IPv4 and IPv6 address (the wildcards).
pub fn services(listen: &[SocketAddr]) -> Vec<ServiceKey> {
    if listen.is_empty() {
        return vec![
            ServiceKey::new(4, [0; 16], DNS_PORT),
            ServiceKey::new(6, [0; 16], DNS_PORT),
        ];
    }
    listen
        .iter()
        .map(|socket| match socket.ip() {
            IpAddr::V4(ip) => {
                let mut addr = [0; 16];
                addr[..4].copy_from_slice(&ip.octets());
                ServiceKey::new(4, addr, socket.port())
            }
            IpAddr::V6(ip) => ServiceKey::new(6, ip.octets(), socket.port()),
        })
        .collect()
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
    if section.len() > ANSWER_DATA_LEN {
        return Err(ProtoError::from(format!(
            "answer of {} bytes exceeds the {ANSWER_DATA_LEN} the fast path holds",
            section.len()
        )));
    }
    let mut answer = Answer {
        flags: AUTHORITATIVE_ANSWER,
        ancount: rdatas.len() as u16,
        len: section.len() as u16,
        selection: 0,
        data: [0; ANSWER_DATA_LEN],
    };
    answer.data[..section.len()].copy_from_slice(&section);
    Ok(answer)
}

/// One answer of the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: LongNameKey,
    pub answer: Answer,
    /// A steered name's answer, which changes with each steering round.
    pub steered: bool,
}

/// Every answer the fast path should hold for `zones`: one per name and address type, for each
/// name we answer authoritatively. Names below a delegation (glue) get a referral, aliases a
/// CNAME and unavailable steered names SERVFAIL, all from the userspace server, so they have no
/// entry.
pub fn entries(zones: &Zones) -> Result<Vec<Entry>, ProtoError> {
    let mut entries = Vec::new();
    for zone in &zones.zones {
        for (name, records) in &zone.names {
            // SERVFAIL comes from userspace: the XDP program only answers NOERROR.
            if records.unavailable || zone.delegation(name).is_some() {
                continue;
            }
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = zone.rrset(name, rtype) {
                    entries.push(Entry {
                        key: name_key(name, rtype)?,
                        answer: answer_entry(set.ttl, &set.rdatas)?,
                        steered: records.pool.is_some(),
                    });
                }
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_default_to_port_53_everywhere() {
        let wildcards = services(&[]);
        assert_eq!(wildcards.len(), 2);
        assert!(
            wildcards
                .iter()
                .all(|key| key.addr == [0; 16] && key.port == 53_u16.to_be())
        );
        let listen: Vec<SocketAddr> = vec![
            "192.0.2.1:5353".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        ];
        let keys = services(&listen);
        assert_eq!(&keys[0].addr[..5], &[192, 0, 2, 1, 0]);
        assert_eq!((keys[0].family, keys[0].port), (4, 5353_u16.to_be()));
        assert_eq!((keys[1].family, keys[1].addr[0]), (6, 0x20));
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
}
