//! `[hedge.NAME]`: the configuration of a hedging policy.

use std::time::Duration;

use crate::{ConfigError, Events, format_duration};

use super::{Hedge, HedgeDelay, LATENCY_SAMPLES};

/// The hedge delay when neither `delay` nor `percentile` is set.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(50);

/// Configuration of a [`Hedge`], read from `[hedge.NAME]`.
///
/// Set at most one of `delay` (a fixed wait before each hedge) and `percentile` (wait for that
/// percentile of recent successful calls' latency); with neither, the delay is a fixed 50ms.
///
/// ```toml
/// [hedge.search]
/// percentile = 95.0     # or: delay = "30ms"
/// max_hedges = 1
/// min_samples = 20
/// max_hedge_ratio = 0.1
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// A fixed wait before each hedge, at least 1ms. Default none (see `percentile`; with neither
    /// set, 50ms).
    #[serde(
        with = "crate::duration::serde_duration::option",
        default = "defaults::delay"
    )]
    pub delay: Option<Duration>,
    /// Hedge once a call has taken longer than this percentile, in `(0, 100)`, of the latency of
    /// recent successful calls. Until `min_samples` calls have succeeded, calls are not hedged.
    /// Default none.
    #[serde(default = "defaults::percentile")]
    pub percentile: Option<f64>,
    /// Extra attempts a call may start, from 1 to 5; each waits one more delay. Default 1.
    #[serde(default = "defaults::max_hedges")]
    pub max_hedges: u32,
    /// Percentile mode: successful calls to observe before the first hedge, from 1 to 512.
    /// Default 20.
    #[serde(default = "defaults::min_samples")]
    pub min_samples: usize,
    /// The most hedges per call over time, in `(0, 1]`: every call earns this fraction of a hedge
    /// and every hedge spends one, so hedging cannot double the load on a sick dependency.
    /// Default 0.1.
    #[serde(default = "defaults::max_hedge_ratio")]
    pub max_hedge_ratio: f64,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn delay() -> Option<Duration> {
        None
    }
    pub(super) fn percentile() -> Option<f64> {
        None
    }
    pub(super) fn max_hedges() -> u32 {
        1
    }
    pub(super) fn min_samples() -> usize {
        20
    }
    pub(super) fn max_hedge_ratio() -> f64 {
        0.1
    }
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            delay: defaults::delay(),
            percentile: defaults::percentile(),
            max_hedges: defaults::max_hedges(),
            min_samples: defaults::min_samples(),
            max_hedge_ratio: defaults::max_hedge_ratio(),
        }
    }
}

/// The most extra attempts a call may start.
const MAX_HEDGES: u32 = 5;

impl HedgeConfig {
    /// Records every problem in this configuration under `path` (such as `hedge.search`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if let Some(delay) = self.delay {
            if delay < Duration::from_millis(1) {
                errors.push(
                    format!("{path}.delay"),
                    format!("must be at least 1ms, got {}", format_duration(delay)),
                );
            }
            if self.percentile.is_some() {
                errors.push(
                    format!("{path}.percentile"),
                    "cannot be set together with delay; set one of the two",
                );
            }
        }
        if let Some(p) = self.percentile
            && !(p > 0.0 && p < 100.0)
        {
            errors.push(
                format!("{path}.percentile"),
                format!("must be above 0 and below 100, got {p}"),
            );
        }
        if !(1..=MAX_HEDGES).contains(&self.max_hedges) {
            errors.push(
                format!("{path}.max_hedges"),
                format!(
                    "must be between 1 and {MAX_HEDGES}, got {}",
                    self.max_hedges
                ),
            );
        }
        if !(1..=LATENCY_SAMPLES).contains(&self.min_samples) {
            errors.push(
                format!("{path}.min_samples"),
                format!(
                    "must be between 1 and {LATENCY_SAMPLES}, got {}",
                    self.min_samples
                ),
            );
        }
        if !(self.max_hedge_ratio > 0.0 && self.max_hedge_ratio <= 1.0) {
            errors.push(
                format!("{path}.max_hedge_ratio"),
                format!(
                    "must be above 0 and at most 1, got {}",
                    self.max_hedge_ratio
                ),
            );
        }
    }

    /// Validates, then builds the hedging policy `name` that emits to `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<Hedge, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        errors.into_result(())?;
        let delay = match self.percentile {
            Some(percentile) => HedgeDelay::Percentile {
                percentile,
                min_samples: self.min_samples,
            },
            None => HedgeDelay::Fixed(self.delay.unwrap_or(DEFAULT_DELAY)),
        };
        Ok(Hedge::new(
            name,
            delay,
            self.max_hedges,
            self.max_hedge_ratio,
            events,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &HedgeConfig) -> Vec<String> {
        let mut errors = ConfigError::new(None);
        config.validate("hedge.h", &mut errors);
        errors
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn an_empty_section_hedges_after_a_fixed_50ms() {
        let config: HedgeConfig = toml::from_str("").unwrap();
        assert_eq!(config, HedgeConfig::default());
        let hedge = config.build("h", &Events::new()).unwrap();
        assert_eq!(hedge.stats().current_delay, Some(DEFAULT_DELAY));
    }

    #[test]
    fn reads_every_key_and_refuses_unknown_ones() {
        let config: HedgeConfig = toml::from_str(
            r#"
            percentile = 99.0
            max_hedges = 2
            min_samples = 50
            max_hedge_ratio = 0.5
            "#,
        )
        .unwrap();
        assert_eq!(config.percentile, Some(99.0));
        assert_eq!(config.max_hedges, 2);
        let config: HedgeConfig = toml::from_str(r#"delay = "30ms""#).unwrap();
        assert_eq!(config.delay, Some(Duration::from_millis(30)));
        assert!(toml::from_str::<HedgeConfig>("hedges = 2").is_err());
        assert!(toml::from_str::<HedgeConfig>(r#"delay = "soon""#).is_err());
    }

    #[test]
    fn delay_and_percentile_together_are_refused() {
        let config = HedgeConfig {
            delay: Some(Duration::from_millis(10)),
            percentile: Some(95.0),
            ..HedgeConfig::default()
        };
        assert_eq!(
            problems(&config),
            ["hedge.h.percentile: cannot be set together with delay; set one of the two"]
        );
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = HedgeConfig {
            delay: Some(Duration::ZERO),
            percentile: None,
            max_hedges: 6,
            min_samples: 0,
            max_hedge_ratio: f64::NAN,
        };
        assert_eq!(
            problems(&config),
            [
                "hedge.h.delay: must be at least 1ms, got 0s",
                "hedge.h.max_hedges: must be between 1 and 5, got 6",
                "hedge.h.min_samples: must be between 1 and 512, got 0",
                "hedge.h.max_hedge_ratio: must be above 0 and at most 1, got NaN",
            ]
        );
        let config = HedgeConfig {
            percentile: Some(100.0),
            max_hedges: 0,
            min_samples: 513,
            max_hedge_ratio: 0.0,
            ..HedgeConfig::default()
        };
        assert_eq!(problems(&config).len(), 4);
        assert!(config.build("x", &Events::new()).is_err());
    }
}
