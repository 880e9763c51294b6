//! What a request addresses: the host and the normalised path and query. Objects are stored
//! under a digest of the key and the request headers named by Vary, so no request target, however
//! encoded, can name a file of its own choosing.

use std::fmt;

use http::{HeaderMap, Uri};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use url::Url;

/// Host (lower case, no port) and normalised path and query of a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey {
    host: String,
    /// Starts with `/`; dot segments removed, percent-encoding as the URL standard leaves it.
    path_and_query: String,
}

/// A request target or Host that cannot address anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("missing Host")]
    NoHost,
    #[error("malformed Host")]
    Host,
    #[error("malformed request target")]
    Target,
}

impl CacheKey {
    /// The key of a request: `host` is the Host header, `uri` the request target. An
    /// absolute-form target's authority replaces Host (RFC 9112 §3.2.2).
    pub fn from_request(host: Option<&str>, uri: &Uri) -> Result<Self, BadTarget> {
        let host = match uri.authority() {
            Some(authority) => authority.as_str(),
            None => host.ok_or(BadTarget::NoHost)?,
        };
        // Control characters and spaces first: URL parsing would drop a TAB and accept the rest.
        if host.is_empty()
            || host.bytes().any(|b| b.is_ascii_control() || b == b' ')
            || host.contains(['@', '/', '\\', '?', '#'])
        {
            return Err(BadTarget::Host);
        }
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        if !target.starts_with('/') {
            return Err(BadTarget::Target);
        }
        if let Some(key) = Self::already_normal(host, target) {
            return Ok(key);
        }
        let url = Url::parse(&format!("http://{host}{target}")).map_err(|_| BadTarget::Host)?;
        Self::from_url(&url).ok_or(BadTarget::Host)
    }

    /// The key of a request that URL parsing would leave as it is, without parsing (the common
    /// case, and a cost on every hit otherwise): a lower-case domain name whose last label starts
    /// with a letter (so no IPv4 form) and that has no IDNA label, and a target of characters the
    /// URL standard neither encodes nor reinterprets, without dot segments.
    fn already_normal(host: &str, target: &str) -> Option<Self> {
        let label = |label: &str| {
            !label.is_empty()
                && !label.starts_with("xn--")
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let last = host.rsplit('.').next()?;
        if !host.split('.').all(label) || !last.starts_with(|c: char| c.is_ascii_lowercase()) {
            return None;
        }
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let kept = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?".contains(&b);
        if !target.bytes().all(kept) || path.split('/').any(|s| s == "." || s == "..") {
            return None;
        }
        Some(Self {
            host: host.to_string(),
            path_and_query: target.to_string(),
        })
    }

    /// The key of an absolute `http://` URL, as `edge purge` is given.
    pub fn parse_url(text: &str) -> Result<Self, BadTarget> {
        let url = Url::parse(text).map_err(|_| BadTarget::Target)?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(BadTarget::Target);
        }
        Self::from_url(&url).ok_or(BadTarget::Host)
    }

    fn from_url(url: &Url) -> Option<Self> {
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?.trim_end_matches('.').to_string();
        let mut path_and_query = url.path().to_string();
        if let Some(query) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Some(Self {
            host,
            path_and_query,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(&self.path_and_query, |(path, _)| path)
    }

    /// The origin-form target sent to the origin.
    pub fn uri(&self) -> Uri {
        // Built from a parsed URL, so always a valid origin-form target.
        Uri::try_from(self.path_and_query.as_str()).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// The stored object for this key and the values of the request headers named by `vary`.
    pub fn object_id<'a>(
        &self,
        vary: impl IntoIterator<Item = &'a str>,
        request: &HeaderMap,
    ) -> ObjectId {
        let mut digest = Sha256::new();
        for part in [self.host.as_bytes(), self.path_and_query.as_bytes()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        for name in vary {
            let name = name.trim().to_ascii_lowercase();
            digest.update((name.len() as u64).to_le_bytes());
            digest.update(name.as_bytes());
            for value in request.get_all(name.as_str()) {
                digest.update((value.len() as u64).to_le_bytes());
                digest.update(value.as_bytes());
            }
            digest.update(u64::MAX.to_le_bytes());
        }
        ObjectId(digest.finalize().into())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host, self.path_and_query)
    }
}

/// Names one stored object (a key and one Vary variant); its hex form is the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    pub fn to_hex(self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The inverse of [`Self::to_hex`]; `None` for any other file name.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut id = [0; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(id))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn key(host: &str, target: &str) -> Result<CacheKey, BadTarget> {
        CacheKey::from_request(Some(host), &target.parse().unwrap())
    }

    #[test]
    fn normalises_host_and_dot_segments() {
        let plain = key("static.example.com", "/a/b.css?v=1").unwrap();
        assert_eq!(plain.to_string(), "http://static.example.com/a/b.css?v=1");
        assert_eq!(plain.path(), "/a/b.css");
        assert_eq!(
            key("STATIC.example.com:8080", "/a/b.css?v=1").unwrap(),
            plain
        );
        assert_eq!(
            key("static.example.com.", "/a/./x/../b.css?v=1").unwrap(),
            plain
        );
        assert_eq!(
            key("static.example.com", "/a/%2e%2E/a/b.css?v=1").unwrap(),
            plain
        );
        // Dot segments cannot climb above the root.
        let root = key("h.example", "/../../../etc/passwd").unwrap();
        assert_eq!(root.path(), "/etc/passwd");
        assert_eq!(key("h.example", "/%2e%2e/%2e%2e/etc/passwd").unwrap(), root);
    }

    #[test]
    fn the_shortcut_agrees_with_url_parsing() {
        let hosts = [
            "h.example",
            "static.example.com",
            "a-1.b2",
            "1.2.3.4",
            "example.0x1f",
            "xn--nxasmq6b.example",
            "a..b",
            "h.example.",
            "H.example",
        ];
        let pieces = [
            "a", "/", ".", "..", "?", "%2e", "%41", "~", "'", "\\", "|", "^", "[", "=", "&", ":",
            "@", "!", "$", "(", "*", ",", ";", "Z",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let host = hosts[rng.usize(..hosts.len())];
            let mut target = String::from("/");
            for _ in 0..rng.usize(..8) {
                target.push_str(pieces[rng.usize(..pieces.len())]);
            }
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            let Some(short) = CacheKey::already_normal(host, &target) else {
                continue;
            };
            let url = Url::parse(&format!("http://{host}{target}")).unwrap();
            let parsed = CacheKey::from_url(&url).unwrap();
            assert_eq!(short, parsed, "{host} {target}");
            assert_eq!(CacheKey::from_request(Some(host), &uri), Ok(parsed));
        }
        for (host, target) in [
            ("h.example", "/a/b.css?v=1&w=/x?y"),
            ("a-1.b2", "/~u/(x)*,;=:@!$"),
        ] {
            assert!(CacheKey::already_normal(host, target).is_some());
        }
        for (host, target) in [
            ("1.2.3.4", "/"),
            ("example.0x1f", "/"),
            ("xn--nxasmq6b.example", "/"),
            ("H.example", "/"),
            ("h.example", "/a/../b"),
            ("h.example", "/%2e"),
            ("h.example", "/a'?b'"),
        ] {
            assert!(CacheKey::already_normal(host, target).is_none());
        }
    }

    #[test]
    fn absolute_form_takes_the_authority() {
        let uri: Uri = "http://Other.Example/x".parse().unwrap();
        let key = CacheKey::from_request(Some("ignored.example"), &uri).unwrap();
        assert_eq!(key.host(), "other.example");
    }

    #[test]
    fn malformed_hosts_and_targets_are_refused() {
        assert_eq!(
            CacheKey::from_request(None, &"/".parse().unwrap()),
            Err(BadTarget::NoHost)
        );
        for host in [
            "",
            "a b",
            "user@h.example",
            "h.example/x",
            "h.example:notaport",
            "[::1",
            "cdn.relp\t.test",
            "h.example\x7f",
            "h.\x01example",
        ] {
            assert_eq!(key(host, "/"), Err(BadTarget::Host), "{host:?}");
        }
        assert_eq!(key("h.example", "*"), Err(BadTarget::Target));
    }

    #[test]
    fn purge_urls_match_request_keys() {
        let purge = CacheKey::parse_url("http://H.example/a/../b?q").unwrap();
        assert_eq!(purge, key("h.example", "/b?q").unwrap());
        assert!(CacheKey::parse_url("ftp://h.example/").is_err());
        assert!(CacheKey::parse_url("/relative").is_err());
    }

    #[test]
    fn object_ids_depend_on_varied_headers() {
        let key = key("h.example", "/").unwrap();
        let mut gzip = HeaderMap::new();
        gzip.insert("accept-encoding", HeaderValue::from_static("gzip"));
        let mut br = HeaderMap::new();
        br.insert("accept-encoding", HeaderValue::from_static("br"));
        let none = HeaderMap::new();
        let vary = ["Accept-Encoding"];
        assert_ne!(key.object_id(vary, &gzip), key.object_id(vary, &br));
        assert_ne!(key.object_id(vary, &gzip), key.object_id(vary, &none));
        assert_eq!(key.object_id([], &gzip), key.object_id([], &br));
        let id = key.object_id(vary, &gzip);
        assert_eq!(ObjectId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ObjectId::from_hex("../etc"), None);
    }
}
