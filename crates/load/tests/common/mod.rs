//! An in-process HTTP/1.1 server on 127.0.0.1 that counts and records what it gets.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What one request looked like.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: String,
    pub method: String,
    pub uri: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Default)]
pub struct State {
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// `/stall` holds the request with this number (from 1) for 500 ms.
    pub stall_request: AtomicU64,
    pub seen: Mutex<Vec<Seen>>,
}

/// The server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    _tasks: JoinSet<()>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let path = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let (status, reply) = match path.as_str() {
        "/stall" => {
            if n == state.stall_request.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            (StatusCode::OK, "ok".to_owned())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(20)).await;
            (StatusCode::OK, "ok".to_owned())
        }
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "no".to_owned()),
        "/login" => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let user = v["user"].as_str().unwrap_or("?").to_owned();
            (
                StatusCode::OK,
                serde_json::json!({"data": {"token": format!("tok-{user}")}}).to_string(),
            )
        }
        _ => (StatusCode::OK, "ok".to_owned()),
    };
    state.seen.lock().unwrap().push(Seen {
        version,
        method,
        uri,
        authorization,
        body,
    });
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(reply)))
        .unwrap())
}

/// Starts an HTTP/1.1 server on a free port of 127.0.0.1.
pub async fn start() -> Server {
    serve(false).await
}

/// Starts an HTTP/2 (cleartext, prior knowledge) server on a free port of 127.0.0.1.
pub async fn start_h2() -> Server {
    serve(true).await
}

async fn serve(h2: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State::default());
    let mut tasks = JoinSet::new();
    let st = Arc::clone(&state);
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let _ = stream.set_nodelay(true);
            st.connections.fetch_add(1, Ordering::SeqCst);
            let st = Arc::clone(&st);
            conns.spawn(async move {
                let svc = service_fn(move |req| handle(Arc::clone(&st), req));
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    });
    Server {
        addr,
        state,
        _tasks: tasks,
    }
}

/// Parses `rampart load` flags.
pub fn args(argv: &[&str]) -> rampart_load::cli::LoadArgs {
    use clap::Parser;
    let mut all = vec!["rampart load"];
    all.extend_from_slice(argv);
    rampart_load::cli::LoadArgs::try_parse_from(all).unwrap()
}
