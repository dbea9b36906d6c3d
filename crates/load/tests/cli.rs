//! `rampart load` as a user runs it: exit codes, thresholds, JSON, bad input, unreachable targets,
//! the closed model, and chained requests fed from a CSV file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rampart_load::LoadError;
use rampart_load::cli::{execute, run_async};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_decide_the_exit_code_and_json_is_written() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let url = server.url("/");
    let pass = common::args(&[
        &url,
        "--rate",
        "50",
        "--duration",
        "1s",
        "-q",
        "--threshold",
        "p99<1s",
        "--threshold",
        "error_rate<1%",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(run_async(pass).await, 0);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["model"], "open");
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["total"]["count"], 50);
    assert_eq!(doc["requests"][0]["name"], "GET /");
    assert!(doc["total"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(doc["total"]["service_ms"]["p50"].is_number());
    assert_eq!(doc["thresholds"][0]["threshold"], "p99<1s");
    assert!(!doc["series"].as_array().unwrap().is_empty());

    let fail = common::args(&[
        &url,
        "--rate",
        "50",
        "--duration",
        "1s",
        "-q",
        "--threshold",
        "p99<1us",
    ]);
    assert_eq!(run_async(fail).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_the_run_early() {
    let server = common::start().await;
    let url = server.url("/fail");
    let args = common::args(&[
        &url,
        "--rate",
        "50",
        "--duration",
        "20s",
        "-q",
        "--threshold",
        "error_rate<1% over 1s",
        "--abort-on-fail",
    ]);
    let started = Instant::now();
    let report = execute(&args).await.unwrap();
    assert!(
        started.elapsed().as_secs_f64() < 3.0,
        "{:?}",
        started.elapsed()
    );
    assert!(report.aborted && !report.passed);
    // Every request sent failed with a 500; one due at the moment of the abort may still have
    // been queued, never sent: dropped.
    let kinds = &report.total.errors_by_kind;
    let (failed, dropped) = (
        kinds["http_5xx"],
        kinds.get("dropped").copied().unwrap_or(0),
    );
    assert_eq!(failed + dropped, report.total.errors, "{kinds:?}");
    assert!(dropped <= 1, "{kinds:?}");
    let t = &report.thresholds[0];
    assert_eq!(
        (t.windows, t.windows_failed, t.first_failed_at),
        (1, 1, Some(1.0))
    );
    assert_eq!(report.thresholds[0].worst_window, Some(1.0));
    assert_eq!(run_async(args).await, 1);
}

#[tokio::test]
async fn bad_input_lists_every_problem_and_exits_2() {
    let args = common::args(&[
        "http://127.0.0.1:1/",
        "--rate",
        "fast",
        "--duration",
        "soon",
        "--connections",
        "0",
        "--threshold",
        "p99<quick",
        "--threshold",
        "latency<1s",
        "--header",
        "no-colon",
    ]);
    let started = Instant::now();
    let Err(LoadError::Config(e)) = execute(&args).await else {
        panic!("expected a config error")
    };
    let text = e.to_string();
    assert_eq!(e.problems.len(), 6, "{text}");
    for key in [
        "rate",
        "duration",
        "connections",
        "thresholds[0]",
        "thresholds[1]",
        "--header",
    ] {
        assert!(
            e.problems.iter().any(|p| p.path == key),
            "{key} missing in:\n{text}"
        );
    }
    assert!(started.elapsed().as_millis() < 500, "nothing was run");
    assert_eq!(run_async(args).await, 2);
}

#[tokio::test]
async fn an_unreachable_target_is_refused_before_the_run() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let args = common::args(&[&url, "--rate", "10", "--duration", "5s", "-q"]);
    let started = Instant::now();
    let err = execute(&args).await.unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("nothing was sent"),
        "{text}"
    );
    assert!(started.elapsed().as_secs_f64() < 1.0);
    assert_eq!(run_async(args).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_model_keeps_five_users_thinking() {
    let server = common::start().await;
    let url = server.url("/");
    let args = common::args(&[
        &url,
        "--vus",
        "5",
        "--think",
        "100ms",
        "--duration",
        "2s",
        "-q",
    ]);
    let report = execute(&args).await.unwrap();
    assert_eq!(report.model, "closed");
    let n = server.state.requests.load(Ordering::SeqCst);
    assert_eq!(report.total.count, n);
    // Each user: one request (about 1 ms) then 100 ms of thought, for 2 s: about 20 each.
    assert!((80..=100).contains(&n), "{n}");
    assert!(server.state.max_in_flight.load(Ordering::SeqCst) <= 5);
    // One kept-alive connection per user, and the check before the run.
    assert_eq!(server.state.connections.load(Ordering::SeqCst), 5 + 1);
    assert!(
        report.total.service_ms.is_none(),
        "closed model: latency is service time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_requests_carry_extracted_values_and_csv_rows() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        "user,pass\nalice,a1\nbob,b2\ncarol,\"c,3\"\n",
    )
    .unwrap();
    let config = dir.path().join("scenario.toml");
    std::fs::write(
        &config,
        format!(
            r#"
vus = 1
duration = "500ms"
data = "users.csv"

[variables]
base = "http://{addr}"

[[request]]
name = "login"
method = "POST"
url = "${{base}}/login"
headers = {{ content-type = "application/json" }}
body = '{{"user":"${{user}}","pass":"${{pass}}"}}'
extract = {{ token = "/data/token" }}

[[request]]
name = "me"
url = "${{base}}/me?u=${{user}}"
headers = {{ authorization = "Bearer ${{token}}" }}
"#,
            addr = server.addr
        ),
    )
    .unwrap();
    let args = common::args(&["--config", config.to_str().unwrap(), "-q"]);
    let report = execute(&args).await.unwrap();
    assert_eq!(report.total.errors, 0);
    let seen = server.state.seen.lock().unwrap().clone();
    assert!(seen.len() >= 6, "at least three iterations: {}", seen.len());
    let users = ["alice", "bob", "carol"];
    let passes: HashMap<&str, &str> = [("alice", "a1"), ("bob", "b2"), ("carol", "c,3")].into();
    for (i, pair) in seen.chunks_exact(2).enumerate() {
        let user = users[i % 3];
        assert_eq!(pair[0].method, "POST");
        let body: serde_json::Value = serde_json::from_str(&pair[0].body).unwrap();
        assert_eq!(body["user"], user);
        assert_eq!(body["pass"], passes[user]);
        assert_eq!(pair[1].uri, format!("/me?u={user}"));
        assert_eq!(
            pair[1].authorization.as_deref(),
            Some(format!("Bearer tok-{user}").as_str())
        );
    }
    let names: Vec<&str> = report.requests.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["login", "me"]);
}

#[test]
fn threads_sizes_the_runtime_and_refuses_zero_or_words() {
    use clap::Parser;
    use rampart_load::cli::LoadArgs;
    let parse = |t: &str| LoadArgs::try_parse_from(["rampart load", "http://x/", "--threads", t]);
    assert_eq!(parse("1").unwrap().threads, Some(1));
    assert_eq!(parse("16").unwrap().threads, Some(16));
    for bad in ["0", "two", "-1", "5000"] {
        assert!(parse(bad).is_err(), "--threads {bad} was accepted");
    }
    assert_eq!(common::args(&["http://x/"]).threads, None);
}
