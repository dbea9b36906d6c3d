#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The adapters against the real policies, pools and balancers, on paused time: what each metric
//! shows must be what the stats say. This file: the policies; `adapt/pool.rs`: pools and balancers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rampart_resilience::breaker::BreakerState;
use rampart_resilience::fallback::Fallback;
use rampart_resilience::{Event, Registry};
use rampart_telemetry::adapt::{EventCounters, ResilienceCollector};
use rampart_telemetry::{Snapshot, Telemetry, TelemetryConfig, Value};

/// Pools and balancers.
#[path = "adapt/pool.rs"]
mod pool;

fn counter(snapshot: &Snapshot, family: &str, labels: &[(&str, &str)]) -> f64 {
    match snapshot.value(family, labels) {
        Some(Value::Counter(v)) => *v,
        other => panic!("{family}{labels:?}: expected a counter, got {other:?}"),
    }
}

fn gauge(snapshot: &Snapshot, family: &str, labels: &[(&str, &str)]) -> f64 {
    match snapshot.value(family, labels) {
        Some(Value::Gauge(v)) => *v,
        other => panic!("{family}{labels:?}: expected a gauge, got {other:?}"),
    }
}

/// The one-hot states of `family` for the series matching `labels` that are 1.
fn states_on(snapshot: &Snapshot, family: &str, labels: &[(&str, &str)]) -> Vec<String> {
    let family = snapshot.family(family).expect("family written");
    family
        .series
        .iter()
        .filter(|s| labels.iter().all(|(n, v)| s.labels.get(n) == Some(*v)))
        .filter(|s| s.value == Value::Gauge(1.0))
        .map(|s| s.labels.get("state").unwrap().to_owned())
        .collect()
}

fn policies(toml: &str) -> (Registry, Telemetry) {
    let registry = Registry::from_toml_str(toml, None).unwrap();
    let telemetry = Telemetry::new();
    telemetry.register_collector(ResilienceCollector::new(&registry));
    (registry, telemetry)
}

const BREAKER: &str = r#"
    [breaker.payments]
    window = "consecutive"
    consecutive_failures = 3
    wait_in_open = "10s"
"#;

#[tokio::test(start_paused = true)]
async fn a_breaker_driven_open_shows_open_and_its_rejections() {
    let (registry, telemetry) = policies(BREAKER);
    let breaker = registry.breaker("payments");
    for _ in 0..3 {
        let _ = breaker.call(|| async { Err::<(), _>("down") }).await;
    }
    for _ in 0..2 {
        assert!(
            breaker
                .call(|| async { Ok::<_, ()>(()) })
                .await
                .unwrap_err()
                .is_rejection()
        );
    }
    let stats = breaker.stats();
    assert_eq!(stats.state, BreakerState::Open);

    let snapshot = telemetry.snapshot();
    let payments = [("name", "payments")];
    assert_eq!(
        states_on(&snapshot, "rampart_breaker_state", &payments),
        ["open"]
    );
    let states = snapshot.family("rampart_breaker_state").unwrap();
    assert_eq!(states.series.len(), 5, "one series per state");
    assert_eq!(
        counter(&snapshot, "rampart_breaker_rejected", &payments),
        stats.rejected as f64
    );
    assert_eq!(stats.rejected, 2);
    let failed = [("name", "payments"), ("outcome", "failure")];
    assert_eq!(counter(&snapshot, "rampart_breaker_calls", &failed), 3.0);
    let succeeded = [("name", "payments"), ("outcome", "success")];
    assert_eq!(counter(&snapshot, "rampart_breaker_calls", &succeeded), 0.0);
    assert_eq!(counter(&snapshot, "rampart_breaker_opened", &payments), 1.0);
    assert_eq!(
        gauge(&snapshot, "rampart_breaker_consecutive_failures", &payments),
        f64::from(stats.consecutive_failures)
    );
    assert!(
        snapshot.family("rampart_bulkhead_rejected").is_none(),
        "no bulkhead, no family"
    );
}

#[tokio::test(start_paused = true)]
async fn event_counters_count_breaker_transitions_and_rejections() {
    let (registry, telemetry) = policies(BREAKER);
    let _counting = EventCounters::attach(registry.events(), &telemetry);
    let (_watch, mut events) = registry.events().channel();
    let breaker = registry.breaker("payments");
    for _ in 0..3 {
        let _ = breaker.call(|| async { Err::<(), _>("down") }).await;
    }
    let _ = breaker.call(|| async { Ok::<_, ()>(()) }).await;
    // The wait in open ends on its own (paused time runs ahead to the breaker's timer).
    loop {
        if let Event::BreakerStateChanged {
            to: BreakerState::HalfOpen,
            ..
        } = events.recv().await.unwrap()
        {
            break;
        }
    }

    let snapshot = telemetry.snapshot();
    let transition = |from, to| {
        counter(
            &snapshot,
            "rampart_breaker_transitions",
            &[("name", "payments"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(transition("closed", "open"), 1.0);
    assert_eq!(transition("open", "half_open"), 1.0);
    assert_eq!(
        snapshot
            .family("rampart_breaker_transitions")
            .unwrap()
            .series
            .len(),
        2
    );
    let rejected = [("name", "payments"), ("policy", "breaker")];
    assert_eq!(
        counter(&snapshot, "rampart_policy_rejections", &rejected),
        breaker.stats().rejected as f64
    );
    assert_eq!(
        states_on(&snapshot, "rampart_breaker_state", &[("name", "payments")]),
        ["half_open"]
    );
}

#[tokio::test(start_paused = true)]
async fn event_counters_stay_within_the_registrys_series_limit_and_lose_no_event() {
    let registry = Registry::default();
    let telemetry = TelemetryConfig {
        max_series_per_metric: 2,
        ..TelemetryConfig::default()
    }
    .build();
    let _counting = EventCounters::attach(registry.events(), &telemetry);
    let names = ["a", "b", "c", "d", "e"];
    for name in names {
        registry.breaker(name).force_open();
    }
    let snapshot = telemetry.snapshot();
    let family = snapshot.family("rampart_breaker_transitions").unwrap();
    assert_eq!(
        family.series.len(),
        3,
        "two label sets and the overflow series"
    );
    let overflow = family
        .series
        .iter()
        .find(|s| s.labels.is_overflow())
        .unwrap();
    assert_eq!(overflow.value, Value::Counter((names.len() - 2) as f64));
    let total: f64 = family
        .series
        .iter()
        .map(|s| match s.value {
            Value::Counter(v) => v,
            _ => panic!("not a counter"),
        })
        .sum();
    assert_eq!(total, names.len() as f64);
}

#[tokio::test(start_paused = true)]
async fn retries_and_the_budget_are_counted() {
    let (registry, telemetry) = policies(
        r#"
        [retry.inventory]
        max_attempts = 5
        base_delay = "1ms"
        jitter = "none"
        budget = "fleet"

        [retry_budget.fleet]
        ratio = 0.0
        min_retries_per_second = 2
        window = "1s"
        "#,
    );
    let retry = registry.retry("inventory");
    let attempts = AtomicU32::new(0);
    let err = retry
        .call(|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("down")
        })
        .await
        .unwrap_err();
    assert!(err.is_budget_exhausted(), "{err:?}");
    let stats = registry.stats();
    let (r, b) = (&stats.retry["inventory"], &stats.retry_budget["fleet"]);
    // The budget allows two retries: three attempts, then the third retry is refused.
    assert_eq!(attempts.load(Ordering::Relaxed), 3);

    let snapshot = telemetry.snapshot();
    let inventory = [("name", "inventory")];
    let fleet = [("name", "fleet")];
    for (family, labels, expected) in [
        ("rampart_retry_calls", &inventory, r.calls),
        ("rampart_retry_attempts", &inventory, r.attempts),
        ("rampart_retry_retries", &inventory, r.retries),
        ("rampart_retry_exhausted", &inventory, r.exhausted),
        (
            "rampart_retry_budget_refusals",
            &inventory,
            r.budget_rejections,
        ),
        ("rampart_retry_budget_withdrawals", &fleet, b.withdrawals),
        ("rampart_retry_budget_rejected", &fleet, b.rejections),
        ("rampart_retry_budget_deposits", &fleet, b.deposits),
    ] {
        assert_eq!(
            counter(&snapshot, family, labels),
            expected as f64,
            "{family}"
        );
    }
    assert_eq!(
        counter(&snapshot, "rampart_retry_attempts", &inventory),
        3.0
    );
    assert_eq!(counter(&snapshot, "rampart_retry_retries", &inventory), 2.0);
    assert_eq!(
        counter(&snapshot, "rampart_retry_exhausted", &inventory),
        1.0
    );
    assert_eq!(
        counter(&snapshot, "rampart_retry_budget_rejected", &fleet),
        1.0
    );
    assert_eq!(
        gauge(&snapshot, "rampart_retry_budget_tokens", &fleet),
        b.available as f64
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_shows_its_slots_and_rejections() {
    let (registry, telemetry) = policies("[bulkhead.reports]\nmax_concurrent = 2\n");
    let bulkhead = registry.bulkhead("reports");
    let _held = [
        bulkhead.try_acquire().unwrap(),
        bulkhead.try_acquire().unwrap(),
    ];
    for _ in 0..3 {
        assert!(bulkhead.try_acquire().is_err());
    }
    let snapshot = telemetry.snapshot();
    let reports = [("name", "reports")];
    assert_eq!(
        counter(&snapshot, "rampart_bulkhead_rejected", &reports),
        3.0
    );
    assert_eq!(
        counter(&snapshot, "rampart_bulkhead_permitted", &reports),
        2.0
    );
    assert_eq!(
        gauge(&snapshot, "rampart_bulkhead_in_flight", &reports),
        2.0
    );
    assert_eq!(
        gauge(&snapshot, "rampart_bulkhead_max_concurrent", &reports),
        2.0
    );
    assert_eq!(gauge(&snapshot, "rampart_bulkhead_queued", &reports), 0.0);
}

#[tokio::test(start_paused = true)]
async fn every_other_policy_kind_is_written_as_its_stats_say() {
    let registry = Registry::from_toml_str(
        r#"
        [timeout.slow]
        timeout = "10ms"

        [rate_limit.api]
        rate = 1.0
        per = "1s"
        burst = 1

        [hedge.search]
        delay = "10ms"
        "#,
        None,
    )
    .unwrap();
    let fallback = Fallback::new("profile", registry.events());
    let telemetry = Telemetry::new();
    telemetry.register_collector(ResilienceCollector::new(&registry).with_fallback(&fallback));

    let timed_out = registry
        .timeout("slow")
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, ()>(())
        })
        .await;
    assert!(timed_out.unwrap_err().is_timeout());
    let limiter = registry.rate_limiter("api");
    assert!(limiter.try_acquire(1).is_ok());
    assert!(limiter.try_acquire(1).is_err());
    let keyed = registry.keyed_rate_limiter::<String>("api");
    let tenant = "acme".to_owned();
    assert!(keyed.try_acquire(&tenant, 1).is_ok());
    assert!(keyed.try_acquire(&tenant, 1).is_err());
    let started = AtomicU32::new(0);
    let answer = registry
        .hedge("search")
        .call(|| {
            let first = started.fetch_add(1, Ordering::Relaxed) == 0;
            async move {
                if first {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok::<_, ()>(first)
            }
        })
        .await;
    assert_eq!(answer.ok(), Some(false), "the hedge answered");
    let adaptive = registry.adaptive_limiter("db");
    let _token = adaptive.try_acquire().unwrap();
    let guest = fallback
        .call_or_else(|| async { Err::<&str, _>("down") }, |_| "guest")
        .await;
    assert_eq!(guest.ok(), Some("guest"));

    let stats = registry.stats();
    let snapshot = telemetry.snapshot();
    let (slow, api, search, db, profile) = (
        [("name", "slow")],
        [("name", "api")],
        [("name", "search")],
        [("name", "db")],
        [("name", "profile")],
    );
    let (t, rl, k, h, a, f) = (
        &stats.timeout["slow"],
        &stats.rate_limit["api"],
        &stats.keyed_rate_limit["api"],
        &stats.hedge["search"],
        &stats.adaptive["db"],
        fallback.stats(),
    );
    for (family, labels, expected) in [
        ("rampart_timeout_calls", &slow, t.calls),
        ("rampart_timeout_timeouts", &slow, t.timeouts),
        (
            "rampart_timeout_deadline_exceeded",
            &slow,
            t.deadline_exceeded,
        ),
        ("rampart_rate_limit_permitted", &api, rl.permitted),
        ("rampart_rate_limit_rejected", &api, rl.rejected),
        ("rampart_rate_limit_waited", &api, rl.waited),
        ("rampart_rate_limit_keyed_permitted", &api, k.permitted),
        ("rampart_rate_limit_keyed_rejected", &api, k.rejected),
        ("rampart_hedge_calls", &search, h.calls),
        ("rampart_hedge_hedges", &search, h.hedges),
        ("rampart_hedge_wins", &search, h.hedge_wins),
        ("rampart_adaptive_permitted", &db, a.permitted),
        ("rampart_adaptive_rejected", &db, a.rejected),
        ("rampart_fallback_calls", &profile, f.calls),
        ("rampart_fallback_used", &profile, f.fallbacks),
    ] {
        assert_eq!(
            counter(&snapshot, family, labels),
            expected as f64,
            "{family}"
        );
    }
    for (family, labels, expected) in [
        (
            "rampart_rate_limit_available",
            &api,
            f64::from(rl.available),
        ),
        ("rampart_rate_limit_burst", &api, f64::from(rl.burst)),
        ("rampart_rate_limit_keyed_keys", &api, k.keys as f64),
        ("rampart_rate_limit_keyed_max_keys", &api, k.max_keys as f64),
        ("rampart_adaptive_limit", &db, a.limit as f64),
        ("rampart_adaptive_in_flight", &db, a.in_flight as f64),
        (
            "rampart_hedge_delay",
            &search,
            Duration::from_millis(10).as_secs_f64(),
        ),
    ] {
        assert_eq!(gauge(&snapshot, family, labels), expected, "{family}");
    }
    // What was done shows as done, not only as equal to the stats.
    assert_eq!(counter(&snapshot, "rampart_timeout_timeouts", &slow), 1.0);
    assert_eq!(counter(&snapshot, "rampart_rate_limit_rejected", &api), 1.0);
    assert_eq!(
        counter(&snapshot, "rampart_rate_limit_keyed_rejected", &api),
        1.0
    );
    assert_eq!(counter(&snapshot, "rampart_hedge_wins", &search), 1.0);
    assert_eq!(gauge(&snapshot, "rampart_adaptive_in_flight", &db), 1.0);
    assert_eq!(counter(&snapshot, "rampart_fallback_used", &profile), 1.0);
}
