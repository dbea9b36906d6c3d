//! The alert data every part of alerting shares: severities, label sets, fingerprints, and the
//! [`Notification`] the engine hands to the outbox and the outbox to a [`Notifier`].
//!
//! [`Notifier`]: super::notify::Notifier

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Labels (and annotations): names to values, kept sorted so equal sets compare, hash and
/// serialise the same.
pub type Labels = BTreeMap<String, String>;

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nobody needs to act.
    Info,
    /// Needs attention soon.
    Warning,
    /// Needs someone now.
    Critical,
}

impl Severity {
    /// The lower-case name (`"critical"`), as in configs, labels and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert's identity: a hash of its label set (which includes `alertname`), stable across
/// restarts and processes, so receivers can deduplicate by it (PagerDuty's `dedup_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of `labels`: the first 8 bytes of SHA-256 over `name=value` pairs, each
    /// followed by a NUL, in label order.
    pub fn of(labels: &Labels) -> Self {
        let mut hash = Sha256::new();
        for (name, value) in labels {
            hash.update(name.as_bytes());
            hash.update(b"=");
            hash.update(value.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Fingerprint(u64::from_be_bytes(first))
    }

    /// The fingerprint as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses the 16 hex digits [`Display`](fmt::Display) writes.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Fingerprint)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.to_string()
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Fingerprint::parse(&text).ok_or_else(|| format!("not a fingerprint: {text:?}"))
    }
}

/// Whether an alert is firing or has resolved, as notifications report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The condition holds (past its `for` duration).
    Firing,
    /// The condition held and no longer does.
    Resolved,
}

impl AlertStatus {
    /// `"firing"` or `"resolved"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acknowledged an alert, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who (as given to `POST /api/alerts/{id}/ack`).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// An optional comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One alert as a notification carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSnapshot {
    /// The alert's identity (hash of `labels`).
    pub fingerprint: Fingerprint,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// The rule that raised it (also the `alertname` label).
    pub rule: String,
    /// How bad it is (also the `severity` label).
    pub severity: Severity,
    /// Its labels: `alertname`, `severity`, `target`, `group` (when the target has one) and the
    /// rule's own labels.
    pub labels: Labels,
    /// Its annotations (`summary`, `description`, ...), templates already filled in.
    pub annotations: Labels,
    /// When it started firing.
    pub starts_at: DateTime<Utc>,
    /// When it resolved; `None` while firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// The value that tripped the rule, when it has one (a latency in ms, a score, a ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Set once someone acknowledged it (PagerDuty gets an `acknowledge` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
}

impl AlertSnapshot {
    /// The `summary` annotation, or the rule name when there is none.
    pub fn summary(&self) -> &str {
        self.annotations
            .get("summary")
            .map_or(self.rule.as_str(), String::as_str)
    }

    /// The target label, if the alert is about one target.
    pub fn target(&self) -> Option<&str> {
        self.labels.get("target").map(String::as_str)
    }
}

/// One message to one receiver: a group of alerts (Alertmanager's grouping), written to the
/// outbox before it is sent and delivered at least once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification and stable across retries and restarts: receivers that see it
    /// twice can drop the copy (sent as the `Idempotency-Key` header where a protocol allows).
    pub id: String,
    /// The receiver it is for (a name from `[[alerting.receiver]]`).
    pub receiver: String,
    /// The alert group it reports on (the route and the group-by labels' values).
    pub group_key: String,
    /// The group-by labels and their values.
    pub group_labels: Labels,
    /// `Firing` if any alert in it fires, else `Resolved`.
    pub status: AlertStatus,
    /// The alerts of the group: firing ones, and resolved ones not yet reported resolved.
    pub alerts: Vec<AlertSnapshot>,
    /// When the engine made it.
    pub created_at: DateTime<Utc>,
    /// The escalation tier it was sent for (0: the route's own receivers).
    #[serde(default)]
    pub tier: u32,
    /// Where people can look at the alerts (the dashboard), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
}

impl Notification {
    /// The alerts that fire.
    pub fn firing(&self) -> impl Iterator<Item = &AlertSnapshot> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
    }

    /// The alerts that resolved.
    pub fn resolved(&self) -> impl Iterator<Item = &AlertSnapshot> {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
    }

    /// The highest severity among the alerts (`Info` when there are none).
    pub fn severity(&self) -> Severity {
        self.alerts
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Info)
    }

    /// A one-line title: `[FIRING:2] HighLatency (target=api)`, as Alertmanager's templates do.
    pub fn title(&self) -> String {
        let count = match self.status {
            AlertStatus::Firing => self.firing().count(),
            AlertStatus::Resolved => self.alerts.len(),
        };
        let name = self
            .group_labels
            .get("alertname")
            .or_else(|| self.alerts.first().map(|a| &a.rule))
            .map_or("alerts", String::as_str);
        let others: Vec<String> = self
            .group_labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let status = self.status.as_str().to_uppercase();
        if others.is_empty() {
            format!("[{status}:{count}] {name}")
        } else {
            format!("[{status}:{count}] {name} ({})", others.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprints_depend_on_every_label_and_round_trip() {
        let a = Fingerprint::of(&labels(&[("alertname", "Down"), ("target", "api")]));
        let b = Fingerprint::of(&labels(&[("alertname", "Down"), ("target", "db")]));
        // Shifting a character between name and value must not collide.
        let c = Fingerprint::of(&labels(&[("alertname", "Down"), ("targe", "tapi")]));
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            Fingerprint::of(&labels(&[("target", "api"), ("alertname", "Down")]))
        );
        assert_eq!(Fingerprint::parse(&a.to_string()), Some(a));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), a);
        assert_eq!(Fingerprint::parse("xyz"), None);
    }

    #[test]
    fn a_title_counts_the_alerts_and_names_the_group() {
        let alert = |status| AlertSnapshot {
            fingerprint: Fingerprint(1),
            status,
            rule: "TargetDown".into(),
            severity: Severity::Critical,
            labels: Labels::new(),
            annotations: Labels::new(),
            starts_at: DateTime::<Utc>::UNIX_EPOCH,
            ends_at: None,
            value: None,
            acknowledged: None,
        };
        let n = Notification {
            id: "n1".into(),
            receiver: "ops".into(),
            group_key: "{}:{group=\"shop\"}".into(),
            group_labels: labels(&[("alertname", "TargetDown"), ("group", "shop")]),
            status: AlertStatus::Firing,
            alerts: vec![alert(AlertStatus::Firing), alert(AlertStatus::Resolved)],
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            tier: 0,
            external_url: None,
        };
        assert_eq!(n.title(), "[FIRING:1] TargetDown (group=shop)");
        assert_eq!(n.severity(), Severity::Critical);
        let back: Notification = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
    }
}
