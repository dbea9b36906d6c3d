//! Connection pools against a real PostgreSQL (issue 4): `SELECT 1` through Rampart's pool over
//! `rampart_connect::postgres::PgManager`, `deadpool-postgres` (0.14) and `bb8-postgres` (0.9).
//!
//! One throwaway server (`rampart_testkit::server::Postgres`, a fresh cluster on a free port, run
//! with `fsync=off`) is started once at the beginning and shared by every case, so the bench needs
//! no machine setup beyond an installed PostgreSQL. Everything runs on one tokio multi-thread
//! runtime with 2 worker threads.
//!
//! `pool_postgres`: each pool holds 16 connections (all opened before timing starts); 16 or 256
//! tasks together run [`QUERIES`] queries per iteration, each a checkout, one `SELECT 1` as a simple
//! query (one round trip) and the connection back. Spawning and joining the tasks is inside the
//! timed batch, the same for every pool. Function ids are `<pool>/<tasks>`.
//!
//! Configured equivalently, none doing a round trip per checkout:
//! - `rampart`: `max_size` 16, `acquire_timeout` 1h, keepalive off (so it sends nothing while the
//!   peers are measured), `PgConfig` defaults (`discard_on_return` false: the reset of a returned
//!   connection only checks that its socket is open). `validation_bypass` stays at its 500ms
//!   default: a busy connection is never idle that long, so no validation query is sent while
//!   measuring.
//! - `deadpool`: `max_size` 16, `RecyclingMethod::Fast` (recycling checks only that the socket is
//!   open), no timeouts.
//! - `bb8`: `max_size` 16, `test_on_check_out` false (a checkout sends nothing; `has_broken` checks
//!   the socket on return), `connection_timeout` 1h.
//!
//! `pg_connect_overhead`: what a pool saves over opening a session per query. One task runs
//! [`CONNECT_QUERIES`] `SELECT 1`s in a row, either through the Rampart pool (`pooled`) or each on a
//! fresh `tokio_postgres::connect` that is dropped afterwards (`connect_per_query`: TCP connect,
//! startup and authentication, the query, then the session closed).
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rampart_connect::postgres::{PgConfig, PgManager};
use tokio_postgres::NoTls;

/// Queries per timed iteration of `pool_postgres`, shared out among the tasks.
const QUERIES: u64 = 4_000;
/// Queries per timed iteration of `pg_connect_overhead` (one session setup each when unpooled).
const CONNECT_QUERIES: u64 = 20;
/// Connections in each pool.
const SIZE: usize = 16;
const LONG: Duration = Duration::from_secs(3600);
const SQL: &str = "SELECT 1";

/// One query through a pool: checkout, `SELECT 1`, connection back.
trait Query: Clone + Send + Sync + 'static {
    fn query(&self) -> impl Future<Output = ()> + Send;
    /// Takes all `SIZE` connections at once, so every pool starts the bench full.
    fn fill(&self) -> impl Future<Output = ()> + Send;
}

#[derive(Clone)]
struct Rampart(rampart_pool::Pool<PgManager>);

impl Query for Rampart {
    async fn query(&self) {
        let conn = self.0.acquire().await.expect("checkout");
        conn.simple_query(SQL).await.expect("query");
    }
    async fn fill(&self) {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(self.0.acquire().await.expect("checkout"));
        }
    }
}

#[derive(Clone)]
struct Deadpool(deadpool_postgres::Pool);

impl Query for Deadpool {
    async fn query(&self) {
        let conn = self.0.get().await.expect("checkout");
        conn.simple_query(SQL).await.expect("query");
    }
    async fn fill(&self) {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(self.0.get().await.expect("checkout"));
        }
    }
}

type Bb8Manager = bb8_postgres::PostgresConnectionManager<NoTls>;

#[derive(Clone)]
struct Bb8(bb8::Pool<Bb8Manager>);

impl Query for Bb8 {
    async fn query(&self) {
        let conn = self.0.get().await.expect("checkout");
        conn.simple_query(SQL).await.expect("query");
    }
    async fn fill(&self) {
        let mut held = Vec::new();
        for _ in 0..SIZE {
            held.push(self.0.get().await.expect("checkout"));
        }
    }
}

/// Builds the three pools against `url`; call inside the runtime they will run on.
fn pools(url: &str) -> (Rampart, Deadpool, Bb8) {
    let manager = PgConfig::new(url).build("bench").expect("valid pg config");
    let config = rampart_pool::PoolConfig {
        max_size: SIZE,
        acquire_timeout: LONG,
        keepalive_interval: Duration::ZERO,
        ..rampart_pool::PoolConfig::default()
    };
    let rampart = config
        .build("bench", manager, &rampart_pool::PoolEvents::new())
        .expect("valid config");

    let pg = tokio_postgres::Config::from_str(url).expect("valid url");
    let deadpool_manager = deadpool_postgres::Manager::from_config(
        pg.clone(),
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let deadpool = deadpool_postgres::Pool::builder(deadpool_manager)
        .max_size(SIZE)
        .build()
        .expect("valid config");

    let bb8 = bb8::Pool::builder()
        .max_size(SIZE as u32)
        .test_on_check_out(false)
        .connection_timeout(LONG)
        .build_unchecked(Bb8Manager::new(pg, NoTls));
    (Rampart(rampart), Deadpool(deadpool), Bb8(bb8))
}

/// `tasks` tasks that together run `QUERIES` queries; returns when all are done.
async fn batch<P: Query>(pool: &P, tasks: u64) {
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let pool = pool.clone();
            let n = QUERIES / tasks + u64::from(i < QUERIES % tasks);
            tokio::spawn(async move {
                for _ in 0..n {
                    pool.query().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
}

/// `CONNECT_QUERIES` queries in a row, each on a session opened for it and closed after it.
async fn connect_per_query(pg: &tokio_postgres::Config) {
    for _ in 0..CONNECT_QUERIES {
        let (client, connection) = pg.connect(NoTls).await.expect("connect");
        let task = tokio::spawn(connection);
        client.simple_query(SQL).await.expect("query");
        drop(client);
        // The session ends once the client is gone; wait for its socket to close.
        task.await.expect("task").expect("connection");
    }
}

/// `CONNECT_QUERIES` queries in a row through the pool.
async fn pooled<P: Query>(pool: &P) {
    for _ in 0..CONNECT_QUERIES {
        pool.query().await;
    }
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(async {
        rampart_testkit::server::Postgres::start()
            .await
            .expect("throwaway PostgreSQL (is PostgreSQL installed?)")
    });
    let url = server.url();
    let (rampart, deadpool, bb8) = {
        let _guard = rt.enter();
        pools(&url)
    };
    rt.block_on(async {
        rampart.fill().await;
        deadpool.fill().await;
        bb8.fill().await;
    });

    let mut g = c.benchmark_group("pool_postgres");
    g.sample_size(10);
    g.throughput(Throughput::Elements(QUERIES));
    for tasks in [16u64, 256] {
        g.bench_with_input(BenchmarkId::new("rampart", tasks), &tasks, |b, &t| {
            b.to_async(&rt).iter(|| batch(&rampart, t))
        });
        g.bench_with_input(BenchmarkId::new("deadpool", tasks), &tasks, |b, &t| {
            b.to_async(&rt).iter(|| batch(&deadpool, t))
        });
        g.bench_with_input(BenchmarkId::new("bb8", tasks), &tasks, |b, &t| {
            b.to_async(&rt).iter(|| batch(&bb8, t))
        });
    }
    g.finish();
    // Only Rampart's pool is needed from here on: close the peers' sessions.
    drop(deadpool);
    drop(bb8);

    let pg = tokio_postgres::Config::from_str(&url).expect("valid url");
    let mut g = c.benchmark_group("pg_connect_overhead");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CONNECT_QUERIES));
    g.bench_function("pooled", |b| b.to_async(&rt).iter(|| pooled(&rampart)));
    g.bench_function("connect_per_query", |b| {
        b.to_async(&rt).iter(|| connect_per_query(&pg))
    });
    g.finish();

    drop(rampart);
    rt.block_on(async move { drop(server) });
}

criterion_group!(benches, postgres);
criterion_main!(benches);
