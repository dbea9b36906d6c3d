//! The one error type of AI calls, which tells callers what to do next: retry, wait, fall back.

use std::time::Duration;

/// A boxed cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an AI call failed. Ask [`is_retryable`](AiError::is_retryable),
/// [`is_rate_limited`](AiError::is_rate_limited) and [`retry_after`](AiError::retry_after)
/// rather than matching messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AiError {
    /// The provider answered with an HTTP error other than 429.
    #[error("{provider} answered HTTP {status}: {message}")]
    Status {
        /// The provider (client) name.
        provider: String,
        /// The HTTP status code.
        status: u16,
        /// The error message of the answer (`error.message` of the JSON body, else the body).
        message: String,
        /// The `Retry-After` the answer carried, if any (a 503 may).
        retry_after: Option<Duration>,
    },
    /// Throttled: the provider answered 429, or the local limiter refused before sending.
    #[error("rate limited {}by {provider}{}", if *.local { "locally " } else { "" }, .retry_after.map(|d| format!("; retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// The provider (client) name.
        provider: String,
        /// How long to wait before the request would be admitted, when known.
        retry_after: Option<Duration>,
        /// True when Rampart's own requests/tokens-per-minute limiter refused (nothing was sent).
        local: bool,
    },
    /// The request took longer than its timeout (or the deadline left).
    #[error("request to {provider} timed out after {after:?}")]
    Timeout {
        /// The provider (client) name.
        provider: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The deadline had passed before the request could be sent.
    #[error("deadline passed before calling {provider}")]
    DeadlineExceeded {
        /// The provider (client) name.
        provider: String,
    },
    /// The provider could not be reached, or the connection broke before an answer.
    #[error("could not reach {provider}")]
    Connect {
        /// The provider (client) name.
        provider: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// A streamed answer ended (or broke) before its `data: [DONE]` line.
    #[error("stream from {provider} ended before [DONE] after {events} events")]
    StreamCut {
        /// The provider (client) name.
        provider: String,
        /// The events received before the cut.
        events: usize,
        /// The transport error, if the connection broke rather than closed.
        #[source]
        source: Option<BoxError>,
    },
    /// The answer could not be decoded (not the documented JSON).
    #[error("could not decode the answer of {provider}")]
    Decode {
        /// The provider (client) name.
        provider: String,
        /// The decoding error.
        #[source]
        source: BoxError,
    },
    /// The circuit breaker of a route is open: the call was not made.
    #[error("circuit breaker of {route} is open")]
    BreakerOpen {
        /// The route (provider/model).
        route: String,
    },
    /// No API key could be read.
    #[error("api key for {provider}: {message}")]
    ApiKey {
        /// The provider (client) name.
        provider: String,
        /// What was wrong (never the key itself).
        message: String,
    },
    /// Every route of a fallback chain failed; the errors in the order the routes were tried.
    #[error("all {} routes failed; last: {}", .errors.len(), .errors.last().map(|(r, e)| format!("{r}: {e}")).unwrap_or_default())]
    AllRoutesFailed {
        /// `(route, error)` for each route tried.
        errors: Vec<(String, AiError)>,
    },
}

impl AiError {
    /// True when trying the same request again may succeed: connection failures, timeouts,
    /// throttling, HTTP 408/409/5xx and streams cut mid-way. A 4xx (bad request, auth, not found)
    /// and an undecodable answer are not retryable; an open breaker is a reason to fall back,
    /// not to retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            AiError::Status { status, .. } => {
                matches!(status, 408 | 409) || (500..600).contains(status)
            }
            AiError::RateLimited { .. }
            | AiError::Timeout { .. }
            | AiError::Connect { .. }
            | AiError::StreamCut { .. } => true,
            AiError::DeadlineExceeded { .. }
            | AiError::Decode { .. }
            | AiError::BreakerOpen { .. }
            | AiError::ApiKey { .. } => false,
            AiError::AllRoutesFailed { errors } => {
                errors.last().is_some_and(|(_, e)| e.is_retryable())
            }
        }
    }

    /// True when the call was throttled (HTTP 429 or the local limiter).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, AiError::RateLimited { .. })
    }

    /// True when the request (or the deadline) timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            AiError::Timeout { .. } | AiError::DeadlineExceeded { .. }
        )
    }

    /// How long the provider (or the local limiter) asked to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AiError::RateLimited { retry_after, .. } | AiError::Status { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// True when the error says something about the health of the provider: it counts as a
    /// failure for the route's breaker. Throttling, client errors (4xx) and an open breaker do
    /// not.
    pub fn is_provider_failure(&self) -> bool {
        match self {
            AiError::Status { status, .. } => *status >= 500,
            AiError::Timeout { .. }
            | AiError::Connect { .. }
            | AiError::StreamCut { .. }
            | AiError::Decode { .. } => true,
            _ => false,
        }
    }
}
