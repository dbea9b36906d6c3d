//! Circuit breaker.
mod state;
pub use state::BreakerState;
