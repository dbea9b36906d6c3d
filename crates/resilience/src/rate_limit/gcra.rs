//! The generic cell rate algorithm (GCRA), as pure arithmetic on nanoseconds, and the lock-free
//! cell that holds one limiter's state.
//!
//! GCRA keeps a single number per limiter: the theoretical arrival time (TAT), the instant at which
//! the limiter would be empty again if nothing more arrived. A request of `cost` units at `now`
//! conforms if `max(TAT, now) + cost * T - now <= tau`, where `T` is the emission interval (`per /
//! rate`) and `tau = burst * T` the tolerance; if it does, the TAT becomes `max(TAT, now) + cost * T`.
//! `TAT - now` is the "water level" of the equivalent leaky bucket, in time units. This is the
//! virtual-scheduling form of ITU-T I.371, as used by the `governor` crate and described by
//! Brandur Leach ("Rate limiting, cells, and GCRA") and the IETF rate-limit headers draft.
//!
//! A TAT in the past means the same as a TAT equal to now (a full bucket of capacity), which is why
//! a keyed limiter may forget such keys without changing any decision.

use std::sync::atomic::{AtomicU64, Ordering};

/// The fixed parameters of one limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Emission interval `T`: nanoseconds per unit. At least 1.
    pub(crate) interval: u64,
    /// Burst: the units that may pass at once from a full limiter. At least 1.
    pub(crate) burst: u32,
    /// `tau = burst * T`, the tolerance. Validation keeps it at most [`MAX_TOLERANCE_NANOS`].
    pub(crate) tolerance: u64,
}

/// The largest tolerance (`burst * per / rate`) a limiter may have: about 146 years, which leaves
/// room to add it to any `now` of a process that runs for less than four centuries.
pub(crate) const MAX_TOLERANCE_NANOS: u64 = 1 << 62;

/// A decision that admits a request: the new TAT, and how long the request must wait first
/// (zero if it conforms now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admit {
    pub(crate) new_tat: u64,
    pub(crate) wait: u64,
}

impl Gcra {
    /// Builds the parameters; `interval` and `burst` must already be valid (validation checks them).
    pub(crate) fn new(interval: u64, burst: u32) -> Gcra {
        let interval = interval.max(1);
        let burst = burst.max(1);
        Gcra {
            interval,
            burst,
            tolerance: interval.saturating_mul(u64::from(burst)),
        }
    }

    /// The time `cost` units occupy: `cost * T`. Never overflows for `cost <= burst`.
    #[inline]
    pub(crate) fn increment(&self, cost: u32) -> u64 {
        self.interval.saturating_mul(u64::from(cost))
    }

    /// Decides a request of `cost` units (at most `burst`) at `now`, given the state `tat`,
    /// accepting to wait up to `max_wait`. `Err` holds how long until the request would conform.
    #[inline]
    pub(crate) fn check(&self, tat: u64, now: u64, cost: u32, max_wait: u64) -> Result<Admit, u64> {
        let new_tat = tat.max(now).saturating_add(self.increment(cost));
        let earliest = new_tat.saturating_sub(self.tolerance);
        if earliest <= now {
            return Ok(Admit { new_tat, wait: 0 });
        }
        let wait = earliest - now;
        if wait <= max_wait {
            Ok(Admit { new_tat, wait })
        } else {
            Err(wait)
        }
    }

    /// The whole units that could pass at `now` given `tat`.
    pub(crate) fn available(&self, tat: u64, now: u64) -> u32 {
        let level = tat.saturating_sub(now);
        let free = self.tolerance.saturating_sub(level) / self.interval;
        u32::try_from(free).unwrap_or(u32::MAX).min(self.burst)
    }
}

/// The TAT of one limiter, updated with a compare-and-swap loop: no lock, no allocation.
#[derive(Debug, Default)]
pub(crate) struct AtomicTat(AtomicU64);

impl AtomicTat {
    /// Decides and, if admitted, records the request in one atomic step.
    #[inline]
    pub(crate) fn acquire(
        &self,
        gcra: &Gcra,
        now: u64,
        cost: u32,
        max_wait: u64,
    ) -> Result<Admit, u64> {
        // Relaxed is enough: the TAT is the only shared datum and publishes nothing else; the
        // compare-and-swap alone orders competing updates of this one location.
        let mut tat = self.0.load(Ordering::Relaxed);
        loop {
            let admit = gcra.check(tat, now, cost, max_wait)?;
            match self.0.compare_exchange_weak(
                tat,
                admit.new_tat,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(admit),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back `increment` nanoseconds of a reservation that will not be used.
    ///
    /// Exact for a reservation given back before its turn: a request only waits if the TAT was
    /// ahead of the clock when it reserved, so its units sit contiguously inside `[now, TAT]` and
    /// removing them moves every later reservation's accounting forward by exactly that much.
    pub(crate) fn refund(&self, increment: u64) {
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.saturating_sub(increment))
            });
    }

    /// Replaces the TAT with `f(tat)`, atomically.
    pub(crate) fn update(&self, f: impl Fn(u64) -> u64) {
        // `fetch_update` with a closure that always returns `Some` cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| Some(f(tat)));
    }

    /// The TAT now.
    pub(crate) fn load(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_passes_at_once_then_one_per_interval() {
        let g = Gcra::new(100 * MS, 3);
        let tat = AtomicTat::default();
        for _ in 0..3 {
            assert!(tat.acquire(&g, 0, 1, 0).is_ok());
        }
        assert_eq!(tat.acquire(&g, 0, 1, 0), Err(100 * MS));
        assert_eq!(tat.acquire(&g, 100 * MS - 1, 1, 0), Err(1));
        assert!(tat.acquire(&g, 100 * MS, 1, 0).is_ok());
        assert_eq!(tat.acquire(&g, 100 * MS, 1, 0), Err(100 * MS));
    }

    #[test]
    fn waiting_reservation_reports_its_wait_and_refund_restores_capacity() {
        let g = Gcra::new(10 * MS, 1);
        let tat = AtomicTat::default();
        assert!(tat.acquire(&g, 0, 1, 0).is_ok());
        let admit = tat.acquire(&g, 0, 1, 50 * MS).unwrap();
        assert_eq!(admit.wait, 10 * MS);
        assert_eq!(tat.acquire(&g, 0, 1, 0), Err(20 * MS));
        tat.refund(g.increment(1));
        assert_eq!(tat.acquire(&g, 0, 1, 0), Err(10 * MS));
    }

    #[test]
    fn available_counts_whole_units() {
        let g = Gcra::new(10, 4);
        assert_eq!(g.available(0, 0), 4);
        assert_eq!(g.available(25, 0), 1);
        assert_eq!(g.available(40, 0), 0);
        assert_eq!(g.available(40, 15), 1);
    }

    proptest! {
        /// Over any sequence of (advance, cost) steps, the units admitted never exceed
        /// `burst + elapsed / T` (and so never `burst + rate * elapsed`).
        #[test]
        fn admitted_units_never_exceed_burst_plus_rate_times_elapsed(
            interval in 1u64..1_000,
            burst in 1u32..50,
            steps in proptest::collection::vec((0u64..3_000, 0u32..60, 0u64..2_000, any::<bool>()), 1..200),
        ) {
            let g = Gcra::new(interval, burst);
            let tat = AtomicTat::default();
            let mut now = 0u64;
            let mut admitted = 0u64;
            // Reservations still waiting: (wake, increment, cost).
            let mut pending: Vec<(u64, u64, u32)> = Vec::new();
            for (advance, cost, max_wait, drop_one) in steps {
                now += advance;
                // Waiters whose turn came are admitted.
                pending.retain(|&(wake, _, c)| {
                    if wake <= now { admitted += u64::from(c); false } else { true }
                });
                if drop_one
                    && let Some((_, inc, _)) = pending.pop() {
                        tat.refund(inc);
                    }
                if cost > burst { continue; }
                if let Ok(a) = tat.acquire(&g, now, cost, max_wait) {
                    if a.wait == 0 {
                        admitted += u64::from(cost);
                    } else {
                        pending.push((now + a.wait, g.increment(cost), cost));
                    }
                }
                prop_assert!(
                    admitted <= u64::from(burst) + now / interval,
                    "admitted {} units by {}ns with T={} burst={}", admitted, now, interval, burst
                );
            }
        }

        #[test]
        fn retry_after_is_exact(interval in 1u64..1_000, burst in 1u32..20, cost in 1u32..20, fill in 0u32..40) {
            prop_assume!(cost <= burst);
            let g = Gcra::new(interval, burst);
            let tat = AtomicTat::default();
            for _ in 0..fill { let _ = tat.acquire(&g, 0, 1, 0); }
            if let Err(wait) = tat.acquire(&g, 0, cost, 0) {
                prop_assert!(wait > 0);
                prop_assert!(tat.acquire(&g, wait - 1, cost, 0).is_err());
                prop_assert!(tat.acquire(&g, wait, cost, 0).is_ok());
            }
        }
    }
}
