//! The pool itself: fair acquire, return on drop, maintenance, clear, pause, resize, close.
//!
//! ## How acquiring works
//! A FIFO-fair tokio semaphore holds one permit per connection the pool may have out. An acquirer
//! first takes a permit (queued in arrival order; dropping the future while queued gives up its
//! place and leaks nothing), then pops an idle connection or, when none is idle, opens one (at most
//! `max_connecting` at once, through the connect circuit breaker). Connections themselves are never
//! handed to a waiter: they go back to the idle list and the permit goes to the next waiter, so a
//! waiter dropped at any point cannot lose a connection.
//!
//! ## Cost of a checkout
//! An acquire first tries a synchronous fast path: take a free permit without queueing (one
//! compare-and-swap; it fails whenever anyone is queued, so FIFO order holds), pop an idle
//! connection (a `Mutex` around a `VecDeque` held for the pop only) and, if that connection needs
//! neither a reset nor a validation and is still fit, hand it out. That path reads the clock once
//! (reused for the lifetime and validation-bypass checks, the checkout time and a zero wait), builds
//! no timer and registers with no [`Notify`]. Everything else (queueing for a permit, waiting for a
//! connection to come back, connecting, resetting, validating) is the slow path: it is polled once
//! as is, and only if it has to wait is it wrapped in the `acquire_timeout` timer and counted as a
//! waiter. Waiters register with a [`Notify`] before their last look at the pool, and returning a
//! connection wakes them only when someone is registered, so the return path stays lock-free of
//! waiter lists in the common case and no wakeup is lost.
//!
//! Returning a connection reads the clock once (its last-used time) and pushes it back under the
//! same mutex (plus a `HashMap` insert and removal when leak detection is on). The deque and map are
//! allocated with room for `max_size` up front, so a checkout allocates nothing. Counters written on
//! every checkout live on their own cache lines, away from the read-mostly state every checkout
//! reads.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use rampart_resilience::breaker::{BreakerConfig, CircuitBreaker};
use rampart_resilience::{ConfigError, Events, Name, Outcome};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::health::Health;
use crate::stats::{ClosedCounts, WaitHistogram};
use crate::{
    AcquireError, CheckoutFailure, CloseReason, HealthState, Manager, PoolConfig, PoolEvent,
    PoolEvents, PoolStats,
};

/// An async pool of connections made by a [`Manager`]. Cheap to clone; clones share the pool.
///
/// Built with [`PoolConfig::build`]. The maintenance task stops when the last handle is dropped or
/// the pool is [closed](Pool::close).
pub struct Pool<M: Manager> {
    handle: Arc<Handle<M>>,
}

impl<M: Manager> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            handle: self.handle.clone(),
        }
    }
}

impl<M: Manager> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.handle.shared.name)
            .finish()
    }
}

struct Handle<M: Manager> {
    shared: Arc<Shared<M>>,
    maintenance: Mutex<Option<JoinHandle<()>>>,
}

impl<M: Manager> Drop for Handle<M> {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.maintenance).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Conn<C> {
    raw: C,
    id: u64,
    retire_at: Option<Instant>,
    last_used: Instant,
    last_checked: Instant,
    generation: u64,
    dirty: bool,
}

struct Checkout {
    since: Instant,
    location: &'static Location<'static>,
    reported: bool,
}

struct State<C> {
    idle: VecDeque<Conn<C>>,
    out: HashMap<u64, Checkout>,
}

/// Keeps a value on cache lines of its own (128 bytes: two lines, for adjacent-line prefetch), so
/// writes to it do not slow down readers of its neighbours.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Counters every checkout and return writes, kept together (one cache line moves per checkout)
/// and away from the read-mostly fields.
struct Hot {
    in_use: AtomicUsize,
    /// Acquire waits of successful checkouts; its total is the checkout count.
    wait: WaitHistogram,
}

struct Shared<M: Manager> {
    name: Name,
    config: PoolConfig,
    manager: M,
    events: PoolEvents,
    breaker: CircuitBreaker,
    health: Health,
    permits: Padded<Semaphore>,
    connecting: Semaphore,
    state: Padded<Mutex<State<M::Connection>>>,
    hot: Padded<Hot>,
    /// Tasks registered with `notify` (acquirers holding a permit and waiting for a connection,
    /// `close` waiting for returns): a return wakes `notify` only when this is non-zero.
    notify_waiters: Padded<AtomicUsize>,
    /// Woken when a connection goes idle, a slot frees or a connect ends.
    notify: Notify,
    /// Woken on pause and close, so queued acquirers fail fast.
    interrupt: Notify,
    resize_lock: Mutex<()>,
    max_size: AtomicUsize,
    permit_debt: AtomicUsize,
    size: AtomicUsize,
    waiters: AtomicUsize,
    pending: AtomicUsize,
    generation: AtomicU64,
    /// Bit 0: paused. The other bits count the pauses, so a recovery probe resumes the pool only
    /// if no pause came after the probe began (see [`Shared::resume_after_probe`]).
    pause_state: AtomicU64,
    closed: AtomicBool,
    next_id: AtomicU64,
    timeouts: AtomicU64,
    checkout_failures: AtomicU64,
    created: AtomicU64,
    connect_failures: AtomicU64,
    validations: AtomicU64,
    validation_failures: AtomicU64,
    leaks: AtomicU64,
    closed_by: [AtomicU64; CloseReason::ALL.len()],
    interval_slow_waits: AtomicU64,
    interval_validations: AtomicU64,
    interval_validation_failures: AtomicU64,
}

/// A connection borrowed from a [`Pool`]; derefs to the connection and returns it on drop.
pub struct Pooled<M: Manager> {
    // `None` only inside `detach`, `discard` and `drop`, which consume the handle.
    conn: Option<Conn<M::Connection>>,
    shared: Arc<Shared<M>>,
    since: Instant,
    broken: bool,
}

impl<M: Manager> std::fmt::Debug for Pooled<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("pool", &self.shared.name)
            .field("id", &self.id())
            .finish()
    }
}

impl<M: Manager> Pooled<M> {
    fn conn(&self) -> &Conn<M::Connection> {
        match &self.conn {
            Some(c) => c,
            None => unreachable!("a pooled connection is present until it is consumed"),
        }
    }

    /// The connection's id, unique within its pool (as in events).
    pub fn id(&self) -> u64 {
        self.conn().id
    }

    /// How long this connection has been checked out.
    pub fn held(&self) -> Duration {
        self.since.elapsed()
    }

    /// Marks the connection broken: it is closed instead of returned.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Tells the pool about an error this connection returned; if the manager says it is fatal,
    /// the connection is closed on return. Returns whether it was fatal.
    pub fn observe(&mut self, err: &M::Error) -> bool {
        let fatal = self.shared.manager.is_fatal(err);
        self.broken |= fatal;
        fatal
    }

    /// Takes the connection out of the pool for good: the pool forgets it and frees its slot.
    pub fn detach(mut self) -> M::Connection {
        let conn = self.conn.take();
        self.shared.leave(conn.as_ref().map(|c| c.id), self.since);
        match conn {
            Some(c) => {
                self.shared.forget(c.id, CloseReason::Detached);
                c.raw
            }
            None => unreachable!("a pooled connection is present until it is consumed"),
        }
    }

    /// Closes the connection instead of returning it.
    pub fn discard(mut self) {
        if let Some(c) = self.conn.take() {
            self.shared.leave(Some(c.id), self.since);
            self.shared.close(c, CloseReason::Discarded);
        }
    }
}

impl<M: Manager> Deref for Pooled<M> {
    type Target = M::Connection;
    fn deref(&self) -> &M::Connection {
        &self.conn().raw
    }
}

impl<M: Manager> DerefMut for Pooled<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        match &mut self.conn {
            Some(c) => &mut c.raw,
            None => unreachable!("a pooled connection is present until it is consumed"),
        }
    }
}

impl<M: Manager> Drop for Pooled<M> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.checkin(conn, self.since, self.broken);
        }
    }
}

/// Counts something for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Counted(c)
    }

    /// Counts with a sequentially consistent increment: the registration half of "register, then
    /// look; change, then check for registrations" (see [`Shared::wake_returns`]).
    fn seq_cst(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Counted(c)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the fast path got before it had to stop: nothing (no free permit), a permit (no idle
/// connection), or a permit and an idle connection that needs only a reset, or that needs a
/// validation or a close.
enum Start<'a, C> {
    Nothing,
    Permit(SemaphorePermit<'a>),
    Reset(SemaphorePermit<'a>, Conn<C>),
    Conn(SemaphorePermit<'a>, Conn<C>),
}

/// A slot reserved for a connection being opened: gives the slot and the connect permit back (and
/// wakes waiters) unless the connect succeeded.
struct Opening<'a, M: Manager> {
    shared: &'a Shared<M>,
    permit: Option<SemaphorePermit<'a>>,
    committed: bool,
}

impl<M: Manager> Drop for Opening<'_, M> {
    fn drop(&mut self) {
        self.shared.pending.fetch_sub(1, Ordering::Relaxed);
        if !self.committed {
            self.shared.size.fetch_sub(1, Ordering::AcqRel);
        }
        drop(self.permit.take());
        self.shared.notify.notify_waiters();
    }
}

/// A connection being reset or validated: closed as interrupted if the check is dropped midway.
struct Checking<'a, M: Manager> {
    shared: &'a Shared<M>,
    conn: Option<Conn<M::Connection>>,
}

impl<M: Manager> Drop for Checking<'_, M> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.shared.close(c, CloseReason::Interrupted);
        }
    }
}

impl<M: Manager> Pool<M> {
    pub(crate) fn from_valid_config(
        name: &str,
        config: PoolConfig,
        manager: M,
        events: PoolEvents,
    ) -> Result<Self, ConfigError> {
        let base = BreakerConfig::consecutive(config.unhealthy_after, config.breaker_recovery);
        // The pool's recovery wait is fixed: the breaker's growing-wait cap must not be below it
        // (a `breaker_recovery` above the default 5 min cap would otherwise fail to build).
        let breaker = BreakerConfig {
            max_wait_in_open: base.max_wait_in_open.max(config.breaker_recovery),
            ..base
        }
        .build(&format!("{name}.connect"), &Events::new())?;
        let shared = Arc::new(Shared {
            name: Name::new(name),
            health: Health::new(config.unhealthy_after, config.recovery_successes),
            permits: Padded(Semaphore::new(config.max_size)),
            connecting: Semaphore::new(config.max_connecting),
            state: Padded(Mutex::new(State {
                idle: VecDeque::with_capacity(config.max_size),
                out: HashMap::with_capacity(if config.leak_detection_threshold.is_some() {
                    config.max_size
                } else {
                    0
                }),
            })),
            hot: Padded(Hot {
                in_use: AtomicUsize::new(0),
                wait: WaitHistogram::new(),
            }),
            notify_waiters: Padded(AtomicUsize::new(0)),
            notify: Notify::new(),
            interrupt: Notify::new(),
            resize_lock: Mutex::new(()),
            max_size: AtomicUsize::new(config.max_size),
            permit_debt: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            pause_state: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            timeouts: AtomicU64::new(0),
            checkout_failures: AtomicU64::new(0),
            created: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            validation_failures: AtomicU64::new(0),
            leaks: AtomicU64::new(0),
            closed_by: std::array::from_fn(|_| AtomicU64::new(0)),
            interval_slow_waits: AtomicU64::new(0),
            interval_validations: AtomicU64::new(0),
            interval_validation_failures: AtomicU64::new(0),
            breaker,
            config,
            manager,
            events,
        });
        let task = tokio::spawn(maintain(Arc::downgrade(&shared)));
        Ok(Pool {
            handle: Arc::new(Handle {
                shared,
                maintenance: Mutex::new(Some(task)),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared<M>> {
        &self.handle.shared
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.shared().name.as_str()
    }

    /// The configuration it was built from (`max_size` as built; see [`stats`](Self::stats) for
    /// the size in force after [`resize`](Self::resize)).
    pub fn config(&self) -> &PoolConfig {
        &self.shared().config
    }

    /// The manager.
    pub fn manager(&self) -> &M {
        &self.shared().manager
    }

    /// The events it emits to.
    pub fn events(&self) -> &PoolEvents {
        &self.shared().events
    }

    /// Borrows a connection: an idle one, or a new one if none is idle and the pool has room; else
    /// waits in FIFO order, up to `acquire_timeout`.
    ///
    /// Records where it was called (for leak reports), so it is a plain function returning the
    /// future. The future is cancellation-safe: dropped at any point, it leaves no permit taken and
    /// loses no connection (one it was resetting or validating is closed as
    /// [`CloseReason::Interrupted`]).
    #[track_caller]
    pub fn acquire(&self) -> impl Future<Output = Result<Pooled<M>, AcquireError>> + Send + '_ {
        let location = Location::caller();
        self.shared().acquire(location)
    }

    /// A snapshot of sizes, counters and health.
    pub fn stats(&self) -> PoolStats {
        let s = self.shared();
        let idle = lock(&s.state).idle.len();
        let (health, score) = s.health.snapshot();
        let acquire_wait = s.hot.wait.snapshot();
        PoolStats {
            name: s.name.to_string(),
            max_size: s.max_size.load(Ordering::Relaxed),
            size: s.size.load(Ordering::Relaxed),
            idle,
            in_use: s.hot.in_use.load(Ordering::Relaxed),
            waiters: s.waiters.load(Ordering::Relaxed),
            pending_connects: s.pending.load(Ordering::Relaxed),
            generation: s.generation.load(Ordering::Relaxed),
            health,
            score,
            checkouts: acquire_wait.iter().sum(),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            checkout_failures: s.checkout_failures.load(Ordering::Relaxed),
            created: s.created.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            validations: s.validations.load(Ordering::Relaxed),
            validation_failures: s.validation_failures.load(Ordering::Relaxed),
            closed: ClosedCounts::from_array(&s.closed_by),
            leaks: s.leaks.load(Ordering::Relaxed),
            acquire_wait,
            acquire_wait_sum: s.hot.wait.sum(),
        }
    }

    /// Health now, and its score 0–100.
    pub fn health(&self) -> (HealthState, u8) {
        self.shared().health.snapshot()
    }

    /// The generation now (bumped by [`clear`](Self::clear)).
    pub fn generation(&self) -> u64 {
        self.shared().generation.load(Ordering::Acquire)
    }

    /// Starts a new generation (after a failover, say): idle connections of older generations
    /// close now, checked-out ones when they come back.
    pub fn clear(&self) {
        let s = self.shared();
        let generation = s.generation.fetch_add(1, Ordering::AcqRel) + 1;
        s.events.emit_with(|| PoolEvent::PoolCleared {
            pool: s.name.clone(),
            generation,
        });
        let stale: VecDeque<_> = {
            let mut state = lock(&s.state);
            let (keep, stale) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|c| c.generation >= generation);
            state.idle = keep;
            stale
        };
        for c in stale {
            s.close(c, CloseReason::Stale);
        }
    }

    /// Pauses the pool: acquires (queued ones too) fail fast with [`AcquireError::Paused`] until
    /// [`resume`](Self::resume) or until the maintenance task's recovery probe succeeds (each
    /// round while paused, one connect, or the validation of an idle connection when the pool is
    /// full). A connect that began before the pause does not resume it.
    pub fn pause(&self) {
        let s = self.shared();
        let before = s
            .pause_state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(((p >> 1).wrapping_add(1) << 1) | 1)
            })
            .unwrap_or_else(|p| p);
        if before & 1 == 0 {
            s.events.emit_with(|| PoolEvent::PoolPaused {
                pool: s.name.clone(),
            });
        }
        s.interrupt.notify_waiters();
        s.notify.notify_waiters();
    }

    /// Accepts acquires again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared().resume();
    }

    /// True while paused.
    pub fn is_paused(&self) -> bool {
        self.shared().is_paused()
    }

    /// True once [`close`](Self::close) has started.
    pub fn is_closed(&self) -> bool {
        self.shared().closed.load(Ordering::Acquire)
    }

    /// Changes `max_size` at run time (at least 1). Growing lets waiters in at once; shrinking
    /// closes idle connections beyond the new size now and in-use ones as they come back.
    pub fn resize(&self, max_size: usize) {
        let s = self.shared();
        let new = max_size.clamp(1, Semaphore::MAX_PERMITS);
        let _serial = lock(&s.resize_lock);
        let old = s.max_size.swap(new, Ordering::AcqRel);
        if new > old {
            let mut grow = new - old;
            let mut debt = s.permit_debt.load(Ordering::Acquire);
            while debt > 0 && grow > 0 {
                let pay = debt.min(grow);
                match s.permit_debt.compare_exchange(
                    debt,
                    debt - pay,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        grow -= pay;
                        break;
                    }
                    Err(d) => debt = d,
                }
            }
            s.permits.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let forgotten = s.permits.forget_permits(shrink);
            s.permit_debt
                .fetch_add(shrink - forgotten, Ordering::AcqRel);
            let extra: Vec<_> = {
                let mut state = lock(&s.state);
                let over = s.size.load(Ordering::Acquire).saturating_sub(new);
                let n = over.min(state.idle.len());
                let at = state.idle.len() - n;
                state.idle.drain(at..).collect()
            };
            for c in extra {
                s.close(c, CloseReason::Resized);
            }
        }
        s.notify.notify_waiters();
    }

    /// Closes the pool gracefully: refuses new acquires at once (queued ones fail with
    /// [`AcquireError::Closed`]), closes idle connections, waits up to `grace` for checked-out
    /// ones to come back (each is closed on return), then stops the maintenance task. Returns how
    /// many were still checked out at the deadline; they close whenever they are returned.
    pub async fn close(&self, grace: Duration) -> usize {
        let s = self.shared();
        if !s.closed.swap(true, Ordering::AcqRel) {
            s.permits.close();
            s.events.emit_with(|| PoolEvent::PoolClosed {
                pool: s.name.clone(),
            });
        }
        s.interrupt.notify_waiters();
        s.notify.notify_waiters();
        let idle: Vec<_> = lock(&s.state).idle.drain(..).collect();
        for c in idle {
            s.close(c, CloseReason::PoolClosed);
        }
        let deadline = Instant::now().checked_add(grace);
        loop {
            let returned = s.notify.notified();
            let mut returned = pin!(returned);
            returned.as_mut().enable();
            let _registered = Counted::seq_cst(&s.notify_waiters);
            if s.hot.in_use.load(Ordering::SeqCst) == 0 {
                break;
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, returned).await.is_err() {
                        break;
                    }
                }
                None => returned.await,
            }
        }
        if let Some(task) = lock(&self.handle.maintenance).take() {
            task.abort();
        }
        s.hot.in_use.load(Ordering::Acquire)
    }
}

impl<M: Manager> Shared<M> {
    fn emit(&self, make: impl FnOnce(Name) -> PoolEvent) {
        self.events.emit_with(|| make(self.name.clone()));
    }

    fn is_paused(&self) -> bool {
        self.pause_state.load(Ordering::Acquire) & 1 == 1
    }

    fn resume(&self) {
        if self.pause_state.fetch_and(!1, Ordering::AcqRel) & 1 == 1 {
            self.emit(|pool| PoolEvent::PoolReady { pool });
        }
    }

    /// Resumes the pool after a successful recovery probe that began when the pause state was
    /// `seen`, unless the pool was resumed or paused again since.
    fn resume_after_probe(&self, seen: u64) {
        if self
            .pause_state
            .compare_exchange(seen, seen & !1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.emit(|pool| PoolEvent::PoolReady { pool });
        }
    }

    fn fail(&self, reason: CheckoutFailure) {
        self.checkout_failures.fetch_add(1, Ordering::Relaxed);
        self.emit(|pool| PoolEvent::CheckoutFailed { pool, reason });
    }

    fn release_permit(&self) {
        let mut debt = self.permit_debt.load(Ordering::Acquire);
        loop {
            if debt == 0 {
                self.permits.add_permits(1);
                return;
            }
            match self.permit_debt.compare_exchange(
                debt,
                debt - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(d) => debt = d,
            }
        }
    }

    async fn acquire(
        self: &Arc<Self>,
        location: &'static Location<'static>,
    ) -> Result<Pooled<M>, AcquireError> {
        if self.closed.load(Ordering::Acquire) {
            self.fail(CheckoutFailure::PoolClosed);
            return Err(AcquireError::Closed {
                pool: self.name.clone(),
            });
        }
        if self.is_paused() {
            self.fail(CheckoutFailure::Paused);
            return Err(AcquireError::Paused {
                pool: self.name.clone(),
            });
        }
        // The only clock read of a checkout that does not wait.
        let start = Instant::now();
        let mut first = match self.try_checkout(start) {
            Ok(conn) => return Ok(self.checked_out(conn, start, Duration::ZERO, location)),
            Err(first) => first,
        };
        if let Start::Reset(permit, conn) = first {
            // A fit connection that only needs its reset: with a reset that completes at once
            // (the default), no timer, no registration, no further clock read.
            let (result, waited, since) = self.timed(start, pin!(self.reset(conn))).await;
            match result {
                Ok(Some(conn)) => {
                    permit.forget();
                    return Ok(self.checked_out(conn, since, waited, location));
                }
                Ok(None) => first = Start::Permit(permit),
                Err(_) => return Err(self.timed_out(waited)),
            }
        }
        let (result, waited, since) = self.timed(start, pin!(self.checkout(start, first))).await;
        match result {
            Ok(Ok(conn)) => Ok(self.checked_out(conn, since, waited, location)),
            Ok(Err(e)) => {
                self.fail(match &e {
                    AcquireError::Closed { .. } => CheckoutFailure::PoolClosed,
                    AcquireError::Paused { .. } => CheckoutFailure::Paused,
                    _ => CheckoutFailure::ConnectionError,
                });
                Err(e)
            }
            Err(_) => Err(self.timed_out(waited)),
        }
    }

    /// Runs a step of an acquire that began at `start`: polled once as is, and only if it has to
    /// wait, counted as a waiter and bounded by what is left of `acquire_timeout`. Returns the
    /// outcome, the time waited (zero if it did not wait) and the time it ended (`start` if it did
    /// not wait).
    async fn timed<F: Future>(
        &self,
        start: Instant,
        mut step: std::pin::Pin<&mut F>,
    ) -> (
        Result<F::Output, tokio::time::error::Elapsed>,
        Duration,
        Instant,
    ) {
        let first = std::future::poll_fn(|cx| Poll::Ready(step.as_mut().poll(cx))).await;
        if let Poll::Ready(output) = first {
            return (Ok(output), Duration::ZERO, start);
        }
        let waiting = Counted::new(&self.waiters);
        let result = match start.checked_add(self.config.acquire_timeout) {
            Some(deadline) => tokio::time::timeout_at(deadline, step).await,
            None => Ok(step.await),
        };
        drop(waiting);
        let now = Instant::now();
        let waited = now.duration_since(start);
        if waited > self.config.degraded_wait {
            self.interval_slow_waits.fetch_add(1, Ordering::Relaxed);
        }
        (result, waited, now)
    }

    fn timed_out(&self, waited: Duration) -> AcquireError {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.fail(CheckoutFailure::Timeout);
        AcquireError::Timeout {
            pool: self.name.clone(),
            waited,
        }
    }

    /// Records a successful checkout made at `now` after waiting `waited`.
    fn checked_out(
        self: &Arc<Self>,
        conn: Conn<M::Connection>,
        now: Instant,
        waited: Duration,
        location: &'static Location<'static>,
    ) -> Pooled<M> {
        if self.config.leak_detection_threshold.is_some() {
            lock(&self.state).out.insert(
                conn.id,
                Checkout {
                    since: now,
                    location,
                    reported: false,
                },
            );
        }
        self.hot.in_use.fetch_add(1, Ordering::Relaxed);
        self.hot.wait.record(waited);
        let id = conn.id;
        self.emit(|pool| PoolEvent::ConnectionCheckedOut { pool, id, waited });
        Pooled {
            conn: Some(conn),
            shared: self.clone(),
            since: now,
            broken: false,
        }
    }

    /// The synchronous fast path: a free permit (never ahead of a queued waiter) and an idle
    /// connection that is fit and needs neither reset nor validation. On success the permit is
    /// forgotten (the connection carries it); otherwise returns what it got for the slow path.
    fn try_checkout(&self, now: Instant) -> Result<Conn<M::Connection>, Start<'_, M::Connection>> {
        let Ok(permit) = self.permits.try_acquire() else {
            return Err(Start::Nothing);
        };
        let Some(conn) = lock(&self.state).idle.pop_front() else {
            return Err(Start::Permit(permit));
        };
        if now.duration_since(conn.last_used) >= self.config.validation_bypass
            || self.unfit(&conn, now).is_some()
        {
            return Err(Start::Conn(permit, conn));
        }
        if M::RESETS && conn.dirty {
            return Err(Start::Reset(permit, conn));
        }
        permit.forget();
        Ok(conn)
    }

    fn rejected(&self) -> Option<AcquireError> {
        if self.closed.load(Ordering::Acquire) {
            return Some(AcquireError::Closed {
                pool: self.name.clone(),
            });
        }
        if self.is_paused() {
            return Some(AcquireError::Paused {
                pool: self.name.clone(),
            });
        }
        None
    }

    /// The slow path, from where [`try_checkout`](Self::try_checkout) stopped: takes a permit
    /// (FIFO), then an idle or new connection. On success the permit is forgotten: the returned
    /// connection carries it, and gives it back when checked in.
    async fn checkout(
        &self,
        start: Instant,
        first: Start<'_, M::Connection>,
    ) -> Result<Conn<M::Connection>, AcquireError> {
        let mut now = start;
        let permit = match first {
            Start::Conn(permit, conn) | Start::Reset(permit, conn) => {
                if let Some(conn) = self.prepare(conn, now).await {
                    permit.forget();
                    return Ok(conn);
                }
                now = Instant::now();
                permit
            }
            Start::Permit(permit) => permit,
            Start::Nothing => {
                let permit = self.queue().await?;
                now = Instant::now();
                permit
            }
        };
        loop {
            if let Some(e) = self.rejected() {
                return Err(e);
            }
            let idle = lock(&self.state).idle.pop_front();
            if let Some(conn) = idle {
                if let Some(conn) = self.prepare(conn, now).await {
                    permit.forget();
                    return Ok(conn);
                }
                now = Instant::now();
                continue;
            }
            if let Some(opening) = self.reserve() {
                let conn = self.connect(opening).await?;
                permit.forget();
                return Ok(conn);
            }
            // Register, then look once more: a change after the look wakes us (see
            // `wake_returns`), one before it is seen.
            let changed = self.notify.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            let registered = Counted::seq_cst(&self.notify_waiters);
            let again = self.rejected().is_some()
                || !lock(&self.state).idle.is_empty()
                || self.can_reserve();
            if !again {
                changed.await;
                now = Instant::now();
            }
            drop(registered);
        }
    }

    /// Queues for a permit in FIFO order, failing fast on pause and close.
    async fn queue(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        loop {
            let interrupted = self.interrupt.notified();
            let mut interrupted = pin!(interrupted);
            interrupted.as_mut().enable();
            if let Some(e) = self.rejected() {
                return Err(e);
            }
            tokio::select! {
                biased;
                permit = self.permits.acquire() => match permit {
                    Ok(p) => return Ok(p),
                    Err(_) => return Err(AcquireError::Closed { pool: self.name.clone() }),
                },
                () = &mut interrupted => continue,
            }
        }
    }

    /// Whether [`reserve`](Self::reserve) would find a slot and a connect permit now.
    fn can_reserve(&self) -> bool {
        self.connecting.available_permits() > 0
            && self.size.load(Ordering::SeqCst) < self.max_size.load(Ordering::Acquire)
    }

    /// Reserves a slot and a connect permit, if both are free.
    fn reserve(&self) -> Option<Opening<'_, M>> {
        let permit = self.connecting.try_acquire().ok()?;
        let max = self.max_size.load(Ordering::Acquire);
        self.size
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s < max).then_some(s + 1)
            })
            .ok()?;
        self.pending.fetch_add(1, Ordering::Relaxed);
        Some(Opening {
            shared: self,
            permit: Some(permit),
            committed: false,
        })
    }

    async fn connect(
        &self,
        mut opening: Opening<'_, M>,
    ) -> Result<Conn<M::Connection>, AcquireError> {
        let Some(trial) = self.breaker.try_acquire() else {
            return Err(AcquireError::Unavailable {
                pool: self.name.clone(),
            });
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.emit(|pool| PoolEvent::ConnectionCreated { pool, id });
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.config.connect_timeout, self.manager.connect()).await;
        let error = match result {
            Ok(Ok(raw)) => {
                trial.record(Outcome::Success);
                opening.committed = true;
                drop(opening);
                self.created.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let took = now - started;
                self.emit(|pool| PoolEvent::ConnectionReady { pool, id, took });
                self.health_changed(self.health.on_connect(true));
                let lifetime = self.config.max_lifetime;
                // A lifetime too long for the clock never ends.
                let retire_at = if lifetime.is_zero() {
                    None
                } else {
                    let jitter = lifetime.mul_f64(fastrand::f64() * self.config.lifetime_jitter);
                    now.checked_add(lifetime.saturating_sub(jitter))
                };
                return Ok(Conn {
                    raw,
                    id,
                    retire_at,
                    last_used: now,
                    last_checked: now,
                    generation: self.generation.load(Ordering::Acquire),
                    dirty: false,
                });
            }
            Ok(Err(e)) => AcquireError::Connect {
                pool: self.name.clone(),
                source: Box::new(e),
            },
            Err(_) => AcquireError::ConnectTimeout {
                pool: self.name.clone(),
                after: self.config.connect_timeout,
            },
        };
        trial.record(Outcome::Failure);
        drop(opening);
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.closed_by[CloseReason::Error.index()].fetch_add(1, Ordering::Relaxed);
        self.emit(|pool| PoolEvent::ConnectionClosed {
            pool,
            id,
            reason: CloseReason::Error,
        });
        self.health_changed(self.health.on_connect(false));
        Err(error)
    }

    fn health_changed(&self, change: Option<crate::health::Change>) {
        if let Some((from, to, score)) = change {
            self.emit(|pool| PoolEvent::HealthChanged {
                pool,
                from,
                to,
                score,
            });
        }
    }

    /// Why a connection must not be handed out or kept, if it must not.
    fn unfit(&self, conn: &Conn<M::Connection>, now: Instant) -> Option<CloseReason> {
        if self.closed.load(Ordering::Acquire) {
            Some(CloseReason::PoolClosed)
        } else if conn.generation < self.generation.load(Ordering::Acquire) {
            Some(CloseReason::Stale)
        } else if conn.retire_at.is_some_and(|at| at <= now) {
            Some(CloseReason::Lifetime)
        } else {
            None
        }
    }

    /// Resets a returned connection and validates one unused for longer than the bypass, as of
    /// `now`.
    async fn prepare(
        &self,
        conn: Conn<M::Connection>,
        now: Instant,
    ) -> Option<Conn<M::Connection>> {
        if let Some(reason) = self.unfit(&conn, now) {
            self.close(conn, reason);
            return None;
        }
        let needs_check = now.duration_since(conn.last_used) >= self.config.validation_bypass;
        let needs_reset = M::RESETS && conn.dirty;
        if !needs_reset && !needs_check {
            return Some(conn);
        }
        let conn = if needs_reset {
            self.reset(conn).await?
        } else {
            conn
        };
        if !needs_check {
            return Some(conn);
        }
        let mut checking = Checking {
            shared: self,
            conn: Some(conn),
        };
        let c = checking.conn.as_mut()?;
        if !self.validate(&mut c.raw).await {
            let c = checking.conn.take()?;
            self.close(c, CloseReason::Invalid);
            return None;
        }
        c.last_checked = Instant::now();
        checking.conn.take()
    }

    /// Resets a returned connection; closes it if the reset fails fatally (as an error), takes
    /// longer than `validation_timeout` (as invalid, counted as a failed validation) or is dropped
    /// midway (as interrupted).
    async fn reset(&self, conn: Conn<M::Connection>) -> Option<Conn<M::Connection>> {
        let mut checking = Checking {
            shared: self,
            conn: Some(conn),
        };
        let c = checking.conn.as_mut()?;
        let reset = self.manager.reset(&mut c.raw);
        match tokio::time::timeout(self.config.validation_timeout, reset).await {
            Ok(Err(e)) if self.manager.is_fatal(&e) => {
                let c = checking.conn.take()?;
                self.close(c, CloseReason::Error);
                return None;
            }
            Ok(_) => c.dirty = false,
            Err(_) => {
                self.count_validation(false);
                let c = checking.conn.take()?;
                self.close(c, CloseReason::Invalid);
                return None;
            }
        }
        checking.conn.take()
    }

    /// Validates a connection within `validation_timeout`: false if `is_valid` failed or took
    /// longer.
    async fn validate(&self, raw: &mut M::Connection) -> bool {
        let check = self.manager.is_valid(raw);
        let ok = matches!(
            tokio::time::timeout(self.config.validation_timeout, check).await,
            Ok(Ok(()))
        );
        self.count_validation(ok);
        ok
    }

    fn count_validation(&self, ok: bool) {
        self.validations.fetch_add(1, Ordering::Relaxed);
        self.interval_validations.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.validation_failures.fetch_add(1, Ordering::Relaxed);
            self.interval_validation_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes a connection the pool holds (not checked out).
    fn close(&self, conn: Conn<M::Connection>, reason: CloseReason) {
        let id = conn.id;
        drop(conn);
        self.forget(id, reason);
    }

    /// Frees the slot of a connection that left the pool.
    fn forget(&self, id: u64, reason: CloseReason) {
        self.size.fetch_sub(1, Ordering::AcqRel);
        self.closed_by[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.emit(|pool| PoolEvent::ConnectionClosed { pool, id, reason });
        self.notify.notify_waiters();
    }

    /// Ends a checkout: in-use count, permit, leak record.
    fn leave(&self, id: Option<u64>, since: Instant) {
        self.hot.in_use.fetch_sub(1, Ordering::SeqCst);
        if let Some(id) = id {
            self.end_leak(id, since);
        }
        self.release_permit();
        self.notify.notify_waiters();
    }

    fn end_leak(&self, id: u64, since: Instant) {
        if self.config.leak_detection_threshold.is_none() {
            return;
        }
        let record = lock(&self.state).out.remove(&id);
        if let Some(record) = record.filter(|r| r.reported) {
            let held = since.elapsed();
            let location = record.location;
            self.emit(|pool| PoolEvent::LeakResolved {
                pool,
                id,
                location,
                held,
            });
        }
    }

    fn checkin(&self, mut conn: Conn<M::Connection>, since: Instant, broken: bool) {
        let now = Instant::now();
        let id = conn.id;
        self.emit(|pool| PoolEvent::ConnectionCheckedIn { pool, id });
        self.end_leak(id, since);
        let reason = if broken {
            Some(CloseReason::Error)
        } else if self.size.load(Ordering::Acquire) > self.max_size.load(Ordering::Acquire) {
            Some(CloseReason::Resized)
        } else {
            self.unfit(&conn, now)
        };
        match reason {
            Some(reason) => self.close(conn, reason),
            None => {
                conn.last_used = now;
                conn.dirty = M::RESETS;
                lock(&self.state).idle.push_front(conn);
            }
        }
        self.hot.in_use.fetch_sub(1, Ordering::SeqCst);
        self.release_permit();
        self.wake_returns();
    }

    /// Wakes the tasks waiting on `notify` for a returned connection or a drop in `in_use`, if any
    /// is registered. Call after the change (an idle push under the state lock, or a `SeqCst`
    /// decrement of `in_use`). A waiter enables its `Notified`, then registers (`SeqCst`), then
    /// looks (under the lock, or `SeqCst`): either its look sees the change, or this load sees its
    /// registration and wakes it; no wakeup is lost, and with nobody registered this is one load.
    fn wake_returns(&self) {
        if self.notify_waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// The recovery probe of a paused pool: one connect when there is a free slot; when the pool
    /// is full, the validation of its least recently used idle connection (closed as invalid if
    /// it fails, which frees a slot for the next round's connect). True if the server answered.
    async fn probe(&self) -> bool {
        if let Some(opening) = self.reserve() {
            return match self.connect(opening).await {
                Ok(conn) => {
                    lock(&self.state).idle.push_front(conn);
                    self.notify.notify_waiters();
                    true
                }
                Err(_) => false,
            };
        }
        let Some(conn) = lock(&self.state).idle.pop_back() else {
            // Every connection is in use (or being opened): nothing to probe with this round.
            return false;
        };
        let mut checking = Checking {
            shared: self,
            conn: Some(conn),
        };
        let Some(c) = checking.conn.as_mut() else {
            return false;
        };
        let ok = self.validate(&mut c.raw).await;
        c.last_checked = Instant::now();
        let Some(conn) = checking.conn.take() else {
            return false;
        };
        if ok {
            lock(&self.state).idle.push_back(conn);
            self.notify.notify_waiters();
        } else {
            self.close(conn, CloseReason::Invalid);
        }
        ok
    }

    /// One round of maintenance: leaks, idle timeouts, lifetimes, keepalive, `min_idle`, health.
    async fn maintain_once(&self) {
        let now = Instant::now();
        if let Some(threshold) = self.config.leak_detection_threshold {
            let leaks: Vec<_> = {
                let mut state = lock(&self.state);
                state
                    .out
                    .iter_mut()
                    .filter(|(_, r)| !r.reported && now.duration_since(r.since) >= threshold)
                    .map(|(id, r)| {
                        r.reported = true;
                        (*id, r.location, now.duration_since(r.since))
                    })
                    .collect()
            };
            for (id, location, held) in leaks {
                self.leaks.fetch_add(1, Ordering::Relaxed);
                self.emit(|pool| PoolEvent::LeakDetected {
                    pool,
                    id,
                    location,
                    held,
                });
            }
        }

        let mut to_close = Vec::new();
        let mut to_check = Vec::new();
        {
            let mut state = lock(&self.state);
            let mut size = self.size.load(Ordering::Acquire);
            // Idle connections left after this round's closes: idle timeouts never take the pool
            // below `min_idle` idle ones (in-use connections do not count), or the refill below
            // would reopen what was just closed.
            let mut idle_left = state.idle.len();
            let max = self.max_size.load(Ordering::Acquire);
            let idle_timeout = self.config.idle_timeout;
            let keepalive = self.config.keepalive_interval;
            // Oldest-used connections sit at the back: judge them first.
            let mut kept = VecDeque::with_capacity(state.idle.capacity());
            while let Some(conn) = state.idle.pop_back() {
                let reason = self.unfit(&conn, now).or_else(|| {
                    if size > max {
                        Some(CloseReason::Resized)
                    } else if !idle_timeout.is_zero()
                        && now.duration_since(conn.last_used) >= idle_timeout
                        && idle_left > self.config.min_idle
                    {
                        Some(CloseReason::Idle)
                    } else {
                        None
                    }
                });
                if let Some(reason) = reason {
                    size = size.saturating_sub(1);
                    idle_left -= 1;
                    to_close.push((conn, reason));
                } else if !keepalive.is_zero() && now.duration_since(conn.last_checked) >= keepalive
                {
                    to_check.push(conn);
                } else {
                    kept.push_front(conn);
                }
            }
            state.idle = kept;
        }
        for (conn, reason) in to_close {
            self.close(conn, reason);
        }
        for conn in to_check {
            // Held by a guard, so a maintenance task stopped mid-check closes it.
            let mut checking = Checking {
                shared: self,
                conn: Some(conn),
            };
            let Some(c) = checking.conn.as_mut() else {
                continue;
            };
            let ok = self.validate(&mut c.raw).await;
            c.last_checked = Instant::now();
            let Some(conn) = checking.conn.take() else {
                continue;
            };
            if ok {
                lock(&self.state).idle.push_back(conn);
                self.notify.notify_waiters();
            } else {
                self.close(conn, CloseReason::Invalid);
            }
        }

        // While paused, probe the server once so a live one resumes the pool.
        let seen = self.pause_state.load(Ordering::Acquire);
        if seen & 1 == 1 && !self.closed.load(Ordering::Acquire) && self.probe().await {
            self.resume_after_probe(seen);
        }

        // Keep `min_idle` idle connections (not while paused: a failed probe keeps it paused).
        while !self.closed.load(Ordering::Acquire) && !self.is_paused() {
            let idle = lock(&self.state).idle.len();
            if idle >= self.config.min_idle {
                break;
            }
            let Some(opening) = self.reserve() else { break };
            match self.connect(opening).await {
                Ok(conn) => {
                    lock(&self.state).idle.push_front(conn);
                    self.notify.notify_waiters();
                }
                Err(_) => break,
            }
        }

        let slow = self.interval_slow_waits.swap(0, Ordering::Relaxed);
        let checks = self.interval_validations.swap(0, Ordering::Relaxed);
        let failed = self.interval_validation_failures.swap(0, Ordering::Relaxed);
        let failing = checks > 0
            && failed as f64 / checks as f64 > self.config.degraded_validation_failure_rate;
        self.health_changed(self.health.on_interval(slow > 0 || failing));
    }
}

async fn maintain<M: Manager>(shared: Weak<Shared<M>>) {
    let Some(interval) = shared.upgrade().map(|s| s.config.maintenance_interval) else {
        return;
    };
    // Ticks every `interval`; a round that overruns delays the next by a full interval. An
    // interval too long for the clock never ticks.
    let Some(mut next) = Instant::now().checked_add(interval) else {
        return;
    };
    loop {
        tokio::time::sleep_until(next).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        shared.maintain_once().await;
        let now = Instant::now();
        let Some(after) = next.checked_add(interval) else {
            return;
        };
        next = if after < now {
            match now.checked_add(interval) {
                Some(t) => t,
                None => return,
            }
        } else {
            after
        };
    }
}
