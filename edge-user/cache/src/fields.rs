//! How the caching rules read a response's fields. http-cache-semantics reads them loosely
//! (directive names case-sensitively, the whole Age field as one number, dates with a lenient
//! RFC 2822 parser) and knows nothing of targeted fields, so the rules read them here, strictly,
//! and give that crate a canonical copy: directive names lower-cased (RFC 9111 §5.2), the
//! first member of a list-valued Age (§5.1), HTTP-dates in one of the three forms of RFC 9110
//! §5.6.7 or none, and the directives of the first valid targeted field (RFC 9213) in place of
//! Cache-Control and Expires.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// One cache directive: its name lower-cased, its value unquoted.
pub type Directive = (String, Option<String>);

/// `CDN-Cache-Control` (RFC 9213 §3), the default target list.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives that govern `headers`: those of the first field of `targets` that is
/// present, valid and not empty (RFC 9213 §2.1), and `true`; else Cache-Control's, and `false`.
pub fn governing(headers: &HeaderMap, targets: &[HeaderName]) -> (Vec<Directive>, bool) {
    for target in targets {
        let mut values = headers.get_all(target).iter().peekable();
        if values.peek().is_none() {
            continue;
        }
        if let Some(directives) = targeted(values) {
            return (directives, true);
        }
    }
    (cache_control(headers), false)
}

/// The Cache-Control directives of `headers`, names lower-cased, values unquoted.
pub fn cache_control(headers: &HeaderMap) -> Vec<Directive> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(split_list)
        .filter_map(|directive| {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name, Some(unquote(value.trim()))),
                None => (directive, None),
            };
            let name = name.trim().to_ascii_lowercase();
            (!name.is_empty()).then_some((name, value))
        })
        .collect()
}

/// Splits a list at commas outside quoted strings.
fn split_list(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().unwrap_or(c)
                } else {
                    c
                });
            }
            out
        }
        None => value.to_string(),
    }
}

/// Directives whose value is a number of seconds: in a targeted field, an Integer (RFC 9213
/// §2.2), or the field is invalid.
const SECONDS: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// A targeted field's directives, parsed as a Structured Field Dictionary (RFC 8941 §4.2.2),
/// or `None` when the field is empty or invalid, so that it is ignored (RFC 9213 §2.1).
/// Parameters are ignored; a directive set to `?0` is absent.
pub fn targeted<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Option<Vec<Directive>> {
    let mut text = String::new();
    for value in values {
        if !text.is_empty() {
            text.push(',');
        }
        text.push_str(value.to_str().ok()?);
    }
    let members = sfv::dictionary(&text)?;
    let mut directives: Vec<Directive> = Vec::new();
    for (name, item) in members {
        let value = match item {
            sfv::Item::Integer(n) if n >= 0 => Some(n.to_string()),
            _ if SECONDS.contains(&name.as_str()) => return None,
            sfv::Item::Boolean(true) => None,
            sfv::Item::Boolean(false) => {
                directives.retain(|(other, _)| *other != name);
                continue;
            }
            sfv::Item::String(s) | sfv::Item::Token(s) => Some(s),
            sfv::Item::Other | sfv::Item::Integer(_) => None,
        };
        // A later member with the same name overrides an earlier one (RFC 8941 §4.2.2).
        directives.retain(|(other, _)| *other != name);
        directives.push((name, value));
    }
    (!directives.is_empty()).then_some(directives)
}

/// Directives as one Cache-Control value, for http-cache-semantics.
pub fn format(directives: &[Directive]) -> Option<HeaderValue> {
    let text = directives
        .iter()
        .map(|(name, value)| match value {
            None => name.clone(),
            Some(value) if !value.is_empty() && value.bytes().all(is_token) => {
                format!("{name}={value}")
            }
            Some(value) => format!("{name}=\"{}\"", value.replace(['"', '\\'], "")),
        })
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&text).ok()
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The Age to count: the first member of the first field (RFC 9111 §5.1: a list is a sender's
/// error, and its first value is the one to use).
pub fn first_age(headers: &HeaderMap) -> Option<HeaderValue> {
    let first = headers.get(header::AGE)?.to_str().ok()?;
    let first = first.split(',').next()?.trim();
    HeaderValue::from_str(first).ok()
}

/// An HTTP-date in one of the forms of RFC 9110 §5.6.7 (IMF-fixdate, RFC 850, asctime), each
/// with single spaces exactly where the grammar has them; anything else is not a date.
pub fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = value.to_str().ok()?;
    if text != text.trim() {
        return None;
    }
    httpdate::parse_http_date(text).ok()
}

/// A small, strict Structured Field Dictionary parser (RFC 8941 §4.2.2 and §4.2.3): targeted
/// cache fields need only the shape of items, not their values beyond integers, strings,
/// tokens and booleans.
mod sfv {
    pub enum Item {
        Integer(i64),
        Boolean(bool),
        String(String),
        Token(String),
        /// A decimal, byte sequence or inner list.
        Other,
    }

    struct Parser<'a> {
        input: &'a [u8],
        at: usize,
    }

    /// The dictionary's members in order, or `None` when `text` is not one.
    pub fn dictionary(text: &str) -> Option<Vec<(String, Item)>> {
        let mut parser = Parser {
            input: text.as_bytes(),
            at: 0,
        };
        parser.skip(|b| b == b' ');
        let mut members = Vec::new();
        while !parser.done() {
            let key = parser.key()?;
            let item = if parser.eat(b'=') {
                if parser.peek() == Some(b'(') {
                    parser.inner_list()?;
                    Item::Other
                } else {
                    parser.bare_item()?
                }
            } else {
                Item::Boolean(true)
            };
            parser.parameters()?;
            members.push((key, item));
            parser.skip(|b| b == b' ' || b == b'\t');
            if parser.done() {
                break;
            }
            if !parser.eat(b',') {
                return None;
            }
            parser.skip(|b| b == b' ' || b == b'\t');
            if parser.done() {
                return None;
            }
        }
        Some(members)
    }

    impl Parser<'_> {
        fn done(&self) -> bool {
            self.at >= self.input.len()
        }

        fn peek(&self) -> Option<u8> {
            self.input.get(self.at).copied()
        }

        fn eat(&mut self, b: u8) -> bool {
            let eaten = self.peek() == Some(b);
            self.at += usize::from(eaten);
            eaten
        }

        fn skip(&mut self, what: impl Fn(u8) -> bool) {
            while self.peek().is_some_and(&what) {
                self.at += 1;
            }
        }

        fn take(&mut self, what: impl Fn(u8) -> bool) -> &str {
            let start = self.at;
            self.skip(what);
            std::str::from_utf8(&self.input[start..self.at]).unwrap_or("")
        }

        fn key(&mut self) -> Option<String> {
            let first = self.peek()?;
            if !first.is_ascii_lowercase() && first != b'*' {
                return None;
            }
            let key =
                self.take(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
            Some(key.to_string())
        }

        fn parameters(&mut self) -> Option<()> {
            while self.eat(b';') {
                self.skip(|b| b == b' ');
                self.key()?;
                if self.eat(b'=') {
                    self.bare_item()?;
                }
            }
            Some(())
        }

        fn inner_list(&mut self) -> Option<()> {
            self.eat(b'(');
            loop {
                self.skip(|b| b == b' ');
                if self.eat(b')') {
                    return self.parameters();
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }

        fn bare_item(&mut self) -> Option<Item> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string().map(Item::String),
                b'?' => {
                    self.at += 1;
                    let value = match self.peek()? {
                        b'0' => false,
                        b'1' => true,
                        _ => return None,
                    };
                    self.at += 1;
                    Some(Item::Boolean(value))
                }
                b':' => {
                    self.at += 1;
                    self.take(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                    self.eat(b':').then_some(Item::Other)
                }
                b if b.is_ascii_alphabetic() || b == b'*' => {
                    let token = self.take(|b| super::is_token(b) || b == b':' || b == b'/');
                    Some(Item::Token(token.to_string()))
                }
                _ => None,
            }
        }

        fn number(&mut self) -> Option<Item> {
            let negative = self.eat(b'-');
            let integer = self.take(|b| b.is_ascii_digit()).to_string();
            if integer.is_empty() {
                return None;
            }
            if self.eat(b'.') {
                let fraction = self.take(|b| b.is_ascii_digit());
                return (integer.len() <= 12 && (1..=3).contains(&fraction.len()))
                    .then_some(Item::Other);
            }
            if integer.len() > 15 {
                return None;
            }
            let value: i64 = integer.parse().ok()?;
            Some(Item::Integer(if negative { -value } else { value }))
        }

        fn string(&mut self) -> Option<String> {
            self.eat(b'"');
            let mut out = String::new();
            loop {
                match self.peek()? {
                    b'\\' => {
                        self.at += 1;
                        let escaped = self.peek()?;
                        if escaped != b'"' && escaped != b'\\' {
                            return None;
                        }
                        out.push(char::from(escaped));
                    }
                    b'"' => {
                        self.at += 1;
                        return Some(out);
                    }
                    b @ 0x20..=0x7e => out.push(char::from(b)),
                    _ => return None,
                }
                self.at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn names(directives: &[Directive]) -> Vec<String> {
        directives
            .iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}={value}"),
                None => name.clone(),
            })
            .collect()
    }

    #[test]
    fn cache_control_names_are_case_insensitive() {
        let cc = cache_control(&headers(&[
            ("cache-control", "No-CaChE, MAX-AGE=\"60\""),
            ("cache-control", "private=\"a, b\""),
        ]));
        assert_eq!(names(&cc), ["no-cache", "max-age=60", "private=a, b"]);
    }

    #[test]
    fn targeted_fields_take_precedence_when_valid() {
        let targets = [
            HeaderName::from_static("edge-cache-control"),
            CDN_CACHE_CONTROL,
        ];
        let pick = |pairs: &[(&'static str, &'static str)]| {
            let (directives, targeted) = governing(&headers(pairs), &targets);
            (names(&directives), targeted)
        };
        let cc = ("cache-control", "max-age=10");
        assert_eq!(pick(&[cc]), (vec!["max-age=10".into()], false));
        assert_eq!(
            pick(&[cc, ("cdn-cache-control", "max-age=600, private")]),
            (vec!["max-age=600".into(), "private".into()], true)
        );
        // The first target in the configured order wins.
        assert_eq!(
            pick(&[
                ("cdn-cache-control", "no-store"),
                ("edge-cache-control", "max-age=5")
            ]),
            (vec!["max-age=5".into()], true)
        );
        // Invalid or empty: ignored, the next one (or Cache-Control) governs.
        for invalid in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "MaX-aGe=3600",
            "max-age =100",
            "max-age=-1",
            "max-age=1.5",
            "a,",
            "",
        ] {
            let value = HeaderValue::from_str(invalid).unwrap();
            let mut map = headers(&[cc]);
            map.insert(CDN_CACHE_CONTROL, value);
            let (directives, targeted) = governing(&map, &targets);
            assert_eq!(
                (names(&directives), targeted),
                (vec!["max-age=10".into()], false),
                "{invalid}"
            );
        }
        // Booleans, strings, tokens, parameters; a later member overrides; ?0 removes.
        assert_eq!(
            pick(&[(
                "cdn-cache-control",
                "private=?0, no-cache=\"set-cookie\", foo=bar;p=1, max-age=1, max-age=99, public=?1, x=(a b)"
            )]),
            (
                vec![
                    "no-cache=set-cookie".into(),
                    "foo=bar".into(),
                    "max-age=99".into(),
                    "public".into(),
                    "x".into()
                ],
                true
            )
        );
        assert_eq!(
            format(&[
                ("max-age".into(), Some("5".into())),
                ("no-cache".into(), Some("a b".into()))
            ])
            .unwrap(),
            "max-age=5, no-cache=\"a b\""
        );
    }

    #[test]
    fn age_and_dates() {
        assert_eq!(first_age(&headers(&[("age", "10, 20")])).unwrap(), "10");
        assert_eq!(
            first_age(&headers(&[("age", "7"), ("age", "9")])).unwrap(),
            "7"
        );
        assert!(first_age(&headers(&[])).is_none());
        let date = |text: &'static str| http_date(&HeaderValue::from_static(text));
        let when = date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(when));
        assert_eq!(date("Sun Nov  6 08:49:37 1994"), Some(when));
        for invalid in [
            "Sun, 06 Nov 1994  08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sunday,  06-Nov-94 08:49:37 GMT",
            "Sun  Nov  6 08:49:37 1994",
            "0",
            "",
        ] {
            assert_eq!(date(invalid), None, "{invalid}");
        }
    }
}
