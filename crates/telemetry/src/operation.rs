//! Operations: one RED series each (rate, errors, duration), with sliding windows.

use crate::Labels;
use crate::histogram::{AtomicHistogram, Interval, micros};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// How long one tick is: windows advance, and detectors get an [`OperationInterval`], once per tick.
pub const TICK: Duration = Duration::from_secs(1);

/// A window over which percentiles, rates and error ratios are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Window {
    /// The last 10 seconds (1-second slots: between 9 and 10 seconds are covered, the current,
    /// unfinished second included).
    TenSeconds,
    /// The last minute (5-second slots: between 55 and 60 seconds are covered).
    OneMinute,
    /// The last five minutes (15-second slots: between 285 and 300 seconds are covered).
    FiveMinutes,
    /// Everything since the operation was first used.
    SinceStart,
}

impl Window {
    /// The sliding windows, shortest first.
    pub const SLIDING: [Window; 3] = [Window::TenSeconds, Window::OneMinute, Window::FiveMinutes];

    /// The label value used in exports: `10s`, `1m`, `5m`, `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::TenSeconds => "10s",
            Window::OneMinute => "1m",
            Window::FiveMinutes => "5m",
            Window::SinceStart => "all",
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Rate, errors and latency of one operation over one window.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WindowStats {
    /// Which window.
    pub window: Window,
    /// How much time the window actually covers (a young operation's windows are shorter).
    pub covered: Duration,
    /// Calls completed in the window.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// Calls per second.
    pub rate: f64,
    /// `errors / count`, 0 when there were no calls.
    pub error_ratio: f64,
    /// Mean latency.
    pub mean: Option<Duration>,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 90th percentile.
    pub p90: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// 99.9th percentile.
    pub p999: Option<Duration>,
    /// The highest latency (top of its bucket).
    pub max: Option<Duration>,
}

impl WindowStats {
    pub(crate) fn from_interval(window: Window, covered: Duration, iv: &Interval) -> Self {
        let secs = covered.as_secs_f64();
        let q = |q: f64| iv.quantile(q).map(Duration::from_micros);
        WindowStats {
            window,
            covered,
            count: iv.count,
            errors: iv.errors,
            rate: if secs > 0.0 {
                iv.count as f64 / secs
            } else {
                0.0
            },
            error_ratio: if iv.count > 0 {
                iv.errors as f64 / iv.count as f64
            } else {
                0.0
            },
            mean: iv
                .mean()
                .map(|m| Duration::from_nanos((m * 1_000.0) as u64)),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: iv.max().map(Duration::from_micros),
        }
    }
}

/// One operation's statistics over every window.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OperationStats {
    /// The operation's name.
    pub name: Arc<str>,
    /// Its labels.
    pub labels: Labels,
    /// The last 10 s, 1 m, 5 m and since start, in that order.
    pub windows: [WindowStats; 4],
    /// Calls dropped (cancelled) before they finished; not in the latency figures.
    pub cancelled: u64,
}

impl OperationStats {
    /// The statistics over `window`.
    pub fn window(&self, window: Window) -> &WindowStats {
        match window {
            Window::TenSeconds => &self.windows[0],
            Window::OneMinute => &self.windows[1],
            Window::FiveMinutes => &self.windows[2],
            Window::SinceStart => &self.windows[3],
        }
    }
}

/// What one operation did during one tick: handed to detectors after every tick.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationInterval {
    /// The operation's name.
    pub name: Arc<str>,
    /// Its labels.
    pub labels: Labels,
    /// When the tick ended.
    pub end: Instant,
    /// How long the tick was (usually [`TICK`]; longer if ticks were missed).
    pub length: Duration,
    /// The calls completed during the tick.
    pub interval: Interval,
}

/// Everything recorded during one tick, for every operation (including idle ones).
#[derive(Debug, Clone)]
pub struct TickReport {
    /// When the tick ended.
    pub at: Instant,
    /// One entry per operation.
    pub operations: Arc<[OperationInterval]>,
}

/// Whether a call succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed.
    Error,
}

/// A ring of slots, each `slot_ticks` ticks long, covering at most `window_ticks` ticks
/// including the slot being filled.
#[derive(Debug)]
struct Ring {
    slot_ticks: u32,
    window_ticks: u32,
    slots: VecDeque<Interval>,
    current: Interval,
    current_ticks: u32,
}

impl Ring {
    fn new(slot_ticks: u32, window_ticks: u32) -> Self {
        Ring {
            slot_ticks,
            window_ticks,
            slots: VecDeque::new(),
            current: Interval::default(),
            current_ticks: 0,
        }
    }

    fn push(&mut self, tick: &Interval) {
        self.current.merge(tick);
        self.current_ticks += 1;
        if self.current_ticks == self.slot_ticks {
            let mut full = std::mem::take(&mut self.current);
            full.buckets.shrink_to_fit();
            self.slots.push_back(full);
            self.current_ticks = 0;
        }
        while self.slots.len() as u32 * self.slot_ticks + self.current_ticks > self.window_ticks {
            self.slots.pop_front();
        }
    }

    fn covered_ticks(&self) -> u32 {
        self.slots.len() as u32 * self.slot_ticks + self.current_ticks
    }

    fn merged(&self) -> Interval {
        let mut out = self.current.clone();
        for s in &self.slots {
            out.merge(s);
        }
        out
    }

    fn bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.buckets.capacity() * 16)
            .sum::<usize>()
            + self.current.buckets.capacity() * 16
    }
}

#[derive(Debug)]
struct Windows {
    tick_end: Instant,
    rings: [Ring; 3],
    total: Interval,
    drained: Interval,
    scratch: Vec<u64>,
}

pub(crate) struct OpInner {
    name: Arc<str>,
    labels: Labels,
    hist: AtomicHistogram,
    cancelled: AtomicU64,
    created: Instant,
    windows: Mutex<Windows>,
    export: std::sync::OnceLock<ExportLabels>,
}

/// The label sets an operation's series carry in a snapshot, built once and shared by reference
/// count with every snapshot after.
pub(crate) struct ExportLabels {
    /// `operation` plus the operation's own labels.
    pub(crate) base: Labels,
    /// Per sliding window: the base plus `window`, and that plus each `percentile`.
    pub(crate) windows: [(Labels, [Labels; 5]); 3],
}

/// The `percentile` label values of the exported latency gauges, in the order of
/// [`ExportLabels::windows`].
pub(crate) const PERCENTILES: [&str; 5] = ["50", "90", "99", "99.9", "100"];

/// A handle to one operation's RED series. Cheap to clone; recording takes no lock and allocates
/// nothing.
///
/// ```
/// use rampart_telemetry::{Telemetry, Window};
/// use std::time::Duration;
///
/// let telemetry = Telemetry::new();
/// let query = telemetry.operation("db.query");
/// query.record_ok(Duration::from_millis(4));
/// query.record_error(Duration::from_millis(40));
/// let stats = telemetry.stats_of("db.query").expect("recorded");
/// let all = stats.window(Window::SinceStart);
/// assert_eq!((all.count, all.errors), (2, 1));
/// ```
#[derive(Clone)]
pub struct Operation {
    pub(crate) inner: Arc<OpInner>,
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.inner.name)
            .field("labels", &self.inner.labels)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Operation {
    pub(crate) fn new(name: Arc<str>, labels: Labels, shards: usize) -> Self {
        Operation {
            inner: Arc::new(OpInner {
                name,
                labels,
                hist: AtomicHistogram::new(shards),
                cancelled: AtomicU64::new(0),
                created: Instant::now(),
                export: std::sync::OnceLock::new(),
                windows: Mutex::new(Windows {
                    tick_end: Instant::now(),
                    rings: [Ring::new(1, 9), Ring::new(5, 59), Ring::new(15, 299)],
                    total: Interval::default(),
                    drained: Interval::default(),
                    scratch: Vec::new(),
                }),
            }),
        }
    }

    /// The operation's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its labels.
    pub fn labels(&self) -> &Labels {
        &self.inner.labels
    }

    /// Records one call that took `elapsed`.
    #[inline]
    pub fn record(&self, elapsed: Duration, outcome: Outcome) {
        self.inner
            .hist
            .record(micros(elapsed), outcome == Outcome::Error);
    }

    /// Records one successful call.
    #[inline]
    pub fn record_ok(&self, elapsed: Duration) {
        self.inner.hist.record(micros(elapsed), false);
    }

    /// Records one failed call.
    #[inline]
    pub fn record_error(&self, elapsed: Duration) {
        self.inner.hist.record(micros(elapsed), true);
    }

    /// Starts timing a call. Finish it with [`Timer::success`] or [`Timer::error`]; a timer dropped
    /// unfinished counts the call as cancelled.
    pub fn start(&self) -> Timer {
        Timer {
            op: Some(self.clone()),
            started: Instant::now(),
        }
    }

    /// Times `future` from its first poll to its completion; an `Err` output counts as an error,
    /// and dropping it unfinished counts as cancelled.
    pub fn instrument<F, T, E>(&self, future: F) -> Instrumented<F>
    where
        F: Future<Output = Result<T, E>>,
    {
        Instrumented {
            future,
            op: self.clone(),
            started: None,
            done: false,
        }
    }

    /// The operation's statistics now: the closed ticks of each window plus what was recorded
    /// since the last tick.
    pub fn stats(&self) -> OperationStats {
        self.stats_and_total().0
    }

    /// [`stats`](Self::stats) and the cumulative histogram since start, from one look at the
    /// recording shards.
    pub(crate) fn stats_and_total(&self) -> (OperationStats, Interval) {
        let now = Instant::now();
        let mut pending = Interval::default();
        self.inner.hist.peek_into(&mut pending);
        let w = lock(&self.inner.windows);
        let partial = now.saturating_duration_since(w.tick_end).min(TICK);
        let mk = |window, ring: &Ring| {
            let covered = TICK * ring.covered_ticks() + partial;
            let mut iv = ring.merged();
            iv.merge(&pending);
            WindowStats::from_interval(window, covered, &iv)
        };
        let mut total = w.total.clone();
        total.merge(&pending);
        let stats = OperationStats {
            name: self.inner.name.clone(),
            labels: self.inner.labels.clone(),
            windows: [
                mk(Window::TenSeconds, &w.rings[0]),
                mk(Window::OneMinute, &w.rings[1]),
                mk(Window::FiveMinutes, &w.rings[2]),
                WindowStats::from_interval(
                    Window::SinceStart,
                    now.saturating_duration_since(self.inner.created),
                    &total,
                ),
            ],
            cancelled: self.inner.cancelled.load(Ordering::Relaxed),
        };
        (stats, total)
    }

    /// The label sets of this operation's exported series.
    pub(crate) fn export_labels(&self) -> &ExportLabels {
        self.inner.export.get_or_init(|| {
            let mut base = Labels::new().with("operation", self.inner.name.to_string());
            for (n, v) in self.inner.labels.iter() {
                base.push(n.to_owned(), v.to_owned());
            }
            let window = |w: Window| {
                let wl = base.clone().with("window", w.as_str());
                let per = PERCENTILES.map(|p| wl.clone().with("percentile", p));
                (wl, per)
            };
            let windows = Window::SLIDING.map(window);
            ExportLabels { base, windows }
        })
    }

    /// Calls cancelled so far.
    pub fn cancelled(&self) -> u64 {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// The cumulative histogram since start, including what was recorded since the last tick.
    pub fn total(&self) -> Interval {
        let mut pending = Interval::default();
        self.inner.hist.peek_into(&mut pending);
        let mut total = lock(&self.inner.windows).total.clone();
        total.merge(&pending);
        total
    }

    /// Memory held by this operation's window history, in bytes (the recording shards add about
    /// 14 KiB each).
    pub fn history_bytes(&self) -> usize {
        let w = lock(&self.inner.windows);
        w.rings.iter().map(Ring::bytes).sum::<usize>() + w.total.buckets.capacity() * 16
    }

    /// Advances the windows by `ticks` ticks: what was recorded since the last tick goes into the
    /// newest one. Returns that tick's interval.
    pub(crate) fn advance(&self, ticks: u64, end: Instant) -> Interval {
        let mut guard = lock(&self.inner.windows);
        let w = &mut *guard;
        let mut drained = std::mem::take(&mut w.drained);
        self.inner.hist.drain_into(&mut drained, &mut w.scratch);
        let empty = Interval::default();
        for i in 0..ticks {
            let iv = if i + 1 == ticks { &drained } else { &empty };
            for ring in &mut w.rings {
                ring.push(iv);
            }
        }
        w.tick_end = end;
        w.total.merge(&drained);
        let out = drained.clone();
        w.drained = drained;
        out
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.inner.hist.allocated_shards()
    }
}

/// Times one call; see [`Operation::start`].
#[derive(Debug)]
#[must_use = "a timer dropped unfinished counts the call as cancelled"]
pub struct Timer {
    op: Option<Operation>,
    started: Instant,
}

impl Timer {
    /// The call succeeded.
    pub fn success(mut self) {
        if let Some(op) = self.op.take() {
            op.record_ok(self.started.elapsed());
        }
    }

    /// The call failed.
    pub fn error(mut self) {
        if let Some(op) = self.op.take() {
            op.record_error(self.started.elapsed());
        }
    }

    /// The call finished with `outcome`.
    pub fn finish(self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success(),
            Outcome::Error => self.error(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            op.inner.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future timed by an [`Operation`]; see [`Operation::instrument`].
    pub struct Instrumented<F> {
        #[pin]
        future: F,
        op: Operation,
        started: Option<Instant>,
        done: bool,
    }

    impl<F> PinnedDrop for Instrumented<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done && this.started.is_some() {
                this.op.inner.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<F, T, E> Future for Instrumented<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let started = *this.started.get_or_insert_with(Instant::now);
        let out = std::task::ready!(this.future.poll(cx));
        *this.done = true;
        this.op.record(
            started.elapsed(),
            if out.is_ok() {
                Outcome::Success
            } else {
                Outcome::Error
            },
        );
        Poll::Ready(out)
    }
}
