//! What to answer: a lookup in our zones that returns the response code and the RRsets of each
//! section, and leaves the bytes to [`super::message`].

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RecordType},
};

use crate::zone::{MAX_CNAME_CHAIN, RrSet, Zone, Zones, additional_target};

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
    for hop in 0..=MAX_CNAME_CHAIN {
        let name = visited.last().expect("not empty");
        let Some(target) = step(zone, name, qtype, hop == MAX_CNAME_CHAIN, &mut lookup) else {
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

/// Answers `name` from `zone` into `lookup`; returns the CNAME target to follow, if any. At the
/// `last` step of a chain, a CNAME is not added.
fn step(
    zone: &Zone,
    name: &Name,
    qtype: RecordType,
    last: bool,
    lookup: &mut Lookup,
) -> Option<Name> {
    if let Some((cut, delegation)) = zone.delegation(name) {
        // The DS record at a cut belongs to the parent (RFC 4035 §3.1.4.1); we hold none.
        if !(cut == name && qtype == RecordType::DS) {
            if lookup.answers.is_empty() {
                lookup.authoritative = false;
            }
            let ns = delegation
                .rrset(cut, RecordType::NS)
                .expect("a delegation has NS records");
            let targets: Vec<Name> = ns.rdatas.iter().filter_map(additional_target).collect();
            add_addresses(zone, &targets, lookup);
            lookup.authorities.push(ns);
            return None;
        }
    }
    // The name's own records, else those a wildcard gives it (RFC 4592), owned by the name.
    let records = match zone.records(name) {
        Some(records) => records,
        None if zone.is_empty_non_terminal(name) => {
            negative(zone, lookup);
            return None;
        }
        None => match zone.wildcard(name) {
            Some(records) => records,
            None => {
                lookup.rcode = ResponseCode::NXDomain;
                negative(zone, lookup);
                return None;
            }
        },
    };
    if records.unavailable {
        // A steered name whose pool has no member to answer with (all-down policy SERVFAIL).
        lookup.rcode = ResponseCode::ServFail;
        lookup.authoritative = false;
        return None;
    }
    if let Some(alias) = records.rrset(name, RecordType::CNAME) {
        if last {
            return None;
        }
        let target = records.cname().map(Name::to_lowercase);
        lookup.answers.push(alias);
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return None;
        }
        return target;
    }
    let found = if qtype == RecordType::ANY {
        // RFC 8482: one RRset of the name's choosing is enough.
        records.any(name)
    } else {
        records.rrset(name, qtype)
    };
    match found {
        Some(set) => {
            let targets: Vec<Name> = set.rdatas.iter().filter_map(additional_target).collect();
            lookup.answers.push(set);
            add_addresses(zone, &targets, lookup);
        }
        None => negative(zone, lookup),
    }
    None
}

/// The zone's SOA in the authority section: NXDOMAIN and NODATA (RFC 2308 §2).
fn negative(zone: &Zone, lookup: &mut Lookup) {
    let mut soa = zone
        .rrset(&zone.apex, RecordType::SOA)
        .expect("every zone has an SOA");
    soa.ttl = zone.negative_ttl();
    lookup.authorities.push(soa);
}

/// The A then AAAA records `zone` holds for each of `targets`, once each: glue for name servers,
/// addresses for mail exchanges and services.
fn add_addresses(zone: &Zone, targets: &[Name], lookup: &mut Lookup) {
    for target in targets {
        let target = target.to_lowercase();
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some(set) = zone.rrset(&target, rtype)
                && !lookup.additionals.contains(&set)
            {
                lookup.additionals.push(set);
            }
        }
    }
}
