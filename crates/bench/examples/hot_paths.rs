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

fn ready<F: Future>(f: F) -> F::Output {
    f.now_or_never().expect("ready")
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
        other => panic!("unknown case {other}"),
    }
}
