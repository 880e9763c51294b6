//! Dynamic updates (RFC 2136), applied as Knot DNS applies them: the prerequisites are checked
//! against the zone as it is (§3.2), then the update section is applied in order to the names
//! it touches (§3.4), with Knot's rules where the RFC leaves room (an addition to an alias, or
//! an alias to a name with data, is ignored; the apex keeps its SOA and last NS; an SOA whose
//! serial is not above the zone's is ignored). An update that changes anything takes the SOA
//! serial it set, or the zone's plus one (Knot's default `serial-policy: increment`).
//!
//! What edge cannot serve is refused (REFUSED), where Knot would store it: a steered name (its
//! addresses belong to the steering loop), DNAME, data below a delegation other than glue, an
//! address set larger than the fast path answers.
//!
//! The result is an [`Update`]: the zone as changed, the [`Change`] to journal and replay, and
//! the fast path's entries to write and remove, built by [`fast_path`] from the same zone.

use std::collections::BTreeMap;

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{DNSClass, Name, RData, Record, RecordData as _, RecordType, rdata::SOA},
    serialize::binary::{BinEncodable as _, BinEncoder, NameEncoding},
};

use crate::{
    fast_path::{self, Entry},
    zone::{NameRecords, Zone, Zones, check_ttl},
    zone_file,
};

/// What an update changed in one zone: each changed name with everything it holds now
/// (`None`: nothing), the apex (with the new SOA) among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub apex: Name,
    pub names: Vec<(Name, Option<NameRecords>)>,
}

/// An update ready to apply: the zone as it will be, and what changes on the way.
#[derive(Debug, Clone)]
pub struct Update {
    pub zone: Zone,
    pub change: Change,
    /// Fast-path entries that are new or answer differently.
    pub write: Vec<Entry>,
    /// Fast-path entries that no longer answer.
    pub remove: Vec<Entry>,
}

/// Why an update was not applied: the response code, and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rcode: ResponseCode,
    pub reason: String,
}

fn refuse<T>(rcode: ResponseCode, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        rcode,
        reason: reason.into(),
    })
}

const TYPE_DNAME: u16 = 39;

/// Meta types: never data (Knot's `knot_rrtype_is_metatype`: SIG, OPT, TKEY, TSIG, IXFR,
/// AXFR, ANY).
fn is_meta(rtype: RecordType) -> bool {
    matches!(u16::from(rtype), 24 | 41 | 249 | 250 | 251 | 252 | 255)
}

impl Zone {
    /// Applies `change`, a change of this zone: each name's records replace what it held.
    /// Only the map of updated names is copied.
    pub fn apply(&mut self, change: &Change) {
        let updated = std::sync::Arc::make_mut(&mut self.updated);
        for (name, now) in &change.names {
            // Back to what it was built with: no longer an update.
            if self.names.get(name) == now.as_ref() {
                updated.remove(name);
            } else {
                updated.insert(name.clone(), now.clone());
            }
        }
        let soa = self
            .stored(&self.apex)
            .and_then(|apex| apex.sets.get(&u16::from(RecordType::SOA)))
            .and_then(|set| match set.rdatas().first() {
                Some(RData::SOA(data)) => Some((data.clone(), set.ttl)),
                _ => None,
            });
        if let Some((soa, ttl)) = soa {
            self.soa = soa;
            self.soa_ttl = ttl;
        }
    }
}

/// Applies the update `message` (authenticated, its zone section naming `apex`) to `zones`:
/// `Ok(None)` when it changes nothing.
pub fn prepare(zones: &Zones, apex: &Name, message: &Message) -> Result<Option<Update>, Refusal> {
    let Some(zone) = zones.zones.iter().find(|zone| zone.apex == *apex) else {
        return refuse(ResponseCode::NotAuth, format!("no zone {apex}"));
    };
    for record in &message.authorities {
        check_update(zones, zone, record)?;
    }
    check_prerequisites(zones, zone, &message.answers)?;

    let mut work = Work {
        zone,
        touched: BTreeMap::new(),
    };
    let serial = zone.soa.serial;
    for record in &message.authorities {
        work.apply(record, serial)?;
    }
    let mut changed: Vec<(Name, Option<NameRecords>)> = work
        .touched
        .into_iter()
        .filter(|(name, now)| {
            zone.stored(name) != Some(now) && !(now.sets.is_empty() && zone.stored(name).is_none())
        })
        .map(|(name, now)| {
            let now = (!now.sets.is_empty()).then_some(now);
            (name, now)
        })
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }
    bump_serial(zone, &mut changed);
    let change = Change {
        apex: apex.clone(),
        names: changed,
    };
    let mut updated = zone.clone();
    updated.apply(&change);
    check_servable(zone, &updated, &change)?;
    let (write, remove) =
        fast_path::changed_entries(zone, &updated, &affected(zone, &updated, &change)).or_else(
            |error| {
                refuse(
                    ResponseCode::Refused,
                    format!("the fast path cannot answer it: {error}"),
                )
            },
        )?;
    Ok(Some(Update {
        zone: updated,
        change,
        write,
        remove,
    }))
}

/// RFC 2136 §3.4.1, as Knot checks it: owners inside the zone (and not inside a child zone we
/// also serve), and each class with the data and types it allows.
fn check_update(zones: &Zones, zone: &Zone, record: &Record) -> Result<(), Refusal> {
    let owner = record.name.to_lowercase();
    if !in_zone(zones, zone, &owner) {
        return refuse(
            ResponseCode::NotZone,
            format!("{owner} is not in zone {}", zone.apex),
        );
    }
    let rtype = record.record_type();
    let malformed =
        |reason: &str| refuse(ResponseCode::FormErr, format!("{owner} {rtype}: {reason}"));
    match record.dns_class {
        DNSClass::IN if is_meta(rtype) => malformed("a meta type cannot be added"),
        DNSClass::ANY
            if !record.data.is_update() || (is_meta(rtype) && rtype != RecordType::ANY) =>
        {
            malformed("a deletion of an RRset has no data")
        }
        DNSClass::NONE if record.ttl != 0 || is_meta(rtype) => {
            malformed("a deletion of a record has TTL 0 and a data type")
        }
        DNSClass::IN | DNSClass::ANY | DNSClass::NONE => Ok(()),
        class => malformed(&format!("class {class}")),
    }
}

/// Whether `owner` is in `zone` and not in a child zone we also serve (RFC 2136 §3.1.1: NOTZONE
/// otherwise).
fn in_zone(zones: &Zones, zone: &Zone, owner: &Name) -> bool {
    zones
        .find(owner)
        .is_some_and(|found| found.apex == zone.apex)
}

/// RFC 2136 §3.2: every prerequisite must hold (§2.4: name or RRset in use or not, an RRset
/// with exactly these records).
fn check_prerequisites(
    zones: &Zones,
    zone: &Zone,
    prerequisites: &[Record],
) -> Result<(), Refusal> {
    // Value-dependent prerequisites, merged into RRsets and compared once all are read.
    let mut exact: BTreeMap<(Name, u16), Vec<Vec<u8>>> = BTreeMap::new();
    for record in prerequisites {
        let owner = record.name.to_lowercase();
        let rtype = record.record_type();
        let formerr = |reason: &str| {
            refuse(
                ResponseCode::FormErr,
                format!("prerequisite {owner} {rtype}: {reason}"),
            )
        };
        if record.ttl != 0 {
            return formerr("TTL must be 0");
        }
        if !in_zone(zones, zone, &owner) {
            return refuse(
                ResponseCode::NotZone,
                format!("prerequisite {owner} is not in zone {}", zone.apex),
            );
        }
        let node = zone.stored(&owner);
        let in_use = node.is_some_and(|records| !records.sets.is_empty());
        let has_type = node.is_some_and(|records| records.has(rtype));
        let failed =
            |rcode, what: &str| refuse(rcode, format!("prerequisite failed: {owner} {what}"));
        match record.dns_class {
            DNSClass::ANY | DNSClass::NONE if !record.data.is_update() => {
                return formerr("has data");
            }
            DNSClass::ANY if rtype == RecordType::ANY => {
                if !in_use {
                    return failed(ResponseCode::NXDomain, "is not in use");
                }
            }
            DNSClass::ANY => {
                if !has_type {
                    return failed(ResponseCode::NXRRSet, &format!("has no {rtype} RRset"));
                }
            }
            DNSClass::NONE if rtype == RecordType::ANY => {
                if in_use {
                    return failed(ResponseCode::YXDomain, "is in use");
                }
            }
            DNSClass::NONE => {
                if has_type {
                    return failed(ResponseCode::YXRRSet, &format!("has a {rtype} RRset"));
                }
            }
            DNSClass::IN => {
                let Ok(wire) = wire(&record.data) else {
                    return formerr("unreadable data");
                };
                let set = exact.entry((owner, u16::from(rtype))).or_default();
                if !set.contains(&wire) {
                    set.push(wire);
                }
            }
            class => return formerr(&format!("class {class}")),
        }
    }
    for ((owner, rtype), mut wanted) in exact {
        let mut held: Vec<Vec<u8>> = zone
            .stored(&owner)
            .and_then(|records| records.sets.get(&rtype))
            .map(|set| {
                set.rdatas()
                    .iter()
                    .filter_map(|rdata| wire(rdata).ok())
                    .collect()
            })
            .unwrap_or_default();
        held.sort();
        wanted.sort();
        if held != wanted {
            return refuse(
                ResponseCode::NXRRSet,
                format!(
                    "prerequisite failed: {owner} {} is not the RRset given",
                    RecordType::from(rtype)
                ),
            );
        }
    }
    Ok(())
}

/// The names an update touches, with what they hold as it goes.
struct Work<'z> {
    zone: &'z Zone,
    touched: BTreeMap<Name, NameRecords>,
}

impl Work<'_> {
    fn node(&mut self, owner: &Name) -> &mut NameRecords {
        let zone = self.zone;
        self.touched
            .entry(owner.clone())
            .or_insert_with(|| zone.stored(owner).cloned().unwrap_or_default())
    }

    /// One record of the update section (§3.4.2), with `serial` the zone's before the update.
    fn apply(&mut self, record: &Record, serial: u32) -> Result<(), Refusal> {
        let owner = record.name.to_lowercase();
        let rtype = record.record_type();
        if self
            .zone
            .stored(&owner)
            .is_some_and(|records| records.pool.is_some())
        {
            return refuse(
                ResponseCode::Refused,
                format!(
                    "{owner} is steered: its answers belong to the steering loop (change its pool in the config)"
                ),
            );
        }
        let apex = owner == self.zone.apex;
        if rtype == RecordType::SOA {
            // Deletions of the SOA, and additions that do not raise the serial, are ignored.
            let raises = match &record.data {
                RData::SOA(soa) => serial_greater(soa.serial, serial),
                _ => false,
            };
            if record.dns_class != DNSClass::IN || !raises || !apex {
                return Ok(());
            }
        }
        match record.dns_class {
            DNSClass::IN => self.add(&owner, record),
            DNSClass::NONE => {
                let Ok(target) = wire(&record.data) else {
                    return Ok(());
                };
                let node = self.node(&owner);
                let code = u16::from(rtype);
                let Some(set) = node.sets.get(&code) else {
                    return Ok(());
                };
                // The apex keeps its last NS record.
                if apex && rtype == RecordType::NS && set.len() == 1 {
                    return Ok(());
                }
                let mut set = set.clone();
                set.retain(|rdata| wire(rdata).ok().as_ref() != Some(&target));
                if set.is_empty() {
                    node.sets.remove(&code);
                } else {
                    node.sets.insert(code, set);
                }
                Ok(())
            }
            _ => {
                let node = self.node(&owner);
                let types: Vec<u16> = if rtype == RecordType::ANY {
                    node.sets.keys().copied().collect()
                } else {
                    vec![u16::from(rtype)]
                };
                for code in types {
                    // The apex keeps its SOA and NS RRsets.
                    let kept = [RecordType::SOA, RecordType::NS].contains(&RecordType::from(code));
                    if !(apex && kept) {
                        node.sets.remove(&code);
                    }
                }
                Ok(())
            }
        }
    }

    fn add(&mut self, owner: &Name, record: &Record) -> Result<(), Refusal> {
        let rtype = record.record_type();
        if u16::from(rtype) == TYPE_DNAME {
            return refuse(
                ResponseCode::Refused,
                format!("{owner}: DNAME is not served"),
            );
        }
        check_ttl(record.ttl).or_else(|reason| {
            refuse(
                ResponseCode::FormErr,
                format!("{owner} {rtype}: TTL {reason}"),
            )
        })?;
        let bytes = wire(&record.data)
            .or_else(|error| refuse(ResponseCode::FormErr, format!("{owner} {rtype}: {error}")))?;
        let rdata = zone_file::rdata(rtype, bytes.clone()).or_else(|reason| {
            refuse(ResponseCode::Refused, format!("{owner} {rtype}: {reason}"))
        })?;
        let node = self.node(owner);
        let code = u16::from(rtype);
        let holds = |node: &NameRecords| {
            node.sets.get(&code).is_some_and(|set| {
                set.rdatas()
                    .iter()
                    .any(|held| wire(held).ok().as_ref() == Some(&bytes))
            })
        };
        match rtype {
            RecordType::CNAME => {
                if let Some(alias) = node.sets.get(&code) {
                    // The same alias again: nothing to do; another: it replaces the alias.
                    if alias.ttl == record.ttl && holds(node) {
                        return Ok(());
                    }
                    node.sets.remove(&code);
                } else if !node.sets.is_empty() {
                    // A name with data cannot become an alias: ignored.
                    return Ok(());
                }
                node.add(record.ttl, rdata);
            }
            RecordType::SOA => {
                node.sets.remove(&code);
                node.add(record.ttl, rdata);
            }
            _ => {
                // Nothing is added to an alias, nor a record it holds already.
                if node.has(RecordType::CNAME) || holds(node) {
                    return Ok(());
                }
                node.add(record.ttl, rdata);
            }
        }
        Ok(())
    }
}

/// RFC 1982: whether serial `a` is after `b`.
fn serial_greater(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// The apex's SOA after a change: the serial the update set, else the zone's plus one.
fn bump_serial(zone: &Zone, changed: &mut Vec<(Name, Option<NameRecords>)>) {
    let position = match changed.iter().position(|(name, _)| *name == zone.apex) {
        Some(position) => position,
        None => {
            changed.push((zone.apex.clone(), zone.stored(&zone.apex).cloned()));
            changed.len() - 1
        }
    };
    let Some(apex) = &mut changed[position].1 else {
        return;
    };
    let code = u16::from(RecordType::SOA);
    let Some(set) = apex.sets.get(&code) else {
        return;
    };
    let Some(RData::SOA(soa)) = set.rdatas().first().cloned() else {
        return;
    };
    if soa.serial != zone.soa.serial {
        return;
    }
    let ttl = set.ttl;
    let bumped = SOA::new(
        soa.mname.clone(),
        soa.rname.clone(),
        soa.serial.wrapping_add(1),
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum,
    );
    apex.sets.remove(&code);
    apex.add(ttl, RData::SOA(bumped));
}

/// What a zone may hold that edge can answer: below a delegation only glue (A, AAAA), as the
/// config requires; checked for each changed name and, under a new delegation, its descendants.
fn check_servable(before: &Zone, after: &Zone, change: &Change) -> Result<(), Refusal> {
    let glue_only = |records: &NameRecords| {
        records.pool.is_none()
            && records.sets.keys().all(|&rtype| {
                rtype == u16::from(RecordType::A) || rtype == u16::from(RecordType::AAAA)
            })
    };
    for (name, now) in &change.names {
        let Some(now) = now else { continue };
        if let Some((cut, _)) = after.delegation(name).filter(|(cut, _)| *cut != name)
            && !glue_only(now)
        {
            return refuse(
                ResponseCode::Refused,
                format!(
                    "{name} is below the delegation at {cut}: only glue (A, AAAA) is served there"
                ),
            );
        }
        let delegates = *name != after.apex && now.has(RecordType::NS);
        let delegated = before
            .stored(name)
            .is_some_and(|old| old.has(RecordType::NS));
        if delegates
            && !delegated
            && let Some((below, _)) = after
                .stored_after(name)
                .take_while(|(below, _)| name.zone_of(below))
                .find(|(_, records)| !glue_only(records))
        {
            return refuse(
                ResponseCode::Refused,
                format!(
                    "{below} would be below the delegation at {name}: only glue (A, AAAA) is served there"
                ),
            );
        }
    }
    Ok(())
}

/// The names whose fast-path entries a change may alter: the changed names, and every name
/// below one that became or stopped being a delegation.
fn affected(before: &Zone, after: &Zone, change: &Change) -> Vec<Name> {
    let mut names: Vec<Name> = change.names.iter().map(|(name, _)| name.clone()).collect();
    for (name, _) in &change.names {
        let cut = |zone: &Zone| {
            *name != zone.apex
                && zone
                    .stored(name)
                    .is_some_and(|records| records.has(RecordType::NS))
        };
        if cut(before) != cut(after) {
            for zone in [before, after] {
                names.extend(
                    zone.stored_after(name)
                        .take_while(|(below, _)| name.zone_of(below))
                        .map(|(below, _)| below.clone()),
                );
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Record data as sent: names uncompressed and in their case, for comparisons and for reading
/// as a zone file reads it.
pub(crate) fn wire(rdata: &RData) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    rdata.emit(&mut encoder)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::Path};

    use edge_config::Config;
    use hickory_proto::{
        op::{MessageType, OpCode, Query},
        rr::rdata::{A, CNAME, NS, TXT},
    };

    use super::*;
    use crate::authority::lookup;

    const ZONES: &str = r#"
[xdp]
interface = "eth0"
[[pools]]
name = "shop"
kind = "origin"
[[pools.members]]
name = "o1"
address = "192.0.2.101"
[[zones]]
apex = "example.com"
[zones.soa]
serial = 10
[[zones.nameservers]]
name = "ns1"
addresses = ["192.0.2.53"]
[[zones.nameservers]]
name = "ns2.example.net."
[[zones.names]]
name = "www"
a = ["192.0.2.10", "192.0.2.11"]
[[zones.names]]
name = "alias"
cname = "www"
[[zones.names]]
name = "txt.deep"
txt = ["hello"]
[[zones.names]]
name = "sub"
ns = ["ns.sub"]
[[zones.names]]
name = "ns.sub"
a = ["192.0.2.54"]
[[zones.names]]
name = "shop"
pool = "shop"
[[zones]]
apex = "child.example.com"
"#;

    fn zones() -> Zones {
        let path = Path::new("edge.toml");
        Zones::build(path, &Config::parse(path, ZONES).unwrap()).unwrap()
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn a(last: u8) -> RData {
        RData::A(A(Ipv4Addr::new(192, 0, 2, last)))
    }

    fn add(owner: &str, ttl: u32, rdata: RData) -> Record {
        Record::from_rdata(name(owner), ttl, rdata)
    }

    /// A record of class `class` without data ("RRset exists", "delete RRset"…).
    fn empty(owner: &str, rtype: RecordType, class: DNSClass) -> Record {
        let mut record = Record::update0(name(owner), 0, rtype);
        record.dns_class = class;
        record
    }

    fn delete_rr(owner: &str, rdata: RData) -> Record {
        let mut record = Record::from_rdata(name(owner), 0, rdata);
        record.dns_class = DNSClass::NONE;
        record
    }

    /// An UPDATE of `zone`, sent and read back as the server reads it.
    fn update(zone: &str, prerequisites: Vec<Record>, changes: Vec<Record>) -> Message {
        let mut message = Message::new(7, MessageType::Query, OpCode::Update);
        message.add_query(Query::query(name(zone), RecordType::SOA));
        for record in prerequisites {
            message.add_answer(record);
        }
        for record in changes {
            message.add_authority(record);
        }
        Message::from_vec(&message.to_vec().unwrap()).unwrap()
    }

    fn apply(
        zones: &Zones,
        prerequisites: Vec<Record>,
        changes: Vec<Record>,
    ) -> Result<Option<Update>, Refusal> {
        prepare(
            zones,
            &name("example.com."),
            &update("example.com.", prerequisites, changes),
        )
    }

    fn applied(zones: &mut Zones, changes: Vec<Record>) -> Update {
        let update = apply(zones, vec![], changes).unwrap().expect("a change");
        zones.zones[0] = update.zone.clone();
        update
    }

    fn answers(zones: &Zones, owner: &str, rtype: RecordType) -> (ResponseCode, Vec<String>) {
        let found = lookup(zones, &name(owner), rtype);
        let records = found
            .answers
            .iter()
            .flat_map(|set| {
                set.rdatas
                    .iter()
                    .map(move |rdata| format!("{} {rdata}", set.ttl))
            })
            .collect();
        (found.rcode, records)
    }

    #[test]
    fn an_added_name_answers_and_the_serial_goes_up() {
        let mut zones = zones();
        let update = applied(&mut zones, vec![add("new.example.com.", 60, a(1))]);
        assert_eq!(
            answers(&zones, "new.example.com.", RecordType::A),
            (ResponseCode::NoError, vec!["60 192.0.2.1".into()])
        );
        assert_eq!(zones.zones[0].soa.serial, 11);
        assert_eq!(
            answers(&zones, "example.com.", RecordType::SOA).1[0]
                .split(' ')
                .nth(3),
            Some("11")
        );
        // One fast-path entry to write, the new name's A; nothing to remove.
        assert_eq!(update.write.len(), 1);
        assert_eq!(update.write[0].name(), b"\x03new\x07example\x03com\x00");
        assert!(update.remove.is_empty());
        // The names as built are untouched: only the updated map changed.
        assert!(!zones.zones[0].names.contains_key(&name("new.example.com.")));
        // The same record again changes nothing, and the serial stays.
        assert!(
            apply(&zones, vec![], vec![add("new.example.com.", 60, a(1))])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn deletions_of_records_rrsets_and_names() {
        let mut zones = zones();
        let update = applied(&mut zones, vec![delete_rr("www.example.com.", a(10))]);
        assert_eq!(
            answers(&zones, "www.example.com.", RecordType::A).1,
            ["300 192.0.2.11"]
        );
        assert_eq!(update.write.len(), 1);
        applied(
            &mut zones,
            vec![empty("www.example.com.", RecordType::A, DNSClass::ANY)],
        );
        let update = apply(
            &zones,
            vec![],
            vec![empty(
                "txt.deep.example.com.",
                RecordType::ANY,
                DNSClass::ANY,
            )],
        )
        .unwrap()
        .unwrap();
        zones.zones[0] = update.zone;
        assert_eq!(
            answers(&zones, "txt.deep.example.com.", RecordType::TXT).0,
            ResponseCode::NXDomain
        );
        // deep.example.com no longer has descendants: NXDOMAIN, not an empty non-terminal.
        assert_eq!(
            answers(&zones, "deep.example.com.", RecordType::TXT).0,
            ResponseCode::NXDomain
        );
        // The apex keeps its SOA and last NS; its other records go.
        applied(
            &mut zones,
            vec![delete_rr(
                "example.com.",
                RData::NS(NS(name("ns2.example.net."))),
            )],
        );
        let kept = apply(
            &zones,
            vec![],
            vec![
                delete_rr("example.com.", RData::NS(NS(name("ns1.example.com.")))),
                empty("example.com.", RecordType::ANY, DNSClass::ANY),
            ],
        );
        assert!(kept.unwrap().is_none());
        assert_eq!(
            answers(&zones, "example.com.", RecordType::NS).1,
            ["300 ns1.example.com."]
        );
    }

    #[test]
    fn prerequisites_are_checked_as_knot_checks_them() {
        let zones = zones();
        let change = || vec![add("x.example.com.", 60, a(1))];
        let cases: Vec<(Record, Option<ResponseCode>)> = vec![
            (
                empty("www.example.com.", RecordType::ANY, DNSClass::ANY),
                None,
            ),
            (
                empty("nope.example.com.", RecordType::ANY, DNSClass::ANY),
                Some(ResponseCode::NXDomain),
            ),
            (
                empty("www.example.com.", RecordType::A, DNSClass::ANY),
                None,
            ),
            (
                empty("www.example.com.", RecordType::TXT, DNSClass::ANY),
                Some(ResponseCode::NXRRSet),
            ),
            (
                empty("nope.example.com.", RecordType::ANY, DNSClass::NONE),
                None,
            ),
            (
                empty("www.example.com.", RecordType::ANY, DNSClass::NONE),
                Some(ResponseCode::YXDomain),
            ),
            (
                empty("www.example.com.", RecordType::A, DNSClass::NONE),
                Some(ResponseCode::YXRRSet),
            ),
            (
                add("www.example.com.", 0, a(10)),
                Some(ResponseCode::NXRRSet),
            ),
            (
                add("www.example.com.", 5, a(10)),
                Some(ResponseCode::FormErr),
            ),
            (
                empty("www.example.org.", RecordType::ANY, DNSClass::ANY),
                Some(ResponseCode::NotZone),
            ),
        ];
        for (prerequisite, expected) in cases {
            let outcome = apply(&zones, vec![prerequisite.clone()], change());
            assert_eq!(
                outcome.as_ref().err().map(|refusal| refusal.rcode),
                expected,
                "{prerequisite}: {outcome:?}"
            );
        }
        // The exact RRset, in any order: both records.
        let both = vec![
            add("www.example.com.", 0, a(11)),
            add("www.example.com.", 0, a(10)),
        ];
        assert!(apply(&zones, both, change()).unwrap().is_some());
    }

    #[test]
    fn what_edge_cannot_serve_is_refused() {
        let zones = zones();
        let refused = |changes: Vec<Record>| apply(&zones, vec![], changes).unwrap_err();
        let steered = refused(vec![add("shop.example.com.", 60, a(1))]);
        assert_eq!(steered.rcode, ResponseCode::Refused);
        assert!(steered.reason.contains("steered"), "{steered:?}");
        let below = refused(vec![add(
            "x.sub.example.com.",
            60,
            RData::TXT(TXT::new(vec!["t".into()])),
        )]);
        assert_eq!(below.rcode, ResponseCode::Refused);
        assert!(below.reason.contains("below the delegation"), "{below:?}");
        // A new delegation over a name with data.
        let over = refused(vec![add(
            "deep.example.com.",
            60,
            RData::NS(NS(name("ns.example.net."))),
        )]);
        assert!(over.reason.contains("would be below"), "{over:?}");
        assert_eq!(
            refused(vec![add("a.child.example.com.", 60, a(1))]).rcode,
            ResponseCode::NotZone
        );
        assert_eq!(
            refused(vec![add("a.example.org.", 60, a(1))]).rcode,
            ResponseCode::NotZone
        );
        let mut any = Record::update0(name("a.example.com."), 60, RecordType::ANY);
        any.dns_class = DNSClass::IN;
        assert_eq!(refused(vec![any]).rcode, ResponseCode::FormErr);
    }

    #[test]
    fn aliases_and_the_soa_follow_knot() {
        let mut zones = zones();
        // An alias is not added to a name with data, nor data to an alias.
        assert!(
            apply(
                &zones,
                vec![],
                vec![add(
                    "www.example.com.",
                    60,
                    RData::CNAME(CNAME(name("x.example.com.")))
                )]
            )
            .unwrap()
            .is_none()
        );
        assert!(
            apply(&zones, vec![], vec![add("alias.example.com.", 60, a(1))])
                .unwrap()
                .is_none()
        );
        // Another alias replaces it.
        applied(
            &mut zones,
            vec![add(
                "alias.example.com.",
                60,
                RData::CNAME(CNAME(name("other.example.com."))),
            )],
        );
        assert_eq!(
            answers(&zones, "alias.example.com.", RecordType::CNAME).1,
            ["60 other.example.com."]
        );
        // An SOA with a higher serial is taken; a lower one is ignored and the serial goes up.
        let base = zones.zones[0].soa.clone();
        let soa = |serial| {
            let mut soa = base.clone();
            soa.serial = serial;
            RData::SOA(soa)
        };
        let serial = zones.zones[0].soa.serial;
        applied(&mut zones, vec![add("example.com.", 300, soa(100))]);
        assert_eq!(zones.zones[0].soa.serial, 100);
        applied(
            &mut zones,
            vec![
                add("example.com.", 300, soa(50)),
                add("y.example.com.", 60, a(2)),
            ],
        );
        assert_eq!((serial, zones.zones[0].soa.serial), (11, 101));
    }

    #[test]
    fn a_new_delegation_takes_its_names_out_of_the_fast_path() {
        let mut zones = zones();
        applied(&mut zones, vec![add("glue.del.example.com.", 60, a(7))]);
        let update = applied(
            &mut zones,
            vec![add(
                "del.example.com.",
                60,
                RData::NS(NS(name("glue.del.example.com."))),
            )],
        );
        assert_eq!(update.remove.len(), 1, "{:?}", update.remove);
        assert_eq!(
            update.remove[0].name(),
            b"\x04glue\x03del\x07example\x03com\x00"
        );
        let found = lookup(&zones, &name("glue.del.example.com."), RecordType::A);
        assert!(!found.authoritative && found.answers.is_empty());
    }
}
