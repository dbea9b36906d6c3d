//! Five policies stacked around a trivial call: timeout, retry, circuit breaker, rate limiter and
//! bulkhead, through Rampart's `Pipeline`, through Rampart's tower layers, and through the same five
//! layers of `tower-resilience`. Then each policy alone, to see where the nanoseconds go.
//!
//! Every case polls an immediately ready call once with `now_or_never` (no executor in the loop),
//! inside an entered tokio runtime since timeouts need its timer. The policies use their default
//! configurations, except the rate limiter, whose quota (1e9 per second, burst 1000) is high enough
//! that it admits every call.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use rampart_resilience::Events;
use rampart_resilience::breaker::{BreakerConfig, BreakerLayer, CircuitBreaker};
use rampart_resilience::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
use rampart_resilience::pipeline::Pipeline;
use rampart_resilience::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimiter};
use rampart_resilience::retry::{Retry, RetryConfig, RetryLayer};
use rampart_resilience::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

fn ready<F: Future>(f: F) -> F::Output {
    match f.now_or_never() {
        Some(v) => v,
        None => panic!("benchmarked future was not ready"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// The call every case wraps.
async fn trivial() -> Result<u64, std::io::Error> {
    Ok(black_box(1))
}

struct Policies {
    timeout: Timeout,
    retry: Retry,
    breaker: CircuitBreaker,
    limiter: RateLimiter,
    bulkhead: Bulkhead,
}

fn policies() -> Policies {
    let events = Events::new();
    Policies {
        timeout: TimeoutConfig::default()
            .build("bench", &events)
            .expect("valid"),
        retry: RetryConfig::default()
            .build("bench", &events)
            .expect("valid"),
        breaker: BreakerConfig::default()
            .build("bench", &events)
            .expect("valid"),
        limiter: RateLimitConfig::new(1e9, Duration::from_secs(1))
            .burst(1000)
            .build("bench", &events)
            .expect("valid"),
        bulkhead: BulkheadConfig::default()
            .build("bench", &events)
            .expect("valid"),
    }
}

fn pipeline() -> Pipeline {
    let p = policies();
    Pipeline::builder("bench")
        .timeout(p.timeout)
        .retry(p.retry)
        .breaker(p.breaker)
        .rate_limiter(p.limiter)
        .bulkhead(p.bulkhead)
        .build()
}

/// Polls a tower service ready, then calls it, both at once.
fn tower_call<S: Service<u64>>(svc: &mut S, req: u64) -> Result<S::Response, S::Error> {
    ready(std::future::poll_fn(|cx| svc.poll_ready(cx)))?;
    ready(svc.call(req))
}

fn pipeline5(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("pipeline5");

    let p = pipeline();
    assert_eq!(ready(p.call(trivial)).unwrap(), 1);
    g.bench_function("rampart", |b| b.iter(|| ready(p.call(trivial))));

    // The same five policies as tower layers, in the pipeline's order (retry outermost, timeout
    // innermost).
    let inner = service_fn(|x: u64| async move { Ok::<u64, std::io::Error>(x) });
    let pol = policies();
    let svc = TimeoutLayer::new(pol.timeout).layer(inner);
    let svc = BulkheadLayer::new(pol.bulkhead).layer(svc);
    let svc = RateLimitLayer::new(pol.limiter).layer(svc);
    let svc = BreakerLayer::new(pol.breaker).layer(svc);
    let mut rampart_tower = RetryLayer::new(pol.retry).layer(svc);
    assert_eq!(tower_call(&mut rampart_tower, 1).unwrap(), 1);
    g.bench_function("rampart_tower", |b| {
        b.iter(|| tower_call(&mut rampart_tower, black_box(1)))
    });

    let mut tr = tower_resilience_stack();
    assert_eq!(tower_call(&mut tr, 1).unwrap(), 1);
    g.bench_function("tower_resilience", |b| {
        b.iter(|| tower_call(&mut tr, black_box(1)))
    });
    g.finish();

    rampart_bench::report_allocs("pipeline5/rampart", 100_000, || {
        let _ = ready(p.call(trivial));
    });
    rampart_bench::report_allocs("pipeline5/rampart_tower", 100_000, || {
        let _ = tower_call(&mut rampart_tower, 1);
    });
    rampart_bench::report_allocs("pipeline5/tower_resilience", 100_000, || {
        let _ = tower_call(&mut tr, 1);
    });
}

/// `tower-resilience`'s five layers, same order and settings: retry (3 attempts, 100 ms
/// exponential backoff), breaker (failure rate 0.5 over 100 calls), rate limiter (1e9 per second),
/// bulkhead (25 at once), time limiter (10 s).
fn tower_resilience_stack() -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug> {
    use tower_resilience::bulkhead::BulkheadLayer;
    use tower_resilience::circuitbreaker::CircuitBreakerLayer;
    use tower_resilience::ratelimiter::RateLimiterLayer;
    use tower_resilience::retry::RetryLayer;
    use tower_resilience::timelimiter::TimeLimiterLayer;

    let inner = service_fn(|x: u64| async move { Ok::<u64, std::io::Error>(x) });
    let svc = TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(10))
        .build()
        .layer(inner);
    let svc = BulkheadLayer::builder()
        .max_concurrent_calls(25)
        .build()
        .expect("valid")
        .layer(svc);
    let svc = RateLimiterLayer::builder()
        .limit_for_period(1_000_000_000)
        .refresh_period(Duration::from_secs(1))
        .build()
        .expect("valid")
        .layer(svc);
    let svc = CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid")
        .layer(svc);
    RetryLayer::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(svc)
}

/// Each policy alone around the trivial call, and the bare call for reference.
fn breakdown(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("pipeline_breakdown");
    let p = policies();
    g.bench_function("bare", |b| b.iter(|| ready(trivial())));
    g.bench_function("timeout", |b| b.iter(|| ready(p.timeout.call(trivial))));
    g.bench_function("retry", |b| b.iter(|| ready(p.retry.call(trivial))));
    g.bench_function("breaker", |b| b.iter(|| ready(p.breaker.call(trivial))));
    g.bench_function("rate_limit", |b| b.iter(|| ready(p.limiter.call(trivial))));
    g.bench_function("bulkhead", |b| b.iter(|| ready(p.bulkhead.call(trivial))));
    g.finish();

    const N: u64 = 100_000;
    rampart_bench::report_allocs("pipeline_breakdown/timeout", N, || {
        let _ = ready(p.timeout.call(trivial));
    });
    rampart_bench::report_allocs("pipeline_breakdown/retry", N, || {
        let _ = ready(p.retry.call(trivial));
    });
    rampart_bench::report_allocs("pipeline_breakdown/breaker", N, || {
        let _ = ready(p.breaker.call(trivial));
    });
    rampart_bench::report_allocs("pipeline_breakdown/rate_limit", N, || {
        let _ = ready(p.limiter.call(trivial));
    });
    rampart_bench::report_allocs("pipeline_breakdown/bulkhead", N, || {
        let _ = ready(p.bulkhead.call(trivial));
    });
}

criterion_group!(benches, pipeline5, breakdown);
criterion_main!(benches);
