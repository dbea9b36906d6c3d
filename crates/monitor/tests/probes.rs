//! The HTTP and TCP probes against real servers on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestServer;
use rampart_monitor::config::{HttpCheck, JsonPointerCheck, StatusRange};
use rampart_monitor::probe::{BODY_CAP, FailureKind, HttpProbe, Probe, ProbeResult, TcpProbe};
use rampart_testkit::proxy::{ChaosProxy, Direction, Toxic};

const TIMEOUT: Duration = Duration::from_secs(2);

fn check(url: &str) -> HttpCheck {
    HttpCheck::get(url.parse().unwrap())
}

async fn probe(check: HttpCheck) -> ProbeResult {
    HttpProbe::new(check).probe(TIMEOUT).await
}

/// A port on 127.0.0.1 that nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[tokio::test]
async fn healthy_endpoint_passes_with_every_phase_timed() {
    let server = TestServer::start().await;
    let mut c = check(&server.url("/health"));
    c.json_pointer = Some(JsonPointerCheck {
        pointer: "/status".into(),
        equals: serde_json::json!("ok"),
    });
    c.body_contains = Some("status".into());
    c.body_regex = Some(regex::Regex::new(r#""status":\s*"ok""#).unwrap());
    let r = probe(c).await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.details.status, Some(200));
    assert_eq!(r.details.remote, Some(server.addr));
    assert_eq!(r.details.body_bytes, Some(15));
    let p = r.phases;
    for (name, phase) in [
        ("dns", p.dns),
        ("connect", p.connect),
        ("first byte", p.first_byte),
        ("body", p.body),
    ] {
        let d = phase.unwrap_or_else(|| panic!("{name} phase missing: {r:?}"));
        assert!(d <= r.latency, "{name} {d:?} > total {:?}", r.latency);
    }
    assert_eq!(p.tls, None);
}

#[tokio::test]
async fn unexpected_status_is_a_status_mismatch_unless_expected() {
    let server = TestServer::start().await;
    let r = probe(check(&server.url("/error"))).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::StatusMismatch), "{r:?}");
    assert_eq!(r.details.status, Some(500));
    let mut c = check(&server.url("/error"));
    c.expected_status = vec![StatusRange::new(500, 599)];
    assert!(probe(c).await.is_success());
}

#[tokio::test]
async fn wrong_bodies_are_body_mismatches() {
    let server = TestServer::start().await;
    let url = server.url("/down");
    let mut pointer = check(&url);
    pointer.json_pointer = Some(JsonPointerCheck {
        pointer: "/status".into(),
        equals: serde_json::json!("ok"),
    });
    let mut missing = check(&url);
    missing.json_pointer = Some(JsonPointerCheck {
        pointer: "/nothing".into(),
        equals: serde_json::json!(1),
    });
    let mut contains = check(&url);
    contains.body_contains = Some("\"ok\"".into());
    let mut regex = check(&url);
    regex.body_regex = Some(regex::Regex::new("^ok$").unwrap());
    let mut not_json = check(&server.url("/flip"));
    not_json.json_pointer = missing.json_pointer.clone();
    for (c, needle) in [
        (pointer, "/status is \"down\", expected \"ok\""),
        (missing, "/nothing is absent"),
        (contains, "does not contain"),
        (regex, "does not match"),
        (not_json, "not JSON"),
    ] {
        let r = probe(c).await;
        assert_eq!(r.failure_kind(), Some(FailureKind::BodyMismatch), "{r:?}");
        let rampart_monitor::probe::ProbeOutcome::Failure { message, .. } = &r.outcome else {
            unreachable!()
        };
        assert!(message.contains(needle), "{message}");
    }
}

#[tokio::test]
async fn slow_endpoint_times_out_within_the_timeout() {
    let server = TestServer::start().await;
    let started = std::time::Instant::now();
    let r = HttpProbe::new(check(&server.url("/slow")))
        .probe(Duration::from_millis(300))
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Timeout), "{r:?}");
    assert!(r.phases.connect.is_some(), "connected before timing out");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(r.latency >= Duration::from_millis(300));
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let server = TestServer::start().await;
    let url = server.url("/redirect/2");
    let mut c = check(&url);
    c.max_redirects = 3;
    let r = probe(c.clone()).await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.details.redirects, 3);
    assert_eq!(r.details.status, Some(200));

    c.max_redirects = 2;
    let r = probe(c).await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::TooManyRedirects),
        "{r:?}"
    );

    // With no redirects allowed, the redirect's own status is judged.
    let r = probe(check(&url)).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::StatusMismatch));
    assert_eq!(r.details.status, Some(302));

    let mut c = check(&server.url("/relative"));
    c.max_redirects = 1;
    c.body_contains = Some("ok".into());
    assert!(probe(c).await.is_success());
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let server = TestServer::start().await;
    let mut c = check(&server.url("/echo"));
    c.method = hyper::Method::POST;
    c.body = Some("ping".into());
    c.headers = vec![("x-probe".parse().unwrap(), "1".parse().unwrap())];
    c.body_contains = Some("POST ping".into());
    let r = probe(c).await;
    assert!(r.is_success(), "{r:?}");
}

#[tokio::test]
async fn the_body_read_is_capped() {
    let server = TestServer::start().await;
    let mut c = check(&server.url("/big"));
    c.body_contains = Some("tail".into());
    let r = probe(c).await;
    assert_eq!(r.details.body_bytes, Some(BODY_CAP));
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::BodyMismatch),
        "the tail is past the cap"
    );
}

#[tokio::test]
async fn each_probe_opens_a_fresh_connection_unless_keep_alive() {
    let server = TestServer::start().await;
    let fresh = HttpProbe::new(check(&server.url("/health")));
    for _ in 0..2 {
        let r = fresh.probe(TIMEOUT).await;
        assert!(r.is_success() && !r.details.reused_connection, "{r:?}");
    }
    assert_eq!(server.control.connections.load(Ordering::SeqCst), 2);

    let mut c = check(&server.url("/health"));
    c.keep_alive = true;
    let kept = HttpProbe::new(c);
    let first = kept.probe(TIMEOUT).await;
    let second = kept.probe(TIMEOUT).await;
    assert!(first.is_success() && second.is_success());
    assert!(!first.details.reused_connection && second.details.reused_connection);
    assert_eq!(
        second.phases.connect, None,
        "no connect phase on a reused connection"
    );
    assert_eq!(server.control.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refused_ports_are_connect_refused_for_http_and_tcp() {
    let addr = closed_port().await;
    let r = probe(check(&format!("http://{addr}/"))).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectRefused), "{r:?}");
    assert!(r.phases.dns.is_some() && r.phases.connect.is_none());
    let r = TcpProbe::new(addr).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectRefused), "{r:?}");
}

#[tokio::test]
async fn tcp_probe_connects_and_times_phases() {
    let server = TestServer::start().await;
    let r = TcpProbe::new(server.addr.to_string()).probe(TIMEOUT).await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.details.remote, Some(server.addr));
    assert!(r.phases.dns.is_some() && r.phases.connect.is_some());
}

#[tokio::test]
async fn unresolvable_hosts_are_dns_failures() {
    let r = TcpProbe::new("no-such-host.invalid:80")
        .probe(TIMEOUT)
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Dns), "{r:?}");
    let r = probe(check("http://no-such-host.invalid/")).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Dns), "{r:?}");
}

#[tokio::test]
async fn a_blackholed_server_is_a_first_byte_timeout() {
    let server = TestServer::start().await;
    let proxy = ChaosProxy::start(server.addr).await.unwrap();
    proxy.set(Toxic::Blackhole {
        direction: Direction::Both,
    });
    let r = HttpProbe::new(check(&format!("http://{}/health", proxy.addr())))
        .probe(Duration::from_millis(300))
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Timeout), "{r:?}");
    assert!(
        r.phases.connect.is_some() && r.phases.first_byte.is_none(),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_full_accept_queue_is_a_connect_timeout() {
    // A listener that never accepts, with a backlog of one: once the queue is full the kernel
    // drops further SYNs, so connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let r = TcpProbe::new(addr.to_string())
        .probe(Duration::from_millis(200))
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectTimeout), "{r:?}");
}

#[tokio::test]
async fn a_probe_dropped_mid_way_leaves_the_probe_usable() {
    let server = TestServer::start().await;
    let mut c = check(&server.url("/health"));
    c.keep_alive = true;
    let kept = HttpProbe::new(c);
    assert!(kept.probe(TIMEOUT).await.is_success());
    // Poll the next probe once (it sends its request and waits for the server, which runs on
    // this same thread and so cannot have answered), then drop it mid-way.
    let mut cut = kept.probe(TIMEOUT);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(cut.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    drop(cut);
    let r = kept.probe(TIMEOUT).await;
    assert!(r.is_success(), "{r:?}");
}

#[tokio::test]
async fn https_is_verified_and_its_handshake_timed() {
    let (server, cert) = TestServer::start_tls().await;
    let mut c = check(&server.https_url("/health"));
    c.body_contains = Some("ok".into());
    let r = HttpProbe::with_root_certificates(c.clone(), [cert])
        .probe(TIMEOUT)
        .await;
    assert!(r.is_success(), "{r:?}");
    let tls = r.phases.tls.expect("a tls phase");
    assert!(tls <= r.latency && r.phases.connect.is_some() && r.phases.first_byte.is_some());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expected = ((common::CERT_NOT_AFTER - now) / 86_400) as i64;
    let days = r.details.certificate_days_left.expect("days left");
    // The probe ran a moment before `now`: at most a day boundary apart.
    assert!(
        days == expected || days == expected + 1,
        "{days} vs {expected}"
    );

    // The same server is not trusted by the built-in roots: a tls failure, after connecting.
    let r = HttpProbe::new(c).probe(TIMEOUT).await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::CertificateUntrusted),
        "{r:?}"
    );
    assert!(r.phases.connect.is_some() && r.phases.tls.is_none());
}

#[tokio::test]
async fn https_to_a_name_the_certificate_does_not_cover_is_a_name_mismatch() {
    let (server, cert) = TestServer::start_tls().await;
    let url = format!("https://127.0.0.1:{}/health", server.addr.port());
    let r = HttpProbe::with_root_certificates(check(&url), [cert])
        .probe(TIMEOUT)
        .await;
    assert_eq!(
        r.failure_kind(),
        Some(FailureKind::CertificateNameMismatch),
        "{r:?}"
    );
}

#[tokio::test]
async fn https_keep_alive_reuses_the_tls_connection() {
    let (server, cert) = TestServer::start_tls().await;
    let mut c = check(&server.https_url("/health"));
    c.keep_alive = true;
    let probe = HttpProbe::with_root_certificates(c, [cert]);
    let first = probe.probe(TIMEOUT).await;
    let second = probe.probe(TIMEOUT).await;
    assert!(
        first.is_success() && second.is_success(),
        "{first:?} {second:?}"
    );
    assert!(first.phases.tls.is_some());
    assert!(second.details.reused_connection && second.phases.tls.is_none());
    assert_eq!(server.control.connections.load(Ordering::SeqCst), 1);
}
