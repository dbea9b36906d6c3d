//! The slots behind a bulkhead: one atomic read-modify-write to take a slot and one to give it
//! back while nobody waits, and a strictly first-come, first-served queue, touched only while
//! somebody waits.
//!
//! Two counters on one cache line: `taken`, the slots ever taken (shifted left by one, with the
//! [`WAITING`] flag in the lowest bit), and `returned`, the slots ever given back. Slots in use are
//! `taken - returned`; slots ever handed out are `taken` itself, so neither needs a counter of its
//! own.
//!
//! - Taking a slot without waiting is one compare-and-swap on `taken`, which fails while
//!   [`WAITING`] is set: nobody jumps the queue.
//! - Giving a slot back is one `fetch_add` on `returned`, then a plain load of `taken`: only if
//!   [`WAITING`] is set does it lock the queue and hand the slot to the first waiter.
//! - [`WAITING`] is set if and only if the queue is not empty; both change under the queue's lock.
//!   While it is set, `taken` changes only under that lock.
//! - A caller joins the queue by setting [`WAITING`] (or finding it set), then reads `returned`
//!   again; one giving a slot back bumps `returned`, then reads `taken`. All four are `SeqCst`, so
//!   at least one of the two sees the other, and a slot freed just as a caller queues is handed
//!   over rather than lost.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// Set in `taken` while the queue is not empty.
const WAITING: u64 = 1;
/// One slot in `taken`.
const ONE: u64 = 2;

/// The slots of one bulkhead and its queue of waiters.
pub(super) struct Slots {
    hot: Hot,
    queue: Mutex<Queue>,
    /// The queue's length, kept for stats without taking the lock.
    queued: AtomicUsize,
}

/// The counters every call touches, on a cache line of their own (two on x86-64, where the
/// prefetcher pulls lines in pairs).
#[repr(align(128))]
struct Hot {
    /// Slots ever taken times [`ONE`], plus [`WAITING`] while anybody waits.
    taken: AtomicU64,
    /// Slots ever given back.
    returned: AtomicU64,
    /// `max_concurrent`.
    max: u64,
}

#[derive(Default)]
struct Queue {
    /// Waiters in arrival order; `id`s increase front to back.
    waiters: VecDeque<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    waker: Option<Waker>,
}

impl Queue {
    fn position(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |w| w.id).ok()
    }
}

impl Slots {
    pub(super) fn new(max: usize) -> Self {
        Slots {
            hot: Hot {
                taken: AtomicU64::new(0),
                returned: AtomicU64::new(0),
                max: u64::try_from(max).unwrap_or(u64::MAX),
            },
            queue: Mutex::new(Queue::default()),
            queued: AtomicUsize::new(0),
        }
    }

    /// Takes a slot if one is free and nobody waits.
    #[inline]
    pub(super) fn try_take(&self) -> bool {
        loop {
            // `returned` first: every slot it counts was taken before, so `taken` read after it
            // is at least as large, and the difference never wraps.
            let returned = self.hot.returned.load(Ordering::Acquire);
            let taken = self.hot.taken.load(Ordering::Relaxed);
            if taken & WAITING != 0 || (taken >> 1).wrapping_sub(returned) >= self.hot.max {
                return false;
            }
            if self
                .hot
                .taken
                .compare_exchange(taken, taken + ONE, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// Gives a slot back: to the first waiter if anybody waits, else to the pool.
    #[inline]
    pub(super) fn give_back(&self) {
        self.hot.returned.fetch_add(1, Ordering::SeqCst);
        if self.hot.taken.load(Ordering::SeqCst) & WAITING != 0 {
            self.hand_over();
        }
    }

    /// Slots held now (including one handed to a waiter that has not looked yet).
    pub(super) fn in_flight(&self) -> usize {
        let returned = self.hot.returned.load(Ordering::Acquire);
        let taken = self.hot.taken.load(Ordering::Acquire) >> 1;
        usize::try_from(taken.wrapping_sub(returned)).unwrap_or(usize::MAX)
    }

    /// Callers waiting now.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Slots handed out since the start.
    pub(super) fn permitted(&self) -> u64 {
        self.hot.taken.load(Ordering::Relaxed) >> 1
    }

    /// Waits for a slot in arrival order, unless `max_queue` callers wait already.
    pub(super) fn wait(&self, max_queue: usize) -> Wait<'_> {
        Wait {
            slots: self,
            max_queue,
            state: WaitState::Start,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held; should anything, the queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True if a slot is free.
    fn has_free(&self) -> bool {
        let returned = self.hot.returned.load(Ordering::SeqCst);
        let taken = self.hot.taken.load(Ordering::SeqCst) >> 1;
        taken.wrapping_sub(returned) < self.hot.max
    }

    /// Hands free slots to waiters, first come first served, waking each outside the lock.
    #[cold]
    #[inline(never)]
    fn hand_over(&self) {
        loop {
            let granted = self.grant_one(&mut self.lock());
            match granted {
                Some(waker) => {
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                None => return,
            }
        }
    }

    /// Under the lock: hands one free slot to the first waiter and returns its waker, or `None`
    /// if nobody waits or no slot is free.
    fn grant_one(&self, queue: &mut Queue) -> Option<Option<Waker>> {
        if queue.waiters.is_empty() || !self.has_free() {
            return None;
        }
        let waiter = queue.waiters.pop_front()?;
        // While `WAITING` is set, nobody else changes `taken`: a plain add is exact. The last
        // waiter's slot clears the flag in the same step ((n * ONE + WAITING) + 1 = (n + 1) * ONE).
        let step = if queue.waiters.is_empty() {
            ONE - WAITING
        } else {
            ONE
        };
        self.hot.taken.fetch_add(step, Ordering::SeqCst);
        self.queued.store(queue.waiters.len(), Ordering::Relaxed);
        Some(waiter.waker)
    }

    /// Takes a free slot if nobody waits, or joins the queue.
    fn join(&self, waker: &Waker, max_queue: usize) -> Joined {
        let mut queue = self.lock();
        loop {
            let returned = self.hot.returned.load(Ordering::SeqCst);
            let taken = self.hot.taken.load(Ordering::SeqCst);
            let free = (taken >> 1).wrapping_sub(returned) < self.hot.max;
            let next = if taken & WAITING == 0 && free {
                taken + ONE
            } else if queue.waiters.len() >= max_queue {
                return Joined::QueueFull;
            } else {
                taken | WAITING
            };
            #[cfg(test)]
            if next & WAITING != 0 {
                tests::before_setting_waiting();
            }
            if next != taken
                && self
                    .hot
                    .taken
                    .compare_exchange(taken, next, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                continue;
            }
            if next & WAITING == 0 {
                return Joined::Taken;
            }
            break;
        }
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiters.push_back(Waiter {
            id,
            waker: Some(waker.clone()),
        });
        self.queued.store(queue.waiters.len(), Ordering::Relaxed);
        drop(queue);
        // A slot given back between the check above and `WAITING` being set was given to the
        // pool: hand it over now (see the module docs).
        if self.has_free() {
            self.hand_over();
        }
        Joined::Queued(id)
    }
}

enum Joined {
    Taken,
    QueueFull,
    Queued(u64),
}

enum WaitState {
    Start,
    Queued(u64),
    Done,
}

/// Waits for a slot: `Ok(())` once one is held (the caller must give it back), `Err(())` at once
/// if the queue is full. Dropped while queued, it leaves the queue; dropped after a slot was
/// handed to it, it gives the slot back.
pub(super) struct Wait<'a> {
    slots: &'a Slots,
    max_queue: usize,
    state: WaitState,
}

impl Future for Wait<'_> {
    type Output = Result<(), ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = match self.state {
            WaitState::Start => match self.slots.join(cx.waker(), self.max_queue) {
                Joined::Taken => {
                    self.state = WaitState::Done;
                    return Poll::Ready(Ok(()));
                }
                Joined::QueueFull => {
                    self.state = WaitState::Done;
                    return Poll::Ready(Err(()));
                }
                Joined::Queued(id) => {
                    self.state = WaitState::Queued(id);
                    id
                }
            },
            WaitState::Queued(id) => id,
            // Polled again after it finished: it has nothing more to give.
            WaitState::Done => return Poll::Pending,
        };
        let mut queue = self.slots.lock();
        match queue.position(id) {
            Some(i) => {
                if let Some(waiter) = queue.waiters.get_mut(i) {
                    match &mut waiter.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        slot => *slot = Some(cx.waker().clone()),
                    }
                }
                Poll::Pending
            }
            None => {
                drop(queue);
                self.state = WaitState::Done;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let WaitState::Queued(id) = self.state else {
            return;
        };
        let mut queue = self.slots.lock();
        match queue.position(id) {
            Some(i) => {
                queue.waiters.remove(i);
                if queue.waiters.is_empty() {
                    self.slots.hot.taken.fetch_sub(WAITING, Ordering::SeqCst);
                }
                self.slots
                    .queued
                    .store(queue.waiters.len(), Ordering::Relaxed);
            }
            None => {
                // Handed a slot it never saw: pass it on.
                drop(queue);
                self.slots.give_back();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        /// Run once by `join` on this thread, just before it sets `WAITING`.
        static BEFORE_SETTING_WAITING: RefCell<Option<Box<dyn FnOnce()>>> = const {
            RefCell::new(None)
        };
    }

    pub(super) fn before_setting_waiting() {
        if let Some(f) = BEFORE_SETTING_WAITING.with(|h| h.borrow_mut().take()) {
            f();
        }
    }

    #[test]
    fn a_slot_given_back_just_before_a_caller_queues_is_handed_to_it() {
        let slots: &'static Slots = Box::leak(Box::new(Slots::new(1)));
        assert!(slots.try_take());
        // The caller found no free slot; the holder gives it back before `WAITING` is set, so it
        // sees nobody waiting and returns the slot to the pool.
        BEFORE_SETTING_WAITING.with(|h| *h.borrow_mut() = Some(Box::new(|| slots.give_back())));
        let mut wait = Box::pin(slots.wait(usize::MAX));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        assert_eq!((slots.in_flight(), slots.queued()), (1, 0));
        drop(wait);
        slots.give_back();
        assert_eq!(slots.in_flight(), 0);
        assert!(slots.try_take());
    }

    #[test]
    fn takes_up_to_max_then_refuses_and_counts_exactly() {
        let slots = Slots::new(2);
        assert!(slots.try_take());
        assert!(slots.try_take());
        assert!(!slots.try_take());
        assert_eq!((slots.in_flight(), slots.permitted()), (2, 2));
        slots.give_back();
        assert_eq!(slots.in_flight(), 1);
        assert!(slots.try_take());
        assert_eq!((slots.in_flight(), slots.permitted()), (2, 3));
        slots.give_back();
        slots.give_back();
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn a_waiter_blocks_the_fast_path_and_gets_the_next_slot() {
        let slots = Slots::new(1);
        assert!(slots.try_take());
        let mut wait = Box::pin(slots.wait(usize::MAX));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(slots.queued(), 1);
        slots.give_back();
        // Handed over: still one in flight, and the fast path stays shut until the waiter looks.
        assert_eq!((slots.in_flight(), slots.queued()), (1, 0));
        assert!(!slots.try_take());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
        drop(wait);
        slots.give_back();
        assert_eq!(slots.in_flight(), 0);
        assert!(slots.try_take());
    }

    #[test]
    fn the_waiting_flag_clears_with_the_last_waiter() {
        let slots = Slots::new(1);
        assert!(slots.try_take());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(slots.wait(usize::MAX));
        let mut b = Box::pin(slots.wait(usize::MAX));
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        drop(b);
        assert_eq!(slots.hot.taken.load(Ordering::SeqCst) & WAITING, WAITING);
        drop(a);
        assert_eq!(slots.hot.taken.load(Ordering::SeqCst) & WAITING, 0);
        slots.give_back();
        assert!(slots.try_take());
    }
}
