//! `monitor_scale`: the monitor probing N HTTP targets at a 10 s interval against a local
//! keep-alive server (`rampart-load`'s `test_server`, started by `scripts/bench-monitor` in its
//! own process so its CPU is not counted here). Measured over a steady window after every target
//! has been probed once:
//!
//! - CPU: this process's user + system time over the window, as a share of one core;
//! - memory per target: resident memory growth from before the monitor started, per target;
//! - scheduling lag: from the tick a probe was due to the moment it started (p50, p99, max).
//!
//! ```sh
//! cargo run --release -p rampart-bench --example monitor_scale -- --server 127.0.0.1:18181 --targets 10000 --secs 60
//! ```
//!
//! `--fresh` probes on a fresh connection each time (the default of an HTTP target) instead of
//! keep-alive; `--interval-ms` changes the interval (probes per second = targets / interval).
//! Prints one JSON object.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use rampart_monitor::Monitor;
use rampart_monitor::config::{CheckConfig, HttpCheck, MonitorConfig, TargetConfig};
use rampart_monitor::heartbeat::HeartbeatTracker;
use rampart_monitor::scheduler::Limits;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

struct Args {
    server: String,
    targets: usize,
    secs: u64,
    interval_ms: u64,
    fresh: bool,
}

fn args() -> Args {
    let mut a = Args {
        server: "127.0.0.1:18181".into(),
        targets: 1000,
        secs: 60,
        interval_ms: 10_000,
        fresh: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--server" => a.server = it.next().unwrap(),
            "--targets" => a.targets = it.next().unwrap().parse().unwrap(),
            "--secs" => a.secs = it.next().unwrap().parse().unwrap(),
            "--interval-ms" => a.interval_ms = it.next().unwrap().parse().unwrap(),
            "--fresh" => a.fresh = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// (user + system CPU seconds, resident bytes) of this process, from /proc.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = 100.0; // CLK_TCK on Linux
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks;
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    (cpu, pages * 4096)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let interval = Duration::from_millis(a.interval_ms);
    let url: hyper::Uri = format!("http://{}/", a.server).parse().unwrap();
    let targets: Vec<TargetConfig> = (0..a.targets)
        .map(|i| {
            let mut check = HttpCheck::get(url.clone());
            check.keep_alive = !a.fresh;
            TargetConfig::new(format!("t{i}"), CheckConfig::Http(Box::new(check)))
                .with_timing(interval, interval.min(Duration::from_secs(5)))
        })
        .collect();
    let config = MonitorConfig::new(targets).unwrap();
    let (_, rss_before) = usage();
    let monitor = Monitor::with_tracker(
        &config,
        Limits::new(512, 512),
        HeartbeatTracker::from_config(&config),
    );
    let mut results = monitor.subscribe_results();
    // Warm-up: one interval (every target probed once) plus a second.
    let warm_until = Instant::now() + interval + Duration::from_secs(1);
    let mut lagged = 0u64;
    while Instant::now() < warm_until {
        match tokio::time::timeout_at(warm_until, results.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(RecvError::Lagged(n))) => lagged += n,
            Ok(Err(RecvError::Closed)) => break,
        }
    }
    let (cpu0, rss_warm) = usage();
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let mut lag = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut probes, mut failures) = (0u64, 0u64);
    while Instant::now() < end {
        match tokio::time::timeout_at(end, results.recv()).await {
            Ok(Ok(r)) => {
                probes += 1;
                failures += u64::from(!r.result.is_success());
                let us = r.started.saturating_duration_since(r.scheduled).as_micros() as u64;
                lag.record(us.max(1)).unwrap();
            }
            Ok(Err(RecvError::Lagged(n))) => lagged += n,
            Ok(Err(RecvError::Closed)) | Err(_) => break,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let (cpu1, rss_end) = usage();
    let cpu = cpu1 - cpu0;
    println!(
        "{}",
        serde_json::json!({
            "targets": a.targets,
            "interval_ms": a.interval_ms,
            "keep_alive": !a.fresh,
            "window_s": wall,
            "probes": probes,
            "failures": failures,
            "lagged_events": lagged,
            "probes_per_s": probes as f64 / wall,
            "cpu_cores": cpu / wall,
            "probes_per_cpu_s": if cpu > 0.0 { probes as f64 / cpu } else { 0.0 },
            "rss_before_mb": rss_before as f64 / 1e6,
            "rss_end_mb": rss_end as f64 / 1e6,
            "bytes_per_target": rss_end.max(rss_warm).saturating_sub(rss_before) as f64 / a.targets as f64,
            "lag_p50_ms": lag.value_at_quantile(0.50) as f64 / 1000.0,
            "lag_p99_ms": lag.value_at_quantile(0.99) as f64 / 1000.0,
            "lag_max_ms": lag.max() as f64 / 1000.0,
        })
    );
    monitor.shutdown(Duration::from_secs(2)).await;
}
