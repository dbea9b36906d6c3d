//! What the export tests share: a registry with every kind of series.

use rampart_telemetry::{
    HistogramValue, Labels, MetricKind, MetricsWriter, Telemetry, Unit, Value,
};
use std::time::Duration;

/// A label value that needs every escape: quotes, backslashes, a line feed.
pub(crate) const NASTY: &str = "SELECT \"a\\b\"\nFROM t";

/// A registry with every kind of series: operations (with errors, escaped labels and none),
/// counters, gauges (one without labels), a histogram family written by a collector.
pub(crate) fn telemetry() -> Telemetry {
    let telemetry = Telemetry::new();
    let db = telemetry.operation_with("db.query", Labels::new().with("statement", NASTY));
    for ms in 1..=50 {
        db.record_ok(Duration::from_millis(ms));
    }
    db.record_error(Duration::from_millis(700));
    telemetry
        .operation("cache.get")
        .record_ok(Duration::from_micros(300));
    telemetry
        .counter(
            "rampart_jobs_done",
            "Jobs finished.",
            Labels::new().with("queue", "mail"),
        )
        .add(7);
    telemetry
        .counter("rampart_jobs_done", "Jobs finished.", Labels::new())
        .inc();
    telemetry
        .gauge(
            "rampart_heap",
            "Heap in use.",
            Some(Unit::Bytes),
            Labels::new(),
        )
        .set(1.5e6);
    telemetry
        .gauge(
            "rampart_workers",
            "Workers running.",
            None,
            Labels::new().with("pool", "a"),
        )
        .set(3.0);
    telemetry
        .gauge(
            "rampart_load",
            "Share of capacity in use.",
            Some(Unit::Ratio),
            Labels::new(),
        )
        .set(0.25);
    telemetry.register_collector(|out: &mut MetricsWriter<'_>| {
        let h = |count, sum| {
            Value::Histogram(HistogramValue {
                buckets: vec![(0.01, count / 2), (0.1, count - 1), (1.0, count - 1)],
                sum,
                count,
            })
        };
        out.family(
            "rampart_probe_duration",
            "Probe latency, \"end to end\" \\ with a\nsecond line.",
            MetricKind::Histogram,
            Some(Unit::Seconds),
        )
        .series(Labels::new().with("target", "db"), h(10, 2.5))
        .series(Labels::new(), h(4, 1.25));
    });
    telemetry
}
