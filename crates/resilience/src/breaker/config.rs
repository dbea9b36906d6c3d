//! Breaker configuration: `[breaker.NAME]` sections.

use std::time::Duration;

use serde::Deserialize;

use crate::duration::serde_duration;
use crate::{ConfigError, Events, format_duration};

use super::CircuitBreaker;

/// How the breaker judges the recent past.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The last `window_size` calls (the default).
    Count,
    /// The calls of the last `window_duration`.
    Time,
    /// Opens after `consecutive_failures` failures in a row; any success resets the count. The
    /// classic breaker older services used (5 failures, 30 s recovery).
    Consecutive,
}

/// Configuration of a [`CircuitBreaker`]. Every key is optional; the defaults are documented on
/// each field.
///
/// ```toml
/// [breaker.payments]
/// window = "count"          # or "time", "consecutive"
/// window_size = 100
/// minimum_calls = 20
/// failure_rate = 0.5
/// slow_call_duration = "2s"
/// slow_call_rate = 0.8
/// wait_in_open = "30s"
/// wait_in_open_multiplier = 2.0
/// max_wait_in_open = "5m"
/// half_open_calls = 5
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// The kind of sliding window. Default `"count"`.
    #[serde(default = "defaults::window")]
    pub window: WindowKind,
    /// Calls in a count window. Default 100; 1 to 100,000.
    #[serde(default = "defaults::window_size")]
    pub window_size: u32,
    /// Length of a time window. Default `"60s"`; 1 s to 1 h. Kept in buckets of one second (or of
    /// 1/120 of the window when it is longer than two minutes).
    #[serde(with = "serde_duration", default = "defaults::window_duration")]
    pub window_duration: Duration,
    /// Failures in a row that open a consecutive-mode breaker. Default 5; at least 1.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// Calls the window must hold before rates are judged. Default 20; at least 1.
    #[serde(default = "defaults::minimum_calls")]
    pub minimum_calls: u32,
    /// Failure rate (0 to 1) at or above which the breaker opens. Default 0.5; above 0, at most 1.
    #[serde(default = "defaults::failure_rate")]
    pub failure_rate: f64,
    /// A call that takes longer than this counts as slow. Default: none (slow calls not judged).
    #[serde(with = "serde_duration::option", default)]
    pub slow_call_duration: Option<Duration>,
    /// Slow-call rate (0 to 1) at or above which the breaker opens. Default 1.0.
    #[serde(default = "defaults::slow_call_rate")]
    pub slow_call_rate: f64,
    /// How long the breaker stays open before letting trial calls through. Default `"30s"`; at
    /// least 1 ms.
    #[serde(with = "serde_duration", default = "defaults::wait_in_open")]
    pub wait_in_open: Duration,
    /// Each time a half-open breaker opens again, the wait grows by this factor. Default 1.0 (a
    /// fixed wait); at least 1.
    #[serde(default = "defaults::wait_in_open_multiplier")]
    pub wait_in_open_multiplier: f64,
    /// Upper bound of the growing wait. Default `"5m"`; at least `wait_in_open`.
    #[serde(with = "serde_duration", default = "defaults::max_wait_in_open")]
    pub max_wait_in_open: Duration,
    /// Trial calls permitted in half-open, exactly, even under concurrency. Default 5; 1 to 1,000.
    #[serde(default = "defaults::half_open_calls")]
    pub half_open_calls: u32,
}

mod defaults {
    use super::WindowKind;
    use std::time::Duration;

    pub(super) fn window() -> WindowKind {
        WindowKind::Count
    }
    pub(super) fn window_size() -> u32 {
        100
    }
    pub(super) fn window_duration() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn consecutive_failures() -> u32 {
        5
    }
    pub(super) fn minimum_calls() -> u32 {
        20
    }
    pub(super) fn failure_rate() -> f64 {
        0.5
    }
    pub(super) fn slow_call_rate() -> f64 {
        1.0
    }
    pub(super) fn wait_in_open() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn wait_in_open_multiplier() -> f64 {
        1.0
    }
    pub(super) fn max_wait_in_open() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn half_open_calls() -> u32 {
        5
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: defaults::window(),
            window_size: defaults::window_size(),
            window_duration: defaults::window_duration(),
            consecutive_failures: defaults::consecutive_failures(),
            minimum_calls: defaults::minimum_calls(),
            failure_rate: defaults::failure_rate(),
            slow_call_duration: None,
            slow_call_rate: defaults::slow_call_rate(),
            wait_in_open: defaults::wait_in_open(),
            wait_in_open_multiplier: defaults::wait_in_open_multiplier(),
            max_wait_in_open: defaults::max_wait_in_open(),
            half_open_calls: defaults::half_open_calls(),
        }
    }
}

/// The most trial calls half-open may permit: they are counted in 10-bit fields.
pub(super) const MAX_HALF_OPEN_CALLS: u32 = 1000;
const MAX_WINDOW_SIZE: u32 = 100_000;

impl BreakerConfig {
    /// The classic consecutive-failures breaker: opens after `failures` failures in a row and
    /// tries again after `recovery`.
    pub fn consecutive(failures: u32, recovery: Duration) -> Self {
        BreakerConfig {
            window: WindowKind::Consecutive,
            consecutive_failures: failures,
            wait_in_open: recovery,
            ..Self::default()
        }
    }

    /// Records every problem of this configuration under `path` (such as `breaker.payments`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.window_size == 0 || self.window_size > MAX_WINDOW_SIZE {
            errors.push(
                format!("{path}.window_size"),
                format!(
                    "must be between 1 and {MAX_WINDOW_SIZE}, got {}",
                    self.window_size
                ),
            );
        }
        if self.window_duration < Duration::from_secs(1)
            || self.window_duration > Duration::from_secs(3600)
        {
            errors.push(
                format!("{path}.window_duration"),
                format!(
                    "must be between 1s and 1h, got {}",
                    format_duration(self.window_duration)
                ),
            );
        }
        if self.consecutive_failures == 0 {
            errors.push(
                format!("{path}.consecutive_failures"),
                "must be at least 1, got 0",
            );
        }
        if self.minimum_calls == 0 {
            errors.push(format!("{path}.minimum_calls"), "must be at least 1, got 0");
        } else if self.window == WindowKind::Count && self.minimum_calls > self.window_size {
            errors.push(
                format!("{path}.minimum_calls"),
                format!(
                    "must be at most window_size ({}), got {}: a window that small never holds enough calls to judge",
                    self.window_size, self.minimum_calls
                ),
            );
        }
        for (key, rate) in [
            ("failure_rate", self.failure_rate),
            ("slow_call_rate", self.slow_call_rate),
        ] {
            if !(rate > 0.0 && rate <= 1.0) {
                errors.push(
                    format!("{path}.{key}"),
                    format!("must be above 0 and at most 1, got {rate}"),
                );
            }
        }
        if self.slow_call_duration == Some(Duration::ZERO) {
            errors.push(
                format!("{path}.slow_call_duration"),
                "must be above 0s (leave it out to not judge slow calls)",
            );
        }
        if self.wait_in_open < Duration::from_millis(1) {
            errors.push(
                format!("{path}.wait_in_open"),
                format!(
                    "must be at least 1ms, got {}",
                    format_duration(self.wait_in_open)
                ),
            );
        }
        if !(self.wait_in_open_multiplier >= 1.0 && self.wait_in_open_multiplier.is_finite()) {
            errors.push(
                format!("{path}.wait_in_open_multiplier"),
                format!(
                    "must be a finite number of at least 1, got {}",
                    self.wait_in_open_multiplier
                ),
            );
        }
        if self.max_wait_in_open < self.wait_in_open {
            errors.push(
                format!("{path}.max_wait_in_open"),
                format!(
                    "must be at least wait_in_open ({}), got {}",
                    format_duration(self.wait_in_open),
                    format_duration(self.max_wait_in_open)
                ),
            );
        }
        if self.half_open_calls == 0 || self.half_open_calls > MAX_HALF_OPEN_CALLS {
            errors.push(
                format!("{path}.half_open_calls"),
                format!(
                    "must be between 1 and {MAX_HALF_OPEN_CALLS}, got {}",
                    self.half_open_calls
                ),
            );
        }
    }

    /// Validates and builds a breaker named `name` that emits to `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<CircuitBreaker, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        errors.into_result(())?;
        Ok(CircuitBreaker::from_valid_config(
            name,
            self.clone(),
            events.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        let mut e = ConfigError::new(None);
        BreakerConfig::default().validate("b", &mut e);
        assert!(e.is_empty(), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let cfg = BreakerConfig {
            window_size: 0,
            failure_rate: 1.5,
            slow_call_rate: f64::NAN,
            minimum_calls: 0,
            wait_in_open: Duration::ZERO,
            wait_in_open_multiplier: 0.5,
            half_open_calls: 5000,
            window_duration: Duration::ZERO,
            ..BreakerConfig::default()
        };
        let err = cfg.build("payments", &Events::new()).unwrap_err();
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for key in [
            "payments.window_size",
            "payments.failure_rate",
            "payments.slow_call_rate",
            "payments.minimum_calls",
            "payments.wait_in_open",
            "payments.wait_in_open_multiplier",
            "payments.half_open_calls",
            "payments.window_duration",
        ] {
            assert!(paths.contains(&key), "{key} missing from {paths:?}");
        }
        assert!(err.to_string().contains("got 1.5"), "{err}");
    }
}
