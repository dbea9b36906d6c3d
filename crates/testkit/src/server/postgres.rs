//! A throwaway PostgreSQL server.

use std::ffi::OsString;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{User, geteuid};
use tempfile::TempDir;
use tokio::time::timeout;

use super::instance::{Instance, Probe};
use super::pgwire::Session;
use super::process::{Launch, RunAs, is_executable};
use super::{ServerConfig, ServerError, lifecycle_methods};

const SERVER: &str = "postgresql";
const PACKAGE: &str = "postgresql";
/// Where Debian installs each major version's binaries.
const VERSIONS_DIR: &str = "/usr/lib/postgresql";
/// The superuser `initdb` creates, and the system user the server runs as under root.
const USER: &str = "postgres";

/// A row of a query result: each column as text, `None` for NULL.
pub type Row = Vec<Option<String>>;

/// A throwaway PostgreSQL server: a fresh cluster (`initdb`) in a temporary directory, served by a
/// `postgres` child process on a free port, with superuser `postgres` and trust authentication.
///
/// Uses the newest version under `/usr/lib/postgresql/*/bin`. Runs with `fsync=off` (data survives
/// a kill of the server, not of the machine) and without a unix socket.
#[derive(Debug)]
pub struct Postgres {
    instance: Instance,
}

impl Postgres {
    /// Creates a cluster and starts a server on a free port with the default [`ServerConfig`],
    /// returning once it accepts sessions.
    ///
    /// # Errors
    /// [`ServerError::MissingBinary`] when PostgreSQL is not installed; otherwise when the cluster
    /// cannot be created or the server does not become ready in time (the error quotes its log).
    pub async fn start() -> Result<Self, ServerError> {
        Self::start_with(ServerConfig::default()).await
    }

    /// Like [`start`](Self::start), with the given settings.
    ///
    /// # Errors
    /// As for [`start`](Self::start).
    pub async fn start_with(config: ServerConfig) -> Result<Self, ServerError> {
        let bin = binaries()?;
        let run_as = run_as()?;
        let dir = TempDir::with_prefix("rampart-postgres-").map_err(|e| setup("temp dir", e))?;
        if let Some(user) = run_as {
            chown(dir.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| setup("could not hand the temp dir to the postgres user", e))?;
        }
        let data = dir.path().join("data");
        initdb(&bin, dir.path(), &data, run_as).await?;

        let log = dir.path().join("postgres.log");
        let cwd = dir.path().to_owned();
        let instance = Instance::start(dir, Probe::Postgres, config, |port| {
            let args: Vec<OsString> = [
                "-D".into(),
                data.clone().into_os_string(),
                "-p".into(),
                port.to_string().into(),
            ]
            .into_iter()
            .chain(
                [
                    "listen_addresses=127.0.0.1",
                    // No unix socket: nothing is left behind in /tmp, and no socket lock file can
                    // stop a restart after a kill.
                    "unix_socket_directories=",
                    "fsync=off",
                ]
                .into_iter()
                .flat_map(|setting| ["-c".into(), setting.into()]),
            )
            .collect();
            Ok(Launch {
                server: SERVER,
                program: bin.join("postgres"),
                args,
                cwd: cwd.clone(),
                log: log.clone(),
                run_as,
            })
        })
        .await?;
        Ok(Self { instance })
    }

    lifecycle_methods!();

    /// The URL of the `postgres` database as the `postgres` superuser:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `database` as the `postgres` superuser.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port())
    }

    /// The cluster's data directory (kept across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// Creates database `name` and returns its URL, so that each test can have its own.
    ///
    /// # Errors
    /// When the server refuses (the database exists, the name is invalid) or does not answer within
    /// [`ServerConfig::query_timeout`].
    pub async fn create_database(&self, name: &str) -> Result<String, ServerError> {
        self.execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await?;
        Ok(self.database_url(name))
    }

    /// Runs `sql` (one or more statements) on the `postgres` database with a short-lived
    /// connection and discards any rows.
    ///
    /// # Errors
    /// As for [`query`](Self::query).
    pub async fn execute(&self, sql: &str) -> Result<(), ServerError> {
        self.query(sql).await.map(drop)
    }

    /// Runs `sql` on the `postgres` database with a short-lived connection (simple query protocol)
    /// and returns the rows of the last statement as text. Meant for test setup and checks (such as
    /// counting sessions in `pg_stat_activity`), not as a client to test.
    ///
    /// # Errors
    /// [`ServerError::Query`] when the server reports an error or the connection fails;
    /// [`ServerError::QueryTimeout`] after [`ServerConfig::query_timeout`] (a paused server).
    pub async fn query(&self, sql: &str) -> Result<Vec<Row>, ServerError> {
        self.query_in("postgres", sql).await
    }

    /// Like [`query`](Self::query), on database `database`.
    ///
    /// # Errors
    /// As for [`query`](Self::query).
    pub async fn query_in(&self, database: &str, sql: &str) -> Result<Vec<Row>, ServerError> {
        let port = self.port();
        let waited = self.instance.config().query_timeout;
        let run = async {
            let mut session = Session::connect(port, USER, database).await?;
            let rows = session.query(sql).await?;
            session.terminate().await;
            Ok(rows)
        };
        match timeout(waited, run).await {
            Ok(result) => result.map_err(|e: super::pgwire::WireError| ServerError::Query {
                port,
                message: e.to_string(),
            }),
            Err(_) => Err(ServerError::QueryTimeout { port, waited }),
        }
    }
}

/// Ready when a session reaches ReadyForQuery: the port accepts connections while the server is
/// still starting up or recovering from a crash, and then refuses sessions.
pub(crate) async fn probe(port: u16) -> bool {
    match Session::connect(port, USER, "postgres").await {
        Ok(session) => {
            session.terminate().await;
            true
        }
        Err(_) => false,
    }
}

/// The `bin` directory of the newest PostgreSQL version installed.
fn binaries() -> Result<PathBuf, ServerError> {
    let missing = || ServerError::MissingBinary {
        server: SERVER,
        binary: format!("{VERSIONS_DIR}/*/bin/postgres"),
        package: PACKAGE,
    };
    let entries = std::fs::read_dir(VERSIONS_DIR).map_err(|_| missing())?;
    entries
        .flatten()
        .filter_map(|entry| {
            let version = version_key(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            (is_executable(&bin.join("postgres")) && is_executable(&bin.join("initdb")))
                .then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .ok_or_else(missing)
}

/// Orders version directory names numerically: "9.6" < "15" < "17".
fn version_key(name: &str) -> Option<(u32, u32)> {
    let mut parts = name.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The `postgres` system user when running as root (the server refuses to run as root), `None`
/// (the current user) otherwise.
fn run_as() -> Result<Option<RunAs>, ServerError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(USER) {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        Ok(None) => Err(ServerError::MissingUser {
            server: SERVER,
            user: USER,
            package: PACKAGE,
        }),
        Err(e) => Err(setup("could not look up the postgres user", e.into())),
    }
}

async fn initdb(
    bin: &Path,
    cwd: &Path,
    data: &Path,
    run_as: Option<RunAs>,
) -> Result<(), ServerError> {
    let mut command = tokio::process::Command::new(bin.join("initdb"));
    command
        .arg("-D")
        .arg(data)
        .args(["-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8"])
        .arg("--locale=C")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    let output = command
        .output()
        .await
        .map_err(|e| setup("could not run initdb", e))?;
    if output.status.success() {
        return Ok(());
    }
    Err(ServerError::Init {
        server: SERVER,
        step: "initdb",
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Quotes an identifier for SQL: `"name"`, with embedded quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn setup(what: &str, source: std::io::Error) -> ServerError {
    ServerError::Setup {
        server: SERVER,
        what: what.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("9.6") < version_key("15"));
        assert!(version_key("15") < version_key("17"));
        assert_eq!(version_key("main"), None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
