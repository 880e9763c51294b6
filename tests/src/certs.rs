//! Test certificates, made by the test (rcgen): a CA of its own, and ECDSA P-256 certificates it
//! signs for given names and validity, written as PEM files to a directory removed on drop.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

/// A directory of PEM files and the CA that signs the certificates in it.
pub struct TestCa {
    dir: PathBuf,
    issuer: (Certificate, KeyPair),
    /// The CA's certificate, for clients (`curl --cacert`, `openssl s_client -CAfile`).
    pub ca: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Made {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Validity relative to now.
pub const VALID: (i64, i64) = (-86_400, 30 * 86_400);
pub const EXPIRED: (i64, i64) = (-30 * 86_400, -86_400);

impl TestCa {
    /// A new CA, its files under the temporary directory named for `test`.
    pub fn new(test: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("edge-certs-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("edge test CA {test}"));
        (params.not_before, params.not_after) = validity(VALID);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem())?;
        let issuer = (cert, key);
        Ok(Self { dir, issuer, ca })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A certificate for `names` (the first is its common name), valid for `valid` seconds
    /// around now, and its key, as `<file>.pem` and `<file>.key`.
    pub fn certificate(&self, file: &str, names: &[&str], valid: (i64, i64)) -> Result<Made> {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].to_string());
        (params.not_before, params.not_after) = validity(valid);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer.0, &self.issuer.1)?;
        let made = Made {
            certificate: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&made.certificate, cert.pem())?;
        std::fs::write(&made.key, key.serialize_pem())?;
        Ok(made)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn validity((from, to): (i64, i64)) -> (OffsetDateTime, OffsetDateTime) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let at = |offset: i64| {
        OffsetDateTime::from_unix_timestamp(now + offset).expect("a date within range")
    };
    (at(from), at(to))
}

/// A `[[http.sites]]` table for `host` of pool `origins` with `made`'s files.
pub fn site(host: &str, made: &Made) -> String {
    format!(
        "[[http.sites]]\nhost = \"{host}\"\npool = \"origins\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
        made.certificate.display(),
        made.key.display()
    )
}
