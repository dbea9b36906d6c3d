//! A real HTTP server on 127.0.0.1 for the probe and monitor tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// When the https server's certificate expires: 2040-01-01T00:00:00Z in Unix seconds.
pub const CERT_NOT_AFTER: u64 = 2_208_988_800;

/// The server's switches and counters, shared with the test.
#[derive(Debug, Default)]
pub struct Control {
    /// `/flip` answers 503 while this is set.
    pub failing: AtomicBool,
    /// Connections accepted so far.
    pub connections: AtomicUsize,
}

/// A server answering:
/// `/health` 200 `{"status":"ok"}`, `/down` 200 `{"status":"down"}`, `/error` 500,
/// `/slow` 200 after 5 s, `/redirect/N` 302 to `/redirect/N-1` and `/redirect/0` to `/health`,
/// `/relative` 302 to `health` (a relative location), `/big` 2 MiB then `tail`,
/// `/flip` 200 or 503 by `Control::failing`, `/echo` the method and body.
pub struct TestServer {
    pub addr: SocketAddr,
    pub control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// A server speaking https with a fresh self-signed certificate for `localhost` that
    /// expires at [`CERT_NOT_AFTER`], and that certificate (for the client to trust).
    pub async fn start_tls() -> (Self, rustls::pki_types::CertificateDer<'static>) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&signing_key).unwrap().der().clone();
        (
            Self::start_tls_with(vec![cert.clone()], &signing_key).await,
            cert,
        )
    }

    /// A server speaking https with the certificate `chain` (its own first) and its `key`.
    pub async fn start_tls_with(
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: &rcgen::KeyPair,
    ) -> Self {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(Some(acceptor)).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(Control::default());
        let shared = Arc::clone(&control);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let control = Arc::clone(&shared);
                let tls = tls.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let control = Arc::clone(&control);
                        async move { Ok::<_, Infallible>(answer(req, &control).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            control,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An https URL by the name the certificate is for.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

async fn answer(req: Request<Incoming>, control: &Control) -> Response<Full<Bytes>> {
    let reply = |status: u16, body: Bytes| {
        Response::builder()
            .status(status)
            .body(Full::new(body))
            .unwrap()
    };
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/health" => reply(200, Bytes::from_static(br#"{"status":"ok"}"#)),
        "/down" => reply(200, Bytes::from_static(br#"{"status":"down"}"#)),
        "/error" => reply(500, Bytes::from_static(b"boom")),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(200, Bytes::new())
        }
        "/relative" => Response::builder()
            .status(302)
            .header("location", "health")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        "/big" => {
            let mut body = vec![b'x'; 2 << 20];
            body.extend_from_slice(b"tail");
            reply(200, Bytes::from(body))
        }
        "/flip" if control.failing.load(Ordering::SeqCst) => reply(503, Bytes::new()),
        "/flip" => reply(200, Bytes::from_static(b"ok")),
        "/echo" => {
            use http_body_util::BodyExt;
            let method = req.method().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            reply(
                200,
                Bytes::from(format!("{method} {}", String::from_utf8_lossy(&body))),
            )
        }
        p => match p
            .strip_prefix("/redirect/")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(n) => {
                let next = if n == 0 {
                    "/health".to_owned()
                } else {
                    format!("/redirect/{}", n - 1)
                };
                Response::builder()
                    .status(302)
                    .header("location", next)
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
            None => reply(404, Bytes::new()),
        },
    }
}
