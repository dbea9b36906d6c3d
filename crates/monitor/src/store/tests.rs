#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rusqlite::Connection;

use super::record::from_ms;
use super::*;
use crate::health::HealthState;

fn user_version(path: &std::path::Path) -> u32 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn opening_a_version_1_database_migrates_it_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        conn.execute_batch(
            "INSERT INTO targets (id, name) VALUES (1, 'db'), (2, 'api');
             INSERT INTO state_changes (target_id, at_ms, from_state, to_state, cause) VALUES
                 (1, 1000, 'unknown', 'unhealthy', 'refused'),
                 (2, 1500, 'unknown', 'healthy', NULL),
                 (1, 2000, 'unhealthy', 'recovering', NULL),
                 (1, 3000, 'recovering', 'unhealthy', 'refused again');
             INSERT INTO incidents (target_id, opened_ms, state, cause)
                 VALUES (1, 1000, 'unhealthy', 'refused');
             INSERT INTO results (target_id, at_ms, failure_kind, message, latency_us)
                 VALUES (1, 3000, 'connect_refused', 'refused again', 250);",
        )
        .unwrap();
    }
    assert_eq!(user_version(&path), 1);

    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let states = store.last_states().await.unwrap();
    let names: Vec<_> = states
        .iter()
        .map(|s| (s.target.as_str(), s.state))
        .collect();
    assert_eq!(
        names,
        [
            ("api", HealthState::Healthy),
            ("db", HealthState::Unhealthy)
        ]
    );
    let db = &states[1];
    assert_eq!(db.since, from_ms(3000));
    let incident = db.incident.as_ref().expect("db's incident is still open");
    assert_eq!(
        (incident.opened, incident.cause.as_deref()),
        (from_ms(1000), Some("refused"))
    );
    let results = store
        .results("db", from_ms(0), from_ms(10_000))
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].latency, Duration::from_micros(250));
    assert_eq!(
        results[0].failure,
        Some(crate::probe::FailureKind::ConnectRefused)
    );
    store.close().await;

    // Opening again finds the current version and changes nothing.
    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    assert_eq!(store.last_states().await.unwrap().len(), 2);
}
