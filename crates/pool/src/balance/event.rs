//! What a balancer reports: an endpoint ejected, an endpoint readmitted.
//!
//! Emitting costs one relaxed atomic load when nobody subscribes: the event value is not even built
//! (the same design as [`rampart_resilience::Events`], which has no balancing events).

use rampart_resilience::Name;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why an endpoint was ejected.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum EjectionReason {
    /// The endpoint failed this many calls in a row.
    ConsecutiveFailures {
        /// The failures in a row when it was ejected.
        failures: u32,
    },
    /// The endpoint's latency estimate was far above the median of the others.
    LatencyOutlier {
        /// The endpoint's peak EWMA latency.
        ewma: Duration,
        /// The median peak EWMA latency of the other endpoints.
        median: Duration,
    },
}

/// Something a balancer did that a subscriber may want to count or log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
#[non_exhaustive]
pub enum BalanceEvent {
    /// An endpoint was taken out of the rotation for `duration`.
    Ejected {
        /// The balancer's name.
        balancer: Name,
        /// The endpoint's name.
        endpoint: Name,
        /// Why.
        reason: EjectionReason,
        /// How long it stays out.
        duration: Duration,
        /// How many ejections count toward its duration now (1 for the first, 2 for the next, ...).
        level: u32,
    },
    /// An ejected endpoint's time is up: it is back, at a weight that ramps up over `ramp_up`.
    Readmitted {
        /// The balancer's name.
        balancer: Name,
        /// The endpoint's name.
        endpoint: Name,
        /// How long until it takes its full share of traffic again.
        ramp_up: Duration,
    },
}

type Listener = Arc<dyn Fn(&BalanceEvent) + Send + Sync>;

#[derive(Default)]
struct Inner {
    active: AtomicBool,
    next_id: AtomicU64,
    listeners: RwLock<Vec<(u64, Listener)>>,
}

/// A set of subscribers that balancers emit [`BalanceEvent`]s to. Cheap to clone; clones share
/// subscribers.
///
/// ```
/// use rampart_pool::balance::{BalanceEvent, BalanceEvents};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let events = BalanceEvents::new();
/// let seen = Arc::new(AtomicUsize::new(0));
/// let counter = seen.clone();
/// let _subscription = events.subscribe(move |_event: &BalanceEvent| {
///     counter.fetch_add(1, Ordering::Relaxed);
/// });
/// assert!(events.is_active());
/// ```
#[derive(Clone, Default)]
pub struct BalanceEvents {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BalanceEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceEvents")
            .field("active", &self.is_active())
            .finish()
    }
}

impl BalanceEvents {
    /// A new, empty set of subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if at least one subscriber is listening.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Calls `listener` with every event from now on, until the returned subscription is dropped.
    /// Listeners run on the caller's task and must be quick: count, or send to a channel.
    #[must_use = "dropping the subscription unsubscribes at once"]
    pub fn subscribe<F>(&self, listener: F) -> BalanceSubscription
    where
        F: Fn(&BalanceEvent) + Send + Sync + 'static,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut list = self
            .inner
            .listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.push((id, Arc::new(listener)));
        self.inner.active.store(true, Ordering::Relaxed);
        BalanceSubscription {
            events: self.clone(),
            id,
        }
    }

    /// Sends every event from now on into an unbounded channel, until the returned subscription is
    /// dropped.
    pub fn channel(
        &self,
    ) -> (
        BalanceSubscription,
        tokio::sync::mpsc::UnboundedReceiver<BalanceEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = self.subscribe(move |e| {
            let _ = tx.send(e.clone());
        });
        (sub, rx)
    }

    /// Builds the event with `make` and hands it to every subscriber; does nothing (and does not call
    /// `make`) when nobody subscribes.
    #[inline]
    pub fn emit_with(&self, make: impl FnOnce() -> BalanceEvent) {
        if self.is_active() {
            self.emit_slow(make());
        }
    }

    #[cold]
    fn emit_slow(&self, event: BalanceEvent) {
        let list = self
            .inner
            .listeners
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, listener) in list.iter() {
            listener(&event);
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut list = self
            .inner
            .listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.retain(|(i, _)| *i != id);
        self.inner.active.store(!list.is_empty(), Ordering::Relaxed);
    }
}

/// Keeps a listener subscribed to [`BalanceEvents`]; dropping it unsubscribes.
pub struct BalanceSubscription {
    events: BalanceEvents,
    id: u64,
}

impl std::fmt::Debug for BalanceSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalanceSubscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for BalanceSubscription {
    fn drop(&mut self) {
        self.events.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn nothing_is_built_without_subscribers_and_dropping_unsubscribes() {
        let events = BalanceEvents::new();
        let built = AtomicUsize::new(0);
        let make = || {
            built.fetch_add(1, Ordering::Relaxed);
            BalanceEvent::Readmitted {
                balancer: "b".into(),
                endpoint: "e".into(),
                ramp_up: Duration::ZERO,
            }
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
