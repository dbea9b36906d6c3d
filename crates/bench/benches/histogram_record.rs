//! Recording one latency: Rampart's recorder against `hdrhistogram` directly, `prometheus-client`'s
//! histogram and `metrics` with its Prometheus exporter's recorder; on one thread, and on two
//! threads recording into the same metric at once.
//!
//! Values cycle through 1,024 pre-drawn latencies (log-uniform, 100 µs to 1 s) so nothing is
//! constant-folded. The two-thread cases report the wall time of one record on each thread
//! (both threads record `iters` values in parallel), so throughput = 2 / that time.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rampart_telemetry::Telemetry;

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

const N: usize = 1024;

fn values() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..N)
        .map(|_| (100.0 * 10f64.powf(rng.f64() * 4.0)) as u64)
        .collect()
}

struct Peers {
    rampart: rampart_telemetry::Operation,
    hdr: Mutex<hdrhistogram::Histogram<u64>>,
    prom: prometheus_client::metrics::histogram::Histogram,
    metrics: metrics::Histogram,
}

fn peers() -> Peers {
    let telemetry = Telemetry::new();
    let rampart = telemetry.operation("bench");
    let hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).expect("bounds");
    let prom = prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 20),
    );
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let key = metrics::Key::from_static_name("bench");
    let meta = metrics::Metadata::new("bench", metrics::Level::INFO, None);
    let metrics = metrics::Recorder::register_histogram(&recorder, &key, &meta);
    // The recorder must outlive the handle's use; leak it for the bench's lifetime.
    std::mem::forget(recorder);
    Peers {
        rampart,
        hdr: Mutex::new(hdr),
        prom,
        metrics,
    }
}

fn one_thread(c: &mut Criterion) {
    let v = values();
    let p = peers();
    let mut hdr = p.hdr.lock().unwrap().clone();
    let mut g = c.benchmark_group("histogram_record");
    let mut i = 0usize;
    g.bench_function("rampart", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            p.rampart.record_ok(Duration::from_micros(black_box(v[i])));
        })
    });
    g.bench_function("hdrhistogram", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            let _ = hdr.record(black_box(v[i]));
        })
    });
    g.bench_function("prometheus_client", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            p.prom.observe(black_box(v[i]) as f64 / 1e6);
        })
    });
    g.bench_function("metrics_prometheus", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            p.metrics.record(black_box(v[i]) as f64 / 1e6);
        })
    });
    g.finish();
    let mut j = 0usize;
    rampart_bench::report_allocs("histogram_record/rampart", 1_000_000, || {
        j = (j + 1) & (N - 1);
        p.rampart.record_ok(Duration::from_micros(v[j]));
    });
    rampart_bench::report_allocs("histogram_record/metrics_prometheus", 1_000_000, || {
        j = (j + 1) & (N - 1);
        p.metrics.record(v[j] as f64 / 1e6);
    });
}

/// Both threads record `iters` values into the same metric; returns the wall time.
fn two_threads(iters: u64, record: &(dyn Fn(u64) + Sync), v: &[u64]) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for t in 0..2usize {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let mut i = t * 512;
                for _ in 0..iters {
                    i = (i + 1) & (N - 1);
                    record(black_box(v[i]));
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let v = values();
    let p = peers();
    let mut g = c.benchmark_group("histogram_record_2threads");
    g.bench_function("rampart", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                &|x| p.rampart.record_ok(Duration::from_micros(x)),
                &v,
            )
        })
    });
    g.bench_function("hdrhistogram_mutex", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                &|x| {
                    let _ = p.hdr.lock().unwrap().record(x);
                },
                &v,
            )
        })
    });
    g.bench_function("prometheus_client", |b| {
        b.iter_custom(|iters| two_threads(iters, &|x| p.prom.observe(x as f64 / 1e6), &v))
    });
    g.bench_function("metrics_prometheus", |b| {
        b.iter_custom(|iters| two_threads(iters, &|x| p.metrics.record(x as f64 / 1e6), &v))
    });
    g.finish();
}

criterion_group!(benches, one_thread, contended);
criterion_main!(benches);
