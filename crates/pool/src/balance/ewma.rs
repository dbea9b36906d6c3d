//! The peak EWMA latency estimate, as Finagle's `PeakEwma` and linkerd's balancer keep it.
//!
//! A sample above the estimate replaces it at once (the "peak"), so a slowing endpoint loses traffic
//! immediately; a sample below it pulls the estimate down with weight `1 - exp(-elapsed / decay)`, so
//! recovery is believed only gradually. The weight depends on the time since the last update, not on
//! the number of samples, so a busy endpoint and a quiet one forget at the same rate.

use std::sync::atomic::{AtomicU64, Ordering};

/// The estimate after one `sample` that came `elapsed_ns` after the previous update (all in
/// nanoseconds). `prev` is `None` before the first sample, which is then taken as it is.
pub(crate) fn observe(prev: Option<f64>, sample: f64, elapsed_ns: f64, decay_ns: f64) -> f64 {
    match prev {
        Some(prev) if sample <= prev => {
            let keep = (-elapsed_ns / decay_ns).exp();
            prev * keep + sample * (1.0 - keep)
        }
        _ => sample,
    }
}

/// The estimate seen `elapsed_ns` after its last update with no sample since: it decays toward zero
/// (as Finagle and tower do when reading the cost), so an endpoint that stopped getting traffic
/// after a slow spell is tried again eventually instead of being starved forever.
pub(crate) fn decayed(estimate: f64, elapsed_ns: f64, decay_ns: f64) -> f64 {
    estimate * (-elapsed_ns / decay_ns).exp()
}

/// The bit pattern meaning "no estimate yet" (a NaN that `f64::to_bits` of a real estimate never
/// produces, since estimates are finite).
const NONE: u64 = u64::MAX;

/// A peak EWMA updated and read without a lock: the estimate's bits and the time of its last update
/// (nanoseconds since the balancer's epoch) in two atomics.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    bits: AtomicU64,
    stamp: AtomicU64,
}

impl PeakEwma {
    pub(crate) fn new() -> Self {
        PeakEwma {
            bits: AtomicU64::new(NONE),
            stamp: AtomicU64::new(0),
        }
    }

    /// The current estimate in nanoseconds, undecayed; `None` before the first sample.
    pub(crate) fn get(&self) -> Option<f64> {
        decode(self.bits.load(Ordering::Acquire))
    }

    /// Feeds one sample of `sample_ns` nanoseconds observed at `now`.
    ///
    /// Concurrent callers each move the stamp forward (`fetch_max`) and decay by the part of the
    /// elapsed time they claimed; since `exp(-a) * exp(-b) = exp(-(a + b))` the total decay is the
    /// same as one caller would have applied.
    pub(crate) fn observe(&self, sample_ns: f64, now: u64, decay_ns: f64) {
        let before = self.stamp.fetch_max(now, Ordering::AcqRel);
        let elapsed = now.saturating_sub(before) as f64;
        let _ = self
            .bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                Some(observe(decode(bits), sample_ns, elapsed, decay_ns).to_bits())
            });
    }

    /// Replaces the estimate by `seed` (or none) as of `now`.
    pub(crate) fn reset(&self, seed: Option<f64>, now: u64) {
        self.stamp.store(now, Ordering::Release);
        self.bits
            .store(seed.map_or(NONE, f64::to_bits), Ordering::Release);
    }

    /// The estimate at `now`, decayed since its last update; `None` before the first sample.
    pub(crate) fn decayed_at(&self, now: u64, decay_ns: f64) -> Option<f64> {
        let estimate = self.get()?;
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Acquire));
        Some(decayed(estimate, elapsed as f64, decay_ns))
    }

    /// The latency a pick weighs at `now`: the estimate decayed since its last update, or
    /// `default_ns` before the first sample.
    #[cfg(test)]
    pub(crate) fn load(&self, now: u64, decay_ns: f64, default_ns: f64) -> f64 {
        self.decayed_at(now, decay_ns).unwrap_or(default_ns)
    }
}

fn decode(bits: u64) -> Option<f64> {
    (bits != NONE).then(|| f64::from_bits(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: f64 = 1e9;
    const DECAY: f64 = 10.0 * SEC;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn first_sample_is_taken_as_it_is() {
        assert_eq!(observe(None, 42.0, 0.0, DECAY), 42.0);
    }

    #[test]
    fn a_sample_above_the_estimate_is_taken_at_once() {
        assert_eq!(observe(Some(10.0), 500.0, 0.0, DECAY), 500.0);
        assert_eq!(observe(Some(10.0), 11.0, 1e6 * SEC, DECAY), 11.0);
    }

    #[test]
    fn a_lower_sample_pulls_by_one_minus_exp_of_elapsed_over_decay() {
        // After exactly one time constant the old estimate keeps weight 1/e.
        let got = observe(Some(100.0), 10.0, DECAY, DECAY);
        let keep = (-1.0f64).exp();
        assert!(close(got, 100.0 * keep + 10.0 * (1.0 - keep)), "{got}");
        // No time elapsed: the lower sample changes nothing.
        assert_eq!(observe(Some(100.0), 10.0, 0.0, DECAY), 100.0);
        // A long time elapsed: the estimate is (nearly) the sample.
        assert!(close(observe(Some(100.0), 10.0, 1e3 * DECAY, DECAY), 10.0));
    }

    #[test]
    fn idle_estimate_decays_toward_zero() {
        assert_eq!(decayed(80.0, 0.0, DECAY), 80.0);
        assert!(close(
            decayed(80.0, DECAY, DECAY),
            80.0 / std::f64::consts::E
        ));
    }

    #[test]
    fn atomic_estimate_follows_the_formula_and_resets() {
        let ewma = PeakEwma::new();
        assert_eq!(ewma.get(), None);
        assert_eq!(ewma.load(5, DECAY, 7.0), 7.0);
        ewma.observe(100.0, 0, DECAY);
        assert_eq!(ewma.get(), Some(100.0));
        ewma.observe(10.0, DECAY as u64, DECAY);
        let keep = (-1.0f64).exp();
        assert!(close(
            ewma.get().unwrap_or(0.0),
            100.0 * keep + 10.0 * (1.0 - keep)
        ));
        ewma.reset(Some(3.0), 2 * DECAY as u64);
        assert_eq!(ewma.get(), Some(3.0));
        assert!(close(
            ewma.load(3 * DECAY as u64, DECAY, 0.0),
            3.0 / std::f64::consts::E
        ));
        ewma.reset(None, 0);
        assert_eq!(ewma.get(), None);
    }

    proptest! {
        #[test]
        fn estimate_stays_between_the_sample_and_the_previous_peak(
            prev in 0.0f64..1e12,
            sample in 0.0f64..1e12,
            elapsed in 0.0f64..1e12,
        ) {
            let got = observe(Some(prev), sample, elapsed, DECAY);
            let slack = 1e-9 * prev.max(sample) + 1e-6;
            prop_assert!(got >= sample - slack, "{got} below the sample {sample}");
            prop_assert!(got <= prev.max(sample) + slack, "{got} above the peak");
        }
    }
}
