//! The SQLite schema and its versioned migrations.
//!
//! The version is SQLite's `PRAGMA user_version`. [`MIGRATIONS`]`[i]` takes a database from
//! version `i` to `i + 1`; opening applies every missing one in a single transaction, so a crash
//! during a migration leaves the old version intact. A database of a newer version than this
//! build knows is refused rather than misread.

use rusqlite::{Connection, TransactionBehavior};

/// Version 1: targets, raw results, state changes, incidents and rollups.
const V1: &str = "
CREATE TABLE targets (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE results (
    id            INTEGER PRIMARY KEY,
    target_id     INTEGER NOT NULL REFERENCES targets(id),
    at_ms         INTEGER NOT NULL,
    failure_kind  TEXT,
    message       TEXT,
    latency_us    INTEGER NOT NULL,
    dns_us        INTEGER,
    connect_us    INTEGER,
    tls_us        INTEGER,
    first_byte_us INTEGER,
    body_us       INTEGER,
    status        INTEGER
);
CREATE INDEX results_target_at ON results(target_id, at_ms);
CREATE TABLE state_changes (
    id         INTEGER PRIMARY KEY,
    target_id  INTEGER NOT NULL REFERENCES targets(id),
    at_ms      INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    cause      TEXT
);
CREATE INDEX state_changes_target_at ON state_changes(target_id, at_ms);
CREATE TABLE incidents (
    id        INTEGER PRIMARY KEY,
    target_id INTEGER NOT NULL REFERENCES targets(id),
    opened_ms INTEGER NOT NULL,
    closed_ms INTEGER,
    state     TEXT NOT NULL,
    cause     TEXT
);
CREATE UNIQUE INDEX incidents_open ON incidents(target_id) WHERE closed_ms IS NULL;
CREATE INDEX incidents_target_opened ON incidents(target_id, opened_ms);
CREATE TABLE rollups (
    id             INTEGER PRIMARY KEY,
    level          INTEGER NOT NULL,
    target_id      INTEGER NOT NULL REFERENCES targets(id),
    start_ms       INTEGER NOT NULL,
    count          INTEGER NOT NULL,
    failures       INTEGER NOT NULL,
    latency_sum_us INTEGER NOT NULL,
    latency_min_us INTEGER NOT NULL,
    latency_max_us INTEGER NOT NULL,
    histogram      BLOB NOT NULL,
    UNIQUE (level, target_id, start_ms)
);
CREATE INDEX rollups_level_start ON rollups(level, start_ms);
";

/// Version 2: each target's last state kept in its own table (version 1 had to scan every state
/// change for it), filled from the existing changes; an index on result times for the retention
/// sweep.
const V2: &str = "
CREATE TABLE target_state (
    target_id INTEGER PRIMARY KEY REFERENCES targets(id),
    state     TEXT NOT NULL,
    since_ms  INTEGER NOT NULL
);
INSERT INTO target_state (target_id, state, since_ms)
    SELECT s.target_id, s.to_state, s.at_ms FROM state_changes s
    WHERE s.id = (SELECT max(id) FROM state_changes WHERE target_id = s.target_id);
CREATE INDEX results_at ON results(at_ms);
";

/// Version 3: the time of a database probe's query or command, or an MQTT round trip.
const V3: &str = "
ALTER TABLE results ADD COLUMN query_us INTEGER;
";

/// Version 4: targets created through the HTTP API, kept as their JSON definitions.
const V4: &str = "
CREATE TABLE api_targets (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
";

/// Version 5, alerting's own state: the engine's durable state (one JSON document) and silences.
const ALERTS: &str = "
CREATE TABLE alert_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    saved_ms INTEGER NOT NULL
);
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    silence TEXT NOT NULL,
    ends_ms INTEGER NOT NULL
);
CREATE INDEX silences_by_end ON silences (ends_ms);
";

/// Version 6, the alert outbox: every notification written before it is sent. `seq` orders each
/// receiver's queue (a retried dead letter gets a new, larger one); `id` is the notification's
/// idempotency key; `state` is `pending`, `delivered` or `dead`; times are Unix milliseconds.
const OUTBOX: &str = "
CREATE TABLE outbox (
    seq             INTEGER NOT NULL UNIQUE,
    id              TEXT NOT NULL UNIQUE,
    receiver        TEXT NOT NULL,
    group_key       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    delivered_ms    INTEGER,
    dead_ms         INTEGER
);
CREATE INDEX outbox_receiver_state_seq ON outbox(receiver, state, seq);
CREATE INDEX outbox_state_seq ON outbox(state, seq);
CREATE INDEX outbox_delivered ON outbox(delivered_ms) WHERE state = 'delivered';
";

/// Every migration, in order: `MIGRATIONS[i]` takes version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, ALERTS, OUTBOX];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Why migrating failed.
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The database is newer than this build.
    TooNew(u32),
    /// SQLite refused.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

/// Brings `conn` to version `target` (at most [`SCHEMA_VERSION`]) in one transaction; returns the
/// version found.
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, MigrateError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(found));
    }
    let target = target.min(SCHEMA_VERSION);
    for sql in MIGRATIONS.iter().take(target as usize).skip(found as usize) {
        tx.execute_batch(sql)?;
    }
    if target > found {
        tx.pragma_update(None, "user_version", target)?;
    }
    tx.commit()?;
    Ok(found)
}
