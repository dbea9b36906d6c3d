//! OTLP metrics export over HTTP (cargo feature `otlp`): a [`Snapshot`] as an OTLP
//! `ExportMetricsServiceRequest` in protobuf, POSTed to an OpenTelemetry collector's
//! `/v1/metrics` (OTLP/HTTP, port 4318 by default).
//!
//! - Counters are monotonic cumulative sums, gauges gauges, histograms explicit-bucket histograms
//!   (cumulative temporality, counts per bucket as OTLP wants them). Names stay as in the
//!   snapshot (no `_total`, no unit suffix); units are UCUM (`s`, `By`, `1`). The resource
//!   carries `service.name` and any attributes you add.
//! - Each request has a timeout; failures that may pass (connection refused or broken, timeout,
//!   429, 502, 503, 504) are retried a bounded number of times with exponential backoff and full
//!   jitter, honouring `Retry-After`. Other answers fail at once.
//! - Headers (an API key, `authorization`) are sent on every request and never printed: `Debug`
//!   shows `<redacted>`, and no error holds them.
//! - [`OtlpExporter::spawn`] pushes a fresh snapshot every interval until the returned
//!   [`OtlpTask`] is dropped or shut down (which pushes once more).
//!
//! Plain `http://` only (no TLS is built in): send to a collector on the same host or network,
//! which forwards over TLS. Built on `opentelemetry-proto`'s types; the `opentelemetry-otlp`
//! crate's own exporter only takes metrics its SDK aggregated, not a snapshot of ours.
//!
//! ```no_run
//! use rampart_telemetry::Telemetry;
//! use rampart_telemetry::export::otlp::OtlpConfig;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let telemetry = Telemetry::new();
//! let mut config = OtlpConfig::new("http://127.0.0.1:4318/v1/metrics")
//!     .with_service_name("checkout")
//!     .with_header("authorization", "Bearer s3cret");
//! config.interval = Duration::from_secs(15);
//! let exporter = config.build()?;
//!
//! exporter.export(&telemetry.snapshot()).await?; // once, now
//! let task = exporter.spawn(telemetry.clone()); // and every 15 s from now on
//! // ... at shutdown: stop, and push what was recorded since the last push.
//! task.shutdown().await?;
//! # Ok(()) }
//! ```

mod http;
mod proto;

use self::http::Endpoint;
use super::ExportError;
use crate::snapshot::Snapshot;
use crate::{Labels, Telemetry};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use rampart_resilience::ConfigError;
use rampart_resilience::retry::{Backoff, Jitter};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Where and how to push metrics. Start from [`OtlpConfig::new`] or `default()`, set fields,
/// then [`build`](OtlpConfig::build).
#[derive(Clone)]
#[non_exhaustive]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP metrics URL, `http://` only; a URL without a path gets
    /// `/v1/metrics`. Default `http://127.0.0.1:4318/v1/metrics`.
    pub endpoint: String,
    /// Headers sent with every request, such as `authorization`. Their values are never printed.
    pub headers: Vec<(String, String)>,
    /// The resource's `service.name`. Default `rampart`.
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, `service.instance.id`, ...).
    pub resource: Vec<(String, String)>,
    /// How often [`OtlpExporter::spawn`] pushes. Default 60 s, OpenTelemetry's default.
    pub interval: Duration,
    /// How long one request may take, connecting included. Default 10 s.
    pub timeout: Duration,
    /// Requests per export, the first included; at least 1. Default 3.
    pub max_attempts: u32,
    /// The wait before the first retry, doubled for each next one, with full jitter.
    /// Default 1 s.
    pub backoff: Duration,
    /// No wait between attempts is longer, `Retry-After` included. Default 30 s.
    pub max_backoff: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: "http://127.0.0.1:4318/v1/metrics".into(),
            headers: Vec::new(),
            service_name: "rampart".into(),
            resource: Vec::new(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &headers)
            .field("service_name", &self.service_name)
            .field("resource", &self.resource)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

impl OtlpConfig {
    /// The defaults, sending to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            ..OtlpConfig::default()
        }
    }

    /// Adds a header sent with every request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets `service.name`.
    #[must_use]
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Adds a resource attribute.
    #[must_use]
    pub fn with_resource(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// Checks every field and builds the exporter; every problem is reported, each with its
    /// path (`otlp.headers[0]`). Header values never appear in the messages.
    pub fn build(&self) -> Result<OtlpExporter, ConfigError> {
        let mut errors = ConfigError::new(None);
        let endpoint = Endpoint::parse(&self.endpoint)
            .map_err(|message| errors.push("otlp.endpoint", message))
            .ok();
        let mut headers = Vec::with_capacity(self.headers.len());
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let path = format!("otlp.headers[{i}]");
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(path, format!("{name:?} is not a valid header name"));
                continue;
            };
            let Ok(mut value) = HeaderValue::from_str(value) else {
                errors.push(
                    path,
                    format!("the value of {name} is not a valid header value"),
                );
                continue;
            };
            value.set_sensitive(true);
            headers.push((name, value));
        }
        if self.service_name.trim().is_empty() {
            errors.push("otlp.service_name", "must not be empty");
        }
        for (field, value) in [("interval", self.interval), ("timeout", self.timeout)] {
            if value.is_zero() {
                errors.push(format!("otlp.{field}"), "must be more than 0s");
            }
        }
        if self.max_attempts == 0 {
            errors.push("otlp.max_attempts", "must be at least 1, got 0");
        }
        if self.backoff > self.max_backoff {
            errors.push(
                "otlp.backoff",
                format!(
                    "must not exceed max_backoff ({:?}), got {:?}",
                    self.max_backoff, self.backoff
                ),
            );
        }
        let Some(endpoint) = endpoint.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let mut resource = vec![
            proto::attribute("service.name", &self.service_name),
            proto::attribute("telemetry.sdk.name", proto::SCOPE),
            proto::attribute("telemetry.sdk.language", "rust"),
            proto::attribute("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ];
        resource.extend(self.resource.iter().map(|(k, v)| proto::attribute(k, v)));
        Ok(OtlpExporter {
            inner: Arc::new(Exporter {
                endpoint,
                headers,
                resource,
                interval: self.interval,
                timeout: self.timeout,
                max_attempts: self.max_attempts,
                backoff: Backoff::new(self.backoff, self.max_backoff, 2.0, Jitter::Full),
                start_unix_nano: unix_nanos(SystemTime::now()),
            }),
        })
    }
}

struct Exporter {
    endpoint: Endpoint,
    headers: Vec<(HeaderName, HeaderValue)>,
    resource: Vec<KeyValue>,
    interval: Duration,
    timeout: Duration,
    max_attempts: u32,
    backoff: Backoff,
    /// Cumulative sums and histograms count from here: when the exporter was built.
    start_unix_nano: u64,
}

/// Pushes snapshots to an OTLP/HTTP endpoint. Cheap to clone.
#[derive(Clone)]
pub struct OtlpExporter {
    inner: Arc<Exporter>,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.inner.endpoint)
            .field("headers", &self.inner.headers.len())
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// The URL requests go to.
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.to_string()
    }

    /// Sends `snapshot` now, retrying as configured; the error is the last attempt's.
    ///
    /// At most `max_attempts` requests of at most `timeout` each, with at most `max_backoff`
    /// between them. Cancel-safe: dropping the future stops at once and closes the connection.
    pub async fn export(&self, snapshot: &Snapshot) -> Result<(), ExportError> {
        let e = &self.inner;
        let times = proto::Times {
            start_unix_nano: e.start_unix_nano,
            now_unix_nano: unix_nanos(SystemTime::now()),
        };
        let body = Bytes::from(proto::request(snapshot, &e.resource, times).encode_to_vec());
        let mut rng = fastrand::Rng::new();
        let (mut attempt, mut delay) = (0, e.backoff.base_delay());
        loop {
            let error = match http::post(&e.endpoint, &e.headers, body.clone(), e.timeout).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            attempt += 1;
            if attempt >= e.max_attempts || !error.is_retryable() {
                return Err(error);
            }
            delay = match error {
                ExportError::Status {
                    retry_after: Some(wait),
                    ..
                } => wait.min(e.backoff.max_delay()),
                _ => e.backoff.delay(attempt - 1, delay, &mut rng),
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// Pushes a fresh snapshot of `telemetry` every interval (the first one interval from now)
    /// until the returned task is dropped or [shut down](OtlpTask::shutdown). Needs a tokio
    /// runtime. Outcomes are counted in `telemetry`, as `rampart_telemetry_otlp_exports_total`
    /// by `outcome` (`ok`, `failed`), and the last error is kept ([`OtlpTask::last_error`]).
    pub fn spawn(&self, telemetry: Telemetry) -> OtlpTask {
        let count = |outcome: &'static str| {
            telemetry.counter(
                "rampart_telemetry_otlp_exports",
                "OTLP exports by outcome, retries included in one.",
                Labels::new().with("outcome", outcome),
            )
        };
        let (ok, failed) = (count("ok"), count("failed"));
        let last_error = Arc::new(Mutex::new(None));
        let exporter = self.clone();
        let errors = last_error.clone();
        let source = telemetry.clone();
        let task = tokio::spawn(async move {
            let interval = exporter.inner.interval;
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match exporter.export(&source.snapshot()).await {
                    Ok(()) => ok.inc(),
                    Err(error) => {
                        failed.inc();
                        *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                    }
                }
            }
        });
        OtlpTask {
            task,
            exporter: self.clone(),
            telemetry,
            last_error,
        }
    }
}

/// The periodic push started by [`OtlpExporter::spawn`]; dropping it stops the pushes.
#[derive(Debug)]
pub struct OtlpTask {
    task: JoinHandle<()>,
    exporter: OtlpExporter,
    telemetry: Telemetry,
    last_error: Arc<Mutex<Option<String>>>,
}

impl OtlpTask {
    /// The message of the last failed periodic export, if any failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the pushes (an export under way is abandoned) and pushes once more, so nothing
    /// recorded since the last push is lost.
    pub async fn shutdown(self) -> Result<(), ExportError> {
        self.task.abort();
        self.exporter.export(&self.telemetry.snapshot()).await
    }
}

impl Drop for OtlpTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
