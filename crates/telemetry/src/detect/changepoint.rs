//! Step detection on one operation: a recent window against the baseline just before it.
//!
//! Every tick, for latency and for the error ratio, the last [`StepConfig::recent`] seconds are
//! compared with the [`StepConfig::baseline`] seconds before them. A step is reported when the
//! difference is both **significant** (p below the tick's share of [`StepConfig::alpha`]) and
//! **large enough to matter** (the minimum effect sizes). See the [module docs](super) for the
//! method and its references.
//!
//! After a step the baseline restarts at the step's onset, so the new level becomes normal once
//! [`StepConfig::min_baseline`] seconds of it are seen and the same step is not reported again;
//! the level before the step is kept to tell when the signal recovers.

use super::event::{Change, DetectionEvent, ErrorStep, LatencyStep, Recovered, Signal};
use super::stats::{binomial_sf, student_t_sf};
use super::summary::{Agg, Slot};
use super::{OperationKey, check_level, window_path};
use rampart_resilience::ConfigError;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// When a change of latency or error ratio counts as a step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// The recent window, the newest seconds tested against the baseline. Default 3 s: a step to
    /// twice the latency shows within one or two seconds, and a second's blip is diluted.
    pub recent: Duration,
    /// The baseline window, the seconds just before the recent one. Default 60 s.
    pub baseline: Duration,
    /// How much baseline is needed before testing, at start and after each step. Default 20 s.
    pub min_baseline: Duration,
    /// The significance level per tick, split evenly (Bonferroni) over every test of the tick
    /// (two per operation), so the false-alarm rate does not grow with the number of operations.
    /// Default 1e-6: at most about one false alarm in 11 days from chance alone, before the
    /// minimum effect sizes cut it further.
    pub alpha: f64,
    /// The least latency ratio (geometric mean, i.e. median for log-normal latency) that counts.
    /// Default 1.25.
    pub min_latency_ratio: f64,
    /// The least rise of the median latency that counts. Default 100 µs.
    pub min_latency_increase: Duration,
    /// The least rise of the error ratio, in absolute terms, that counts. Default 0.01 (one
    /// percentage point).
    pub min_error_increase: f64,
    /// The least ratio of error ratios that counts. Default 1.5.
    pub min_error_ratio: f64,
    /// The least calls in the recent window (and in the baseline) for a test. Default 10.
    pub min_requests: u64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            recent: Duration::from_secs(3),
            baseline: Duration::from_secs(60),
            min_baseline: Duration::from_secs(20),
            alpha: 1e-6,
            min_latency_ratio: 1.25,
            min_latency_increase: Duration::from_micros(100),
            min_error_increase: 0.01,
            min_error_ratio: 1.5,
            min_requests: 10,
        }
    }
}

impl StepConfig {
    pub(crate) fn validate(&self, path: &str, errors: &mut ConfigError) {
        let p = |field: &str| format!("{path}.{field}");
        window_path(errors, &p("recent"), self.recent, 1, 60);
        window_path(errors, &p("baseline"), self.baseline, 5, 3_600);
        window_path(errors, &p("min_baseline"), self.min_baseline, 3, 3_600);
        if self.min_baseline > self.baseline {
            errors.push(
                p("min_baseline"),
                format!(
                    "must be at most baseline ({:?}), got {:?}",
                    self.baseline, self.min_baseline
                ),
            );
        }
        check_level(errors, &p("alpha"), self.alpha);
        for (field, v) in [
            ("min_latency_ratio", self.min_latency_ratio),
            ("min_error_ratio", self.min_error_ratio),
        ] {
            if !(v >= 1.0 && v.is_finite()) {
                errors.push(p(field), format!("must be at least 1, got {v}"));
            }
        }
        if !(0.0..1.0).contains(&self.min_error_increase) {
            errors.push(
                p("min_error_increase"),
                format!("must be in [0, 1), got {}", self.min_error_increase),
            );
        }
        if self.min_requests < 2 {
            errors.push(
                p("min_requests"),
                format!("must be at least 2, got {}", self.min_requests),
            );
        }
    }

    fn slots(d: Duration) -> usize {
        d.as_secs().max(1) as usize
    }
}

/// Welch's t-test on log latency, one-sided, with the standard error scaled by the baseline's
/// overdispersion and the degrees of freedom capped by its seconds. `None` when the rise is below
/// the minimum effect or there are too few calls; otherwise `(ratio, p)`.
fn latency_test(base: &Agg, recent: &Agg, cfg: &StepConfig) -> Option<(f64, f64)> {
    let min_n = cfg.min_requests as f64;
    if recent.n < min_n || base.n < min_n {
        return None;
    }
    let d = recent.log_mean() - base.log_mean();
    let ratio = d.exp();
    let increase = recent.geo_mean_us() - base.geo_mean_us();
    if ratio < cfg.min_latency_ratio || increase < cfg.min_latency_increase.as_secs_f64() * 1e6 {
        return None;
    }
    let a = recent.log_var() / recent.n;
    let b = base.log_var() / base.n;
    let se2 = base.lat_phi * (a + b);
    if se2 <= 0.0 {
        return Some((ratio, 0.0)); // no spread at all: the shift is certain
    }
    // Welch–Satterthwaite (the scale φ cancels), capped at the baseline's seconds − 1 because φ
    // is estimated from them.
    let welch = (a + b).powi(2) / (a * a / (recent.n - 1.0) + b * b / (base.n - 1.0));
    let df = welch.min(base.seconds as f64 - 1.0).max(1.0);
    Some((ratio, student_t_sf(d / se2.sqrt(), df)))
}

/// The exact conditional test for a rise of a Poisson rate (Przyborowski & Wilenski 1940): given
/// all errors of both windows, how likely are this many in the recent one. Counts are divided by
/// the baseline's overdispersion first. `None` below the minimum effect.
fn error_test(base: &Agg, recent: &Agg, cfg: &StepConfig) -> Option<f64> {
    let min_n = cfg.min_requests as f64;
    if recent.n < min_n || base.n < min_n {
        return None;
    }
    let (pb, pr) = (base.error_ratio(), recent.error_ratio());
    if pr - pb < cfg.min_error_increase || pr < pb * cfg.min_error_ratio || recent.errors == 0.0 {
        return None;
    }
    let phi = base.err_phi;
    let share = recent.n / (recent.n + base.n);
    Some(binomial_sf(
        recent.errors / phi,
        (recent.errors + base.errors) / phi,
        share,
    ))
}

/// Whether a signal is back within half the step thresholds of its level before the step.
fn recovered(signal: Signal, before: &Agg, recent: &Agg, cfg: &StepConfig) -> bool {
    match signal {
        Signal::Latency => {
            let ratio = (recent.log_mean() - before.log_mean()).exp();
            let increase = recent.geo_mean_us() - before.geo_mean_us();
            ratio < cfg.min_latency_ratio.sqrt()
                || increase < cfg.min_latency_increase.as_secs_f64() * 1e6 / 2.0
        }
        Signal::ErrorRatio => {
            let (pb, pr) = (before.error_ratio(), recent.error_ratio());
            pr - pb < cfg.min_error_increase / 2.0 || pr < pb * (1.0 + cfg.min_error_ratio) / 2.0
        }
    }
}

/// The value a signal tracks in one slot: `(weight, weight × value)`.
fn weighted(signal: Signal, s: &Slot) -> (f64, f64) {
    let n = s.count as f64;
    match signal {
        Signal::Latency => (n, n * s.log_mean),
        Signal::ErrorRatio => (n, s.errors as f64),
    }
}

fn level(signal: Signal, a: &Agg) -> f64 {
    match signal {
        Signal::Latency => a.log_mean(),
        Signal::ErrorRatio => a.error_ratio(),
    }
}

/// Where in `slots` the signal most likely moved away from `reference` (up or down): the split
/// maximising `n_after · (mean_after − reference)²`, the maximum-likelihood change point for a
/// shift from a known level (Hinkley 1970). Returns the start of the first slot after it.
fn onset(slots: &[Slot], signal: Signal, reference: f64, up: bool) -> Option<Instant> {
    let (mut n, mut sum) = (0.0, 0.0);
    let mut best: Option<(f64, Instant)> = None;
    for s in slots.iter().rev() {
        let (w, ws) = weighted(signal, s);
        n += w;
        sum += ws;
        if n <= 0.0 {
            continue;
        }
        let shift = sum / n - reference;
        if (shift > 0.0) != up {
            continue;
        }
        let score = n * shift * shift;
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, s.start));
        }
    }
    best.map(|(_, at)| at)
}

#[derive(Debug, Clone)]
struct Incident {
    before: Agg,
    level: f64,
    onset: Instant,
}

/// One signal's memory: where its baseline starts, the open step if any.
#[derive(Debug, Default)]
pub(crate) struct SignalState {
    /// Baseline seconds start at or after this (the last step's or recovery's onset).
    pub(crate) floor: Option<Instant>,
    incident: Option<Incident>,
    /// The level before the last recovered step, used while the new baseline fills.
    fallback: Option<Agg>,
    /// When a bottleneck last named this operation for this signal.
    pub(crate) named_at: Option<Instant>,
    /// When a trend was last reported for this signal.
    pub(crate) trend_at: Option<Instant>,
}

/// Step detection for one operation: the last `baseline + recent` seconds and two signals.
#[derive(Debug)]
pub(crate) struct Steps {
    ring: VecDeque<Slot>,
    capacity: usize,
    recent: usize,
    min_baseline: usize,
    pub(crate) latency: SignalState,
    pub(crate) errors: SignalState,
}

impl Steps {
    pub(crate) fn new(cfg: &StepConfig) -> Self {
        let recent = StepConfig::slots(cfg.recent);
        let capacity = StepConfig::slots(cfg.baseline) + recent;
        Steps {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            recent,
            min_baseline: StepConfig::slots(cfg.min_baseline),
            latency: SignalState::default(),
            errors: SignalState::default(),
        }
    }

    pub(crate) fn push(&mut self, slot: Slot) {
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(slot);
    }

    fn state(&self, signal: Signal) -> &SignalState {
        match signal {
            Signal::Latency => &self.latency,
            Signal::ErrorRatio => &self.errors,
        }
    }

    pub(crate) fn state_mut(&mut self, signal: Signal) -> &mut SignalState {
        match signal {
            Signal::Latency => &mut self.latency,
            Signal::ErrorRatio => &mut self.errors,
        }
    }

    fn recent_slots(&self) -> impl Iterator<Item = &Slot> + Clone {
        self.ring
            .range(self.ring.len().saturating_sub(self.recent)..)
    }

    /// The recent window's sums; `None` until it is full.
    pub(crate) fn recent(&self) -> Option<Agg> {
        (self.ring.len() >= self.recent).then(|| Agg::of(self.recent_slots()))
    }

    /// The sums of the seconds that started at or after `at`; `None` if there are none.
    pub(crate) fn since(&self, at: Instant) -> Option<Agg> {
        let slots = self.ring.iter().filter(move |s| s.start >= at);
        slots.clone().next().is_some().then(|| Agg::of(slots))
    }

    /// The signal's baseline: the seconds before the recent window since the floor, if there are
    /// enough; otherwise the level before the last recovered step, if no step is open.
    fn baseline(&self, signal: Signal) -> Option<Agg> {
        let state = self.state(signal);
        let end = self.ring.len().saturating_sub(self.recent);
        let slots = self
            .ring
            .range(..end)
            .filter(move |s| state.floor.is_none_or(|f| s.start >= f));
        if slots.clone().count() >= self.min_baseline {
            Some(Agg::of(slots))
        } else if state.incident.is_none() {
            state.fallback.clone()
        } else {
            None
        }
    }

    /// What a signal was before: the level before an open step, else the baseline.
    pub(crate) fn reference(&self, signal: Signal) -> Option<Agg> {
        match &self.state(signal).incident {
            Some(incident) => Some(incident.before.clone()),
            None => self.baseline(signal),
        }
    }

    /// Runs the tests for both signals after a push; events go to `out`.
    pub(crate) fn evaluate(
        &mut self,
        key: &OperationKey,
        cfg: &StepConfig,
        alpha: f64,
        now: Instant,
        out: &mut Vec<DetectionEvent>,
    ) {
        let Some(recent) = self.recent() else {
            return;
        };
        for signal in [Signal::Latency, Signal::ErrorRatio] {
            if let Some(e) = self.check_recovery(signal, key, &recent, cfg, now) {
                out.push(e);
            }
            if let Some(e) = self.check_step(signal, key, &recent, cfg, alpha, now) {
                out.push(e);
            }
        }
    }

    fn check_recovery(
        &mut self,
        signal: Signal,
        key: &OperationKey,
        recent: &Agg,
        cfg: &StepConfig,
        now: Instant,
    ) -> Option<DetectionEvent> {
        let incident = self.state(signal).incident.as_ref()?;
        // Judge only seconds after the step began, and enough of them.
        let since_onset = self.recent_slots().all(|s| s.start >= incident.onset);
        if !since_onset || recent.n < cfg.min_requests as f64 {
            return None;
        }
        if !recovered(signal, &incident.before, recent, cfg) {
            return None;
        }
        let slots: Vec<Slot> = self.recent_slots().copied().collect();
        let at = onset(&slots, signal, incident.level, false).unwrap_or(slots[0].start);
        let state = self.state_mut(signal);
        let incident = state.incident.take()?;
        state.floor = Some(at);
        state.fallback = Some(incident.before);
        Some(DetectionEvent::Recovered(Recovered {
            operation: key.clone(),
            signal,
            since: incident.onset,
            onset: at,
            detected_at: now,
        }))
    }

    fn check_step(
        &mut self,
        signal: Signal,
        key: &OperationKey,
        recent: &Agg,
        cfg: &StepConfig,
        alpha: f64,
        now: Instant,
    ) -> Option<DetectionEvent> {
        let base = self.baseline(signal)?;
        let (ratio, p) = match signal {
            Signal::Latency => latency_test(&base, recent, cfg)?,
            Signal::ErrorRatio => (0.0, error_test(&base, recent, cfg)?),
        };
        if p >= alpha {
            return None;
        }
        let slots: Vec<Slot> = self.recent_slots().copied().collect();
        let at = onset(&slots, signal, level(signal, &base), true).unwrap_or(slots[0].start);
        // Describe the new level by the seconds since the onset, not the whole (mixed) window.
        let now_level = self.since(at).unwrap_or_else(|| recent.clone());
        let event = match signal {
            Signal::Latency => DetectionEvent::LatencyStep(LatencyStep {
                operation: key.clone(),
                p50: micros_change(base.p50, now_level.p50),
                p99: micros_change(base.p99, now_level.p99),
                mean: Change {
                    baseline: base.mean(),
                    current: now_level.mean(),
                },
                ratio: ratio.max((now_level.log_mean() - base.log_mean()).exp()),
                p_value: p,
                onset: at,
                detected_at: now,
            }),
            Signal::ErrorRatio => DetectionEvent::ErrorStep(ErrorStep {
                operation: key.clone(),
                error_ratio: Change {
                    baseline: base.error_ratio(),
                    current: now_level.error_ratio(),
                },
                errors: now_level.errors as u64,
                requests: now_level.n as u64,
                p_value: p,
                onset: at,
                detected_at: now,
            }),
        };
        let state = self.state_mut(signal);
        // An escalation keeps the level before the first step as the one to recover to.
        let before = state.incident.take().map_or(base, |i| i.before);
        state.incident = Some(Incident {
            before,
            level: level(signal, &now_level),
            onset: at,
        });
        state.floor = Some(at);
        state.fallback = None;
        Some(event)
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Slot>() + 2 * std::mem::size_of::<Agg>()
    }
}

fn micros_change(baseline: u32, current: u32) -> Change<Duration> {
    Change {
        baseline: Duration::from_micros(u64::from(baseline)),
        current: Duration::from_micros(u64::from(current)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::summary::tests::slot;
    use super::*;

    #[test]
    fn onset_is_the_first_second_at_the_new_level() {
        let t0 = Instant::now();
        let slots: Vec<Slot> = (0..5)
            .map(|i| slot(t0, i, 100, if i >= 3 { 9.9 } else { 9.2 }, 0.25, 0))
            .collect();
        assert_eq!(
            onset(&slots, Signal::Latency, 9.2, true),
            Some(t0 + Duration::from_secs(3))
        );
        assert_eq!(onset(&slots, Signal::Latency, 9.2, false), None);
    }

    #[test]
    fn error_test_needs_more_than_a_few_errors_at_low_volume() {
        let t0 = Instant::now();
        let cfg = StepConfig::default();
        let base = Agg::of(
            (0..60)
                .map(|i| slot(t0, i, 10, 9.2, 0.25, 0))
                .collect::<Vec<_>>()
                .iter(),
        );
        let recent = |errors| {
            let s: Vec<Slot> = (60..63)
                .map(|i| slot(t0, i, 10, 9.2, 0.25, errors))
                .collect();
            Agg::of(s.iter())
        };
        // One error in 30 calls after none in 600: a 3 % error ratio but p = 30/630 = 0.048.
        assert!(error_test(&base, &recent(0), &cfg).is_none());
        let one = {
            let mut s: Vec<Slot> = (60..63).map(|i| slot(t0, i, 10, 9.2, 0.25, 0)).collect();
            s[0].errors = 1;
            Agg::of(s.iter())
        };
        let p = error_test(&base, &one, &cfg).unwrap_or(0.0);
        assert!((p - 30.0 / 630.0).abs() < 1e-12, "{p}");
        // Nine errors in 30 calls: all nine of nine errors fell in the recent window, p = share⁹.
        let p = error_test(&base, &recent(3), &cfg).unwrap_or(1.0);
        assert!((p / (30.0f64 / 630.0).powi(9) - 1.0).abs() < 1e-9, "{p}");
    }
}
