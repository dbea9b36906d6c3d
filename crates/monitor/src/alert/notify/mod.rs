//! Notifiers: how a [`Notification`] reaches a receiver (generic webhook, Slack, email,
//! PagerDuty, Alertmanager). Each one is a [`Notifier`]; the outbox calls it, retries what
//! [`NotifyError::is_retryable`] says may succeed later, and dead-letters the rest.
//!
//! Each notifier makes exactly one attempt per [`Notifier::send`], bounded by its request
//! timeout, and classifies what went wrong: HTTP 429 is [`NotifyError::RateLimited`] (with
//! `Retry-After`, in seconds or as an HTTP-date); 408, 5xx, refused connections and timeouts are
//! [`NotifyError::Unavailable`] (a 503's `Retry-After` is kept too); any other 4xx is
//! [`NotifyError::Rejected`]. Over SMTP, 4xx replies are transient ([`NotifyError::Unavailable`])
//! and 5xx ones permanent ([`NotifyError::Rejected`]).
//!
//! Receivers are configured with [`ReceiverConfig`] (see `docs/alerting.md`, "Receivers");
//! [`ReceiverConfig::build`] makes the notifier.

mod alertmanager;
mod config;
mod email;
pub(crate) mod http;
mod pagerduty;
mod slack;
mod webhook;

pub use alertmanager::{AlertmanagerConfig, AlertmanagerNotifier};
#[allow(unused_imports)] // for `[alerting]`, which the engine's parser adds
pub(crate) use config::receiver;
pub use config::{RECEIVER_KINDS, ReceiverConfig, ReceiverKind};
pub use email::{EmailConfig, EmailNotifier, SmtpSecurity};
pub use http::{DEFAULT_TIMEOUT, parse_retry_after};
pub use pagerduty::{DEFAULT_PAGERDUTY_URL, PagerDutyConfig, PagerDutyNotifier};
pub use slack::{SlackConfig, SlackNotifier};
pub use webhook::{
    SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, WEBHOOK_VERSION, WebhookConfig,
    WebhookNotifier, sign, verify_signature,
};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::model::Notification;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The future [`Notifier::send`] returns.
pub type NotifyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;

/// Delivers notifications to one receiver. Object-safe: the outbox holds `Arc<dyn Notifier>`.
///
/// `send` must be bounded in time (a notifier applies its own request timeout) and must not log
/// secrets (URLs with tokens, keys, passwords).
pub trait Notifier: Send + Sync + fmt::Debug {
    /// The receiver's name, as configured.
    fn receiver(&self) -> &str;

    /// The kind of notifier (`"webhook"`, `"slack"`, `"email"`, `"pagerduty"`,
    /// `"alertmanager"`), for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Sends `notification` once. `Ok` means the receiver accepted it.
    fn send<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a>;
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The receiver asked us to slow down (HTTP 429, SMTP 421/450/451-style throttling).
    #[error("{receiver} is throttling notifications")]
    RateLimited {
        /// The receiver.
        receiver: String,
        /// How long it asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The receiver could not be reached or failed in a way that may pass (connection refused,
    /// timeout, HTTP 5xx, SMTP 4xx).
    #[error("could not deliver to {receiver}: {message}")]
    Unavailable {
        /// The receiver.
        receiver: String,
        /// What happened, with no secret in it.
        message: String,
        /// How long it asked us to wait (a 503's `Retry-After`), if it said.
        retry_after: Option<Duration>,
        /// The cause.
        #[source]
        source: Option<BoxError>,
    },
    /// The receiver rejected this notification and would reject it again (HTTP 4xx other than
    /// 408 and 429, SMTP 5xx, a payload it cannot take): retrying cannot help, so the outbox
    /// dead-letters it at once.
    #[error("{receiver} rejected the notification: {message}")]
    Rejected {
        /// The receiver.
        receiver: String,
        /// What it said, with no secret in it.
        message: String,
    },
}

impl NotifyError {
    /// True if sending the same notification later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, NotifyError::Rejected { .. })
    }

    /// True if the receiver is throttling.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, NotifyError::RateLimited { .. })
    }

    /// How long the receiver asked us to wait before the next attempt, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NotifyError::RateLimited { retry_after, .. }
            | NotifyError::Unavailable { retry_after, .. } => *retry_after,
            NotifyError::Rejected { .. } => None,
        }
    }
}

/// Why a notifier could not be made from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A URL is not an absolute `http`/`https` URL (the URL is not repeated: it may hold a token).
    #[error("{0} is not an absolute http(s) URL")]
    InvalidUrl(String),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// An email address does not parse.
    #[error("invalid email address {0:?}")]
    InvalidAddress(String),
    /// The HTTP client or SMTP transport could not be set up.
    #[error("cannot set up the client: {0}")]
    Client(String),
}
