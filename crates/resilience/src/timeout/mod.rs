//! Timeouts and deadlines.
//!
//! A [`Timeout`] bounds one call: if it does not finish within the configured time it is dropped
//! and [`Error::Timeout`] returned. A [`Deadline`] bounds a whole operation (every retry, every
//! layer below) and travels down the stack in a task-local; a timeout never waits past the
//! deadline in force, and returns [`Error::DeadlineExceeded`] when the deadline is what expires.
//!
//! A timeout does not set a deadline for what runs inside it: it is a per-call limit (place it
//! inside a retry to bound each attempt), while a deadline is the caller's overall budget of time.
//!
//! ```
//! use std::time::Duration;
//! use rampart_resilience::Events;
//! use rampart_resilience::timeout::{Deadline, TimeoutConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: TimeoutConfig = toml::from_str(r#"timeout = "500ms""#)?;
//! let timeout = config.build("payments", &Events::new())?;
//!
//! let slow = timeout
//!     .call(|| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, std::io::Error>("late")
//!     })
//!     .await;
//! assert!(slow.unwrap_err().is_timeout());
//!
//! // Under a deadline of 100ms the same call stops at the deadline instead.
//! let bounded = Deadline::after(Duration::from_millis(100))
//!     .scope(timeout.call(|| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<_, std::io::Error>("late")
//!     }))
//!     .await;
//! assert!(bounded.unwrap_err().is_deadline_exceeded());
//! # Ok(())
//! # }
//! ```

mod config;
mod deadline;
mod layer;

use crate::Name;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::{ConfigError, Error, Event, Events, format_duration};

pub use config::TimeoutConfig;
pub use deadline::Deadline;
pub(crate) use deadline::instant_after;
pub use layer::{DeadlineLayer, DeadlineService, ResponseFuture, TimeoutLayer, TimeoutService};

/// The shortest timeout a configuration may set: 1ms. Anything shorter is below the timer's
/// resolution and would fail calls at random.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// The longest timeout a configuration may set: 1 day. Longer is almost always a unit mistake
/// (`"30d"` for `"30s"`), and a call that may hang for days is better left without a timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Clamps `d` into `[min, max]`. Never panics: if `min > max`, `max` wins.
///
/// Sane ranges for a timeout on a network call: between a few milliseconds (a cache in the same
/// data centre) and a few minutes (a batch export); [`MIN_TIMEOUT`] and [`MAX_TIMEOUT`] are the
/// outer limits a configuration may use.
///
/// ```
/// use std::time::Duration;
/// use rampart_resilience::timeout::clamp_timeout;
///
/// let ms = Duration::from_millis;
/// assert_eq!(clamp_timeout(ms(0), ms(1), ms(100)), ms(1));
/// assert_eq!(clamp_timeout(ms(50), ms(1), ms(100)), ms(50));
/// assert_eq!(clamp_timeout(ms(500), ms(1), ms(100)), ms(100));
/// ```
pub fn clamp_timeout(d: Duration, min: Duration, max: Duration) -> Duration {
    d.max(min).min(max)
}

/// Pushes a problem at `path` into `errors` if `d` is outside `[min, max]`, saying what was got:
/// `must be at least 1ms, got 0s`.
///
/// Policies use it with [`MIN_TIMEOUT`] and [`MAX_TIMEOUT`] for timeouts, and with their own
/// bounds for other durations.
pub fn validate_timeout(
    path: &str,
    d: Duration,
    min: Duration,
    max: Duration,
    errors: &mut ConfigError,
) {
    if d < min {
        errors.push(
            path,
            format!(
                "must be at least {}, got {}",
                format_duration(min),
                format_duration(d)
            ),
        );
    } else if d > max {
        errors.push(
            path,
            format!(
                "must be at most {}, got {}",
                format_duration(max),
                format_duration(d)
            ),
        );
    }
}

/// Counters of one timeout policy since it was built.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimeoutStats {
    /// Calls made through the policy.
    pub calls: u64,
    /// Calls abandoned because the policy's own timeout expired.
    pub timeouts: u64,
    /// Calls abandoned (or never started) because the caller's deadline expired first.
    pub deadline_exceeded: u64,
}

/// A per-call time limit. Cheap to clone; clones share counters.
///
/// Built from a [`TimeoutConfig`]. See the [module docs](self) for an example.
#[derive(Clone)]
pub struct Timeout {
    shared: Arc<Shared>,
}

struct Shared {
    name: Name,
    timeout: Duration,
    events: Events,
    calls: AtomicU64,
    timeouts: AtomicU64,
    deadline_exceeded: AtomicU64,
}

impl std::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("name", &self.shared.name)
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

/// What ends a call if it runs too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The policy's own timeout.
    Timeout,
    /// The caller's deadline, which falls before the timeout would.
    Deadline,
}

/// When a call must be done by, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) until: Instant,
    pub(crate) expiry: Expiry,
    /// The deadline had already passed when the call was about to start.
    pub(crate) expired: bool,
}

impl Timeout {
    /// Only through [`TimeoutConfig::build`], so the timeout is always valid.
    fn new(name: &str, timeout: Duration, events: Events) -> Timeout {
        Timeout {
            shared: Arc::new(Shared {
                name: name.into(),
                timeout,
                events,
                calls: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                deadline_exceeded: AtomicU64::new(0),
            }),
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Counters since the policy was built.
    pub fn stats(&self) -> TimeoutStats {
        TimeoutStats {
            calls: self.shared.calls.load(Ordering::Relaxed),
            timeouts: self.shared.timeouts.load(Ordering::Relaxed),
            deadline_exceeded: self.shared.deadline_exceeded.load(Ordering::Relaxed),
        }
    }

    /// Runs the call made by `f`, dropping it if it takes longer than the timeout or the time left
    /// until the current [`Deadline`], whichever is shorter.
    ///
    /// Returns [`Error::Timeout`] if the timeout expired, [`Error::DeadlineExceeded`] if the
    /// deadline did (without calling `f` at all if it had already passed), and the call's own
    /// error as [`Error::Inner`].
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_flat(|| async { f().await.map_err(Error::Inner) })
            .await
    }

    /// Like [`Timeout::call`], for a call that already returns `Result<T, Error<E>>` (a stack of
    /// policies): its errors are passed through as they are instead of being wrapped again.
    ///
    /// The clock starts when the call first has to wait: a call that is ready on its first poll
    /// never reads the clock nor arms a timer, which keeps a timeout around fast calls nearly
    /// free. (The first poll runs before the clock starts; it is expected to be short, as polls
    /// are.) A caller's [`Deadline`] is honoured either way.
    pub async fn call_flat<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        let deadline = Deadline::current();
        if deadline.is_some_and(|d| d.is_expired()) {
            self.shared.calls.fetch_add(1, Ordering::Relaxed);
            return Err(self.expired(Expiry::Deadline));
        }
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        LazyTimeout {
            future: f(),
            timer: Timer::Unarmed,
            policy: self,
            deadline,
            expiry: Expiry::Timeout,
        }
        .await
    }

    /// When a call that starts waiting `now` must be done by, and why.
    fn limit_from(&self, now: Instant, deadline: Option<Deadline>) -> (Instant, Expiry) {
        let limit = instant_after(now, self.shared.timeout);
        match deadline {
            // On a tie the timeout is reported: it is the tighter of the two limits we own.
            Some(d) if d.instant() < limit => (d.instant(), Expiry::Deadline),
            _ => (limit, Expiry::Timeout),
        }
    }

    /// Counts a call and works out when it must be done by.
    pub(crate) fn plan(&self) -> Plan {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let deadline = Deadline::current();
        let (until, expiry) = self.limit_from(now, deadline);
        Plan {
            until,
            expiry,
            expired: expiry == Expiry::Deadline && until <= now,
        }
    }

    /// Counts an expiry, emits its event and returns the matching error.
    pub(crate) fn expired<E>(&self, expiry: Expiry) -> Error<E> {
        match expiry {
            Expiry::Timeout => {
                self.shared.timeouts.fetch_add(1, Ordering::Relaxed);
                let after = self.shared.timeout;
                self.shared.events.emit_with(|| Event::TimedOut {
                    name: self.shared.name.clone(),
                    after,
                });
                Error::Timeout {
                    name: self.shared.name.clone(),
                    after,
                }
            }
            Expiry::Deadline => {
                self.shared
                    .deadline_exceeded
                    .fetch_add(1, Ordering::Relaxed);
                Error::DeadlineExceeded
            }
        }
    }
}

/// The timer of a call that had to wait. Boxed: a tokio timer is over 100 bytes, and a call
/// that finishes on its first poll should not carry (and move) room for one. A call that waits
/// pays one allocation beside the timer registration it needs anyway.
enum Timer {
    Unarmed,
    Armed(std::pin::Pin<Box<tokio::time::Sleep>>),
}

pin_project_lite::pin_project! {
    /// A call bounded by a timeout whose timer is armed only once the call has to wait.
    struct LazyTimeout<'a, Fut> {
        #[pin]
        future: Fut,
        timer: Timer,
        policy: &'a Timeout,
        deadline: Option<Deadline>,
        expiry: Expiry,
    }
}

impl<T, E, Fut> Future for LazyTimeout<'_, Fut>
where
    Fut: Future<Output = Result<T, Error<E>>>,
{
    type Output = Result<T, Error<E>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(result) = this.future.poll(cx) {
            return std::task::Poll::Ready(result);
        }
        if let Timer::Unarmed = this.timer {
            let (until, expiry) = this.policy.limit_from(Instant::now(), *this.deadline);
            *this.expiry = expiry;
            *this.timer = Timer::Armed(Box::pin(tokio::time::sleep_until(until)));
        }
        match this.timer {
            Timer::Armed(sleep) => match sleep.as_mut().poll(cx) {
                std::task::Poll::Ready(()) => {
                    std::task::Poll::Ready(Err(this.policy.expired(*this.expiry)))
                }
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
            Timer::Unarmed => std::task::Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timeout(d: Duration) -> Timeout {
        TimeoutConfig { timeout: d }
            .build("t", &Events::new())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tie_between_deadline_and_timeout_reports_the_timeout() {
        let t = timeout(Duration::from_secs(1));
        let result: Result<(), Error<()>> = Deadline::after(Duration::from_secs(1))
            .scope(t.call(std::future::pending))
            .await;
        assert!(result.unwrap_err().is_timeout());
    }

    #[tokio::test(start_paused = true)]
    async fn call_flat_passes_policy_errors_through_unwrapped() {
        let t = timeout(Duration::from_secs(1));
        let result: Result<(), Error<&str>> = t
            .call_flat(|| async { Err(Error::BreakerOpen { name: "b".into() }) })
            .await;
        assert!(result.unwrap_err().is_breaker_open());
    }

    #[test]
    fn validate_timeout_reports_nothing_inside_the_range() {
        let mut errors = ConfigError::new(None);
        validate_timeout(
            "x",
            Duration::from_secs(1),
            MIN_TIMEOUT,
            MAX_TIMEOUT,
            &mut errors,
        );
        assert!(errors.is_empty());
    }

    proptest! {
        #[test]
        fn clamp_stays_in_range_and_never_panics(d in any::<u64>(), lo in any::<u64>(), hi in any::<u64>()) {
            let (d, lo, hi) = (Duration::from_nanos(d), Duration::from_nanos(lo), Duration::from_nanos(hi));
            let c = clamp_timeout(d, lo, hi);
            prop_assert!(c <= hi);
            if lo <= hi {
                prop_assert!(c >= lo);
                if d >= lo && d <= hi {
                    prop_assert_eq!(c, d);
                }
            }
        }
    }
}
