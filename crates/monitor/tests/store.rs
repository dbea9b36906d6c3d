#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The SQLite history store against real files in temp dirs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{FailureKind, Phases, ProbeResult};
use rampart_monitor::store::{
    Batch, Level, QUANTILE_RELATIVE_ERROR, ResultRecord, Retention, SqliteConfig, SqliteStore,
    StateChangeRecord, Store, StoreError,
};

/// Midnight UTC, 2027-01-15.
const T0_SECS: u64 = 1_799_971_200;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0_SECS)
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteConfig::default())
        .await
        .unwrap()
}

/// `n` results of `target` every `every`, from `start`, with varied latencies and every 7th a
/// failure.
fn results(target: &str, start: SystemTime, every: Duration, n: u32) -> Vec<ResultRecord> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let latency = Duration::from_micros(50 + x % 400_000);
            let probe = if i % 7 == 3 {
                ProbeResult::failure(FailureKind::Timeout, format!("timed out #{i}"), latency)
            } else {
                ProbeResult::success(latency)
            };
            ResultRecord::new(target, start + every * i, &probe)
        })
        .collect()
}

fn nearest_rank(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test]
async fn results_read_back_as_written_and_rollups_match_them_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("h.db")).await;
    // About 2.4 days of results, written in batches of various sizes so rollup rows are merged
    // across transactions.
    let api = results(
        "api",
        t0() + Duration::from_secs(17),
        Duration::from_millis(67_891),
        3000,
    );
    let db = results("db", t0(), Duration::from_secs(600), 50);
    let mut rest = &api[..];
    for size in [1, 1, 7, 250, 1000].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        store
            .write(Batch::new().with_results(now.to_vec()))
            .await
            .unwrap();
        rest = later;
    }
    store
        .write(Batch::new().with_results(db.clone()))
        .await
        .unwrap();

    let far = t0() + Duration::from_secs(10 * 86_400);
    assert_eq!(store.results("api", t0(), far).await.unwrap(), api);
    assert_eq!(store.results("db", t0(), far).await.unwrap(), db);
    // The last few, oldest first, as a restarted monitor reads them.
    assert_eq!(store.latest_results("api", 10).await.unwrap(), api[2990..]);
    assert_eq!(store.latest_results("db", 1000).await.unwrap(), db);
    assert!(store.latest_results("nobody", 10).await.unwrap().is_empty());
    // Ranges are half-open.
    let window = store.results("api", api[10].at, api[20].at).await.unwrap();
    assert_eq!(window, api[10..20]);

    for level in Level::ALL {
        let step = level.step().as_millis() as i64;
        let mut want: BTreeMap<i64, Vec<&ResultRecord>> = BTreeMap::new();
        for r in &api {
            want.entry(ms(r.at).div_euclid(step) * step)
                .or_default()
                .push(r);
        }
        let got = store.rollups("api", level, t0(), far).await.unwrap();
        assert_eq!(got.len(), want.len(), "{level:?}");
        for (rollup, (start, rs)) in got.iter().zip(&want) {
            let mut lat: Vec<Duration> = rs.iter().map(|r| r.latency).collect();
            lat.sort_unstable();
            assert_eq!(ms(rollup.start), *start, "{level:?}");
            assert_eq!(rollup.count, rs.len() as u64);
            assert_eq!(
                rollup.failures,
                rs.iter().filter(|r| !r.is_success()).count() as u64
            );
            assert_eq!(rollup.latency_sum, lat.iter().sum::<Duration>());
            assert_eq!(
                (rollup.latency_min, rollup.latency_max),
                (lat[0], lat[lat.len() - 1])
            );
            for q in [0.5, 0.95, 0.99] {
                let exact = nearest_rank(&lat, q).as_secs_f64();
                let got = rollup.quantile(q).unwrap().as_secs_f64();
                assert!(
                    (got - exact).abs() <= exact * QUANTILE_RELATIVE_ERROR + 1e-6,
                    "{level:?} at {start}: p{q} {got} against exact {exact}"
                );
            }
        }
    }
    // The db target's rollups are its own.
    let days = store.rollups("db", Level::Day, t0(), far).await.unwrap();
    assert_eq!(days.iter().map(|r| r.count).sum::<u64>(), 50);
}

#[tokio::test]
async fn a_result_keeps_its_failure_message_phases_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn Store> = Box::new(open(&dir.path().join("h.db")).await);
    let mut probe = ProbeResult::failure(
        FailureKind::StatusMismatch,
        "got 503",
        Duration::from_micros(1234),
    );
    let mut phases = Phases::default();
    phases.dns = Some(Duration::from_micros(11));
    phases.connect = Some(Duration::from_micros(22));
    phases.first_byte = Some(Duration::from_micros(33));
    phases.query = Some(Duration::from_micros(44));
    probe.phases = phases;
    probe.details.status = Some(503);
    let record = ResultRecord::new("web", t0(), &probe);
    store
        .write(Batch::new().result(record.clone()))
        .await
        .unwrap();
    let back = store
        .results("web", t0(), t0() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(back, std::slice::from_ref(&record));
    assert_eq!(back[0].status, Some(503));
    assert_eq!(back[0].phases.tls, None);
    assert_eq!(back[0].phases.query, Some(Duration::from_micros(44)));
    assert_eq!(back[0].message.as_deref(), Some("got 503"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_writes_are_all_acknowledged_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir.path().join("h.db")).await);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..100u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0..100u32 {
                let at = t0() + Duration::from_millis(u64::from(task * 100 + i));
                let r = ResultRecord::new(
                    format!("t{}", task % 10),
                    at,
                    &ProbeResult::success(Duration::from_millis(1)),
                );
                store.write(Batch::new().result(r)).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mut stored = Vec::new();
    for t in 0..10 {
        let rs = store
            .results(&format!("t{t}"), t0(), t0() + Duration::from_secs(60))
            .await
            .unwrap();
        let minute = store
            .rollups(
                &format!("t{t}"),
                Level::Minute,
                t0(),
                t0() + Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert_eq!(minute.iter().map(|r| r.count).sum::<u64>(), rs.len() as u64);
        stored.extend(rs.into_iter().map(|r| ms(r.at) - ms(t0())));
    }
    stored.sort_unstable();
    assert_eq!(stored, (0..10_000).collect::<Vec<i64>>());
    let stats = store.writer_stats();
    assert_eq!((stats.writes, stats.results), (10_000, 10_000));
    assert!(
        stats.commits < stats.writes,
        "writes were grouped: {stats:?}"
    );
}

#[tokio::test]
async fn one_write_at_a_time_is_committed_alone_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("h.db")).await;
    for i in 0..20 {
        let r = ResultRecord::new(
            "api",
            t0() + Duration::from_secs(i),
            &ProbeResult::success(Duration::ZERO),
        );
        store.write(Batch::new().result(r)).await.unwrap();
    }
    let stats = store.writer_stats();
    // No write waited for company: each was its own commit.
    assert_eq!((stats.commits, stats.writes), (20, 20));
}

#[tokio::test]
async fn a_write_dropped_after_it_was_queued_is_still_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("h.db")).await;
    let record = |s| {
        ResultRecord::new(
            "api",
            t0() + Duration::from_secs(s),
            &ProbeResult::success(Duration::ZERO),
        )
    };
    // Polled once (queued, waiting for its acknowledgement), then dropped.
    let mut write = store.write(Batch::new().result(record(1)));
    let polled = write
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    assert!(
        polled.is_pending(),
        "the write was still waiting when dropped"
    );
    drop(write);
    // The writer goes in order: once the next write is acknowledged, the dropped one is in too.
    store.write(Batch::new().result(record(2))).await.unwrap();
    let stored = store
        .results("api", t0(), t0() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(stored, [record(1), record(2)]);
}

#[tokio::test]
async fn incidents_open_on_down_continue_while_recovering_and_close_on_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("h.db")).await;
    use HealthState::*;
    let steps = [
        (Unknown, Healthy),
        (Healthy, Unhealthy),
        (Unhealthy, Unreachable),
        (Unreachable, Recovering),
        (Recovering, Unhealthy),
        (Unhealthy, Healthy),
        (Healthy, Degraded),
        (Degraded, Unhealthy),
    ];
    for (i, (from, to)) in steps.into_iter().enumerate() {
        let at = t0() + Duration::from_secs(60 * i as u64);
        let change = StateChangeRecord::between("api", at, from, to, Some(format!("step {i}")));
        store.write(Batch::new().change(change)).await.unwrap();
    }
    let incidents = store.incidents("api").await.unwrap();
    let spans: Vec<_> = incidents
        .iter()
        .map(|i| (i.opened, i.closed, i.state, i.cause.as_deref()))
        .collect();
    let at = |i: u64| t0() + Duration::from_secs(60 * i);
    assert_eq!(
        spans,
        [
            (at(1), Some(at(5)), Unhealthy, Some("step 1")),
            (at(7), None, Unhealthy, Some("step 7")),
        ]
    );
    let states = store.last_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].state, states[0].since), (Unhealthy, at(7)));
    assert_eq!(states[0].incident.as_ref(), Some(&incidents[1]));
}

#[tokio::test]
async fn sweep_deletes_expired_rows_level_by_level_in_small_batches() {
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    let retention = Retention::default()
        .with_raw(day)
        .with_level(Level::Minute, Some(day * 2))
        .with_level(Level::Hour, Some(day * 4));
    let config = SqliteConfig::default()
        .with_retention(retention)
        .with_sweep_batch(7);
    let store = SqliteStore::open(dir.path().join("h.db"), config)
        .await
        .unwrap();
    // One result every 20 minutes for 6 days.
    let all = results("api", t0(), Duration::from_secs(1200), 6 * 72);
    store
        .write(Batch::new().with_results(all.clone()))
        .await
        .unwrap();
    let now = t0() + day * 6;
    let far = now + day;

    let report = store.sweep(now).await.unwrap();

    let kept = store.results("api", t0(), far).await.unwrap();
    assert_eq!(
        kept,
        all.iter()
            .filter(|r| r.at >= now - day)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(report.results as usize, all.len() - kept.len());
    let minutes = store
        .rollups("api", Level::Minute, t0(), far)
        .await
        .unwrap();
    assert!(
        minutes
            .iter()
            .all(|r| r.start + Level::Minute.step() >= now - day * 2)
    );
    assert_eq!(minutes.len(), 2 * 72);
    let hours = store.rollups("api", Level::Hour, t0(), far).await.unwrap();
    assert_eq!(hours.len(), 4 * 24);
    let days = store.rollups("api", Level::Day, t0(), far).await.unwrap();
    assert_eq!(
        days.iter().map(|r| r.count).sum::<u64>(),
        all.len() as u64,
        "days are kept"
    );
    assert_eq!(
        report.rollups,
        [(Level::Minute, 4 * 72), (Level::Hour, 2 * 24)],
        "days are kept forever by default"
    );
    // A second sweep finds nothing more.
    let again = store.sweep(now).await.unwrap();
    assert_eq!(again.results, 0);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    open(&path).await.close().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("99"),
        "{message}"
    );
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}

#[tokio::test]
async fn a_corrupt_or_unopenable_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, "this is not an sqlite database ".repeat(200)).unwrap();
    let missing_dir = dir.path().join("no-such-dir").join("h.db");
    for (path, why) in [
        (&corrupt, "not a database"),
        (&missing_dir, "unable to open"),
        (&dir.path().to_path_buf(), "unable to open"),
    ] {
        let err = SqliteStore::open(path, SqliteConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let text = chain(&err);
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(why), "{text}");
    }
}

#[tokio::test]
async fn api_targets_are_kept_replaced_and_deleted_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    store
        .put_api_target("a", r#"{"name":"a"}"#, t0)
        .await
        .unwrap();
    store
        .put_api_target("b", r#"{"name":"b"}"#, t0)
        .await
        .unwrap();
    let later = t0 + Duration::from_secs(60);
    store
        .put_api_target("a", r#"{"name":"a","group":"g"}"#, later)
        .await
        .unwrap();
    assert!(store.delete_api_target("b").await.unwrap());
    assert!(!store.delete_api_target("b").await.unwrap());
    store.close().await;

    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    let all = store.api_targets().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].definition, r#"{"name":"a","group":"g"}"#);
    assert_eq!((all[0].created, all[0].updated), (t0, later));
}
