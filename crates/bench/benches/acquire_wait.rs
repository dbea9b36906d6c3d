//! Acquire wait under heavy contention: 1000 client tasks on 16 connections, against `deadpool`
//! (0.13, `managed`) and `bb8` (0.9).
//!
//! Each pool has 16 connections made by a no-op manager (as in `benches/pool.rs`, configured the
//! same way) on a tokio multi-thread runtime with 2 worker threads. 1000 tasks each loop for
//! [`RUN`]: acquire, hold the connection through a simulated query (`tokio::time::sleep` of
//! [`QUERY`], so in practice tokio's 1 ms timer tick), release. The wait of every acquire
//! (`Instant` before and after) goes into the task's own pre-allocated `Vec`, merged at the end.
//!
//! Printed per pool: p50, p99, p99.9 and max wait, total acquires, and how many of the tasks were
//! served at least once (fairness). Written to `<target>/rampart-bench/acquire_wait.json` in the
//! `BENCHMARKS.md` row format: p50 and p99 against each peer, in µs, ratio = peer / rampart (> 1:
//! Rampart's waits are shorter).
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Connections in each pool.
const SIZE: usize = 16;
/// Client tasks.
const TASKS: usize = 1000;
/// How long every task keeps acquiring.
const RUN: Duration = Duration::from_secs(2);
/// The simulated query, with the connection held.
const QUERY: Duration = Duration::from_micros(200);
/// Time given to spawn every task before they all start together.
const SPAWN_MARGIN: Duration = Duration::from_millis(100);
/// Waits pre-allocated per task: far more than a fair share (16 connections for 2 s at no less
/// than 200 µs a query is at most 160,000 acquires, 160 a task).
const PER_TASK: usize = 1024;
const LONG: Duration = Duration::from_secs(3600);

#[path = "common/noop.rs"]
mod noop;
use noop::{Bb8Noop, DeadpoolNoop, RampartNoop};

/// A pool under test: acquire gives a guard that returns the connection when dropped.
trait Acquire: Clone + Send + Sync + 'static {
    type Guard: Send;
    fn acquire(&self) -> impl Future<Output = Self::Guard> + Send;
}

#[derive(Clone)]
struct Rampart(rampart_pool::Pool<RampartNoop>);

impl Acquire for Rampart {
    type Guard = rampart_pool::Pooled<RampartNoop>;
    async fn acquire(&self) -> Self::Guard {
        self.0.acquire().await.expect("acquire")
    }
}

#[derive(Clone)]
struct Deadpool(deadpool::managed::Pool<DeadpoolNoop>);

impl Acquire for Deadpool {
    type Guard = deadpool::managed::Object<DeadpoolNoop>;
    async fn acquire(&self) -> Self::Guard {
        self.0.get().await.expect("acquire")
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<Bb8Noop>);

impl Acquire for Bb8 {
    type Guard = bb8::PooledConnection<'static, Bb8Noop>;
    async fn acquire(&self) -> Self::Guard {
        self.0.get_owned().await.expect("acquire")
    }
}

/// What one pool's run measured.
struct Stats {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    acquires: usize,
    served: usize,
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Fills `pool` (all `SIZE` connections made up front), then runs the clients.
fn run<P: Acquire>(rt: &tokio::runtime::Runtime, pool: &P) -> Stats {
    rt.block_on(async {
        let mut held = Vec::with_capacity(SIZE);
        for _ in 0..SIZE {
            held.push(pool.acquire().await);
        }
        drop(held);

        let start = tokio::time::Instant::now() + SPAWN_MARGIN;
        let end = start + RUN;
        let handles: Vec<_> = (0..TASKS)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut waits = Vec::with_capacity(PER_TASK);
                    tokio::time::sleep_until(start).await;
                    while tokio::time::Instant::now() < end {
                        let before = Instant::now();
                        let conn = pool.acquire().await;
                        waits.push(u64::try_from(before.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        tokio::time::sleep(QUERY).await;
                        drop(conn);
                    }
                    waits
                })
            })
            .collect();
        let mut all = Vec::with_capacity(TASKS * PER_TASK);
        let mut served = 0;
        for h in handles {
            let waits = h.await.expect("task");
            served += usize::from(!waits.is_empty());
            all.extend(waits);
        }
        all.sort_unstable();
        Stats {
            p50: percentile(&all, 50.0),
            p99: percentile(&all, 99.0),
            p999: percentile(&all, 99.9),
            max: *all.last().expect("some acquires"),
            acquires: all.len(),
            served,
        }
    })
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn print(name: &str, s: &Stats) {
    println!(
        "acquire_wait/{name}: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us, \
         {} acquires, {}/{TASKS} tasks served",
        us(s.p50),
        us(s.p99),
        us(s.p999),
        us(s.max),
        s.acquires,
        s.served,
    );
}

/// `<target>/rampart-bench`: `CARGO_TARGET_DIR` (relative to the workspace root) or `target`.
fn out_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    target.join("rampart-bench")
}

fn main() {
    let rt = runtime();
    let config = rampart_pool::PoolConfig {
        max_size: SIZE,
        acquire_timeout: LONG,
        validation_bypass: LONG,
        keepalive_interval: Duration::ZERO,
        ..rampart_pool::PoolConfig::default()
    };
    let rampart = {
        let _guard = rt.enter();
        Rampart(
            config
                .build("bench", RampartNoop, &rampart_pool::PoolEvents::new())
                .expect("valid config"),
        )
    };
    let ours = run(&rt, &rampart);
    drop((rampart, rt));
    print("rampart", &ours);

    let rt = runtime();
    let deadpool = Deadpool(
        deadpool::managed::Pool::builder(DeadpoolNoop)
            .max_size(SIZE)
            .build()
            .expect("valid config"),
    );
    let dp = run(&rt, &deadpool);
    drop((deadpool, rt));
    print("deadpool", &dp);

    let rt = runtime();
    let bb8 = {
        let _guard = rt.enter();
        Bb8(bb8::Pool::builder()
            .max_size(SIZE as u32)
            .test_on_check_out(false)
            .connection_timeout(LONG)
            .build_unchecked(Bb8Noop))
    };
    let b = run(&rt, &bb8);
    drop((bb8, rt));
    print("bb8", &b);

    let mut rows = Vec::new();
    for (peer, theirs) in [("deadpool", &dp), ("bb8", &b)] {
        for (case, x, y) in [
            ("p50_wait_1000_on_16", ours.p50, theirs.p50),
            ("p99_wait_1000_on_16", ours.p99, theirs.p99),
        ] {
            let (x, y) = (us(x), us(y));
            let ratio = if x > 0.0 {
                format!("{}", y / x)
            } else {
                "null".to_owned()
            };
            rows.push(format!(
                "    {{\"case\": \"{case}\", \"rampart\": {x}, \"peer\": \"{peer}\", \
                 \"peer_value\": {y}, \"unit\": \"us\", \"ratio\": {ratio}}}"
            ));
        }
    }
    let mut json = String::from("{\"bench\": \"acquire_wait\", \"rows\": [\n");
    json.push_str(&rows.join(",\n"));
    json.push_str("\n]}\n");
    let dir = out_dir();
    std::fs::create_dir_all(&dir).expect("create output dir");
    let path = dir.join("acquire_wait.json");
    std::fs::write(&path, &json).expect("write json");
    println!("acquire_wait: wrote {}", path.display());
}
