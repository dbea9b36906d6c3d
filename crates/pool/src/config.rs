//! The pool's configuration: sizes, timeouts, lifetimes, validation, health thresholds.

use std::time::Duration;

use rampart_resilience::{ConfigError, format_duration};
use serde::Deserialize;

use crate::{Manager, Pool, PoolEvents};

/// How a pool is sized, timed and judged healthy. Every field has a default, so a TOML section sets
/// only what it changes; unknown keys are refused. Durations are strings (`"30s"`); where a duration
/// says "`0s` disables", zero turns the feature off.
///
/// ```toml
/// [pool.orders]
/// max_size = 20
/// min_idle = 2
/// acquire_timeout = "5s"
/// max_lifetime = "30m"
/// leak_detection_threshold = "60s"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Most connections open at once, idle and in use together. Default 10; at least 1.
    #[serde(default = "defaults::max_size")]
    pub max_size: usize,
    /// Idle connections the pool keeps open (and opens in the background). Default 0; at most
    /// `max_size`.
    #[serde(default)]
    pub min_idle: usize,
    /// Longest one connect may take. Default `"10s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// Longest `acquire` waits in all (queue, connect, validation). Default `"30s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::acquire_timeout"
    )]
    pub acquire_timeout: Duration,
    /// An idle connection beyond `min_idle` is closed after this long unused: timed-out idle
    /// connections close, oldest first, while more than `min_idle` connections are idle
    /// (connections in use do not count), so the pool never closes an idle connection only to
    /// reopen it for `min_idle`. Default `"10m"`; `"0s"` disables.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::idle_timeout"
    )]
    pub idle_timeout: Duration,
    /// A connection is retired after this long open (closed when idle, or on return). Default
    /// `"30m"`; `"0s"` disables.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::max_lifetime"
    )]
    pub max_lifetime: Duration,
    /// Each connection's lifetime is `max_lifetime` minus a random share of it between 0 and this
    /// fraction, so connections made together retire staggered, never all at once. Default `0.025`
    /// (2.5 %); between 0 and 0.5.
    #[serde(default = "defaults::lifetime_jitter")]
    pub lifetime_jitter: f64,
    /// An idle connection not checked for this long is validated in the background. Default `"30s"`;
    /// `"0s"` disables.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::keepalive_interval"
    )]
    pub keepalive_interval: Duration,
    /// A connection used within this long is handed out without validation. Default `"500ms"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::validation_bypass"
    )]
    pub validation_bypass: Duration,
    /// Longest one validation ([`Manager::is_valid`]) or reset ([`Manager::reset`]) may take, at
    /// checkout and in the background; one that takes longer counts as a failed validation and
    /// closes the connection ([`CloseReason::Invalid`](crate::CloseReason::Invalid)), so a frozen
    /// server stalls neither acquires nor the maintenance task. Default `"5s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::validation_timeout"
    )]
    pub validation_timeout: Duration,
    /// Most connects in flight at once. Default 2; at least 1.
    #[serde(default = "defaults::max_connecting")]
    pub max_connecting: usize,
    /// A connection held longer than this is reported once as a possible leak, with where it was
    /// acquired. Default: none (off); at least 1ms when set.
    #[serde(with = "rampart_resilience::serde_duration::option", default)]
    pub leak_detection_threshold: Option<Duration>,
    /// How often the background task checks leaks, idle timeouts, lifetimes, keepalive, `min_idle`
    /// and health. Default `"1s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::maintenance_interval"
    )]
    pub maintenance_interval: Duration,
    /// Health: the pool is *degraded* while some acquire waited longer than this (judged every
    /// maintenance interval). Default `"1s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::degraded_wait"
    )]
    pub degraded_wait: Duration,
    /// Health: the pool is *degraded* while the share of failed validations in a maintenance
    /// interval exceeds this. Default `0.2`; between 0 and 1.
    #[serde(default = "defaults::degraded_validation_failure_rate")]
    pub degraded_validation_failure_rate: f64,
    /// Health: this many failed connects in a row make the pool *unhealthy* and open the connect
    /// circuit breaker, so a dead server is not hammered. Default 5; at least 1.
    #[serde(default = "defaults::unhealthy_after")]
    pub unhealthy_after: u32,
    /// How long the connect breaker stays open before it lets a trial connect through. Default
    /// `"5s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::breaker_recovery"
    )]
    pub breaker_recovery: Duration,
    /// Health: after being unhealthy, the pool is *recovering* from its first successful connect
    /// until this many connects in a row succeed, then healthy. Default 3; at least 1.
    #[serde(default = "defaults::recovery_successes")]
    pub recovery_successes: u32,
}

pub(crate) mod defaults {
    use std::time::Duration;

    pub(crate) fn max_size() -> usize {
        10
    }
    pub(crate) fn connect_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(crate) fn acquire_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(crate) fn idle_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub(crate) fn max_lifetime() -> Duration {
        Duration::from_secs(1800)
    }
    pub(crate) fn lifetime_jitter() -> f64 {
        0.025
    }
    pub(crate) fn keepalive_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub(crate) fn validation_bypass() -> Duration {
        Duration::from_millis(500)
    }
    pub(crate) fn validation_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(crate) fn max_connecting() -> usize {
        2
    }
    pub(crate) fn maintenance_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub(crate) fn degraded_wait() -> Duration {
        Duration::from_secs(1)
    }
    pub(crate) fn degraded_validation_failure_rate() -> f64 {
        0.2
    }
    pub(crate) fn unhealthy_after() -> u32 {
        5
    }
    pub(crate) fn breaker_recovery() -> Duration {
        Duration::from_secs(5)
    }
    pub(crate) fn recovery_successes() -> u32 {
        3
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: defaults::max_size(),
            min_idle: 0,
            connect_timeout: defaults::connect_timeout(),
            acquire_timeout: defaults::acquire_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_lifetime: defaults::max_lifetime(),
            lifetime_jitter: defaults::lifetime_jitter(),
            keepalive_interval: defaults::keepalive_interval(),
            validation_bypass: defaults::validation_bypass(),
            validation_timeout: defaults::validation_timeout(),
            max_connecting: defaults::max_connecting(),
            leak_detection_threshold: None,
            maintenance_interval: defaults::maintenance_interval(),
            degraded_wait: defaults::degraded_wait(),
            degraded_validation_failure_rate: defaults::degraded_validation_failure_rate(),
            unhealthy_after: defaults::unhealthy_after(),
            breaker_recovery: defaults::breaker_recovery(),
            recovery_successes: defaults::recovery_successes(),
        }
    }
}

/// The largest pool accepted: the connection permits live in a tokio semaphore.
const MAX_POOL_SIZE: usize = 1 << 20;

fn at_least_1ms(errors: &mut ConfigError, path: String, d: Duration) {
    if d < Duration::from_millis(1) {
        errors.push(
            path,
            format!("must be at least 1ms, got {}", format_duration(d)),
        );
    }
}

impl PoolConfig {
    /// Records every problem of this configuration under `path` (such as `pool.orders`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.max_size == 0 || self.max_size > MAX_POOL_SIZE {
            errors.push(
                format!("{path}.max_size"),
                format!(
                    "must be between 1 and {MAX_POOL_SIZE}, got {}",
                    self.max_size
                ),
            );
        }
        if self.min_idle > self.max_size {
            errors.push(
                format!("{path}.min_idle"),
                format!(
                    "must be at most max_size ({}), got {}",
                    self.max_size, self.min_idle
                ),
            );
        }
        at_least_1ms(
            errors,
            format!("{path}.connect_timeout"),
            self.connect_timeout,
        );
        at_least_1ms(
            errors,
            format!("{path}.acquire_timeout"),
            self.acquire_timeout,
        );
        if !(0.0..=0.5).contains(&self.lifetime_jitter) {
            errors.push(
                format!("{path}.lifetime_jitter"),
                format!("must be between 0 and 0.5, got {}", self.lifetime_jitter),
            );
        }
        at_least_1ms(
            errors,
            format!("{path}.validation_timeout"),
            self.validation_timeout,
        );
        if self.max_connecting == 0 || self.max_connecting > MAX_POOL_SIZE {
            errors.push(
                format!("{path}.max_connecting"),
                format!(
                    "must be between 1 and {MAX_POOL_SIZE}, got {}",
                    self.max_connecting
                ),
            );
        }
        if let Some(t) = self.leak_detection_threshold {
            at_least_1ms(errors, format!("{path}.leak_detection_threshold"), t);
        }
        at_least_1ms(
            errors,
            format!("{path}.maintenance_interval"),
            self.maintenance_interval,
        );
        at_least_1ms(errors, format!("{path}.degraded_wait"), self.degraded_wait);
        if !(0.0..=1.0).contains(&self.degraded_validation_failure_rate) {
            errors.push(
                format!("{path}.degraded_validation_failure_rate"),
                format!(
                    "must be between 0 and 1, got {}",
                    self.degraded_validation_failure_rate
                ),
            );
        }
        if self.unhealthy_after == 0 {
            errors.push(
                format!("{path}.unhealthy_after"),
                "must be at least 1, got 0",
            );
        }
        at_least_1ms(
            errors,
            format!("{path}.breaker_recovery"),
            self.breaker_recovery,
        );
        if self.recovery_successes == 0 {
            errors.push(
                format!("{path}.recovery_successes"),
                "must be at least 1, got 0",
            );
        }
    }

    /// Validates this configuration (problems are reported under `name`) and builds a pool named
    /// `name` over `manager`, emitting to `events`.
    ///
    /// Must be called inside a tokio runtime: the pool's maintenance task starts at once (it is
    /// stopped when the last [`Pool`] handle is dropped or the pool is closed).
    pub fn build<M: Manager>(
        &self,
        name: &str,
        manager: M,
        events: &PoolEvents,
    ) -> Result<Pool<M>, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        if tokio::runtime::Handle::try_current().is_err() {
            errors.push(name, "a pool must be built inside a tokio runtime");
        }
        errors.into_result(())?;
        Pool::from_valid_config(name, self.clone(), manager, events.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = PoolConfig {
            max_size: 0,
            min_idle: 3,
            acquire_timeout: Duration::ZERO,
            lifetime_jitter: 0.9,
            max_connecting: 0,
            validation_timeout: Duration::ZERO,
            ..PoolConfig::default()
        };
        let mut errors = ConfigError::new(None);
        config.validate("pool.orders", &mut errors);
        let paths: Vec<_> = errors.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pool.orders.max_size",
                "pool.orders.min_idle",
                "pool.orders.acquire_timeout",
                "pool.orders.lifetime_jitter",
                "pool.orders.validation_timeout",
                "pool.orders.max_connecting"
            ]
        );
        assert_eq!(errors.problems[2].message, "must be at least 1ms, got 0s");
    }

    #[test]
    fn reads_durations_as_strings_and_refuses_unknown_keys() {
        #[derive(Deserialize)]
        struct File {
            pool: PoolConfig,
        }
        let file: File = toml_like(
            r#"{"pool": {"max_size": 4, "acquire_timeout": "250ms", "leak_detection_threshold": "1m"}}"#,
        )
        .unwrap();
        assert_eq!(file.pool.max_size, 4);
        assert_eq!(file.pool.acquire_timeout, Duration::from_millis(250));
        assert_eq!(
            file.pool.leak_detection_threshold,
            Some(Duration::from_secs(60))
        );
        assert_eq!(file.pool.validation_bypass, Duration::from_millis(500));
        assert_eq!(file.pool.validation_timeout, Duration::from_secs(5));
        assert!(toml_like::<PoolConfig>(r#"{"max_sise": 4}"#).is_err());
        assert!(toml_like::<PoolConfig>(r#"{"idle_timeout": "soon"}"#).is_err());
    }

    /// A tiny JSON-subset reader through serde's value deserializer, so this test needs no format
    /// crate: objects of strings and unsigned integers.
    fn toml_like<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, serde::de::value::Error> {
        use serde::de::IntoDeserializer;
        use serde::de::value::MapDeserializer;
        use std::collections::BTreeMap;
        #[derive(Debug)]
        enum V {
            S(String),
            N(u64),
            M(BTreeMap<String, V>),
        }
        impl<'de> IntoDeserializer<'de, serde::de::value::Error> for V {
            type Deserializer = VD;
            fn into_deserializer(self) -> VD {
                VD(self)
            }
        }
        struct VD(V);
        impl<'de> serde::Deserializer<'de> for VD {
            type Error = serde::de::value::Error;
            fn deserialize_any<Vis: serde::de::Visitor<'de>>(
                self,
                v: Vis,
            ) -> Result<Vis::Value, Self::Error> {
                match self.0 {
                    V::S(s) => v.visit_string(s),
                    V::N(n) => v.visit_u64(n),
                    V::M(m) => v.visit_map(MapDeserializer::new(m.into_iter())),
                }
            }
            fn deserialize_option<Vis: serde::de::Visitor<'de>>(
                self,
                v: Vis,
            ) -> Result<Vis::Value, Self::Error> {
                v.visit_some(self)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf unit unit_struct newtype_struct seq tuple
                tuple_struct map struct enum identifier ignored_any
            }
        }
        fn parse(s: &mut &str) -> V {
            *s = s.trim_start();
            if let Some(rest) = s.strip_prefix('{') {
                *s = rest;
                let mut m = BTreeMap::new();
                loop {
                    *s = s.trim_start().trim_start_matches(',').trim_start();
                    if let Some(rest) = s.strip_prefix('}') {
                        *s = rest;
                        return V::M(m);
                    }
                    let V::S(k) = parse(s) else { panic!("key") };
                    *s = s.trim_start().strip_prefix(':').unwrap();
                    m.insert(k, parse(s));
                }
            } else if let Some(rest) = s.strip_prefix('"') {
                let end = rest.find('"').unwrap();
                let out = rest[..end].to_owned();
                *s = &rest[end + 1..];
                V::S(out)
            } else {
                let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
                let n = s[..end].parse().unwrap();
                *s = &s[end..];
                V::N(n)
            }
        }
        let mut s = text;
        T::deserialize(VD(parse(&mut s)))
    }
}
