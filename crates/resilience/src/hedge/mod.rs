//! Hedged requests: when a call is slow, start another and take whichever answers first.
//!
//! A [`Hedge`] starts the call; if it has not finished after the hedge delay, it starts it again
//! (up to `max_hedges` extra attempts, each one delay after the previous), all running concurrently
//! in the caller's task. The first `Ok` wins and the other attempts are dropped at once. The delay
//! is fixed, or a percentile of the latency of recent successful calls ("hedge the slowest 5%",
//! after *The Tail at Scale*, Dean and Barroso, 2013).
//!
//! Hedging adds load, so it is rationed: every call earns `max_hedge_ratio` of a hedge and every
//! hedge spends a whole one (the bucket starts with one hedge and holds at most what 100 calls
//! earn). A dependency that is slow for everyone gets at most that ratio of extra calls.
//!
//! Hedging is for slow calls, not failed ones: an attempt that fails does not start another. The
//! call keeps waiting for the attempts still running, and returns the last error once every
//! attempt started has failed; put a retry policy around it to retry errors.
//!
//! ```
//! use rampart_resilience::hedge::HedgeConfig;
//! use rampart_resilience::Events;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hedge = HedgeConfig::default().build("search", &Events::new())?;
//! let answer = hedge.call(|| async { Ok::<_, std::io::Error>("fast") }).await?;
//! assert_eq!(answer, "fast");
//! assert_eq!(hedge.stats().hedges, 0);
//! # Ok(())
//! # }
//! ```

mod config;
mod layer;

pub use config::{DEFAULT_DELAY, HedgeConfig};
pub use layer::{HedgeLayer, HedgeService, ResponseFuture};

use crate::Name;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::{Error, Event, Events};

/// How many recent successful latencies the percentile is taken over.
pub(crate) const LATENCY_SAMPLES: usize = 512;

/// The percentile is recomputed every this many samples (and at `min_samples`), not per call.
const RECOMPUTE_EVERY: u64 = 16;

/// What a [`Hedge`] has done so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HedgeStats {
    /// Calls made.
    pub calls: u64,
    /// Extra attempts started.
    pub hedges: u64,
    /// Calls answered by an extra attempt rather than the first.
    pub hedge_wins: u64,
    /// The delay before a hedge now; `None` while a percentile policy is still collecting samples.
    pub current_delay: Option<Duration>,
}

/// When to hedge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HedgeDelay {
    /// After a fixed delay.
    Fixed(Duration),
    /// After a percentile of recent successful latencies, once `min_samples` are known.
    Percentile { percentile: f64, min_samples: usize },
}

/// A hedging policy. Cheap to clone; clones share counters, latencies and the hedge budget.
#[derive(Clone)]
pub struct Hedge {
    shared: Arc<Shared>,
}

struct Shared {
    name: Name,
    events: Events,
    delay: HedgeDelay,
    max_hedges: u32,
    calls: AtomicU64,
    hedges: AtomicU64,
    hedge_wins: AtomicU64,
    budget: Budget,
    latencies: Latencies,
}

impl std::fmt::Debug for Hedge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Hedge {
    pub(crate) fn new(
        name: &str,
        delay: HedgeDelay,
        max_hedges: u32,
        max_hedge_ratio: f64,
        events: &Events,
    ) -> Self {
        let percentile = match delay {
            HedgeDelay::Fixed(_) => 0.0,
            HedgeDelay::Percentile { percentile, .. } => percentile,
        };
        Hedge {
            shared: Arc::new(Shared {
                name: name.into(),
                events: events.clone(),
                delay,
                max_hedges,
                calls: AtomicU64::new(0),
                hedges: AtomicU64::new(0),
                hedge_wins: AtomicU64::new(0),
                budget: Budget::new(max_hedge_ratio),
                latencies: Latencies::new(percentile),
            }),
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Counters and the delay now.
    pub fn stats(&self) -> HedgeStats {
        let s = &self.shared;
        HedgeStats {
            calls: s.calls.load(Ordering::Relaxed),
            hedges: s.hedges.load(Ordering::Relaxed),
            hedge_wins: s.hedge_wins.load(Ordering::Relaxed),
            current_delay: s.current_delay(),
        }
    }

    /// Calls `f` for the first attempt and again for each hedge; returns the first `Ok`, dropping
    /// the attempts still running, or the last error once every attempt started has failed.
    ///
    /// Dropping the returned future drops every attempt.
    pub async fn call<T, E, F, Fut>(&self, mut f: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let shared = &*self.shared;
        shared.calls.fetch_add(1, Ordering::Relaxed);
        shared.budget.earn();
        let start = Instant::now();
        let delay = shared.current_delay();

        let tag = |attempt: u32, fut: Fut| fut.map(move |result| (attempt, result));
        let mut attempts = FuturesUnordered::new();
        attempts.push(tag(1, f()));
        let mut started: u32 = 1;
        let mut hedging = delay.is_some();
        let mut timer = pin!(tokio::time::sleep(delay.unwrap_or(Duration::ZERO)));

        let (attempt, result) = std::future::poll_fn(|cx| {
            loop {
                match attempts.poll_next_unpin(cx) {
                    Poll::Ready(Some((attempt, Ok(value)))) => {
                        return Poll::Ready((attempt, Ok(value)));
                    }
                    Poll::Ready(Some((attempt, Err(error)))) => {
                        if attempts.is_empty() {
                            return Poll::Ready((attempt, Err(error)));
                        }
                        continue;
                    }
                    // Never empty here: the last failure returns above.
                    Poll::Ready(None) | Poll::Pending => {}
                }
                if !hedging || timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if !shared.budget.spend() {
                    hedging = false;
                    return Poll::Pending;
                }
                started += 1;
                shared.hedges.fetch_add(1, Ordering::Relaxed);
                shared.events.emit_with(|| Event::Hedge {
                    name: shared.name.clone(),
                    attempt: started,
                });
                attempts.push(tag(started, f()));
                if started > shared.max_hedges {
                    hedging = false;
                } else if let Some(delay) = delay {
                    timer.as_mut().reset(Instant::now() + delay);
                }
                // Loop to poll the new attempt (it may be ready at once) and the reset timer.
            }
        })
        .await;
        drop(attempts);

        match result {
            Ok(value) => {
                if attempt > 1 {
                    shared.hedge_wins.fetch_add(1, Ordering::Relaxed);
                }
                if let HedgeDelay::Percentile { min_samples, .. } = shared.delay {
                    shared.latencies.record(start.elapsed(), min_samples);
                }
                Ok(value)
            }
            Err(error) => Err(Error::Inner(error)),
        }
    }
}

impl Shared {
    fn current_delay(&self) -> Option<Duration> {
        match self.delay {
            HedgeDelay::Fixed(delay) => Some(delay),
            HedgeDelay::Percentile { .. } => self.latencies.current(),
        }
    }
}

/// Thousandths of a hedge, so ratios down to 0.001 stay exact in integers.
const HEDGE_COST: u64 = 1000;

/// Calls whose earnings the budget can hold at most.
const BUDGET_CALLS: u64 = 100;

/// The hedge ration: each call earns `ratio` of a hedge, each hedge spends one.
#[derive(Debug)]
struct Budget {
    balance: AtomicU64,
    earn: u64,
    cap: u64,
}

impl Budget {
    fn new(ratio: f64) -> Self {
        let earn = ((ratio * HEDGE_COST as f64).round() as u64).clamp(1, HEDGE_COST);
        Budget {
            balance: AtomicU64::new(HEDGE_COST),
            earn,
            cap: (earn * BUDGET_CALLS).max(HEDGE_COST),
        }
    }

    fn earn(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < self.cap).then(|| (b + self.earn).min(self.cap))
            });
    }

    fn spend(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_sub(HEDGE_COST)
            })
            .is_ok()
    }
}

/// Recent successful latencies in a fixed ring, and the percentile of them in force.
///
/// Recording is two atomic operations. Every `RECOMPUTE_EVERY` samples, one caller copies the ring
/// into a buffer allocated once and selects the percentile; a caller finding another one at it
/// skips. A slot being written while copied may be read stale; the percentile is an estimate.
struct Latencies {
    ring: Box<[AtomicU64]>,
    recorded: AtomicU64,
    /// Nanoseconds; `u64::MAX` until the first computation.
    current: AtomicU64,
    scratch: Mutex<Vec<u64>>,
    percentile: f64,
}

impl Latencies {
    fn new(percentile: f64) -> Self {
        let sized = percentile > 0.0;
        let slots = if sized { LATENCY_SAMPLES } else { 0 };
        Latencies {
            ring: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            recorded: AtomicU64::new(0),
            current: AtomicU64::new(u64::MAX),
            scratch: Mutex::new(Vec::with_capacity(slots)),
            percentile,
        }
    }

    fn current(&self) -> Option<Duration> {
        match self.current.load(Ordering::Acquire) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    fn record(&self, latency: Duration, min_samples: usize) {
        if self.ring.is_empty() {
            return;
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX - 1);
        let index = self.recorded.fetch_add(1, Ordering::AcqRel);
        let slot = (index % self.ring.len() as u64) as usize;
        if let Some(cell) = self.ring.get(slot) {
            cell.store(nanos, Ordering::Release);
        }
        let count = index + 1;
        let min_samples = min_samples as u64;
        if count == min_samples || (count > min_samples && count.is_multiple_of(RECOMPUTE_EVERY)) {
            self.recompute(count);
        }
    }

    fn recompute(&self, count: u64) {
        let mut scratch = match self.scratch.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let len = (count as usize).min(self.ring.len());
        scratch.clear();
        scratch.extend(
            self.ring
                .iter()
                .take(len)
                .map(|cell| cell.load(Ordering::Acquire)),
        );
        if let Some(nanos) = percentile_of(&mut scratch, self.percentile) {
            self.current
                .store(nanos.min(u64::MAX - 1), Ordering::Release);
        }
    }
}

/// The nearest-rank percentile of `values` (reordered in place), or `None` if there are none.
fn percentile_of(values: &mut [u64], percentile: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let rank = (percentile / 100.0 * values.len() as f64).ceil() as usize;
    let index = rank.clamp(1, values.len()) - 1;
    let (_, value, _) = values.select_nth_unstable(index);
    Some(*value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_percentile() {
        let mut values: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile_of(&mut values, 95.0), Some(95));
        assert_eq!(percentile_of(&mut values, 50.0), Some(50));
        assert_eq!(percentile_of(&mut values, 0.1), Some(1));
        assert_eq!(percentile_of(&mut values, 99.9), Some(100));
        assert_eq!(percentile_of(&mut [7], 50.0), Some(7));
        assert_eq!(percentile_of(&mut [], 50.0), None);
    }

    #[test]
    fn budget_starts_with_one_hedge_and_earns_ratio_per_call() {
        let budget = Budget::new(0.25);
        assert!(budget.spend());
        assert!(!budget.spend());
        for _ in 0..3 {
            budget.earn();
        }
        assert!(!budget.spend());
        budget.earn();
        assert!(budget.spend());
    }

    #[test]
    fn budget_holds_at_most_what_100_calls_earn() {
        let budget = Budget::new(0.1);
        for _ in 0..10_000 {
            budget.earn();
        }
        let mut spent = 0;
        while budget.spend() {
            spent += 1;
        }
        assert_eq!(spent, 10);
    }

    #[test]
    fn percentile_waits_for_min_samples_then_follows_the_ring() {
        let latencies = Latencies::new(50.0);
        for ms in 1..=4 {
            latencies.record(Duration::from_millis(ms), 5);
        }
        assert_eq!(latencies.current(), None);
        latencies.record(Duration::from_millis(5), 5);
        assert_eq!(latencies.current(), Some(Duration::from_millis(3)));
        // Fill the ring with 100ms samples: the old ones are overwritten.
        for _ in 0..LATENCY_SAMPLES {
            latencies.record(Duration::from_millis(100), 5);
        }
        assert_eq!(latencies.current(), Some(Duration::from_millis(100)));
    }

    proptest! {
        #[test]
        fn hedges_never_exceed_one_plus_ratio_times_calls(
            ratio in 0.001f64..=1.0,
            calls in 1u64..2000,
            tries in 1u64..4,
        ) {
            let budget = Budget::new(ratio);
            let mut hedges = 0u64;
            for _ in 0..calls {
                budget.earn();
                for _ in 0..tries {
                    if budget.spend() {
                        hedges += 1;
                    }
                }
            }
            let earn = ((ratio * 1000.0).round() as u64).max(1) as f64 / 1000.0;
            prop_assert!(hedges as f64 <= 1.0 + earn * calls as f64 + 1e-9,
                "{hedges} hedges for {calls} calls at {ratio}");
        }
    }
}
