//! The registry: operations, counters, gauges and collectors, read as one [`Snapshot`].

use crate::histogram::{MAX_MICROS, default_shards};
use crate::operation::{Operation, OperationStats, TICK, TickReport, Window};
use crate::snapshot::{
    Collector, HistogramValue, MetricFamily, MetricKind, MetricsWriter, Series, Snapshot, Unit,
    Value,
};
use crate::{Labels, OperationInterval};
use rampart_resilience::{Listeners, Subscription};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::time::Instant;

/// Limits and sharding of a [`Telemetry`] registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Series one metric name may have (label sets of an operation, counter or gauge, and series a
    /// collector writes into one family). Past it, new label sets share one overflow series
    /// labelled `rampart_overflow="true"`. Default 1,000.
    pub max_series_per_metric: usize,
    /// Operations in all. Past it, new operations share the overflow operation
    /// `rampart_overflow`. Default 10,000.
    pub max_operations: usize,
    /// Recording shards per operation (a power of two). Default: the machine's parallelism.
    pub shards: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            max_series_per_metric: 1_000,
            max_operations: 10_000,
            shards: default_shards(),
        }
    }
}

impl TelemetryConfig {
    /// Builds a registry with these limits.
    pub fn build(self) -> Telemetry {
        Telemetry::with_config(self)
    }
}

/// The name of the operation that new operations share once [`TelemetryConfig::max_operations`]
/// is reached.
pub const OVERFLOW_OPERATION: &str = "rampart_overflow";

/// Upper bounds (seconds) of the exported `rampart_operation_duration_seconds` histogram.
pub const EXPORT_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default)]
struct Ops {
    by_key: HashMap<(Arc<str>, Labels), Operation>,
    per_name: HashMap<Arc<str>, usize>,
    list: Vec<Operation>,
}

#[derive(Default)]
struct Scalars {
    // (name, kind) -> family
    families: HashMap<(String, MetricKind), ScalarFamily>,
    order: Vec<(String, MetricKind)>,
}

struct ScalarFamily {
    help: String,
    unit: Option<Unit>,
    series: Vec<(Labels, Arc<AtomicU64>)>,
}

struct TickState {
    done: u64,
}

struct Inner {
    config: TelemetryConfig,
    start: Instant,
    ops: RwLock<Ops>,
    scalars: RwLock<Scalars>,
    collectors: RwLock<Vec<Arc<dyn Collector>>>,
    ticks: Mutex<TickState>,
    tick_events: Listeners<TickReport>,
}

/// A telemetry registry: a value you create and pass around (there is no global one).
///
/// ```
/// use rampart_telemetry::{Telemetry, Window};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let telemetry = Telemetry::new();
/// let _ticker = telemetry.spawn_ticker(); // advances the sliding windows every second
/// let answer: Result<u32, std::io::Error> =
///     telemetry.instrument("lookup", async { Ok(42) }).await;
/// assert_eq!(answer.ok(), Some(42));
/// let stats = telemetry.stats_of("lookup").expect("recorded");
/// assert_eq!(stats.window(Window::SinceStart).count, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("config", &self.inner.config)
            .field("operations", &self.read_ops().list.len())
            .finish()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    /// A registry with the default limits.
    pub fn new() -> Self {
        Telemetry::with_config(TelemetryConfig::default())
    }

    /// A registry with `config`'s limits.
    pub fn with_config(config: TelemetryConfig) -> Self {
        Telemetry {
            inner: Arc::new(Inner {
                config,
                start: Instant::now(),
                ops: RwLock::default(),
                scalars: RwLock::default(),
                collectors: RwLock::default(),
                ticks: Mutex::new(TickState { done: 0 }),
                tick_events: Listeners::new(),
            }),
        }
    }

    /// The limits this registry enforces.
    pub fn config(&self) -> &TelemetryConfig {
        &self.inner.config
    }

    fn read_ops(&self) -> std::sync::RwLockReadGuard<'_, Ops> {
        read(&self.inner.ops)
    }

    /// The operation called `name` with no labels, created on first use. Keep the handle for hot
    /// paths: looking it up costs a hash and a read lock.
    pub fn operation(&self, name: &str) -> Operation {
        self.operation_with(name, Labels::new())
    }

    /// The operation `name` with `labels`, created on first use; past the cardinality limits it is
    /// the overflow series.
    pub fn operation_with(&self, name: &str, labels: Labels) -> Operation {
        {
            let ops = self.read_ops();
            if let Some(op) = ops.by_key.get(&(Arc::from(name), labels.clone())) {
                return op.clone();
            }
        }
        let mut ops = write(&self.inner.ops);
        let mut key: (Arc<str>, Labels) = (Arc::from(name), labels);
        if let Some(op) = ops.by_key.get(&key) {
            return op.clone();
        }
        let known_name = ops.per_name.contains_key(&key.0);
        if !known_name && ops.per_name.len() >= self.inner.config.max_operations {
            key = (Arc::from(OVERFLOW_OPERATION), Labels::overflow());
        } else if ops.per_name.get(&key.0).copied().unwrap_or(0)
            >= self.inner.config.max_series_per_metric
        {
            key.1 = Labels::overflow();
        }
        if let Some(op) = ops.by_key.get(&key) {
            return op.clone();
        }
        let op = Operation::new(key.0.clone(), key.1.clone(), self.inner.config.shards);
        *ops.per_name.entry(key.0.clone()).or_insert(0) += 1;
        ops.list.push(op.clone());
        ops.by_key.insert(key, op.clone());
        op
    }

    /// Every operation so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.read_ops().list.clone()
    }

    /// Times `future` as operation `name`; see [`Operation::instrument`].
    pub fn instrument<F, T, E>(&self, name: &str, future: F) -> crate::Instrumented<F>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.operation(name).instrument(future)
    }

    fn scalar(
        &self,
        name: &str,
        help: &str,
        kind: MetricKind,
        unit: Option<Unit>,
        labels: Labels,
    ) -> Arc<AtomicU64> {
        let mut s = write(&self.inner.scalars);
        let key = (name.to_owned(), kind);
        if !s.families.contains_key(&key) {
            s.order.push(key.clone());
        }
        let max = self.inner.config.max_series_per_metric;
        let fam = s.families.entry(key).or_insert_with(|| ScalarFamily {
            help: help.to_owned(),
            unit,
            series: Vec::new(),
        });
        if let Some((_, v)) = fam.series.iter().find(|(l, _)| *l == labels) {
            return v.clone();
        }
        let labels = if fam.series.len() >= max {
            Labels::overflow()
        } else {
            labels
        };
        if let Some((_, v)) = fam.series.iter().find(|(l, _)| *l == labels) {
            return v.clone();
        }
        let init = if kind == MetricKind::Gauge {
            0f64.to_bits()
        } else {
            0
        };
        let v = Arc::new(AtomicU64::new(init));
        fam.series.push((labels, v.clone()));
        v
    }

    /// A counter `name` with `labels`, created on first use.
    pub fn counter(&self, name: &str, help: &str, labels: Labels) -> Counter {
        Counter(self.scalar(name, help, MetricKind::Counter, None, labels))
    }

    /// A gauge `name` with `labels`, created on first use.
    pub fn gauge(&self, name: &str, help: &str, unit: Option<Unit>, labels: Labels) -> Gauge {
        Gauge(self.scalar(name, help, MetricKind::Gauge, unit, labels))
    }

    /// Adds a collector, called on every [`snapshot`](Self::snapshot).
    pub fn register_collector(&self, collector: impl Collector) {
        write(&self.inner.collectors).push(Arc::new(collector));
    }

    /// Calls `listener` with every tick's [`TickReport`] (what every operation did during that
    /// second) until the subscription is dropped. Detectors subscribe here.
    #[must_use = "dropping the subscription unsubscribes at once"]
    pub fn subscribe_ticks<F>(&self, listener: F) -> Subscription
    where
        F: Fn(&TickReport) + Send + Sync + 'static,
    {
        self.inner.tick_events.subscribe(listener)
    }

    /// Advances the sliding windows to now; see [`tick_at`](Self::tick_at).
    pub fn tick(&self) -> Option<TickReport> {
        self.tick_at(Instant::now())
    }

    /// Advances the sliding windows to `now`: the ticks (whole seconds since the registry was made)
    /// that ended since the last call are closed, what was recorded meanwhile goes into the newest,
    /// and subscribers get the report. Returns the report, or `None` if no tick ended.
    pub fn tick_at(&self, now: Instant) -> Option<TickReport> {
        let mut state = self.inner.ticks.lock().unwrap_or_else(|p| p.into_inner());
        let due =
            (now.saturating_duration_since(self.inner.start).as_micros() / TICK.as_micros()) as u64;
        if due <= state.done {
            return None;
        }
        let ticks = due - state.done;
        state.done = due;
        let end = self.inner.start + TICK * u32::try_from(due).unwrap_or(u32::MAX);
        let ops = self.operations();
        let operations: Arc<[OperationInterval]> = ops
            .iter()
            .map(|op| OperationInterval {
                name: op.name_arc(),
                labels: op.labels().clone(),
                end,
                length: TICK * u32::try_from(ticks).unwrap_or(u32::MAX),
                interval: op.advance(ticks, end),
            })
            .collect();
        drop(state);
        let report = TickReport {
            at: end,
            operations,
        };
        self.inner.tick_events.emit_with(|| report.clone());
        Some(report)
    }

    /// Runs [`tick`](Self::tick) every second on the current tokio runtime until the returned
    /// handle is dropped.
    pub fn spawn_ticker(&self) -> Ticker {
        let me = self.clone();
        let start = self.inner.start;
        let task = tokio::spawn(async move {
            let mut next = 1u32;
            loop {
                tokio::time::sleep_until(start + TICK * next).await;
                me.tick();
                let elapsed = Instant::now().saturating_duration_since(start);
                next = u32::try_from(elapsed.as_secs() + 1).unwrap_or(u32::MAX);
            }
        });
        Ticker { task }
    }

    /// Every operation's statistics, after advancing the windows to now.
    pub fn stats(&self) -> Vec<OperationStats> {
        self.tick();
        self.operations().iter().map(Operation::stats).collect()
    }

    /// The statistics of operation `name` without labels (after advancing to now), if it exists.
    pub fn stats_of(&self, name: &str) -> Option<OperationStats> {
        self.tick();
        let op = self
            .read_ops()
            .by_key
            .get(&(Arc::from(name), Labels::new()))
            .cloned()?;
        Some(op.stats())
    }

    /// Every metric now: operations, counters, gauges, then each collector's.
    pub fn snapshot(&self) -> Snapshot {
        self.tick();
        let mut snap = Snapshot::default();
        self.write_operations(&mut snap);
        {
            let s = read(&self.inner.scalars);
            for key in &s.order {
                let Some(fam) = s.families.get(key) else {
                    continue;
                };
                let series = fam
                    .series
                    .iter()
                    .map(|(labels, v)| {
                        let raw = v.load(Ordering::Relaxed);
                        let value = match key.1 {
                            MetricKind::Gauge => Value::Gauge(f64::from_bits(raw)),
                            _ => Value::Counter(raw as f64),
                        };
                        Series {
                            labels: labels.clone(),
                            value,
                        }
                    })
                    .collect();
                snap.families.push(MetricFamily {
                    name: key.0.clone(),
                    help: fam.help.clone(),
                    kind: key.1,
                    unit: fam.unit.clone(),
                    series,
                });
            }
        }
        let collectors = read(&self.inner.collectors).clone();
        let mut writer = MetricsWriter::new(&mut snap, self.inner.config.max_series_per_metric);
        for c in collectors {
            c.collect(&mut writer);
        }
        snap
    }

    fn write_operations(&self, snap: &mut Snapshot) {
        let ops = self.operations();
        let fam = |name: &str, help: &str, kind, unit| MetricFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            kind,
            unit,
            series: Vec::with_capacity(ops.len()),
        };
        let mut requests = fam(
            "rampart_operation_requests",
            "Calls completed.",
            MetricKind::Counter,
            None,
        );
        let mut errors = fam(
            "rampart_operation_errors",
            "Calls that failed.",
            MetricKind::Counter,
            None,
        );
        let mut cancelled = fam(
            "rampart_operation_cancelled",
            "Calls dropped before they finished.",
            MetricKind::Counter,
            None,
        );
        let mut duration = fam(
            "rampart_operation_duration",
            "Call latency since start.",
            MetricKind::Histogram,
            Some(Unit::Seconds),
        );
        let mut latency = fam(
            "rampart_operation_latency",
            "Latency percentiles over sliding windows (100 is the maximum).",
            MetricKind::Gauge,
            Some(Unit::Seconds),
        );
        let mut rate = fam(
            "rampart_operation_rate",
            "Calls per second over sliding windows.",
            MetricKind::Gauge,
            None,
        );
        let mut ratio = fam(
            "rampart_operation_error",
            "Share of calls that failed over sliding windows.",
            MetricKind::Gauge,
            Some(Unit::Ratio),
        );
        for op in &ops {
            let labels = op.export_labels();
            let base = &labels.base;
            let (stats, total) = op.stats_and_total();
            let all = stats.window(Window::SinceStart);
            requests.series.push(Series {
                labels: base.clone(),
                value: Value::Counter(all.count as f64),
            });
            errors.series.push(Series {
                labels: base.clone(),
                value: Value::Counter(all.errors as f64),
            });
            cancelled.series.push(Series {
                labels: base.clone(),
                value: Value::Counter(stats.cancelled as f64),
            });
            let buckets = EXPORT_BUCKETS
                .iter()
                .map(|&b| (b, total.count_at_most(((b * 1e6) as u64).min(MAX_MICROS))))
                .collect();
            duration.series.push(Series {
                labels: base.clone(),
                value: Value::Histogram(HistogramValue {
                    buckets,
                    sum: total.sum as f64 / 1e6,
                    count: total.count,
                }),
            });
            for (w, (wl, per)) in Window::SLIDING.into_iter().zip(&labels.windows) {
                let ws = stats.window(w);
                // `percentile`, not `quantile`: in Prometheus a `quantile` label belongs to
                // summaries only (promtool flags it on a gauge), and these are gauges.
                let values = [ws.p50, ws.p90, ws.p99, ws.p999, ws.max];
                for (l, v) in per.iter().zip(values) {
                    if let Some(v) = v {
                        latency.series.push(Series {
                            labels: l.clone(),
                            value: Value::Gauge(v.as_secs_f64()),
                        });
                    }
                }
                rate.series.push(Series {
                    labels: wl.clone(),
                    value: Value::Gauge(ws.rate),
                });
                ratio.series.push(Series {
                    labels: wl.clone(),
                    value: Value::Gauge(ws.error_ratio),
                });
            }
        }
        if !ops.is_empty() {
            snap.families
                .extend([requests, errors, cancelled, duration, latency, rate, ratio]);
        }
    }

    /// Bytes held by every operation's window history plus its recording shards.
    pub fn memory_bytes(&self) -> usize {
        self.operations()
            .iter()
            .map(|op| op.history_bytes() + op.shard_count() * crate::histogram::BUCKETS * 8)
            .sum()
    }
}

/// Keeps the ticker task spawned by [`Telemetry::spawn_ticker`] running; dropping it stops it.
#[derive(Debug)]
pub struct Ticker {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A counter handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The total so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}
