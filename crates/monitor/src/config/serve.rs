//! The daemon's own sections: `[server]` (the HTTP listener and the write token) and `[store]`
//! (the history file and its retention).

use std::net::SocketAddr;
use std::path::PathBuf;

use rampart_resilience::ConfigError;
use serde::Deserialize;

use super::Secret;
use super::parse::read_lenient;
use super::secret::SecretSource;
use super::tls::{RawTls, ServerTls, tls};
use crate::store::Retention;

/// The default listen address of `rampart serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The default history file of `rampart serve`, relative to the working directory.
pub const DEFAULT_STORE_PATH: &str = "rampart.db";

/// `[server]`: where `rampart serve` listens and the token that allows writes through its API.
///
/// ```toml
/// [server]
/// listen = "127.0.0.1:8080"       # default
/// write_token_env = "RAMPART_TOKEN" # or write_token_file = "/run/secrets/rampart-token"
/// tls = { cert = "cert.pem", key = "key.pem" } # optional: HTTPS
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address to listen on (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// The bearer token that allows writes (`POST`/`PUT`/`DELETE /api/targets`), from
    /// `write_token_env` or `write_token_file`; `None`: the API is read-only.
    pub write_token: Option<Secret>,
    /// `tls = { cert, key }`: serve HTTPS with these PEM files; `None`: plain HTTP.
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            write_token: None,
            tls: None,
        }
    }
}

/// `[store]`: the history file and how long each level is kept.
///
/// ```toml
/// [store]
/// path = "rampart.db"        # default, relative to the working directory
/// retention = { raw = "7d" } # see `Retention`
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The SQLite file (default [`DEFAULT_STORE_PATH`]).
    pub path: PathBuf,
    /// How long each level is kept.
    pub retention: Retention,
}

impl ServerConfig {
    /// Listens on `listen`, read-only.
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            write_token: None,
            tls: None,
        }
    }

    /// Serves HTTPS with `tls`.
    #[must_use]
    pub fn with_tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Allows writes with `token`.
    pub fn with_write_token(mut self, token: Secret) -> Self {
        self.write_token = Some(token);
        self
    }
}

impl StoreConfig {
    /// Keeps history in `path` with the default retention.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            retention: Retention::default(),
        }
    }
}

impl StoreConfig {
    /// The `[store]` section of a configuration file's `table` alone (the defaults if it has
    /// none), for tools that need only the store, like `rampart backup`: the rest of the file
    /// is not validated. `origin` names the file in errors.
    pub fn from_table(table: &toml::Table, origin: Option<&str>) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(origin);
        let config = match table.get("store") {
            Some(value) => store(value, &mut errors),
            None => Some(StoreConfig::default()),
        };
        errors.into_result(config.unwrap_or_default())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from(DEFAULT_STORE_PATH),
            retention: Retention::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    write_token_env: Option<String>,
    write_token_file: Option<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<String>,
    retention: Option<Retention>,
}

/// Reads `[server]`, reporting problems under `server.`.
pub(crate) fn server(value: &toml::Value, errors: &mut ConfigError) -> Option<ServerConfig> {
    let raw: RawServer = read_lenient("server", value, errors)?;
    let mut config = ServerConfig::default();
    if let Some(listen) = &raw.listen {
        match listen.parse() {
            Ok(addr) => config.listen = addr,
            Err(_) => errors.push(
                "server.listen",
                format!("must be an address like \"127.0.0.1:8080\", got {listen:?}"),
            ),
        }
    }
    if raw.write_token_env.is_some() || raw.write_token_file.is_some() {
        let source = SecretSource {
            inline: None,
            env: raw.write_token_env.as_deref(),
            file: raw.write_token_file.as_deref(),
        };
        config.write_token = source.read("server", "write_token", errors);
    }
    if let Some(raw) = &raw.tls {
        config.tls = tls(raw, errors);
    }
    Some(config)
}

/// Reads `[store]`, reporting problems under `store.`.
pub(crate) fn store(value: &toml::Value, errors: &mut ConfigError) -> Option<StoreConfig> {
    let raw: RawStore = read_lenient("store", value, errors)?;
    let mut config = StoreConfig::default();
    if let Some(path) = raw.path {
        if path.is_empty() {
            errors.push("store.path", "must not be empty");
        }
        config.path = PathBuf::from(path);
    }
    if let Some(retention) = raw.retention {
        config.retention = retention;
    }
    Some(config)
}
