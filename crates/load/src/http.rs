//! HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) over kept-alive connections.
//!
//! HTTP/1.1: each worker owns its connections and sends one request at a time on each. HTTP/2:
//! the workers of one group share one connection per host and multiplex their requests on it as
//! concurrent streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::config::RequestSpec;
use crate::record::ErrorKind;
use crate::template::Vars;

/// The HTTP version spoken to the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1, one request at a time per connection.
    #[default]
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (h2c), requests multiplexed as streams.
    Http2,
}

type Body = Full<Bytes>;

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// One open connection: the sender and the task driving the connection, stopped when dropped.
struct Conn {
    authority: String,
    sender: Sender,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// HTTP/2 connections shared by a group of workers, one per host.
#[derive(Default)]
pub(crate) struct H2Group {
    open: tokio::sync::Mutex<Vec<Conn>>,
}

/// A worker's connections, one per `host:port`, opened on first use and again after a failure;
/// for HTTP/2 they live in the worker's [`H2Group`].
#[derive(Default)]
pub(crate) struct Conns {
    open: Vec<Conn>,
    group: Option<Arc<H2Group>>,
}

/// How one request went.
pub(crate) struct Sent {
    /// When it began to be served: the connection was taken (and opened if need be).
    pub started: Instant,
    /// `None` on success.
    pub error: Option<ErrorKind>,
}

fn spawn_driver<F: Future + Send + 'static>(connection: F) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = connection.await;
    })
}

async fn connect(authority: &str, version: HttpVersion) -> Result<Conn, ErrorKind> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let (sender, driver) = match version {
        HttpVersion::Http1 => {
            let (mut s, connection) = http1::handshake(io).await.map_err(|_| ErrorKind::Connect)?;
            let driver = spawn_driver(connection);
            s.ready().await.map_err(|_| ErrorKind::Connect)?;
            (Sender::H1(s), driver)
        }
        HttpVersion::Http2 => {
            let (mut s, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|_| ErrorKind::Connect)?;
            let driver = spawn_driver(connection);
            s.ready().await.map_err(|_| ErrorKind::Connect)?;
            (Sender::H2(s), driver)
        }
    };
    Ok(Conn {
        authority: authority.to_owned(),
        sender,
        driver,
    })
}

/// A sender for one request: the worker's own HTTP/1.1 connection or a clone of a shared HTTP/2
/// one.
enum Taken<'a> {
    H1(&'a mut http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Conns {
    /// Connections for one worker; with `group`, HTTP/2 connections shared with its group.
    pub(crate) fn new(group: Option<Arc<H2Group>>) -> Self {
        Conns {
            open: Vec::new(),
            group,
        }
    }

    async fn take(&mut self, authority: &str) -> Result<Taken<'_>, ErrorKind> {
        if let Some(group) = &self.group {
            let mut open = group.open.lock().await;
            if let Some(i) = open.iter().position(|c| c.authority == authority) {
                match &open[i].sender {
                    Sender::H2(s) if !s.is_closed() => return Ok(Taken::H2(s.clone())),
                    _ => {
                        open.swap_remove(i);
                    }
                }
            }
            let conn = connect(authority, HttpVersion::Http2).await?;
            let Sender::H2(s) = &conn.sender else {
                return Err(ErrorKind::Connect);
            };
            let s = s.clone();
            open.push(conn);
            return Ok(Taken::H2(s));
        }
        let mut alive = None;
        if let Some(i) = self.open.iter().position(|c| c.authority == authority) {
            let ready = match &mut self.open[i].sender {
                Sender::H1(s) => s.ready().await.is_ok(),
                Sender::H2(_) => false,
            };
            if ready {
                alive = Some(i);
            } else {
                self.open.swap_remove(i);
            }
        }
        let i = match alive {
            Some(i) => i,
            None => {
                self.open
                    .push(connect(authority, HttpVersion::Http1).await?);
                self.open.len() - 1
            }
        };
        match &mut self.open[i].sender {
            Sender::H1(s) => Ok(Taken::H1(s)),
            Sender::H2(_) => Err(ErrorKind::Connect),
        }
    }

    /// Sends `spec` filled from `vars`, reads the whole response within `limit`, and sets the
    /// variables it extracts into `vars`.
    pub(crate) async fn send(
        &mut self,
        spec: &RequestSpec,
        vars: &mut Vars,
        limit: Duration,
    ) -> Sent {
        let started = Instant::now();
        let result = timeout(limit, self.exchange(spec, vars)).await;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(kind)) => Some(kind),
            Err(_) => Some(ErrorKind::Timeout),
        };
        if matches!(error, Some(ErrorKind::Timeout | ErrorKind::Io)) {
            // An HTTP/1.1 connection may be mid-response or broken: start afresh next time. A
            // shared HTTP/2 connection is replaced only once closed (see `take`): one stream
            // timing out does not condemn the others.
            self.open.retain(|c| c.authority != spec.authority);
        }
        Sent { started, error }
    }

    async fn exchange(&mut self, spec: &RequestSpec, vars: &mut Vars) -> Result<(), ErrorKind> {
        let url: Uri = spec.url.render(vars).parse().map_err(|_| ErrorKind::Io)?;
        let h2 = self.group.is_some();
        // HTTP/1.1 sends the path and a Host header; HTTP/2 the whole URL (its :authority).
        let target = if h2 {
            url.to_string()
        } else {
            url.path_and_query().map_or("/", |p| p.as_str()).to_owned()
        };
        let body = spec
            .body
            .as_ref()
            .map(|b| Bytes::from(b.render(vars)))
            .unwrap_or_default();
        let mut req = Request::builder().method(spec.method.clone()).uri(target);
        if !h2 {
            let host = HeaderValue::from_str(&spec.authority).map_err(|_| ErrorKind::Io)?;
            req = req.header(HOST, host);
        }
        for (name, value) in &spec.headers {
            let v = HeaderValue::from_str(&value.render(vars)).map_err(|_| ErrorKind::Io)?;
            req = req.header(name, v);
        }
        let req = req.body(Full::new(body)).map_err(|_| ErrorKind::Io)?;
        let resp = match self.take(&spec.authority).await? {
            Taken::H1(s) => s.send_request(req).await,
            Taken::H2(mut s) => s.send_request(req).await,
        }
        .map_err(|_| ErrorKind::Io)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| ErrorKind::Io)?
            .to_bytes();
        if status.is_client_error() {
            return Err(ErrorKind::Http4xx);
        }
        if status.is_server_error() {
            return Err(ErrorKind::Http5xx);
        }
        if spec.extract.is_empty() {
            return Ok(());
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| ErrorKind::Extract)?;
        extract(&json, spec, vars)
    }
}

/// Sets the variables `spec` extracts from `reply` (a string as itself, anything else as JSON).
pub(crate) fn extract(
    reply: &serde_json::Value,
    spec: &RequestSpec,
    vars: &mut Vars,
) -> Result<(), ErrorKind> {
    for (var, pointer) in &spec.extract {
        let v = reply.pointer(pointer).ok_or(ErrorKind::Extract)?;
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        vars.set(var.clone(), text);
    }
    Ok(())
}
