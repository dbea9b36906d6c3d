//! Tokio runtime metrics: workers, how busy they are, tasks alive and queued. Only the metrics
//! tokio offers on stable builds are read; nothing here needs `--cfg tokio_unstable`.

use crate::Labels;
use crate::snapshot::{Collector, MetricKind, MetricsWriter, Unit, Value};
use std::borrow::Cow;
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeMetrics};
use tokio::time::Instant;

/// Metrics of one tokio runtime. Register it with
/// [`Telemetry::register_collector`](crate::Telemetry::register_collector); give each runtime a
/// name with [`named`](Self::named) when a process has several.
///
/// | family | kind | unit | labels |
/// | --- | --- | --- | --- |
/// | `rampart_runtime_workers` | gauge | | |
/// | `rampart_runtime_alive_tasks` | gauge | | |
/// | `rampart_runtime_global_queue_depth` | gauge | | |
/// | `rampart_runtime_busy` | counter | seconds | |
/// | `rampart_runtime_worker_busy` | counter | seconds | `worker` |
/// | `rampart_runtime_worker_parks` | counter | | `worker` |
///
/// The rate of `rampart_runtime_busy` divided by the workers is the runtime's utilisation: near
/// 1, tasks wait for a worker and every latency grows. A global queue that stays deep says the
/// same from the other side.
///
/// Tokio publishes a worker's busy time and park count when the worker parks and every few dozen
/// polls (its `event_interval`), not after every task, so they lag the truth by up to that much;
/// a worker stuck inside one long poll shows no progress until the poll returns. They need 64-bit
/// atomics and are left out on targets without them.
///
/// ```
/// use rampart_telemetry::{RuntimeCollector, Telemetry, Value};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)] async fn main() {
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(RuntimeCollector::new(tokio::runtime::Handle::current()));
/// let snapshot = telemetry.snapshot();
/// assert_eq!(snapshot.value("rampart_runtime_workers", &[]), Some(&Value::Gauge(2.0)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RuntimeCollector {
    metrics: RuntimeMetrics,
    name: Option<Cow<'static, str>>,
}

/// A runtime's counters at one moment; two of them give its utilisation in between.
///
/// ```
/// use rampart_telemetry::RuntimeCollector;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let runtime = RuntimeCollector::new(tokio::runtime::Handle::current());
/// let before = runtime.sample();
/// // ... some time later:
/// let after = runtime.sample();
/// if let Some(utilisation) = after.utilization_since(&before) {
///     assert!((0.0..=1.0).contains(&utilisation));
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuntimeSample {
    /// When the sample was taken.
    pub at: Instant,
    /// Worker threads (1 for a current-thread runtime).
    pub workers: usize,
    /// Tasks spawned and not yet finished.
    pub alive_tasks: usize,
    /// Tasks waiting in the global (injection) queue, where tasks spawned or woken from outside
    /// the runtime wait for a worker.
    pub global_queue_depth: usize,
    /// Time each worker has spent busy since the runtime started (empty without 64-bit atomics).
    pub worker_busy: Vec<Duration>,
    /// Times each worker has parked, waiting for work (empty without 64-bit atomics).
    pub worker_parks: Vec<u64>,
}

impl RuntimeSample {
    /// Time all workers together have spent busy.
    pub fn busy(&self) -> Duration {
        self.worker_busy.iter().sum()
    }

    /// The share of the workers' time spent busy between `earlier` and this sample, from 0 to 1;
    /// `None` if no time passed or busy time is not measured on this target.
    pub fn utilization_since(&self, earlier: &RuntimeSample) -> Option<f64> {
        let elapsed = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if elapsed <= 0.0 || self.worker_busy.is_empty() || self.workers == 0 {
            return None;
        }
        let busy = self.busy().saturating_sub(earlier.busy()).as_secs_f64();
        Some((busy / (elapsed * self.workers as f64)).clamp(0.0, 1.0))
    }
}

impl RuntimeCollector {
    /// A collector of the runtime behind `handle`.
    pub fn new(handle: Handle) -> Self {
        RuntimeCollector {
            metrics: handle.metrics(),
            name: None,
        }
    }

    /// Labels every series with `runtime="name"`, to tell several runtimes apart.
    #[must_use]
    pub fn named(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The runtime's counters now.
    pub fn sample(&self) -> RuntimeSample {
        let m = &self.metrics;
        let workers = m.num_workers();
        #[cfg_attr(not(target_has_atomic = "64"), allow(unused_mut))]
        let mut sample = RuntimeSample {
            at: Instant::now(),
            workers,
            alive_tasks: m.num_alive_tasks(),
            global_queue_depth: m.global_queue_depth(),
            worker_busy: Vec::new(),
            worker_parks: Vec::new(),
        };
        #[cfg(target_has_atomic = "64")]
        {
            sample.worker_busy = (0..workers)
                .map(|w| m.worker_total_busy_duration(w))
                .collect();
            sample.worker_parks = (0..workers).map(|w| m.worker_park_count(w)).collect();
        }
        sample
    }

    fn labels(&self) -> Labels {
        match &self.name {
            Some(name) => Labels::new().with("runtime", name.clone()),
            None => Labels::new(),
        }
    }
}

impl Collector for RuntimeCollector {
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        let s = self.sample();
        let base = self.labels();
        for (name, help, v) in [
            (
                "rampart_runtime_workers",
                "Worker threads of the runtime.",
                s.workers,
            ),
            (
                "rampart_runtime_alive_tasks",
                "Tasks spawned and not yet finished.",
                s.alive_tasks,
            ),
            (
                "rampart_runtime_global_queue_depth",
                "Tasks waiting in the runtime's global queue for a worker.",
                s.global_queue_depth,
            ),
        ] {
            out.family(name, help, MetricKind::Gauge, None)
                .series(base.clone(), Value::Gauge(v as f64));
        }
        if s.worker_busy.is_empty() {
            return;
        }
        out.family(
            "rampart_runtime_busy",
            "Time all workers together spent running tasks and drivers.",
            MetricKind::Counter,
            Some(Unit::Seconds),
        )
        .series(base.clone(), Value::Counter(s.busy().as_secs_f64()));
        let worker = |w: usize| base.clone().with("worker", w.to_string());
        let mut busy = out.family(
            "rampart_runtime_worker_busy",
            "Time a worker spent running tasks and drivers.",
            MetricKind::Counter,
            Some(Unit::Seconds),
        );
        for (w, d) in s.worker_busy.iter().enumerate() {
            busy.series(worker(w), Value::Counter(d.as_secs_f64()));
        }
        let mut parks = out.family(
            "rampart_runtime_worker_parks",
            "Times a worker parked, having run out of work.",
            MetricKind::Counter,
            None,
        );
        for (w, n) in s.worker_parks.iter().enumerate() {
            parks.series(worker(w), Value::Counter(*n as f64));
        }
    }
}
