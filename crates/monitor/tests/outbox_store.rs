#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The outbox table in the SQLite history store: order, idempotent enqueue, state changes,
//! listing with filters, retrying a dead letter, pruning, and surviving a reopen.

mod outbox_support;

use std::time::{Duration, SystemTime};

use outbox_support::notification;
use rampart_monitor::alert::outbox::{EntryState, OutboxFilter, OutboxStore};
use rampart_monitor::store::{SCHEMA_VERSION, SqliteConfig, SqliteStore};

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

#[tokio::test]
async fn the_outbox_table_keeps_order_state_and_idempotency_across_a_reopen() {
    const { assert!(SCHEMA_VERSION >= 5) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut batch: Vec<_> = ids("a", 3)
        .iter()
        .map(|id| notification(id, "ops"))
        .collect();
    batch.insert(1, notification("b0000", "dev"));
    let fresh = store.enqueue(batch, t0).await.unwrap();
    assert_eq!(fresh, [true; 4]);
    // An id already there, in the same call twice, and a new one.
    let again = vec![
        notification("a0001", "ops"),
        notification("a0003", "ops"),
        notification("a0003", "ops"),
    ];
    assert_eq!(
        store.enqueue(again, t0).await.unwrap(),
        [false, true, false]
    );

    let pending = store.pending("ops", 0, 100).await.unwrap();
    let order: Vec<&str> = pending.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(order, ["a0000", "a0001", "a0002", "a0003"]);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    let after = store.pending("ops", pending[1].seq, 1).await.unwrap();
    assert_eq!(after[0].id, "a0002");
    let n = pending[0].notification().unwrap();
    assert_eq!((n.id.as_str(), n.receiver.as_str()), ("a0000", "ops"));
    assert_eq!(pending[0].created, t0);

    let t1 = t0 + Duration::from_secs(5);
    store
        .record_attempt("a0000", 1, t1, "HTTP 503")
        .await
        .unwrap();
    store.mark_delivered("a0000", 2, t1).await.unwrap();
    store.dead_letter("a0001", 1, t1, "HTTP 400").await.unwrap();
    // A delivered entry is not dead-lettered afterwards.
    store.dead_letter("a0000", 3, t1, "late").await.unwrap();
    let depths = store.depths().await.unwrap();
    assert_eq!(depths, [("dev".to_owned(), 1), ("ops".to_owned(), 2)]);
    store.close().await;

    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    let a0 = store.get("a0000").await.unwrap().unwrap();
    assert_eq!(a0.state, EntryState::Delivered);
    assert_eq!(a0.attempts, 2);
    assert_eq!(a0.delivered, Some(t1));
    assert_eq!(a0.last_error.as_deref(), Some("HTTP 503"));
    let dead = store
        .list(OutboxFilter::all().state(EntryState::Dead))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "a0001");
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400"));
    assert_eq!(
        store
            .list(OutboxFilter::all().receiver("dev"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .list(OutboxFilter::all().limit(2))
            .await
            .unwrap()
            .len(),
        2
    );

    // Retrying: only a dead letter, back to pending at the end of the queue, age reset.
    let t2 = t1 + Duration::from_secs(60);
    assert!(store.retry("a0002", t2).await.unwrap().is_none());
    let retried = store.retry("a0001", t2).await.unwrap().unwrap();
    assert_eq!(
        (
            retried.state,
            retried.attempts,
            retried.created,
            retried.dead
        ),
        (EntryState::Pending, 0, t2, None)
    );
    let order: Vec<String> = store
        .pending("ops", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(order, ["a0002", "a0003", "a0001"]);

    // Pruning takes delivered entries older than the cut only.
    assert_eq!(store.prune(t1, 100).await.unwrap(), 0);
    assert_eq!(
        store
            .prune(t1 + Duration::from_millis(1), 100)
            .await
            .unwrap(),
        1
    );
    assert!(store.get("a0000").await.unwrap().is_none());
    assert_eq!(store.list(OutboxFilter::all()).await.unwrap().len(), 4);
    store.close().await;
}

#[tokio::test]
async fn concurrent_enqueues_are_group_committed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let store = std::sync::Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0..50 {
                let n = notification(&format!("t{t}-{i:03}"), &format!("r{t}"));
                store.enqueue(vec![n], SystemTime::now()).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for t in 0..8 {
        let got: Vec<String> = store
            .pending(&format!("r{t}"), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let want: Vec<String> = (0..50).map(|i| format!("t{t}-{i:03}")).collect();
        assert_eq!(got, want);
    }
    let stats = store.writer_stats();
    assert_eq!(stats.writes, 400);
    assert!(stats.commits <= 400);
}
