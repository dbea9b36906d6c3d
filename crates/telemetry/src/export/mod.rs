//! Exporters: every one reads a [`Snapshot`](crate::Snapshot) and writes it in a wire format.
//!
//! - [`prometheus`]: Prometheus text 0.0.4 and OpenMetrics text 1.0, encoded with
//!   `prometheus-client`, for a `/metrics` endpoint that Prometheus scrapes, or registered into a
//!   `prometheus_client` registry you already serve.
//! - `otlp` (cargo feature `otlp`): OTLP metrics pushed over HTTP as protobuf to an
//!   OpenTelemetry collector, periodically, with timeouts and bounded retries.
//!
//! Names follow each format's conventions: a family `rampart_operation_duration` with unit
//! seconds is `rampart_operation_duration_seconds` in Prometheus and `rampart_operation_duration`
//! with unit `s` in OTLP; counters get `_total` in Prometheus only.
//!
//! ```
//! use rampart_telemetry::Telemetry;
//! use rampart_telemetry::export::prometheus;
//! use std::time::Duration;
//!
//! let telemetry = Telemetry::new();
//! telemetry.operation("db.query").record_ok(Duration::from_millis(3));
//! let text = prometheus::render(&telemetry);
//! assert!(text.contains(r#"rampart_operation_requests_total{operation="db.query"} 1"#));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use crate::HistogramValue;
use std::time::Duration;

#[cfg(feature = "otlp")]
pub mod otlp;
pub mod prometheus;

/// A boxed error, the cause of a failed request.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The writer refused the text (writing into a `String` never fails).
    #[error("could not write the metrics exposition")]
    Write(#[from] std::fmt::Error),
    /// No connection could be made to the endpoint.
    #[error("could not connect to {endpoint}")]
    Connect {
        /// The endpoint, without credentials.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The connection broke while sending the request or reading the answer.
    #[error("request to {endpoint} failed")]
    Request {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The endpoint did not answer in time.
    #[error("{endpoint} did not answer within {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The request timeout that expired.
        after: Duration,
    },
    /// The endpoint answered with an error status.
    #[error("{endpoint} answered {status}: {message}")]
    Status {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body, for the operator.
        message: String,
        /// How long the endpoint asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// The endpoint accepted the request but refused some data points (OTLP partial success).
    #[error("{endpoint} rejected {rejected} data points: {message}")]
    Rejected {
        /// The endpoint.
        endpoint: String,
        /// How many data points it refused.
        rejected: i64,
        /// Its explanation.
        message: String,
    },
}

impl ExportError {
    /// True if the endpoint did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ExportError::Timeout { .. })
    }

    /// The HTTP status the endpoint answered with, if that was the failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            ExportError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True if trying again later may succeed: connection failures, timeouts, and the statuses
    /// the OTLP/HTTP specification calls retryable (429, 502, 503, 504).
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Connect { .. }
            | ExportError::Request { .. }
            | ExportError::Timeout { .. } => true,
            ExportError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ExportError::Write(_) | ExportError::Rejected { .. } => false,
        }
    }
}

/// The gauge every exporter adds: series left out of the export, past a cardinality limit
/// ([`Snapshot::dropped_series`](crate::Snapshot::dropped_series)) or invalid (a counter below
/// zero or NaN, a histogram whose bounds or counts go backwards).
pub const DROPPED_SERIES_METRIC: &str = "rampart_telemetry_dropped_series";

const DROPPED_SERIES_HELP: &str =
    "Series left out of this export: past a cardinality limit, or invalid.";

/// Fills `out` with `h`'s buckets as counts per bucket (not cumulative), the `+Inf` bucket last,
/// and returns the total count; `None` if `h` is not a valid histogram. A `count` below the last
/// cumulative bucket is raised to it, so the buckets always add up to the count.
fn per_bucket(h: &HistogramValue, out: &mut Vec<(f64, u64)>) -> Option<u64> {
    out.clear();
    let (mut bound, mut seen) = (f64::NEG_INFINITY, 0u64);
    for &(upper, cumulative) in &h.buckets {
        if upper == f64::INFINITY {
            continue; // implied by `count`, written below
        }
        if upper.is_nan() || upper <= bound || cumulative < seen {
            return None;
        }
        out.push((upper, cumulative - seen));
        (bound, seen) = (upper, cumulative);
    }
    out.push((f64::INFINITY, h.count.saturating_sub(seen)));
    Some(h.count.max(seen))
}
