//! Why an acquire failed.

use std::time::Duration;

use rampart_resilience::Name;

/// A boxed error, the cause of a failed connect.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`Pool::acquire`](crate::Pool::acquire) gave no connection. Ask with the `is_*` methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// No connection came free (or could be opened) within `acquire_timeout`.
    #[error("timed out after {waited:?} waiting for a connection to {pool}")]
    Timeout {
        /// The pool's name.
        pool: Name,
        /// How long the acquire waited.
        waited: Duration,
    },
    /// The pool is closed (or closing).
    #[error("pool {pool} is closed")]
    Closed {
        /// The pool's name.
        pool: Name,
    },
    /// The pool is paused (after a failover, say): acquires fail fast until it is resumed or a
    /// connect succeeds.
    #[error("pool {pool} is paused")]
    Paused {
        /// The pool's name.
        pool: Name,
    },
    /// The connect circuit breaker is open after repeated connect failures, so no connect was
    /// tried.
    #[error("pool {pool} is unhealthy: connects are suspended after repeated failures")]
    Unavailable {
        /// The pool's name.
        pool: Name,
    },
    /// Opening a new connection failed.
    #[error("could not connect to {pool}")]
    Connect {
        /// The pool's name.
        pool: Name,
        /// What the manager returned.
        #[source]
        source: BoxError,
    },
    /// Opening a new connection took longer than `connect_timeout`. A connect failure:
    /// [`is_connect`](AcquireError::is_connect) is true, [`is_timeout`](AcquireError::is_timeout)
    /// is not (it means the wait for a connection from the pool ran out), and the
    /// [`CheckoutFailed`](crate::PoolEvent::CheckoutFailed) event files it as
    /// [`ConnectionError`](crate::CheckoutFailure::ConnectionError).
    #[error("connecting to {pool} timed out after {after:?}")]
    ConnectTimeout {
        /// The pool's name.
        pool: Name,
        /// The connect timeout.
        after: Duration,
    },
}

impl AcquireError {
    /// True if the acquire waited `acquire_timeout` for a connection from the pool
    /// ([`Timeout`](AcquireError::Timeout)). A connect that took longer than `connect_timeout` is
    /// a connect failure ([`ConnectTimeout`](AcquireError::ConnectTimeout), see
    /// [`is_connect`](Self::is_connect)), not this.
    pub fn is_timeout(&self) -> bool {
        matches!(self, AcquireError::Timeout { .. })
    }
    /// True if the pool is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, AcquireError::Closed { .. })
    }
    /// True if the pool is paused.
    pub fn is_paused(&self) -> bool {
        matches!(self, AcquireError::Paused { .. })
    }
    /// True if the connect breaker is open.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AcquireError::Unavailable { .. })
    }
    /// True if a connect failed or took longer than `connect_timeout`
    /// ([`Connect`](AcquireError::Connect) or [`ConnectTimeout`](AcquireError::ConnectTimeout)).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            AcquireError::Connect { .. } | AcquireError::ConnectTimeout { .. }
        )
    }
    /// The pool's name.
    pub fn pool(&self) -> &str {
        match self {
            AcquireError::Timeout { pool, .. }
            | AcquireError::Closed { pool }
            | AcquireError::Paused { pool }
            | AcquireError::Unavailable { pool }
            | AcquireError::Connect { pool, .. }
            | AcquireError::ConnectTimeout { pool, .. } => pool.as_str(),
        }
    }
}
