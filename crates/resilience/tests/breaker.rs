//! Circuit breaker behaviour through the public API, on tokio's paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rampart_resilience::breaker::{
    BreakerConfig, BreakerLayer, BreakerState, CircuitBreaker, WindowKind,
};
use rampart_resilience::{Error, Event, Events, Outcome};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

fn breaker(config: BreakerConfig) -> CircuitBreaker {
    config.build("test", &Events::new()).unwrap()
}

async fn fail(b: &CircuitBreaker) -> Error<&'static str> {
    b.call(|| async { Err::<(), _>("down") }).await.unwrap_err()
}

async fn succeed(b: &CircuitBreaker) -> Result<(), Error<&'static str>> {
    b.call(|| async { Ok(()) }).await
}

/// Waits (on paused time, so without real waiting) for the breaker's next transition to `to`.
async fn next_transition(rx: &mut UnboundedReceiver<Event>, to: BreakerState) {
    loop {
        match rx.recv().await.expect("event stream ended") {
            Event::BreakerStateChanged { to: got, .. } if got == to => return,
            _ => {}
        }
    }
}

fn count_config() -> BreakerConfig {
    BreakerConfig {
        window: WindowKind::Count,
        window_size: 10,
        minimum_calls: 10,
        failure_rate: 0.5,
        wait_in_open: Duration::from_secs(10),
        half_open_calls: 3,
        ..BreakerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_failure_rate_reaches_threshold() {
    let b = breaker(count_config());
    for _ in 0..5 {
        succeed(&b).await.unwrap();
    }
    for _ in 0..4 {
        assert!(fail(&b).await.is_inner());
    }
    // 9 calls: below minimum_calls, not judged.
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(fail(&b).await.is_inner());
    // 10 calls, 5 failed: 50 % reaches the threshold.
    assert_eq!(b.state(), BreakerState::Open);
    let ran = AtomicUsize::new(0);
    let err = b
        .call(|| async {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok::<_, &str>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_breaker_open());
    assert_eq!(
        ran.load(Ordering::Relaxed),
        0,
        "an open breaker must not run the call"
    );
    let stats = b.stats();
    assert_eq!(
        (stats.successful, stats.failed, stats.rejected, stats.opened),
        (5, 5, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn failures_below_the_rate_keep_it_closed_as_the_window_slides() {
    let b = breaker(count_config());
    // 4 failures in every 10 calls, for 100 calls: 40 % never reaches 50 %.
    for i in 0..100 {
        if i % 10 < 4 {
            fail(&b).await;
        } else {
            succeed(&b).await.unwrap();
        }
        assert_eq!(b.state(), BreakerState::Closed, "call {i}");
    }
    assert_eq!(b.stats().failure_rate, Some(0.4));
}

#[tokio::test(start_paused = true)]
async fn half_open_after_the_wait_then_closes_on_successful_trials() {
    let b = breaker(count_config());
    let (_sub, mut rx) = b.events().channel();
    for _ in 0..10 {
        fail(&b).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
    let opened_at = Instant::now();
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    assert_eq!(opened_at.elapsed(), Duration::from_secs(10));
    for _ in 0..3 {
        succeed(&b).await.unwrap();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().window_calls, 0, "closing starts a fresh window");
}

#[tokio::test(start_paused = true)]
async fn failed_trials_reopen_with_a_growing_wait() {
    let b = breaker(BreakerConfig {
        wait_in_open: Duration::from_secs(1),
        wait_in_open_multiplier: 2.0,
        max_wait_in_open: Duration::from_secs(5),
        half_open_calls: 1,
        ..count_config()
    });
    let (_sub, mut rx) = b.events().channel();
    for _ in 0..10 {
        fail(&b).await;
    }
    let mut waits = Vec::new();
    for _ in 0..5 {
        let opened = Instant::now();
        next_transition(&mut rx, BreakerState::HalfOpen).await;
        waits.push(opened.elapsed().as_secs());
        fail(&b).await;
        assert_eq!(b.state(), BreakerState::Open);
    }
    assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    // A success closes it, and the next opening waits the base time again.
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..10 {
        fail(&b).await;
    }
    let opened = Instant::now();
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    assert_eq!(opened.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn consecutive_mode_opens_after_five_and_recovers_after_thirty_seconds() {
    let b = breaker(BreakerConfig::consecutive(5, Duration::from_secs(30)));
    let (_sub, mut rx) = b.events().channel();
    for _ in 0..4 {
        fail(&b).await;
    }
    succeed(&b).await.unwrap();
    for _ in 0..4 {
        fail(&b).await;
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "a success resets the run of failures"
    );
    fail(&b).await;
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(29_999)).await;
    assert!(succeed(&b).await.unwrap_err().is_breaker_open());
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    // In consecutive mode the first failed trial reopens at once.
    fail(&b).await;
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker_though_they_succeed() {
    let b = breaker(BreakerConfig {
        slow_call_duration: Some(Duration::from_millis(100)),
        slow_call_rate: 0.5,
        ..count_config()
    });
    for i in 0..10 {
        let delay = if i % 2 == 0 { 200 } else { 10 };
        b.call(|| async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok::<_, &str>(())
        })
        .await
        .unwrap();
    }
    assert_eq!(b.state(), BreakerState::Open);
    let stats = b.stats();
    assert_eq!((stats.slow, stats.failed), (5, 0));
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_failures_older_than_the_window() {
    let b = breaker(BreakerConfig {
        window: WindowKind::Time,
        window_duration: Duration::from_secs(10),
        minimum_calls: 4,
        ..count_config()
    });
    for _ in 0..3 {
        fail(&b).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    // The three old failures have left the window: 1 failure in 4 calls.
    for _ in 0..3 {
        succeed(&b).await.unwrap();
    }
    fail(&b).await;
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().window_calls, 4);
    // Within the window the failures count: 3 of 6 now.
    fail(&b).await;
    fail(&b).await;
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn classifier_counts_a_503_as_failure_and_ignores_not_found() {
    let b = breaker(count_config());
    let classify = |r: &Result<u16, &str>| match r {
        Ok(503) => Outcome::Failure,
        Ok(404) => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    for _ in 0..20 {
        b.call_classified(|| async { Ok::<u16, &str>(404) }, classify)
            .await
            .unwrap();
    }
    assert_eq!(b.stats().window_calls, 0);
    assert_eq!(b.stats().ignored, 20);
    for _ in 0..10 {
        let status = b
            .call_classified(|| async { Ok::<u16, &str>(503) }, classify)
            .await
            .unwrap();
        assert_eq!(status, 503, "the result itself passes through unchanged");
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permitted_calls_to_concurrent_tasks() {
    let b = breaker(count_config());
    let (_sub, mut rx) = b.events().channel();
    for _ in 0..10 {
        fail(&b).await;
    }
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (b, release, started) = (b.clone(), release.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            b.call(|| async {
                started.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Ok::<_, &str>(())
            })
            .await
        }));
    }
    // Let every task reach the breaker.
    while started.load(Ordering::SeqCst) < 3 || b.stats().rejected < 47 {
        tokio::task::yield_now().await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 3);
    release.notify_waiters();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn half_open_admits_exactly_the_permitted_calls_across_threads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let b = breaker(BreakerConfig {
        half_open_calls: 7,
        ..count_config()
    });
    rt.block_on(async {
        let (_sub, mut rx) = b.events().channel();
        for _ in 0..10 {
            fail(&b).await;
        }
        next_transition(&mut rx, BreakerState::HalfOpen).await;
    });
    for _round in 0..20 {
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let admitted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (b, barrier) = (&b, barrier.clone());
                    s.spawn(move || {
                        barrier.wait();
                        let mut held = Vec::new();
                        for _ in 0..100 {
                            if let Some(p) = b.try_acquire() {
                                held.push(p);
                            }
                        }
                        let n = held.len();
                        // Hold until everyone has tried, then give the slots back unused.
                        barrier.wait();
                        drop(held);
                        n
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        });
        assert_eq!(admitted, 7);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }
}

#[tokio::test(start_paused = true)]
async fn a_trial_call_dropped_midway_gives_its_slot_back() {
    let b = breaker(BreakerConfig {
        half_open_calls: 1,
        ..count_config()
    });
    let (_sub, mut rx) = b.events().channel();
    for _ in 0..10 {
        fail(&b).await;
    }
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    let hung = b.call(std::future::pending::<Result<(), &str>>);
    // Cancel it midway: the first poll takes the only slot, the timeout drops it.
    assert!(
        tokio::time::timeout(Duration::from_millis(5), hung)
            .await
            .is_err()
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b).await.expect("the slot came back");
    assert_eq!(b.state(), BreakerState::Closed);
    let stats = b.stats();
    assert_eq!(stats.rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn forced_open_and_disabled_override_until_reset() {
    let b = breaker(count_config());
    b.force_open();
    assert!(succeed(&b).await.unwrap_err().is_breaker_open());
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        b.state(),
        BreakerState::ForcedOpen,
        "no timer ends a forced open"
    );
    b.disable();
    for _ in 0..50 {
        assert!(fail(&b).await.is_inner());
    }
    assert_eq!(b.state(), BreakerState::Disabled);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().window_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn emits_each_transition_once_in_order() {
    let events = Events::new();
    let b = BreakerConfig {
        half_open_calls: 1,
        ..count_config()
    }
    .build("orders", &events)
    .unwrap();
    let (_sub, mut rx) = events.channel();
    for _ in 0..10 {
        fail(&b).await;
    }
    next_transition(&mut rx, BreakerState::HalfOpen).await;
    succeed(&b).await.unwrap();
    drop(_sub);
    let mut seen = vec![];
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    assert_eq!(
        seen,
        vec![Event::BreakerStateChanged {
            name: "orders".into(),
            from: BreakerState::HalfOpen,
            to: BreakerState::Closed
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn works_as_a_tower_layer_with_a_status_classifier() {
    use tower::{ServiceBuilder, ServiceExt};
    let b = breaker(count_config());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(
            BreakerLayer::new(b.clone()).with_classifier(|r: &Result<u16, &str>| {
                if matches!(r, Ok(s) if *s >= 500) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }),
        )
        .service_fn(move |status: u16| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move { Ok::<u16, &str>(status) }
        });
    for _ in 0..10 {
        assert_eq!(svc.clone().oneshot(503).await.unwrap(), 503);
    }
    assert_eq!(b.state(), BreakerState::Open);
    let err = svc.clone().oneshot(200).await.unwrap_err();
    assert!(err.is_breaker_open());
    assert_eq!(calls.load(Ordering::Relaxed), 10);
}

#[test]
fn opens_lazily_without_a_runtime_and_reads_the_clock_only_then() {
    let b = breaker(BreakerConfig {
        wait_in_open: Duration::from_millis(1),
        ..count_config()
    });
    for _ in 0..10 {
        let p = b.try_acquire().unwrap();
        p.record(Outcome::Failure);
    }
    assert_eq!(b.state(), BreakerState::Open);
    // No runtime armed a timer, so the first call after the wait moves it to half-open itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let permit = loop {
        if let Some(p) = b.try_acquire() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "never left open");
        std::thread::yield_now();
    };
    assert_eq!(b.state(), BreakerState::HalfOpen);
    permit.record(Outcome::Success);
}
