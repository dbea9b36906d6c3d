//! From a probe result to the webhook receiver having the notification, against Prometheus
//! Alertmanager's own delivery measured the same way in the same run.
//!
//! - Rampart: a failing result of a fresh target goes into the alert engine (`TargetDown`,
//!   `for = 0`), the group (`group_wait = 0`) is flushed, the notification is written to the
//!   durable SQLite outbox (`Ok` once committed) and its receiver's worker POSTs it, signed, to
//!   an in-process axum receiver. Measured from just before `observe` to the receiver's handler.
//!   (The monitor's own hop from the probe to the engine, a broadcast channel, is left out.)
//! - Alertmanager (Debian package `prometheus-alertmanager`, started here on a free port with
//!   `group_wait: 0s`, `group_by: ['...']` so each alert is its own group): measured from just
//!   before `POST /api/v2/alerts` of a new alert to the same receiver's handler.
//!
//! The outbox's per-receiver rate limit is raised for the run (its default, one per second in
//! bursts of five, would throttle it; Alertmanager has no such limit). One alert at a time, `--n` of each (default 500) after 20 of warm-up. Prints JSON.
//!
//! ```sh
//! cargo run --release -p rampart-bench --example alert_delivery -- --n 500
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use chrono::{DateTime, Utc};
use rampart_monitor::alert::notify::{WebhookConfig, WebhookNotifier};
use rampart_monitor::alert::outbox::OutboxOptions;
use rampart_monitor::alert::{
    AlertEngine, DeliveryConfig, EngineConfig, NotificationSink, Notifier, Outbox, OutboxStore,
    Route, TargetInfo, default_rules,
};
use rampart_monitor::config::Secret;
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{FailureKind, ProbeResult};
use rampart_monitor::store::{SqliteConfig, SqliteStore};
use rampart_resilience::Events;
use rampart_resilience::registry::{Registry, ResilienceConfig};
use tokio::sync::oneshot;
use tokio::time::Instant;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

/// A receiver that wakes whoever waits for the target (or alert) named in the body.
async fn receiver(waiters: Waiters) -> String {
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let waiters = Arc::clone(&waiters);
            async move {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&body);
                let mut w = waiters.lock().unwrap();
                let keys: Vec<String> = w
                    .keys()
                    .filter(|k| text.contains(k.as_str()))
                    .cloned()
                    .collect();
                for k in keys {
                    if let Some(tx) = w.remove(&k) {
                        let _ = tx.send(at);
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

fn wait_for(waiters: &Waiters, key: &str) -> oneshot::Receiver<Instant> {
    let (tx, rx) = oneshot::channel();
    waiters.lock().unwrap().insert(key.to_owned(), tx);
    rx
}

fn summary(mut us: Vec<u64>) -> serde_json::Value {
    us.sort_unstable();
    let q =
        |p: f64| us[((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1] as f64 / 1000.0;
    serde_json::json!({ "n": us.len(), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0) })
}

async fn rampart(n: usize, hook: &str, waiters: &Waiters) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
            .await
            .unwrap(),
    );
    let notifier: Arc<dyn Notifier> = Arc::new(
        WebhookNotifier::new(
            "hook",
            &WebhookConfig::new(Secret::new(hook)).with_secret(Secret::new("s")),
        )
        .unwrap(),
    );
    let mut resilience = ResilienceConfig::default();
    // The default (1/s, bursts of 5, Slack's pace) would throttle a run of hundreds;
    // Alertmanager has no such limit.
    let delivery = DeliveryConfig::default().with_rate(10_000.0, Duration::from_secs(1), 1_000);
    delivery.register("hook", &mut resilience);
    let registry = Registry::new(resilience, Events::default());
    let outbox = Outbox::start(
        Arc::clone(&store) as Arc<dyn OutboxStore>,
        vec![(notifier, delivery)],
        &registry,
        OutboxOptions::default(),
    )
    .await
    .unwrap();
    let total = n + 20;
    let targets: Vec<TargetInfo> = (0..total)
        .map(|i| TargetInfo {
            name: format!("t{i:05}"),
            group: String::new(),
            kind: "tcp".into(),
            parents: vec![],
        })
        .collect();
    let mut config = EngineConfig::new(default_rules(), "hook");
    config.route = Route::root("hook")
        .with_timings(
            Duration::ZERO,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        )
        .with_group_by(rampart_monitor::alert::GroupBy::All);
    let mut engine = AlertEngine::new(
        config,
        &targets,
        Instant::now(),
        DateTime::<Utc>::from(std::time::SystemTime::now()),
    );
    let mut out = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let key = format!("\"target\":\"{}\"", t.name);
        let arrived = wait_for(waiters, &key);
        let start = Instant::now();
        engine.observe(
            &t.name,
            &ProbeResult::failure(FailureKind::ConnectRefused, "refused", Duration::ZERO),
            HealthState::Unhealthy,
            Some(0),
            start,
        );
        let due = engine.flush(start);
        assert_eq!(due.len(), 1);
        outbox.enqueue(due).await.unwrap();
        let at = tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .unwrap()
            .unwrap();
        if i >= 20 {
            out.push(at.duration_since(start).as_micros() as u64);
        }
    }
    outbox.shutdown(Duration::from_secs(1)).await;
    out
}

async fn alertmanager(n: usize, hook: &str, waiters: &Waiters) -> Option<Vec<u64>> {
    let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("am.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1m\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client
        .get(format!("{base}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "alertmanager did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    for i in 0..n + 20 {
        let name = format!("a{i:05}");
        let key = format!("\"target\":\"{name}\"");
        let arrived = wait_for(waiters, &key);
        let body = serde_json::json!([{ "labels": { "alertname": "TargetDown", "target": name, "severity": "critical" } }]);
        let start = Instant::now();
        let r = client
            .post(format!("{base}/api/v2/alerts"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let at = tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .unwrap()
            .unwrap();
        if i >= 20 {
            out.push(at.duration_since(start).as_micros() as u64);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut n = 500;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--n" {
            n = args.next().unwrap().parse().unwrap();
        }
    }
    let waiters: Waiters = Arc::default();
    let hook = receiver(Arc::clone(&waiters)).await;
    let ours = summary(rampart(n, &hook, &waiters).await);
    let theirs = alertmanager(n, &hook, &waiters).await.map(summary);
    let ratio = theirs
        .as_ref()
        .map(|t| t["p99_ms"].as_f64().unwrap() / ours["p99_ms"].as_f64().unwrap());
    println!(
        "{}",
        serde_json::json!({ "rampart": ours, "alertmanager": theirs, "p99_ratio": ratio })
    );
}
