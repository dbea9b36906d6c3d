//! The one error type every policy returns, and the configuration error type.

use crate::Name;
use std::fmt;
use std::time::Duration;

/// Why a call did not produce the inner service's own result.
///
/// Every policy wraps the inner error `E` in this type, so a caller can tell a rejection by a policy
/// (breaker open, rate limited, bulkhead full, ...) from a failure of the call itself without matching
/// strings: use the `is_*` methods, or match (the enum is `#[non_exhaustive]`).
///
/// Stacking plain calls by hand gives `Error<Error<E>>`; [`Error::flatten`] turns it back into
/// `Error<E>`. The [`Pipeline`](crate::Pipeline) does that for you.
#[non_exhaustive]
pub enum Error<E> {
    /// The circuit breaker `name` is open (or forced open, or half-open with no permit left).
    BreakerOpen {
        /// The breaker's name.
        name: Name,
    },
    /// The rate limiter `name` has no capacity now; capacity returns after `retry_after`.
    RateLimited {
        /// The limiter's name.
        name: Name,
        /// How long until the request would conform.
        retry_after: Duration,
    },
    /// The bulkhead `name` is full and no slot came free within its maximum queue wait.
    BulkheadFull {
        /// The bulkhead's name.
        name: Name,
    },
    /// The adaptive concurrency limiter `name` is at its current limit.
    ConcurrencyLimited {
        /// The limiter's name.
        name: Name,
        /// The limit in force when the call was rejected.
        limit: usize,
    },
    /// The call did not finish within its timeout.
    Timeout {
        /// The timeout policy's name.
        name: Name,
        /// The timeout that expired.
        after: Duration,
    },
    /// The caller's deadline passed, or too little time was left to start another attempt.
    DeadlineExceeded,
    /// The retry budget `name` allowed no further retry; `last` is the error of the last attempt.
    BudgetExhausted {
        /// The budget's name.
        name: Name,
        /// What the last attempt returned.
        last: Box<Error<E>>,
    },
    /// The inner call failed with its own error.
    Inner(E),
}

impl<E> Error<E> {
    /// True if a circuit breaker rejected the call.
    pub fn is_breaker_open(&self) -> bool {
        matches!(self, Error::BreakerOpen { .. })
    }
    /// True if a rate limiter rejected the call.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Error::RateLimited { .. })
    }
    /// True if a bulkhead rejected the call.
    pub fn is_bulkhead_full(&self) -> bool {
        matches!(self, Error::BulkheadFull { .. })
    }
    /// True if an adaptive concurrency limiter rejected the call.
    pub fn is_concurrency_limited(&self) -> bool {
        matches!(self, Error::ConcurrencyLimited { .. })
    }
    /// True if the call timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
    /// True if the caller's deadline passed.
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }
    /// True if a retry budget stopped further retries.
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(self, Error::BudgetExhausted { .. })
    }
    /// True if a policy turned the call away before (or instead of) running it to completion:
    /// anything but [`Error::Inner`].
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Error::Inner(_))
    }
    /// True if the inner call itself failed.
    pub fn is_inner(&self) -> bool {
        matches!(self, Error::Inner(_))
    }
    /// The inner error, if this is one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }
    /// The inner error by value, if this is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }
    /// A hint of when trying again could succeed: a rate limiter's `retry_after`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
    /// Maps the inner error, keeping every rejection as it is.
    pub fn map_inner<F, G>(self, f: G) -> Error<F>
    where
        G: FnOnce(E) -> F,
    {
        match self {
            Error::BreakerOpen { name } => Error::BreakerOpen { name },
            Error::RateLimited { name, retry_after } => Error::RateLimited { name, retry_after },
            Error::BulkheadFull { name } => Error::BulkheadFull { name },
            Error::ConcurrencyLimited { name, limit } => Error::ConcurrencyLimited { name, limit },
            Error::Timeout { name, after } => Error::Timeout { name, after },
            Error::DeadlineExceeded => Error::DeadlineExceeded,
            Error::BudgetExhausted { name, last } => Error::BudgetExhausted {
                name,
                last: Box::new(last.map_inner(f)),
            },
            Error::Inner(e) => Error::Inner(f(e)),
        }
    }
}

impl<E> Error<Error<E>> {
    /// Turns an error from two stacked policies into a single-level one.
    pub fn flatten(self) -> Error<E> {
        match self {
            Error::Inner(inner) => inner,
            Error::BreakerOpen { name } => Error::BreakerOpen { name },
            Error::RateLimited { name, retry_after } => Error::RateLimited { name, retry_after },
            Error::BulkheadFull { name } => Error::BulkheadFull { name },
            Error::ConcurrencyLimited { name, limit } => Error::ConcurrencyLimited { name, limit },
            Error::Timeout { name, after } => Error::Timeout { name, after },
            Error::DeadlineExceeded => Error::DeadlineExceeded,
            Error::BudgetExhausted { name, last } => Error::BudgetExhausted {
                name,
                last: Box::new(last.flatten()),
            },
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BreakerOpen { name } => {
                f.debug_struct("BreakerOpen").field("name", name).finish()
            }
            Error::RateLimited { name, retry_after } => f
                .debug_struct("RateLimited")
                .field("name", name)
                .field("retry_after", retry_after)
                .finish(),
            Error::BulkheadFull { name } => {
                f.debug_struct("BulkheadFull").field("name", name).finish()
            }
            Error::ConcurrencyLimited { name, limit } => f
                .debug_struct("ConcurrencyLimited")
                .field("name", name)
                .field("limit", limit)
                .finish(),
            Error::Timeout { name, after } => f
                .debug_struct("Timeout")
                .field("name", name)
                .field("after", after)
                .finish(),
            Error::DeadlineExceeded => f.write_str("DeadlineExceeded"),
            Error::BudgetExhausted { name, last } => f
                .debug_struct("BudgetExhausted")
                .field("name", name)
                .field("last", last)
                .finish(),
            Error::Inner(e) => f.debug_tuple("Inner").field(e).finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BreakerOpen { name } => write!(f, "circuit breaker {name} is open"),
            Error::RateLimited { name, retry_after } => {
                write!(f, "rate limit {name} exceeded, retry after {retry_after:?}")
            }
            Error::BulkheadFull { name } => write!(f, "bulkhead {name} is full"),
            Error::ConcurrencyLimited { name, limit } => {
                write!(f, "concurrency limit {name} reached ({limit} in flight)")
            }
            Error::Timeout { name, after } => {
                write!(f, "call through {name} timed out after {after:?}")
            }
            Error::DeadlineExceeded => f.write_str("deadline exceeded"),
            Error::BudgetExhausted { name, last } => {
                write!(f, "retry budget {name} exhausted; last attempt: {last}")
            }
            Error::Inner(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<E> std::error::Error for Error<E>
where
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Inner(e) => Some(e),
            Error::BudgetExhausted { last, .. } => Some(&**last),
            _ => None,
        }
    }
}

/// One problem found in a configuration: where (`breaker.payments.failure_rate`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path, dotted, with `[i]` for array elements.
    pub path: String,
    /// What is wrong, lower-case.
    pub message: String,
}

/// Every problem found in a configuration, reported together.
///
/// Built up by validation (`push`), then turned into a `Result` with [`ConfigError::into_result`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from, when known.
    pub file: Option<String>,
    /// Every problem, in the order found.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// An empty collection, for the given file (if any).
    pub fn new(file: Option<&str>) -> Self {
        ConfigError {
            file: file.map(str::to_owned),
            problems: Vec::new(),
        }
    }
    /// Records one problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
    /// True if no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
    /// `Ok(value)` if no problem was recorded, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
    /// Moves every problem of `other` into `self`.
    pub fn extend(&mut self, other: ConfigError) {
        self.problems.extend(other.problems);
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.as_deref().unwrap_or("configuration");
        match self.problems.as_slice() {
            [] => write!(f, "{file}: invalid configuration"),
            [one] => write!(f, "{file}: {}: {}", one.path, one.message),
            many => {
                write!(f, "{file}: {} problems:", many.len())?;
                for p in many {
                    write!(f, "\n  {}: {}", p.path, p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_keeps_the_outer_rejection_and_unwraps_inner() {
        let e: Error<Error<&str>> = Error::Inner(Error::Inner("boom"));
        assert!(matches!(e.flatten(), Error::Inner("boom")));
        let e: Error<Error<&str>> = Error::BreakerOpen { name: "b".into() };
        assert!(e.flatten().is_breaker_open());
        let e: Error<Error<&str>> = Error::Inner(Error::Timeout {
            name: "t".into(),
            after: Duration::from_secs(1),
        });
        assert!(e.flatten().is_timeout());
    }

    #[test]
    fn config_error_lists_every_problem_with_file_and_path() {
        let mut e = ConfigError::new(Some("rampart.toml"));
        e.push("breaker.a.failure_rate", "must be between 0 and 1, got 1.5");
        e.push("retry.b.max_attempts", "must be at least 1, got 0");
        let text = e.to_string();
        assert!(text.starts_with("rampart.toml: 2 problems:"), "{text}");
        assert!(text.contains("breaker.a.failure_rate: must be between 0 and 1, got 1.5"));
        assert!(text.contains("retry.b.max_attempts: must be at least 1, got 0"));
    }
}
