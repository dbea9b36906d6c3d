//! A consistent copy of a live SQLite store, with SQLite's online backup API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::schema::SCHEMA_VERSION;

/// How long a busy store is waited for: `BUSY_TRIES` × `BUSY_PAUSE`.
const BUSY_TRIES: u32 = 200;
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// What [`backup`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The copy.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its schema version.
    pub schema_version: u32,
}

/// Copies the history store at `source` to a new file `dest`, consistently, while a daemon may
/// be writing to it.
///
/// The copy is taken with SQLite's online backup API in one step, inside one read transaction:
/// it holds every transaction committed before that step began and nothing of later ones, and
/// in WAL mode it does not block the writer (which goes on while the pages are copied). The
/// copy is written to `dest` with a `.partial` suffix, switched to a rollback journal (one
/// self-contained file), checked with `PRAGMA integrity_check`, synced, and only then renamed
/// to `dest`: a failed backup leaves no `dest` behind. An existing `dest` is refused.
///
/// ```no_run
/// # async fn run() -> Result<(), rampart_monitor::store::StoreError> {
/// let report = rampart_monitor::store::backup("rampart.db", "rampart-backup.db").await?;
/// println!("{} bytes in {}", report.bytes, report.path.display());
/// # Ok(())
/// # }
/// ```
pub async fn backup(
    source: impl Into<PathBuf>,
    dest: impl Into<PathBuf>,
) -> Result<BackupReport, StoreError> {
    let (source, dest) = (source.into(), dest.into());
    let failed = {
        let (source, dest) = (source.clone(), dest.clone());
        move |what: &str| failure(&source, &dest, what, None)
    };
    tokio::task::spawn_blocking(move || copy(&source, &dest))
        .await
        .map_err(|_| failed("the backup task died"))?
}

fn failure(source: &Path, dest: &Path, what: &str, cause: Option<rusqlite::Error>) -> StoreError {
    StoreError::Backup {
        path: source.to_owned(),
        dest: dest.to_owned(),
        what: what.to_owned(),
        source: cause.map(Arc::new),
    }
}

fn copy(source: &Path, dest: &Path) -> Result<BackupReport, StoreError> {
    let fail = |what: &str, e: rusqlite::Error| failure(source, dest, what, Some(e));
    if dest.exists() {
        return Err(failure(source, dest, "the destination exists", None));
    }
    // Read-write without create: a missing file is an error, not an empty store; a read-only
    // connection could not read a WAL database whose shared-memory file is missing.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src =
        Connection::open_with_flags(source, flags).map_err(|e| StoreError::open(source, e))?;
    src.busy_timeout(Duration::from_secs(5))
        .map_err(|e| StoreError::open(source, e))?;
    let version: u32 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::read(source, e))?;
    if version == 0 || version > SCHEMA_VERSION {
        let what = format!("not a history store this build knows (schema version {version})");
        return Err(failure(source, dest, &what, None));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let result = (|| {
        let mut dst = Connection::open(&partial).map_err(|e| fail("cannot create the copy", e))?;
        {
            let backup = Backup::new(&src, &mut dst).map_err(|e| fail("cannot start", e))?;
            // -1: every page in one step, so the copy is one snapshot and never restarts
            // because the writer changed a page copied already. Busy or locked (the file
            // locked by another process's checkpoint, say) is retried for a while.
            let mut tries = 0;
            loop {
                match backup.step(-1).map_err(|e| fail("copying failed", e))? {
                    StepResult::Done => break,
                    _ if tries < BUSY_TRIES => {
                        tries += 1;
                        std::thread::sleep(BUSY_PAUSE);
                    }
                    _ => return Err(failure(source, dest, "the store stayed busy", None)),
                }
            }
        }
        let _: String = dst
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .map_err(|e| fail("cannot finish the copy", e))?;
        let check: String = dst
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| fail("cannot check the copy", e))?;
        if check != "ok" {
            let what = format!("the copy fails its integrity check: {check}");
            return Err(failure(source, dest, &what, None));
        }
        dst.close()
            .map_err(|(_, e)| fail("cannot close the copy", e))?;
        let io =
            |what: &str, e: std::io::Error| failure(source, dest, &format!("{what}: {e}"), None);
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot sync the copy", e))?;
        std::fs::rename(&partial, dest).map_err(|e| io("cannot rename the copy", e))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself made durable; a directory that cannot be synced is no error.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        let bytes = std::fs::metadata(dest)
            .map_err(|e| io("cannot read the copy's size", e))?
            .len();
        Ok(BackupReport {
            path: dest.to_owned(),
            bytes,
            schema_version: version,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
