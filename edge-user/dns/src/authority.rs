//! What to answer: a lookup in our zones that returns the response code and the RRsets of each
//! section, and leaves the bytes to [`super::message`].

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RData, RecordType},
};

use crate::zone::{MAX_CNAME_CHAIN, RECORD_TYPES, RrSet, Zone, Zones};

/// The outcome of a lookup, section by section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub rcode: ResponseCode,
    /// The AA bit: we hold the data for the question's name (clear on referrals and refusals).
    pub authoritative: bool,
    /// The class of the answer records: IN, or CH for the server's identity.
    pub class: DNSClass,
    pub answers: Vec<RrSet>,
    pub authorities: Vec<RrSet>,
    pub additionals: Vec<RrSet>,
    /// An Extended DNS Error info code (RFC 8914) for the OPT record.
    pub extended_error: Option<u16>,
    /// The SOA expire timer of the zone that answered: the EDNS EXPIRE option's value
    /// (RFC 7314), which Knot sends when asked.
    pub expire: Option<u32>,
}

/// EDE 20, Not Authoritative: a name outside our zones (RFC 8914 §4.21).
pub const EDE_NOT_AUTHORITATIVE: u16 = 20;

impl Lookup {
    /// REFUSED, nothing else.
    pub fn refused() -> Self {
        Self::with(ResponseCode::Refused, false)
    }

    /// Not one of our names: we do not recurse, so we refuse, saying why as Knot does.
    pub fn not_authoritative() -> Self {
        Self {
            extended_error: Some(EDE_NOT_AUTHORITATIVE),
            ..Self::refused()
        }
    }

    pub fn with(rcode: ResponseCode, authoritative: bool) -> Self {
        Self {
            rcode,
            authoritative,
            class: DNSClass::IN,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            extended_error: None,
            expire: None,
        }
    }
}

/// Looks `qname` (absolute, lower-case) and `qtype` up in `zones`, following CNAME chains while
/// they stay inside the zone, as Knot does: a target in another zone, even one we serve, is
/// left to the resolver, and a chain stops where it would repeat a name (a loop).
pub fn lookup(zones: &Zones, qname: &Name, qtype: RecordType) -> Lookup {
    let Some(zone) = zones.find(qname) else {
        return Lookup::not_authoritative();
    };
    let mut lookup = Lookup::with(ResponseCode::NoError, true);
    lookup.expire = Some(zone.soa.expire as u32);
    let mut visited = vec![qname.clone()];
    for _ in 0..=MAX_CNAME_CHAIN {
        let name = visited.last().expect("not empty");
        let Some(target) = step(zone, name, qtype, &mut lookup) else {
            break;
        };
        let same_zone = zones
            .find(&target)
            .is_some_and(|next| next.apex == zone.apex);
        if !same_zone || visited.contains(&target) {
            break;
        }
        visited.push(target);
    }
    lookup
}

/// Answers `name` from `zone` into `lookup`; returns the CNAME target to follow, if any.
fn step(zone: &Zone, name: &Name, qtype: RecordType, lookup: &mut Lookup) -> Option<Name> {
    if let Some((cut, delegation)) = zone.delegation(name) {
        // The DS record at a cut belongs to the parent (RFC 4035 §3.1.4.1); we hold none.
        if !(cut == name && qtype == RecordType::DS) {
            if lookup.answers.is_empty() {
                lookup.authoritative = false;
            }
            let ns = zone
                .rrset(cut, RecordType::NS)
                .expect("a delegation has NS records");
            add_addresses(zone, delegation.ns.iter(), lookup);
            lookup.authorities.push(ns);
            return None;
        }
    }
    if !zone.has_name(name) {
        if !zone.is_empty_non_terminal(name) {
            lookup.rcode = ResponseCode::NXDomain;
        }
        negative(zone, lookup);
        return None;
    }
    if zone
        .names
        .get(name)
        .is_some_and(|records| records.unavailable)
    {
        // A steered name whose pool has no member to answer with (all-down policy SERVFAIL).
        lookup.rcode = ResponseCode::ServFail;
        lookup.authoritative = false;
        return None;
    }
    if let Some(alias) = zone.rrset(name, RecordType::CNAME) {
        let target = alias.rdatas.iter().find_map(|rdata| match rdata {
            RData::CNAME(target) => Some(target.0.clone()),
            _ => None,
        });
        lookup.answers.push(alias);
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return None;
        }
        return target;
    }
    let found = if qtype == RecordType::ANY {
        // RFC 8482: one RRset of the name's choosing is enough.
        RECORD_TYPES
            .iter()
            .find_map(|&rtype| zone.rrset(name, rtype))
    } else {
        zone.rrset(name, qtype)
    };
    match found {
        Some(set) => {
            let targets: Vec<Name> = set.rdatas.iter().filter_map(additional_target).collect();
            lookup.answers.push(set);
            add_addresses(zone, targets.iter(), lookup);
        }
        None => negative(zone, lookup),
    }
    None
}

/// The name whose addresses help a resolver use `rdata` (RFC 1035 §3.3: NS and MX).
fn additional_target(rdata: &RData) -> Option<Name> {
    match rdata {
        RData::NS(ns) => Some(ns.0.clone()),
        RData::MX(mx) => Some(mx.exchange.clone()),
        _ => None,
    }
}

/// The zone's SOA in the authority section: NXDOMAIN and NODATA (RFC 2308 §2).
fn negative(zone: &Zone, lookup: &mut Lookup) {
    let mut soa = zone
        .rrset(&zone.apex, RecordType::SOA)
        .expect("every zone has an SOA");
    soa.ttl = zone.negative_ttl();
    lookup.authorities.push(soa);
}

/// The A then AAAA records `zone` holds for each of `targets`, once each: glue for name servers
/// and addresses for mail exchanges.
fn add_addresses<'a>(zone: &Zone, targets: impl Iterator<Item = &'a Name>, lookup: &mut Lookup) {
    for target in targets {
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some(set) = zone.rrset(target, rtype)
                && !lookup.additionals.contains(&set)
            {
                lookup.additionals.push(set);
            }
        }
    }
}
