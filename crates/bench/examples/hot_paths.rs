//! Runs one hot path N times, for instruction counts under `valgrind --tool=callgrind`, which are
//! repeatable where timings on a shared machine are not:
//!
//! ```sh
//! cargo build --release -p rampart-bench --example hot_paths
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/hot_paths breaker_closed 1000000
//! ```
//!
//! Divide the total by N (minus the cost of a run with N = 0) for instructions per call.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;

use futures_util::FutureExt;
use rampart_resilience::Events;
use rampart_resilience::breaker::BreakerConfig;
use rampart_resilience::bulkhead::BulkheadConfig;
use rampart_resilience::rate_limit::{KeyedRateLimiter, RateLimitConfig};
use std::time::Duration;

fn ready<F: Future>(f: F) -> F::Output {
    f.now_or_never().expect("ready")
}

fn fast_limiter() -> RateLimitConfig {
    RateLimitConfig::new(1e9, Duration::from_secs(1)).burst(1000)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "breaker_closed".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let breaker = BreakerConfig::default()
        .build("hot", &Events::new())
        .unwrap();
    let bulkhead = BulkheadConfig::default()
        .build("hot", &Events::new())
        .unwrap();
    match case.as_str() {
        // The loop, the trivial future and its poll alone: subtract this from the others.
        "baseline" => {
            for _ in 0..n {
                let _ = black_box(ready(async { Ok::<u64, ()>(black_box(1)) }));
            }
        }
        "breaker_closed" => {
            for _ in 0..n {
                let _ = black_box(ready(
                    breaker.call(|| async { Ok::<u64, ()>(black_box(1)) }),
                ));
            }
        }
        // The breaker's own bookkeeping without a future: permit, then verdict.
        "breaker_permit" => {
            for _ in 0..n {
                let permit = breaker.try_acquire().expect("closed");
                black_box(&permit);
                permit.record(rampart_resilience::Outcome::Success);
            }
        }
        // A peer, for scale: recloser's closed breaker around the same call.
        "recloser_closed" => {
            let rc: recloser::AsyncRecloser = recloser::Recloser::custom().build().into();
            for _ in 0..n {
                let _ = black_box(ready(rc.call(async { Ok::<u64, ()>(black_box(1)) })));
            }
        }
        // The rejection itself, without a future: `try_acquire` on an open breaker.
        "breaker_open_permit" => {
            for _ in 0..100 {
                let _ = ready(breaker.call(|| async { Err::<u64, ()>(()) }));
            }
            for _ in 0..n {
                black_box(breaker.try_acquire().is_none());
            }
        }
        // Timeout + retry + breaker + rate limit + bulkhead around a trivial call.
        "pipeline5" => {
            let ev = Events::new();
            let p = rampart_resilience::Pipeline::builder("hot")
                .timeout(
                    rampart_resilience::timeout::TimeoutConfig::default()
                        .build("hot", &ev)
                        .unwrap(),
                )
                .retry(
                    rampart_resilience::retry::RetryConfig::default()
                        .build("hot", &ev)
                        .unwrap(),
                )
                .breaker(BreakerConfig::default().build("hot", &ev).unwrap())
                .rate_limiter(
                    rampart_resilience::rate_limit::RateLimitConfig::new(
                        1e9,
                        std::time::Duration::from_secs(1),
                    )
                    .burst(1000)
                    .build("hot", &ev)
                    .unwrap(),
                )
                .bulkhead(
                    rampart_resilience::bulkhead::BulkheadConfig::default()
                        .build("hot", &ev)
                        .unwrap(),
                )
                .build();
            if n == 0 {
                let f = p.call(|| async { Ok::<u64, ()>(black_box(1)) });
                eprintln!("pipeline5 future: {} bytes", std::mem::size_of_val(&f));
                eprintln!(
                    "tokio Sleep: {} bytes",
                    std::mem::size_of::<tokio::time::Sleep>()
                );
                let t = rampart_resilience::timeout::TimeoutConfig::default()
                    .build("x", &ev)
                    .unwrap();
                let tf = t.call(|| async { Ok::<u64, ()>(1) });
                eprintln!("timeout call future: {} bytes", std::mem::size_of_val(&tf));
                let r = rampart_resilience::retry::RetryConfig::default()
                    .build("x", &ev)
                    .unwrap();
                let rf = r.call(|| async { Ok::<u64, ()>(1) });
                eprintln!("retry call future: {} bytes", std::mem::size_of_val(&rf));
                let b = rampart_resilience::bulkhead::BulkheadConfig::default()
                    .build("x", &ev)
                    .unwrap();
                let bf = b.call(|| async { Ok::<u64, ()>(1) });
                eprintln!("bulkhead call future: {} bytes", std::mem::size_of_val(&bf));
                let l = rampart_resilience::rate_limit::RateLimitConfig::new(
                    1.0,
                    std::time::Duration::from_secs(1),
                )
                .build("x", &ev)
                .unwrap();
                let lf = l.acquire(1);
                eprintln!(
                    "rate limit acquire future: {} bytes",
                    std::mem::size_of_val(&lf)
                );
            }
            for _ in 0..n {
                let _ = black_box(ready(p.call(|| async { Ok::<u64, ()>(black_box(1)) })));
            }
        }
        "breaker_open" => {
            for _ in 0..100 {
                let _ = ready(breaker.call(|| async { Err::<u64, ()>(()) }));
            }
            for _ in 0..n {
                let _ = black_box(ready(
                    breaker.call(|| async { Ok::<u64, ()>(black_box(1)) }),
                ));
            }
        }
        // A limiter that admits every call (1e9 per second, burst 1000).
        "rate_limiter" => {
            let r = fast_limiter().build("hot", &Events::new()).unwrap();
            for _ in 0..n {
                let _ = black_box(r.try_acquire(black_box(1)));
            }
        }
        // A limiter whose burst is used up: every call is rejected.
        "rate_limiter_rejecting" => {
            let r = RateLimitConfig::new(1.0, Duration::from_secs(3600))
                .burst(1)
                .build("hot", &Events::new())
                .unwrap();
            let _ = r.try_acquire(1);
            for _ in 0..n {
                let _ = black_box(r.try_acquire(black_box(1)));
            }
        }
        // `call` through the admitting limiter (a future per call).
        "rate_limiter_call" => {
            let r = fast_limiter().build("hot", &Events::new()).unwrap();
            for _ in 0..n {
                let _ = black_box(ready(r.call(|| async { Ok::<u64, ()>(black_box(1)) })));
            }
        }
        // Keys 0..1000 in turn, all present.
        "rate_limiter_keyed" => {
            let r: KeyedRateLimiter<u64> =
                fast_limiter().build_keyed("hot", &Events::new()).unwrap();
            for k in 0..1000u64 {
                r.try_acquire(&k, 1).unwrap();
            }
            let mut key = 0u64;
            for _ in 0..n {
                key = if key + 1 == 1000 { 0 } else { key + 1 };
                let _ = black_box(r.try_acquire(black_box(&key), 1));
            }
        }
        // `Bulkhead::call` around the trivial call, a slot always free.
        "bulkhead_call" => {
            for _ in 0..n {
                let _ = black_box(ready(
                    bulkhead.call(|| async { Ok::<u64, ()>(black_box(1)) }),
                ));
            }
        }
        // An owned permit taken and dropped (`try_acquire`, as tower users and `acquire` get).
        "bulkhead_permit" => {
            for _ in 0..n {
                drop(black_box(bulkhead.try_acquire().unwrap()));
            }
        }
        // A pool of 16 no-op connections (as in benches/pool.rs): acquire, drop, sequentially.
        "pool_checkout" => {
            let config = rampart_pool::PoolConfig {
                max_size: 16,
                acquire_timeout: Duration::from_secs(3600),
                validation_bypass: Duration::from_secs(3600),
                keepalive_interval: Duration::ZERO,
                ..rampart_pool::PoolConfig::default()
            };
            let pool = config
                .build("hot", noop::Rampart, &rampart_pool::PoolEvents::new())
                .unwrap();
            rt.block_on(async {
                drop(pool.acquire().await.unwrap());
                for _ in 0..n {
                    drop(black_box(pool.acquire().await.unwrap()));
                }
            });
        }
        // The same with deadpool (no timeouts, its default), for scale.
        "pool_checkout_deadpool" => {
            let pool: deadpool::managed::Pool<noop::Deadpool> =
                deadpool::managed::Pool::builder(noop::Deadpool)
                    .max_size(16)
                    .build()
                    .unwrap();
            rt.block_on(async {
                drop(pool.get().await.unwrap());
                for _ in 0..n {
                    drop(black_box(pool.get().await.unwrap()));
                }
            });
        }
        // The same with bb8 (test_on_check_out off), for scale.
        "pool_checkout_bb8" => {
            let pool = bb8::Pool::builder()
                .max_size(16)
                .test_on_check_out(false)
                .connection_timeout(Duration::from_secs(3600))
                .build_unchecked(noop::Bb8);
            rt.block_on(async {
                drop(pool.get().await.unwrap());
                for _ in 0..n {
                    drop(black_box(pool.get().await.unwrap()));
                }
            });
        }
        // One latency recorded into a telemetry operation (the value varies so nothing folds).
        "histogram_record" => {
            let telemetry = rampart_telemetry::Telemetry::new();
            let op = telemetry.operation("hot");
            for i in 0..n {
                op.record_ok(Duration::from_micros(black_box(100 + (i & 1023) * 37)));
            }
        }
        // The same value into hdrhistogram directly (single-threaded, no atomics), for scale.
        "histogram_record_hdr" => {
            let mut h =
                hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
            for i in 0..n {
                let _ = h.record(black_box(100 + (i & 1023) * 37));
            }
            black_box(h.len());
        }
        other => panic!("unknown case {other}"),
    }
}

/// No-op connection managers for the pool cases: connecting and checking are ready `Ok`s.
mod noop {
    use std::convert::Infallible;

    pub(crate) struct Conn;
    pub(crate) struct Rampart;
    pub(crate) struct Deadpool;
    pub(crate) struct Bb8;

    impl rampart_pool::Manager for Rampart {
        type Connection = Conn;
        type Error = std::io::Error;
        async fn connect(&self) -> Result<Conn, std::io::Error> {
            Ok(Conn)
        }
        async fn is_valid(&self, _conn: &mut Conn) -> Result<(), std::io::Error> {
            Ok(())
        }
    }

    impl deadpool::managed::Manager for Deadpool {
        type Type = Conn;
        type Error = Infallible;
        async fn create(&self) -> Result<Conn, Infallible> {
            Ok(Conn)
        }
        async fn recycle(
            &self,
            _obj: &mut Conn,
            _metrics: &deadpool::managed::Metrics,
        ) -> deadpool::managed::RecycleResult<Infallible> {
            Ok(())
        }
    }

    impl bb8::ManageConnection for Bb8 {
        type Connection = Conn;
        type Error = Infallible;
        async fn connect(&self) -> Result<Conn, Infallible> {
            Ok(Conn)
        }
        async fn is_valid(&self, _conn: &mut Conn) -> Result<(), Infallible> {
            Ok(())
        }
        fn has_broken(&self, _conn: &mut Conn) -> bool {
            false
        }
    }
}
