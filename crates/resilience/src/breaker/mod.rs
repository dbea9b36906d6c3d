//! Circuit breaker: stop calling a dependency that is failing, and try again later.
//!
//! States: **closed** (calls pass, outcomes are recorded in a sliding window), **open** (calls are
//! rejected at once for `wait_in_open`, growing by `wait_in_open_multiplier` each time a trial fails,
//! up to `max_wait_in_open`), **half-open** (exactly `half_open_calls` trial calls pass, even under
//! concurrency; their outcomes close or reopen the breaker), and the operator states **forced open**
//! and **disabled**.
//!
//! The window is count-based (the last N calls), time-based (the calls of the last N seconds) or
//! consecutive (N failures in a row). A breaker opens when, with at least `minimum_calls` in the
//! window, the failure rate or the slow-call rate reaches its threshold. A [`Classifier`] decides
//! which results count as failures: an HTTP 503 is one though it is `Ok`.
//!
//! ## Cost
//! A closed breaker's call is one atomic load before the call and, after it, one `fetch_add` and one
//! load (a count window whose slot already holds the same outcome writes nothing). No lock, no
//! allocation, no clock read (unless slow calls are judged or the window is time-based). An open
//! breaker rejects with one load and one `fetch_add`: a timer task flips it to half-open when the wait
//! ends, so the rejection path never reads the clock.
//!
//! ```
//! use rampart_resilience::breaker::BreakerConfig;
//! use rampart_resilience::Events;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let breaker = BreakerConfig::consecutive(5, Duration::from_secs(30))
//!     .build("payments", &Events::new())
//!     .unwrap();
//! for _ in 0..5 {
//!     let _ = breaker.call(|| async { Err::<(), _>("connection refused") }).await;
//! }
//! let err = breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap_err();
//! assert!(err.is_breaker_open());
//! # }
//! ```

mod config;
mod layer;
mod state;
mod window;

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{BreakerConfig, WindowKind};
pub use layer::{BreakerLayer, BreakerService, ResponseFuture};
pub use state::BreakerState;

use crate::{Classifier, ErrIsFailure, Error, Event, Events, Outcome, PolicyKind};
use state::{Trials, Word};
use window::{CountWindow, Counts, Padded, TimeWindow};

/// A circuit breaker. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

// The count window is large because its cursor is padded to a cache line of its own; a breaker
// holds one window for life, and boxing it would add an indirection to every call.
#[allow(clippy::large_enum_variant)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive,
}

struct Inner {
    name: Name,
    /// Read by every call: kept on a cache line of its own so that counters written by other
    /// cores do not evict it (false sharing).
    word: Padded<AtomicU64>,
    trials: AtomicU64,
    window: Window,
    /// Lifetime calls recorded outside the count window (time and consecutive windows, trials).
    recorded: AtomicU64,
    failed: AtomicU64,
    slow: AtomicU64,
    ignored: AtomicU64,
    rejected: Padded<AtomicU64>,
    opened: AtomicU64,
    consecutive: AtomicU32,
    opened_in_a_row: AtomicU32,
    open_until_nanos: AtomicU64,
    base: Instant,
    config: BreakerConfig,
    events: Events,
    timer: Mutex<Option<JoinHandle<()>>>,
    me: Weak<Inner>,
}

/// A snapshot of a breaker's state and counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BreakerStats {
    /// The breaker's name.
    pub name: String,
    /// The state now.
    pub state: BreakerState,
    /// Failure rate of the window, once it holds `minimum_calls` (none before, and none for a
    /// consecutive breaker).
    pub failure_rate: Option<f64>,
    /// Slow-call rate of the window, likewise.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window now.
    pub window_calls: u32,
    /// Failures in a row now (consecutive breakers).
    pub consecutive_failures: u32,
    /// Calls that succeeded, since the breaker was built.
    pub successful: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Calls slower than `slow_call_duration` (successful or not).
    pub slow: u64,
    /// Calls whose result the classifier ignored.
    pub ignored: u64,
    /// Calls rejected without running.
    pub rejected: u64,
    /// How often the breaker opened.
    pub opened: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ticket {
    generation: u32,
    trial: bool,
    disabled: bool,
    start: Option<Instant>,
}

/// Leave to make one call through a breaker; record its outcome with [`Permit::record`].
///
/// Dropped without a verdict (the call was cancelled), it counts nothing and, in half-open, gives
/// its trial slot back so another call can take it.
#[must_use = "a permit records nothing unless its outcome is recorded"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Option<Ticket>,
}

/// Like [`Permit`], but owning a handle to the breaker, for futures that outlive a borrow.
#[must_use = "a permit records nothing unless its outcome is recorded"]
pub struct OwnedPermit {
    breaker: CircuitBreaker,
    ticket: Option<Ticket>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    pub(crate) fn from_valid_config(name: &str, config: BreakerConfig, events: Events) -> Self {
        let base = Instant::now();
        let window = match config.window {
            WindowKind::Count => Window::Count(CountWindow::new(config.window_size)),
            WindowKind::Time => Window::Time(TimeWindow::new(config.window_duration, base)),
            WindowKind::Consecutive => Window::Consecutive,
        };
        let inner = Arc::new_cyclic(|me| Inner {
            name: name.into(),
            word: Padded(AtomicU64::new(
                Word::new(BreakerState::Closed, 0, 0, false).0,
            )),
            trials: AtomicU64::new(Trials::empty(0).0),
            window,
            recorded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            rejected: Padded(AtomicU64::new(0)),
            opened: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            opened_in_a_row: AtomicU32::new(0),
            open_until_nanos: AtomicU64::new(0),
            base,
            config,
            events,
            timer: Mutex::new(None),
            me: me.clone(),
        });
        CircuitBreaker { inner }
    }

    /// A breaker with the default configuration (count window of 100, 50 % failure rate, 30 s open).
    pub fn with_defaults(name: &str) -> Self {
        Self::from_valid_config(name, BreakerConfig::default(), Events::new())
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// The events it emits to; subscribe here.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        Word(self.inner.word.load(Ordering::Acquire)).state()
    }

    /// Asks leave to make one call. `None` means the breaker rejects it (counted as rejected).
    #[inline]
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let ticket = self.inner.try_acquire()?;
        Some(Permit {
            inner: &self.inner,
            ticket: Some(ticket),
        })
    }

    /// True if the breaker would reject a call now because it is open or forced open (counted as a
    /// rejection). Cheap: one load. For a caller that must wait elsewhere (a queue, a rate
    /// limiter) before it takes a permit, so an open breaker turns it away before it waits.
    #[inline]
    pub fn rejects_now(&self) -> bool {
        let w = Word(self.inner.word.load(Ordering::Acquire));
        if w.rejects_without_clock() {
            let _ = self.inner.reject();
            return true;
        }
        false
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a handle to the breaker.
    pub fn try_acquire_owned(&self) -> Option<OwnedPermit> {
        let ticket = self.inner.try_acquire()?;
        Some(OwnedPermit {
            breaker: self.clone(),
            ticket: Some(ticket),
        })
    }

    /// The error a rejected call returns.
    pub fn rejection<E>(&self) -> Error<E> {
        Error::BreakerOpen {
            name: self.inner.name.clone(),
        }
    }

    /// Runs `f` if the breaker permits it; `Err` results count as failures.
    ///
    /// The returned [`Call`] asks leave on its first poll; a rejected call never polls the future
    /// `f` made. Dropped before it finishes, it records nothing and gives a half-open trial slot
    /// back.
    pub fn call<T, E, F, Fut>(&self, f: F) -> Call<'_, Fut, ErrIsFailure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(f, ErrIsFailure)
    }

    /// Runs `f` if the breaker permits it; `classifier` decides how its result counts.
    pub fn call_classified<T, E, F, Fut, C>(&self, f: F, classifier: C) -> Call<'_, Fut, C>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E>,
    {
        Call {
            future: f(),
            inner: &self.inner,
            classifier,
            ticket: None,
            started: false,
        }
    }

    /// Runs `f`, whose error is already an [`Error`] from policies inside this one, without wrapping
    /// it again. Rejections by those inner policies are ignored (they say nothing of the dependency);
    /// their timeouts and inner errors count as failures.
    pub async fn call_flat<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Error<E>>>,
    {
        let Some(permit) = self.try_acquire() else {
            return Err(self.rejection());
        };
        let result = f().await;
        permit.record(match &result {
            Ok(_) => Outcome::Success,
            Err(Error::Inner(_) | Error::Timeout { .. }) => Outcome::Failure,
            Err(_) => Outcome::Ignored,
        });
        result
    }

    /// A snapshot of the state and counters.
    pub fn stats(&self) -> BreakerStats {
        self.inner.stats()
    }

    /// Forces the breaker open: every call is rejected until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.inner.force(BreakerState::ForcedOpen);
    }

    /// Disables the breaker: every call passes and nothing is recorded, until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.inner.force(BreakerState::Disabled);
    }

    /// Closes the breaker with an empty window, from any state.
    pub fn reset(&self) {
        self.inner.force(BreakerState::Closed);
    }
}

impl Inner {
    #[inline]
    fn try_acquire(&self) -> Option<Ticket> {
        let w = Word(self.word.load(Ordering::Acquire));
        if w.is_closed() {
            return Some(self.ticket(w.generation(), false, false));
        }
        if w.rejects_without_clock() {
            return self.reject();
        }
        self.try_acquire_slow(w)
    }

    #[inline]
    fn ticket(&self, generation: u32, trial: bool, disabled: bool) -> Ticket {
        Ticket {
            generation,
            trial,
            disabled,
            start: if self.config.slow_call_duration.is_some() && !disabled {
                Some(Instant::now())
            } else {
                None
            },
        }
    }

    #[cold]
    fn try_acquire_slow(&self, mut w: Word) -> Option<Ticket> {
        loop {
            if w.rejects_without_clock() {
                return self.reject();
            }
            match w.state() {
                BreakerState::Closed => return Some(self.ticket(w.generation(), false, false)),
                BreakerState::Disabled => return Some(self.ticket(w.generation(), false, true)),
                BreakerState::ForcedOpen => return self.reject(),
                BreakerState::Open => {
                    // Only a lazily timed open state gets here: no timer will end it.
                    if self.nanos_now() < self.open_until_nanos.load(Ordering::Acquire) {
                        return self.reject();
                    }
                    self.transition(w, BreakerState::HalfOpen);
                }
                BreakerState::HalfOpen => {
                    let permits = w.permits();
                    if permits == 0 {
                        return self.reject();
                    }
                    match self.word.compare_exchange(
                        w.0,
                        w.with_permits(permits - 1).0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Some(self.ticket(w.generation(), true, false)),
                        Err(actual) => {
                            w = Word(actual);
                            continue;
                        }
                    }
                }
            }
            w = Word(self.word.load(Ordering::Acquire));
        }
    }

    #[inline]
    fn reject(&self) -> Option<Ticket> {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.events.emit_with(|| Event::Rejected {
            name: self.name.clone(),
            policy: PolicyKind::Breaker,
        });
        None
    }

    fn nanos_now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos() as u64
    }

    fn is_slow(&self, ticket: &Ticket) -> bool {
        match (ticket.start, self.config.slow_call_duration) {
            (Some(start), Some(limit)) => start.elapsed() > limit,
            _ => false,
        }
    }

    /// Records an outcome. The common case, a success in a closed count window with slow calls
    /// not judged, is inlined: one load of the state and the window's `fetch_add` and load.
    #[inline(always)]
    fn finish(&self, ticket: Ticket, outcome: Outcome) {
        if let (Outcome::Success, false, false, None, Window::Count(window)) = (
            outcome,
            ticket.trial,
            ticket.disabled,
            ticket.start,
            &self.window,
        ) {
            let w = Word(self.word.load(Ordering::Acquire));
            if w.is_closed() && w.generation() == ticket.generation {
                if window.record(false, false) {
                    self.judge(w, window.counts());
                }
                return;
            }
        }
        self.finish_slow(ticket, outcome);
    }

    #[cold]
    fn finish_slow(&self, ticket: Ticket, outcome: Outcome) {
        if ticket.disabled {
            return;
        }
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                self.release(ticket);
                return;
            }
        };
        let slow = self.is_slow(&ticket);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        if ticket.trial {
            self.recorded.fetch_add(1, Ordering::Relaxed);
            self.record_trial(ticket.generation, failed, slow);
            return;
        }
        let w = Word(self.word.load(Ordering::Acquire));
        let current = w.is_closed() && w.generation() == ticket.generation;
        match &self.window {
            Window::Count(window) => {
                if !current {
                    self.recorded.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if window.record(failed, slow) {
                    self.judge(w, window.counts());
                }
            }
            Window::Time(window) => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
                if !current {
                    return;
                }
                let now = Instant::now();
                window.record(now, failed, slow);
                // A success can complete `minimum_calls`, so every call is judged here; summing
                // at most 120 buckets is small beside the clock read a time window needs anyway.
                self.judge(w, window.counts(now));
            }
            Window::Consecutive => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
                if !current {
                    return;
                }
                if failed || slow {
                    let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                    if n >= self.config.consecutive_failures {
                        self.transition(w, BreakerState::Open);
                    }
                } else if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    fn judge(&self, w: Word, c: Counts) {
        if c.calls >= self.config.minimum_calls && self.rates_trip(c) {
            self.transition(w, BreakerState::Open);
        }
    }

    fn rates_trip(&self, c: Counts) -> bool {
        c.failure_rate() >= self.config.failure_rate
            || (self.config.slow_call_duration.is_some()
                && c.slow_rate() >= self.config.slow_call_rate)
    }

    fn record_trial(&self, generation: u32, failed: bool, slow: bool) {
        let mut current = Trials(self.trials.load(Ordering::Acquire));
        let done = loop {
            if current.generation() != generation {
                return;
            }
            let next = current.add(failed, slow);
            match self.trials.compare_exchange(
                current.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next,
                Err(actual) => current = Trials(actual),
            }
        };
        let w = Word(self.word.load(Ordering::Acquire));
        if w.state() != BreakerState::HalfOpen || w.generation() != generation {
            return;
        }
        let consecutive = matches!(self.window, Window::Consecutive);
        if consecutive && (failed || slow) {
            self.transition(w, BreakerState::Open);
        } else if done.calls() >= self.config.half_open_calls {
            let c = Counts {
                calls: done.calls(),
                failed: done.failed(),
                slow: done.slow(),
            };
            let reopen = if consecutive {
                false
            } else {
                self.rates_trip(c)
            };
            self.transition(
                w,
                if reopen {
                    BreakerState::Open
                } else {
                    BreakerState::Closed
                },
            );
        }
    }

    /// Gives back a half-open trial slot whose call ended without a verdict.
    fn release(&self, ticket: Ticket) {
        if !ticket.trial {
            return;
        }
        let mut w = Word(self.word.load(Ordering::Acquire));
        while w.state() == BreakerState::HalfOpen && w.generation() == ticket.generation {
            match self.word.compare_exchange(
                w.0,
                w.with_permits(w.permits() + 1).0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => w = Word(actual),
            }
        }
    }

    /// Moves from exactly `from` to `to`; does nothing if another thread moved first.
    fn transition(&self, from: Word, to: BreakerState) -> bool {
        let generation = from.generation().wrapping_add(1);
        let mut permits = 0;
        if to == BreakerState::HalfOpen {
            permits = self.config.half_open_calls;
            self.trials
                .store(Trials::empty(generation).0, Ordering::Release);
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        let lazy = to == BreakerState::Open && runtime.is_none();
        let mut wait = Duration::ZERO;
        if to == BreakerState::Open {
            let n = self.opened_in_a_row.load(Ordering::Acquire);
            wait = self.open_wait(n);
            // Publish the end of the wait before the state, for lazily timed readers.
            self.open_until_nanos.store(
                self.nanos_now().saturating_add(wait.as_nanos() as u64),
                Ordering::Release,
            );
        }
        let to_word = Word::new(to, generation, permits, lazy);
        if self
            .word
            .compare_exchange(from.0, to_word.0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        match to {
            BreakerState::Closed => {
                self.reset_window();
                self.opened_in_a_row.store(0, Ordering::Release);
            }
            BreakerState::Open => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                self.opened_in_a_row.fetch_add(1, Ordering::AcqRel);
                if let Some(runtime) = runtime {
                    self.arm_timer(&runtime, generation, wait);
                }
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => self.reset_window(),
            BreakerState::HalfOpen => {}
        }
        let from_state = from.state();
        self.events.emit_with(|| Event::BreakerStateChanged {
            name: self.name.clone(),
            from: from_state,
            to,
        });
        true
    }

    fn open_wait(&self, opened_in_a_row: u32) -> Duration {
        let base = self.config.wait_in_open.as_secs_f64();
        let factor = self
            .config
            .wait_in_open_multiplier
            .powi(opened_in_a_row.min(1000) as i32);
        let secs = (base * factor).min(self.config.max_wait_in_open.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.config.max_wait_in_open)
    }

    fn reset_window(&self) {
        match &self.window {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
            Window::Consecutive => {}
        }
        self.consecutive.store(0, Ordering::Release);
    }

    /// Starts the task that ends this open period. It holds only a weak handle, and the breaker
    /// aborts it when it is dropped or a newer timer replaces it.
    fn arm_timer(&self, runtime: &tokio::runtime::Handle, generation: u32, wait: Duration) {
        let me = self.me.clone();
        let task = runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(inner) = me.upgrade() {
                let w = Word(inner.word.load(Ordering::Acquire));
                if w.state() == BreakerState::Open && w.generation() == generation {
                    inner.transition(w, BreakerState::HalfOpen);
                }
            }
        });
        let mut slot = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }

    fn force(&self, to: BreakerState) {
        loop {
            let w = Word(self.word.load(Ordering::Acquire));
            if self.transition(w, to) {
                if to == BreakerState::Closed {
                    self.opened_in_a_row.store(0, Ordering::Release);
                }
                return;
            }
        }
    }

    fn stats(&self) -> BreakerStats {
        let w = Word(self.word.load(Ordering::Acquire));
        let (counts, judged) = match &self.window {
            Window::Count(window) => (window.counts(), true),
            Window::Time(window) => (window.counts(Instant::now()), true),
            Window::Consecutive => (Counts::default(), false),
        };
        let enough = judged && counts.calls >= self.config.minimum_calls;
        let window_recorded = match &self.window {
            Window::Count(window) => window.recorded(),
            _ => 0,
        };
        let failed = self.failed.load(Ordering::Relaxed);
        let recorded = window_recorded + self.recorded.load(Ordering::Relaxed);
        BreakerStats {
            name: self.name.to_string(),
            state: w.state(),
            failure_rate: enough.then(|| counts.failure_rate()),
            slow_call_rate: (enough && self.config.slow_call_duration.is_some())
                .then(|| counts.slow_rate()),
            window_calls: counts.calls,
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            successful: recorded.saturating_sub(failed),
            failed,
            slow: self.slow.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .timer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`CircuitBreaker::call`]: asks leave on its first poll, then runs the call
    /// and records its outcome. A hand-written future rather than an `async fn`, so that it stays
    /// small and a closed breaker adds only its own bookkeeping to a call.
    #[must_use = "futures do nothing unless polled"]
    pub struct Call<'a, Fut, C> {
        #[pin]
        future: Fut,
        inner: &'a Inner,
        classifier: C,
        ticket: Option<Ticket>,
        started: bool,
    }

    impl<'a, Fut, C> PinnedDrop for Call<'a, Fut, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(ticket) = this.ticket.take() {
                this.inner.release(ticket);
            }
        }
    }
}

impl<T, E, Fut, C> Future for Call<'_, Fut, C>
where
    Fut: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
{
    type Output = Result<T, Error<E>>;

    #[inline]
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if !*this.started {
            *this.started = true;
            match this.inner.try_acquire() {
                Some(ticket) => *this.ticket = Some(ticket),
                None => {
                    return std::task::Poll::Ready(Err(Error::BreakerOpen {
                        name: this.inner.name.clone(),
                    }));
                }
            }
        }
        let result = std::task::ready!(this.future.poll(cx));
        if let Some(ticket) = this.ticket.take() {
            this.inner.finish(ticket, this.classifier.classify(&result));
        }
        std::task::Poll::Ready(result.map_err(Error::Inner))
    }
}

impl<Fut, C> std::fmt::Debug for Call<'_, Fut, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("breaker", &self.inner.name)
            .finish()
    }
}

impl Permit<'_> {
    /// Records how the call went.
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) {
        let ticket = self.ticket.take();
        let inner = self.inner;
        // Nothing is left for `Drop` to give back: skip it.
        std::mem::forget(self);
        if let Some(ticket) = ticket {
            inner.finish(ticket, outcome);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.release(ticket);
        }
    }
}

impl OwnedPermit {
    /// Records how the call went.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.inner.finish(ticket, outcome);
        }
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.inner.release(ticket);
        }
    }
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.inner.name)
            .finish()
    }
}

impl std::fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.breaker.inner.name)
            .finish()
    }
}
