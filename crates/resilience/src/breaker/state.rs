//! The breaker's states.

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass; outcomes are recorded.
    Closed,
    /// Calls are rejected until the wait in open ends.
    Open,
    /// A limited number of trial calls pass; their outcomes decide between closed and open.
    HalfOpen,
    /// Forced open by an operator: every call is rejected until the breaker is reset or closed.
    ForcedOpen,
    /// Disabled by an operator: every call passes and nothing is recorded.
    Disabled,
}
