//! Throwaway servers against their real clients and protocols: start, kill, restart, pause,
//! resume, drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rampart_testkit::require_server;
use rampart_testkit::server::{Mosquitto, Postgres, Redis, ServerConfig, ServerError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How long a client waits for a paused server before the test counts it as hanging.
const HANG: Duration = Duration::from_millis(300);
/// The deadline for anything that should succeed.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- clients

/// `psql` from PATH, or from the newest PostgreSQL's own bin directory.
fn psql_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("psql"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .collect();
    versioned.sort();
    on_path
        .into_iter()
        .chain(versioned.into_iter().rev())
        .find(|p| p.is_file())
        .expect("psql not found: install the Debian package `postgresql-client`")
}

fn psql_command(port: u16) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(psql_binary());
    command
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-U", "postgres", "-d", "postgres", "-p"])
        .arg(port.to_string())
        .env("PGCONNECT_TIMEOUT", "5")
        .kill_on_drop(true);
    command
}

/// Runs `sql` with `psql -c` and returns its trimmed output, panicking on failure.
async fn psql(port: u16, sql: &str) -> String {
    let output = timeout(DEADLINE, psql_command(port).arg("-c").arg(sql).output())
        .await
        .expect("psql timed out")
        .unwrap();
    assert!(
        output.status.success(),
        "psql -c {sql:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// One Redis command in RESP; returns the reply's first line, or the bulk string's contents.
async fn redis(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let line = line.trim_end().to_owned();
    match line.strip_prefix('$').map(str::parse::<i64>) {
        Some(Ok(len)) if len >= 0 => {
            let mut bulk = vec![0; usize::try_from(len).unwrap() + 2];
            reader.read_exact(&mut bulk).await?;
            bulk.truncate(bulk.len() - 2);
            Ok(String::from_utf8(bulk).unwrap())
        }
        _ => Ok(line),
    }
}

/// An MQTT 3.1.1 CONNECT (clean session, empty client id) and the CONNACK that accepts it.
const MQTT_CONNECT: [u8; 14] = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 60, 0, 0];
const MQTT_CONNACK: [u8; 4] = [0x20, 2, 0, 0];

async fn mqtt_connect(port: u16) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(&MQTT_CONNECT).await?;
    let mut reply = [0; 4];
    stream.read_exact(&mut reply).await?;
    assert_eq!(reply, MQTT_CONNACK);
    Ok(stream)
}

/// Subscribes to `topic`, publishes `payload` to it from a second client (QoS 0), and returns
/// what the subscriber received.
async fn mqtt_round_trip(port: u16, topic: &str, payload: &str) -> Vec<u8> {
    let mut subscriber = mqtt_connect(port).await.unwrap();
    let t = topic.as_bytes();
    let mut subscribe = vec![0x82, u8::try_from(5 + t.len()).unwrap(), 0, 1, 0];
    subscribe.push(u8::try_from(t.len()).unwrap());
    subscribe.extend_from_slice(t);
    subscribe.push(0);
    subscriber.write_all(&subscribe).await.unwrap();
    let mut suback = [0; 5];
    subscriber.read_exact(&mut suback).await.unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);

    let mut publisher = mqtt_connect(port).await.unwrap();
    let body_len = 2 + t.len() + payload.len();
    let mut publish = vec![0x30, u8::try_from(body_len).unwrap(), 0];
    publish.push(u8::try_from(t.len()).unwrap());
    publish.extend_from_slice(t);
    publish.extend_from_slice(payload.as_bytes());
    publisher.write_all(&publish).await.unwrap();

    let mut received = vec![0; publish.len()];
    subscriber.read_exact(&mut received).await.unwrap();
    assert_eq!(received[..4 + t.len()], publish[..4 + t.len()]);
    received.split_off(4 + t.len())
}

async fn assert_refused(port: u16) {
    let err = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// Whether a process exists and has not exited (a zombie has exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    })
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    == Some(&pid.to_string())
            })
        })
        .collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn three_servers_start_in_parallel_and_answer_their_protocols() {
    let started = Instant::now();
    let (pg, redis_server, mqtt) =
        tokio::join!(Postgres::start(), Redis::start(), Mosquitto::start());
    let elapsed = started.elapsed();
    let pg = require_server!(pg);
    let redis_server = require_server!(redis_server);
    let mqtt = require_server!(mqtt);
    eprintln!("all three ready in {elapsed:?}");

    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    assert_eq!(
        redis_server.url(),
        format!("redis://127.0.0.1:{}", redis_server.port())
    );
    assert_eq!(mqtt.url(), format!("mqtt://127.0.0.1:{}", mqtt.port()));
    assert_eq!(mqtt.host(), "127.0.0.1");

    assert_eq!(psql(pg.port(), "SELECT current_user").await, "postgres");
    let url = pg.create_database("per_test").await.unwrap();
    assert!(url.ends_with("/per_test"), "{url}");
    let rows = pg
        .query("SELECT datname FROM pg_database WHERE datname = 'per_test'")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Some("per_test".to_owned())]]);
    let err = pg.execute("SELECT * FROM no_such_table").await.unwrap_err();
    assert!(
        matches!(err, ServerError::Query { .. }) && err.to_string().contains("42P01"),
        "{err}"
    );

    assert_eq!(
        redis(redis_server.port(), &["SET", "k", "v"])
            .await
            .unwrap(),
        "+OK"
    );
    assert_eq!(
        redis(redis_server.port(), &["GET", "k"]).await.unwrap(),
        "v"
    );

    let got = timeout(DEADLINE, mqtt_round_trip(mqtt.port(), "rampart/t", "hello"))
        .await
        .unwrap();
    assert_eq!(got, b"hello");
}

#[tokio::test]
async fn killed_postgres_refuses_connections_and_restart_keeps_its_data() {
    let mut pg = require_server!(Postgres::start().await);
    let port = pg.port();
    psql(
        port,
        "CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)",
    )
    .await;
    let pid = pg.pid().unwrap();
    let backends = children_of(pid);
    assert!(!backends.is_empty(), "postgres runs helper processes");

    pg.kill().await.unwrap();
    assert_eq!(pg.pid(), None);
    assert!(!alive(pid), "the server is reaped");
    assert!(
        backends.iter().all(|&b| !alive(b)),
        "no process of the server is left"
    );
    assert_refused(port).await;
    pg.kill().await.unwrap(); // idempotent
    assert!(matches!(pg.pause(), Err(ServerError::NotRunning { .. })));

    let started = Instant::now();
    pg.restart().await.unwrap();
    eprintln!("postgres restarted after kill in {:?}", started.elapsed());
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), Some(pid));
    assert!(
        pg.log().contains("not properly shut down"),
        "crash recovery ran:\n{}",
        pg.log()
    );
    assert_eq!(psql(port, "SELECT id FROM kept").await, "42");

    // A restart of a running server kills it first.
    pg.restart().await.unwrap();
    assert_eq!(psql(port, "SELECT count(*) FROM kept").await, "1");
}

#[tokio::test]
async fn killed_redis_and_mosquitto_refuse_connections_and_restart_on_the_same_port() {
    let (redis_server, mqtt) = tokio::join!(Redis::start(), Mosquitto::start());
    let mut redis_server = require_server!(redis_server);
    let mut mqtt = require_server!(mqtt);
    let (redis_port, mqtt_port) = (redis_server.port(), mqtt.port());
    let (redis_pid, mqtt_pid) = (redis_server.pid().unwrap(), mqtt.pid().unwrap());

    let (killed_redis, killed_mqtt) = tokio::join!(redis_server.kill(), mqtt.kill());
    killed_redis.unwrap();
    killed_mqtt.unwrap();
    assert!(!alive(redis_pid) && !alive(mqtt_pid));
    assert_refused(redis_port).await;
    assert_refused(mqtt_port).await;

    let (restarted_redis, restarted_mqtt) = tokio::join!(redis_server.restart(), mqtt.restart());
    restarted_redis.unwrap();
    restarted_mqtt.unwrap();
    assert_eq!((redis_server.port(), mqtt.port()), (redis_port, mqtt_port));
    assert_eq!(redis(redis_port, &["PING"]).await.unwrap(), "+PONG");
    let got = timeout(
        DEADLINE,
        mqtt_round_trip(mqtt_port, "after/restart", "again"),
    )
    .await
    .unwrap();
    assert_eq!(got, b"again");
}

#[tokio::test]
async fn paused_postgres_hangs_open_and_new_sessions_until_resumed() {
    let config = ServerConfig::default().with_query_timeout(HANG);
    let pg = require_server!(Postgres::start_with(config).await);

    // An open psql session: its backend must freeze too, not only the postmaster.
    let mut session = psql_command(pg.port())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    let mut lines = BufReader::new(session.stdout.take().unwrap()).lines();
    stdin.write_all(b"SELECT 1;\n").await.unwrap();
    let first = timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some("1"));

    pg.pause().unwrap();
    stdin.write_all(b"SELECT 2;\n").await.unwrap();
    assert!(
        timeout(HANG, lines.next_line()).await.is_err(),
        "open session answered while paused"
    );
    let err = pg.query("SELECT 3").await.unwrap_err();
    assert!(matches!(err, ServerError::QueryTimeout { .. }), "{err}");

    pg.resume().unwrap();
    let second = timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap();
    assert_eq!(second.as_deref(), Some("2"));
    assert_eq!(
        pg.query("SELECT 3").await.unwrap(),
        vec![vec![Some("3".to_owned())]]
    );
    drop(stdin);
    timeout(DEADLINE, session.wait()).await.unwrap().unwrap();
}

#[tokio::test]
async fn paused_redis_and_mosquitto_time_out_until_resumed() {
    let (redis_server, mqtt) = tokio::join!(Redis::start(), Mosquitto::start());
    let mut redis_server = require_server!(redis_server);
    let mqtt = require_server!(mqtt);

    redis_server.pause().unwrap();
    mqtt.pause().unwrap();
    assert!(
        timeout(HANG, redis(redis_server.port(), &["PING"]))
            .await
            .is_err()
    );
    assert!(timeout(HANG, mqtt_connect(mqtt.port())).await.is_err());

    redis_server.resume().unwrap();
    mqtt.resume().unwrap();
    let pong = timeout(DEADLINE, redis(redis_server.port(), &["PING"]))
        .await
        .unwrap();
    assert_eq!(pong.unwrap(), "+PONG");
    timeout(DEADLINE, mqtt_connect(mqtt.port()))
        .await
        .unwrap()
        .unwrap();

    // A paused server can still be killed, and comes back on restart.
    redis_server.pause().unwrap();
    redis_server.kill().await.unwrap();
    redis_server.restart().await.unwrap();
    assert_eq!(
        redis(redis_server.port(), &["PING"]).await.unwrap(),
        "+PONG"
    );
}

#[tokio::test]
async fn dropped_servers_are_stopped_and_their_directories_removed() {
    let (pg, redis_server, mqtt) =
        tokio::join!(Postgres::start(), Redis::start(), Mosquitto::start());
    let pg = require_server!(pg);
    let redis_server = require_server!(redis_server);
    let mqtt = require_server!(mqtt);

    let pg_pid = pg.pid().unwrap();
    let mut pids = children_of(pg_pid);
    pids.extend([pg_pid, redis_server.pid().unwrap(), mqtt.pid().unwrap()]);
    let dirs = [
        pg.dir().to_owned(),
        redis_server.dir().to_owned(),
        mqtt.dir().to_owned(),
    ];
    let ports = [pg.port(), redis_server.port(), mqtt.port()];
    assert!(pg.data_dir().join("PG_VERSION").is_file());

    // Dropping a paused server stops it too.
    pg.pause().unwrap();
    drop((pg, redis_server, mqtt));

    // Orphaned postgres helpers are reparented and may need a moment to be torn down.
    let deadline = Instant::now() + DEADLINE;
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for dir in &dirs {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
    for port in ports {
        assert_refused(port).await;
    }
}
