//! PostgreSQL: a pool [`Manager`] over tokio-postgres, and a health check.
//!
//! [`PgConfig`] names the server (a URL or key-value connection string), the `application_name`
//! every pooled session carries (so `pg_stat_activity` tells the pool's sessions apart), an
//! optional `statement_timeout`, whether to `DISCARD ALL` on return, and how long a validity check
//! may take. [`PgConfig::build`] validates it into a [`PgManager`].
//!
//! Each pooled [`PgConnection`] owns the task that drives its socket: the task is aborted when the
//! connection is dropped, so no task outlives its connection. Validity is one round trip (an empty
//! simple query), bounded by `check_timeout`; a connection whose socket has closed is known to be
//! broken without any round trip.
//!
//! The statement timeout is sent as a startup option (`-c statement_timeout=…`) rather than with a
//! `SET` after connecting: it then costs no round trip, and `DISCARD ALL` (which resets every `SET`)
//! keeps it, since a setting given at connection start is the session's default.
//!
//! Plain TCP only: TLS (rustls) is not part of this slice.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use rampart_connect::postgres::{PgConfig, PgError, PgRole, pg_health};
//! use rampart_pool::{PoolConfig, PoolEvents};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PgConfig {
//!     application_name: "orders".to_owned(),
//!     statement_timeout: Some(Duration::from_secs(2)),
//!     discard_on_return: true,
//!     ..PgConfig::new("postgres://postgres@127.0.0.1:5432/postgres")
//! };
//! let pool = PoolConfig::default().build("orders", config.build("orders")?, &PoolEvents::new())?;
//! let mut conn = pool.acquire().await?;
//! if let Err(e) = conn.batch_execute("SET search_path TO orders").await {
//!     conn.observe(&PgError::from(e)); // closes the connection if the error means it is broken
//! }
//! let health = pg_health(&conn).await?;
//! assert_eq!(health.role, PgRole::Primary);
//! # Ok(()) }
//! ```

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use rampart_pool::Manager;
use rampart_resilience::ConfigError;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::NoTls;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::duration::at_least_1ms;

/// How to reach a PostgreSQL server and treat its pooled sessions. Unknown keys are refused;
/// durations are strings (`"5s"`).
///
/// ```toml
/// [postgres.orders]
/// url = "postgres://app@db.internal:5432/orders"
/// application_name = "orders"
/// statement_timeout = "5s"
/// discard_on_return = true
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// The server: a `postgres://` URL or a key-value string (`host=… user=…`). Required.
    pub url: String,
    /// The `application_name` of every session, shown in `pg_stat_activity`. Default
    /// `"rampart"`; not empty, at most 63 bytes (PostgreSQL's `NAMEDATALEN - 1`), and it
    /// replaces one given in `url`.
    #[serde(default = "defaults::application_name")]
    pub application_name: String,
    /// `statement_timeout` of every session, sent at connection start. Default: none (the
    /// server's); at least 1ms when set.
    #[serde(with = "rampart_resilience::serde_duration::option", default)]
    pub statement_timeout: Option<Duration>,
    /// Run `ROLLBACK` and `DISCARD ALL` on a returned connection before it is handed out again,
    /// so no session state (temporary tables, `SET`s, prepared statements, an open transaction)
    /// leaks from one borrower to the next. Costs two round trips per checkout of a returned
    /// connection. Default `false`. Note that statements prepared through the client are
    /// invalid afterwards.
    #[serde(default)]
    pub discard_on_return: bool,
    /// Longest a validity check or a reset may take before the connection is judged broken.
    /// Default `"5s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::check_timeout"
    )]
    pub check_timeout: Duration,
}

impl std::fmt::Debug for PgConfig {
    // The URL may carry a password: it is shown redacted, so a logged config leaks no secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &crate::redact::redact(&self.url))
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .field("discard_on_return", &self.discard_on_return)
            .field("check_timeout", &self.check_timeout)
            .finish()
    }
}

mod defaults {
    use std::time::Duration;

    pub(super) fn application_name() -> String {
        "rampart".to_owned()
    }
    pub(super) fn check_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

/// The longest `application_name` PostgreSQL keeps (it truncates longer ones).
const MAX_APPLICATION_NAME: usize = 63;

impl PgConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            application_name: defaults::application_name(),
            statement_timeout: None,
            discard_on_return: false,
            check_timeout: defaults::check_timeout(),
        }
    }

    /// Records every problem of this configuration under `path` (such as `postgres.orders`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        self.parse(path, errors);
    }

    fn parse(&self, path: &str, errors: &mut ConfigError) -> Option<tokio_postgres::Config> {
        let parsed = match tokio_postgres::Config::from_str(&self.url) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                // The parser's message may quote the password; only its kind is reported.
                errors.push(
                    format!("{path}.url"),
                    format!("is not a valid postgresql url or connection string ({e})"),
                );
                None
            }
        };
        if self.application_name.is_empty() || self.application_name.len() > MAX_APPLICATION_NAME {
            errors.push(
                format!("{path}.application_name"),
                format!(
                    "must be 1 to {MAX_APPLICATION_NAME} bytes long, got {}",
                    self.application_name.len()
                ),
            );
        }
        if let Some(t) = self.statement_timeout {
            at_least_1ms(errors, format!("{path}.statement_timeout"), t);
        }
        at_least_1ms(errors, format!("{path}.check_timeout"), self.check_timeout);
        parsed
    }

    /// Validates this configuration (problems are reported under `path`) and builds the manager.
    pub fn build(&self, path: &str) -> Result<PgManager, ConfigError> {
        let mut errors = ConfigError::new(None);
        let parsed = self.parse(path, &mut errors);
        errors.into_result(())?;
        let Some(mut config) = parsed else {
            unreachable!("a url that cannot be read is reported as a problem");
        };
        config.application_name(self.application_name.clone());
        if let Some(t) = self.statement_timeout {
            let option = format!("-c statement_timeout={}", t.as_millis().max(1));
            let options = match config.get_options() {
                Some(existing) if !existing.trim().is_empty() => format!("{existing} {option}"),
                _ => option,
            };
            config.options(options);
        }
        Ok(PgManager {
            config,
            application_name: self.application_name.clone(),
            discard_on_return: self.discard_on_return,
            check_timeout: self.check_timeout,
        })
    }
}

/// Opens and looks after PostgreSQL sessions for a [`rampart_pool::Pool`]. Built with
/// [`PgConfig::build`].
#[derive(Debug, Clone)]
pub struct PgManager {
    config: tokio_postgres::Config,
    application_name: String,
    discard_on_return: bool,
    check_timeout: Duration,
}

impl PgManager {
    /// The `application_name` every session of this manager carries.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// The tokio-postgres configuration sessions are opened with.
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        match timeout(self.check_timeout, work).await {
            Ok(result) => result.map_err(PgError::from),
            Err(_) => Err(PgError::Timeout {
                operation,
                after: self.check_timeout,
            }),
        }
    }
}

impl Manager for PgManager {
    type Connection = PgConnection;
    type Error = PgError;

    async fn connect(&self) -> Result<PgConnection, PgError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|source| PgError::Connect { source })?;
        // The task ends when the socket closes; `PgConnection` aborts it when dropped.
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PgConnection { client, task })
    }

    async fn is_valid(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        if conn.client.is_closed() {
            return Err(PgError::Closed);
        }
        self.bounded("validation", conn.client.simple_query(""))
            .await
            .map(drop)
    }

    async fn reset(&self, conn: &mut PgConnection) -> Result<(), PgError> {
        if conn.client.is_closed() {
            return Err(PgError::Closed);
        }
        if self.discard_on_return {
            // `DISCARD ALL` refuses to run inside a transaction block, so end one first (outside
            // one, `ROLLBACK` only warns). Two statements, as one string would be one implicit
            // transaction.
            self.bounded("reset", conn.client.batch_execute("ROLLBACK"))
                .await?;
            self.bounded("reset", conn.client.batch_execute("DISCARD ALL"))
                .await?;
        }
        Ok(())
    }

    fn is_fatal(&self, err: &PgError) -> bool {
        err.is_fatal()
    }
}

/// A PostgreSQL session made by a [`PgManager`]: the client, and the task that drives its socket.
///
/// Derefs to [`tokio_postgres::Client`]. Dropping it closes the session and aborts the task.
#[derive(Debug)]
pub struct PgConnection {
    client: Client,
    task: JoinHandle<()>,
}

impl PgConnection {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// True once the session's socket has closed (the server went away, or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl Deref for PgConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What went wrong talking to PostgreSQL. Ask with [`is_fatal`](PgError::is_fatal) (the session is
/// broken) and [`is_timeout`](PgError::is_timeout).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// Opening a session failed (refused, authentication, the server starting up or shutting down).
    #[error("could not connect to postgresql")]
    Connect {
        /// What tokio-postgres returned.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("postgresql statement failed")]
    Query {
        /// What tokio-postgres returned.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A check, reset or health query took longer than allowed; the session's state is unknown.
    #[error("postgresql {operation} timed out after {after:?}")]
    Timeout {
        /// What timed out: `validation`, `reset`.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The session's socket is closed.
    #[error("the postgresql connection is closed")]
    Closed,
    /// The server's answer to a health query was not what PostgreSQL sends.
    #[error("unexpected answer from postgresql to {query}: {detail}")]
    Unexpected {
        /// The query.
        query: &'static str,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl From<tokio_postgres::Error> for PgError {
    fn from(source: tokio_postgres::Error) -> Self {
        PgError::Query { source }
    }
}

impl PgError {
    /// True if the session is broken and must be discarded: it is closed, its socket failed, the
    /// server ended it (shutdown, connection exception), or a check timed out. False when only the
    /// statement failed (a constraint violation, a syntax error, a statement timeout).
    pub fn is_fatal(&self) -> bool {
        match self {
            PgError::Connect { .. } | PgError::Timeout { .. } | PgError::Closed => true,
            PgError::Query { source } => is_fatal(source),
            PgError::Unexpected { .. } => false,
        }
    }

    /// True if a check timed out, or the server cancelled a statement for its
    /// `statement_timeout` (SQLSTATE 57014).
    pub fn is_timeout(&self) -> bool {
        match self {
            PgError::Timeout { .. } => true,
            PgError::Query { source } => source.code() == Some(&SqlState::QUERY_CANCELED),
            _ => false,
        }
    }

    /// True if the session was found closed.
    pub fn is_closed(&self) -> bool {
        match self {
            PgError::Closed => true,
            PgError::Query { source } | PgError::Connect { source } => source.is_closed(),
            _ => false,
        }
    }
}

/// True if a tokio-postgres error means its session is broken (see [`PgError::is_fatal`]).
pub fn is_fatal(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // Class 08: connection exception; 57P01–57P05: the server is shutting down, crashed,
            // cannot accept now, or ended an idle session; class 58: system error.
            code.starts_with("08")
                || (code.starts_with("57P") && code != "57P04")
                || code.starts_with("58")
        }
        // Not from the server: a socket error or a broken protocol stream is fatal; a conversion
        // of a value on our side is not.
        None => {
            let mut cause = std::error::Error::source(err);
            while let Some(c) = cause {
                if c.is::<std::io::Error>() {
                    return true;
                }
                cause = c.source();
            }
            let text = err.to_string();
            !(text.starts_with("error serializing")
                || text.starts_with("error deserializing")
                || text.contains("column")
                || text.contains("parameters")
                || text.contains("unexpected number of rows")
                || text.starts_with("invalid configuration"))
        }
    }
}

/// Whether a server is a primary (accepts writes) or a replica in recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgRole {
    /// Not in recovery: `pg_is_in_recovery()` is false.
    Primary,
    /// In recovery (a standby): `pg_is_in_recovery()` is true.
    Replica,
}

impl std::fmt::Display for PgRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PgRole::Primary => "primary",
            PgRole::Replica => "replica",
        })
    }
}

/// What [`pg_health`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PgHealth {
    /// The server's version as it reports it (`server_version`), such as `15.8 (Debian 15.8-0+deb12u1)`.
    pub server_version: String,
    /// Primary or replica.
    pub role: PgRole,
    /// How long the health query's round trip took.
    pub latency: Duration,
}

impl PgHealth {
    /// The major version: the number before the first dot (`15` for `15.8`), if it reads as one.
    pub fn major_version(&self) -> Option<u32> {
        self.server_version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|major| major.parse().ok())
    }
}

const HEALTH_QUERY: &str = "SELECT current_setting('server_version'), pg_is_in_recovery()";

/// Asks the server for its version and role in one round trip, and times it.
///
/// Not bounded in time by itself (a paused server leaves it waiting): wrap it in
/// `tokio::time::timeout` or a resilience deadline, as a probe does.
pub async fn pg_health(client: &Client) -> Result<PgHealth, PgError> {
    let started = Instant::now();
    let messages = client.simple_query(HEALTH_QUERY).await?;
    let latency = started.elapsed();
    let unexpected = |detail: &str| PgError::Unexpected {
        query: HEALTH_QUERY,
        detail: detail.to_owned(),
    };
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| unexpected("no row"))?;
    let server_version = row
        .try_get(0)?
        .ok_or_else(|| unexpected("server_version is null"))?
        .to_owned();
    let role = match row.try_get(1)? {
        Some("t") => PgRole::Replica,
        Some("f") => PgRole::Primary,
        other => return Err(unexpected(&format!("pg_is_in_recovery() was {other:?}"))),
    };
    Ok(PgHealth {
        server_version,
        role,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = PgConfig {
            application_name: String::new(),
            statement_timeout: Some(Duration::ZERO),
            check_timeout: Duration::ZERO,
            ..PgConfig::new("postgres://h:notaport/db")
        };
        let mut errors = ConfigError::new(None);
        config.validate("postgres.orders", &mut errors);
        let paths: Vec<_> = errors.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "postgres.orders.url",
                "postgres.orders.application_name",
                "postgres.orders.statement_timeout",
                "postgres.orders.check_timeout"
            ]
        );
        assert!(config.build("postgres.orders").is_err());
    }

    #[test]
    fn sends_application_name_and_statement_timeout_at_startup() {
        let config = PgConfig {
            application_name: "orders".to_owned(),
            statement_timeout: Some(Duration::from_millis(1500)),
            ..PgConfig::new("postgres://u@127.0.0.1:5/db?options=-c%20search_path%3Dx")
        };
        let Ok(manager) = config.build("pg") else {
            panic!("valid config refused");
        };
        assert_eq!(manager.pg_config().get_application_name(), Some("orders"));
        assert_eq!(
            manager.pg_config().get_options(),
            Some("-c search_path=x -c statement_timeout=1500")
        );
    }

    #[test]
    fn reads_the_major_version() {
        let health = PgHealth {
            server_version: "15.8 (Debian 15.8-0+deb12u1)".to_owned(),
            role: PgRole::Primary,
            latency: Duration::ZERO,
        };
        assert_eq!(health.major_version(), Some(15));
    }
}
