//! Shared by the outbox tests (and the outbox bench): notifications, a small HTTP notifier, and an
//! in-process axum receiver that records what it gets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rampart_monitor::alert::notify::NotifyFuture;
use rampart_monitor::alert::{AlertStatus, Labels, Notification, Notifier, NotifyError};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A notification `id` for `receiver`, with no alerts.
pub fn notification(id: &str, receiver: &str) -> Notification {
    Notification {
        id: id.to_owned(),
        receiver: receiver.to_owned(),
        group_key: format!("{{}}:{{alertname=\"Down\",n=\"{id}\"}}"),
        group_labels: Labels::new(),
        status: AlertStatus::Firing,
        alerts: Vec::new(),
        created_at: chrono::DateTime::<Utc>::from(std::time::SystemTime::now()),
        tier: 0,
        external_url: None,
    }
}

/// POSTs the notification as JSON to `http://addr/hook/<receiver>` with an `Idempotency-Key`;
/// maps 2xx to `Ok`, 429 to `RateLimited`, 408/5xx and connection errors to `Unavailable` and
/// other statuses to `Rejected`, reading `Retry-After` in seconds.
#[derive(Debug)]
pub struct HttpNotifier {
    pub receiver: String,
    pub addr: SocketAddr,
}

impl HttpNotifier {
    pub fn new(receiver: &str, addr: SocketAddr) -> Arc<Self> {
        Arc::new(HttpNotifier {
            receiver: receiver.to_owned(),
            addr,
        })
    }

    fn unavailable(&self, message: String, retry_after: Option<Duration>) -> NotifyError {
        NotifyError::Unavailable {
            receiver: self.receiver.clone(),
            message,
            retry_after,
            source: None,
        }
    }

    async fn post(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(n).unwrap();
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| self.unavailable(format!("connect: {e}"), None))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable(format!("handshake: {e}"), None))?;
        let conn = tokio::spawn(conn);
        let request = hyper::Request::post(format!("/hook/{}", self.receiver))
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .header("idempotency-key", &n.id)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unavailable(format!("request: {e}"), None))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let _ = response.into_body().collect().await;
        conn.abort();
        match status {
            200..=299 => Ok(()),
            429 => Err(NotifyError::RateLimited {
                receiver: self.receiver.clone(),
                retry_after,
            }),
            408 | 500..=599 => Err(self.unavailable(format!("HTTP {status}"), retry_after)),
            _ => Err(NotifyError::Rejected {
                receiver: self.receiver.clone(),
                message: format!("HTTP {status}"),
            }),
        }
    }
}

impl Notifier for HttpNotifier {
    fn receiver(&self) -> &str {
        &self.receiver
    }
    fn kind(&self) -> &'static str {
        "webhook"
    }
    fn send<'a>(&'a self, n: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(10), self.post(n)).await {
                Ok(r) => r,
                Err(_) => Err(self.unavailable("timed out".into(), None)),
            }
        })
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub receiver: String,
    pub id: String,
    pub status: u16,
    pub at: std::time::Instant,
}

/// What the receiver answers and what it got.
#[derive(Debug, Default)]
pub struct Inbox {
    /// Answers to give, in order, before answering 200: (status, Retry-After seconds).
    pub plan: Mutex<VecDeque<(u16, Option<u64>)>>,
    /// Every request, in arrival order.
    pub received: Mutex<Vec<Received>>,
    /// Woken at each request.
    pub arrived: tokio::sync::Notify,
}

impl Inbox {
    /// Ids answered 200 for `receiver`, in arrival order (copies included).
    pub fn accepted(&self, receiver: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.receiver == receiver && r.status == 200)
            .map(|r| r.id.clone())
            .collect()
    }

    /// Requests so far.
    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `cond` holds, up to `deadline`; panics with `what` if it does not.
    pub async fn wait_until(&self, deadline: Duration, what: &str, cond: impl Fn(&Inbox) -> bool) {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let arrived = self.arrived.notified();
            if cond(self) {
                return;
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                assert!(cond(self), "timed out waiting for {what}");
                return;
            }
        }
    }
}

async fn hook(
    State(inbox): State<Arc<Inbox>>,
    Path(receiver): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n: Notification = serde_json::from_slice(&body).unwrap();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(key, n.id, "the idempotency key is the notification's id");
    assert_eq!(n.receiver, receiver);
    let (status, retry_after) = inbox
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, None));
    inbox.received.lock().unwrap().push(Received {
        receiver,
        id: n.id,
        status,
        at: std::time::Instant::now(),
    });
    inbox.arrived.notify_waiters();
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(s) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    response
}

/// The in-process receiver: `POST /hook/{receiver}`.
pub struct ReceiverServer {
    pub addr: SocketAddr,
    pub inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl ReceiverServer {
    /// Listens on `addr` (port 0 for any) with `inbox`.
    pub async fn start(addr: SocketAddr, inbox: Arc<Inbox>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook/{receiver}", post(hook))
            .with_state(Arc::clone(&inbox));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ReceiverServer { addr, inbox, task }
    }

    /// Stops listening (connections are then refused).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A free address on 127.0.0.1 nobody listens on (yet).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
