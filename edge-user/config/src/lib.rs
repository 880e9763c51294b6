//! edge-config: the TOML configuration file: its shape, defaults, and errors that name the file,
//! the field and the reason. Semantic checks of zones (names inside their zone, no duplicates)
//! live in edge-dns (`zone::Zones::build`).
//!
//! Owns the schema of every section ([`steering`]: a pool's `probe` and `steering` tables;
//! [`http`]: the `[http]` table; [`mesh`]: the `[mesh]` table; [`rrl`]: `[xdp.rrl]`) and its validation. At the bottom of the crate graph: it
//! depends on no other edge crate but edge-common (for a size limit), does no I/O besides
//! reading the file, and holds no runtime state (no sockets, watches or maps).

mod error;
pub mod http;
pub mod mesh;
mod names_table;
pub mod rrl;
pub mod steering;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use edge_common::SERVICES_MAX;
use serde::Deserialize;

pub use crate::{
    error::ConfigError,
    steering::{PoolKind, ProbeConfig, SteeringConfig},
};

/// Where pinned maps and links go unless the config says otherwise; one directory per interface.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/edge";
/// Default size of the answer map (name/type pairs).
pub const DEFAULT_MAX_ANSWERS: u32 = 65_536;
/// Default size of the answer map for names longer than 64 octets.
pub const DEFAULT_MAX_LONG_ANSWERS: u32 = 4096;
/// Default number of steered (name, type) answers.
pub const DEFAULT_MAX_STEERED: u16 = 4096;
/// Default TCP connections the DNS server serves at once.
pub const DEFAULT_TCP_MAX_CLIENTS: usize = 1024;
/// Default TCP connections of one client address.
pub const DEFAULT_TCP_MAX_CLIENTS_PER_SOURCE: usize = 32;
/// Default wait for a TCP client's next query: Knot DNS's `tcp-idle-timeout`.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default wait for the next query when more than half the TCP slots are taken: what NSD gives
/// new connections then.
pub const DEFAULT_TCP_BUSY_IDLE_TIMEOUT: Duration = Duration::from_millis(200);
/// Default time to read the rest of a query or send a response: Knot DNS's `tcp-io-timeout`.
pub const DEFAULT_TCP_IO_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest interval, timeout or TTL any duration of the config may name: a day. Longer
/// values mean nothing for a PoP, and bounding them keeps every `Instant + duration` the
/// daemon computes far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Default TTL of a zone's records.
pub const DEFAULT_TTL: u32 = 300;
/// SOA timers when the config leaves them out (seconds): the values RIPE-203 recommends for
/// refresh, retry and expire, and a short negative-caching TTL.
pub const DEFAULT_SOA_REFRESH: u32 = 86_400;
pub const DEFAULT_SOA_RETRY: u32 = 7_200;
pub const DEFAULT_SOA_EXPIRE: u32 = 3_600_000;
pub const DEFAULT_SOA_MINIMUM: u32 = 60;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The fast path; absent, nothing is attached, bpffs is not needed, and DNS (if any) is
    /// answered by the userspace server alone: a PoP that only caches, or a DNS server
    /// without the fast path.
    pub xdp: Option<XdpConfig>,
    /// The DNS service: where the XDP program and the userspace server answer.
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Groups of servers that steered names and the cache choose among.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// The HTTP server and static content cache; absent, the PoP serves no HTTP.
    pub http: Option<crate::http::HttpConfig>,
    /// The daemon's admin server: steering status, drain and undrain, cache purge.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The PoP mesh; absent, this PoP steers on its own measurements alone.
    pub mesh: Option<crate::mesh::MeshConfig>,
}

/// Where `edge status`, `edge drain`, `edge undrain` and `edge purge` reach the running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback by default: only local tools may drain members.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// How often the status page's plots take a sample; they keep the last hour of them.
    #[serde(default = "default_history_interval", with = "humantime_serde")]
    pub history_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            history_interval: default_history_interval(),
        }
    }
}

fn default_history_interval() -> Duration {
    Duration::from_secs(10)
}

/// Bounds of `admin.history_interval`: an hour of samples is 3,600 at most, 60 at least.
const HISTORY_INTERVALS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(60);

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9081))
}

/// A group of interchangeable servers: a customer's origins, or the PoPs of the CDN.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Referred to by names and sites.
    pub name: String,
    pub kind: PoolKind,
    pub members: Vec<MemberConfig>,
    /// How the members are measured (docs/STEERING.md).
    #[serde(default)]
    pub probe: ProbeConfig,
    /// How measurements become answers (docs/STEERING.md).
    #[serde(default)]
    pub steering: SteeringConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Unique within the pool; used in logs, status and admin commands.
    pub name: String,
    pub address: IpAddr,
    /// Where the member serves HTTP.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Where the member's `edge agent` serves its load report; without one, an origin is
    /// ranked by response time.
    pub agent_port: Option<u16>,
    /// A PoP's FTP service, measured with an anonymous login.
    pub ftp_port: Option<u16>,
    /// A member of weight 2 is chosen over one of weight 1 until its score is twice as bad.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpConfig {
    /// The interface the program attaches to.
    pub interface: String,
    #[serde(default)]
    pub mode: XdpMode,
    /// Pins go to `<pin_root>/<interface>/`.
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
    #[serde(default = "default_max_answers")]
    pub max_answers: u32,
    /// Size of the answer map for names longer than 64 octets.
    #[serde(default = "default_max_long_answers")]
    pub max_long_answers: u32,
    /// Steered (name, type) answers the fast path holds, each in two generations.
    #[serde(default = "default_max_steered")]
    pub max_steered: u16,
    /// Response rate limiting; absent: off.
    pub rrl: Option<rrl::RrlConfig>,
}

impl XdpConfig {
    /// The directory holding this interface's pinned maps and link.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.interface)
    }
}

/// How the program attaches: in the driver (fast; the default), or in the generic path for NICs
/// whose driver has no XDP support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Addresses and ports answered on, over UDP and TCP; empty: no userspace server.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// TCP connections served at once, over all addresses.
    #[serde(default = "default_tcp_max_clients")]
    pub tcp_max_clients: usize,
    /// TCP connections one client address (an IPv6 /64) may hold at once.
    #[serde(default = "default_tcp_max_clients_per_source")]
    pub tcp_max_clients_per_source: usize,
    /// How long a TCP connection may wait for its next query.
    #[serde(default = "default_tcp_idle_timeout", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// The same while more than half of `tcp_max_clients` connections are open.
    #[serde(default = "default_tcp_busy_idle_timeout", with = "humantime_serde")]
    pub tcp_busy_idle_timeout: Duration,
    /// How long reading the rest of a query once it has begun, or sending a response, may take.
    #[serde(default = "default_tcp_io_timeout", with = "humantime_serde")]
    pub tcp_io_timeout: Duration,
    /// Answered for CHAOS TXT `id.server` and `hostname.bind` and for EDNS NSID; unset: the
    /// host name; empty: not answered.
    pub identity: Option<String>,
    /// Answered for CHAOS TXT `version.bind` and `version.server`; unset: edge's version;
    /// empty: not answered.
    pub version: Option<String>,
    /// TSIG keys (RFC 8945) that may change zones with dynamic updates (RFC 2136), each with the
    /// zones it may change. A zone no key names refuses every update (NOTAUTH, as Knot DNS
    /// answers without an ACL that allows it).
    #[serde(default)]
    pub update_keys: Vec<UpdateKeyConfig>,
    /// Where applied updates are kept (one journal file per zone), replayed over the zone at a
    /// restart while the zone's source is unchanged. Created when a zone first takes one.
    #[serde(default = "default_journal_dir")]
    pub journal_dir: PathBuf,
}

/// Where the journal of dynamic updates goes unless the config says otherwise.
pub const DEFAULT_JOURNAL_DIR: &str = "/var/lib/edge/journal";

fn default_journal_dir() -> PathBuf {
    PathBuf::from(DEFAULT_JOURNAL_DIR)
}

/// A TSIG key that signs dynamic updates, as Knot DNS's `key` section and an `update` ACL in one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyConfig {
    /// The key's name, as clients sign with it (`knsupdate -y hmac-sha256:NAME:SECRET`).
    pub name: String,
    pub algorithm: TsigAlgorithm,
    /// The shared secret, base64 (what `keymgr -t NAME` or `tsig-keygen` print).
    pub secret: String,
    /// The apexes of the zones this key may change.
    pub zones: Vec<String>,
}

/// The TSIG MAC algorithms edge verifies (those hickory-proto implements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TsigAlgorithm {
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            tcp_max_clients: default_tcp_max_clients(),
            tcp_max_clients_per_source: default_tcp_max_clients_per_source(),
            tcp_idle_timeout: default_tcp_idle_timeout(),
            tcp_busy_idle_timeout: default_tcp_busy_idle_timeout(),
            tcp_io_timeout: default_tcp_io_timeout(),
            identity: None,
            version: None,
            update_keys: Vec::new(),
            journal_dir: default_journal_dir(),
        }
    }
}

/// Names in a zone (owners and targets alike) are relative to the apex (`www`), `@` for the
/// apex, or absolute with a trailing dot (`www.example.org.`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's apex, e.g. `cdn.example.net`.
    pub apex: String,
    /// An RFC 1035 master file holding the zone's records (relative to the config file's
    /// directory); then `ttl`, `soa` and `nameservers` come from the file, and `names` may
    /// only add steered names (`pool`).
    pub file: Option<std::path::PathBuf>,
    /// TTL of records that do not set their own, and of the SOA and the apex NS records
    /// (default 300).
    pub ttl: Option<u32>,
    pub soa: Option<SoaConfig>,
    /// The zone's name servers: the NS records at the apex.
    #[serde(default)]
    pub nameservers: Vec<NameserverConfig>,
    #[serde(default)]
    pub names: Vec<NameConfig>,
}

/// The SOA record's fields (RFC 1035 §3.3.13).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    /// The primary name server; default: the first of `nameservers`, else the apex.
    pub mname: Option<String>,
    /// The responsible mailbox as a name (`hostmaster` for hostmaster@apex).
    #[serde(default = "default_rname")]
    pub rname: String,
    #[serde(default = "default_serial")]
    pub serial: u32,
    #[serde(default = "default_soa_refresh")]
    pub refresh: u32,
    #[serde(default = "default_soa_retry")]
    pub retry: u32,
    #[serde(default = "default_soa_expire")]
    pub expire: u32,
    /// How long resolvers cache a negative answer (RFC 2308).
    #[serde(default = "default_soa_minimum")]
    pub minimum: u32,
}

impl Default for SoaConfig {
    fn default() -> Self {
        Self {
            mname: None,
            rname: default_rname(),
            serial: default_serial(),
            refresh: DEFAULT_SOA_REFRESH,
            retry: DEFAULT_SOA_RETRY,
            expire: DEFAULT_SOA_EXPIRE,
            minimum: DEFAULT_SOA_MINIMUM,
        }
    }
}

/// One NS record at the apex, with the glue a name server inside the zone needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameserverConfig {
    pub name: String,
    /// Its addresses (A and AAAA records): required inside the zone, refused outside it.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// The records of one owner name. A name holds either a `cname`, or a delegation (`ns`, with
/// glue names below it holding only `a`/`aaaa`), or any of the other record types.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameConfig {
    pub name: String,
    /// TTL of all of this name's records; default: the zone's.
    pub ttl: Option<u32>,
    #[serde(default)]
    pub a: Vec<Ipv4Addr>,
    #[serde(default)]
    pub aaaa: Vec<Ipv6Addr>,
    /// An alias: the name answers with this CNAME and nothing else.
    pub cname: Option<String>,
    /// Delegates the name (and everything below it) to these name servers.
    #[serde(default)]
    pub ns: Vec<String>,
    #[serde(default)]
    pub mx: Vec<MxConfig>,
    /// One TXT record per entry; entries longer than 255 bytes are split into several strings.
    #[serde(default)]
    pub txt: Vec<String>,
    /// A steered name: it answers with the addresses of this pool's members (A for IPv4, AAAA
    /// for IPv6), in configured order until steering chooses among them.
    pub pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MxConfig {
    pub preference: u16,
    pub exchange: String,
}

fn default_tcp_max_clients() -> usize {
    DEFAULT_TCP_MAX_CLIENTS
}

fn default_tcp_max_clients_per_source() -> usize {
    DEFAULT_TCP_MAX_CLIENTS_PER_SOURCE
}

fn default_tcp_idle_timeout() -> Duration {
    DEFAULT_TCP_IDLE_TIMEOUT
}

fn default_tcp_busy_idle_timeout() -> Duration {
    DEFAULT_TCP_BUSY_IDLE_TIMEOUT
}

fn default_tcp_io_timeout() -> Duration {
    DEFAULT_TCP_IO_TIMEOUT
}

fn default_http_port() -> u16 {
    80
}

fn default_weight() -> f64 {
    1.0
}

fn default_pin_root() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_ROOT)
}

fn default_max_long_answers() -> u32 {
    DEFAULT_MAX_LONG_ANSWERS
}

fn default_max_steered() -> u16 {
    DEFAULT_MAX_STEERED
}

fn default_max_answers() -> u32 {
    DEFAULT_MAX_ANSWERS
}

fn default_rname() -> String {
    "hostmaster".to_string()
}

fn default_serial() -> u32 {
    1
}

fn default_soa_refresh() -> u32 {
    DEFAULT_SOA_REFRESH
}

fn default_soa_retry() -> u32 {
    DEFAULT_SOA_RETRY
}

fn default_soa_expire() -> u32 {
    DEFAULT_SOA_EXPIRE
}

fn default_soa_minimum() -> u32 {
    DEFAULT_SOA_MINIMUM
}

/// The text of the config file at `path`.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError {
        file: path.to_path_buf(),
        field: String::new(),
        reason: format!("cannot read: {error}"),
    })
}

impl Config {
    /// Reads and parses `path`. Only the shape is checked here; see edge-dns's `Zones::build`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    /// Reads `path` for the commands that work on a running daemon or its maps (`edge drain`,
    /// `status`, `stats`…): all but the zones' name tables, which are most of what a large
    /// config takes to parse (they are the daemon's to check).
    pub fn load_settings(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        match names_table::split(&text, false) {
            Some(split) => match Self::deserialize_toml(path, &split.rest) {
                Ok(config) if config.zones.len() == split.zones => config.checked(path),
                _ => Self::parse(path, &text),
            },
            None => Self::parse(path, &text),
        }
    }

    /// Parses `text` as the contents of `path`: name tables in the plain form by
    /// [`names_table`], the rest (or, if anything in them is not plain, everything) by the toml
    /// crate.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let whole = || Self::deserialize_toml(path, text)?.checked(path);
        let Some(split) = names_table::split(text, true) else {
            return whole();
        };
        // On an error, its position as the whole text gives it.
        let Ok(mut config) = Self::deserialize_toml(path, &split.rest) else {
            return whole();
        };
        if config.zones.len() != split.zones
            || split
                .names
                .iter()
                .zip(&config.zones)
                .any(|(names, zone)| !names.is_empty() && !zone.names.is_empty())
        {
            return whole();
        }
        // Each zone's list moves whole: a million names are not copied again.
        for (zone, names) in config.zones.iter_mut().zip(split.names) {
            if !names.is_empty() {
                zone.names = names;
            }
        }
        config.checked(path)
    }

    /// `text` deserialized by the toml crate, unchecked.
    fn deserialize_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|error| ConfigError {
            file: path.to_path_buf(),
            field: String::new(),
            reason: describe_toml_error(text, &error),
        })?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| ConfigError {
            file: path.to_path_buf(),
            field: field_path(error.path()),
            reason: describe_toml_error(text, error.inner()),
        })
    }

    /// The config once its parts are checked against each other.
    fn checked(mut self, path: &Path) -> Result<Self, ConfigError> {
        self.adopt_http_admin_listen(path)?;
        let config = self;
        config.check_xdp(path)?;
        config.check_dns(path)?;
        config.check_pools(path)?;
        config.check_admin(path)?;
        if let Some(mesh) = &config.mesh {
            mesh.check().map_err(|error| ConfigError {
                file: path.to_path_buf(),
                field: format!("mesh.{}", error.field),
                reason: error.reason,
            })?;
        }
        if let Some(http) = &config.http {
            http.check(path, |name| config.pool(name).map(|pool| pool.kind))?;
        }
        Ok(config)
    }

    fn check_xdp(&self, path: &Path) -> Result<(), ConfigError> {
        let Some(xdp) = &self.xdp else {
            return Ok(());
        };
        let refuse = |field: &str, reason: &str| ConfigError {
            file: path.to_path_buf(),
            field: field.to_string(),
            reason: reason.to_string(),
        };
        let interface = &xdp.interface;
        // IFNAMSIZ is 16 with the terminating NUL.
        if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
            return Err(refuse(
                "xdp.interface",
                "not an interface name (1 to 15 characters, no '/' or spaces)",
            ));
        }
        if xdp.max_answers == 0 {
            return Err(refuse("xdp.max_answers", "must be at least 1"));
        }
        if xdp.max_long_answers == 0 {
            return Err(refuse("xdp.max_long_answers", "must be at least 1"));
        }
        if xdp.max_steered == 0 {
            return Err(refuse("xdp.max_steered", "must be at least 1"));
        }
        if !xdp.pin_root.is_absolute() {
            return Err(refuse("xdp.pin_root", "must be an absolute path"));
        }
        if let Some(Err((field, reason))) = xdp.rrl.as_ref().map(rrl::RrlConfig::check) {
            return Err(refuse(&format!("xdp.rrl.{field}"), &reason));
        }
        Ok(())
    }
}

impl Config {
    fn check_dns(&self, path: &Path) -> Result<(), ConfigError> {
        let refuse = |field: &str, reason: &str| ConfigError {
            file: path.to_path_buf(),
            field: format!("dns.{field}"),
            reason: reason.to_string(),
        };
        let dns = &self.dns;
        if dns.tcp_max_clients == 0 {
            return Err(refuse("tcp_max_clients", "must be at least 1"));
        }
        if dns.tcp_max_clients_per_source == 0 {
            return Err(refuse("tcp_max_clients_per_source", "must be at least 1"));
        }
        for (field, timeout) in [
            ("tcp_idle_timeout", dns.tcp_idle_timeout),
            ("tcp_busy_idle_timeout", dns.tcp_busy_idle_timeout),
            ("tcp_io_timeout", dns.tcp_io_timeout),
        ] {
            if timeout.is_zero() {
                return Err(refuse(field, "must be more than 0"));
            }
            if timeout > MAX_DURATION {
                return Err(refuse(field, "must be at most 1 day"));
            }
        }
        if dns.tcp_busy_idle_timeout > dns.tcp_idle_timeout {
            return Err(refuse(
                "tcp_busy_idle_timeout",
                "must be at most dns.tcp_idle_timeout",
            ));
        }
        if !dns.journal_dir.is_absolute() {
            return Err(refuse("journal_dir", "must be an absolute path"));
        }
        self.check_update_keys(path)?;
        for (i, address) in self.dns.listen.iter().enumerate() {
            if self.dns.listen[..i].contains(address) {
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    field: format!("dns.listen[{i}]"),
                    reason: format!("{address} is listed twice"),
                });
            }
            let family = self.dns.listen[..=i]
                .iter()
                .filter(|other| other.is_ipv4() == address.is_ipv4())
                .count();
            if family > SERVICES_MAX {
                return Err(ConfigError {
                    file: path.to_path_buf(),
                    field: format!("dns.listen[{i}]"),
                    reason: format!(
                        "the XDP program answers on at most {SERVICES_MAX} addresses per family"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Each update key: a name given once, a secret that is base64 of at least one byte, and
    /// zones that the config defines. A name's syntax is edge-dns's to check.
    fn check_update_keys(&self, path: &Path) -> Result<(), ConfigError> {
        let refuse = |field: String, reason: String| ConfigError {
            file: path.to_path_buf(),
            field,
            reason,
        };
        let plain = |name: &str| name.trim_end_matches('.').to_ascii_lowercase();
        for (k, key) in self.dns.update_keys.iter().enumerate() {
            let at = |field: &str| format!("dns.update_keys[{k}].{field}");
            if plain(&key.name).is_empty() {
                return Err(refuse(at("name"), "must name the key".into()));
            }
            if let Some(first) = self.dns.update_keys[..k]
                .iter()
                .position(|other| plain(&other.name) == plain(&key.name))
            {
                return Err(refuse(
                    at("name"),
                    format!(
                        "key {} is already defined by dns.update_keys[{first}]",
                        key.name
                    ),
                ));
            }
            match data_encoding::BASE64.decode(key.secret.trim().as_bytes()) {
                Ok(secret) if !secret.is_empty() => {}
                Ok(_) => return Err(refuse(at("secret"), "is empty".into())),
                Err(error) => return Err(refuse(at("secret"), format!("not base64: {error}"))),
            }
            if key.zones.is_empty() {
                return Err(refuse(
                    at("zones"),
                    "names no zone the key may change".into(),
                ));
            }
            for (z, zone) in key.zones.iter().enumerate() {
                if !self
                    .zones
                    .iter()
                    .any(|known| plain(&known.apex) == plain(zone))
                {
                    return Err(refuse(
                        format!("dns.update_keys[{k}].zones[{z}]"),
                        format!("no zone {zone} in [[zones]]"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    fn check_pools(&self, path: &Path) -> Result<(), ConfigError> {
        let refuse = |field: String, reason: String| ConfigError {
            file: path.to_path_buf(),
            field,
            reason,
        };
        for (p, pool) in self.pools.iter().enumerate() {
            if let Some(first) = self.pools[..p].iter().position(|o| o.name == pool.name) {
                return Err(refuse(
                    format!("pools[{p}].name"),
                    format!("pool {} is already defined by pools[{first}]", pool.name),
                ));
            }
            if pool.members.is_empty() {
                return Err(refuse(
                    format!("pools[{p}].members"),
                    "a pool needs members".into(),
                ));
            }
            for (m, member) in pool.members.iter().enumerate() {
                if let Some(first) = pool.members[..m].iter().position(|o| o.name == member.name) {
                    return Err(refuse(
                        format!("pools[{p}].members[{m}].name"),
                        format!(
                            "member {} is already defined by pools[{p}].members[{first}]",
                            member.name
                        ),
                    ));
                }
            }
            for (m, member) in pool.members.iter().enumerate() {
                if !(member.weight.is_finite() && member.weight > 0.0) {
                    return Err(refuse(
                        format!("pools[{p}].members[{m}].weight"),
                        "must be above 0".into(),
                    ));
                }
                if member.ftp_port.is_some() && pool.kind != PoolKind::Pop {
                    return Err(refuse(
                        format!("pools[{p}].members[{m}].ftp_port"),
                        "only PoP members have an FTP service to measure".into(),
                    ));
                }
            }
            crate::steering::check(path, p, &pool.probe, &pool.steering)?;
        }
        Ok(())
    }

    fn check_admin(&self, path: &Path) -> Result<(), ConfigError> {
        if !HISTORY_INTERVALS.contains(&self.admin.history_interval) {
            return Err(ConfigError {
                file: path.to_path_buf(),
                field: "admin.history_interval".into(),
                reason: "must be between 1s and 60s".into(),
            });
        }
        if self.http.as_ref().map(|http| http.listen) == Some(self.admin.listen) {
            return Err(ConfigError {
                file: path.to_path_buf(),
                field: "admin.listen".into(),
                reason: format!("{} is already http.listen", self.admin.listen),
            });
        }
        Ok(())
    }

    /// `http.admin_listen` is from when the cache had an admin server of its own; one admin
    /// server now serves purge too, on `admin.listen`. The old field still moves it there when
    /// `admin.listen` is left at its default, so that old configs keep their address; set
    /// next to a different `admin.listen`, it is refused rather than silently ignored.
    fn adopt_http_admin_listen(&mut self, path: &Path) -> Result<(), ConfigError> {
        let Some(http) = &self.http else {
            return Ok(());
        };
        let Some(old) = http.admin_listen else {
            return Ok(());
        };
        let refuse = |reason: String| ConfigError {
            file: path.to_path_buf(),
            field: "http.admin_listen".into(),
            reason,
        };
        if old == http.listen {
            return Err(refuse("must differ from http.listen".into()));
        }
        if self.admin.listen == default_admin_listen() {
            self.admin.listen = old;
        } else if self.admin.listen != old {
            return Err(refuse(format!(
                "deprecated, and admin.listen ({}) differs: one admin server serves purge, \
                 status, drain and undrain on admin.listen; remove http.admin_listen",
                self.admin.listen
            )));
        }
        Ok(())
    }

    /// Fields that are accepted but deprecated, each with what to use instead; `edge check`
    /// prints them and `edge run` logs them.
    pub fn deprecations(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self
            .http
            .as_ref()
            .is_some_and(|http| http.admin_listen.is_some())
        {
            found.push(format!(
                "http.admin_listen is deprecated: one admin server (status, drain, undrain, \
                 purge) listens on admin.listen, now {}; move the address to [admin] listen",
                self.admin.listen
            ));
        }
        found
    }
}

fn field_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." { String::new() } else { text }
}

/// The error's own message plus the line it points at.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end().to_string();
    match error.span() {
        Some(span) => {
            let line = text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count()
                + 1;
            format!("{message} (line {line})")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("edge.toml"), text)
    }

    const MINIMAL: &str = "[xdp]\ninterface = \"eth0\"\n";

    #[test]
    fn xdp_is_optional() {
        let config = parse("[dns]\nlisten = [\"127.0.0.1:53\"]\n").unwrap();
        assert!(config.xdp.is_none());
    }

    #[test]
    fn defaults_apply() {
        let config = parse(MINIMAL).unwrap();
        let xdp = config.xdp.as_ref().unwrap();
        assert_eq!(xdp.mode, XdpMode::Native);
        assert_eq!(xdp.pin_dir(), Path::new("/sys/fs/bpf/edge/eth0"));
        assert_eq!(xdp.max_answers, DEFAULT_MAX_ANSWERS);
        assert!(config.zones.is_empty());
    }

    /// The one admin server listens on admin.listen; the deprecated http.admin_listen still
    /// places it when admin.listen is left at its default, and is refused next to another one.
    #[test]
    fn deprecated_http_admin_listen_moves_the_one_admin_server() {
        let http = "[http]\ncache_dir = \"/c\"\ncache_capacity = \"1 MiB\"\n";
        let config = parse(&format!("{MINIMAL}{http}")).unwrap();
        assert_eq!(config.admin.listen, default_admin_listen());
        assert!(config.deprecations().is_empty());

        let old = "admin_listen = \"127.0.0.1:9080\"\n";
        let config = parse(&format!("{MINIMAL}{http}{old}")).unwrap();
        assert_eq!(config.admin.listen, "127.0.0.1:9080".parse().unwrap());
        let deprecations = config.deprecations();
        assert_eq!(deprecations.len(), 1);
        assert!(
            deprecations[0].contains("http.admin_listen is deprecated"),
            "{deprecations:?}"
        );

        let same = "[admin]\nlisten = \"127.0.0.1:9080\"\n";
        let config = parse(&format!("{MINIMAL}{same}{http}{old}")).unwrap();
        assert_eq!(config.admin.listen, "127.0.0.1:9080".parse().unwrap());

        let other = "[admin]\nlisten = \"127.0.0.1:7000\"\n";
        let error = parse(&format!("{MINIMAL}{other}{http}{old}")).unwrap_err();
        assert_eq!(error.field, "http.admin_listen", "{error}");
        assert!(error.reason.contains("remove http.admin_listen"), "{error}");
    }

    #[test]
    fn rrl_is_off_unless_configured_and_its_bad_values_are_named() {
        assert!(parse(MINIMAL).unwrap().xdp.unwrap().rrl.is_none());
        let rrl = parse(&format!(
            "{MINIMAL}[xdp.rrl]\nrate = 20\nexempt = [\"10.0.0.0/8\"]\n"
        ))
        .unwrap()
        .xdp
        .unwrap()
        .rrl
        .unwrap();
        assert_eq!(
            (rrl.rate, rrl.burst(), rrl.slip),
            (20, 20, rrl::DEFAULT_SLIP)
        );
        assert_eq!(rrl.table_size, rrl::DEFAULT_TABLE_SIZE);
        assert_eq!(rrl.exempt[0].to_string(), "10.0.0.0/8");
        for (table, field, reason) in [
            ("rate = 0", "xdp.rrl.rate", "from 1"),
            ("rate = 5\nburst = 0", "xdp.rrl.burst", "from 1"),
            ("rate = 5\nslip = 101", "xdp.rrl.slip", "0 to 100"),
            ("rate = 5\ntable_size = 0", "xdp.rrl.table_size", "from 1"),
            (
                "rate = 5\nexempt = [\"10.0.0.1/8\"]",
                "xdp.rrl.exempt[0]",
                "10.0.0.0/8",
            ),
            ("burst = 5", "xdp.rrl", "missing field `rate`"),
        ] {
            let error = parse(&format!("{MINIMAL}[xdp.rrl]\n{table}\n")).unwrap_err();
            assert_eq!(error.field, field, "{table}: {error}");
            assert!(error.reason.contains(reason), "{table}: {error}");
        }
    }

    #[test]
    fn unknown_field_names_the_field() {
        let error = parse("[xdp]\ninterface = \"eth0\"\nspeed = 3\n").unwrap_err();
        assert_eq!(error.file, Path::new("edge.toml"));
        assert!(error.field.starts_with("xdp"), "{error}");
        assert!(error.reason.contains("unknown field `speed`"), "{error}");
        assert!(error.reason.contains("line 3"), "{error}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = format!("{MINIMAL}[[zones]]\napex = \"example.com\"\nttl = \"long\"\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.field, "zones[0].ttl", "{error}");
        assert!(error.reason.contains("invalid type"), "{error}");
    }

    #[test]
    fn bad_address_names_the_field() {
        let text = format!(
            "{MINIMAL}[[zones]]\napex = \"example.com\"\n[[zones.names]]\nname = \"www\"\na = [\"192.0.2.1\", \"192.0.2.300\"]\n"
        );
        let error = parse(&text).unwrap_err();
        assert_eq!(error.field, "zones[0].names[0].a[1]", "{error}");
        assert!(error.reason.contains("invalid IPv4 address"), "{error}");
    }

    #[test]
    fn bad_mode_and_interface_are_refused() {
        let error = parse("[xdp]\ninterface = \"eth0\"\nmode = \"turbo\"\n").unwrap_err();
        assert_eq!(error.field, "xdp.mode", "{error}");
        let error = parse("[xdp]\ninterface = \"a-very-long-interface\"\n").unwrap_err();
        assert_eq!(error.field, "xdp.interface", "{error}");
    }

    #[test]
    fn more_service_addresses_than_the_fast_path_holds_are_refused() {
        let listen = |count: u8| {
            let addresses: Vec<String> = (1..=count)
                .map(|i| format!("\"192.0.2.{i}:53\""))
                .chain(["\"[2001:db8::1]:53\"".to_string()])
                .collect();
            format!("{MINIMAL}[dns]\nlisten = [{}]\n", addresses.join(", "))
        };
        assert!(parse(&listen(SERVICES_MAX as u8)).is_ok());
        let error = parse(&listen(SERVICES_MAX as u8 + 1)).unwrap_err();
        assert_eq!(
            error.field,
            format!("dns.listen[{SERVICES_MAX}]"),
            "{error}"
        );
        assert!(error.reason.contains("at most 16"), "{error}");
    }

    #[test]
    fn pools_parse_and_duplicates_are_refused() {
        let pools = "[[pools]]\nname = \"shop\"\nkind = \"origin\"\n[[pools.members]]\nname = \"a\"\naddress = \"2001:db8::1\"\n";
        let config = parse(&format!("{MINIMAL}{pools}")).unwrap();
        let pool = config.pool("shop").unwrap();
        assert_eq!(pool.kind, PoolKind::Origin);
        assert_eq!(pool.members[0].http_port, 80);
        let error = parse(&format!("{MINIMAL}{pools}{pools}")).unwrap_err();
        assert_eq!(error.field, "pools[1].name", "{error}");
        let twice =
            format!("{MINIMAL}{pools}[[pools.members]]\nname = \"a\"\naddress = \"192.0.2.1\"\n");
        let error = parse(&twice).unwrap_err();
        assert_eq!(error.field, "pools[0].members[1].name", "{error}");
    }

    #[test]
    fn the_mesh_table_is_checked_with_its_field_named() {
        let mesh = "[mesh]\nname = \"pop1\"\nlisten = \"192.0.2.1:7946\"\ncluster_id = \"cdn\"\nsecret = \"0123456789abcdef\"\n";
        let config = parse(&format!("{MINIMAL}{mesh}")).unwrap();
        assert_eq!(config.mesh.unwrap().name, "pop1");
        assert_eq!(parse(MINIMAL).unwrap().mesh, None);
        let short = mesh.replace("0123456789abcdef", "short");
        let error = parse(&format!("{MINIMAL}{short}")).unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.reason.as_str()),
            ("mesh.secret", "at least 16 bytes")
        );
        let error = parse(&format!("{MINIMAL}{mesh}seed = []\n")).unwrap_err();
        assert_eq!(error.field, "mesh.seed", "{error}");
    }

    #[test]
    fn probe_and_steering_defaults_and_refusals() {
        let pool = "[[pools]]\nname = \"shop\"\nkind = \"origin\"\n[[pools.members]]\nname = \"a\"\naddress = \"192.0.2.1\"\n";
        let config = parse(&format!("{MINIMAL}{pool}")).unwrap();
        let shop = config.pool("shop").unwrap();
        assert_eq!(shop.probe, ProbeConfig::default());
        assert_eq!(shop.probe.interval, std::time::Duration::from_millis(500));
        assert_eq!(
            shop.steering.all_down,
            crate::steering::AllDown::KeepLastGood
        );
        assert_eq!(shop.members[0].weight, 1.0);
        assert_eq!(config.admin.listen, "127.0.0.1:9081".parse().unwrap());
        let cases: &[(&str, &str, &str)] = &[
            (
                "[pools.probe]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
                "pools[0].probe.timeout",
                "below probe.interval",
            ),
            (
                "[pools.probe]\nrise = 0\n",
                "pools[0].probe.rise",
                "at least 1",
            ),
            (
                "[pools.probe]\ninterval = \"2days\"\n",
                "pools[0].probe.interval",
                "at most 1 day",
            ),
            (
                "[pools.probe]\nhealth_path = \"health\"\n",
                "pools[0].probe.health_path",
                "start with '/'",
            ),
            (
                "[pools.probe]\nhost = \"static example\"\n",
                "pools[0].probe.host",
                "not a host name",
            ),
            (
                "[pools.probe]\njitter = 1.5\n",
                "pools[0].probe.jitter",
                "fraction",
            ),
            (
                "[pools.steering]\nall_down = \"panic\"\n",
                "pools[0].steering.all_down",
                "unknown variant",
            ),
            (
                "[pools.steering]\nttl = 10\nchanging_ttl = 30\n",
                "pools[0].steering.changing_ttl",
                "at most steering.ttl",
            ),
            (
                "[pools.steering]\newma = 0\n",
                "pools[0].steering.ewma",
                "(0, 1]",
            ),
            (
                "[pools.steering]\ndeviations = -1\n",
                "pools[0].steering.deviations",
                "≥ 0",
            ),
            (
                "[pools.steering.weights]\ncpu = -1\n",
                "pools[0].steering.weights",
                "not negative",
            ),
        ];
        for (table, field, reason) in cases {
            let error = parse(&format!("{MINIMAL}{pool}{table}")).unwrap_err();
            assert_eq!(&error.field, field, "{table}: {error}");
            assert!(error.reason.contains(reason), "{table}: {error}");
        }
        let error = parse(&format!("{MINIMAL}{pool}ftp_port = 21\n")).unwrap_err();
        assert_eq!(error.field, "pools[0].members[0].ftp_port", "{error}");
        let error = parse(&format!("{MINIMAL}{pool}weight = 0\n")).unwrap_err();
        assert_eq!(error.field, "pools[0].members[0].weight", "{error}");
        let pops = pool.replace("origin", "pop") + "ftp_port = 21\nagent_port = 9100\n";
        let config = parse(&format!("{MINIMAL}{pops}")).unwrap();
        assert_eq!(config.pools[0].members[0].ftp_port, Some(21));
    }

    #[test]
    fn tcp_limits_have_defaults_and_refusals() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.dns.tcp_max_clients, DEFAULT_TCP_MAX_CLIENTS);
        assert_eq!(config.dns.tcp_idle_timeout, Duration::from_secs(10));
        let config = parse(&format!(
            "{MINIMAL}[dns]\ntcp_max_clients_per_source = 4\ntcp_busy_idle_timeout = \"1s\"\n"
        ))
        .unwrap();
        assert_eq!(config.dns.tcp_max_clients_per_source, 4);
        assert_eq!(config.dns.tcp_busy_idle_timeout, Duration::from_secs(1));
        for (table, field, reason) in [
            ("tcp_max_clients = 0", "dns.tcp_max_clients", "at least 1"),
            (
                "tcp_io_timeout = \"0s\"",
                "dns.tcp_io_timeout",
                "more than 0",
            ),
            (
                "tcp_idle_timeout = \"100years\"",
                "dns.tcp_idle_timeout",
                "at most 1 day",
            ),
            (
                "tcp_idle_timeout = \"1s\"\ntcp_busy_idle_timeout = \"2s\"",
                "dns.tcp_busy_idle_timeout",
                "at most dns.tcp_idle_timeout",
            ),
        ] {
            let error = parse(&format!("{MINIMAL}[dns]\n{table}\n")).unwrap_err();
            assert_eq!(error.field, field, "{table}: {error}");
            assert!(error.reason.contains(reason), "{table}: {error}");
        }
    }

    #[test]
    fn syntax_error_names_the_line() {
        let error = parse("[xdp\ninterface = 1\n").unwrap_err();
        assert!(error.field.is_empty());
        assert!(error.reason.contains("line 1"), "{error}");
        assert!(error.to_string().starts_with("edge.toml: "), "{error}");
    }

    #[test]
    fn update_keys_are_refused_at_the_field() {
        let zone = "[[zones]]\napex = \"example.com\"\n";
        let key = |fields: &str| {
            format!(
                "[[dns.update_keys]]\nname = \"k\"\nalgorithm = \"hmac-sha256\"\n{fields}\n{zone}"
            )
        };
        let good = "secret = \"c2VjcmV0\"\nzones = [\"example.com.\"]";
        let config = parse(&key(good)).unwrap();
        assert_eq!(
            config.dns.update_keys[0].algorithm,
            TsigAlgorithm::HmacSha256
        );
        assert_eq!(config.dns.journal_dir, Path::new(DEFAULT_JOURNAL_DIR));
        for (fields, field, reason) in [
            (
                "secret = \"not base64!\"\nzones = [\"example.com\"]",
                "dns.update_keys[0].secret",
                "base64",
            ),
            (
                "secret = \"\"\nzones = [\"example.com\"]",
                "dns.update_keys[0].secret",
                "empty",
            ),
            (
                "secret = \"c2VjcmV0\"\nzones = [\"example.org\"]",
                "dns.update_keys[0].zones[0]",
                "no zone",
            ),
            (
                "secret = \"c2VjcmV0\"\nzones = []",
                "dns.update_keys[0].zones",
                "no zone",
            ),
        ] {
            let error = parse(&key(fields)).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            assert!(error.reason.contains(reason), "{error}");
        }
        let md5 = key(good).replace("hmac-sha256", "hmac-md5");
        let error = parse(&md5).unwrap_err();
        assert_eq!(error.field, "dns.update_keys[0].algorithm", "{error}");
        let twice = format!(
            "{}[[dns.update_keys]]\nname = \"K.\"\nalgorithm = \"hmac-sha512\"\n{good}\n",
            key(good)
        );
        let error = parse(&twice).unwrap_err();
        assert_eq!(error.field, "dns.update_keys[1].name", "{error}");
        let error = parse(&format!("[dns]\njournal_dir = \"journal\"\n{zone}")).unwrap_err();
        assert_eq!(error.field, "dns.journal_dir", "{error}");
    }
}
