//! [`PoolCollector`] and the pool and balancer event counters against real pools and balancers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_pool::balance::{BalanceEvents, Balancer, BalancerConfig, Outcome};
use rampart_pool::{Manager, Pool, PoolConfig, PoolEvents};
use rampart_telemetry::adapt::{EventCounters, PoolCollector};
use rampart_telemetry::{HistogramValue, Telemetry, Value};

use super::{counter, gauge, states_on};

/// A toy backend: connections are numbers; those in `invalid` fail validation.
#[derive(Default)]
struct Numbers {
    next: AtomicU32,
    invalid: Mutex<HashSet<u32>>,
}

struct Backend(Arc<Numbers>);

impl Manager for Backend {
    type Connection = u32;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<u32, std::io::Error> {
        Ok(self.0.next.fetch_add(1, Ordering::Relaxed))
    }
    async fn is_valid(&self, conn: &mut u32) -> Result<(), std::io::Error> {
        if self.0.invalid.lock().unwrap().contains(conn) {
            Err(std::io::Error::other("gone"))
        } else {
            Ok(())
        }
    }
}

fn pool(config: PoolConfig) -> (Pool<Backend>, Arc<Numbers>, PoolEvents, Telemetry) {
    let backend = Arc::new(Numbers::default());
    let events = PoolEvents::new();
    let pool = config
        .build("orders", Backend(backend.clone()), &events)
        .unwrap();
    let telemetry = Telemetry::new();
    telemetry.register_collector(PoolCollector::new().with_pool(&pool));
    (pool, backend, events, telemetry)
}

#[tokio::test(start_paused = true)]
async fn a_full_pool_shows_connections_in_use_waiters_and_the_wait() {
    let (pool, _, _, telemetry) = pool(PoolConfig {
        max_size: 2,
        ..PoolConfig::default()
    });
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { *pool.acquire().await.unwrap() }
    });
    for _ in 0..100 {
        if pool.stats().waiters == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let orders = [("pool", "orders")];
    let snapshot = telemetry.snapshot();
    let connections = |state| {
        gauge(
            &snapshot,
            "rampart_pool_connections",
            &[("pool", "orders"), ("state", state)],
        )
    };
    assert_eq!(connections("in_use"), 2.0);
    assert_eq!(connections("idle"), 0.0);
    assert_eq!(gauge(&snapshot, "rampart_pool_waiters", &orders), 1.0);
    assert_eq!(gauge(&snapshot, "rampart_pool_size", &orders), 2.0);
    assert_eq!(gauge(&snapshot, "rampart_pool_max_size", &orders), 2.0);
    assert_eq!(
        states_on(&snapshot, "rampart_pool_health", &orders),
        ["healthy"]
    );

    // The waiter waits 100 ms for `a`.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);
    let got = waiter.await.unwrap();
    drop(b);
    assert!(got < 2, "the waiter got a connection made before");
    let snapshot = telemetry.snapshot();
    assert_eq!(gauge(&snapshot, "rampart_pool_waiters", &orders), 0.0);
    assert_eq!(counter(&snapshot, "rampart_pool_checkouts", &orders), 3.0);
    assert_eq!(
        counter(&snapshot, "rampart_pool_connections_created", &orders),
        2.0
    );
    let Some(Value::Histogram(HistogramValue {
        buckets,
        sum,
        count,
    })) = snapshot.value("rampart_pool_acquire_wait", &orders)
    else {
        panic!("no acquire wait histogram");
    };
    assert_eq!(*count, 3);
    assert!((sum - 0.1).abs() < 1e-9, "only the waiter waited: {sum}");
    // 100 ms = 100,000 µs lies in [2^16, 2^17) µs.
    let at_most = |bound: f64| {
        buckets
            .iter()
            .find(|(b, _)| (*b - bound).abs() < 1e-12)
            .unwrap()
            .1
    };
    assert_eq!(at_most(1e-6), 2, "two checkouts did not wait");
    assert_eq!(at_most(65_536e-6), 2);
    assert_eq!(at_most(131_072e-6), 3);
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    assert_eq!(buckets.last().unwrap(), &(134.217728, 3));
}

#[tokio::test(start_paused = true)]
async fn an_acquire_that_times_out_is_counted() {
    let (pool, _, events, telemetry) = pool(PoolConfig {
        max_size: 1,
        acquire_timeout: Duration::from_secs(1),
        ..PoolConfig::default()
    });
    let _counting = EventCounters::attach_pool(&events, &telemetry);
    let _held = pool.acquire().await.unwrap();
    assert!(pool.acquire().await.unwrap_err().is_timeout());
    let snapshot = telemetry.snapshot();
    let orders = [("pool", "orders")];
    assert_eq!(
        counter(&snapshot, "rampart_pool_acquire_timeouts", &orders),
        1.0
    );
    assert_eq!(
        counter(&snapshot, "rampart_pool_acquire_failures", &orders),
        1.0
    );
    let timeout = [("pool", "orders"), ("reason", "timeout")];
    assert_eq!(
        counter(&snapshot, "rampart_pool_checkout_failures", &timeout),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn closed_connections_appear_under_their_reason() {
    let (pool, backend, _, telemetry) = pool(PoolConfig {
        max_size: 4,
        max_lifetime: Duration::from_secs(100),
        lifetime_jitter: 0.0,
        ..PoolConfig::default()
    });
    // Invalid: a connection unused past the validation bypass is validated at checkout.
    let first = *pool.acquire().await.unwrap();
    backend.invalid.lock().unwrap().insert(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = pool.acquire().await.unwrap();
    assert_ne!(*second, first);
    // Discarded by the user.
    second.discard();
    // Lifetime: an idle connection retired by the background task.
    drop(pool.acquire().await.unwrap());
    tokio::time::sleep(Duration::from_secs(102)).await;

    let snapshot = telemetry.snapshot();
    let closed = |reason| {
        counter(
            &snapshot,
            "rampart_pool_connections_closed",
            &[("pool", "orders"), ("reason", reason)],
        )
    };
    assert_eq!(closed("invalid"), 1.0);
    assert_eq!(closed("discarded"), 1.0);
    assert_eq!(closed("lifetime"), 1.0);
    assert_eq!(closed("idle"), 0.0);
    let family = snapshot.family("rampart_pool_connections_closed").unwrap();
    assert_eq!(family.series.len(), 10, "every reason, zeros too");
    let stats = pool.stats();
    assert_eq!(
        counter(
            &snapshot,
            "rampart_pool_validation_failures",
            &[("pool", "orders")]
        ),
        stats.validation_failures as f64
    );
    assert_eq!(stats.size, 0);
}

#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_shows_in_the_balancer_series() {
    let events = BalanceEvents::new();
    let config = BalancerConfig {
        consecutive_failures: 2,
        ..BalancerConfig::default()
    };
    let balancer: Balancer<usize> = config
        .build("replicas", [("primary", 0), ("replica", 1)], &events)
        .unwrap();
    let telemetry = Telemetry::new();
    telemetry.register_collector(PoolCollector::new().with_balancer(&balancer));
    let _counting = EventCounters::attach_balance(&events, &telemetry);

    let mut failures = 0;
    let mut held = Vec::new();
    while failures < 2 {
        let lease = balancer.pick().unwrap();
        if lease.name() == "replica" {
            lease.record(Duration::from_millis(1), Outcome::Failure);
            failures += 1;
        } else {
            held.push(lease); // busy, so the replica wins the next pick
        }
        assert!(held.len() < 10_000, "the replica was never picked");
    }
    drop(held);

    let snapshot = telemetry.snapshot();
    let replica = [("balancer", "replicas"), ("endpoint", "replica")];
    let primary = [("balancer", "replicas"), ("endpoint", "primary")];
    assert_eq!(
        states_on(&snapshot, "rampart_balancer_endpoint_state", &replica),
        ["ejected"]
    );
    assert_eq!(
        states_on(&snapshot, "rampart_balancer_endpoint_state", &primary),
        ["active"]
    );
    assert_eq!(
        gauge(
            &snapshot,
            "rampart_balancer_endpoints_ejected",
            &[("balancer", "replicas")]
        ),
        1.0
    );
    assert_eq!(
        counter(&snapshot, "rampart_balancer_endpoint_ejections", &replica),
        1.0
    );
    assert_eq!(
        gauge(&snapshot, "rampart_balancer_endpoint_weight", &replica),
        0.0
    );
    let stats = balancer.stats();
    let ejected = stats.endpoint("replica").unwrap();
    assert_eq!(
        gauge(&snapshot, "rampart_balancer_endpoint_readmit_in", &replica),
        ejected.readmit_in.unwrap().as_secs_f64()
    );
    assert_eq!(
        gauge(&snapshot, "rampart_balancer_endpoint_latency", &replica),
        ejected.latency.unwrap().as_secs_f64()
    );
    let by_reason = [
        ("balancer", "replicas"),
        ("endpoint", "replica"),
        ("reason", "consecutive_failures"),
    ];
    assert_eq!(
        counter(&snapshot, "rampart_balancer_ejections", &by_reason),
        1.0
    );
}
