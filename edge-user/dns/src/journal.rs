//! What dynamic updates become across reloads and restarts, after Knot DNS's journal: each
//! applied update is appended to its zone's journal (`<journal_dir>/<apex>.journal`) and on
//! disk before it is answered; at a start the journal is replayed over the zone as built from
//! its source, if the journal was written over that same source (its fingerprint heads the
//! file), and dropped with a warning if the source changed since: then the source says what the
//! zone holds. A reload keeps a zone whose source is unchanged (with its updates), so its
//! journal stays; a zone rebuilt from a changed source, or no longer served, loses its journal,
//! again with a warning. Nothing is dropped without a log line.
//!
//! The file: one line `edge-journal 1 <apex> <fingerprint>`, then one entry per update: a
//! 4-byte length and an UPDATE message (RFC 2136 wire format) whose update section holds, for
//! each changed name, "delete all RRsets" followed by every record the name holds now.
//! Replayed, a journal is rewritten as one entry (the names changed since the build).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{DNSClass, Name, Record, RecordType},
};
use tracing::{info, warn};

use crate::{
    update::{Change, wire},
    zone::{NameRecords, Zone, Zones},
    zone_file,
};

const MAGIC: &str = "edge-journal 1";

/// The journals of the zones, in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, apex: &Name) -> PathBuf {
        let name = apex.to_string();
        let name = name.trim_end_matches('.');
        let name = if name.is_empty() { "root" } else { name };
        self.dir.join(format!("{name}.journal"))
    }

    /// Appends `change`, made to `zone`, to the zone's journal and waits until it is on disk.
    pub fn append(&self, zone: &Zone, change: &Change) -> io::Result<()> {
        let path = self.path(&zone.apex);
        let mut file = match OpenOptions::new().append(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)?;
                let mut file = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .open(&path)?;
                file.write_all(header(zone).as_bytes())?;
                file.sync_all()?;
                File::open(&self.dir)?.sync_all()?;
                file
            }
            Err(error) => return Err(error),
        };
        file.write_all(&framed(change)?)?;
        file.sync_data()
    }

    /// Replays each zone's journal over it, as built from its source: at a start. A journal
    /// written over another source, or for a zone no longer served, is removed (logged).
    pub fn replay(&self, zones: &mut Zones) {
        for zone in &mut zones.zones {
            let path = self.path(&zone.apex);
            let text = match fs::read(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => {
                    warn!(zone = %zone.apex, "journal {} unreadable, updates not replayed: {error}", path.display());
                    continue;
                }
            };
            let Some(body) = text.strip_prefix(header(zone).as_bytes()) else {
                drop_journal(
                    &path,
                    &zone.apex,
                    "the zone's source changed since its updates were applied",
                );
                continue;
            };
            let (changes, torn) = entries(body);
            let count = changes.len();
            for change in &changes {
                zone.apply(change);
            }
            if torn {
                warn!(zone = %zone.apex, "journal {} ends in a partial entry (a write cut short): it was never acknowledged, and is left out", path.display());
            }
            info!(zone = %zone.apex, updates = count, names = zone.updated.len(), serial = zone.soa.serial, "journal replayed");
            if let Err(error) = self.compact(zone) {
                warn!(zone = %zone.apex, "rewriting journal {}: {error}", path.display());
            }
        }
        self.reconcile(zones);
    }

    /// Removes the journals of zones no longer served, or rebuilt from a changed source (their
    /// updates are gone with the zone they applied to): after a reload.
    pub fn reconcile(&self, zones: &Zones) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_none_or(|extension| extension != "journal")
            {
                continue;
            }
            let mut first = [0; 512];
            let read = File::open(&path)
                .and_then(|mut file| file.read(&mut first))
                .unwrap_or(0);
            let line = first[..read]
                .split(|&byte| byte == b'\n')
                .next()
                .unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let Some(apex) = line
                .strip_prefix(MAGIC)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|apex| Name::from_ascii(apex).ok())
            else {
                continue;
            };
            match zones.zones.iter().find(|zone| zone.apex == apex) {
                None => drop_journal(&path, &apex, "the zone is no longer served"),
                Some(zone) if header(zone).trim_end() != line => drop_journal(
                    &path,
                    &apex,
                    "the zone's source changed: it holds what the source says now",
                ),
                Some(_) => {}
            }
        }
    }

    /// Rewrites the journal of `zone` as one entry: its names changed since it was built.
    fn compact(&self, zone: &Zone) -> io::Result<()> {
        let path = self.path(&zone.apex);
        let temporary = path.with_extension("journal.new");
        let change = Change {
            apex: zone.apex.clone(),
            names: zone
                .updated
                .iter()
                .map(|(name, now)| (name.clone(), now.clone()))
                .collect(),
        };
        let mut file = File::create(&temporary)?;
        file.write_all(header(zone).as_bytes())?;
        if !change.names.is_empty() {
            file.write_all(&framed(&change)?)?;
        }
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(&self.dir)?.sync_all()
    }
}

fn drop_journal(path: &Path, apex: &Name, why: &str) {
    let updates = fs::read(path)
        .ok()
        .and_then(|text| {
            let start = text.iter().position(|&byte| byte == b'\n')? + 1;
            Some(entries(&text[start..]).0.len())
        })
        .unwrap_or(0);
    warn!(zone = %apex, updates, "{why}: the updates in journal {} are dropped", path.display());
    if let Err(error) = fs::remove_file(path) {
        warn!(zone = %apex, "removing journal {}: {error}", path.display());
    }
}

/// The first line of a journal over `zone` as built from its source.
fn header(zone: &Zone) -> String {
    format!("{MAGIC} {} {:016x}\n", zone.apex, zone.source.fingerprint())
}

/// `change` as a journal entry.
fn framed(change: &Change) -> io::Result<Vec<u8>> {
    let message = encode(change).map_err(io::Error::other)?;
    let mut bytes = (message.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&message);
    Ok(bytes)
}

/// The changes of a journal's entries, and whether it ends in a partial one.
fn entries(mut body: &[u8]) -> (Vec<Change>, bool) {
    let mut changes = Vec::new();
    while !body.is_empty() {
        let Some((length, rest)) = body.split_first_chunk::<4>() else {
            return (changes, true);
        };
        let length = u32::from_be_bytes(*length) as usize;
        let Some(message) = rest.get(..length) else {
            return (changes, true);
        };
        match decode(message) {
            Some(change) => changes.push(change),
            None => return (changes, true),
        }
        body = &rest[length..];
    }
    (changes, false)
}

/// `change` as an UPDATE message: each name deleted, then its records added.
fn encode(change: &Change) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let mut message = Message::new(0, MessageType::Query, OpCode::Update);
    message.add_query(Query::query(change.apex.clone(), RecordType::SOA));
    for (name, now) in &change.names {
        let mut delete = Record::update0(name.clone(), 0, RecordType::ANY);
        delete.dns_class = DNSClass::ANY;
        message.add_authority(delete);
        for (&rtype, set) in now.iter().flat_map(|records| records.sets.iter()) {
            for rdata in set.rdatas().iter() {
                debug_assert_eq!(u16::from(rdata.record_type()), rtype);
                message.add_authority(Record::from_rdata(name.clone(), set.ttl, rdata.clone()));
            }
        }
    }
    message.to_vec()
}

fn decode(bytes: &[u8]) -> Option<Change> {
    let message = Message::from_vec(bytes).ok()?;
    let apex = message.queries.first()?.name().clone();
    let mut names: Vec<(Name, Option<NameRecords>)> = Vec::new();
    for record in &message.authorities {
        if record.dns_class == DNSClass::ANY {
            names.push((record.name.clone(), None));
            continue;
        }
        let (_, now) = names.last_mut()?;
        // Read back as a zone file reads the same data.
        let rdata = zone_file::rdata(record.record_type(), wire(&record.data).ok()?).ok()?;
        now.get_or_insert_with(NameRecords::default)
            .add(record.ttl, rdata);
    }
    Some(Change { apex, names })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use edge_config::Config;
    use hickory_proto::rr::{RData, rdata::A};

    use super::*;

    fn zones(dir: &Path, www: &str) -> Zones {
        let path = dir.join("edge.toml");
        let text = format!(
            "[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [\"{www}\"]\n\
             [[zones.names]]\nname = \"old\"\ntxt = [\"gone soon\"]\n"
        );
        Zones::build(&path, &Config::parse(&path, &text).unwrap()).unwrap()
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    /// A change as an update makes it: `new` added, `old` deleted, the serial bumped.
    fn change(zone: &Zone, serial: u32, last: u8) -> Change {
        let mut new = NameRecords::default();
        new.add(60, RData::A(A(Ipv4Addr::new(192, 0, 2, last))));
        let mut apex = zone.stored(&zone.apex).unwrap().clone();
        let mut soa = zone.soa.clone();
        soa.serial = serial;
        apex.sets.remove(&u16::from(RecordType::SOA));
        apex.add(zone.soa_ttl, RData::SOA(soa));
        Change {
            apex: zone.apex.clone(),
            names: vec![
                (zone.apex.clone(), Some(apex)),
                (name("new.example.com."), Some(new)),
                (name("old.example.com."), None),
            ],
        }
    }

    #[test]
    fn a_journal_is_replayed_over_the_same_source_and_dropped_over_another() {
        let dir = std::env::temp_dir().join(format!("edge-journal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let journal = Journal::new(&dir.join("journal"));
        let mut running = zones(&dir, "192.0.2.1");
        for (serial, last) in [(2, 5), (3, 6)] {
            let change = change(&running.zones[0], serial, last);
            journal.append(&running.zones[0], &change).unwrap();
            running.zones[0].apply(&change);
        }
        // A restart: the zone as its source builds it, then the journal.
        let mut restarted = zones(&dir, "192.0.2.1");
        journal.replay(&mut restarted);
        assert_eq!(restarted, running);
        assert_eq!(restarted.zones[0].soa.serial, 3);
        let new = restarted.zones[0]
            .stored(&name("new.example.com."))
            .unwrap();
        assert_eq!(
            new.sets[&1].rdatas()[0],
            RData::A(A(Ipv4Addr::new(192, 0, 2, 6)))
        );
        assert!(
            restarted.zones[0]
                .stored(&name("old.example.com."))
                .is_none()
        );
        // Replayed, the journal is one entry, and replays to the same again.
        let path = dir.join("journal/example.com.journal");
        let text = fs::read(&path).unwrap();
        let body = &text[text.iter().position(|&byte| byte == b'\n').unwrap() + 1..];
        assert_eq!(entries(body).0.len(), 1);
        let mut again = zones(&dir, "192.0.2.1");
        journal.replay(&mut again);
        assert_eq!(again, running);

        // A torn last entry (a write cut short) is left out; the rest stays.
        let change = change(&running.zones[0], 4, 7);
        journal.append(&running.zones[0], &change).unwrap();
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() - 3]).unwrap();
        let mut torn = zones(&dir, "192.0.2.1");
        journal.replay(&mut torn);
        assert_eq!(torn, running);

        // The source changed: the journal is dropped, the zone is what the source says.
        let mut changed = zones(&dir, "192.0.2.9");
        journal.replay(&mut changed);
        assert_eq!(changed, zones(&dir, "192.0.2.9"));
        assert!(!path.exists());
        fs::remove_dir_all(dir).unwrap();
    }
}
