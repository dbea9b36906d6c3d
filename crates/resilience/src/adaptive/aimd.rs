//! Additive increase, multiplicative decrease.
//!
//! After Netflix concurrency-limits' `AIMDLimit`: while calls succeed with the limit in use (at least
//! half of it in flight), grow by one; on a drop, or a call slower than the timeout, multiply by the
//! backoff ratio (always shrinking by at least one). The limit stays within `[min, max]`.

use std::time::Duration;

use crate::ConfigError;

use super::{AdaptiveConfig, LimitAlgorithm, Sample};

/// The AIMD limit algorithm. Build it from an [`AdaptiveConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Aimd {
    /// Validates `config` and builds the algorithm from its limits, `backoff_ratio` and `timeout`.
    pub fn new(config: &AdaptiveConfig) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(None);
        config.validate("adaptive", &mut errors);
        errors.into_result(Self::new_unchecked(config))
    }

    /// Builds from a configuration already validated.
    pub(crate) fn new_unchecked(config: &AdaptiveConfig) -> Self {
        Aimd {
            limit: config.initial_limit,
            min: config.min_limit,
            max: config.max_limit,
            backoff_ratio: config.backoff_ratio,
            timeout: config.timeout,
        }
    }
}

impl LimitAlgorithm for Aimd {
    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, sample: Sample) -> usize {
        if sample.dropped || sample.rtt > self.timeout {
            // Multiply down, but always by at least one so small limits still shrink.
            let backed_off = (self.limit as f64 * self.backoff_ratio) as usize;
            self.limit = backed_off.min(self.limit.saturating_sub(1)).max(self.min);
        } else if sample.in_flight.saturating_mul(2) >= self.limit {
            // Only grow when the limit is actually in use; an idle service proves nothing.
            self.limit = (self.limit + 1).min(self.max);
        }
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn aimd(initial: usize, min: usize, max: usize) -> Aimd {
        Aimd::new(&AdaptiveConfig {
            initial_limit: initial,
            min_limit: min,
            max_limit: max,
            queue_size: 0,
            ..AdaptiveConfig::default()
        })
        .unwrap()
    }

    fn ok(in_flight: usize) -> Sample {
        Sample {
            rtt: Duration::from_millis(10),
            in_flight,
            dropped: false,
        }
    }

    #[test]
    fn grows_by_one_when_the_limit_is_in_use() {
        let mut a = aimd(10, 1, 20);
        assert_eq!(a.update(ok(5)), 11);
        assert_eq!(a.update(ok(11)), 12);
    }

    #[test]
    fn holds_when_little_of_the_limit_is_used() {
        let mut a = aimd(10, 1, 20);
        assert_eq!(a.update(ok(4)), 10);
    }

    #[test]
    fn backs_off_on_a_drop_and_on_a_slow_call() {
        let mut a = aimd(100, 1, 200);
        let drop = Sample {
            dropped: true,
            ..ok(100)
        };
        assert_eq!(a.update(drop), 90);
        let slow = Sample {
            rtt: Duration::from_secs(6),
            ..ok(90)
        };
        assert_eq!(a.update(slow), 81);
    }

    #[test]
    fn small_limits_shrink_by_at_least_one_and_stop_at_min() {
        let mut a = aimd(3, 2, 10);
        let drop = Sample {
            dropped: true,
            ..ok(3)
        };
        assert_eq!(a.update(drop), 2);
        assert_eq!(a.update(drop), 2);
    }

    #[test]
    fn stops_growing_at_max() {
        let mut a = aimd(10, 1, 10);
        assert_eq!(a.update(ok(10)), 10);
    }

    proptest! {
        #[test]
        fn never_leaves_min_max(
            min in 1usize..50,
            span in 0usize..100,
            start in 0usize..100,
            samples in proptest::collection::vec((0u64..10_000, 0usize..200, any::<bool>()), 0..200),
        ) {
            let max = min + span;
            let mut a = aimd(min + start % (span + 1), min, max);
            for (ms, in_flight, dropped) in samples {
                let limit = a.update(Sample { rtt: Duration::from_millis(ms), in_flight, dropped });
                prop_assert!((min..=max).contains(&limit), "{limit} outside [{min}, {max}]");
                prop_assert_eq!(limit, a.limit());
            }
        }
    }
}
