//! The TLS probe: a handshake, the certificate chain verified, and how long it has left.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::client::TlsStream;

use super::{Failure, FailureKind, Probe, ProbeFuture, ProbeResult, conclude, connect};
use crate::config::TlsCheck;

/// Connects to `host:port`, completes a TLS handshake and verifies the server's chain for the
/// configured name (against the Mozilla roots of `webpki-roots`, or the check's own roots).
/// Fills in the certificate's days left, subject and issuer and the chain length.
///
/// Fails as [`FailureKind::CertificateUntrusted`], [`FailureKind::CertificateNameMismatch`] or
/// [`FailureKind::CertificateExpired`] when verification says so, as
/// [`FailureKind::CertificateExpiring`] with fewer than `min_days` left, and passes with a
/// warning (the target is then degraded) with fewer than `warn_days` left. Phases: dns, connect,
/// tls.
#[derive(Debug)]
pub struct TlsProbe {
    check: TlsCheck,
    tls: Result<Arc<ClientConfig>, String>,
}

impl TlsProbe {
    /// A probe for `check`, trusting its roots if it has some, else the Mozilla roots.
    pub fn new(check: TlsCheck) -> Self {
        let tls = match &check.roots {
            Some(roots) => client_config(root_store(roots.iter().cloned())),
            None => mozilla_client_config(),
        };
        TlsProbe { tls, check }
    }

    async fn run(&self, deadline: Instant, result: &mut ProbeResult) -> Result<(), Failure> {
        let (stream, remote) = connect(&self.check.address, deadline, &mut result.phases).await?;
        result.details.remote = Some(remote);
        let config = self.tls.clone().map_err(|e| (FailureKind::Tls, e))?;
        let stream = handshake(config, &self.check.server_name, stream, deadline, result).await?;
        let (_, session) = stream.get_ref();
        let chain = session.peer_certificates().unwrap_or_default();
        result.details.chain_length = Some(chain.len());
        if let Some(leaf) = chain.first()
            && let Some((issuer, subject)) = super::cert::issuer_and_subject(leaf)
        {
            result.details.certificate_issuer = Some(issuer);
            result.details.certificate_subject = Some(subject);
        }
        let days = result.details.certificate_days_left.ok_or_else(|| {
            (
                FailureKind::Tls,
                "cannot read the certificate's expiry date".to_owned(),
            )
        })?;
        if days < i64::from(self.check.min_days) {
            return Err((
                FailureKind::CertificateExpiring,
                format!(
                    "certificate expires in {days} days (failing below {})",
                    self.check.min_days
                ),
            ));
        }
        if days < i64::from(self.check.warn_days) {
            result.warning = Some(format!(
                "certificate expires in {days} days (warning below {})",
                self.check.warn_days
            ));
        }
        Ok(())
    }
}

impl Probe for TlsProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            let outcome = self.run(started + timeout, &mut result).await;
            conclude(result, outcome, started)
        })
    }
}

/// The Mozilla root certificates of `webpki-roots`.
/// The client configuration trusting the Mozilla roots, built once and shared by every probe
/// that uses it: the parsed root store is about 20 KiB, too much to repeat per target.
pub(crate) fn mozilla_client_config() -> Result<Arc<ClientConfig>, String> {
    static SHARED: std::sync::OnceLock<Result<Arc<ClientConfig>, String>> =
        std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| client_config(mozilla_roots()))
        .clone()
}

pub(crate) fn mozilla_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// A store of `roots`; one rustls cannot read is left out (a server relying on it then fails
/// verification).
pub(crate) fn root_store(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for root in roots {
        let _ = store.add(root);
    }
    store
}

/// A client configuration (ring, TLS 1.2 and 1.3) trusting `roots`.
pub(crate) fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// The TLS handshake for `host` on `stream`, timed into the tls phase; fills in the leaf
/// certificate's days left. Verification failures are told apart by cause.
pub(crate) async fn handshake(
    config: Arc<ClientConfig>,
    host: &str,
    stream: TcpStream,
    deadline: Instant,
    result: &mut ProbeResult,
) -> Result<TlsStream<TcpStream>, Failure> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| (FailureKind::Tls, format!("bad server name {host:?}: {e}")))?;
    let started = Instant::now();
    let tls = timeout_at(
        deadline,
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| {
        (
            FailureKind::Timeout,
            "timed out in the TLS handshake".to_owned(),
        )
    })?
    .map_err(|e| {
        let kind = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map_or(FailureKind::Tls, classify);
        (kind, format!("TLS handshake with {host} failed: {e}"))
    })?;
    result.phases.tls = Some(started.elapsed());
    result.details.certificate_days_left = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| super::cert::days_left(leaf, SystemTime::now()));
    Ok(tls)
}

/// The failure kind of a rustls error: which part of verification failed, if it was that.
fn classify(error: &rustls::Error) -> FailureKind {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                FailureKind::CertificateNameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => FailureKind::CertificateExpired,
            _ => FailureKind::CertificateUntrusted,
        },
        _ => FailureKind::Tls,
    }
}
