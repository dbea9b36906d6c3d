//! Judging thresholds while a run goes: each second over sliding windows, at the end over the run.

use crate::record::{Rollup, Window};
use crate::report::ThresholdReport;
use crate::threshold::{Op, Threshold};

#[derive(Debug, Default, Clone)]
struct State {
    windows: u64,
    failed: u64,
    worst: Option<f64>,
    first_failed_at: Option<f64>,
}

/// Every threshold of a run with its request index and what the windows so far showed.
#[derive(Debug)]
pub(crate) struct Judge {
    thresholds: Vec<(Threshold, Option<usize>)>,
    states: Vec<State>,
}

impl Judge {
    /// For `thresholds`, with request names resolved against `names`.
    pub(crate) fn new(thresholds: &[Threshold], names: &[String]) -> Self {
        let thresholds: Vec<(Threshold, Option<usize>)> = thresholds
            .iter()
            .map(|t| {
                let idx = t
                    .request
                    .as_ref()
                    .and_then(|r| names.iter().position(|n| n == r));
                (t.clone(), idx)
            })
            .collect();
        let states = vec![State::default(); thresholds.len()];
        Judge { thresholds, states }
    }

    /// The longest window, in seconds: how much a rollup must keep.
    pub(crate) fn longest_window(&self) -> usize {
        self.thresholds
            .iter()
            .filter_map(|(t, _)| t.window_secs())
            .max()
            .unwrap_or(0)
    }

    fn window(&self, rollup: &Rollup, i: usize) -> Option<Window> {
        let (t, idx) = &self.thresholds[i];
        let secs = t.window_secs()?;
        (rollup.ticks() >= secs).then(|| rollup.recent(*idx, secs))
    }

    /// Judges every full window ending now (`t` seconds from the start). Returns true if any
    /// threshold is failing now: a window failed, or the run so far fails a whole-run threshold.
    pub(crate) fn on_tick(&mut self, rollup: &Rollup, t: f64) -> bool {
        let mut failing = false;
        for i in 0..self.thresholds.len() {
            let (th, idx) = &self.thresholds[i];
            match self.window(rollup, i) {
                Some(w) => {
                    let s = &mut self.states[i];
                    s.windows += 1;
                    if let Some(v) = th.metric.value(&w) {
                        let worse = match th.op {
                            Op::Lt | Op::Le => s.worst.is_none_or(|x| v > x),
                            _ => s.worst.is_none_or(|x| v < x),
                        };
                        if worse {
                            s.worst = Some(v);
                        }
                    }
                    if !th.passes(&w) {
                        s.failed += 1;
                        s.first_failed_at.get_or_insert(t);
                        failing = true;
                    }
                }
                None if th.window.is_none() && !th.passes(&rollup.total(*idx)) => {
                    failing = true;
                }
                None => {}
            }
        }
        failing
    }

    /// The results: each threshold over the whole run and its windows.
    pub(crate) fn results(&self, rollup: &Rollup) -> Vec<ThresholdReport> {
        self.thresholds
            .iter()
            .zip(&self.states)
            .map(|((t, idx), s)| {
                let total = rollup.total(*idx);
                ThresholdReport {
                    threshold: t.to_string(),
                    passed: t.passes(&total) && s.failed == 0,
                    value: t.metric.value(&total),
                    windows: s.windows,
                    windows_failed: s.failed,
                    worst_window: s.worst,
                    first_failed_at: s.first_failed_at,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Recorder;
    use std::time::Duration;

    #[test]
    fn a_short_bad_stretch_fails_its_window_but_not_the_run() {
        let rec = Recorder::new(vec!["a".into()]);
        let mut rollup = Rollup::new(&rec, 2);
        let th: Vec<Threshold> = ["p99<100ms over 2s", "p99<100ms", "p50{a}<100ms"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut judge = Judge::new(&th, rec.names());
        assert_eq!(judge.longest_window(), 2);
        let mut failing_at = Vec::new();
        for sec in 1..=10u64 {
            // 200 requests a second at 10 ms, second 5 at 500 ms.
            let ms = if sec == 5 { 500 } else { 10 };
            for _ in 0..200 {
                rec.record(
                    0,
                    Duration::from_millis(ms),
                    Duration::from_millis(ms),
                    None,
                );
            }
            rollup.tick(&rec, Duration::from_secs(sec), 1.0);
            if judge.on_tick(&rollup, sec as f64) {
                failing_at.push(sec);
            }
        }
        // Windows ending at seconds 5 and 6 hold the bad second; the whole run fails its p99 only
        // until enough good seconds dilute it (10 % of requests at 500 ms: p99 fails throughout).
        let r = judge.results(&rollup);
        assert_eq!((r[0].windows, r[0].windows_failed), (9, 2));
        assert_eq!(r[0].first_failed_at, Some(5.0));
        assert!(r[0].worst_window.unwrap() >= 500.0);
        assert!(!r[0].passed);
        assert!(!r[1].passed, "1 in 10 at 500 ms: the run's p99 is 500 ms");
        assert!(r[2].passed);
        assert_eq!(r[2].windows, 0);
        assert_eq!(failing_at, vec![5, 6, 7, 8, 9, 10]);
    }
}
