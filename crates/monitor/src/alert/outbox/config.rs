//! [`DeliveryConfig`]: how the outbox delivers to one receiver, read from the receiver's
//! `delivery = { ... }` sub-table.

use std::time::Duration;

use rampart_resilience::breaker::{BreakerConfig, WindowKind};
use rampart_resilience::rate_limit::RateLimitConfig;
use rampart_resilience::retry::{Backoff, Jitter};
use rampart_resilience::{ConfigError, parse_duration, serde_duration};
use serde::Deserialize;

use crate::config::parse::read_lenient;

/// How the outbox delivers to one receiver. Every key is optional:
///
/// ```toml
/// [[alerting.receiver]]
/// name = "ops"
/// # ...
/// delivery = { rate = "1/s", burst = 5, max_age = "24h", backoff = { base = "1s", max = "5m" }, breaker = { consecutive_failures = 5, wait_in_open = "30s" } }
/// ```
///
/// - `rate` (default `"1/s"`): notifications per time unit at most, `"N/s"`, `"N/m"`, `"N/h"`
///   or `"N/<duration>"` (`"10/30s"`); `burst` (default 5): how many may go at once after a
///   quiet spell.
/// - `max_age` (default `"24h"`): a notification not delivered this long after it was written
///   to the outbox is dead-lettered.
/// - `backoff.base` (default `"1s"`), `backoff.max` (default `"5m"`), `backoff.multiplier`
///   (default 2): the wait before retry `n` is uniform in `[0, min(max, base * multiplier^n)]`
///   (exponential backoff with full jitter), and never shorter than a `Retry-After` the receiver
///   sent.
/// - `breaker`: the keys of a resilience `[breaker.NAME]` section; here `window` defaults to
///   `"consecutive"` (5 failures in a row open it for 30 s), which suits the low call rates of
///   notifications. Rejections by the receiver and throttling do not count as failures.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeliveryConfig {
    /// The rate limit: `rate` per `per`, bursts of `burst`.
    pub rate_limit: RateLimitConfig,
    /// Age after which an undelivered notification is dead-lettered.
    pub max_age: Duration,
    /// Backoff between attempts.
    pub backoff: BackoffConfig,
    /// The receiver's circuit breaker.
    pub breaker: BreakerConfig,
}

/// `delivery.backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The ceiling of the first retry's wait. Default `"1s"`.
    #[serde(with = "serde_duration", default = "defaults::base")]
    pub base: Duration,
    /// The highest ceiling. Default `"5m"`.
    #[serde(with = "serde_duration", default = "defaults::max")]
    pub max: Duration,
    /// Growth per retry. Default 2.
    #[serde(default = "defaults::multiplier")]
    pub multiplier: f64,
}

mod defaults {
    use std::time::Duration;
    pub(super) fn base() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn max() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn multiplier() -> f64 {
        2.0
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: defaults::base(),
            max: defaults::max(),
            multiplier: defaults::multiplier(),
        }
    }
}

impl BackoffConfig {
    /// The backoff: exponential with full jitter.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.base, self.max, self.multiplier, Jitter::Full)
    }
}

/// The default rate: one notification a second.
pub const DEFAULT_RATE: &str = "1/s";
/// The default burst.
pub const DEFAULT_BURST: u32 = 5;
/// The default maximum age: a day.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            rate_limit: RateLimitConfig::new(1.0, Duration::from_secs(1)).burst(DEFAULT_BURST),
            max_age: DEFAULT_MAX_AGE,
            backoff: BackoffConfig::default(),
            breaker: BreakerConfig::consecutive(5, Duration::from_secs(30)),
        }
    }
}

impl DeliveryConfig {
    /// Sets the rate limit to `rate` per `per` with bursts of `burst`.
    pub fn with_rate(mut self, rate: f64, per: Duration, burst: u32) -> Self {
        self.rate_limit = RateLimitConfig::new(rate, per).burst(burst);
        self
    }

    /// Sets the maximum age.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Sets the backoff's base and maximum.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff.base = base;
        self.backoff.max = max;
        self
    }

    /// Sets the breaker.
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        self.rate_limit.validate(&format!("{path}.rate"), errors);
        self.breaker.validate(&format!("{path}.breaker"), errors);
        if self.max_age.is_zero() {
            errors.push(format!("{path}.max_age"), "must be above zero");
        }
        let b = &self.backoff;
        if b.base.is_zero() {
            errors.push(format!("{path}.backoff.base"), "must be above zero");
        }
        if b.max < b.base {
            errors.push(
                format!("{path}.backoff.max"),
                "must be at least backoff.base",
            );
        }
        if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
            errors.push(
                format!("{path}.backoff.multiplier"),
                "must be a number of at least 1",
            );
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    rate: Option<String>,
    burst: Option<u32>,
    #[serde(default, with = "serde_duration::option")]
    max_age: Option<Duration>,
    backoff: Option<BackoffConfig>,
    breaker: Option<toml::Value>,
}

/// Parses `"N/s"`, `"N/m"`, `"N/h"`, `"N/<duration>"`: (rate, per).
pub fn parse_rate(text: &str) -> Option<(f64, Duration)> {
    let (n, per) = text.split_once('/')?;
    let n: f64 = n.trim().parse().ok()?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => parse_duration(other).ok()?,
    };
    (n.is_finite() && n > 0.0 && !per.is_zero()).then_some((n, per))
}

/// Reads a receiver's `delivery` sub-table at `path` (say `alerting.receiver[0].delivery`),
/// reporting every problem with its key path; keys with problems take their defaults. `None`
/// only if it is not a table.
pub fn read_delivery(
    path: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<DeliveryConfig> {
    let raw: RawDelivery = read_lenient(path, value, errors)?;
    let mut config = DeliveryConfig::default();
    if let Some(rate) = &raw.rate {
        match parse_rate(rate) {
            Some((rate, per)) => {
                config.rate_limit.rate = rate;
                config.rate_limit.per = per;
            }
            None => errors.push(
                format!("{path}.rate"),
                format!("must be like \"1/s\", \"30/m\" or \"10/30s\", got {rate:?}"),
            ),
        }
    }
    if let Some(burst) = raw.burst {
        config.rate_limit.burst = Some(burst);
    }
    if let Some(max_age) = raw.max_age {
        config.max_age = max_age;
    }
    if let Some(backoff) = raw.backoff {
        config.backoff = backoff;
    }
    if let Some(breaker) = raw.breaker {
        let breaker = match breaker {
            toml::Value::Table(mut t) => {
                t.entry("window")
                    .or_insert_with(|| toml::Value::String("consecutive".into()));
                toml::Value::Table(t)
            }
            other => other,
        };
        if let Some(b) = read_lenient::<BreakerConfig>(&format!("{path}.breaker"), &breaker, errors)
        {
            config.breaker = b;
        }
    }
    if config.breaker.window != WindowKind::Consecutive && config.breaker.minimum_calls == 0 {
        errors.push(
            format!("{path}.breaker.minimum_calls"),
            "must be at least 1",
        );
    }
    config.validate(path, errors);
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Option<DeliveryConfig>, String) {
        // Empty when there is no problem.
        let table: toml::Table = toml::from_str(text).unwrap();
        let mut errors = ConfigError::new(None);
        let c = read_delivery(
            "alerting.receiver[0].delivery",
            &toml::Value::Table(table),
            &mut errors,
        );
        let text = if errors.is_empty() {
            String::new()
        } else {
            errors.to_string()
        };
        (c, text)
    }

    #[test]
    fn an_empty_table_gives_the_documented_defaults() {
        let (c, errors) = read("");
        let c = c.unwrap();
        assert_eq!(c, DeliveryConfig::default());
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(c.rate_limit.rate, 1.0);
        assert_eq!(c.rate_limit.per, Duration::from_secs(1));
        assert_eq!(c.rate_limit.burst, Some(5));
        assert_eq!(c.max_age, Duration::from_secs(86_400));
        assert_eq!(c.backoff.base, Duration::from_secs(1));
        assert_eq!(c.backoff.max, Duration::from_secs(300));
        assert_eq!(c.breaker.window, WindowKind::Consecutive);
        assert_eq!(c.breaker.consecutive_failures, 5);
        assert_eq!(c.breaker.wait_in_open, Duration::from_secs(30));
    }

    #[test]
    fn every_key_is_read() {
        let (c, errors) = read(
            r#"
            rate = "30/m"
            burst = 10
            max_age = "2h"
            backoff = { base = "500ms", max = "1m", multiplier = 3.0 }
            breaker = { consecutive_failures = 3, wait_in_open = "10s" }
            "#,
        );
        assert!(errors.is_empty(), "{errors}");
        let c = c.unwrap();
        assert_eq!(c.rate_limit.rate, 30.0);
        assert_eq!(c.rate_limit.per, Duration::from_secs(60));
        assert_eq!(c.rate_limit.burst, Some(10));
        assert_eq!(c.max_age, Duration::from_secs(7200));
        assert_eq!(c.backoff.base, Duration::from_millis(500));
        assert_eq!(c.backoff.max, Duration::from_secs(60));
        assert_eq!(c.backoff.multiplier, 3.0);
        assert_eq!(c.breaker.window, WindowKind::Consecutive);
        assert_eq!(c.breaker.consecutive_failures, 3);
        assert_eq!(c.breaker.wait_in_open, Duration::from_secs(10));
        assert_eq!(parse_rate("10/30s"), Some((10.0, Duration::from_secs(30))));
        assert_eq!(parse_rate("2/h"), Some((2.0, Duration::from_secs(3600))));
    }

    #[test]
    fn the_guide_s_example_reads_as_the_defaults() {
        let guide = include_str!("../../../../../docs/alerting.md");
        let line = guide
            .lines()
            .find(|l| l.starts_with("delivery = {"))
            .expect("docs/alerting.md has a delivery example");
        let table: toml::Table = toml::from_str(line).unwrap();
        let mut errors = ConfigError::new(None);
        let c = read_delivery("delivery", &table["delivery"], &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors}");
        assert_eq!(c, DeliveryConfig::default());
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let (c, errors) = read(
            r#"
            rate = "fast"
            max_age = "0s"
            retries = 3
            backoff = { base = "10s", max = "1s", jitter = "none" }
            breaker = { failure_rat = 0.5, consecutive_failures = 0 }
            "#,
        );
        assert!(c.is_some());
        for key in [
            "alerting.receiver[0].delivery.rate",
            "alerting.receiver[0].delivery.max_age",
            "alerting.receiver[0].delivery.retries",
            "alerting.receiver[0].delivery.backoff.jitter",
            "alerting.receiver[0].delivery.breaker.failure_rat",
        ] {
            assert!(errors.contains(key), "{key} missing from: {errors}");
        }
    }
}
