//! [`StoreHealth`]: what `GET /api/database/health` reports about the history store.

use std::path::PathBuf;
use std::time::Duration;

/// A snapshot of a store's own health: whether a trivial query answers, how long it took, and
/// the engine's bookkeeping. Fields an engine cannot report are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// The engine (`"sqlite"`).
    pub engine: &'static str,
    /// The database file, for embedded engines.
    pub path: Option<PathBuf>,
    /// How long the trivial query took.
    #[serde(skip)]
    pub latency: Duration,
    /// The schema version the database is at.
    pub schema_version: Option<u32>,
    /// Pages in the database file.
    pub page_count: Option<u64>,
    /// Bytes per page.
    pub page_size: Option<u64>,
    /// Bytes in the write-ahead log file now.
    pub wal_bytes: Option<u64>,
    /// Writes queued and not yet committed.
    pub pending_writes: Option<u64>,
    /// Transactions committed since the store was opened.
    pub commits: Option<u64>,
}

impl StoreHealth {
    /// An empty snapshot of `engine`.
    pub fn new(engine: &'static str) -> Self {
        StoreHealth {
            engine,
            ..StoreHealth::default()
        }
    }
}
