//! Retries and retry budgets through the public API, on paused time.
// Test helpers outside `#[test]` functions unwrap too; clippy allows it only inside them.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rampart_resilience::retry::{
    Jitter, Retry, RetryBudget, RetryBudgetConfig, RetryConfig, RetryDecision, RetryLayer,
    RetryRejections, RetryStats, retry_rejections,
};
use rampart_resilience::timeout::{Deadline, TimeoutConfig, TimeoutLayer};
use rampart_resilience::{Error, Event, Events, PolicyKind};
use tokio::time::{Instant, sleep};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Base 100ms, doubling, no jitter: delays 100ms, 200ms, 400ms, ...
fn config(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        jitter: Jitter::None,
        ..RetryConfig::default()
    }
}

fn retry(max_attempts: u32) -> Retry {
    config(max_attempts).build("api", &Events::new()).unwrap()
}

fn budget(ratio: f64, min_per_second: u32, window: Duration, events: &Events) -> RetryBudget {
    RetryBudgetConfig {
        ratio,
        min_retries_per_second: min_per_second,
        window,
    }
    .build("fleet", events)
    .unwrap()
}

/// Records when each attempt started (virtual time since the test began) and fails the first
/// `failures` attempts with the attempt number.
#[derive(Clone)]
struct Flaky {
    start: Instant,
    failures: u32,
    started: Arc<Mutex<Vec<Duration>>>,
}

impl Flaky {
    fn new(failures: u32) -> Flaky {
        Flaky {
            start: Instant::now(),
            failures,
            started: Arc::default(),
        }
    }

    fn attempt(&self) -> impl Future<Output = Result<u32, u32>> + use<> {
        let mut started = self.started.lock().unwrap();
        started.push(self.start.elapsed());
        let n = started.len() as u32;
        let failures = self.failures;
        async move { if n <= failures { Err(n) } else { Ok(n) } }
    }

    fn starts(&self) -> Vec<Duration> {
        self.started.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_sleeps_between_attempts_on_virtual_time() {
    let flaky = Flaky::new(u32::MAX);
    let r = retry(4);
    let err = r.call(|| flaky.attempt()).await.unwrap_err();
    assert_eq!(err.into_inner(), Some(4), "the last attempt's error");
    assert_eq!(flaky.starts(), [ms(0), ms(100), ms(300), ms(700)]);
    assert_eq!(flaky.start.elapsed(), ms(700));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error() {
    let flaky = Flaky::new(u32::MAX);
    let r = retry(3);
    let err = r.call(|| flaky.attempt()).await.unwrap_err();
    assert!(matches!(err, Error::Inner(3)), "{err:?}");
    assert_eq!(
        r.stats(),
        RetryStats {
            calls: 1,
            attempts: 3,
            retries: 2,
            successes_after_retry: 0,
            exhausted: 1,
            budget_rejections: 0,
        }
    );
    let once = retry(1);
    assert!(matches!(
        once.call(|| flaky.attempt()).await,
        Err(Error::Inner(4))
    ));
    assert_eq!(once.stats().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn succeeds_after_a_retry_and_counts_it() {
    let flaky = Flaky::new(1);
    let r = retry(3);
    assert_eq!(r.call(|| flaky.attempt()).await.unwrap(), 2);
    let first_time = Flaky::new(0);
    assert_eq!(r.call(|| first_time.attempt()).await.unwrap(), 1);
    let stats = r.stats();
    assert_eq!((stats.calls, stats.attempts, stats.retries), (2, 3, 1));
    assert_eq!(stats.successes_after_retry, 1);
    assert_eq!(stats.exhausted, 0);
}

#[tokio::test(start_paused = true)]
async fn call_with_retries_ok_results_and_returns_unretryable_errors() {
    let r = retry(5);
    let statuses = Mutex::new(vec![200, 503, 503]);
    let decide = |result: &Result<u16, &str>| match result {
        Ok(503) => RetryDecision::Retry,
        Ok(_) => RetryDecision::Return,
        Err(e) if e.starts_with("not found") => RetryDecision::Return,
        Err(_) => RetryDecision::Retry,
    };
    let status = r
        .call_with(
            || {
                let status = statuses.lock().unwrap().pop();
                async move { status.ok_or("empty") }
            },
            decide,
        )
        .await;
    assert_eq!(status.unwrap(), 200);

    let attempts = AtomicU32::new(0);
    let err = r
        .call_with(
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err::<u16, _>("not found: /x") }
            },
            decide,
        )
        .await
        .unwrap_err();
    assert_eq!(err.into_inner(), Some("not found: /x"));
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_retry_after_hint_longer_than_the_backoff() {
    let flaky = Flaky::new(2);
    let r = retry(3);
    // First failure asks for 2s; the second asks for 50ms, less than the 200ms backoff.
    let decide = |result: &Result<u32, u32>| match result {
        Err(1) => RetryDecision::RetryAfter(ms(2000)),
        Err(_) => RetryDecision::RetryAfter(ms(50)),
        Ok(_) => RetryDecision::Return,
    };
    assert_eq!(r.call_with(|| flaky.attempt(), decide).await.unwrap(), 3);
    assert_eq!(flaky.starts(), [ms(0), ms(2000), ms(2200)]);
}

#[tokio::test(start_paused = true)]
async fn gives_up_at_once_when_a_retry_after_hint_exceeds_max_delay() {
    let flaky = Flaky::new(u32::MAX);
    let r = retry(3);
    let decide = |_: &Result<u32, u32>| RetryDecision::RetryAfter(Duration::from_secs(11));
    let err = r.call_with(|| flaky.attempt(), decide).await.unwrap_err();
    assert!(matches!(err, Error::Inner(1)));
    assert_eq!(flaky.start.elapsed(), Duration::ZERO);
    assert_eq!(r.stats().exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn call_flat_retries_rate_limits_after_their_hint_and_returns_breaker_rejections() {
    let r = retry(3);
    let start = Instant::now();
    let attempts = AtomicU32::new(0);
    let result = r
        .call_flat(|| {
            let n = attempts.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 0 {
                    Err(Error::<&str>::RateLimited {
                        name: "rl".into(),
                        retry_after: ms(750),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(start.elapsed(), ms(750));

    let attempts = AtomicU32::new(0);
    let err = r
        .call_flat_with(
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err::<(), _>(Error::<&str>::BreakerOpen { name: "b".into() }) }
            },
            retry_rejections,
        )
        .await
        .unwrap_err();
    // Not wrapped again: the breaker's own rejection, after one attempt.
    assert!(err.is_breaker_open());
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn events_announce_each_retry_with_its_attempt_and_delay() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    let r = config(3).build("api", &events).unwrap();
    let flaky = Flaky::new(u32::MAX);
    let _ = r.call(|| flaky.attempt()).await;
    let mut seen = Vec::new();
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    assert_eq!(
        seen,
        [
            Event::Retry {
                name: "api".into(),
                attempt: 2,
                delay: ms(100)
            },
            Event::Retry {
                name: "api".into(),
                attempt: 3,
                delay: ms(200)
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_shared_budget_stops_retries_once_spent_and_allows_them_after_the_window() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    // No ratio, 1 retry per second over 2s: two retries per window, whoever makes them.
    let shared = budget(0.0, 1, Duration::from_secs(2), &events);
    let a = retry(3).with_budget(shared.clone());
    let b = config(3)
        .build("other", &events)
        .unwrap()
        .with_budget(shared.clone());

    let flaky = Flaky::new(u32::MAX);
    assert!(matches!(
        a.call(|| flaky.attempt()).await,
        Err(Error::Inner(3))
    ));
    assert_eq!(shared.stats().withdrawals, 2);
    while rx.try_recv().is_ok() {}

    let flaky = Flaky::new(u32::MAX);
    let err = b.call(|| flaky.attempt()).await.unwrap_err();
    match err {
        Error::BudgetExhausted { name, last } => {
            assert_eq!(&*name, "fleet");
            assert!(matches!(*last, Error::Inner(1)), "{last:?}");
        }
        other => panic!("expected the budget to refuse, got {other:?}"),
    }
    assert_eq!(flaky.starts().len(), 1);
    assert_eq!(
        rx.try_recv().unwrap(),
        Event::Rejected {
            name: "fleet".into(),
            policy: PolicyKind::Budget
        }
    );
    assert_eq!(b.stats().budget_rejections, 1);
    assert_eq!(b.stats().exhausted, 1);

    // A whole window later the spent retries no longer count.
    sleep(Duration::from_secs(2)).await;
    let flaky = Flaky::new(u32::MAX);
    assert!(matches!(
        b.call(|| flaky.attempt()).await,
        Err(Error::Inner(3))
    ));
    let stats = shared.stats();
    assert_eq!(
        (stats.deposits, stats.withdrawals, stats.rejections),
        (3, 4, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn deposits_earn_retries_at_the_budget_ratio() {
    let shared = budget(0.5, 0, Duration::from_secs(10), &Events::new());
    let r = retry(2).with_budget(shared.clone());
    for _ in 0..2 {
        let ok = Flaky::new(0);
        r.call(|| ok.attempt()).await.unwrap();
    }
    // Each failing call deposits too: 3 requests allow 1.5 retries, 4 allow 2, but 5 allow
    // only 2.5 where a third retry needs 3.
    for expect_retry in [true, true, false] {
        let flaky = Flaky::new(u32::MAX);
        let result = r.call(|| flaky.attempt()).await;
        assert_eq!(flaky.starts().len() == 2, expect_retry, "{result:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_prevents_an_attempt_that_cannot_start_in_time() {
    let flaky = Flaky::new(u32::MAX);
    let r = retry(10);
    // Attempts at 0 and 100ms; the next would start at 300ms, past the 250ms deadline.
    let err = Deadline::after(ms(250))
        .scope(r.call(|| flaky.attempt()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inner(2)), "{err:?}");
    assert_eq!(flaky.starts(), [ms(0), ms(100)]);
    assert_eq!(flaky.start.elapsed(), ms(100), "gave up without sleeping");
    assert_eq!(r.stats().exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_would_start_with_less_than_min_attempt_time_left_is_not_started() {
    let flaky = Flaky::new(u32::MAX);
    let r = RetryConfig {
        min_attempt_time: ms(60),
        ..config(10)
    }
    .build("api", &Events::new())
    .unwrap();
    // Attempts at 0 and 100ms; the next would start at 300ms with 50ms left of the 350ms
    // deadline, less than the 60ms an attempt needs: give up at 100ms.
    let err = Deadline::after(ms(350))
        .scope(r.call(|| flaky.attempt()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inner(2)), "{err:?}");
    assert_eq!(flaky.starts(), [ms(0), ms(100)]);
    // Without the minimum, the third attempt starts at 300ms.
    let flaky = Flaky::new(u32::MAX);
    let _ = Deadline::after(ms(350))
        .scope(retry(10).call(|| flaky.attempt()))
        .await;
    assert_eq!(flaky.starts(), [ms(0), ms(100), ms(300)]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_runs_no_attempt() {
    let flaky = Flaky::new(0);
    let r = retry(3);
    let deadline = Deadline::after(ms(10));
    sleep(ms(10)).await;
    let err = deadline
        .scope(r.call(|| flaky.attempt()))
        .await
        .unwrap_err();
    assert!(err.is_deadline_exceeded());
    assert!(flaky.starts().is_empty());
    assert_eq!(r.stats().attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_new_attempts() {
    let flaky = Flaky::new(u32::MAX);
    let r = RetryConfig {
        max_elapsed: Some(ms(300)),
        ..config(10)
    }
    .build("api", &Events::new())
    .unwrap();
    let err = r.call(|| flaky.attempt()).await.unwrap_err();
    // 0, 100ms, 300ms (exactly at the limit); 700ms would be past it.
    assert!(matches!(err, Error::Inner(3)), "{err:?}");
    assert_eq!(flaky.starts(), [ms(0), ms(100), ms(300)]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_keeps_delays_under_the_exponential_ceiling() {
    let flaky = Flaky::new(u32::MAX);
    let r = RetryConfig {
        max_attempts: 6,
        ..RetryConfig::default()
    }
    .build("api", &Events::new())
    .unwrap();
    let _ = r.call(|| flaky.attempt()).await;
    let starts = flaky.starts();
    for (n, pair) in starts.windows(2).enumerate() {
        let delay = pair[1] - pair[0];
        assert!(
            delay <= ms(100) * 2u32.pow(n as u32),
            "retry {n}: {delay:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_mid_backoff_leaves_stats_and_budget_consistent() {
    let shared = budget(0.0, 1, Duration::from_secs(10), &Events::new());
    let r = retry(3).with_budget(shared.clone());
    let flaky = Flaky::new(u32::MAX);
    {
        let mut call = pin!(r.call(|| flaky.attempt()));
        let mut cx = Context::from_waker(Waker::noop());
        // The first attempt fails at once; the call is now waiting out its backoff.
        assert!(call.as_mut().poll(&mut cx).is_pending());
        sleep(ms(50)).await;
    }
    sleep(Duration::from_secs(1)).await;
    assert_eq!(flaky.starts(), [ms(0)], "no attempt after the drop");
    assert_eq!(
        r.stats(),
        RetryStats {
            calls: 1,
            attempts: 1,
            retries: 1,
            successes_after_retry: 0,
            exhausted: 0,
            budget_rejections: 0,
        }
    );
    let stats = shared.stats();
    assert_eq!((stats.deposits, stats.withdrawals), (1, 1));
    assert_eq!(stats.available, 9, "one of ten retries spent, nothing more");
}

/// A service that fails its first `failures` calls and insists on `poll_ready` before each call.
#[derive(Clone)]
struct Strict {
    calls: Arc<AtomicU32>,
    ready_polls: Arc<AtomicU32>,
    failures: u32,
    ready: bool,
}

impl Strict {
    fn new(failures: u32) -> Strict {
        Strict {
            calls: Arc::default(),
            ready_polls: Arc::default(),
            failures,
            ready: false,
        }
    }
}

impl Service<&'static str> for Strict {
    type Response = String;
    type Error = String;
    type Future = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.ready_polls.fetch_add(1, Ordering::Relaxed);
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: &'static str) -> Self::Future {
        assert!(self.ready, "called without poll_ready");
        self.ready = false;
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = self.failures;
        Box::pin(async move {
            sleep(ms(10)).await;
            if n <= failures {
                Err(format!("{req} failed {n}"))
            } else {
                Ok(format!("{req} ok {n}"))
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_tower_service_retries_on_fresh_ready_clones() {
    let strict = Strict::new(2);
    let svc = RetryLayer::new(retry(3)).layer(strict.clone());
    let start = Instant::now();
    assert_eq!(svc.oneshot("get").await.unwrap(), "get ok 3");
    // Three 10ms calls and backoffs of 100ms and 200ms.
    assert_eq!(start.elapsed(), ms(330));
    assert_eq!(strict.calls.load(Ordering::Relaxed), 3);
    assert_eq!(strict.ready_polls.load(Ordering::Relaxed), 3);

    let failing = Strict::new(u32::MAX);
    let svc = RetryLayer::new(retry(2)).layer(failing.clone());
    let err = svc.oneshot("put").await.unwrap_err();
    assert_eq!(err.into_inner().as_deref(), Some("put failed 2"));
}

#[tokio::test(start_paused = true)]
async fn a_tower_stack_retries_attempts_that_time_out() {
    let timeout = TimeoutConfig { timeout: ms(50) }
        .build("attempt", &Events::new())
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // The first attempt hangs; the second answers in 10ms.
    let inner = tower::service_fn(move |_: ()| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            sleep(if n == 0 { ms(10_000) } else { ms(10) }).await;
            Ok::<_, std::io::Error>(n)
        }
    });
    let svc = RetryLayer::new(retry(3))
        .with_decider(RetryRejections)
        .layer(TimeoutLayer::new(timeout.clone()).layer(inner));
    let start = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ms(50 + 100 + 10));
    assert_eq!(timeout.stats().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn calls_and_service_futures_are_send_so_they_can_be_spawned() {
    let r = retry(2).with_budget(budget(0.2, 10, Duration::from_secs(10), &Events::new()));
    let policy = r.clone();
    let spawned = tokio::spawn(async move {
        let flaky = Flaky::new(1);
        policy.call(|| flaky.attempt()).await
    });
    assert_eq!(spawned.await.unwrap().unwrap(), 2);
    let svc = RetryLayer::new(r).layer(Strict::new(0));
    let spawned = tokio::spawn(svc.oneshot("get"));
    assert_eq!(spawned.await.unwrap().unwrap(), "get ok 1");
}
