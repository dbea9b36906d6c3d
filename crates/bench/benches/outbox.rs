//! The alert outbox: how fast notifications are durably enqueued (SQLite, WAL,
//! `synchronous=NORMAL`, group commit), and how long from `enqueue` to an in-process HTTP
//! receiver having the notification.
//!
//! - Criterion group `outbox_enqueue`: `batch_1` (one notification per enqueue, one task) and
//!   `batch_100` (100 per enqueue), throughput in notifications per second. Each enqueue returns
//!   once the notifications are committed. `concurrent_16x1`: 16 enqueues of one at once
//!   (group commit).
//! - Then a latency run: [`LATENCY_RUNS`] notifications, one at a time, from `enqueue` to the
//!   axum receiver's handler seeing it (durable outbox write, worker wake, HTTP POST over a new
//!   connection). Printed as p50 / p99 / max and written to
//!   `<target>/rampart-bench/outbox.json`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

#[path = "../../monitor/tests/outbox_support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rampart_monitor::alert::outbox::{DeliveryConfig, Outbox, OutboxOptions};
use rampart_monitor::alert::{NotificationSink, Notifier};
use rampart_monitor::store::{SqliteConfig, SqliteStore};
use rampart_resilience::Registry;
use support::{HttpNotifier, Inbox, ReceiverServer, free_addr, notification};

const LATENCY_RUNS: usize = 2000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `<target>/rampart-bench`: `CARGO_TARGET_DIR` (relative to the workspace root) or `target`.
fn out_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    target.join("rampart-bench")
}

async fn outbox(dir: &tempfile::TempDir, receivers: Vec<Arc<dyn Notifier>>) -> Outbox {
    let store = SqliteStore::open(dir.path().join("bench.db"), SqliteConfig::default())
        .await
        .unwrap();
    let config = DeliveryConfig::default().with_rate(1e6, Duration::from_secs(1), 1_000_000);
    Outbox::start(
        Arc::new(store),
        receivers.into_iter().map(|n| (n, config.clone())).collect(),
        &Registry::default(),
        OutboxOptions::default(),
    )
    .await
    .unwrap()
}

fn enqueue(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // No receiver runs: this measures the durable write alone.
    let outbox = rt.block_on(outbox(&dir, Vec::new()));
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("outbox_enqueue");
    for batch in [1usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.to_async(&rt).iter(|| {
                let ns = (0..batch)
                    .map(|_| {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        notification(&format!("n{i}"), "nobody")
                    })
                    .collect();
                let outbox = &outbox;
                async move { outbox.enqueue(ns).await.unwrap() }
            });
        });
    }
    // 16 callers at once, one notification each: the writer commits them together.
    group.throughput(Throughput::Elements(16));
    group.bench_function("concurrent_16x1", |b| {
        b.to_async(&rt).iter(|| {
            let outbox = &outbox;
            let calls = (0..16).map(|_| {
                let i = next.fetch_add(1, Ordering::Relaxed);
                outbox.enqueue(vec![notification(&format!("n{i}"), "nobody")])
            });
            async move {
                for r in futures_util::future::join_all(calls).await {
                    r.unwrap();
                }
            }
        });
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn latency() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(Inbox::default());
    let server = rt.block_on(ReceiverServer::start(free_addr(), Arc::clone(&inbox)));
    let outbox = rt.block_on(outbox(
        &dir,
        vec![HttpNotifier::new("hook", server.addr) as Arc<dyn Notifier>],
    ));
    let mut samples = Vec::with_capacity(LATENCY_RUNS);
    rt.block_on(async {
        for i in 0..LATENCY_RUNS + 100 {
            let seen = inbox.received.lock().unwrap().len();
            let start = Instant::now();
            outbox
                .enqueue(vec![notification(&format!("l{i}"), "hook")])
                .await
                .unwrap();
            inbox
                .wait_until(Duration::from_secs(10), "the notification", |inbox| {
                    inbox.received.lock().unwrap().len() > seen
                })
                .await;
            let at = inbox.received.lock().unwrap()[seen].at;
            // The first 100 warm up.
            if i >= 100 {
                samples.push(at.saturating_duration_since(start));
            }
        }
    });
    samples.sort();
    let (p50, p99, max) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    println!(
        "outbox enqueue->delivered ({LATENCY_RUNS} notifications, one at a time): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    let rows: Vec<serde_json::Value> = [
        ("enqueue_to_delivered_p50", p50),
        ("enqueue_to_delivered_p99", p99),
    ]
    .iter()
    .map(|(case, d)| {
        serde_json::json!({"case": case, "rampart": d.as_secs_f64() * 1e3, "peer": null,
                "peer_value": null, "unit": "ms", "ratio": null})
    })
    .collect();
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("outbox.json"),
        serde_json::to_string_pretty(&serde_json::json!({"bench": "outbox", "rows": rows}))
            .unwrap(),
    )
    .unwrap();
    rt.block_on(outbox.shutdown(Duration::from_secs(1)));
    rt.block_on(server.stop());
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    enqueue(&mut c);
    c.final_summary();
    latency();
}
