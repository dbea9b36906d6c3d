//! HTTP/1.1 over kept-alive connections: each worker owns its connections, one request at a time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::config::RequestSpec;
use crate::record::ErrorKind;
use crate::template::Vars;

/// One open connection: the sender and the task driving the connection, stopped when dropped.
struct Conn {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A worker's connections, one per `host:port`, opened on first use and again after a failure.
#[derive(Default)]
pub(crate) struct Conns {
    open: Vec<Conn>,
}

/// How one request went.
pub(crate) struct Sent {
    /// When it began to be served: the connection was taken (and opened if need be).
    pub started: Instant,
    /// `None` on success.
    pub error: Option<ErrorKind>,
}

async fn connect(authority: &str) -> Result<Conn, ErrorKind> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn {
        authority: authority.to_owned(),
        sender,
        driver,
    })
}

impl Conns {
    async fn take(&mut self, authority: &str) -> Result<&mut Conn, ErrorKind> {
        if let Some(i) = self.open.iter().position(|c| c.authority == authority) {
            if self.open[i].sender.ready().await.is_ok() {
                return Ok(&mut self.open[i]);
            }
            self.open.swap_remove(i);
        }
        let mut conn = connect(authority).await?;
        conn.sender.ready().await.map_err(|_| ErrorKind::Connect)?;
        self.open.push(conn);
        let last = self.open.len() - 1;
        Ok(&mut self.open[last])
    }

    fn forget(&mut self, authority: &str) {
        self.open.retain(|c| c.authority != authority);
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
        if matches!(
            error,
            Some(ErrorKind::Timeout | ErrorKind::Io | ErrorKind::Connect)
        ) {
            // The connection may be mid-response or broken: start afresh next time.
            self.forget(&spec.authority);
        }
        Sent { started, error }
    }

    async fn exchange(&mut self, spec: &RequestSpec, vars: &mut Vars) -> Result<(), ErrorKind> {
        let url: Uri = spec.url.render(vars).parse().map_err(|_| ErrorKind::Io)?;
        let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let body = spec
            .body
            .as_ref()
            .map(|b| Bytes::from(b.render(vars)))
            .unwrap_or_default();
        let mut req = Request::builder()
            .method(spec.method.clone())
            .uri(path)
            .header(
                HOST,
                HeaderValue::from_str(&spec.authority).map_err(|_| ErrorKind::Io)?,
            );
        for (name, value) in &spec.headers {
            let v = HeaderValue::from_str(&value.render(vars)).map_err(|_| ErrorKind::Io)?;
            req = req.header(name, v);
        }
        let req = req.body(Full::new(body)).map_err(|_| ErrorKind::Io)?;
        let conn = self.take(&spec.authority).await?;
        let resp = conn
            .sender
            .send_request(req)
            .await
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
        if !spec.extract.is_empty() {
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| ErrorKind::Extract)?;
            for (var, pointer) in &spec.extract {
                let v = json.pointer(pointer).ok_or(ErrorKind::Extract)?;
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                vars.set(var.clone(), text);
            }
        }
        Ok(())
    }
}
