//! Bulkhead: at most `max_concurrent` calls at once, so one slow dependency cannot take every
//! task, connection or thread with it.
//!
//! A full bulkhead rejects at once with [`Error::BulkheadFull`], or,
//! with `max_wait` set, lets callers wait for a slot in arrival order for up to that long;
//! `max_queue` caps how many may wait. A caller never jumps the queue: while anybody waits, a
//! freed slot goes to the first waiter.
//!
//! While nobody waits, taking a slot is one atomic compare-and-swap and giving it back one atomic
//! add, with no lock and no allocation; [`Bulkhead::call`] and [`Bulkhead::try_acquire_ref`] do
//! not even touch the bulkhead's reference count.
//!
//! Cancellation-safe throughout: a caller dropped while waiting leaves the queue and holds no
//! slot, and a call dropped midway releases its slot.
//!
//! ```
//! use rampart_resilience::bulkhead::BulkheadConfig;
//! use rampart_resilience::Events;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bulkhead = BulkheadConfig::new(2).build("reports", &Events::new()).unwrap();
//! let _a = bulkhead.try_acquire().unwrap();
//! let _b = bulkhead.try_acquire().unwrap();
//! let err = bulkhead.call(|| async { Ok::<_, &str>("report") }).await.unwrap_err();
//! assert!(err.is_bulkhead_full());
//! assert_eq!(bulkhead.stats().in_flight, 2);
//! # }
//! ```

mod config;
mod layer;
mod slots;

use crate::Name;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use config::BulkheadConfig;
pub use layer::{BulkheadLayer, BulkheadService, ResponseFuture};
use slots::Slots;

use crate::{Error, Event, Events, PolicyKind};

/// The bulkhead `name` had no free slot (within its `max_wait`, or its queue was full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead {name} is full")]
pub struct BulkheadFull {
    name: Name,
}

impl BulkheadFull {
    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<E> From<BulkheadFull> for Error<E> {
    fn from(full: BulkheadFull) -> Self {
        Error::BulkheadFull { name: full.name }
    }
}

/// A snapshot of a bulkhead's state and counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BulkheadStats {
    /// The bulkhead's name.
    pub name: String,
    /// Slots held now.
    pub in_flight: usize,
    /// Callers waiting for a slot now.
    pub queued: usize,
    /// Slots in all.
    pub max_concurrent: usize,
    /// Slots handed out since the bulkhead was built.
    pub permitted: u64,
    /// Callers turned away.
    pub rejected: u64,
}

type WaitForSlot<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<BulkheadPermitRef<'a>, BulkheadFull>> + Send + 'a>,
>;

/// A bulkhead. Cheap to clone; clones share one set of slots.
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

struct Inner {
    /// First, on cache lines of its own.
    slots: Slots,
    rejected: AtomicU64,
    max_queue: usize,
    name: Name,
    config: BulkheadConfig,
    events: Events,
}

/// One slot of a bulkhead, held until dropped. Owns a handle on the bulkhead, so it may outlive the
/// borrow it was taken from (a spawned task, a tower response future); see [`BulkheadPermitRef`]
/// for the cheaper borrowed kind.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    bulkhead: Bulkhead,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.bulkhead.inner.slots.give_back();
    }
}

impl std::fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("bulkhead", &self.bulkhead.inner.name)
            .finish()
    }
}

/// One slot of a bulkhead, borrowed from it and held until dropped: no reference count to bump,
/// so cheaper than a [`BulkheadPermit`].
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermitRef<'a> {
    bulkhead: &'a Bulkhead,
}

impl BulkheadPermitRef<'_> {
    /// Turns this into a [`BulkheadPermit`] that owns a handle on the bulkhead, keeping the slot.
    pub fn into_owned(self) -> BulkheadPermit {
        let bulkhead = self.bulkhead.clone();
        std::mem::forget(self);
        BulkheadPermit { bulkhead }
    }
}

impl Drop for BulkheadPermitRef<'_> {
    #[inline]
    fn drop(&mut self) {
        self.bulkhead.inner.slots.give_back();
    }
}

impl std::fmt::Debug for BulkheadPermitRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadPermitRef")
            .field("bulkhead", &self.bulkhead.inner.name)
            .finish()
    }
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.inner.config.max_concurrent)
            .field("in_flight", &self.inner.slots.in_flight())
            .finish()
    }
}

impl Bulkhead {
    pub(crate) fn from_valid_config(name: &str, config: BulkheadConfig, events: Events) -> Self {
        Bulkhead {
            inner: Arc::new(Inner {
                slots: Slots::new(config.max_concurrent),
                rejected: AtomicU64::new(0),
                max_queue: config.max_queue.unwrap_or(usize::MAX),
                name: name.into(),
                config,
                events,
            }),
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BulkheadConfig {
        &self.inner.config
    }

    /// The events it emits to; subscribe here.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Takes a slot if one is free now. Never jumps the queue: while callers wait, no slot is free.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.take_free().ok_or_else(|| self.reject())
    }

    /// Like [`try_acquire`](Self::try_acquire), but the permit borrows the bulkhead.
    #[inline]
    pub fn try_acquire_ref(&self) -> Result<BulkheadPermitRef<'_>, BulkheadFull> {
        if self.inner.slots.try_take() {
            Ok(BulkheadPermitRef { bulkhead: self })
        } else {
            Err(self.reject())
        }
    }

    /// Takes a slot, waiting up to `max_wait` for one (in arrival order, at most `max_queue`
    /// waiting).
    ///
    /// Cancellation-safe: dropped while waiting, it leaves the queue holding nothing.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.acquire_ref().await.map(BulkheadPermitRef::into_owned)
    }

    /// Like [`acquire`](Self::acquire), but the permit borrows the bulkhead.
    pub async fn acquire_ref(&self) -> Result<BulkheadPermitRef<'_>, BulkheadFull> {
        if self.inner.slots.try_take() {
            return Ok(BulkheadPermitRef { bulkhead: self });
        }
        if !self.waits() {
            return Err(self.reject());
        }
        self.wait_for_slot().await
    }

    /// Runs `f` in a slot, waiting up to `max_wait` for one. The slot is released when `f`'s future
    /// finishes or is dropped.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = if self.inner.slots.try_take() {
            BulkheadPermitRef { bulkhead: self }
        } else if !self.waits() {
            return Err(self.reject().into());
        } else {
            self.wait_for_slot().await?
        };
        let result = f().await;
        drop(permit);
        result.map_err(Error::Inner)
    }

    /// A snapshot of the state and counters.
    pub fn stats(&self) -> BulkheadStats {
        let inner = &*self.inner;
        BulkheadStats {
            name: inner.name.to_string(),
            in_flight: inner.slots.in_flight(),
            queued: inner.slots.queued(),
            max_concurrent: inner.config.max_concurrent,
            permitted: inner.slots.permitted(),
            rejected: inner.rejected.load(Ordering::Relaxed),
        }
    }

    /// True if waiting for a slot is allowed at all (`max_wait` above zero).
    pub(crate) fn waits(&self) -> bool {
        !self.inner.config.max_wait.is_zero()
    }

    #[inline]
    fn take_free(&self) -> Option<BulkheadPermit> {
        self.inner.slots.try_take().then(|| BulkheadPermit {
            bulkhead: self.clone(),
        })
    }

    /// Waits in the queue for up to `max_wait`, for when no slot was free at once and waiting is
    /// allowed. Boxed: the timer is large, and inline it would make every call's future (moved on
    /// every call, waiting or not) several times larger; only a caller that waits pays.
    fn wait_for_slot(&self) -> WaitForSlot<'_> {
        Box::pin(async move {
            let inner = &*self.inner;
            let wait = inner.slots.wait(inner.max_queue);
            let waited = tokio::time::timeout(inner.config.max_wait, wait).await;
            match waited {
                Ok(Ok(())) => Ok(BulkheadPermitRef { bulkhead: self }),
                // The queue was full, or no slot came in time (the wait, dropped, left the queue).
                Ok(Err(())) | Err(_) => Err(self.reject()),
            }
        })
    }

    #[cold]
    fn reject(&self) -> BulkheadFull {
        let inner = &*self.inner;
        inner.rejected.fetch_add(1, Ordering::Relaxed);
        inner.events.emit_with(|| Event::Rejected {
            name: inner.name.clone(),
            policy: PolicyKind::Bulkhead,
        });
        BulkheadFull {
            name: inner.name.clone(),
        }
    }
}
