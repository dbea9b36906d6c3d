//! The values the store keeps: results, state changes, incidents and each target's last state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::health::{ChangeCause, HealthState, StateChange};
use crate::probe::{FailureKind, Phases, ProbeOutcome, ProbeResult};

/// One probe result as stored: what the target's probe found at a wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResultRecord {
    /// The target's name (its stable identity).
    pub target: String,
    /// When the probe ran (wall clock; stored with millisecond precision).
    pub at: SystemTime,
    /// Time from start to end of the probe (stored with microsecond precision).
    pub latency: Duration,
    /// `None` for a success; the step that failed otherwise.
    pub failure: Option<FailureKind>,
    /// The failure message, if it failed.
    pub message: Option<String>,
    /// Time spent in each step reached.
    pub phases: Phases,
    /// The final HTTP status, if any.
    pub status: Option<u16>,
}

impl ResultRecord {
    /// The record of `result`, a probe of `target` that ran at `at`.
    pub fn new(target: impl Into<String>, at: SystemTime, result: &ProbeResult) -> Self {
        let message = match &result.outcome {
            ProbeOutcome::Success => None,
            ProbeOutcome::Failure { message, .. } => Some(message.clone()),
        };
        ResultRecord {
            target: target.into(),
            at,
            latency: result.latency,
            failure: result.failure_kind(),
            message,
            phases: result.phases,
            status: result.details.status,
        }
    }

    /// True if the probe passed.
    pub fn is_success(&self) -> bool {
        self.failure.is_none()
    }
}

/// One change of a target's shown state, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChangeRecord {
    /// The target's name.
    pub target: String,
    /// When it changed (wall clock, millisecond precision).
    pub at: SystemTime,
    /// The state before.
    pub from: HealthState,
    /// The state after.
    pub to: HealthState,
    /// Why, for people: the failure message, or `via <parent>` for a dependency.
    pub cause: Option<String>,
}

impl StateChangeRecord {
    /// The record of `change`, which happened at `at`.
    pub fn new(at: SystemTime, change: &StateChange) -> Self {
        let cause = match &change.cause {
            ChangeCause::Probe { failure } => failure.clone(),
            ChangeCause::Dependency { parent } => Some(format!("via {parent}")),
            ChangeCause::Reconfigured => Some("reconfigured".to_owned()),
        };
        StateChangeRecord {
            target: change.target.clone(),
            at,
            from: change.from,
            to: change.to,
            cause,
        }
    }

    /// A change of `target` from `from` to `to` at `at`, with an optional cause.
    pub fn between(
        target: impl Into<String>,
        at: SystemTime,
        from: HealthState,
        to: HealthState,
        cause: Option<String>,
    ) -> Self {
        StateChangeRecord {
            target: target.into(),
            at,
            from,
            to,
            cause,
        }
    }
}

/// What one write holds. A batch is committed in one transaction with whatever else is queued, so
/// a result and the state changes it caused become durable together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Batch {
    /// Probe results.
    pub results: Vec<ResultRecord>,
    /// State changes, in the order they happened. A change to a down state (unhealthy or
    /// unreachable) opens an incident if the target has none open; a change to a passing state
    /// (healthy or degraded) closes it.
    pub changes: Vec<StateChangeRecord>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }
    /// Adds a result.
    pub fn result(mut self, result: ResultRecord) -> Self {
        self.results.push(result);
        self
    }
    /// Adds many results.
    pub fn with_results(mut self, results: impl IntoIterator<Item = ResultRecord>) -> Self {
        self.results.extend(results);
        self
    }
    /// Adds a state change.
    pub fn change(mut self, change: StateChangeRecord) -> Self {
        self.changes.push(change);
        self
    }
    /// True if there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.changes.is_empty()
    }
}

/// A period during which a target was down: opened by a change to unhealthy or unreachable,
/// closed by its return to healthy or degraded. A recovering target's incident stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Incident {
    /// The store's id for it.
    pub id: i64,
    /// The target's name.
    pub target: String,
    /// When it opened.
    pub opened: SystemTime,
    /// When it closed; `None` while it is open.
    pub closed: Option<SystemTime>,
    /// The state that opened it.
    pub state: HealthState,
    /// The cause of the change that opened it.
    pub cause: Option<String>,
}

impl Incident {
    /// True while the incident is open.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}

/// A target's last recorded state and its open incident: what a restarted monitor restores.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetState {
    /// The target's name.
    pub target: String,
    /// Its last recorded shown state.
    pub state: HealthState,
    /// When it entered that state.
    pub since: SystemTime,
    /// Its open incident, if any.
    pub incident: Option<Incident>,
}

/// A target created through the HTTP API, kept so it survives restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiTarget {
    /// The target's name.
    pub name: String,
    /// Its definition: a JSON object shaped like a `[[target]]` table.
    pub definition: String,
    /// When it was created.
    pub created: SystemTime,
    /// When it was last replaced.
    pub updated: SystemTime,
}

/// Unix milliseconds of `t` (negative before 1970).
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time `ms` Unix milliseconds stand for.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// Whole microseconds of `d`, saturating.
pub(crate) fn to_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The duration `us` microseconds stand for (negative counts as zero).
pub(crate) fn from_us(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

const FAILURE_KINDS: [FailureKind; 10] = [
    FailureKind::Dns,
    FailureKind::ConnectRefused,
    FailureKind::ConnectTimeout,
    FailureKind::Connect,
    FailureKind::Tls,
    FailureKind::Timeout,
    FailureKind::Protocol,
    FailureKind::StatusMismatch,
    FailureKind::BodyMismatch,
    FailureKind::TooManyRedirects,
];

/// The failure kind stored as `name`.
pub(crate) fn failure_kind(name: &str) -> Option<FailureKind> {
    FAILURE_KINDS.into_iter().find(|k| k.as_str() == name)
}

/// The health state stored as `name`.
pub(crate) fn health_state(name: &str) -> Option<HealthState> {
    HealthState::ALL.into_iter().find(|s| s.as_str() == name)
}

/// True for the states that close an incident.
pub(crate) fn is_passing(state: HealthState) -> bool {
    matches!(state, HealthState::Healthy | HealthState::Degraded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_and_state_round_trips_through_its_name() {
        for k in FAILURE_KINDS {
            assert_eq!(failure_kind(k.as_str()), Some(k));
        }
        for s in HealthState::ALL {
            assert_eq!(health_state(s.as_str()), Some(s));
        }
        assert_eq!(failure_kind("nope"), None);
    }

    #[test]
    fn milliseconds_round_trip_on_both_sides_of_the_epoch() {
        for ms in [-86_400_000_i64, -1, 0, 1, 1_800_000_000_000] {
            assert_eq!(to_ms(from_ms(ms)), ms);
        }
    }
}
