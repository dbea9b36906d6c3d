//! A [`Snapshot`] as an OTLP `ExportMetricsServiceRequest` (opentelemetry-proto's prost types).
//!
//! Counters become monotonic cumulative sums, gauges gauges, histograms explicit-bucket
//! histograms with cumulative temporality, whose `bucket_counts` are per bucket (OTLP does not
//! accumulate them, Prometheus does): the snapshot's cumulative counts are taken apart.

use crate::Labels;
use crate::export::{DROPPED_SERIES_HELP, DROPPED_SERIES_METRIC, per_bucket};
use crate::snapshot::{MetricFamily, MetricKind, Snapshot, Unit, Value};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The instrumentation scope every metric is reported under.
pub(super) const SCOPE: &str = "rampart-telemetry";

/// When the data points were taken and since when the cumulative ones count.
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub(super) start_unix_nano: u64,
    pub(super) now_unix_nano: u64,
}

/// A string attribute.
pub(super) fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// The whole request: one resource, one scope, every family of `snapshot`.
pub(super) fn request(
    snapshot: &Snapshot,
    resource: &[KeyValue],
    times: Times,
) -> ExportMetricsServiceRequest {
    let mut dropped = snapshot.dropped_series;
    let mut metrics: Vec<Metric> = snapshot
        .families
        .iter()
        .map(|family| {
            let (metric, left_out) = family_metric(family, times);
            dropped += left_out;
            metric
        })
        .collect();
    metrics.push(Metric {
        name: DROPPED_SERIES_METRIC.to_owned(),
        description: DROPPED_SERIES_HELP.to_owned(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![number_point(&Labels::new(), dropped as f64, 0, times)],
        })),
        ..Default::default()
    });
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.to_vec(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// One family as an OTLP metric, and how many of its series were invalid and left out.
fn family_metric(family: &MetricFamily, times: Times) -> (Metric, u64) {
    let mut dropped = 0;
    let cumulative = AggregationTemporality::Cumulative as i32;
    let numbers = |dropped: &mut u64| -> Vec<NumberDataPoint> {
        let mut points = Vec::with_capacity(family.series.len());
        for s in &family.series {
            match (family.kind, &s.value) {
                (MetricKind::Counter, &Value::Counter(v)) if v >= 0.0 => {
                    points.push(number_point(&s.labels, v, times.start_unix_nano, times))
                }
                // A gauge has no start time.
                (MetricKind::Gauge, &Value::Gauge(v)) => {
                    points.push(number_point(&s.labels, v, 0, times))
                }
                _ => *dropped += 1,
            }
        }
        points
    };
    let data = match family.kind {
        MetricKind::Counter => metric::Data::Sum(Sum {
            data_points: numbers(&mut dropped),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricKind::Gauge => metric::Data::Gauge(Gauge {
            data_points: numbers(&mut dropped),
        }),
        MetricKind::Histogram => {
            let mut buckets = Vec::new();
            let mut points = Vec::with_capacity(family.series.len());
            for s in &family.series {
                let Value::Histogram(h) = &s.value else {
                    dropped += 1;
                    continue;
                };
                let Some(count) = per_bucket(h, &mut buckets) else {
                    dropped += 1;
                    continue;
                };
                points.push(HistogramDataPoint {
                    attributes: attributes(&s.labels),
                    start_time_unix_nano: times.start_unix_nano,
                    time_unix_nano: times.now_unix_nano,
                    count,
                    sum: Some(h.sum),
                    bucket_counts: buckets.iter().map(|b| b.1).collect(),
                    // The last bucket is +Inf, implied in OTLP.
                    explicit_bounds: buckets[..buckets.len() - 1].iter().map(|b| b.0).collect(),
                    ..Default::default()
                });
            }
            metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: cumulative,
            })
        }
    };
    let metric = Metric {
        name: family.name.clone(),
        description: family.help.clone(),
        unit: family
            .unit
            .as_ref()
            .map(ucum)
            .unwrap_or_default()
            .to_owned(),
        data: Some(data),
        ..Default::default()
    };
    (metric, dropped)
}

fn number_point(labels: &Labels, value: f64, start: u64, times: Times) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: times.now_unix_nano,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

/// The unit as UCUM, which OpenTelemetry uses (`s`, `By`, `1`).
fn ucum(unit: &Unit) -> &str {
    match unit {
        Unit::Seconds => "s",
        Unit::Bytes => "By",
        Unit::Ratio => "1",
        other => other.as_str(),
    }
}
