//! The store's errors.

use std::path::PathBuf;
use std::sync::Arc;

/// Why the store could not do something. Every variant names the database file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be opened or is not an SQLite database.
    #[error("cannot open history store {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The file was written by a newer version of Rampart.
    #[error(
        "history store {} has schema version {found}, newer than the {supported} this build knows; \
         upgrade Rampart or point it at another file",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// Migrating the schema failed; the file keeps its old version.
    #[error("cannot migrate history store {} from schema version {from}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        from: u32,
        /// What SQLite said.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A write failed and was rolled back: nothing of it is stored.
    #[error("cannot write to history store {}", path.display())]
    Write {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// A read failed.
    #[error("cannot read history store {}", path.display())]
    Read {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: Arc<rusqlite::Error>,
    },
    /// The store holds a value this build cannot read.
    #[error("history store {} holds an unreadable value: {what}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// A backup could not be made; no copy was left behind.
    #[error("cannot back up history store {} to {}: {what}", path.display(), dest.display())]
    Backup {
        /// The database file.
        path: PathBuf,
        /// The copy asked for.
        dest: PathBuf,
        /// What went wrong.
        what: String,
        /// What SQLite said, if it was SQLite.
        #[source]
        source: Option<Arc<rusqlite::Error>>,
    },
    /// The store was closed (or its writer stopped); the write was not accepted.
    #[error("history store {} is closed", path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
    },
}

impl StoreError {
    /// True if the store was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, StoreError::Closed { .. })
    }

    pub(crate) fn open(path: &std::path::Path, e: rusqlite::Error) -> Self {
        StoreError::Open {
            path: path.to_owned(),
            source: Arc::new(e),
        }
    }

    pub(crate) fn read(path: &std::path::Path, e: rusqlite::Error) -> Self {
        StoreError::Read {
            path: path.to_owned(),
            source: Arc::new(e),
        }
    }
}
