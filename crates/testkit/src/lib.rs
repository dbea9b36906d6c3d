//! Test kit for Rampart: real servers on free ports, and a chaos TCP proxy.
//!
//! For tests only. Servers are started as child processes in temporary directories and stopped
//! when their handle is dropped; a handle can kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT) and
//! restart its server on the same port and data. The chaos proxy sits between a client and a
//! server and injects faults switched at run time.
//!
//! A missing server binary is an error that names the Debian package to install; tests call
//! [`require_server!`] so that it skips the test, unless `RAMPART_REQUIRE_SERVERS=1` (set by CI)
//! makes it fail instead.
//!
//! ```no_run
//! use rampart_testkit::proxy::{ChaosProxy, Direction, Toxic};
//! use rampart_testkit::server::{Postgres, Redis};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // Both servers start at once, each on a free port in its own temporary directory.
//! let (pg, redis) = tokio::join!(Postgres::start(), Redis::start());
//! let (pg, redis) = (pg?, redis?);
//! println!("{} {}", pg.url(), redis.url());
//!
//! // Slow the way to Redis down by 50 ms each way.
//! let proxy = ChaosProxy::start(([127, 0, 0, 1], redis.port()).into()).await?;
//! proxy.set(Toxic::Latency {
//!     latency: Duration::from_millis(50),
//!     jitter: Duration::ZERO,
//!     direction: Direction::Both,
//! });
//!
//! // Faults on the server itself.
//! pg.pause()?;
//! pg.resume()?;
//! let mut pg = pg;
//! pg.kill().await?;
//! pg.restart().await?; // same port, same data
//! # Ok(()) }
//! ```

pub mod proxy;
pub mod server;

/// The user guide, `docs/testkit.md`: its examples run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/testkit.md")]
struct TestkitGuide;
