#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Host, process and runtime collectors against the real machine and real tokio runtimes.
//!
//! Every test holds `SERIAL`: the process tests count this process's open files, threads and
//! memory, which any other test running at the same time (reading `/proc`, starting a runtime,
//! opening sockets) would disturb. Runtimes are built inside the lock for the same reason.

use rampart_telemetry::{
    HostCollector, HostConfig, MetricKind, ProcessCollector, RuntimeCollector, Snapshot, Telemetry,
    Unit, Value,
};
use std::io::{Read, Write};
use std::sync::{Barrier, Mutex, MutexGuard, mpsc};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the OS on every snapshot, so a test sees what it just did.
fn every_read() -> HostConfig {
    HostConfig::default().with_min_interval(Duration::ZERO)
}

fn host() -> Telemetry {
    let telemetry = Telemetry::new();
    telemetry.register_collector(HostCollector::with_config(every_read()).unwrap());
    telemetry
}

fn process() -> Telemetry {
    let telemetry = Telemetry::new();
    telemetry.register_collector(ProcessCollector::with_config(every_read()).unwrap());
    telemetry
}

/// A runtime on tokio's paused clock, for the collectors' own timing logic.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn gauge(s: &Snapshot, family: &str, labels: &[(&str, &str)]) -> f64 {
    match s.value(family, labels) {
        Some(Value::Gauge(v)) => *v,
        other => panic!("{family}{labels:?}: expected a gauge, got {other:?}"),
    }
}

fn counter(s: &Snapshot, family: &str, labels: &[(&str, &str)]) -> f64 {
    match s.value(family, labels) {
        Some(Value::Counter(v)) => *v,
        other => panic!("{family}{labels:?}: expected a counter, got {other:?}"),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

// ---- host ----

#[test]
fn host_memory_size_matches_proc_meminfo() {
    let _serial = serial();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let s = host().snapshot();
    let size = gauge(&s, "rampart_host_memory_size", &[]);
    assert!((size - kib * 1024.0).abs() < 1024.0, "{size} vs {kib} KiB");
    for part in ["used", "available", "free"] {
        let v = gauge(&s, &format!("rampart_host_memory_{part}"), &[]);
        assert!(v > 0.0 && v <= size, "memory {part} = {v} of {size}");
    }
    assert!(gauge(&s, "rampart_host_swap_used", &[]) <= gauge(&s, "rampart_host_swap_size", &[]));
    let family = s.family("rampart_host_memory_size").unwrap();
    assert_eq!(
        (family.kind, family.unit.clone()),
        (MetricKind::Gauge, Some(Unit::Bytes))
    );
}

#[test]
fn host_counts_online_cpus_and_reports_usage_per_core_once_a_second_sample_exists() {
    let _serial = serial();
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let online = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let telemetry = host();
    // CPU usage is a difference of the kernel's CPU times between two samples; the collector
    // took the first when it was made and needs the second at least 200 ms later. This wait is
    // that measurement interval, not synchronisation.
    std::thread::sleep(Duration::from_millis(250));
    let s = telemetry.snapshot();
    assert_eq!(gauge(&s, "rampart_host_cpus", &[]), online as f64);
    let total = gauge(&s, "rampart_host_cpu_usage", &[]);
    assert!((0.0..=1.0).contains(&total), "usage {total}");
    let cores = s.family("rampart_host_cpu_core_usage").unwrap();
    assert_eq!(cores.unit, Some(Unit::Ratio));
    assert_eq!(cores.series.len(), online);
    for i in 0..online {
        let v = gauge(
            &s,
            "rampart_host_cpu_core_usage",
            &[("cpu", &i.to_string())],
        );
        assert!((0.0..=1.0).contains(&v), "cpu {i} usage {v}");
    }
}

#[test]
fn host_leaves_cpu_usage_out_until_a_second_sample_exists() {
    let _serial = serial();
    let rt = paused_runtime();
    rt.block_on(async {
        let s = host().snapshot();
        assert!(gauge(&s, "rampart_host_cpus", &[]) >= 1.0);
        assert_eq!(s.family("rampart_host_cpu_usage"), None);
        assert_eq!(s.family("rampart_host_cpu_core_usage"), None);
    });
}

#[test]
fn host_reads_the_os_at_most_once_per_min_interval() {
    let _serial = serial();
    let rt = paused_runtime();
    rt.block_on(async {
        let telemetry = Telemetry::new();
        telemetry.register_collector(HostCollector::new().unwrap());
        let first = telemetry.snapshot();
        tokio::time::advance(Duration::from_millis(999)).await;
        let cached = telemetry.snapshot();
        assert_eq!(counter(&first, "rampart_host_refreshes", &[]), 1.0);
        assert_eq!(
            first.family("rampart_host_network"),
            cached.family("rampart_host_network"),
            "values within the interval come from the cache"
        );
        assert_eq!(counter(&cached, "rampart_host_refreshes", &[]), 1.0);
        tokio::time::advance(Duration::from_millis(1)).await;
        let fresh = telemetry.snapshot();
        assert_eq!(counter(&fresh, "rampart_host_refreshes", &[]), 2.0);
        assert!(gauge(&fresh, "rampart_host_refresh_duration", &[]) >= 0.0);
    });
}

/// Sends `bytes` over a loopback TCP connection and waits until the peer has read them all.
fn send_over_loopback(bytes: usize) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        conn.read_to_end(&mut sink).unwrap();
        sink.len()
    });
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(&vec![7u8; bytes]).unwrap();
    drop(conn);
    assert_eq!(reader.join().unwrap(), bytes);
}

#[test]
fn loopback_traffic_grows_the_lo_interface_counters() {
    let _serial = serial();
    let telemetry = host();
    let lo = |s: &Snapshot, family: &str, direction: &str| {
        counter(s, family, &[("interface", "lo"), ("direction", direction)])
    };
    let before = telemetry.snapshot();
    send_over_loopback(1 << 20);
    let after = telemetry.snapshot();
    for direction in ["receive", "transmit"] {
        let grown = lo(&after, "rampart_host_network", direction)
            - lo(&before, "rampart_host_network", direction);
        assert!(grown >= MIB, "lo {direction} grew by {grown} bytes");
        let packets = lo(&after, "rampart_host_network_packets", direction)
            - lo(&before, "rampart_host_network_packets", direction);
        assert!(packets > 0.0, "lo {direction} packets grew by {packets}");
        assert!(lo(&after, "rampart_host_network_errors", direction) >= 0.0);
    }
    let family = after.family("rampart_host_network").unwrap();
    assert_eq!(
        (family.kind, family.unit.clone()),
        (MetricKind::Counter, Some(Unit::Bytes))
    );
}

/// The kernel name (`vda`) of the device mounted on `/`, from `/proc/mounts`.
fn root_device() -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let node = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"/") && f[0].starts_with("/dev/"))
        .map(|f| f[0].to_owned())
        .expect("/ is mounted from a block device");
    let resolved = std::fs::canonicalize(&node).unwrap();
    resolved
        .strip_prefix("/dev")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn sectors_read(device: &str) -> f64 {
    let stats = std::fs::read_to_string("/proc/diskstats").unwrap();
    stats
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&device))
        .map(|f| f[5].parse().unwrap())
        .expect("the root device in /proc/diskstats")
}

#[test]
fn root_file_system_reports_size_above_used_above_zero_and_its_device_io() {
    let _serial = serial();
    let device = root_device();
    let read_before = sectors_read(&device) * 512.0;
    let s = host().snapshot();
    let root = [("mount", "/")];
    let size = gauge(&s, "rampart_host_disk_size", &root);
    let used = gauge(&s, "rampart_host_disk_used", &root);
    let available = gauge(&s, "rampart_host_disk_available", &root);
    assert!(size > used && used > 0.0, "size {size}, used {used}");
    assert!(
        available <= size - used,
        "available {available}, free {}",
        size - used
    );
    assert!(
        gauge(&s, "rampart_host_disk_inodes_free", &root)
            <= gauge(&s, "rampart_host_disk_inodes", &root)
    );

    let io = [("device", device.as_str()), ("direction", "read")];
    assert!(counter(&s, "rampart_host_disk_io", &io) >= read_before);
    assert!(counter(&s, "rampart_host_disk_operations", &io) > 0.0);
    assert!(counter(&s, "rampart_host_disk_busy", &[("device", &device)]) > 0.0);
}

#[test]
fn host_reports_load_average_and_boot_time() {
    let _serial = serial();
    let s = host().snapshot();
    for period in ["1m", "5m", "15m"] {
        let load = gauge(&s, "rampart_host_load_average", &[("period", period)]);
        assert!(load.is_finite() && load >= 0.0, "load {period} = {load}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let boot = gauge(&s, "rampart_host_boot_time", &[]);
    assert!(boot > 0.0 && boot < now, "boot time {boot}, now {now}");
}

// ---- process ----

#[test]
fn process_resident_memory_grows_after_touching_64_mib() {
    let _serial = serial();
    let telemetry = process();
    let before = telemetry.snapshot();
    // `vec![1; n]` writes every byte, so every page is touched and becomes resident.
    let block = std::hint::black_box(vec![1u8; 64 << 20]);
    let after = telemetry.snapshot();
    let rss = |s: &Snapshot| gauge(s, "rampart_process_resident_memory", &[]);
    let vm = |s: &Snapshot| gauge(s, "rampart_process_virtual_memory", &[]);
    assert!(
        rss(&after) - rss(&before) >= 60.0 * MIB,
        "rss grew by {}",
        rss(&after) - rss(&before)
    );
    assert!(vm(&after) - vm(&before) >= 64.0 * MIB);
    assert!(vm(&after) >= rss(&after));
    drop(block);
}

#[test]
fn process_open_files_grow_by_the_files_opened() {
    let _serial = serial();
    let telemetry = process();
    let open = |s: &Snapshot| gauge(s, "rampart_process_open_files", &[]);
    let before = telemetry.snapshot();
    let files: Vec<_> = (0..20)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let after = telemetry.snapshot();
    assert!(
        open(&after) - open(&before) >= 20.0,
        "{} -> {}",
        open(&before),
        open(&after)
    );
    assert!(gauge(&after, "rampart_process_open_files_limit", &[]) > open(&after));
    drop(files);
    let closed = telemetry.snapshot();
    assert!(open(&after) - open(&closed) >= 20.0);
}

fn tasks_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn process_threads_match_the_kernels_task_list() {
    let _serial = serial();
    let telemetry = process();
    let (release, parked) = mpsc::channel::<()>();
    let parked = std::sync::Arc::new(Mutex::new(parked));
    let started = std::sync::Arc::new(Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (parked, started) = (parked.clone(), started.clone());
            std::thread::spawn(move || {
                started.wait();
                let _ = parked.lock().unwrap().recv();
            })
        })
        .collect();
    started.wait();
    // Threads of tests that just finished may still be exiting, never starting: the count
    // only falls while this test holds the lock.
    let before = tasks_of_this_process();
    let threads_now = gauge(&telemetry.snapshot(), "rampart_process_threads", &[]);
    let after = tasks_of_this_process();
    assert!(
        (after as f64..=before as f64).contains(&threads_now),
        "{threads_now} threads, /proc/self/task had {before} then {after}"
    );
    assert!(threads_now >= 5.0);
    drop(release);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn process_cpu_time_grows_while_spinning_and_usage_follows() {
    let _serial = serial();
    let telemetry = process();
    let before = telemetry.snapshot();
    // Burn CPU for 250 ms: the work being measured, and the 200 ms the usage figure needs.
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(250) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    let after = telemetry.snapshot();
    let cpu = |s: &Snapshot| counter(s, "rampart_process_cpu", &[]);
    assert!(
        cpu(&after) > cpu(&before),
        "{} -> {}",
        cpu(&before),
        cpu(&after)
    );
    assert_eq!(before.family("rampart_process_cpu_usage"), None);
    let usage = gauge(&after, "rampart_process_cpu_usage", &[]);
    assert!(usage > 0.0 && usage <= 1.0, "usage {usage}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start_time = gauge(&after, "rampart_process_start_time", &[]);
    assert!(start_time > 0.0 && start_time <= now);
    assert!(gauge(&after, "rampart_process_uptime", &[]) <= now - start_time + 1.0);
    assert!(
        counter(
            &after,
            "rampart_process_context_switches",
            &[("kind", "voluntary")]
        ) > 0.0
    );
}

// ---- runtime ----

fn spin(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn runtime_collector_reports_two_workers_and_their_busy_time() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let collector = RuntimeCollector::new(rt.handle().clone());
    let before = collector.sample();
    rt.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| tokio::spawn(async { spin(Duration::from_millis(20)) }))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Tokio publishes a worker's busy time when the worker parks, just after the tasks finish:
    // wait for it, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while collector.sample().busy() < Duration::from_millis(80) {
        assert!(
            std::time::Instant::now() < deadline,
            "busy {:?}",
            collector.sample().busy()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let telemetry = Telemetry::new();
    telemetry.register_collector(collector.clone());
    let s = telemetry.snapshot();
    assert_eq!(gauge(&s, "rampart_runtime_workers", &[]), 2.0);
    let busy = counter(&s, "rampart_runtime_busy", &[]);
    assert!(busy >= 0.08, "4 tasks spun 20 ms each, busy {busy} s");
    let per_worker: f64 = ["0", "1"]
        .iter()
        .map(|w| counter(&s, "rampart_runtime_worker_busy", &[("worker", w)]))
        .sum();
    assert!((per_worker - busy).abs() < 1e-9);
    let family = s.family("rampart_runtime_busy").unwrap();
    assert_eq!(
        (family.kind, family.unit.clone()),
        (MetricKind::Counter, Some(Unit::Seconds))
    );
    assert_eq!(
        s.family("rampart_runtime_worker_parks")
            .unwrap()
            .series
            .len(),
        2
    );
    let utilization = collector.sample().utilization_since(&before).unwrap();
    assert!(utilization > 0.0 && utilization <= 1.0);
}

#[test]
fn global_queue_depth_counts_tasks_spawned_while_every_worker_is_blocked() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let collector = RuntimeCollector::new(rt.handle().clone()).named("app");
    let started = std::sync::Arc::new(Barrier::new(3));
    let (release, blocked) = mpsc::channel::<()>();
    let blocked = std::sync::Arc::new(Mutex::new(blocked));
    let blockers: Vec<_> = (0..2)
        .map(|_| {
            let (started, blocked) = (started.clone(), blocked.clone());
            // Each blocks its worker thread until released: deliberately bad async code.
            rt.spawn(async move {
                started.wait();
                let _ = blocked.lock().unwrap().recv();
            })
        })
        .collect();
    started.wait();
    let queued: Vec<_> = (0..5).map(|_| rt.spawn(async {})).collect();
    let telemetry = Telemetry::new();
    telemetry.register_collector(collector);
    let s = telemetry.snapshot();
    let app = [("runtime", "app")];
    assert_eq!(gauge(&s, "rampart_runtime_global_queue_depth", &app), 5.0);
    assert_eq!(gauge(&s, "rampart_runtime_alive_tasks", &app), 7.0);
    drop(release);
    rt.block_on(async {
        for t in blockers.into_iter().chain(queued) {
            t.await.unwrap();
        }
    });
    let s = telemetry.snapshot();
    assert_eq!(gauge(&s, "rampart_runtime_global_queue_depth", &app), 0.0);
}

#[test]
fn current_thread_runtime_has_one_worker() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let telemetry = Telemetry::new();
    telemetry.register_collector(RuntimeCollector::new(rt.handle().clone()));
    let s = telemetry.snapshot();
    assert_eq!(gauge(&s, "rampart_runtime_workers", &[]), 1.0);
    assert_eq!(
        s.family("rampart_runtime_worker_busy")
            .unwrap()
            .series
            .len(),
        1
    );
}
