//! `[server] tls = { cert = "cert.pem", key = "key.pem" }`: the certificate chain and private key
//! `rampart serve` answers HTTPS with. Both are checked when the configuration is read (the file
//! exists, is readable, holds PEM of the right kind); the key's contents are never kept in the
//! configuration, logged or shown.

use std::path::{Path, PathBuf};

use rampart_resilience::ConfigError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The files of `[server] tls`. Paths are relative to the working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTls {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl ServerTls {
    /// TLS with the chain in `cert` and the key in `key` (checked by [`ServerTls::load`]).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTls {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Reads both files: the chain and the key. Errors name the key (`server.tls.cert`,
    /// `server.tls.key`) and the file, never the key's contents.
    pub fn load(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConfigError> {
        let mut errors = ConfigError::default();
        let certs = read_certs(&self.cert, &mut errors);
        let key = read_key(&self.key, &mut errors);
        match (certs, key) {
            (Some(c), Some(k)) if errors.problems.is_empty() => Ok((c, k)),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

/// Checks `[server] tls`, reporting problems under `server.tls.`.
pub(crate) fn tls(raw: &RawTls, errors: &mut ConfigError) -> Option<ServerTls> {
    let mut missing = false;
    for (name, value) in [("cert", &raw.cert), ("key", &raw.key)] {
        if value.as_deref().is_none_or(str::is_empty) {
            errors.push(format!("server.tls.{name}"), "a PEM file is required");
            missing = true;
        }
    }
    if missing {
        return None;
    }
    let tls = ServerTls::new(
        raw.cert.clone().unwrap_or_default(),
        raw.key.clone().unwrap_or_default(),
    );
    let certs = read_certs(&tls.cert, errors);
    let key = read_key(&tls.key, errors);
    (certs.is_some() && key.is_some()).then_some(tls)
}

fn read(path: &Path, key: &str, errors: &mut ConfigError) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            errors.push(
                format!("server.tls.{key}"),
                format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

fn read_certs(path: &Path, errors: &mut ConfigError) -> Option<Vec<CertificateDer<'static>>> {
    let bytes = read(path, "cert", errors)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if !c.is_empty() => Some(c),
        _ => {
            errors.push(
                "server.tls.cert",
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            );
            None
        }
    }
}

fn read_key(path: &Path, errors: &mut ConfigError) -> Option<PrivateKeyDer<'static>> {
    let bytes = read(path, "key", errors)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Some(k),
        Err(_) => {
            errors.push(
                "server.tls.key",
                format!(
                    "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                    path.display()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::config::MonitorConfig;

    fn problems(text: &str) -> Vec<(String, String)> {
        let e = MonitorConfig::from_str(text, None).unwrap_err();
        e.problems
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect()
    }

    const TARGET: &str =
        "[[target]]\nname = \"t\"\nkind = \"tcp\"\n[target.tcp]\naddress = \"127.0.0.1:1\"\n";

    #[test]
    fn good_files_are_read_and_the_key_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let text = format!("[server]\ntls = {{ cert = {c:?}, key = {k:?} }}\n{TARGET}");
        let config = MonitorConfig::from_str(&text, None).unwrap();
        let tls = config.server.unwrap().tls.unwrap();
        assert_eq!(
            (tls.cert.as_path(), tls.key.as_path()),
            (c.as_path(), k.as_path())
        );
        let (chain, _key) = tls.load().unwrap();
        assert_eq!(chain.len(), 1);
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn missing_unreadable_and_bad_pem_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").unwrap();
        let nowhere = dir.path().join("nowhere.pem");
        let text = format!("[server]\ntls = {{ cert = {junk:?}, key = {nowhere:?} }}\n{TARGET}");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|(k, m)| k == "server.tls.cert" && m.contains("no PEM certificate")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "server.tls.key" && m.contains("cannot read")),
            "{p:?}"
        );
        // A certificate where the key should be.
        let text = format!("[server]\ntls = {{ cert = {junk:?}, key = {junk:?} }}\n{TARGET}");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|(k, m)| k == "server.tls.key" && m.contains("no PEM private key")),
            "{p:?}"
        );
        let p = problems(&format!("[server]\ntls = {{ cert = \"\" }}\n{TARGET}"));
        assert!(p.iter().any(|(k, _)| k == "server.tls.cert"), "{p:?}");
        assert!(p.iter().any(|(k, _)| k == "server.tls.key"), "{p:?}");
    }
}
