//! Typed events that policies emit: state changes, rejections, retries, hedges.
//!
//! Emitting costs one relaxed atomic load when nobody subscribes: the event value is not even built.

use crate::Name;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::breaker::BreakerState;

/// Which kind of policy an event or rejection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyKind {
    /// A circuit breaker.
    Breaker,
    /// A retry policy.
    Retry,
    /// A retry budget.
    Budget,
    /// A timeout.
    Timeout,
    /// A rate limiter.
    RateLimit,
    /// A bulkhead.
    Bulkhead,
    /// An adaptive concurrency limiter.
    Adaptive,
    /// A hedging policy.
    Hedge,
    /// A fallback.
    Fallback,
}

/// Something a policy did that a subscriber may want to count or log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A circuit breaker changed state.
    BreakerStateChanged {
        /// The breaker's name.
        name: Name,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
    },
    /// A policy rejected a call.
    Rejected {
        /// The policy's name.
        name: Name,
        /// Which kind of policy it was.
        policy: PolicyKind,
    },
    /// A retry policy is about to try again after `delay`.
    Retry {
        /// The retry policy's name.
        name: Name,
        /// The attempt about to start (2 for the first retry).
        attempt: u32,
        /// How long it waits first.
        delay: Duration,
    },
    /// A hedging policy started an extra attempt.
    Hedge {
        /// The hedging policy's name.
        name: Name,
        /// The attempt started (2 for the first hedge).
        attempt: u32,
    },
    /// A call timed out.
    TimedOut {
        /// The timeout's name.
        name: Name,
        /// The timeout that expired.
        after: Duration,
    },
    /// An adaptive concurrency limiter changed its limit.
    LimitChanged {
        /// The limiter's name.
        name: Name,
        /// The limit before.
        from: usize,
        /// The limit after.
        to: usize,
    },
    /// A fallback produced the value instead of the call.
    FallbackUsed {
        /// The fallback's name.
        name: Name,
    },
}

type Listener<E> = Arc<dyn Fn(&E) + Send + Sync>;

struct Inner<E> {
    active: AtomicBool,
    next_id: AtomicU64,
    listeners: RwLock<Vec<(u64, Listener<E>)>>,
}

/// Removes a listener by id, whatever the event type; lets [`Subscription`] stay non-generic.
trait Unsubscribe: Send + Sync {
    fn unsubscribe(&self, id: u64);
}

impl<E: 'static> Unsubscribe for Inner<E> {
    fn unsubscribe(&self, id: u64) {
        let mut list = self
            .listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.retain(|(i, _)| *i != id);
        self.active.store(!list.is_empty(), Ordering::Relaxed);
    }
}

/// A set of subscribers to events of type `E`. Cheap to clone; clones share subscribers, so one
/// set can serve many policies (or pools, or balancers). Emitting costs one relaxed atomic load
/// when nobody subscribes: the event value is not even built.
///
/// [`Events`] is the set for the resilience policies' [`Event`]; other crates use it for their own
/// event types (`rampart_pool::PoolEvents` is `Listeners<PoolEvent>`).
///
/// ```
/// use rampart_resilience::{Event, Events};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let events = Events::new();
/// let seen = Arc::new(AtomicUsize::new(0));
/// let counter = seen.clone();
/// let _subscription = events.subscribe(move |_event: &Event| {
///     counter.fetch_add(1, Ordering::Relaxed);
/// });
/// events.emit_with(|| Event::FallbackUsed { name: "x".into() });
/// assert_eq!(seen.load(Ordering::Relaxed), 1);
/// ```
pub struct Listeners<E> {
    inner: Arc<Inner<E>>,
}

/// The subscribers of the resilience policies' [`Event`]s.
pub type Events = Listeners<Event>;

impl<E> Clone for Listeners<E> {
    fn clone(&self) -> Self {
        Listeners {
            inner: self.inner.clone(),
        }
    }
}

impl<E> Default for Listeners<E> {
    fn default() -> Self {
        Listeners {
            inner: Arc::new(Inner {
                active: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                listeners: RwLock::new(Vec::new()),
            }),
        }
    }
}

impl<E> std::fmt::Debug for Listeners<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("active", &self.inner.active.load(Ordering::Relaxed))
            .finish()
    }
}

impl<E: 'static> Listeners<E> {
    /// A new, empty set of subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if at least one subscriber is listening.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Calls `listener` with every event from now on, until the returned [`Subscription`] is
    /// dropped. Listeners run on the emitting task (sometimes inside a `Drop`) and must be quick:
    /// count, or send to a channel.
    #[must_use = "dropping the subscription unsubscribes at once"]
    pub fn subscribe<F>(&self, listener: F) -> Subscription
    where
        F: Fn(&E) + Send + Sync + 'static,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut list = self
            .inner
            .listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.push((id, Arc::new(listener)));
        self.inner.active.store(true, Ordering::Relaxed);
        Subscription {
            owner: self.inner.clone(),
            id,
        }
    }

    /// Sends every event from now on into an unbounded channel, until the returned subscription is
    /// dropped.
    pub fn channel(&self) -> (Subscription, tokio::sync::mpsc::UnboundedReceiver<E>)
    where
        E: Clone + Send,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = self.subscribe(move |e: &E| {
            let _ = tx.send(e.clone());
        });
        (sub, rx)
    }

    /// Builds the event with `make` and hands it to every subscriber; does nothing (and does not call
    /// `make`) when nobody subscribes.
    #[inline]
    pub fn emit_with(&self, make: impl FnOnce() -> E) {
        if self.is_active() {
            self.emit_slow(make());
        }
    }

    #[cold]
    fn emit_slow(&self, event: E) {
        let list = self
            .inner
            .listeners
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, listener) in list.iter() {
            listener(&event);
        }
    }
}

/// Keeps a listener subscribed; dropping it unsubscribes.
pub struct Subscription {
    owner: Arc<dyn Unsubscribe>,
    id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.owner.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn nothing_is_built_without_subscribers_and_dropping_unsubscribes() {
        let events = Events::new();
        let built = AtomicUsize::new(0);
        let make = || {
            built.fetch_add(1, Ordering::Relaxed);
            Event::FallbackUsed { name: "f".into() }
        };
        events.emit_with(make);
        assert_eq!(built.load(Ordering::Relaxed), 0);

        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let sub = events.subscribe(move |_| {
            s.fetch_add(1, Ordering::Relaxed);
        });
        events.emit_with(make);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        drop(sub);
        assert!(!events.is_active());
        events.emit_with(make);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        assert_eq!(built.load(Ordering::Relaxed), 1);
    }
}
