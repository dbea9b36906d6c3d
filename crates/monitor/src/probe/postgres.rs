//! The PostgreSQL probe, through `rampart-connect`'s connector: a session, the configured
//! statement, then the server's version and role.

use std::time::Duration;

use rampart_connect::postgres::{PgConfig, PgConnection, PgError, PgManager, PgRole, pg_health};
use rampart_pool::Manager;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::error::SqlState;

use super::{
    Failure, FailureKind, Probe, ProbeFuture, ProbeResult, check_role, conclude, timed_out,
};
use crate::config::{ExpectedRole, PostgresCheck};

/// The `application_name` of the probe's sessions, so `pg_stat_activity` shows them as such.
const APPLICATION_NAME: &str = "rampart-monitor";

/// Opens a session with [`PgManager`] (or reuses the one kept from the last probe), runs the
/// check's statement, then asks the server's version and role with [`pg_health`] and compares
/// the role with the expected one. Phases: `connect` (a new session: TCP and startup,
/// authentication included), `query` (the statement).
///
/// The session is kept for the next probe unless `fresh_connection` is set; a session that
/// failed or whose socket has closed is dropped, so the next probe connects again. Failures tell
/// apart `connect_refused`, `connect_timeout` (no session within the timeout: a server that
/// accepts TCP but does not answer, say), `auth_failed` (SQLSTATE class 28), `connect` (any other
/// connect error), `query_failed`, `timeout` (a statement that does not answer) and
/// `role_mismatch`.
#[derive(Debug)]
pub struct PostgresProbe {
    check: PostgresCheck,
    manager: Result<PgManager, String>,
    kept: Mutex<Option<PgConnection>>,
}

impl PostgresProbe {
    /// A probe for `check`.
    pub fn new(check: PostgresCheck) -> Self {
        let config = PgConfig {
            application_name: APPLICATION_NAME.to_owned(),
            ..PgConfig::new(check.url.expose())
        };
        // The error lists problems by path; it never quotes the URL.
        let manager = config.build("postgres").map_err(|e| e.to_string());
        PostgresProbe {
            check,
            manager,
            kept: Mutex::new(None),
        }
    }

    async fn session(
        &self,
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<PgConnection, Failure> {
        if !self.check.fresh_connection
            && let Some(kept) = self.kept.lock().await.take()
            && !kept.is_closed()
        {
            result.details.reused_connection = true;
            return Ok(kept);
        }
        let manager = self
            .manager
            .as_ref()
            .map_err(|e| (FailureKind::Protocol, e.clone()))?;
        let started = Instant::now();
        let conn = timeout_at(deadline, manager.connect())
            .await
            .map_err(|_| {
                (
                    FailureKind::ConnectTimeout,
                    "no session with the server within the timeout".to_owned(),
                )
            })?
            .map_err(|e| connect_failure(&e))?;
        result.phases.connect = Some(started.elapsed());
        Ok(conn)
    }

    async fn run(&self, deadline: Instant, result: &mut ProbeResult) -> Result<(), Failure> {
        let mut conn = self.session(deadline, result).await?;
        let mut started = Instant::now();
        let mut answer = timeout_at(deadline, conn.simple_query(&self.check.query)).await;
        if result.details.reused_connection && matches!(&answer, Ok(Err(e)) if e.is_closed()) {
            // The kept session died since the last probe (a server restart, an idle timeout):
            // that says nothing about the server now, so try once on a new session.
            result.details.reused_connection = false;
            conn = self.session(deadline, result).await?;
            started = Instant::now();
            answer = timeout_at(deadline, conn.simple_query(&self.check.query)).await;
        }
        answer.map_err(|_| timed_out("the query"))?.map_err(|e| {
            (
                FailureKind::QueryFailed,
                format!("query failed: {}", db_message(&e)),
            )
        })?;
        result.phases.query = Some(started.elapsed());
        let health = timeout_at(deadline, pg_health(&conn))
            .await
            .map_err(|_| timed_out("the version and role query"))?
            .map_err(|e| (FailureKind::QueryFailed, format!("{e}")))?;
        result.details.server_version = Some(health.server_version);
        let role = match health.role {
            PgRole::Primary => ExpectedRole::Primary,
            PgRole::Replica => ExpectedRole::Replica,
        };
        if !self.check.fresh_connection {
            *self.kept.lock().await = Some(conn);
        }
        check_role(result, self.check.role, role)
    }
}

impl Probe for PostgresProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            let outcome = self.run(started + timeout, &mut result).await;
            conclude(result, outcome, started)
        })
    }
}

/// The failure kind of a failed connect: refused, authentication, or another connect error.
fn connect_failure(error: &PgError) -> Failure {
    let PgError::Connect { source } = error else {
        return (FailureKind::Connect, format!("cannot connect: {error}"));
    };
    if let Some(code) = source.code()
        && (code.code().starts_with("28") || *code == SqlState::INVALID_PASSWORD)
    {
        return (
            FailureKind::AuthFailed,
            format!("authentication failed: {}", db_message(source)),
        );
    }
    let refused =
        io_error(source).is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    if refused {
        return (FailureKind::ConnectRefused, "connection refused".to_owned());
    }
    (
        FailureKind::Connect,
        format!("cannot connect: {}", db_message(source)),
    )
}

/// The server's own message for a database error, else the client's description.
fn db_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// The I/O error somewhere in `error`'s source chain, if any.
fn io_error(error: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cause = e.source();
    }
    None
}
