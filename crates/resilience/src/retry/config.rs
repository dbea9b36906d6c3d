//! Configuration of a retry policy: the `[retry.NAME]` section.

use std::time::Duration;

use super::{Backoff, Jitter, Retry};
use crate::timeout::validate_timeout;
use crate::{ConfigError, Events};

/// Settings of one retry policy, read from a `[retry.NAME]` section.
///
/// ```toml
/// [retry.payments]
/// max_attempts = 4        # default 3: attempts in all, the first included
/// max_elapsed = "5s"      # default none: no attempt starts later than this after the first
/// min_attempt_time = "50ms" # default "0s": no attempt starts with less time than this left
///                         # before the caller's deadline
/// base_delay = "50ms"     # default "100ms"
/// max_delay = "2s"        # default "10s"
/// multiplier = 2.0        # default 2.0
/// jitter = "full"         # default "full"; or "none", "equal", "decorrelated"
/// budget = "backend"      # default none: the [retry_budget.backend] section, shared
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included. Default 3; at least 1 (1 never retries).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// If set, no attempt starts later than this after the first one started. Default none;
    /// at least 1ms.
    #[serde(
        with = "crate::duration::serde_duration::option",
        default = "defaults::max_elapsed"
    )]
    pub max_elapsed: Option<Duration>,
    /// An attempt needs at least this much time before the caller's [`Deadline`] to be worth
    /// starting: a retry that would start with less left gives up instead, since it could not
    /// finish. Default `"0s"` (start while any time is left); at most 1h.
    ///
    /// [`Deadline`]: crate::timeout::Deadline
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::min_attempt_time"
    )]
    pub min_attempt_time: Duration,
    /// The delay before the first retry, before jitter. Default `"100ms"`; between 1ms and 1h.
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::base_delay"
    )]
    pub base_delay: Duration,
    /// No delay is longer than this; nor is a server's retry-after hint waited for if longer.
    /// Default `"10s"`; at least `base_delay`, at most 1 day.
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::max_delay"
    )]
    pub max_delay: Duration,
    /// How much the delay grows per retry. Default 2.0; finite and at least 1.
    #[serde(default = "defaults::multiplier")]
    pub multiplier: f64,
    /// How the delay is randomised. Default `"full"`.
    #[serde(default)]
    pub jitter: Jitter,
    /// The name of a `[retry_budget.NAME]` section whose budget this policy draws retries from.
    /// Default none. The registry resolves it and attaches the budget with
    /// [`Retry::with_budget`]; [`RetryConfig::build`] ignores it.
    #[serde(default)]
    pub budget: Option<String>,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn max_attempts() -> u32 {
        3
    }
    pub(super) fn max_elapsed() -> Option<Duration> {
        None
    }
    pub(super) fn min_attempt_time() -> Duration {
        Duration::ZERO
    }
    pub(super) fn base_delay() -> Duration {
        Duration::from_millis(100)
    }
    pub(super) fn max_delay() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn multiplier() -> f64 {
        2.0
    }
}

const MIN_DELAY: Duration = Duration::from_millis(1);
const MAX_BASE_DELAY: Duration = Duration::from_secs(3600);
const MAX_MAX_DELAY: Duration = Duration::from_secs(86_400);

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: defaults::max_attempts(),
            max_elapsed: defaults::max_elapsed(),
            min_attempt_time: defaults::min_attempt_time(),
            base_delay: defaults::base_delay(),
            max_delay: defaults::max_delay(),
            multiplier: defaults::multiplier(),
            jitter: Jitter::default(),
            budget: None,
        }
    }
}

impl RetryConfig {
    /// Pushes every problem of this section into `errors`, each with its key path under `path`
    /// (for example `retry.payments`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.max_attempts < 1 {
            errors.push(
                format!("{path}.max_attempts"),
                format!("must be at least 1, got {}", self.max_attempts),
            );
        }
        if let Some(max_elapsed) = self.max_elapsed {
            validate_timeout(
                &format!("{path}.max_elapsed"),
                max_elapsed,
                MIN_DELAY,
                Duration::MAX,
                errors,
            );
        }
        if self.min_attempt_time > MAX_BASE_DELAY {
            errors.push(
                format!("{path}.min_attempt_time"),
                format!(
                    "must be at most 1h, got {}",
                    crate::format_duration(self.min_attempt_time)
                ),
            );
        }
        validate_timeout(
            &format!("{path}.base_delay"),
            self.base_delay,
            MIN_DELAY,
            MAX_BASE_DELAY,
            errors,
        );
        // Only compare with base_delay when that is valid, so one mistake is not reported twice.
        let floor = if self.base_delay >= MIN_DELAY && self.base_delay <= MAX_BASE_DELAY {
            self.base_delay
        } else {
            MIN_DELAY
        };
        if self.max_delay < floor {
            errors.push(
                format!("{path}.max_delay"),
                format!(
                    "must be at least base_delay ({}), got {}",
                    crate::format_duration(floor),
                    crate::format_duration(self.max_delay)
                ),
            );
        } else {
            validate_timeout(
                &format!("{path}.max_delay"),
                self.max_delay,
                floor,
                MAX_MAX_DELAY,
                errors,
            );
        }
        if !self.multiplier.is_finite() {
            errors.push(
                format!("{path}.multiplier"),
                format!("must be a finite number, got {}", self.multiplier),
            );
        } else if self.multiplier < 1.0 {
            errors.push(
                format!("{path}.multiplier"),
                format!("must be at least 1, got {}", self.multiplier),
            );
        }
        if let Some(budget) = &self.budget
            && budget.trim().is_empty()
        {
            errors.push(
                format!("{path}.budget"),
                "must name a [retry_budget.NAME] section, got an empty string",
            );
        }
    }

    /// The backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            self.base_delay,
            self.max_delay,
            self.multiplier,
            self.jitter,
        )
    }

    /// Validates the section and builds the policy called `name`, emitting into `events`.
    ///
    /// The `budget` key is not resolved here: attach the budget with [`Retry::with_budget`].
    pub fn build(&self, name: &str, events: &Events) -> Result<Retry, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        errors.into_result(())?;
        Ok(Retry::new(
            name,
            self.max_attempts,
            self.max_elapsed,
            self.min_attempt_time,
            self.backoff(),
            events.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml: &str) -> Vec<(String, String)> {
        let config: RetryConfig = toml::from_str(toml).unwrap();
        match config.build("retry.x", &Events::new()) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn an_empty_section_takes_every_default() {
        let config: RetryConfig = toml::from_str("").unwrap();
        assert_eq!(config, RetryConfig::default());
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.max_elapsed, None);
        assert_eq!(config.base_delay, Duration::from_millis(100));
        assert_eq!(config.max_delay, Duration::from_secs(10));
        assert_eq!(config.multiplier, 2.0);
        assert_eq!(config.jitter, Jitter::Full);
        assert_eq!(config.budget, None);
    }

    #[test]
    fn reads_every_key() {
        let config: RetryConfig = toml::from_str(
            r#"
            max_attempts = 5
            max_elapsed = "3s"
            base_delay = "20ms"
            max_delay = "1s"
            multiplier = 1.5
            jitter = "decorrelated"
            budget = "backend"
            min_attempt_time = "25ms"
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            RetryConfig {
                max_attempts: 5,
                max_elapsed: Some(Duration::from_secs(3)),
                min_attempt_time: Duration::from_millis(25),
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_secs(1),
                multiplier: 1.5,
                jitter: Jitter::Decorrelated,
                budget: Some("backend".into()),
            }
        );
        let retry = config.build("r", &Events::new()).unwrap();
        assert_eq!(retry.max_attempts(), 5);
        assert!(retry.budget().is_none());
    }

    #[test]
    fn refuses_unknown_keys_and_unknown_jitter() {
        assert!(toml::from_str::<RetryConfig>("attempts = 3").is_err());
        let e = toml::from_str::<RetryConfig>(r#"jitter = "random""#).unwrap_err();
        assert!(e.to_string().contains("decorrelated"), "{e}");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let got = problems(
            r#"
            max_attempts = 0
            max_elapsed = "0s"
            base_delay = "0s"
            max_delay = "0s"
            multiplier = 0.5
            budget = ""
            "#,
        );
        let want = [
            ("retry.x.max_attempts", "must be at least 1, got 0"),
            ("retry.x.max_elapsed", "must be at least 1ms, got 0s"),
            ("retry.x.base_delay", "must be at least 1ms, got 0s"),
            (
                "retry.x.max_delay",
                "must be at least base_delay (1ms), got 0s",
            ),
            ("retry.x.multiplier", "must be at least 1, got 0.5"),
            (
                "retry.x.budget",
                "must name a [retry_budget.NAME] section, got an empty string",
            ),
        ];
        let got: Vec<_> = got.iter().map(|(p, m)| (p.as_str(), m.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn max_delay_below_base_delay_and_infinite_multipliers_are_refused() {
        let got = problems("base_delay = \"1s\"\nmax_delay = \"500ms\"\nmultiplier = inf");
        assert_eq!(
            got,
            [
                (
                    "retry.x.max_delay".to_owned(),
                    "must be at least base_delay (1s), got 500ms".to_owned()
                ),
                (
                    "retry.x.multiplier".to_owned(),
                    "must be a finite number, got inf".to_owned()
                ),
            ]
        );
        assert_eq!(
            problems("max_delay = \"2d\""),
            [(
                "retry.x.max_delay".to_owned(),
                "must be at most 24h, got 48h".to_owned()
            )]
        );
        assert!(problems("multiplier = nan")[0].1.contains("finite"));
    }
}
