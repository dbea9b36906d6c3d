//! Redis: a pool [`Manager`] over the `redis` crate's async connection, and a health check.
//!
//! [`RedisConfig`] names the server, the client name every pooled connection sets (`CLIENT
//! SETNAME`, so `CLIENT LIST` tells the pool's connections apart) and how long a reply may take.
//! [`RedisConfig::build`] validates it into a [`RedisManager`].
//!
//! Each pooled connection is its own [`MultiplexedConnection`] (one socket): the pool, not the
//! multiplexer, shares work out, so one slow reply holds up only its own borrower. The task that
//! drives the socket belongs to the connection and is aborted when it is dropped. Pipelines go
//! through the pooled connection as through any async connection. Validity is a `PING`.
//!
//! Plain TCP only: TLS is not part of this slice.
//!
//! ```no_run
//! use rampart_connect::redis::{RedisConfig, RedisError, redis_health};
//! use rampart_pool::{PoolConfig, PoolEvents};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = RedisConfig::new("redis://127.0.0.1:6379").build("cache")?;
//! let pool = PoolConfig::default().build("cache", manager, &PoolEvents::new())?;
//! let mut conn = pool.acquire().await?;
//! let answer: Result<(u32, String), _> = redis::pipe()
//!     .cmd("INCR").arg("hits")
//!     .cmd("GET").arg("greeting")
//!     .query_async(&mut *conn)
//!     .await;
//! if let Err(e) = answer {
//!     conn.observe(&RedisError::from(e)); // closes the connection if it is broken
//! }
//! let health = redis_health(&mut *conn).await?;
//! println!("redis {} ({}) uses {} bytes", health.server_version, health.role, health.used_memory);
//! # Ok(()) }
//! ```

use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, RedisError as ClientError};
use rampart_pool::Manager;
use rampart_resilience::ConfigError;
use serde::Deserialize;
use tokio::time::Instant;

use crate::duration::at_least_1ms;

/// How to reach a Redis server. Unknown keys are refused; durations are strings (`"5s"`).
///
/// ```toml
/// [redis.cache]
/// url = "redis://127.0.0.1:6379/0"
/// client_name = "cache"
/// response_timeout = "2s"
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host:port[/db]`. Required.
    pub url: String,
    /// The name each connection sets with `CLIENT SETNAME`. Default `"rampart"`; not empty, no
    /// spaces or newlines.
    #[serde(default = "defaults::client_name")]
    pub client_name: String,
    /// Longest one command (or pipeline) waits for its reply; then it fails with a timeout, which
    /// closes the connection when reported to the pool. Default `"5s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::response_timeout"
    )]
    pub response_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    // The URL may carry a password: it is shown redacted, so a logged config leaks no secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &crate::redact::redact(&self.url))
            .field("client_name", &self.client_name)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

mod defaults {
    use std::time::Duration;

    pub(super) fn client_name() -> String {
        "rampart".to_owned()
    }
    pub(super) fn response_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

impl RedisConfig {
    /// A configuration for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            client_name: defaults::client_name(),
            response_timeout: defaults::response_timeout(),
        }
    }

    /// Records every problem of this configuration under `path` (such as `redis.cache`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        self.parse(path, errors);
    }

    fn parse(&self, path: &str, errors: &mut ConfigError) -> Option<Client> {
        let client = match Client::open(self.url.as_str()) {
            Ok(client) => Some(client),
            Err(e) => {
                errors.push(
                    format!("{path}.url"),
                    format!("is not a valid redis url ({:?})", e.kind()),
                );
                None
            }
        };
        if self.client_name.is_empty()
            || self
                .client_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(
                format!("{path}.client_name"),
                format!(
                    "must be non-empty without spaces, got {:?}",
                    self.client_name
                ),
            );
        }
        at_least_1ms(
            errors,
            format!("{path}.response_timeout"),
            self.response_timeout,
        );
        client
    }

    /// Validates this configuration (problems are reported under `path`) and builds the manager.
    pub fn build(&self, path: &str) -> Result<RedisManager, ConfigError> {
        let mut errors = ConfigError::new(None);
        let client = self.parse(path, &mut errors);
        errors.into_result(())?;
        let Some(client) = client else {
            unreachable!("a url that cannot be read is reported as a problem");
        };
        // The pool bounds connects with its own `connect_timeout`.
        let connection = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(Some(self.response_timeout));
        Ok(RedisManager {
            client,
            connection,
            client_name: self.client_name.clone(),
        })
    }
}

/// Opens and looks after Redis connections for a [`rampart_pool::Pool`]. Built with
/// [`RedisConfig::build`].
#[derive(Clone)]
pub struct RedisManager {
    client: Client,
    connection: AsyncConnectionConfig,
    client_name: String,
}

impl std::fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password: only the name is shown.
        f.debug_struct("RedisManager")
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}

impl RedisManager {
    /// The name every connection of this manager sets.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }
}

impl Manager for RedisManager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let connect = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&self.connection)
                .await?;
            ::redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&self.client_name)
                .query_async::<()>(&mut conn)
                .await?;
            Ok(conn)
        };
        connect
            .await
            .map_err(|source| RedisError::Connect { source })
    }

    async fn is_valid(&self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let pong: String = ::redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError::Unexpected {
                command: "PING",
                detail: format!("answered {pong:?}"),
            })
        }
    }

    fn is_fatal(&self, err: &RedisError) -> bool {
        err.is_fatal()
    }
}

/// What went wrong talking to Redis. Ask with [`is_fatal`](RedisError::is_fatal) (the connection is
/// broken) and [`is_timeout`](RedisError::is_timeout).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// Opening a connection (or naming it) failed.
    #[error("could not connect to redis")]
    Connect {
        /// What the redis client returned.
        #[source]
        source: ClientError,
    },
    /// A command or pipeline failed.
    #[error("redis command failed")]
    Command {
        /// What the redis client returned.
        #[source]
        source: ClientError,
    },
    /// The server's answer was not what Redis sends.
    #[error("unexpected answer from redis to {command}: {detail}")]
    Unexpected {
        /// The command.
        command: &'static str,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl From<ClientError> for RedisError {
    fn from(source: ClientError) -> Self {
        RedisError::Command { source }
    }
}

impl RedisError {
    /// True if the connection is broken and must be discarded: dropped, an I/O error, a reply
    /// that timed out (the connection is then suspect), or an error the client cannot recover
    /// from. False when only the command failed (a wrong type, a script error).
    pub fn is_fatal(&self) -> bool {
        match self {
            RedisError::Connect { .. } => true,
            RedisError::Command { source } => is_fatal(source),
            RedisError::Unexpected { .. } => true,
        }
    }

    /// True if a reply did not come within `response_timeout`.
    pub fn is_timeout(&self) -> bool {
        match self {
            RedisError::Connect { source } | RedisError::Command { source } => source.is_timeout(),
            RedisError::Unexpected { .. } => false,
        }
    }
}

/// True if a redis client error means its connection is broken (see [`RedisError::is_fatal`]).
pub fn is_fatal(err: &ClientError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

/// Whether a server is a master or a replica (`role` in `INFO replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisRole {
    /// `role:master`.
    Master,
    /// `role:slave` (a replica).
    Replica,
}

impl std::fmt::Display for RedisRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisRole::Master => "master",
            RedisRole::Replica => "replica",
        })
    }
}

/// What [`redis_health`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedisHealth {
    /// `redis_version` from `INFO server`, such as `7.0.15`.
    pub server_version: String,
    /// Master or replica.
    pub role: RedisRole,
    /// `used_memory` from `INFO memory`, in bytes.
    pub used_memory: u64,
    /// How long a `PING` round trip took.
    pub latency: Duration,
}

/// Times a `PING`, then asks `INFO server`, `INFO replication` and `INFO memory` in one pipeline.
///
/// Bounded by the connection's response timeout.
pub async fn redis_health<C: ConnectionLike + Send>(
    conn: &mut C,
) -> Result<RedisHealth, RedisError> {
    let started = Instant::now();
    let pong: String = ::redis::cmd("PING").query_async(conn).await?;
    let latency = started.elapsed();
    if pong != "PONG" {
        return Err(RedisError::Unexpected {
            command: "PING",
            detail: format!("answered {pong:?}"),
        });
    }
    let (server, replication, memory): (String, String, String) = ::redis::pipe()
        .cmd("INFO")
        .arg("server")
        .cmd("INFO")
        .arg("replication")
        .cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await?;
    let missing = |field: &str| RedisError::Unexpected {
        command: "INFO",
        detail: format!("no {field} field"),
    };
    let server_version = info_field(&server, "redis_version")
        .ok_or_else(|| missing("redis_version"))?
        .to_owned();
    let role = match info_field(&replication, "role") {
        Some("master") => RedisRole::Master,
        Some("slave" | "replica") => RedisRole::Replica,
        Some(other) => {
            return Err(RedisError::Unexpected {
                command: "INFO",
                detail: format!("unknown role {other:?}"),
            });
        }
        None => return Err(missing("role")),
    };
    let used_memory = info_field(&memory, "used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| missing("used_memory"))?;
    Ok(RedisHealth {
        server_version,
        role,
        used_memory,
        latency,
    })
}

/// The value of `key` in an `INFO` answer (`key:value` lines).
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "connected_slaves"), Some("0"));
        assert_eq!(info_field(info, "used_memory"), None);
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config = RedisConfig {
            client_name: "two words".to_owned(),
            response_timeout: Duration::ZERO,
            ..RedisConfig::new("http://nope")
        };
        let mut errors = ConfigError::new(None);
        config.validate("redis.cache", &mut errors);
        let paths: Vec<_> = errors.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "redis.cache.url",
                "redis.cache.client_name",
                "redis.cache.response_timeout"
            ]
        );
        assert!(RedisConfig::new("redis://127.0.0.1:1").build("r").is_ok());
    }
}
