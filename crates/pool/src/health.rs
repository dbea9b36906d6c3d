//! The pool's health: a state and a 0–100 score, moved by connect outcomes, waits and validations.
//!
//! - **healthy** (100) → **degraded** (60) when, within one maintenance interval, an acquire waited
//!   longer than `degraded_wait` or the share of failed validations exceeded
//!   `degraded_validation_failure_rate`; back to healthy after an interval with neither.
//! - any → **unhealthy** (0) after `unhealthy_after` failed connects in a row (the connect breaker
//!   opens at the same count), and from recovering on any failed connect.
//! - unhealthy → **recovering** (20–80, rising) on a successful connect; → healthy once
//!   `recovery_successes` connects in a row have succeeded.

use std::sync::Mutex;

/// The pool's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Everything works.
    Healthy,
    /// Works, but waiters wait long or validations fail often.
    Degraded,
    /// Connects fail; the connect breaker is (or was) open.
    Unhealthy,
    /// Connects succeed again after being unhealthy; not yet enough in a row.
    Recovering,
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Recovering => "recovering",
        })
    }
}

/// A change of health: before, after, score after.
pub(crate) type Change = (HealthState, HealthState, u8);

struct Inner {
    state: HealthState,
    failures_in_row: u32,
    successes_in_row: u32,
}

pub(crate) struct Health {
    inner: Mutex<Inner>,
    unhealthy_after: u32,
    recovery_successes: u32,
}

impl Health {
    pub(crate) fn new(unhealthy_after: u32, recovery_successes: u32) -> Self {
        Health {
            inner: Mutex::new(Inner {
                state: HealthState::Healthy,
                failures_in_row: 0,
                successes_in_row: 0,
            }),
            unhealthy_after,
            recovery_successes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn score(&self, inner: &Inner) -> u8 {
        match inner.state {
            HealthState::Healthy => 100,
            HealthState::Degraded => 60,
            HealthState::Unhealthy => 0,
            HealthState::Recovering => {
                let n = u64::from(self.recovery_successes.max(1));
                let k = u64::from(inner.successes_in_row).min(n);
                (20 + 60 * k / n) as u8
            }
        }
    }

    pub(crate) fn snapshot(&self) -> (HealthState, u8) {
        let inner = self.lock();
        (inner.state, self.score(&inner))
    }

    fn set(&self, inner: &mut Inner, to: HealthState) -> Option<Change> {
        let from = inner.state;
        if from == to {
            return None;
        }
        inner.state = to;
        Some((from, to, self.score(inner)))
    }

    /// Records a connect's outcome.
    pub(crate) fn on_connect(&self, ok: bool) -> Option<Change> {
        let mut inner = self.lock();
        if ok {
            inner.failures_in_row = 0;
            inner.successes_in_row = inner.successes_in_row.saturating_add(1);
            let mut state = inner.state;
            if state == HealthState::Unhealthy {
                state = HealthState::Recovering;
            }
            if state == HealthState::Recovering && inner.successes_in_row >= self.recovery_successes
            {
                state = HealthState::Healthy;
            }
            self.set(&mut inner, state)
        } else {
            inner.successes_in_row = 0;
            inner.failures_in_row = inner.failures_in_row.saturating_add(1);
            if inner.state == HealthState::Recovering
                || inner.failures_in_row >= self.unhealthy_after
            {
                self.set(&mut inner, HealthState::Unhealthy)
            } else {
                None
            }
        }
    }

    /// Judges one maintenance interval: `strained` if waits were long or validations failed often.
    pub(crate) fn on_interval(&self, strained: bool) -> Option<Change> {
        let mut inner = self.lock();
        match (inner.state, strained) {
            (HealthState::Healthy, true) => self.set(&mut inner, HealthState::Degraded),
            (HealthState::Degraded, false) => self.set(&mut inner, HealthState::Healthy),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_after_failures_then_recovering_then_healthy() {
        let h = Health::new(2, 3);
        assert_eq!(h.on_connect(false), None);
        assert_eq!(
            h.on_connect(false),
            Some((HealthState::Healthy, HealthState::Unhealthy, 0))
        );
        assert_eq!(
            h.on_connect(true),
            Some((HealthState::Unhealthy, HealthState::Recovering, 40))
        );
        assert_eq!(h.on_connect(true), None);
        assert_eq!(h.snapshot(), (HealthState::Recovering, 60));
        assert_eq!(
            h.on_connect(true),
            Some((HealthState::Recovering, HealthState::Healthy, 100))
        );
        assert_eq!(
            h.on_interval(true),
            Some((HealthState::Healthy, HealthState::Degraded, 60))
        );
        assert_eq!(
            h.on_interval(false),
            Some((HealthState::Degraded, HealthState::Healthy, 100))
        );
    }
}
