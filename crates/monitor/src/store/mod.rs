//! The history store: probe results, state changes, incidents and rollups, kept durably.
//!
//! [`Store`] is the seam: the monitor writes [`Batch`]es of results and state changes and reads
//! history back through it, whatever the engine. [`SqliteStore`] is the embedded default, one
//! SQLite file; a PostgreSQL store for several instances can implement the same trait later.
//!
//! - **Durable when acknowledged**: [`Store::write`] returns `Ok` only once the batch is
//!   committed, so nothing acknowledged is lost when the process is killed (`kill -9`). With
//!   SQLite in WAL mode and `synchronous=NORMAL`, a commit is in the WAL file but not yet
//!   fsynced: it survives the process dying, not the machine losing power or the OS crashing
//!   (then the last commits before the crash may be lost; the database stays consistent).
//! - **Group commit**: writes queued while the writer is busy are committed together in one
//!   transaction; a write arriving while it is idle is committed at once, so durability costs
//!   no waiting at low load.
//! - **Incidents**: a change to a down state opens an incident for the target, a change back to
//!   healthy or degraded closes it; [`Store::last_states`] gives every target's last state and
//!   open incident, so a restarted monitor can continue them.
//! - **Rollups** per target and UTC minute, hour and day (count, failures, latency sum, min, max
//!   and a [`LatencyHistogram`] for percentiles) are updated in the same transaction as the
//!   results they count; [`Resolution::choose`] picks raw results or a level for a query.
//! - **Retention** per level ([`Retention`]: raw 7 days, 1-minute 30 days, 1-hour 365 days, 1-day
//!   forever by default), applied by [`Store::sweep`] in bounded batches.
//!
//! - **Backup**: [`backup`] copies a live store consistently (SQLite's online backup API)
//!   while the daemon writes; `rampart backup` runs it.
//!
//! The guide is the "History store" section of `docs/monitor.md`. See [`SqliteStore`] for an example.

mod backup;
mod config;
mod error;
mod health;
pub(crate) mod record;
mod rollup;
mod schema;
mod sqlite;
pub(crate) mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

pub use backup::{BackupReport, backup};
pub use config::{MAX_POINTS, RAW_RANGE, Resolution, Retention, SqliteConfig};
pub use error::StoreError;
pub use health::StoreHealth;
pub use record::{ApiTarget, Batch, Incident, ResultRecord, StateChangeRecord, TargetState};
pub use rollup::{LatencyHistogram, Level, QUANTILE_RELATIVE_ERROR, Rollup};
pub use schema::SCHEMA_VERSION;
pub use sqlite::{SqliteStore, WriterStats};

/// The future a [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where the monitor keeps its history. Object-safe, so the engine can be chosen at run time
/// (`Box<dyn Store>`).
///
/// Times are wall-clock (`SystemTime`), stored with millisecond precision; ranges are half-open,
/// `from..to`.
pub trait Store: Send + Sync {
    /// Writes `batch` durably: `Ok` means every result and change in it is committed and will be
    /// there after a crash of the process. Dropping the future after the batch was queued does
    /// not withdraw it: it is committed all the same, just not acknowledged.
    fn write(&self, batch: Batch) -> StoreFuture<'_, ()>;

    /// Raw results of `target` in `from..to`, oldest first.
    fn results(
        &self,
        target: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> StoreFuture<'_, Vec<ResultRecord>>;

    /// The last `limit` results of `target`, oldest first: what a restarted monitor needs to
    /// restore a target's score window and its runs of failures or successes.
    fn latest_results(&self, target: &str, limit: usize) -> StoreFuture<'_, Vec<ResultRecord>>;

    /// Rollups of `target` at `level` for every bucket that overlaps `from..to`, oldest first.
    fn rollups(
        &self,
        target: &str,
        level: Level,
        from: SystemTime,
        to: SystemTime,
    ) -> StoreFuture<'_, Vec<Rollup>>;

    /// Every incident of `target`, oldest first.
    fn incidents(&self, target: &str) -> StoreFuture<'_, Vec<Incident>>;

    /// Each target's last recorded state and its open incident, by target name: what a restarted
    /// monitor restores.
    fn last_states(&self) -> StoreFuture<'_, Vec<TargetState>>;

    /// Deletes raw results and rollups older than the store's [`Retention`] allows at `now`, in
    /// bounded batches so writes go on meanwhile. State changes and incidents are kept.
    fn sweep(&self, now: SystemTime) -> StoreFuture<'_, SweepReport>;

    /// Every target created through the API, by name.
    fn api_targets(&self) -> StoreFuture<'_, Vec<ApiTarget>>;

    /// Creates or replaces the API target `name` with `definition` at `at` (a replaced target
    /// keeps its creation time). Durable when it returns `Ok`.
    fn put_api_target(&self, name: &str, definition: &str, at: SystemTime) -> StoreFuture<'_, ()>;

    /// Deletes the API target `name`; `false` if there was none. Its history stays.
    fn delete_api_target(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Runs a trivial query and reports the engine's own health (`GET /api/database/health`).
    /// The default knows nothing of the engine: it answers with an empty snapshot.
    fn health(&self) -> StoreFuture<'_, StoreHealth> {
        Box::pin(async { Ok(StoreHealth::new("unknown")) })
    }
}

/// What a [`Store::sweep`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Raw results deleted.
    pub results: u64,
    /// Rollup rows deleted per level (levels kept forever are absent).
    pub rollups: Vec<(Level, u64)>,
}
