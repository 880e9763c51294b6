//! Zones as the server sees them: validated, owner names absolute and lower-case, one entry per
//! owner name holding its RRsets. Built from [`edge_config::Config`], from its TOML tables or
//! from an RFC 1035 master file ([`crate::zone_file`]); a config that does not make sense is
//! refused here with the field at fault.

use std::{
    borrow::Cow,
    cmp::Ordering,
    collections::BTreeMap,
    hash::{BuildHasher as _, Hash, Hasher as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
};

use edge_common::MAX_ANSWER_RECORDS;
use edge_config::{Config, ConfigError, DEFAULT_TTL, NameConfig, SoaConfig, ZoneConfig};
use edge_steer::Selections;
use hickory_proto::{
    rr::{
        Label, Name, RData, RecordType,
        rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT},
    },
    serialize::binary::{BinDecodable as _, BinDecoder},
};

use crate::{
    identity::{self, Identity},
    tsig::UpdateKeys,
    zone_file,
};

/// Most CNAME records an answer follows, as Knot DNS: the target of the last one is still
/// looked up, but only for data of the type asked, not for another CNAME.
pub const MAX_CNAME_CHAIN: usize = 5;

/// RFC 2181 §8: TTLs (and the SOA timers) are 31-bit values.
pub const MAX_TTL: u32 = i32::MAX as u32;

/// TXT character-strings are at most 255 bytes (RFC 1035 §3.3).
const TXT_STRING_MAX: usize = 255;

/// Every zone this server is authoritative for, how it names itself, and the keys that may
/// change its zones (reloaded with them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    pub zones: Vec<Zone>,
    pub identity: Identity,
    pub update_keys: Arc<UpdateKeys>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Absolute, lower-case.
    pub apex: Name,
    /// The apex SOA record (also in `names`), which negative answers carry.
    pub soa: SOA,
    /// Its TTL.
    pub soa_ttl: u32,
    /// Owner name (absolute, lower-case) → its records, the apex's SOA and NS included; steered
    /// names with their configured records. Shared between copies (a million names are not
    /// copied for each steering round): change it with `Arc::make_mut`.
    pub names: Arc<BTreeMap<Name, NameRecords>>,
    /// The steered names with the records they answer with now: as configured until
    /// [`Zones::with_selections`] replaces them, which touches this map and nothing else.
    pub steered: Arc<BTreeMap<Name, NameRecords>>,
    /// Names changed by dynamic updates ([`crate::update`]) since the zone was built, with
    /// what they hold now (`None`: nothing). Read before `names`, so that a change copies this
    /// map of updated names and not the million names beside it.
    pub updated: Arc<BTreeMap<Name, Option<NameRecords>>>,
    /// What it was built from.
    pub source: Source,
}

/// What a zone was built from, so that a reload rebuilds only the zones whose source changed:
/// a digest of its config table (with the pools, if it steers names), and each zone file read
/// (`$INCLUDE`d ones too) with a digest of its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    config: u64,
    pub(crate) files: Vec<(PathBuf, u64)>,
}

impl Source {
    /// One number for the whole source: a journal of updates ([`crate::journal`]) applies
    /// over a zone built from the source it names, and no other.
    pub fn fingerprint(&self) -> u64 {
        digest_of(&(self.config, &self.files))
    }

    /// Whether each file still holds what was read.
    fn files_unchanged(&self) -> bool {
        self.files.iter().all(|(path, digest)| {
            std::fs::read(path).is_ok_and(|bytes| digest_of(&bytes) == *digest)
        })
    }
}

/// A digest that tells whether a source changed (not a defence against forgery: the config is
/// the operator's own). foldhash, not SipHash: a million names' table hashes in a third of the
/// time.
pub(crate) fn digest_of(value: &(impl Hash + ?Sized)) -> u64 {
    DIGEST.hash_one(value)
}

/// The digests' hasher: a fixed seed, so that digests compare across reloads and, for a
/// journal, across restarts of the same build.
const DIGEST: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0);

/// The digest of what zone table `zone` builds from: the table, and the pools if it steers.
fn config_digest(config: &Config, zone: &ZoneConfig) -> u64 {
    let mut hasher = DIGEST.build_hasher();
    zone.hash(&mut hasher);
    if zone.names.iter().any(|name| name.pool.is_some()) {
        format!("{:?}", config.pools).hash(&mut hasher);
    }
    hasher.finish()
}

/// The records of one owner name: its RRsets, each with its own TTL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    /// Record type (as a number, in canonical order) → the RRset's TTL and records.
    pub sets: RrSets,
    /// A steered name: the pool it takes its A and AAAA records from (boxed: most names have
    /// none, and a million of them should not each carry its room).
    pub pool: Option<Box<Steered>>,
    /// A steered name whose pool has nothing to answer with: SERVFAIL, from userspace only.
    pub unavailable: bool,
}

/// The RRsets of one name by type, in type order: a sorted vector, since a name holds one or a
/// few types and a map's node (about 400 bytes for one entry) would be most of what a name of a
/// million-name zone takes; one RRset (most names) is held inline, without an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSets(Sets);

/// Kept normalised (one RRset is always `One`), so that equal sets compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sets {
    One([(u16, RrData); 1]),
    Many(Vec<(u16, RrData)>),
}

impl Default for RrSets {
    fn default() -> Self {
        Self(Sets::Many(Vec::new()))
    }
}

impl RrSets {
    fn as_slice(&self) -> &[(u16, RrData)] {
        match &self.0 {
            Sets::One(one) => one,
            Sets::Many(many) => many,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(u16, RrData)] {
        match &mut self.0 {
            Sets::One(one) => one,
            Sets::Many(many) => many,
        }
    }

    /// Applies `change` to the sets as a vector, and keeps the result normalised.
    fn change<T>(&mut self, change: impl FnOnce(&mut Vec<(u16, RrData)>) -> T) -> T {
        let mut sets = match std::mem::take(self).0 {
            Sets::One([one]) => vec![one],
            Sets::Many(many) => many,
        };
        let result = change(&mut sets);
        self.0 = if sets.len() == 1 {
            Sets::One([sets.pop().expect("one")])
        } else {
            Sets::Many(sets)
        };
        result
    }

    fn position(&self, rtype: u16) -> Result<usize, usize> {
        self.as_slice()
            .binary_search_by_key(&rtype, |(known, _)| *known)
    }

    pub fn get(&self, rtype: &u16) -> Option<&RrData> {
        let at = self.position(*rtype).ok()?;
        Some(&self.as_slice()[at].1)
    }

    pub fn contains_key(&self, rtype: &u16) -> bool {
        self.position(*rtype).is_ok()
    }

    /// Sets the RRset of `rtype`; returns the one it replaces.
    pub fn insert(&mut self, rtype: u16, data: RrData) -> Option<RrData> {
        match self.position(rtype) {
            Ok(at) => Some(std::mem::replace(&mut self.as_mut_slice()[at].1, data)),
            Err(at) => {
                self.change(|sets| sets.insert(at, (rtype, data)));
                None
            }
        }
    }

    pub fn remove(&mut self, rtype: &u16) -> Option<RrData> {
        let at = self.position(*rtype).ok()?;
        Some(self.change(|sets| sets.remove(at).1))
    }

    /// The RRset of `rtype`, created by `new` if absent.
    pub fn get_or_insert_with(&mut self, rtype: u16, new: impl FnOnce() -> RrData) -> &mut RrData {
        let at = match self.position(rtype) {
            Ok(at) => at,
            Err(at) => {
                self.change(|sets| sets.insert(at, (rtype, new())));
                at
            }
        };
        &mut self.as_mut_slice()[at].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u16, &RrData)> {
        self.as_slice().iter().map(|(rtype, data)| (rtype, data))
    }

    pub fn keys(&self) -> impl Iterator<Item = &u16> {
        self.as_slice().iter().map(|(rtype, _)| rtype)
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

impl Extend<(u16, RrData)> for RrSets {
    fn extend<T: IntoIterator<Item = (u16, RrData)>>(&mut self, sets: T) {
        for (rtype, data) in sets {
            self.insert(rtype, data);
        }
    }
}

impl IntoIterator for RrSets {
    type Item = (u16, RrData);
    type IntoIter = std::vec::IntoIter<(u16, RrData)>;
    fn into_iter(self) -> Self::IntoIter {
        match self.0 {
            Sets::One([one]) => vec![one].into_iter(),
            Sets::Many(many) => many.into_iter(),
        }
    }
}

impl<'a> IntoIterator for &'a RrSets {
    type Item = (&'a u16, &'a RrData);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (u16, RrData)>,
        fn(&'a (u16, RrData)) -> (&'a u16, &'a RrData),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter().map(|(rtype, data)| (rtype, data))
    }
}

impl std::ops::Index<&u16> for RrSets {
    type Output = RrData;
    fn index(&self, rtype: &u16) -> &RrData {
        self.get(rtype).expect("an RRset of this type")
    }
}

/// The TTL and records of one RRset. A single address, the one record of most names in a large
/// zone, is held as such: a hickory `RData` takes 184 bytes and an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrData {
    pub ttl: u32,
    records: Records,
}

/// Kept normalised (one A or AAAA record is always `Address`), so that equal sets compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Records {
    Address(IpAddr),
    Any(Vec<RData>),
}

impl RrData {
    pub fn new(ttl: u32, rdatas: Vec<RData>) -> Self {
        let records = match rdatas[..] {
            [RData::A(A(ip))] => Records::Address(IpAddr::V4(ip)),
            [RData::AAAA(AAAA(ip))] => Records::Address(IpAddr::V6(ip)),
            _ => Records::Any(rdatas),
        };
        Self { ttl, records }
    }

    /// The records, in the order they were added.
    pub fn rdatas(&self) -> Cow<'_, [RData]> {
        match &self.records {
            Records::Address(IpAddr::V4(ip)) => Cow::Owned(vec![RData::A(A(*ip))]),
            Records::Address(IpAddr::V6(ip)) => Cow::Owned(vec![RData::AAAA(AAAA(*ip))]),
            Records::Any(rdatas) => Cow::Borrowed(rdatas),
        }
    }

    /// How many records the set holds.
    pub fn len(&self) -> usize {
        match &self.records {
            Records::Address(_) => 1,
            Records::Any(rdatas) => rdatas.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the records `keep` says to keep.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&RData) -> bool) {
        let mut rdatas = self.rdatas().into_owned();
        rdatas.retain(keep);
        self.records = Self::new(self.ttl, rdatas).records;
    }

    /// Adds `rdata` unless the set holds it already.
    fn push(&mut self, rdata: RData) {
        if let Records::Any(rdatas) = &mut self.records
            && !rdatas.is_empty()
        {
            if !rdatas.contains(&rdata) {
                rdatas.push(rdata);
            }
            return;
        }
        let mut rdatas = self.rdatas().into_owned();
        if !rdatas.contains(&rdata) {
            rdatas.push(rdata);
        }
        self.records = Self::new(self.ttl, rdatas).records;
    }
}

/// Where a steered name's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    pub pool: String,
    /// The name's own TTL: a steered TTL above it is lowered to it.
    pub ttl: u32,
}

/// An RRset: the records of one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    /// Absolute, lower-case.
    pub name: Name,
    pub ttl: u32,
    pub rdatas: Vec<RData>,
}

/// The order in which an ANY query picks its one RRset (RFC 8482); other types follow in
/// numeric order.
pub const ANY_ORDER: [RecordType; 7] = [
    RecordType::CNAME,
    RecordType::A,
    RecordType::AAAA,
    RecordType::NS,
    RecordType::SOA,
    RecordType::MX,
    RecordType::TXT,
];

impl NameRecords {
    /// The RRset of type `rtype`, owned by `owner` (the name itself, or the name a wildcard
    /// answers for).
    pub fn rrset(&self, owner: &Name, rtype: RecordType) -> Option<RrSet> {
        let data = self.sets.get(&u16::from(rtype))?;
        Some(RrSet {
            name: owner.clone(),
            ttl: data.ttl,
            rdatas: data.rdatas().into_owned(),
        })
    }

    /// The first RRset in [`ANY_ORDER`], else the first by type.
    pub fn any(&self, owner: &Name) -> Option<RrSet> {
        ANY_ORDER
            .iter()
            .find_map(|&rtype| self.rrset(owner, rtype))
            .or_else(|| {
                let (&rtype, _) = self.sets.iter().next()?;
                self.rrset(owner, RecordType::from(rtype))
            })
    }

    pub fn has(&self, rtype: RecordType) -> bool {
        self.sets.contains_key(&u16::from(rtype))
    }

    /// The alias target, if this name is a CNAME.
    pub fn cname(&self) -> Option<&Name> {
        let Records::Any(rdatas) = &self.sets.get(&u16::from(RecordType::CNAME))?.records else {
            return None;
        };
        rdatas.iter().find_map(|rdata| match rdata {
            RData::CNAME(target) => Some(&target.0),
            _ => None,
        })
    }

    /// Adds `rdata` to the RRset of its type; the RRset takes the TTL of the record added last,
    /// as Knot DNS does when a zone file gives one RRset several TTLs.
    pub fn add(&mut self, ttl: u32, rdata: RData) {
        let set = self
            .sets
            .get_or_insert_with(u16::from(rdata.record_type()), || {
                RrData::new(ttl, Vec::new())
            });
        set.ttl = ttl;
        set.push(rdata);
    }

    /// The steered addresses `addresses` (empty: nothing to answer with) at `ttl`.
    fn steer(&mut self, addresses: &[IpAddr], ttl: u32) {
        let a: Vec<RData> = addresses
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(ip) => Some(RData::A(A(*ip))),
                IpAddr::V6(_) => None,
            })
            .take(MAX_ANSWER_RECORDS)
            .collect();
        let aaaa: Vec<RData> = addresses
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(ip) => Some(RData::AAAA(AAAA(*ip))),
                IpAddr::V4(_) => None,
            })
            .take(MAX_ANSWER_RECORDS)
            .collect();
        for (rtype, rdatas) in [(RecordType::A, a), (RecordType::AAAA, aaaa)] {
            if rdatas.is_empty() {
                self.sets.remove(&u16::from(rtype));
            } else {
                self.sets.insert(u16::from(rtype), RrData::new(ttl, rdatas));
            }
        }
        self.unavailable = addresses.is_empty();
    }
}

/// The name whose addresses help a resolver use `rdata`, which go in the additional section:
/// NS and MX (RFC 1035 §3.3), SRV (RFC 2782) and SVCB/HTTPS (RFC 9460 §4), as Knot adds them.
/// SRV and SVCB data are kept as received, so their target is read from the bytes.
pub fn additional_target(rdata: &RData) -> Option<Name> {
    match rdata {
        RData::NS(ns) => Some(ns.0.clone()),
        RData::MX(mx) => Some(mx.exchange.clone()),
        RData::Unknown { code, rdata } => {
            // Priority, weight and port; or SvcPriority.
            let skip = match code {
                RecordType::SRV => 6,
                RecordType::SVCB | RecordType::HTTPS => 2,
                _ => return None,
            };
            let mut decoder = BinDecoder::new(rdata.anything.get(skip..)?);
            Name::read(&mut decoder).ok().filter(|name| !name.is_root())
        }
        _ => None,
    }
}

impl Zone {
    /// A zone holding only its SOA.
    pub fn new(apex: Name, soa: SOA, soa_ttl: u32) -> Self {
        let mut apex_records = NameRecords::default();
        apex_records.add(soa_ttl, RData::SOA(soa.clone()));
        Self {
            names: Arc::new(BTreeMap::from([(apex.clone(), apex_records)])),
            steered: Arc::default(),
            updated: Arc::default(),
            source: Source::default(),
            apex,
            soa,
            soa_ttl,
        }
    }

    /// The records `name` (absolute, lower-case) holds as built and updated; a steered name's
    /// as configured.
    pub fn stored(&self, name: &Name) -> Option<&NameRecords> {
        match self.updated.get(name) {
            Some(now) => now.as_ref(),
            None => self.names.get(name),
        }
    }

    /// [`Self::stored`] with the owner name as the map holds it.
    fn stored_entry(&self, name: &Name) -> Option<(&Name, &NameRecords)> {
        match self.updated.get_key_value(name) {
            Some((owner, now)) => now.as_ref().map(|records| (owner, records)),
            None => self.names.get_key_value(name),
        }
    }

    /// The records `name` (absolute, lower-case) answers with: a steered name's as selected.
    pub fn records(&self, name: &Name) -> Option<&NameRecords> {
        let records = self.stored(name)?;
        match records.pool {
            Some(_) => self.steered.get(name).or(Some(records)),
            None => Some(records),
        }
    }

    /// Every owner name with the records it answers with, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &NameRecords)> {
        self.stored_iter()
            .map(|(name, records)| match records.pool {
                Some(_) => (name, self.steered.get(name).unwrap_or(records)),
                None => (name, records),
            })
    }

    /// Every owner name with its records as built and updated, in canonical order.
    pub fn stored_iter(&self) -> impl Iterator<Item = (&Name, &NameRecords)> {
        merged(self.names.iter(), self.updated.iter())
    }

    /// The owner names after `name` in canonical order (its descendants first), as built and
    /// updated.
    pub fn stored_after<'a>(
        &'a self,
        name: &'a Name,
    ) -> impl Iterator<Item = (&'a Name, &'a NameRecords)> {
        let after = (Bound::Excluded(name), Bound::Unbounded);
        merged(
            self.names.range::<Name, _>(after),
            self.updated.range::<Name, _>(after),
        )
    }

    /// The steered names as configured, found again in `names` (after a build or a change).
    fn find_steered(&mut self) {
        self.steered = Arc::new(
            self.names
                .iter()
                .filter(|(_, records)| records.pool.is_some())
                .map(|(name, records)| (name.clone(), records.clone()))
                .collect(),
        );
    }

    /// The RRset of `name` (absolute, lower-case) and `rtype`.
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<RrSet> {
        self.records(name)?.rrset(name, rtype)
    }

    /// Whether `name` owns any record.
    pub fn has_name(&self, name: &Name) -> bool {
        self.stored(name).is_some()
    }

    /// Whether `name` exists only as an ancestor of names that own records (RFC 8020: such an
    /// empty non-terminal answers NODATA, not NXDOMAIN).
    pub fn is_empty_non_terminal(&self, name: &Name) -> bool {
        // Canonical order puts a name's descendants right after it.
        self.stored_after(name)
            .next()
            .is_some_and(|(next, _)| name.zone_of(next))
    }

    /// The records a wildcard gives `name`, a name that does not exist (RFC 4592 §3.3.1): those
    /// of `*.` and the closest encloser, the longest ancestor that exists (empty non-terminals
    /// included), if the zone has that name.
    pub fn wildcard(&self, name: &Name) -> Option<&NameRecords> {
        let star = Name::from_ascii("*").expect("a valid label");
        (self.apex.num_labels()..name.num_labels())
            .rev()
            .map(|keep| name.trim_to(usize::from(keep)))
            .find(|ancestor| self.has_name(ancestor) || self.is_empty_non_terminal(ancestor))
            .and_then(|encloser| self.records(&star.clone().append_domain(&encloser).ok()?))
    }

    /// The zone cuts: names below the apex with NS records.
    pub fn cuts(&self) -> impl Iterator<Item = &Name> {
        self.stored_iter()
            // The type first: a name comparison for each of a million names is most of the walk.
            .filter(|(name, records)| records.has(RecordType::NS) && **name != self.apex)
            .map(|(name, _)| name)
    }

    /// The delegation (zone cut) at or above `name`, below the apex: its owner and records.
    pub fn delegation(&self, name: &Name) -> Option<(&Name, &NameRecords)> {
        let labels = name.num_labels();
        (self.apex.num_labels() + 1..=labels).find_map(|keep| {
            let ancestor = name.trim_to(usize::from(keep));
            self.stored_entry(&ancestor)
                .filter(|(_, records)| records.has(RecordType::NS))
        })
    }

    /// The negative-answer SOA record's TTL: the lesser of the SOA's own and its minimum
    /// (RFC 2308 §3).
    pub fn negative_ttl(&self) -> u32 {
        self.soa_ttl.min(self.soa.minimum)
    }
}

/// The names as built, with the updated ones in their place (those updated to nothing left
/// out), in canonical order.
fn merged<'a>(
    names: impl Iterator<Item = (&'a Name, &'a NameRecords)>,
    updated: impl Iterator<Item = (&'a Name, &'a Option<NameRecords>)>,
) -> impl Iterator<Item = (&'a Name, &'a NameRecords)> {
    let mut names = names.peekable();
    let mut updated = updated.peekable();
    std::iter::from_fn(move || {
        loop {
            let update_first = match (names.peek(), updated.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((name, _)), Some((changed, _))) => match name.cmp(changed) {
                    Ordering::Less => false,
                    Ordering::Equal => {
                        names.next();
                        true
                    }
                    Ordering::Greater => true,
                },
            };
            if !update_first {
                return names.next();
            }
            if let (name, Some(records)) = updated.next()? {
                return Some((name, records));
            }
        }
    })
}

impl Zones {
    /// Validates the zones of `config`, read from `path` (zone files relative to its directory).
    pub fn build(path: &Path, config: &Config) -> Result<Self, ConfigError> {
        Self::rebuild(path, config, None)
    }

    /// As [`Self::build`], taking from `previous` (the zones running, as built) each zone whose
    /// source has not changed: a reload rebuilds the zones whose table or file changed.
    pub fn rebuild(
        path: &Path,
        config: &Config,
        previous: Option<&Zones>,
    ) -> Result<Self, ConfigError> {
        let refuse = |field: String, reason: String| ConfigError {
            file: path.to_path_buf(),
            field,
            reason,
        };
        let mut zones: Vec<Zone> = Vec::with_capacity(config.zones.len());
        for (z, zone) in config.zones.iter().enumerate() {
            let apex = parse_name(&zone.apex)
                .and_then(|name| name.append_domain(&Name::root()))
                .map_err(|error| refuse(format!("zones[{z}].apex"), error.to_string()))?
                .to_lowercase();
            if let Some(other) = zones.iter().position(|known| known.apex == apex) {
                return Err(refuse(
                    format!("zones[{z}].apex"),
                    format!("zone {apex} is already defined by zones[{other}]"),
                ));
            }
            let digest = config_digest(config, zone);
            if let Some(unchanged) = previous
                .and_then(|previous| previous.zones.iter().find(|old| old.apex == apex))
                .filter(|old| old.source.config == digest && old.source.files_unchanged())
            {
                zones.push(unchanged.clone());
                continue;
            }
            let mut built = match &zone.file {
                Some(file) => {
                    let file = path.parent().unwrap_or(Path::new(".")).join(file);
                    let mut built = zone_file::load(&file, &apex).map_err(|error| {
                        let field = match error.at.split_once(':') {
                            Some((line, "end")) => format!("line {line}, at its end"),
                            Some((line, column)) => format!("line {line}, column {column}"),
                            None => String::new(),
                        };
                        ConfigError {
                            file: error.file,
                            field,
                            reason: error.reason,
                        }
                    })?;
                    add_steered_names(config, z, zone, &mut built)
                        .map_err(|(f, r)| refuse(f, r))?;
                    built
                }
                None => build_zone(config, z, zone, apex).map_err(|(f, r)| refuse(f, r))?,
            };
            built.find_steered();
            built.source.config = digest;
            zones.push(built);
        }
        for (field, text) in [
            ("dns.identity", &config.dns.identity),
            ("dns.version", &config.dns.version),
        ] {
            if text
                .as_ref()
                .is_some_and(|text| text.len() > identity::MAX_LEN)
            {
                return Err(refuse(
                    field.into(),
                    format!("at most {} bytes (one TXT string)", identity::MAX_LEN),
                ));
            }
        }
        let identity = Identity::new(
            config.dns.identity.as_deref(),
            config.dns.version.as_deref(),
        );
        let update_keys =
            Arc::new(UpdateKeys::new(&config.dns.update_keys).map_err(|(f, r)| refuse(f, r))?);
        let zones = Self {
            zones,
            identity,
            update_keys,
        };
        zones.check_nesting(config).map_err(|(f, r)| refuse(f, r))?;
        zones.check_targets(config).map_err(|(f, r)| refuse(f, r))?;
        Ok(zones)
    }

    /// A copy where every steered name answers as `selections` says for its pool: its A and
    /// AAAA from the pool's addresses, its TTL the pool's TTL (or its own, if lower), and
    /// SERVFAIL when the pool's addresses are empty. Pools without a selection keep their
    /// configured answer.
    pub fn with_selections(&self, selections: &Selections) -> Self {
        let mut zones = self.clone();
        for zone in &mut zones.zones {
            // Zones without steered names stay shared; the others get a new map of their
            // steered names, each from its configured records.
            if zone.steered.is_empty() {
                continue;
            }
            let steered = zone
                .steered
                .keys()
                .filter_map(|name| {
                    let mut records = zone.names.get(name)?.clone();
                    let configured = records.pool.clone()?;
                    if let Some(addresses) = selections.addresses.get(&configured.pool) {
                        let ttl = selections
                            .ttls
                            .get(&configured.pool)
                            .map_or(configured.ttl, |&ttl| ttl.min(configured.ttl));
                        records.steer(addresses, ttl);
                    }
                    Some((name.clone(), records))
                })
                .collect();
            zone.steered = Arc::new(steered);
        }
        zones
    }

    /// Every owner name with the records it answers with, zone by zone.
    pub fn names(&self) -> impl Iterator<Item = (&Name, &NameRecords)> {
        self.zones.iter().flat_map(Zone::iter)
    }

    /// The zone holding `name` (any case): the one with the longest apex above it.
    pub fn find(&self, name: &Name) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|zone| zone.apex.zone_of(name))
            .max_by_key(|zone| zone.apex.num_labels())
    }

    /// A parent zone's names inside a child zone we also serve would never be answered.
    fn check_nesting(&self, config: &Config) -> Result<(), Refusal> {
        for (z, zone) in self.zones.iter().enumerate() {
            // Without a zone of ours below this one, a name inside it is its own: found
            // without looking through the zones for each of a million names.
            let parent = self
                .zones
                .iter()
                .any(|other| other.apex != zone.apex && zone.apex.zone_of(&other.apex));
            for name in zone.names.keys() {
                if !parent && zone.apex.zone_of(name) {
                    continue;
                }
                let owner = self.find(name).map(|found| &found.apex);
                if owner != Some(&zone.apex) && zone.delegation(name).is_none() {
                    let child = owner.map(ToString::to_string).unwrap_or_default();
                    return Err((
                        name_field(config, z, &zone.apex, name),
                        format!("{name} is inside zone {child}; define it there"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// In zones written in TOML, NS and MX targets are not aliases (RFC 2181 §10.3). A zone
    /// file is taken as Knot takes it.
    fn check_targets(&self, config: &Config) -> Result<(), Refusal> {
        for (z, zone) in self.zones.iter().enumerate() {
            if config.zones[z].file.is_some() {
                continue;
            }
            for (owner, records) in zone.names.iter() {
                for (&rtype, set) in &records.sets {
                    let Some(target) = set
                        .rdatas()
                        .iter()
                        .filter_map(additional_target)
                        .find(|t| self.alias_of(t).is_some())
                    else {
                        continue;
                    };
                    let field = if *owner == zone.apex && rtype == u16::from(RecordType::NS) {
                        format!("zones[{z}].nameservers")
                    } else {
                        name_field(config, z, &zone.apex, owner)
                    };
                    return Err((
                        field,
                        format!("{target} is an alias (CNAME); NS and MX must name the target"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The CNAME target of `name` if one of our zones makes it an alias.
    fn alias_of(&self, name: &Name) -> Option<Name> {
        self.find(name)?.names.get(name)?.cname().cloned()
    }
}

/// The config field that defines `owner` in zone `z`: its `names` entry, else the zone.
fn name_field(config: &Config, z: usize, apex: &Name, owner: &Name) -> String {
    config.zones[z]
        .names
        .iter()
        .position(|entry| owner_name(apex, &entry.name).as_ref() == Ok(owner))
        .map_or(format!("zones[{z}]"), |n| format!("zones[{z}].names[{n}]"))
}

/// Field suffix and reason of a refusal inside one zone.
type Refusal = (String, String);

/// The steered names (`pool`) that a zone loaded from a file takes from TOML.
fn add_steered_names(
    config: &Config,
    z: usize,
    zone: &ZoneConfig,
    built: &mut Zone,
) -> Result<(), Refusal> {
    let at = |sub: String| format!("zones[{z}]{sub}");
    let from_file = "comes from the zone file";
    if zone.ttl.is_some() {
        return Err((at(".ttl".into()), format!("{from_file}: set $TTL there")));
    }
    if zone.soa.is_some() {
        return Err((
            at(".soa".into()),
            format!("{from_file}: write the SOA there"),
        ));
    }
    if !zone.nameservers.is_empty() {
        return Err((
            at(".nameservers".into()),
            format!("{from_file}: write the apex NS records there"),
        ));
    }
    for (n, entry) in zone.names.iter().enumerate() {
        let field = at(format!(".names[{n}]"));
        if entry.pool.is_none() {
            return Err((
                field,
                "in a zone loaded from a file, `names` holds only steered names (`pool`); \
                 write other records in the file"
                    .into(),
            ));
        }
        let owner =
            owner_name(&built.apex, &entry.name).map_err(|r| (format!("{field}.name"), r))?;
        if built.names.contains_key(&owner) {
            return Err((
                format!("{field}.name"),
                format!("{owner} already has records in the zone file"),
            ));
        }
        if let Some((cut, _)) = built.delegation(&owner) {
            return Err((
                format!("{field}.name"),
                format!("{owner} is below the delegation at {cut}"),
            ));
        }
        let records = name_records(config, &built.apex, &owner, entry, built.soa_ttl)
            .map_err(|(sub, reason)| (format!("{field}{sub}"), reason))?;
        Arc::make_mut(&mut built.names).insert(owner, records);
    }
    Ok(())
}

fn build_zone(config: &Config, z: usize, zone: &ZoneConfig, apex: Name) -> Result<Zone, Refusal> {
    let at = |sub: String| format!("zones[{z}]{sub}");
    let zone_ttl = zone.ttl.unwrap_or(DEFAULT_TTL);
    check_ttl(zone_ttl).map_err(|reason| (at(".ttl".into()), reason))?;
    // Every owner in definition order (the name servers' glue, then the `names` entries), put
    // in canonical order once and then made a map in one pass (see [`Owners`]).
    let mut owned = Owners::with_capacity(&apex, zone.names.len() + zone.nameservers.len() + 1);
    let mut nameservers = Vec::with_capacity(zone.nameservers.len());
    for (i, ns) in zone.nameservers.iter().enumerate() {
        let field = at(format!(".nameservers[{i}]"));
        let name = target_name(&apex, &ns.name).map_err(|r| (format!("{field}.name"), r))?;
        if nameservers.contains(&name) {
            return Err((format!("{field}.name"), format!("{name} is listed twice")));
        }
        let inside = apex.zone_of(&name);
        if inside && ns.addresses.is_empty() {
            return Err((
                format!("{field}.addresses"),
                format!("{name} is inside the zone: it needs its addresses (glue)"),
            ));
        }
        if !inside && !ns.addresses.is_empty() {
            return Err((
                format!("{field}.addresses"),
                format!("{name} is outside the zone: its addresses are not ours to serve"),
            ));
        }
        if inside {
            let (a, aaaa) = split_addresses(ns.addresses.iter().copied())
                .map_err(|r| (format!("{field}.addresses"), r))?;
            let mut glue = NameRecords::default();
            for ip in a {
                glue.add(zone_ttl, RData::A(A(ip)));
            }
            for ip in aaaa {
                glue.add(zone_ttl, RData::AAAA(AAAA(ip)));
            }
            owned.push(name.clone(), glue);
        }
        nameservers.push(name);
    }
    let glue = owned.len();

    for (n, entry) in zone.names.iter().enumerate() {
        // The field is named only for a refusal: formatting it for each of a million names
        // would cost more than building them.
        let field = |sub: &str| at(format!(".names[{n}]{sub}"));
        let owner = owner_name(&apex, &entry.name).map_err(|r| (field(".name"), r))?;
        let records = name_records(config, &apex, &owner, entry, zone_ttl)
            .map_err(|(sub, reason)| (field(&sub), reason))?;
        owned.push(owner, records);
    }
    // An owner defined twice is refused at its second definition, the first in config order.
    let sorted = owned.sorted().map_err(|(second, owner)| {
        let n = second - glue;
        let first = defined_by(zone, z, &apex, &owner);
        (
            at(format!(".names[{n}].name")),
            format!("{owner} is already defined by {first}"),
        )
    })?;
    let mut names: BTreeMap<Name, NameRecords> = sorted.into_iter().collect();

    // Below a zone cut only glue is allowed: anything else would never be answered.
    for (owner, records) in &names {
        let cut = (apex.num_labels() + 1..owner.num_labels()).find_map(|keep| {
            let ancestor = owner.trim_to(usize::from(keep));
            names
                .get(&ancestor)
                .filter(|r| r.has(RecordType::NS))
                .map(|_| ancestor)
        });
        if let Some(cut) = cut {
            let glue_only = records.pool.is_none()
                && records.sets.keys().all(|&rtype| {
                    rtype == u16::from(RecordType::A) || rtype == u16::from(RecordType::AAAA)
                });
            if !glue_only {
                return Err((
                    defined_by(zone, z, &apex, owner),
                    format!(
                        "{owner} is below the delegation at {cut}: only glue (a, aaaa) is allowed there"
                    ),
                ));
            }
        }
    }

    let default_soa = SoaConfig::default();
    let soa_config = zone.soa.as_ref().unwrap_or(&default_soa);
    let mname = match &soa_config.mname {
        Some(text) => target_name(&apex, text).map_err(|r| (at(".soa.mname".into()), r))?,
        None => nameservers.first().unwrap_or(&apex).clone(),
    };
    let rname = target_name(&apex, &soa_config.rname).map_err(|r| (at(".soa.rname".into()), r))?;
    let timer = |value: u32, field: &str| {
        i32::try_from(value)
            .map_err(|_| (at(format!(".soa.{field}")), format!("at most {MAX_TTL}")))
    };
    let soa = SOA::new(
        mname,
        rname,
        soa_config.serial,
        timer(soa_config.refresh, "refresh")?,
        timer(soa_config.retry, "retry")?,
        timer(soa_config.expire, "expire")?,
        soa_config.minimum,
    );
    check_ttl(soa_config.minimum).map_err(|r| (at(".soa.minimum".into()), r))?;

    let mut built = Zone::new(apex.clone(), soa, zone_ttl);
    let mut apex_records = Arc::make_mut(&mut built.names)
        .remove(&apex)
        .expect("the SOA's owner");
    for ns in nameservers {
        apex_records.add(zone_ttl, RData::NS(NS(ns)));
    }
    if let Some(own) = names.remove(&apex) {
        apex_records.sets.extend(own.sets);
        apex_records.pool = own.pool;
    }
    names.insert(apex, apex_records);
    built.names = Arc::new(names);
    Ok(built)
}

/// The config field that first defines `owner` in zone `z` (a name server with glue, or a
/// `names` entry): found again only for an error, so that building keeps no map of fields.
fn defined_by(zone: &ZoneConfig, z: usize, apex: &Name, owner: &Name) -> String {
    let at = |sub: String| format!("zones[{z}]{sub}");
    if let Some(i) = zone.nameservers.iter().position(|ns| {
        !ns.addresses.is_empty() && target_name(apex, &ns.name).as_ref() == Ok(owner)
    }) {
        return at(format!(".nameservers[{i}]"));
    }
    zone.names
        .iter()
        .position(|entry| owner_name(apex, &entry.name).as_ref() == Ok(owner))
        .map_or(at(String::new()), |n| at(format!(".names[{n}]")))
}

/// A name's place in canonical order (RFC 4034 §6.1) as bytes that sort as hickory's `Name`
/// does: its labels from the last, lower-case, each ended by 0 (0 and 1 inside a label escaped
/// as 1 1 and 1 2, so that a label sorts before a longer one it begins). A million names sort by
/// these in a fraction of the time that label-by-label comparisons take.
pub(crate) fn canonical_key(name: &Name) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    canonical_key_into(name, 0, &mut key);
    key
}

/// [`canonical_key`] of `name` without its last `skip` labels, appended to `key`.
fn canonical_key_into(name: &Name, skip: usize, key: &mut Vec<u8>) {
    for label in name.iter().rev().skip(skip) {
        for &byte in label {
            match byte.to_ascii_lowercase() {
                0 => key.extend([1, 1]),
                1 => key.extend([1, 2]),
                byte => key.push(byte),
            }
        }
        key.push(0);
    }
}

/// A zone's owners as defined, to be put in canonical order. Sorting the owners themselves
/// (a name and its records, about 150 bytes) would move each many times, into a scratch buffer
/// as large as half of them, and give each key an allocation: a million names' keys are
/// written into one buffer instead, small places sorted by them, and the owners moved once.
struct Owners {
    /// Labels of the apex, which every owner ends with: left out of the keys.
    apex_labels: usize,
    owners: Vec<(Name, NameRecords)>,
    /// The canonical keys of `owners` below the apex, one after the other.
    keys: Vec<u8>,
    places: Vec<Place>,
}

/// Where an owner's key is, and the owner.
struct Place {
    /// The key's first 16 bytes, zero-padded, as a big-endian number: keys no longer than
    /// that compare as these do (a label is never empty, so a key holds no two zeros in a
    /// row, and padding never makes one key look like another).
    prefix: u128,
    start: usize,
    len: u32,
    /// The owner's index in [`Owners::owners`].
    index: u32,
}

impl Owners {
    fn with_capacity(apex: &Name, owners: usize) -> Self {
        Self {
            apex_labels: usize::from(apex.num_labels()),
            owners: Vec::with_capacity(owners),
            // The label of a large zone's names (`name12345`) takes about 10 bytes.
            keys: Vec::with_capacity(owners * 16),
            places: Vec::with_capacity(owners),
        }
    }

    fn len(&self) -> usize {
        self.owners.len()
    }

    /// Adds `owner`, inside the apex.
    fn push(&mut self, owner: Name, records: NameRecords) {
        let start = self.keys.len();
        canonical_key_into(&owner, self.apex_labels, &mut self.keys);
        let key = &self.keys[start..];
        let mut prefix = [0; 16];
        let head = key.len().min(16);
        prefix[..head].copy_from_slice(&key[..head]);
        // A key is at most twice the 255 bytes of a wire name; a zone holds fewer than 2^32
        // owners (it would not fit in memory).
        self.places.push(Place {
            prefix: u128::from_be_bytes(prefix),
            start,
            len: key.len() as u32,
            index: self.owners.len() as u32,
        });
        self.owners.push((owner, records));
    }

    /// The owners in canonical order; an owner defined twice gives the index of its second
    /// definition (the first such in definition order) and the owner.
    fn sorted(self) -> Result<Vec<(Name, NameRecords)>, (usize, Name)> {
        let Self {
            mut owners,
            keys,
            mut places,
            ..
        } = self;
        let key = |place: &Place| &keys[place.start..place.start + place.len as usize];
        let order = |a: &Place, b: &Place| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| match a.len.max(b.len) {
                    0..=16 => Ordering::Equal,
                    _ => key(a).cmp(key(b)),
                })
        };
        // By key, then in definition order: equal keys sit together, the first definition first.
        places.sort_unstable_by(|a, b| order(a, b).then(a.index.cmp(&b.index)));
        let twice = places
            .windows(2)
            .filter(|pair| order(&pair[0], &pair[1]) == Ordering::Equal)
            .map(|pair| pair[1].index as usize)
            .min();
        if let Some(second) = twice {
            return Err((second, owners.swap_remove(second).0));
        }
        drop(keys);
        // Moved into place along each cycle of the permutation: position `at` takes the owner
        // at `from`; a place done points at itself.
        let mut from: Vec<u32> = places.into_iter().map(|place| place.index).collect();
        for start in 0..owners.len() {
            let mut at = start;
            loop {
                let source = from[at] as usize;
                from[at] = at as u32;
                if source == start || source == at {
                    break;
                }
                owners.swap(at, source);
                at = source;
            }
        }
        Ok(owners)
    }
}

pub fn check_ttl(ttl: u32) -> Result<(), String> {
    if ttl > MAX_TTL {
        return Err(format!("at most {MAX_TTL} (RFC 2181 §8)"));
    }
    Ok(())
}

fn parse_name(text: &str) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_ascii(text)
}

/// `@` is the apex, a trailing dot makes a name absolute, anything else is relative to the apex.
fn target_name(apex: &Name, text: &str) -> Result<Name, String> {
    if text == "@" {
        return Ok(apex.clone());
    }
    // The usual name of a large zone, one lower-case label: put before the apex (absolute and
    // lower-case already) without parsing a name, appending the apex and lower-casing. The
    // same label, and the same refusal when too long, as below.
    if text
        .bytes()
        .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
        && let Ok(label) = Label::from_ascii(text)
    {
        return apex.prepend_label(label).map_err(|error| error.to_string());
    }
    let name = parse_name(text).map_err(|error| error.to_string())?;
    let name = if name.is_fqdn() {
        name
    } else {
        name.append_domain(apex)
            .map_err(|error| error.to_string())?
    };
    Ok(name.to_lowercase())
}

/// An owner name: a target name that must be inside the zone.
fn owner_name(apex: &Name, text: &str) -> Result<Name, String> {
    let owner = target_name(apex, text)?;
    if !apex.zone_of(&owner) {
        return Err(format!("{owner} is outside the zone {apex}"));
    }
    Ok(owner)
}

fn name_records(
    config: &Config,
    apex: &Name,
    owner: &Name,
    entry: &NameConfig,
    zone_ttl: u32,
) -> Result<NameRecords, Refusal> {
    let ttl = entry.ttl.unwrap_or(zone_ttl);
    check_ttl(ttl).map_err(|reason| (".ttl".to_string(), reason))?;
    check_addresses(".a", &entry.a)?;
    check_addresses(".aaaa", &entry.aaaa)?;
    let mut records = NameRecords::default();
    for &ip in &entry.a {
        records.add(ttl, RData::A(A(ip)));
    }
    for &ip in &entry.aaaa {
        records.add(ttl, RData::AAAA(AAAA(ip)));
    }
    if let Some(pool_name) = &entry.pool {
        if !entry.a.is_empty() || !entry.aaaa.is_empty() {
            return Err((
                ".pool".into(),
                "a steered name takes its addresses from the pool: drop a and aaaa".into(),
            ));
        }
        let pool = config
            .pool(pool_name)
            .ok_or_else(|| (".pool".to_string(), format!("no pool called {pool_name}")))?;
        let addresses: Vec<IpAddr> = pool.members.iter().map(|member| member.address).collect();
        // Any number of members: a steered answer carries the chosen member, or (all down,
        // answer-all) the first 8 of each family.
        by_family(addresses.iter().copied())
            .map_err(|reason| (".pool".to_string(), format!("pool {pool_name}: {reason}")))?;
        records.steer(&addresses, ttl);
        records.unavailable = false;
        records.pool = Some(Box::new(Steered {
            pool: pool_name.clone(),
            ttl,
        }));
    }
    let mut cname = None;
    if let Some(text) = &entry.cname {
        if owner == apex {
            return Err((
                ".cname".into(),
                "the apex cannot be an alias: it holds the SOA and NS records".into(),
            ));
        }
        let target = target_name(apex, text).map_err(|r| (".cname".to_string(), r))?;
        cname = Some(target.clone());
        records.add(ttl, RData::CNAME(CNAME(target)));
    }
    let mut ns = Vec::new();
    for (i, text) in entry.ns.iter().enumerate() {
        if owner == apex {
            return Err((
                ".ns".into(),
                "the apex's NS records are the zone's nameservers".into(),
            ));
        }
        let target = target_name(apex, text).map_err(|r| (format!(".ns[{i}]"), r))?;
        if ns.contains(&target) {
            return Err((format!(".ns[{i}]"), format!("{target} is listed twice")));
        }
        ns.push(target.clone());
        records.add(ttl, RData::NS(NS(target)));
    }
    for (i, mx) in entry.mx.iter().enumerate() {
        let exchange =
            target_name(apex, &mx.exchange).map_err(|r| (format!(".mx[{i}].exchange"), r))?;
        records.add(ttl, RData::MX(MX::new(mx.preference, exchange)));
    }
    for text in &entry.txt {
        records.add(ttl, RData::TXT(TXT::new(split_txt(text))));
    }

    let others = records.sets.len() - usize::from(cname.is_some()) - usize::from(!ns.is_empty());
    let others = others > 0 || entry.pool.is_some();
    if cname.is_some() && (others || !ns.is_empty()) {
        return Err((
            ".cname".into(),
            "an alias (CNAME) cannot hold other records (RFC 1034 §3.6.2)".into(),
        ));
    }
    if !ns.is_empty() && others {
        return Err((
            ".ns".into(),
            "a delegated name holds only its NS records; put glue on the name servers' names"
                .into(),
        ));
    }
    if records.sets.is_empty() && records.pool.is_none() {
        return Err((String::new(), "has no records".to_string()));
    }
    Ok(records)
}

fn check_addresses<T: PartialEq + std::fmt::Display>(
    field: &str,
    addresses: &[T],
) -> Result<(), Refusal> {
    if addresses.len() > MAX_ANSWER_RECORDS {
        return Err((
            field.to_string(),
            format!("at most {MAX_ANSWER_RECORDS} addresses per name"),
        ));
    }
    for (i, address) in addresses.iter().enumerate() {
        if addresses[..i].contains(address) {
            return Err((
                format!("{field}[{i}]"),
                format!("duplicate address {address}"),
            ));
        }
    }
    Ok(())
}

/// IPv4 and IPv6 addresses apart, in order, each family within the fast path's limit.
fn split_addresses(
    addresses: impl Iterator<Item = IpAddr>,
) -> Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>), String> {
    let (a, aaaa) = by_family(addresses)?;
    if a.len() > MAX_ANSWER_RECORDS || aaaa.len() > MAX_ANSWER_RECORDS {
        return Err(format!(
            "at most {MAX_ANSWER_RECORDS} addresses of each family per name"
        ));
    }
    Ok((a, aaaa))
}

/// IPv4 and IPv6 addresses apart, in order; a duplicate is refused.
fn by_family(
    addresses: impl Iterator<Item = IpAddr>,
) -> Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>), String> {
    let (mut a, mut aaaa) = (Vec::new(), Vec::new());
    for address in addresses {
        match address {
            IpAddr::V4(ip) if !a.contains(&ip) => a.push(ip),
            IpAddr::V6(ip) if !aaaa.contains(&ip) => aaaa.push(ip),
            _ => return Err(format!("duplicate address {address}")),
        }
    }
    Ok((a, aaaa))
}

/// A TXT entry as character-strings of at most 255 bytes, split on character boundaries.
fn split_txt(text: &str) -> Vec<String> {
    let mut strings = vec![String::new()];
    for character in text.chars() {
        let last = strings.last_mut().expect("not empty");
        if last.len() + character.len_utf8() > TXT_STRING_MAX {
            strings.push(character.to_string());
        } else {
            last.push(character);
        }
    }
    strings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(zones_toml: &str) -> Result<Zones, ConfigError> {
        let path = Path::new("edge.toml");
        let text = format!("[xdp]\ninterface = \"eth0\"\n{zones_toml}");
        let config = Config::parse(path, &text)?;
        Zones::build(path, &config)
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    /// The A then AAAA addresses of `records`, as text.
    fn addresses(records: &NameRecords) -> Vec<String> {
        [1, 28]
            .iter()
            .filter_map(|rtype| records.sets.get(rtype))
            .flat_map(|set| {
                set.rdatas()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn pool(records: &NameRecords) -> Option<&str> {
        records.pool.as_ref().map(|steered| steered.pool.as_str())
    }

    #[test]
    fn names_become_absolute_and_lower_case() {
        let zones = build(
            r#"
[[zones]]
apex = "Example.COM"
ttl = 120
[[zones.names]]
name = "WWW"
a = ["192.0.2.1"]
[[zones.names]]
name = "@"
ttl = 30
a = ["192.0.2.2"]
[[zones.names]]
name = "api.example.com."
a = ["192.0.2.3"]
"#,
        )
        .unwrap();
        let names: Vec<_> = zones
            .names()
            .map(|(name, r)| (name.to_string(), r.sets[&1].ttl))
            .collect();
        assert_eq!(
            names,
            [
                ("example.com.".to_string(), 30),
                ("api.example.com.".to_string(), 120),
                ("www.example.com.".to_string(), 120),
            ]
        );
    }

    #[test]
    fn duplicate_name_is_refused_whatever_its_case() {
        let error = build(
            r#"
[[zones]]
apex = "example.com"
[[zones.names]]
name = "www"
a = ["192.0.2.1"]
[[zones.names]]
name = "WWW.example.com."
a = ["192.0.2.2"]
"#,
        )
        .unwrap_err();
        assert_eq!(error.field, "zones[0].names[1].name");
        assert!(
            error
                .reason
                .contains("already defined by zones[0].names[0]"),
            "{error}"
        );
    }

    #[test]
    fn owners_are_put_in_the_order_names_compare() {
        let apex = name("example.com.");
        // Keys past 16 bytes that share their first 16, labels holding the escaped bytes 0
        // and 1, a label that begins another, the apex, and upper case.
        let labels: [&[&[u8]]; 17] = [
            &[],
            &[b"a"],
            &[b"a", b"a"],
            &[b"ab"],
            &[b"a-longer-label-than-sixteen"],
            &[b"a-longer-label-than-sixteen-bytes"],
            &[b"b", b"a-longer-label-than-sixteen"],
            &[b"\x00"],
            &[b"\x01"],
            &[b"\x01x"],
            &[b"x\x00"],
            &[b"x", b"\x00"],
            &[b"Zz"],
            &[b"zy", b"ZZ"],
            &[b"name9"],
            &[b"name10"],
            &[b"name100"],
        ];
        let owners: Vec<Name> = labels
            .iter()
            .map(|below| {
                let labels = below.iter().copied().chain(apex.iter());
                Name::from_labels(labels).unwrap().to_lowercase()
            })
            .collect();
        // Pushed in a shuffled order (each label's index times 7, modulo a prime above).
        let mut shuffled = Owners::with_capacity(&apex, owners.len());
        for i in (0..owners.len()).map(|i| i * 7 % 17) {
            shuffled.push(owners[i].clone(), NameRecords::default());
        }
        let sorted: Vec<Name> = shuffled
            .sorted()
            .unwrap()
            .into_iter()
            .map(|(owner, _)| owner)
            .collect();
        let mut expected = owners.clone();
        expected.sort();
        assert_eq!(sorted, expected);
        // The second definition of a name, whatever its case, is the one refused.
        let mut twice = Owners::with_capacity(&apex, 4);
        for label in [
            "a-longer-label-than-sixteen",
            "b",
            "A-LONGER-label-than-sixteen",
            "B",
        ] {
            twice.push(target_name(&apex, label).unwrap(), NameRecords::default());
        }
        let (second, owner) = twice.sorted().unwrap_err();
        assert_eq!(
            (second, owner.to_string()),
            (2, "a-longer-label-than-sixteen.example.com.".to_string())
        );
    }

    #[test]
    fn name_outside_zone_is_refused() {
        let error = build(
            r#"
[[zones]]
apex = "example.com"
[[zones.names]]
name = "www.example.org."
a = ["192.0.2.1"]
"#,
        )
        .unwrap_err();
        assert_eq!(error.field, "zones[0].names[0].name");
        assert!(error.reason.contains("outside the zone"), "{error}");
    }

    #[test]
    fn record_set_limits_are_enforced() {
        let error = build("[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\n")
            .unwrap_err();
        assert_eq!(error.field, "zones[0].names[0]");
        let nine: Vec<String> = (1..=9).map(|i| format!("\"192.0.2.{i}\"")).collect();
        let error = build(&format!(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [{}]\n",
            nine.join(",")
        ))
        .unwrap_err();
        assert_eq!(error.field, "zones[0].names[0].a");
        let error = build(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.1\", \"192.0.2.1\"]\n",
        )
        .unwrap_err();
        assert_eq!(error.field, "zones[0].names[0].a[1]");
    }

    #[test]
    fn a_pool_of_twenty_members_steers_a_name_with_the_first_eight_until_it_chooses() {
        // A PoP pool lists every PoP of a 20-PoP network: a steered answer holds one member, so
        // the pool is not bound by a name's 8 addresses; before the first choice (and for
        // answer-all) the name answers the first 8.
        let mut text = String::from("[[pools]]\nname = \"pops\"\nkind = \"pop\"\n");
        for i in 1..=20 {
            text += &format!("[[pools.members]]\nname = \"pop{i}\"\naddress = \"192.0.2.{i}\"\n");
        }
        text += "[[pools.members]]\nname = \"pop21\"\naddress = \"192.0.2.1\"\n";
        let duplicate = build(&format!(
            "{text}[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n"
        ))
        .unwrap_err();
        assert_eq!(duplicate.field, "zones[0].names[0].pool", "{duplicate}");
        assert!(duplicate.reason.contains("duplicate"), "{duplicate}");
        let text = &text[..text.rfind("[[pools.members]]").unwrap()];
        let zones = build(&format!(
            "{text}[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"static\"\npool = \"pops\"\n"
        ))
        .unwrap();
        let stat = &zones.zones[0].names[&name("static.example.com.")];
        let first: Vec<String> = (1..=8).map(|i| format!("192.0.2.{i}")).collect();
        assert_eq!(addresses(stat), first);
    }

    #[test]
    fn example_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let config = Config::load(&path).unwrap_or_else(|error| panic!("{error}"));
                Zones::build(&path, &config).unwrap_or_else(|error| panic!("{error}"));
                checked += 1;
            }
        }
        assert!(checked >= 2, "examples/ should hold the documented configs");
    }

    #[test]
    fn duplicate_zone_and_bad_apex_are_refused() {
        let error =
            build("[[zones]]\napex = \"example.com\"\n[[zones]]\napex = \"EXAMPLE.com.\"\n")
                .unwrap_err();
        assert_eq!(error.field, "zones[1].apex");
        let error = build("[[zones]]\napex = \"bad..name\"\n").unwrap_err();
        assert_eq!(error.field, "zones[0].apex");
    }

    const FULL: &str = r#"
[[pools]]
name = "shop-origins"
kind = "origin"
[[pools.members]]
name = "o1"
address = "192.0.2.101"
[[pools.members]]
name = "o2"
address = "2001:db8::101"
[[pools.members]]
name = "o3"
address = "192.0.2.102"

[[zones]]
apex = "example.com"
ttl = 300
[zones.soa]
rname = "hostmaster.example.com."
serial = 7
minimum = 30
[[zones.nameservers]]
name = "ns1"
addresses = ["192.0.2.53", "2001:db8::53"]
[[zones.nameservers]]
name = "ns.example.net."
[[zones.names]]
name = "@"
mx = [{ preference = 10, exchange = "mail" }]
txt = ["v=spf1 -all"]
[[zones.names]]
name = "mail"
a = ["192.0.2.25"]
[[zones.names]]
name = "shop"
ttl = 20
pool = "shop-origins"
[[zones.names]]
name = "www"
cname = "shop"
[[zones.names]]
name = "sub"
ns = ["ns.sub", "ns.example.net."]
[[zones.names]]
name = "ns.sub"
a = ["192.0.2.54"]
[[zones.names]]
name = "mail._domainkey"
txt = ["v=DKIM1; p="]
"#;

    #[test]
    fn a_full_zone_builds() {
        let zones = build(FULL).unwrap();
        let zone = &zones.zones[0];
        let apex_ns = zone.rrset(&name("example.com."), RecordType::NS).unwrap();
        assert_eq!(
            apex_ns.rdatas,
            [
                RData::NS(NS(name("ns1.example.com."))),
                RData::NS(NS(name("ns.example.net.")))
            ]
        );
        assert_eq!(zone.soa.mname, name("ns1.example.com."));
        assert_eq!(zone.soa.serial, 7);
        assert_eq!(zone.negative_ttl(), 30);
        let glue = &zone.names[&name("ns1.example.com.")];
        assert_eq!(addresses(glue), ["192.0.2.53", "2001:db8::53"]);
        // A steered name answers with its pool's members, per family, in configured order.
        let shop = &zone.names[&name("shop.example.com.")];
        assert_eq!(pool(shop), Some("shop-origins"));
        assert_eq!(
            addresses(shop),
            ["192.0.2.101", "192.0.2.102", "2001:db8::101"]
        );
        assert_eq!(shop.sets[&1].ttl, 20);
        let (cut, _) = zone.delegation(&name("a.ns.sub.example.com.")).unwrap();
        assert_eq!(cut, &name("sub.example.com."));
        assert!(zone.delegation(&name("www.example.com.")).is_none());
        assert!(zone.is_empty_non_terminal(&name("_domainkey.example.com.")));
        assert!(!zone.is_empty_non_terminal(&name("mail._domainkey.example.com.")));
        assert!(!zone.is_empty_non_terminal(&name("www.example.com.")));
        assert!(!zone.is_empty_non_terminal(&name("nope.example.com.")));
        let apex_ns = zone.rrset(&name("example.com."), RecordType::NS).unwrap();
        assert_eq!((apex_ns.ttl, apex_ns.rdatas.len()), (300, 2));
    }

    #[test]
    fn selections_replace_steered_answers() {
        let zones = build(FULL).unwrap();
        let shop = name("shop.example.com.");
        let mut selections = Selections::default();
        selections.addresses.insert(
            "shop-origins".into(),
            vec![
                "2001:db8::101".parse().unwrap(),
                "192.0.2.102".parse().unwrap(),
            ],
        );
        selections.ttls.insert("shop-origins".into(), 7);
        // shop's own TTL is 20: the lower of the two.
        let steered = zones.with_selections(&selections);
        let records = steered.zones[0].records(&shop).unwrap();
        assert_eq!(addresses(records), ["192.0.2.102", "2001:db8::101"]);
        assert_eq!((records.sets[&1].ttl, records.unavailable), (7, false));
        // Only steered names change: the other names are not even copied (a round on a zone
        // of a million names touches its steered names alone).
        assert!(Arc::ptr_eq(&steered.zones[0].names, &zones.zones[0].names));
        let mail = name("mail.example.com.");
        assert_eq!(
            steered.zones[0].records(&mail),
            zones.zones[0].records(&mail)
        );
        assert_eq!(
            steered.zones[0].rrset(&shop, RecordType::A).unwrap().rdatas,
            [RData::A(A("192.0.2.102".parse().unwrap()))]
        );
        selections.ttls.insert("shop-origins".into(), 60);
        assert_eq!(
            zones.with_selections(&selections).zones[0]
                .records(&shop)
                .unwrap()
                .sets[&1]
                .ttl,
            20
        );
        selections
            .addresses
            .insert("shop-origins".into(), Vec::new());
        let down = zones.with_selections(&selections);
        let records = down.zones[0].records(&shop).unwrap();
        assert!(records.unavailable && addresses(records).is_empty());
        assert!(
            crate::fast_path::entries(&down).unwrap().len()
                < crate::fast_path::entries(&zones).unwrap().len()
        );
    }

    /// A load builds the static names' entries once, before the selections are known; with the
    /// steered names' entries of the zones as selected, they are every entry, in each group's
    /// order.
    #[test]
    fn static_and_steered_entries_are_every_entry() {
        use crate::fast_path::{entries, static_entries, steered_entries};
        let zones = build(FULL).unwrap();
        let mut selections = Selections::default();
        selections
            .addresses
            .insert("shop-origins".into(), vec!["192.0.2.102".parse().unwrap()]);
        let selected = zones.with_selections(&selections);
        let all = entries(&selected).unwrap();
        let statics = static_entries(&zones).unwrap();
        let steered = steered_entries(&selected).unwrap();
        assert!(!statics.is_empty() && !steered.is_empty());
        assert!(statics.iter().all(|entry| !entry.steered));
        let (all_steered, all_static): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|entry| entry.steered);
        assert_eq!(all_static, statics);
        assert_eq!(all_steered, steered);
    }

    /// One lower-case label is put before the apex directly: the name, and the refusal of one
    /// too long, are those of parsing it and appending the apex.
    #[test]
    fn a_plain_label_names_what_parsing_it_names() {
        let parsed = |apex: &Name, text: &str| {
            Name::from_ascii(text)
                .and_then(|name| name.append_domain(apex))
                .map(|name| name.to_lowercase())
                .map_err(|error| error.to_string())
        };
        let long_apex = Name::from_ascii(format!("{0}.{0}.{0}.example.", "a".repeat(60)))
            .unwrap()
            .to_lowercase();
        for apex in [name("example.com."), long_apex] {
            for text in [
                "www",
                "name999999",
                "_dmarc",
                "a-b_c",
                "-x",
                "x-",
                &"y".repeat(63),
                &"z".repeat(64),
                "Mixed",
                "two.labels",
                "*",
            ] {
                let fast = target_name(&apex, text);
                assert_eq!(fast, parsed(&apex, text), "{text} in {apex}");
                if let Ok(fast) = fast {
                    assert!(fast.is_fqdn() && fast.eq_case(&parsed(&apex, text).unwrap()));
                }
            }
        }
    }

    #[test]
    fn long_txt_is_split_into_strings() {
        let long = "x".repeat(300);
        let zones = build(&format!(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"t\"\ntxt = [\"{long}\"]\n"
        ))
        .unwrap();
        let t = &zones.zones[0].names[&name("t.example.com.")];
        let RData::TXT(txt) = &t.sets[&16].rdatas()[0] else {
            panic!("{t:?}")
        };
        let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lengths, [255, 45]);
    }

    /// Each case: a change to the full config, and the field it must be refused at.
    #[test]
    fn inconsistent_zones_are_refused_at_the_field() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // (replace, with, field, reason)
            (
                "cname = \"shop\"",
                "cname = \"shop\"\na = [\"192.0.2.9\"]",
                "zones[0].names[3].cname",
                "cannot hold other records",
            ),
            (
                "name = \"mail\"\na = [\"192.0.2.25\"]",
                "name = \"mail\"\ncname = \"www\"",
                "zones[0].names[0]",
                "alias",
            ),
            (
                "pool = \"shop-origins\"",
                "pool = \"nope\"",
                "zones[0].names[2].pool",
                "no pool called nope",
            ),
            (
                "pool = \"shop-origins\"",
                "pool = \"shop-origins\"\na = [\"192.0.2.9\"]",
                "zones[0].names[2].pool",
                "drop a and aaaa",
            ),
            (
                "name = \"ns.sub\"\na = [\"192.0.2.54\"]",
                "name = \"ns.sub\"\ntxt = [\"hidden\"]",
                "zones[0].names[5]",
                "below the delegation",
            ),
            (
                "ns = [\"ns.sub\", \"ns.example.net.\"]",
                "ns = [\"ns.sub\"]\na = [\"192.0.2.9\"]",
                "zones[0].names[4].ns",
                "holds only its NS",
            ),
            (
                "name = \"ns1\"\naddresses = [\"192.0.2.53\", \"2001:db8::53\"]",
                "name = \"ns1\"",
                "zones[0].nameservers[0].addresses",
                "needs its addresses",
            ),
            (
                "name = \"ns.example.net.\"",
                "name = \"ns.example.net.\"\naddresses = [\"192.0.2.1\"]",
                "zones[0].nameservers[1].addresses",
                "outside the zone",
            ),
            (
                "name = \"mail\"",
                "name = \"ns1\"",
                "zones[0].names[1].name",
                "already defined by zones[0].nameservers[0]",
            ),
            (
                "name = \"@\"\n",
                "name = \"@\"\ncname = \"www\"\n",
                "zones[0].names[0].cname",
                "apex cannot be an alias",
            ),
            (
                "serial = 7",
                "serial = 7\nrefresh = 4294967295",
                "zones[0].soa.refresh",
                "at most",
            ),
        ];
        for (replace, with, field, reason) in cases {
            assert!(FULL.contains(replace), "{replace}");
            let error = build(&FULL.replacen(replace, with, 1)).unwrap_err();
            assert_eq!(&error.field, field, "{replace} → {with}: {error}");
            assert!(error.reason.contains(reason), "{with}: {error}");
        }
    }

    #[test]
    fn cname_loops_and_long_chains_are_served_as_knot_serves_them() {
        use crate::authority::lookup;
        let zones = build(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"a\"\ncname = \"b\"\n[[zones.names]]\nname = \"b\"\ncname = \"A\"\n",
        )
        .unwrap();
        // The loop is answered up to where it would repeat a name.
        let found = lookup(&zones, &name("a.example.com."), RecordType::A);
        assert_eq!(found.answers.len(), 2);
        assert_eq!(found.rcode, hickory_proto::op::ResponseCode::NoError);

        let mut chain = String::from("[[zones]]\napex = \"example.com\"\n");
        for i in 0..12 {
            chain += &format!("[[zones.names]]\nname = \"c{i}\"\ncname = \"c{}\"\n", i + 1);
        }
        chain += "[[zones.names]]\nname = \"c12\"\na = [\"192.0.2.1\"]\n";
        let zones = build(&chain).unwrap();
        // Knot DNS 3.2: five CNAMEs, then the last target's address but not its CNAME.
        let answers = |start: &str| {
            let found = lookup(&zones, &name(start), RecordType::A);
            found
                .answers
                .iter()
                .map(|set| set.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(answers("c0.example.com.").len(), MAX_CNAME_CHAIN);
        let from_c7 = answers("c7.example.com.");
        assert_eq!(from_c7.len(), MAX_CNAME_CHAIN + 1);
        assert_eq!(from_c7.last().unwrap(), "c12.example.com.");
    }

    #[test]
    fn a_reload_rebuilds_only_the_zones_whose_source_changed() {
        let dir = std::env::temp_dir().join(format!("edge-zone-reuse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let zone_file = dir.join("c.zone");
        let config_path = dir.join("edge.toml");
        let soa =
            "$ORIGIN c.example.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\n";
        std::fs::write(&zone_file, format!("{soa}ns A 192.0.2.53\n")).unwrap();
        let config = |b: &str| {
            let text = format!(
                "[[zones]]\napex = \"a.example\"\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.1\"]\n\
                 [[zones]]\napex = \"b.example\"\n[[zones.names]]\nname = \"www\"\na = [\"{b}\"]\n\
                 [[zones]]\napex = \"c.example\"\nfile = \"c.zone\"\n"
            );
            Config::parse(&config_path, &text).unwrap()
        };
        let first = Zones::build(&config_path, &config("192.0.2.2")).unwrap();
        let same =
            |a: &Zones, b: &Zones, z: usize| Arc::ptr_eq(&a.zones[z].names, &b.zones[z].names);

        // b's table changes: a and the zone file's zone are taken as they were.
        let second = Zones::rebuild(&config_path, &config("192.0.2.3"), Some(&first)).unwrap();
        assert!(same(&first, &second, 0) && same(&first, &second, 2));
        assert!(!same(&first, &second, 1));
        let www = name("www.b.example.");
        assert_eq!(
            second.zones[1].rrset(&www, RecordType::A).unwrap().rdatas,
            [RData::A(A("192.0.2.3".parse().unwrap()))]
        );
        // The zone file changes: that zone alone is read again.
        std::fs::write(&zone_file, format!("{soa}ns A 192.0.2.54\n")).unwrap();
        let third = Zones::rebuild(&config_path, &config("192.0.2.3"), Some(&second)).unwrap();
        assert!(same(&second, &third, 0) && same(&second, &third, 1));
        assert!(!same(&second, &third, 2));
        assert_eq!(
            third.zones[2]
                .rrset(&name("ns.c.example."), RecordType::A)
                .unwrap()
                .rdatas,
            [RData::A(A("192.0.2.54".parse().unwrap()))]
        );
        // Rebuilt or taken, the zones are those a build from scratch gives.
        assert_eq!(
            third,
            Zones::build(&config_path, &config("192.0.2.3")).unwrap()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_zone_file_takes_steered_names_from_toml() {
        let dir = std::env::temp_dir().join(format!("edge-zone-toml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("example.com.zone"),
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\nns1 A 192.0.2.53\nwww CNAME shop\n*.wild A 192.0.2.99\n",
        )
        .unwrap();
        let config_path = dir.join("edge.toml");
        let with = |zone: &str| {
            let text = format!(
                "[xdp]\ninterface = \"eth0\"\n{}\n[[zones]]\napex = \"example.com\"\nfile = \"example.com.zone\"\n{zone}",
                FULL[..FULL.find("[[zones]]").unwrap()].trim()
            );
            Zones::build(&config_path, &Config::parse(&config_path, &text).unwrap())
        };
        let zones =
            with("[[zones.names]]\nname = \"shop\"\npool = \"shop-origins\"\nttl = 20\n").unwrap();
        let zone = &zones.zones[0];
        let shop = &zone.names[&name("shop.example.com.")];
        assert_eq!(pool(shop), Some("shop-origins"));
        assert_eq!(shop.sets[&1].ttl, 20);
        assert!(zone.wildcard(&name("a.wild.example.com.")).is_some());
        assert!(zone.wildcard(&name("a.b.wild.example.com.")).is_some());
        assert!(zone.wildcard(&name("a.example.com.")).is_none());

        for (zone, field, reason) in [
            ("ttl = 60\n", "zones[0].ttl", "$TTL"),
            (
                "[[zones.nameservers]]\nname = \"ns2\"\naddresses = [\"192.0.2.1\"]\n",
                "zones[0].nameservers",
                "zone file",
            ),
            (
                "[[zones.names]]\nname = \"x\"\na = [\"192.0.2.1\"]\n",
                "zones[0].names[0]",
                "only steered names",
            ),
            (
                "[[zones.names]]\nname = \"ns1\"\npool = \"shop-origins\"\n",
                "zones[0].names[0].name",
                "already has records",
            ),
        ] {
            let error = with(zone).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.reason.contains(reason), "{error}");
        }
        // A broken file: refused with the file, its line and the reason.
        std::fs::write(
            dir.join("example.com.zone"),
            "$ORIGIN example.com.\n@ 300 SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2\n",
        )
        .unwrap();
        let error = with("").unwrap_err();
        assert_eq!(error.file, dir.join("example.com.zone"));
        assert_eq!(error.field, "line 4, at its end");
        assert!(error.reason.contains("IPv4"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_parent_cannot_define_names_inside_a_child_zone() {
        let error = build(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www.child\"\na = [\"192.0.2.1\"]\n[[zones]]\napex = \"child.example.com\"\n",
        )
        .unwrap_err();
        assert_eq!(error.field, "zones[0].names[0]", "{error}");
        assert!(
            error.reason.contains("inside zone child.example.com."),
            "{error}"
        );
        let zones =
            build("[[zones]]\napex = \"example.com\"\n[[zones]]\napex = \"child.example.com\"\n")
                .unwrap();
        assert_eq!(
            zones.find(&name("a.child.EXAMPLE.com.")).unwrap().apex,
            name("child.example.com.")
        );
        assert_eq!(
            zones.find(&name("example.com.")).unwrap().apex,
            name("example.com.")
        );
        assert!(zones.find(&name("example.org.")).is_none());
    }

    #[test]
    fn the_example_config_builds() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/authoritative.toml"
        ));
        let config = Config::load(path).unwrap();
        let zones = Zones::build(path, &config).unwrap();
        // The CNAME hand-over target is a steered name; the NS hand-over is a zone of its own.
        let shop = &zones.zones[0].names[&name("shop.cdn.example.net.")];
        assert_eq!(pool(shop), Some("shop-origins"));
        let books = zones.find(&name("cdn.books.example.")).unwrap();
        assert_eq!(pool(&books.names[&books.apex]), Some("books-origins"));
        assert_eq!(config.dns.listen.len(), 2);
    }
}
