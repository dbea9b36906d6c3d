//! Lifecycle events, in the spirit of MongoDB's connection monitoring and pooling (CMAP) spec:
//! created, ready, checked out, checked in, closed (with a reason), cleared, checkout failed, plus
//! leaks and health changes.
//!
//! Emitting costs one relaxed atomic load when nobody subscribes: the event is not even built.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

type Listener = Arc<dyn Fn(&PoolEvent) + Send + Sync>;

#[derive(Default)]
struct Inner {
    active: AtomicBool,
    next_id: AtomicU64,
    listeners: RwLock<Vec<(u64, Listener)>>,
}

/// Subscribers that pools emit [`PoolEvent`]s to. Cheap to clone; clones share subscribers, so one
/// set can serve many pools. Same design as [`rampart_resilience::Events`].
#[derive(Clone, Default)]
pub struct PoolEvents {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PoolEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolEvents")
            .field("active", &self.is_active())
            .finish()
    }
}

impl PoolEvents {
    /// A new, empty set of subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if at least one subscriber is listening.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Calls `listener` with every event from now on, until the returned [`PoolSubscription`] is
    /// dropped. Listeners run on the emitting task (sometimes inside `Drop` of a connection) and
    /// must be quick: count, or send to a channel.
    #[must_use = "dropping the subscription unsubscribes at once"]
    pub fn subscribe<F>(&self, listener: F) -> PoolSubscription
    where
        F: Fn(&PoolEvent) + Send + Sync + 'static,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut list = self
            .inner
            .listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.push((id, Arc::new(listener)));
        self.inner.active.store(true, Ordering::Relaxed);
        PoolSubscription {
            events: self.clone(),
            id,
        }
    }

    /// Sends every event from now on into an unbounded channel, until the returned subscription is
    /// dropped.
    pub fn channel(
        &self,
    ) -> (
        PoolSubscription,
        tokio::sync::mpsc::UnboundedReceiver<PoolEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = self.subscribe(move |e| {
            let _ = tx.send(e.clone());
        });
        (sub, rx)
    }

    /// Builds the event with `make` and hands it to every subscriber; does nothing (and does not
    /// call `make`) when nobody subscribes.
    #[inline]
    pub fn emit_with(&self, make: impl FnOnce() -> PoolEvent) {
        if self.is_active() {
            self.emit_slow(make());
        }
    }

    #[cold]
    fn emit_slow(&self, event: PoolEvent) {
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

/// Keeps a pool listener subscribed; dropping it unsubscribes.
pub struct PoolSubscription {
    events: PoolEvents,
    id: u64,
}

impl std::fmt::Debug for PoolSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSubscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for PoolSubscription {
    fn drop(&mut self) {
        self.events.unsubscribe(self.id);
    }
}
