#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The PostgreSQL connector against real, throwaway servers: load, kill, pause, chaos, leaks,
//! health. Each test starts its own server; a missing PostgreSQL skips the test unless
//! `RAMPART_REQUIRE_SERVERS=1`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_connect::postgres::{PgConfig, PgError, PgManager, PgRole, pg_health};
use rampart_pool::{AcquireError, HealthState, Pool, PoolConfig, PoolEvent, PoolEvents};
use rampart_testkit::proxy::{ChaosProxy, Direction, Toxic, ToxicKind};
use rampart_testkit::require_server;
use rampart_testkit::server::Postgres;
use tokio::time::{Instant, sleep, timeout};

/// Polls `check` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn backends(pg: &Postgres, app: &str) -> usize {
    let rows = pg
        .query(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'"
        ))
        .await
        .unwrap();
    rows[0][0].as_deref().unwrap().parse().unwrap()
}

fn manager(url: &str, app: &str) -> PgManager {
    PgConfig {
        application_name: app.to_owned(),
        check_timeout: Duration::from_millis(300),
        ..PgConfig::new(url)
    }
    .build("pg")
    .unwrap()
}

/// A pool with short durations, for tests on real time.
fn quick(max_size: usize) -> PoolConfig {
    PoolConfig {
        max_size,
        max_connecting: 4,
        connect_timeout: Duration::from_millis(500),
        acquire_timeout: Duration::from_secs(2),
        maintenance_interval: Duration::from_millis(50),
        unhealthy_after: 3,
        breaker_recovery: Duration::from_millis(300),
        recovery_successes: 2,
        ..PoolConfig::default()
    }
}

/// Health changes, in order.
fn record_health(
    events: &PoolEvents,
) -> (rampart_pool::PoolSubscription, Arc<Mutex<Vec<HealthState>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let sub = events.subscribe(move |e| {
        if let PoolEvent::HealthChanged { to, .. } = e {
            sink.lock().unwrap().push(*to);
        }
    });
    (sub, seen)
}

/// Counts connect attempts.
fn count_connects(events: &PoolEvents) -> (rampart_pool::PoolSubscription, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let sink = count.clone();
    let sub = events.subscribe(move |e| {
        if let PoolEvent::ConnectionCreated { .. } = e {
            sink.fetch_add(1, Ordering::SeqCst);
        }
    });
    (sub, count)
}

async fn one_query(pool: &Pool<PgManager>) -> Result<(), String> {
    let mut conn = pool.acquire().await.map_err(|e| format!("acquire: {e}"))?;
    match conn.simple_query("SELECT 1").await {
        Ok(_) => Ok(()),
        Err(e) => {
            let e = PgError::from(e);
            conn.observe(&e);
            Err(format!("query: {e}"))
        }
    }
}

fn assert_consistent(pool: &Pool<PgManager>) {
    let s = pool.stats();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.waiters, 0, "{s:?}");
    assert_eq!(s.size, s.idle, "every open connection is idle: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_share_sixteen_backends_and_close_ends_them() {
    let pg = require_server!(Postgres::start().await);
    let app = "load16";
    let events = PoolEvents::new();
    let pool = quick(16)
        .build("pg", manager(&pg.url(), app), &events)
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let conn = pool.acquire().await?;
                let row = conn
                    .query_one("SELECT $1::int + 1 FROM pg_sleep(0.002)", &[&i])
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0), i + 1);
                Ok::<_, AcquireError>(())
            })
        })
        .collect();
    let results = timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("1000 queries within 30s");
    for r in results {
        r.unwrap().unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.size, 16, "{stats:?}");
    assert_eq!(stats.created, 16, "no connection was replaced: {stats:?}");
    assert_eq!(stats.checkouts, 1000);
    assert_eq!(backends(&pg, app).await, 16);
    assert_consistent(&pool);

    assert_eq!(pool.close(Duration::from_secs(1)).await, 0);
    eventually("every backend to end", Duration::from_secs(5), || async {
        backends(&pg, app).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_load_fails_fast_with_typed_errors_then_recovers_after_restart() {
    let mut pg = require_server!(Postgres::start().await);
    let app = "killed";
    let events = PoolEvents::new();
    let (_health_sub, health) = record_health(&events);
    let config = PoolConfig {
        acquire_timeout: Duration::from_secs(1),
        ..quick(16)
    };
    let pool = config
        .build("pg", manager(&pg.url(), app), &events)
        .unwrap();

    // Load: tasks looping until stopped, each call bounded well beyond the acquire timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (pool, stop, failures) = (pool.clone(), stop.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let call = async {
                        let mut conn = pool.acquire().await.map_err(Failure::Acquire)?;
                        match conn.simple_query("SELECT pg_sleep(0.01)").await {
                            Ok(_) => Ok(()),
                            Err(e) => {
                                let e = PgError::from(e);
                                conn.observe(&e);
                                Err(Failure::Query(e))
                            }
                        }
                    };
                    match timeout(Duration::from_secs(3), call).await {
                        Ok(Ok(())) => {}
                        Ok(Err(f)) => {
                            failures.lock().unwrap().push(f);
                            // Back off a little, as a real caller would.
                            sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => panic!("a call hung past 3s"),
                    }
                }
            })
        })
        .collect();
    eventually("the pool to fill", Duration::from_secs(10), || async {
        pool.stats().size == 16
    })
    .await;

    pg.kill().await.unwrap();
    eventually(
        "the pool to turn unhealthy",
        Duration::from_secs(5),
        || async { pool.health().0 == HealthState::Unhealthy },
    )
    .await;
    {
        let f = failures.lock().unwrap();
        assert!(!f.is_empty());
        for failure in f.iter() {
            match failure {
                Failure::Acquire(e) => assert!(
                    e.is_connect() || e.is_unavailable() || e.is_timeout(),
                    "unexpected acquire error: {e}"
                ),
                Failure::Query(e) => assert!(e.is_fatal(), "a dead server is fatal: {e:?}"),
            }
        }
    }
    // While unhealthy, the connect breaker lets a few trial connects through per recovery period
    // (300 ms; its half-open state allows 5 trials): 64 tasks retrying every 10 ms for 1 s, some
    // 6,000 acquires, must not turn into more than 4 periods of 5 trials.
    let (_connect_sub, connects) = count_connects(&events);
    sleep(Duration::from_secs(1)).await;
    let attempts = connects.load(Ordering::SeqCst);
    assert!(attempts <= 20, "{attempts} connects to a dead server in 1s");
    assert!(
        pool.stats().closed.error >= 16,
        "every broken connection was closed: {:?}",
        pool.stats()
    );

    pg.restart().await.unwrap();
    eventually("the pool to heal", Duration::from_secs(10), || async {
        pool.health().0 == HealthState::Healthy
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        timeout(Duration::from_secs(5), t).await.unwrap().unwrap();
    }
    let seen = health.lock().unwrap().clone();
    let at = seen
        .iter()
        .position(|s| *s == HealthState::Unhealthy)
        .unwrap();
    assert_eq!(
        &seen[at..],
        [
            HealthState::Unhealthy,
            HealthState::Recovering,
            HealthState::Healthy
        ],
        "{seen:?}"
    );
    one_query(&pool).await.unwrap();
    assert_consistent(&pool);
    pool.close(Duration::from_secs(1)).await;
    eventually("every backend to end", Duration::from_secs(5), || async {
        backends(&pg, app).await == 0
    })
    .await;
}

#[derive(Debug)]
enum Failure {
    Acquire(AcquireError),
    Query(PgError),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_one_of_a_thousand_looping_tasks_is_served() {
    let pg = require_server!(Postgres::start().await);
    // Fairness, not speed, is under test: one full turn of the FIFO queue takes about
    // 1000 / 16 round trips (80 ms here, seconds on a machine starved of CPU), so the acquire
    // timeout is far above any turn and a timeout can only mean a task was passed over.
    let pool = PoolConfig {
        acquire_timeout: Duration::from_secs(30),
        ..quick(16)
    }
    .build("pg", manager(&pg.url(), "fair"), &PoolEvents::new())
    .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut served = 0u32;
                while Instant::now() < until {
                    let conn = pool.acquire().await.unwrap();
                    conn.simple_query("SELECT 1").await.unwrap();
                    served += 1;
                }
                served
            })
        })
        .collect();
    let served = timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .unwrap();
    let served: Vec<u32> = served.into_iter().map(|s| s.unwrap()).collect();
    let least = *served.iter().min().unwrap();
    let total: u32 = served.iter().sum();
    assert!(least >= 1, "a task was never served");
    let stats = pool.stats();
    assert_eq!(stats.timeouts, 0, "{stats:?}");
    assert_eq!(u64::from(total), stats.checkouts);
    assert!(stats.size <= 16);
    assert_consistent(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_times_out_acquires_and_queries_and_dead_idle_connections_are_found() {
    let mut pg = require_server!(Postgres::start().await);
    let config = PoolConfig {
        acquire_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(1),
        keepalive_interval: Duration::from_millis(100),
        ..quick(3)
    };
    let pool = config
        .build("pg", manager(&pg.url(), "paused"), &PoolEvents::new())
        .unwrap();
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    let c = pool.acquire().await.unwrap();
    drop(c);

    pg.pause().unwrap();
    // A query already running is bounded by the caller's deadline.
    let started = Instant::now();
    let running = timeout(Duration::from_millis(300), a.simple_query("SELECT 1")).await;
    assert!(running.is_err(), "a paused server cannot answer");
    assert!(started.elapsed() < Duration::from_secs(1));
    a.discard();
    // The idle connection's keepalive check times out (check_timeout 300 ms): it is closed.
    eventually(
        "keepalive to close the idle connection",
        Duration::from_secs(3),
        || async { pool.stats().closed.invalid >= 1 },
    )
    .await;
    // No idle connection, and a connect hangs: the acquire times out at the acquire timeout.
    let started = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    let waited = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );

    pg.resume().unwrap();
    // After the resume the held connection works again; back in the pool, then the server dies.
    b.simple_query("SELECT 1").await.unwrap();
    drop(b);
    let invalid = pool.stats().closed.invalid;
    pg.kill().await.unwrap();
    eventually(
        "keepalive to find the dead connection",
        Duration::from_secs(3),
        || async {
            let s = pool.stats();
            s.closed.invalid > invalid && s.idle == 0
        },
    )
    .await;
    pg.restart().await.unwrap();
    eventually(
        "a query after the restart",
        Duration::from_secs(5),
        || async { one_query(&pool).await.is_ok() },
    )
    .await;
    assert_consistent(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_latency_degrades_and_resets_replace_connections() {
    let pg = require_server!(Postgres::start().await);
    let proxy = ChaosProxy::start(([127, 0, 0, 1], pg.port()).into())
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
    let events = PoolEvents::new();
    let (_sub, health) = record_health(&events);
    let config = PoolConfig {
        degraded_wait: Duration::from_millis(20),
        ..quick(2)
    };
    let pool = config.build("pg", manager(&url, "chaos"), &events).unwrap();
    one_query(&pool).await.unwrap();

    // 30 ms each way on 2 connections shared by 8 callers: waits exceed 20 ms.
    proxy.set(Toxic::Latency {
        latency: Duration::from_millis(30),
        jitter: Duration::ZERO,
        direction: Direction::Both,
    });
    let load: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..4 {
                    one_query(&pool).await.unwrap();
                }
            })
        })
        .collect();
    eventually(
        "the pool to turn degraded",
        Duration::from_secs(5),
        || async { pool.health().0 == HealthState::Degraded },
    )
    .await;
    for t in load {
        timeout(Duration::from_secs(10), t).await.unwrap().unwrap();
    }
    proxy.remove(ToxicKind::Latency).unwrap();
    eventually(
        "the pool to turn healthy",
        Duration::from_secs(5),
        || async {
            one_query(&pool).await.unwrap();
            pool.health().0 == HealthState::Healthy
        },
    )
    .await;
    assert!(health.lock().unwrap().contains(&HealthState::Degraded));

    // Resets: the open connections die; the pool closes them and opens new ones.
    let before = pool.stats();
    let old_ids: Vec<u64> = {
        let a = pool.acquire().await.unwrap();
        let b = pool.acquire().await.unwrap();
        vec![a.id(), b.id()]
    };
    proxy.reset_all();
    eventually(
        "a query on a new connection",
        Duration::from_secs(5),
        || async {
            let Ok(mut conn) = pool.acquire().await else {
                return false;
            };
            match conn.simple_query("SELECT 1").await {
                Ok(_) => !old_ids.contains(&conn.id()),
                Err(e) => {
                    assert!(conn.observe(&PgError::from(e)), "a reset is fatal");
                    false
                }
            }
        },
    )
    .await;
    let after = pool.stats();
    assert!(after.created > before.created, "{after:?}");
    let closed_broken = |s: &rampart_pool::PoolStats| s.closed.error + s.closed.invalid;
    assert!(closed_broken(&after) > closed_broken(&before), "{after:?}");
    assert_consistent(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_report_names_the_acquiring_line() {
    let pg = require_server!(Postgres::start().await);
    let events = PoolEvents::new();
    let (_sub, mut rx) = events.channel();
    let config = PoolConfig {
        leak_detection_threshold: Some(Duration::from_millis(100)),
        ..quick(2)
    };
    let pool = config
        .build("pg", manager(&pg.url(), "leaky"), &events)
        .unwrap();
    let (held, line) = (pool.acquire().await.unwrap(), line!());
    let location = timeout(Duration::from_secs(3), async {
        loop {
            if let Some(PoolEvent::LeakDetected { location, .. }) = rx.recv().await {
                return location;
            }
        }
    })
    .await
    .expect("a leak report within 3s");
    assert!(location.file().ends_with("tests/postgres.rs"), "{location}");
    assert_eq!(location.line(), line);
    drop(held);
    assert_eq!(pool.stats().leaks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_reports_version_role_and_latency() {
    let pg = require_server!(Postgres::start().await);
    let pool = quick(1)
        .build("pg", manager(&pg.url(), "health"), &PoolEvents::new())
        .unwrap();
    let conn = pool.acquire().await.unwrap();
    let health = pg_health(&conn).await.unwrap();
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .unwrap();
    assert!(
        health.server_version.starts_with(&installed.to_string()),
        "{health:?}"
    );
    assert_eq!(health.major_version(), Some(installed));
    assert_eq!(health.role, PgRole::Primary);
    assert!(health.latency < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_on_return_clears_session_state_but_keeps_statement_timeout() {
    let pg = require_server!(Postgres::start().await);
    let manager = PgConfig {
        application_name: "discard".to_owned(),
        statement_timeout: Some(Duration::from_millis(150)),
        discard_on_return: true,
        ..PgConfig::new(pg.url())
    }
    .build("pg")
    .unwrap();
    let pool = quick(1).build("pg", manager, &PoolEvents::new()).unwrap();
    let show = |rows: Vec<tokio_postgres::SimpleQueryMessage>| -> String {
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_owned()),
                _ => None,
            })
            .unwrap()
    };
    let (first_id, default_path) = {
        let conn = pool.acquire().await.unwrap();
        let default_path = show(conn.simple_query("SHOW search_path").await.unwrap());
        conn.batch_execute("SET search_path TO elsewhere; BEGIN")
            .await
            .unwrap();
        (conn.id(), default_path)
    };
    let conn = pool.acquire().await.unwrap();
    assert_eq!(conn.id(), first_id, "the same session, reset");
    assert_eq!(
        show(conn.simple_query("SHOW search_path").await.unwrap()),
        default_path
    );
    assert_eq!(
        show(conn.simple_query("SHOW statement_timeout").await.unwrap()),
        "150ms"
    );
    let err = PgError::from(conn.simple_query("SELECT pg_sleep(2)").await.unwrap_err());
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        !err.is_fatal(),
        "a cancelled statement leaves the session usable"
    );
    conn.simple_query("SELECT 1").await.unwrap();
}
