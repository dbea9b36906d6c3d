//! [`PoolCollector`]: pools' and balancers' stats, as metrics.

use std::fmt;
use std::sync::Arc;

use rampart_pool::balance::{Balancer, BalancerStats, EndpointState, EndpointStats};
use rampart_pool::{ClosedCounts, HealthState, Manager, Pool, PoolStats, WAIT_BUCKETS};

use super::{Metric, Part, level, total, write_by_label, write_metrics, write_one_hot};
use crate::{Collector, HistogramValue, Labels, MetricKind, MetricsWriter, Unit, Value};

/// Something whose [`PoolStats`] a [`PoolCollector`] reads: every [`Pool`], whatever its
/// [`Manager`]. Implement it for a pool of your own to export it the same way.
pub trait PoolStatsSource: Send + Sync + 'static {
    /// A snapshot of the pool's state and counters (its `name` labels the series).
    fn pool_stats(&self) -> PoolStats;
}

impl<M: Manager> PoolStatsSource for Pool<M> {
    fn pool_stats(&self) -> PoolStats {
        self.stats()
    }
}

/// Something whose [`BalancerStats`] a [`PoolCollector`] reads: every [`Balancer`], whatever its
/// endpoints are.
pub trait BalancerStatsSource: Send + Sync + 'static {
    /// A snapshot of the balancer and its endpoints.
    fn balancer_stats(&self) -> BalancerStats;
}

impl<T: Send + Sync + 'static> BalancerStatsSource for Balancer<T> {
    fn balancer_stats(&self) -> BalancerStats {
        self.stats()
    }
}

/// Writes the stats of pools and balancers into each snapshot. A pool's series are labelled
/// `pool`, a balancer's `balancer`, an endpoint's `balancer` and `endpoint`.
///
/// | of | families (gauges unless marked) |
/// | --- | --- |
/// | pool | `rampart_pool_connections{state}` (`idle`, `in_use`), `rampart_pool_size` (open or opening, idle and in use included), `rampart_pool_max_size`, `rampart_pool_pending_connects`, `rampart_pool_waiters`, `rampart_pool_generation`, `rampart_pool_health{state}` (one-hot: `healthy`, `degraded`, `unhealthy`, `recovering`), `rampart_pool_health_score` (0–100) |
/// | pool, counters | `rampart_pool_checkouts`, `rampart_pool_acquire_timeouts`, `rampart_pool_acquire_failures` (timeouts included), `rampart_pool_connections_created`, `rampart_pool_connect_failures`, `rampart_pool_connections_closed{reason}` (`idle`, `lifetime`, `error`, `invalid`, `stale`, `pool_closed`, `resized`, `discarded`, `detached`, `interrupted`), `rampart_pool_validations`, `rampart_pool_validation_failures`, `rampart_pool_leaks` |
/// | pool, histogram | `rampart_pool_acquire_wait` (seconds): the waits of successful checkouts |
/// | balancer | `rampart_balancer_endpoints_ejected` (ejected now) |
/// | endpoint | `rampart_balancer_endpoint_state{state}` (one-hot: `active`, `ejected`, `ramping`), `rampart_balancer_endpoint_weight`, `rampart_balancer_endpoint_in_flight`, `rampart_balancer_endpoint_ewma` and `rampart_balancer_endpoint_latency` (seconds, once sampled: the cost estimate picks use, decayed and with the failure penalty, and the real latency EWMA), `rampart_balancer_endpoint_readmit_in` (seconds, while ejected), `rampart_balancer_endpoint_consecutive_failures` |
/// | endpoint, counters | `rampart_balancer_endpoint_ejections`, `rampart_balancer_endpoint_picks` |
///
/// The acquire-wait histogram has the pool's own log2 buckets: upper bounds 1 µs, 2 µs, 4 µs, ...
/// 2^27 µs (about 134 s), then `+Inf`. The pool times a wait in whole microseconds, so a wait of
/// exactly a bound's length falls in the next bucket. A checkout that did not wait counts in the
/// first bucket and adds nothing to the sum.
///
/// ```
/// use rampart_pool::{Manager, PoolConfig, PoolEvents};
/// use rampart_telemetry::adapt::PoolCollector;
/// use rampart_telemetry::{Telemetry, Value};
///
/// struct Numbers;
/// impl Manager for Numbers {
///     type Connection = u32;
///     type Error = std::io::Error;
///     async fn connect(&self) -> Result<u32, std::io::Error> { Ok(7) }
///     async fn is_valid(&self, _conn: &mut u32) -> Result<(), std::io::Error> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = PoolConfig { max_size: 4, ..PoolConfig::default() }.build("orders", Numbers, &PoolEvents::new())?;
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(PoolCollector::new().with_pool(&pool));
///
/// let _conn = pool.acquire().await?;
/// let snapshot = telemetry.snapshot();
/// let in_use = [("pool", "orders"), ("state", "in_use")];
/// assert_eq!(snapshot.value("rampart_pool_connections", &in_use), Some(&Value::Gauge(1.0)));
/// assert_eq!(snapshot.value("rampart_pool_max_size", &[("pool", "orders")]), Some(&Value::Gauge(4.0)));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct PoolCollector {
    pools: Vec<Arc<dyn PoolStatsSource>>,
    balancers: Vec<Arc<dyn BalancerStatsSource>>,
}

impl fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolCollector")
            .field("pools", &self.pools.len())
            .field("balancers", &self.balancers.len())
            .finish()
    }
}

impl PoolCollector {
    /// A collector over no pool yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also reads `pool` (the collector keeps a handle, which shares the pool).
    #[must_use]
    pub fn with_pool<P: PoolStatsSource + Clone>(self, pool: &P) -> Self {
        self.with_pool_source(Arc::new(pool.clone()))
    }

    /// Also reads `source`, a pool of any kind.
    #[must_use]
    pub fn with_pool_source(mut self, source: Arc<dyn PoolStatsSource>) -> Self {
        self.pools.push(source);
        self
    }

    /// Also reads `balancer` (the collector keeps a handle, which shares the balancer). Its
    /// endpoints' pools, if they are pools, are not read: add them with
    /// [`with_pool`](Self::with_pool).
    #[must_use]
    pub fn with_balancer<B: BalancerStatsSource + Clone>(mut self, balancer: &B) -> Self {
        self.balancers.push(Arc::new(balancer.clone()));
        self
    }
}

impl Collector for PoolCollector {
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        let pools: Vec<(Labels, PoolStats)> = self
            .pools
            .iter()
            .map(|p| {
                let stats = p.pool_stats();
                (Labels::new().with("pool", stats.name.clone()), stats)
            })
            .collect();
        write_pools(out, &pools);
        let balancers: Vec<(Labels, BalancerStats)> = self
            .balancers
            .iter()
            .map(|b| {
                let stats = b.balancer_stats();
                (
                    Labels::new().with("balancer", stats.name.to_string()),
                    stats,
                )
            })
            .collect();
        write_balancers(out, &balancers);
    }
}

fn write_pools(out: &mut MetricsWriter<'_>, pools: &[(Labels, PoolStats)]) {
    write_by_label(
        out,
        (
            "rampart_pool_connections",
            "Connections idle and in use now.",
            MetricKind::Gauge,
        ),
        "state",
        POOL_CONNECTIONS,
        pools,
    );
    write_metrics(out, POOL, pools);
    write_by_label(
        out,
        (
            "rampart_pool_connections_closed",
            "Connections closed, by reason.",
            MetricKind::Counter,
        ),
        "reason",
        POOL_CLOSED,
        pools,
    );
    let health: Vec<(Labels, &'static str)> = pools
        .iter()
        .map(|(labels, s)| (labels.clone(), health_name(s.health)))
        .collect();
    write_one_hot(
        out,
        "rampart_pool_health",
        "Pool health: 1 for the current state, 0 for the others.",
        &HEALTH_STATES.map(health_name),
        &health,
    );
    if pools.is_empty() {
        return;
    }
    let mut waits = out.family(
        "rampart_pool_acquire_wait",
        "How long successful checkouts waited for a connection.",
        MetricKind::Histogram,
        Some(Unit::Seconds),
    );
    for (labels, stats) in pools {
        waits.series(labels.clone(), Value::Histogram(wait_histogram(stats)));
    }
}

/// The pool's log2 wait buckets as cumulative buckets with upper bounds in seconds: bucket `i < 28`
/// holds waits under 2^i µs, the last one the rest (the `+Inf` bucket, implied by the count).
pub(crate) fn wait_histogram(stats: &PoolStats) -> HistogramValue {
    let mut cumulative = 0u64;
    let buckets = stats
        .acquire_wait
        .iter()
        .take(WAIT_BUCKETS - 1)
        .enumerate()
        .map(|(i, &n)| {
            cumulative += n;
            ((1u64 << i) as f64 * 1e-6, cumulative)
        })
        .collect();
    HistogramValue {
        buckets,
        sum: stats.acquire_wait_sum.as_secs_f64(),
        count: stats.acquire_wait.iter().sum(),
    }
}

const HEALTH_STATES: [HealthState; 4] = [
    HealthState::Healthy,
    HealthState::Degraded,
    HealthState::Unhealthy,
    HealthState::Recovering,
];

/// A pool's health as a label value (as its `Display` spells it).
pub(crate) fn health_name(state: HealthState) -> &'static str {
    match state {
        HealthState::Healthy => "healthy",
        HealthState::Degraded => "degraded",
        HealthState::Unhealthy => "unhealthy",
        HealthState::Recovering => "recovering",
    }
}

const POOL_CONNECTIONS: &[Part<PoolStats>] =
    &[("idle", |s| s.idle as u64), ("in_use", |s| s.in_use as u64)];

/// Reasons as [`rampart_pool::CloseReason`] spells them.
const POOL_CLOSED: &[Part<PoolStats>] = &[
    ("idle", |s| closed(s).idle),
    ("lifetime", |s| closed(s).lifetime),
    ("error", |s| closed(s).error),
    ("invalid", |s| closed(s).invalid),
    ("stale", |s| closed(s).stale),
    ("pool_closed", |s| closed(s).pool_closed),
    ("resized", |s| closed(s).resized),
    ("discarded", |s| closed(s).discarded),
    ("detached", |s| closed(s).detached),
    ("interrupted", |s| closed(s).interrupted),
];

fn closed(s: &PoolStats) -> &ClosedCounts {
    &s.closed
}

const POOL: &[Metric<PoolStats>] = &[
    Metric::gauge(
        "rampart_pool_size",
        "Connections open or being opened, idle and in use included.",
        |s| level(s.size),
    ),
    Metric::gauge(
        "rampart_pool_max_size",
        "Most connections the pool allows now.",
        |s| level(s.max_size),
    ),
    Metric::gauge(
        "rampart_pool_pending_connects",
        "Connects in flight now.",
        |s| level(s.pending_connects),
    ),
    Metric::gauge("rampart_pool_waiters", "Acquires waiting now.", |s| {
        level(s.waiters)
    }),
    Metric::gauge(
        "rampart_pool_generation",
        "The pool's generation, bumped by each clear.",
        |s| total(s.generation),
    ),
    Metric::gauge(
        "rampart_pool_health_score",
        "Pool health score, 0 to 100.",
        |s| total(u64::from(s.score)),
    ),
    Metric::counter("rampart_pool_checkouts", "Successful checkouts.", |s| {
        total(s.checkouts)
    }),
    Metric::counter(
        "rampart_pool_acquire_timeouts",
        "Acquires that timed out.",
        |s| total(s.timeouts),
    ),
    Metric::counter(
        "rampart_pool_acquire_failures",
        "Acquires that failed for any reason, timeouts included.",
        |s| total(s.checkout_failures),
    ),
    Metric::counter(
        "rampart_pool_connections_created",
        "Connections opened.",
        |s| total(s.created),
    ),
    Metric::counter(
        "rampart_pool_connect_failures",
        "Connects that failed or timed out.",
        |s| total(s.connect_failures),
    ),
    Metric::counter(
        "rampart_pool_validations",
        "Validations run, at checkout and in the background.",
        |s| total(s.validations),
    ),
    Metric::counter(
        "rampart_pool_validation_failures",
        "Validations that failed.",
        |s| total(s.validation_failures),
    ),
    Metric::counter(
        "rampart_pool_leaks",
        "Connections reported held longer than the leak threshold.",
        |s| total(s.leaks),
    ),
];

fn write_balancers(out: &mut MetricsWriter<'_>, balancers: &[(Labels, BalancerStats)]) {
    write_metrics(out, BALANCER, balancers);
    let endpoints: Vec<(Labels, EndpointStats)> = balancers
        .iter()
        .flat_map(|(labels, stats)| {
            stats.endpoints.iter().map(move |e| {
                (
                    labels.clone().with("endpoint", e.name.to_string()),
                    e.clone(),
                )
            })
        })
        .collect();
    let states: Vec<(Labels, &'static str)> = endpoints
        .iter()
        .map(|(labels, e)| (labels.clone(), endpoint_state_name(e.state)))
        .collect();
    write_one_hot(
        out,
        "rampart_balancer_endpoint_state",
        "Endpoint state: 1 for the current state, 0 for the others.",
        &ENDPOINT_STATES.map(endpoint_state_name),
        &states,
    );
    write_metrics(out, ENDPOINT, &endpoints);
}

const ENDPOINT_STATES: [EndpointState; 3] = [
    EndpointState::Active,
    EndpointState::Ejected,
    EndpointState::Ramping,
];

fn endpoint_state_name(state: EndpointState) -> &'static str {
    match state {
        EndpointState::Active => "active",
        EndpointState::Ejected => "ejected",
        EndpointState::Ramping => "ramping",
    }
}

const BALANCER: &[Metric<BalancerStats>] = &[Metric::gauge(
    "rampart_balancer_endpoints_ejected",
    "Endpoints ejected now.",
    |s| level(s.ejected()),
)];

const ENDPOINT: &[Metric<EndpointStats>] = &[
    Metric::gauge(
        "rampart_balancer_endpoint_weight",
        "The share of picks an endpoint takes part in: 1 active, 0 ejected, between while ramping.",
        |s| Some(s.weight),
    ),
    Metric::gauge(
        "rampart_balancer_endpoint_in_flight",
        "Leases of an endpoint handed out and not yet finished.",
        |s| level(s.in_flight),
    ),
    Metric::gauge_in(
        Unit::Seconds,
        "rampart_balancer_endpoint_ewma",
        "Peak EWMA latency as picks see it now (decayed, failures at least the penalty).",
        |s| s.ewma.map(|d| d.as_secs_f64()),
    ),
    Metric::gauge_in(
        Unit::Seconds,
        "rampart_balancer_endpoint_latency",
        "Peak EWMA of real latencies, as the outlier detector compares them.",
        |s| s.latency.map(|d| d.as_secs_f64()),
    ),
    Metric::gauge_in(
        Unit::Seconds,
        "rampart_balancer_endpoint_readmit_in",
        "Time until an ejected endpoint's ejection ends.",
        |s| s.readmit_in.map(|d| d.as_secs_f64()),
    ),
    Metric::gauge(
        "rampart_balancer_endpoint_consecutive_failures",
        "Failures in a row now.",
        |s| total(u64::from(s.consecutive_failures)),
    ),
    Metric::counter(
        "rampart_balancer_endpoint_ejections",
        "Times an endpoint was ejected.",
        |s| total(s.ejections),
    ),
    Metric::counter(
        "rampart_balancer_endpoint_picks",
        "Times a pick chose an endpoint.",
        |s| total(s.picks),
    ),
];
