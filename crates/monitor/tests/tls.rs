//! The TLS probe against in-process TLS servers with rcgen-made certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use rampart_monitor::Monitor;
use rampart_monitor::config::{MonitorConfig, TlsCheck};
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{CertificateDer, FailureKind, Probe, ProbeResult, TlsProbe};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const TIMEOUT: Duration = Duration::from_secs(2);
const DAY: u64 = 86_400;

/// A private CA, and a server certificate for `localhost` it signed that expires `valid_for`
/// from now (an hour more, so the whole-day count is exact).
struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: KeyPair,
}

fn pki(valid_for_days: u64) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Rampart Test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let (ca, ca_pem) = (ca_cert.der().clone(), ca_cert.pem());
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now - DAY);
    params.not_after =
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now + valid_for_days * DAY + 3600);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap().der().clone();
    Pki {
        ca,
        ca_pem,
        leaf,
        leaf_key,
    }
}

/// A server presenting the leaf and the CA, and a probe of it trusting the CA.
async fn serve(pki: &Pki) -> TestServer {
    TestServer::start_tls_with(vec![pki.leaf.clone(), pki.ca.clone()], &pki.leaf_key).await
}

fn check(server: &TestServer, pki: &Pki) -> TlsCheck {
    TlsCheck::new(format!("localhost:{}", server.addr.port())).with_roots(vec![pki.ca.clone()])
}

async fn probe(check: TlsCheck) -> ProbeResult {
    TlsProbe::new(check).probe(TIMEOUT).await
}

#[tokio::test]
async fn a_valid_chain_passes_with_days_left_chain_and_names() {
    let pki = pki(90);
    let server = serve(&pki).await;
    let r = probe(check(&server, &pki)).await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.warning, None);
    assert_eq!(r.details.certificate_days_left, Some(90));
    assert_eq!(r.details.chain_length, Some(2));
    assert_eq!(
        r.details.certificate_subject.as_deref(),
        Some("CN=localhost")
    );
    assert_eq!(
        r.details.certificate_issuer.as_deref(),
        Some("CN=Rampart Test CA")
    );
    assert!(r.phases.connect.is_some() && r.phases.tls.is_some());
    assert!(r.phases.tls.unwrap() <= r.latency);
}

#[tokio::test]
async fn expiring_soon_warns_then_fails_by_threshold() {
    let pki = pki(10);
    let server = serve(&pki).await;
    let base = check(&server, &pki);

    let r = probe(base.clone().with_days(30, 7)).await;
    assert!(r.is_success(), "{r:?}");
    let warning = r.warning.expect("a warning below warn_days");
    assert!(warning.contains("10 days"), "{warning}");

    let r = probe(base.clone().with_days(30, 11)).await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::CertificateExpiring),
        "{r:?}"
    );
    assert_eq!(r.details.certificate_days_left, Some(10), "details kept");

    let r = probe(base.with_days(10, 10)).await;
    assert!(r.is_success() && r.warning.is_none(), "{r:?}");
}

#[tokio::test]
async fn verification_failures_are_told_apart() {
    let pki = pki(90);
    let server = serve(&pki).await;
    let port = server.addr.port();

    // Trusting only the built-in roots: the private CA is unknown.
    let r = probe(TlsCheck::new(format!("localhost:{port}"))).await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::CertificateUntrusted),
        "{r:?}"
    );
    assert!(r.phases.connect.is_some() && r.phases.tls.is_none());

    // A name the certificate is not for.
    let r = probe(check(&server, &pki).with_server_name("db.internal")).await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::CertificateNameMismatch),
        "{r:?}"
    );

    // Expired yesterday (rustls refuses it before the probe can count days).
    let mut old = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    old.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now - 30 * DAY);
    old.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now - DAY);
    let key = KeyPair::generate().unwrap();
    let cert = old.self_signed(&key).unwrap().der().clone();
    let expired = TestServer::start_tls_with(vec![cert.clone()], &key).await;
    let r =
        probe(TlsCheck::new(format!("localhost:{}", expired.addr.port())).with_roots(vec![cert]))
            .await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::CertificateExpired),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_plain_tcp_server_is_a_tls_failure_and_a_closed_port_is_refused() {
    let plain = TestServer::start().await;
    let r = probe(TlsCheck::new(format!("localhost:{}", plain.addr.port()))).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Tls), "{r:?}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let r = probe(TlsCheck::new(closed.to_string())).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectRefused), "{r:?}");
}

/// `ca_file` read from PEM in the config; a warning makes the target degraded.
#[tokio::test]
async fn a_configured_target_with_a_ca_file_is_degraded_when_expiring_soon() {
    let pki = pki(20);
    let server = serve(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let config = MonitorConfig::from_str(
        &format!(
            r#"
            [[target]]
            name = "edge"
            kind = "tls"
            interval = "1s"
            timeout = "1s"
            [target.tls]
            address = "localhost:{}"
            ca_file = {:?}
            "#,
            server.addr.port(),
            ca_file.display().to_string()
        ),
        None,
    )
    .unwrap();
    let monitor = Monitor::start(&config);
    let mut results = monitor.subscribe_results();
    let report = results.recv().await.unwrap();
    assert!(report.result.is_success(), "{:?}", report.result);
    assert_eq!(monitor.state("edge"), Some(HealthState::Degraded));
}
