//! Circuit breaker cost against its peers: `failsafe`, `recloser`, `tower-resilience`.
//!
//! Every case polls a trivial, immediately ready future once (no executor in the loop), so the
//! figure is the breaker's own cost.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use rampart_resilience::Events;
use rampart_resilience::breaker::{BreakerConfig, BreakerState, CircuitBreaker};

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

fn ready<F: Future>(f: F) -> F::Output {
    match f.now_or_never() {
        Some(v) => v,
        None => panic!("benchmarked future was not ready"),
    }
}

fn rampart_breaker() -> CircuitBreaker {
    BreakerConfig::default()
        .build("bench", &Events::new())
        .expect("default config is valid")
}

fn failsafe_breaker() -> impl failsafe::futures::CircuitBreaker + Clone {
    use failsafe::{Config, backoff, failure_policy};
    Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            3,
            backoff::constant(Duration::from_secs(3600)),
        ))
        .build()
}

fn recloser_breaker() -> recloser::AsyncRecloser {
    recloser::Recloser::custom()
        .closed_len(100)
        .open_wait(Duration::from_secs(3600))
        .build()
        .into()
}

fn closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed");
    let r = rampart_breaker();
    g.bench_function("rampart", |b| {
        b.iter(|| ready(r.call(|| async { Ok::<u64, ()>(black_box(1)) })))
    });
    let f = failsafe_breaker();
    g.bench_function("failsafe", |b| {
        use failsafe::futures::CircuitBreaker as _;
        b.iter(|| ready(f.call(async { Ok::<u64, ()>(black_box(1)) })))
    });
    let rc = recloser_breaker();
    g.bench_function("recloser", |b| {
        b.iter(|| ready(rc.call(async { Ok::<u64, ()>(black_box(1)) })))
    });
    g.finish();
    rampart_bench::report_allocs("breaker_closed/rampart", 100_000, || {
        let _ = ready(r.call(|| async { Ok::<u64, ()>(black_box(1)) }));
    });
    rampart_bench::report_allocs("breaker_closed/failsafe", 100_000, || {
        use failsafe::futures::CircuitBreaker as _;
        let _ = ready(f.call(async { Ok::<u64, ()>(black_box(1)) }));
    });
    rampart_bench::report_allocs("breaker_closed/recloser", 100_000, || {
        let _ = ready(rc.call(async { Ok::<u64, ()>(black_box(1)) }));
    });
}

fn open(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("breaker_open");
    let r = rampart_breaker();
    for _ in 0..100 {
        let _ = ready(r.call(|| async { Err::<u64, ()>(()) }));
    }
    assert_eq!(r.state(), BreakerState::Open);
    g.bench_function("rampart", |b| {
        b.iter(|| ready(r.call(|| async { Ok::<u64, ()>(black_box(1)) })))
    });
    let f = failsafe_breaker();
    {
        use failsafe::futures::CircuitBreaker as _;
        for _ in 0..3 {
            let _ = ready(f.call(async { Err::<u64, ()>(()) }));
        }
        assert!(ready(f.call(async { Ok::<u64, ()>(1) })).is_err());
        g.bench_function("failsafe", |b| {
            b.iter(|| ready(f.call(async { Ok::<u64, ()>(black_box(1)) })))
        });
    }
    let rc = recloser_breaker();
    for _ in 0..101 {
        let _ = ready(rc.call(async { Err::<u64, ()>(()) }));
    }
    assert!(matches!(
        ready(rc.call(async { Ok::<u64, ()>(1) })),
        Err(recloser::Error::Rejected)
    ));
    g.bench_function("recloser", |b| {
        b.iter(|| ready(rc.call(async { Ok::<u64, ()>(black_box(1)) })))
    });
    g.finish();
    rampart_bench::report_allocs("breaker_open/rampart", 100_000, || {
        let _ = ready(r.call(|| async { Ok::<u64, ()>(black_box(1)) }));
    });
    rampart_bench::report_allocs("breaker_open/failsafe", 100_000, || {
        use failsafe::futures::CircuitBreaker as _;
        let _ = ready(f.call(async { Ok::<u64, ()>(black_box(1)) }));
    });
    rampart_bench::report_allocs("breaker_open/recloser", 100_000, || {
        let _ = ready(rc.call(async { Ok::<u64, ()>(black_box(1)) }));
    });
}

/// One and two threads (both cores) hammer one closed breaker; criterion times a batch of 200,000
/// calls per thread (so starting the threads is noise), and the throughput (calls per second, all
/// threads together) shows the scaling.
fn contended(c: &mut Criterion) {
    const CALLS: u64 = 200_000;
    fn hammer(threads: u64, call: &(dyn Fn() + Sync)) {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..CALLS {
                        call();
                    }
                });
            }
        })
    }
    let mut g = c.benchmark_group("breaker_contended");
    g.sample_size(10);
    let r = rampart_breaker();
    let rc = recloser_breaker();
    let f = failsafe_breaker();
    for threads in [1u64, 2] {
        g.throughput(criterion::Throughput::Elements(CALLS * threads));
        g.bench_with_input(
            criterion::BenchmarkId::new("rampart", threads),
            &threads,
            |b, &t| {
                b.iter(|| {
                    hammer(t, &|| {
                        let _ = ready(r.call(|| async { Ok::<u64, ()>(black_box(1)) }));
                    })
                })
            },
        );
        g.bench_with_input(
            criterion::BenchmarkId::new("recloser", threads),
            &threads,
            |b, &t| {
                b.iter(|| {
                    hammer(t, &|| {
                        let _ = ready(rc.call(async { Ok::<u64, ()>(black_box(1)) }));
                    })
                })
            },
        );
        g.bench_with_input(
            criterion::BenchmarkId::new("failsafe", threads),
            &threads,
            |b, &t| {
                use failsafe::futures::CircuitBreaker as _;
                b.iter(|| {
                    hammer(t, &|| {
                        let _ = ready(f.call(async { Ok::<u64, ()>(black_box(1)) }));
                    })
                })
            },
        );
    }
    g.finish();
}

/// The same closed breaker as a tower layer, against `tower-resilience`'s tower-only breaker.
fn closed_tower(c: &mut Criterion) {
    use tower::{Layer, Service, service_fn};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("breaker_closed_tower");
    let inner = service_fn(|x: u64| async move { Ok::<u64, std::io::Error>(x) });
    let mut svc = rampart_resilience::breaker::BreakerLayer::new(rampart_breaker()).layer(inner);
    g.bench_function("rampart", |b| {
        b.iter(|| {
            let _ = ready(std::future::poll_fn(|cx| svc.poll_ready(cx)));
            ready(svc.call(black_box(1)))
        })
    });
    let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid");
    let mut svc = layer.layer(inner);
    g.bench_function("tower_resilience", |b| {
        b.iter(|| {
            let _ = ready(std::future::poll_fn(|cx| svc.poll_ready(cx)));
            ready(svc.call(black_box(1)))
        })
    });
    g.finish();
}

criterion_group!(benches, closed, open, contended, closed_tower);
criterion_main!(benches);
