//! `BalancerConfig`: how a [`Balancer`] weighs, ejects and readmits endpoints.

use std::time::Duration;

use rampart_resilience::{ConfigError, Name, format_duration};

use super::{BalanceEvents, Balancer};

/// Configuration of a [`Balancer`]. Every key is optional:
///
/// ```toml
/// decay = "10s"                  # time constant of the peak EWMA latency
/// default_rtt = "30ms"           # latency assumed for an endpoint with no sample yet but calls in flight
/// failure_penalty = "1s"         # a failed call counts as taking at least this long
/// consecutive_failures = 5       # failures in a row that eject an endpoint
/// latency_factor = 3.0           # eject when latency > factor x median of the others
/// min_samples = 10               # samples an endpoint needs before its latency can eject it
/// base_ejection = "30s"          # first ejection; the n-th lasts n x base_ejection
/// max_ejection = "5m"            # ... but never longer than this
/// max_ejected_share = 0.5        # at most this share of endpoints ejected at once
/// ramp_up = "30s"                # a readmitted endpoint's weight grows from 0 to 1 over this
/// recovery_streak = 100          # successes in a row that forgive one past ejection
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    /// Time constant of the peak EWMA latency: a lower sample weighs `1 - exp(-elapsed / decay)`.
    /// At least 1ms. Default `"10s"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::decay"
    )]
    pub decay: Duration,
    /// The latency assumed for an endpoint that has no sample yet while calls to it are in
    /// flight. An endpoint with no sample and nothing in flight costs zero, so it is tried at
    /// once (as Finagle does). At least 1us. Default `"30ms"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::default_rtt"
    )]
    pub default_rtt: Duration,
    /// The latency a failed call feeds the estimate picks compare is `max(latency,
    /// failure_penalty)`, so an endpoint that fails fast looks expensive rather than cheap. The
    /// latency-outlier detector sees the real latency of failures instead (failures eject through
    /// `consecutive_failures`). `"0s"` feeds failures at their real latency. Default `"1s"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::failure_penalty"
    )]
    pub failure_penalty: Duration,
    /// Failures in a row that eject an endpoint; at least 1. Default 5.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// An endpoint whose latency estimate is above this many times the median of the other
    /// endpoints' is ejected; above 1. Default 3.0.
    #[serde(default = "defaults::latency_factor")]
    pub latency_factor: f64,
    /// Samples an endpoint needs (since it was last readmitted) before its latency counts, for
    /// itself and as one of the others; at least 1. Default 10.
    #[serde(default = "defaults::min_samples")]
    pub min_samples: u32,
    /// How long the first ejection lasts; the n-th ejection lasts n times as long (up to
    /// `max_ejection`). At least 1ms. Default `"30s"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::base_ejection"
    )]
    pub base_ejection: Duration,
    /// The longest an ejection lasts; at least `base_ejection`. Default `"5m"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::max_ejection"
    )]
    pub max_ejection: Duration,
    /// The largest share of endpoints ejected at the same time, in `[0, 1]`: at most
    /// `floor(share x n)` of `n` endpoints, but at least 1 when the share is above 0 and there are
    /// 2 endpoints or more; whatever the share, one endpoint always stays. 0 turns ejection off.
    /// Default 0.5.
    #[serde(default = "defaults::max_ejected_share")]
    pub max_ejected_share: f64,
    /// After its ejection ends an endpoint's weight grows linearly from 0 to 1 over this time (a
    /// pick skips it with probability `1 - weight`). `"0s"` readmits at full weight. Default `"30s"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::ramp_up"
    )]
    pub ramp_up: Duration,
    /// Successes in a row after which one past ejection is forgiven, so the next ejection is one
    /// `base_ejection` shorter; at least 1. Default 100.
    #[serde(default = "defaults::recovery_streak")]
    pub recovery_streak: u32,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn decay() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn default_rtt() -> Duration {
        Duration::from_millis(30)
    }
    pub(super) fn failure_penalty() -> Duration {
        Duration::from_secs(1)
    }
    pub(super) fn consecutive_failures() -> u32 {
        5
    }
    pub(super) fn latency_factor() -> f64 {
        3.0
    }
    pub(super) fn min_samples() -> u32 {
        10
    }
    pub(super) fn base_ejection() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn max_ejection() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn max_ejected_share() -> f64 {
        0.5
    }
    pub(super) fn ramp_up() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn recovery_streak() -> u32 {
        100
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            decay: defaults::decay(),
            default_rtt: defaults::default_rtt(),
            failure_penalty: defaults::failure_penalty(),
            consecutive_failures: defaults::consecutive_failures(),
            latency_factor: defaults::latency_factor(),
            min_samples: defaults::min_samples(),
            base_ejection: defaults::base_ejection(),
            max_ejection: defaults::max_ejection(),
            max_ejected_share: defaults::max_ejected_share(),
            ramp_up: defaults::ramp_up(),
            recovery_streak: defaults::recovery_streak(),
        }
    }
}

/// The longest duration accepted anywhere: far beyond any sensible setting, and short enough that
/// nanosecond arithmetic on it never overflows a `u64`.
const DURATION_CEILING: Duration = Duration::from_secs(365 * 24 * 3600);

impl BalancerConfig {
    /// Records every problem in this configuration under `path` (such as `balance.redis`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        let at_least = |errors: &mut ConfigError, key: &str, value: Duration, min: Duration| {
            if value < min {
                errors.push(
                    format!("{path}.{key}"),
                    format!(
                        "must be at least {}, got {}",
                        format_duration(min),
                        format_duration(value)
                    ),
                );
            } else if value > DURATION_CEILING {
                errors.push(
                    format!("{path}.{key}"),
                    format!(
                        "must be at most {}, got {}",
                        format_duration(DURATION_CEILING),
                        format_duration(value)
                    ),
                );
            }
        };
        at_least(errors, "decay", self.decay, Duration::from_millis(1));
        at_least(
            errors,
            "default_rtt",
            self.default_rtt,
            Duration::from_micros(1),
        );
        at_least(
            errors,
            "failure_penalty",
            self.failure_penalty,
            Duration::ZERO,
        );
        at_least(
            errors,
            "base_ejection",
            self.base_ejection,
            Duration::from_millis(1),
        );
        at_least(
            errors,
            "max_ejection",
            self.max_ejection,
            self.base_ejection.min(DURATION_CEILING),
        );
        at_least(errors, "ramp_up", self.ramp_up, Duration::ZERO);
        if self.consecutive_failures < 1 {
            errors.push(
                format!("{path}.consecutive_failures"),
                "must be at least 1, got 0",
            );
        }
        if !(self.latency_factor > 1.0 && self.latency_factor.is_finite()) {
            errors.push(
                format!("{path}.latency_factor"),
                format!("must be a number above 1, got {}", self.latency_factor),
            );
        }
        if self.min_samples < 1 {
            errors.push(format!("{path}.min_samples"), "must be at least 1, got 0");
        }
        if !(0.0..=1.0).contains(&self.max_ejected_share) {
            errors.push(
                format!("{path}.max_ejected_share"),
                format!("must be between 0 and 1, got {}", self.max_ejected_share),
            );
        }
        if self.recovery_streak < 1 {
            errors.push(
                format!("{path}.recovery_streak"),
                "must be at least 1, got 0",
            );
        }
    }

    /// Validates this configuration (with `name` as the key path) and builds a balancer named
    /// `name` over `endpoints`, each given with its name. Endpoint names must be unique.
    ///
    /// An empty set of endpoints is allowed; [`Balancer::pick`] then returns `None`.
    pub fn build<T, N, I>(
        &self,
        name: &str,
        endpoints: I,
        events: &BalanceEvents,
    ) -> Result<Balancer<T>, ConfigError>
    where
        N: Into<Name>,
        I: IntoIterator<Item = (N, T)>,
    {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        let endpoints: Vec<(Name, T)> = endpoints
            .into_iter()
            .map(|(n, value)| (n.into(), value))
            .collect();
        for (i, (endpoint, _)) in endpoints.iter().enumerate() {
            if endpoints[..i]
                .iter()
                .any(|(earlier, _)| earlier == endpoint)
            {
                errors.push(
                    format!("{name}.endpoints[{i}]"),
                    format!("duplicate endpoint name {:?}", endpoint.as_str()),
                );
            }
        }
        errors.into_result(())?;
        Ok(Balancer::from_parts(
            Name::new(name),
            self,
            endpoints,
            events.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, MapDeserializer};

    fn from_pairs(pairs: &[(&'static str, &'static str)]) -> Result<BalancerConfig, ValueError> {
        let map = MapDeserializer::<_, ValueError>::new(
            pairs.iter().map(|&(k, v)| (k, v.into_deserializer())),
        );
        BalancerConfig::deserialize(map)
    }

    #[test]
    fn reads_human_durations_and_defaults_the_rest() {
        let config = from_pairs(&[("base_ejection", "1m30s"), ("ramp_up", "0s")]).unwrap();
        assert_eq!(config.base_ejection, Duration::from_secs(90));
        assert_eq!(config.ramp_up, Duration::ZERO);
        assert_eq!(config.decay, Duration::from_secs(10));
        assert_eq!(config.max_ejected_share, 0.5);
        assert_eq!(config.failure_penalty, Duration::from_secs(1));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_durations() {
        let e = from_pairs(&[("ejection_time", "30s")]).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = from_pairs(&[("decay", "ten seconds")]).unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn default_config_is_valid() {
        let mut errors = ConfigError::new(None);
        BalancerConfig::default().validate("balance.redis", &mut errors);
        assert!(errors.is_empty(), "{errors}");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = BalancerConfig {
            decay: Duration::ZERO,
            default_rtt: Duration::ZERO,
            failure_penalty: Duration::from_secs(400 * 24 * 3600),
            consecutive_failures: 0,
            latency_factor: 0.5,
            min_samples: 0,
            base_ejection: Duration::from_secs(60),
            max_ejection: Duration::from_secs(10),
            max_ejected_share: 1.5,
            ramp_up: Duration::from_secs(400 * 24 * 3600),
            recovery_streak: 0,
        };
        let e = config
            .build(
                "balance.redis",
                [("a", ()), ("b", ()), ("a", ())],
                &BalanceEvents::new(),
            )
            .unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "balance.redis.decay",
                "balance.redis.default_rtt",
                "balance.redis.failure_penalty",
                "balance.redis.max_ejection",
                "balance.redis.ramp_up",
                "balance.redis.consecutive_failures",
                "balance.redis.latency_factor",
                "balance.redis.min_samples",
                "balance.redis.max_ejected_share",
                "balance.redis.recovery_streak",
                "balance.redis.endpoints[2]",
            ]
        );
        let text = e.to_string();
        assert!(
            text.contains("decay: must be at least 1ms, got 0s"),
            "{text}"
        );
        assert!(
            text.contains("max_ejection: must be at least 1m, got 10s"),
            "{text}"
        );
        assert!(
            text.contains("latency_factor: must be a number above 1, got 0.5"),
            "{text}"
        );
        assert!(text.contains("duplicate endpoint name \"a\""), "{text}");
    }

    #[test]
    fn nan_share_and_factor_are_refused() {
        let config = BalancerConfig {
            latency_factor: f64::NAN,
            max_ejected_share: f64::NAN,
            ..BalancerConfig::default()
        };
        let mut errors = ConfigError::new(None);
        config.validate("b", &mut errors);
        assert_eq!(errors.problems.len(), 2, "{errors}");
    }
}
