//! Latency gradient.
//!
//! After Netflix concurrency-limits' `Gradient2Limit`. Two latencies are tracked: the latest one
//! (short) and an exponential moving average over `long_window` samples (long), which stands for the
//! latency without queueing. Per sample:
//!
//! ```text
//! gradient  = clamp(rtt_tolerance * long / short, 0.5, 1.0)
//! estimate  = limit * gradient + queue_size
//! limit     = clamp(limit * (1 - smoothing) + estimate * smoothing, min, max)
//! ```
//!
//! A gradient of 1 (latency holds) lets the limit grow by `queue_size * smoothing` per sample;
//! a rising latency shrinks it, by at most half per estimate so one outlier cannot collapse it.
//! The limit does not move while less than half of it is in flight (the caller, not the service, is
//! the bottleneck then). When the long average is more than twice the latest latency (load has
//! passed), it decays by 10% per sample so the limit recovers without waiting for the average.
//!
//! A dropped call carries no latency worth averaging (it may have failed fast); it counts as the
//! strongest queueing signal instead, a gradient of 0.5 without the `queue_size` allowance, whatever
//! is in flight. (With the allowance, a run of drops would hold the limit at `2 * queue_size`
//! instead of letting it fall to `min`.)

use crate::ConfigError;

use super::{AdaptiveConfig, LimitAlgorithm, Sample};

/// Samples averaged plainly before the moving average takes over, so the first latencies are not
/// weighted against a starting value of zero.
const WARMUP_SAMPLES: u32 = 10;

/// The Gradient2 limit algorithm. Build it from an [`AdaptiveConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient2 {
    estimate: f64,
    min: f64,
    max: f64,
    smoothing: f64,
    rtt_tolerance: f64,
    queue_size: f64,
    long: MovingAverage,
}

impl Gradient2 {
    /// Validates `config` and builds the algorithm from its limits, `smoothing`, `rtt_tolerance`,
    /// `long_window` and `queue_size`.
    pub fn new(config: &AdaptiveConfig) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(None);
        config.validate("adaptive", &mut errors);
        errors.into_result(Self::new_unchecked(config))
    }

    /// Builds from a configuration already validated.
    pub(crate) fn new_unchecked(config: &AdaptiveConfig) -> Self {
        Gradient2 {
            estimate: config.initial_limit as f64,
            min: config.min_limit as f64,
            max: config.max_limit as f64,
            smoothing: config.smoothing,
            rtt_tolerance: config.rtt_tolerance,
            queue_size: config.queue_size as f64,
            long: MovingAverage::new(config.long_window),
        }
    }

    /// The long-term average latency, in seconds (0 before the first sample).
    pub fn long_rtt_secs(&self) -> f64 {
        self.long.value
    }

    fn step(&mut self, gradient: f64, queue_size: f64) {
        let estimate = self.estimate * gradient + queue_size;
        let smoothed = self.estimate * (1.0 - self.smoothing) + estimate * self.smoothing;
        self.estimate = smoothed.clamp(self.min, self.max);
    }
}

impl LimitAlgorithm for Gradient2 {
    fn limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, sample: Sample) -> usize {
        if sample.dropped {
            self.step(0.5, 0.0);
            return self.limit();
        }
        let short = sample.rtt.as_secs_f64();
        let long = self.long.add(short);
        // Zero latency (possible on paused time or with a coarse clock) means no queueing at all.
        let ratio = if short > 0.0 {
            long / short
        } else {
            f64::INFINITY
        };
        if ratio > 2.0 {
            self.long.value *= 0.9;
        }
        if (sample.in_flight as f64) < self.estimate / 2.0 {
            return self.limit();
        }
        let gradient = (self.rtt_tolerance * ratio).clamp(0.5, 1.0);
        self.step(gradient, self.queue_size);
        self.limit()
    }
}

/// An exponential moving average over about `window` samples, plain average while warming up.
#[derive(Debug, Clone, PartialEq)]
struct MovingAverage {
    value: f64,
    sum: f64,
    count: u32,
    factor: f64,
}

impl MovingAverage {
    fn new(window: usize) -> Self {
        MovingAverage {
            value: 0.0,
            sum: 0.0,
            count: 0,
            factor: 2.0 / (window as f64 + 1.0),
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < WARMUP_SAMPLES {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn gradient2(initial: usize, min: usize, max: usize) -> Gradient2 {
        Gradient2::new(&AdaptiveConfig {
            initial_limit: initial,
            min_limit: min,
            max_limit: max,
            queue_size: 4.min(max),
            ..AdaptiveConfig::default()
        })
        .unwrap()
    }

    fn sample(ms: u64, in_flight: usize) -> Sample {
        Sample {
            rtt: Duration::from_millis(ms),
            in_flight,
            dropped: false,
        }
    }

    #[test]
    fn steady_latency_grows_the_limit_by_queue_size_times_smoothing() {
        let mut g = gradient2(20, 1, 200);
        g.update(sample(10, 20));
        // 20 * 0.8 + (20 * 1.0 + 4) * 0.2 = 20.8
        assert!((g.estimate - 20.8).abs() < 1e-9, "{}", g.estimate);
        for _ in 0..20 {
            g.update(sample(10, 40));
        }
        assert!(g.limit() > 30, "{}", g.limit());
    }

    #[test]
    fn rising_latency_shrinks_the_limit() {
        let mut g = gradient2(100, 1, 200);
        for _ in 0..50 {
            g.update(sample(10, 100));
        }
        let before = g.limit();
        for _ in 0..20 {
            g.update(sample(100, 200));
        }
        assert!(g.limit() < before / 2, "{before} -> {}", g.limit());
    }

    #[test]
    fn latency_within_tolerance_does_not_shrink_the_limit() {
        let mut g = gradient2(50, 1, 200);
        for _ in 0..20 {
            g.update(sample(10, 50));
        }
        let before = g.estimate;
        g.update(sample(14, 50));
        assert!(g.estimate >= before, "{before} -> {}", g.estimate);
    }

    #[test]
    fn app_limited_samples_leave_the_limit_alone() {
        let mut g = gradient2(40, 1, 200);
        assert_eq!(g.update(sample(10, 19)), 40);
        assert_eq!(g.update(sample(500, 19)), 40);
    }

    #[test]
    fn a_drop_counts_as_the_minimum_gradient() {
        let mut g = gradient2(100, 1, 200);
        let dropped = Sample {
            dropped: true,
            ..sample(1, 0)
        };
        // 100 * 0.8 + 100 * 0.5 * 0.2 = 90
        assert_eq!(g.update(dropped), 90);
        for _ in 0..100 {
            g.update(dropped);
        }
        assert_eq!(g.limit(), 1, "drops alone take the limit down to min");
        assert_eq!(g.long_rtt_secs(), 0.0, "a drop's latency is not averaged");
    }

    #[test]
    fn long_average_decays_when_latency_recovers() {
        let mut g = gradient2(100, 1, 200);
        for _ in 0..100 {
            g.update(sample(100, 100));
        }
        let high = g.long_rtt_secs();
        for _ in 0..20 {
            g.update(sample(10, 100));
        }
        assert!(
            g.long_rtt_secs() < high * 0.25,
            "{high} -> {}",
            g.long_rtt_secs()
        );
    }

    #[test]
    fn zero_latency_counts_as_no_queueing() {
        let mut g = gradient2(20, 1, 200);
        assert_eq!(g.update(sample(0, 20)), 20);
        assert!(g.estimate > 20.0);
    }

    proptest! {
        #[test]
        fn never_leaves_min_max(
            min in 1usize..50,
            span in 0usize..100,
            start in 0usize..100,
            samples in proptest::collection::vec((0u64..10_000, 0usize..200, any::<bool>()), 0..300),
        ) {
            let max = min + span;
            let mut g = gradient2(min + start % (span + 1), min, max);
            for (ms, in_flight, dropped) in samples {
                let limit = g.update(Sample { rtt: Duration::from_millis(ms), in_flight, dropped });
                prop_assert!((min..=max).contains(&limit), "{limit} outside [{min}, {max}]");
            }
        }
    }
}
