//! The API over a real monitor with a store, served on 127.0.0.1 and asked over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{error_code, get_json, request};
use rampart_monitor::Monitor;
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::health::HealthState;
use rampart_monitor::heartbeat::HeartbeatTracker;
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};
use rampart_server::{MAX_BODY, ServerState, app, serve};
use serde_json::Value;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(15);

struct Fixture {
    addr: SocketAddr,
    monitor: Arc<Monitor>,
    _up: TcpListener,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        r#"
        [defaults]
        interval = "1s"
        timeout = "1s"
        failures_to_unhealthy = 1

        [[target]]
        name = "up"
        kind = "tcp"
        [target.tcp]
        address = "{up}"

        [[target]]
        name = "down"
        kind = "tcp"
        [target.tcp]
        address = "{closed}"

        [[target]]
        name = "db"
        kind = "postgres"
        interval = "60s"
        [target.postgres]
        url = "postgres://app:hunter2@{closed}/app"

        [[target]]
        name = "job"
        kind = "heartbeat"
        [target.heartbeat]
        token = "beat-token-0123456789"
        every = "1h"
        grace = "1h"
        "#,
        up = up.local_addr().unwrap(),
    );
    let config = MonitorConfig::from_str(&text, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
        .await
        .unwrap();
    let monitor = Monitor::with_tracker_and_store(
        &config,
        Limits::default(),
        HeartbeatTracker::from_config(&config),
        Arc::new(store) as Arc<dyn Store>,
    )
    .await
    .unwrap();
    let monitor = Arc::new(monitor);
    // Wait until the tcp and heartbeat targets have a state.
    let mut changes = monitor.subscribe();
    tokio::time::timeout(DEADLINE, async {
        while monitor.state("up") != Some(HealthState::Healthy)
            || monitor.state("job") != Some(HealthState::Healthy)
            || monitor.state("down") != Some(HealthState::Unhealthy)
        {
            changes.recv().await.unwrap();
        }
    })
    .await
    .expect("both targets judged");
    let state = ServerState::new(
        Arc::clone(&monitor),
        Arc::new(config),
        rampart_telemetry::Telemetry::new(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(state), std::future::pending()));
    Fixture {
        addr,
        monitor,
        _up: up,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_summary_and_targets_answer_with_json() {
    let f = start().await;
    let (status, v) = get_json(f.addr, "/health").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    let (status, v) = get_json(f.addr, "/ready").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ready")));

    let (status, v) = get_json(f.addr, "/api/summary").await;
    assert_eq!(status, 200);
    assert_eq!(v["counts"]["healthy"], 2, "{v}");
    assert!(v["counts"]["unhealthy"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["targets"].as_array().unwrap().len(), 4);

    let (status, body) = request(f.addr, "GET", "/api/targets", b"").await;
    assert_eq!(status, 200);
    assert!(!body.contains("hunter2"), "a secret leaked: {body}");
    assert!(
        !body.contains("beat-token-0123456789"),
        "a token leaked: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["up", "down", "db", "job"]);

    let (status, v) = get_json(f.addr, "/api/targets/up").await;
    assert_eq!(status, 200);
    assert_eq!(v["health"]["state"], "healthy");
    assert_eq!(v["health"]["score"], 100);
    assert_eq!(v["kind"], "tcp");
    assert_eq!(v["source"], "config");

    let (status, v) = get_json(f.addr, "/api/targets/nope").await;
    assert_eq!((status, error_code(&v)), (404, "not_found"));
    let (status, v) = get_json(f.addr, "/no/such/route").await;
    assert_eq!((status, error_code(&v)), (404, "not_found"));
    let (status, v) = get_json(f.addr, "/api/heartbeat/x").await;
    assert_eq!((status, error_code(&v)), (405, "method_not_allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_raw_or_rolled_up_and_ranges_are_bounded() {
    let f = start().await;
    let (status, v) = get_json(f.addr, "/api/targets/down/results").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["step"], "raw");
    let points = v["points"].as_array().unwrap();
    assert!(!points.is_empty());
    assert_eq!(points[0]["ok"], false);
    assert_eq!(points[0]["failure"], "connect_refused");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "/api/targets/down/results?from={}&to={}",
        now - 6 * 3600,
        now + 60
    );
    let (status, v) = get_json(f.addr, &path).await;
    assert_eq!((status, &v["step"]), (200, &Value::from("1m")), "{v}");
    let minutes = v["points"].as_array().unwrap();
    let count: u64 = minutes.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    let failures: u64 = minutes
        .iter()
        .map(|p| p["failures"].as_u64().unwrap())
        .sum();
    assert!(count >= 1 && failures == count, "{v}");

    let path = format!(
        "/api/targets/down/results?from={}&to={}&step=1h",
        now - 60,
        now
    );
    let (status, v) = get_json(f.addr, &path).await;
    assert_eq!((status, &v["step"]), (200, &Value::from("1h")), "{v}");

    let path = format!(
        "/api/targets/down/results?from={}&to={}&step=raw",
        now - 2 * 86_400,
        now
    );
    let (status, v) = get_json(f.addr, &path).await;
    assert_eq!((status, error_code(&v)), (422, "range_too_long"), "{v}");
    let path = format!("/api/targets/down/results?from={}&to={}", now, now - 60);
    let (status, v) = get_json(f.addr, &path).await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");
    let (status, v) = get_json(f.addr, "/api/targets/down/results?from=0").await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");
    let (status, v) = get_json(f.addr, "/api/targets/down/results?from=soon").await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");
    let (status, v) = get_json(f.addr, "/api/targets/down/results?step=2m").await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");
    let (status, v) = get_json(f.addr, "/api/targets/down/results?limit=2").await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");

    let (status, v) = get_json(f.addr, "/api/targets/down/incidents").await;
    assert_eq!(status, 200);
    let incidents = v["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{v}");
    assert_eq!(
        (&incidents[0]["open"], &incidents[0]["state"]),
        (&Value::Bool(true), &Value::from("unhealthy"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_metrics_and_body_limit() {
    let f = start().await;
    let (status, body) = request(f.addr, "POST", "/api/heartbeat/not-a-token", b"").await;
    assert_eq!(status, 404);
    assert!(
        !body.contains("not-a-token"),
        "the token was echoed: {body}"
    );
    let (status, body) = request(f.addr, "POST", "/api/heartbeat/beat-token-0123456789", b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["target"],
        "job"
    );
    assert_eq!(f.monitor.heartbeats().evaluate("job").unwrap().beats, 1);

    let big = vec![b'x'; MAX_BODY + 1];
    let (status, body) =
        request(f.addr, "POST", "/api/heartbeat/beat-token-0123456789", &big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    let (status, body) = request(f.addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("rampart_monitor_target_score{target=\"up\"} 100"),
        "{body}"
    );
    assert!(
        body.contains("rampart_monitor_targets{state=\"healthy\"} 2"),
        "{body}"
    );
}
