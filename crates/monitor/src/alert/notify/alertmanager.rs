//! Prometheus Alertmanager, through its v2 API: `POST {base}/api/v2/alerts` with a JSON list of
//! the notification's alerts (`labels`, `annotations`, `startsAt`, `endsAt` for resolved ones,
//! `generatorURL`), for users who already route, silence and notify through Alertmanager.
//!
//! Alertmanager considers a firing alert resolved once it has not heard of it for its
//! `resolve_timeout` (5 minutes by default), so the notifications that reach it should repeat
//! more often than that while alerts fire (a route's `repeat_interval`), as Prometheus does.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::http::{self, DEFAULT_TIMEOUT};
use super::{BuildError, Notifier, NotifyError, NotifyFuture};
use crate::alert::model::{AlertStatus, Notification};

/// An Alertmanager's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL (`http://alertmanager:9093`); alerts go to `{url}/api/v2/alerts`.
    pub url: String,
    /// How long one attempt may take (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl AlertmanagerConfig {
    /// Sends to the Alertmanager at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        AlertmanagerConfig {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Sets the timeout of one attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Sends notifications to a Prometheus Alertmanager.
pub struct AlertmanagerNotifier {
    receiver: String,
    endpoint: String,
    client: reqwest::Client,
}

impl fmt::Debug for AlertmanagerNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertmanagerNotifier")
            .field("receiver", &self.receiver)
            .finish_non_exhaustive()
    }
}

impl AlertmanagerNotifier {
    /// A notifier for the receiver named `receiver`.
    pub fn new(
        receiver: impl Into<String>,
        config: &AlertmanagerConfig,
    ) -> Result<Self, BuildError> {
        let endpoint = http::join(&config.url, "/api/v2/alerts");
        http::check_url("alertmanager.url", &endpoint)?;
        Ok(AlertmanagerNotifier {
            receiver: receiver.into(),
            endpoint,
            client: http::client(config.timeout)?,
        })
    }

    /// The JSON list posted for `notification`.
    pub fn alerts(notification: &Notification) -> Value {
        Value::Array(
            notification
                .alerts
                .iter()
                .map(|alert| {
                    let mut a = json!({
                        "labels": alert.labels,
                        "annotations": alert.annotations,
                        "startsAt": alert.starts_at.to_rfc3339(),
                    });
                    // A resolved alert must carry an end, or Alertmanager keeps it firing.
                    let ends = match alert.status {
                        AlertStatus::Resolved => {
                            Some(alert.ends_at.unwrap_or(notification.created_at))
                        }
                        AlertStatus::Firing => alert.ends_at,
                    };
                    if let Some(ends) = ends {
                        a["endsAt"] = json!(ends.to_rfc3339());
                    }
                    if let Some(url) = &notification.external_url {
                        a["generatorURL"] = json!(url);
                    }
                    a
                })
                .collect(),
        )
    }
}

impl Notifier for AlertmanagerNotifier {
    fn receiver(&self) -> &str {
        &self.receiver
    }

    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&Self::alerts(notification)).map_err(|e| {
                NotifyError::Rejected {
                    receiver: self.receiver.clone(),
                    message: format!("cannot encode the alerts: {e}"),
                }
            })?;
            http::post_json(
                &self.client,
                &self.receiver,
                &self.endpoint,
                HeaderMap::new(),
                body,
            )
            .await
        })
    }
}
