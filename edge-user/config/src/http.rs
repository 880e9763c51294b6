//! The `[http]` table: where the PoP serves HTTP, where and how much it caches, its limits, and
//! the sites (hostnames) it serves.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use bytesize::ByteSize;
use http::HeaderName;
use serde::Deserialize;

use crate::{error::ConfigError, steering::PoolKind};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The PoP's service address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Deprecated: the cache's own admin address, from before one admin server served purge,
    /// status and drain. Moves `admin.listen` when that is left at its default; see
    /// `Config::deprecations`.
    pub admin_listen: Option<SocketAddr>,
    pub cache_dir: PathBuf,
    /// Bytes of bodies the cache directory may hold (`"1 GiB"` or a number of bytes).
    pub cache_capacity: ByteSize,
    /// Larger responses are passed through, not stored. Default: 64 MiB, or the capacity if
    /// that is less; see [`HttpConfig::max_object_size`].
    pub max_object_size: Option<ByteSize>,
    /// Request line plus headers; more is answered with 431.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
    /// A client must send a complete request head within this time of connecting or of the
    /// previous response: bounds slow headers (slowloris) and idle keep-alive connections.
    #[serde(default = "default_client_timeout", with = "humantime_serde")]
    pub client_timeout: Duration,
    /// A response write that makes no progress for this long (a client that stopped reading)
    /// closes the connection, with a reset: its socket and files are freed.
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Open connections from one source (an IPv4 address, or an IPv6 /64); more are closed
    /// as they are accepted.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Whether a client's Cache-Control and Pragma count (`"honour"`) or not (`"ignore"`, the
    /// default): see [`RequestDirectives`].
    #[serde(default)]
    pub request_cache_control: RequestDirectives,
    #[serde(default = "default_origin_connect_timeout", with = "humantime_serde")]
    pub origin_connect_timeout: Duration,
    /// Longest wait for the origin's response head and between two pieces of its body.
    #[serde(default = "default_origin_read_timeout", with = "humantime_serde")]
    pub origin_read_timeout: Duration,
    /// How long a 404 or 410 without explicit freshness is reused; `"0s"` turns it off.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Heuristic freshness as a fraction of the time since Last-Modified (RFC 9111 §4.2.2);
    /// 0, the default, means only explicit freshness counts.
    #[serde(default)]
    pub heuristic_fraction: f32,
    /// How stale a stored response may be served when the origin cannot be reached, times out
    /// or answers 5xx, if the response neither forbids it nor sets `stale-if-error`; `"0s"`
    /// serves stale on error only with `stale-if-error`.
    #[serde(default = "default_stale_on_error", with = "humantime_serde")]
    pub stale_on_error: Duration,
    /// Targeted cache fields (RFC 9213) that apply to this cache, in order of precedence; the
    /// first valid one in a response replaces its Cache-Control and Expires.
    #[serde(default = "default_targeted_cache_control")]
    pub targeted_cache_control: Vec<String>,
    /// Whether responses with Set-Cookie are stored (and served with it to every client) when
    /// their caching headers allow; by default they are handed through, never stored.
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Client headers a cache fill sends to the origin besides the built-in allow-list (and so
    /// headers a response may vary on), e.g. an API version header the origin needs.
    #[serde(default)]
    pub forward_request_headers: Vec<String>,
    /// Large bodies (64 KiB and more) kept memory-mapped between hits, the least recently used
    /// unmapped beyond it: each mapping counts against the kernel's per-process
    /// `vm.max_map_count` (65,530 by default), past which the daemon could not even allocate.
    #[serde(default = "default_mapped_bodies")]
    pub mapped_bodies: usize,
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
}

/// What a client's own Cache-Control and Pragma do (`[http] request_cache_control`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestDirectives {
    /// Nothing, as most CDNs do by default: a client cannot make the PoP go to the origin (a
    /// reload's `no-cache`, `max-age=0`) or skip storing (`no-store`); the origin's headers
    /// alone decide.
    #[default]
    Ignore,
    /// What RFC 9111 §5.2.1 says: `no-cache` revalidates, `max-age`, `min-fresh`, `max-stale`
    /// and `only-if-cached` count.
    Honour,
}

/// A hostname the PoP serves, and the origin pool behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub host: String,
    /// A pool of kind `origin`.
    pub pool: String,
    /// Single-hostname mode: only paths matching one of these (`/assets/` prefix, `*.css`
    /// suffix) are cached; the rest goes uncached to the origin. Absent: everything is cached.
    pub static_paths: Option<Vec<String>>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80)
}

const DEFAULT_MAX_OBJECT_SIZE: ByteSize = ByteSize::mib(64);

fn default_mapped_bodies() -> usize {
    16_384
}

/// Above this, `mapped_bodies` plus the daemon's own mappings would near the default
/// `vm.max_map_count`.
const MAX_MAPPED_BODIES: usize = 49_152;

fn default_max_header_size() -> ByteSize {
    ByteSize::kib(16)
}

fn default_client_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_send_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_connections_per_source() -> usize {
    1024
}

fn default_origin_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_origin_read_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_stale_on_error() -> Duration {
    Duration::from_secs(86_400)
}

fn default_targeted_cache_control() -> Vec<String> {
    vec!["CDN-Cache-Control".into()]
}

fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}

/// hyper refuses a smaller header buffer.
const MIN_HEADER_SIZE: u64 = 8192;

impl HttpConfig {
    /// Bytes of the largest body the cache stores.
    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
            .unwrap_or(DEFAULT_MAX_OBJECT_SIZE.min(self.cache_capacity))
            .as_u64()
    }

    /// The targeted cache fields as header names ([`Self::check`] refused any other).
    pub fn targeted_fields(&self) -> Vec<HeaderName> {
        self.targeted_cache_control
            .iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect()
    }

    /// The extra forwarded headers as header names ([`Self::check`] refused any other).
    pub fn forwarded_headers(&self) -> Vec<HeaderName> {
        self.forward_request_headers
            .iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect()
    }

    /// Checks what the shape alone cannot: paths, sizes, and that every site names an origin
    /// pool (`pool_kind` gives the kind of the config's pool of that name).
    pub fn check(
        &self,
        file: &Path,
        pool_kind: impl Fn(&str) -> Option<PoolKind>,
    ) -> Result<(), ConfigError> {
        let refuse = |field: String, reason: String| ConfigError {
            file: file.to_path_buf(),
            field: format!("http.{field}"),
            reason,
        };
        if !self.cache_dir.is_absolute() {
            return Err(refuse(
                "cache_dir".into(),
                "must be an absolute path".into(),
            ));
        }
        if self.cache_capacity.as_u64() == 0 {
            return Err(refuse("cache_capacity".into(), "must be above 0".into()));
        }
        if self
            .max_object_size
            .is_some_and(|size| size > self.cache_capacity)
        {
            return Err(refuse(
                "max_object_size".into(),
                format!("larger than cache_capacity ({})", self.cache_capacity),
            ));
        }
        if self.max_header_size.as_u64() < MIN_HEADER_SIZE {
            return Err(refuse(
                "max_header_size".into(),
                format!("must be at least {MIN_HEADER_SIZE} bytes"),
            ));
        }
        for (name, timeout) in [
            ("client_timeout", self.client_timeout),
            ("send_timeout", self.send_timeout),
            ("origin_connect_timeout", self.origin_connect_timeout),
            ("origin_read_timeout", self.origin_read_timeout),
        ] {
            if timeout.is_zero() {
                return Err(refuse(name.into(), "must be above 0".into()));
            }
            if timeout > crate::MAX_DURATION {
                return Err(refuse(name.into(), "must be at most 1 day".into()));
            }
        }
        if self.negative_ttl > crate::MAX_DURATION {
            return Err(refuse(
                "negative_ttl".into(),
                "must be at most 1 day".into(),
            ));
        }
        if self.max_connections_per_source == 0 {
            return Err(refuse(
                "max_connections_per_source".into(),
                "must be above 0".into(),
            ));
        }
        if !(1..=MAX_MAPPED_BODIES).contains(&self.mapped_bodies) {
            return Err(refuse(
                "mapped_bodies".into(),
                format!("must be between 1 and {MAX_MAPPED_BODIES}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.heuristic_fraction) {
            return Err(refuse(
                "heuristic_fraction".into(),
                "must be between 0 and 1".into(),
            ));
        }
        for (t, name) in self.targeted_cache_control.iter().enumerate() {
            let field = format!("targeted_cache_control[{t}]");
            match HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => return Err(refuse(field, format!("{name:?} is not a field name"))),
                Ok(header) if header == http::header::CACHE_CONTROL => {
                    return Err(refuse(
                        field,
                        "Cache-Control is not a targeted field".into(),
                    ));
                }
                Ok(_) => {}
            }
        }
        for (f, name) in self.forward_request_headers.iter().enumerate() {
            let field = format!("forward_request_headers[{f}]");
            match HeaderName::from_bytes(name.as_bytes()) {
                Err(_) => return Err(refuse(field, format!("{name:?} is not a field name"))),
                Ok(header) if !forwardable(&header) => {
                    return Err(refuse(
                        field,
                        format!("{name} frames, routes or conditions the request; edge sets it"),
                    ));
                }
                Ok(_) => {}
            }
        }
        for (s, site) in self.sites.iter().enumerate() {
            if !is_hostname(&site.host) {
                return Err(refuse(
                    format!("sites[{s}].host"),
                    "not a lower-case hostname".into(),
                ));
            }
            if let Some(first) = self.sites[..s].iter().position(|o| o.host == site.host) {
                return Err(refuse(
                    format!("sites[{s}].host"),
                    format!("{} is already served by http.sites[{first}]", site.host),
                ));
            }
            match pool_kind(&site.pool) {
                None => {
                    return Err(refuse(
                        format!("sites[{s}].pool"),
                        format!("no pool called {}", site.pool),
                    ));
                }
                Some(kind) if kind != PoolKind::Origin => {
                    return Err(refuse(
                        format!("sites[{s}].pool"),
                        format!("pool {} is not of kind origin", site.pool),
                    ));
                }
                Some(_) => {}
            }
            for (r, rule) in site.static_paths.iter().flatten().enumerate() {
                PathRule::parse(rule)
                    .map_err(|reason| refuse(format!("sites[{s}].static_paths[{r}]"), reason))?;
            }
        }
        Ok(())
    }
}

/// One `static_paths` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRule {
    /// `/assets/`: every path that starts with it.
    Prefix(String),
    /// `*.css`: every path that ends with what follows the `*`.
    Suffix(String),
}

impl PathRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('/') {
            Ok(Self::Prefix(text.to_string()))
        } else if let Some(suffix) = text.strip_prefix('*')
            && !suffix.is_empty()
            && !suffix.contains(['*', '/'])
        {
            Ok(Self::Suffix(suffix.to_string()))
        } else {
            Err("must start with '/' (a path prefix) or be '*' and a suffix (*.css)".into())
        }
    }

    /// Whether `path` (normalised, without the query) falls under this rule.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => path.ends_with(suffix.as_str()),
        }
    }
}

/// Whether a client header may be added to the cache fill's allow-list: not one that frames,
/// routes or describes the connection (hop by hop), that the cache answers itself (conditions,
/// ranges), or that edge asserts (Host, Via, forwarding).
fn forwardable(name: &HeaderName) -> bool {
    const REFUSED: [&str; 16] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "range",
        "expect",
        "forwarded",
        "via",
        "x-real-ip",
    ];
    let name = name.as_str();
    !(REFUSED.contains(&name) || name.starts_with("x-forwarded-") || name.starts_with("if-"))
}

/// A DNS hostname as the Host header carries it after lower-casing: no port, no trailing dot.
fn is_hostname(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const BASE: &str = "[xdp]\ninterface = \"eth0\"\n[[pools]]\nname = \"shop\"\nkind = \"origin\"\n[[pools.members]]\nname = \"a\"\naddress = \"192.0.2.1\"\n[[pools]]\nname = \"pops\"\nkind = \"pop\"\n[[pools.members]]\nname = \"p\"\naddress = \"192.0.2.9\"\n";

    fn parse(http: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("edge.toml"), &format!("{BASE}{http}"))
    }

    const SITE: &str = "[[http.sites]]\nhost = \"static.example.com\"\npool = \"shop\"\n";

    #[test]
    fn defaults_and_sizes() {
        let config = parse(&format!(
            "[http]\ncache_dir = \"/var/cache/edge\"\ncache_capacity = \"1 GiB\"\nclient_timeout = \"5s\"\n{SITE}"
        ))
        .unwrap();
        let http = config.http.unwrap();
        assert_eq!(http.cache_capacity.as_u64(), 1 << 30);
        assert_eq!(http.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(http.admin_listen, None);
        assert_eq!(http.client_timeout, Duration::from_secs(5));
        assert_eq!(http.negative_ttl, Duration::from_secs(10));
        assert_eq!(http.send_timeout, Duration::from_secs(30));
        assert_eq!(http.max_connections_per_source, 1024);
        assert_eq!(http.request_cache_control, RequestDirectives::Ignore);
        assert_eq!(http.max_object_size(), 64 << 20);
        assert_eq!(http.stale_on_error, Duration::from_secs(86_400));
        assert_eq!(http.targeted_fields(), ["cdn-cache-control"]);
        assert!(!http.store_set_cookie);
        assert_eq!(http.mapped_bodies, 16_384);
        assert!(http.sites[0].static_paths.is_none());
        let bytes = parse("[http]\ncache_dir = \"/c\"\ncache_capacity = 200000000\n").unwrap();
        let bytes = bytes.http.unwrap();
        assert_eq!(bytes.cache_capacity.as_u64(), 200_000_000);
        let honour =
            "[http]\ncache_dir = \"/c\"\ncache_capacity = 1\nrequest_cache_control = \"honour\"\n";
        let honour = parse(honour).unwrap().http.unwrap();
        assert_eq!(honour.request_cache_control, RequestDirectives::Honour);
        let small = parse("[http]\ncache_dir = \"/c\"\ncache_capacity = \"1 MiB\"\n").unwrap();
        assert_eq!(small.http.unwrap().max_object_size(), 1 << 20);
    }

    #[test]
    fn refusals_name_the_field() {
        let head = "[http]\ncache_dir = \"/c\"\ncache_capacity = \"1 MiB\"\n";
        for (extra, field) in [
            ("max_object_size = \"2 MiB\"\n", "http.max_object_size"),
            ("max_header_size = 1024\n", "http.max_header_size"),
            ("admin_listen = \"0.0.0.0:80\"\n", "http.admin_listen"),
            ("listen = \"127.0.0.1:9081\"\n", "admin.listen"),
            ("origin_read_timeout = \"0s\"\n", "http.origin_read_timeout"),
            ("heuristic_fraction = 2.0\n", "http.heuristic_fraction"),
            ("mapped_bodies = 0\n", "http.mapped_bodies"),
            ("mapped_bodies = 60000\n", "http.mapped_bodies"),
            ("send_timeout = \"0s\"\n", "http.send_timeout"),
            ("send_timeout = \"25h\"\n", "http.send_timeout"),
            ("negative_ttl = \"2days\"\n", "http.negative_ttl"),
            (
                "max_connections_per_source = 0\n",
                "http.max_connections_per_source",
            ),
            (
                "request_cache_control = \"sometimes\"\n",
                "http.request_cache_control",
            ),
            (
                "targeted_cache_control = [\"CDN-Cache-Control\", \"a b\"]\n",
                "http.targeted_cache_control[1]",
            ),
            (
                "targeted_cache_control = [\"Cache-Control\"]\n",
                "http.targeted_cache_control[0]",
            ),
            ("stale_on_error = \"soon\"\n", "http.stale_on_error"),
            (
                "forward_request_headers = [\"X-Api\", \"Host\"]\n",
                "http.forward_request_headers[1]",
            ),
            (
                "forward_request_headers = [\"If-None-Match\"]\n",
                "http.forward_request_headers[0]",
            ),
            (
                "forward_request_headers = [\"X-Forwarded-Host\"]\n",
                "http.forward_request_headers[0]",
            ),
        ] {
            let error = parse(&format!("{head}{extra}")).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        let error = parse("[http]\ncache_dir = \"c\"\ncache_capacity = 1\n").unwrap_err();
        assert_eq!(error.field, "http.cache_dir", "{error}");
        let error = parse(&format!("{head}colour = 1\n")).unwrap_err();
        assert!(error.reason.contains("unknown field `colour`"), "{error}");
    }

    #[test]
    fn sites_are_checked() {
        let head = "[http]\ncache_dir = \"/c\"\ncache_capacity = \"1 GiB\"\n";
        let site = |host: &str, pool: &str, rules: &str| {
            format!("[[http.sites]]\nhost = \"{host}\"\npool = \"{pool}\"\n{rules}")
        };
        for (sites, field, reason) in [
            (
                site("Static.Example.com", "shop", ""),
                "http.sites[0].host",
                "lower-case",
            ),
            (
                site("a.example.com:80", "shop", ""),
                "http.sites[0].host",
                "lower-case",
            ),
            (
                site("a.example.com", "nope", ""),
                "http.sites[0].pool",
                "no pool",
            ),
            (
                site("a.example.com", "pops", ""),
                "http.sites[0].pool",
                "not of kind origin",
            ),
            (
                format!("{SITE}{SITE}"),
                "http.sites[1].host",
                "already served",
            ),
            (
                site(
                    "a.example.com",
                    "shop",
                    "static_paths = [\"/ok/\", \"assets\"]\n",
                ),
                "http.sites[0].static_paths[1]",
                "start with",
            ),
        ] {
            let error = parse(&format!("{head}{sites}")).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.reason.contains(reason), "{error}");
        }
    }
}
