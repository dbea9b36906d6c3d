//! `rampart backup`: the store named by `--config` or `--store`, copied with its rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rampart_monitor::probe::ProbeResult;
use rampart_monitor::store::{Batch, ResultRecord, SqliteConfig, SqliteStore, Store};

fn rampart(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn backup_copies_the_store_named_by_the_config_or_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The store stays open (as a running daemon's would) while the copies are taken.
    let store = rt.block_on(async {
        let store = SqliteStore::open(&db, SqliteConfig::default())
            .await
            .unwrap();
        let ok = ProbeResult::success(Duration::from_millis(3));
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let rows = (0..50).map(|i| ResultRecord::new("api", at + Duration::from_secs(i), &ok));
        store.write(Batch::new().with_results(rows)).await.unwrap();
        store
    });
    let config = dir.path().join("monitor.toml");
    std::fs::write(&config, format!("[store]\npath = {db:?}\n[[target]]\n")).unwrap();

    // Only [store] is read: the rest of the file (an incomplete target here) does not matter.
    let out = dir.path().join("copy.db");
    let (code, stdout, stderr) = rampart(&[
        "backup".as_ref(),
        out.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("integrity ok"), "{stdout}");
    let by_path = dir.path().join("copy2.db");
    let (code, stdout, stderr) = rampart(&[
        "backup".as_ref(),
        by_path.as_os_str(),
        "--store".as_ref(),
        db.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    for copy in [&out, &by_path] {
        let rows = rt.block_on(async {
            let copy = SqliteStore::open(copy, SqliteConfig::default())
                .await
                .unwrap();
            let far = SystemTime::now() + Duration::from_secs(3600);
            copy.results("api", UNIX_EPOCH, far).await.unwrap().len()
        });
        assert_eq!(rows, 50);
    }

    // An existing copy is not overwritten (exit 1); a bad [store] section is bad input (exit 2).
    let (code, _, stderr) = rampart(&[
        "backup".as_ref(),
        out.as_os_str(),
        "--store".as_ref(),
        db.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("exists"), "{stderr}");
    std::fs::write(&config, "[store]\npath = \"\"\n").unwrap();
    let other = dir.path().join("other.db");
    let (code, _, stderr) = rampart(&[
        "backup".as_ref(),
        other.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("store.path"), "{stderr}");
    drop(store);
}
