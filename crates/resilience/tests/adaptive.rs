//! The adaptive concurrency limiter through its public API, on paused time.

// Helpers outside `#[test]` functions unwrap like the tests themselves; clippy only exempts the latter.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
use proptest::prelude::*;
use rampart_resilience::adaptive::{AdaptiveConfig, AdaptiveLayer, AdaptiveLimiter, Token};
use rampart_resilience::{Error, Event, Events, Outcome, PolicyKind};
use tokio::time::{advance, sleep};
use tower::{Layer, Service, ServiceExt};

fn limiter(toml: &str) -> AdaptiveLimiter {
    limiter_with(toml, &Events::new())
}

fn limiter_with(toml: &str, events: &Events) -> AdaptiveLimiter {
    let config: AdaptiveConfig = toml::from_str(toml).unwrap();
    config.build("db", events).unwrap()
}

/// Takes every slot the limiter gives, lets `rtt` pass, then ends each call with `verdict`.
async fn round(limiter: &AdaptiveLimiter, rtt: Duration, verdict: fn(Token)) {
    let mut tokens = Vec::new();
    while let Some(token) = limiter.try_acquire() {
        tokens.push(token);
    }
    assert!(!tokens.is_empty());
    advance(rtt).await;
    tokens.into_iter().for_each(verdict);
}

#[tokio::test(start_paused = true)]
async fn gradient2_limit_grows_under_healthy_fast_calls() {
    let limiter = limiter("");
    assert_eq!(limiter.limit(), 20);
    for _ in 0..10 {
        round(&limiter, Duration::from_millis(10), Token::success).await;
    }
    assert!(limiter.limit() > 40, "limit {}", limiter.limit());
}

#[tokio::test(start_paused = true)]
async fn aimd_limit_grows_under_healthy_calls() {
    let limiter = limiter(r#"algorithm = "aimd""#);
    round(&limiter, Duration::from_millis(10), Token::success).await;
    // Calls settle in the order they started; each that started with at least half the (growing)
    // limit in flight adds one: the 10th to the 20th.
    assert_eq!(limiter.limit(), 31);
}

#[tokio::test(start_paused = true)]
async fn gradient2_limit_shrinks_when_latency_rises() {
    let limiter = limiter("");
    for _ in 0..20 {
        round(&limiter, Duration::from_millis(10), Token::success).await;
    }
    let healthy = limiter.limit();
    round(&limiter, Duration::from_millis(100), Token::success).await;
    assert!(
        limiter.limit() < healthy / 2,
        "{healthy} -> {}",
        limiter.limit()
    );
}

#[tokio::test(start_paused = true)]
async fn aimd_limit_shrinks_on_drops_down_to_min() {
    let limiter = limiter("algorithm = \"aimd\"\nmin_limit = 2");
    let mut last = limiter.limit();
    for _ in 0..40 {
        limiter.try_acquire().unwrap().dropped();
        let now = limiter.limit();
        assert!(now < last || now == 2, "{last} -> {now}");
        last = now;
    }
    assert_eq!(limiter.limit(), 2);
}

#[tokio::test(start_paused = true)]
async fn aimd_counts_slow_calls_as_drops() {
    let limiter = limiter("algorithm = \"aimd\"\ntimeout = \"100ms\"");
    let limit = limiter.limit();
    let answer = limiter
        .call(|| async {
            sleep(Duration::from_millis(150)).await;
            Ok::<_, String>("late")
        })
        .await;
    assert_eq!(answer.unwrap(), "late");
    assert_eq!(limiter.limit(), 18, "from {limit}");
}

#[tokio::test(start_paused = true)]
async fn limit_never_leaves_min_and_max() {
    let events = Events::new();
    let (_subscription, mut seen) = events.channel();
    let limiter = limiter_with("min_limit = 5\ninitial_limit = 10\nmax_limit = 30", &events);
    for _ in 0..50 {
        round(&limiter, Duration::from_millis(10), Token::success).await;
    }
    assert_eq!(limiter.limit(), 30);
    for _ in 0..50 {
        round(&limiter, Duration::from_millis(10), Token::dropped).await;
    }
    assert_eq!(limiter.limit(), 5);
    let mut changes = 0;
    while let Ok(event) = seen.try_recv() {
        if let Event::LimitChanged { name, from, to } = event {
            assert_eq!(&*name, "db");
            assert!(
                (5..=30).contains(&from) && (5..=30).contains(&to),
                "{from} -> {to}"
            );
            assert_ne!(from, to);
            changes += 1;
        }
    }
    assert!(changes > 10, "{changes} limit changes");
}

#[tokio::test(start_paused = true)]
async fn admits_exactly_limit_concurrent_calls() {
    let events = Events::new();
    let (_subscription, mut seen) = events.channel();
    let limiter = limiter_with("algorithm = \"aimd\"\ninitial_limit = 3", &events);
    let mut calls: Vec<_> = (0..5)
        .map(|_| Box::pin(limiter.call(std::future::pending::<Result<(), String>>)))
        .collect();
    let mut pending = 0;
    for call in &mut calls {
        match call.now_or_never() {
            None => pending += 1,
            Some(Err(Error::ConcurrencyLimited { name, limit })) => {
                assert_eq!((&*name, limit), ("db", 3));
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pending, 3);
    let stats = limiter.stats();
    assert_eq!(
        (stats.in_flight, stats.permitted, stats.rejected),
        (3, 3, 2)
    );
    let rejections = std::iter::from_fn(|| seen.try_recv().ok())
        .filter(|e| {
            matches!(e, Event::Rejected { name, policy: PolicyKind::Adaptive } if &**name == "db")
        })
        .count();
    assert_eq!(rejections, 2);

    drop(calls);
    assert_eq!(limiter.stats().in_flight, 0);
    assert_eq!(
        limiter.limit(),
        3,
        "cancelled calls teach the algorithm nothing"
    );
    assert!(limiter.try_acquire().is_some());
}

#[tokio::test(start_paused = true)]
async fn errors_count_as_drops_unless_the_classifier_ignores_them() {
    let limiter = limiter("algorithm = \"aimd\"");
    let failed = limiter.call(|| async { Err::<(), _>("boom") }).await;
    assert_eq!(failed.unwrap_err().into_inner(), Some("boom"));
    assert_eq!(limiter.limit(), 18);

    let ignored = limiter
        .call_classified(
            || async { Err::<(), _>("not found") },
            |_: &Result<(), &str>| Outcome::Ignored,
        )
        .await;
    assert!(ignored.unwrap_err().is_inner());
    assert_eq!(limiter.limit(), 18);
    assert_eq!(limiter.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_limit_and_the_slots() {
    let limiter = limiter("algorithm = \"aimd\"\ninitial_limit = 1");
    let other = limiter.clone();
    let token = limiter.try_acquire().unwrap();
    assert!(other.try_acquire().is_none());
    token.success();
    assert_eq!(other.stats().in_flight, 0);
    assert_eq!(other.limit(), 2);
}

#[tokio::test(start_paused = true)]
async fn layer_rejects_over_the_limit_and_frees_slots_of_dropped_responses() {
    let limiter = limiter("algorithm = \"aimd\"\ninitial_limit = 1");
    let inner = tower::service_fn(|wait: bool| async move {
        if wait {
            std::future::pending::<()>().await;
        }
        Ok::<_, String>("done")
    });
    let mut service = AdaptiveLayer::new(limiter.clone()).layer(inner);

    let held = service.ready().await.unwrap().call(true);
    let rejected = service.ready().await.unwrap().call(false).await;
    assert!(rejected.unwrap_err().is_concurrency_limited());
    assert_eq!(limiter.stats().in_flight, 1);

    drop(held);
    assert_eq!(limiter.stats().in_flight, 0);
    let answer = service.oneshot(false).await;
    assert_eq!(answer.unwrap(), "done");
    assert_eq!(limiter.limit(), 2);
}

#[tokio::test(start_paused = true)]
async fn layer_with_classifier_ignores_chosen_errors() {
    let limiter = limiter("algorithm = \"aimd\"");
    let inner = tower::service_fn(|_: ()| async { Err::<(), _>("not found") });
    let service = AdaptiveLayer::new(limiter.clone())
        .with_classifier(|_: &Result<(), &str>| Outcome::Ignored)
        .layer(inner);
    let answer = service.oneshot(()).await;
    assert_eq!(answer.unwrap_err().into_inner(), Some("not found"));
    assert_eq!(limiter.limit(), 20);
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<(), Error<()>>> + 'a>>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Calls start, finish and get dropped at random points; the count of slots in flight always
    /// equals the admitted calls still alive, and is zero at the end.
    #[test]
    fn dropping_calls_at_random_points_never_leaks_slots(
        steps in proptest::collection::vec((0u64..40, 0usize..16, any::<bool>()), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let limiter = limiter("algorithm = \"aimd\"\ninitial_limit = 4\nmax_limit = 8");
            let start_call = |ms: u64| -> Call<'_> {
                Box::pin(limiter.call(move || async move {
                    sleep(Duration::from_millis(ms)).await;
                    if ms.is_multiple_of(3) { Err(()) } else { Ok(()) }
                }))
            };
            let mut live: Vec<Call<'_>> = Vec::new();
            let mut started = 0u64;
            for (ms, victim, start) in steps {
                if start {
                    live.push(start_call(ms));
                    started += 1;
                } else if !live.is_empty() {
                    let index = victim % live.len();
                    drop(live.swap_remove(index));
                }
                live.retain_mut(|call| call.as_mut().now_or_never().is_none());
                let stats = limiter.stats();
                prop_assert_eq!(stats.in_flight, live.len());
                prop_assert!(stats.in_flight <= stats.limit.max(live.len()));
                prop_assert!((1..=8).contains(&stats.limit));
                advance(Duration::from_millis(5)).await;
            }
            drop(live);
            let stats = limiter.stats();
            prop_assert_eq!(stats.in_flight, 0);
            prop_assert_eq!(stats.permitted + stats.rejected, started);
            Ok(())
        })?;
    }
}
