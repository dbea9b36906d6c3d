//! Cost of a Prometheus scrape at 1,000 and 10,000 series: time and bytes.
//!
//! - `scrape/N`: N series, half counters and half gauges in 20 families with two labels each.
//!   `rampart` takes a snapshot of a `Telemetry` and encodes it (OpenMetrics), the whole work of a
//!   scrape; the peers encode the same series held in their own registries: `prometheus_client`
//!   (families of native counters and gauges, OpenMetrics) and `metrics_exporter_prometheus`
//!   (Prometheus text).
//! - `scrape_breakdown/N`: the same registry, Rampart's snapshot and its encoding apart.
//! - `scrape_operations/N`: operations (one RED set each: 3 counters, a 16-bucket histogram and
//!   21 window gauges) until about N series, the realistic Rampart case; no peer.
//!
//! Bytes per scrape and allocations per scrape are printed (`bytes:` and `allocs:` lines).
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rampart_telemetry::export::prometheus::{self, Format};
use rampart_telemetry::{Labels, Telemetry, TelemetryConfig};

#[global_allocator]
static ALLOC: rampart_bench::CountingAlloc = rampart_bench::CountingAlloc;

const FAMILIES: usize = 20;
const SIZES: [usize; 2] = [1_000, 10_000];

/// Family `f` of 20 (even: counter, odd: gauge), series `i`: its name and label values.
fn series(n: usize) -> impl Iterator<Item = (usize, String, String)> {
    (0..n).map(|s| {
        let (f, i) = (s % FAMILIES, s / FAMILIES);
        (
            f,
            format!("/api/v1/items/{i}"),
            ["GET", "POST"][i % 2].to_owned(),
        )
    })
}

/// Even families are counters, odd ones gauges.
fn is_counter(f: usize) -> bool {
    f.is_multiple_of(2)
}

fn name(f: usize) -> String {
    if is_counter(f) {
        format!("bench_requests_{f}")
    } else {
        format!("bench_in_flight_{f}")
    }
}

fn rampart(n: usize) -> Telemetry {
    let telemetry = TelemetryConfig {
        max_series_per_metric: n,
        ..TelemetryConfig::default()
    }
    .build();
    for (f, route, method) in series(n) {
        let labels = Labels::new().with("route", route).with("method", method);
        if is_counter(f) {
            telemetry
                .counter(&name(f), "Requests served.", labels)
                .add(1234);
        } else {
            telemetry
                .gauge(&name(f), "Requests in flight.", None, labels)
                .set(17.0);
        }
    }
    telemetry
}

type LabelSet = Vec<(String, String)>;

fn prometheus_client(n: usize) -> Registry {
    let mut registry = Registry::default();
    let counters: Vec<Family<LabelSet, Counter>> =
        (0..FAMILIES).map(|_| Family::default()).collect();
    let gauges: Vec<Family<LabelSet, Gauge<f64, std::sync::atomic::AtomicU64>>> =
        (0..FAMILIES).map(|_| Family::default()).collect();
    for (f, route, method) in series(n) {
        let labels = vec![("route".to_owned(), route), ("method".to_owned(), method)];
        if is_counter(f) {
            counters[f].get_or_create(&labels).inc_by(1234);
        } else {
            gauges[f].get_or_create(&labels).set(17.0);
        }
    }
    for (f, (counter, gauge)) in counters.into_iter().zip(gauges).enumerate() {
        if is_counter(f) {
            registry.register(name(f), "Requests served.", counter);
        } else {
            registry.register(name(f), "Requests in flight.", gauge);
        }
    }
    registry
}

fn metrics_exporter(n: usize) -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for f in 0..FAMILIES {
            if is_counter(f) {
                metrics::describe_counter!(name(f), "Requests served.");
            } else {
                metrics::describe_gauge!(name(f), "Requests in flight.");
            }
        }
        for (f, route, method) in series(n) {
            let labels = [("route", route), ("method", method)];
            if is_counter(f) {
                metrics::counter!(name(f), &labels).increment(1234);
            } else {
                metrics::gauge!(name(f), &labels).set(17.0);
            }
        }
    });
    handle
}

/// Operations until about `n` series (25 per operation).
fn operations(n: usize) -> Telemetry {
    let telemetry = TelemetryConfig {
        max_series_per_metric: n,
        ..TelemetryConfig::default()
    }
    .build();
    for i in 0..n.div_ceil(25) {
        let op = telemetry.operation_with("db.query", Labels::new().with("table", format!("t{i}")));
        for ms in 1..=20 {
            op.record_ok(Duration::from_millis(ms));
        }
        op.record_error(Duration::from_millis(40));
    }
    telemetry
}

fn bytes(case: &str, body: &str, series: usize) {
    println!(
        "bytes: {case} {} ({:.1} per series)",
        body.len(),
        body.len() as f64 / series as f64
    );
}

fn scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape");
    g.sample_size(20);
    for n in SIZES {
        let telemetry = rampart(n);
        let registry = prometheus_client(n);
        let handle = metrics_exporter(n);
        let encode_native = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        let rampart_body = prometheus::render(&telemetry);
        assert!(rampart_body.lines().filter(|l| !l.starts_with('#')).count() > n);
        bytes(&format!("scrape/rampart/{n}"), &rampart_body, n);
        bytes(
            &format!("scrape/rampart_text/{n}"),
            &prometheus::render_format(&telemetry, Format::Text),
            n,
        );
        bytes(
            &format!("scrape/prometheus_client/{n}"),
            &encode_native(),
            n,
        );
        bytes(
            &format!("scrape/metrics_exporter_prometheus/{n}"),
            &handle.render(),
            n,
        );

        g.bench_function(BenchmarkId::new("rampart", n), |b| {
            b.iter(|| black_box(prometheus::render(&telemetry)))
        });
        g.bench_function(BenchmarkId::new("prometheus_client", n), |b| {
            b.iter(|| black_box(encode_native()))
        });
        g.bench_function(BenchmarkId::new("metrics_exporter_prometheus", n), |b| {
            b.iter(|| black_box(handle.render()))
        });
        rampart_bench::report_allocs(&format!("scrape/rampart/{n}"), 5, || {
            black_box(prometheus::render(&telemetry));
        });
        rampart_bench::report_allocs(&format!("scrape/prometheus_client/{n}"), 5, || {
            black_box(encode_native());
        });
        rampart_bench::report_allocs(
            &format!("scrape/metrics_exporter_prometheus/{n}"),
            5,
            || {
                black_box(handle.render());
            },
        );
    }
    g.finish();
}

fn breakdown(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape_breakdown");
    g.sample_size(20);
    for n in SIZES {
        let telemetry = rampart(n);
        let snapshot = telemetry.snapshot();
        g.bench_function(BenchmarkId::new("snapshot", n), |b| {
            b.iter(|| black_box(telemetry.snapshot()))
        });
        g.bench_function(BenchmarkId::new("encode", n), |b| {
            b.iter(|| {
                let mut out = String::new();
                prometheus::encode(&snapshot, Format::OpenMetrics, &mut out).unwrap();
                black_box(out)
            })
        });
    }
    g.finish();
}

fn scrape_operations(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape_operations");
    g.sample_size(10);
    for n in SIZES {
        let telemetry = operations(n);
        let body = prometheus::render(&telemetry);
        let series = telemetry.snapshot().series_count();
        bytes(&format!("scrape_operations/rampart/{n}"), &body, series);
        println!("series: scrape_operations/rampart/{n} {series}");
        g.bench_function(BenchmarkId::new("rampart", n), |b| {
            b.iter(|| black_box(prometheus::render(&telemetry)))
        });
    }
    g.finish();
}

criterion_group!(benches, scrape, breakdown, scrape_operations);
criterion_main!(benches);
