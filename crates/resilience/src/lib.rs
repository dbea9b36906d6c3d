//! Resilience policies for async Rust.
//!
//! Circuit breakers, retries with jitter and retry budgets, timeouts and deadlines, rate limits,
//! bulkheads, adaptive concurrency limits, hedging and fallbacks. Every policy works as a plain async
//! call (`policy.call(|| async { .. }).await`) and as a `tower` layer; a [`Pipeline`] stacks them in
//! a documented order; a [`Registry`] builds them by name from a TOML file so every caller of
//! `"payments"` shares one breaker.
//!
//! Policies share one error type, [`Error`], that tells a rejection (breaker open, rate limited,
//! bulkhead full, timed out, budget exhausted) from the inner call's own error.
//!
//! All time comes from `tokio::time`, so tests run on paused time.
//!
//! ```
//! use rampart_resilience::registry::Registry;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Policies by name, from the same TOML a service ships with.
//! let registry = Registry::from_toml_str(
//!     r#"
//!     [breaker.inventory]
//!     window = "consecutive"
//!     consecutive_failures = 5
//!     wait_in_open = "30s"
//!
//!     [retry.inventory]
//!     max_attempts = 3
//!     base_delay = "50ms"
//!
//!     [timeout.inventory]
//!     timeout = "250ms"
//!     "#,
//!     Some("service.toml"),
//! )?;
//!
//! // Timeout per attempt, retries with jittered backoff, and the breaker, stacked in that order.
//! let inventory = registry.pipeline("inventory");
//! let stock = inventory
//!     .call(|| async { Ok::<u32, std::io::Error>(12) })
//!     .await?;
//! assert_eq!(stock, 12);
//!
//! // Every policy on its own, as a plain call:
//! let err = registry
//!     .timeout("inventory")
//!     .call(|| async {
//!         tokio::time::sleep(Duration::from_secs(1)).await;
//!         Ok::<(), std::io::Error>(())
//!     })
//!     .await
//!     .unwrap_err();
//! assert!(err.is_timeout());
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The user guide, `docs/resilience.md`: its examples run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/resilience.md")]
struct ResilienceGuide;

pub mod adaptive;
pub mod breaker;
pub mod bulkhead;
mod classify;
mod duration;
mod error;
mod event;
pub mod fallback;
pub mod hedge;
mod name;
pub mod pipeline;
pub mod rate_limit;
pub mod registry;
pub mod retry;
pub mod timeout;

pub use classify::{Classifier, ErrIsFailure, Outcome};
pub use duration::{DurationError, format_duration, parse_duration, serde_duration};
pub use error::{ConfigError, ConfigProblem, Error};
pub use event::{Event, Events, Listeners, PolicyKind, Subscription};
pub use name::Name;
pub use pipeline::Pipeline;
pub use registry::Registry;
