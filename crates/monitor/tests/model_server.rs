//! The `tfserving`, `torchserve` and `kserve` probe kinds: their config sections, and probes
//! against a real KServe model server (the tiny model of `rampart-connect`'s test fixture; skipped
//! when kserve is absent unless `RAMPART_REQUIRE_SERVERS=1`) and an in-test server answering as
//! TensorFlow Serving's REST API documentation shows.
#![cfg(feature = "ai")]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rampart_monitor::config::{CheckConfig, ModelServer, ModelServerCheck, MonitorConfig};
use rampart_monitor::probe::{FailureKind, ModelServerProbe, Probe};
use serde_json::json;

fn model_check(config: &str) -> Result<ModelServerCheck, String> {
    match MonitorConfig::from_str(config, None) {
        Ok(c) => match &c.targets[0].check {
            CheckConfig::ModelServer(m) => Ok(m.clone()),
            other => panic!("{other:?}"),
        },
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn model_server_sections_are_read_and_checked() {
    let m = model_check(
        "[[target]]\nname = \"ts\"\nkind = \"torchserve\"\n[target.torchserve]\n\
         url = \"http://127.0.0.1:8080/\"\nmodel = \"resnet\"\nversion = \"2.0\"\n",
    )
    .unwrap();
    assert_eq!(m.server, ModelServer::TorchServe);
    assert_eq!(m.url, "http://127.0.0.1:8080");
    assert_eq!(m.management_url.as_deref(), Some("http://127.0.0.1:8081"));
    assert_eq!(m.version.as_deref(), Some("2.0"));

    let m = model_check(
        "[[target]]\nname = \"k\"\nkind = \"kserve\"\n[target.kserve]\n\
         url = \"http://models:8080\"\nmodel = \"tiny\"\n",
    )
    .unwrap();
    assert_eq!(m.server, ModelServer::KServe);
    assert!(m.management_url.is_none());

    let err = model_check(
        "[[target]]\nname = \"t\"\nkind = \"tfserving\"\n[target.tfserving]\n\
         url = \"ftp://x\"\nmodel = \"a/b\"\nmanagement_url = \"http://x:1\"\nversion = \"\"\n",
    )
    .unwrap_err();
    for path in [
        "target[0].tfserving.url",
        "target[0].tfserving.model",
        "target[0].tfserving.management_url",
        "target[0].tfserving.version",
    ] {
        assert!(err.contains(path), "{path}: {err}");
    }
    let err = model_check(
        "[[target]]\nname = \"t\"\nkind = \"kserve\"\n[target.kserve]\n\
         url = \"http://x:8080/v2\"\nmodel = \"m\"\ncolour = \"red\"\n",
    )
    .unwrap_err();
    assert!(err.contains("colour"), "{err}");
    let err = model_check(
        "[[target]]\nname = \"t\"\nkind = \"kserve\"\n[target.tfserving]\n\
         url = \"http://x:8080\"\nmodel = \"m\"\n",
    )
    .unwrap_err();
    assert!(err.contains("target[0].tfserving"), "{err}");
}

#[allow(clippy::unwrap_used)] // a test helper
async fn tf_serving() -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route(
            "/v1/models/half_plus_two",
            get(|| async {
                axum::Json(json!({"model_version_status": [
                    {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
                    {"version": "1", "state": "UNLOADING", "status": {"error_code": "OK", "error_message": ""}}
                ]}))
            }),
        )
        .route(
            "/v1/models/loading",
            get(|| async {
                axum::Json(json!({"model_version_status": [
                    {"version": "7", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}}
                ]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn tf_serving_probe_passes_on_an_available_version_and_tells_failures_apart() {
    let (url, server) = tf_serving().await;
    let probe = |model: &str, version: Option<&str>| {
        let mut check = ModelServerCheck::new(ModelServer::TfServing, url.clone(), model);
        check.version = version.map(str::to_owned);
        ModelServerProbe::new(check)
    };
    let timeout = Duration::from_secs(5);

    let r = probe("half_plus_two", None).probe(timeout).await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.details.model_versions, ["2 AVAILABLE", "1 UNLOADING"]);
    assert!(r.phases.query.is_some());

    let r = probe("half_plus_two", Some("1")).probe(timeout).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AnswerMismatch), "{r:?}");

    let r = probe("loading", None).probe(timeout).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AnswerMismatch), "{r:?}");
    assert_eq!(r.details.model_versions, ["7 LOADING"]);

    let r = probe("nope", None).probe(timeout).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::StatusMismatch), "{r:?}");

    server.abort();
    let _ = server.await;
    let r = probe("half_plus_two", None).probe(timeout).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Connect), "{r:?}");
}

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
        "kserve is missing and RAMPART_REQUIRE_SERVERS=1: run scripts/setup"
    );
    eprintln!("skipped: kserve not found (scripts/setup installs it)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_probe_reports_the_tiny_model_ready() {
    let Some(python) = kserve_python() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../connect/tests/fixtures/kserve_tiny.py");
    let mut child = tokio::process::Command::new(python)
        .arg(fixture)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let probe = ModelServerProbe::new(ModelServerCheck::new(
        ModelServer::KServe,
        format!("http://127.0.0.1:{port}"),
        "tiny",
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = probe.probe(Duration::from_secs(5)).await;
        if r.is_success() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {r:?}");
        assert!(child.try_wait().unwrap().is_none(), "kserve exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.details.model_versions, ["- READY"]);
    let missing = ModelServerProbe::new(ModelServerCheck::new(
        ModelServer::KServe,
        format!("http://127.0.0.1:{port}"),
        "nope",
    ))
    .probe(Duration::from_secs(5))
    .await;
    assert_eq!(
        missing.failure_kind(),
        Some(FailureKind::StatusMismatch),
        "{missing:?}"
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn torchserve_probe_reads_ping_and_the_management_api() {
    let inference = Router::new().route(
        "/ping",
        get(|| async { axum::Json(json!({"status": "Healthy"})) }),
    );
    let management = Router::new().route(
        "/models/noop",
        get(|| async {
            axum::Json(
                json!([{"modelName": "noop", "modelVersion": "1.0", "workers": [
                    {"id": "9000", "status": "READY", "memoryUsage": 0, "pid": 1, "gpu": false}
                ]}]),
            )
        }),
    );
    let mut tasks = Vec::new();
    let mut urls = Vec::new();
    for app in [inference, management] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        }));
    }
    let mut check = ModelServerCheck::new(ModelServer::TorchServe, urls[0].clone(), "noop");
    check.management_url = Some(urls[1].clone());
    check.version = Some("1.0".into());
    let r = ModelServerProbe::new(check)
        .probe(Duration::from_secs(5))
        .await;
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.details.model_versions, ["1.0 READY"]);
    for task in tasks {
        task.abort();
    }
}
