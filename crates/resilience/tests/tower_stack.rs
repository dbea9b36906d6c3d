//! Several policies stacked as tower layers around one flaky service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rampart_resilience::breaker::{BreakerConfig, BreakerLayer, BreakerState};
use rampart_resilience::bulkhead::{BulkheadConfig, BulkheadLayer};
use rampart_resilience::rate_limit::{RateLimitConfig, RateLimitLayer};
use rampart_resilience::retry::{Jitter, RetryConfig, RetryDecision, RetryLayer};
use rampart_resilience::timeout::{TimeoutConfig, TimeoutLayer};
use rampart_resilience::{Error, Events};
use tower::{ServiceBuilder, ServiceExt};

/// What the breaker layer returns: breaker, rate limit, bulkhead and timeout errors, nested.
type BelowRetry = Error<Error<Error<Error<&'static str>>>>;

#[tokio::test(start_paused = true)]
async fn retry_breaker_rate_limit_bulkhead_and_timeout_stack_as_layers() {
    let ev = Events::new();
    let retry = RetryConfig {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        jitter: Jitter::None,
        ..RetryConfig::default()
    }
    .build("svc", &ev)
    .unwrap();
    let breaker = BreakerConfig::consecutive(3, Duration::from_secs(30))
        .build("svc", &ev)
        .unwrap();
    let limiter = RateLimitConfig::new(1000.0, Duration::from_secs(1))
        .build("svc", &ev)
        .unwrap();
    let bulkhead = BulkheadConfig::default().build("svc", &ev).unwrap();
    let timeout = TimeoutConfig {
        timeout: Duration::from_millis(100),
    }
    .build("svc", &ev)
    .unwrap();

    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // Call 1 hangs (the timeout cuts it), call 2 fails, call 3 succeeds; from call 4 on the
    // service is down for good.
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::new(retry.clone()).with_decider(|r: &Result<u32, BelowRetry>| match r {
                Err(Error::BreakerOpen { .. }) => RetryDecision::Return,
                Err(_) => RetryDecision::Retry,
                Ok(_) => RetryDecision::Return,
            }),
        )
        .layer(BreakerLayer::new(breaker.clone()))
        .layer(RateLimitLayer::new(limiter))
        .layer(BulkheadLayer::new(bulkhead))
        .layer(TimeoutLayer::new(timeout))
        .service_fn(move |req: u32| {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                match n {
                    1 => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok(req)
                    }
                    2 => Err::<u32, &'static str>("boom"),
                    3 => Ok(req * 2),
                    _ => Err("down"),
                }
            }
        });

    let start = tokio::time::Instant::now();
    assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42);
    // 100 ms timeout, 10 ms backoff, instant failure, 20 ms backoff, success.
    assert_eq!(start.elapsed(), Duration::from_millis(130));
    assert_eq!(retry.stats().retries, 2);
    assert_eq!(
        breaker.stats().failed,
        2,
        "the timeout and the error both count"
    );

    // Now the service is down: three failures open the breaker, the retry stops on it.
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(
        matches!(err, Error::Inner(Error::BreakerOpen { .. })),
        "{err:?}"
    );
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(calls.load(Ordering::Relaxed), 6);
}
