//! `rampart demo` as a user runs it: it prints where to look, its demo services show the states
//! they are made to show (the API healthy, the heartbeat job healthy through its beats, the
//! flaky service down during its first burst), and it stops with exit code 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DEADLINE: Duration = Duration::from_secs(40);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
}

fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {needle:?} in:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line.contains(needle) {
            return;
        }
    }
}

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
