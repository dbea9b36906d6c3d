//! The generic webhook: the notification as JSON, signed so receivers can reject forgeries and
//! replays.
//!
//! Each request is a `POST` of the [`Notification`] serialised as JSON with a `"version"` field
//! added ([`WEBHOOK_VERSION`]), and these headers:
//!
//! - `Idempotency-Key: <notification id>`: the same for every retry of one notification, so a
//!   receiver can drop the copies at-least-once delivery may bring;
//! - `X-Rampart-Timestamp: <unix seconds>`;
//! - `X-Rampart-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` when a
//!   secret is configured (the scheme Stripe uses). A receiver recomputes the HMAC over the
//!   timestamp and the raw body, compares in constant time, and refuses timestamps too far from
//!   its clock: [`verify_signature`] does all of that.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use sha2::Sha256;

use super::http::{self, DEFAULT_TIMEOUT};
use super::{BuildError, Notifier, NotifyFuture};
use crate::alert::model::Notification;
use crate::config::Secret;

/// The payload format's version, sent as the `"version"` field.
pub const WEBHOOK_VERSION: &str = "1";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Rampart-Signature";
/// The header carrying the send time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Rampart-Timestamp";

type HmacSha256 = Hmac<Sha256>;

/// A generic webhook receiver's settings.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Where to `POST` (a secret: such URLs often carry a token).
    pub url: Secret,
    /// The HMAC-SHA256 key; `None` sends no signature.
    pub secret: Option<Secret>,
    /// Extra headers (for example `Authorization`); their values are not shown in `Debug`.
    pub headers: BTreeMap<String, String>,
    /// How long one attempt may take (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl WebhookConfig {
    /// Posts to `url`, unsigned, with the default timeout.
    pub fn new(url: Secret) -> Self {
        WebhookConfig {
            url,
            secret: None,
            headers: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Signs with `secret`.
    pub fn with_secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }
    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
    /// Sets the timeout of one attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends notifications to a generic webhook (see the module docs for the format).
pub struct WebhookNotifier {
    receiver: String,
    url: Secret,
    secret: Option<Secret>,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("receiver", &self.receiver)
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    version: &'static str,
    #[serde(flatten)]
    notification: &'a Notification,
}

impl WebhookNotifier {
    /// A notifier for the receiver named `receiver`.
    pub fn new(receiver: impl Into<String>, config: &WebhookConfig) -> Result<Self, BuildError> {
        http::check_url("webhook.url", config.url.expose())?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::InvalidHeader(name.clone()))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| BuildError::InvalidHeader(name.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(WebhookNotifier {
            receiver: receiver.into(),
            url: config.url.clone(),
            secret: config.secret.clone(),
            headers,
            client: http::client(config.timeout)?,
        })
    }

    /// The exact body sent for `notification`.
    pub fn body(notification: &Notification) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(&Payload {
            version: WEBHOOK_VERSION,
            notification,
        })
        .unwrap_or_default()
    }
}

impl Notifier for WebhookNotifier {
    fn receiver(&self) -> &str {
        &self.receiver
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let body = Self::body(notification);
            let now = DateTime::<Utc>::from(std::time::SystemTime::now());
            let mut headers = self.headers.clone();
            if let Ok(v) = HeaderValue::from_str(&notification.id) {
                headers.insert("idempotency-key", v);
            }
            headers.insert(TIMESTAMP_HEADER, HeaderValue::from(now.timestamp()));
            if let Some(secret) = &self.secret
                && let Ok(v) = HeaderValue::from_str(&sign(secret.expose().as_bytes(), now, &body))
            {
                headers.insert(SIGNATURE_HEADER, v);
            }
            http::post_json(
                &self.client,
                &self.receiver,
                self.url.expose(),
                headers,
                body,
            )
            .await
        })
    }
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail; an empty MAC would only fail to verify.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `at`:
/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], at: DateTime<Utc>, body: &[u8]) -> String {
    let t = at.timestamp();
    let tag = mac(secret, t, body).finalize().into_bytes();
    let mut hex = String::with_capacity(tag.len() * 2);
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("t={t},v1={hex}")
}

/// Why a webhook signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further from `now` than the tolerance: a replay, or a clock far off.
    #[error("signature timestamp outside the tolerance ({age_secs} s from now)")]
    OutsideTolerance {
        /// How far the timestamp is from now, in seconds (negative: in the future).
        age_secs: i64,
    },
    /// No `v1` signature matches: the body or timestamp was changed, or the secret differs.
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies a webhook request as a receiver written in Rust would: `header` is the
/// `X-Rampart-Signature` value, `body` the raw request body (verify before parsing it). Refuses
/// timestamps more than `tolerance` from `now` (either way), so a captured request cannot be
/// replayed later. Several `v1=` entries are accepted (any may match). Compares in constant time.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use rampart_monitor::alert::notify::{SignatureError, sign, verify_signature};
/// use std::time::{Duration, SystemTime};
///
/// let now = DateTime::<Utc>::from(SystemTime::now());
/// let header = sign(b"s3cret", now, b"{\"version\":\"1\"}");
/// let five_min = Duration::from_secs(300);
/// assert_eq!(verify_signature(b"s3cret", &header, b"{\"version\":\"1\"}", now, five_min), Ok(()));
/// assert_eq!(
///     verify_signature(b"s3cret", &header, b"{\"version\":\"2\"}", now, five_min),
///     Err(SignatureError::Mismatch)
/// );
/// let later = now + chrono::Duration::minutes(10);
/// assert!(matches!(
///     verify_signature(b"s3cret", &header, b"{\"version\":\"1\"}", later, five_min),
///     Err(SignatureError::OutsideTolerance { .. })
/// ));
/// ```
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            _ => {} // other schemes, ignored as Stripe's receivers do
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_secs = now.timestamp().saturating_sub(timestamp);
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if age_secs.unsigned_abs() > tolerance.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance { age_secs });
    }
    let expected = mac(secret, timestamp, body);
    if signatures
        .iter()
        .any(|sig| expected.clone().verify_slice(sig).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let header = sign(b"k", now, b"body");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        let tol = Duration::from_secs(300);
        assert_eq!(verify_signature(b"k", &header, b"body", now, tol), Ok(()));
        assert_eq!(
            verify_signature(b"other", &header, b"body", now, tol),
            Err(SignatureError::Mismatch)
        );
        // A replay with a new timestamp but the old signature fails.
        let forged = header.replace("t=1700000000", "t=1700000100");
        assert_eq!(
            verify_signature(b"k", &forged, b"body", now, tol),
            Err(SignatureError::Mismatch)
        );
        let early = now - chrono::Duration::seconds(301);
        assert_eq!(
            verify_signature(b"k", &header, b"body", early, tol),
            Err(SignatureError::OutsideTolerance { age_secs: -301 })
        );
        // Rotation: a second v1 that matches is enough.
        let two = format!(
            "{},v1={}",
            forged.replace("t=1700000100", "t=1700000000"),
            "00"
        );
        assert_eq!(verify_signature(b"k", &two, b"body", now, tol), Ok(()));
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=0g",
            "t=1,t=1,v1=00",
            "junk",
        ] {
            assert_eq!(
                verify_signature(b"k", bad, b"body", now, tol),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = WebhookConfig::new(Secret::new("https://h/hook?token=abc"))
            .with_secret(Secret::new("hmac-key"))
            .with_header("Authorization", "Bearer xyz");
        let n = WebhookNotifier::new("ops", &config).unwrap();
        for text in [format!("{config:?}"), format!("{n:?}")] {
            assert!(
                !text.contains("abc") && !text.contains("hmac-key"),
                "{text}"
            );
            assert!(!text.contains("xyz"), "{text}");
        }
    }
}
