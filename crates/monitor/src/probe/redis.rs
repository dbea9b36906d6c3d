//! The Redis probe, through `rampart-connect`'s connector: a connection, the configured command,
//! then the server's version and role.

use std::time::Duration;

use ::redis::Value;
use ::redis::aio::MultiplexedConnection;
use rampart_connect::redis::{RedisConfig, RedisError, RedisManager, RedisRole, redis_health};
use rampart_pool::Manager;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use super::{
    Failure, FailureKind, Probe, ProbeFuture, ProbeResult, check_role, conclude, timed_out,
};
use crate::config::{ExpectedRole, RedisCheck};

/// The `CLIENT SETNAME` of the probe's connections, so `CLIENT LIST` shows them as such.
const CLIENT_NAME: &str = "rampart-monitor";

/// Opens a connection with [`RedisManager`] (or reuses the one kept from the last probe), runs
/// the check's command and compares its reply with `expect`, then asks the server's version and
/// role with [`redis_health`]. Phases: `connect` (a new connection, naming it included), `query`
/// (the command).
///
/// Kept and fresh connections, and a kept connection that died since being replaced within the
/// probe, work as for [`PostgresProbe`](super::PostgresProbe). Failures tell apart
/// `connect_refused`, `connect_timeout`, `auth_failed` (`NOAUTH`, `WRONGPASS`), `connect`,
/// `query_failed` (the command's error reply), `answer_mismatch`, `timeout` and `role_mismatch`.
#[derive(Debug)]
pub struct RedisProbe {
    check: RedisCheck,
    manager: Result<RedisManager, String>,
    kept: Mutex<Option<MultiplexedConnection>>,
}

impl RedisProbe {
    /// A probe for `check`.
    pub fn new(check: RedisCheck) -> Self {
        let config = RedisConfig {
            client_name: CLIENT_NAME.to_owned(),
            ..RedisConfig::new(check.url.expose())
        };
        // The error lists problems by path; it never quotes the URL.
        let manager = config.build("redis").map_err(|e| e.to_string());
        RedisProbe {
            check,
            manager,
            kept: Mutex::new(None),
        }
    }

    async fn connection(
        &self,
        deadline: Instant,
        result: &mut ProbeResult,
    ) -> Result<MultiplexedConnection, Failure> {
        if !self.check.fresh_connection
            && let Some(kept) = self.kept.lock().await.take()
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
                    "no connection with the server within the timeout".to_owned(),
                )
            })?
            .map_err(|e| match e {
                RedisError::Connect { source } => {
                    failure(&source, FailureKind::Connect, "cannot connect")
                }
                other => (FailureKind::Connect, format!("cannot connect: {other}")),
            })?;
        result.phases.connect = Some(started.elapsed());
        Ok(conn)
    }

    async fn command(
        &self,
        conn: &mut MultiplexedConnection,
        deadline: Instant,
    ) -> Result<Result<Value, ::redis::RedisError>, tokio::time::error::Elapsed> {
        let mut parts = self.check.command.iter();
        let mut command = ::redis::cmd(parts.next().map_or("PING", String::as_str));
        for arg in parts {
            command.arg(arg);
        }
        timeout_at(deadline, command.query_async::<Value>(conn)).await
    }

    async fn run(&self, deadline: Instant, result: &mut ProbeResult) -> Result<(), Failure> {
        let mut conn = self.connection(deadline, result).await?;
        let mut started = Instant::now();
        let mut answer = self.command(&mut conn, deadline).await;
        let broken = matches!(&answer, Ok(Err(e)) if rampart_connect::redis::is_fatal(e));
        if result.details.reused_connection && broken {
            // The kept connection died since the last probe: try once on a new one.
            result.details.reused_connection = false;
            conn = self.connection(deadline, result).await?;
            started = Instant::now();
            answer = self.command(&mut conn, deadline).await;
        }
        let reply = answer
            .map_err(|_| timed_out("the command"))?
            .map_err(|e| failure(&e, FailureKind::QueryFailed, "command failed"))?;
        result.phases.query = Some(started.elapsed());
        if let Some(expected) = &self.check.expect {
            let got = text(reply);
            if got != *expected {
                return Err((
                    FailureKind::AnswerMismatch,
                    format!("reply is {got:?}, expected {expected:?}"),
                ));
            }
        }
        let health = timeout_at(deadline, redis_health(&mut conn))
            .await
            .map_err(|_| timed_out("INFO"))?
            .map_err(|e| (FailureKind::QueryFailed, format!("{e}")))?;
        result.details.server_version = Some(health.server_version);
        let role = match health.role {
            RedisRole::Master => ExpectedRole::Primary,
            RedisRole::Replica => ExpectedRole::Replica,
        };
        if !self.check.fresh_connection {
            *self.kept.lock().await = Some(conn);
        }
        check_role(result, self.check.role, role)
    }
}

impl Probe for RedisProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            let outcome = self.run(started + timeout, &mut result).await;
            conclude(result, outcome, started)
        })
    }
}

/// The failure kind of a client error: refused, authentication, else `otherwise` (with `doing`
/// saying what failed).
fn failure(error: &::redis::RedisError, otherwise: FailureKind, doing: &str) -> Failure {
    let auth = error.kind() == ::redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"));
    if auth {
        return (
            FailureKind::AuthFailed,
            format!("authentication failed: {error}"),
        );
    }
    if error.is_connection_refusal() {
        return (FailureKind::ConnectRefused, "connection refused".to_owned());
    }
    (otherwise, format!("{doing}: {error}"))
}

/// A reply as text: strings and numbers as written, `OK` as `OK`, anything else as debugged.
fn text(reply: Value) -> String {
    match reply {
        Value::Okay => "OK".to_owned(),
        Value::Int(n) => n.to_string(),
        Value::SimpleString(s) => s,
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        other => format!("{other:?}"),
    }
}
