//! Slack incoming webhooks, with a Block Kit message: a header, one section per alert
//! (severity, target, summary, start and end), a context line, and a plain `text` fallback for
//! notifications and clients that cannot show blocks.
//!
//! Slack's documented limits are kept: at most 50 blocks per message, 3000 characters per
//! section text, 150 per header, 10 context elements. Past them the message says "... and N
//! more" instead of being refused.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::http::{self, DEFAULT_TIMEOUT};
use super::{BuildError, Notifier, NotifyError, NotifyFuture};
use crate::alert::model::{AlertSnapshot, AlertStatus, Notification, Severity};
use crate::config::Secret;

/// Slack's limit on blocks in one message.
pub(crate) const MAX_BLOCKS: usize = 50;
/// Slack's limit on a section's text.
pub(crate) const MAX_SECTION_TEXT: usize = 3000;
/// Slack's limit on a header's text.
pub(crate) const MAX_HEADER_TEXT: usize = 150;

/// A Slack incoming webhook's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlackConfig {
    /// The incoming webhook URL (`https://hooks.slack.com/services/...`: a secret).
    pub url: Secret,
    /// How long one attempt may take (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl SlackConfig {
    /// Posts to `url` with the default timeout.
    pub fn new(url: Secret) -> Self {
        SlackConfig {
            url,
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Sets the timeout of one attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Sends notifications to a Slack incoming webhook.
pub struct SlackNotifier {
    receiver: String,
    url: Secret,
    client: reqwest::Client,
}

impl fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("receiver", &self.receiver)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SlackNotifier {
    /// A notifier for the receiver named `receiver`.
    pub fn new(receiver: impl Into<String>, config: &SlackConfig) -> Result<Self, BuildError> {
        http::check_url("slack.url", config.url.expose())?;
        Ok(SlackNotifier {
            receiver: receiver.into(),
            url: config.url.clone(),
            client: http::client(config.timeout)?,
        })
    }

    /// The message (JSON) sent for `notification`.
    pub fn message(notification: &Notification) -> Value {
        let mut blocks = vec![json!({
            "type": "header",
            "text": { "type": "plain_text", "text": truncate(&notification.title(), MAX_HEADER_TEXT), "emoji": true },
        })];
        // Room for the header, the context and possibly an "and N more" section.
        let room = MAX_BLOCKS - 2;
        let alerts = &notification.alerts;
        let shown = if alerts.len() > room {
            room - 1
        } else {
            alerts.len()
        };
        for alert in &alerts[..shown] {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": truncate(&section_text(alert), MAX_SECTION_TEXT) },
            }));
        }
        if shown < alerts.len() {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": format!("... and {} more", alerts.len() - shown) },
            }));
        }
        let mut context = vec![json!({
            "type": "mrkdwn",
            "text": truncate(
                &format!("Rampart · receiver `{}` · {} firing, {} resolved",
                    escape(&notification.receiver),
                    notification.firing().count(),
                    notification.resolved().count()),
                MAX_SECTION_TEXT),
        })];
        if let Some(url) = &notification.external_url {
            context.push(json!({
                "type": "mrkdwn",
                "text": truncate(&format!("<{url}|Open Rampart>"), MAX_SECTION_TEXT),
            }));
        }
        blocks.push(json!({ "type": "context", "elements": context }));
        json!({
            "text": truncate(&fallback_text(notification), MAX_SECTION_TEXT),
            "blocks": blocks,
        })
    }
}

impl Notifier for SlackNotifier {
    fn receiver(&self) -> &str {
        &self.receiver
    }

    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&Self::message(notification)).map_err(|e| {
                NotifyError::Rejected {
                    receiver: self.receiver.clone(),
                    message: format!("cannot encode the message: {e}"),
                }
            })?;
            http::post_json(
                &self.client,
                &self.receiver,
                self.url.expose(),
                HeaderMap::new(),
                body,
            )
            .await
        })
    }
}

fn emoji(alert: &AlertSnapshot) -> &'static str {
    match (alert.status, alert.severity) {
        (AlertStatus::Resolved, _) => ":large_green_circle:",
        (_, Severity::Critical) => ":red_circle:",
        (_, Severity::Warning) => ":large_orange_circle:",
        (_, Severity::Info) => ":large_blue_circle:",
    }
}

fn section_text(alert: &AlertSnapshot) -> String {
    let mut text = format!(
        "{} *{}* · {} · {}\n{}",
        emoji(alert),
        escape(&alert.rule),
        alert.severity.as_str().to_uppercase(),
        alert.status.as_str(),
        escape(alert.summary()),
    );
    if let Some(target) = alert.target() {
        text.push_str(&format!("\n*Target:* `{}`", escape(target)));
    }
    text.push_str(&format!(
        "\n*Started:* {}",
        alert.starts_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    if let Some(ends) = alert.ends_at {
        text.push_str(&format!(
            "  *Ended:* {}",
            ends.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if let Some(ack) = &alert.acknowledged {
        text.push_str(&format!("\n*Acknowledged by* {}", escape(&ack.by)));
    }
    text
}

fn fallback_text(notification: &Notification) -> String {
    let mut text = notification.title();
    for alert in &notification.alerts {
        text.push_str(&format!(
            "\n{} {}: {}",
            alert.status.as_str(),
            alert.rule,
            alert.summary()
        ));
    }
    text
}

/// Escapes Slack's three control characters in text from labels and annotations.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `text` to at most `max` characters, ending with "..." when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "...");
        assert_eq!(truncate(&"é".repeat(10), 5), "éé...");
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
