//! Model server health checks.
//!
//! - KServe: a real KServe Python model server (PyPI `kserve`, installed by `scripts/setup` into
//!   `~/.cache/rampart/venv-ai`, or the interpreter in `RAMPART_KSERVE_PYTHON`) serving the tiny
//!   model of `tests/fixtures/kserve_tiny.py`. Skipped when absent unless
//!   `RAMPART_REQUIRE_SERVERS=1`.
//! - TorchServe: a real TorchServe (PyPI `torchserve`, Java 17; `scripts/setup` installs it into
//!   `~/.cache/rampart/venv-ts`, or set `RAMPART_TORCHSERVE`) serving the unarchived tiny model of
//!   `tests/fixtures/torchserve/` with a stand-in `torch` module (its worker imports torch for one
//!   type check). Skipped when absent unless `RAMPART_REQUIRE_SERVERS=1`.
//! - TensorFlow Serving cannot be installed here: an in-test server answers exactly as its REST
//!   API documentation shows (`GET /v1/models/{name}`), as do a TorchServe whose ping is unhealthy
//!   and a KServe whose model is not ready.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use rampart_connect::ai::{
    HealthError, ModelServerKind, kserve_health, tf_serving_health, torchserve_health,
};
use serde_json::json;
use tokio::process::{Child, Command};

fn kserve_python() -> Option<PathBuf> {
    let candidate = std::env::var_os("RAMPART_KSERVE_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/rampart/venv-ai/bin/python"))
        })?;
    let works = std::process::Command::new(&candidate)
        .args(["-c", "import kserve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(candidate);
    }
    assert!(
        std::env::var("RAMPART_REQUIRE_SERVERS").as_deref() != Ok("1"),
        "kserve is missing ({}) and RAMPART_REQUIRE_SERVERS=1: run scripts/setup",
        candidate.display()
    );
    eprintln!(
        "skipped: kserve not found (scripts/setup installs it into ~/.cache/rampart/venv-ai)"
    );
    None
}

#[allow(clippy::unwrap_used)] // a test helper
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[allow(clippy::unwrap_used)] // a test helper
fn start_kserve(python: &PathBuf, port: u16) -> Child {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kserve_tiny.py");
    Command::new(python)
        .arg(fixture)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_reports_live_ready_and_serves_the_tiny_model() {
    let Some(python) = kserve_python() else {
        return;
    };
    let port = free_port();
    let mut server = start_kserve(&python, port);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // Ready when the health check says so; a server that never starts fails the test after 60 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let health = loop {
        match kserve_health(&http, &base, "tiny").await {
            Ok(h) if h.ready => break h,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "kserve not ready in 60s: {other:?}"
                );
                assert!(server.try_wait().unwrap().is_none(), "kserve exited");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(health.kind, ModelServerKind::KServe);
    assert!(health.live && health.ready);
    assert_eq!(health.versions.len(), 1);
    assert_eq!(health.versions[0].state, "READY");

    // v2 inference: the tiny model doubles its input.
    let answer: serde_json::Value = http
        .post(format!("{base}/v2/models/tiny/infer"))
        .json(&json!({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1.0, 1.5, -2.0]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["model_name"], "tiny");
    assert_eq!(answer["outputs"][0]["data"], json!([2.0, 3.0, -4.0]));

    // An unknown model is an error (404), not "not ready".
    let err = kserve_health(&http, &base, "nope").await.unwrap_err();
    assert!(
        matches!(err, HealthError::Status { status: 404, .. }),
        "{err}"
    );

    // A stopped server is unreachable.
    server.kill().await.unwrap();
    let err = kserve_health(&http, &base, "tiny").await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
}

#[allow(clippy::unwrap_used)] // a test helper
async fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

/// TensorFlow Serving's model status, as its REST API documentation shows it.
#[tokio::test]
async fn tf_serving_reports_available_versions() {
    let app = Router::new()
        .route(
            "/v1/models/half_plus_two",
            get(|| async {
                axum::Json(json!({"model_version_status": [
                    {"version": "2", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
                    {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                ]}))
            }),
        )
        .route(
            "/v1/models/broken",
            get(|| async {
                axum::Json(json!({"model_version_status": [
                    {"version": "3", "state": "END", "status": {"error_code": "NOT_FOUND", "error_message": "Could not find base path"}}
                ]}))
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "Servable not found for request: Latest(nope)"})),
            )
        });
    let (base, server) = serve(app).await;
    let http = reqwest::Client::new();
    let health = tf_serving_health(&http, &base, "half_plus_two")
        .await
        .unwrap();
    assert!(health.ready);
    assert_eq!(health.versions.len(), 2);
    assert_eq!(
        (
            health.versions[1].version.as_str(),
            health.versions[1].ready
        ),
        ("1", true)
    );
    assert!(!health.versions[0].ready);

    let health = tf_serving_health(&http, &base, "broken").await.unwrap();
    assert!(!health.ready);
    assert_eq!(
        health.detail.as_deref(),
        Some("NOT_FOUND: Could not find base path")
    );

    let err = tf_serving_health(&http, &base, "nope").await.unwrap_err();
    assert!(
        matches!(err, HealthError::Status { status: 404, .. }),
        "{err}"
    );
    server.abort();
}

/// TorchServe's `/ping` and management API `GET /models/{name}`, as documented.
#[tokio::test]
async fn torchserve_reports_ready_workers_and_an_unhealthy_ping() {
    let model = |status: &'static str| {
        move || async move {
            axum::Json(json!([{
                "modelName": "noop", "modelVersion": "1.0",
                "modelUrl": "noop.mar", "runtime": "python", "minWorkers": 1, "maxWorkers": 1,
                "batchSize": 1, "maxBatchDelay": 100, "loadedAtStartup": true,
                "workers": [{"id": "9000", "startTime": "2026-11-23T21:00:00.000Z", "status": status,
                             "memoryUsage": 0, "pid": 1, "gpu": false, "gpuUsage": "N/A"}]
            }]))
        }
    };
    let inference = Router::new().route(
        "/ping",
        get(|| async { axum::Json(json!({"status": "Healthy"})) }),
    );
    let management = Router::new()
        .route("/models/noop", get(model("READY")))
        .route("/models/starting", get(model("UNLOADING")));
    let (inference_url, a) = serve(inference).await;
    let (management_url, b) = serve(management).await;
    let http = reqwest::Client::new();
    let health = torchserve_health(&http, &inference_url, &management_url, "noop")
        .await
        .unwrap();
    assert!(health.live && health.ready);
    assert_eq!(health.versions[0].version, "1.0");
    assert_eq!(health.versions[0].state, "READY");
    let health = torchserve_health(&http, &inference_url, &management_url, "starting")
        .await
        .unwrap();
    assert!(health.live && !health.ready);
    assert_eq!(health.versions[0].state, "UNLOADING");

    let unhealthy = Router::new().route(
        "/ping",
        get(|| async {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"status": "Unhealthy"})),
            )
                .into_response()
        }),
    );
    let (sick_url, c) = serve(unhealthy).await;
    let health = torchserve_health(&http, &sick_url, &management_url, "noop")
        .await
        .unwrap();
    assert!(!health.live && !health.ready);
    assert_eq!(health.detail.as_deref(), Some("ping: Unhealthy"));
    for task in [a, b, c] {
        task.abort();
    }
}

/// A KServe whose model is still loading: `/v2/models/{name}/ready` answers 503.
#[tokio::test]
async fn kserve_with_a_model_not_ready_is_live_but_not_ready() {
    let app = Router::new()
        .route("/v2/health/live", get(|| async { axum::Json(json!({"live": true})) }))
        .route("/v2/health/ready", get(|| async { axum::Json(json!({"ready": true})) }))
        .route(
            "/v2/models/m/ready",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"error": "Model with name m is not ready."})),
                )
            }),
        )
        .route(
            "/v2/models/m",
            get(|| async {
                axum::Json(json!({"name": "m", "versions": ["3"], "platform": "pytorch_torchscript", "inputs": [], "outputs": []}))
            }),
        );
    let (base, server) = serve(app).await;
    let health = kserve_health(&reqwest::Client::new(), &base, "m")
        .await
        .unwrap();
    assert!(health.live && !health.ready);
    assert_eq!(health.versions[0].version, "3");
    assert_eq!(health.versions[0].state, "UNAVAILABLE");
    assert_eq!(health.detail.as_deref(), Some("model m not ready"));
    server.abort();
}

fn torchserve_bin() -> Option<PathBuf> {
    let candidate = std::env::var_os("RAMPART_TORCHSERVE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/rampart/venv-ts/bin/torchserve"))
        })?;
    let java = std::process::Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if candidate.exists() && java {
        return Some(candidate);
    }
    assert!(
        std::env::var("RAMPART_REQUIRE_SERVERS").as_deref() != Ok("1"),
        "torchserve or java is missing ({}) and RAMPART_REQUIRE_SERVERS=1: run scripts/setup",
        candidate.display()
    );
    eprintln!("skipped: torchserve or java not found (scripts/setup installs them)");
    None
}

/// The TorchServe process group (its Python launcher, the Java frontend, the Python worker),
/// killed whole when dropped.
struct TorchServe {
    child: Child,
}

impl Drop for TorchServe {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torchserve_reports_the_tiny_model_ready_with_its_version() {
    let Some(torchserve) = torchserve_bin() else {
        return;
    };
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchserve");
    let dir = tempfile::tempdir().unwrap();
    let (inference, management, metrics) = (free_port(), free_port(), free_port());
    let config = dir.path().join("config.properties");
    std::fs::write(
        &config,
        format!(
            "inference_address=http://127.0.0.1:{inference}\n\
             management_address=http://127.0.0.1:{management}\n\
             metrics_address=http://127.0.0.1:{metrics}\n\
             disable_system_metrics=true\n\
             default_workers_per_model=1\n"
        ),
    )
    .unwrap();
    let child = Command::new(torchserve)
        .args(["--start", "--foreground", "--ncs", "--disable-token-auth"])
        .arg("--model-store")
        .arg(fixtures.join("store"))
        .args(["--models", "tiny=tiny", "--ts-config"])
        .arg(&config)
        .env("PYTHONPATH", fixtures.join("stub"))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut server = TorchServe { child };
    let inference_url = format!("http://127.0.0.1:{inference}");
    let management_url = format!("http://127.0.0.1:{management}");
    let http = reqwest::Client::new();

    // Ready when the health check says so; a server that never starts fails after 90 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let health = loop {
        match torchserve_health(&http, &inference_url, &management_url, "tiny").await {
            Ok(h) if h.ready => break h,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "torchserve not ready in 90s: {other:?}"
                );
                assert!(
                    server.child.try_wait().unwrap().is_none(),
                    "torchserve exited"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(health.kind, ModelServerKind::TorchServe);
    assert!(health.live);
    assert_eq!(health.versions.len(), 1);
    assert_eq!(health.versions[0].version, "1.0");
    assert_eq!(health.versions[0].state, "READY");

    let answer: serde_json::Value = http
        .post(format!("{inference_url}/predictions/tiny"))
        .body("x")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"ok": true}));

    let err = torchserve_health(&http, &inference_url, &management_url, "nope")
        .await
        .unwrap_err();
    assert!(
        matches!(err, HealthError::Status { status: 404, .. }),
        "{err}"
    );
    drop(server);
}
