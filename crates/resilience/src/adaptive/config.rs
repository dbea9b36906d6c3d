//! `[adaptive.NAME]`: the configuration of an adaptive concurrency limiter.

use std::time::Duration;

use crate::{ConfigError, Events, format_duration};

use super::{AdaptiveLimiter, Aimd, Gradient2, LimitAlgorithm};

/// Which algorithm moves the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Additive increase, multiplicative decrease: grows by one while calls succeed near the limit,
    /// shrinks by `backoff_ratio` on a drop or a call slower than `timeout`. Reacts to errors.
    Aimd,
    /// Compares a long-term average latency with the latest one and shrinks the limit when latency
    /// rises (queueing), grows it by `queue_size` while latency holds. Reacts to latency.
    Gradient2,
}

/// Configuration of an [`AdaptiveLimiter`], read from `[adaptive.NAME]`.
///
/// Every key is optional:
///
/// ```toml
/// [adaptive.search]
/// algorithm = "gradient2"   # or "aimd"
/// initial_limit = 20
/// min_limit = 1
/// max_limit = 200
/// # aimd
/// backoff_ratio = 0.9
/// timeout = "5s"
/// # gradient2
/// smoothing = 0.2
/// rtt_tolerance = 1.5
/// long_window = 600
/// queue_size = 4
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// The algorithm. Default `"gradient2"`.
    #[serde(default = "defaults::algorithm")]
    pub algorithm: Algorithm,
    /// The limit to start from, within `[min_limit, max_limit]`. Default 20.
    #[serde(default = "defaults::initial_limit")]
    pub initial_limit: usize,
    /// The limit never goes below this; at least 1. Default 1.
    #[serde(default = "defaults::min_limit")]
    pub min_limit: usize,
    /// The limit never goes above this. Default 200.
    #[serde(default = "defaults::max_limit")]
    pub max_limit: usize,
    /// AIMD: the factor the limit is multiplied by on a drop, in `[0.5, 1)`. Default 0.9.
    #[serde(default = "defaults::backoff_ratio")]
    pub backoff_ratio: f64,
    /// AIMD: a call slower than this counts as a drop. Default `"5s"`.
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::timeout"
    )]
    pub timeout: Duration,
    /// Gradient2: how much of each new estimate enters the limit, in `(0, 1]`. Default 0.2.
    #[serde(default = "defaults::smoothing")]
    pub smoothing: f64,
    /// Gradient2: how many times the long-term latency the latest latency may reach before the
    /// limit shrinks; at least 1. Default 1.5.
    #[serde(default = "defaults::rtt_tolerance")]
    pub rtt_tolerance: f64,
    /// Gradient2: the number of samples the long-term latency average spans; at least 10.
    /// Default 600.
    #[serde(default = "defaults::long_window")]
    pub long_window: usize,
    /// Gradient2: how far the limit may grow per estimate while latency holds, at most
    /// `max_limit`. Default 4.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: usize,
}

mod defaults {
    use super::Algorithm;
    use std::time::Duration;

    pub(super) fn algorithm() -> Algorithm {
        Algorithm::Gradient2
    }
    pub(super) fn initial_limit() -> usize {
        20
    }
    pub(super) fn min_limit() -> usize {
        1
    }
    pub(super) fn max_limit() -> usize {
        200
    }
    pub(super) fn backoff_ratio() -> f64 {
        0.9
    }
    pub(super) fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn smoothing() -> f64 {
        0.2
    }
    pub(super) fn rtt_tolerance() -> f64 {
        1.5
    }
    pub(super) fn long_window() -> usize {
        600
    }
    pub(super) fn queue_size() -> usize {
        4
    }
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            algorithm: defaults::algorithm(),
            initial_limit: defaults::initial_limit(),
            min_limit: defaults::min_limit(),
            max_limit: defaults::max_limit(),
            backoff_ratio: defaults::backoff_ratio(),
            timeout: defaults::timeout(),
            smoothing: defaults::smoothing(),
            rtt_tolerance: defaults::rtt_tolerance(),
            long_window: defaults::long_window(),
            queue_size: defaults::queue_size(),
        }
    }
}

/// The largest `max_limit` accepted: far above any real concurrency, low enough that the
/// arithmetic on limits stays exact in `f64`.
const LIMIT_CEILING: usize = 1 << 30;

impl AdaptiveConfig {
    /// Records every problem in this configuration under `path` (such as `adaptive.search`).
    ///
    /// Every field is checked, also those of the algorithm not chosen.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.min_limit < 1 {
            errors.push(format!("{path}.min_limit"), "must be at least 1, got 0");
        }
        if self.max_limit < self.min_limit.max(1) {
            errors.push(
                format!("{path}.max_limit"),
                format!(
                    "must be at least min_limit ({}), got {}",
                    self.min_limit.max(1),
                    self.max_limit
                ),
            );
        } else if self.max_limit > LIMIT_CEILING {
            errors.push(
                format!("{path}.max_limit"),
                format!("must be at most {LIMIT_CEILING}, got {}", self.max_limit),
            );
        }
        if self.initial_limit < self.min_limit || self.initial_limit > self.max_limit {
            errors.push(
                format!("{path}.initial_limit"),
                format!(
                    "must be between min_limit ({}) and max_limit ({}), got {}",
                    self.min_limit, self.max_limit, self.initial_limit
                ),
            );
        }
        if !(0.5..1.0).contains(&self.backoff_ratio) {
            errors.push(
                format!("{path}.backoff_ratio"),
                format!(
                    "must be at least 0.5 and below 1, got {}",
                    self.backoff_ratio
                ),
            );
        }
        if self.timeout < Duration::from_millis(1) {
            errors.push(
                format!("{path}.timeout"),
                format!(
                    "must be at least 1ms, got {}",
                    format_duration(self.timeout)
                ),
            );
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            errors.push(
                format!("{path}.smoothing"),
                format!("must be above 0 and at most 1, got {}", self.smoothing),
            );
        }
        if !(self.rtt_tolerance >= 1.0 && self.rtt_tolerance.is_finite()) {
            errors.push(
                format!("{path}.rtt_tolerance"),
                format!("must be a number of at least 1, got {}", self.rtt_tolerance),
            );
        }
        if self.long_window < 10 {
            errors.push(
                format!("{path}.long_window"),
                format!("must be at least 10, got {}", self.long_window),
            );
        }
        if self.queue_size > self.max_limit {
            errors.push(
                format!("{path}.queue_size"),
                format!(
                    "must be at most max_limit ({}), got {}",
                    self.max_limit, self.queue_size
                ),
            );
        }
    }

    /// Validates, then builds the limiter `name` that emits to `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<AdaptiveLimiter, ConfigError> {
        let algorithm = self.algorithm_for(name)?;
        Ok(AdaptiveLimiter::from_boxed(name, algorithm, events.clone()))
    }

    /// Validates, then builds the chosen algorithm on its own.
    fn algorithm_for(&self, path: &str) -> Result<Box<dyn LimitAlgorithm + Send>, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(path, &mut errors);
        errors.into_result(())?;
        Ok(match self.algorithm {
            Algorithm::Aimd => Box::new(Aimd::new_unchecked(self)),
            Algorithm::Gradient2 => Box::new(Gradient2::new_unchecked(self)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &AdaptiveConfig) -> Vec<String> {
        let mut errors = ConfigError::new(None);
        config.validate("adaptive.a", &mut errors);
        errors
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn an_empty_section_gives_the_documented_defaults() {
        let config: AdaptiveConfig = toml::from_str("").unwrap();
        assert_eq!(config, AdaptiveConfig::default());
        assert_eq!(config.algorithm, Algorithm::Gradient2);
        assert_eq!(config.initial_limit, 20);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert!(problems(&config).is_empty());
    }

    #[test]
    fn reads_every_key_and_refuses_unknown_ones() {
        let config: AdaptiveConfig = toml::from_str(
            r#"
            algorithm = "aimd"
            initial_limit = 5
            min_limit = 2
            max_limit = 50
            backoff_ratio = 0.75
            timeout = "250ms"
            smoothing = 0.5
            rtt_tolerance = 2.0
            long_window = 100
            queue_size = 3
            "#,
        )
        .unwrap();
        assert_eq!(config.algorithm, Algorithm::Aimd);
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(config.queue_size, 3);
        assert!(toml::from_str::<AdaptiveConfig>("limit = 3").is_err());
        assert!(toml::from_str::<AdaptiveConfig>("algorithm = \"vegas\"").is_err());
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = AdaptiveConfig {
            algorithm: Algorithm::Aimd,
            initial_limit: 0,
            min_limit: 0,
            max_limit: 0,
            backoff_ratio: 1.0,
            timeout: Duration::ZERO,
            smoothing: 0.0,
            rtt_tolerance: 0.5,
            long_window: 1,
            queue_size: 3,
        };
        let found = problems(&config);
        for key in [
            "min_limit",
            "max_limit",
            "backoff_ratio",
            "timeout",
            "smoothing",
            "rtt_tolerance",
            "long_window",
            "queue_size",
        ] {
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with(&format!("adaptive.a.{key}:"))),
                "{key} missing from {found:?}"
            );
        }
        assert!(
            found
                .iter()
                .any(|p| p.contains("timeout: must be at least 1ms, got 0s"))
        );
    }

    #[test]
    fn initial_limit_outside_bounds_is_refused() {
        let config = AdaptiveConfig {
            initial_limit: 300,
            ..AdaptiveConfig::default()
        };
        assert_eq!(
            problems(&config),
            [
                "adaptive.a.initial_limit: must be between min_limit (1) and max_limit (200), got 300"
            ]
        );
        let err = config.build("a", &Events::new()).unwrap_err();
        assert_eq!(err.problems[0].path, "a.initial_limit");
    }

    #[test]
    fn nan_ratios_are_refused() {
        let config = AdaptiveConfig {
            backoff_ratio: f64::NAN,
            smoothing: f64::NAN,
            rtt_tolerance: f64::NAN,
            ..AdaptiveConfig::default()
        };
        assert_eq!(problems(&config).len(), 3);
    }
}
