//! How many probe results per second the SQLite history store makes durable.
//!
//! `cargo run --release -p rampart-monitor --example store_throughput [results]`
//!
//! Three runs on a fresh file in a temp dir:
//! - **concurrent**: 500 tasks (think: probes) each awaiting its own one-result write, so group
//!   commit has to gather them;
//! - **batched**: writes of 100 results each, from 8 tasks;
//! - **idle**: one write at a time, each awaited before the next: the latency of a durable
//!   write when there is nothing to group with.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rampart_monitor::probe::ProbeResult;
use rampart_monitor::store::{Batch, ResultRecord, SqliteConfig, SqliteStore, Store};

fn record(seq: u64) -> ResultRecord {
    let latency = Duration::from_micros(200 + seq * 7919 % 50_000);
    ResultRecord::new(
        format!("target-{}", seq % 100),
        SystemTime::now(),
        &ProbeResult::success(latency),
    )
}

/// Writes `total` results from `tasks` tasks, `per_write` per write; returns results per second.
async fn run(store: &Arc<SqliteStore>, total: u64, tasks: u64, per_write: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (store, next) = (Arc::clone(store), Arc::clone(&next));
        set.spawn(async move {
            loop {
                let first = next.fetch_add(per_write, Ordering::Relaxed);
                if first >= total {
                    return;
                }
                let batch = Batch::new().with_results((first..first + per_write).map(record));
                if let Err(e) = store.write(batch).await {
                    eprintln!("write failed: {e}");
                    return;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let total: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let dir = tempfile::tempdir()?;
    let store =
        Arc::new(SqliteStore::open(dir.path().join("history.db"), SqliteConfig::default()).await?);

    let concurrent = run(&store, total, 500, 1).await;
    println!("concurrent: {concurrent:>9.0} results/s (500 tasks, 1 result per write)");
    let batched = run(&store, total, 8, 100).await;
    println!("batched:    {batched:>9.0} results/s (8 tasks, 100 results per write)");

    let grouped = store.writer_stats();
    println!(
        "            {:.0} writes per commit on average over both runs",
        grouped.writes as f64 / grouped.commits.max(1) as f64
    );

    let writes = 2_000u32;
    let started = Instant::now();
    for seq in 0..u64::from(writes) {
        store.write(Batch::new().result(record(seq))).await?;
    }
    let each = started.elapsed() / writes;
    println!("idle:       {each:>9.1?} per durable write (one at a time)");
    Ok(())
}
