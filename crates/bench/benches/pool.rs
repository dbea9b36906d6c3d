//! Connection pool checkout throughput against its peers: `deadpool` (0.13, `managed`) and `bb8`
//! (0.9).
//!
//! Each pool has 16 connections made by a no-op manager: connecting returns a unit-like connection
//! at once and every check (validation, recycle) is a trivially ready `Ok`. 1, 16, 256 or 1000
//! tasks on a tokio multi-thread runtime with 2 worker threads together do [`CHECKOUTS`] checkouts
//! per iteration, each an acquire followed at once by a drop (the connection goes back), so the
//! figure is the pool's own cost per checkout, contention included. Spawning and joining the tasks
//! is inside the timed batch, the same for every pool.
//!
//! Configured equivalently, and what each does per checkout:
//! - `rampart`: `max_size` 16, `acquire_timeout` 1h, `validation_bypass` 1h (so `is_valid` is
//!   never called on checkout: a connection is validated only when unused for longer than the
//!   bypass), keepalive off. Per checkout: a FIFO semaphore permit, a pop from the idle deque
//!   under a mutex, the manager's `reset` (a returned connection is marked dirty; the default
//!   `reset` is a ready `Ok`), the `acquire_timeout` timer around the wait, a few clock reads (wait
//!   histogram, `last_used`), counters and an `Arc` clone; on drop a push under the mutex, the
//!   permit back and a `Notify::notify_waiters`.
//! - `deadpool`: `max_size` 16, no timeouts (its default), FIFO queue mode (its default). Per
//!   checkout: a FIFO semaphore permit, a pop from the slot deque under a mutex, the manager's
//!   `recycle` (a ready `Ok`; deadpool's only recycling hook — `RecyclingMethod::Fast` belongs to
//!   deadpool-postgres and amounts to no check) and one clock read for its metrics, a `Weak` clone;
//!   on drop a push under the mutex and the permit back.
//! - `bb8`: `max_size` 16, `test_on_check_out` false, `connection_timeout` 1h. Per checkout: a
//!   pop from its idle list under a `parking_lot` mutex (no FIFO queue: waiters park on a
//!   `Notify`), the `connection_timeout` timer around the get, statistics counters; on drop a
//!   `has_broken` call, a clock read (lifetime), a push under the mutex and a `notify_one`.
//!
//! Allocations per checkout are counted on a current-thread runtime: one `block_on` of 100,000
//! sequential checkouts, divided.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

/// Checkouts per timed iteration, shared out among the tasks.
const CHECKOUTS: u64 = 20_000;
/// Connections in each pool.
const SIZE: usize = 16;
const LONG: Duration = Duration::from_secs(3600);

#[path = "common/noop.rs"]
mod noop;
use noop::{Bb8Noop, DeadpoolNoop, RampartNoop};

/// One checkout: acquire, then drop at once.
trait Checkout: Clone + Send + Sync + 'static {
    fn checkout(&self) -> impl Future<Output = ()> + Send;
    /// Takes all `SIZE` connections at once, so every pool starts the bench full.
    fn fill(&self) -> impl Future<Output = ()> + Send;
}

#[derive(Clone)]
struct Rampart(rampart_pool::Pool<RampartNoop>);

impl Checkout for Rampart {
    async fn checkout(&self) {
        drop(self.0.acquire().await.expect("checkout"));
    }
    async fn fill(&self) {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(self.0.acquire().await.expect("checkout"));
        }
    }
}

#[derive(Clone)]
struct Deadpool(deadpool::managed::Pool<DeadpoolNoop>);

impl Checkout for Deadpool {
    async fn checkout(&self) {
        drop(self.0.get().await.expect("checkout"));
    }
    async fn fill(&self) {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(self.0.get().await.expect("checkout"));
        }
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<Bb8Noop>);

impl Checkout for Bb8 {
    async fn checkout(&self) {
        drop(self.0.get().await.expect("checkout"));
    }
    async fn fill(&self) {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(self.0.get().await.expect("checkout"));
        }
    }
}

/// Builds the three pools; call inside the runtime they will run on.
fn pools() -> (Rampart, Deadpool, Bb8) {
    let config = rampart_pool::PoolConfig {
        max_size: SIZE,
        acquire_timeout: LONG,
        validation_bypass: LONG,
        keepalive_interval: Duration::ZERO,
        ..rampart_pool::PoolConfig::default()
    };
    let rampart = config
        .build("bench", RampartNoop, &rampart_pool::PoolEvents::new())
        .expect("valid config");
    let deadpool = deadpool::managed::Pool::builder(DeadpoolNoop)
        .max_size(SIZE)
        .build()
        .expect("valid config");
    let bb8 = bb8::Pool::builder()
        .max_size(SIZE as u32)
        .test_on_check_out(false)
        .connection_timeout(LONG)
        .build_unchecked(Bb8Noop);
    (Rampart(rampart), Deadpool(deadpool), Bb8(bb8))
}

/// `tasks` tasks that together do `CHECKOUTS` checkouts; returns when all are done.
async fn batch<P: Checkout>(pool: &P, tasks: u64) {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let pool = pool.clone();
            let n = CHECKOUTS / tasks + u64::from(i < CHECKOUTS % tasks);
            tokio::spawn(async move {
                for _ in 0..n {
                    pool.checkout().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
}

fn checkout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (rampart, deadpool, bb8) = {
        let _guard = rt.enter();
        pools()
    };
    rt.block_on(async {
        rampart.fill().await;
        deadpool.fill().await;
        bb8.fill().await;
    });
    let mut g = c.benchmark_group("pool_checkout");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CHECKOUTS));
    for tasks in [1u64, 16, 256, 1000] {
        g.bench_with_input(BenchmarkId::new("rampart", tasks), &tasks, |b, &t| {
            b.to_async(&rt).iter(|| batch(&rampart, t))
        });
        g.bench_with_input(BenchmarkId::new("deadpool", tasks), &tasks, |b, &t| {
            b.to_async(&rt).iter(|| batch(&deadpool, t))
        });
        g.bench_with_input(BenchmarkId::new("bb8", tasks), &tasks, |b, &t| {
            b.to_async(&rt).iter(|| batch(&bb8, t))
        });
    }
    g.finish();
    drop(rt);

    // Allocations: 100,000 sequential checkouts in one `block_on`, on a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (rampart, deadpool, bb8) = {
        let _guard = rt.enter();
        pools()
    };
    report_allocs(&rt, "pool_checkout/rampart", &rampart);
    report_allocs(&rt, "pool_checkout/deadpool", &deadpool);
    report_allocs(&rt, "pool_checkout/bb8", &bb8);
}

/// Prints `allocs: <case> <per-op> per operation` (read by `scripts/bench_report.py`).
fn report_allocs<P: Checkout>(rt: &tokio::runtime::Runtime, case: &str, pool: &P) {
    const N: u64 = 100_000;
    rt.block_on(pool.fill());
    let before = rampart_bench::allocations();
    rt.block_on(async {
        for _ in 0..N {
            pool.checkout().await;
        }
    });
    let per_op = (rampart_bench::allocations() - before) as f64 / N as f64;
    println!("allocs: {case} {per_op:.4} per operation");
}

criterion_group!(benches, checkout);
criterion_main!(benches);
