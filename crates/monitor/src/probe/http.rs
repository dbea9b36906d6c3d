//! The HTTP(S) probe: one request on a fresh connection (or a kept one), every phase timed, the
//! response checked for status and body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use super::{Failure, FailureKind, Probe, ProbeFuture, ProbeResult, conclude, connect, tls};
use crate::config::HttpCheck;

/// At most this much of a response body is read; checks see the first `BODY_CAP` bytes.
pub const BODY_CAP: usize = 1 << 20;

/// Probes an `http://` or `https://` URL with hyper's HTTP/1 client (TLS by rustls, verified
/// against the Mozilla root certificates of `webpki-roots` unless other roots are given). Phases:
/// dns, connect, tls, first byte, body (summed over redirects). By default each probe opens a
/// fresh connection so that every phase is measured; with `keep_alive` the connection is kept
/// for the next probe.
#[derive(Debug)]
pub struct HttpProbe {
    check: HttpCheck,
    tls: Result<Arc<ClientConfig>, String>,
    kept: Mutex<Option<Connection>>,
}

/// A client connection and the task driving it, stopped when this is dropped.
#[derive(Debug)]
struct Connection {
    endpoint: Endpoint,
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl HttpProbe {
    /// A probe for `check`; https is verified against the Mozilla roots of `webpki-roots`.
    pub fn new(check: HttpCheck) -> Self {
        HttpProbe {
            check,
            tls: tls::mozilla_client_config(),
            kept: Mutex::new(None),
        }
    }

    /// A probe for `check` whose https connections trust only `roots` (a private CA, say).
    pub fn with_root_certificates(
        check: HttpCheck,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Self {
        Self::with_roots(check, tls::root_store(roots))
    }

    fn with_roots(check: HttpCheck, roots: rustls::RootCertStore) -> Self {
        HttpProbe {
            check,
            tls: tls::client_config(roots),
            kept: Mutex::new(None),
        }
    }

    async fn run(&self, deadline: Instant, result: &mut ProbeResult) -> Result<(), Failure> {
        let mut url = self.check.url.clone();
        let mut method = self.check.method.clone();
        let mut body = self.check.body.clone().unwrap_or_default();
        loop {
            let endpoint = Endpoint::of(&url)?;
            let mut conn = self.open(&endpoint, deadline, result).await?;
            let request = self.request(&url, &endpoint.authority, &method, &body)?;
            let sent = Instant::now();
            let response = match timeout_at(deadline, conn.sender.send_request(request)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err((FailureKind::Protocol, format!("request failed: {e}"))),
                Err(_) => return Err(timed_out("waiting for the response")),
            };
            add(&mut result.phases.first_byte, sent.elapsed());
            let status = response.status();
            result.details.status = Some(status.as_u16());
            if let Some(next) = self.redirect(&url, &response, result)? {
                read_body(response, deadline, result).await?;
                url = next;
                if matches!(
                    status,
                    StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER
                ) {
                    method = Method::GET;
                    body.clear();
                }
                continue;
            }
            let bytes = read_body(response, deadline, result).await?;
            if self.check.keep_alive && endpoint == Endpoint::of(&self.check.url)? {
                *self.kept.lock().await = Some(conn);
            }
            return self.judge(status.as_u16(), &bytes);
        }
    }

    /// A kept connection to `endpoint` if there is a usable one, else a fresh one.
    async fn open(
        &self,
        endpoint: &Endpoint,
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<Connection, Failure> {
        if self.check.keep_alive
            && let Some(mut kept) = self.kept.lock().await.take()
        {
            let ready = timeout_at(deadline, kept.sender.ready()).await;
            if kept.endpoint == *endpoint && matches!(ready, Ok(Ok(()))) {
                result.details.reused_connection = true;
                return Ok(kept);
            }
        }
        let (stream, remote) = connect(&endpoint.authority, deadline, &mut result.phases).await?;
        result.details.remote = Some(remote);
        let (sender, driver) = if endpoint.tls {
            let config = self.tls.clone().map_err(|e| (FailureKind::Tls, e))?;
            let tls = tls::handshake(config, &endpoint.host, stream, deadline, result).await?;
            start_http(tls, deadline).await?
        } else {
            start_http(stream, deadline).await?
        };
        Ok(Connection {
            endpoint: endpoint.clone(),
            sender,
            driver,
        })
    }

    fn request(
        &self,
        url: &Uri,
        authority: &str,
        method: &Method,
        body: &str,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, authority);
        for (name, value) in &self.check.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| {
                (
                    FailureKind::Protocol,
                    format!("cannot build the request: {e}"),
                )
            })
    }

    /// The next URL if `response` is a redirect to follow; a failure if there are too many.
    fn redirect<B>(
        &self,
        url: &Uri,
        response: &Response<B>,
        result: &mut ProbeResult,
    ) -> Result<Option<Uri>, Failure> {
        let max = self.check.max_redirects;
        if max == 0 || !response.status().is_redirection() {
            return Ok(None);
        }
        let Some(location) = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
        else {
            return Ok(None);
        };
        if result.details.redirects >= max {
            return Err((
                FailureKind::TooManyRedirects,
                format!("more than {max} redirects (next: {location})"),
            ));
        }
        result.details.redirects += 1;
        resolve(url, location).map(Some)
    }

    fn judge(&self, status: u16, body: &[u8]) -> Result<(), Failure> {
        let c = &self.check;
        if !c.expected_status.iter().any(|r| r.contains(status)) {
            return Err((
                FailureKind::StatusMismatch,
                format!("unexpected status {status}"),
            ));
        }
        let text = String::from_utf8_lossy(body);
        if let Some(needle) = &c.body_contains
            && !text.contains(needle.as_str())
        {
            return Err((
                FailureKind::BodyMismatch,
                format!("body does not contain {needle:?}"),
            ));
        }
        if let Some(re) = &c.body_regex
            && !re.is_match(&text)
        {
            return Err((
                FailureKind::BodyMismatch,
                format!("body does not match /{re}/"),
            ));
        }
        if let Some(j) = &c.json_pointer {
            let json: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| (FailureKind::BodyMismatch, format!("body is not JSON: {e}")))?;
            match json.pointer(&j.pointer) {
                Some(found) if *found == j.equals => {}
                Some(found) => {
                    return Err((
                        FailureKind::BodyMismatch,
                        format!("{} is {found}, expected {}", j.pointer, j.equals),
                    ));
                }
                None => {
                    return Err((
                        FailureKind::BodyMismatch,
                        format!("{} is absent", j.pointer),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Probe for HttpProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            let outcome = self.run(started + timeout, &mut result).await;
            conclude(result, outcome, started)
        })
    }
}

fn timed_out(what: &str) -> Failure {
    (FailureKind::Timeout, format!("timed out {what}"))
}

fn add(phase: &mut Option<Duration>, d: Duration) {
    *phase = Some(phase.unwrap_or_default() + d);
}

/// Where a URL's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `host:port`, the port defaulting to 80 or 443.
    authority: String,
    host: String,
    tls: bool,
}

impl Endpoint {
    fn of(url: &Uri) -> Result<Self, Failure> {
        let tls = match url.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err((FailureKind::Protocol, format!("not an http(s) URL: {url}"))),
        };
        let host = url
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Endpoint {
            authority,
            host,
            tls,
        })
    }
}

/// The read buffer of a probe's HTTP connection.
const READ_BUFFER: usize = 4096;

/// Starts HTTP/1 on `io`, with the task that drives the connection.
async fn start_http<I>(
    io: I,
    deadline: Instant,
) -> Result<(SendRequest<Full<Bytes>>, JoinHandle<()>), Failure>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Probe responses are small: a 4 KiB read buffer (hyper's default grows to 8 KiB and more)
    // keeps a kept-alive connection per target cheap at 10,000 targets.
    let handshake = http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER))
        .handshake(TokioIo::new(io));
    let (sender, connection) = timeout_at(deadline, handshake)
        .await
        .map_err(|_| timed_out("starting HTTP"))?
        .map_err(|e| (FailureKind::Protocol, format!("cannot start HTTP: {e}")))?;
    let driver = tokio::spawn(async move {
        // The connection ends when the sender is dropped or the server closes it; its error
        // surfaces on the request, so it is not reported again here.
        let _ = connection.await;
    });
    Ok((sender, driver))
}

/// `location` made absolute against `base`.
fn resolve(base: &Uri, location: &str) -> Result<Uri, Failure> {
    let bad = |_| {
        (
            FailureKind::Protocol,
            format!("bad redirect location {location:?}"),
        )
    };
    let absolute = if location.contains("://") {
        location.to_owned()
    } else {
        let scheme = base.scheme_str().unwrap_or("http");
        let authority = base.authority().map_or("", |a| a.as_str());
        if location.starts_with('/') {
            format!("{scheme}://{authority}{location}")
        } else {
            let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
            format!("{scheme}://{authority}{dir}/{location}")
        }
    };
    absolute.parse::<Uri>().map_err(bad)
}

/// Reads at most [`BODY_CAP`] bytes of the body before the deadline.
async fn read_body(
    response: Response<hyper::body::Incoming>,
    deadline: Instant,
    result: &mut ProbeResult,
) -> Result<Vec<u8>, Failure> {
    let started = Instant::now();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < BODY_CAP {
        match timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out("reading the body")),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err((
                    FailureKind::Protocol,
                    format!("reading the body failed: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let room = BODY_CAP - bytes.len();
                    bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
        }
    }
    add(&mut result.phases.body, started.elapsed());
    result.details.body_bytes = Some(bytes.len());
    Ok(bytes)
}
