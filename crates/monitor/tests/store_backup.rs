//! `store::backup` of a live store: a real `SqliteStore` keeps writing while the copy is taken.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rampart_monitor::probe::ProbeResult;
use rampart_monitor::store::{Batch, ResultRecord, SqliteConfig, SqliteStore, Store, backup};

fn batch(target: &str, i: u64) -> Batch {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i);
    let result = ProbeResult::success(Duration::from_millis(i % 50));
    Batch::new().with_results((0..20).map(|_| ResultRecord::new(target, at, &result)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_store_being_written_is_consistent_and_has_every_earlier_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let store = Arc::new(
        SqliteStore::open(&db, SqliteConfig::default())
            .await
            .unwrap(),
    );
    for i in 0..100 {
        store.write(batch("before", i)).await.unwrap();
    }

    // A writer that goes on during the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let (store, stop, written) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&written));
        async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                store.write(batch("during", i)).await.unwrap();
                written.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }
    });
    // Until the writer is under way.
    while written.load(Ordering::SeqCst) < 10 {
        tokio::task::yield_now().await;
    }
    let out = dir.path().join("copy.db");
    let report = backup(&db, &out).await.unwrap();
    let at_end = written.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert_eq!(report.path, out);
    assert!(report.bytes > 0);
    assert!(!dir.path().join("copy.db.partial").exists());

    let copy = rusqlite::Connection::open(&out).unwrap();
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mode: String = copy
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "one self-contained file");
    drop(copy);

    let copy = SqliteStore::open(&out, SqliteConfig::default())
        .await
        .unwrap();
    let far = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        copy.results("before", UNIX_EPOCH, far).await.unwrap().len(),
        2000
    );
    // Whole batches only: a transaction is in the copy entirely or not at all.
    let during = copy.results("during", UNIX_EPOCH, far).await.unwrap().len() as u64;
    assert_eq!(during % 20, 0, "{during}");
    assert!(
        during / 20 <= at_end + 1,
        "{during} rows, {at_end} batches acknowledged"
    );

    // The destination is never overwritten; a missing store is not created.
    let err = backup(&db, &out).await.unwrap_err().to_string();
    assert!(err.contains("exists"), "{err}");
    let missing = dir.path().join("missing.db");
    assert!(backup(&missing, dir.path().join("x.db")).await.is_err());
    assert!(!missing.exists());
}
