//! PagerDuty Events API v2: one event per alert, `POST {base}/v2/enqueue`.
//!
//! - `event_action`: `trigger` for a firing alert, `acknowledge` for a firing alert someone
//!   acknowledged, `resolve` for a resolved one.
//! - `dedup_key`: the alert's [`Fingerprint`](crate::alert::Fingerprint), a hash of its labels.
//!   It is the same in every process and across restarts, so the trigger, acknowledge and resolve
//!   of one alert always land on the same PagerDuty incident, and a trigger sent twice (a retry,
//!   or a re-delivery after a crash) does not open a second one.
//! - `payload`: `summary` (the `summary` annotation, or the rule), `source` (the `target` label,
//!   else the configured source), `severity` (info, warning, critical map to themselves),
//!   `timestamp`, `component` (target), `group` (the `group` label), `class` (the rule) and
//!   `custom_details` with the labels, annotations and value.
//!
//! A notification with several alerts sends several events, in order; if one fails, the send
//! fails and the outbox retries the whole notification, which is harmless: PagerDuty
//! deduplicates by `dedup_key`.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::http::{self, DEFAULT_TIMEOUT};
use super::slack::truncate;
use super::{BuildError, Notifier, NotifyError, NotifyFuture};
use crate::alert::model::{AlertSnapshot, AlertStatus, Notification, Severity};
use crate::config::Secret;

/// PagerDuty's Events API base URL.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com";

/// PagerDuty's limit on `payload.summary`.
const MAX_SUMMARY: usize = 1024;

/// A PagerDuty service integration's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PagerDutyConfig {
    /// The integration's routing key (a secret).
    pub routing_key: Secret,
    /// The Events API base URL (default [`DEFAULT_PAGERDUTY_URL`]); events go to
    /// `{url}/v2/enqueue`.
    pub url: String,
    /// `payload.source` for alerts without a `target` label (default `"rampart"`).
    pub source: String,
    /// How long one request may take (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl PagerDutyConfig {
    /// Sends to PagerDuty with `routing_key`.
    pub fn new(routing_key: Secret) -> Self {
        PagerDutyConfig {
            routing_key,
            url: DEFAULT_PAGERDUTY_URL.to_owned(),
            source: "rampart".to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Sends to another base URL (a proxy, a test server).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }
    /// Sets the timeout of one request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Sends notifications to PagerDuty's Events API v2.
pub struct PagerDutyNotifier {
    receiver: String,
    routing_key: Secret,
    endpoint: String,
    source: String,
    client: reqwest::Client,
}

impl fmt::Debug for PagerDutyNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyNotifier")
            .field("receiver", &self.receiver)
            .field("routing_key", &self.routing_key)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl PagerDutyNotifier {
    /// A notifier for the receiver named `receiver`.
    pub fn new(receiver: impl Into<String>, config: &PagerDutyConfig) -> Result<Self, BuildError> {
        let endpoint = http::join(&config.url, "/v2/enqueue");
        http::check_url("pagerduty.url", &endpoint)?;
        Ok(PagerDutyNotifier {
            receiver: receiver.into(),
            routing_key: config.routing_key.clone(),
            endpoint,
            source: config.source.clone(),
            client: http::client(config.timeout)?,
        })
    }

    /// The events sent for `notification`, one per alert, with `routing_key` in each.
    pub fn events(
        notification: &Notification,
        routing_key: &Secret,
        default_source: &str,
    ) -> Vec<Value> {
        notification
            .alerts
            .iter()
            .map(|alert| event(notification, alert, routing_key, default_source))
            .collect()
    }
}

/// `trigger`, `acknowledge` or `resolve`.
fn action(alert: &AlertSnapshot) -> &'static str {
    match (alert.status, &alert.acknowledged) {
        (AlertStatus::Resolved, _) => "resolve",
        (AlertStatus::Firing, Some(_)) => "acknowledge",
        (AlertStatus::Firing, None) => "trigger",
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn event(
    notification: &Notification,
    alert: &AlertSnapshot,
    routing_key: &Secret,
    default_source: &str,
) -> Value {
    let mut event = json!({
        "routing_key": routing_key.expose(),
        "event_action": action(alert),
        "dedup_key": alert.fingerprint.to_string(),
    });
    if action(alert) == "trigger" {
        let mut payload = json!({
            "summary": truncate(alert.summary(), MAX_SUMMARY),
            "source": alert.target().unwrap_or(default_source),
            "severity": severity(alert.severity),
            "timestamp": alert.starts_at.to_rfc3339(),
            "class": alert.rule,
            "custom_details": {
                "labels": alert.labels,
                "annotations": alert.annotations,
                "value": alert.value,
                "notification": notification.id,
            },
        });
        if let Some(target) = alert.target() {
            payload["component"] = json!(target);
        }
        if let Some(group) = alert.labels.get("group") {
            payload["group"] = json!(group);
        }
        event["payload"] = payload;
        event["client"] = json!("Rampart");
        if let Some(url) = &notification.external_url {
            event["client_url"] = json!(url);
        }
    }
    event
}

impl Notifier for PagerDutyNotifier {
    fn receiver(&self) -> &str {
        &self.receiver
    }

    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            for event in Self::events(notification, &self.routing_key, &self.source) {
                let body = serde_json::to_vec(&event).map_err(|e| NotifyError::Rejected {
                    receiver: self.receiver.clone(),
                    message: format!("cannot encode the event: {e}"),
                })?;
                http::post_json(
                    &self.client,
                    &self.receiver,
                    &self.endpoint,
                    HeaderMap::new(),
                    body,
                )
                .await?;
            }
            Ok(())
        })
    }
}
