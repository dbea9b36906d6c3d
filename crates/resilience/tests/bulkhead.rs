//! Bulkhead behaviour through the public API, on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rampart_resilience::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
use rampart_resilience::{Error, Event, Events, PolicyKind};
use tokio::sync::{Barrier, oneshot};
use tokio::time::Instant;
use tower::ServiceExt;

const MS: Duration = Duration::from_millis(1);

#[allow(clippy::unwrap_used)] // a test helper
fn bulkhead(config: BulkheadConfig) -> Bulkhead {
    config.build("db", &Events::new()).unwrap()
}

/// Polls a future once, so it starts (and, if it must wait, joins the queue).
fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Option<F::Output> {
    futures_util::FutureExt::now_or_never(fut)
}

#[tokio::test(start_paused = true)]
async fn runs_exactly_max_concurrent_at_once_and_rejects_the_next() {
    let b = bulkhead(BulkheadConfig::new(3));
    let running = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Barrier::new(4));
    let mut releases = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = oneshot::channel::<()>();
        releases.push(tx);
        let (b, running, started) = (b.clone(), running.clone(), started.clone());
        tasks.push(tokio::spawn(async move {
            b.call(|| async move {
                running.fetch_add(1, Ordering::SeqCst);
                started.wait().await;
                let _ = rx.await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .await
        }));
    }
    started.wait().await;
    assert_eq!(running.load(Ordering::SeqCst), 3);
    let s = b.stats();
    assert_eq!(
        (s.in_flight, s.queued, s.max_concurrent, s.permitted),
        (3, 0, 3, 3)
    );

    let ran = AtomicUsize::new(0);
    let err = b
        .call(|| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BulkheadFull { ref name } if &**name == "db"));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(b.try_acquire().is_err());
    assert_eq!(b.stats().rejected, 2);

    for tx in releases {
        tx.send(()).unwrap();
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(b.stats().in_flight, 0);
    b.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_concurrent_among_many_waiting_callers() {
    let b = bulkhead(BulkheadConfig::new(4).max_wait(Duration::from_secs(60)));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            b.call(|| async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(MS * (1 + (i % 3) as u32)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    let s = b.stats();
    assert_eq!(
        (s.permitted, s.rejected, s.in_flight, s.queued),
        (40, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_in_when_a_slot_frees() {
    let b = bulkhead(BulkheadConfig::new(1).max_wait(Duration::from_secs(1)));
    let held = b.try_acquire().unwrap();
    let start = Instant::now();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.call(|| async move { Ok::<_, ()>(start.elapsed()) }).await }
    });
    tokio::time::sleep(300 * MS).await;
    assert_eq!(b.stats().queued, 1);
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 300 * MS);
    assert_eq!(b.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_get_in_in_arrival_order() {
    let b = bulkhead(BulkheadConfig::new(1).max_wait(Duration::from_secs(1)));
    let held = b.try_acquire().unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..5 {
        let (b, order) = (b.clone(), order.clone());
        let mut w = Box::pin(async move {
            let _permit = b.acquire().await.unwrap();
            order.lock().unwrap().push(i);
        });
        assert!(poll_once(w.as_mut()).is_none());
        waiters.push(w);
    }
    assert_eq!(b.stats().queued, 5);
    // A newcomer does not jump the queue even as a slot frees.
    drop(held);
    assert!(b.try_acquire().is_err());
    for w in waiters.into_iter().rev() {
        tokio::spawn(w);
    }
    tokio::time::sleep(MS).await;
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn max_queue_rejects_the_extra_waiter_at_once() {
    let b = bulkhead(
        BulkheadConfig::new(1)
            .max_wait(Duration::from_secs(10))
            .max_queue(2),
    );
    let _held = b.try_acquire().unwrap();
    let mut first = Box::pin(b.acquire());
    let mut second = Box::pin(b.acquire());
    assert!(poll_once(first.as_mut()).is_none());
    assert!(poll_once(second.as_mut()).is_none());
    assert_eq!(b.stats().queued, 2);
    let start = Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(err.name(), "db");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(b.stats().rejected, 1);
    // Leaving the queue makes room again.
    drop(first);
    let mut third = Box::pin(b.acquire());
    assert!(poll_once(third.as_mut()).is_none());
    assert_eq!(b.stats().queued, 2);
}

#[tokio::test(start_paused = true)]
async fn times_out_exactly_at_max_wait() {
    let events = Events::new();
    let (_sub, mut rx) = events.channel();
    let b = BulkheadConfig::new(1)
        .max_wait(250 * MS)
        .build("db", &events)
        .unwrap();
    let _held = b.try_acquire().unwrap();
    let start = Instant::now();
    let err = b.call(|| async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert!(err.is_bulkhead_full());
    assert_eq!(start.elapsed(), 250 * MS);
    let s = b.stats();
    assert_eq!((s.queued, s.rejected, s.in_flight), (0, 1, 1));
    assert_eq!(
        rx.try_recv().unwrap(),
        Event::Rejected {
            name: "db".into(),
            policy: PolicyKind::Bulkhead
        }
    );
}

#[tokio::test(start_paused = true)]
async fn waiter_dropped_while_queued_does_not_leak_a_permit() {
    let b = bulkhead(BulkheadConfig::new(2).max_wait(Duration::from_secs(10)));
    let a = b.try_acquire().unwrap();
    let c = b.try_acquire().unwrap();
    let mut waiter = Box::pin(b.acquire());
    assert!(poll_once(waiter.as_mut()).is_none());
    assert_eq!(b.stats().queued, 1);
    drop(waiter);
    assert_eq!(b.stats().queued, 0);
    drop(a);
    drop(c);
    let s = b.stats();
    assert_eq!((s.in_flight, s.queued), (0, 0));
    // Both slots are really free.
    let _x = b.try_acquire().unwrap();
    let _y = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
}

#[tokio::test(start_paused = true)]
async fn waiter_dropped_after_being_handed_a_slot_gives_it_back() {
    let b = bulkhead(BulkheadConfig::new(1).max_wait(Duration::from_secs(10)));
    let held = b.try_acquire().unwrap();
    let mut waiter = Box::pin(b.acquire());
    assert!(poll_once(waiter.as_mut()).is_none());
    // The slot passes to the queued waiter, which is dropped before it looks.
    drop(held);
    drop(waiter);
    assert_eq!(b.stats().in_flight, 0);
    let _x = b.try_acquire().unwrap();
}

#[tokio::test(start_paused = true)]
async fn call_dropped_midway_releases_its_permit() {
    let b = bulkhead(BulkheadConfig::new(1));
    let (_never_tx, never) = oneshot::channel::<()>();
    let mut call = Box::pin(b.call(|| async move {
        let _ = never.await;
        Ok::<_, ()>(())
    }));
    assert!(poll_once(call.as_mut()).is_none());
    assert_eq!(b.stats().in_flight, 1);
    assert!(b.try_acquire().is_err());
    drop(call);
    assert_eq!(b.stats().in_flight, 0);
    b.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_release_the_slot() {
    let b = bulkhead(BulkheadConfig::new(1));
    let err = b.call(|| async { Err::<(), _>("boom") }).await.unwrap_err();
    assert_eq!(err.into_inner(), Some("boom"));
    assert_eq!(b.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn layer_rejects_when_full_and_releases_on_completion() {
    let b = bulkhead(BulkheadConfig::new(1));
    let svc = tower_layer::Layer::layer(
        &BulkheadLayer::new(b.clone()),
        tower::service_fn(|x: u32| async move { Ok::<_, ()>(x + 1) }),
    );
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(b.stats().in_flight, 0);
    let held = b.try_acquire().unwrap();
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(err.is_bulkhead_full());
    drop(held);
    assert_eq!(svc.oneshot(2).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn layer_waits_for_a_slot_before_calling_the_inner_service() {
    let b = bulkhead(BulkheadConfig::new(1).max_wait(Duration::from_secs(1)));
    let start = Instant::now();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = tower_layer::Layer::layer(
        &BulkheadLayer::new(b.clone()),
        tower::service_fn(move |_: ()| {
            counted.fetch_add(1, Ordering::SeqCst);
            let called_at = start.elapsed();
            async move { Ok::<_, ()>(called_at) }
        }),
    );
    let held = b.try_acquire().unwrap();
    let pending = tokio::spawn(svc.clone().oneshot(()));
    tokio::time::sleep(100 * MS).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "not called before a slot is held"
    );
    drop(held);
    assert_eq!(pending.await.unwrap().unwrap(), 100 * MS);
    assert_eq!(b.stats().in_flight, 0);

    // A response future dropped while waiting, and one dropped midway, leak nothing.
    let held = b.try_acquire().unwrap();
    let mut waiting = Box::pin(svc.clone().oneshot(()));
    assert!(poll_once(waiting.as_mut()).is_none());
    assert_eq!(b.stats().queued, 1);
    drop(waiting);
    drop(held);
    let s = b.stats();
    assert_eq!((s.in_flight, s.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn layer_response_future_dropped_midway_releases_its_slot() {
    let b = bulkhead(BulkheadConfig::new(1));
    let svc = tower_layer::Layer::layer(
        &BulkheadLayer::new(b.clone()),
        tower::service_fn(|_: ()| std::future::pending::<Result<(), ()>>()),
    );
    let mut fut = Box::pin(svc.oneshot(()));
    assert!(poll_once(fut.as_mut()).is_none());
    assert_eq!(b.stats().in_flight, 1);
    drop(fut);
    assert_eq!(b.stats().in_flight, 0);
}

/// A multi-thread runtime: the races below need real parallelism.
#[allow(clippy::unwrap_used)] // a test helper
fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap()
}

/// Runs `calls` calls on each of `tasks` tasks through `b`, each yielding once inside its slot,
/// and returns the most seen running at once and how many calls got in.
#[allow(clippy::unwrap_used)] // a test helper
fn hammer(b: &Bulkhead, tasks: usize, calls: usize) -> (usize, u64) {
    let rt = multi_thread();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let ok = rt.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
            handles.push(tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..calls {
                    let r = b
                        .call(|| async {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, ()>(())
                        })
                        .await;
                    if r.is_ok() {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for h in handles {
            ok += h.await.unwrap();
        }
        ok
    });
    (peak.load(Ordering::SeqCst), ok)
}

#[test]
fn many_threads_waiting_never_exceed_max_concurrent_and_all_get_in() {
    let b = bulkhead(BulkheadConfig::new(3).max_wait(Duration::from_secs(60)));
    let (peak, ok) = hammer(&b, 16, 500);
    assert!(peak <= 3, "peak {peak}");
    assert_eq!(ok, 16 * 500);
    let s = b.stats();
    assert_eq!(
        (s.in_flight, s.queued, s.permitted, s.rejected),
        (0, 0, 16 * 500, 0)
    );
    // Every slot is free again.
    let held: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err());
    drop(held);
}

#[test]
fn many_threads_without_waiting_never_exceed_max_concurrent_and_count_exactly() {
    let b = bulkhead(BulkheadConfig::new(3));
    let (peak, ok) = hammer(&b, 16, 500);
    assert!(peak <= 3, "peak {peak}");
    let s = b.stats();
    assert_eq!((s.in_flight, s.queued), (0, 0));
    assert_eq!(s.permitted, ok);
    assert_eq!(s.permitted + s.rejected, 16 * 500);
}

#[test]
fn a_slot_given_back_as_a_caller_joins_the_queue_is_never_lost() {
    let rt = multi_thread();
    let b = bulkhead(BulkheadConfig::new(1).max_wait(Duration::from_secs(60)));
    rt.block_on(async {
        for _ in 0..2000 {
            let held = b.try_acquire().unwrap();
            let start = Arc::new(Barrier::new(2));
            let releaser = tokio::spawn({
                let start = start.clone();
                async move {
                    start.wait().await;
                    drop(held);
                }
            });
            start.wait().await;
            // Without the hand-over on joining, this would wait the full minute.
            let permit = tokio::time::timeout(Duration::from_secs(10), b.acquire())
                .await
                .expect("the freed slot reached the waiter")
                .unwrap();
            drop(permit);
            releaser.await.unwrap();
        }
    });
    let s = b.stats();
    assert_eq!((s.in_flight, s.queued, s.rejected), (0, 0, 0));
}

#[test]
fn waiters_cancelled_and_timing_out_while_slots_free_leak_nothing() {
    let rt = multi_thread();
    // A short real `max_wait` so timeouts race with hand-overs; only invariants are checked.
    let b = bulkhead(BulkheadConfig::new(3).max_wait(Duration::from_micros(50)));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let ok = rt.block_on(async {
        let mut handles = Vec::new();
        for t in 0..12usize {
            let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
            handles.push(tokio::spawn(async move {
                let mut ok = 0u64;
                for i in 0..400usize {
                    if (t + i) % 3 == 0 {
                        // Poll once, then drop: cancelled while queued, or just after a slot
                        // was handed to it, or holding one.
                        let mut fut = Box::pin(b.acquire());
                        if let Some(Ok(p)) = poll_once(fut.as_mut()) {
                            ok += 1;
                            drop(p);
                        }
                        tokio::task::yield_now().await;
                        drop(fut);
                        continue;
                    }
                    let r = b
                        .call(|| async {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, ()>(())
                        })
                        .await;
                    if r.is_ok() {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for h in handles {
            ok += h.await.unwrap();
        }
        ok
    });
    assert!(peak.load(Ordering::SeqCst) <= 3);
    let s = b.stats();
    assert_eq!((s.in_flight, s.queued), (0, 0));
    // A slot handed to a waiter that was dropped before looking counts as permitted but not ok.
    assert!(s.permitted >= ok, "{s:?} ok {ok}");
    let held: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err());
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn borrowed_permits_hold_a_slot_until_dropped_and_can_become_owned() {
    let b = bulkhead(BulkheadConfig::new(2).max_wait(Duration::from_secs(1)));
    let a = b.try_acquire_ref().unwrap();
    let c = b.acquire_ref().await.unwrap();
    assert_eq!(b.stats().in_flight, 2);
    assert!(b.try_acquire_ref().is_err());
    let owned = a.into_owned();
    assert_eq!(b.stats().in_flight, 2);
    drop(c);
    assert_eq!(b.stats().in_flight, 1);
    drop(owned);
    let s = b.stats();
    assert_eq!((s.in_flight, s.permitted, s.rejected), (0, 2, 1));
}

mod model {
    //! The bulkhead against a model: a FIFO queue, slots handed to its head as they free.

    use super::*;
    use proptest::prelude::*;
    use rampart_resilience::bulkhead::{BulkheadFull, BulkheadPermit};

    #[derive(Debug, Clone)]
    enum Op {
        TryAcquire,
        /// Starts an `acquire` and polls it once.
        Acquire,
        DropPermit(usize),
        PollWaiter(usize),
        DropWaiter(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::TryAcquire),
            Just(Op::Acquire),
            any::<usize>().prop_map(Op::DropPermit),
            any::<usize>().prop_map(Op::PollWaiter),
            any::<usize>().prop_map(Op::DropWaiter),
        ]
    }

    type Waiting = Pin<Box<dyn Future<Output = Result<BulkheadPermit, BulkheadFull>>>>;

    struct Model {
        max: usize,
        max_queue: usize,
        in_flight: usize,
        /// Waiter ids in arrival order, not yet handed a slot.
        queue: std::collections::VecDeque<u64>,
        /// Waiter ids handed a slot they have not seen yet.
        handed: std::collections::HashSet<u64>,
        permitted: u64,
        rejected: u64,
    }

    impl Model {
        fn give_back(&mut self) {
            match self.queue.pop_front() {
                Some(id) => {
                    self.handed.insert(id);
                    self.permitted += 1;
                }
                None => self.in_flight -= 1,
            }
        }
        fn free_now(&self) -> bool {
            self.queue.is_empty() && self.in_flight < self.max
        }
    }

    proptest! {
        #[test]
        fn matches_a_fifo_model(
            max in 1usize..4,
            max_queue in prop::option::of(0usize..4),
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let _guard = rt.enter();
            let mut config = BulkheadConfig::new(max).max_wait(Duration::from_secs(3600));
            config.max_queue = max_queue;
            let b = bulkhead(config);
            let mut m = Model {
                max,
                max_queue: max_queue.unwrap_or(usize::MAX),
                in_flight: 0,
                queue: Default::default(),
                handed: Default::default(),
                permitted: 0,
                rejected: 0,
            };
            let mut permits: Vec<BulkheadPermit> = Vec::new();
            let mut waiters: Vec<(u64, Waiting)> = Vec::new();
            let mut next_id = 0u64;
            for op in ops {
                match op {
                    Op::TryAcquire => {
                        let got = b.try_acquire();
                        prop_assert_eq!(got.is_ok(), m.free_now());
                        match got {
                            Ok(p) => {
                                m.in_flight += 1;
                                m.permitted += 1;
                                permits.push(p);
                            }
                            Err(_) => m.rejected += 1,
                        }
                    }
                    Op::Acquire => {
                        let mut fut: Waiting = Box::pin({
                            let b = b.clone();
                            async move { b.acquire().await }
                        });
                        let polled = poll_once(fut.as_mut());
                        if m.free_now() {
                            prop_assert!(matches!(polled, Some(Ok(_))));
                            m.in_flight += 1;
                            m.permitted += 1;
                            if let Some(Ok(p)) = polled {
                                permits.push(p);
                            }
                        } else if m.queue.len() >= m.max_queue {
                            prop_assert!(matches!(polled, Some(Err(_))));
                            m.rejected += 1;
                        } else {
                            prop_assert!(polled.is_none());
                            m.queue.push_back(next_id);
                            waiters.push((next_id, fut));
                            next_id += 1;
                        }
                    }
                    Op::DropPermit(i) => {
                        if !permits.is_empty() {
                            drop(permits.swap_remove(i % permits.len()));
                            m.give_back();
                        }
                    }
                    Op::PollWaiter(i) => {
                        if !waiters.is_empty() {
                            let i = i % waiters.len();
                            let polled = poll_once(waiters[i].1.as_mut());
                            let id = waiters[i].0;
                            if m.handed.remove(&id) {
                                prop_assert!(matches!(polled, Some(Ok(_))));
                                if let Some(Ok(p)) = polled {
                                    permits.push(p);
                                }
                                drop(waiters.swap_remove(i));
                            } else {
                                prop_assert!(polled.is_none());
                            }
                        }
                    }
                    Op::DropWaiter(i) => {
                        if !waiters.is_empty() {
                            let (id, fut) = waiters.swap_remove(i % waiters.len());
                            drop(fut);
                            if m.handed.remove(&id) {
                                m.give_back();
                            } else {
                                m.queue.retain(|&q| q != id);
                            }
                        }
                    }
                }
                let s = b.stats();
                prop_assert_eq!(s.in_flight, m.in_flight);
                prop_assert_eq!(s.queued, m.queue.len());
                prop_assert_eq!(s.permitted, m.permitted);
                prop_assert_eq!(s.rejected, m.rejected);
                prop_assert!(s.in_flight <= max);
            }
            drop(permits);
            drop(waiters);
            let s = b.stats();
            prop_assert_eq!((s.in_flight, s.queued), (0, 0));
        }
    }
}
