//! `[bulkhead.NAME]`: the configuration of a bulkhead.

use std::time::Duration;

use tokio::sync::Semaphore;

use super::Bulkhead;
use crate::{ConfigError, Events};

mod defaults {
    use std::time::Duration;

    pub(super) fn max_concurrent() -> usize {
        25
    }
    pub(super) fn max_wait() -> Duration {
        Duration::ZERO
    }
}

/// How many calls a bulkhead lets run at once, and how callers wait for a slot.
///
/// ```toml
/// [bulkhead.reports]
/// max_concurrent = 4
/// max_wait = "500ms"
/// max_queue = 100
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls that may run at once, at least 1. Default `25`.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: usize,
    /// How long a call waits (in arrival order) for a slot before it is rejected. Default `"0s"`:
    /// reject at once when full.
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::max_wait"
    )]
    pub max_wait: Duration,
    /// The most callers waiting at once; one more is rejected at once. Default: unset, any number
    /// may wait (each for at most `max_wait`).
    #[serde(default)]
    pub max_queue: Option<usize>,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: defaults::max_concurrent(),
            max_wait: defaults::max_wait(),
            max_queue: None,
        }
    }
}

impl BulkheadConfig {
    /// `max_concurrent` calls at once, rejecting at once when full.
    pub fn new(max_concurrent: usize) -> Self {
        BulkheadConfig {
            max_concurrent,
            ..BulkheadConfig::default()
        }
    }

    /// Sets how long a call waits for a slot.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Sets the most callers waiting at once.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = Some(max_queue);
        self
    }

    /// Pushes every problem found, with its path under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.max_concurrent == 0 {
            errors.push(
                format!("{path}.max_concurrent"),
                "must be at least 1, got 0",
            );
        } else if self.max_concurrent > Semaphore::MAX_PERMITS {
            errors.push(
                format!("{path}.max_concurrent"),
                format!(
                    "must be at most {}, got {}",
                    Semaphore::MAX_PERMITS,
                    self.max_concurrent
                ),
            );
        }
    }

    /// Validates, then builds the bulkhead `name`, emitting to `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<Bulkhead, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        errors.into_result(())?;
        Ok(Bulkhead::from_valid_config(
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
    fn defaults_fill_every_field() {
        let c: BulkheadConfig = toml::from_str("").unwrap();
        assert_eq!(c, BulkheadConfig::default());
        assert_eq!(c.max_concurrent, 25);
        assert_eq!(c.max_wait, Duration::ZERO);
        assert_eq!(c.max_queue, None);
    }

    #[test]
    fn reads_every_field_and_refuses_unknown_ones() {
        let c: BulkheadConfig =
            toml::from_str("max_concurrent = 4\nmax_wait = \"500ms\"\nmax_queue = 10\n").unwrap();
        assert_eq!(
            c,
            BulkheadConfig::new(4)
                .max_wait(Duration::from_millis(500))
                .max_queue(10)
        );
        assert!(toml::from_str::<BulkheadConfig>("max_concurent = 4\n").is_err());
    }

    #[test]
    fn validation_reports_the_path_and_what_was_got() {
        let err = BulkheadConfig::new(0)
            .build("db", &Events::new())
            .unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].path, "db.max_concurrent");
        assert_eq!(err.problems[0].message, "must be at least 1, got 0");
        let err = BulkheadConfig::new(usize::MAX)
            .build("db", &Events::new())
            .unwrap_err();
        assert!(
            err.problems[0].message.contains(&usize::MAX.to_string()),
            "{err}"
        );
    }
}
