//! What a balancer reports: an endpoint ejected, an endpoint readmitted.
//!
//! Emitting costs one relaxed atomic load when nobody subscribes: the event value is not even built
//! (the same design as [`rampart_resilience::Events`], which has no balancing events).

use rampart_resilience::Name;
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

/// A set of subscribers that balancers emit [`BalanceEvent`]s to: the same listener set as
/// [`rampart_resilience::Events`], for balance events. Cheap to clone; clones share subscribers.
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
pub type BalanceEvents = rampart_resilience::Listeners<BalanceEvent>;

/// Keeps a balance-event listener subscribed; dropping it unsubscribes.
pub type BalanceSubscription = rampart_resilience::Subscription;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;

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
