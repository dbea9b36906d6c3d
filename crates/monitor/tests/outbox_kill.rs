#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `kill -9` with 1,000 notifications queued: after a restart every one is delivered, none is
//! lost and none arrives out of order per receiver; the only copies are at-least-once
//! redeliveries of the one notification per receiver that was in flight.
//!
//! The test re-runs its own binary as the daemon (`RAMPART_OUTBOX_CHILD` names the database; the
//! receiver's address is in the file beside it): the child enqueues 1,000 notifications for four
//! receivers and delivers them, rate-limited, to an axum receiver in the parent, which kills it
//! with SIGKILL mid-way, starts an outbox on the same file itself and waits for the rest.

mod outbox_support;
mod reexec;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outbox_support::{HttpNotifier, Inbox, ReceiverServer, free_addr, notification};
use rampart_monitor::alert::outbox::{
    DeliveryConfig, EntryState, Outbox, OutboxFilter, OutboxOptions, OutboxStore,
};
use rampart_monitor::alert::{NotificationSink, Notifier};
use rampart_monitor::store::{SqliteConfig, SqliteStore};
use rampart_resilience::Registry;

const CHILD_ENV: &str = "RAMPART_OUTBOX_CHILD";
const TEST_NAME: &str = "kill_9_with_1000_queued_loses_nothing_and_keeps_order";
const TOTAL: usize = 1000;
const RECEIVERS: usize = 4;

fn id(i: usize) -> String {
    format!("n{i:04}")
}

fn receiver_of(i: usize) -> String {
    format!("r{}", i % RECEIVERS)
}

fn addr_file(db: &Path) -> PathBuf {
    db.with_extension("addr")
}

async fn start(store: Arc<SqliteStore>, addr: SocketAddr, per_second: f64) -> Outbox {
    let config = DeliveryConfig::default()
        .with_rate(per_second, Duration::from_secs(1), 1)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
    let receivers = (0..RECEIVERS)
        .map(|r| {
            (
                HttpNotifier::new(&format!("r{r}"), addr) as Arc<dyn Notifier>,
                config.clone(),
            )
        })
        .collect();
    Outbox::start(
        store,
        receivers,
        &Registry::default(),
        OutboxOptions::default(),
    )
    .await
    .unwrap()
}

async fn open(db: &Path) -> Arc<SqliteStore> {
    Arc::new(
        SqliteStore::open(db, SqliteConfig::default())
            .await
            .unwrap(),
    )
}

/// The child: enqueues everything in batches of 10 (printing `enqueued N` after each
/// acknowledged batch) while its outbox delivers, at most 100 a second per receiver, until killed.
/// The first half goes straight into the store before the outbox starts, so that 1,000 are
/// queued however slow the machine; the second half through the outbox's `enqueue`.
fn run_child(db: &str) {
    let db = PathBuf::from(db);
    let addr: SocketAddr = std::fs::read_to_string(addr_file(&db))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = open(&db).await;
        let all: Vec<usize> = (0..TOTAL).collect();
        let (first, second) = all.split_at(TOTAL / 2);
        let batch_of = |batch: &[usize]| {
            batch
                .iter()
                .map(|&i| notification(&id(i), &receiver_of(i)))
                .collect::<Vec<_>>()
        };
        for batch in first.chunks(10) {
            OutboxStore::enqueue(&*store, batch_of(batch), SystemTime::now())
                .await
                .unwrap();
            println!("enqueued {}", batch[batch.len() - 1] + 1);
        }
        let outbox = start(store, addr, 100.0).await;
        for batch in second.chunks(10) {
            outbox.enqueue(batch_of(batch)).await.unwrap();
            println!("enqueued {}", batch[batch.len() - 1] + 1);
        }
        std::future::pending::<()>().await;
    });
}

#[test]
fn kill_9_with_1000_queued_loses_nothing_and_keeps_order() {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        run_child(&db);
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let inbox = Arc::new(Inbox::default());
    let server = rt.block_on(ReceiverServer::start(free_addr(), Arc::clone(&inbox)));
    std::fs::write(addr_file(&db), server.addr.to_string()).unwrap();

    let mut child = reexec::spawn_self(TEST_NAME, CHILD_ENV, &db);
    let pid = Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    let mut enqueued = 0;
    for line in BufReader::new(child.0.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("enqueued ") {
            enqueued = n.parse::<usize>().unwrap();
            if enqueued == TOTAL {
                break;
            }
        }
    }
    assert_eq!(
        enqueued, TOTAL,
        "the child stopped before enqueueing everything"
    );
    // Some delivered, most still queued: then the kill.
    rt.block_on(
        inbox.wait_until(Duration::from_secs(60), "first deliveries", |i| {
            i.all().len() >= 40
        }),
    );
    kill(pid, Signal::SIGKILL).unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    let before: BTreeSet<String> = inbox.all().into_iter().map(|r| r.id).collect();
    // 100 a second per receiver: a fraction of them in the time it took to see 40.
    assert!(
        before.len() < TOTAL / 2,
        "{} of {TOTAL} already delivered before the kill",
        before.len()
    );

    // Restart on the same file: everything pending is resumed.
    rt.block_on(async {
        let outbox = start(open(&db).await, server.addr, 1000.0).await;
        let pending = outbox
            .list(OutboxFilter::all().state(EntryState::Pending).limit(1))
            .await
            .unwrap();
        assert!(!pending.is_empty(), "notifications were still queued");
        inbox
            .wait_until(Duration::from_secs(120), "every notification", |i| {
                i.all().iter().map(|r| &r.id).collect::<BTreeSet<_>>().len() == TOTAL
            })
            .await;
        // Marked delivered once the receiver answered.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while outbox.stats().iter().map(|s| s.queue_depth).sum::<u64>() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                outbox.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outbox.shutdown(Duration::from_secs(5)).await;
    });

    for r in 0..RECEIVERS {
        let name = format!("r{r}");
        let got = inbox.accepted(&name);
        let want: Vec<String> = (0..TOTAL).filter(|i| i % RECEIVERS == r).map(id).collect();
        let mut collapsed = got.clone();
        collapsed.dedup();
        assert_eq!(collapsed, want, "{name}: lost or out of order");
        assert!(
            got.len() - want.len() <= 1,
            "{name}: {} copies; only the one in flight at the kill may come twice",
            got.len() - want.len()
        );
    }
    rt.block_on(server.stop());
}
