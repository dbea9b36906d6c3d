//! The daemon's own endpoints: the OpenAPI document, database and circuit-breaker health, and
//! probe results in /metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{error_code, get_json, request};
use rampart_monitor::Monitor;
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::heartbeat::HeartbeatTracker;
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SCHEMA_VERSION, SqliteConfig, SqliteStore, Store};
use rampart_resilience::Registry;
use rampart_server::{ServerState, app, record_probes, serve};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(15);

fn config(up: SocketAddr) -> MonitorConfig {
    MonitorConfig::from_str(
        &format!(
            "[[target]]\nname = \"up\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             [target.tcp]\naddress = \"{up}\"\n"
        ),
        None,
    )
    .unwrap()
}

async fn with_store(dir: &tempfile::TempDir, config: &MonitorConfig) -> Arc<Monitor> {
    let store = SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
        .await
        .unwrap();
    let monitor = Monitor::with_tracker_and_store(
        config,
        Limits::default(),
        HeartbeatTracker::from_config(config),
        Arc::new(store) as Arc<dyn Store>,
    )
    .await
    .unwrap();
    Arc::new(monitor)
}

async fn listen(state: ServerState) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(state), std::future::pending()));
    addr
}

/// Every `.route("...")` of `app()` in the source, with the `/api` prefix for nested ones.
fn routed_paths() -> Vec<String> {
    let source = include_str!("../src/lib.rs");
    let app = source.split("pub fn app(").nth(1).unwrap();
    let app = app.split("\n}\n").next().unwrap();
    app.split(".route(")
        .skip(1)
        .map(|rest| {
            let path = rest.trim_start().trim_start_matches('"');
            let path = path.split('"').next().unwrap();
            match path {
                "/health" | "/ready" | "/metrics" => path.to_owned(),
                _ => format!("/api{path}"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_only_routes() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(up.local_addr().unwrap());
    let monitor = Arc::new(Monitor::start(&config));
    let state = ServerState::new(
        monitor,
        Arc::new(config),
        rampart_telemetry::Telemetry::new(),
    );
    let addr = listen(state).await;
    let (status, doc) = get_json(addr, "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let routed = routed_paths();
    assert!(routed.len() >= 12, "{routed:?}");
    for p in &routed {
        assert!(
            paths.contains_key(p),
            "{p} is routed but not in the OpenAPI document"
        );
    }
    for (path, ops) in paths {
        assert!(routed.contains(path), "{path} is documented but not routed");
        for method in ["get", "post", "put", "delete"] {
            if ops.get(method).is_none() {
                continue;
            }
            let concrete = path.replace("{name}", "up").replace("{token}", "t");
            let (status, body) = request(addr, &method.to_uppercase(), &concrete, b"{}").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert_ne!(
                (status, v["error"]["message"].as_str()),
                (404, Some("no such route")),
                "{method} {path}"
            );
            let declared = ops[method]["responses"].as_object().unwrap();
            assert!(
                declared.contains_key(&status.to_string()) || declared.contains_key("default"),
                "{method} {path} answered {status}, not documented"
            );
        }
        // Writes declare the bearer scheme.
        for method in ["post", "put", "delete"] {
            if let Some(op) = ops.get(method).filter(|_| path.starts_with("/api/targets")) {
                assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{path}");
            }
        }
    }
    assert_eq!(
        doc["components"]["schemas"]["Error"]["properties"]["error"]["required"],
        serde_json::json!(["code", "message"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_health_reports_the_store_and_is_503_without_one() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(up.local_addr().unwrap());
    let monitor = with_store(&dir, &config).await;
    let state = ServerState::new(
        monitor,
        Arc::new(config.clone()),
        rampart_telemetry::Telemetry::new(),
    );
    let addr = listen(state).await;
    let (status, v) = get_json(addr, "/api/database/health").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "healthy", "{v}");
    let store = &v["store"];
    assert_eq!(store["reachable"], true);
    assert_eq!(store["engine"], "sqlite");
    assert_eq!(store["schema_version"], SCHEMA_VERSION);
    assert!(store["path"].as_str().unwrap().ends_with("h.db"));
    assert!(store["page_count"].as_u64().unwrap() > 0, "{v}");
    assert!(store["page_size"].as_u64().unwrap() >= 512, "{v}");
    assert!(store["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(store["store_failures"], 0);
    assert!(store["pending_writes"].is_u64());
    assert_eq!(v["pools"], serde_json::json!([]));

    // A monitor without a store: unhealthy, 503.
    let bare = Arc::new(Monitor::start(&config));
    let state = ServerState::new(bare, Arc::new(config), rampart_telemetry::Telemetry::new());
    let addr = listen(state).await;
    let (status, v) = get_json(addr, "/api/database/health").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["store"]["reachable"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_health_follows_the_registry() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(up.local_addr().unwrap());
    let monitor = Arc::new(Monitor::start(&config));
    let registry = Registry::default();
    let state = ServerState::new(
        monitor,
        Arc::new(config),
        rampart_telemetry::Telemetry::new(),
    )
    .with_resilience(registry.clone());
    let addr = listen(state).await;

    // No breakers: healthy.
    let (status, v) = get_json(addr, "/api/circuit-breakers/health").await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("healthy")),
        "{v}"
    );
    assert_eq!(v["total"], 0);

    // Two closed: healthy, listed with their counters.
    let mail = registry.breaker("receiver:mail");
    let hook = registry.breaker("receiver:webhook");
    let (status, v) = get_json(addr, "/api/circuit-breakers/health").await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("healthy")),
        "{v}"
    );
    assert_eq!(v["total"], 2);
    assert_eq!(v["breakers"][0]["name"], "receiver:mail");
    assert_eq!(v["breakers"][0]["state"], "closed");
    assert!(v["breakers"][0]["last_transition"].is_null());

    // One open: degraded (still 200), its transition recorded.
    mail.force_open();
    let (status, v) = get_json(addr, "/api/circuit-breakers/health").await;
    assert_eq!(
        (status, v["status"].as_str()),
        (200, Some("degraded")),
        "{v}"
    );
    assert_eq!(v["open"], 1);
    let b = &v["breakers"][0];
    assert_eq!(b["state"], "forced_open");
    assert_eq!(b["last_transition"]["from"], "closed", "{v}");
    assert_eq!(b["last_transition"]["to"], "forced_open");
    assert!(b["last_transition"]["at"].as_str().unwrap().ends_with('Z'));

    // Every breaker open: unhealthy, 503.
    hook.force_open();
    let (status, v) = get_json(addr, "/api/circuit-breakers/health").await;
    assert_eq!(
        (status, v["status"].as_str()),
        (503, Some("unhealthy")),
        "{v}"
    );
    assert_eq!(error_code(&v), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_a_probe_operation_per_target() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(up.local_addr().unwrap());
    let monitor = Arc::new(Monitor::start(&config));
    let mut results = monitor.subscribe_results();
    let state = ServerState::new(
        Arc::clone(&monitor),
        Arc::new(config),
        rampart_telemetry::Telemetry::new(),
    );
    let recorder = record_probes(state.clone());
    let addr = listen(state).await;
    // After the first probe has been reported, its series appears.
    tokio::time::timeout(DEADLINE, results.recv())
        .await
        .unwrap()
        .unwrap();
    let series = r#"rampart_operation_requests_total{operation="probe",target="up"}"#;
    let body = tokio::time::timeout(DEADLINE, async {
        loop {
            let (status, body) = request(addr, "GET", "/metrics", b"").await;
            assert_eq!(status, 200);
            if body.contains(series) {
                return body;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the probe's series appears in /metrics");
    assert!(body.contains(r#"operation="probe",target="up""#), "{body}");
    recorder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_metrics_follow_a_monitor_replaced_by_a_write() {
    use rampart_monitor::config::Secret;
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
        .await
        .unwrap();
    let state = ServerState::start(
        toml::Table::new(),
        None,
        Arc::new(store) as Arc<dyn Store>,
        Limits::default(),
        Some(&Secret::new("token-0123456789")),
        rampart_telemetry::Telemetry::new(),
    )
    .await
    .unwrap();
    let recorder = record_probes(state.clone());
    let addr = listen(state.clone()).await;
    let body = format!(
        r#"{{"name":"added","kind":"tcp","interval":"1s","timeout":"1s","tcp":{{"address":"{up_addr}"}}}}"#
    );
    let (status, answer) = common::request_with(
        addr,
        "POST",
        "/api/targets",
        "Authorization: Bearer token-0123456789\r\nContent-Type: application/json\r\n",
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let series = r#"rampart_operation_requests_total{operation="probe",target="added"}"#;
    tokio::time::timeout(DEADLINE, async {
        loop {
            let (_, text) = request(addr, "GET", "/metrics", b"").await;
            if text.contains(series) {
                return;
            }
            // The new monitor's first probe is due within its interval (1 s).
            let mut results = state.monitor().subscribe_results();
            let _ = tokio::time::timeout(Duration::from_secs(2), results.recv()).await;
        }
    })
    .await
    .expect("the added target's probes appear in /metrics");
    recorder.abort();
}
