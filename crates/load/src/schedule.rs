//! Stages and the arrival schedule they make.
//!
//! A run is a start value and a list of stages; each stage moves the target (an arrival rate per
//! second for the open model, a number of virtual users for the closed one) linearly from where the
//! previous stage ended to its own `target` over its `duration`. A stage whose target equals the
//! previous one holds.
//!
//! For the open model the schedule fixes, before the run starts, the time at which every request is
//! meant to be sent: request `k` (counting from 0) is due when the cumulative number of arrivals
//! `A(t)`, the integral of the rate, reaches `k`. Latency is measured from that time, not from when
//! the request could actually be sent, which is the coordinated-omission correction of wrk2.
//!
//! ```
//! use std::time::Duration;
//! use rampart_load::schedule::{Schedule, Stage};
//!
//! // 100 requests per second for two seconds: 200 requests, 10 ms apart.
//! let s = Schedule::constant(100.0, Duration::from_secs(2));
//! assert_eq!(s.total(), 200);
//! assert_eq!(s.send_time(1), Some(Duration::from_millis(10)));
//! assert_eq!(s.send_time(200), None);
//!
//! // Ramp from 0 to 100/s over 10 s: 500 requests, the first ones sparse.
//! let ramp = Schedule::new(0.0, vec![Stage::new(Duration::from_secs(10), 100.0)]);
//! assert_eq!(ramp.total(), 500);
//! assert_eq!(ramp.target_at(Duration::from_secs(5)), 50.0);
//! ```

use std::time::Duration;

/// One stage: move the target linearly to `target` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// The target at its end: requests per second (open model) or virtual users (closed model).
    pub target: f64,
}

impl Stage {
    /// A stage reaching `target` after `duration`.
    pub fn new(duration: Duration, target: f64) -> Self {
        Stage { duration, target }
    }
}

/// A start value and stages, with the cumulative arrivals at each stage boundary precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    start: f64,
    stages: Vec<Stage>,
    /// `begin[i]`: when stage `i` begins, from the start of the run.
    begin: Vec<Duration>,
    /// `arrivals[i]`: arrivals due before stage `i` begins; one more entry for the end.
    arrivals: Vec<f64>,
}

impl Schedule {
    /// A schedule from `start`, through `stages`. Negative or non-finite targets count as 0.
    pub fn new(start: f64, stages: Vec<Stage>) -> Self {
        let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let start = clean(start);
        let stages: Vec<Stage> = stages
            .into_iter()
            .map(|s| Stage::new(s.duration, clean(s.target)))
            .collect();
        let mut begin = Vec::with_capacity(stages.len());
        let mut arrivals = Vec::with_capacity(stages.len() + 1);
        let (mut at, mut sum, mut from) = (Duration::ZERO, 0.0, start);
        arrivals.push(0.0);
        for s in &stages {
            begin.push(at);
            at += s.duration;
            // The area under a straight line: the mean of its ends times the length.
            sum += (from + s.target) / 2.0 * s.duration.as_secs_f64();
            arrivals.push(sum);
            from = s.target;
        }
        Schedule {
            start,
            stages,
            begin,
            arrivals,
        }
    }

    /// A constant target for `duration`.
    pub fn constant(target: f64, duration: Duration) -> Self {
        Schedule::new(target, vec![Stage::new(duration, target)])
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The value before the first stage.
    pub fn start(&self) -> f64 {
        self.start
    }

    /// The whole length of the run.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The highest target anywhere in the schedule.
    pub fn peak(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.target)
            .fold(self.start, f64::max)
    }

    fn stage_start_value(&self, i: usize) -> f64 {
        if i == 0 {
            self.start
        } else {
            self.stages[i - 1].target
        }
    }

    /// The target at `t` from the start (the last stage's target after the end).
    pub fn target_at(&self, t: Duration) -> f64 {
        for (i, s) in self.stages.iter().enumerate() {
            let into = t.saturating_sub(self.begin[i]);
            if t < self.begin[i] + s.duration {
                let from = self.stage_start_value(i);
                let f = into.as_secs_f64() / s.duration.as_secs_f64();
                return from + (s.target - from) * f;
            }
        }
        self.stages.last().map_or(self.start, |s| s.target)
    }

    /// How many arrivals are due in the whole run.
    pub fn total(&self) -> u64 {
        let a = self.arrivals.last().copied().unwrap_or(0.0);
        // Arrival k is due when A(t) = k, so k = 0 ..= ceil(A(end)) - 1 fall inside the run. A
        // float error of 1e-9 must not add or lose one.
        (a - 1e-9).ceil().max(0.0) as u64
    }

    /// When arrival `k` (from 0) is due, from the start of the run; `None` if after the end.
    pub fn send_time(&self, k: u64) -> Option<Duration> {
        let x = k as f64;
        if k >= self.total() {
            return None;
        }
        // The stage in which A(t) reaches x; stages with no arrivals are skipped.
        let i = self.arrivals.windows(2).position(|w| x < w[1])?;
        let s = self.stages[i];
        let y = x - self.arrivals[i];
        let d = s.duration.as_secs_f64();
        let r0 = self.stage_start_value(i);
        // Inside the stage A(t) = r0 t + a t² with a = (r1 - r0) / 2d. Solve A(t) = y in the form
        // 2y / (r0 + sqrt(r0² + 4ay)), which stays exact when a is near zero and for ramps down.
        let a = (s.target - r0) / (2.0 * d);
        let disc = (r0 * r0 + 4.0 * a * y).max(0.0);
        let denom = r0 + disc.sqrt();
        let t = if denom > 0.0 { 2.0 * y / denom } else { 0.0 };
        let t = t.clamp(0.0, d);
        Some(self.begin[i] + Duration::from_secs_f64(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let s = Schedule::constant(200.0, secs(2.0));
        assert_eq!(s.total(), 400);
        for k in 0..400 {
            let t = s.send_time(k).unwrap();
            assert!(
                (t.as_secs_f64() - k as f64 / 200.0).abs() < 1e-9,
                "{k}: {t:?}"
            );
        }
        assert_eq!(s.send_time(400), None);
    }

    #[test]
    fn ramp_up_follows_the_integral() {
        // 0 -> 100/s over 10 s: A(t) = 5 t², so arrival k is due at sqrt(k / 5).
        let s = Schedule::new(0.0, vec![Stage::new(secs(10.0), 100.0)]);
        assert_eq!(s.total(), 500);
        for k in [0u64, 1, 5, 20, 125, 499] {
            let want = (k as f64 / 5.0).sqrt();
            let got = s.send_time(k).unwrap().as_secs_f64();
            assert!((got - want).abs() < 1e-6, "{k}: {got} vs {want}");
        }
    }

    #[test]
    fn ramp_down_and_holds_and_empty_stages() {
        // 100/s for 1 s, nothing for 2 s (ramp to 0 then hold 0 is a ramp: 50 arrivals), hold at 0,
        // then 10/s.
        let s = Schedule::new(
            100.0,
            vec![
                Stage::new(secs(1.0), 100.0),
                Stage::new(secs(1.0), 0.0),
                Stage::new(secs(5.0), 0.0),
                Stage::new(secs(1.0), 0.0),
                Stage::new(secs(1.0), 10.0),
            ],
        );
        // 100 + 50 + 0 + 0 + 5
        assert_eq!(s.total(), 155);
        // Ramp down from 100 to 0 over 1 s: A(t) = 100t - 50t²; arrival 100 + 25 is due where
        // 100t - 50t² = 25, t = 1 - sqrt(0.5).
        let t = s.send_time(125).unwrap().as_secs_f64();
        assert!((t - (2.0 - 0.5f64.sqrt())).abs() < 1e-6, "{t}");
        // The first arrival after the quiet part is in the last stage.
        let t = s.send_time(150).unwrap().as_secs_f64();
        assert!((8.0..9.0).contains(&t), "{t}");
        let times: Vec<f64> = (0..155)
            .map(|k| s.send_time(k).unwrap().as_secs_f64())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "monotone");
        assert!(
            times.iter().all(|&t| !(2.0..8.0).contains(&t)),
            "none while the rate is 0"
        );
    }

    #[test]
    fn target_interpolates() {
        let s = Schedule::new(
            2.0,
            vec![Stage::new(secs(4.0), 10.0), Stage::new(secs(2.0), 10.0)],
        );
        assert_eq!(s.target_at(Duration::ZERO), 2.0);
        assert_eq!(s.target_at(secs(2.0)), 6.0);
        assert_eq!(s.target_at(secs(5.0)), 10.0);
        assert_eq!(s.target_at(secs(60.0)), 10.0);
        assert_eq!(s.duration(), secs(6.0));
        assert_eq!(s.peak(), 10.0);
    }

    #[test]
    fn fractional_totals_round_up_to_the_arrivals_inside_the_run() {
        // 3/s for 1.5 s: arrivals at 0, 1/3, 2/3, 1, 4/3 -> 5 (A(end) = 4.5).
        let s = Schedule::constant(3.0, secs(1.5));
        assert_eq!(s.total(), 5);
        assert!(s.send_time(4).unwrap() < secs(1.5));
    }
}
