//! The seam between the pool and a backend: how to open, check, reset and judge a connection.

use std::future::Future;

/// Opens and looks after connections of one kind for a [`Pool`](crate::Pool).
///
/// The pool calls [`connect`](Manager::connect) (within `connect_timeout`, through the connect
/// circuit breaker), [`is_valid`](Manager::is_valid) before handing out a connection unused for
/// longer than `validation_bypass` and in the background (keepalive), and
/// [`reset`](Manager::reset) on a connection that was returned, before it is handed out again
/// (unless [`RESETS`](Manager::RESETS) is `false`).
/// Methods must be cancellation-safe in the sense that a dropped future leaves no shared state
/// broken; the pool closes a connection whose check or reset was interrupted.
pub trait Manager: Send + Sync + 'static {
    /// The connection type.
    type Connection: Send + 'static;
    /// The error connecting, validating or resetting can return.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Whether [`reset`](Manager::reset) does anything. Leave it `true` when you override `reset`;
    /// set it to `false` when a returned connection needs no reset (you keep the default no-op
    /// `reset`): the pool then never calls `reset`, and hands a returned connection out again
    /// straight from the idle list, without the reset step. Defaults to `true`.
    const RESETS: bool = true;

    /// Opens a new connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// A cheap check that the connection still works (a ping). `Err` closes it.
    fn is_valid(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Puts a returned connection back into a clean state (roll back, discard session state).
    ///
    /// The pool returns connections from `Drop`, which cannot wait, so the reset runs just before
    /// the connection is next handed out (or validated in the background). An error that
    /// [`is_fatal`](Manager::is_fatal) closes the connection. The default does nothing.
    fn reset(
        &self,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = conn;
        std::future::ready(Ok(()))
    }

    /// True if `err` means the connection is broken and must be discarded; false if the connection
    /// is fine and only the request failed (a constraint violation, a missing key). Used for
    /// [`reset`](Manager::reset) errors and for [`Pooled::observe`](crate::Pooled::observe).
    /// The default treats every error as fatal.
    fn is_fatal(&self, err: &Self::Error) -> bool {
        let _ = err;
        true
    }
}
