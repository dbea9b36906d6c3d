//! Shared by the notifier tests: sample notifications and an in-process HTTP receiver that
//! records every request and answers as told.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use rampart_monitor::alert::{
    Acknowledgement, AlertSnapshot, AlertStatus, Fingerprint, Labels, Notification, Severity,
};
use tokio::sync::mpsc;

/// How long a test waits for something that should happen at once.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

/// An alert of `rule` on `target`.
pub fn alert(rule: &str, target: &str, severity: Severity, status: AlertStatus) -> AlertSnapshot {
    let labels: Labels = [
        ("alertname", rule),
        ("severity", severity.as_str()),
        ("target", target),
        ("group", "shop"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let annotations: Labels = [
        ("summary".to_owned(), format!("{target} is {rule}")),
        (
            "description".to_owned(),
            format!("{rule} on {target} for 5m"),
        ),
    ]
    .into();
    AlertSnapshot {
        fingerprint: Fingerprint::of(&labels),
        status,
        rule: rule.to_owned(),
        severity,
        labels,
        annotations,
        starts_at: at(0),
        ends_at: (status == AlertStatus::Resolved).then(|| at(300)),
        value: Some(1234.5),
        acknowledged: None,
    }
}

/// A notification carrying `alerts`.
pub fn notification(id: &str, alerts: Vec<AlertSnapshot>) -> Notification {
    let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    Notification {
        id: id.to_owned(),
        receiver: "ops".to_owned(),
        group_key: "{}:{group=\"shop\"}".to_owned(),
        group_labels: [("group".to_owned(), "shop".to_owned())].into(),
        status,
        alerts,
        created_at: at(310),
        tier: 0,
        external_url: Some("http://rampart.example:8080/alerts".to_owned()),
    }
}

/// Three alerts: one firing, one firing and acknowledged, one resolved.
pub fn mixed() -> Notification {
    let mut acked = alert("HighLatency", "api", Severity::Warning, AlertStatus::Firing);
    acked.acknowledged = Some(Acknowledgement {
        by: "alice".into(),
        at: at(100),
        comment: None,
    });
    notification(
        "n-mixed-1",
        vec![
            alert("TargetDown", "db", Severity::Critical, AlertStatus::Firing),
            acked,
            alert("CertExpiring", "web", Severity::Info, AlertStatus::Resolved),
        ],
    )
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Never answer (the client's timeout must end the request).
    pub hang: bool,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            hang: false,
        }
    }
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
    pub fn hang() -> Self {
        Reply {
            hang: true,
            ..Reply::status(200)
        }
    }
}

#[derive(Clone)]
struct Shared {
    seen: mpsc::UnboundedSender<Recorded>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
}

/// An HTTP server on 127.0.0.1 that records every request (any method, any path).
pub struct Receiver {
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Recorded>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _ = shared.seen.send(Recorded {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = shared
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

impl Receiver {
    /// Starts a receiver answering `default` unless a queued reply says otherwise.
    pub async fn start(default: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let replies = Arc::new(Mutex::new(VecDeque::new()));
        let default = Arc::new(Mutex::new(default));
        let app = Router::new().fallback(handle).with_state(Shared {
            seen: tx,
            replies: Arc::clone(&replies),
            default: Arc::clone(&default),
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            seen: rx,
            replies,
            default,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next request with `reply`.
    pub fn then(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    /// The next request, waiting at most [`DEADLINE`].
    pub async fn next(&mut self) -> Recorded {
        tokio::time::timeout(DEADLINE, self.seen.recv())
            .await
            .expect("no request reached the receiver in time")
            .unwrap()
    }

    /// Requests already received and not yet taken.
    pub fn drain(&mut self) -> Vec<Recorded> {
        let mut out = Vec::new();
        while let Ok(r) = self.seen.try_recv() {
            out.push(r);
        }
        out
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
