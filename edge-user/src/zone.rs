//! Zones as the server sees them: validated, names absolute and lower-case, one entry per owner
//! name. Built from [`crate::config::Config`]; a config that does not make sense is refused here
//! with the field at fault.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use edge_common::MAX_ANSWER_RECORDS;
use hickory_proto::rr::Name;

use crate::config::{Config, ConfigError, NameConfig};

/// Every zone this server is authoritative for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zones {
    pub zones: Vec<Zone>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Absolute, lower-case.
    pub apex: Name,
    /// Owner name (absolute, lower-case) → its records.
    pub names: BTreeMap<Name, NameRecords>,
}

/// The records of one owner name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecords {
    pub ttl: u32,
    pub a: Vec<Ipv4Addr>,
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
            let mut names = BTreeMap::new();
            let mut first_index = BTreeMap::new();
            for (n, entry) in zone.names.iter().enumerate() {
                let field = format!("zones[{z}].names[{n}]");
                let owner = owner_name(&apex, &entry.name)
                    .map_err(|reason| refuse(format!("{field}.name"), reason))?;
                if let Some(first) = first_index.insert(owner.clone(), n) {
                    return Err(refuse(
                        format!("{field}.name"),
                        format!("{owner} is already defined by zones[{z}].names[{first}]"),
                    ));
                }
                let records = name_records(entry, zone.ttl)
                    .map_err(|(sub, reason)| refuse(format!("{field}{sub}"), reason))?;
                names.insert(owner, records);
            }
            zones.push(Zone { apex, names });
        }
        Ok(Self { zones })
    }

    /// Every owner name with its records, zone by zone.
    pub fn names(&self) -> impl Iterator<Item = (&Name, &NameRecords)> {
        self.zones.iter().flat_map(|zone| zone.names.iter())
    }
}

fn parse_name(text: &str) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_ascii(text)
}

/// `@` is the apex, a trailing dot makes a name absolute, anything else is relative to the apex.
fn owner_name(apex: &Name, text: &str) -> Result<Name, String> {
    if text == "@" {
        return Ok(apex.clone());
    }
    let name = parse_name(text).map_err(|error| error.to_string())?;
    let owner = if name.is_fqdn() {
        name
    } else {
        name.append_domain(apex)
            .map_err(|error| error.to_string())?
    }
    .to_lowercase();
    if !apex.zone_of(&owner) {
        return Err(format!("{owner} is outside the zone {apex}"));
    }
    Ok(owner)
}

fn name_records(entry: &NameConfig, zone_ttl: u32) -> Result<NameRecords, (String, String)> {
    if entry.a.is_empty() {
        return Err((String::new(), "has no records".to_string()));
    }
    if entry.a.len() > MAX_ANSWER_RECORDS {
        return Err((
            ".a".to_string(),
            format!("at most {MAX_ANSWER_RECORDS} addresses per name"),
        ));
    }
    for (i, address) in entry.a.iter().enumerate() {
        if entry.a[..i].contains(address) {
            return Err((format!(".a[{i}]"), format!("duplicate address {address}")));
        }
    }
    Ok(NameRecords {
        ttl: entry.ttl.unwrap_or(zone_ttl),
        a: entry.a.clone(),
    })
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
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
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
}
