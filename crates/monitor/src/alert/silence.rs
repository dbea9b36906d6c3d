//! Silences (made through the API or the CLI, kept in the store) and maintenance windows (from
//! the configuration, one-off or recurring by cron): while one matches an alert, the alert is
//! not notified. An alert notified before the silence began still gets its resolve.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::matcher::{Matcher, all_match};
use super::model::Labels;

/// A silence: alerts matching every matcher between `starts_at` and `ends_at` are not notified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id (assigned when it is created).
    pub id: String,
    /// What an alert's labels must match (at least one matcher).
    pub matchers: Vec<Matcher>,
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// When it ends.
    pub ends_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it was made (or last changed).
    pub updated_at: DateTime<Utc>,
}

impl Silence {
    /// A new random id (16 hex digits).
    pub fn new_id() -> String {
        format!("{:016x}", fastrand::u64(..))
    }

    /// `"active"`, `"pending"` (not started yet) or `"expired"` at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.is_expired(now) {
            "expired"
        } else if self.is_active(now) {
            "active"
        } else {
            "pending"
        }
    }

    /// True if it is in force at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// True once it has ended.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.ends_at <= now
    }

    /// True if it is in force at `now` and matches `labels`.
    pub fn silences(&self, labels: &Labels, now: DateTime<Utc>) -> bool {
        self.is_active(now) && all_match(&self.matchers, labels)
    }

    /// Problems that make it invalid (no matcher, an end before its start), each a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.matchers.is_empty() {
            out.push("matchers: at least one matcher is needed".to_owned());
        }
        if self.ends_at <= self.starts_at {
            out.push("ends_at: must be after starts_at".to_owned());
        }
        if self.created_by.trim().is_empty() {
            out.push("created_by: must not be empty".to_owned());
        }
        out
    }
}

/// When a maintenance window is in force.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// From `start` to `end`, once.
    Once {
        /// Start.
        start: DateTime<Utc>,
        /// End.
        end: DateTime<Utc>,
    },
    /// For `duration` from each time the cron expression fires (UTC).
    Recurring {
        /// The expression (`"0 2 * * SUN"`: Sundays at 02:00).
        cron: Box<croner::Cron>,
        /// How long each window lasts.
        duration: Duration,
    },
}

/// A maintenance window from the configuration: a silence that comes back on a schedule.
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    /// Its name.
    pub name: String,
    /// What an alert's labels must match (empty: every alert).
    pub matchers: Vec<Matcher>,
    /// When it is in force.
    pub schedule: Schedule,
}

impl MaintenanceWindow {
    /// True if it is in force at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        match &self.schedule {
            Schedule::Once { start, end } => *start <= now && now < *end,
            Schedule::Recurring { cron, duration } => {
                let Ok(length) = chrono::Duration::from_std(*duration) else {
                    return false;
                };
                // In force if a run started in (now - duration, now].
                cron.find_next_occurrence(&(now - length), false)
                    .is_ok_and(|start| start <= now)
            }
        }
    }

    /// True if it is in force at `now` and matches `labels`.
    pub fn silences(&self, labels: &Labels, now: DateTime<Utc>) -> bool {
        self.is_active(now) && all_match(&self.matchers, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_silence_holds_between_its_start_and_end_for_matching_alerts() {
        let s = Silence {
            id: "s1".into(),
            matchers: vec![Matcher::parse("target=api").unwrap()],
            starts_at: at("2026-01-01T10:00:00Z"),
            ends_at: at("2026-01-01T12:00:00Z"),
            created_by: "ana".into(),
            comment: "deploy".into(),
            updated_at: at("2026-01-01T09:00:00Z"),
        };
        let api: Labels = [("target".to_owned(), "api".to_owned())].into();
        let db: Labels = [("target".to_owned(), "db".to_owned())].into();
        assert!(s.silences(&api, at("2026-01-01T11:00:00Z")));
        assert!(!s.silences(&db, at("2026-01-01T11:00:00Z")));
        assert!(!s.silences(&api, at("2026-01-01T09:59:59Z")));
        assert!(!s.silences(&api, at("2026-01-01T12:00:00Z")));
        assert!(s.problems().is_empty());
        let bad = Silence {
            matchers: vec![],
            ends_at: s.starts_at,
            ..s
        };
        assert_eq!(bad.problems().len(), 2);
    }

    #[test]
    fn a_recurring_window_is_in_force_for_its_duration_after_each_run() {
        let w = MaintenanceWindow {
            name: "sunday backups".into(),
            matchers: vec![],
            schedule: Schedule::Recurring {
                cron: Box::new("0 2 * * SUN".parse().unwrap()),
                duration: Duration::from_secs(3600),
            },
        };
        // 2026-11-22 is a Sunday.
        assert!(!w.is_active(at("2026-11-22T01:59:59Z")));
        assert!(w.is_active(at("2026-11-22T02:00:00Z")));
        assert!(w.is_active(at("2026-11-22T02:59:59Z")));
        assert!(!w.is_active(at("2026-11-22T03:00:00Z")));
        assert!(!w.is_active(at("2026-11-23T02:30:00Z")), "a Monday");
        let once = MaintenanceWindow {
            name: "migration".into(),
            matchers: vec![],
            schedule: Schedule::Once {
                start: at("2026-11-23T20:00:00Z"),
                end: at("2026-11-23T21:00:00Z"),
            },
        };
        assert!(once.is_active(at("2026-11-23T20:30:00Z")));
        assert!(!once.is_active(at("2026-11-23T21:00:00Z")));
    }
}
