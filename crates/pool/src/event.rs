//! Lifecycle events, in the spirit of MongoDB's connection monitoring and pooling (CMAP) spec:
//! created, ready, checked out, checked in, closed (with a reason), cleared, checkout failed, plus
//! leaks and health changes.
//!
//! Emitting costs one relaxed atomic load when nobody subscribes: the event is not even built.

use std::panic::Location;
use std::time::Duration;

use rampart_resilience::Name;

use crate::HealthState;

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`, beyond `min_idle`.
    Idle,
    /// Open longer than its (jittered) `max_lifetime`.
    Lifetime,
    /// Failed to connect, or failed with a fatal error (reset, or reported by the user).
    Error,
    /// Failed validation (at checkout or keepalive).
    Invalid,
    /// Made before the last [`Pool::clear`](crate::Pool::clear).
    Stale,
    /// The pool was closed.
    PoolClosed,
    /// The pool was resized below its size.
    Resized,
    /// The user discarded it ([`Pooled::discard`](crate::Pooled::discard)).
    Discarded,
    /// The user took it out of the pool ([`Pooled::detach`](crate::Pooled::detach)); it is not
    /// closed, only no longer the pool's.
    Detached,
    /// An acquire was dropped while it reset or validated this connection; its state is unknown.
    Interrupted,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 10] = [
        CloseReason::Idle,
        CloseReason::Lifetime,
        CloseReason::Error,
        CloseReason::Invalid,
        CloseReason::Stale,
        CloseReason::PoolClosed,
        CloseReason::Resized,
        CloseReason::Discarded,
        CloseReason::Detached,
        CloseReason::Interrupted,
    ];
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why an acquire gave no connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckoutFailure {
    /// `acquire_timeout` passed.
    Timeout,
    /// A connect failed or timed out, or the connect breaker is open.
    ConnectionError,
    /// The pool is closed.
    PoolClosed,
    /// The pool is paused.
    Paused,
}

/// Something a pool did that a subscriber may want to count or log. Every event names its pool.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PoolEvent {
    /// A connect started for connection `id`.
    ConnectionCreated {
        /// The pool.
        pool: Name,
        /// The connection's id, unique within the pool.
        id: u64,
    },
    /// Connection `id` is established and usable.
    ConnectionReady {
        /// The pool.
        pool: Name,
        /// The connection.
        id: u64,
        /// How long the connect took.
        took: Duration,
    },
    /// Connection `id` was handed to a caller.
    ConnectionCheckedOut {
        /// The pool.
        pool: Name,
        /// The connection.
        id: u64,
        /// How long the caller waited.
        waited: Duration,
    },
    /// Connection `id` came back from a caller.
    ConnectionCheckedIn {
        /// The pool.
        pool: Name,
        /// The connection.
        id: u64,
    },
    /// Connection `id` was closed (or, for [`CloseReason::Detached`], left the pool). A failed
    /// connect emits this too, with [`CloseReason::Error`].
    ConnectionClosed {
        /// The pool.
        pool: Name,
        /// The connection.
        id: u64,
        /// Why.
        reason: CloseReason,
    },
    /// [`Pool::clear`](crate::Pool::clear): connections of older generations will close.
    PoolCleared {
        /// The pool.
        pool: Name,
        /// The new generation.
        generation: u64,
    },
    /// The pool was paused: acquires fail fast.
    PoolPaused {
        /// The pool.
        pool: Name,
    },
    /// The pool accepts acquires again (resumed, or a connect succeeded while paused).
    PoolReady {
        /// The pool.
        pool: Name,
    },
    /// The pool was closed.
    PoolClosed {
        /// The pool.
        pool: Name,
    },
    /// An acquire failed.
    CheckoutFailed {
        /// The pool.
        pool: Name,
        /// Why.
        reason: CheckoutFailure,
    },
    /// Connection `id` has been held for `held`, longer than `leak_detection_threshold`.
    /// Reported once per checkout.
    LeakDetected {
        /// The pool.
        pool: Name,
        /// The connection.
        id: u64,
        /// Where it was acquired.
        location: &'static Location<'static>,
        /// How long it had been held.
        held: Duration,
    },
    /// A connection reported as leaked came back after `held`.
    LeakResolved {
        /// The pool.
        pool: Name,
        /// The connection.
        id: u64,
        /// Where it was acquired.
        location: &'static Location<'static>,
        /// How long it was held in all.
        held: Duration,
    },
    /// The pool's health changed.
    HealthChanged {
        /// The pool.
        pool: Name,
        /// Before.
        from: HealthState,
        /// After.
        to: HealthState,
        /// The score (0–100) after.
        score: u8,
    },
}

/// Subscribers that pools emit [`PoolEvent`]s to: `subscribe`, `channel`, and nothing built when
/// nobody listens. Cheap to clone; clones share subscribers, so one set can serve many pools. The
/// same listener set as [`rampart_resilience::Events`], for pool events.
pub type PoolEvents = rampart_resilience::Listeners<PoolEvent>;

/// Keeps a pool-event listener subscribed; dropping it unsubscribes.
pub type PoolSubscription = rampart_resilience::Subscription;
