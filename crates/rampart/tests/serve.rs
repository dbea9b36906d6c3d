//! `rampart serve` run as a user runs it: it answers on its port, probes, and on SIGTERM stops
//! with exit code 0, leaving every result it showed in the store file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{KillOnDrop, get, lines_of, listening_addr, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};

#[test]
fn serve_answers_probes_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    // A port that accepts connections (the backlog does, with nobody calling accept).
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {db:?}\n\
             [[target]]\nname = \"api\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             [target.tcp]\naddress = \"{}\"\n",
            up.local_addr().unwrap()
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(child.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    let listening = wait_for(&lines, "listening", &mut seen);
    let addr = listening_addr(&listening);
    // The monitor and the store are up before the listener: ready at once.
    assert_eq!(get(addr, "/ready").0, 200);
    wait_for(&lines, "state changed", &mut seen);
    let (status, body) = get(addr, "/api/targets/api");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["health"]["state"], "healthy", "{v}");
    let (status, body) = get(addr, "/api/targets/api/results");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = v["points"].as_array().unwrap().len();
    assert!(shown >= 1, "{v}");

    let pid = Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    wait_for(&lines, "history store closed", &mut seen);
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}\n{}", seen.join("\n"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = rt.block_on(async {
        let store = SqliteStore::open(&db, SqliteConfig::default())
            .await
            .unwrap();
        let far = SystemTime::now() + Duration::from_secs(60);
        store.results("api", UNIX_EPOCH, far).await.unwrap()
    });
    assert!(
        stored.len() >= shown,
        "{shown} shown, {} stored",
        stored.len()
    );
    assert!(stored.iter().all(|r| r.is_success()));
}

#[test]
fn serve_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("monitor.toml");
    let db = dir.path().join("history.db");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = {db:?}\n"),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["level"], "INFO", "{first}");
    assert_eq!(first["fields"]["message"], "history store open", "{first}");
    let listening = lines.find(|l| l.as_ref().unwrap().contains("listening"));
    assert!(listening.is_some());
    let pid = Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}
