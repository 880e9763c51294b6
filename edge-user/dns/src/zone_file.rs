//! Zones from RFC 1035 master files: `$ORIGIN`, `$TTL`, `$INCLUDE` (with an origin),
//! relative names, `@`, parentheses across lines, escapes, and every record type, unknown ones
//! in RFC 3597 generic form (`TYPE65000 \# 3 010203`). The text is scanned by NLnet Labs'
//! `domain` crate; a file that does not scan is refused with the file, line, column and reason.
//!
//! Records whose data holds names that answers compress or follow (NS, CNAME, SOA, MX, PTR) and
//! the addresses the fast path serves (A, AAAA) are decoded; every other type is kept as the
//! RDATA bytes and sent as they are, so nothing is lost or re-encoded differently.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use domain::{
    base::{ToName as _, iana::Class, rdata::ComposeRecordData as _},
    zonefile::inplace::{Entry, Zonefile},
};
use hickory_proto::{
    rr::{
        Name, RData, RecordType,
        rdata::{CNAME, NS, NULL, PTR},
    },
    serialize::binary::{BinDecodable as _, BinDecoder, BinEncodable as _, Restrict},
};

use crate::zone::{NameRecords, Zone, canonical_key, check_ttl, digest_of};

/// How deep `$INCLUDE` may nest (a file including itself would never end).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Why a zone file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file at fault (an included one, if the fault is there).
    pub file: PathBuf,
    /// `line:column` of a scanning error; empty for a fault of the zone as a whole.
    pub at: String,
    pub reason: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.at, self.reason)
        }
    }
}

/// One record as read: owner (any case), TTL and data.
struct Loaded {
    owner: Name,
    ttl: u32,
    rdata: RData,
}

/// Loads the zone `apex` (absolute, lower-case) from the master file at `path`, with `apex` as
/// the initial origin.
pub fn load(path: &Path, apex: &Name) -> Result<Zone, Error> {
    let text = std::fs::read(path).map_err(|error| whole(path, error.to_string()))?;
    parse(path, &text, apex)
}

/// The zone `apex` from `text`, the contents of the file at `path` (which names it in errors
/// and anchors relative `$INCLUDE`s).
pub fn parse(path: &Path, text: &[u8], apex: &Name) -> Result<Zone, Error> {
    let origin = domain::base::Name::<Bytes>::from_octets(Bytes::from(
        apex.to_bytes()
            .map_err(|error| whole(path, error.to_string()))?,
    ))
    .map_err(|error| whole(path, format!("apex {apex}: {error}")))?;
    let mut records = Vec::new();
    let mut files = Vec::new();
    read(path, text, origin, 0, (&mut records, &mut files))?;
    let mut zone = assemble(path, apex, records)?;
    zone.source.files = files;
    Ok(zone)
}

/// Appends the records of `text`, the file at `path`, to `out`, following `$INCLUDE`s.
fn read(
    path: &Path,
    text: &[u8],
    origin: domain::base::Name<Bytes>,
    depth: usize,
    (out, files): (&mut Vec<Loaded>, &mut Vec<(PathBuf, u64)>),
) -> Result<(), Error> {
    files.push((path.to_path_buf(), digest_of(text)));
    let mut zonefile = Zonefile::from(text);
    zonefile.set_origin(origin);
    zonefile.set_default_class(Class::IN);
    loop {
        let entry = zonefile.next_entry().map_err(|error| {
            // The scanner's error reads `line:column: reason`.
            let text = error.to_string();
            let (at, reason) = split_position(&text);
            Error {
                file: path.to_path_buf(),
                at,
                reason: reason.to_string(),
            }
        })?;
        match entry {
            None => return Ok(()),
            Some(Entry::Record(record)) => {
                let owner = to_name(&record.owner().to_name::<Bytes>());
                let rtype = RecordType::from(record.rtype().to_int());
                if record.class() != Class::IN {
                    return Err(whole(
                        path,
                        format!(
                            "{owner} {rtype}: class {}: only IN is served",
                            record.class()
                        ),
                    ));
                }
                let ttl = record.ttl().as_secs();
                check_ttl(ttl)
                    .map_err(|reason| whole(path, format!("{owner} {rtype}: {reason}")))?;
                let mut wire = Vec::new();
                record
                    .data()
                    .compose_rdata(&mut wire)
                    .map_err(|error| whole(path, format!("{owner} {rtype}: {error}")))?;
                let rdata = rdata(rtype, wire)
                    .map_err(|reason| whole(path, format!("{owner} {rtype}: {reason}")))?;
                out.push(Loaded { owner, ttl, rdata });
            }
            Some(Entry::Include {
                path: include,
                origin: include_origin,
            }) => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(whole(
                        path,
                        format!("$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}"),
                    ));
                }
                let included = path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(include.to_string());
                let text = std::fs::read(&included).map_err(|error| {
                    whole(path, format!("$INCLUDE {}: {error}", included.display()))
                })?;
                let current = zonefile
                    .origin()
                    .map_err(|error| whole(path, error.to_string()))?;
                read(
                    &included,
                    &text,
                    include_origin.unwrap_or(current),
                    depth + 1,
                    (&mut *out, &mut *files),
                )?;
            }
        }
    }
}

/// `line:column` and the reason of a scanner error message. The scanner reports a value it
/// rejects at the end of its line as column 1 of the next line; that is the line to fix.
fn split_position(text: &str) -> (String, &str) {
    let Some((at, reason)) = text.split_once(": ") else {
        return (String::new(), text);
    };
    match at
        .split_once(':')
        .map(|(l, c)| (l.parse::<usize>(), c.parse::<usize>()))
    {
        Some((Ok(line), Ok(1))) if line > 1 => (format!("{}:end", line - 1), reason),
        Some((Ok(line), Ok(column))) => (format!("{line}:{column}"), reason),
        _ => (String::new(), text),
    }
}

fn whole(path: &Path, reason: String) -> Error {
    Error {
        file: path.to_path_buf(),
        at: String::new(),
        reason,
    }
}

fn to_name(name: &domain::base::Name<Bytes>) -> Name {
    let mut decoder = BinDecoder::new(name.as_slice());
    Name::read(&mut decoder).expect("a scanned name is a valid wire name")
}

/// The record data from its wire form: decoded where answers need its structure, otherwise
/// kept as bytes (RFC 3597).
pub(crate) fn rdata(rtype: RecordType, wire: Vec<u8>) -> Result<RData, String> {
    let decode = || {
        let mut decoder = BinDecoder::new(&wire);
        let rdata = RData::read(&mut decoder, rtype, Restrict::new(wire.len() as u16))
            .map_err(|error| error.to_string())?;
        Ok::<_, String>(rdata)
    };
    Ok(match rtype {
        RecordType::A | RecordType::AAAA => decode()?,
        RecordType::NS => RData::NS(NS(name_of(decode()?)?)),
        RecordType::CNAME => RData::CNAME(CNAME(name_of(decode()?)?)),
        RecordType::PTR => RData::PTR(PTR(name_of(decode()?)?)),
        RecordType::MX | RecordType::SOA => decode()?,
        // DNAME (RFC 6672) would rewrite every name below it; that synthesis is not built.
        RecordType::DNAME => return Err("DNAME is not supported".into()),
        _ if wire.is_empty() => RData::Unknown {
            code: rtype,
            rdata: NULL::new(),
        },
        _ => RData::Unknown {
            code: rtype,
            rdata: NULL::with(wire),
        },
    })
}

fn name_of(rdata: RData) -> Result<Name, String> {
    match rdata {
        RData::NS(NS(name)) | RData::CNAME(CNAME(name)) | RData::PTR(PTR(name)) => Ok(name),
        other => Err(format!("unexpected data {other}")),
    }
}

/// The zone from its records: owners inside the zone, one SOA at the apex, NS records there,
/// and an alias holding nothing else (the checks Knot makes on every zone it loads).
fn assemble(path: &Path, apex: &Name, records: Vec<Loaded>) -> Result<Zone, Error> {
    let soas: Vec<&Loaded> = records
        .iter()
        .filter(|record| record.rdata.record_type() == RecordType::SOA)
        .collect();
    let soa = match soas[..] {
        [one] if one.owner == *apex => one,
        [] => return Err(whole(path, format!("no SOA record at the apex {apex}"))),
        [one] => {
            return Err(whole(
                path,
                format!("the SOA record is at {}, not at the apex {apex}", one.owner),
            ));
        }
        _ => return Err(whole(path, "more than one SOA record".into())),
    };
    let RData::SOA(soa_data) = &soa.rdata else {
        unreachable!("filtered by type")
    };
    let mut zone = Zone::new(apex.clone(), soa_data.clone(), soa.ttl);
    drop(soas);
    // Sorted by owner once (stable: an RRset keeps the file's order), then made a map in one
    // pass: a map insert per record compares names label by label, most of a large zone's load.
    let mut owned = Vec::with_capacity(records.len());
    for record in records {
        let owner = record.owner.to_lowercase();
        if !apex.zone_of(&owner) {
            return Err(whole(path, format!("{owner} is outside the zone {apex}")));
        }
        if record.rdata.record_type() != RecordType::SOA {
            owned.push((canonical_key(&owner), owner, record.ttl, record.rdata));
        }
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<(Name, NameRecords)> = Vec::with_capacity(owned.len());
    let mut last: Option<Vec<u8>> = None;
    for (key, owner, ttl, rdata) in owned {
        if last.as_ref() != Some(&key) {
            names.push((owner, NameRecords::default()));
            last = Some(key);
        }
        names.last_mut().expect("pushed").1.add(ttl, rdata);
    }
    let mut names: BTreeMap<Name, NameRecords> = names.into_iter().collect();
    let apex_records = Arc::make_mut(&mut zone.names)
        .remove(apex)
        .expect("the SOA's owner");
    let at_apex = names.entry(apex.clone()).or_default();
    at_apex.sets.extend(apex_records.sets);
    zone.names = Arc::new(names);
    if !zone.names[apex].has(RecordType::NS) {
        return Err(whole(path, format!("no NS record at the apex {apex}")));
    }
    for (owner, records) in zone.names.iter() {
        let Some(aliases) = records.sets.get(&u16::from(RecordType::CNAME)) else {
            continue;
        };
        if aliases.len() > 1 {
            return Err(whole(path, format!("{owner} has more than one CNAME")));
        }
        if records.sets.len() > 1 {
            return Err(whole(
                path,
                format!("{owner} has a CNAME and other records (RFC 1034 §3.6.2)"),
            ));
        }
    }
    Ok(zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edge-zone-file-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    /// RFC 1035 §5.3's example, with its `$INCLUDE` of a file with another origin.
    #[test]
    fn rfc_1035_example_loads() {
        let dir = temp_dir("rfc1035");
        write(
            &dir,
            "ISI-MAILBOXES.TXT",
            "MOE     MB      A.ISI.EDU.\nLARRY   MB      A.ISI.EDU.\nCURLEY  MB      A.ISI.EDU.\nSTOOGES MG      MOE\n        MG      LARRY\n        MG      CURLEY\n",
        );
        let path = write(
            &dir,
            "ISI.EDU",
            r#"$ORIGIN ISI.EDU.
@   IN  SOA     VENERA      Action\.domains (
                                 20     ; SERIAL
                                 7200   ; REFRESH
                                 600    ; RETRY
                                 3600000; EXPIRE
                                 60)    ; MINIMUM

        NS      A.ISI.EDU.
        NS      VENERA
        NS      VAXA
        MX      10      VENERA
        MX      20      VAXA

A       A       26.3.0.103

VENERA  A       10.1.0.52
        A       128.9.0.32

VAXA    A       10.2.0.27
        A       128.9.0.33

$INCLUDE ISI-MAILBOXES.TXT MAILBOXES.ISI.EDU.
"#,
        );
        let zone = load(&path, &name("isi.edu.")).unwrap();
        assert_eq!(zone.soa.serial, 20);
        assert_eq!(zone.soa.rname, name("Action\\.domains.ISI.EDU."));
        // $TTL absent: the SOA's minimum is not a default TTL in RFC 2308; the scanner takes
        // the last TTL seen, here its default of one hour.
        assert_eq!(zone.soa_ttl, 3600);
        let venera = &zone.names[&name("venera.isi.edu.")];
        assert_eq!(
            venera
                .rrset(&name("venera.isi.edu."), RecordType::A)
                .unwrap()
                .rdatas
                .len(),
            2
        );
        let apex = &zone.names[&name("isi.edu.")];
        assert_eq!(
            apex.rrset(&name("isi.edu."), RecordType::NS)
                .unwrap()
                .rdatas
                .len(),
            3
        );
        let mx = apex.rrset(&name("isi.edu."), RecordType::MX).unwrap();
        assert_eq!(mx.rdatas.len(), 2);
        // The included file's names are relative to the origin its $INCLUDE gave.
        let stooges = &zone.names[&name("stooges.mailboxes.isi.edu.")];
        assert_eq!(stooges.sets[&8].len(), 3, "three MG records (type 8)");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_record_type_keeps_its_data() {
        let dir = temp_dir("types");
        let path = write(
            &dir,
            "example.com.zone",
            r#"$ORIGIN example.com.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.53
t 60 TXT "one" "two words" "\"quoted\" \065"
t 120 TXT "second record"
_sip._tcp SRV 10 60 5060 sip
@ CAA 0 issue "letsencrypt.org"
4.2 PTR host
n NAPTR 100 10 "u" "E2U+sip" "!^.*$!sip:info@example.com!" .
s SSHFP 1 1 123456789abcdef67890123456789abcdef67890
_443._tcp TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
h HTTPS 1 . alpn=h2,h3
x TYPE65000 \# 3 010203
"#,
        );
        let zone = load(&path, &name("example.com.")).unwrap();
        let t = &zone.names[&name("t.example.com.")];
        let txt = t.rrset(&name("t.example.com."), RecordType::TXT).unwrap();
        // TTL per RRset: the last record's, as Knot.
        assert_eq!((txt.ttl, txt.rdatas.len()), (120, 2));
        let RData::Unknown { rdata, .. } = &txt.rdatas[0] else {
            panic!("{:?}", txt.rdatas[0])
        };
        assert_eq!(
            rdata.anything.as_slice(),
            b"\x03one\x09two words\x0a\"quoted\" A"
        );
        for (owner, rtype) in [
            ("_sip._tcp", RecordType::SRV),
            ("@", RecordType::CAA),
            ("4.2", RecordType::PTR),
            ("n", RecordType::NAPTR),
            ("s", RecordType::SSHFP),
            ("_443._tcp", RecordType::TLSA),
            ("h", RecordType::HTTPS),
            ("x", RecordType::Unknown(65000)),
        ] {
            let owner = if owner == "@" {
                name("example.com.")
            } else {
                name(owner).append_domain(&name("example.com.")).unwrap()
            };
            let set = zone.rrset(&owner, rtype);
            assert!(set.is_some(), "{owner} {rtype}");
        }
        let x = zone
            .rrset(&name("x.example.com."), RecordType::Unknown(65000))
            .unwrap();
        assert!(
            matches!(&x.rdatas[0], RData::Unknown { rdata, .. } if rdata.anything.as_slice() == [1, 2, 3])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn broken_files_are_refused_with_line_and_reason() {
        let dir = temp_dir("broken");
        let head =
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n@ NS ns1\n";
        let cases = [
            ("www A 192.0.2\n", "5:end", "expected IPv4 address"),
            ("www A 192.0.2.1\nwww BOGUS 1\n", "6:10", "expected rtype"),
            ("www MX ten mail\n", "5:9", "expected decimal number"),
            ("t TXT \"unterminated\n", "5:", ""),
            ("www CH A 192.0.2.1\n", "5:10", "class"),
            (
                "www CNAME a\nwww A 192.0.2.1\n",
                "",
                "CNAME and other records",
            ),
            ("www.example.org. A 192.0.2.1\n", "", "outside the zone"),
            ("d DNAME other.example.\n", "", "DNAME is not supported"),
            ("$INCLUDE missing.zone\n", "", "No such file"),
        ];
        for (tail, at, reason) in cases {
            let path = write(&dir, "bad.zone", &format!("{head}{tail}"));
            let error = load(&path, &name("example.com.")).unwrap_err();
            assert!(error.at.starts_with(at), "{tail:?}: {error}");
            assert!(error.reason.contains(reason), "{tail:?}: {error}");
            assert!(
                error.to_string().starts_with(&path.display().to_string()),
                "{error}"
            );
        }
        let path = write(&dir, "nosoa.zone", "$ORIGIN example.com.\n@ 300 NS ns1\n");
        let error = load(&path, &name("example.com.")).unwrap_err();
        assert!(error.reason.contains("no SOA"), "{error}");
        let path = write(
            &dir,
            "nons.zone",
            "$ORIGIN example.com.\n@ 300 SOA ns1 h 1 2 3 4 5\n",
        );
        let error = load(&path, &name("example.com.")).unwrap_err();
        assert!(error.reason.contains("no NS"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
