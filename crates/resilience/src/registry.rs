//! Named policies built from configuration, shared by name.
//!
//! A TOML file has one section per policy, `[KIND.NAME]`:
//!
//! ```toml
//! [breaker.payments]
//! failure_rate = 0.5
//! wait_in_open = "30s"
//!
//! [retry.payments]
//! max_attempts = 3
//! budget = "fleet"
//!
//! [retry_budget.fleet]
//! ratio = 0.2
//!
//! [timeout.payments]
//! timeout = "2s"
//! ```
//!
//! Kinds: `breaker`, `retry`, `retry_budget`, `timeout`, `rate_limit`, `bulkhead`, `adaptive`, `hedge`,
//! `pipeline`. [`ResilienceConfig`] reads and validates a file, reporting every problem at once with
//! its file and key path (unknown keys included). A [`Registry`] builds policies from it on first use
//! and hands every caller of a name the same instance, so all callers of `"payments"` share one
//! breaker. A name with no section gets the kind's defaults. The registry is a value: two can live in
//! one process.
//!
//! ```
//! use rampart_resilience::registry::Registry;
//!
//! let registry = Registry::from_toml_str(
//!     r#"
//!     [breaker.payments]
//!     failure_rate = 0.25
//!     "#,
//!     Some("rampart.toml"),
//! )?;
//! let a = registry.breaker("payments");
//! let b = registry.breaker("payments");
//! a.force_open();
//! assert!(b.state().rejects(), "both handles share one breaker");
//!
//! let bad = Registry::from_toml_str("[breaker.x]\nfailure_rate = 2.0\nwindow_sise = 5\n", Some("bad.toml"));
//! let err = bad.unwrap_err().to_string();
//! assert!(err.contains("breaker.x.failure_rate"), "{err}");
//! assert!(err.contains("breaker.x.window_sise"), "{err}");
//! # Ok::<(), rampart_resilience::ConfigError>(())
//! ```

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use crate::adaptive::{AdaptiveConfig, AdaptiveLimiter, AdaptiveStats};
use crate::breaker::{BreakerConfig, BreakerStats, CircuitBreaker};
use crate::bulkhead::{Bulkhead, BulkheadConfig, BulkheadStats};
use crate::hedge::{Hedge, HedgeConfig, HedgeStats};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::rate_limit::{
    KeyedRateLimitStats, KeyedRateLimiter, RateLimitConfig, RateLimitStats, RateLimiter,
};
use crate::retry::{
    Retry, RetryBudget, RetryBudgetConfig, RetryBudgetStats, RetryConfig, RetryStats,
};
use crate::timeout::{Timeout, TimeoutConfig, TimeoutStats};
use crate::{ConfigError, Events};

/// Reads one section into `T`, recording every problem under `path`. Each bad key is reported
/// (with serde's own message, which for an unknown key lists the known ones), removed, and the rest
/// read again, so one typo does not hide the next. Returns what is left (bad keys take their
/// defaults), or `None` if the section is not a table at all.
fn parse_section<T: DeserializeOwned>(
    path: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<T> {
    let toml::Value::Table(table) = value else {
        errors.push(
            path,
            format!("must be a table of settings, got {}", value.type_str()),
        );
        return None;
    };
    let mut table = table.clone();
    // Each round removes one bad key, so this ends; the bound is for safety only.
    for _ in 0..=table.len() {
        match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            // Validate what is left even after bad keys were removed (they took their defaults),
            // so that its problems are reported in the same run.
            Ok(v) => return Some(v),
            Err(e) => {
                let key = e.path().iter().next().and_then(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    _ => None,
                });
                let inner = e.into_inner().to_string();
                // toml appends "\nin `key`" to some messages; the key is in the path already.
                let message = inner.lines().next().unwrap_or_default().trim().to_string();
                match key {
                    Some(key) if table.remove(&key).is_some() => {
                        errors.push(format!("{path}.{key}"), message);
                    }
                    _ => {
                        // serde_path_to_error leaves the path of an unknown field empty: find
                        // the key in the message instead.
                        let unknown = message
                            .strip_prefix("unknown field `")
                            .and_then(|rest| rest.split('`').next())
                            .map(str::to_owned);
                        match unknown {
                            Some(key) if table.remove(&key).is_some() => {
                                errors.push(format!("{path}.{key}"), message);
                            }
                            _ => {
                                errors.push(path, message);
                                return None;
                            }
                        }
                    }
                }
            }
        }
    }
    None
}

macro_rules! kinds {
    ($( $field:ident : $config:ty => $policy:ty, $stats:ty, $vis:vis $getter:ident, $doc:literal; )*) => {
        /// Every policy section of a configuration, validated, by kind and name.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct ResilienceConfig {
            $(
                #[doc = concat!("`[", stringify!($field), ".NAME]` sections: ", $doc)]
                pub $field: BTreeMap<String, $config>,
            )*
            /// `[pipeline.NAME]` sections: which policies a named pipeline stacks.
            pub pipeline: BTreeMap<String, PipelineConfig>,
        }

        const KINDS: &[&str] = &[$(stringify!($field),)* "pipeline"];

        impl ResilienceConfig {
            /// The names configured for each kind, for reports.
            pub fn names(&self) -> Vec<(&'static str, Vec<&str>)> {
                vec![
                    $((stringify!($field), self.$field.keys().map(String::as_str).collect()),)*
                    ("pipeline", self.pipeline.keys().map(String::as_str).collect()),
                ]
            }

            fn parse_kind(&mut self, kind: &str, path: &str, name: &str, value: &toml::Value, errors: &mut ConfigError) {
                match kind {
                    $(stringify!($field) => {
                        if let Some(c) = parse_section::<$config>(path, value, errors) {
                            c.validate(path, errors);
                            self.$field.insert(name.to_owned(), c);
                        }
                    })*
                    _ => {
                        if let Some(c) = parse_section::<PipelineConfig>(path, value, errors) {
                            c.validate(path, errors);
                            self.pipeline.insert(name.to_owned(), c);
                        }
                    }
                }
            }
        }

        #[derive(Default)]
        struct Instances {
            $($field: Mutex<HashMap<String, $policy>>,)*
        }

        /// A snapshot of every policy the registry has built, by kind and name.
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
        pub struct RegistryStats {
            $(
                #[doc = concat!("Stats of each `", stringify!($field), "` built so far.")]
                pub $field: BTreeMap<String, $stats>,
            )*
            /// Stats of each keyed rate limiter built so far, by name. Limiters of one name with
            /// different key types are added together (keys held and `max_keys` too).
            pub keyed_rate_limit: BTreeMap<String, KeyedRateLimitStats>,
        }

        impl Registry {
            $(
                #[doc = concat!("The shared `", stringify!($field), "` named `name`, built from its section on first use (defaults if it has none).")]
                $vis fn $getter(&self, name: &str) -> $policy {
                    let mut map = self.inner.instances.$field.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = map.get(name) {
                        return p.clone();
                    }
                    let config = self.inner.config.$field.get(name).cloned().unwrap_or_default();
                    let policy = self.build_policy(name, config, |c, n, e| c.build(n, e));
                    map.insert(name.to_owned(), policy.clone());
                    policy
                }
            )*

            /// Stats of every policy built so far, by kind and name.
            pub fn stats(&self) -> RegistryStats {
                let mut stats = RegistryStats::default();
                $(
                    for (name, p) in self.inner.instances.$field.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                        stats.$field.insert(name.clone(), p.stats());
                    }
                )*
                stats.keyed_rate_limit = self.keyed_stats();
                stats
            }
        }
    };
}

kinds! {
    breaker: BreakerConfig => CircuitBreaker, BreakerStats, pub breaker, "circuit breakers";
    retry: RetryConfig => Retry, RetryStats, retry_without_budget, "retry policies";
    retry_budget: RetryBudgetConfig => RetryBudget, RetryBudgetStats, pub retry_budget, "retry budgets that retry policies share";
    timeout: TimeoutConfig => Timeout, TimeoutStats, pub timeout, "timeouts";
    rate_limit: RateLimitConfig => RateLimiter, RateLimitStats, pub rate_limiter, "rate limiters";
    bulkhead: BulkheadConfig => Bulkhead, BulkheadStats, pub bulkhead, "bulkheads";
    adaptive: AdaptiveConfig => AdaptiveLimiter, AdaptiveStats, pub adaptive_limiter, "adaptive concurrency limiters";
    hedge: HedgeConfig => Hedge, HedgeStats, pub hedge, "hedging policies";
}

impl ResilienceConfig {
    /// Reads and validates a configuration from TOML text. `file` names it in error messages.
    pub fn from_toml_str(source: &str, file: Option<&str>) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(file);
        let table: toml::Table = match source.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                errors.push("(syntax)", e.to_string().trim().to_owned());
                return Err(errors);
            }
        };
        let config = Self::from_table(&table, "", &mut errors);
        errors.into_result(config)
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml_str(&text, Some(&shown)),
            Err(e) => {
                let mut errors = ConfigError::new(Some(&shown));
                errors.push("(file)", format!("cannot be read: {e}"));
                Err(errors)
            }
        }
    }

    /// Reads the policy sections of an already parsed table (say, the `[resilience]` part of a larger
    /// file), recording problems under `prefix` (empty for the top level). Keys that are not policy
    /// kinds are problems too.
    pub fn from_table(table: &toml::Table, prefix: &str, errors: &mut ConfigError) -> Self {
        let mut config = ResilienceConfig::default();
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_owned()
            } else {
                format!("{a}.{b}")
            }
        };
        for (kind, sections) in table {
            let kind_path = join(prefix, kind);
            if !KINDS.contains(&kind.as_str()) {
                errors.push(
                    kind_path,
                    format!(
                        "unknown kind of policy; expected one of {}",
                        KINDS.join(", ")
                    ),
                );
                continue;
            }
            let toml::Value::Table(sections) = sections else {
                errors.push(
                    kind_path,
                    format!(
                        "must hold named sections such as [{kind}.NAME], got {}",
                        sections.type_str()
                    ),
                );
                continue;
            };
            for (name, value) in sections {
                let path = format!("{kind_path}.{name}");
                config.parse_kind(kind, &path, name, value, errors);
            }
        }
        config.check_references(prefix, errors);
        config
    }

    /// Checks that every name a section refers to exists.
    fn check_references(&self, prefix: &str, errors: &mut ConfigError) {
        let p = |s: String| {
            if prefix.is_empty() {
                s
            } else {
                format!("{prefix}.{s}")
            }
        };
        for (name, retry) in &self.retry {
            if let Some(budget) = &retry.budget
                && !self.retry_budget.contains_key(budget)
            {
                errors.push(p(format!("retry.{name}.budget")), format!("names retry budget {budget:?}, but there is no [retry_budget.{budget}] section"));
            }
        }
        for (name, pipeline) in &self.pipeline {
            for (kind, target) in pipeline.references() {
                let exists = match kind {
                    "breaker" => self.breaker.contains_key(target),
                    "retry" => self.retry.contains_key(target),
                    "timeout" => self.timeout.contains_key(target),
                    "rate_limit" => self.rate_limit.contains_key(target),
                    "bulkhead" => self.bulkhead.contains_key(target),
                    "adaptive" => self.adaptive.contains_key(target),
                    "hedge" => self.hedge.contains_key(target),
                    _ => true,
                };
                if !exists {
                    errors.push(
                        p(format!("pipeline.{name}.{kind}")),
                        format!(
                            "names {kind} {target:?}, but there is no [{kind}.{target}] section"
                        ),
                    );
                }
            }
        }
    }
}

struct RegistryInner {
    config: ResilienceConfig,
    events: Events,
    instances: Instances,
    /// Keyed rate limiters, by name and key type.
    keyed: Mutex<HashMap<(String, TypeId), Box<dyn KeyedSlot>>>,
}

/// A keyed rate limiter of any key type, as the registry holds it: found again by downcasting,
/// read for [`Registry::stats`] without knowing its key type.
trait KeyedSlot: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn stats(&self) -> KeyedRateLimitStats;
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> KeyedSlot for KeyedRateLimiter<K> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn stats(&self) -> KeyedRateLimitStats {
        KeyedRateLimiter::stats(self)
    }
}

/// Policies by name, built from a [`ResilienceConfig`] on first use and shared afterwards. Cheap to
/// clone; clones share the policies.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(ResilienceConfig::default(), Events::new())
    }
}

impl Registry {
    /// A registry over a validated configuration; every policy it builds emits to `events`.
    pub fn new(config: ResilienceConfig, events: Events) -> Self {
        Registry {
            inner: Arc::new(RegistryInner {
                config,
                events,
                instances: Instances::default(),
                keyed: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Reads, validates and wraps a configuration from TOML text.
    pub fn from_toml_str(source: &str, file: Option<&str>) -> Result<Self, ConfigError> {
        Ok(Registry::new(
            ResilienceConfig::from_toml_str(source, file)?,
            Events::new(),
        ))
    }

    /// Reads, validates and wraps a configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Ok(Registry::new(
            ResilienceConfig::from_file(path)?,
            Events::new(),
        ))
    }

    /// The configuration the registry builds from.
    pub fn config(&self) -> &ResilienceConfig {
        &self.inner.config
    }

    /// The events every policy of this registry emits to.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Builds from a section that was validated when the configuration was read, or from a kind's
    /// defaults (which a unit test proves valid); so `build` cannot fail here. Should it anyway, the
    /// defaults are used rather than a panic.
    fn build_policy<C: Default, P>(
        &self,
        name: &str,
        config: C,
        build: impl Fn(&C, &str, &Events) -> Result<P, ConfigError>,
    ) -> P {
        match build(&config, name, &self.inner.events) {
            Ok(p) => p,
            Err(_) => match build(&C::default(), name, &self.inner.events) {
                Ok(p) => p,
                Err(e) => unreachable!("the default configuration is valid: {e}"),
            },
        }
    }

    /// The shared retry policy named `name`, with its `budget` attached if its section names one.
    pub fn retry(&self, name: &str) -> Retry {
        let retry = self.retry_without_budget(name);
        match self
            .inner
            .config
            .retry
            .get(name)
            .and_then(|c| c.budget.as_deref())
        {
            Some(budget) => retry.with_budget(self.retry_budget(budget)),
            None => retry,
        }
    }

    /// The shared keyed rate limiter named `name` (one limit per key: per tenant, per host), built
    /// from `[rate_limit.NAME]` and its `keyed` table on first use. Callers that ask for the same
    /// name and key type share it.
    pub fn keyed_rate_limiter<K>(&self, name: &str) -> KeyedRateLimiter<K>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        let mut map = self.inner.keyed.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (name.to_owned(), TypeId::of::<K>());
        if let Some(limiter) = map
            .get(&slot)
            .and_then(|b| b.as_any().downcast_ref::<KeyedRateLimiter<K>>())
        {
            return limiter.clone();
        }
        let config = self
            .inner
            .config
            .rate_limit
            .get(name)
            .cloned()
            .unwrap_or_default();
        let limiter = self.build_policy(name, config, |c, n, e| c.build_keyed::<K>(n, e));
        map.insert(slot, Box::new(limiter.clone()));
        limiter
    }

    /// Stats of every keyed rate limiter built so far, by name, different key types added together.
    fn keyed_stats(&self) -> BTreeMap<String, KeyedRateLimitStats> {
        let map = self.inner.keyed.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, KeyedRateLimitStats> = BTreeMap::new();
        for ((name, _), limiter) in map.iter() {
            let s = limiter.stats();
            match out.get_mut(name) {
                Some(sum) => {
                    sum.permitted += s.permitted;
                    sum.rejected += s.rejected;
                    sum.waited += s.waited;
                    sum.keys += s.keys;
                    sum.max_keys += s.max_keys;
                }
                None => {
                    out.insert(name.clone(), s);
                }
            }
        }
        out
    }

    /// The pipeline named `name`: the policies its `[pipeline.NAME]` section names, or, without such
    /// a section, every kind that has a section called `name`. A name with no section of any kind
    /// gets a default timeout, retry and breaker.
    pub fn pipeline(&self, name: &str) -> Pipeline {
        let c = &self.inner.config;
        let explicit = c.pipeline.get(name);
        let pick = |kind_has: bool, named: Option<&String>| -> Option<String> {
            match explicit {
                Some(_) => named.cloned(),
                None => kind_has.then(|| name.to_owned()),
            }
        };
        let e = explicit.cloned().unwrap_or_default();
        let mut timeout = pick(c.timeout.contains_key(name), e.timeout.as_ref());
        let mut retry = pick(c.retry.contains_key(name), e.retry.as_ref());
        let mut breaker = pick(c.breaker.contains_key(name), e.breaker.as_ref());
        let rate_limit = pick(c.rate_limit.contains_key(name), e.rate_limit.as_ref());
        let bulkhead = pick(c.bulkhead.contains_key(name), e.bulkhead.as_ref());
        let adaptive = pick(c.adaptive.contains_key(name), e.adaptive.as_ref());
        let hedge = pick(c.hedge.contains_key(name), e.hedge.as_ref());
        if explicit.is_none()
            && [
                &timeout,
                &retry,
                &breaker,
                &rate_limit,
                &bulkhead,
                &adaptive,
                &hedge,
            ]
            .iter()
            .all(|p| p.is_none())
        {
            timeout = Some(name.to_owned());
            retry = Some(name.to_owned());
            breaker = Some(name.to_owned());
        }
        let mut b = Pipeline::builder(name);
        if let Some(n) = timeout {
            b = b.timeout(self.timeout(&n));
        }
        if let Some(n) = retry {
            b = b.retry(self.retry(&n));
        }
        if let Some(n) = breaker {
            b = b.breaker(self.breaker(&n));
        }
        if let Some(n) = rate_limit {
            b = b.rate_limiter(self.rate_limiter(&n));
        }
        if let Some(n) = bulkhead {
            b = b.bulkhead(self.bulkhead(&n));
        }
        if let Some(n) = adaptive {
            b = b.adaptive(self.adaptive_limiter(&n));
        }
        if let Some(n) = hedge {
            b = b.hedge(self.hedge(&n));
        }
        b.build()
    }
}
