//! Rate limiter behaviour through the public API, on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use rampart_resilience::rate_limit::{
    KeyedRateLimiter, RateLimitConfig, RateLimitLayer, RateLimited, RateLimiter,
};
use rampart_resilience::{Error, Event, Events, PolicyKind};
use tokio::time::{Instant, advance};
use tower::ServiceExt;

const MS: Duration = Duration::from_millis(1);

/// `rate` per `per`, with `burst`, rejecting at once.
#[allow(clippy::unwrap_used)] // a test helper
fn limiter(rate: f64, per: Duration, burst: u32) -> RateLimiter {
    RateLimitConfig::new(rate, per)
        .burst(burst)
        .build("api", &Events::new())
        .unwrap()
}

/// Polls a future once, so it starts (and, if it must wait, registers as a waiter).
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Option<F::Output> {
    futures_util::FutureExt::now_or_never(fut)
}

#[tokio::test(start_paused = true)]
async fn exactly_burst_pass_at_once_then_one_per_emission_interval() {
    let l = limiter(10.0, Duration::from_secs(1), 5);
    assert_eq!(l.emission_interval(), 100 * MS);
    for i in 0..5 {
        assert!(l.try_acquire(1).is_ok(), "burst request {i}");
    }
    assert!(l.try_acquire(1).is_err());
    for _ in 0..20 {
        advance(99 * MS).await;
        assert!(l.try_acquire(1).is_err(), "too early");
        advance(MS).await;
        assert!(l.try_acquire(1).is_ok(), "on time");
        assert!(l.try_acquire(1).is_err(), "only one per interval");
    }
    let s = l.stats();
    assert_eq!((s.permitted, s.rejected, s.waited), (25, 41, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_exact() {
    let l = limiter(4.0, Duration::from_secs(1), 2);
    l.try_acquire(2).unwrap();
    advance(100 * MS).await;
    let err = l.try_acquire(1).unwrap_err();
    assert_eq!(
        err,
        RateLimited::Exhausted {
            retry_after: 150 * MS
        }
    );
    assert_eq!(err.retry_after(), Some(150 * MS));
    advance(150 * MS - Duration::from_nanos(1)).await;
    assert_eq!(
        l.try_acquire(1).unwrap_err().retry_after(),
        Some(Duration::from_nanos(1))
    );
    advance(Duration::from_nanos(1)).await;
    l.try_acquire(1).unwrap();

    let err = l.call(|| async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.retry_after(), Some(250 * MS));
}

#[tokio::test(start_paused = true)]
async fn tokens_per_minute_admit_ten_calls_of_a_hundred_then_refuse() {
    let l = RateLimitConfig::new(1000.0, Duration::from_secs(60))
        .build("openai", &Events::new())
        .unwrap();
    assert_eq!(l.burst(), 1000);
    let ran = AtomicU64::new(0);
    for _ in 0..10 {
        l.call_weighted(100, || async {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
    }
    let err = l
        .call_weighted(100, || async {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(())
        })
        .await
        .unwrap_err();
    assert_eq!(ran.load(Ordering::Relaxed), 10);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(6)));
    // A cheaper call fits sooner: 10 tokens replenish in 600ms.
    advance(600 * MS).await;
    l.try_acquire(10).unwrap();
    assert!(l.try_acquire(1).is_err());
}

#[tokio::test(start_paused = true)]
async fn cost_above_burst_is_refused_at_once_with_its_own_error() {
    let l = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .max_wait(Duration::from_secs(3600))
        .build("api", &Events::new())
        .unwrap();
    assert_eq!(
        l.try_acquire(11),
        Err(RateLimited::CostExceedsBurst {
            cost: 11,
            burst: 10
        })
    );
    let start = Instant::now();
    let err = l.acquire(11).await.unwrap_err();
    assert!(err.is_cost_exceeds_burst());
    assert_eq!(err.retry_after(), None);
    assert_eq!(start.elapsed(), Duration::ZERO, "must not wait");
    let err = l
        .call_weighted(u32::MAX, || async { Ok::<_, ()>(()) })
        .await
        .unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.retry_after(), Some(Duration::MAX));
    // Nothing was consumed: the full burst still passes.
    l.try_acquire(10).unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiting_acquires_wait_exactly_until_their_turns() {
    let l = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build("api", &Events::new())
        .unwrap();
    let start = Instant::now();
    l.acquire(1).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            l.acquire(1).await.unwrap();
            start.elapsed()
        }));
    }
    let mut waited = Vec::new();
    for t in tasks {
        waited.push(t.await.unwrap());
    }
    waited.sort();
    assert_eq!(waited, [100 * MS, 200 * MS, 300 * MS]);
    let s = l.stats();
    assert_eq!((s.permitted, s.waited, s.rejected), (4, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn acquire_rejects_at_once_when_the_wait_would_exceed_max_wait() {
    let l = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .burst(1)
        .max_wait(150 * MS)
        .build("api", &Events::new())
        .unwrap();
    l.try_acquire(1).unwrap();
    l.acquire(1).await.unwrap(); // waits 100ms
    let start = Instant::now();
    // The next turn is 100ms away now: within max_wait. Take it without waiting for it...
    let waiting = l.acquire(1);
    tokio::pin!(waiting);
    assert!(poll_once(waiting.as_mut()).is_none());
    // ...so the one after is 200ms away: beyond max_wait, rejected at once.
    let err = l.acquire(1).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(200 * MS));
    assert_eq!(start.elapsed(), Duration::ZERO);
    waiting.await.unwrap();
    assert_eq!(start.elapsed(), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_acquire_gives_its_slot_back() {
    let l = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build("api", &Events::new())
        .unwrap();
    l.try_acquire(1).unwrap();
    // Two waiters reserve the 100ms and 200ms turns; both give up after 50ms.
    let a = tokio::time::timeout(50 * MS, l.acquire(1));
    let b = tokio::time::timeout(50 * MS, l.acquire(1));
    let (a, b) = tokio::join!(a, b);
    assert!(a.is_err() && b.is_err(), "both timed out");
    // Neither turn is consumed: one request passes at 100ms, the next only at 200ms.
    advance(50 * MS).await;
    l.try_acquire(1).unwrap();
    assert_eq!(l.try_acquire(1).unwrap_err().retry_after(), Some(100 * MS));
    let s = l.stats();
    assert_eq!((s.permitted, s.waited), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_while_it_waits_runs_nothing_and_consumes_nothing() {
    let l = RateLimitConfig::new(1.0, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(5))
        .build("api", &Events::new())
        .unwrap();
    l.try_acquire(1).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    let r = ran.clone();
    let mut call = Box::pin(l.call(|| async move {
        r.fetch_add(1, Ordering::Relaxed);
        Ok::<_, ()>(())
    }));
    assert!(poll_once(call.as_mut()).is_none());
    advance(500 * MS).await;
    drop(call);
    advance(500 * MS).await;
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    l.try_acquire(1).unwrap();
}

#[tokio::test(start_paused = true)]
async fn rejections_emit_events_and_count() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    let l = RateLimitConfig::new(1.0, Duration::from_secs(1))
        .build("api", &events)
        .unwrap();
    l.try_acquire(1).unwrap();
    assert!(l.try_acquire(1).is_err());
    assert!(l.try_acquire(2).is_err());
    for _ in 0..2 {
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::Rejected {
                name: "api".into(),
                policy: PolicyKind::RateLimit
            }
        );
    }
    assert!(rx.try_recv().is_err());
    assert_eq!(l.stats().rejected, 2);
}

/// Many threads at one fixed instant: exactly `burst` succeed, then exactly one per interval.
#[test]
fn concurrent_threads_at_one_instant_get_exactly_the_burst() {
    let l = limiter(1000.0, Duration::from_secs(1), 50);
    let t0 = Instant::now();
    for step in 0..5u32 {
        let now = t0 + MS * (step * 7);
        let granted = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if l.try_acquire_at(1, now).is_ok() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let expected = if step == 0 { 50 } else { 7 };
        assert_eq!(granted.load(Ordering::Relaxed), expected, "step {step}");
    }
}

/// Tasks on a multi-thread runtime, real clock: permits never exceed burst + rate * elapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_never_exceed_burst_plus_rate_times_elapsed() {
    let rate = 2000.0;
    let start = Instant::now();
    let l = limiter(rate, Duration::from_secs(1), 20);
    let granted = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (l, granted, barrier) = (l.clone(), granted.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for i in 0..20_000 {
                if l.try_acquire(1).is_ok() {
                    granted.fetch_add(1, Ordering::Relaxed);
                }
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let granted = granted.load(Ordering::Relaxed);
    assert!(granted >= 20, "the burst passes: {granted}");
    assert!(
        granted as f64 <= 20.0 + rate * elapsed,
        "{granted} permits in {elapsed}s"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_limiter_isolates_keys() {
    let l: KeyedRateLimiter<&str> = RateLimitConfig::new(1.0, Duration::from_secs(1))
        .burst(2)
        .build_keyed("tenants", &Events::new())
        .unwrap();
    l.try_acquire(&"a", 2).unwrap();
    assert_eq!(
        l.try_acquire(&"a", 1),
        Err(RateLimited::Exhausted {
            retry_after: Duration::from_secs(1)
        })
    );
    l.try_acquire(&"b", 1).unwrap();
    l.try_acquire(&"b", 1).unwrap();
    assert!(l.try_acquire(&"b", 1).is_err());
    assert_eq!(
        l.try_acquire(&"c", 3),
        Err(RateLimited::CostExceedsBurst { cost: 3, burst: 2 })
    );
    let err = l
        .call(&"a", || async { Ok::<_, ()>(()) })
        .await
        .unwrap_err();
    assert!(err.is_rate_limited());
    let s = l.stats();
    assert_eq!((s.permitted, s.rejected, s.keys), (3, 4, 2));
}

#[tokio::test(start_paused = true)]
async fn keyed_limiter_stays_within_max_keys_under_a_hundred_thousand_keys() {
    let l: KeyedRateLimiter<u64> = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .burst(1)
        .max_keys(1000)
        .build_keyed("hosts", &Events::new())
        .unwrap();
    // Keys arrive 1000 per 100ms emission interval, so older ones are idle when room runs out.
    for key in 0..100_000u64 {
        if key % 1000 == 0 {
            advance(100 * MS).await;
        }
        l.try_acquire(&key, 1).unwrap();
        assert!(l.len() <= 1000);
    }
    assert_eq!(l.len(), 1000);
    // Eviction changed no decision: the latest keys are still limited.
    assert!(l.try_acquire(&99_999, 1).is_err());
    advance(100 * MS).await;
    l.retain_recent();
    assert_eq!(l.len(), 0);
    assert!(l.is_empty());
}

#[tokio::test(start_paused = true)]
async fn keyed_limiter_full_of_active_keys_rejects_new_keys_and_keeps_limiting_old_ones() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    let l: KeyedRateLimiter<u64> = RateLimitConfig::new(1.0, Duration::from_secs(1))
        .burst(1)
        .max_keys(100)
        .build_keyed("hosts", &events)
        .unwrap();
    for key in 0..100 {
        l.try_acquire(&key, 1).unwrap();
    }
    let mut too_many = 0;
    for key in 100..100_000u64 {
        match l.try_acquire(&key, 1) {
            Err(RateLimited::TooManyKeys {
                max_keys: 100,
                retry_after,
            }) => {
                assert_eq!(retry_after, Duration::from_secs(1));
                too_many += 1;
            }
            other => panic!("key {key}: {other:?}"),
        }
    }
    assert_eq!(too_many, 99_900);
    assert_eq!(l.len(), 100);
    // The held keys keep their exact limits.
    assert!(matches!(
        l.try_acquire(&5, 1),
        Err(RateLimited::Exhausted { .. })
    ));
    assert!(matches!(
        rx.try_recv().unwrap(),
        Event::Rejected {
            policy: PolicyKind::RateLimit,
            ..
        }
    ));
    // Once the first key is idle, new keys get its slot.
    advance(Duration::from_secs(1)).await;
    l.try_acquire(&100_000, 1).unwrap();
    assert!(l.len() <= 100);
}

#[tokio::test(start_paused = true)]
async fn keyed_waiting_acquire_waits_its_turn_and_a_dropped_one_gives_it_back() {
    let l: KeyedRateLimiter<u32> = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build_keyed("k", &Events::new())
        .unwrap();
    let start = Instant::now();
    l.acquire(&1, 1).await.unwrap();
    l.acquire(&1, 1).await.unwrap();
    assert_eq!(start.elapsed(), 100 * MS);
    // A waiter for the 200ms turn gives up at 150ms.
    assert!(
        tokio::time::timeout(50 * MS, l.acquire(&1, 1))
            .await
            .is_err()
    );
    advance(50 * MS).await;
    l.try_acquire(&1, 1).unwrap();
    assert_eq!(l.stats().waited, 1);
}

#[tokio::test(start_paused = true)]
async fn layer_rejects_over_the_limit_and_counts_by_cost_function() {
    let l = limiter(10.0, Duration::from_secs(1), 10);
    let svc = tower::service_fn(|req: u32| async move { Ok::<_, ()>(req * 2) });
    let limited = RateLimitLayer::with_cost(l.clone(), |req: &u32| *req);
    let svc = tower_layer::Layer::layer(&limited, svc);
    assert_eq!(svc.clone().oneshot(6).await.unwrap(), 12);
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), 8);
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { ref name, retry_after } if &**name == "api" && retry_after == 100 * MS)
    );
    let err = svc.oneshot(11).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::MAX));
}

#[tokio::test(start_paused = true)]
async fn layer_waits_for_the_turn_before_calling_the_inner_service() {
    let l = RateLimitConfig::new(10.0, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build("api", &Events::new())
        .unwrap();
    let start = Instant::now();
    // The inner service notes when it is called, not when its future is polled.
    let svc = tower::service_fn(move |_req: ()| {
        let called_at = start.elapsed();
        async move { Ok::<_, ()>(called_at) }
    });
    let svc = tower_layer::Layer::layer(&RateLimitLayer::new(l.clone()), svc);
    assert_eq!(svc.clone().oneshot(()).await.unwrap(), Duration::ZERO);
    assert_eq!(svc.clone().oneshot(()).await.unwrap(), 100 * MS);
    // A response future dropped while waiting gives its turn back.
    let pending = svc.clone().oneshot(());
    assert!(tokio::time::timeout(50 * MS, pending).await.is_err());
    advance(50 * MS).await;
    l.try_acquire(1).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over any sequence of (advance, cost) steps, admitted units never exceed burst + rate * elapsed.
    #[test]
    fn admitted_units_never_exceed_burst_plus_rate_times_elapsed(
        rate in 1u32..200,
        per_ms in 1u64..2000,
        burst in 1u32..100,
        steps in proptest::collection::vec((0u64..500, 0u32..120), 1..150),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let per = Duration::from_millis(per_ms);
            let l = limiter(f64::from(rate), per, burst);
            let start = Instant::now();
            let mut admitted = 0u64;
            for (advance_ms, cost) in steps {
                advance(Duration::from_millis(advance_ms)).await;
                if l.try_acquire(cost).is_ok() {
                    admitted += u64::from(cost);
                }
                let elapsed = start.elapsed().as_secs_f64();
                let bound = f64::from(burst) + f64::from(rate) * elapsed / per.as_secs_f64();
                prop_assert!(admitted as f64 <= bound + 1e-9, "{} > {}", admitted, bound);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn charge_refund_limit_and_pause_adjust_capacity_after_the_fact() {
    // 600 units a minute: one every 100 ms, all 600 at once from full.
    let limiter = RateLimitConfig::new(600.0, Duration::from_secs(60))
        .build("tokens", &Events::new())
        .unwrap();
    limiter.try_acquire(100).unwrap();
    assert_eq!(limiter.available(), 500);
    // The answer said 250 were used: 150 more are charged.
    limiter.charge(150);
    assert_eq!(limiter.available(), 350);
    // Another said only 20 of 100 were used: 80 come back.
    limiter.try_acquire(100).unwrap();
    limiter.refund(80);
    assert_eq!(limiter.available(), 330);
    // A refund never makes more than the burst available.
    limiter.refund(10_000);
    assert_eq!(limiter.available(), 600);

    // The server says 40 are left: no more than 40 pass now; a higher report raises nothing.
    limiter.limit_available(40);
    assert_eq!(limiter.available(), 40);
    limiter.limit_available(500);
    assert_eq!(limiter.available(), 40);
    assert!(limiter.try_acquire(41).is_err());
    limiter.try_acquire(40).unwrap();

    // A 429 with Retry-After: 5 s admits nothing for 5 s, then refills at the rate.
    limiter.refund(600);
    limiter.pause_for(Duration::from_secs(5));
    // A shorter pause does not shorten the one in force.
    limiter.pause_for(Duration::from_secs(1));
    assert_eq!(limiter.available(), 0);
    let err = limiter.try_acquire(1).unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert_eq!(limiter.available(), 0);
    tokio::time::advance(Duration::from_millis(301)).await;
    assert_eq!(limiter.available(), 4);
}
