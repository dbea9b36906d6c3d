//! Deadlines that travel with a call through every layer below it.
//!
//! A [`Deadline`] is a point in time by which the whole call must be done. Set it once at the top
//! (`Deadline::after(Duration::from_secs(2)).run(|| ...)`) and every policy below sees it through
//! [`Deadline::current`]: a [`Timeout`](super::Timeout) never waits past it and a
//! [`Retry`](crate::retry::Retry) never starts an attempt that could not begin before it.
//!
//! The deadline lives in a `tokio` task-local, so it follows the future, not the thread; a future
//! spawned onto another task does not inherit it unless it is wrapped with [`Deadline::scope`].

use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

use crate::Error;

tokio::task_local! {
    static CURRENT: Deadline;
}

/// A point in time by which a call must be done, passed down the stack through a task-local.
///
/// Nesting can only shorten a deadline: [`Deadline::scope`] runs its future under the earlier of
/// the new deadline and the one already in force.
///
/// ```
/// use std::time::Duration;
/// use rampart_resilience::timeout::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let outer = Deadline::after(Duration::from_secs(1));
/// let seen = outer
///     .scope(async {
///         // A longer inner deadline does not extend the outer one.
///         Deadline::after(Duration::from_secs(5))
///             .scope(async { Deadline::current() })
///             .await
///     })
///     .await;
/// assert_eq!(seen, Some(outer));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline `d` from now. A duration too large to represent means "about 30 years from now".
    pub fn after(d: Duration) -> Deadline {
        Deadline {
            at: instant_after(Instant::now(), d),
        }
    }

    /// A deadline at the given instant.
    pub fn at(at: Instant) -> Deadline {
        Deadline { at }
    }

    /// The instant this deadline falls at.
    pub fn instant(self) -> Instant {
        self.at
    }

    /// The deadline in force for the running task, if any scope set one.
    pub fn current() -> Option<Deadline> {
        CURRENT.try_with(|d| *d).ok()
    }

    /// The earlier of this deadline and the one in force, if any: what [`Deadline::scope`] uses.
    pub fn or_earlier_current(self) -> Deadline {
        match Deadline::current() {
            Some(current) => self.min(current),
            None => self,
        }
    }

    /// Time left until the deadline; zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has been reached.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.at
    }

    /// Runs `fut` with this deadline in force (or the outer one, if that is earlier).
    ///
    /// This only makes the deadline visible to the policies inside; it does not stop `fut` when
    /// the deadline passes. Use [`Deadline::run`] for that.
    ///
    /// The outer deadline is read when `scope` is called, so call it from the task (and scope)
    /// whose deadline should apply; wrapping a future before `tokio::spawn` carries the deadline
    /// into the new task.
    pub fn scope<F: Future>(self, fut: F) -> TaskLocalFuture<Deadline, F> {
        CURRENT.scope(self.or_earlier_current(), fut)
    }

    /// Runs the closure `f` with this deadline in force (or the outer one, if earlier).
    ///
    /// Useful where work starts synchronously, such as a `tower` service's `call`.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.or_earlier_current(), f)
    }

    /// Runs the call made by `f` under this deadline and stops it when the deadline passes.
    ///
    /// Returns [`Error::DeadlineExceeded`] without calling `f` if the deadline (or the outer one)
    /// has already passed, and drops the call's future and returns [`Error::DeadlineExceeded`] if
    /// it passes while the call runs. The call's own error becomes [`Error::Inner`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use rampart_resilience::timeout::Deadline;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let result = Deadline::after(Duration::from_millis(100))
    ///     .run(|| async {
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .await;
    /// assert!(result.unwrap_err().is_deadline_exceeded());
    /// # }
    /// ```
    pub async fn run<T, E, F, Fut>(self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_flat(|| async { f().await.map_err(Error::Inner) })
            .await
    }

    /// Like [`Deadline::run`], for a call that already returns `Result<T, Error<E>>` (a stack of
    /// policies): its errors are passed through as they are instead of being wrapped again.
    pub async fn run_flat<T, E, F, Fut>(self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        let deadline = self.or_earlier_current();
        if deadline.is_expired() {
            return Err(Error::DeadlineExceeded);
        }
        let fut = CURRENT.sync_scope(deadline, f);
        match tokio::time::timeout_at(deadline.at, CURRENT.scope(deadline, fut)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::DeadlineExceeded),
        }
    }
}

/// `now + d`, or a far-future instant if that cannot be represented.
pub(crate) fn instant_after(now: Instant, d: Duration) -> Instant {
    if let Some(at) = now.checked_add(d) {
        return at;
    }
    // Like tokio's own "far future": about 30 years, then shorter fallbacks so this never panics.
    [86_400 * 365 * 30, 86_400 * 365, 86_400]
        .into_iter()
        .find_map(|secs| now.checked_add(Duration::from_secs(secs)))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_deadline_outside_a_scope() {
        assert_eq!(Deadline::current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_inner_deadline_wins_and_a_longer_one_is_ignored() {
        let outer = Deadline::after(Duration::from_secs(2));
        outer
            .scope(async move {
                let shorter = Deadline::after(Duration::from_secs(1));
                let seen = shorter.scope(async { Deadline::current() }).await;
                assert_eq!(seen, Some(shorter));
                let longer = Deadline::after(Duration::from_secs(3));
                let seen = longer.scope(async { Deadline::current() }).await;
                assert_eq!(seen, Some(outer));
                // Back in the outer scope once the inner one has finished.
                assert_eq!(Deadline::current(), Some(outer));
            })
            .await;
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_to_zero_and_then_it_is_expired() {
        let deadline = Deadline::after(Duration::from_millis(300));
        assert_eq!(deadline.remaining(), Duration::from_millis(300));
        assert!(!deadline.is_expired());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(deadline.remaining(), Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(deadline.remaining(), Duration::ZERO);
        assert!(deadline.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_duration_does_not_panic() {
        let deadline = Deadline::after(Duration::MAX);
        assert!(deadline.remaining() > Duration::from_secs(86_400 * 365));
    }

    #[tokio::test(start_paused = true)]
    async fn run_does_not_call_when_already_expired() {
        let deadline = Deadline::after(Duration::ZERO);
        let mut called = false;
        let result: Result<(), Error<()>> = deadline
            .run(|| {
                called = true;
                async { Ok(()) }
            })
            .await;
        assert!(result.unwrap_err().is_deadline_exceeded());
        assert!(!called);
    }

    #[tokio::test(start_paused = true)]
    async fn run_makes_the_deadline_visible_to_the_closure_and_the_future() {
        let deadline = Deadline::after(Duration::from_secs(1));
        let result: Result<_, Error<()>> = deadline
            .run(|| {
                let at_call = Deadline::current();
                async move { Ok((at_call, Deadline::current())) }
            })
            .await;
        assert_eq!(result.unwrap(), (Some(deadline), Some(deadline)));
    }
}
