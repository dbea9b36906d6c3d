//! Throwaway PostgreSQL, Redis and Mosquitto servers for tests.
//!
//! Each server runs as a child process of the test, on a free port on 127.0.0.1, in its own
//! temporary directory. Its handle can [`kill`](Postgres::kill) it (SIGKILL, then wait until it has
//! exited), [`pause`](Postgres::pause) and [`resume`](Postgres::resume) it (SIGSTOP / SIGCONT, to
//! every process of the server), and [`restart`](Postgres::restart) it on the same port and data.
//! Dropping the handle kills the server and removes its directory.
//!
//! `start` is async and waits until the server answers its own protocol (for PostgreSQL: until a
//! session reaches ReadyForQuery, since the port accepts connections while it is still starting
//! up or recovering), with a deadline of [`ServerConfig::ready_timeout`]. Start several at once with
//! `tokio::join!`.
//!
//! PostgreSQL refuses to run as root: when the test runs as root, `initdb` and `postgres` run as the
//! `postgres` system user, which owns the data directory.
//!
//! A server whose binary is not installed fails to start with [`ServerError::MissingBinary`],
//! which names the Debian package to install. [`require_or_skip`] (or the
//! [`require_server!`](crate::require_server) macro) turns that into a skipped test, unless the
//! environment variable `RAMPART_REQUIRE_SERVERS=1` is set (CI sets it), in which case the test
//! fails.
//!
//! ```no_run
//! use rampart_testkit::server::{Mosquitto, Postgres, Redis, require_or_skip};
//!
//! # async fn example() -> Result<(), rampart_testkit::server::ServerError> {
//! let (pg, redis, mqtt) = tokio::join!(Postgres::start(), Redis::start(), Mosquitto::start());
//! let (Some(mut pg), Some(redis), Some(mqtt)) =
//!     (require_or_skip(pg), require_or_skip(redis), require_or_skip(mqtt))
//! else {
//!     return Ok(());
//! };
//! println!("{} {} {}", pg.url(), redis.url(), mqtt.url());
//!
//! pg.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)").await?;
//! pg.kill().await?; // connections to pg.port() are now refused
//! pg.restart().await?; // same port, same data: crash recovery keeps the table
//! let rows = pg.query("SELECT id FROM kept").await?;
//! assert_eq!(rows, vec![vec![Some("1".to_owned())]]);
//!
//! redis.pause()?; // clients now hang until their own timeouts
//! redis.resume()?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::time::Duration;

mod instance;
mod mosquitto;
mod pgwire;
mod postgres;
mod process;
mod redis;

pub use mosquitto::Mosquitto;
pub use postgres::{Postgres, Row};
pub use redis::Redis;

/// The environment variable that turns a missing server binary into a test failure.
pub const REQUIRE_SERVERS_ENV: &str = "RAMPART_REQUIRE_SERVERS";

/// Settings shared by every throwaway server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// How long `start` and `restart` wait for the server to answer before giving up.
    /// Default: 20 s.
    pub ready_timeout: Duration,
    /// How long one [`Postgres::query`] or [`Postgres::execute`] may take. Default: 10 s.
    pub query_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(20),
            query_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Sets how long `start` and `restart` wait for the server to be ready.
    #[must_use]
    pub fn with_ready_timeout(mut self, ready_timeout: Duration) -> Self {
        self.ready_timeout = ready_timeout;
        self
    }

    /// Sets how long one query of the built-in PostgreSQL client may take.
    #[must_use]
    pub fn with_query_timeout(mut self, query_timeout: Duration) -> Self {
        self.query_timeout = query_timeout;
        self
    }
}

/// Why a throwaway server could not be started, controlled or queried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The server's binary is not installed.
    #[error(
        "{server} is not installed: {binary} not found (install the Debian package `{package}`)"
    )]
    MissingBinary {
        /// The server: `postgresql`, `redis` or `mosquitto`.
        server: &'static str,
        /// The binary, or where it was looked for.
        binary: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// No free port could be found on 127.0.0.1.
    #[error("could not find a free port on 127.0.0.1")]
    Port {
        /// Why binding port 0 failed.
        #[source]
        source: io::Error,
    },
    /// Preparing the server's directory, files or process failed.
    #[error("could not prepare {server}: {what}")]
    Setup {
        /// The server.
        server: &'static str,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The user a server must run as does not exist.
    #[error(
        "{server} cannot run as root and there is no `{user}` user to run it as (install the Debian package `{package}`)"
    )]
    MissingUser {
        /// The server.
        server: &'static str,
        /// The user looked for.
        user: &'static str,
        /// The Debian package that creates the user.
        package: &'static str,
    },
    /// Initialising the server's data failed (`initdb`).
    #[error("{server}: {step} failed ({status}); its output:\n{output}")]
    Init {
        /// The server.
        server: &'static str,
        /// The step that failed, such as `initdb`.
        step: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The server exited before it was ready.
    #[error("{server} on port {port} exited before it was ready ({status}); its log:\n{log}")]
    Exited {
        /// The server.
        server: &'static str,
        /// The port it was started on.
        port: u16,
        /// Its exit status.
        status: String,
        /// What it logged since it was started.
        log: String,
    },
    /// The server did not answer before the deadline.
    #[error("{server} on port {port} was not ready after {waited:?}; its log:\n{log}")]
    NotReady {
        /// The server.
        server: &'static str,
        /// Its port.
        port: u16,
        /// How long it was given.
        waited: Duration,
        /// What it logged since it was started.
        log: String,
    },
    /// A signal could not be sent to the server's process.
    #[error("could not send {signal} to {server} (pid {pid})")]
    Signal {
        /// The server.
        server: &'static str,
        /// The signal, such as `SIGKILL`.
        signal: &'static str,
        /// The process.
        pid: u32,
        /// Why sending failed.
        #[source]
        source: nix::Error,
    },
    /// The server is not running (it was killed and not restarted).
    #[error("{server} is not running")]
    NotRunning {
        /// The server.
        server: &'static str,
    },
    /// A killed server's processes were still there after the deadline.
    #[error("{server} was still running {waited:?} after SIGKILL")]
    StillRunning {
        /// The server.
        server: &'static str,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A query through the built-in PostgreSQL client failed.
    #[error("query on postgresql port {port} failed: {message}")]
    Query {
        /// The server's port.
        port: u16,
        /// The server's error (with its SQLSTATE), or what went wrong on the connection.
        message: String,
    },
    /// A query through the built-in PostgreSQL client took longer than its timeout.
    #[error("query on postgresql port {port} timed out after {waited:?}")]
    QueryTimeout {
        /// The server's port.
        port: u16,
        /// The timeout.
        waited: Duration,
    },
}

impl ServerError {
    /// Whether the server cannot run on this machine because something is not installed (its
    /// binary, or the user it runs as). [`require_or_skip`] skips a test for these errors.
    pub fn is_missing_binary(&self) -> bool {
        matches!(self, Self::MissingBinary { .. } | Self::MissingUser { .. })
    }

    /// Whether the server exited because its port was taken.
    pub(crate) fn is_address_in_use(&self) -> bool {
        matches!(self, Self::Exited { log, .. } if log.to_ascii_lowercase().contains("address already in use"))
    }
}

/// Whether `RAMPART_REQUIRE_SERVERS` asks for missing servers to fail tests (set to anything but
/// empty, `0`, `false` or `no`).
pub fn servers_required() -> bool {
    std::env::var(REQUIRE_SERVERS_ENV).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

/// Unwraps a started server for a test: `Some(server)` when it started; `None` (after printing a
/// skip line) when its binary is missing and [`servers_required`] is false.
///
/// # Panics
/// On any other error, and on a missing binary when `RAMPART_REQUIRE_SERVERS=1`: the test fails
/// with the error, which names the package to install.
#[track_caller]
pub fn require_or_skip<T>(started: Result<T, ServerError>) -> Option<T> {
    decide(started, servers_required())
}

#[track_caller]
fn decide<T>(started: Result<T, ServerError>, required: bool) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(e) if e.is_missing_binary() && !required => {
            eprintln!(
                "skipped at {}: {e} (set {REQUIRE_SERVERS_ENV}=1 to fail instead)",
                std::panic::Location::caller()
            );
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Starts a server for a test, or skips the test: evaluates to the server, or prints a skip line
/// and `return`s from the enclosing function when its binary is missing (see [`require_or_skip`];
/// with `RAMPART_REQUIRE_SERVERS=1` it panics instead). The enclosing function must return `()`.
///
/// ```no_run
/// # async fn test() {
/// let mut pg = rampart_testkit::require_server!(rampart_testkit::server::Postgres::start().await);
/// pg.kill().await.unwrap();
/// # }
/// ```
#[macro_export]
macro_rules! require_server {
    ($started:expr) => {
        match $crate::server::require_or_skip($started) {
            ::core::option::Option::Some(server) => server,
            ::core::option::Option::None => return,
        }
    };
}

/// The methods every server handle has, documented once.
macro_rules! lifecycle_methods {
    () => {
        /// The port the server listens on, on 127.0.0.1. It stays the same across restarts.
        pub fn port(&self) -> u16 {
            self.instance.port()
        }

        /// The host the server listens on: always `127.0.0.1`.
        pub fn host(&self) -> &'static str {
            "127.0.0.1"
        }

        /// The server's process id, or `None` after [`kill`](Self::kill).
        pub fn pid(&self) -> Option<u32> {
            self.instance.pid()
        }

        /// The server's temporary directory (removed when the handle is dropped).
        pub fn dir(&self) -> &std::path::Path {
            self.instance.dir()
        }

        /// What the server has logged since it was last started (at most the last few thousand
        /// characters).
        pub fn log(&self) -> String {
            self.instance.log()
        }

        /// Kills the server and all its processes with SIGKILL and waits until they have exited
        /// and the server is reaped; new connections to its port are then refused. Does nothing
        /// when it is not running.
        ///
        /// # Errors
        /// When a signal cannot be sent, or the processes are still there after 10 s.
        pub async fn kill(&mut self) -> Result<(), $crate::server::ServerError> {
            self.instance.kill().await
        }

        /// Freezes the server and all its processes (SIGSTOP): connections stay open and clients
        /// hang until their own timeouts.
        ///
        /// # Errors
        /// When the server is not running or a signal cannot be sent.
        pub fn pause(&self) -> Result<(), $crate::server::ServerError> {
            self.instance.pause()
        }

        /// Thaws a paused server (SIGCONT).
        ///
        /// # Errors
        /// When the server is not running or a signal cannot be sent.
        pub fn resume(&self) -> Result<(), $crate::server::ServerError> {
            self.instance.resume()
        }

        /// Starts the server again on the same port and directory, killing it first (and waiting
        /// for it to exit) if it is running, then waits until it is ready.
        ///
        /// # Errors
        /// When the server cannot be started or is not ready in time (for instance because
        /// another process took its port while it was down).
        pub async fn restart(&mut self) -> Result<(), $crate::server::ServerError> {
            self.instance.restart().await
        }
    };
}
pub(crate) use lifecycle_methods;

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> ServerError {
        ServerError::MissingBinary {
            server: "redis",
            binary: "redis-server".to_owned(),
            package: "redis-server",
        }
    }

    #[test]
    fn missing_binary_names_the_package() {
        let message = missing().to_string();
        assert!(message.contains("redis-server"), "{message}");
        assert!(message.contains("install the Debian package `redis-server`"));
        assert!(missing().is_missing_binary());
    }

    #[test]
    fn missing_binary_skips_unless_required() {
        assert_eq!(decide::<u8>(Err(missing()), false), None);
        assert_eq!(decide::<u8>(Ok(7), true), Some(7));
    }

    #[test]
    #[should_panic(expected = "install the Debian package")]
    fn missing_binary_fails_when_required() {
        decide::<u8>(Err(missing()), true);
    }

    #[test]
    #[should_panic(expected = "not ready")]
    fn other_errors_fail_even_when_not_required() {
        decide::<u8>(
            Err(ServerError::NotReady {
                server: "redis",
                port: 1,
                waited: Duration::from_secs(1),
                log: String::new(),
            }),
            false,
        );
    }

    #[test]
    fn address_in_use_is_recognised_in_the_log() {
        let exited = |log: &str| ServerError::Exited {
            server: "redis",
            port: 1,
            status: "exit status: 1".to_owned(),
            log: log.to_owned(),
        };
        assert!(exited("bind: Address already in use").is_address_in_use());
        assert!(!exited("out of memory").is_address_in_use());
    }
}
