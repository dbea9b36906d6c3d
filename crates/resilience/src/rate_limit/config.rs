//! `[rate_limit.NAME]`: the configuration of a rate limiter.

use std::hash::Hash;
use std::time::Duration;

use super::gcra::{Gcra, MAX_TOLERANCE_NANOS};
use super::{KeyedRateLimiter, RateLimiter};
use crate::{ConfigError, Events, format_duration};

mod defaults {
    use std::time::Duration;

    pub(super) fn rate() -> f64 {
        100.0
    }
    pub(super) fn per() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn max_wait() -> Duration {
        Duration::ZERO
    }
    pub(super) fn max_keys() -> usize {
        10_000
    }
}

/// How a rate limiter admits work: `rate` units per `per`, with bursts of up to `burst` units.
///
/// ```toml
/// [rate_limit.openai]
/// rate = 90000        # tokens
/// per = "1m"
/// burst = 20000
/// max_wait = "2s"
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Units admitted per `per`, on average; finite and above zero. Default `100`.
    #[serde(default = "defaults::rate")]
    pub rate: f64,
    /// The period `rate` is counted over. Default `"1s"`.
    #[serde(with = "crate::duration::serde_duration", default = "defaults::per")]
    pub per: Duration,
    /// Units a full limiter lets through at once, at least 1. Default: `rate` rounded up.
    #[serde(default)]
    pub burst: Option<u32>,
    /// How long a plain call (or [`RateLimiter::acquire`]) waits for capacity before it is
    /// rejected. Default `"0s"`: reject at once.
    #[serde(
        with = "crate::duration::serde_duration",
        default = "defaults::max_wait"
    )]
    pub max_wait: Duration,
    /// Options for a [`KeyedRateLimiter`] built from this section (ignored by a plain one).
    #[serde(default)]
    pub keyed: KeyedConfig,
}

/// `[rate_limit.NAME.keyed]`: the bounds of a [`KeyedRateLimiter`].
///
/// A key whose theoretical arrival time has passed holds no state that a fresh key would not have,
/// so such *idle* keys are evicted whenever room is needed (and by
/// [`KeyedRateLimiter::retain_recent`]) without changing any decision. A key becomes idle at the
/// latest `burst * per / rate` after its last admission.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedConfig {
    /// The most keys held at once, at least 1. When every slot holds a key that is still active, a
    /// new key is rejected (with a `retry_after` saying when the first slot frees) rather than
    /// evicting an active key, which would hand that key a fresh burst. Default `10000`.
    #[serde(default = "defaults::max_keys")]
    pub max_keys: usize,
}

impl Default for KeyedConfig {
    fn default() -> Self {
        KeyedConfig {
            max_keys: defaults::max_keys(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate: defaults::rate(),
            per: defaults::per(),
            burst: None,
            max_wait: defaults::max_wait(),
            keyed: KeyedConfig::default(),
        }
    }
}

impl RateLimitConfig {
    /// `rate` units per `per`, everything else default.
    pub fn new(rate: f64, per: Duration) -> Self {
        RateLimitConfig {
            rate,
            per,
            ..RateLimitConfig::default()
        }
    }

    /// Sets the burst.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Sets how long a call waits for capacity.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Sets the most keys a keyed limiter holds.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.keyed.max_keys = max_keys;
        self
    }

    /// The burst in force: `burst`, or `rate` rounded up (at least 1, at most `u32::MAX`).
    pub fn effective_burst(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None if self.rate.is_finite() && self.rate > 0.0 => {
                // The float-to-int `as` saturates, which is the intent.
                (self.rate.ceil() as u32).max(1)
            }
            None => 1,
        }
    }

    /// The emission interval `per / rate` in nanoseconds, rounded up so the limiter never admits
    /// more than `rate` (`None` if it is not a whole positive number of nanoseconds that fits).
    fn interval_nanos(&self) -> Option<u64> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return None;
        }
        let t = self.per.as_nanos() as f64 / self.rate;
        (t >= 1.0 && t <= MAX_TOLERANCE_NANOS as f64).then_some(t.ceil() as u64)
    }

    /// Pushes every problem found, with its path under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        let rate_ok = self.rate.is_finite() && self.rate > 0.0;
        if !rate_ok {
            errors.push(
                format!("{path}.rate"),
                format!("must be a finite number above 0, got {}", self.rate),
            );
        }
        if self.per.is_zero() {
            errors.push(
                format!("{path}.per"),
                format!("must be at least 1ns, got {}", format_duration(self.per)),
            );
        }
        if self.burst == Some(0) {
            errors.push(format!("{path}.burst"), "must be at least 1, got 0");
        }
        if rate_ok && !self.per.is_zero() {
            let per = format_duration(self.per);
            match self.interval_nanos() {
                None if (self.per.as_nanos() as f64 / self.rate) < 1.0 => errors.push(
                    format!("{path}.rate"),
                    format!(
                        "must admit at most one unit per nanosecond, got {} per {per}",
                        self.rate
                    ),
                ),
                None => errors.push(
                    format!("{path}.rate"),
                    format!("is too slow to represent, got {} per {per}", self.rate),
                ),
                Some(t) if self.burst != Some(0) => {
                    if t.checked_mul(u64::from(self.effective_burst()))
                        .is_none_or(|tau| tau > MAX_TOLERANCE_NANOS)
                    {
                        errors.push(
                            format!("{path}.burst"),
                            format!(
                                "burst / rate * per must be at most 146 years, got burst {} at {} per {per}",
                                self.effective_burst(),
                                self.rate
                            ),
                        );
                    }
                }
                Some(_) => {}
            }
        }
        if self.keyed.max_keys == 0 {
            errors.push(
                format!("{path}.keyed.max_keys"),
                "must be at least 1, got 0",
            );
        }
    }

    fn checked(&self, name: &str) -> Result<Gcra, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        let gcra = Gcra::new(self.interval_nanos().unwrap_or(1), self.effective_burst());
        errors.into_result(gcra)
    }

    /// Validates, then builds the limiter `name`, emitting to `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<RateLimiter, ConfigError> {
        let gcra = self.checked(name)?;
        Ok(RateLimiter::from_valid_config(
            name,
            self.clone(),
            gcra,
            events.clone(),
        ))
    }

    /// Validates, then builds a limiter `name` that keeps one limit per key (tenant, host, API key),
    /// holding at most `keyed.max_keys` keys.
    pub fn build_keyed<K>(
        &self,
        name: &str,
        events: &Events,
    ) -> Result<KeyedRateLimiter<K>, ConfigError>
    where
        K: Hash + Eq + Clone,
    {
        let gcra = self.checked(name)?;
        Ok(KeyedRateLimiter::from_valid_config(
            name,
            self.clone(),
            gcra,
            events.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimitConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_fill_every_field() {
        let c = parse("").unwrap();
        assert_eq!(c, RateLimitConfig::default());
        assert_eq!(c.effective_burst(), 100);
        assert_eq!(c.keyed.max_keys, 10_000);
        assert_eq!(c.max_wait, Duration::ZERO);
    }

    #[test]
    fn reads_integer_rate_durations_and_keyed_table() {
        let c = parse(
            "rate = 1000\nper = \"1m\"\nburst = 500\nmax_wait = \"250ms\"\n[keyed]\nmax_keys = 7\n",
        )
        .unwrap();
        assert_eq!(c.rate, 1000.0);
        assert_eq!(c.per, Duration::from_secs(60));
        assert_eq!(c.burst, Some(500));
        assert_eq!(c.max_wait, Duration::from_millis(250));
        assert_eq!(c.keyed.max_keys, 7);
    }

    #[test]
    fn refuses_unknown_keys() {
        assert!(parse("rate = 1\nburts = 3\n").is_err());
        assert!(parse("[keyed]\nmax_key = 3\n").is_err());
    }

    #[test]
    fn burst_defaults_to_rate_rounded_up() {
        assert_eq!(
            RateLimitConfig::new(2.5, Duration::from_secs(1)).effective_burst(),
            3
        );
        assert_eq!(
            RateLimitConfig::new(0.2, Duration::from_secs(1)).effective_burst(),
            1
        );
        assert_eq!(
            RateLimitConfig::new(1e20, Duration::from_secs(3600)).effective_burst(),
            u32::MAX
        );
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let c = RateLimitConfig {
            rate: f64::NAN,
            per: Duration::ZERO,
            burst: Some(0),
            max_wait: Duration::ZERO,
            keyed: KeyedConfig { max_keys: 0 },
        };
        let err = c.build("api", &Events::new()).unwrap_err();
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["api.rate", "api.per", "api.burst", "api.keyed.max_keys"]
        );
        assert!(err.problems[0].message.contains("got NaN"), "{err}");
        assert!(err.problems[1].message.contains("got 0s"), "{err}");
    }

    #[test]
    fn refuses_rates_too_fast_or_too_slow_to_represent() {
        let fast = RateLimitConfig::new(2e9, Duration::from_secs(1)).burst(1);
        let err = fast.build("f", &Events::new()).unwrap_err();
        assert_eq!(err.problems[0].path, "f.rate");
        assert!(
            err.problems[0].message.contains("one unit per nanosecond"),
            "{err}"
        );

        let slow = RateLimitConfig::new(1e-30, Duration::from_secs(1));
        assert_eq!(
            slow.build("s", &Events::new()).unwrap_err().problems[0].path,
            "s.rate"
        );

        let long = RateLimitConfig::new(1.0, Duration::from_secs(86_400 * 365)).burst(1000);
        assert_eq!(
            long.build("l", &Events::new()).unwrap_err().problems[0].path,
            "l.burst"
        );

        for rate in [-1.0, 0.0, f64::INFINITY] {
            assert!(
                RateLimitConfig::new(rate, Duration::from_secs(1))
                    .build("x", &Events::new())
                    .is_err()
            );
        }
    }
}
