#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Behaviour of the pool through its public API, on paused time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_pool::{CloseReason, HealthState, Manager, Pool, PoolConfig, PoolEvent, PoolEvents};
use tokio::time::{Instant, sleep};

#[derive(Default)]
struct Backend {
    next: AtomicU64,
    connects: AtomicU64,
    live: Arc<AtomicUsize>,
    fail: AtomicBool,
    invalid: Mutex<HashSet<u64>>,
    /// While set, a connect waits for `gate` (after counting itself).
    gated: AtomicBool,
    gate: tokio::sync::Notify,
    /// While set, these never finish (a server frozen with SIGSTOP).
    hang_connect: AtomicBool,
    hang_valid: AtomicBool,
    hang_reset: AtomicBool,
}

struct TestConn {
    id: u64,
    live: Arc<AtomicUsize>,
}

impl Drop for TestConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct TestManager(Arc<Backend>);

impl Manager for TestManager {
    type Connection = TestConn;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<TestConn, std::io::Error> {
        self.0.connects.fetch_add(1, Ordering::SeqCst);
        if self.0.gated.load(Ordering::SeqCst) {
            self.0.gate.notified().await;
        }
        if self.0.hang_connect.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.0.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("connection refused"));
        }
        self.0.live.fetch_add(1, Ordering::SeqCst);
        Ok(TestConn {
            id: self.0.next.fetch_add(1, Ordering::SeqCst),
            live: self.0.live.clone(),
        })
    }
    async fn is_valid(&self, conn: &mut TestConn) -> Result<(), std::io::Error> {
        if self.0.hang_valid.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.0.invalid.lock().unwrap().contains(&conn.id) {
            Err(std::io::Error::other("gone"))
        } else {
            Ok(())
        }
    }
    async fn reset(&self, _conn: &mut TestConn) -> Result<(), std::io::Error> {
        if self.0.hang_reset.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

fn pool_with(config: PoolConfig) -> (Pool<TestManager>, Arc<Backend>, PoolEvents) {
    let manager = TestManager::default();
    let backend = manager.0.clone();
    let events = PoolEvents::new();
    let pool = config.build("db", manager, &events).unwrap();
    (pool, backend, events)
}

fn sized(max_size: usize) -> PoolConfig {
    PoolConfig {
        max_size,
        ..PoolConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let (pool, _, _) = pool_with(sized(1));
    let held = pool.acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = pool.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let c = pool.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            sleep(Duration::from_millis(1)).await;
            drop(c);
        }));
        // Let task i queue before task i + 1 starts.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(pool.stats().waiters, 8);
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_thousand_tasks_share_sixteen_connections() {
    let (pool, backend, _) = pool_with(sized(16));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let _c = pool.acquire().await.unwrap();
            sleep(Duration::from_millis(5)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.checkouts, 1000);
    assert_eq!(stats.size, 16);
    assert_eq!(stats.idle, 16);
    assert_eq!(stats.in_use, 0);
    assert_eq!(stats.waiters, 0);
    assert_eq!(backend.connects.load(Ordering::SeqCst), 16);
    assert_eq!(stats.acquire_wait.iter().sum::<u64>(), 1000);
}

#[tokio::test(start_paused = true)]
async fn acquire_times_out_exactly_after_acquire_timeout() {
    let (pool, _, _) = pool_with(PoolConfig {
        max_size: 1,
        acquire_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    });
    let _held = pool.acquire().await.unwrap();
    let start = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(err.to_string().contains("db"), "{err}");
    let stats = pool.stats();
    assert_eq!((stats.timeouts, stats.waiters), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn acquires_dropped_at_random_points_leave_the_pool_consistent() {
    let (pool, backend, _) = pool_with(PoolConfig {
        max_size: 4,
        max_connecting: 2,
        ..PoolConfig::default()
    });
    let mut rng = fastrand::Rng::with_seed(7);
    let mut held = Vec::new();
    for _ in 0..10_000 {
        match rng.u8(0..4) {
            0 if !held.is_empty() => {
                let i = rng.usize(0..held.len());
                held.swap_remove(i);
            }
            1 if held.len() < 4 => {
                if let Ok(Ok(c)) =
                    tokio::time::timeout(Duration::from_millis(1), pool.acquire()).await
                {
                    held.push(c);
                }
            }
            _ => {
                // Poll an acquire a random number of times, then drop it.
                let mut fut = Box::pin(pool.acquire());
                for _ in 0..rng.u8(0..3) {
                    if let Some(Ok(c)) = futures_poll(&mut fut).await {
                        held.push(c);
                        break;
                    }
                }
                drop(fut);
                while held.len() > 4 {
                    held.pop();
                }
            }
        }
        let s = pool.stats();
        assert_eq!(s.in_use, held.len());
        assert!(s.size <= 4);
    }
    drop(held);
    let s = pool.stats();
    assert_eq!((s.in_use, s.waiters, s.pending_connects), (0, 0, 0));
    assert_eq!(s.size, s.idle);
    assert_eq!(backend.live.load(Ordering::SeqCst), s.size);
    let all: Vec<_> = futures_all(&pool, 4).await;
    assert_eq!(all.len(), 4);
}

/// Polls once; `Some` if it finished.
async fn futures_poll<F: std::future::Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut *fut).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

async fn futures_all(pool: &Pool<TestManager>, n: usize) -> Vec<rampart_pool::Pooled<TestManager>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.acquire().await.unwrap());
    }
    v
}

#[tokio::test(start_paused = true)]
async fn leak_is_reported_with_the_acquiring_line_then_resolved() {
    let (pool, _, events) = pool_with(PoolConfig {
        leak_detection_threshold: Some(Duration::from_secs(5)),
        ..PoolConfig::default()
    });
    let (_sub, mut rx) = events.channel();
    let line = line!() + 1;
    let conn = pool.acquire().await.unwrap();
    sleep(Duration::from_secs(7)).await;
    let mut leak = None;
    while let Ok(e) = rx.try_recv() {
        if let PoolEvent::LeakDetected { location, held, .. } = e {
            leak = Some((location, held));
        }
    }
    let (location, held) = leak.expect("a leak report");
    assert!(location.file().ends_with("pool.rs"), "{location}");
    assert_eq!(location.line(), line);
    assert!(held >= Duration::from_secs(5) && held <= Duration::from_secs(6));
    drop(conn);
    let mut resolved = false;
    while let Ok(e) = rx.try_recv() {
        if let PoolEvent::LeakResolved { held, .. } = e {
            assert_eq!(held, Duration::from_secs(7));
            resolved = true;
        }
    }
    assert!(resolved);
    assert_eq!(pool.stats().leaks, 1);
}

#[tokio::test(start_paused = true)]
async fn clear_closes_stale_connections_on_return() {
    let (pool, backend, _) = pool_with(sized(4));
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    drop(b);
    pool.clear();
    assert_eq!(pool.stats().closed.stale, 1, "the idle one closes at once");
    drop(a);
    let s = pool.stats();
    assert_eq!((s.closed.stale, s.size, s.generation), (2, 0, 1));
    assert_eq!(backend.live.load(Ordering::SeqCst), 0);
    let c = pool.acquire().await.unwrap();
    assert_eq!(c.id, 2);
}

#[tokio::test(start_paused = true)]
async fn paused_pool_fails_acquirers_fast_until_resumed() {
    let (pool, _, _) = pool_with(sized(1));
    let held = pool.acquire().await.unwrap();
    let queued = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    pool.pause();
    assert!(queued.await.unwrap().unwrap_err().is_paused());
    assert!(pool.acquire().await.unwrap_err().is_paused());
    assert_eq!(start.elapsed(), Duration::ZERO);
    drop(held);
    pool.resume();
    assert!(pool.acquire().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn resize_grows_and_shrinks_at_run_time() {
    let (pool, _, _) = pool_with(sized(2));
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|c| c.id) }
    });
    tokio::task::yield_now().await;
    pool.resize(3);
    assert_eq!(waiter.await.unwrap().unwrap(), 2);
    pool.resize(1);
    drop(a);
    drop(b);
    let s = pool.stats();
    assert_eq!((s.max_size, s.size, s.closed.resized), (1, 1, 2));
    let c = pool.acquire().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(1), pool.acquire()).await;
    assert!(err.is_err(), "only one connection after shrinking");
    drop(c);
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_returns_up_to_the_deadline() {
    let (pool, backend, _) = pool_with(sized(2));
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    tokio::spawn(async move {
        sleep(Duration::from_secs(1)).await;
        drop(a);
    });
    let start = Instant::now();
    assert_eq!(pool.close(Duration::from_secs(3)).await, 1);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(pool.acquire().await.unwrap_err().is_closed());
    drop(b);
    let s = pool.stats();
    assert_eq!((s.size, s.closed.pool_closed), (0, 2));
    assert_eq!(backend.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_extras_down_to_min_idle() {
    let (pool, _, _) = pool_with(PoolConfig {
        max_size: 4,
        min_idle: 1,
        idle_timeout: Duration::from_secs(10),
        ..PoolConfig::default()
    });
    drop(futures_all(&pool, 4).await);
    assert_eq!(pool.stats().idle, 4);
    sleep(Duration::from_secs(12)).await;
    let s = pool.stats();
    assert_eq!((s.idle, s.closed.idle), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn keepalive_discards_a_connection_the_manager_calls_invalid() {
    let (pool, backend, _) = pool_with(PoolConfig {
        keepalive_interval: Duration::from_secs(5),
        ..PoolConfig::default()
    });
    drop(futures_all(&pool, 2).await);
    backend.invalid.lock().unwrap().insert(0);
    sleep(Duration::from_secs(6)).await;
    let s = pool.stats();
    assert_eq!((s.closed.invalid, s.idle, s.validations), (1, 1, 2));
    assert_eq!(pool.acquire().await.unwrap().id, 1);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_replaces_connections_staggered_without_a_gap() {
    fastrand::seed(11);
    let (pool, _, events) = pool_with(PoolConfig {
        max_size: 4,
        min_idle: 4,
        max_lifetime: Duration::from_secs(100),
        lifetime_jitter: 0.4,
        keepalive_interval: Duration::ZERO,
        ..PoolConfig::default()
    });
    let (_sub, mut rx) = events.channel();
    let start = Instant::now();
    let mut retired_at = Vec::new();
    for _ in 0..110 {
        sleep(Duration::from_secs(1)).await;
        // Always a connection at hand, at once.
        let c = tokio::time::timeout(Duration::ZERO, pool.acquire())
            .await
            .expect("no gap in availability")
            .unwrap();
        drop(c);
        while let Ok(e) = rx.try_recv() {
            if let PoolEvent::ConnectionClosed { reason, .. } = e {
                assert_eq!(reason, CloseReason::Lifetime);
                retired_at.push(start.elapsed().as_secs());
            }
        }
    }
    assert_eq!(retired_at.len(), 4, "{retired_at:?}");
    let distinct: HashSet<_> = retired_at.iter().collect();
    assert!(distinct.len() >= 2, "retired all at once: {retired_at:?}");
    assert!(
        retired_at.iter().all(|&t| (60..=102).contains(&t)),
        "{retired_at:?}"
    );
    assert_eq!(pool.stats().size, 4);
}

#[tokio::test(start_paused = true)]
async fn failing_connects_open_the_breaker_then_recover_to_healthy() {
    let (pool, backend, events) = pool_with(PoolConfig {
        unhealthy_after: 3,
        breaker_recovery: Duration::from_secs(5),
        recovery_successes: 2,
        ..PoolConfig::default()
    });
    let (_sub, mut rx) = events.channel();
    backend.fail.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(pool.acquire().await.unwrap_err().is_connect());
    }
    assert_eq!(pool.health().0, HealthState::Unhealthy);
    for _ in 0..10 {
        assert!(pool.acquire().await.unwrap_err().is_unavailable());
    }
    assert_eq!(
        backend.connects.load(Ordering::SeqCst),
        3,
        "breaker stops connects"
    );
    backend.fail.store(false, Ordering::SeqCst);
    sleep(Duration::from_secs(6)).await;
    let a = pool.acquire().await.unwrap();
    assert_eq!(pool.health().0, HealthState::Recovering);
    let b = pool.acquire().await.unwrap();
    assert_eq!(pool.health(), (HealthState::Healthy, 100));
    drop((a, b));
    let mut changes = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let PoolEvent::HealthChanged { from, to, .. } = e {
            changes.push((from, to));
        }
    }
    assert_eq!(
        changes,
        [
            (HealthState::Healthy, HealthState::Unhealthy),
            (HealthState::Unhealthy, HealthState::Recovering),
            (HealthState::Recovering, HealthState::Healthy),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn lifecycle_events_come_in_order() {
    let (pool, _, events) = pool_with(sized(2));
    let (_sub, mut rx) = events.channel();
    let c = pool.acquire().await.unwrap();
    c.discard();
    pool.close(Duration::ZERO).await;
    let _ = pool.acquire().await;
    let mut names = Vec::new();
    while let Ok(e) = rx.try_recv() {
        names.push(match e {
            PoolEvent::ConnectionCreated { .. } => "created",
            PoolEvent::ConnectionReady { .. } => "ready",
            PoolEvent::ConnectionCheckedOut { .. } => "checked_out",
            PoolEvent::ConnectionClosed { .. } => "closed",
            PoolEvent::PoolClosed { .. } => "pool_closed",
            PoolEvent::CheckoutFailed { .. } => "checkout_failed",
            _ => "other",
        });
    }
    assert_eq!(
        names,
        [
            "created",
            "ready",
            "checked_out",
            "closed",
            "pool_closed",
            "checkout_failed"
        ]
    );
}

#[test]
fn eight_tasks_hammering_three_connections_on_four_workers_stay_consistent() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (pool, backend, _) = pool_with(PoolConfig {
            max_size: 3,
            acquire_timeout: Duration::from_secs(60),
            ..PoolConfig::default()
        });
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let pool = pool.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..5_000 {
                    match rng.u8(0..4) {
                        // Drop the acquire after polling it once: queued or not.
                        0 => {
                            let mut fut = Box::pin(pool.acquire());
                            if let Some(c) = futures_poll(&mut fut).await {
                                drop(c.unwrap());
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // Hold it across a yield, so others queue.
                        1 => {
                            let c = pool.acquire().await.unwrap();
                            tokio::task::yield_now().await;
                            drop(c);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            drop(pool.acquire().await.unwrap());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let s = pool.stats();
        assert_eq!((s.in_use, s.waiters, s.pending_connects), (0, 0, 0));
        assert!(s.size <= 3, "{s:?}");
        assert_eq!(s.size, s.idle);
        assert_eq!(backend.live.load(Ordering::SeqCst), s.size);
        assert_eq!(s.checkouts, done.load(Ordering::Relaxed));
        assert_eq!(s.acquire_wait.iter().sum::<u64>(), s.checkouts);
        // All three are still there to take, at once.
        let all = tokio::time::timeout(Duration::from_secs(5), futures_all(&pool, 3))
            .await
            .expect("every connection came back");
        assert_eq!(all.len(), 3);
        assert_eq!(pool.stats().in_use, 3);
    });
}

/// A manager whose reset is a no-op, and says so: returned connections skip it.
#[derive(Clone, Default)]
struct NoReset(TestManager, Arc<AtomicU64>);

impl Manager for NoReset {
    type Connection = TestConn;
    type Error = std::io::Error;
    const RESETS: bool = false;
    async fn connect(&self) -> Result<TestConn, std::io::Error> {
        self.0.connect().await
    }
    async fn is_valid(&self, conn: &mut TestConn) -> Result<(), std::io::Error> {
        self.0.is_valid(conn).await
    }
    async fn reset(&self, _conn: &mut TestConn) -> Result<(), std::io::Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Counts resets; a reset with this manager fails fatally on connection 0.
#[derive(Clone, Default)]
struct Resets(TestManager, Arc<AtomicU64>);

impl Manager for Resets {
    type Connection = TestConn;
    type Error = std::io::Error;
    async fn connect(&self) -> Result<TestConn, std::io::Error> {
        self.0.connect().await
    }
    async fn is_valid(&self, conn: &mut TestConn) -> Result<(), std::io::Error> {
        self.0.is_valid(conn).await
    }
    async fn reset(&self, conn: &mut TestConn) -> Result<(), std::io::Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if conn.id == 0 {
            Err(std::io::Error::other("broken on reset"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_manager_without_resets_hands_returned_connections_out_unreset() {
    let manager = NoReset::default();
    let resets = manager.1.clone();
    let pool = sized(2).build("db", manager, &PoolEvents::new()).unwrap();
    for _ in 0..10 {
        drop(pool.acquire().await.unwrap());
    }
    assert_eq!(resets.load(Ordering::SeqCst), 0);
    assert_eq!(pool.stats().checkouts, 10);
}

#[tokio::test(start_paused = true)]
async fn returned_connections_are_reset_before_reuse_and_closed_if_it_fails() {
    let manager = Resets::default();
    let resets = manager.1.clone();
    let pool = sized(2).build("db", manager, &PoolEvents::new()).unwrap();
    let first = pool.acquire().await.unwrap();
    assert_eq!(first.id, 0);
    assert_eq!(
        resets.load(Ordering::SeqCst),
        0,
        "a new connection is clean"
    );
    drop(first);
    // Connection 0 fails its reset (which waits a turn): it closes, and a new one is opened.
    let second = pool.acquire().await.unwrap();
    assert_eq!(second.id, 1);
    assert_eq!(resets.load(Ordering::SeqCst), 1);
    drop(second);
    let third = pool.acquire().await.unwrap();
    assert_eq!(third.id, 1);
    assert_eq!(resets.load(Ordering::SeqCst), 2);
    let s = pool.stats();
    assert_eq!((s.closed.error, s.size, s.in_use), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_breaker_recovery_longer_than_five_minutes_builds() {
    let config = PoolConfig {
        breaker_recovery: Duration::from_secs(600),
        ..sized(2)
    };
    let mut errors = rampart_resilience::ConfigError::new(None);
    config.validate("p", &mut errors);
    assert!(errors.is_empty(), "{errors}");
    let (pool, _backend, _events) = pool_with(config);
    assert!(pool.acquire().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_connect_begun_before_pause_does_not_resume_the_pool() {
    let (pool, backend, events) = pool_with(sized(2));
    let (_sub, mut rx) = events.channel();
    backend.gated.store(true, Ordering::SeqCst);
    let acquiring = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|c| c.id) }
    });
    while backend.connects.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    pool.pause();
    backend.gated.store(false, Ordering::SeqCst);
    backend.gate.notify_one();
    assert_eq!(
        acquiring.await.unwrap().unwrap(),
        0,
        "the acquire begun before the pause still gets its connection"
    );
    assert!(
        pool.is_paused(),
        "a connect begun before the pause resumed the pool"
    );
    assert!(pool.acquire().await.unwrap_err().is_paused());
    // The maintenance task's probe (a connect: the pool has a free slot) does resume it.
    sleep(Duration::from_millis(1500)).await;
    assert!(!pool.is_paused());
    assert_eq!(pool.stats().created, 2);
    let mut ready = 0;
    while let Ok(e) = rx.try_recv() {
        if let PoolEvent::PoolReady { .. } = e {
            ready += 1;
        }
    }
    assert_eq!(ready, 1);
}

#[tokio::test(start_paused = true)]
async fn a_paused_full_pool_resumes_when_its_probe_validates_an_idle_connection() {
    let (pool, backend, _) = pool_with(PoolConfig {
        keepalive_interval: Duration::ZERO,
        ..sized(2)
    });
    drop(futures_all(&pool, 2).await);
    assert_eq!((pool.stats().size, pool.stats().idle), (2, 2));
    pool.pause();
    sleep(Duration::from_millis(1500)).await;
    assert!(
        !pool.is_paused(),
        "no slot for a connect: the probe validates"
    );
    let s = pool.stats();
    assert_eq!((s.validations, s.created, s.idle), (1, 2, 2));
    assert!(pool.acquire().await.is_ok());
    drop(backend);
}

#[tokio::test(start_paused = true)]
async fn a_paused_full_pool_whose_probe_fails_validation_connects_next_round() {
    let (pool, backend, _) = pool_with(PoolConfig {
        keepalive_interval: Duration::ZERO,
        ..sized(2)
    });
    drop(futures_all(&pool, 2).await);
    backend.invalid.lock().unwrap().extend([0, 1]);
    pool.pause();
    sleep(Duration::from_millis(1500)).await;
    assert!(pool.is_paused(), "a failed probe keeps the pool paused");
    assert_eq!((pool.stats().closed.invalid, pool.stats().size), (1, 1));
    sleep(Duration::from_secs(1)).await;
    assert!(
        !pool.is_paused(),
        "the freed slot let the next probe connect"
    );
    assert_eq!(pool.stats().created, 3);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_keeps_min_idle_idle_connections_while_others_are_in_use() {
    let (pool, backend, _) = pool_with(PoolConfig {
        max_size: 4,
        min_idle: 1,
        idle_timeout: Duration::from_secs(10),
        ..PoolConfig::default()
    });
    let held = futures_all(&pool, 3).await;
    let mut held = held.into_iter();
    drop(held.next());
    assert_eq!((pool.stats().idle, pool.stats().in_use), (1, 2));
    sleep(Duration::from_secs(35)).await;
    let s = pool.stats();
    assert_eq!(
        (s.closed.idle, s.created, s.idle),
        (0, 3, 1),
        "the only idle connection was closed and reopened: {s:?}"
    );
    assert_eq!(backend.connects.load(Ordering::SeqCst), 3);
    // With the others back, the extras time out down to min_idle idle ones.
    drop(held);
    sleep(Duration::from_secs(12)).await;
    let s = pool.stats();
    assert_eq!((s.closed.idle, s.idle, s.size), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_keepalive_check_that_hangs_times_out_and_maintenance_goes_on() {
    let (pool, backend, events) = pool_with(PoolConfig {
        keepalive_interval: Duration::from_secs(5),
        leak_detection_threshold: Some(Duration::from_secs(18)),
        ..PoolConfig::default()
    });
    let (_sub, mut rx) = events.channel();
    let all = futures_all(&pool, 3).await;
    let mut all = all.into_iter();
    let held = all.next().unwrap();
    drop(all);
    backend.hang_valid.store(true, Ordering::SeqCst);
    // Checked at 5s, each check gives up after validation_timeout (default 5s).
    sleep(Duration::from_secs(20)).await;
    let s = pool.stats();
    assert_eq!(
        (s.closed.invalid, s.validation_failures, s.idle),
        (2, 2, 0),
        "{s:?}"
    );
    assert_eq!(s.leaks, 1, "leak detection still runs");
    let mut degraded = false;
    while let Ok(e) = rx.try_recv() {
        if let PoolEvent::HealthChanged { to, .. } = e {
            degraded |= to == HealthState::Degraded;
        }
    }
    assert!(
        degraded,
        "timed-out validations count as failures for health"
    );
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_checkout_validation_that_hangs_times_out_and_a_new_connection_is_made() {
    let (pool, backend, _) = pool_with(PoolConfig {
        validation_bypass: Duration::ZERO,
        validation_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    });
    drop(pool.acquire().await.unwrap());
    backend.hang_valid.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let conn = pool.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        conn.id, 1,
        "the hung connection was closed, a new one opened"
    );
    let s = pool.stats();
    assert_eq!((s.closed.invalid, s.validation_failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_reset_that_hangs_times_out_and_closes_the_connection_as_invalid() {
    let (pool, backend, _) = pool_with(PoolConfig {
        validation_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    });
    drop(pool.acquire().await.unwrap());
    backend.hang_reset.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let conn = pool.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(conn.id, 1);
    let s = pool.stats();
    assert_eq!((s.closed.invalid, s.validation_failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_connect_timeout_is_a_connect_failure_not_an_acquire_timeout() {
    let (pool, backend, events) = pool_with(PoolConfig {
        connect_timeout: Duration::from_secs(1),
        ..PoolConfig::default()
    });
    let (_sub, mut rx) = events.channel();
    backend.hang_connect.store(true, Ordering::SeqCst);
    let err = pool.acquire().await.unwrap_err();
    assert!(
        matches!(err, rampart_pool::AcquireError::ConnectTimeout { .. }),
        "{err:?}"
    );
    assert!(err.is_connect(), "{err}");
    assert!(!err.is_timeout(), "is_timeout is only for the acquire wait");
    let mut reasons = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let PoolEvent::CheckoutFailed { reason, .. } = e {
            reasons.push(reason);
        }
    }
    assert_eq!(reasons, [rampart_pool::CheckoutFailure::ConnectionError]);
    assert_eq!(pool.stats().timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_pool_with_the_largest_durations_builds_and_works() {
    let max = Duration::MAX;
    let config = PoolConfig {
        max_size: 2,
        min_idle: 1,
        connect_timeout: max,
        acquire_timeout: max,
        idle_timeout: max,
        max_lifetime: max,
        lifetime_jitter: 0.5,
        keepalive_interval: max,
        validation_bypass: max,
        validation_timeout: max,
        leak_detection_threshold: Some(max),
        degraded_wait: max,
        breaker_recovery: max,
        ..PoolConfig::default()
    };
    let mut errors = rampart_resilience::ConfigError::new(None);
    config.validate("p", &mut errors);
    assert!(errors.is_empty(), "{errors}");
    // With maintenance every second, then with a maintenance interval that never comes.
    for config in [
        config.clone(),
        PoolConfig {
            maintenance_interval: max,
            ..config
        },
    ] {
        let (pool, _backend, _) = pool_with(config);
        let both = futures_all(&pool, 2).await;
        drop(both);
        sleep(Duration::from_secs(5)).await;
        let s = pool.stats();
        assert_eq!(
            (s.size, s.idle, s.closed.idle, s.closed.lifetime),
            (2, 2, 0, 0)
        );
        let c = pool.acquire().await.unwrap();
        drop(c);
        pool.clear();
        pool.resize(3);
        assert!(pool.acquire().await.is_ok());
        assert_eq!(pool.close(max).await, 0);
    }
}
