//! Async connection pools for Rampart.
//!
//! A [`Pool`] lends connections made by a [`Manager`] (the seam to a backend: connect, a cheap
//! validity check, a reset, and which errors are fatal). It waits fairly (FIFO) and
//! cancellation-safely, validates connections unused for a while, retires them after a jittered
//! maximum lifetime so they never all reconnect at once, keeps idle ones alive in the background,
//! reports connections held too long with the file and line that acquired them, and judges its own
//! health (healthy, degraded, unhealthy, recovering) with connects going through a circuit breaker
//! so a dead server is not hammered. It emits typed [`PoolEvent`]s in the spirit of MongoDB's
//! CMAP spec and keeps cheap counters ([`PoolStats`]).
//!
//! ```
//! use rampart_pool::{Manager, PoolConfig, PoolEvents};
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! /// A toy backend: each connection is a number.
//! struct Numbers(AtomicU32);
//!
//! impl Manager for Numbers {
//!     type Connection = u32;
//!     type Error = std::io::Error;
//!     async fn connect(&self) -> Result<u32, std::io::Error> {
//!         Ok(self.0.fetch_add(1, Ordering::Relaxed))
//!     }
//!     async fn is_valid(&self, _conn: &mut u32) -> Result<(), std::io::Error> {
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PoolConfig { max_size: 2, ..PoolConfig::default() };
//! let pool = config.build("numbers", Numbers(AtomicU32::new(0)), &PoolEvents::new())?;
//! {
//!     let a = pool.acquire().await?;
//!     let b = pool.acquire().await?;
//!     assert_eq!((*a, *b), (0, 1));
//!     assert_eq!(pool.stats().in_use, 2);
//! } // both go back to the pool here
//! let again = pool.acquire().await?;
//! assert!(*again < 2, "an idle connection is reused");
//! drop(again);
//! assert_eq!(pool.close(std::time::Duration::from_secs(1)).await, 0);
//! assert!(pool.acquire().await.unwrap_err().is_closed());
//! # Ok(()) }
//! ```

pub mod balance;
mod config;
mod error;
mod event;
mod health;
mod manager;
mod pool;
mod stats;

pub use config::PoolConfig;
pub use error::{AcquireError, BoxError};
pub use event::{CheckoutFailure, CloseReason, PoolEvent, PoolEvents, PoolSubscription};
pub use health::HealthState;
pub use manager::Manager;
pub use pool::{Pool, Pooled};
pub use stats::{ClosedCounts, PoolStats, WAIT_BUCKETS};

/// The user guide, `docs/pools.md`: its examples run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/pools.md")]
struct PoolsGuide;
