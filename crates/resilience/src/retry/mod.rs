//! Retries with exponential backoff, jitter, retry-after hints, deadlines and shared budgets.
//!
//! A [`Retry`] runs a call up to `max_attempts` times, waiting a [`Backoff`] delay between
//! attempts. It never starts an attempt after the current [`Deadline`] or later than
//! `max_elapsed` after the first, and when a [`RetryBudget`] is attached it retries only while the
//! budget allows, so a failing dependency does not get its load multiplied by every client.
//!
//! What to retry is up to a [`ShouldRetry`] decision: by default every `Err` ([`Retry::call`]);
//! with [`Retry::call_with`] any result (an HTTP 503 that is `Ok`, say) can be retried, an error
//! can be returned at once, and a server's retry-after hint honoured with
//! [`RetryDecision::RetryAfter`].
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use rampart_resilience::Events;
//! use rampart_resilience::retry::{RetryConfig, RetryDecision};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: RetryConfig = toml::from_str(r#"
//!     max_attempts = 3
//!     base_delay = "100ms"
//! "#)?;
//! let retry = config.build("payments", &Events::new())?;
//!
//! let calls = AtomicU32::new(0);
//! let status = retry
//!     .call_with(
//!         || async {
//!             // Fails twice with a 503, then succeeds.
//!             let n = calls.fetch_add(1, Ordering::Relaxed);
//!             Ok::<u16, std::io::Error>(if n < 2 { 503 } else { 200 })
//!         },
//!         |result: &Result<u16, std::io::Error>| match result {
//!             Ok(503) | Err(_) => RetryDecision::Retry,
//!             Ok(_) => RetryDecision::Return,
//!         },
//!     )
//!     .await?;
//! assert_eq!(status, 200);
//! assert_eq!(retry.stats().successes_after_retry, 1);
//! # Ok(())
//! # }
//! ```

mod backoff;
mod budget;
mod config;
mod future;
mod layer;

use crate::Name;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::timeout::{Deadline, instant_after};
use crate::{Error, Event, Events};

pub use backoff::{Backoff, Jitter};
pub use budget::{RetryBudget, RetryBudgetConfig, RetryBudgetStats};
pub use config::RetryConfig;
pub use layer::{ResponseFuture, RetryLayer, RetryService};

use future::{Flat, RetryFuture, Wrap};

/// What to do with the result of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryDecision {
    /// Return this result to the caller.
    Return,
    /// Try again after the backoff delay (if the policy allows another attempt).
    Retry,
    /// Try again after at least this long: a server's retry-after hint. The policy waits the
    /// longer of the hint and its own backoff delay, and gives up (returning this result) if the
    /// hint is longer than `max_delay` or reaches past the deadline.
    RetryAfter(Duration),
}

impl RetryDecision {
    /// The decision for an error from a stack of policies: retry what a new attempt could fix,
    /// return what it could not.
    ///
    /// - [`Error::Inner`] and [`Error::Timeout`]: retry.
    /// - [`Error::RateLimited`]: retry after its `retry_after`.
    /// - [`Error::BreakerOpen`], [`Error::BulkheadFull`], [`Error::ConcurrencyLimited`],
    ///   [`Error::DeadlineExceeded`], [`Error::BudgetExhausted`]: return. Retrying into an open
    ///   breaker or a full bulkhead only adds load where the system said it has none to spare.
    pub fn for_error<E>(error: &Error<E>) -> RetryDecision {
        match error {
            Error::Inner(_) | Error::Timeout { .. } => RetryDecision::Retry,
            Error::RateLimited { retry_after, .. } => RetryDecision::RetryAfter(*retry_after),
            // BreakerOpen, BulkheadFull, ConcurrencyLimited, DeadlineExceeded, BudgetExhausted,
            // and any rejection added later.
            _ => RetryDecision::Return,
        }
    }
}

/// [`RetryDecision::for_error`] for a whole result: `Ok` is returned. What [`Retry::call_flat`]
/// decides with; a building block for deciders passed to [`Retry::call_flat_with`].
pub fn retry_rejections<T, E>(result: &Result<T, Error<E>>) -> RetryDecision {
    match result {
        Ok(_) => RetryDecision::Return,
        Err(e) => RetryDecision::for_error(e),
    }
}

/// Decides whether an attempt's result is returned or retried. Any
/// `Fn(&Result<T, E>) -> RetryDecision` is one.
pub trait ShouldRetry<T, E> {
    /// Decides for one result.
    fn should_retry(&self, result: &Result<T, E>) -> RetryDecision;
}

impl<T, E, F> ShouldRetry<T, E> for F
where
    F: Fn(&Result<T, E>) -> RetryDecision,
{
    fn should_retry(&self, result: &Result<T, E>) -> RetryDecision {
        self(result)
    }
}

/// Retries every `Err`, returns every `Ok`: what [`Retry::call`] and [`RetryLayer::new`] use.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryErrors;

impl<T, E> ShouldRetry<T, E> for RetryErrors {
    fn should_retry(&self, result: &Result<T, E>) -> RetryDecision {
        match result {
            Ok(_) => RetryDecision::Return,
            Err(_) => RetryDecision::Retry,
        }
    }
}

/// [`retry_rejections`] as a type, for a [`RetryLayer`] over services that return [`Error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryRejections;

impl<T, E> ShouldRetry<T, Error<E>> for RetryRejections {
    fn should_retry(&self, result: &Result<T, Error<E>>) -> RetryDecision {
        retry_rejections(result)
    }
}

/// Counters of one retry policy since it was built.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetryStats {
    /// Calls made through the policy.
    pub calls: u64,
    /// Attempts started, first attempts included.
    pub attempts: u64,
    /// Retries decided on (each followed by a backoff wait, then an attempt unless the call was
    /// dropped while waiting).
    pub retries: u64,
    /// Calls that returned `Ok` after at least one retry.
    pub successes_after_retry: u64,
    /// Calls that gave up on a result that asked for a retry: attempts used up, `max_elapsed` or
    /// the deadline reached, a retry-after hint too long, or the budget refused.
    pub exhausted: u64,
    /// Retries the budget refused.
    pub budget_rejections: u64,
}

/// A retry policy. Cheap to clone; clones share counters and the budget.
///
/// Built from a [`RetryConfig`]; see the [module docs](self) for an example.
#[derive(Clone)]
pub struct Retry {
    shared: Arc<Shared>,
    budget: Option<RetryBudget>,
}

struct Shared {
    name: Name,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    min_attempt_time: Duration,
    backoff: Backoff,
    events: Events,
    calls: AtomicU64,
    /// Calls that ran no attempt because the deadline had already passed; with `calls` and
    /// `retries` it gives the attempts, so the hot path counts one thing, not two.
    not_started: AtomicU64,
    /// Attempts started after a backoff (a retry dropped mid-backoff started none).
    retry_attempts: AtomicU64,
    retries: AtomicU64,
    successes_after_retry: AtomicU64,
    exhausted: AtomicU64,
    budget_rejections: AtomicU64,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.shared.name)
            .field("max_attempts", &self.shared.max_attempts)
            .field("max_elapsed", &self.shared.max_elapsed)
            .field("backoff", &self.shared.backoff)
            .field("budget", &self.budget.as_ref().map(RetryBudget::name))
            .finish()
    }
}

/// Where one call's retry loop stands.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    /// Attempts started so far.
    attempts: u32,
    /// When the first attempt started.
    started: Option<Instant>,
    /// The backoff delay chosen last (the base delay before the first retry).
    prev_delay: Option<Duration>,
}

/// What the loop does after an attempt.
pub(crate) enum Next {
    /// Return the attempt's result.
    Return,
    /// Return the attempt's result, its error wrapped as the budget's refusal.
    BudgetExhausted(Name),
    /// Wait this long, then attempt again.
    Sleep(Duration),
}

impl Retry {
    /// Only through [`RetryConfig::build`], so every setting is valid.
    fn new(
        name: &str,
        max_attempts: u32,
        max_elapsed: Option<Duration>,
        min_attempt_time: Duration,
        backoff: Backoff,
        events: Events,
    ) -> Retry {
        Retry {
            shared: Arc::new(Shared {
                name: name.into(),
                max_attempts,
                max_elapsed,
                min_attempt_time,
                backoff,
                events,
                calls: AtomicU64::new(0),
                not_started: AtomicU64::new(0),
                retry_attempts: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                successes_after_retry: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
                budget_rejections: AtomicU64::new(0),
            }),
            budget: None,
        }
    }

    /// This policy drawing its retries from `budget` (replacing any budget it had). Every call
    /// deposits into the budget, every retry withdraws from it. Clones made before keep their
    /// own budget; counters stay shared.
    pub fn with_budget(mut self, budget: RetryBudget) -> Retry {
        self.budget = Some(budget);
        self
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.shared.max_attempts
    }

    /// The latest an attempt may start after the first, if limited.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.shared.max_elapsed
    }

    /// The delays between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.shared.backoff
    }

    /// The budget retries are drawn from, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    /// Counters since the policy was built.
    pub fn stats(&self) -> RetryStats {
        let s = &self.shared;
        let calls = s.calls.load(Ordering::Relaxed);
        let retries = s.retries.load(Ordering::Relaxed);
        let not_started = s.not_started.load(Ordering::Relaxed);
        RetryStats {
            calls,
            attempts: calls.saturating_sub(not_started) + s.retry_attempts.load(Ordering::Relaxed),
            retries,
            successes_after_retry: s.successes_after_retry.load(Ordering::Relaxed),
            exhausted: s.exhausted.load(Ordering::Relaxed),
            budget_rejections: s.budget_rejections.load(Ordering::Relaxed),
        }
    }

    /// Calls `f` until it returns `Ok` or the policy gives up; returns the last result, an error
    /// as [`Error::Inner`].
    ///
    /// Gives up when `max_attempts` are used, when the next attempt would start after
    /// `max_elapsed` or at or after the current [`Deadline`] (returning [`Error::DeadlineExceeded`]
    /// without calling `f` if the deadline has already passed), or when the budget refuses
    /// (returning [`Error::BudgetExhausted`] around the last error).
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        RetryFuture::<_, _, _, _, Wrap>::new(self, f, RetryErrors).await
    }

    /// Like [`Retry::call`], with `decide` choosing which results to retry: an `Ok` can be
    /// retried, an `Err` returned at once, a retry-after hint honoured.
    pub async fn call_with<T, E, F, Fut, D>(&self, f: F, decide: D) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        D: ShouldRetry<T, E>,
    {
        RetryFuture::<_, _, _, _, Wrap>::new(self, f, decide).await
    }

    /// Like [`Retry::call`], for a call that already returns `Result<T, Error<E>>` (a stack of
    /// policies): errors are returned as they are, not wrapped again, and a budget refusal's
    /// `last` is the attempt's own error. Decides with [`retry_rejections`]: inner errors and
    /// timeouts are retried, rate limits after their `retry_after`, other rejections returned.
    pub async fn call_flat<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        RetryFuture::<_, _, _, _, Flat>::new(self, f, RetryRejections).await
    }

    /// Like [`Retry::call_flat`], with `decide` choosing which results to retry.
    pub async fn call_flat_with<T, E, F, Fut, D>(&self, f: F, decide: D) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
        D: ShouldRetry<T, Error<E>>,
    {
        RetryFuture::<_, _, _, _, Flat>::new(self, f, decide).await
    }

    /// Counts a call and, unless the deadline has passed, its first attempt. False if no attempt
    /// may start.
    pub(crate) fn begin(&self, progress: &mut Progress) -> bool {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        if Deadline::current().is_some_and(Deadline::is_expired) {
            self.shared.not_started.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // The clock is read only when `max_elapsed` needs the start.
        if self.shared.max_elapsed.is_some() {
            progress.started = Some(Instant::now());
        }
        progress.attempts = 1;
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        true
    }

    /// Counts a retry's attempt about to start, after its backoff.
    pub(crate) fn attempt(&self, progress: &mut Progress) {
        progress.attempts = progress.attempts.saturating_add(1);
        self.shared.retry_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Decides what follows an attempt whose result asked for `decision`.
    pub(crate) fn next(&self, progress: &mut Progress, decision: RetryDecision, ok: bool) -> Next {
        let s = &self.shared;
        let hint = match decision {
            RetryDecision::Return => {
                if ok && progress.attempts > 1 {
                    s.successes_after_retry.fetch_add(1, Ordering::Relaxed);
                }
                return Next::Return;
            }
            RetryDecision::Retry => None,
            RetryDecision::RetryAfter(hint) => Some(hint),
        };
        if progress.attempts >= s.max_attempts {
            return self.give_up();
        }
        let retries_made = progress.attempts.saturating_sub(1);
        let prev = progress.prev_delay.unwrap_or(s.backoff.base_delay());
        let backoff = s
            .backoff
            .delay(retries_made, prev, &mut fastrand::Rng::new());
        let delay = match hint {
            Some(hint) if hint > s.backoff.max_delay() => return self.give_up(),
            Some(hint) => hint.max(backoff),
            None => backoff,
        };
        let now = Instant::now();
        let starts_at = instant_after(now, delay);
        let started = progress.started.unwrap_or(now);
        if let Some(max_elapsed) = s.max_elapsed
            && starts_at.saturating_duration_since(started) > max_elapsed
        {
            return self.give_up();
        }
        if let Some(deadline) = Deadline::current() {
            // An attempt that would start with less than `min_attempt_time` left could not
            // finish: give up now rather than sleep into the deadline.
            if instant_after(starts_at, s.min_attempt_time) >= deadline.instant() {
                return self.give_up();
            }
        }
        if let Some(budget) = &self.budget
            && !budget.try_withdraw()
        {
            s.budget_rejections.fetch_add(1, Ordering::Relaxed);
            s.exhausted.fetch_add(1, Ordering::Relaxed);
            return Next::BudgetExhausted(budget.name_arc());
        }
        progress.prev_delay = Some(backoff);
        s.retries.fetch_add(1, Ordering::Relaxed);
        let attempt = progress.attempts.saturating_add(1);
        s.events.emit_with(|| Event::Retry {
            name: s.name.clone(),
            attempt,
            delay,
        });
        Next::Sleep(delay)
    }

    fn give_up(&self) -> Next {
        self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
        Next::Return
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_that_a_new_attempt_cannot_fix_are_returned() {
        let s = Duration::from_secs(1);
        let cases: [(Error<&str>, RetryDecision); 8] = [
            (Error::Inner("x"), RetryDecision::Retry),
            (
                Error::Timeout {
                    name: "t".into(),
                    after: s,
                },
                RetryDecision::Retry,
            ),
            (
                Error::RateLimited {
                    name: "r".into(),
                    retry_after: s,
                },
                RetryDecision::RetryAfter(s),
            ),
            (
                Error::BreakerOpen { name: "b".into() },
                RetryDecision::Return,
            ),
            (
                Error::BulkheadFull { name: "b".into() },
                RetryDecision::Return,
            ),
            (
                Error::ConcurrencyLimited {
                    name: "c".into(),
                    limit: 1,
                },
                RetryDecision::Return,
            ),
            (Error::DeadlineExceeded, RetryDecision::Return),
            (
                Error::BudgetExhausted {
                    name: "b".into(),
                    last: Box::new(Error::Inner("x")),
                },
                RetryDecision::Return,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(RetryDecision::for_error(&error), want, "{error:?}");
            assert_eq!(retry_rejections::<(), _>(&Err(error)), want);
        }
        assert_eq!(retry_rejections::<_, ()>(&Ok(1)), RetryDecision::Return);
    }

    #[test]
    fn retry_errors_retries_only_errors() {
        assert_eq!(
            RetryErrors.should_retry(&Ok::<_, ()>(1)),
            RetryDecision::Return
        );
        assert_eq!(
            RetryErrors.should_retry(&Err::<(), _>(1)),
            RetryDecision::Retry
        );
    }
}
