//! Adaptive concurrency limits: a limit on calls in flight that moves with what the dependency can
//! take, as in Netflix's concurrency-limits.
//!
//! An [`AdaptiveLimiter`] admits a call while fewer than its current limit are in flight and
//! rejects the rest with [`Error::ConcurrencyLimited`]. Each finished call is a [`Sample`] (its
//! latency, how many were in flight when it started, whether it was dropped) that a
//! [`LimitAlgorithm`] turns into the next limit: [`Gradient2`] shrinks the limit when latency rises
//! above its long-term average, [`Aimd`] when calls fail or time out.
//!
//! ```
//! use rampart_resilience::adaptive::AdaptiveConfig;
//! use rampart_resilience::Events;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: AdaptiveConfig = toml::from_str(r#"
//!     algorithm = "aimd"
//!     initial_limit = 10
//!     max_limit = 100
//! "#)?;
//! let limiter = config.build("search", &Events::new())?;
//!
//! let answer = limiter.call(|| async { Ok::<_, std::io::Error>(42) }).await?;
//! assert_eq!(answer, 42);
//! assert_eq!(limiter.stats().permitted, 1);
//! # Ok(())
//! # }
//! ```
//!
//! The admission check is one atomic compare-and-swap; only a finished call's sample takes a short
//! lock (see [`AdaptiveLimiter`]).

mod aimd;
mod config;
mod gradient2;
mod layer;

pub use aimd::Aimd;
pub use config::{AdaptiveConfig, Algorithm};
pub use gradient2::Gradient2;
pub use layer::{AdaptiveLayer, AdaptiveService, ResponseFuture};

use crate::Name;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Classifier, ErrIsFailure, Error, Event, Events, Outcome, PolicyKind};

/// One finished call, as a limit algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// How long the call took.
    pub rtt: Duration,
    /// How many calls were in flight when it started, itself included.
    pub in_flight: usize,
    /// True if the call failed in a way that says the dependency is overloaded.
    pub dropped: bool,
}

/// Turns samples of finished calls into a concurrency limit.
///
/// Implementations are pure state machines: no clock, no I/O. They are called with the limiter's
/// algorithm lock held, once per finished call, so `update` must be quick.
pub trait LimitAlgorithm {
    /// The current limit.
    fn limit(&self) -> usize;
    /// Takes one sample and returns the new limit.
    fn update(&mut self, sample: Sample) -> usize;
}

/// What an [`AdaptiveLimiter`] has done so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdaptiveStats {
    /// The limit now.
    pub limit: usize,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Calls admitted since the limiter was built.
    pub permitted: u64,
    /// Calls rejected since the limiter was built.
    pub rejected: u64,
}

struct Shared {
    name: Name,
    events: Events,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    permitted: AtomicU64,
    rejected: AtomicU64,
    algorithm: Mutex<Box<dyn LimitAlgorithm + Send>>,
}

/// A concurrency limit that adapts to the dependency's latency or errors.
///
/// Cheap to clone; clones share the limit and the calls in flight.
///
/// Admission ([`try_acquire`](Self::try_acquire), [`call`](Self::call)) is lock-free: an atomic
/// count of calls in flight compared with an atomic limit. When a call finishes with a verdict, its
/// sample goes through the algorithm under a `std::sync::Mutex` held for a few float operations
/// (no allocation, no await); every sample counts, none is skipped under contention.
#[derive(Clone)]
pub struct AdaptiveLimiter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdaptiveLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl AdaptiveLimiter {
    /// A limiter `name` driven by any `algorithm` (for the built-in ones, use
    /// [`AdaptiveConfig::build`]). The starting limit is `algorithm.limit()`; a limit of 0 from the
    /// algorithm is taken as 1, so the limiter can always learn again.
    pub fn with_algorithm<A>(name: &str, algorithm: A, events: Events) -> Self
    where
        A: LimitAlgorithm + Send + 'static,
    {
        Self::from_boxed(name, Box::new(algorithm), events)
    }

    pub(crate) fn from_boxed(
        name: &str,
        algorithm: Box<dyn LimitAlgorithm + Send>,
        events: Events,
    ) -> Self {
        let limit = algorithm.limit().max(1);
        AdaptiveLimiter {
            shared: Arc::new(Shared {
                name: name.into(),
                events,
                limit: AtomicUsize::new(limit),
                in_flight: AtomicUsize::new(0),
                permitted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                algorithm: Mutex::new(algorithm),
            }),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// Counters and the limit now.
    pub fn stats(&self) -> AdaptiveStats {
        AdaptiveStats {
            limit: self.limit(),
            in_flight: self.shared.in_flight.load(Ordering::Acquire),
            permitted: self.shared.permitted.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
        }
    }

    /// Takes a slot if fewer than the limit are in flight; `None` (counted and reported as a
    /// rejection) otherwise. Give the token a verdict when the call ends; dropping it without one
    /// frees the slot and teaches the algorithm nothing.
    pub fn try_acquire(&self) -> Option<Token> {
        self.acquire().ok()
    }

    /// Like `try_acquire`, returning the limit in force on rejection.
    fn acquire(&self) -> Result<Token, usize> {
        let shared = &self.shared;
        let mut current = shared.in_flight.load(Ordering::Acquire);
        loop {
            let limit = shared.limit.load(Ordering::Acquire);
            if current >= limit {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                shared.events.emit_with(|| Event::Rejected {
                    name: shared.name.clone(),
                    policy: PolicyKind::Adaptive,
                });
                return Err(limit);
            }
            match shared.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        shared.permitted.fetch_add(1, Ordering::Relaxed);
        Ok(Token {
            shared: Arc::clone(shared),
            start: Instant::now(),
            in_flight: current + 1,
            settled: false,
        })
    }

    /// Runs `f` if the limit allows, counting `Ok` as a success and `Err` as a drop.
    ///
    /// Rejects with [`Error::ConcurrencyLimited`] when the limit is reached. Dropping the returned
    /// future midway frees the slot without a sample.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(f, ErrIsFailure).await
    }

    /// Runs `f` if the limit allows; `classifier` decides how the result counts:
    /// [`Outcome::Success`] is a success, [`Outcome::Failure`] a drop, and [`Outcome::Ignored`]
    /// teaches the algorithm nothing. The result itself is returned unchanged.
    pub async fn call_classified<T, E, F, Fut, C>(&self, f: F, classifier: C) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E>,
    {
        let token = self.acquire().map_err(|limit| Error::ConcurrencyLimited {
            name: self.shared.name.clone(),
            limit,
        })?;
        let result = f().await;
        token.settle(classifier.classify(&result));
        result.map_err(Error::Inner)
    }
}

/// A slot in an [`AdaptiveLimiter`], held for the duration of one call.
///
/// End it with [`success`](Self::success) or [`dropped`](Self::dropped) to feed the call's latency
/// to the algorithm. Dropping it without a verdict (the call was cancelled, or its result says
/// nothing about the dependency) frees the slot and records nothing.
#[must_use = "dropping a token at once frees its slot and records nothing"]
pub struct Token {
    shared: Arc<Shared>,
    start: Instant,
    in_flight: usize,
    settled: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("limiter", &self.shared.name)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Token {
    /// The call succeeded: its latency counts.
    pub fn success(mut self) {
        self.finish(false);
    }

    /// The call failed in a way that signals overload (an error, a timeout): the limit backs off.
    pub fn dropped(mut self) {
        self.finish(true);
    }

    /// Settles by a classifier's outcome.
    pub(crate) fn settle(self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success(),
            Outcome::Failure => self.dropped(),
            Outcome::Ignored => drop(self),
        }
    }

    fn finish(&mut self, dropped: bool) {
        self.release();
        let sample = Sample {
            rtt: self.start.elapsed(),
            in_flight: self.in_flight,
            dropped,
        };
        let shared = &self.shared;
        let (from, to) = {
            let mut algorithm = shared
                .algorithm
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let to = algorithm.update(sample).max(1);
            // Stored under the lock, so concurrent samples publish limits in the order computed.
            let from = shared.limit.swap(to, Ordering::AcqRel);
            (from, to)
        };
        if from != to {
            shared.events.emit_with(|| Event::LimitChanged {
                name: shared.name.clone(),
                from,
                to,
            });
        }
    }

    fn release(&mut self) {
        if !self.settled {
            self.settled = true;
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns whatever limit it is told to.
    struct Fixed(usize);

    impl LimitAlgorithm for Fixed {
        fn limit(&self) -> usize {
            self.0
        }
        fn update(&mut self, _sample: Sample) -> usize {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_of_zero_from_the_algorithm_is_taken_as_one() {
        let limiter = AdaptiveLimiter::with_algorithm("z", Fixed(0), Events::new());
        assert_eq!(limiter.limit(), 1);
        let token = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        token.success();
        assert_eq!(limiter.limit(), 1);
        assert_eq!(limiter.stats().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn token_reports_in_flight_at_start_and_rtt() {
        struct Record(Arc<Mutex<Vec<Sample>>>);
        impl LimitAlgorithm for Record {
            fn limit(&self) -> usize {
                10
            }
            fn update(&mut self, sample: Sample) -> usize {
                self.0.lock().unwrap().push(sample);
                10
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let limiter = AdaptiveLimiter::with_algorithm("r", Record(seen.clone()), Events::new());
        let first = limiter.try_acquire().unwrap();
        let second = limiter.try_acquire().unwrap();
        tokio::time::advance(Duration::from_millis(30)).await;
        second.dropped();
        first.success();
        let third = limiter.try_acquire().unwrap();
        drop(third);
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            [
                Sample {
                    rtt: Duration::from_millis(30),
                    in_flight: 2,
                    dropped: true
                },
                Sample {
                    rtt: Duration::from_millis(30),
                    in_flight: 1,
                    dropped: false
                },
            ]
        );
        assert_eq!(limiter.stats().in_flight, 0);
    }
}
