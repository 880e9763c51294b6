//! Zones as the server sees them: validated, names absolute and lower-case, one entry per owner
//! name. Built from [`edge_config::Config`]; a config that does not make sense is refused here
//! with the field at fault.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use edge_common::MAX_ANSWER_RECORDS;
use edge_config::{Config, ConfigError, NameConfig, ZoneConfig};
use edge_steer::Selections;
use hickory_proto::rr::{
    Name, RData, RecordType,
    rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT},
};

use crate::identity::{self, Identity};

/// Longest CNAME chain inside our zones; longer chains (and loops) are refused.
pub const MAX_CNAME_CHAIN: usize = 8;

/// RFC 2181 §8: TTLs (and the SOA timers) are 31-bit values.
const MAX_TTL: u32 = i32::MAX as u32;

/// TXT character-strings are at most 255 bytes (RFC 1035 §3.3).
const TXT_STRING_MAX: usize = 255;

/// Every zone this server is authoritative for, and how it names itself (reloaded with them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    pub zones: Vec<Zone>,
    pub identity: Identity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Absolute, lower-case.
    pub apex: Name,
    /// TTL of the SOA and the apex NS records.
    pub ttl: u32,
    pub soa: SOA,
    /// The apex NS records.
    pub nameservers: Vec<Name>,
    /// Owner name (absolute, lower-case) → its records. Glue of in-zone name servers included.
    pub names: BTreeMap<Name, NameRecords>,
}

/// The records of one owner name, names in them absolute and lower-case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRecords {
    pub ttl: u32,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub cname: Option<Name>,
    /// A delegation (never set at the apex: those NS records are [`Zone::nameservers`]).
    pub ns: Vec<Name>,
    pub mx: Vec<MX>,
    pub txt: Vec<TXT>,
    /// The pool a steered name takes its addresses from (already in `a` and `aaaa`).
    pub pool: Option<String>,
    /// A steered name whose pool has nothing to answer with: SERVFAIL, from userspace only.
    pub unavailable: bool,
}

/// An RRset: the records of one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    /// Absolute, lower-case.
    pub name: Name,
    pub ttl: u32,
    pub rdatas: Vec<RData>,
}

/// The types a name can hold, in the order an ANY query picks its one RRset (RFC 8482).
pub const RECORD_TYPES: [RecordType; 7] = [
    RecordType::CNAME,
    RecordType::A,
    RecordType::AAAA,
    RecordType::NS,
    RecordType::SOA,
    RecordType::MX,
    RecordType::TXT,
];

impl NameRecords {
    /// The rdatas of type `rtype`, empty if there are none.
    fn rdatas(&self, rtype: RecordType) -> Vec<RData> {
        match rtype {
            RecordType::A => self.a.iter().map(|&ip| RData::A(A(ip))).collect(),
            RecordType::AAAA => self.aaaa.iter().map(|&ip| RData::AAAA(AAAA(ip))).collect(),
            RecordType::CNAME => self
                .cname
                .iter()
                .map(|name| RData::CNAME(CNAME(name.clone())))
                .collect(),
            RecordType::NS => self
                .ns
                .iter()
                .map(|name| RData::NS(NS(name.clone())))
                .collect(),
            RecordType::MX => self.mx.iter().cloned().map(RData::MX).collect(),
            RecordType::TXT => self.txt.iter().cloned().map(RData::TXT).collect(),
            _ => Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.a.is_empty()
            && self.aaaa.is_empty()
            && self.cname.is_none()
            && self.ns.is_empty()
            && self.mx.is_empty()
            && self.txt.is_empty()
    }
}

impl Zone {
    /// The RRset of `name` (absolute, lower-case) and `rtype`, the apex SOA and NS included.
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<RrSet> {
        let rdatas = match rtype {
            RecordType::SOA if *name == self.apex => vec![RData::SOA(self.soa.clone())],
            RecordType::NS if *name == self.apex => self
                .nameservers
                .iter()
                .map(|ns| RData::NS(NS(ns.clone())))
                .collect(),
            _ => {
                let records = self.names.get(name)?;
                return Some(RrSet {
                    name: name.clone(),
                    ttl: records.ttl,
                    rdatas: records.rdatas(rtype),
                })
                .filter(|set| !set.rdatas.is_empty());
            }
        };
        Some(RrSet {
            name: name.clone(),
            ttl: self.ttl,
            rdatas,
        })
        .filter(|set| !set.rdatas.is_empty())
    }

    /// Whether `name` owns any record.
    pub fn has_name(&self, name: &Name) -> bool {
        *name == self.apex || self.names.contains_key(name)
    }

    /// Whether `name` exists only as an ancestor of names that own records (RFC 8020: such an
    /// empty non-terminal answers NODATA, not NXDOMAIN).
    pub fn is_empty_non_terminal(&self, name: &Name) -> bool {
        // Canonical order puts a name's descendants right after it.
        self.names
            .range(name.clone()..)
            .next()
            .is_some_and(|(next, _)| next != name && name.zone_of(next))
    }

    /// The delegation (zone cut) at or above `name`, below the apex: its owner and records.
    pub fn delegation(&self, name: &Name) -> Option<(&Name, &NameRecords)> {
        let labels = name.num_labels();
        (self.apex.num_labels() + 1..=labels).find_map(|keep| {
            let ancestor = name.trim_to(usize::from(keep));
            self.names
                .get_key_value(&ancestor)
                .filter(|(_, records)| !records.ns.is_empty())
        })
    }

    /// The negative-answer SOA record's TTL: the lesser of the SOA's own and its minimum
    /// (RFC 2308 §3).
    pub fn negative_ttl(&self) -> u32 {
        self.ttl.min(self.soa.minimum)
    }
}

impl Zones {
    /// Validates the zones of `config`, read from `path`.
    pub fn build(path: &Path, config: &Config) -> Result<Self, ConfigError> {
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
            let built = build_zone(config, z, zone, apex).map_err(|(f, r)| refuse(f, r))?;
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
        let zones = Self { zones, identity };
        zones.check_nesting(config).map_err(|(f, r)| refuse(f, r))?;
        zones.check_targets(config).map_err(|(f, r)| refuse(f, r))?;
        Ok(zones)
    }

    /// A copy where every steered name answers as `selections` says for its pool: its `a` and
    /// `aaaa` from the pool's addresses, its TTL the pool's TTL (or its own, if lower), and
    /// SERVFAIL when the pool's addresses are empty. Pools without a selection keep their
    /// configured answer.
    pub fn with_selections(&self, selections: &Selections) -> Self {
        let mut zones = self.clone();
        for zone in &mut zones.zones {
            for records in zone.names.values_mut() {
                let Some(pool) = &records.pool else {
                    continue;
                };
                let Some(addresses) = selections.addresses.get(pool) else {
                    continue;
                };
                records.a = addresses
                    .iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V4(ip) => Some(*ip),
                        IpAddr::V6(_) => None,
                    })
                    .take(MAX_ANSWER_RECORDS)
                    .collect();
                records.aaaa = addresses
                    .iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V6(ip) => Some(*ip),
                        IpAddr::V4(_) => None,
                    })
                    .take(MAX_ANSWER_RECORDS)
                    .collect();
                records.unavailable = addresses.is_empty();
                if let Some(&ttl) = selections.ttls.get(pool) {
                    records.ttl = records.ttl.min(ttl);
                }
            }
        }
        zones
    }

    /// Every owner name with its records, zone by zone.
    pub fn names(&self) -> impl Iterator<Item = (&Name, &NameRecords)> {
        self.zones.iter().flat_map(|zone| zone.names.iter())
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
            for name in zone.names.keys() {
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

    /// CNAME chains end within [`MAX_CNAME_CHAIN`] steps; NS and MX targets are not aliases
    /// (RFC 2181 §10.3).
    fn check_targets(&self, config: &Config) -> Result<(), Refusal> {
        for (z, zone) in self.zones.iter().enumerate() {
            let field = |owner: &Name, sub: &str| name_field(config, z, &zone.apex, owner) + sub;
            for (owner, records) in &zone.names {
                if let Some(target) = &records.cname {
                    let mut chain = vec![owner.clone(), target.clone()];
                    while let Some(next) = self.alias_of(chain.last().expect("not empty")) {
                        if chain.contains(&next) {
                            chain.push(next);
                            return Err((
                                field(owner, ".cname"),
                                format!("CNAME loop: {}", join(&chain)),
                            ));
                        }
                        chain.push(next);
                        if chain.len() > MAX_CNAME_CHAIN + 1 {
                            return Err((
                                field(owner, ".cname"),
                                format!(
                                    "CNAME chain longer than {MAX_CNAME_CHAIN}: {}",
                                    join(&chain)
                                ),
                            ));
                        }
                    }
                }
                let targets = records
                    .ns
                    .iter()
                    .chain(records.mx.iter().map(|mx| &mx.exchange));
                for target in targets {
                    if self.alias_of(target).is_some() {
                        return Err((
                            field(owner, ""),
                            format!("{target} is an alias (CNAME); NS and MX must name the target"),
                        ));
                    }
                }
            }
            for target in &zone.nameservers {
                if self.alias_of(target).is_some() {
                    return Err((
                        format!("zones[{z}].nameservers"),
                        format!("{target} is an alias (CNAME); NS must name the target"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The CNAME target of `name` if one of our zones makes it an alias.
    fn alias_of(&self, name: &Name) -> Option<Name> {
        self.find(name)?.names.get(name)?.cname.clone()
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

fn join(chain: &[Name]) -> String {
    chain
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Field suffix and reason of a refusal inside one zone.
type Refusal = (String, String);

fn build_zone(config: &Config, z: usize, zone: &ZoneConfig, apex: Name) -> Result<Zone, Refusal> {
    let at = |sub: String| format!("zones[{z}]{sub}");
    check_ttl(zone.ttl).map_err(|reason| (at(".ttl".into()), reason))?;
    let mut names: BTreeMap<Name, NameRecords> = BTreeMap::new();
    let mut defined_by: BTreeMap<Name, String> = BTreeMap::new();

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
            defined_by.insert(name.clone(), field.clone());
            names.insert(
                name.clone(),
                NameRecords {
                    ttl: zone.ttl,
                    a,
                    aaaa,
                    ..NameRecords::default()
                },
            );
        }
        nameservers.push(name);
    }

    for (n, entry) in zone.names.iter().enumerate() {
        let field = at(format!(".names[{n}]"));
        let owner = owner_name(&apex, &entry.name).map_err(|r| (format!("{field}.name"), r))?;
        if let Some(first) = defined_by.get(&owner) {
            return Err((
                format!("{field}.name"),
                format!("{owner} is already defined by {first}"),
            ));
        }
        let records = name_records(config, &apex, &owner, entry, zone.ttl)
            .map_err(|(sub, reason)| (format!("{field}{sub}"), reason))?;
        defined_by.insert(owner.clone(), field);
        names.insert(owner, records);
    }

    // Below a zone cut only glue is allowed: anything else would never be answered.
    for (owner, records) in &names {
        let cut = (apex.num_labels() + 1..owner.num_labels()).find_map(|keep| {
            let ancestor = owner.trim_to(usize::from(keep));
            names
                .get(&ancestor)
                .filter(|r| !r.ns.is_empty())
                .map(|_| ancestor)
        });
        if let Some(cut) = cut {
            let glue_only = records.cname.is_none()
                && records.ns.is_empty()
                && records.mx.is_empty()
                && records.txt.is_empty()
                && records.pool.is_none();
            if !glue_only {
                return Err((
                    defined_by[owner].clone(),
                    format!(
                        "{owner} is below the delegation at {cut}: only glue (a, aaaa) is allowed there"
                    ),
                ));
            }
        }
    }

    let soa_config = &zone.soa;
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

    Ok(Zone {
        apex,
        ttl: zone.ttl,
        soa,
        nameservers,
        names,
    })
}

fn check_ttl(ttl: u32) -> Result<(), String> {
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
    let mut records = NameRecords {
        ttl,
        a: entry.a.clone(),
        aaaa: entry.aaaa.clone(),
        ..NameRecords::default()
    };
    if let Some(pool_name) = &entry.pool {
        if !records.a.is_empty() || !records.aaaa.is_empty() {
            return Err((
                ".pool".into(),
                "a steered name takes its addresses from the pool: drop a and aaaa".into(),
            ));
        }
        let pool = config
            .pool(pool_name)
            .ok_or_else(|| (".pool".to_string(), format!("no pool called {pool_name}")))?;
        let (a, aaaa) = split_addresses(pool.members.iter().map(|member| member.address))
            .map_err(|reason| (".pool".to_string(), format!("pool {pool_name}: {reason}")))?;
        records.a = a;
        records.aaaa = aaaa;
        records.pool = Some(pool_name.clone());
    }
    if let Some(text) = &entry.cname {
        if owner == apex {
            return Err((
                ".cname".into(),
                "the apex cannot be an alias: it holds the SOA and NS records".into(),
            ));
        }
        records.cname = Some(target_name(apex, text).map_err(|r| (".cname".to_string(), r))?);
    }
    for (i, text) in entry.ns.iter().enumerate() {
        if owner == apex {
            return Err((
                ".ns".into(),
                "the apex's NS records are the zone's nameservers".into(),
            ));
        }
        let target = target_name(apex, text).map_err(|r| (format!(".ns[{i}]"), r))?;
        if records.ns.contains(&target) {
            return Err((format!(".ns[{i}]"), format!("{target} is listed twice")));
        }
        records.ns.push(target);
    }
    for (i, mx) in entry.mx.iter().enumerate() {
        let exchange =
            target_name(apex, &mx.exchange).map_err(|r| (format!(".mx[{i}].exchange"), r))?;
        records.mx.push(MX::new(mx.preference, exchange));
    }
    records.txt = entry
        .txt
        .iter()
        .map(|text| TXT::new(split_txt(text)))
        .collect();

    let others = !records.a.is_empty()
        || !records.aaaa.is_empty()
        || !records.mx.is_empty()
        || !records.txt.is_empty();
    if records.cname.is_some() && (others || !records.ns.is_empty()) {
        return Err((
            ".cname".into(),
            "an alias (CNAME) cannot hold other records (RFC 1034 §3.6.2)".into(),
        ));
    }
    if !records.ns.is_empty() && others {
        return Err((
            ".ns".into(),
            "a delegated name holds only its NS records; put glue on the name servers' names"
                .into(),
        ));
    }
    if records.is_empty() {
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
    let (mut a, mut aaaa) = (Vec::new(), Vec::new());
    for address in addresses {
        match address {
            IpAddr::V4(ip) if !a.contains(&ip) => a.push(ip),
            IpAddr::V6(ip) if !aaaa.contains(&ip) => aaaa.push(ip),
            _ => return Err(format!("duplicate address {address}")),
        }
    }
    if a.len() > MAX_ANSWER_RECORDS || aaaa.len() > MAX_ANSWER_RECORDS {
        return Err(format!(
            "at most {MAX_ANSWER_RECORDS} addresses of each family per name"
        ));
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
            .map(|(name, r)| (name.to_string(), r.ttl))
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
        assert_eq!(
            zone.nameservers,
            [name("ns1.example.com."), name("ns.example.net.")]
        );
        assert_eq!(zone.soa.mname, name("ns1.example.com."));
        assert_eq!(zone.soa.serial, 7);
        assert_eq!(zone.negative_ttl(), 30);
        let glue = &zone.names[&name("ns1.example.com.")];
        assert_eq!(glue.a, [Ipv4Addr::new(192, 0, 2, 53)]);
        assert_eq!(glue.aaaa, ["2001:db8::53".parse::<Ipv6Addr>().unwrap()]);
        // A steered name answers with its pool's members, per family, in configured order.
        let shop = &zone.names[&name("shop.example.com.")];
        assert_eq!(shop.pool.as_deref(), Some("shop-origins"));
        assert_eq!(
            shop.a,
            [Ipv4Addr::new(192, 0, 2, 101), Ipv4Addr::new(192, 0, 2, 102)]
        );
        assert_eq!(shop.aaaa.len(), 1);
        assert_eq!(shop.ttl, 20);
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
        let records = &steered.zones[0].names[&shop];
        assert_eq!(records.a, [Ipv4Addr::new(192, 0, 2, 102)]);
        assert_eq!(records.aaaa.len(), 1);
        assert_eq!((records.ttl, records.unavailable), (7, false));
        // Only steered names change.
        let mail = name("mail.example.com.");
        assert_eq!(steered.zones[0].names[&mail], zones.zones[0].names[&mail]);
        selections.ttls.insert("shop-origins".into(), 60);
        assert_eq!(
            zones.with_selections(&selections).zones[0].names[&shop].ttl,
            20
        );
        selections
            .addresses
            .insert("shop-origins".into(), Vec::new());
        let down = zones.with_selections(&selections);
        let records = &down.zones[0].names[&shop];
        assert!(records.unavailable && records.a.is_empty() && records.aaaa.is_empty());
        assert!(
            crate::fast_path::entries(&down).unwrap().len()
                < crate::fast_path::entries(&zones).unwrap().len()
        );
    }

    #[test]
    fn long_txt_is_split_into_strings() {
        let long = "x".repeat(300);
        let zones = build(&format!(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"t\"\ntxt = [\"{long}\"]\n"
        ))
        .unwrap();
        let txt = &zones.zones[0].names[&name("t.example.com.")].txt[0];
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
    fn cname_loops_and_long_chains_are_refused() {
        let error = build(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"a\"\ncname = \"b\"\n[[zones.names]]\nname = \"b\"\ncname = \"A\"\n",
        )
        .unwrap_err();
        assert_eq!(error.field, "zones[0].names[0].cname", "{error}");
        assert!(
            error
                .reason
                .contains("CNAME loop: a.example.com. → b.example.com. → a.example.com."),
            "{error}"
        );

        let mut chain = String::from("[[zones]]\napex = \"example.com\"\n");
        for i in 0..=MAX_CNAME_CHAIN {
            chain += &format!("[[zones.names]]\nname = \"c{i}\"\ncname = \"c{}\"\n", i + 1);
        }
        chain += &format!(
            "[[zones.names]]\nname = \"c{}\"\na = [\"192.0.2.1\"]\n",
            MAX_CNAME_CHAIN + 1
        );
        let error = build(&chain).unwrap_err();
        assert!(error.reason.contains("longer than"), "{error}");
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
        assert_eq!(shop.pool.as_deref(), Some("shop-origins"));
        let books = zones.find(&name("cdn.books.example.")).unwrap();
        assert_eq!(
            books.names[&books.apex].pool.as_deref(),
            Some("books-origins")
        );
        assert_eq!(config.dns.listen.len(), 2);
    }
}
