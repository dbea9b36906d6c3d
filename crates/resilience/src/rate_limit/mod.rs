//! Rate limiting with the generic cell rate algorithm (GCRA): `rate` units per `per`, bursts of up
//! to `burst` units, optionally weighted by cost and kept per key.
//!
//! A [`RateLimiter`] admits requests whose cost fits: a plain one costs 1, a call to an AI API can
//! cost its tokens so that a tokens-per-minute limit holds. A full limiter lets `burst` units pass at
//! once, then one unit per emission interval `per / rate`. A rejection says exactly how long until
//! the request would conform ([`Error::retry_after`](crate::Error::retry_after)); with `max_wait`
//! set, calls wait up to that long for their turn instead. A request costing more than `burst` can
//! never conform and is refused with [`RateLimited::CostExceedsBurst`] instead of waiting forever.
//!
//! A [`KeyedRateLimiter`] keeps one such limit per key (tenant, host, API key) in bounded memory.
//!
//! ## Cost
//! [`RateLimiter::try_acquire`] takes no lock and allocates nothing: the whole state is one
//! `AtomicU64` (the theoretical arrival time, in nanoseconds since the limiter was built), updated
//! by a compare-and-swap loop, plus relaxed counters. It reads the clock once.
//!
//! **The clock.** It is `tokio::time::Instant::now()`, read once per decision, and nothing cheaper:
//! tests on paused time (`start_paused`, `advance`) must see virtual time, which rules out a
//! TSC or OS clock read behind tokio's back; and a cached "coarse now" refreshed by a task would
//! need a background task per limiter, would keep paused time from auto-advancing cleanly, and
//! would make `retry_after` inexact. A stale time cannot be used safely either: an old `now` that
//! makes a request look conforming is fine, but GCRA's `max(TAT, now)` with an old `now` on an
//! idle limiter would grant capacity from the past. So the decision costs one clock read (about
//! 20-25 ns without tokio's `test-util` feature; with `test-util` enabled in a build, tokio locks
//! its clock to read it, so benchmarks must not enable it) plus one uncontended CAS. Callers that
//! already hold a fresh timestamp (a server that reads the clock once per request, a batch) can
//! pass it to [`RateLimiter::try_acquire_at`] and skip the read.
//!
//! ## Waiting and cancellation
//! A call that may wait ([`RateLimiter::acquire`], `call` with `max_wait`) *reserves* its slot at
//! once, which keeps waiters in order, and sleeps until its turn. Dropped before its turn, it gives
//! the reservation back, so a cancelled waiter consumes nothing. Dropped after its turn came but
//! before it was polled again, the capacity counts as used (the caller got its turn).
//!
//! ```
//! use rampart_resilience::rate_limit::RateLimitConfig;
//! use rampart_resilience::Events;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // An AI API allowing 1000 tokens a minute: cost = tokens.
//! let limiter = RateLimitConfig::new(1000.0, Duration::from_secs(60))
//!     .build("openai", &Events::new())
//!     .unwrap();
//! for _ in 0..10 {
//!     limiter.call_weighted(100, || async { Ok::<_, &str>("completion") }).await.unwrap();
//! }
//! let err = limiter.call_weighted(100, || async { Ok::<_, &str>("completion") }).await.unwrap_err();
//! assert!(err.is_rate_limited());
//! // 100 tokens replenish in 6 s (a little less by now).
//! assert!(err.retry_after() <= Some(Duration::from_secs(6)));
//! # }
//! ```

mod config;
mod gcra;
mod keyed;
mod layer;

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub use config::{KeyedConfig, RateLimitConfig};
pub use keyed::{KeyedRateLimitStats, KeyedRateLimiter};
pub use layer::{RateLimitLayer, RateLimitService, RequestCost, ResponseFuture, UnitCost};

use crate::{Error, Event, Events, PolicyKind};
use gcra::{AtomicTat, Gcra};

/// Why a rate limiter did not admit a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimited {
    /// No capacity now (or within `max_wait`); the request would conform after `retry_after`.
    #[error("no capacity now, retry after {retry_after:?}")]
    Exhausted {
        /// How long until the same request would conform, if nothing else is admitted meanwhile.
        retry_after: Duration,
    },
    /// The request costs more than the burst, so it can never conform.
    #[error("cost {cost} exceeds the burst of {burst} and can never be admitted")]
    CostExceedsBurst {
        /// The request's cost.
        cost: u32,
        /// The limiter's burst.
        burst: u32,
    },
    /// A keyed limiter holds `max_keys` keys, all active, so a new key has no slot; one frees after
    /// `retry_after`.
    #[error("all {max_keys} keys are active, retry after {retry_after:?}")]
    TooManyKeys {
        /// The most keys the limiter holds.
        max_keys: usize,
        /// How long until the first held key becomes idle and its slot can be reused.
        retry_after: Duration,
    },
}

impl RateLimited {
    /// How long until trying again can succeed; `None` if it never can (cost above burst).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimited::Exhausted { retry_after }
            | RateLimited::TooManyKeys { retry_after, .. } => Some(*retry_after),
            RateLimited::CostExceedsBurst { .. } => None,
        }
    }

    /// True if the request can never be admitted because its cost exceeds the burst.
    pub fn is_cost_exceeds_burst(&self) -> bool {
        matches!(self, RateLimited::CostExceedsBurst { .. })
    }

    /// The policy error for limiter `name`: [`Error::RateLimited`], whose `retry_after` is
    /// [`Duration::MAX`] for a cost that can never be admitted.
    pub fn into_error<E>(self, name: Name) -> Error<E> {
        Error::RateLimited {
            name,
            retry_after: self.retry_after().unwrap_or(Duration::MAX),
        }
    }
}

/// A snapshot of a rate limiter's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RateLimitStats {
    /// The limiter's name.
    pub name: String,
    /// Requests admitted (after waiting, for those that waited).
    pub permitted: u64,
    /// Requests rejected.
    pub rejected: u64,
    /// Admitted requests that had to wait for their turn.
    pub waited: u64,
    /// Whole units that could pass right now.
    pub available: u32,
    /// The burst: units a full limiter lets through at once.
    pub burst: u32,
}

/// A GCRA rate limiter. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    // The state and the counter every admission touches sit together, on one cache line.
    tat: AtomicTat,
    permitted: AtomicU64,
    gcra: Gcra,
    base: Instant,
    rejected: AtomicU64,
    waited: AtomicU64,
    max_wait: u64,
    name: Name,
    config: RateLimitConfig,
    events: Events,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("rate", &self.inner.config.rate)
            .field("per", &self.inner.config.per)
            .field("burst", &self.inner.gcra.burst)
            .finish()
    }
}

/// Nanoseconds from `base` to `now`, zero if `now` is earlier, saturating at `u64::MAX`.
#[inline]
fn nanos_since(base: Instant, now: Instant) -> u64 {
    // Whole seconds and the nanosecond remainder in 64 bits: cheaper than `as_nanos`' u128.
    let d = now.saturating_duration_since(base);
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(d.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RateLimiter {
    pub(crate) fn from_valid_config(
        name: &str,
        config: RateLimitConfig,
        gcra: Gcra,
        events: Events,
    ) -> Self {
        RateLimiter {
            inner: Arc::new(Inner {
                tat: AtomicTat::default(),
                permitted: AtomicU64::new(0),
                gcra,
                base: Instant::now(),
                rejected: AtomicU64::new(0),
                waited: AtomicU64::new(0),
                max_wait: duration_to_nanos(config.max_wait),
                name: name.into(),
                config,
                events,
            }),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// The events it emits to; subscribe here.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Units a full limiter lets through at once.
    pub fn burst(&self) -> u32 {
        self.inner.gcra.burst
    }

    /// The time one unit takes to replenish: `per / rate`, rounded up to whole nanoseconds.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.inner.gcra.interval)
    }

    /// Admits `cost` units now or refuses at once. Lock-free; allocates nothing.
    #[inline]
    pub fn try_acquire(&self, cost: u32) -> Result<(), RateLimited> {
        self.try_acquire_at(cost, Instant::now())
    }

    /// Like [`try_acquire`](Self::try_acquire) with a timestamp the caller already read, saving the
    /// clock read. `now` should be fresh: a later `now` than the real one admits early.
    #[inline]
    pub fn try_acquire_at(&self, cost: u32, now: Instant) -> Result<(), RateLimited> {
        let inner = &*self.inner;
        if cost > inner.gcra.burst {
            return Err(inner.reject_cost(cost));
        }
        let now = nanos_since(inner.base, now);
        match inner.tat.acquire(&inner.gcra, now, cost, 0) {
            Ok(_) => {
                inner.permitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(wait) => Err(inner.reject_exhausted(wait)),
        }
    }

    /// Admits `cost` units, waiting up to `max_wait` for their turn.
    ///
    /// Cancellation-safe: dropped while waiting, it gives its reserved slot back.
    pub async fn acquire(&self, cost: u32) -> Result<(), RateLimited> {
        // Only a request that must wait builds (and boxes) a timer, which keeps this future small
        // for the common case of capacity being there.
        if let Some(reservation) = self.reserve(cost)? {
            Box::pin(reservation.into_wait()).await;
        }
        Ok(())
    }

    /// Reserves `cost` units with one clock read and one compare-and-swap: `None` if admitted
    /// now (the lock-free path of [`try_acquire`](Self::try_acquire)), a [`Reservation`] to wait
    /// out if admitted later (only with `max_wait` set).
    #[inline]
    pub(crate) fn reserve(&self, cost: u32) -> Result<Option<Reservation>, RateLimited> {
        let inner = &*self.inner;
        if cost > inner.gcra.burst {
            return Err(inner.reject_cost(cost));
        }
        let now = nanos_since(inner.base, Instant::now());
        match inner.tat.acquire(&inner.gcra, now, cost, inner.max_wait) {
            Ok(admit) if admit.wait == 0 => {
                inner.permitted.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Ok(admit) => Ok(Some(self.reservation(cost, now, admit.wait))),
            Err(wait) => Err(inner.reject_exhausted(wait)),
        }
    }

    /// The reservation of a request admitted `wait` nanoseconds after `now`.
    #[cold]
    fn reservation(&self, cost: u32, now: u64, wait: u64) -> Reservation {
        Reservation {
            limiter: self.clone(),
            increment: self.inner.gcra.increment(cost),
            wake: now.saturating_add(wait),
            done: false,
        }
    }

    /// Runs `f` once one unit is admitted (waiting up to `max_wait`).
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_weighted(1, f).await
    }

    /// Runs `f` once `cost` units are admitted (waiting up to `max_wait`): for limits counted in
    /// bytes, tokens or rows rather than requests.
    pub async fn call_weighted<T, E, F, Fut>(&self, cost: u32, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.reserve(cost) {
            Ok(None) => {}
            Ok(Some(reservation)) => Box::pin(reservation.into_wait()).await,
            Err(e) => return Err(e.into_error(self.inner.name.clone())),
        }
        f().await.map_err(Error::Inner)
    }

    /// Charges `units` more to the limiter after the fact, without asking: for a cost that was
    /// estimated up front and turned out higher (an AI call's tokens, known from its answer).
    /// The limiter may go into debt: later requests wait until it is paid off.
    pub fn charge(&self, units: u32) {
        let inner = &*self.inner;
        let now = nanos_since(inner.base, Instant::now());
        let increment = inner.gcra.increment(units);
        inner
            .tat
            .update(|tat| tat.max(now).saturating_add(increment));
    }

    /// Gives back `units` charged earlier that were not used (an estimate that was too high). A
    /// refund never makes more than `burst` units available.
    pub fn refund(&self, units: u32) {
        let increment = self.inner.gcra.increment(units);
        self.inner.tat.update(|tat| tat.saturating_sub(increment));
    }

    /// Lowers what is available now to at most `units` (never raises it): for a server that
    /// reports how much of its own limit is left (`x-ratelimit-remaining-*`). Capacity then
    /// replenishes at the configured rate.
    pub fn limit_available(&self, units: u32) {
        let inner = &*self.inner;
        let now = nanos_since(inner.base, Instant::now());
        let used = inner.gcra.increment(inner.gcra.burst.saturating_sub(units));
        inner.tat.update(|tat| tat.max(now.saturating_add(used)));
    }

    /// Admits nothing for `d`, after which capacity replenishes from empty at the configured
    /// rate (one unit passes at `d`): for a server that said "retry after `d`" (HTTP 429
    /// `Retry-After`) or that its limit resets in `d` with nothing left. Never shortens a pause
    /// already in force.
    pub fn pause_for(&self, d: Duration) {
        let inner = &*self.inner;
        let now = nanos_since(inner.base, Instant::now());
        let until = now
            .saturating_add(duration_to_nanos(d))
            .saturating_add(inner.gcra.tolerance)
            .saturating_sub(inner.gcra.interval);
        inner.tat.update(|tat| tat.max(until));
    }

    /// Whole units that could pass right now.
    pub fn available(&self) -> u32 {
        let inner = &*self.inner;
        let now = nanos_since(inner.base, Instant::now());
        inner.gcra.available(inner.tat.load(), now)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RateLimitStats {
        let inner = &*self.inner;
        let now = nanos_since(inner.base, Instant::now());
        RateLimitStats {
            name: inner.name.to_string(),
            permitted: inner.permitted.load(Ordering::Relaxed),
            rejected: inner.rejected.load(Ordering::Relaxed),
            waited: inner.waited.load(Ordering::Relaxed),
            available: inner.gcra.available(inner.tat.load(), now),
            burst: inner.gcra.burst,
        }
    }
}

impl Inner {
    /// Counts a rejection for want of capacity (the common rejection, kept inline; only the
    /// emission of an event to subscribers is out of line).
    #[inline]
    fn reject_exhausted(&self, wait: u64) -> RateLimited {
        self.reject(RateLimited::Exhausted {
            retry_after: Duration::from_nanos(wait),
        })
    }

    /// Counts the rejection of a request costing more than the burst (rare).
    #[cold]
    fn reject_cost(&self, cost: u32) -> RateLimited {
        self.reject(RateLimited::CostExceedsBurst {
            cost,
            burst: self.gcra.burst,
        })
    }

    #[inline]
    fn reject(&self, why: RateLimited) -> RateLimited {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if self.events.is_active() {
            self.emit_rejected();
        }
        why
    }

    #[cold]
    #[inline(never)]
    fn emit_rejected(&self) {
        self.events.emit_with(|| Event::Rejected {
            name: self.name.clone(),
            policy: PolicyKind::RateLimit,
        });
    }
}

/// A slot reserved for later; given back if dropped before its turn.
pub(crate) struct Reservation {
    limiter: RateLimiter,
    increment: u64,
    wake: u64,
    done: bool,
}

impl Reservation {
    /// The wait for this reservation's turn.
    pub(crate) fn into_wait(self) -> Wait {
        let inner = &*self.limiter.inner;
        Wait {
            sleep: tokio::time::sleep_until(inner.base + Duration::from_nanos(self.wake)),
            reservation: self,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = &*self.limiter.inner;
        if nanos_since(inner.base, Instant::now()) < self.wake {
            inner.tat.refund(self.increment);
        }
    }
}

pin_project_lite::pin_project! {
    /// The wait for a reserved slot; admits (and counts) the request when its turn comes, gives the
    /// slot back if dropped first.
    pub(crate) struct Wait {
        #[pin]
        sleep: Sleep,
        reservation: Reservation,
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.reservation.done {
            return Poll::Ready(());
        }
        std::task::ready!(this.sleep.poll(cx));
        this.reservation.done = true;
        let inner = &*this.reservation.limiter.inner;
        inner.permitted.fetch_add(1, Ordering::Relaxed);
        inner.waited.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, per_ms: u64, burst: u32) -> RateLimiter {
        RateLimitConfig::new(rate, Duration::from_millis(per_ms))
            .burst(burst)
            .build("t", &Events::new())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn zero_cost_always_passes() {
        let l = limiter(1.0, 1000, 1);
        l.try_acquire(1).unwrap();
        l.try_acquire(0).unwrap();
        assert!(l.try_acquire(1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn stats_report_available_units() {
        let l = limiter(10.0, 1000, 5);
        assert_eq!(l.stats().available, 5);
        l.try_acquire(3).unwrap();
        assert_eq!(l.stats().available, 2);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(l.stats().available, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn try_acquire_at_uses_the_given_instant() {
        let l = limiter(1.0, 1000, 1);
        let t0 = Instant::now();
        l.try_acquire_at(1, t0).unwrap();
        assert!(
            l.try_acquire_at(1, t0 + Duration::from_millis(999))
                .is_err()
        );
        l.try_acquire_at(1, t0 + Duration::from_secs(1)).unwrap();
    }
}
