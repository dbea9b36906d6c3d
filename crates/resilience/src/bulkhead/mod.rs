//! Bulkhead: at most `max_concurrent` calls at once, so one slow dependency cannot take every
//! task, connection or thread with it.
//!
//! A full bulkhead rejects at once with [`Error::BulkheadFull`], or,
//! with `max_wait` set, lets callers wait for a slot in arrival order (a fair
//! `tokio::sync::Semaphore`) for up to that long; `max_queue` caps how many may wait.
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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use config::BulkheadConfig;
pub use layer::{BulkheadLayer, BulkheadService, ResponseFuture};

use crate::{Error, Event, Events, PolicyKind};

/// The bulkhead `name` had no free slot (within its `max_wait`, or its queue was full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead {name} is full")]
pub struct BulkheadFull {
    name: Arc<str>,
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

/// A bulkhead. Cheap to clone; clones share one set of slots.
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

struct Inner {
    semaphore: Arc<Semaphore>,
    queued: AtomicUsize,
    permitted: AtomicU64,
    rejected: AtomicU64,
    name: Arc<str>,
    config: BulkheadConfig,
    events: Events,
}

/// One slot of a bulkhead, held until dropped.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadPermit").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("max_concurrent", &self.inner.config.max_concurrent)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Bulkhead {
    pub(crate) fn from_valid_config(name: &str, config: BulkheadConfig, events: Events) -> Self {
        Bulkhead {
            inner: Arc::new(Inner {
                semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
                queued: AtomicUsize::new(0),
                permitted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
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

    fn in_flight(&self) -> usize {
        self.inner
            .config
            .max_concurrent
            .saturating_sub(self.inner.semaphore.available_permits())
    }

    /// Takes a slot if one is free now. Never jumps the queue: while callers wait, no slot is free.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.take_free().ok_or_else(|| self.reject())
    }

    /// Takes a slot, waiting up to `max_wait` for one (in arrival order, at most `max_queue`
    /// waiting).
    ///
    /// Cancellation-safe: dropped while waiting, it leaves the queue holding nothing.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        if let Some(permit) = self.take_free() {
            return Ok(permit);
        }
        let inner = &*self.inner;
        if inner.config.max_wait.is_zero() {
            return Err(self.reject());
        }
        let Some(place) = QueuePlace::take(inner) else {
            return Err(self.reject());
        };
        let waited = tokio::time::timeout(
            inner.config.max_wait,
            inner.semaphore.clone().acquire_owned(),
        )
        .await;
        drop(place);
        match waited {
            Ok(Ok(permit)) => {
                inner.permitted.fetch_add(1, Ordering::Relaxed);
                Ok(BulkheadPermit { _permit: permit })
            }
            // The semaphore is never closed; a timeout is the only real failure.
            Ok(Err(_)) | Err(_) => Err(self.reject()),
        }
    }

    /// Runs `f` in a slot, waiting up to `max_wait` for one. The slot is released when `f`'s future
    /// finishes or is dropped.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.acquire().await?;
        let result = f().await;
        drop(permit);
        result.map_err(Error::Inner)
    }

    /// A snapshot of the state and counters.
    pub fn stats(&self) -> BulkheadStats {
        let inner = &*self.inner;
        BulkheadStats {
            name: inner.name.to_string(),
            in_flight: self.in_flight(),
            queued: inner.queued.load(Ordering::Relaxed),
            max_concurrent: inner.config.max_concurrent,
            permitted: inner.permitted.load(Ordering::Relaxed),
            rejected: inner.rejected.load(Ordering::Relaxed),
        }
    }

    /// True if waiting for a slot is allowed at all (`max_wait` above zero).
    pub(crate) fn waits(&self) -> bool {
        !self.inner.config.max_wait.is_zero()
    }

    fn take_free(&self) -> Option<BulkheadPermit> {
        let permit = self.inner.semaphore.clone().try_acquire_owned().ok()?;
        self.inner.permitted.fetch_add(1, Ordering::Relaxed);
        Some(BulkheadPermit { _permit: permit })
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

/// A place in the queue of waiters, counted while held.
struct QueuePlace<'a> {
    queued: &'a AtomicUsize,
}

impl<'a> QueuePlace<'a> {
    /// Takes a place, unless `max_queue` callers already wait.
    fn take(inner: &'a Inner) -> Option<Self> {
        let limit = inner.config.max_queue.unwrap_or(usize::MAX);
        inner
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(QueuePlace {
            queued: &inner.queued,
        })
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }
}
