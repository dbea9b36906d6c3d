#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A balancer over three Redis pools against one real, throwaway server, each pool reached through
//! its own chaos proxy: one proxy turns slow, the balancer starves and ejects it as a latency
//! outlier, the proxy heals, and after the ejection and the ramp-up the endpoint takes traffic
//! again. Real time, short configured durations; every wait loops calls until a condition or a
//! deadline. A missing redis-server skips the test unless `RAMPART_REQUIRE_SERVERS=1`.

use std::time::Duration;

use rampart_connect::redis::{RedisConfig, RedisManager};
use rampart_pool::balance::{
    BalanceEvent, BalanceEvents, Balancer, BalancerConfig, EjectionReason, EndpointState, Outcome,
};
use rampart_pool::{Pool, PoolConfig, PoolEvents};
use rampart_testkit::proxy::{ChaosProxy, Direction, Toxic, ToxicKind};
use rampart_testkit::require_server;
use rampart_testkit::server::Redis;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

const SLOW: usize = 2;
const TOXIC_LATENCY: Duration = Duration::from_millis(25);

fn pool(url: &str, name: &str) -> Pool<RedisManager> {
    let manager = RedisConfig {
        client_name: name.to_owned(),
        response_timeout: Duration::from_millis(500),
        ..RedisConfig::new(url)
    }
    .build("redis")
    .unwrap();
    PoolConfig {
        max_size: 2,
        connect_timeout: Duration::from_millis(500),
        acquire_timeout: Duration::from_secs(1),
        ..PoolConfig::default()
    }
    .build(name, manager, &PoolEvents::new())
    .unwrap()
}

/// One call through the balancer: pick, `PING` on a pooled connection, record the outcome with the
/// time since the pick. Returns the endpoint's index.
async fn call(balancer: &Balancer<Pool<RedisManager>>) -> usize {
    let lease = balancer.pick().expect("an endpoint");
    let index = lease.index();
    let answer = async {
        let mut conn = lease.acquire().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut *conn)
            .await
            .ok()
    }
    .await;
    let outcome = match answer.as_deref() {
        Some("PONG") => Outcome::Success,
        _ => Outcome::Failure,
    };
    lease.finish(outcome);
    index
}

/// Makes calls, counting them per endpoint into `picks`, until `done` holds; panics at `within`.
async fn calls_until(
    what: &str,
    balancer: &Balancer<Pool<RedisManager>>,
    picks: &mut [u64; 3],
    within: Duration,
    mut done: impl FnMut(&Balancer<Pool<RedisManager>>, &[u64; 3]) -> bool,
) {
    let deadline = Instant::now() + within;
    while !done(balancer, picks) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {picks:?} {:?}",
            balancer.stats()
        );
        picks[call(balancer).await] += 1;
    }
}

fn events_for(rx: &mut UnboundedReceiver<BalanceEvent>, name: &str) -> Vec<BalanceEvent> {
    let mut out = Vec::new();
    while let Ok(event) = rx.try_recv() {
        let endpoint = match &event {
            BalanceEvent::Ejected { endpoint, .. } | BalanceEvent::Readmitted { endpoint, .. } => {
                endpoint
            }
            _ => continue,
        };
        if endpoint == name {
            out.push(event);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_is_starved_ejected_and_readmitted_once_healed() {
    let started = Instant::now();
    let server = require_server!(Redis::start().await);
    let upstream = ([127, 0, 0, 1], server.port()).into();
    let mut proxies = Vec::new();
    let mut endpoints = Vec::new();
    for name in ["fast-1", "fast-2", "slow"] {
        let proxy = ChaosProxy::start(upstream).await.unwrap();
        let pool = pool(&format!("redis://{}", proxy.addr()), name);
        // Connect before balancing, so the first samples are not connection set-ups.
        let mut conn = pool.acquire().await.unwrap();
        let _: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
        drop(conn);
        proxies.push(proxy);
        endpoints.push((name, pool));
    }
    let events = BalanceEvents::new();
    let (_subscription, mut rx) = events.channel();
    let config = BalancerConfig {
        decay: Duration::from_millis(200),
        // Local calls take well under a millisecond; the toxic adds 25ms. A factor of 20 leaves
        // room for scheduling hiccups on a busy machine without missing the slow one.
        latency_factor: 20.0,
        min_samples: 10,
        base_ejection: Duration::from_secs(1),
        max_ejection: Duration::from_secs(1),
        ramp_up: Duration::from_secs(1),
        ..BalancerConfig::default()
    };
    let balancer = config.build("redis", endpoints, &events).unwrap();

    // Warm up: every endpoint has enough samples for its latency to count, none is ejected.
    let mut picks = [0u64; 3];
    calls_until(
        "warm-up",
        &balancer,
        &mut picks,
        Duration::from_secs(10),
        |b, picks| picks.iter().all(|&p| p >= 20) && b.stats().ejected() == 0,
    )
    .await;

    // On a machine short of CPU a scheduling hiccup during the warm-up can already look like an
    // outlier against sub-millisecond calls (and be readmitted a second later): count from here.
    let before = balancer.stats().endpoint("slow").unwrap().ejections;
    let _ = events_for(&mut rx, "slow");

    // "slow" turns slow: it is tried at most a few times, then ejected as a latency outlier.
    proxies[SLOW].set(Toxic::Latency {
        latency: TOXIC_LATENCY,
        jitter: Duration::ZERO,
        direction: Direction::Downstream,
    });
    let mut picks = [0u64; 3];
    calls_until(
        "the slow endpoint's ejection",
        &balancer,
        &mut picks,
        Duration::from_secs(10),
        |b, _| b.stats().endpoint("slow").unwrap().state == EndpointState::Ejected,
    )
    .await;
    let stats = balancer.stats();
    let slow = stats.endpoint("slow").unwrap();
    assert_eq!(slow.ejections, before + 1, "{stats:?}");
    assert!(slow.latency.unwrap() >= TOXIC_LATENCY, "{stats:?}");
    assert!(
        slow.readmit_in.unwrap() <= Duration::from_secs(1),
        "{stats:?}"
    );
    let ejected = events_for(&mut rx, "slow");
    match ejected.as_slice() {
        [
            BalanceEvent::Ejected {
                reason: EjectionReason::LatencyOutlier { ewma, median },
                duration,
                ..
            },
        ] => {
            assert!(*ewma >= TOXIC_LATENCY, "{ewma:?}");
            assert!(*median * 20 < *ewma, "{median:?} {ewma:?}");
            assert_eq!(*duration, Duration::from_secs(1));
        }
        other => panic!("expected one latency ejection of slow, got {other:?}"),
    }

    // Healed while ejected. Until its ejection ends it gets no call at all.
    proxies[SLOW].remove(ToxicKind::Latency).unwrap();
    let slow_picks = picks[SLOW];
    calls_until(
        "the readmission",
        &balancer,
        &mut picks,
        Duration::from_secs(5),
        |b, _| b.stats().endpoint("slow").unwrap().state != EndpointState::Ejected,
    )
    .await;
    // A call or two may land in the moment between the ejection's end and this check.
    assert!(picks[SLOW] <= slow_picks + 2, "{picks:?}");
    // Far less traffic while slow: a handful of calls against hundreds.
    assert!(picks[SLOW] * 20 < picks[0] + picks[1], "{picks:?}");
    assert!(
        matches!(
            events_for(&mut rx, "slow").as_slice(),
            [BalanceEvent::Readmitted { .. }]
        ),
        "{:?}",
        balancer.stats()
    );

    // After the ramp-up it takes traffic again: 30 more calls within the deadline (its share
    // varies with the real sub-millisecond latencies, so only the calls are counted).
    calls_until(
        "the end of the ramp-up",
        &balancer,
        &mut picks,
        Duration::from_secs(5),
        |b, _| b.stats().endpoint("slow").unwrap().state == EndpointState::Active,
    )
    .await;
    let mut picks = [0u64; 3];
    calls_until(
        "traffic to the healed endpoint",
        &balancer,
        &mut picks,
        Duration::from_secs(5),
        |_, picks| picks[SLOW] >= 30,
    )
    .await;
    let stats = balancer.stats();
    let slow = stats.endpoint("slow").unwrap();
    assert_eq!(
        (slow.state, slow.ejections),
        (EndpointState::Active, before + 1)
    );
    assert!(slow.latency.unwrap() < TOXIC_LATENCY, "{stats:?}");
    eprintln!("healed-replica scenario took {:?}", started.elapsed());
}
