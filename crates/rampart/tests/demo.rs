//! `rampart demo` as a user runs it: it prints where to look, its demo services show the states
//! they are made to show (the API healthy, the heartbeat job healthy through its beats, the
//! flaky service down during its first burst, and its TargetDown alert printed by the demo's
//! receiver), and it stops with exit code 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::{KillOnDrop, get, lines_of, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn the_demo_runs_its_services_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["demo", "--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = lines_of(child.0.stdout.take().unwrap());
    let err = lines_of(child.0.stderr.take().unwrap());
    let mut printed = Vec::new();
    wait_for(&out, "Stop with Ctrl-C", &mut printed);
    let banner = printed.join("\n");
    assert!(
        banner.contains(&format!("http://{addr}/api/summary")),
        "{banner}"
    );
    assert!(dir.path().join("demo.toml").exists());

    let mut logged = Vec::new();
    for needle in [
        "target_name=api from=unknown to=healthy",
        "target_name=nightly-job from=unknown to=healthy",
        "target_name=flaky from=unknown to=unhealthy",
    ] {
        wait_for(&err, needle, &mut logged);
    }
    // The flaky service's burst reaches the demo's alert receiver, which prints it.
    wait_for(&out, "alert firing: TargetDown on flaky", &mut printed);
    let (status, body) = get(addr, "/api/summary");
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    let state = |name: &str| {
        summary["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state("api").as_deref(), Some("healthy"), "{summary}");
    assert_eq!(
        state("slow").as_deref().map(|s| s != "unknown"),
        Some(true),
        "{summary}"
    );

    kill(
        Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", logged.join("\n"));
    assert!(dir.path().join("history.db").exists());
}
