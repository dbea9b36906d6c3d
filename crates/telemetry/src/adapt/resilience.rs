//! [`ResilienceCollector`]: every policy's stats, as metrics.

use std::collections::BTreeMap;
use std::fmt;

use rampart_resilience::Registry;
use rampart_resilience::adaptive::AdaptiveStats;
use rampart_resilience::breaker::{BreakerState, BreakerStats};
use rampart_resilience::bulkhead::BulkheadStats;
use rampart_resilience::fallback::{Fallback, FallbackStats};
use rampart_resilience::hedge::HedgeStats;
use rampart_resilience::rate_limit::{KeyedRateLimitStats, RateLimitStats};
use rampart_resilience::retry::{RetryBudgetStats, RetryStats};
use rampart_resilience::timeout::TimeoutStats;

use super::{Metric, Part, level, total, write_by_label, write_metrics, write_one_hot};
use crate::{Collector, Labels, MetricKind, MetricsWriter, Unit};

/// Writes the stats of every policy a [`Registry`] has built, and of the [`Fallback`]s added to
/// it, into each snapshot. Every series is labelled `name` (the policy's name); a kind with no
/// policy writes no family.
///
/// | policy | families (counters unless marked) |
/// | --- | --- |
/// | breaker | `rampart_breaker_state{state}` (gauge, one-hot: `closed`, `open`, `half_open`, `forced_open`, `disabled`), `rampart_breaker_calls{outcome}` (`success`, `failure`, `ignored`), `rampart_breaker_slow_calls`, `rampart_breaker_rejected`, `rampart_breaker_opened`, `rampart_breaker_failure_rate` and `rampart_breaker_slow_call_rate` (gauges, ratio, once the window holds `minimum_calls`), `rampart_breaker_window_calls`, `rampart_breaker_consecutive_failures` (gauges) |
/// | retry | `rampart_retry_calls`, `rampart_retry_attempts`, `rampart_retry_retries`, `rampart_retry_successes_after_retry`, `rampart_retry_exhausted`, `rampart_retry_budget_refusals` |
/// | retry budget | `rampart_retry_budget_deposits`, `rampart_retry_budget_withdrawals`, `rampart_retry_budget_rejected`, `rampart_retry_budget_tokens` (gauge: retries it would allow now) |
/// | timeout | `rampart_timeout_calls`, `rampart_timeout_timeouts`, `rampart_timeout_deadline_exceeded` |
/// | rate limiter | `rampart_rate_limit_permitted`, `rampart_rate_limit_rejected`, `rampart_rate_limit_waited`, `rampart_rate_limit_available`, `rampart_rate_limit_burst` (gauges) |
/// | keyed rate limiter | `rampart_rate_limit_keyed_permitted`, `_rejected`, `_waited`, `rampart_rate_limit_keyed_keys` and `_max_keys` (gauges) |
/// | bulkhead | `rampart_bulkhead_in_flight`, `rampart_bulkhead_queued`, `rampart_bulkhead_max_concurrent` (gauges), `rampart_bulkhead_permitted`, `rampart_bulkhead_rejected` |
/// | adaptive limiter | `rampart_adaptive_limit`, `rampart_adaptive_in_flight` (gauges), `rampart_adaptive_permitted`, `rampart_adaptive_rejected` |
/// | hedge | `rampart_hedge_calls`, `rampart_hedge_hedges`, `rampart_hedge_wins`, `rampart_hedge_delay` (gauge, seconds, once known) |
/// | fallback | `rampart_fallback_calls`, `rampart_fallback_used` |
///
/// Retry and keyed limiters are read as the registry builds them: a retry policy's counters are
/// shared by every handle of its name, and keyed limiters of one name with different key types are
/// added together.
///
/// ```
/// use rampart_resilience::Registry;
/// use rampart_telemetry::adapt::ResilienceCollector;
/// use rampart_telemetry::{Telemetry, Value};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let policies = Registry::from_toml_str("[bulkhead.reports]\nmax_concurrent = 1\n", None)?;
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(ResilienceCollector::new(&policies));
///
/// let bulkhead = policies.bulkhead("reports");
/// let _slot = bulkhead.try_acquire()?;
/// assert!(bulkhead.try_acquire().is_err(), "full");
/// let snapshot = telemetry.snapshot();
/// let reports = [("name", "reports")];
/// assert_eq!(snapshot.value("rampart_bulkhead_in_flight", &reports), Some(&Value::Gauge(1.0)));
/// assert_eq!(snapshot.value("rampart_bulkhead_rejected", &reports), Some(&Value::Counter(1.0)));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ResilienceCollector {
    registry: Registry,
    fallbacks: Vec<Fallback>,
}

impl fmt::Debug for ResilienceCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceCollector")
            .field("fallbacks", &self.fallbacks.len())
            .finish_non_exhaustive()
    }
}

impl ResilienceCollector {
    /// A collector over `registry` (it keeps a handle, which shares the registry's policies):
    /// policies the registry builds later show up in later snapshots.
    pub fn new(registry: &Registry) -> Self {
        ResilienceCollector {
            registry: registry.clone(),
            fallbacks: Vec::new(),
        }
    }

    /// Also reads `fallback` (a registry does not build fallbacks); the collector keeps a handle,
    /// which shares its counters.
    #[must_use]
    pub fn with_fallback(mut self, fallback: &Fallback) -> Self {
        self.fallbacks.push(fallback.clone());
        self
    }
}

impl Collector for ResilienceCollector {
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        let stats = self.registry.stats();
        let breakers = named(stats.breaker);
        let states: Vec<(Labels, &'static str)> = breakers
            .iter()
            .map(|(labels, s)| (labels.clone(), breaker_state_name(s.state)))
            .collect();
        write_one_hot(
            out,
            "rampart_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            &BREAKER_STATES.map(breaker_state_name),
            &states,
        );
        write_by_label(
            out,
            (
                "rampart_breaker_calls",
                "Calls through a circuit breaker that ran, by outcome.",
                MetricKind::Counter,
            ),
            "outcome",
            BREAKER_OUTCOMES,
            &breakers,
        );
        write_metrics(out, BREAKER, &breakers);
        write_metrics(out, RETRY, &named(stats.retry));
        write_metrics(out, RETRY_BUDGET, &named(stats.retry_budget));
        write_metrics(out, TIMEOUT, &named(stats.timeout));
        write_metrics(out, RATE_LIMIT, &named(stats.rate_limit));
        write_metrics(out, KEYED_RATE_LIMIT, &named(stats.keyed_rate_limit));
        write_metrics(out, BULKHEAD, &named(stats.bulkhead));
        write_metrics(out, ADAPTIVE, &named(stats.adaptive));
        write_metrics(out, HEDGE, &named(stats.hedge));
        let fallbacks: Vec<(Labels, FallbackStats)> = self
            .fallbacks
            .iter()
            .map(|f| (name_labels(f.name().to_owned()), f.stats()))
            .collect();
        write_metrics(out, FALLBACK, &fallbacks);
    }
}

fn name_labels(name: String) -> Labels {
    Labels::new().with("name", name)
}

fn named<S>(stats: BTreeMap<String, S>) -> Vec<(Labels, S)> {
    stats
        .into_iter()
        .map(|(name, s)| (name_labels(name), s))
        .collect()
}

/// Every breaker state, in the order the one-hot family lists them.
const BREAKER_STATES: [BreakerState; 5] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
    BreakerState::ForcedOpen,
    BreakerState::Disabled,
];

/// A breaker state as a label value (as the state's `Display` spells it).
pub(crate) fn breaker_state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::ForcedOpen => "forced_open",
        BreakerState::Disabled => "disabled",
    }
}

const BREAKER_OUTCOMES: &[Part<BreakerStats>] = &[
    ("success", |s| s.successful),
    ("failure", |s| s.failed),
    ("ignored", |s| s.ignored),
];

const BREAKER: &[Metric<BreakerStats>] = &[
    Metric::counter(
        "rampart_breaker_slow_calls",
        "Calls slower than the breaker's slow-call duration, successful or not.",
        |s| total(s.slow),
    ),
    Metric::counter(
        "rampart_breaker_rejected",
        "Calls a circuit breaker rejected without running them.",
        |s| total(s.rejected),
    ),
    Metric::counter(
        "rampart_breaker_opened",
        "Times a circuit breaker opened.",
        |s| total(s.opened),
    ),
    Metric::gauge_in(
        Unit::Ratio,
        "rampart_breaker_failure_rate",
        "Failure rate of the breaker's window, once it holds enough calls.",
        |s| s.failure_rate,
    ),
    Metric::gauge_in(
        Unit::Ratio,
        "rampart_breaker_slow_call_rate",
        "Slow-call rate of the breaker's window, once it holds enough calls.",
        |s| s.slow_call_rate,
    ),
    Metric::gauge(
        "rampart_breaker_window_calls",
        "Calls in the breaker's window now.",
        |s| total(u64::from(s.window_calls)),
    ),
    Metric::gauge(
        "rampart_breaker_consecutive_failures",
        "Failures in a row now.",
        |s| total(u64::from(s.consecutive_failures)),
    ),
];

const RETRY: &[Metric<RetryStats>] = &[
    Metric::counter(
        "rampart_retry_calls",
        "Calls made through a retry policy.",
        |s| total(s.calls),
    ),
    Metric::counter(
        "rampart_retry_attempts",
        "Attempts started, first attempts included.",
        |s| total(s.attempts),
    ),
    Metric::counter("rampart_retry_retries", "Retries decided on.", |s| {
        total(s.retries)
    }),
    Metric::counter(
        "rampart_retry_successes_after_retry",
        "Calls that succeeded after at least one retry.",
        |s| total(s.successes_after_retry),
    ),
    Metric::counter(
        "rampart_retry_exhausted",
        "Calls that gave up on a result that asked for a retry.",
        |s| total(s.exhausted),
    ),
    Metric::counter(
        "rampart_retry_budget_refusals",
        "Retries of this policy that its retry budget refused.",
        |s| total(s.budget_rejections),
    ),
];

const RETRY_BUDGET: &[Metric<RetryBudgetStats>] = &[
    Metric::counter(
        "rampart_retry_budget_deposits",
        "Original requests deposited into a retry budget.",
        |s| total(s.deposits),
    ),
    Metric::counter(
        "rampart_retry_budget_withdrawals",
        "Retries a retry budget allowed.",
        |s| total(s.withdrawals),
    ),
    Metric::counter(
        "rampart_retry_budget_rejected",
        "Retries a retry budget refused.",
        |s| total(s.rejections),
    ),
    Metric::gauge(
        "rampart_retry_budget_tokens",
        "Retries the budget would allow right now.",
        |s| total(s.available),
    ),
];

const TIMEOUT: &[Metric<TimeoutStats>] = &[
    Metric::counter(
        "rampart_timeout_calls",
        "Calls made through a timeout.",
        |s| total(s.calls),
    ),
    Metric::counter(
        "rampart_timeout_timeouts",
        "Calls abandoned because the policy's timeout expired.",
        |s| total(s.timeouts),
    ),
    Metric::counter(
        "rampart_timeout_deadline_exceeded",
        "Calls abandoned or never started because the caller's deadline expired first.",
        |s| total(s.deadline_exceeded),
    ),
];

const RATE_LIMIT: &[Metric<RateLimitStats>] = &[
    Metric::counter(
        "rampart_rate_limit_permitted",
        "Requests a rate limiter admitted.",
        |s| total(s.permitted),
    ),
    Metric::counter(
        "rampart_rate_limit_rejected",
        "Requests a rate limiter rejected.",
        |s| total(s.rejected),
    ),
    Metric::counter(
        "rampart_rate_limit_waited",
        "Admitted requests that waited for their turn.",
        |s| total(s.waited),
    ),
    Metric::gauge(
        "rampart_rate_limit_available",
        "Units that could pass right now.",
        |s| total(u64::from(s.available)),
    ),
    Metric::gauge(
        "rampart_rate_limit_burst",
        "Units a full rate limiter lets through at once.",
        |s| total(u64::from(s.burst)),
    ),
];

const KEYED_RATE_LIMIT: &[Metric<KeyedRateLimitStats>] = &[
    Metric::counter(
        "rampart_rate_limit_keyed_permitted",
        "Requests a keyed rate limiter admitted.",
        |s| total(s.permitted),
    ),
    Metric::counter(
        "rampart_rate_limit_keyed_rejected",
        "Requests a keyed rate limiter rejected, new keys turned away included.",
        |s| total(s.rejected),
    ),
    Metric::counter(
        "rampart_rate_limit_keyed_waited",
        "Admitted requests that waited for their turn.",
        |s| total(s.waited),
    ),
    Metric::gauge(
        "rampart_rate_limit_keyed_keys",
        "Keys held now, idle ones not yet evicted included.",
        |s| level(s.keys),
    ),
    Metric::gauge(
        "rampart_rate_limit_keyed_max_keys",
        "Most keys a keyed rate limiter holds.",
        |s| level(s.max_keys),
    ),
];

const BULKHEAD: &[Metric<BulkheadStats>] = &[
    Metric::gauge(
        "rampart_bulkhead_in_flight",
        "Bulkhead slots held now.",
        |s| level(s.in_flight),
    ),
    Metric::gauge(
        "rampart_bulkhead_queued",
        "Callers waiting for a bulkhead slot now.",
        |s| level(s.queued),
    ),
    Metric::gauge(
        "rampart_bulkhead_max_concurrent",
        "Bulkhead slots in all.",
        |s| level(s.max_concurrent),
    ),
    Metric::counter(
        "rampart_bulkhead_permitted",
        "Bulkhead slots handed out.",
        |s| total(s.permitted),
    ),
    Metric::counter(
        "rampart_bulkhead_rejected",
        "Callers a bulkhead turned away.",
        |s| total(s.rejected),
    ),
];

const ADAPTIVE: &[Metric<AdaptiveStats>] = &[
    Metric::gauge(
        "rampart_adaptive_limit",
        "The adaptive concurrency limit now.",
        |s| level(s.limit),
    ),
    Metric::gauge(
        "rampart_adaptive_in_flight",
        "Calls in flight through an adaptive limiter now.",
        |s| level(s.in_flight),
    ),
    Metric::counter(
        "rampart_adaptive_permitted",
        "Calls an adaptive limiter admitted.",
        |s| total(s.permitted),
    ),
    Metric::counter(
        "rampart_adaptive_rejected",
        "Calls an adaptive limiter rejected.",
        |s| total(s.rejected),
    ),
];

const HEDGE: &[Metric<HedgeStats>] = &[
    Metric::counter("rampart_hedge_calls", "Calls made through a hedge.", |s| {
        total(s.calls)
    }),
    Metric::counter("rampart_hedge_hedges", "Extra attempts started.", |s| {
        total(s.hedges)
    }),
    Metric::counter(
        "rampart_hedge_wins",
        "Calls answered by an extra attempt rather than the first.",
        |s| total(s.hedge_wins),
    ),
    Metric::gauge_in(
        Unit::Seconds,
        "rampart_hedge_delay",
        "The delay before a hedge now, once known.",
        |s| s.current_delay.map(|d| d.as_secs_f64()),
    ),
];

const FALLBACK: &[Metric<FallbackStats>] = &[
    Metric::counter(
        "rampart_fallback_calls",
        "Calls made through a fallback.",
        |s| total(s.calls),
    ),
    Metric::counter(
        "rampart_fallback_used",
        "Calls whose result came from the fallback.",
        |s| total(s.fallbacks),
    ),
];
