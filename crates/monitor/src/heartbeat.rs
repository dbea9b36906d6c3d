//! Heartbeat (push) targets: a job reports in with its token, and a missing beat makes the target
//! unhealthy.
//!
//! A [`HeartbeatTracker`] holds every heartbeat target's schedule and last beat. The HTTP API's
//! `POST /api/heartbeat/{token}` calls [`HeartbeatTracker::heartbeat`] (or
//! [`Monitor::heartbeat`](crate::Monitor::heartbeat)); on its interval the scheduler runs a
//! [`HeartbeatProbe`], which [evaluates](HeartbeatTracker::evaluate) the target: passing while the
//! last beat is within the schedule plus the grace period, failing as [`FailureKind::Missed`]
//! once it is not.
//!
//! Tokens are kept only as SHA-256 digests and looked up by digest, so a lookup's timing says
//! nothing usable about a token (finding a token from its digest's prefix is a preimage attack),
//! and neither tokens nor digests are ever shown. Time comes from `tokio::time`; a cron schedule
//! is read in UTC against a wall clock anchored at the tracker's creation, so tests run on paused
//! time.
//!
//! ```
//! use std::time::Duration;
//! use rampart_monitor::config::{HeartbeatCheck, HeartbeatSchedule};
//! use rampart_monitor::heartbeat::HeartbeatTracker;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let tracker = HeartbeatTracker::new();
//! let mut check = HeartbeatCheck::new(
//!     "a-long-random-token-0123",
//!     HeartbeatSchedule::Every(Duration::from_secs(60)),
//! );
//! check.grace = Duration::from_secs(10);
//! tracker.add("nightly-backup", &check);
//!
//! tokio::time::advance(Duration::from_secs(69)).await;
//! assert!(tracker.evaluate("nightly-backup").unwrap().healthy, "within every + grace");
//! tokio::time::advance(Duration::from_secs(2)).await;
//! assert!(!tracker.evaluate("nightly-backup").unwrap().healthy, "missed");
//!
//! assert_eq!(tracker.heartbeat("a-long-random-token-0123").unwrap(), "nightly-backup");
//! assert!(tracker.heartbeat("a-wrong-token").is_err());
//! assert!(tracker.evaluate("nightly-backup").unwrap().healthy);
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::{CheckConfig, HeartbeatCheck, HeartbeatSchedule, MonitorConfig};
use crate::probe::{FailureKind, Probe, ProbeFuture, ProbeResult};

/// A beat came with a token no heartbeat target has. Says nothing about the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no heartbeat target has this token")]
#[non_exhaustive]
pub struct UnknownToken;

/// The state of one heartbeat target at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatStatus {
    /// True while no expected beat is missing.
    pub healthy: bool,
    /// Time since the last beat, if there was one.
    pub since_last_beat: Option<Duration>,
    /// Beats received since the tracker started.
    pub beats: u64,
    /// What was expected and what was found, for people.
    pub message: String,
}

/// The heartbeat targets, their schedules and last beats. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct HeartbeatTracker {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    entries: Vec<Entry>,
    by_digest: HashMap<[u8; 32], usize>,
    /// A tokio instant and the wall-clock time it stands for, to read cron schedules.
    anchor: (Instant, SystemTime),
}

struct Entry {
    target: String,
    schedule: HeartbeatSchedule,
    grace: Duration,
    since: Instant,
    last: Option<Instant>,
    beats: u64,
}

impl fmt::Debug for HeartbeatTracker {
    // Targets only: tokens (digests included) are never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        let targets: Vec<&str> = inner.entries.iter().map(|e| e.target.as_str()).collect();
        f.debug_struct("HeartbeatTracker")
            .field("targets", &targets)
            .finish_non_exhaustive()
    }
}

impl Default for HeartbeatTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl HeartbeatTracker {
    /// An empty tracker whose cron schedules read the system clock's time now as `Instant::now()`.
    pub fn new() -> Self {
        Self::anchored_at(SystemTime::now())
    }

    /// An empty tracker for which `Instant::now()` is the wall-clock time `now` (for cron
    /// schedules; tests on paused time pick the date).
    pub fn anchored_at(now: SystemTime) -> Self {
        HeartbeatTracker {
            inner: Arc::new(Mutex::new(Inner {
                entries: Vec::new(),
                by_digest: HashMap::new(),
                anchor: (Instant::now(), now),
            })),
        }
    }

    /// A tracker of every heartbeat target of `config`.
    pub fn from_config(config: &MonitorConfig) -> Self {
        let tracker = Self::new();
        for t in &config.targets {
            if let CheckConfig::Heartbeat(h) = &t.check {
                tracker.add(&t.name, h);
            }
        }
        tracker
    }

    /// Tracks `target`, expecting beats as `check` says, from now on. A token already tracked
    /// moves to `target` (configurations refuse shared tokens).
    pub fn add(&self, target: impl Into<String>, check: &HeartbeatCheck) {
        let mut inner = self.lock();
        let index = inner.entries.len();
        inner.entries.push(Entry {
            target: target.into(),
            schedule: check.schedule.clone(),
            grace: check.grace,
            since: Instant::now(),
            last: None,
            beats: 0,
        });
        inner.by_digest.insert(digest(check.token.expose()), index);
    }

    /// Stops tracking `target` (its token is forgotten); `false` if it was not tracked.
    pub fn remove(&self, target: &str) -> bool {
        let mut inner = self.lock();
        let Some(gone) = inner.entries.iter().position(|e| e.target == target) else {
            return false;
        };
        inner.entries.remove(gone);
        inner.by_digest.retain(|_, i| *i != gone);
        for i in inner.by_digest.values_mut() {
            if *i > gone {
                *i -= 1;
            }
        }
        true
    }

    /// Records a beat with `token` now, and returns the target it belongs to.
    pub fn heartbeat(&self, token: &str) -> Result<String, UnknownToken> {
        let mut inner = self.lock();
        let index = *inner.by_digest.get(&digest(token)).ok_or(UnknownToken)?;
        let entry = &mut inner.entries[index];
        entry.last = Some(Instant::now());
        entry.beats += 1;
        Ok(entry.target.clone())
    }

    /// The state of `target` now; `None` if it is not tracked.
    pub fn evaluate(&self, target: &str) -> Option<HeartbeatStatus> {
        self.evaluate_at(target, Instant::now())
    }

    /// The state of `target` at `now`; `None` if it is not tracked.
    pub fn evaluate_at(&self, target: &str, now: Instant) -> Option<HeartbeatStatus> {
        let inner = self.lock();
        let entry = inner.entries.iter().find(|e| e.target == target)?;
        let since_last_beat = entry.last.map(|l| now.saturating_duration_since(l));
        let (healthy, message) = match &entry.schedule {
            HeartbeatSchedule::Every(every) => every_status(entry, *every, now),
            HeartbeatSchedule::Cron(cron) => {
                let wall = |i: Instant| wall_clock(inner.anchor, i);
                cron_status(entry, cron, now, wall)
            }
        };
        Some(HeartbeatStatus {
            healthy,
            since_last_beat,
            beats: entry.beats,
            message,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `every`: healthy while the last beat (or the start, before any) is at most `every + grace`
/// ago.
fn every_status(entry: &Entry, every: Duration, now: Instant) -> (bool, String) {
    let from = entry.last.unwrap_or(entry.since);
    let ago = now.saturating_duration_since(from);
    let allowed = every + entry.grace;
    let shown = |d: Duration| rampart_resilience::format_duration(d);
    match (ago <= allowed, entry.last.is_some()) {
        (true, true) => (true, format!("last heartbeat {} ago", shown(ago))),
        (true, false) => (true, "no heartbeat yet, none missed".to_owned()),
        (false, true) => (
            false,
            format!(
                "no heartbeat for {} (expected every {} with {} grace)",
                shown(ago),
                shown(every),
                shown(entry.grace)
            ),
        ),
        (false, false) => (
            false,
            format!(
                "no heartbeat since tracking started {} ago (expected every {} with {} grace)",
                shown(ago),
                shown(every),
                shown(entry.grace)
            ),
        ),
    }
}

/// `cron`: the run that matters is the latest occurrence whose grace period is over; healthy if
/// there is none since tracking started, or a beat came at most `grace` before it or any time
/// after.
fn cron_status(
    entry: &Entry,
    cron: &croner::Cron,
    now: Instant,
    wall: impl Fn(Instant) -> DateTime<Utc>,
) -> (bool, String) {
    let settled = wall(now) - chrono_duration(entry.grace);
    // Exclusive: a run is due once its grace is over, not at its last instant.
    let Ok(due) = cron.find_previous_occurrence(&settled, false) else {
        return (true, "no run of the schedule is due".to_owned());
    };
    if due < wall(entry.since) {
        return (true, "no run due since tracking started".to_owned());
    }
    let earliest = due - chrono_duration(entry.grace);
    if entry.last.is_some_and(|l| wall(l) >= earliest) {
        return (
            true,
            format!("heartbeat received for the run due at {}", due.to_rfc3339()),
        );
    }
    (
        false,
        format!(
            "no heartbeat for the run due at {} (cron `{}`, {} grace)",
            due.to_rfc3339(),
            cron.pattern,
            rampart_resilience::format_duration(entry.grace)
        ),
    )
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The wall-clock time of `at`, given that `anchor.0` is `anchor.1`.
fn wall_clock(anchor: (Instant, SystemTime), at: Instant) -> DateTime<Utc> {
    let wall = if at >= anchor.0 {
        anchor.1 + (at - anchor.0)
    } else {
        anchor.1 - (anchor.0 - at)
    };
    DateTime::<Utc>::from(wall)
}

/// Evaluates one heartbeat target on the scheduler's ticks: success while no beat is missing,
/// else a failure of kind [`FailureKind::Missed`]. Takes no time and does no I/O.
#[derive(Debug, Clone)]
pub struct HeartbeatProbe {
    tracker: HeartbeatTracker,
    target: String,
}

impl HeartbeatProbe {
    /// A probe of `target` in `tracker`.
    pub fn new(tracker: HeartbeatTracker, target: impl Into<String>) -> Self {
        HeartbeatProbe {
            tracker,
            target: target.into(),
        }
    }
}

impl Probe for HeartbeatProbe {
    fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            match self.tracker.evaluate(&self.target) {
                Some(status) if status.healthy => ProbeResult::success(Duration::ZERO),
                Some(status) => {
                    ProbeResult::failure(FailureKind::Missed, status.message, Duration::ZERO)
                }
                None => ProbeResult::failure(
                    FailureKind::Missed,
                    format!("{} is not a tracked heartbeat target", self.target),
                    Duration::ZERO,
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests;
