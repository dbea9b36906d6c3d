//! The writer thread: the only connection that writes. Group commit: it takes every write queued,
//! commits them in one transaction, then acknowledges each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::error::StoreError;
use super::record::{Batch, ResultRecord, StateChangeRecord, is_passing, to_ms, to_us};
use super::rollup::{Aggregate, LatencyHistogram, Level};

/// Rows a sweep may delete.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SweepTable {
    /// Raw results.
    Results,
    /// Rollups of one level.
    Rollups(Level),
}

/// Work for the writer.
pub(crate) enum Command {
    /// Commit a batch; reply once it is durable.
    Write(Batch, oneshot::Sender<Result<(), StoreError>>),
    /// Delete at most `limit` rows of `table` older than `before_ms`; reply with how many went.
    Sweep {
        table: SweepTable,
        before_ms: i64,
        limit: usize,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Run one statement with `params` in its own transaction; reply with the rows it changed.
    Execute {
        sql: &'static str,
        params: Vec<rusqlite::types::Value>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Run `work` inside a transaction; reply with what it returned once committed. Transactions
    /// queued together are committed together (group commit); should that fail, each is run
    /// again on its own so one bad one fails alone.
    Transaction {
        work: TransactionWork,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// Work a [`Command::Transaction`] runs. `Fn` rather than `FnOnce`: a group that failed is run
/// again one by one.
pub(crate) type TransactionWork =
    Box<dyn Fn(&Transaction<'_>) -> rusqlite::Result<usize> + Send + 'static>;

/// What the writer has done, shared with the store's handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) results: AtomicU64,
}

/// Runs until every sender is gone, after finishing the work already queued.
pub(crate) fn run(
    mut conn: Connection,
    path: PathBuf,
    mut rx: mpsc::Receiver<Command>,
    max_batch: usize,
    counters: &Counters,
) {
    let mut ids = TargetIds::default();
    let mut rows = RollupRows::default();
    let mut held: Option<Command> = None;
    while let Some(first) = held.take().or_else(|| rx.blocking_recv()) {
        let (batch, reply) = match first {
            Command::Write(batch, reply) => (batch, reply),
            Command::Sweep {
                table,
                before_ms,
                limit,
                reply,
            } => {
                // A sweep may delete rows the cache holds.
                rows.0.clear();
                let r =
                    sweep(&mut conn, table, before_ms, limit).map_err(|e| write_error(&path, e));
                let _ = reply.send(r);
                continue;
            }
            Command::Execute { sql, params, reply } => {
                let r = conn
                    .execute(sql, rusqlite::params_from_iter(params))
                    .map_err(|e| write_error(&path, e));
                let _ = reply.send(r);
                continue;
            }
            Command::Transaction { work, reply } => {
                let mut group = vec![(work, reply)];
                while group.len() < max_batch {
                    match rx.try_recv() {
                        Ok(Command::Transaction { work, reply }) => group.push((work, reply)),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_transactions(&mut conn, &path, group, counters);
                continue;
            }
        };
        // Take whatever else is queued, up to the batch limit: one commit for all of it. When
        // idle there is nothing more and the single write commits at once.
        let mut size = batch.results.len();
        let mut batches = vec![batch];
        let mut replies = vec![reply];
        while size < max_batch {
            match rx.try_recv() {
                Ok(Command::Write(batch, reply)) => {
                    size += batch.results.len();
                    batches.push(batch);
                    replies.push(reply);
                }
                Ok(sweep) => {
                    held = Some(sweep);
                    break;
                }
                Err(_) => break,
            }
        }
        let outcome = commit(&mut conn, &mut ids, &mut rows, &batches);
        if outcome.is_err() {
            // The rollback may have undone targets inserted in it.
            ids.0.clear();
            rows.0.clear();
        }
        if outcome.is_ok() {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            counters.results.fetch_add(size as u64, Ordering::Relaxed);
        }
        let outcome = outcome.map_err(|e| write_error(&path, e));
        for reply in replies {
            // A waiter that went away still had its write committed (or not) like the others.
            let _ = reply.send(outcome.clone());
        }
    }
}

/// Commits every transaction of `group` together; if that fails, each on its own.
fn run_transactions(
    conn: &mut Connection,
    path: &std::path::Path,
    group: Vec<(TransactionWork, oneshot::Sender<Result<usize, StoreError>>)>,
    counters: &Counters,
) {
    let together = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outs = Vec::with_capacity(group.len());
        for (work, _) in &group {
            outs.push(work(&tx)?);
        }
        tx.commit()?;
        Ok::<_, rusqlite::Error>(outs)
    })();
    match together {
        Ok(outs) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            for ((_, reply), out) in group.into_iter().zip(outs) {
                let _ = reply.send(Ok(out));
            }
        }
        Err(_) if group.len() > 1 => {
            for (work, reply) in group {
                let one = (|| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let out = work(&tx)?;
                    tx.commit()?;
                    Ok::<_, rusqlite::Error>(out)
                })();
                if one.is_ok() {
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    counters.writes.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(one.map_err(|e| write_error(path, e)));
            }
        }
        Err(e) => {
            let e = write_error(path, e);
            for (_, reply) in group {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn write_error(path: &std::path::Path, e: rusqlite::Error) -> StoreError {
    StoreError::Write {
        path: path.to_owned(),
        source: Arc::new(e),
    }
}

/// Target names to ids, remembered across transactions.
#[derive(Default)]
struct TargetIds(HashMap<String, i64>);

impl TargetIds {
    fn get(&mut self, tx: &Transaction<'_>, name: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.0.get(name) {
            return Ok(id);
        }
        let found: Option<i64> = tx
            .prepare_cached("SELECT id FROM targets WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO targets (name) VALUES (?1)")?
                    .execute([name])?;
                tx.last_insert_rowid()
            }
        };
        self.0.insert(name.to_owned(), id);
        Ok(id)
    }
}

/// The rollup row each target last wrote at each level, as committed: the next commit usually adds
/// to the same bucket and then need not read it back.
#[derive(Default)]
struct RollupRows(HashMap<(Level, i64), (i64, Aggregate)>);

/// Writes every batch, in order, in one transaction with the rollups they change.
fn commit(
    conn: &mut Connection,
    ids: &mut TargetIds,
    rows: &mut RollupRows,
    batches: &[Batch],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut rollups: HashMap<(Level, i64, i64), Aggregate> = HashMap::new();
    for batch in batches {
        for result in &batch.results {
            let target = ids.get(&tx, &result.target)?;
            insert_result(&tx, target, result)?;
            let at = to_ms(result.at);
            for level in Level::ALL {
                rollups
                    .entry((level, target, level.bucket_start(at)))
                    .or_default()
                    .add(result.latency, !result.is_success());
            }
        }
        for change in &batch.changes {
            let target = ids.get(&tx, &change.target)?;
            record_change(&tx, target, change)?;
        }
    }
    let mut written = Vec::with_capacity(rollups.len());
    for ((level, target, start), add) in rollups {
        let mut total = match rows.0.get(&(level, target)) {
            Some((cached, row)) if *cached == start => row.clone(),
            _ => read_rollup(&tx, level, target, start)?.unwrap_or_default(),
        };
        total.merge(&add);
        write_rollup(&tx, level, target, start, &total)?;
        written.push(((level, target), (start, total)));
    }
    tx.commit()?;
    rows.0.extend(written);
    Ok(())
}

fn insert_result(tx: &Transaction<'_>, target: i64, r: &ResultRecord) -> rusqlite::Result<()> {
    let us = |d: Option<std::time::Duration>| d.map(to_us);
    tx.prepare_cached(
        "INSERT INTO results (target_id, at_ms, failure_kind, message, latency_us, dns_us, \
         connect_us, tls_us, first_byte_us, body_us, status, query_us) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        target,
        to_ms(r.at),
        r.failure.map(|k| k.as_str()),
        r.message,
        to_us(r.latency),
        us(r.phases.dns),
        us(r.phases.connect),
        us(r.phases.tls),
        us(r.phases.first_byte),
        us(r.phases.body),
        r.status,
        us(r.phases.query),
    ])?;
    Ok(())
}

/// Stores the change, the target's last state, and opens or closes its incident.
fn record_change(tx: &Transaction<'_>, target: i64, c: &StateChangeRecord) -> rusqlite::Result<()> {
    let at = to_ms(c.at);
    tx.prepare_cached(
        "INSERT INTO state_changes (target_id, at_ms, from_state, to_state, cause) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![target, at, c.from.as_str(), c.to.as_str(), c.cause])?;
    tx.prepare_cached(
        "INSERT INTO target_state (target_id, state, since_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (target_id) DO UPDATE SET state = excluded.state, since_ms = excluded.since_ms",
    )?
    .execute(params![target, c.to.as_str(), at])?;
    if c.to.is_down() {
        // The partial unique index `incidents_open` keeps one open incident per target: a
        // second down state (unhealthy, then unreachable) continues the open one.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO incidents (target_id, opened_ms, state, cause) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![target, at, c.to.as_str(), c.cause])?;
    } else if is_passing(c.to) {
        tx.prepare_cached(
            "UPDATE incidents SET closed_ms = ?2 WHERE target_id = ?1 AND closed_ms IS NULL",
        )?
        .execute(params![target, at])?;
    }
    Ok(())
}

/// The stored rollup row, if any.
fn read_rollup(
    tx: &Transaction<'_>,
    level: Level,
    target: i64,
    start: i64,
) -> rusqlite::Result<Option<Aggregate>> {
    tx.prepare_cached(
        "SELECT count, failures, latency_sum_us, latency_min_us, latency_max_us, histogram \
         FROM rollups WHERE level = ?1 AND target_id = ?2 AND start_ms = ?3",
    )?
    .query_row(params![level.code(), target, start], |r| aggregate_at(r, 0))
    .optional()
}

/// The rollup columns `count, failures, latency_sum_us, latency_min_us, latency_max_us,
/// histogram` of a row, starting at column `first`.
pub(crate) fn aggregate_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Aggregate> {
    let blob: Vec<u8> = r.get(first + 5)?;
    Ok(Aggregate {
        count: r.get(first)?,
        failures: r.get(first + 1)?,
        sum_us: r.get(first + 2)?,
        min_us: r.get(first + 3)?,
        max_us: r.get(first + 4)?,
        // A malformed blob loses its percentiles, never the row's counts.
        histogram: LatencyHistogram::decode(&blob).unwrap_or_default(),
    })
}

/// Stores `total` as the rollup row, creating it if needed.
fn write_rollup(
    tx: &Transaction<'_>,
    level: Level,
    target: i64,
    start: i64,
    total: &Aggregate,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO rollups (level, target_id, start_ms, count, failures, latency_sum_us, \
         latency_min_us, latency_max_us, histogram) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (level, target_id, start_ms) DO UPDATE SET count = excluded.count, \
         failures = excluded.failures, latency_sum_us = excluded.latency_sum_us, \
         latency_min_us = excluded.latency_min_us, latency_max_us = excluded.latency_max_us, \
         histogram = excluded.histogram",
    )?
    .execute(params![
        level.code(),
        target,
        start,
        total.count,
        total.failures,
        total.sum_us,
        total.min_us,
        total.max_us,
        total.histogram.encode(),
    ])?;
    Ok(())
}

/// Deletes at most `limit` rows of `table` older than `before_ms` in one transaction.
fn sweep(
    conn: &mut Connection,
    table: SweepTable,
    before_ms: i64,
    limit: usize,
) -> rusqlite::Result<usize> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = match table {
        SweepTable::Results => tx.execute(
            "DELETE FROM results WHERE id IN \
             (SELECT id FROM results WHERE at_ms < ?1 LIMIT ?2)",
            params![before_ms, limit],
        )?,
        SweepTable::Rollups(level) => tx.execute(
            "DELETE FROM rollups WHERE id IN \
             (SELECT id FROM rollups WHERE level = ?1 AND start_ms < ?2 LIMIT ?3)",
            params![level.code(), before_ms, limit],
        )?,
    };
    tx.commit()?;
    Ok(deleted)
}
