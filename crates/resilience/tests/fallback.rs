//! Fallbacks through their public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rampart_resilience::adaptive::AdaptiveConfig;
use rampart_resilience::fallback::{Fallback, FallbackLayer, FallbackStats};
use rampart_resilience::{Error, Event, Events};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn inner_error_is_replaced_by_the_fallback_value() {
    let events = Events::new();
    let (_subscription, mut seen) = events.channel();
    let fallback = Fallback::new("profile", &events);
    let answer = fallback
        .call(
            || async { Err::<String, _>("down") },
            |error| async move { Ok(format!("cached, because {error}")) },
        )
        .await;
    assert_eq!(answer.unwrap(), "cached, because down");
    assert_eq!(
        fallback.stats(),
        FallbackStats {
            calls: 1,
            fallbacks: 1
        }
    );
    assert_eq!(
        seen.try_recv().unwrap(),
        Event::FallbackUsed {
            name: "profile".into()
        }
    );
}

#[tokio::test]
async fn sync_fallback_value() {
    let fallback = Fallback::new("f", &Events::new());
    let answer = fallback
        .call_or_else(|| async { Err::<u32, _>("down") }, |_| 7)
        .await;
    assert_eq!(answer.unwrap(), 7);
    let answer = fallback
        .call_or_else(|| async { Ok::<u32, &str>(1) }, |_| 7)
        .await;
    assert_eq!(answer.unwrap(), 1);
    assert_eq!(fallback.stats().fallbacks, 1);
}

#[tokio::test(start_paused = true)]
async fn rejection_by_an_inner_policy_falls_back() {
    let limiter = AdaptiveConfig {
        initial_limit: 1,
        ..AdaptiveConfig::default()
    }
    .build("db", &Events::new())
    .unwrap();
    let _busy = limiter.try_acquire().unwrap();
    let fallback = Fallback::new("f", &Events::new());
    let answer = fallback
        .call_if(
            || limiter.call(|| async { Ok::<_, String>("fresh") }),
            |error: &Error<String>| error.is_rejection(),
            |_| async { Ok("stale") },
        )
        .await;
    assert_eq!(answer.unwrap(), "stale");
    assert_eq!(fallback.stats().fallbacks, 1);
}

#[tokio::test]
async fn error_the_predicate_refuses_passes_through() {
    let events = Events::new();
    let (_subscription, mut seen) = events.channel();
    let fallback = Fallback::new("f", &events);
    let answer = fallback
        .call_if(
            || async { Err::<&str, _>(Error::Inner("boom")) },
            |error: &Error<&str>| error.is_rejection(),
            |_| async { Ok("stale") },
        )
        .await;
    let error = answer.unwrap_err().flatten();
    assert_eq!(error.into_inner(), Some("boom"));
    assert_eq!(
        fallback.stats(),
        FallbackStats {
            calls: 1,
            fallbacks: 0
        }
    );
    assert!(seen.try_recv().is_err(), "no event without a fallback");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_midway_counts_the_call_and_no_fallback() {
    let fallback = Fallback::new("f", &Events::new());
    let outcome = tokio::time::timeout(
        Duration::from_millis(10),
        fallback.call_or_else(std::future::pending::<Result<u8, ()>>, |_| 0),
    )
    .await;
    assert!(outcome.is_err());
    assert_eq!(
        fallback.stats(),
        FallbackStats {
            calls: 1,
            fallbacks: 0
        }
    );
}

#[tokio::test]
async fn layer_turns_errors_into_responses() {
    let fallback = Fallback::new("f", &Events::new());
    let inner = tower::service_fn(|fail: bool| async move {
        if fail {
            Err("down".to_owned())
        } else {
            Ok("live".to_owned())
        }
    });
    let layer = FallbackLayer::new(fallback.clone(), |error: String| {
        format!("fallback: {error}")
    });
    let service = layer.layer(inner);
    assert_eq!(service.clone().oneshot(false).await.unwrap(), "live");
    assert_eq!(service.oneshot(true).await.unwrap(), "fallback: down");
    assert_eq!(
        fallback.stats(),
        FallbackStats {
            calls: 2,
            fallbacks: 1
        }
    );
}

#[tokio::test]
async fn layer_with_predicate_lets_other_errors_through() {
    let fallback = Fallback::new("f", &Events::new());
    let inner = tower::service_fn(|code: u16| async move { Err::<String, u16>(code) });
    let service = FallbackLayer::new(fallback.clone(), |code: u16| format!("default for {code}"))
        .when(|code: &u16| *code == 503)
        .layer(inner);
    assert_eq!(
        service.clone().oneshot(503).await.unwrap(),
        "default for 503"
    );
    let error = service.oneshot(404).await.unwrap_err();
    assert_eq!(error.into_inner(), Some(404));
    assert_eq!(fallback.stats().fallbacks, 1);
}
