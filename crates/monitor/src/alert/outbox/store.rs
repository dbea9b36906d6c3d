//! The outbox's storage: [`OutboxStore`], implemented by the history store ([`SqliteStore`],
//! table `outbox`) and in memory ([`MemoryOutboxStore`], for tests and
//! embedding without a file).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{Connection, Row, Transaction, params, params_from_iter};
use serde::Serialize;

use crate::alert::model::Notification;
use crate::store::{SqliteStore, StoreError, StoreFuture};

/// The most entries one [`OutboxStore::list`] returns.
pub const MAX_LIST: usize = 1000;

/// Where an outbox entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Waiting to be delivered (or between attempts).
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Given up: the receiver rejected it, or it grew older than `max_age`.
    Dead,
}

impl EntryState {
    /// `"pending"`, `"delivered"` or `"dead"`, as stored and as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Delivered => "delivered",
            EntryState::Dead => "dead",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(EntryState::Pending),
            "delivered" => Some(EntryState::Delivered),
            "dead" => Some(EntryState::Dead),
            _ => None,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification in the outbox, with its delivery state. Not `non_exhaustive`, so that stores
/// outside this crate can make one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxEntry {
    /// Its place in the outbox: each receiver's notifications are delivered in `seq` order.
    pub seq: i64,
    /// The notification's id, its idempotency key.
    pub id: String,
    /// The receiver it is for.
    pub receiver: String,
    /// The alert group it reports on.
    pub group_key: String,
    /// Pending, delivered or dead.
    pub state: EntryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was written to the outbox (or retried from the dead letters): `max_age` counts
    /// from here.
    #[serde(serialize_with = "ser_time")]
    pub created: SystemTime,
    /// When the next attempt may be made (pending entries).
    #[serde(serialize_with = "ser_time")]
    pub next_attempt: SystemTime,
    /// What went wrong last, with no secret in it.
    pub last_error: Option<String>,
    /// When it was delivered.
    #[serde(serialize_with = "ser_opt_time")]
    pub delivered: Option<SystemTime>,
    /// When it was dead-lettered.
    #[serde(serialize_with = "ser_opt_time")]
    pub dead: Option<SystemTime>,
    /// The notification as JSON.
    #[serde(skip)]
    pub payload: String,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    chrono::DateTime::<chrono::Utc>::from(*t).serialize(s)
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    t.map(chrono::DateTime::<chrono::Utc>::from).serialize(s)
}

impl OutboxEntry {
    /// The notification it holds.
    pub fn notification(&self) -> Result<Notification, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// Which entries [`OutboxStore::list`] returns: every given condition holds; oldest `seq` first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxFilter {
    /// Only entries in this state.
    pub state: Option<EntryState>,
    /// Only entries for this receiver.
    pub receiver: Option<String>,
    /// Only entries after this `seq` (for paging).
    pub after_seq: Option<i64>,
    /// At most this many (0 or above [`MAX_LIST`] means [`MAX_LIST`]).
    pub limit: usize,
}

impl OutboxFilter {
    /// Every entry, up to [`MAX_LIST`].
    pub fn all() -> Self {
        OutboxFilter::default()
    }

    /// Only entries in `state`.
    pub fn state(mut self, state: EntryState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only entries for `receiver`.
    pub fn receiver(mut self, receiver: impl Into<String>) -> Self {
        self.receiver = Some(receiver.into());
        self
    }

    /// Only entries after `seq`.
    pub fn after_seq(mut self, seq: i64) -> Self {
        self.after_seq = Some(seq);
        self
    }

    /// At most `limit` entries.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The most entries to return: `limit`, or [`MAX_LIST`] when it is 0 or above.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            MAX_LIST
        } else {
            self.limit.min(MAX_LIST)
        }
    }

    /// True if `e` passes every condition (the limit aside).
    pub fn matches(&self, e: &OutboxEntry) -> bool {
        self.state.is_none_or(|s| s == e.state)
            && self.receiver.as_ref().is_none_or(|r| *r == e.receiver)
            && self.after_seq.is_none_or(|s| e.seq > s)
    }
}

/// Where the outbox keeps its entries. Object-safe (`Arc<dyn OutboxStore>`); every write is
/// durable when it returns `Ok` (for a durable store).
pub trait OutboxStore: Send + Sync {
    /// Writes `notifications` as pending entries at the end of their receivers' queues, in the
    /// order given, in one transaction, created and due at `now`. An id already in the outbox
    /// (in any state) is left as it is: enqueueing is idempotent. Returns, for each notification,
    /// whether it was new.
    fn enqueue(
        &self,
        notifications: Vec<Notification>,
        now: SystemTime,
    ) -> StoreFuture<'_, Vec<bool>>;

    /// Up to `limit` pending entries of `receiver` with `seq` above `after_seq`, in `seq` order.
    fn pending(
        &self,
        receiver: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxEntry>>;

    /// Records a failed attempt of the pending entry `id`: its attempt count, when the next may
    /// be made, and the error.
    fn record_attempt(
        &self,
        id: &str,
        attempts: u32,
        next_attempt: SystemTime,
        error: &str,
    ) -> StoreFuture<'_, ()>;

    /// Marks the entry `id` delivered at `at` after `attempts` attempts.
    fn mark_delivered(&self, id: &str, attempts: u32, at: SystemTime) -> StoreFuture<'_, ()>;

    /// Dead-letters the entry `id` at `at` after `attempts` attempts, with the reason.
    fn dead_letter(
        &self,
        id: &str,
        attempts: u32,
        at: SystemTime,
        error: &str,
    ) -> StoreFuture<'_, ()>;

    /// The entry `id`, if any.
    fn get(&self, id: &str) -> StoreFuture<'_, Option<OutboxEntry>>;

    /// Entries that pass `filter`, oldest `seq` first, at most [`MAX_LIST`].
    fn list(&self, filter: OutboxFilter) -> StoreFuture<'_, Vec<OutboxEntry>>;

    /// Puts the dead letter `id` back to pending at the end of its receiver's queue (a new `seq`,
    /// so it may now arrive after notifications made later than it), with no attempts, created
    /// and due at `now` (so `max_age` counts afresh); its last error is kept. `None` if there is
    /// no dead letter with that id.
    fn retry(&self, id: &str, now: SystemTime) -> StoreFuture<'_, Option<OutboxEntry>>;

    /// Deletes up to `limit` delivered entries delivered before `before`; returns how many.
    fn prune(&self, before: SystemTime, limit: usize) -> StoreFuture<'_, u64>;

    /// Pending entries per receiver.
    fn depths(&self) -> StoreFuture<'_, Vec<(String, u64)>>;
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A notification ready to be written.
struct Row0 {
    id: String,
    receiver: String,
    group_key: String,
    payload: String,
}

fn rows_of(notifications: Vec<Notification>) -> Result<Vec<Row0>, serde_json::Error> {
    notifications
        .into_iter()
        .map(|n| {
            Ok(Row0 {
                payload: serde_json::to_string(&n)?,
                id: n.id,
                receiver: n.receiver,
                group_key: n.group_key,
            })
        })
        .collect()
}

const SELECT: &str = "SELECT seq, id, receiver, group_key, state, attempts, created_ms, \
     next_attempt_ms, last_error, delivered_ms, dead_ms, payload FROM outbox";

fn entry_row(r: &Row<'_>) -> rusqlite::Result<(OutboxEntry, String)> {
    let state: String = r.get(4)?;
    Ok((
        OutboxEntry {
            seq: r.get(0)?,
            id: r.get(1)?,
            receiver: r.get(2)?,
            group_key: r.get(3)?,
            state: EntryState::Pending,
            attempts: r.get(5)?,
            created: from_ms(r.get(6)?),
            next_attempt: from_ms(r.get(7)?),
            last_error: r.get(8)?,
            delivered: r.get::<_, Option<i64>>(9)?.map(from_ms),
            dead: r.get::<_, Option<i64>>(10)?.map(from_ms),
            payload: r.get(11)?,
        },
        state,
    ))
}

fn query(
    conn: &Connection,
    path: &Path,
    sql: &str,
    args: Vec<Value>,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let read = |e| StoreError::read(path, e);
    let mut stmt = conn.prepare_cached(sql).map_err(read)?;
    let rows = stmt
        .query_map(params_from_iter(args), entry_row)
        .map_err(read)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut entry, state) = row.map_err(read)?;
        entry.state = EntryState::parse(&state).ok_or_else(|| StoreError::Corrupt {
            path: path.to_owned(),
            what: format!("unknown outbox state {state:?}"),
        })?;
        out.push(entry);
    }
    Ok(out)
}

fn limit_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Runs one statement in the writer's group-committed transactions.
async fn execute(
    store: &SqliteStore,
    sql: &'static str,
    args: Vec<Value>,
) -> Result<usize, StoreError> {
    store
        .transact(Box::new(move |tx: &Transaction<'_>| {
            tx.prepare_cached(sql)?
                .execute(params_from_iter(args.iter()))
        }))
        .await
}

impl OutboxStore for SqliteStore {
    fn enqueue(
        &self,
        notifications: Vec<Notification>,
        now: SystemTime,
    ) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(async move {
            if notifications.is_empty() {
                return Ok(Vec::new());
            }
            let rows = rows_of(notifications).map_err(|e| StoreError::Corrupt {
                path: self.path().to_owned(),
                what: format!("notification not serialisable: {e}"),
            })?;
            let now = to_ms(now);
            let fresh = Arc::new(Mutex::new(Vec::with_capacity(rows.len())));
            let out = Arc::clone(&fresh);
            self.transact(Box::new(move |tx: &Transaction<'_>| {
                let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
                // Run again after a failed group commit: start over.
                out.clear();
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO outbox (seq, id, receiver, group_key, payload, state, attempts, \
                     created_ms, next_attempt_ms) \
                     VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM outbox), ?1, ?2, ?3, ?4, \
                     'pending', 0, ?5, ?5) ON CONFLICT (id) DO NOTHING",
                )?;
                for r in &rows {
                    let n = stmt.execute(params![r.id, r.receiver, r.group_key, r.payload, now])?;
                    out.push(n > 0);
                }
                Ok(out.len())
            }))
            .await?;
            let fresh = std::mem::take(&mut *fresh.lock().unwrap_or_else(PoisonError::into_inner));
            Ok(fresh)
        })
    }

    fn pending(
        &self,
        receiver: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxEntry>> {
        let args = vec![
            Value::Text(receiver.to_owned()),
            Value::Integer(after_seq),
            Value::Integer(limit_i64(limit)),
        ];
        Box::pin(self.read_with(move |conn, path| {
            let sql = format!(
                "{SELECT} WHERE receiver = ?1 AND state = 'pending' AND seq > ?2 ORDER BY seq LIMIT ?3"
            );
            query(conn, path, &sql, args)
        }))
    }

    fn record_attempt(
        &self,
        id: &str,
        attempts: u32,
        next_attempt: SystemTime,
        error: &str,
    ) -> StoreFuture<'_, ()> {
        let args = vec![
            Value::Text(id.to_owned()),
            Value::Integer(attempts.into()),
            Value::Integer(to_ms(next_attempt)),
            Value::Text(error.to_owned()),
        ];
        Box::pin(async move {
            execute(
                self,
                "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 \
                 WHERE id = ?1 AND state = 'pending'",
                args,
            )
            .await
            .map(drop)
        })
    }

    fn mark_delivered(&self, id: &str, attempts: u32, at: SystemTime) -> StoreFuture<'_, ()> {
        let args = vec![
            Value::Text(id.to_owned()),
            Value::Integer(attempts.into()),
            Value::Integer(to_ms(at)),
        ];
        Box::pin(async move {
            execute(
                self,
                "UPDATE outbox SET state = 'delivered', attempts = ?2, delivered_ms = ?3 \
                 WHERE id = ?1 AND state = 'pending'",
                args,
            )
            .await
            .map(drop)
        })
    }

    fn dead_letter(
        &self,
        id: &str,
        attempts: u32,
        at: SystemTime,
        error: &str,
    ) -> StoreFuture<'_, ()> {
        let args = vec![
            Value::Text(id.to_owned()),
            Value::Integer(attempts.into()),
            Value::Integer(to_ms(at)),
            Value::Text(error.to_owned()),
        ];
        Box::pin(async move {
            execute(
                self,
                "UPDATE outbox SET state = 'dead', attempts = ?2, dead_ms = ?3, last_error = ?4 \
                 WHERE id = ?1 AND state = 'pending'",
                args,
            )
            .await
            .map(drop)
        })
    }

    fn get(&self, id: &str) -> StoreFuture<'_, Option<OutboxEntry>> {
        let args = vec![Value::Text(id.to_owned())];
        Box::pin(self.read_with(move |conn, path| {
            let sql = format!("{SELECT} WHERE id = ?1");
            Ok(query(conn, path, &sql, args)?.into_iter().next())
        }))
    }

    fn list(&self, filter: OutboxFilter) -> StoreFuture<'_, Vec<OutboxEntry>> {
        Box::pin(self.read_with(move |conn, path| {
            let mut sql = format!("{SELECT} WHERE 1 = 1");
            let mut args = Vec::new();
            if let Some(state) = filter.state {
                args.push(Value::Text(state.as_str().to_owned()));
                sql.push_str(&format!(" AND state = ?{}", args.len()));
            }
            if let Some(receiver) = &filter.receiver {
                args.push(Value::Text(receiver.clone()));
                sql.push_str(&format!(" AND receiver = ?{}", args.len()));
            }
            if let Some(after) = filter.after_seq {
                args.push(Value::Integer(after));
                sql.push_str(&format!(" AND seq > ?{}", args.len()));
            }
            args.push(Value::Integer(limit_i64(filter.effective_limit())));
            sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", args.len()));
            query(conn, path, &sql, args)
        }))
    }

    fn retry(&self, id: &str, now: SystemTime) -> StoreFuture<'_, Option<OutboxEntry>> {
        let args = vec![Value::Text(id.to_owned()), Value::Integer(to_ms(now))];
        let id = id.to_owned();
        Box::pin(async move {
            let changed = execute(
                self,
                "UPDATE outbox SET state = 'pending', attempts = 0, created_ms = ?2, \
                 next_attempt_ms = ?2, dead_ms = NULL, \
                 seq = (SELECT coalesce(max(seq), 0) + 1 FROM outbox) \
                 WHERE id = ?1 AND state = 'dead'",
                args,
            )
            .await?;
            if changed == 0 {
                return Ok(None);
            }
            OutboxStore::get(self, &id).await
        })
    }

    fn prune(&self, before: SystemTime, limit: usize) -> StoreFuture<'_, u64> {
        let args = vec![
            Value::Integer(to_ms(before)),
            Value::Integer(limit_i64(limit.max(1))),
        ];
        Box::pin(async move {
            let n = execute(
                self,
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox \
                 WHERE state = 'delivered' AND delivered_ms < ?1 LIMIT ?2)",
                args,
            )
            .await?;
            Ok(n as u64)
        })
    }

    fn depths(&self) -> StoreFuture<'_, Vec<(String, u64)>> {
        Box::pin(self.read_with(|conn, path| {
            let read = |e| StoreError::read(path, e);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT receiver, count(*) FROM outbox WHERE state = 'pending' \
                     GROUP BY receiver ORDER BY receiver",
                )
                .map_err(read)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(read)?;
            let mut out = Vec::new();
            for row in rows {
                let (receiver, n) = row.map_err(read)?;
                out.push((receiver, n.max(0).unsigned_abs()));
            }
            Ok(out)
        }))
    }
}

/// An [`OutboxStore`] in memory: nothing survives the process. For tests (it never touches the
/// blocking pool, so it runs on paused time) and for running without a history file.
#[derive(Debug, Default, Clone)]
pub struct MemoryOutboxStore {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    by_seq: BTreeMap<i64, OutboxEntry>,
    seq_of: HashMap<String, i64>,
    last_seq: i64,
}

impl MemoryOutboxStore {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Memory {
    fn pending_mut(&mut self, id: &str) -> Option<&mut OutboxEntry> {
        let seq = *self.seq_of.get(id)?;
        self.by_seq
            .get_mut(&seq)
            .filter(|e| e.state == EntryState::Pending)
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl OutboxStore for MemoryOutboxStore {
    fn enqueue(
        &self,
        notifications: Vec<Notification>,
        now: SystemTime,
    ) -> StoreFuture<'_, Vec<bool>> {
        let rows = match rows_of(notifications) {
            Ok(rows) => rows,
            Err(e) => {
                return Box::pin(std::future::ready(Err(StoreError::Corrupt {
                    path: "memory".into(),
                    what: format!("notification not serialisable: {e}"),
                })));
            }
        };
        ready(self.with(|m| {
            rows.into_iter()
                .map(|r| {
                    if m.seq_of.contains_key(&r.id) {
                        return false;
                    }
                    m.last_seq += 1;
                    let seq = m.last_seq;
                    m.seq_of.insert(r.id.clone(), seq);
                    m.by_seq.insert(
                        seq,
                        OutboxEntry {
                            seq,
                            id: r.id,
                            receiver: r.receiver,
                            group_key: r.group_key,
                            state: EntryState::Pending,
                            attempts: 0,
                            created: now,
                            next_attempt: now,
                            last_error: None,
                            delivered: None,
                            dead: None,
                            payload: r.payload,
                        },
                    );
                    true
                })
                .collect()
        }))
    }

    fn pending(
        &self,
        receiver: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<OutboxEntry>> {
        ready(self.with(|m| {
            m.by_seq
                .range(after_seq.saturating_add(1)..)
                .map(|(_, e)| e)
                .filter(|e| e.receiver == receiver && e.state == EntryState::Pending)
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    fn record_attempt(
        &self,
        id: &str,
        attempts: u32,
        next_attempt: SystemTime,
        error: &str,
    ) -> StoreFuture<'_, ()> {
        self.with(|m| {
            if let Some(e) = m.pending_mut(id) {
                e.attempts = attempts;
                e.next_attempt = next_attempt;
                e.last_error = Some(error.to_owned());
            }
        });
        ready(())
    }

    fn mark_delivered(&self, id: &str, attempts: u32, at: SystemTime) -> StoreFuture<'_, ()> {
        self.with(|m| {
            if let Some(e) = m.pending_mut(id) {
                e.attempts = attempts;
                e.state = EntryState::Delivered;
                e.delivered = Some(at);
            }
        });
        ready(())
    }

    fn dead_letter(
        &self,
        id: &str,
        attempts: u32,
        at: SystemTime,
        error: &str,
    ) -> StoreFuture<'_, ()> {
        self.with(|m| {
            if let Some(e) = m.pending_mut(id) {
                e.attempts = attempts;
                e.state = EntryState::Dead;
                e.dead = Some(at);
                e.last_error = Some(error.to_owned());
            }
        });
        ready(())
    }

    fn get(&self, id: &str) -> StoreFuture<'_, Option<OutboxEntry>> {
        ready(self.with(|m| m.seq_of.get(id).and_then(|seq| m.by_seq.get(seq)).cloned()))
    }

    fn list(&self, filter: OutboxFilter) -> StoreFuture<'_, Vec<OutboxEntry>> {
        ready(self.with(|m| {
            m.by_seq
                .values()
                .filter(|e| filter.matches(e))
                .take(filter.effective_limit())
                .cloned()
                .collect()
        }))
    }

    fn retry(&self, id: &str, now: SystemTime) -> StoreFuture<'_, Option<OutboxEntry>> {
        ready(self.with(|m| {
            let seq = *m.seq_of.get(id)?;
            if m.by_seq.get(&seq)?.state != EntryState::Dead {
                return None;
            }
            let mut e = m.by_seq.remove(&seq)?;
            m.last_seq += 1;
            e.seq = m.last_seq;
            e.state = EntryState::Pending;
            e.attempts = 0;
            e.created = now;
            e.next_attempt = now;
            e.dead = None;
            m.seq_of.insert(e.id.clone(), e.seq);
            m.by_seq.insert(e.seq, e.clone());
            Some(e)
        }))
    }

    fn prune(&self, before: SystemTime, limit: usize) -> StoreFuture<'_, u64> {
        ready(self.with(|m| {
            let old: Vec<i64> = m
                .by_seq
                .values()
                .filter(|e| {
                    e.state == EntryState::Delivered && e.delivered.is_some_and(|d| d < before)
                })
                .take(limit.max(1))
                .map(|e| e.seq)
                .collect();
            for seq in &old {
                if let Some(e) = m.by_seq.remove(seq) {
                    m.seq_of.remove(&e.id);
                }
            }
            old.len() as u64
        }))
    }

    fn depths(&self) -> StoreFuture<'_, Vec<(String, u64)>> {
        ready(self.with(|m| {
            let mut depths: BTreeMap<String, u64> = BTreeMap::new();
            for e in m.by_seq.values().filter(|e| e.state == EntryState::Pending) {
                *depths.entry(e.receiver.clone()).or_default() += 1;
            }
            depths.into_iter().collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteConfig;

    #[tokio::test]
    async fn a_failing_transaction_fails_alone_in_a_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
            .await
            .unwrap();
        let good = |i: usize| {
            let ns = vec![crate::alert::model::Notification {
                id: format!("n{i}"),
                receiver: "ops".into(),
                group_key: "{}".into(),
                group_labels: Default::default(),
                status: crate::alert::model::AlertStatus::Firing,
                alerts: Vec::new(),
                created_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                tier: 0,
                external_url: None,
            }];
            OutboxStore::enqueue(&store, ns, SystemTime::now())
        };
        let bad = store.transact(Box::new(|tx: &Transaction<'_>| {
            tx.execute("INSERT INTO no_such_table VALUES (1)", [])
        }));
        // Queued together, so usually committed as one group: the bad one must not take the
        // good ones down with it.
        let (a, b, c, d) = tokio::join!(good(0), bad, good(1), good(2));
        assert_eq!(a.unwrap(), [true]);
        assert!(b.is_err());
        assert_eq!(c.unwrap(), [true]);
        assert_eq!(d.unwrap(), [true]);
        let ids: Vec<String> = store
            .pending("ops", 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["n0", "n1", "n2"]);
        store.close().await;
    }
}
