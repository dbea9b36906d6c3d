//! schemathesis (`st`, installed by `scripts/setup`) fuzzes a real server, built from the real
//! `app()` with a few in-process targets and writes enabled, against its own OpenAPI document
//! with every check. Without `st` the test is skipped with a note, unless
//! `RAMPART_REQUIRE_SERVERS` is set, then it fails. Bounded: 10 examples per operation, at most
//! 100 s (`--max-time`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;

use rampart_monitor::config::Secret;
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};
use rampart_server::{ServerState, app, serve};
use tokio::net::TcpListener;

const TOKEN: &str = "schemathesis-token-0123456789";

fn have_st() -> bool {
    Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    if !have_st() {
        assert!(
            std::env::var_os("RAMPART_REQUIRE_SERVERS").is_none(),
            "schemathesis (`st`) is not installed; run scripts/setup"
        );
        eprintln!("skipped: schemathesis (`st`) is not installed; run scripts/setup");
        return;
    }
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let table: toml::Table = format!(
        "[[target]]\nname = \"up\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [target.tcp]\naddress = \"{up_addr}\"\n\n\
         [[target]]\nname = \"job\"\nkind = \"heartbeat\"\n\
         [target.heartbeat]\ntoken = \"beat-token-0123456789\"\nevery = \"1h\"\ngrace = \"1h\"\n"
    )
    .parse()
    .unwrap();
    let store = SqliteStore::open(dir.path().join("h.db"), SqliteConfig::default())
        .await
        .unwrap();
    let state = ServerState::start(
        table,
        Some("monitor.toml"),
        Arc::new(store) as Arc<dyn Store>,
        Limits::default(),
        Some(&Secret::new(TOKEN)),
        rampart_telemetry::Telemetry::new(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app(state), std::future::pending()));

    // st keeps caches (.schemathesis, .hypothesis) in its working directory: a throwaway one.
    let work = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("st")
            .current_dir(work)
            .args(["run", &format!("http://{addr}/api/openapi.json")])
            .args(["--checks", "all", "--max-examples", "10", "--seed", "1"])
            // Requests valid by the schema may still be refused on meaning, which JSON Schema
            // cannot say: a range over 3660 days, a target definition the configuration
            // rejects (a missing kind section), a body name that differs from the path.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args([
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--max-time",
                "100",
            ])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--output-truncate", "false"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    drop(up);
}
