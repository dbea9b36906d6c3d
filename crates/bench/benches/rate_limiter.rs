//! Rate limiter cost against `governor`: one direct limiter admitting, one rejecting, and a keyed
//! limiter over 1000 keys.
//!
//! Both sides use the same quota and the same GCRA algorithm; each case is one synchronous
//! decision (no future, no executor).
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use governor::Quota;
use rampart_resilience::Events;
use rampart_resilience::rate_limit::{KeyedRateLimiter, RateLimitConfig, RateLimiter};

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

/// A quota so high that the limiters admit (nearly) every call: 1e9 per second, burst 1000.
const FAST_RATE: u32 = 1_000_000_000;
const FAST_BURST: u32 = 1000;
/// Keys the keyed limiters cycle through.
const KEYS: u64 = 1000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

fn rampart_fast() -> RateLimiter {
    RateLimitConfig::new(f64::from(FAST_RATE), Duration::from_secs(1))
        .burst(FAST_BURST)
        .build("bench", &Events::new())
        .expect("valid config")
}

fn governor_fast_quota() -> Quota {
    Quota::per_second(nz(FAST_RATE)).allow_burst(nz(FAST_BURST))
}

fn admitting(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limiter");
    let r = rampart_fast();
    assert!(r.try_acquire(1).is_ok());
    g.bench_function("rampart", |b| {
        b.iter(|| black_box(r.try_acquire(black_box(1))))
    });
    let gov = governor::RateLimiter::direct(governor_fast_quota());
    assert!(gov.check().is_ok());
    g.bench_function("governor", |b| b.iter(|| black_box(gov.check())));
    g.finish();
    rampart_bench::report_allocs("rate_limiter/rampart", 100_000, || {
        let _ = black_box(r.try_acquire(1));
    });
    rampart_bench::report_allocs("rate_limiter/governor", 100_000, || {
        let _ = black_box(gov.check());
    });
}

fn rejecting(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limiter_rejecting");
    // One unit per hour, burst 1, and the burst used up: every call below is rejected.
    let r = RateLimitConfig::new(1.0, Duration::from_secs(3600))
        .burst(1)
        .build("bench", &Events::new())
        .expect("valid config");
    assert!(r.try_acquire(1).is_ok());
    assert!(r.try_acquire(1).is_err());
    g.bench_function("rampart", |b| {
        b.iter(|| black_box(r.try_acquire(black_box(1))))
    });
    let gov = governor::RateLimiter::direct(Quota::per_hour(nz(1)));
    assert!(gov.check().is_ok());
    assert!(gov.check().is_err());
    g.bench_function("governor", |b| b.iter(|| black_box(gov.check())));
    g.finish();
    rampart_bench::report_allocs("rate_limiter_rejecting/rampart", 100_000, || {
        let _ = black_box(r.try_acquire(1));
    });
    rampart_bench::report_allocs("rate_limiter_rejecting/governor", 100_000, || {
        let _ = black_box(gov.check());
    });
}

/// Keys 0..1000 in turn, every key already present (the steady state of a keyed limiter).
fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limiter_keyed");
    let r: KeyedRateLimiter<u64> =
        RateLimitConfig::new(f64::from(FAST_RATE), Duration::from_secs(1))
            .burst(FAST_BURST)
            .build_keyed("bench", &Events::new())
            .expect("valid config");
    for k in 0..KEYS {
        assert!(r.try_acquire(&k, 1).is_ok());
    }
    assert_eq!(r.len(), KEYS as usize);
    let mut key = 0u64;
    g.bench_function("rampart", |b| {
        b.iter(|| {
            key = if key + 1 == KEYS { 0 } else { key + 1 };
            black_box(r.try_acquire(black_box(&key), 1))
        })
    });
    let gov = governor::RateLimiter::dashmap(governor_fast_quota());
    for k in 0..KEYS {
        assert!(gov.check_key(&k).is_ok());
    }
    let mut key = 0u64;
    g.bench_function("governor", |b| {
        b.iter(|| {
            key = if key + 1 == KEYS { 0 } else { key + 1 };
            black_box(gov.check_key(black_box(&key)))
        })
    });
    g.finish();
    let mut key = 0u64;
    rampart_bench::report_allocs("rate_limiter_keyed/rampart", 100_000, || {
        key = (key + 1) % KEYS;
        let _ = black_box(r.try_acquire(&key, 1));
    });
    let mut key = 0u64;
    rampart_bench::report_allocs("rate_limiter_keyed/governor", 100_000, || {
        key = (key + 1) % KEYS;
        let _ = black_box(gov.check_key(&key));
    });
}

criterion_group!(benches, admitting, rejecting, keyed);
criterion_main!(benches);
