//! How the server names itself: CHAOS TXT `id.server`, `hostname.bind`, `version.bind` and
//! `version.server`, and the EDNS NSID option (RFC 5001), answered as Knot DNS answers them. In
//! a network of PoPs this is how an operator learns which PoP answered.

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RData, RecordType, rdata::TXT},
};

use crate::{authority::Lookup, zone::RrSet};

/// Longest identity or version: one TXT character-string.
pub const MAX_LEN: usize = 255;

/// The identity and version the server gives; `None` answers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Answered for `id.server`, `hostname.bind` and NSID.
    pub identity: Option<String>,
    /// Answered for `version.bind` and `version.server`.
    pub version: Option<String>,
}

impl Identity {
    /// From `[dns] identity` and `version`: unset is the host name and edge's version, an
    /// empty string hides it.
    pub fn new(identity: Option<&str>, version: Option<&str>) -> Self {
        let given = |text: &str| (!text.is_empty()).then(|| text.to_string());
        Self {
            identity: identity.map_or_else(host_name, given),
            version: version.map_or_else(
                || Some(format!("edge {}", env!("CARGO_PKG_VERSION"))),
                given,
            ),
        }
    }

    /// The NSID option's data, if we give one.
    pub fn nsid(&self) -> Option<&[u8]> {
        self.identity.as_deref().map(str::as_bytes)
    }

    /// The answer to a CHAOS-class question (`qname` lower-case): a TXT record with TTL 0 and
    /// AA clear, as Knot sends; REFUSED for any other name or type, or a hidden value.
    pub fn chaos(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let text = match qname.to_ascii().as_str() {
            "id.server." | "hostname.bind." => self.identity.as_deref(),
            "version.bind." | "version.server." => self.version.as_deref(),
            _ => None,
        };
        match text {
            Some(text) if qtype == RecordType::TXT => Lookup {
                rcode: ResponseCode::NoError,
                authoritative: false,
                class: DNSClass::CH,
                answers: vec![RrSet {
                    name: qname.clone(),
                    ttl: 0,
                    rdatas: vec![RData::TXT(TXT::new(vec![text.to_string()]))],
                }],
                ..Lookup::refused()
            },
            _ => Lookup::refused(),
        }
    }
}

/// The kernel's host name (`uname -n`), as Knot's default identity; none if unreadable.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_the_host_name_and_our_version_and_empty_hides() {
        let identity = Identity::new(None, None);
        assert!(identity.identity.is_some());
        assert_eq!(
            identity.version.as_deref(),
            Some(concat!("edge ", env!("CARGO_PKG_VERSION")))
        );
        let hidden = Identity::new(Some(""), Some(""));
        assert_eq!((hidden.identity, hidden.version), (None, None));
        let name = |text| Name::from_ascii(text).unwrap();
        let set = Identity::new(Some("pop-1"), Some(""));
        assert_eq!(set.nsid(), Some(&b"pop-1"[..]));
        let answer = set.chaos(&name("hostname.bind."), RecordType::TXT);
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert_eq!(answer.class, DNSClass::CH);
        for (qname, qtype) in [
            ("version.bind.", RecordType::TXT),
            ("id.server.", RecordType::A),
            ("x.id.server.", RecordType::TXT),
        ] {
            assert_eq!(
                set.chaos(&name(qname), qtype).rcode,
                ResponseCode::Refused,
                "{qname}"
            );
        }
    }
}
