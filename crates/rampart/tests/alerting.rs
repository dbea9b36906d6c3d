//! `rampart serve` with `[alerting]`, end to end: a target goes down, the default `TargetDown`
//! rule fires, and the webhook receiver (a plain HTTP server in this test) gets a signed
//! notification through the durable outbox; the alert shows in `GET /api/alerts`, a silence
//! made through the API (with the token) shows in `GET /api/silences`, and the outbox lists the
//! notification as delivered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{DEADLINE, KillOnDrop, lines_of, listening_addr, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const TOKEN: &str = "alerting-test-token-0123456789";
const SECRET: &str = "webhook-secret";

/// A request with the write token.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    common::call(
        addr,
        method,
        path,
        &[&format!("Authorization: Bearer {TOKEN}")],
        body,
    )
}

/// A webhook receiver: each request's headers and body, answered 200.
fn receiver() -> (SocketAddr, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send((head, String::from_utf8(body).unwrap()));
        }
    });
    (addr, rx)
}

#[test]
fn a_down_target_reaches_the_webhook_signed_and_the_api_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, hooks) = receiver();
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
write_token_file = {token_file:?}
[store]
path = {db:?}

[[target]]
name = "db"
kind = "tcp"
interval = "1s"
timeout = "500ms"
thresholds = {{ failures_to_unhealthy = 1 }}
[target.tcp]
address = "{closed}"

[alerting]
[alerting.route]
receiver = "hook"
group_wait = "0s"
group_interval = "1s"

[[alerting.receiver]]
name = "hook"
webhook = {{ url = "http://{hook}/rampart", secret = "{SECRET}" }}
"#,
            db = dir.path().join("history.db"),
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["serve", "--no-watch", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let err = lines_of(child.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    wait_for(&err, "alerting on", &mut seen);
    let listening = wait_for(&err, "listening", &mut seen);
    let addr = listening_addr(&listening);

    let (head, body) = hooks.recv_timeout(DEADLINE).expect("a notification");
    let n: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(n["status"], "firing", "{n}");
    assert_eq!(n["alerts"][0]["rule"], "TargetDown", "{n}");
    assert_eq!(n["alerts"][0]["labels"]["target"], "db", "{n}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    assert_eq!(header("idempotency-key"), n["id"].as_str().unwrap());
    let signature = header("x-rampart-signature");
    rampart_monitor::alert::notify::verify_signature(
        SECRET.as_bytes(),
        &signature,
        body.as_bytes(),
        chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()),
        Duration::from_secs(300),
    )
    .expect("a valid signature");

    let (status, alerts) = call(addr, "GET", "/api/alerts?state=firing", None);
    assert_eq!(status, 200, "{alerts}");
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    assert_eq!(alerts["alerts"][0]["target"], "db", "{alerts}");

    let (status, created) = call(
        addr,
        "POST",
        "/api/silences",
        Some(
            r#"{"matchers": ["target=db"], "duration": "1h", "created_by": "ana", "comment": "maintenance"}"#,
        ),
    );
    assert_eq!(status, 201, "{created}");
    let (status, silences) = call(addr, "GET", "/api/silences", None);
    assert_eq!(status, 200);
    assert!(
        silences.contains("maintenance") && silences.contains("\"active\""),
        "{silences}"
    );

    // The same through the CLI, with the token from the environment.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .arg("silence")
            .args(["--server", &format!("http://{addr}")])
            .args(args)
            .env("RAMPART_TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let added = cli(&[
        "add",
        "-m",
        "target=~api|web",
        "--duration",
        "30m",
        "--author",
        "bob",
        "--comment",
        "from the cli",
    ]);
    let id = added.split_whitespace().nth(1).unwrap().to_owned();
    let listed = cli(&["list"]);
    assert!(
        listed.contains(&id) && listed.contains("from the cli"),
        "{listed}"
    );
    assert!(cli(&["expire", &id]).contains("expired"));
    assert!(
        cli(&["list"])
            .lines()
            .any(|l| l.contains(&id) && l.contains("expired"))
    );
    // Without the token the daemon refuses, and the CLI says so.
    let refused = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "silence",
            "--server",
            &format!("http://{addr}"),
            "expire",
            &id,
        ])
        .env_remove("RAMPART_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // The outbox marks it delivered once the receiver answered.
    let until = Instant::now() + DEADLINE;
    loop {
        let (status, outbox) = call(addr, "GET", "/api/notifications?state=delivered", None);
        assert_eq!(status, 200, "{outbox}");
        if outbox.contains(n["id"].as_str().unwrap()) {
            break;
        }
        assert!(Instant::now() < until, "never delivered: {outbox}");
        std::thread::sleep(Duration::from_millis(50));
    }

    kill(
        Pid::from_raw(i32::try_from(child.0.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
}
