//! A point-in-time copy of every metric, the one shape all exporters read.
//!
//! [`Telemetry::snapshot`](crate::Telemetry::snapshot) builds a [`Snapshot`] from the operations it
//! records, the counters and gauges it holds, and every registered [`Collector`] (host metrics,
//! adapters over the policies' and pools' own counters). Exporters (Prometheus text, OTLP) turn a
//! snapshot into their wire format, so they never touch live state.

use crate::Labels;
use std::collections::HashMap;

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonically increasing count (Prometheus `counter`, OTLP monotonic cumulative sum).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution in cumulative buckets with a sum and a count.
    Histogram,
}

/// The unit of a family, appended to its name in Prometheus (`_seconds`, `_bytes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
    /// A ratio between 0 and 1.
    Ratio,
    /// Any other unit, named in lower case (`"requests"`).
    Other(String),
}

impl Unit {
    /// The unit's name as Prometheus and OpenMetrics spell it.
    pub fn as_str(&self) -> &str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Ratio => "ratio",
            Unit::Other(s) => s,
        }
    }
}

/// A histogram's value: cumulative bucket counts by upper bound, plus sum and count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramValue {
    /// `(upper bound, cumulative count of observations <= bound)`, bounds ascending; the `+Inf`
    /// bucket is implied by `count`.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of all observations.
    pub sum: f64,
    /// How many observations there were.
    pub count: u64,
}

/// One series' value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A counter's total so far.
    Counter(f64),
    /// A gauge's current value.
    Gauge(f64),
    /// A histogram.
    Histogram(HistogramValue),
}

/// One series: a label set and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The labels that tell this series apart from its family's others.
    pub labels: Labels,
    /// Its value.
    pub value: Value,
}

/// A metric family: one name, one kind, many series.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// The name without unit or `_total` suffix (`rampart_operation_duration`).
    pub name: String,
    /// One line of help.
    pub help: String,
    /// The kind, which every series' [`Value`] matches.
    pub kind: MetricKind,
    /// The unit, if any.
    pub unit: Option<Unit>,
    /// The series.
    pub series: Vec<Series>,
}

/// Every metric at one point in time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// The families, in the order they were written.
    pub families: Vec<MetricFamily>,
    /// Series a collector tried to write past the per-family cardinality limit; they were left out.
    pub dropped_series: u64,
}

impl Snapshot {
    /// The family called `name`, if present.
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series of `family` whose labels include all of `labels`.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        self.family(family)?
            .series
            .iter()
            .find(|s| labels.iter().all(|(n, v)| s.labels.get(n) == Some(*v)))
            .map(|s| &s.value)
    }

    /// How many series there are in all families.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }
}

/// Something that writes metrics into a snapshot when one is taken: host metrics, adapters over
/// the resilience policies' and pools' counters, or your own.
///
/// ```
/// use rampart_telemetry::{Collector, Labels, MetricKind, MetricsWriter, Telemetry, Value};
///
/// struct QueueDepth;
/// impl Collector for QueueDepth {
///     fn collect(&self, out: &mut MetricsWriter<'_>) {
///         out.family("jobs_queued", "Jobs waiting to run.", MetricKind::Gauge, None)
///             .series(Labels::new().with("queue", "email"), Value::Gauge(3.0));
///     }
/// }
///
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(QueueDepth);
/// let snapshot = telemetry.snapshot();
/// assert_eq!(snapshot.value("jobs_queued", &[("queue", "email")]), Some(&Value::Gauge(3.0)));
/// ```
pub trait Collector: Send + Sync + 'static {
    /// Writes this collector's current values.
    fn collect(&self, out: &mut MetricsWriter<'_>);
}

impl<F> Collector for F
where
    F: Fn(&mut MetricsWriter<'_>) + Send + Sync + 'static,
{
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        self(out)
    }
}

/// Where a [`Collector`] writes. Families with the same name are merged; each family holds at
/// most the configured number of series, the rest are counted in [`Snapshot::dropped_series`].
pub struct MetricsWriter<'a> {
    snapshot: &'a mut Snapshot,
    index: HashMap<String, usize>,
    max_series: usize,
}

impl<'a> MetricsWriter<'a> {
    /// A writer appending to `snapshot`, at most `max_series` series per family.
    pub fn new(snapshot: &'a mut Snapshot, max_series: usize) -> Self {
        let index = snapshot
            .families
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        MetricsWriter {
            snapshot,
            index,
            max_series,
        }
    }

    /// The family called `name`, created with `help`, `kind` and `unit` if new.
    ///
    /// A family already written with another kind is not mixed: the new series go to a separate
    /// family named `name` + `_` + the kind (`_gauge`), so no exporter ever sees a family whose
    /// series disagree on their kind.
    pub fn family(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricKind,
        unit: Option<Unit>,
    ) -> FamilyWriter<'_> {
        let mut name = name.to_owned();
        if let Some(&i) = self.index.get(&name)
            && self.snapshot.families[i].kind != kind
        {
            name = format!("{name}_{}", kind_suffix(kind));
        }
        let idx = match self.index.get(&name) {
            Some(&i) => i,
            None => {
                self.snapshot.families.push(MetricFamily {
                    name: name.clone(),
                    help: help.to_owned(),
                    kind,
                    unit,
                    series: Vec::new(),
                });
                let i = self.snapshot.families.len() - 1;
                self.index.insert(name, i);
                i
            }
        };
        FamilyWriter {
            family: &mut self.snapshot.families[idx],
            dropped: &mut self.snapshot.dropped_series,
            max_series: self.max_series,
        }
    }
}

fn kind_suffix(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

/// Writes the series of one family.
pub struct FamilyWriter<'a> {
    family: &'a mut MetricFamily,
    dropped: &'a mut u64,
    max_series: usize,
}

impl FamilyWriter<'_> {
    /// Adds a series. A value of the wrong kind for the family, or a series past the cardinality
    /// limit, is left out and counted as dropped.
    pub fn series(&mut self, labels: Labels, value: Value) -> &mut Self {
        let matches = matches!(
            (&value, self.family.kind),
            (Value::Counter(_), MetricKind::Counter)
                | (Value::Gauge(_), MetricKind::Gauge)
                | (Value::Histogram(_), MetricKind::Histogram)
        );
        if matches && self.family.series.len() < self.max_series {
            self.family.series.push(Series { labels, value });
        } else {
            *self.dropped += 1;
        }
        self
    }
}
