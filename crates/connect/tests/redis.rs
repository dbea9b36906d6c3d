#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Redis connector against real, throwaway servers: load, kill and restart, pipelining,
//! health. Each test starts its own server; a missing redis-server skips the test unless
//! `RAMPART_REQUIRE_SERVERS=1`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_connect::redis::{RedisConfig, RedisError, RedisManager, RedisRole, redis_health};
use rampart_pool::{AcquireError, HealthState, Pool, PoolConfig, PoolEvents};
use rampart_testkit::require_server;
use rampart_testkit::server::Redis;
use tokio::time::{Instant, sleep, timeout};

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

fn pool(url: &str, name: &str, max_size: usize) -> Pool<RedisManager> {
    let manager = RedisConfig {
        client_name: name.to_owned(),
        response_timeout: Duration::from_millis(500),
        ..RedisConfig::new(url)
    }
    .build("redis")
    .unwrap();
    PoolConfig {
        max_size,
        max_connecting: 4,
        connect_timeout: Duration::from_millis(500),
        acquire_timeout: Duration::from_secs(1),
        maintenance_interval: Duration::from_millis(50),
        unhealthy_after: 3,
        breaker_recovery: Duration::from_millis(300),
        recovery_successes: 2,
        ..PoolConfig::default()
    }
    .build("redis", manager, &PoolEvents::new())
    .unwrap()
}

/// Connections named `name`, counted with `CLIENT LIST` on a connection of its own.
async fn clients(url: &str, name: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == format!("name={name}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_tasks_share_sixteen_connections_and_close_ends_them() {
    let server = require_server!(Redis::start().await);
    let url = server.url();
    let pool = pool(&url, "load16", 16);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                let _: i64 = redis::cmd("INCR")
                    .arg("counter")
                    .query_async(&mut *conn)
                    .await
                    .unwrap();
            })
        })
        .collect();
    let results = timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("1000 calls within 30s");
    for r in results {
        r.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    let total: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(total, 1000);
    let stats = pool.stats();
    assert_eq!(stats.size, 16, "{stats:?}");
    assert_eq!(stats.created, 16, "{stats:?}");
    assert_eq!(clients(&url, "load16").await, 16);
    assert_eq!(pool.close(Duration::from_secs(1)).await, 0);
    eventually(
        "every connection to end",
        Duration::from_secs(5),
        || async { clients(&url, "load16").await == 0 },
    )
    .await;
}

#[derive(Debug)]
enum Failure {
    Acquire(AcquireError),
    Command(RedisError),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_gives_typed_errors_and_unhealthy_then_restart_heals() {
    let mut server = require_server!(Redis::start().await);
    let pool = pool(&server.url(), "killed", 16);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (pool, stop, failures) = (pool.clone(), stop.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let call = async {
                        let mut conn = pool.acquire().await.map_err(Failure::Acquire)?;
                        let reply: Result<String, _> =
                            redis::cmd("PING").query_async(&mut *conn).await;
                        reply.map(drop).map_err(|e| {
                            let e = RedisError::from(e);
                            conn.observe(&e);
                            Failure::Command(e)
                        })
                    };
                    match timeout(Duration::from_secs(3), call).await {
                        Ok(Ok(())) => {}
                        Ok(Err(f)) => {
                            failures.lock().unwrap().push(f);
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

    server.kill().await.unwrap();
    eventually(
        "the pool to turn unhealthy",
        Duration::from_secs(5),
        || async { pool.health().0 == HealthState::Unhealthy },
    )
    .await;
    for f in failures.lock().unwrap().iter() {
        match f {
            Failure::Acquire(e) => assert!(
                e.is_connect() || e.is_unavailable() || e.is_timeout(),
                "unexpected acquire error: {e}"
            ),
            Failure::Command(e) => assert!(e.is_fatal(), "a dead server is fatal: {e:?}"),
        }
    }

    server.restart().await.unwrap();
    eventually("the pool to heal", Duration::from_secs(10), || async {
        pool.health().0 == HealthState::Healthy
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        timeout(Duration::from_secs(5), t).await.unwrap().unwrap();
    }
    let s = pool.stats();
    assert_eq!((s.in_use, s.waiters), (0, 0), "{s:?}");
    assert_eq!(s.size, s.idle, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_run_through_a_pooled_connection_and_health_has_its_fields() {
    let server = require_server!(Redis::start().await);
    let pool = pool(&server.url(), "pipes", 2);
    let mut conn = pool.acquire().await.unwrap();
    let (set, incr, got): (String, i64, String) = redis::pipe()
        .cmd("SET")
        .arg("greeting")
        .arg("hello")
        .cmd("INCRBY")
        .arg("n")
        .arg(41)
        .cmd("GET")
        .arg("greeting")
        .query_async(&mut *conn)
        .await
        .unwrap();
    assert_eq!((set.as_str(), incr, got.as_str()), ("OK", 41, "hello"));
    // A command error is not fatal: the connection stays.
    let wrong: Result<i64, _> = redis::cmd("INCR")
        .arg("greeting")
        .query_async(&mut *conn)
        .await;
    assert!(!conn.observe(&RedisError::from(wrong.unwrap_err())));

    let health = redis_health(&mut *conn).await.unwrap();
    let version = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        version.contains(&format!("v={}", health.server_version)),
        "{health:?} vs {version}"
    );
    assert_eq!(health.role, RedisRole::Master);
    assert!(health.used_memory > 0);
    assert!(health.latency < Duration::from_secs(1));
}
