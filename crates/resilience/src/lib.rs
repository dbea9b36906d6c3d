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
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive;
pub mod breaker;
pub mod bulkhead;
mod classify;
mod duration;
mod error;
mod event;
pub mod fallback;
pub mod hedge;
pub mod pipeline;
pub mod rate_limit;
pub mod registry;
pub mod retry;
pub mod timeout;

pub use classify::{Classifier, ErrIsFailure, Outcome};
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, ConfigProblem, Error};
pub use event::{Event, Events, PolicyKind, Subscription};
