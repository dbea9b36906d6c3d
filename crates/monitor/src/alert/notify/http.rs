//! What the HTTP notifiers share: one client per notifier with a request timeout, one POST per
//! attempt, and the classification of what came back into a [`NotifyError`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use super::{BuildError, NotifyError};

/// The default time one attempt may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a receiver's error body kept in a [`NotifyError`] message.
const BODY_SNIPPET: usize = 200;

/// A client whose every request (connect, send, read the response) ends within `timeout`.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rampart/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::Client(e.without_url().to_string()))
}

/// Checks that `url` is an absolute `http`/`https` URL; `what` names it in the error (never
/// the URL itself, which may carry a token).
pub(crate) fn check_url(what: &str, url: &str) -> Result<reqwest::Url, BuildError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(u),
        _ => Err(BuildError::InvalidUrl(what.to_owned())),
    }
}

/// Joins `base` (with or without a trailing slash) and `path` (starting with `/`).
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Sends one POST of `body` (JSON) with `headers` and classifies the outcome. The URL is never
/// put in an error (it may carry a token).
pub(crate) async fn post_json(
    client: &reqwest::Client,
    receiver: &str,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<(), NotifyError> {
    let response = client
        .post(url)
        .headers(headers)
        .header(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| transport_error(receiver, e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    Err(status_error(
        receiver,
        status,
        &headers,
        &text,
        DateTime::<Utc>::from(std::time::SystemTime::now()),
    ))
}

/// Classifies a request that got no response: refused, reset, timed out. Always retryable.
pub(crate) fn transport_error(receiver: &str, error: reqwest::Error) -> NotifyError {
    let error = error.without_url();
    let message = if error.is_timeout() {
        "request timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the response broke off".to_owned()
    } else {
        "request failed".to_owned()
    };
    NotifyError::Unavailable {
        receiver: receiver.to_owned(),
        message,
        retry_after: None,
        source: Some(Box::new(error)),
    }
}

/// Classifies a non-2xx response: 429 → [`NotifyError::RateLimited`]; 408 and 5xx →
/// [`NotifyError::Unavailable`] (with a 503's `Retry-After`); any other status (4xx, and 1xx/3xx,
/// which a receiver should never send) → [`NotifyError::Rejected`].
pub(crate) fn status_error(
    receiver: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    now: DateTime<Utc>,
) -> NotifyError {
    let retry_after = || {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    };
    let message = describe(status, body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        NotifyError::RateLimited {
            receiver: receiver.to_owned(),
            retry_after: retry_after(),
        }
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        NotifyError::Unavailable {
            receiver: receiver.to_owned(),
            message,
            retry_after: retry_after(),
            source: None,
        }
    } else {
        NotifyError::Rejected {
            receiver: receiver.to_owned(),
            message,
        }
    }
}

/// `HTTP 400 Bad Request: <the start of the body>`.
fn describe(status: StatusCode, body: &str) -> String {
    let body = body.trim();
    let mut message = format!("HTTP {status}");
    if !body.is_empty() {
        let mut end = body.len().min(BODY_SNIPPET);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        message.push_str(": ");
        message.push_str(&body[..end]);
        if end < body.len() {
            message.push_str("...");
        }
    }
    message
}

/// Parses a `Retry-After` value: delay-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, counted from `now`; a date in the past is zero).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use rampart_monitor::alert::notify::parse_retry_after;
/// use std::time::Duration;
///
/// let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap();
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
///     Some(Duration::from_secs(60))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (when.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        h
    }

    #[test]
    fn statuses_are_classified() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let e = status_error("r", StatusCode::TOO_MANY_REQUESTS, &headers("7"), "", now);
        assert!(e.is_rate_limited());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let e = status_error(
            "r",
            StatusCode::SERVICE_UNAVAILABLE,
            &headers("Thu, 01 Jan 2026 00:00:30 GMT"),
            "",
            now,
        );
        assert!(matches!(e, NotifyError::Unavailable { .. }));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        let e = status_error("r", StatusCode::REQUEST_TIMEOUT, &HeaderMap::new(), "", now);
        assert!(e.is_retryable());
        let e = status_error("r", StatusCode::BAD_REQUEST, &headers("5"), "no", now);
        assert!(!e.is_retryable());
        assert_eq!(e.retry_after(), None);
        assert!(e.to_string().contains("HTTP 400 Bad Request: no"), "{e}");
        let e = status_error("r", StatusCode::FOUND, &HeaderMap::new(), "", now);
        assert!(!e.is_retryable());
    }

    #[test]
    fn long_bodies_are_cut_on_a_char_boundary() {
        let body = "é".repeat(300);
        let m = describe(StatusCode::BAD_REQUEST, &body);
        assert!(m.ends_with("..."));
        assert!(m.len() < 260);
    }

    #[test]
    fn retry_after_in_the_past_is_zero() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
