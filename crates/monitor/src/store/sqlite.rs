//! [`SqliteStore`]: the embedded default, one SQLite file in WAL mode.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Row, params, params_from_iter};
use tokio::sync::{mpsc, oneshot};

use super::config::SqliteConfig;
use super::error::StoreError;
use super::record::{
    ApiTarget, Batch, Incident, ResultRecord, TargetState, failure_kind, from_ms, from_us,
    health_state, to_ms,
};
use super::rollup::{Level, Rollup};
use super::schema::{self, MigrateError, SCHEMA_VERSION};
use super::writer::{self, Command, Counters, SweepTable, aggregate_at};
use super::{Store, StoreFuture, StoreHealth, SweepReport};
use crate::probe::Phases;

/// How long a reader waits for a lock before giving up (readers rarely wait in WAL mode).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The history store in one SQLite file (WAL mode, `synchronous=NORMAL`).
///
/// Writes go to a dedicated writer thread through a bounded queue; the writer commits everything
/// queued in one transaction (group commit) and only then acknowledges each write, so a
/// [`write`](Store::write) that returned `Ok` survives a crash (`kill -9`) of the process. Reads
/// use their own connection on tokio's blocking pool and never wait for the writer.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use rampart_monitor::health::HealthState;
/// use rampart_monitor::probe::{FailureKind, ProbeResult};
/// use rampart_monitor::store::{Batch, ResultRecord, SqliteConfig, SqliteStore, StateChangeRecord, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("history.db"), SqliteConfig::default()).await?;
/// let now = SystemTime::now();
/// let down = ProbeResult::failure(FailureKind::ConnectRefused, "refused", Duration::from_millis(2));
/// store
///     .write(
///         Batch::new()
///             .result(ResultRecord::new("db", now, &down))
///             .change(StateChangeRecord::between("db", now, HealthState::Healthy, HealthState::Unhealthy, None)),
///     )
///     .await?; // committed: survives kill -9 from here on
///
/// let hour = Duration::from_secs(3600);
/// assert_eq!(store.results("db", now - hour, now + hour).await?.len(), 1);
/// let states = store.last_states().await?;
/// assert_eq!(states[0].state, HealthState::Unhealthy);
/// assert!(states[0].incident.as_ref().is_some_and(|i| i.is_open()));
/// store.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    config: SqliteConfig,
    tx: Option<mpsc::Sender<Command>>,
    reader: Arc<Mutex<Connection>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// What a [`SqliteStore`]'s writer has committed since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes acknowledged by them; `writes / commits` is the mean group size.
    pub writes: u64,
    /// Results they held.
    pub results: u64,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has committed what is queued.
        self.tx.take();
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, migrating an older schema. Fails with an
    /// error naming the file if it cannot be opened or written, is not an SQLite database, or was
    /// written by a newer version. Must be called inside a tokio runtime.
    pub async fn open(path: impl Into<PathBuf>, config: SqliteConfig) -> Result<Self, StoreError> {
        let path = path.into();
        let p = path.clone();
        let (writer_conn, reader) = tokio::task::spawn_blocking(move || open_connections(&p))
            .await
            .map_err(|_| StoreError::Closed { path: path.clone() })??;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let p = path.clone();
        let max_batch = config.max_batch.max(1);
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        let writer = std::thread::Builder::new()
            .name("rampart-store-writer".into())
            .spawn(move || writer::run(writer_conn, p, rx, max_batch, &shared))
            .map_err(|_| StoreError::Closed { path: path.clone() })?;
        Ok(SqliteStore {
            path,
            config,
            tx: Some(tx),
            reader: Arc::new(Mutex::new(reader)),
            writer: Some(writer),
            counters,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// What the writer has committed so far.
    pub fn writer_stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            results: c.results.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting writes, waits until every queued write is committed and acknowledged, and
    /// stops the writer thread.
    pub async fn close(mut self) {
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }

    pub(crate) async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let closed = || StoreError::Closed {
            path: self.path.clone(),
        };
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        let (reply, ack) = oneshot::channel();
        tx.send(make(reply)).await.map_err(|_| closed())?;
        ack.await.map_err(|_| closed())?
    }

    /// Runs `read` on the reader connection on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            read(&conn, &path)
        })
        .await
        .map_err(|_| StoreError::Closed {
            path: self.path.clone(),
        })?
    }

    /// Runs `sql` (a [`RESULT_SELECT`] whose `?1` is the target's name and whose other
    /// parameters are `args`) on the reader.
    fn query_results(
        &self,
        target: &str,
        sql: String,
        args: Vec<i64>,
    ) -> StoreFuture<'_, Vec<ResultRecord>> {
        let target = target.to_owned();
        Box::pin(self.read(move |conn, path| {
            let read = |e| StoreError::read(path, e);
            let mut stmt = conn.prepare_cached(&sql).map_err(read)?;
            let rows = stmt
                .query_map(
                    params_from_iter(
                        std::iter::once(Value::Text(target.clone()))
                            .chain(args.into_iter().map(Value::Integer)),
                    ),
                    |r| result_row(r, &target),
                )
                .map_err(read)?;
            let mut out = Vec::new();
            for row in rows {
                let (record, kind) = row.map_err(read)?;
                out.push(check_kind(record, kind, path)?);
            }
            Ok(out)
        }))
    }

    async fn sweep_table(&self, table: SweepTable, before_ms: i64) -> Result<u64, StoreError> {
        let limit = self.config.sweep_batch.max(1);
        let mut total = 0u64;
        loop {
            // One bounded transaction at a time: writes queued meanwhile go in between.
            let deleted = self
                .send(|reply| Command::Sweep {
                    table,
                    before_ms,
                    limit,
                    reply,
                })
                .await?;
            total += deleted as u64;
            if deleted < limit {
                return Ok(total);
            }
        }
    }
}

/// Opens the writer connection (migrating the schema) and the reader connection.
fn open_connections(path: &Path) -> Result<(Connection, Connection), StoreError> {
    let open_err = |e| StoreError::open(path, e);
    let mut conn = Connection::open(path).map_err(open_err)?;
    // WAL: readers never block the writer; synchronous=NORMAL: a commit is in the WAL file
    // (in the OS's cache) when it returns, so it survives the process dying, not the OS.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        ))));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    schema::migrate_to(&mut conn, SCHEMA_VERSION).map_err(|e| match e {
        MigrateError::TooNew(found) => StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        },
        MigrateError::Sql(source) => {
            let from = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap_or(0);
            StoreError::Migrate {
                path: path.to_owned(),
                from,
                source: Arc::new(source),
            }
        }
    })?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let reader = Connection::open_with_flags(path, flags).map_err(open_err)?;
    reader.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    Ok((conn, reader))
}

impl Store for SqliteStore {
    fn health(&self) -> StoreFuture<'_, StoreHealth> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let (one, version, pages, page_size) = self
                .read(|conn, path| {
                    let read_err = |e| StoreError::read(path, e);
                    let one: i64 = conn
                        .query_row("SELECT 1", [], |r| r.get(0))
                        .map_err(read_err)?;
                    let version: u32 = conn
                        .query_row("PRAGMA user_version", [], |r| r.get(0))
                        .map_err(read_err)?;
                    let pages: i64 = conn
                        .query_row("PRAGMA page_count", [], |r| r.get(0))
                        .map_err(read_err)?;
                    let size: i64 = conn
                        .query_row("PRAGMA page_size", [], |r| r.get(0))
                        .map_err(read_err)?;
                    Ok((one, version, pages, size))
                })
                .await?;
            let latency = started.elapsed();
            debug_assert_eq!(one, 1);
            let mut wal = self.path.clone().into_os_string();
            wal.push("-wal");
            let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).ok();
            let pending = self.tx.as_ref().map(|tx| {
                u64::try_from(tx.max_capacity().saturating_sub(tx.capacity())).unwrap_or(u64::MAX)
            });
            let mut h = StoreHealth::new("sqlite");
            h.path = Some(self.path.clone());
            h.latency = latency;
            h.schema_version = Some(version);
            h.page_count = u64::try_from(pages).ok();
            h.page_size = u64::try_from(page_size).ok();
            h.wal_bytes = wal_bytes;
            h.pending_writes = pending;
            h.commits = Some(self.counters.commits.load(Ordering::Relaxed));
            Ok(h)
        })
    }

    fn write(&self, batch: Batch) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            self.send(|reply| Command::Write(batch, reply)).await
        })
    }

    fn results(
        &self,
        target: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> StoreFuture<'_, Vec<ResultRecord>> {
        let sql = format!(
            "{RESULT_SELECT} WHERE t.name = ?1 AND r.at_ms >= ?2 AND r.at_ms < ?3 \
             ORDER BY r.at_ms, r.id"
        );
        self.query_results(target, sql, vec![to_ms(from), to_ms(to)])
    }

    fn latest_results(&self, target: &str, limit: usize) -> StoreFuture<'_, Vec<ResultRecord>> {
        let sql =
            format!("{RESULT_SELECT} WHERE t.name = ?1 ORDER BY r.at_ms DESC, r.id DESC LIMIT ?2");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let newest_first = self.query_results(target, sql, vec![limit]);
        Box::pin(async move {
            let mut results = newest_first.await?;
            results.reverse();
            Ok(results)
        })
    }

    fn rollups(
        &self,
        target: &str,
        level: Level,
        from: SystemTime,
        to: SystemTime,
    ) -> StoreFuture<'_, Vec<Rollup>> {
        let target = target.to_owned();
        // Every bucket that overlaps the range.
        let from = level.bucket_start(to_ms(from));
        Box::pin(self.read(move |conn, path| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT r.start_ms, r.count, r.failures, r.latency_sum_us, r.latency_min_us, \
                     r.latency_max_us, r.histogram \
                     FROM rollups r JOIN targets t ON t.id = r.target_id \
                     WHERE t.name = ?1 AND r.level = ?2 AND r.start_ms >= ?3 AND r.start_ms < ?4 \
                     ORDER BY r.start_ms",
                )
                .map_err(|e| StoreError::read(path, e))?;
            let rows = stmt
                .query_map(params![target, level.code(), from, to_ms(to)], |r| {
                    Ok(aggregate_at(r, 1)?.into_rollup(target.clone(), level, r.get(0)?))
                })
                .map_err(|e| StoreError::read(path, e))?;
            rows.collect::<Result<_, _>>()
                .map_err(|e| StoreError::read(path, e))
        }))
    }

    fn incidents(&self, target: &str) -> StoreFuture<'_, Vec<Incident>> {
        let target = target.to_owned();
        Box::pin(self.read(move |conn, path| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{INCIDENT_SELECT} WHERE t.name = ?1 ORDER BY i.opened_ms, i.id"
                ))
                .map_err(|e| StoreError::read(path, e))?;
            let rows = stmt
                .query_map([&target], incident_row)
                .map_err(|e| StoreError::read(path, e))?;
            let mut out = Vec::new();
            for row in rows {
                let (incident, state) = row.map_err(|e| StoreError::read(path, e))?;
                out.push(check_incident(incident, &state, path)?);
            }
            Ok(out)
        }))
    }

    fn last_states(&self) -> StoreFuture<'_, Vec<TargetState>> {
        Box::pin(self.read(|conn, path| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT t.name, s.state, s.since_ms FROM target_state s \
                     JOIN targets t ON t.id = s.target_id ORDER BY t.name",
                )
                .map_err(|e| StoreError::read(path, e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })
                .map_err(|e| StoreError::read(path, e))?;
            let mut states = Vec::new();
            for row in rows {
                let (target, state, since) = row.map_err(|e| StoreError::read(path, e))?;
                states.push(TargetState {
                    state: parse_state(&state, path)?,
                    since: from_ms(since),
                    incident: None,
                    target,
                });
            }
            let mut stmt = conn
                .prepare_cached(&format!("{INCIDENT_SELECT} WHERE i.closed_ms IS NULL"))
                .map_err(|e| StoreError::read(path, e))?;
            let rows = stmt
                .query_map([], incident_row)
                .map_err(|e| StoreError::read(path, e))?;
            for row in rows {
                let (incident, state) = row.map_err(|e| StoreError::read(path, e))?;
                let incident = check_incident(incident, &state, path)?;
                if let Some(s) = states.iter_mut().find(|s| s.target == incident.target) {
                    s.incident = Some(incident);
                }
            }
            Ok(states)
        }))
    }

    fn api_targets(&self) -> StoreFuture<'_, Vec<ApiTarget>> {
        Box::pin(self.read(|conn, path| {
            let read = |e| StoreError::read(path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, definition, created_ms, updated_ms FROM api_targets \
                     ORDER BY name",
                )
                .map_err(read)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(ApiTarget {
                        name: r.get(0)?,
                        definition: r.get(1)?,
                        created: from_ms(r.get(2)?),
                        updated: from_ms(r.get(3)?),
                    })
                })
                .map_err(read)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(read)
        }))
    }

    fn put_api_target(&self, name: &str, definition: &str, at: SystemTime) -> StoreFuture<'_, ()> {
        let params = vec![
            Value::Text(name.to_owned()),
            Value::Text(definition.to_owned()),
            Value::Integer(to_ms(at)),
        ];
        Box::pin(async move {
            self.send(|reply| Command::Execute {
                sql: "INSERT INTO api_targets (name, definition, created_ms, updated_ms) \
                      VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO UPDATE SET \
                      definition = excluded.definition, updated_ms = excluded.updated_ms",
                params,
                reply,
            })
            .await
            .map(drop)
        })
    }

    fn delete_api_target(&self, name: &str) -> StoreFuture<'_, bool> {
        let params = vec![Value::Text(name.to_owned())];
        Box::pin(async move {
            let deleted = self
                .send(|reply| Command::Execute {
                    sql: "DELETE FROM api_targets WHERE name = ?1",
                    params,
                    reply,
                })
                .await?;
            Ok(deleted > 0)
        })
    }

    fn sweep(&self, now: SystemTime) -> StoreFuture<'_, SweepReport> {
        Box::pin(async move {
            let retention = self.config.retention;
            let now_ms = to_ms(now);
            let cutoff = |keep: Duration| now_ms.saturating_sub(to_ms_len(keep));
            let mut report = SweepReport {
                results: self
                    .sweep_table(SweepTable::Results, cutoff(retention.raw))
                    .await?,
                ..SweepReport::default()
            };
            for level in Level::ALL {
                let Some(keep) = retention.of(level) else {
                    continue;
                };
                // A bucket goes once all of it is older than the cutoff: start + step <= cutoff.
                let before = cutoff(keep).saturating_sub(level.step_ms()) + 1;
                let deleted = self.sweep_table(SweepTable::Rollups(level), before).await?;
                report.rollups.push((level, deleted));
            }
            Ok(report)
        })
    }
}

fn to_ms_len(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

const RESULT_SELECT: &str = "SELECT r.at_ms, r.failure_kind, r.message, r.latency_us, r.dns_us, \
     r.connect_us, r.tls_us, r.first_byte_us, r.body_us, r.status, r.query_us \
     FROM results r JOIN targets t ON t.id = r.target_id";

const INCIDENT_SELECT: &str = "SELECT i.id, t.name, i.opened_ms, i.closed_ms, i.state, i.cause \
     FROM incidents i JOIN targets t ON t.id = i.target_id";

/// An incident row, with its state still as stored.
fn incident_row(r: &Row<'_>) -> rusqlite::Result<(Incident, String)> {
    let incident = Incident {
        id: r.get(0)?,
        target: r.get(1)?,
        opened: from_ms(r.get(2)?),
        closed: r.get::<_, Option<i64>>(3)?.map(from_ms),
        state: crate::health::HealthState::Unknown,
        cause: r.get(5)?,
    };
    Ok((incident, r.get(4)?))
}

fn check_incident(mut i: Incident, state: &str, path: &Path) -> Result<Incident, StoreError> {
    i.state = parse_state(state, path)?;
    Ok(i)
}

fn parse_state(name: &str, path: &Path) -> Result<crate::health::HealthState, StoreError> {
    health_state(name).ok_or_else(|| StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("unknown health state {name:?}"),
    })
}

/// A result row, with its failure kind still as stored.
fn result_row(r: &Row<'_>, target: &str) -> rusqlite::Result<(ResultRecord, Option<String>)> {
    let us = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.map(from_us));
    let phases = Phases {
        dns: us(4)?,
        connect: us(5)?,
        tls: us(6)?,
        first_byte: us(7)?,
        body: us(8)?,
        query: us(10)?,
    };
    let record = ResultRecord {
        target: target.to_owned(),
        at: from_ms(r.get(0)?),
        latency: from_us(r.get(3)?),
        failure: None,
        message: r.get(2)?,
        phases,
        status: r.get(9)?,
    };
    Ok((record, r.get(1)?))
}

fn check_kind(
    mut record: ResultRecord,
    kind: Option<String>,
    path: &Path,
) -> Result<ResultRecord, StoreError> {
    if let Some(kind) = kind {
        record.failure = Some(failure_kind(&kind).ok_or_else(|| StoreError::Corrupt {
            path: path.to_owned(),
            what: format!("unknown failure kind {kind:?}"),
        })?);
    }
    Ok(record)
}

/// Hooks for other parts of the crate that keep their own tables in the store (the alert outbox).
impl SqliteStore {
    /// Runs `work` in a write transaction on the writer thread (group-committed with other
    /// transactions queued meanwhile); `Ok` once it is committed. For other parts of the crate
    /// that keep their own tables in the store (the alert outbox).
    pub(crate) async fn transact(
        &self,
        work: writer::TransactionWork,
    ) -> Result<usize, StoreError> {
        self.send(|reply| Command::Transaction { work, reply })
            .await
    }

    /// Runs `read` on the reader connection on the blocking pool.
    pub(crate) async fn read_with<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.read(read).await
    }
}
