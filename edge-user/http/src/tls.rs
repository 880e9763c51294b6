//! TLS termination: each site's certificate and key, read and checked before they are used
//! (readable, parsable, the key matching, valid now, covering the site's host), and chosen by
//! the client's server name (SNI). TLS 1.2 and 1.3 with rustls' defaults (ring); HTTP/2 or
//! HTTP/1.1 by ALPN; resumption by tickets whose keys rotate, kept across reloads.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use rustls::{
    ServerConfig,
    crypto::ring::{self, sign::any_supported_type},
    server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

use edge_config::http::HttpConfig;

/// A certificate or key refused: the file, the config field that names it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateError {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.field,
            self.reason
        )
    }
}

impl std::error::Error for CertificateError {}

/// What outlives a reload: the ticket keys (rotated every six hours by rustls' ticketer) and the
/// TLS 1.2 session cache, so that a client resumes across a certificate change.
#[derive(Debug, Clone)]
pub struct Resumption {
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

/// TLS 1.2 sessions kept for resumption by session ID (clients without tickets).
const SESSIONS: usize = 4096;

impl Resumption {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ticketer: ring::Ticketer::new()?,
            sessions: rustls::server::ServerSessionMemoryCache::new(SESSIONS),
        })
    }
}

/// The certificates by host, and the one for names no site serves.
#[derive(Debug)]
struct Certificates {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands the name lower-cased and without a trailing dot.
        hello
            .server_name()
            .and_then(|name| self.by_host.get(name))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// The crypto provider of every TLS connection, to clients and to origins: ring, which builds
/// here in seconds with no cmake; its lack of post-quantum key exchange (X25519MLKEM768, which
/// aws-lc-rs has) is why rustls marks it deprecated.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The TLS server config for `http`'s sites, every certificate checked at `now`; `None` when
/// `http` has no `tls_listen`.
pub fn server_config(
    http: &HttpConfig,
    resumption: &Resumption,
    now: SystemTime,
) -> Result<Option<Arc<ServerConfig>>, CertificateError> {
    if http.tls_listen.is_none() {
        return Ok(None);
    }
    // A file named by several sites (a wildcard or multi-name certificate) is read once.
    let mut loaded: HashMap<(PathBuf, PathBuf), Arc<CertifiedKey>> = HashMap::new();
    let mut by_host = HashMap::new();
    for (s, site) in http.sites.iter().enumerate() {
        let (Some(certificate), Some(key)) = (&site.certificate, &site.key) else {
            continue;
        };
        let field = format!("http.sites[{s}]");
        let certified = match loaded.get(&(certificate.clone(), key.clone())) {
            Some(certified) => certified.clone(),
            None => {
                let certified = Arc::new(load(certificate, key, &field)?);
                loaded.insert((certificate.clone(), key.clone()), certified.clone());
                certified
            }
        };
        check(&certified, certificate, &field, &site.host, now)?;
        by_host.insert(site.host.clone(), certified);
    }
    let default = http
        .tls_default_host
        .as_ref()
        .and_then(|host| by_host.get(host).cloned());
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certificates { by_host, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.sessions.clone();
    Ok(Some(Arc::new(config)))
}

/// Reads a certificate chain and its key, and checks that they belong together.
fn load(certificate: &Path, key: &Path, field: &str) -> Result<CertifiedKey, CertificateError> {
    let refuse = |file: &Path, name: &str, reason: String| CertificateError {
        file: file.to_path_buf(),
        field: format!("{field}.{name}"),
        reason,
    };
    let cert_pem = std::fs::read(certificate)
        .map_err(|error| refuse(certificate, "certificate", format!("cannot read: {error}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| refuse(certificate, "certificate", format!("not PEM: {error}")))?;
    if chain.is_empty() {
        return Err(refuse(
            certificate,
            "certificate",
            "no CERTIFICATE in it".into(),
        ));
    }
    let key_pem =
        std::fs::read(key).map_err(|error| refuse(key, "key", format!("cannot read: {error}")))?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|error| refuse(key, "key", format!("no private key in it: {error}")))?;
    let signing = any_supported_type(&der)
        .map_err(|error| refuse(key, "key", format!("unusable key: {error}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        refuse(
            key,
            "key",
            format!("does not match the certificate {}", certificate.display()),
        )
    })?;
    Ok(certified)
}

/// Checks that the end-entity certificate is valid at `now` and covers `host`.
fn check(
    certified: &CertifiedKey,
    file: &Path,
    field: &str,
    host: &str,
    now: SystemTime,
) -> Result<(), CertificateError> {
    let refuse = |reason: String| CertificateError {
        file: file.to_path_buf(),
        field: format!("{field}.certificate"),
        reason,
    };
    let der = certified
        .end_entity_cert()
        .expect("load refused an empty chain");
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| refuse(format!("not an X.509 certificate: {error}")))?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let validity = parsed.validity();
    if validity.not_after.timestamp() < now {
        return Err(refuse(format!("expired on {}", validity.not_after)));
    }
    if validity.not_before.timestamp() > now {
        return Err(refuse(format!("not valid before {}", validity.not_before)));
    }
    let name = ServerName::try_from(host).map_err(|error| refuse(error.to_string()))?;
    webpki::EndEntityCert::try_from(der)
        .map_err(|error| refuse(format!("not a usable certificate: {error}")))?
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| refuse(format!("does not cover {host}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::Config;

    struct Made {
        dir: PathBuf,
    }

    impl Made {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("edge-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self { dir }
        }

        /// Writes a self-signed certificate for `names`, valid from `from` to `to` (Unix days),
        /// and its key; returns their paths.
        fn certificate(&self, file: &str, names: &[&str], days: (i64, i64)) -> (PathBuf, PathBuf) {
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            let day = |d: i64| time::OffsetDateTime::from_unix_timestamp(d * 86_400).unwrap();
            params.not_before = day(days.0);
            params.not_after = day(days.1);
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = params.self_signed(&key).unwrap();
            let (cert_path, key_path) = (
                self.dir.join(format!("{file}.pem")),
                self.dir.join(format!("{file}.key")),
            );
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            (cert_path, key_path)
        }
    }

    impl Drop for Made {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn today() -> i64 {
        (SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 86_400) as i64
    }

    fn config(sites: &[(&str, &Path, &Path)]) -> HttpConfig {
        let mut text = String::from(
            "[[pools]]\nname = \"o\"\nkind = \"origin\"\n[[pools.members]]\nname = \"a\"\naddress = \"192.0.2.1\"\n[http]\ncache_dir = \"/c\"\ncache_capacity = 1\ntls_listen = \"0.0.0.0:443\"\n",
        );
        for (host, cert, key) in sites {
            text.push_str(&format!(
                "[[http.sites]]\nhost = \"{host}\"\npool = \"o\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        Config::parse(Path::new("edge.toml"), &text)
            .unwrap()
            .http
            .unwrap()
    }

    fn refusal(http: &HttpConfig) -> CertificateError {
        server_config(http, &Resumption::new().unwrap(), SystemTime::now()).unwrap_err()
    }

    #[test]
    fn good_certificates_load_and_shared_files_are_read_once() {
        let made = Made::new("good");
        let now = today();
        let (cert, key) = made.certificate("wild", &["*.example.com"], (now - 1, now + 30));
        let http = config(&[
            ("a.example.com", &cert, &key),
            ("b.example.com", &cert, &key),
        ]);
        let config = server_config(&http, &Resumption::new().unwrap(), SystemTime::now())
            .unwrap()
            .unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(config.ticketer.enabled());
    }

    #[test]
    fn bad_certificates_are_refused_with_file_and_reason() {
        let made = Made::new("bad");
        let now = today();
        let (good, good_key) = made.certificate("good", &["a.example.com"], (now - 1, now + 30));
        let (expired, expired_key) =
            made.certificate("expired", &["a.example.com"], (now - 30, now - 2));
        let (future, future_key) =
            made.certificate("future", &["a.example.com"], (now + 2, now + 30));
        let (other, other_key) = made.certificate("other", &["b.example.com"], (now - 1, now + 30));
        let garbage = made.dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = made.dir.join("missing.pem");
        for (cert, key, file, field, reason) in [
            (&missing, &good_key, &missing, "certificate", "cannot read"),
            (
                &garbage,
                &good_key,
                &garbage,
                "certificate",
                "no CERTIFICATE",
            ),
            (&good, &garbage, &garbage, "key", "no private key"),
            (&good, &other_key, &other_key, "key", "does not match"),
            (
                &expired,
                &expired_key,
                &expired,
                "certificate",
                "expired on",
            ),
            (
                &future,
                &future_key,
                &future,
                "certificate",
                "not valid before",
            ),
            (
                &other,
                &other_key,
                &other,
                "certificate",
                "does not cover a.example.com",
            ),
        ] {
            let error = refusal(&config(&[("a.example.com", cert, key)]));
            assert_eq!(&error.file, file, "{error}");
            assert_eq!(error.field, format!("http.sites[0].{field}"), "{error}");
            assert!(error.reason.contains(reason), "{error}");
        }
    }
}
