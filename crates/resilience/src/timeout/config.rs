//! Configuration of a timeout policy: the `[timeout.NAME]` section.

use std::time::Duration;

use super::{MAX_TIMEOUT, MIN_TIMEOUT, Timeout, validate_timeout};
use crate::{ConfigError, Events};

/// Settings of one timeout policy, read from a `[timeout.NAME]` section.
///
/// ```toml
/// [timeout.payments]
/// timeout = "2s"   # default "10s"; between 1ms and 1 day
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// How long one call may take before it is abandoned with [`Error::Timeout`](crate::Error).
    /// Default `"10s"`; must be between 1ms and 1 day.
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::timeout"
    )]
    pub timeout: Duration,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn timeout() -> Duration {
        Duration::from_secs(10)
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            timeout: defaults::timeout(),
        }
    }
}

impl TimeoutConfig {
    /// Pushes every problem of this section into `errors`, each with its key path under `path`
    /// (for example `timeout.payments`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        validate_timeout(
            &format!("{path}.timeout"),
            self.timeout,
            MIN_TIMEOUT,
            MAX_TIMEOUT,
            errors,
        );
    }

    /// Validates the section and builds the policy called `name`, emitting into `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<Timeout, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        errors.into_result(())?;
        Ok(Timeout::new(name, self.timeout, events.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_every_default() {
        let config: TimeoutConfig = toml::from_str("").unwrap();
        assert_eq!(config, TimeoutConfig::default());
        assert_eq!(config.timeout, Duration::from_secs(10));
    }

    #[test]
    fn reads_a_human_readable_duration() {
        let config: TimeoutConfig = toml::from_str(r#"timeout = "250ms""#).unwrap();
        assert_eq!(config.timeout, Duration::from_millis(250));
    }

    #[test]
    fn refuses_unknown_keys_and_negative_durations() {
        let unknown = toml::from_str::<TimeoutConfig>(r#"timeuot = "1s""#).unwrap_err();
        assert!(unknown.to_string().contains("timeuot"), "{unknown}");
        let negative = toml::from_str::<TimeoutConfig>(r#"timeout = "-1s""#).unwrap_err();
        assert!(negative.to_string().contains("negative"), "{negative}");
    }

    #[test]
    fn reports_out_of_range_timeouts_with_their_path() {
        for (timeout, message) in [
            (Duration::ZERO, "must be at least 1ms, got 0s"),
            (
                Duration::from_secs(2 * 86_400),
                "must be at most 24h, got 48h",
            ),
        ] {
            let err = TimeoutConfig { timeout }
                .build("api", &Events::new())
                .unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert_eq!(err.problems[0].path, "api.timeout");
            assert_eq!(err.problems[0].message, message);
        }
    }

    #[test]
    fn accepts_the_bounds_themselves() {
        for timeout in [MIN_TIMEOUT, MAX_TIMEOUT] {
            let built = TimeoutConfig { timeout }.build("api", &Events::new());
            assert_eq!(built.unwrap().timeout(), timeout);
        }
    }
}
