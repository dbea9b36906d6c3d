//! Targets written through the API: the bearer token, validation, read-only file targets, and
//! targets that survive a restart on the same store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{error_code, get_json, request_with};
use rampart_monitor::config::Secret;
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};
use rampart_server::{ServerState, app, serve};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const TOKEN: &str = "right-token-0123456789";

/// A daemon's state on the store at `db` with one file target, served on 127.0.0.1.
async fn start(db: &Path, up: SocketAddr) -> (SocketAddr, ServerState) {
    let table: toml::Table = format!(
        "[[target]]\nname = \"file-t\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [target.tcp]\naddress = \"{up}\"\n"
    )
    .parse()
    .unwrap();
    let store = SqliteStore::open(db, SqliteConfig::default())
        .await
        .unwrap();
    let state = ServerState::start(
        table,
        Some("monitor.toml"),
        Arc::new(store) as Arc<dyn Store>,
        Limits::default(),
        Some(&Secret::new(TOKEN)),
        rampart_telemetry::Telemetry::new(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(state.clone()), std::future::pending()));
    (addr, state)
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let headers = format!("{auth}Content-Type: application/json\r\n");
    let body = body.to_string();
    let (status, text) = request_with(addr, method, path, &headers, body.as_bytes()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn names(v: &Value) -> Vec<(String, String)> {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_are_validated_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let (addr, state) = start(&db, up_addr).await;
    let target = json!({
        "name": "api-t", "kind": "tcp", "interval": "1s", "timeout": "1s",
        "tcp": { "address": up_addr.to_string() },
    });

    // No token, a wrong token: 401, and nothing changes.
    let (status, v) = send(addr, "POST", "/api/targets", "", &target).await;
    assert_eq!((status, error_code(&v)), (401, "unauthorized"), "{v}");
    let (status, v) = send(addr, "POST", "/api/targets", "wrong-token", &target).await;
    assert_eq!((status, error_code(&v)), (401, "unauthorized"), "{v}");
    let (_, v) = get_json(addr, "/api/targets").await;
    assert_eq!(names(&v).len(), 1);

    // Every problem of an invalid target, with its path under `body`.
    let bad = json!({ "name": "bad", "kind": "tcp", "interval": "0s", "tcp": { "adress": "x" } });
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &bad).await;
    assert_eq!((status, error_code(&v)), (422, "invalid_target"), "{v}");
    let paths: Vec<&str> = v["error"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("body.tcp")), "{paths:?}");
    assert!(paths.iter().all(|p| p.starts_with("body")), "{paths:?}");
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &json!([1])).await;
    assert_eq!((status, error_code(&v)), (400, "bad_request"), "{v}");

    // The right token creates it; names are unique; file targets are read-only.
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &target).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!((&v["name"], &v["source"]), (&json!("api-t"), &json!("api")));
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &target).await;
    assert_eq!((status, error_code(&v)), (409, "conflict"), "{v}");
    let file_t = json!({ "name": "file-t", "kind": "tcp", "tcp": { "address": "h:1" } });
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &file_t).await;
    assert_eq!((status, error_code(&v)), (409, "conflict"), "{v}");
    let (status, v) = send(addr, "PUT", "/api/targets/file-t", TOKEN, &file_t).await;
    assert_eq!((status, error_code(&v)), (403, "read_only"), "{v}");
    let (status, v) = send(addr, "DELETE", "/api/targets/file-t", TOKEN, &json!({})).await;
    assert_eq!((status, error_code(&v)), (403, "read_only"), "{v}");

    // The new monitor probes it.
    let monitor = state.monitor();
    let mut changes = monitor.subscribe();
    tokio::time::timeout(Duration::from_secs(10), async {
        while monitor.state("api-t") != Some(rampart_monitor::health::HealthState::Healthy) {
            changes.recv().await.unwrap();
        }
    })
    .await
    .expect("the created target is probed");

    // Replaced with PUT.
    let mut replaced = target.clone();
    replaced["group"] = json!("g2");
    let (status, v) = send(addr, "PUT", "/api/targets/api-t", TOKEN, &replaced).await;
    assert_eq!((status, &v["group"]), (200, &json!("g2")), "{v}");

    // A restart on the same store: the API target is back, as it was last written.
    state.shutdown(Duration::from_secs(1)).await;
    let (addr, state) = start(&db, up_addr).await;
    let (_, v) = get_json(addr, "/api/targets").await;
    assert_eq!(
        names(&v),
        [
            ("file-t".into(), "config".into()),
            ("api-t".into(), "api".into())
        ]
    );
    let (_, v) = get_json(addr, "/api/targets/api-t").await;
    assert_eq!(v["group"], "g2");
    assert_eq!(v["health"]["state"], "healthy", "restored: {v}");

    // Deleted, it stays deleted after another restart.
    let (status, _) = send(addr, "DELETE", "/api/targets/api-t", TOKEN, &json!({})).await;
    assert_eq!(status, 204);
    let (status, v) = send(addr, "DELETE", "/api/targets/api-t", TOKEN, &json!({})).await;
    assert_eq!((status, error_code(&v)), (404, "not_found"), "{v}");
    state.shutdown(Duration::from_secs(1)).await;
    let (addr, _state) = start(&db, up_addr).await;
    let (_, v) = get_json(addr, "/api/targets").await;
    assert_eq!(names(&v), [("file-t".into(), "config".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_refuses_writes_and_secrets_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, _state) = start(&dir.path().join("h.db"), up.local_addr().unwrap()).await;
    let secret = json!({
        "name": "db", "kind": "postgres", "interval": "1h",
        "postgres": { "url": "postgres://app:hunter2@127.0.0.1:1/app" },
    });
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &secret).await;
    assert_eq!(status, 201, "{v}");
    assert!(!v.to_string().contains("hunter2"), "{v}");
    let (_, v) = get_json(addr, "/api/targets").await;
    assert!(!v.to_string().contains("hunter2"), "{v}");

    // Without a write token configured, writes are refused.
    let config = rampart_monitor::config::MonitorConfig::from_str("", None).unwrap();
    let monitor = Arc::new(rampart_monitor::Monitor::start(&config));
    let state = ServerState::new(
        monitor,
        Arc::new(config),
        rampart_telemetry::Telemetry::new(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ro = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(state), std::future::pending()));
    let (status, v) = send(ro, "POST", "/api/targets", TOKEN, &secret).await;
    assert_eq!((status, error_code(&v)), (401, "unauthorized"), "{v}");
}

/// Waits (within a deadline) until `target` has at least `n` successes in a row.
async fn until_successes(state: &ServerState, target: &str, n: u32) -> u32 {
    let monitor = state.monitor();
    let mut results = monitor.subscribe_results();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let seen = monitor
                .target(target)
                .map_or(0, |t| t.consecutive_successes);
            if seen >= n {
                return seen;
            }
            results.recv().await.unwrap();
        }
    })
    .await
    .expect("the target passes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_leaves_other_targets_running_and_subscribers_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let (addr, state) = start(&dir.path().join("h.db"), up_addr).await;
    let before = until_successes(&state, "file-t", 2).await;
    let monitor = state.monitor();
    let mut changes = monitor.subscribe();
    let mut results = monitor.subscribe_results();

    let target = json!({
        "name": "api-t", "kind": "tcp", "interval": "1s", "timeout": "1s",
        "tcp": { "address": up_addr.to_string() },
    });
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &target).await;
    assert_eq!(status, 201, "{v}");

    // The same monitor, the file target's state and runs untouched (not restarted: a restart
    // would have reset its run of successes).
    assert!(Arc::ptr_eq(&monitor, &state.monitor()));
    let (_, v) = get_json(addr, "/api/targets/file-t").await;
    assert_eq!(v["health"]["state"], "healthy", "{v}");
    let kept = v["health"]["consecutive_successes"].as_u64().unwrap();
    assert!(kept >= u64::from(before), "{kept} < {before}: {v}");

    // The subscribers from before the write receive results of both targets after it, and the
    // new target's first state change.
    let mut seen = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.len() < 2 {
            seen.insert(results.recv().await.unwrap().target);
        }
    })
    .await
    .expect("results of both targets");
    let change = tokio::time::timeout(Duration::from_secs(20), changes.recv())
        .await
        .expect("a change")
        .unwrap();
    assert_eq!(change.target, "api-t");
    let after = until_successes(&state, "file-t", before + 1).await;
    assert!(after > before);

    // A delete stops only the deleted target.
    let (status, _) = send(addr, "DELETE", "/api/targets/api-t", TOKEN, &json!({})).await;
    assert_eq!(status, 204);
    assert!(monitor.target("api-t").is_none());
    let kept = monitor.target("file-t").unwrap().consecutive_successes;
    assert!(kept >= after);

    // The monitor's counters are exported.
    let (status, body) = common::request(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    for line in [
        "rampart_monitor_store_failures_total 0",
        "rampart_monitor_skipped_runs_total ",
        "rampart_monitor_stale_results_total ",
    ] {
        assert!(body.contains(line), "{line}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_valid_file_keeps_api_targets_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let (addr, state) = start(&dir.path().join("h.db"), up_addr).await;
    let target = json!({
        "name": "api-t", "kind": "tcp", "interval": "1s", "timeout": "1s",
        "tcp": { "address": up_addr.to_string() },
    });
    let (status, v) = send(addr, "POST", "/api/targets", TOKEN, &target).await;
    assert_eq!(status, 201, "{v}");

    // Invalid: every problem reported, nothing changed.
    let bad: toml::Table = "[[target]]\nname = \"x\"\nkind = \"tcp\"\ninterval = \"0s\"\n\
                            [target.tcp]\nadress = \"h:1\"\n"
        .parse()
        .unwrap();
    let err = state.reload(bad).await.unwrap_err();
    let problems = &err.config().unwrap().problems;
    assert!(problems.len() >= 2, "{problems:?}");
    let (_, v) = get_json(addr, "/api/targets").await;
    assert_eq!(
        names(&v),
        [
            ("file-t".into(), "config".into()),
            ("api-t".into(), "api".into())
        ]
    );

    // A file target named like an API target: refused too.
    let clash: toml::Table = format!(
        "[[target]]\nname = \"api-t\"\nkind = \"tcp\"\ntimeout = \"1s\"\n[target.tcp]\naddress = \"{up_addr}\"\n"
    )
    .parse()
    .unwrap();
    assert!(state.reload(clash).await.unwrap_err().config().is_some());

    // Valid: the file target replaced by another, the API target kept.
    let good: toml::Table = format!(
        "[[target]]\nname = \"file-2\"\nkind = \"tcp\"\ninterval = \"1s\"\n\
         timeout = \"1s\"\n[target.tcp]\naddress = \"{up_addr}\"\n"
    )
    .parse()
    .unwrap();
    let plan = state.reload(good).await.unwrap();
    assert_eq!(
        (plan.added.as_slice(), plan.removed.as_slice()),
        (&["file-2".to_owned()][..], &["file-t".to_owned()][..])
    );
    assert_eq!(plan.unchanged, ["api-t"]);
    let (_, v) = get_json(addr, "/api/targets").await;
    assert_eq!(
        names(&v),
        [
            ("file-2".into(), "config".into()),
            ("api-t".into(), "api".into())
        ]
    );
    until_successes(&state, "file-2", 1).await;
}
