//! The pipeline: policies stacked in the documented order, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rampart_resilience::breaker::{BreakerConfig, BreakerState};
use rampart_resilience::bulkhead::BulkheadConfig;
use rampart_resilience::hedge::HedgeConfig;
use rampart_resilience::pipeline::Pipeline;
use rampart_resilience::rate_limit::RateLimitConfig;
use rampart_resilience::retry::{Jitter, RetryConfig};
use rampart_resilience::timeout::TimeoutConfig;
use rampart_resilience::{Events, Outcome};
use tokio::time::Instant;

fn retry(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        base_delay: Duration::from_millis(10),
        jitter: Jitter::None,
        ..RetryConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn retries_a_failure_and_returns_the_later_success() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .retry(retry(3).build("p", &ev).unwrap())
        .breaker(BreakerConfig::default().build("p", &ev).unwrap())
        .build();
    let calls = AtomicU32::new(0);
    let v = p
        .call(|| async {
            if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                Err("blip")
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let stats = p.breaker().unwrap().stats();
    assert_eq!((stats.failed, stats.successful), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_not_retried_and_the_call_never_runs() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .retry(retry(5).build("p", &ev).unwrap())
        .breaker(
            BreakerConfig::consecutive(3, Duration::from_secs(30))
                .build("p", &ev)
                .unwrap(),
        )
        .build();
    let calls = AtomicU32::new(0);
    let err = p
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("down")
        })
        .await
        .unwrap_err();
    // Three real attempts open the breaker; the fourth attempt is rejected and not retried.
    assert!(err.is_breaker_open(), "{err:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(p.breaker().unwrap().state(), BreakerState::Open);
    assert_eq!(p.retry().unwrap().stats().attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_timed_out_and_timeouts_count_against_the_breaker() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .retry(retry(2).build("p", &ev).unwrap())
        .breaker(
            BreakerConfig::consecutive(2, Duration::from_secs(30))
                .build("p", &ev)
                .unwrap(),
        )
        .timeout(
            TimeoutConfig {
                timeout: Duration::from_millis(100),
            }
            .build("p", &ev)
            .unwrap(),
        )
        .build();
    let start = Instant::now();
    let err = p
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<(), &str>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // Two attempts of 100 ms and one 10 ms backoff.
    assert_eq!(start.elapsed(), Duration::from_millis(210));
    assert_eq!(p.breaker().unwrap().state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stops_retries_that_could_not_finish() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .deadline(Duration::from_millis(250))
        .retry(
            RetryConfig {
                max_attempts: 100,
                base_delay: Duration::from_millis(100),
                multiplier: 1.0,
                jitter: Jitter::None,
                ..RetryConfig::default()
            }
            .build("p", &ev)
            .unwrap(),
        )
        .build();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = p
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("down")
        })
        .await
        .unwrap_err();
    assert!(
        start.elapsed() <= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "attempts at 0, 100 and 200 ms"
    );
    assert!(err.is_inner() || err.is_deadline_exceeded(), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_attempt_is_retried_after_its_hint_and_not_counted_by_the_breaker() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .retry(retry(3).build("p", &ev).unwrap())
        .breaker(
            BreakerConfig::consecutive(1, Duration::from_secs(30))
                .build("p", &ev)
                .unwrap(),
        )
        .rate_limiter(
            RateLimitConfig::new(1.0, Duration::from_secs(1))
                .build("api", &ev)
                .unwrap(),
        )
        .build();
    p.call(|| async { Ok::<(), &str>(()) }).await.unwrap();
    let start = Instant::now();
    p.call(|| async { Ok::<(), &str>(()) }).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "waited for the limiter's retry_after"
    );
    assert_eq!(p.breaker().unwrap().state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_rejects_without_tripping_the_breaker() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .breaker(
            BreakerConfig::consecutive(1, Duration::from_secs(30))
                .build("p", &ev)
                .unwrap(),
        )
        .bulkhead(
            BulkheadConfig {
                max_concurrent: 1,
                ..BulkheadConfig::default()
            }
            .build("db", &ev)
            .unwrap(),
        )
        .build();
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let holder = {
        let (p, release, started) = (p.clone(), release.clone(), started.clone());
        tokio::spawn(async move {
            p.call(|| async {
                started.notify_one();
                release.notified().await;
                Ok::<(), &str>(())
            })
            .await
        })
    };
    started.notified().await;
    let err = p.call(|| async { Ok::<(), &str>(()) }).await.unwrap_err();
    assert!(err.is_bulkhead_full(), "{err:?}");
    assert_eq!(p.breaker().unwrap().state(), BreakerState::Closed);
    release.notify_one();
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_classifier_makes_an_ok_503_a_retried_failure() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .retry(retry(3).build("p", &ev).unwrap())
        .breaker(BreakerConfig::default().build("p", &ev).unwrap())
        .build();
    let calls = AtomicU32::new(0);
    let status = p
        .call_classified(
            || async {
                Ok::<u16, &str>(if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                    503
                } else {
                    200
                })
            },
            |r: &Result<u16, &str>| match r {
                Ok(s) if *s >= 500 => Outcome::Failure,
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure,
            },
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(p.breaker().unwrap().stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_and_hedge_together_hedge_a_slow_attempt_and_retry_a_failed_one() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .retry(retry(2).build("p", &ev).unwrap())
        .hedge(
            HedgeConfig {
                delay: Some(Duration::from_millis(50)),
                percentile: None,
                max_hedge_ratio: 1.0,
                ..HedgeConfig::default()
            }
            .build("p", &ev)
            .unwrap(),
        )
        .build();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let v = p
        .call(|| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                match n {
                    // The first attempt is slow and fails, its hedge (started at 50 ms) fails at
                    // once; with both failed, the retry starts a third attempt, which succeeds.
                    0 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err("slow failure")
                    }
                    1 => Err("failed hedge"),
                    _ => Ok(n),
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    // 100 ms for the slow attempt, then the 10 ms backoff; the successful retry is instant.
    assert_eq!(start.elapsed(), Duration::from_millis(110));
    assert_eq!(p.retry().unwrap().stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn time_queued_in_the_bulkhead_does_not_count_as_a_slow_call() {
    let ev = Events::new();
    let p = Pipeline::builder("p")
        .breaker(
            BreakerConfig {
                slow_call_duration: Some(Duration::from_millis(50)),
                slow_call_rate: 0.5,
                minimum_calls: 2,
                window_size: 2,
                ..BreakerConfig::default()
            }
            .build("p", &ev)
            .unwrap(),
        )
        .bulkhead(
            BulkheadConfig {
                max_concurrent: 1,
                max_wait: Duration::from_secs(1),
                ..BulkheadConfig::default()
            }
            .build("db", &ev)
            .unwrap(),
        )
        .build();
    // Two calls of 40 ms each through a bulkhead of one: the second queues 40 ms, then runs 40 ms.
    // Neither call is slow; 80 ms from start to end would be, had the queueing counted.
    let call = || async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<(), &str>(())
    };
    let (a, b) = tokio::join!(p.call(call), p.call(call));
    a.unwrap();
    b.unwrap();
    let stats = p.breaker().unwrap().stats();
    assert_eq!(stats.slow, 0);
    assert_eq!(stats.state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_before_waiting_on_the_rate_limiter() {
    let ev = Events::new();
    let breaker = BreakerConfig::default().build("p", &ev).unwrap();
    let limiter = RateLimitConfig::new(1.0, Duration::from_secs(10))
        .max_wait(Duration::from_secs(60))
        .build("api", &ev)
        .unwrap();
    let p = Pipeline::builder("p")
        .breaker(breaker.clone())
        .rate_limiter(limiter.clone())
        .build();
    breaker.force_open();
    let start = Instant::now();
    let err = p.call(|| async { Ok::<(), &str>(()) }).await.unwrap_err();
    assert!(err.is_breaker_open());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        limiter.stats().permitted,
        0,
        "no rate-limit unit spent on a rejected call"
    );
    assert_eq!(breaker.stats().rejected, 1);
}
