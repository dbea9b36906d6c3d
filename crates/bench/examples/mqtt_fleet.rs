//! N simulated devices, each with its own MQTT connection to a throwaway Mosquitto, heartbeat
//! every interval; one registry client (`rampart_connect::mqtt::registry`) tracks them all on a
//! thread of its own. Reports, per fleet size: heartbeats processed per second, the registry
//! thread's CPU per heartbeat and as a share of one core, and bytes per device (heap measured
//! with a counting allocator, and the registry's own estimate). Also a reconnect storm: after a
//! broker restart, the peak of connects per 100 ms with the client's jittered backoff.
//!
//! ```sh
//! ulimit -n 65536   # 10,000 devices need ~10,000 descriptors here and at the broker
//! cargo run --release -p rampart-bench --example mqtt_fleet -- 1000 10000
//! ```
//! Environment: `INTERVAL_SECS` (default 10), `WINDOW_SECS` (measurement, default 20).
//! Writes `<target>/rampart-bench/mqtt_fleet.json`.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use rampart_connect::mqtt::registry::{RegistryConfig, RegistryHandle};
use rampart_connect::mqtt::{ConnectionEvent, MqttClient, MqttConfig, QoS};
use rampart_testkit::server::Mosquitto;
use tokio::time::Instant;

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    )
}

fn topic(i: usize) -> String {
    format!("devices/group-{}/device-{i:05}/status", i % 10)
}

/// Heap bytes per device of a registry holding `n` devices, measured (the live bytes the
/// registry adds), and the registry's own estimate.
fn measured_bytes_per_device(n: usize) -> (f64, f64) {
    let config = RegistryConfig::new("devices/{group}/{id}/status");
    let topics: Vec<String> = (0..n).map(topic).collect();
    let now = Instant::now();
    let before = rampart_bench::live_bytes();
    let mut registry = config.build("registry").unwrap();
    for t in &topics {
        registry.observe(t, b"up", now);
    }
    let measured = rampart_bench::live_bytes().saturating_sub(before) as f64 / n as f64;
    let estimate = registry.approx_bytes() as f64 / n as f64;
    (measured, estimate)
}

/// Heartbeats until `until`: device i at offset i/n of each interval.
async fn heartbeat(devices: &[MqttClient], interval: Duration, until: Instant) {
    let n = devices.len();
    let start = Instant::now();
    let mut k: u64 = 0;
    loop {
        let at = start + interval.mul_f64(k as f64 / n as f64);
        if at >= until {
            return;
        }
        tokio::time::sleep_until(at).await;
        let i = (k as usize) % n;
        let _ = devices[i].try_publish(topic(i), QoS::AtMostOnce, false, "up");
        k += 1;
    }
}

struct Figures {
    devices: usize,
    heartbeats_per_sec: f64,
    expected_per_sec: f64,
    cpu_ns_per_heartbeat: f64,
    core_share_percent: f64,
    bytes_measured: f64,
    bytes_estimate: f64,
    storm_peak_per_100ms: usize,
    storm_spread_secs: f64,
    immediate_peak: usize,
    immediate_spread: f64,
}

/// `n` fresh clients with reconnect backoff `base_delay` (full jitter, ceiling doubling to 5 s)
/// lose the broker to a restart; returns the peak of reconnects in any 100 ms and the time until
/// the last one, from the moment the broker was killed.
async fn storm(broker: &mut Mosquitto, n: usize, base_delay: Duration) -> (usize, f64) {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = MqttConfig::new(broker.url(), format!("storm-{i}"));
        c.reconnect.base_delay = base_delay;
        c.reconnect.max_delay = Duration::from_secs(5).max(base_delay);
        c.breaker.consecutive_failures = 100_000;
        clients.push(c.connect("mqtt").unwrap().0);
    }
    for c in &clients {
        c.wait_connected(Duration::from_secs(120)).await.unwrap();
    }
    let killed = Instant::now();
    let mut waiters = tokio::task::JoinSet::new();
    for c in &clients {
        let mut events = c.events();
        waiters.spawn(async move {
            let mut lost = false;
            loop {
                match events.recv().await {
                    Ok(ConnectionEvent::Disconnected { .. }) => lost = true,
                    Ok(ConnectionEvent::Connected { .. }) if lost => return Some(killed.elapsed()),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        });
    }
    broker.restart().await.unwrap();
    let mut times = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, waiters.join_next()).await {
        if let Ok(Some(t)) = joined {
            times.push(t);
        }
    }
    let mut buckets = std::collections::HashMap::<u128, usize>::new();
    for t in &times {
        *buckets.entry(t.as_millis() / 100).or_default() += 1;
    }
    let peak = buckets.values().copied().max().unwrap_or(0);
    let spread = times
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    (peak, spread)
}

async fn run(n: usize, interval: Duration, window: Duration, bytes: (f64, f64)) -> Figures {
    let mut broker = Mosquitto::start().await.expect("mosquitto");
    let url = broker.url();

    // The registry on a thread (and runtime) of its own, so its CPU time is its own.
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (out_tx, out_rx) = std::sync::mpsc::channel::<(u64, Duration, usize)>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let registry_url = url.clone();
    let registry_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, messages) = MqttConfig::new(registry_url, "registry")
                .connect("mqtt")
                .unwrap();
            client
                .wait_connected(Duration::from_secs(10))
                .await
                .unwrap();
            let mut config = RegistryConfig::new("devices/{group}/{id}/status");
            config.heartbeat_interval = interval;
            let registry = RegistryHandle::spawn(config.build("r").unwrap(), client, messages)
                .await
                .unwrap();
            ready_tx.send(()).unwrap();
            let _ = start_rx.await;
            let hb0 = registry.summary(None).heartbeats;
            let cpu0 = thread_cpu();
            let _ = stop_rx.await;
            let hb1 = registry.summary(None).heartbeats;
            let cpu1 = thread_cpu();
            let online = registry.summary(None).online;
            out_tx.send((hb1 - hb0, cpu1 - cpu0, online)).unwrap();
        });
    });
    ready_rx.await.unwrap();

    let mut devices: Vec<MqttClient> = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = MqttConfig::new(url.clone(), format!("device-{i}"));
        c.keep_alive = Duration::from_secs(60);
        c.reconnect.base_delay = Duration::from_secs(2);
        c.reconnect.max_delay = Duration::from_secs(5);
        c.breaker.consecutive_failures = 1000;
        devices.push(c.connect("mqtt").unwrap().0);
    }
    for d in &devices {
        d.wait_connected(Duration::from_secs(120)).await.unwrap();
    }
    eprintln!("{n} devices connected");

    // Warm-up: one interval, so every device is known.
    heartbeat(&devices, interval, Instant::now() + interval).await;
    start_tx.send(()).unwrap();
    let t0 = Instant::now();
    heartbeat(&devices, interval, t0 + window).await;
    let wall = t0.elapsed();
    stop_tx.send(()).unwrap();
    let (heartbeats, cpu, online) = out_rx.recv().unwrap();
    registry_thread.join().unwrap();
    eprintln!("{online} of {n} online at the end");

    drop(devices);
    let (storm_peak_per_100ms, storm_spread_secs) =
        storm(&mut broker, n, Duration::from_secs(2)).await;
    let (immediate_peak, immediate_spread) = storm(&mut broker, n, Duration::from_millis(1)).await;

    let (bytes_measured, bytes_estimate) = bytes;
    Figures {
        devices: n,
        heartbeats_per_sec: heartbeats as f64 / wall.as_secs_f64(),
        expected_per_sec: n as f64 / interval.as_secs_f64(),
        cpu_ns_per_heartbeat: cpu.as_nanos() as f64 / heartbeats.max(1) as f64,
        core_share_percent: cpu.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        bytes_measured,
        bytes_estimate,
        storm_peak_per_100ms,
        storm_spread_secs,
        immediate_peak,
        immediate_spread,
    }
}

fn out_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    target.join("rampart-bench")
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![1000] } else { sizes };
    let interval = env_secs("INTERVAL_SECS", 10);
    let window = env_secs("WINDOW_SECS", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    println!(
        "| devices | heartbeats/s (expected) | registry CPU ns/heartbeat | share of a core | bytes/device measured (estimate) | restart storm, jittered backoff: peak connects per 100 ms, last after | immediate reconnect: peak, last after |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    // Measured first, while no other thread allocates or frees.
    let bytes: Vec<(f64, f64)> = sizes
        .iter()
        .map(|&n| measured_bytes_per_device(n))
        .collect();
    for (n, bytes) in sizes.into_iter().zip(bytes) {
        let f = rt.block_on(run(n, interval, window, bytes));
        println!(
            "| {} | {:.0} ({:.0}) | {:.0} | {:.2}% | {:.0} ({:.0}) | {}, {:.1} s | {}, {:.1} s |",
            f.devices,
            f.heartbeats_per_sec,
            f.expected_per_sec,
            f.cpu_ns_per_heartbeat,
            f.core_share_percent,
            f.bytes_measured,
            f.bytes_estimate,
            f.storm_peak_per_100ms,
            f.storm_spread_secs,
            f.immediate_peak,
            f.immediate_spread
        );
        for (case, value, unit) in [
            ("heartbeats_per_sec", f.heartbeats_per_sec, "1/s"),
            ("cpu_per_heartbeat", f.cpu_ns_per_heartbeat, "ns"),
            ("core_share", f.core_share_percent, "%"),
            ("bytes_per_device", f.bytes_measured, "bytes"),
        ] {
            rows.push(format!(
                "{{\"case\": \"{case}@{}\", \"rampart\": {value:.3}, \"peer\": null, \"peer_value\": null, \"unit\": \"{unit}\", \"ratio\": null}}",
                f.devices
            ));
        }
        rows.push(format!(
            "{{\"case\": \"storm_peak_per_100ms@{}\", \"rampart\": {}, \"peer\": \"immediate reconnect\", \"peer_value\": {}, \"unit\": \"connects\", \"ratio\": {:.3}}}",
            f.devices,
            f.storm_peak_per_100ms,
            f.immediate_peak,
            f.immediate_peak as f64 / f.storm_peak_per_100ms.max(1) as f64
        ));
    }
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mqtt_fleet.json"),
        format!(
            "{{\"bench\": \"mqtt_fleet\", \"rows\": [{}]}}\n",
            rows.join(", ")
        ),
    )
    .unwrap();
}
