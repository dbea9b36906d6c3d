//! Adapters that turn the resilience policies' and the pools' own counters and events into
//! metrics.
//!
//! Policies and pools keep cheap counters of their own and know nothing of metric registries; the
//! adapters here read them for the registry you pass in:
//!
//! - [`ResilienceCollector`] reads every policy of a [`rampart_resilience::Registry`] (breakers,
//!   retries and retry budgets, timeouts, rate limiters plain and keyed, bulkheads, adaptive
//!   limiters, hedges) and any [`Fallback`](rampart_resilience::fallback::Fallback) you add, at
//!   each [`Telemetry::snapshot`](crate::Telemetry::snapshot).
//! - [`PoolCollector`] reads pools ([`rampart_pool::Pool`], or anything implementing
//!   [`PoolStatsSource`]) and balancers ([`BalancerStatsSource`]).
//! - [`EventCounters`] subscribes to policy, pool or balancer events and counts what the stats do
//!   not keep: breaker transitions, rejections by policy, checkout failures by reason, ejections by
//!   reason.
//!
//! Collectors cost nothing between snapshots: they read the stats when a snapshot is taken. Every
//! series of a policy carries its `name`, of a pool its `pool`, of a balancer endpoint its
//! `balancer` and `endpoint`. States (a breaker's, a pool's health, an endpoint's) are one-hot
//! gauges: one series per possible state, 1 for the current one and 0 for the others, so a query
//! can select `state="open"` and a change shows as a step.
//!
//! ```
//! use rampart_resilience::Registry;
//! use rampart_telemetry::adapt::{EventCounters, ResilienceCollector};
//! use rampart_telemetry::{Telemetry, Value};
//!
//! let policies = Registry::default();
//! let telemetry = Telemetry::new();
//! telemetry.register_collector(ResilienceCollector::new(&policies));
//! let _counting = EventCounters::attach(policies.events(), &telemetry);
//!
//! policies.breaker("payments").force_open();
//! let snapshot = telemetry.snapshot();
//! let state = |s| snapshot.value("rampart_breaker_state", &[("name", "payments"), ("state", s)]);
//! assert_eq!(state("forced_open"), Some(&Value::Gauge(1.0)));
//! assert_eq!(state("closed"), Some(&Value::Gauge(0.0)));
//! let forced = [("name", "payments"), ("from", "closed"), ("to", "forced_open")];
//! assert_eq!(snapshot.value("rampart_breaker_transitions", &forced), Some(&Value::Counter(1.0)));
//! ```

mod events;
mod pool;
mod resilience;

pub use events::EventCounters;
pub use pool::{BalancerStatsSource, PoolCollector, PoolStatsSource};
pub use resilience::ResilienceCollector;

use crate::{Labels, MetricKind, MetricsWriter, Unit, Value};

/// One family a collector writes: its name, help, kind and unit, and how to read each series'
/// value from a stats struct (`None` leaves that series out, for values not known yet).
pub(crate) struct Metric<S> {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: MetricKind,
    pub(crate) unit: Option<Unit>,
    pub(crate) value: fn(&S) -> Option<f64>,
}

impl<S> Metric<S> {
    /// A counter read from a total.
    pub(crate) const fn counter(
        name: &'static str,
        help: &'static str,
        value: fn(&S) -> Option<f64>,
    ) -> Self {
        Metric {
            name,
            help,
            kind: MetricKind::Counter,
            unit: None,
            value,
        }
    }

    /// A gauge without unit.
    pub(crate) const fn gauge(
        name: &'static str,
        help: &'static str,
        value: fn(&S) -> Option<f64>,
    ) -> Self {
        Self::gauge_unit(None, name, help, value)
    }

    /// A gauge in `unit`.
    pub(crate) const fn gauge_in(
        unit: Unit,
        name: &'static str,
        help: &'static str,
        value: fn(&S) -> Option<f64>,
    ) -> Self {
        Self::gauge_unit(Some(unit), name, help, value)
    }

    const fn gauge_unit(
        unit: Option<Unit>,
        name: &'static str,
        help: &'static str,
        value: fn(&S) -> Option<f64>,
    ) -> Self {
        Metric {
            name,
            help,
            kind: MetricKind::Gauge,
            unit,
            value,
        }
    }
}

/// Writes every metric of `metrics` with one series per item (its labels, its stats). A family
/// with no series is not written at all, so a registry without bulkheads shows no bulkhead family.
pub(crate) fn write_metrics<S>(
    out: &mut MetricsWriter<'_>,
    metrics: &[Metric<S>],
    items: &[(Labels, S)],
) {
    for metric in metrics {
        let mut series = items
            .iter()
            .filter_map(|(labels, stats)| Some((labels, (metric.value)(stats)?)))
            .peekable();
        if series.peek().is_none() {
            continue;
        }
        let mut family = out.family(metric.name, metric.help, metric.kind, metric.unit.clone());
        for (labels, v) in series {
            let value = match metric.kind {
                MetricKind::Counter => Value::Counter(v),
                _ => Value::Gauge(v),
            };
            family.series(labels.clone(), value);
        }
    }
}

/// One series of a family split by a label: the label's value, and how to read the count.
pub(crate) type Part<S> = (&'static str, fn(&S) -> u64);

/// Writes a family split by one label: for each item, one series per `(value, read)` of `parts`,
/// labelled `label="value"` (outcomes of a breaker's calls, reasons a pool closed connections).
/// Every value is written, zeros too, so each series exists from the start.
pub(crate) fn write_by_label<S>(
    out: &mut MetricsWriter<'_>,
    (name, help, kind): (&str, &str, MetricKind),
    label: &'static str,
    parts: &[Part<S>],
    items: &[(Labels, S)],
) {
    if items.is_empty() {
        return;
    }
    let mut family = out.family(name, help, kind, None);
    for (labels, stats) in items {
        for (value, read) in parts {
            let v = read(stats) as f64;
            let v = match kind {
                MetricKind::Counter => Value::Counter(v),
                _ => Value::Gauge(v),
            };
            family.series(labels.clone().with(label, *value), v);
        }
    }
}

/// Writes a one-hot state family: for each item, one gauge series per state in `states`, labelled
/// `state`, 1 for the item's current state and 0 for the others.
pub(crate) fn write_one_hot(
    out: &mut MetricsWriter<'_>,
    name: &str,
    help: &str,
    states: &[&'static str],
    items: &[(Labels, &'static str)],
) {
    if items.is_empty() {
        return;
    }
    let mut family = out.family(name, help, MetricKind::Gauge, None);
    for (labels, current) in items {
        for &state in states {
            let on = if state == *current { 1.0 } else { 0.0 };
            family.series(labels.clone().with("state", state), Value::Gauge(on));
        }
    }
}

/// A `u64` total as a metric value.
pub(crate) fn total(n: u64) -> Option<f64> {
    Some(n as f64)
}

/// A `usize` level as a metric value.
pub(crate) fn level(n: usize) -> Option<f64> {
    Some(n as f64)
}
