//! One OTLP/HTTP request: POST protobuf to the endpoint over HTTP/1.1, read the answer.
//!
//! A fresh connection per export: pushes are seconds apart, and a new connection never trips
//! over one the collector closed meanwhile.

use crate::export::ExportError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message;
use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How much of an answer is read: enough for any OTLP response or error message.
const MAX_ANSWER: usize = 64 * 1024;
/// How much of an error answer goes into [`ExportError::Status`].
const MAX_MESSAGE: usize = 512;

/// Where requests go: an `http://` URL with a host, checked when the exporter is built.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub(super) uri: Uri,
    host: String,
    port: u16,
    authority: String,
}

impl Endpoint {
    /// Parses `url`; `/v1/metrics` is the path if it has none. Errors are for the operator.
    pub(super) fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}): {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https is not supported (no TLS is built in): send to a collector \
                            over http, such as one on the same host"
                        .into(),
                );
            }
            _ => return Err(format!("must start with http://, got {url:?}")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("has no host: {url:?}"));
        };
        if authority.as_str().contains('@') {
            return Err("must not hold credentials: put them in a header".into());
        }
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") | Some("") => "/v1/metrics",
            Some(p) => p,
        };
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let authority = authority.as_str().to_owned();
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| format!("not a URL ({e}): {url:?}"))?;
        Ok(Endpoint {
            uri,
            host,
            port,
            authority,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uri, f)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uri, f)
    }
}

/// Aborts the connection task when the request is done or dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `body` once, within `timeout`. Cancel-safe: dropping the future closes the connection.
pub(super) async fn post(
    endpoint: &Endpoint,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<(), ExportError> {
    match tokio::time::timeout(timeout, post_once(endpoint, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(ExportError::Timeout {
            endpoint: endpoint.to_string(),
            after: timeout,
        }),
    }
}

async fn post_once(
    endpoint: &Endpoint,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<(), ExportError> {
    let failed = |source: hyper::Error| ExportError::Request {
        endpoint: endpoint.to_string(),
        source: Box::new(source),
    };
    let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| ExportError::Connect {
            endpoint: endpoint.to_string(),
            source: Box::new(e),
        })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));

    // HTTP/1.1 wants the path in the request line, not the whole URL.
    let path = endpoint
        .uri
        .path_and_query()
        .map_or("/v1/metrics", |p| p.as_str());
    let mut request = Request::post(path)
        .header(HOST, endpoint.authority.as_str())
        .header(CONTENT_TYPE, "application/x-protobuf")
        .header(
            USER_AGENT,
            concat!("rampart-telemetry/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| ExportError::Request {
            endpoint: endpoint.to_string(),
            source: Box::new(e),
        })?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }

    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let protobuf = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
    let answer = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    if status.is_success() {
        let partial = ExportMetricsServiceResponse::decode(answer)
            .ok()
            .and_then(|r| r.partial_success)
            .filter(|p| p.rejected_data_points > 0);
        return match partial {
            Some(p) => Err(ExportError::Rejected {
                endpoint: endpoint.to_string(),
                rejected: p.rejected_data_points,
                message: p.error_message,
            }),
            None => Ok(()),
        };
    }
    Err(ExportError::Status {
        endpoint: endpoint.to_string(),
        status: status.as_u16(),
        message: describe(&answer, protobuf),
        retry_after,
    })
}

/// The `google.rpc.Status` an OTLP/HTTP error answer carries (only the message is read).
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An error answer's text: the status message of a protobuf answer, else the body's start.
fn describe(answer: &[u8], protobuf: bool) -> String {
    let text = match RpcStatus::decode(answer) {
        Ok(status) if protobuf => status.message,
        _ => String::from_utf8_lossy(answer).into_owned(),
    };
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_with_a_host_and_a_default_path() {
        let e = Endpoint::parse("http://127.0.0.1:4318").expect("valid");
        assert_eq!(e.to_string(), "http://127.0.0.1:4318/v1/metrics");
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 4318));
        let e = Endpoint::parse("http://[::1]/otlp/v1/metrics").expect("valid");
        assert_eq!((e.host.as_str(), e.port), ("::1", 80));
        assert_eq!(e.uri.path(), "/otlp/v1/metrics");
        assert!(Endpoint::parse("https://collector:4318").is_err());
        assert!(Endpoint::parse("collector:4318").is_err());
        assert!(Endpoint::parse("http://user:secret@collector:4318").is_err());
    }

    #[test]
    fn error_answers_are_described_briefly() {
        let status = RpcStatus {
            code: 3,
            message: "bad metric name".into(),
        };
        assert_eq!(describe(&status.encode_to_vec(), true), "bad metric name");
        assert_eq!(describe(b" overloaded \n", false), "overloaded");
        let long = "x".repeat(2 * MAX_MESSAGE);
        assert_eq!(
            describe(long.as_bytes(), false).chars().count(),
            MAX_MESSAGE + 1
        );
    }
}
