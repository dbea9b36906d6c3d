//! Detection: latency and error steps, the bottleneck behind them, slow trends, and forecasts of
//! exhaustion, computed from the per-second [`TickReport`]s of a [`Telemetry`] registry.
//!
//! A [`Detector`] is a synchronous state machine: feed it each tick's report with
//! [`Detector::observe`] (tests do, on paused time), or [`attach`](Detector::attach) it to a
//! registry to receive its [`DetectionEvent`]s on a channel. It keeps, per operation, the last
//! `baseline + recent` seconds (about 60 small summaries), the open minute and hour as
//! histograms, and 60 + 48 rollup summaries: memory is bounded, nothing is kept per call.
//!
//! # Method
//!
//! - **Steps** ([`StepConfig`]). Every second, for each operation, the last 3 s are compared
//!   with the 60 s before them. Latency: Welch's t-test (Welch 1947, with Satterthwaite's
//!   degrees of freedom) on the natural log of latency, one-sided; the standard error is
//!   multiplied by the baseline's overdispersion φ, how much more its per-second means vary
//!   than sampling of individual calls explains (the quasi-likelihood scale of Wedderburn 1974),
//!   and the degrees of freedom are capped by the baseline's seconds, so bursty but stable
//!   traffic does not look like a change. Errors: the exact conditional test for a rise of a
//!   Poisson rate (Przyborowski & Wilenski 1940) on counts divided by φ, valid for a handful of
//!   errors where a z-test is not. A step needs **both** p below the tick's share of `alpha`
//!   (split over all tests of the tick, Bonferroni) **and** a minimum effect (latency ×1.25 and
//!   +100 µs on the median; errors +1 point and ×1.5). Its onset is the maximum-likelihood
//!   change point from the known earlier level (Hinkley 1970). Afterwards the baseline restarts
//!   at the onset, so the step is not reported again; a `Recovered` event follows when the
//!   signal comes back to within half the thresholds of its earlier level.
//! - **Bottlenecks** ([`BottleneckConfig`]): operations are dependencies (by default, labelled
//!   `dependency="name"`), end-to-end requests (listed by name) or internal. A dependency's step
//!   names it, with its share of the time spent in dependencies (calls per second × mean
//!   latency) before and since the onset; an end-to-end step names the dependency that explains
//!   at least half of the rise, or else the end-to-end operation itself.
//! - **Trends** ([`TrendConfig`]): a least-squares line through the last 30 1-minute rollups of
//!   log latency and error ratio, significant by its slope's t-test and steep enough (+20 %
//!   latency or +1 error point per 30 min). A drift never opens a gap between two adjacent
//!   windows as large as a step's threshold, so it is reported here and not as a step.
//! - **Exhaustion** ([`ExhaustionWatch`], [`Forecaster`]): the same line fitted to a gauge, with
//!   the time until it reaches a limit.
//!
//! Why not CUSUM (Page 1954; Basseville & Nikiforov 1993)? It detects small persistent shifts
//! sooner, but needs the in-control mean and spread given and a threshold tuned to a run length;
//! per-second summaries whose precision changes with traffic would need both re-estimated
//! constantly. A windowed test with a p-value keeps its false-alarm rate as traffic and the
//! number of operations change, and steps that matter here are large and show within seconds.
//!
//! ```
//! use rampart_telemetry::{Labels, Telemetry};
//! use rampart_telemetry::detect::{DetectionEvent, DetectorConfig};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let telemetry = Telemetry::new();
//! let db = telemetry.operation_with("query", Labels::new().with("dependency", "postgres"));
//! let mut detector = DetectorConfig::default().build().expect("valid defaults");
//! let mut found = Vec::new();
//! for second in 0..90u64 {
//!     let slow = if second >= 80 { 3 } else { 1 }; // three times slower from second 80
//!     for i in 0..100u64 {
//!         db.record_ok(Duration::from_micros(slow * (4_000 + 40 * (i % 50))));
//!     }
//!     tokio::time::advance(Duration::from_secs(1)).await;
//!     found.extend(detector.observe(&telemetry.tick().expect("a second passed")));
//! }
//! let Some(DetectionEvent::Bottleneck(b)) = found.iter().find(|e| e.kind() == "bottleneck") else {
//!     panic!("no bottleneck in {found:?}");
//! };
//! assert_eq!(&*b.dependency, "postgres");
//! assert!(b.detected_at.duration_since(b.onset) <= Duration::from_secs(2));
//! # }
//! ```

mod bottleneck;
mod changepoint;
mod event;
mod rollup;
pub mod stats;
mod summary;
mod trend;

pub use bottleneck::{BottleneckConfig, Role};
pub use changepoint::StepConfig;
pub use event::{
    Bottleneck, Change, DetectionEvent, EndToEnd, ErrorStep, Exhaustion, LatencyStep, Recovered,
    Signal, Trend,
};
pub use rollup::{GaugeBucket, GaugeRollup, Rollup, RollupBucket, RollupConfig};
pub use trend::{
    ExhaustionConfig, ExhaustionWatch, Forecast, ForecastConfig, Forecaster, Limit, TrendConfig,
};

use crate::{Labels, Telemetry, TickReport};
use bottleneck::View;
use changepoint::Steps;
use rampart_resilience::{ConfigError, Subscription};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use summary::Slot;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Which operation an event is about: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationKey {
    /// The operation's name.
    pub name: Arc<str>,
    /// Its labels.
    pub labels: Labels,
}

impl OperationKey {
    /// The key of operation `name` with `labels`.
    pub fn new(name: impl Into<Arc<str>>, labels: Labels) -> Self {
        OperationKey {
            name: name.into(),
            labels,
        }
    }
}

impl fmt::Display for OperationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            write!(f, "{}", self.labels)?;
        }
        Ok(())
    }
}

/// Checks that `v` is a probability strictly between 0 and 1.
fn check_level(errors: &mut ConfigError, path: &str, v: f64) {
    if !(v > 0.0 && v < 1.0) {
        errors.push(path, format!("must be between 0 and 1, got {v}"));
    }
}

/// Checks that `d` is whole seconds between `min` and `max` seconds.
fn window_path(errors: &mut ConfigError, path: &str, d: Duration, min: u64, max: u64) {
    if d.subsec_nanos() != 0 || d.as_secs() < min || d.as_secs() > max {
        errors.push(
            path,
            format!("must be whole seconds between {min}s and {max}s, got {d:?}"),
        );
    }
}

/// Everything a [`Detector`] needs; the defaults suit request latencies of milliseconds to
/// seconds at a few calls per second or more.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectorConfig {
    /// Step detection.
    pub step: StepConfig,
    /// Trend detection.
    pub trend: TrendConfig,
    /// Operation roles for bottleneck attribution.
    pub bottleneck: BottleneckConfig,
    /// How many rollup buckets each operation keeps.
    pub rollup: RollupConfig,
}

impl DetectorConfig {
    /// Checks every value (reporting every problem at once) and builds the detector.
    pub fn build(self) -> Result<Detector, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.step.validate("step", &mut errors);
        self.trend
            .validate("trend", self.rollup.minutes, &mut errors);
        if self.rollup.hours == 0 {
            errors.push("rollup.hours", "must be at least 1, got 0");
        }
        errors.into_result(Detector {
            config: self,
            ops: Vec::new(),
            index: HashMap::new(),
        })
    }
}

#[derive(Debug)]
struct OpState {
    key: OperationKey,
    role: Role,
    steps: Steps,
    rollup: Rollup,
}

/// Finds steps, bottlenecks and trends in the per-second reports of a [`Telemetry`] registry.
/// See the [module docs](self) for the method and an example.
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    ops: Vec<OpState>,
    index: HashMap<OperationKey, usize>,
}

impl Detector {
    /// The configuration it runs with.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Takes one tick's report and returns what it found (usually nothing).
    pub fn observe(&mut self, report: &TickReport) -> Vec<DetectionEvent> {
        let mut out = Vec::new();
        let tests = 2.0 * report.operations.len().max(1) as f64;
        let step_alpha = self.config.step.alpha / tests;
        let trend_alpha = self.config.trend.alpha / tests;
        let mut triggers = Vec::new();
        for op in report.operations.iter() {
            let key = OperationKey::new(op.name.clone(), op.labels.clone());
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    let role = self.config.bottleneck.role_of(&op.name, &op.labels);
                    self.index.insert(key.clone(), self.ops.len());
                    self.ops.push(OpState {
                        key,
                        role,
                        steps: Steps::new(&self.config.step),
                        rollup: Rollup::new(&self.config.rollup),
                    });
                    self.ops.len() - 1
                }
            };
            let state = &mut self.ops[i];
            let minute_closed = state.rollup.observe(op);
            state.steps.push(Slot::of(op));
            let first = out.len();
            let step = &self.config.step;
            state
                .steps
                .evaluate(&state.key, step, step_alpha, report.at, &mut out);
            for e in &out[first..] {
                match e {
                    DetectionEvent::LatencyStep(s) => triggers.push((i, Signal::Latency, s.onset)),
                    DetectionEvent::ErrorStep(s) => triggers.push((i, Signal::ErrorRatio, s.onset)),
                    _ => {}
                }
            }
            if minute_closed {
                self.trends(i, trend_alpha, report.at, &mut out);
            }
        }
        for (i, cause, onset) in triggers {
            if let Some(e) = self.attribute(i, cause, onset, report.at) {
                out.push(DetectionEvent::Bottleneck(e));
            }
        }
        out
    }

    fn trends(&mut self, i: usize, alpha: f64, now: Instant, out: &mut Vec<DetectionEvent>) {
        let cfg = &self.config.trend;
        let state = &mut self.ops[i];
        for signal in [Signal::Latency, Signal::ErrorRatio] {
            let s = state.steps.state_mut(signal);
            if s.trend_at.is_some_and(|t| now < t + cfg.cooldown) {
                continue;
            }
            let minutes = state.rollup.minutes();
            if let Some(e) = cfg.evaluate(&state.key, signal, minutes, s.floor, alpha, now) {
                s.trend_at = Some(now);
                out.push(e);
            }
        }
    }

    fn attribute(
        &mut self,
        trigger: usize,
        cause: Signal,
        onset: Instant,
        now: Instant,
    ) -> Option<Bottleneck> {
        let mut at = None;
        let views: Vec<View<'_>> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, s)| s.role != Role::Internal)
            .filter_map(|(i, s)| {
                let view = View {
                    key: &s.key,
                    role: &s.role,
                    before: s.steps.reference(cause)?,
                    now: s.steps.since(onset)?,
                };
                Some((i, view))
            })
            .enumerate()
            .map(|(pos, (i, view))| {
                if i == trigger {
                    at = Some(pos);
                }
                view
            })
            .collect();
        let (culprit, event) = bottleneck::attribute(&views, at?, cause, onset, now)?;
        let culprit = self.index.get(views[culprit].key).copied()?;
        let cooldown = self.config.bottleneck.cooldown;
        let named = &mut self.ops[culprit].steps.state_mut(cause).named_at;
        if named.is_some_and(|t| now < t + cooldown) {
            return None;
        }
        *named = Some(now);
        Some(event)
    }

    /// The rollups of operation `name` with `labels`, once it has been seen.
    pub fn rollup(&self, name: &str, labels: &Labels) -> Option<&Rollup> {
        let i = *self.index.get(&OperationKey::new(name, labels.clone()))?;
        Some(&self.ops[i].rollup)
    }

    /// Every operation seen, with its role and rollups, in the order first seen.
    pub fn operations(&self) -> impl Iterator<Item = (&OperationKey, &Role, &Rollup)> {
        self.ops.iter().map(|s| (&s.key, &s.role, &s.rollup))
    }

    /// Bytes held for all operations: per-second summaries, open histograms and rollups.
    pub fn memory_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|s| s.steps.memory_bytes() + s.rollup.memory_bytes())
            .sum()
    }

    /// Subscribes to `telemetry`'s ticks: every report is observed on the ticking task (a few
    /// microseconds per operation) and the events are sent to the returned channel, which is
    /// unbounded because events are rare by construction (one per step, per recovery, per
    /// trend per cool-down). Dropping the [`AttachedDetector`] detaches it.
    pub fn attach(
        self,
        telemetry: &Telemetry,
    ) -> (AttachedDetector, mpsc::UnboundedReceiver<DetectionEvent>) {
        let detector = Arc::new(Mutex::new(self));
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = detector.clone();
        let subscription = telemetry.subscribe_ticks(move |report| {
            let events = lock(&shared).observe(report);
            for e in events {
                // A closed receiver means nobody listens any more; the events have nowhere to go.
                let _ = tx.send(e);
            }
        });
        (
            AttachedDetector {
                detector,
                _subscription: subscription,
            },
            rx,
        )
    }
}

fn lock(m: &Mutex<Detector>) -> std::sync::MutexGuard<'_, Detector> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A [`Detector`] subscribed to a registry's ticks; dropping it unsubscribes.
#[derive(Debug)]
pub struct AttachedDetector {
    detector: Arc<Mutex<Detector>>,
    _subscription: Subscription,
}

impl AttachedDetector {
    /// Runs `f` on the detector (to read its rollups); ticks wait meanwhile, so keep it short.
    pub fn with<R>(&self, f: impl FnOnce(&Detector) -> R) -> R {
        f(&lock(&self.detector))
    }
}
