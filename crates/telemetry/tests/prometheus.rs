//! The Prometheus exposition served over real HTTP and checked by `promtool` (Debian package
//! `prometheus`): `promtool check metrics` lints Prometheus text 0.0.4, and `promtool tsdb
//! create-blocks-from openmetrics` runs Prometheus' own OpenMetrics parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rampart_telemetry::Telemetry;
use rampart_telemetry::export::prometheus::{self, Format};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use tokio::net::{TcpListener, TcpStream};

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const NASTY_ESCAPED: &str = r#"SELECT \"a\\b\"\nFROM t"#;

/// Serves `GET /metrics` from `telemetry` on a free port until the returned task is aborted.
async fn serve(telemetry: Telemetry) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let telemetry = telemetry.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let response = if req.uri().path() == "/metrics" {
                        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                        let scrape = prometheus::scrape(&telemetry, accept);
                        Response::builder()
                            .header(CONTENT_TYPE, scrape.content_type())
                            .body(Full::new(Bytes::from(scrape.body)))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::new()))
                    };
                    async move { Ok::<_, Infallible>(response.unwrap()) }
                });
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Scrapes `addr` over HTTP/1.1; returns the content type and the body.
async fn scrape(addr: SocketAddr, accept: &str) -> (String, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get("/metrics")
        .header(HOST, addr.to_string())
        .header(ACCEPT, accept)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    drop(sender);
    conn.await.unwrap().unwrap();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// `promtool`, or `None` (with the reason printed) when it is missing and the run does not
/// require it.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var("RAMPART_REQUIRE_SERVERS").as_deref() != Ok("1"),
        "promtool is missing and RAMPART_REQUIRE_SERVERS=1: run scripts/setup"
    );
    eprintln!(
        "skipped: promtool not found (Debian package `prometheus`; scripts/setup installs it)"
    );
    None
}

/// Runs `promtool args...` with `input` on standard input; returns (success, stdout + stderr).
fn run_promtool(promtool: &str, args: &[&str], input: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrape.txt");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir.path())
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn text_scrape_passes_promtool_check_metrics_without_a_lint_warning() {
    let Some(promtool) = promtool() else { return };
    let (addr, server) = serve(common::telemetry()).await;
    let (content_type, body) = scrape(addr, "text/plain;version=0.0.4").await;
    server.abort();
    assert_eq!(content_type, prometheus::TEXT_CONTENT_TYPE);

    let (ok, problems) = run_promtool(promtool, &["check", "metrics"], &body);
    assert!(
        ok && problems.trim().is_empty(),
        "promtool: {problems}\n---\n{body}"
    );

    // What promtool accepted is what was recorded.
    for line in [
        format!("rampart_operation_requests_total{{operation=\"db.query\",statement=\"{NASTY_ESCAPED}\"}} 51"),
        format!("rampart_operation_errors_total{{operation=\"db.query\",statement=\"{NASTY_ESCAPED}\"}} 1"),
        "rampart_operation_requests_total{operation=\"cache.get\"} 1".into(),
        "# TYPE rampart_jobs_done_total counter".into(),
        "rampart_jobs_done_total{queue=\"mail\"} 7".into(),
        "rampart_jobs_done_total 1".into(),
        "rampart_heap_bytes 1500000".into(),
        "rampart_workers{pool=\"a\"} 3".into(),
        "rampart_load_ratio 0.25".into(),
        "# HELP rampart_probe_duration_seconds Probe latency, \"end to end\" \\\\ with a\\nsecond line.".into(),
        "rampart_probe_duration_seconds_bucket{le=\"0.01\",target=\"db\"} 5".into(),
        "rampart_probe_duration_seconds_bucket{le=\"+Inf\",target=\"db\"} 10".into(),
        "rampart_probe_duration_seconds_bucket{le=\"1.0\"} 3".into(),
        "rampart_probe_duration_seconds_count 4".into(),
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in\n{body}");
    }
    assert!(
        !body.contains("# EOF") && !body.contains("# UNIT"),
        "{body}"
    );
}

#[tokio::test]
async fn openmetrics_scrape_passes_prometheus_openmetrics_parser() {
    let Some(promtool) = promtool() else { return };
    let (addr, server) = serve(common::telemetry()).await;
    let (content_type, body) = scrape(addr, PROMETHEUS_ACCEPT).await;
    server.abort();
    assert_eq!(content_type, prometheus::OPENMETRICS_CONTENT_TYPE);
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    for line in [
        "# TYPE rampart_jobs_done counter",
        "rampart_jobs_done_total{queue=\"mail\"} 7",
        "# UNIT rampart_operation_duration_seconds seconds",
        "# HELP rampart_probe_duration_seconds Probe latency, \\\"end to end\\\" \\\\ with a\\nsecond line.",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }

    // The backfill tool parses with Prometheus' OpenMetrics parser (EOF, escaping, units),
    // and wants a timestamp on every sample: add one.
    let stamped: String = body
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let (ok, out) = run_promtool(
        promtool,
        &[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "/dev/stdin",
            "blocks",
        ],
        &stamped,
    );
    assert!(ok, "promtool: {out}\n---\n{body}");
    // Its table: ULID, min time, max time, duration, samples, chunks, series, size.
    let samples = body.lines().filter(|l| !l.starts_with('#')).count();
    let ingested = out.lines().last().and_then(|l| l.split_whitespace().nth(4));
    assert_eq!(ingested, Some(samples.to_string().as_str()), "{out}");
}

#[tokio::test]
async fn scrape_format_follows_the_accept_header() {
    let (addr, server) = serve(common::telemetry()).await;
    let (om, _) = scrape(addr, PROMETHEUS_ACCEPT).await;
    let (text, _) = scrape(addr, "*/*").await;
    server.abort();
    assert_eq!(om, Format::OpenMetrics.content_type());
    assert_eq!(text, Format::Text.content_type());
}
