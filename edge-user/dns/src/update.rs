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
        .filter(|(name, now)| zone.stored(name) != Some(now) && !(now.sets.is_empty() && zone.stored(name).is_none()))
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
    let (write, remove) = fast_path::changed_entries(zone, &updated, &affected(zone, &updated, &change))
        .or_else(|error| refuse(ResponseCode::Refused, format!("the fast path cannot answer it: {error}")))?;
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
    let inside = zones.find(&owner).is_some_and(|found| found.apex == zone.apex);
    if !inside {
        return refuse(ResponseCode::NotZone, format!("{owner} is not in zone {}", zone.apex));
    }
    let rtype = record.record_type();
    let malformed = |reason: &str| refuse(ResponseCode::FormErr, format!("{owner} {rtype}: {reason}"));
    match record.dns_class {
        DNSClass::IN if is_meta(rtype) => malformed("a meta type cannot be added"),
        DNSClass::ANY if !record.data.is_update() || (is_meta(rtype) && rtype != RecordType::ANY) => {
            malformed("a deletion of an RRset has no data")
        }
        DNSClass::NONE if record.ttl != 0 || is_meta(rtype) => {
            malformed("a deletion of a record has TTL 0 and a data type")
        }
        DNSClass::IN | DNSClass::ANY | DNSClass::NONE => Ok(()),
        class => malformed(&format!("class {class}")),
    }
}

/// RFC 2136 §3.2: every prerequisite must hold (§2.4: name or RRset in use or not, an RRset
/// with exactly these records).
fn check_prerequisites(zones: &Zones, zone: &Zone, prerequisites: &[Record]) -> Result<(), Refusal> {
    // Value-dependent prerequisites, merged into RRsets and compared once all are read.
    let mut exact: BTreeMap<(Name, u16), Vec<Vec<u8>>> = BTreeMap::new();
    for record in prerequisites {
        let owner = record.name.to_lowercase();
        let rtype = record.record_type();
        let formerr = |reason: &str| refuse(ResponseCode::FormErr, format!("prerequisite {owner} {rtype}: {reason}"));
        if record.ttl != 0 {
            return formerr("TTL must be 0");
        }
        if !zones.find(&owner).is_some_and(|found| found.apex == zone.apex) {
            return refuse(ResponseCode::NotZone, format!("prerequisite {owner} is not in zone {}", zone.apex));
        }
        let node = zone.stored(&owner);
        let in_use = node.is_some_and(|records| !records.sets.is_empty());
        let has_type = node.is_some_and(|records| records.has(rtype));
        let failed = |rcode, what: &str| refuse(rcode, format!("prerequisite failed: {owner} {what}"));
        match record.dns_class {
            DNSClass::ANY | DNSClass::NONE if !record.data.is_update() => return formerr("has data"),
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
            .map(|set| set.rdatas().iter().filter_map(|rdata| wire(rdata).ok()).collect())
            .unwrap_or_default();
        held.sort();
        wanted.sort();
        if held != wanted {
            return refuse(
                ResponseCode::NXRRSet,
                format!("prerequisite failed: {owner} {} is not the RRset given", RecordType::from(rtype)),
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
        if self.zone.stored(&owner).is_some_and(|records| records.pool.is_some()) {
            return refuse(
                ResponseCode::Refused,
                format!("{owner} is steered: its answers belong to the steering loop (change its pool in the config)"),
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
            return refuse(ResponseCode::Refused, format!("{owner}: DNAME is not served"));
        }
        check_ttl(record.ttl).or_else(|reason| refuse(ResponseCode::FormErr, format!("{owner} {rtype}: TTL {reason}")))?;
        let bytes = wire(&record.data).or_else(|error| refuse(ResponseCode::FormErr, format!("{owner} {rtype}: {error}")))?;
        let rdata = zone_file::rdata(rtype, bytes.clone())
            .or_else(|reason| refuse(ResponseCode::Refused, format!("{owner} {rtype}: {reason}")))?;
        let node = self.node(owner);
        let code = u16::from(rtype);
        let holds = |node: &NameRecords| {
            node.sets.get(&code).is_some_and(|set| {
                set.rdatas().iter().any(|held| wire(held).ok().as_ref() == Some(&bytes))
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
            && records
                .sets
                .keys()
                .all(|&rtype| rtype == u16::from(RecordType::A) || rtype == u16::from(RecordType::AAAA))
    };
    for (name, now) in &change.names {
        let Some(now) = now else { continue };
        if let Some((cut, _)) = after.delegation(name).filter(|(cut, _)| *cut != name)
            && !glue_only(now)
        {
            return refuse(
                ResponseCode::Refused,
                format!("{name} is below the delegation at {cut}: only glue (A, AAAA) is served there"),
            );
        }
        let delegates = *name != after.apex && now.has(RecordType::NS);
        let delegated = before.stored(name).is_some_and(|old| old.has(RecordType::NS));
        if delegates && !delegated {
            if let Some((below, _)) = after
                .stored_after(name)
                .take_while(|(below, _)| name.zone_of(below))
                .find(|(_, records)| !glue_only(records))
            {
                return refuse(
                    ResponseCode::Refused,
                    format!("{below} would be below the delegation at {name}: only glue (A, AAAA) is served there"),
                );
            }
        }
    }
    Ok(())
}

/// The names whose fast-path entries a change may alter: the changed names, and every name
/// below one that became or stopped being a delegation.
fn affected(before: &Zone, after: &Zone, change: &Change) -> Vec<Name> {
    let mut names: Vec<Name> = change.names.iter().map(|(name, _)| name.clone()).collect();
    for (name, _) in &change.names {
        let cut = |zone: &Zone| *name != zone.apex && zone.stored(name).is_some_and(|records| records.has(RecordType::NS));
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
