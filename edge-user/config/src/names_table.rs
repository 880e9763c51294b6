//! A fast path for the `[[zones.names]]` tables of large zones. The toml crate builds a table of
//! spanned keys and values for every name before serde sees it: for a million names that is
//! seconds and gigabytes. Name tables in the plain form that generated configs use (one
//! `key = value` a line; keys `name`, `ttl`, `a`, `aaaa`, `cname` and `pool`; strings without
//! escapes; arrays on one line) are read here line by line and left out of the text the toml
//! crate parses. A config whose name tables hold anything else is parsed whole by the toml
//! crate, and so is one that the rest does not parse, so that every refusal, with its field and
//! position, stays the toml crate's.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use crate::NameConfig;

/// A config's text split into the name tables read here and the rest, for the toml crate.
#[derive(Debug)]
pub(crate) struct Split {
    /// The text without the name tables.
    pub rest: String,
    /// The `[[zones]]` tables the text opens, in order.
    pub zones: usize,
    /// The name tables read, by the index of the `[[zones]]` table they belong to (one list
    /// per zone up to the last that has any), each in order.
    pub names: Vec<Vec<NameConfig>>,
}

/// Splits `text`; `None` when something in it is not in the plain form, or could make a line
/// mean something else than it seems (a multi-line string): the caller then parses it whole.
/// Without `read_names`, the name tables are left out unread, whatever their form.
pub(crate) fn split(text: &str, read_names: bool) -> Option<Split> {
    let mut rest = String::with_capacity(text.len().min(1 << 16));
    let mut zones: usize = 0;
    let mut names = Vec::new();
    let mut current: Option<Entry> = None;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_matches([' ', '\t']);
        // A multi-line string could hide lines, or make them: only in the rest, since a name
        // table's lines are read strictly (a string there begins and ends on its line).
        let multi_line = || line.contains("\"\"\"") || line.contains("'''");
        if trimmed.starts_with('[') {
            if let Some(entry) = current.take()
                && read_names
            {
                push(&mut names, zones.checked_sub(1)?, entry.finish()?);
            }
            match header(trimmed)? {
                Header::Names => {
                    current = Some(Entry::default());
                    continue;
                }
                Header::Zone => zones += 1,
                Header::Other => {}
            }
        } else if let Some(entry) = &mut current {
            if read_names {
                entry.line(trimmed)?;
            } else if multi_line() {
                return None;
            }
            continue;
        }
        if multi_line() {
            return None;
        }
        rest.push_str(raw);
        rest.push('\n');
    }
    if let Some(entry) = current.take()
        && read_names
    {
        push(&mut names, zones.checked_sub(1)?, entry.finish()?);
    }
    Some(Split { rest, zones, names })
}

/// Adds `name` to the list of zone `z`.
fn push(names: &mut Vec<Vec<NameConfig>>, z: usize, name: NameConfig) {
    if names.len() <= z {
        names.resize_with(z + 1, Vec::new);
    }
    names[z].push(name);
}

enum Header {
    /// `[[zones.names]]`
    Names,
    /// `[[zones]]`
    Zone,
    /// Any other table, or a line of a multi-line array that begins with `[`.
    Other,
}

/// What a line beginning with `[` opens; `None` for a form of the zones' headers other than the
/// plain one (`[[ zones ]]`, `[[zones.names.mx]]`, quoted keys), which the toml crate reads.
fn header(line: &str) -> Option<Header> {
    let header = match line.split_once('#') {
        Some((header, comment)) => {
            plain_comment(comment)?;
            header.trim_end_matches([' ', '\t'])
        }
        None => line,
    };
    match header {
        "[[zones.names]]" => Some(Header::Names),
        "[[zones]]" => Some(Header::Zone),
        "[zones.soa]" | "[[zones.nameservers]]" => Some(Header::Other),
        _ if header.contains("zones") => None,
        _ => Some(Header::Other),
    }
}

/// A comment holds no control character but tab (TOML 1.0).
fn plain_comment(comment: &str) -> Option<()> {
    (!comment.chars().any(|c| c != '\t' && c.is_control())).then_some(())
}

/// One name table as read so far.
#[derive(Default)]
struct Entry {
    name: Option<String>,
    ttl: Option<u32>,
    a: Option<Vec<Ipv4Addr>>,
    aaaa: Option<Vec<Ipv6Addr>>,
    cname: Option<String>,
    pool: Option<String>,
}

impl Entry {
    /// Reads one line of the table (trimmed); `None` if it is not in the plain form.
    fn line(&mut self, line: &str) -> Option<()> {
        if line.is_empty() {
            return Some(());
        }
        if let Some(comment) = line.strip_prefix('#') {
            return plain_comment(comment);
        }
        let (key, value) = line.split_once('=')?;
        let key = key.trim_end_matches([' ', '\t']);
        let mut value = Value {
            text: value.trim_start_matches([' ', '\t']),
        };
        // A key given twice is the toml crate's error to report.
        match key {
            "name" if self.name.is_none() => self.name = Some(value.string()?.to_string()),
            "cname" if self.cname.is_none() => self.cname = Some(value.string()?.to_string()),
            "pool" if self.pool.is_none() => self.pool = Some(value.string()?.to_string()),
            "ttl" if self.ttl.is_none() => self.ttl = Some(value.integer()?),
            "a" if self.a.is_none() => self.a = Some(value.addresses()?),
            "aaaa" if self.aaaa.is_none() => self.aaaa = Some(value.addresses()?),
            _ => return None,
        }
        value.end()
    }

    fn finish(self) -> Option<NameConfig> {
        Some(NameConfig {
            name: self.name?,
            ttl: self.ttl,
            a: self.a.unwrap_or_default(),
            aaaa: self.aaaa.unwrap_or_default(),
            cname: self.cname,
            ns: Vec::new(),
            mx: Vec::new(),
            txt: Vec::new(),
            pool: self.pool,
        })
    }
}

/// The value part of a line, read from the front.
struct Value<'a> {
    text: &'a str,
}

impl<'a> Value<'a> {
    fn skip_space(&mut self) {
        self.text = self.text.trim_start_matches([' ', '\t']);
    }

    /// A basic string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        let inner = self.text.strip_prefix('"')?;
        let end = inner.find(['"', '\\'])?;
        if inner.as_bytes()[end] != b'"' {
            return None;
        }
        let string = &inner[..end];
        if string.chars().any(|c| c != '\t' && c.is_control()) {
            return None;
        }
        self.text = &inner[end + 1..];
        Some(string)
    }

    /// A decimal integer without sign, separators or leading zeros, within u32.
    fn integer(&mut self) -> Option<u32> {
        let digits = self
            .text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.text.len());
        let number = &self.text[..digits];
        if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
            return None;
        }
        self.text = &self.text[digits..];
        number.parse().ok()
    }

    /// An array of strings on one line, each an address.
    fn addresses<T: FromStr>(&mut self) -> Option<Vec<T>> {
        self.text = self.text.strip_prefix('[')?;
        let mut addresses = Vec::new();
        loop {
            self.skip_space();
            if let Some(after) = self.text.strip_prefix(']') {
                self.text = after;
                return Some(addresses);
            }
            addresses.push(self.string()?.parse().ok()?);
            self.skip_space();
            if let Some(after) = self.text.strip_prefix(',') {
                self.text = after;
            } else if !self.text.starts_with(']') {
                return None;
            }
        }
    }

    /// Nothing but space and a comment after the value.
    fn end(mut self) -> Option<()> {
        self.skip_space();
        match self.text.strip_prefix('#') {
            Some(comment) => plain_comment(comment),
            None => self.text.is_empty().then_some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    /// What the toml crate alone makes of `text`: the config, or the refusal.
    fn whole(text: &str) -> String {
        let path = Path::new("edge.toml");
        format!(
            "{:?}",
            Config::deserialize_toml(path, text).and_then(|config| config.checked(path))
        )
    }

    fn parsed(text: &str) -> String {
        format!("{:?}", Config::parse(Path::new("edge.toml"), text))
    }

    const PLAIN: &str = "[xdp]\ninterface = \"eth0\"\n\n[[pools]]\nname = \"p\"\nkind = \"origin\"\n\
        [[pools.members]]\nname = \"m\"\naddress = \"192.0.2.9\"\n\n\
        [[zones]]\napex = \"a.example\"\nttl = 60\n\n\
        [[zones.names]]\nname = \"www\"\na = [\"192.0.2.1\", \"192.0.2.2\",]\n# a comment\n\n\
        [[zones.names]] # the second\nname=\"v6\"\r\naaaa = [ \"2001:db8::1\" ]\nttl = 0\n\
        [zones.soa]\nrname = \"hostmaster\"\n\
        [[zones.names]]\nname = \"alias\"\ncname = \"www\"   # to www\n\
        [[zones]]\napex = \"b.example\"\n[[zones.nameservers]]\nname = \"ns.example.net.\"\n\
        [[zones.names]]\n\tname = \"shop\"\n\tpool = \"p\"\n\tttl = 4294967295\n";

    #[test]
    fn plain_name_tables_are_read_as_the_toml_crate_reads_them() {
        let split = split(PLAIN, true).expect("plain tables");
        assert_eq!(split.zones, 2);
        let owners: Vec<(usize, &str)> = split
            .names
            .iter()
            .enumerate()
            .flat_map(|(z, names)| names.iter().map(move |name| (z, name.name.as_str())))
            .collect();
        assert_eq!(owners, [(0, "www"), (0, "v6"), (0, "alias"), (1, "shop")]);
        assert!(!split.rest.contains("[[zones.names]]"));
        assert_eq!(parsed(PLAIN), whole(PLAIN));
        assert!(parsed(PLAIN).starts_with("Ok("));
    }

    #[test]
    fn anything_else_is_left_to_the_toml_crate() {
        let zone = "[xdp]\ninterface = \"eth0\"\n[[zones]]\napex = \"a.example\"\n";
        for table in [
            "[[zones.names]]\nname = \"w\\u0077w\"\na = [\"192.0.2.1\"]\n",
            "[[zones.names]]\nname = 'www'\na = [\"192.0.2.1\"]\n",
            "[[zones.names]]\nname = \"mail\"\nmx = [{ preference = 10, exchange = \"mx\" }]\n",
            "[[zones.names]]\nname = \"www\"\na = [\n  \"192.0.2.1\",\n]\n",
            "[[ zones.names ]]\nname = \"www\"\na = [\"192.0.2.1\"]\n",
            "[[zones.names]]\nname = \"www\"\nname = \"web\"\n",
            "[[zones.names]]\nname = \"www\"\nttl = 0300\n",
            "[[zones.names]]\nname = \"www\"\nttl = 4294967296\n",
            "[[zones.names]]\nname = \"www\"\na = [\"192.0.2.300\"]\n",
            "[[zones.names]]\nname = \"www\"\naaaa = [\"192.0.2.1\"]\n",
            "[[zones.names]]\na = [\"192.0.2.1\"]\n",
            "[[zones.names]]\nname = \"www\"\nweight = 3\n",
            "[[zones.names]]\nname = \"www\"\ntxt = [\"\"\"x\n[[zones.names]]\"\"\"]\n",
            "[[zones.names]]\nname = \"www\"\n[[zones.names.mx]]\npreference = 1\n",
        ] {
            let text = format!("{zone}{table}");
            assert!(split(&text, true).is_none(), "{table}");
            assert_eq!(parsed(&text), whole(&text), "{table}");
        }
        // A multi-line string in the rest could hold lines that look like name tables.
        let hidden = "[xdp]\ninterface = \"eth0\"\nnote = '''\n[[zones]]\n[[zones.names]]\n\
            name = \"x\"\n'''\n[[zones]]\napex = \"a.example\"\n";
        assert!(split(hidden, true).is_none());
        assert!(split(hidden, false).is_none());
        assert_eq!(parsed(hidden), whole(hidden));
        // Left unread, a name table may not hide the rest's lines either.
        let unread =
            format!("{zone}[[zones.names]]\nname = \"www\"\ntxt = [\"\"\"\n[dns]\n\"\"\"]\n");
        assert!(split(&unread, false).is_none());
        // Names before any zone, and names both inline and as tables, are the toml crate's
        // refusals.
        let before = "[[zones.names]]\nname = \"www\"\n[[zones]]\napex = \"a.example\"\n";
        assert!(split(before, true).is_none());
        assert_eq!(parsed(before), whole(before));
        let both = format!(
            "{zone}names = [{{ name = \"x\" }}]\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.1\"]\n"
        );
        assert!(parsed(&both).starts_with("Err("), "{}", parsed(&both));
        assert_eq!(parsed(&both), whole(&both));
    }

    #[test]
    fn the_settings_are_read_without_the_name_tables() {
        let dir = std::env::temp_dir().join(format!("edge-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.toml");
        // A bad address in a name table is the daemon's to refuse, not `edge drain`'s.
        let bad = PLAIN.replace("192.0.2.2", "192.0.2.300");
        std::fs::write(&path, &bad).unwrap();
        assert!(Config::load(&path).is_err());
        let settings = Config::load_settings(&path).unwrap();
        let full = Config::parse(&path, PLAIN).unwrap();
        assert_eq!(settings.zones.len(), 2);
        assert!(settings.zones.iter().all(|zone| zone.names.is_empty()));
        assert_eq!(settings.zones[0].soa, full.zones[0].soa);
        assert_eq!(format!("{:?}", settings.xdp), format!("{:?}", full.xdp));
        assert_eq!(settings.admin.listen, full.admin.listen);
        // A bad setting is refused as always.
        std::fs::write(&path, format!("{PLAIN}[admin]\nlisten = \"nowhere\"\n")).unwrap();
        assert!(Config::load_settings(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_error_outside_the_name_tables_keeps_its_line() {
        let text = "[xdp]\ninterface = \"eth0\"\n[[zones]]\napex = \"a.example\"\n\
            [[zones.names]]\nname = \"www\"\na = [\"192.0.2.1\"]\n[dns]\nlisten = [\"nowhere\"]\n";
        assert!(split(text, true).is_some());
        assert!(parsed(text).contains("line 9"), "{}", parsed(text));
        assert_eq!(parsed(text), whole(text));
    }
}
