//! [`EventCounters`]: counts policy, pool and balancer events into a registry's counters.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use rampart_pool::balance::{BalanceEvent, BalanceEvents, EjectionReason};
use rampart_pool::{CheckoutFailure, HealthState, PoolEvent, PoolEvents};
use rampart_resilience::breaker::BreakerState;
use rampart_resilience::{Event, Events, Listeners, Name, PolicyKind, Subscription};

use super::pool::health_name;
use super::resilience::breaker_state_name;
use crate::{Counter, Labels, Telemetry};

/// Families an event type can count into; with the registry's series limit it bounds the cache.
const FAMILIES_PER_KIND: usize = 3;

/// Counts events into [`Telemetry::counter`] families for as long as it lives; dropping it
/// unsubscribes.
///
/// What each kind of events adds (counters; names without the `_total` exporters append):
///
/// | attached with | family | labels |
/// | --- | --- | --- |
/// | [`attach`](Self::attach) (policy [`Event`]s) | `rampart_breaker_transitions` | `name`, `from`, `to` |
/// | | `rampart_policy_rejections` | `name`, `policy` (`breaker`, `rate_limit`, `bulkhead`, ...) |
/// | | `rampart_policy_events` | `name`, `event` (`retry`, `hedge`, `timed_out`, `limit_increased`, `limit_decreased`, `fallback_used`) |
/// | [`attach_pool`](Self::attach_pool) ([`PoolEvent`]s) | `rampart_pool_checkout_failures` | `pool`, `reason` (`timeout`, `connection_error`, `pool_closed`, `paused`) |
/// | | `rampart_pool_health_transitions` | `pool`, `from`, `to` |
/// | [`attach_balance`](Self::attach_balance) ([`BalanceEvent`]s) | `rampart_balancer_ejections` | `balancer`, `endpoint`, `reason` (`consecutive_failures`, `latency_outlier`) |
/// | | `rampart_balancer_readmissions` | `balancer`, `endpoint` |
///
/// Transitions between scrapes that a state gauge would miss (a breaker that opened and closed
/// again within one scrape interval) show here. Cardinality is bounded by the registry: each
/// family holds at most [`max_series_per_metric`](crate::TelemetryConfig::max_series_per_metric)
/// series, the rest share the overflow series.
///
/// Counting runs on the emitting task: a lookup under a read lock and one atomic add once a label
/// set has been seen.
///
/// ```
/// use rampart_resilience::breaker::BreakerConfig;
/// use rampart_resilience::Events;
/// use rampart_telemetry::adapt::EventCounters;
/// use rampart_telemetry::{Telemetry, Value};
///
/// let events = Events::new();
/// let telemetry = Telemetry::new();
/// let counting = EventCounters::attach(&events, &telemetry);
/// let breaker = BreakerConfig::default().build("search", &events)?;
/// breaker.force_open();
/// assert!(breaker.try_acquire().is_none());
/// let rejected = [("name", "search"), ("policy", "breaker")];
/// assert_eq!(
///     telemetry.snapshot().value("rampart_policy_rejections", &rejected),
///     Some(&Value::Counter(1.0))
/// );
/// drop(counting); // stops counting
/// # Ok::<(), rampart_resilience::ConfigError>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping it stops counting at once"]
pub struct EventCounters {
    _subscription: Subscription,
}

impl EventCounters {
    /// Counts the resilience policies' [`Event`]s (a registry's are
    /// [`Registry::events`](rampart_resilience::Registry::events)).
    pub fn attach(events: &Events, telemetry: &Telemetry) -> Self {
        subscribe(events, telemetry, policy_key, describe_policy)
    }

    /// Counts pools' [`PoolEvent`]s: checkout failures by reason and health transitions (closures
    /// by reason are in [`PoolStats`](rampart_pool::PoolStats), which
    /// [`PoolCollector`](super::PoolCollector) reads).
    pub fn attach_pool(events: &PoolEvents, telemetry: &Telemetry) -> Self {
        subscribe(events, telemetry, pool_key, describe_pool)
    }

    /// Counts balancers' [`BalanceEvent`]s: ejections by reason and readmissions.
    pub fn attach_balance(events: &BalanceEvents, telemetry: &Telemetry) -> Self {
        subscribe(events, telemetry, balance_key, describe_balance)
    }
}

/// A counter family and labels.
type Described = (&'static str, &'static str, Labels);

/// Subscribes a listener that maps each event to a cheap key (no allocation for an inline
/// [`Name`]), and counts it on the key's counter, found in a cache or, the first time, made by
/// `describe` in `telemetry`.
fn subscribe<E: 'static, K: Hash + Eq + Send + Sync + 'static>(
    events: &Listeners<E>,
    telemetry: &Telemetry,
    key: fn(&E) -> Option<K>,
    describe: fn(&K) -> Described,
) -> EventCounters {
    let counts = Arc::new(Counts {
        telemetry: telemetry.clone(),
        limit: telemetry.config().max_series_per_metric * FAMILIES_PER_KIND,
        cache: RwLock::new(HashMap::new()),
    });
    let subscription = events.subscribe(move |event: &E| {
        if let Some(k) = key(event) {
            counts.inc(k, describe);
        }
    });
    EventCounters {
        _subscription: subscription,
    }
}

struct Counts<K> {
    telemetry: Telemetry,
    /// Most keys cached; past it (only with more label sets than the registry keeps series) an
    /// event looks its counter up in the registry each time.
    limit: usize,
    cache: RwLock<HashMap<K, Counter>>,
}

impl<K: Hash + Eq> Counts<K> {
    fn inc(&self, key: K, describe: fn(&K) -> Described) {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = cache.get(&key) {
            counter.inc();
            return;
        }
        drop(cache);
        let (name, help, labels) = describe(&key);
        // Two tasks missing at once get the same counter from the registry: both count once.
        let counter = self.telemetry.counter(name, help, labels);
        counter.inc();
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() < self.limit {
            cache.insert(key, counter);
        }
    }
}

fn name_label(name: &Name) -> String {
    name.as_str().to_owned()
}

#[derive(PartialEq, Eq, Hash)]
enum PolicyKey {
    Transition(Name, BreakerState, BreakerState),
    Rejection(Name, PolicyKind),
    Other(Name, &'static str),
}

fn policy_key(event: &Event) -> Option<PolicyKey> {
    Some(match event {
        Event::BreakerStateChanged { name, from, to } => {
            PolicyKey::Transition(name.clone(), *from, *to)
        }
        Event::Rejected { name, policy } => PolicyKey::Rejection(name.clone(), *policy),
        Event::Retry { name, .. } => PolicyKey::Other(name.clone(), "retry"),
        Event::Hedge { name, .. } => PolicyKey::Other(name.clone(), "hedge"),
        Event::TimedOut { name, .. } => PolicyKey::Other(name.clone(), "timed_out"),
        Event::LimitChanged { name, from, to } => PolicyKey::Other(
            name.clone(),
            if to > from {
                "limit_increased"
            } else {
                "limit_decreased"
            },
        ),
        Event::FallbackUsed { name } => PolicyKey::Other(name.clone(), "fallback_used"),
        _ => return None,
    })
}

fn describe_policy(key: &PolicyKey) -> Described {
    match key {
        PolicyKey::Transition(name, from, to) => (
            "rampart_breaker_transitions",
            "Circuit breaker state changes.",
            Labels::new()
                .with("name", name_label(name))
                .with("from", breaker_state_name(*from))
                .with("to", breaker_state_name(*to)),
        ),
        PolicyKey::Rejection(name, policy) => (
            "rampart_policy_rejections",
            "Calls a policy rejected without running them.",
            Labels::new()
                .with("name", name_label(name))
                .with("policy", policy_kind_name(*policy)),
        ),
        PolicyKey::Other(name, event) => (
            "rampart_policy_events",
            "Retries, hedges, timeouts, limit changes and fallbacks the policies reported.",
            Labels::new()
                .with("name", name_label(name))
                .with("event", *event),
        ),
    }
}

/// The kind of policy as a label value.
fn policy_kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Breaker => "breaker",
        PolicyKind::Retry => "retry",
        PolicyKind::Budget => "retry_budget",
        PolicyKind::Timeout => "timeout",
        PolicyKind::RateLimit => "rate_limit",
        PolicyKind::Bulkhead => "bulkhead",
        PolicyKind::Adaptive => "adaptive",
        PolicyKind::Hedge => "hedge",
        PolicyKind::Fallback => "fallback",
        _ => "other",
    }
}

#[derive(PartialEq, Eq, Hash)]
enum PoolKey {
    CheckoutFailed(Name, CheckoutFailure),
    Health(Name, HealthState, HealthState),
}

fn pool_key(event: &PoolEvent) -> Option<PoolKey> {
    match event {
        PoolEvent::CheckoutFailed { pool, reason } => {
            Some(PoolKey::CheckoutFailed(pool.clone(), *reason))
        }
        PoolEvent::HealthChanged { pool, from, to, .. } => {
            Some(PoolKey::Health(pool.clone(), *from, *to))
        }
        _ => None,
    }
}

fn describe_pool(key: &PoolKey) -> Described {
    match key {
        PoolKey::CheckoutFailed(pool, reason) => (
            "rampart_pool_checkout_failures",
            "Acquires that gave no connection, by reason.",
            Labels::new()
                .with("pool", name_label(pool))
                .with("reason", checkout_failure_name(*reason)),
        ),
        PoolKey::Health(pool, from, to) => (
            "rampart_pool_health_transitions",
            "Pool health changes.",
            Labels::new()
                .with("pool", name_label(pool))
                .with("from", health_name(*from))
                .with("to", health_name(*to)),
        ),
    }
}

fn checkout_failure_name(reason: CheckoutFailure) -> &'static str {
    match reason {
        CheckoutFailure::Timeout => "timeout",
        CheckoutFailure::ConnectionError => "connection_error",
        CheckoutFailure::PoolClosed => "pool_closed",
        CheckoutFailure::Paused => "paused",
        _ => "other",
    }
}

#[derive(PartialEq, Eq, Hash)]
struct BalanceKey {
    balancer: Name,
    endpoint: Name,
    /// The ejection reason, or `None` for a readmission.
    ejected: Option<&'static str>,
}

fn balance_key(event: &BalanceEvent) -> Option<BalanceKey> {
    match event {
        BalanceEvent::Ejected {
            balancer,
            endpoint,
            reason,
            ..
        } => Some(BalanceKey {
            balancer: balancer.clone(),
            endpoint: endpoint.clone(),
            ejected: Some(match reason {
                EjectionReason::ConsecutiveFailures { .. } => "consecutive_failures",
                EjectionReason::LatencyOutlier { .. } => "latency_outlier",
                _ => "other",
            }),
        }),
        BalanceEvent::Readmitted {
            balancer, endpoint, ..
        } => Some(BalanceKey {
            balancer: balancer.clone(),
            endpoint: endpoint.clone(),
            ejected: None,
        }),
        _ => None,
    }
}

fn describe_balance(key: &BalanceKey) -> Described {
    let labels = Labels::new()
        .with("balancer", name_label(&key.balancer))
        .with("endpoint", name_label(&key.endpoint));
    match key.ejected {
        Some(reason) => (
            "rampart_balancer_ejections",
            "Endpoints taken out of the rotation, by reason.",
            labels.with("reason", reason),
        ),
        None => (
            "rampart_balancer_readmissions",
            "Ejected endpoints let back into the rotation.",
            labels,
        ),
    }
}
