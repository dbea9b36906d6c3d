#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The counting allocator, installed as this test binary's global allocator.
//!
//! Every test holds `SERIAL`: live bytes fall when another test frees memory at the same time.
//! The test harness itself still allocates and frees a little on its own threads (a finished
//! test's thread exiting, its output), so live figures are compared with some slack.

use rampart_telemetry::{AllocCollector, CountingAllocator, MetricKind, Telemetry, Unit, Value};
use std::alloc::System;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator::new(System);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const N: u64 = 1000;

/// Bytes the harness may free on other threads while a test compares live bytes.
const SLACK: i64 = 64 * 1024;

#[test]
fn allocating_boxes_counts_each_allocation_and_its_bytes() {
    let _serial = serial();
    let before = ALLOC.stats();
    let boxes: Vec<Box<[u8; 64]>> = (0..N).map(|_| Box::new([1u8; 64])).collect();
    let allocated = ALLOC.stats().since(&before);
    assert!(allocated.allocations > N, "{allocated:?}"); // the boxes and the Vec
    assert!(allocated.allocated_bytes >= N * 64 + N * 8, "{allocated:?}");
    let mid = ALLOC.stats();
    drop(std::hint::black_box(boxes));
    let freed = ALLOC.stats().since(&mid);
    assert!(freed.deallocations > N, "{freed:?}");
    assert!(freed.freed_bytes >= N * 64 + N * 8, "{freed:?}");
}

#[test]
fn allocations_from_several_threads_all_count() {
    let _serial = serial();
    let before = ALLOC.stats();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for i in 0..N {
                    drop(std::hint::black_box(Box::new(i)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let delta = ALLOC.stats().since(&before);
    assert!(
        delta.allocations >= 4 * N && delta.deallocations >= 4 * N,
        "{delta:?}"
    );
}

#[test]
fn a_growing_vec_counts_reallocations_and_live_bytes_follow_what_is_held() {
    let _serial = serial();
    let before = ALLOC.stats();
    let mut v: Vec<u8> = Vec::with_capacity(16);
    for i in 0..(1 << 20) {
        v.push(i as u8);
    }
    let grown = ALLOC.stats();
    assert!(
        grown.since(&before).reallocations >= 10,
        "{:?}",
        grown.since(&before)
    );
    let live = grown.live_bytes() as i64 - before.live_bytes() as i64;
    assert!(live >= v.capacity() as i64 - SLACK, "live grew by {live}");
    drop(std::hint::black_box(v));
    let after = ALLOC.stats();
    let released = grown.live_bytes() as i64 - after.live_bytes() as i64;
    assert!(released >= (1 << 20) - SLACK, "live fell by {released}");
}

#[test]
fn collector_exports_counters_and_live_gauges() {
    let _serial = serial();
    let telemetry = Telemetry::new();
    telemetry.register_collector(AllocCollector::new(&ALLOC));
    let first = telemetry.snapshot();
    // Twice the boxes the assertions count, so what the harness frees meanwhile cannot hide them.
    let kept: Vec<Box<u64>> = (0..2 * N).map(Box::new).collect();
    let second = telemetry.snapshot();
    let value = |s: &rampart_telemetry::Snapshot, name: &str| match s.value(name, &[]) {
        Some(Value::Counter(v) | Value::Gauge(v)) => *v,
        other => panic!("{name}: {other:?}"),
    };
    for (name, kind, unit) in [
        ("rampart_alloc_allocations", MetricKind::Counter, None),
        ("rampart_alloc_deallocations", MetricKind::Counter, None),
        ("rampart_alloc_reallocations", MetricKind::Counter, None),
        (
            "rampart_alloc_allocated",
            MetricKind::Counter,
            Some(Unit::Bytes),
        ),
        (
            "rampart_alloc_freed",
            MetricKind::Counter,
            Some(Unit::Bytes),
        ),
        ("rampart_alloc_live", MetricKind::Gauge, Some(Unit::Bytes)),
        ("rampart_alloc_live_allocations", MetricKind::Gauge, None),
    ] {
        let family = second.family(name).unwrap();
        assert_eq!((family.kind, &family.unit), (kind, &unit), "{name}");
    }
    assert!(
        value(&second, "rampart_alloc_allocations") - value(&first, "rampart_alloc_allocations")
            >= N as f64
    );
    assert!(
        value(&second, "rampart_alloc_live") - value(&first, "rampart_alloc_live")
            >= (N * 8) as f64
    );
    assert!(
        value(&second, "rampart_alloc_live_allocations")
            - value(&first, "rampart_alloc_live_allocations")
            >= N as f64
    );
    drop(kept);
}

#[test]
fn rates_per_second_divide_by_the_time_between_reads() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let before = ALLOC.stats();
        tokio::time::advance(Duration::from_secs(2)).await;
        let boxes: Vec<Box<u64>> = (0..N).map(Box::new).collect();
        let delta = ALLOC.stats().since(&before);
        assert_eq!(delta.elapsed, Duration::from_secs(2));
        let rate = delta.allocations_per_second().unwrap();
        assert_eq!(rate, delta.allocations as f64 / 2.0);
        assert!(rate >= N as f64 / 2.0);
        assert!(delta.allocated_bytes_per_second().unwrap() >= (N * 8) as f64 / 2.0);
        let same = ALLOC.stats();
        assert_eq!(same.since(&same).allocations_per_second(), None);
        drop(boxes);
    });
}
