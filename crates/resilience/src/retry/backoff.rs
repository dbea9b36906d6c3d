//! How long to wait before each retry: exponential backoff with jitter.
//!
//! The jitter modes are those of Marc Brooker's "Exponential Backoff And Jitter" (AWS
//! Architecture Blog, 2015). Spreading retries out at random keeps many clients that failed
//! together from retrying together; "full" jitter does that best for the least total work.

use std::time::Duration;

/// How a retry delay is randomised. Written in configuration as `"none"`, `"full"`, `"equal"` or
/// `"decorrelated"`; the default is `"full"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// No randomness: `min(max_delay, base_delay * multiplier^n)`.
    None,
    /// Uniform in `[0, min(max_delay, base_delay * multiplier^n)]`.
    #[default]
    Full,
    /// Half the exponential delay, plus uniform in `[0, half]`.
    Equal,
    /// `min(max_delay, uniform in [base_delay, previous delay * 3])`: each delay grows from the
    /// one before rather than from the attempt number.
    Decorrelated,
}

/// The largest delay a [`Backoff`] works with: `u64::MAX` nanoseconds, about 584 years.
const MAX_NANOS: u64 = u64::MAX;

/// Computes retry delays. Pure: the randomness comes in as a parameter, so tests can seed it.
///
/// ```
/// use std::time::Duration;
/// use rampart_resilience::retry::{Backoff, Jitter};
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 2.0, Jitter::None);
/// let mut rng = fastrand::Rng::with_seed(7);
/// let first = backoff.base_delay();
/// assert_eq!(backoff.delay(0, first, &mut rng), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3, first, &mut rng), Duration::from_millis(800));
/// assert_eq!(backoff.delay(9, first, &mut rng), Duration::from_secs(1)); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl Backoff {
    /// A backoff starting at `base`, growing by `multiplier` per retry, capped at `max`.
    ///
    /// Never panics. Out-of-range values are brought into range rather than refused (the
    /// configuration refuses them with a message): `max` below `base` becomes `base`, a
    /// multiplier below 1 or NaN becomes 1, and durations beyond about 584 years are capped there.
    pub fn new(base: Duration, max: Duration, multiplier: f64, jitter: Jitter) -> Backoff {
        let cap = Duration::from_nanos(MAX_NANOS);
        let base = base.min(cap);
        let max = max.min(cap).max(base);
        let multiplier = if multiplier >= 1.0 { multiplier } else { 1.0 };
        Backoff {
            base,
            max,
            multiplier,
            jitter,
        }
    }

    /// The delay before the first retry, before jitter.
    pub fn base_delay(&self) -> Duration {
        self.base
    }

    /// No delay is ever longer than this.
    pub fn max_delay(&self) -> Duration {
        self.max
    }

    /// How much the delay grows per retry.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry `n` without jitter: `min(max, base * multiplier^n)`, where `n` is
    /// the number of retries already made (0 before the first retry). Never decreases as `n` grows.
    pub fn ceiling(&self, n: u32) -> Duration {
        if self.multiplier == 1.0 || n == 0 || self.base.is_zero() {
            return self.base;
        }
        let base = nanos(self.base) as f64;
        let max = nanos(self.max) as f64;
        // base * multiplier^n as base * e^(n ln multiplier): monotonic in `n` (powi's repeated
        // squaring can round the wrong way between neighbours), and overflows to infinity
        // rather than wrapping. Rounding to the nanosecond keeps 100ms * 2^3 at exactly 800ms.
        let grown = base * (f64::from(n) * self.multiplier.ln()).exp();
        // `grown` cannot be NaN: `base` is not zero and the exponent is finite or +infinity.
        // Converting a huge `base` to f64 may round it down, hence the clamp from below.
        from_nanos_f64(grown.min(max).round())
            .max(self.base)
            .min(self.max)
    }

    /// The delay before retry `n` (0 before the first retry), with jitter drawn from `rng`.
    ///
    /// `prev` is the delay returned for the previous retry (use [`Backoff::base_delay`] before
    /// the first); only [`Jitter::Decorrelated`] uses it. Always within `[0, max_delay]`, and for
    /// decorrelated jitter within `[base_delay, max_delay]`.
    pub fn delay(&self, n: u32, prev: Duration, rng: &mut fastrand::Rng) -> Duration {
        match self.jitter {
            Jitter::None => self.ceiling(n),
            Jitter::Full => Duration::from_nanos(rng.u64(0..=nanos(self.ceiling(n)))),
            Jitter::Equal => {
                let ceiling = nanos(self.ceiling(n));
                let half = ceiling / 2;
                Duration::from_nanos(half + rng.u64(0..=ceiling - half))
            }
            Jitter::Decorrelated => {
                let low = nanos(self.base);
                let high = nanos(prev).saturating_mul(3).max(low);
                Duration::from_nanos(rng.u64(low..=high)).min(self.max)
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(MAX_NANOS)
}

fn from_nanos_f64(n: f64) -> Duration {
    if n >= MAX_NANOS as f64 {
        Duration::from_nanos(MAX_NANOS)
    } else if n > 0.0 {
        Duration::from_nanos(n as u64)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ]
    }

    fn any_backoff() -> impl Strategy<Value = Backoff> {
        (
            0u64..=u64::MAX,
            0u64..=u64::MAX,
            prop_oneof![
                1.0f64..16.0,
                1.0f64..1.000_001,
                Just(f64::MAX),
                Just(f64::INFINITY)
            ],
            any_jitter(),
        )
            .prop_map(|(base, max, multiplier, jitter)| {
                Backoff::new(
                    Duration::from_nanos(base),
                    Duration::from_nanos(max),
                    multiplier,
                    jitter,
                )
            })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_without_jitter_doubles_then_caps() {
        let b = Backoff::new(ms(100), ms(1000), 2.0, Jitter::None);
        let mut rng = fastrand::Rng::with_seed(1);
        let delays: Vec<_> = (0..6).map(|n| b.delay(n, ms(0), &mut rng)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let b = Backoff::new(ms(100), ms(10_000), 2.0, Jitter::Equal);
        let mut rng = fastrand::Rng::with_seed(3);
        for n in 0..8 {
            let ceiling = b.ceiling(n);
            let d = b.delay(n, ms(0), &mut rng);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{n}: {d:?} vs {ceiling:?}"
            );
        }
    }

    #[test]
    fn decorrelated_grows_from_the_previous_delay() {
        let b = Backoff::new(ms(100), ms(60_000), 2.0, Jitter::Decorrelated);
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..100 {
            let d = b.delay(0, ms(1000), &mut rng);
            assert!(d >= ms(100) && d <= ms(3000), "{d:?}");
        }
    }

    #[test]
    fn out_of_range_inputs_are_brought_into_range() {
        let b = Backoff::new(ms(500), ms(100), f64::NAN, Jitter::None);
        assert_eq!(b.max_delay(), ms(500));
        assert_eq!(b.multiplier(), 1.0);
        let b = Backoff::new(Duration::MAX, Duration::MAX, 0.5, Jitter::Full);
        assert_eq!(b.base_delay(), Duration::from_nanos(u64::MAX));
        assert_eq!(b.multiplier(), 1.0);
    }

    proptest! {
        #[test]
        fn every_delay_is_within_zero_and_max(
            b in any_backoff(), n in any::<u32>(), prev in any::<u64>(), seed in any::<u64>()
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let d = b.delay(n, Duration::from_nanos(prev), &mut rng);
            prop_assert!(d <= b.max_delay());
        }

        #[test]
        fn without_jitter_delays_never_shrink_and_never_exceed_max(
            b in any_backoff(), n in 0u32..u32::MAX
        ) {
            let b = Backoff::new(b.base_delay(), b.max_delay(), b.multiplier(), Jitter::None);
            let mut rng = fastrand::Rng::with_seed(0);
            let (now, next) = (b.delay(n, Duration::ZERO, &mut rng), b.delay(n + 1, Duration::ZERO, &mut rng));
            prop_assert!(now <= next, "{:?} > {:?}", now, next);
            prop_assert!(next <= b.max_delay());
            prop_assert!(now >= b.base_delay());
        }

        #[test]
        fn full_jitter_stays_under_the_exponential_ceiling(
            b in any_backoff(), n in any::<u32>(), seed in any::<u64>()
        ) {
            let b = Backoff::new(b.base_delay(), b.max_delay(), b.multiplier(), Jitter::Full);
            let mut rng = fastrand::Rng::with_seed(seed);
            let d = b.delay(n, Duration::ZERO, &mut rng);
            let exact = b.base_delay().as_secs_f64() * b.multiplier().powf(f64::from(n));
            let bound = exact.min(b.max_delay().as_secs_f64());
            // Allow one nanosecond (plus float slack) for rounding to the nanosecond.
            prop_assert!(d.as_secs_f64() <= bound * (1.0 + 1e-9) + 1e-9, "{:?} > {}", d, bound);
            prop_assert!(d <= b.ceiling(n));
        }

        #[test]
        fn decorrelated_jitter_stays_between_base_and_max(
            b in any_backoff(), prev in any::<u64>(), seed in any::<u64>()
        ) {
            let b = Backoff::new(b.base_delay(), b.max_delay(), b.multiplier(), Jitter::Decorrelated);
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut prev = Duration::from_nanos(prev);
            for n in 0..20 {
                let d = b.delay(n, prev, &mut rng);
                prop_assert!(d >= b.base_delay() && d <= b.max_delay(), "{:?}", d);
                prev = d;
            }
        }
    }
}
