//! Timeouts and deadlines through the public API, on paused time.
// Test helpers outside `#[test]` functions unwrap too; clippy allows it only inside them.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use rampart_resilience::timeout::{
    Deadline, DeadlineLayer, TimeoutConfig, TimeoutLayer, TimeoutStats,
};
use rampart_resilience::{Error, Event, Events};
use tokio::time::{Instant, sleep};
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timeout(d: Duration, events: &Events) -> rampart_resilience::timeout::Timeout {
    TimeoutConfig { timeout: d }.build("api", events).unwrap()
}

async fn slow(d: Duration) -> Result<&'static str, std::io::Error> {
    sleep(d).await;
    Ok("done")
}

#[tokio::test(start_paused = true)]
async fn times_out_exactly_at_the_configured_time() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    let t = timeout(ms(1500), &events);
    let start = Instant::now();
    let err = t.call(|| slow(secs(10))).await.unwrap_err();
    assert_eq!(start.elapsed(), ms(1500));
    match err {
        Error::Timeout { name, after } => {
            assert_eq!(&*name, "api");
            assert_eq!(after, ms(1500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        rx.try_recv().unwrap(),
        Event::TimedOut {
            name: "api".into(),
            after: ms(1500)
        }
    );
    assert_eq!(
        t.stats(),
        TimeoutStats {
            calls: 1,
            timeouts: 1,
            deadline_exceeded: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_finishes_in_time_returns_its_result() {
    let t = timeout(secs(1), &Events::new());
    assert_eq!(t.call(|| slow(ms(999))).await.unwrap(), "done");
    let err = t
        .call(|| async { Err::<(), _>(std::io::Error::other("boom")) })
        .await
        .unwrap_err();
    assert_eq!(err.into_inner().unwrap().to_string(), "boom");
    assert_eq!(t.stats().timeouts, 0);
    assert_eq!(t.stats().calls, 2);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_timeout_gives_deadline_exceeded() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    let t = timeout(secs(5), &events);
    let start = Instant::now();
    let err = Deadline::after(secs(2))
        .scope(t.call(|| slow(secs(10))))
        .await
        .unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(start.elapsed(), secs(2));
    assert!(
        rx.try_recv().is_err(),
        "a deadline is not the timeout's own expiry"
    );
    assert_eq!(t.stats().deadline_exceeded, 1);
    assert_eq!(t.stats().timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_does_not_start_the_call() {
    let t = timeout(secs(5), &Events::new());
    let started = AtomicBool::new(false);
    let deadline = Deadline::after(secs(1));
    sleep(secs(1)).await;
    let err = deadline
        .scope(t.call(|| {
            started.store(true, Ordering::Relaxed);
            slow(ms(1))
        }))
        .await
        .unwrap_err();
    assert!(err.is_deadline_exceeded());
    assert!(!started.load(Ordering::Relaxed));
}

#[tokio::test(start_paused = true)]
async fn nested_deadlines_can_only_shorten() {
    let outer = Deadline::after(secs(3));
    let (shorter, longer) = outer
        .scope(async {
            let shorter = Deadline::after(secs(1))
                .scope(async { Deadline::current() })
                .await;
            let longer = Deadline::after(secs(10))
                .scope(async { Deadline::current() })
                .await;
            (shorter, longer)
        })
        .await;
    assert_eq!(shorter.unwrap().remaining(), secs(1));
    assert_eq!(longer, Some(outer));

    // `run` bounds the future by the outer deadline, not its own longer one.
    let start = Instant::now();
    let err = outer
        .scope(Deadline::after(secs(10)).run(|| slow(secs(20))))
        .await
        .unwrap_err();
    assert!(err.is_deadline_exceeded());
    assert_eq!(start.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn deadline_run_returns_the_result_when_in_time() {
    let result = Deadline::after(secs(1)).run(|| slow(ms(10))).await;
    assert_eq!(result.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_midway_leaves_counts_consistent() {
    let t = timeout(secs(1), &Events::new());
    {
        let mut call = pin!(t.call(|| slow(secs(10))));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        sleep(ms(500)).await;
    }
    // The dropped call neither timed out nor left anything behind.
    sleep(secs(5)).await;
    assert_eq!(
        t.stats(),
        TimeoutStats {
            calls: 1,
            timeouts: 0,
            deadline_exceeded: 0
        }
    );
    assert!(t.call(|| slow(secs(10))).await.unwrap_err().is_timeout());
    assert_eq!(t.stats().timeouts, 1);
}

#[test]
fn invalid_config_gives_problems_with_paths() {
    let zero: TimeoutConfig = toml::from_str(r#"timeout = "0s""#).unwrap();
    let err = zero.build("timeout.api", &Events::new()).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].path, "timeout.api.timeout");
    assert_eq!(err.problems[0].message, "must be at least 1ms, got 0s");
    assert!(
        err.to_string()
            .contains("timeout.api.timeout: must be at least 1ms, got 0s")
    );

    let negative = toml::from_str::<TimeoutConfig>(r#"timeout = "-1s""#).unwrap_err();
    assert!(
        negative.to_string().contains("cannot be negative"),
        "{negative}"
    );
    let unknown = toml::from_str::<TimeoutConfig>(r#"timout = "1s""#).unwrap_err();
    assert!(unknown.to_string().contains("unknown field"), "{unknown}");
}

#[tokio::test(start_paused = true)]
async fn the_tower_service_times_out_and_passes_results_through() {
    let t = timeout(secs(1), &Events::new());
    let svc = TimeoutLayer::new(t.clone()).layer(service_fn(|d: u64| slow(ms(d))));
    assert_eq!(svc.clone().oneshot(10).await.unwrap(), "done");
    let start = Instant::now();
    let err = svc.oneshot(5000).await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(start.elapsed(), secs(1));
    assert_eq!(t.stats().calls, 2);
    assert_eq!(t.stats().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_layer_bounds_the_request_and_is_seen_below() {
    let t = timeout(secs(5), &Events::new());
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let inner = service_fn(move |d: u64| {
        *record.lock().unwrap() = Deadline::current().map(Deadline::remaining);
        slow(ms(d))
    });
    let svc = DeadlineLayer::new(secs(2)).layer(TimeoutLayer::new(t.clone()).layer(inner));

    assert_eq!(svc.clone().oneshot(10).await.unwrap(), "done");
    assert_eq!(*seen.lock().unwrap(), Some(secs(2)));

    let start = Instant::now();
    let err = svc.oneshot(10_000).await.unwrap_err();
    // The timeout below saw the deadline and reported it, flattened here by hand.
    assert!(err.flatten().is_deadline_exceeded());
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(t.stats().deadline_exceeded, 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_service_does_not_call_the_inner_service_past_the_deadline() {
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    let inner = service_fn(move |_: ()| {
        flag.store(true, Ordering::Relaxed);
        slow(ms(1))
    });
    let svc = TimeoutLayer::new(timeout(secs(1), &Events::new())).layer(inner);
    let deadline = Deadline::after(ms(10));
    sleep(ms(10)).await;
    let err = deadline
        .scope(async move { svc.oneshot(()).await })
        .await
        .unwrap_err();
    assert!(err.is_deadline_exceeded());
    assert!(!called.load(Ordering::Relaxed));
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_error_is_wrapped_and_ready_is_driven() {
    let svc =
        TimeoutLayer::new(timeout(secs(1), &Events::new())).layer(service_fn(|_: ()| async {
            Err::<(), _>(std::io::Error::other("nope"))
        }));
    let mut svc = svc;
    let ready =
        futures_util::future::poll_fn(|cx| tower_service::Service::<()>::poll_ready(&mut svc, cx))
            .await;
    assert!(ready.is_ok());
    let err = tower_service::Service::call(&mut svc, ())
        .await
        .unwrap_err();
    assert!(err.is_inner());
}

#[tokio::test(start_paused = true)]
async fn calls_and_service_futures_are_send_so_they_can_be_spawned() {
    let t = timeout(secs(1), &Events::new());
    let policy = t.clone();
    let spawned = tokio::spawn(async move { policy.call(|| slow(ms(10))).await });
    assert_eq!(spawned.await.unwrap().unwrap(), "done");
    let svc = DeadlineLayer::new(secs(1))
        .layer(TimeoutLayer::new(t).layer(service_fn(|d: u64| slow(ms(d)))));
    let spawned = tokio::spawn(Deadline::after(secs(5)).scope(svc.oneshot(10)));
    assert_eq!(spawned.await.unwrap().unwrap(), "done");
}
