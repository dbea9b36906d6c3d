//! The monitor's configuration: which targets to probe, how often, and what counts as healthy.
//!
//! A TOML file with optional `[defaults]` and one `[[target]]` per monitored thing. Unknown keys
//! are refused; durations are written like `"30s"`. [`MonitorConfig::from_str`] and
//! [`MonitorConfig::from_file`] report every problem at once, each with its key path
//! (`target[2].http.url: ...`). See `docs/monitor.md` for the full reference.
//!
//! ```
//! use rampart_monitor::config::{CheckConfig, MonitorConfig};
//!
//! let config = MonitorConfig::from_str(
//!     r#"
//!     [[target]]
//!     name = "api"
//!     kind = "http"
//!     interval = "10s"
//!     [target.http]
//!     url = "http://127.0.0.1:8080/health"
//!     expected_status = ["2xx"]
//!     "#,
//!     Some("monitor.toml"),
//! )?;
//! assert!(matches!(config.targets[0].check, CheckConfig::Http(_)));
//!
//! let err = MonitorConfig::from_str("[[target]]\nname = \"x\"\nkind = \"gopher\"\n", None)
//!     .unwrap_err()
//!     .to_string();
//! assert!(err.contains("target[0].kind"), "{err}");
//! # Ok::<(), rampart_resilience::ConfigError>(())
//! ```

mod parse;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use self::secret::Secret;
use hyper::{Method, Uri};
pub use rampart_resilience::{ConfigError, ConfigProblem};
use regex::Regex;
use rustls::pki_types::CertificateDer;

use self::parse::{RawDefaults, read_lenient};
use self::validate::Node;

/// The kinds of probe this version knows.
pub const KINDS: &[&str] = &["http", "tcp", "tls", "postgres", "redis", "mqtt"];

/// A whole monitor configuration, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// Every target, in file order. Names are unique; dependencies name existing targets and
    /// form no cycle.
    pub targets: Vec<TargetConfig>,
}

/// One monitored target.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TargetConfig {
    /// Unique name.
    pub name: String,
    /// Group for scores (default `"default"`).
    pub group: String,
    /// Time between probes (default from `[defaults]`, else 30s; at least 1s).
    pub interval: Duration,
    /// Time a probe may take (default from `[defaults]`, else 5s; at most `interval`).
    pub timeout: Duration,
    /// Weight in group and overall scores (default 1.0; positive and finite).
    pub weight: f64,
    /// Names of targets this one depends on.
    pub depends_on: Vec<String>,
    /// When the target's state changes.
    pub thresholds: Thresholds,
    /// What to probe and how.
    pub check: CheckConfig,
}

/// When a target's health state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Thresholds {
    /// Consecutive failures that make a target unhealthy (default 3, at least 1).
    pub failures_to_unhealthy: u32,
    /// Consecutive successes that make a recovering target healthy (default 2, at least 1).
    pub successes_to_healthy: u32,
    /// A success slower than this makes the target degraded (default: none).
    pub degraded_latency: Option<Duration>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            failures_to_unhealthy: 3,
            successes_to_healthy: 2,
            degraded_latency: None,
        }
    }
}

impl Thresholds {
    /// Thresholds with the given counts and no latency limit.
    pub fn new(failures_to_unhealthy: u32, successes_to_healthy: u32) -> Self {
        Thresholds {
            failures_to_unhealthy: failures_to_unhealthy.max(1),
            successes_to_healthy: successes_to_healthy.max(1),
            degraded_latency: None,
        }
    }

    /// The same thresholds, marking successes slower than `latency` as degraded.
    pub fn with_degraded_latency(mut self, latency: Duration) -> Self {
        self.degraded_latency = Some(latency);
        self
    }
}

/// What a target's probe checks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CheckConfig {
    /// `kind = "http"` with a `[target.http]` section.
    Http(Box<HttpCheck>),
    /// `kind = "tcp"` with a `[target.tcp]` section.
    Tcp(TcpCheck),
    /// `kind = "tls"` with a `[target.tls]` section.
    Tls(TlsCheck),
    /// `kind = "postgres"` with a `[target.postgres]` section.
    Postgres(PostgresCheck),
    /// `kind = "redis"` with a `[target.redis]` section.
    Redis(RedisCheck),
    /// `kind = "mqtt"` with a `[target.mqtt]` section.
    Mqtt(MqttCheck),
}

impl CheckConfig {
    /// The kind's name as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckConfig::Http(_) => "http",
            CheckConfig::Tcp(_) => "tcp",
            CheckConfig::Tls(_) => "tls",
            CheckConfig::Postgres(_) => "postgres",
            CheckConfig::Redis(_) => "redis",
            CheckConfig::Mqtt(_) => "mqtt",
        }
    }

    /// The `host:port` the probe connects to (for per-host limits).
    pub fn host(&self) -> String {
        match self {
            CheckConfig::Http(h) => {
                let host = h.url.host().unwrap_or_default();
                let default = if h.url.scheme_str() == Some("https") {
                    443
                } else {
                    80
                };
                let port = h.url.port_u16().unwrap_or(default);
                format!("{host}:{port}")
            }
            CheckConfig::Tcp(t) => t.address.clone(),
            CheckConfig::Tls(t) => t.address.clone(),
            CheckConfig::Postgres(p) => url_authority(p.url.expose(), "postgres", 5432),
            CheckConfig::Redis(r) => url_authority(r.url.expose(), "redis", 6379),
            CheckConfig::Mqtt(m) => m.address.clone(),
        }
    }
}

/// `[target.http]`, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpCheck {
    /// Absolute `http://` or `https://` URL.
    pub url: Uri,
    /// Request method (default `GET`).
    pub method: Method,
    /// Extra request headers.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// Request body (default empty).
    pub body: Option<String>,
    /// Statuses that count as success (default `2xx`).
    pub expected_status: Vec<StatusRange>,
    /// The body must contain this text.
    pub body_contains: Option<String>,
    /// The body must match this regular expression.
    pub body_regex: Option<Regex>,
    /// The body must be JSON whose value at `pointer` equals `equals`.
    pub json_pointer: Option<JsonPointerCheck>,
    /// Redirects followed before failing with too many redirects (default 0: a redirect status
    /// is judged like any other).
    pub max_redirects: u32,
    /// Reuse one connection across probes (default false: a fresh connection each time, so
    /// every phase is measured).
    pub keep_alive: bool,
}

impl HttpCheck {
    /// A `GET url` check expecting `2xx`, with no body checks. `url` must be absolute `http(s)://`.
    pub fn get(url: Uri) -> Self {
        HttpCheck {
            url,
            method: Method::GET,
            headers: Vec::new(),
            body: None,
            expected_status: vec![StatusRange::new(200, 299)],
            body_contains: None,
            body_regex: None,
            json_pointer: None,
            max_redirects: 0,
            keep_alive: false,
        }
    }
}

/// An inclusive range of HTTP statuses (`200` is `200..=200`, `"2xx"` is `200..=299`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest status in the range.
    pub low: u16,
    /// Highest status in the range.
    pub high: u16,
}

impl StatusRange {
    /// The statuses from `low` to `high`, both included.
    pub fn new(low: u16, high: u16) -> Self {
        StatusRange { low, high }
    }
    /// True if `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

/// `json_pointer = { pointer = "/status", equals = "ok" }`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPointerCheck {
    /// An RFC 6901 JSON pointer.
    pub pointer: String,
    /// The value expected there.
    pub equals: serde_json::Value,
}

/// `[target.tcp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpCheck {
    /// `host:port` to connect to.
    pub address: String,
}

impl TcpCheck {
    /// A check that connects to `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        TcpCheck {
            address: address.into(),
        }
    }
}

/// `[target.tls]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsCheck {
    /// `host:port` to connect to.
    pub address: String,
    /// The name the certificate must be valid for (default: the host of `address`).
    pub server_name: String,
    /// Fewer whole days left than this makes the target degraded (default 30).
    pub warn_days: u32,
    /// Fewer whole days left than this is a failure (default 7; at most `warn_days`).
    pub min_days: u32,
    /// Root certificates to trust instead of the Mozilla roots (from `ca_file`, PEM).
    pub roots: Option<Vec<CertificateDer<'static>>>,
}

impl TlsCheck {
    /// A check of `address` (`host:port`) for its host's name, with the default thresholds and
    /// the Mozilla roots.
    pub fn new(address: impl Into<String>) -> Self {
        let address = address.into();
        let server_name = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned();
        TlsCheck {
            address,
            server_name,
            warn_days: 30,
            min_days: 7,
            roots: None,
        }
    }
    /// The same check for the name `server_name`.
    pub fn with_server_name(mut self, server_name: impl Into<String>) -> Self {
        self.server_name = server_name.into();
        self
    }
    /// The same check with other thresholds (in whole days left).
    pub fn with_days(mut self, warn_days: u32, min_days: u32) -> Self {
        self.warn_days = warn_days;
        self.min_days = min_days;
        self
    }
    /// The same check trusting only `roots`.
    pub fn with_roots(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.roots = Some(roots);
        self
    }
}

/// `[target.postgres]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresCheck {
    /// The server: a `postgres://` URL or a key-value string (from `url`, `url_env` or
    /// `url_file`; it may hold a password, so it is kept as a [`Secret`]).
    pub url: Secret,
    /// The statement run on each probe (default `SELECT 1`).
    pub query: String,
    /// The role the server must have, if any.
    pub role: Option<ExpectedRole>,
    /// Open a new session for every probe instead of keeping one (default false).
    pub fresh_connection: bool,
}

impl PostgresCheck {
    /// A check of the server at `url` running `SELECT 1` on a kept session, any role.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresCheck {
            url: Secret::new(url),
            query: "SELECT 1".to_owned(),
            role: None,
            fresh_connection: false,
        }
    }
}

/// `[target.redis]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisCheck {
    /// The server: `redis://[user:password@]host:port[/db]` (from `url`, `url_env` or
    /// `url_file`; kept as a [`Secret`]).
    pub url: Secret,
    /// The command and its arguments, run on each probe (default `["PING"]`).
    pub command: Vec<String>,
    /// The reply the command must give, as text (default `PONG` for the default command, else
    /// none: any reply that is not an error passes).
    pub expect: Option<String>,
    /// The role the server must have, if any (a master is `primary`).
    pub role: Option<ExpectedRole>,
    /// Open a new connection for every probe instead of keeping one (default false).
    pub fresh_connection: bool,
}

impl RedisCheck {
    /// A check of the server at `url` expecting `PONG` to `PING` on a kept connection, any role.
    pub fn new(url: impl Into<String>) -> Self {
        RedisCheck {
            url: Secret::new(url),
            command: vec!["PING".to_owned()],
            expect: Some("PONG".to_owned()),
            role: None,
            fresh_connection: false,
        }
    }
}

/// `[target.mqtt]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MqttCheck {
    /// The broker's `host:port`.
    pub address: String,
    /// The user name to connect with, if any.
    pub username: Option<String>,
    /// The password (from `password`, `password_env` or `password_file`), if any.
    pub password: Option<Secret>,
    /// The prefix of each probe's own topic (default `rampart/monitor`); the probe subscribes to
    /// and publishes on `{topic}/{unique id}`.
    pub topic: String,
}

impl MqttCheck {
    /// An anonymous check of the broker at `address` (`host:port`) on the default topic prefix.
    pub fn new(address: impl Into<String>) -> Self {
        MqttCheck {
            address: address.into(),
            username: None,
            password: None,
            topic: "rampart/monitor".to_owned(),
        }
    }
}

/// The role a database server is expected to have (`role = "primary"` or `"replica"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedRole {
    /// Accepts writes (PostgreSQL not in recovery; a Redis master).
    Primary,
    /// A read-only copy (PostgreSQL in recovery; a Redis replica).
    Replica,
}

impl ExpectedRole {
    /// `"primary"` or `"replica"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedRole::Primary => "primary",
            ExpectedRole::Replica => "replica",
        }
    }
}

/// The `host:port` of a `scheme://[user[:password]@]host[:port][/...]` URL (never its user
/// information), for per-host limits; `fallback` if it is not such a URL.
fn url_authority(url: &str, fallback: &str, default_port: u16) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return fallback.to_owned();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        fallback.to_owned()
    } else if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    }
}

impl TargetConfig {
    /// A target with default interval (30s), timeout (5s), weight, thresholds and group.
    pub fn new(name: impl Into<String>, check: CheckConfig) -> Self {
        TargetConfig {
            name: name.into(),
            group: "default".to_owned(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            weight: 1.0,
            depends_on: Vec::new(),
            thresholds: Thresholds::default(),
            check,
        }
    }
    /// Sets the interval and timeout.
    pub fn with_timing(mut self, interval: Duration, timeout: Duration) -> Self {
        self.interval = interval;
        self.timeout = timeout;
        self
    }
    /// Sets the thresholds.
    pub fn with_thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }
    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }
    /// Sets the weight.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
    /// Adds a dependency on the target named `parent`.
    pub fn depends_on(mut self, parent: impl Into<String>) -> Self {
        self.depends_on.push(parent.into());
        self
    }
}

impl MonitorConfig {
    /// A configuration of the given targets, checked like a file would be (unique names, known
    /// dependencies, no cycles, timeout within interval).
    pub fn new(targets: Vec<TargetConfig>) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(None);
        let mut nodes = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let path = format!("target[{i}]");
            validate::timing(
                &path,
                t.interval,
                t.timeout,
                t.weight,
                &t.thresholds,
                &mut errors,
            );
            nodes.push(Node::of(path, t));
        }
        validate::check_graph(&nodes, &mut errors);
        errors.into_result(MonitorConfig { targets })
    }

    /// Reads and validates a configuration from TOML text; `origin` names it in error messages.
    #[allow(clippy::should_implement_trait)] // `FromStr` has no room for the origin.
    pub fn from_str(text: &str, origin: Option<&str>) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(origin);
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                errors.push("(syntax)", e.to_string().trim().to_owned());
                return Err(errors);
            }
        };
        let mut defaults = RawDefaults::default();
        let mut raw_targets = Vec::new();
        for (key, value) in &table {
            match key.as_str() {
                "defaults" => {
                    defaults = read_lenient(key, value, &mut errors).unwrap_or_default();
                }
                "target" => match value {
                    toml::Value::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let path = format!("target[{i}]");
                            let raw: Option<parse::RawTarget> =
                                read_lenient(&path, item, &mut errors);
                            raw_targets.push((path, raw));
                        }
                    }
                    other => errors.push(
                        "target",
                        format!(
                            "must be an array of tables ([[target]]), got {}",
                            other.type_str()
                        ),
                    ),
                },
                _ => errors.push(key.as_str(), "unknown key; expected `defaults` or `target`"),
            }
        }
        let mut targets = Vec::new();
        let mut nodes = Vec::new();
        for (path, raw) in raw_targets {
            let Some(raw) = raw else { continue };
            nodes.push(Node {
                path: path.clone(),
                name: raw.name.clone(),
                depends_on: raw.depends_on.clone(),
            });
            if let Some(t) = validate::target(&path, raw, &defaults, &mut errors) {
                targets.push(t);
            }
        }
        validate::check_graph(&nodes, &mut errors);
        errors.into_result(MonitorConfig { targets })
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_str(&text, Some(&shown)),
            Err(e) => {
                let mut errors = ConfigError::new(Some(&shown));
                errors.push("(file)", format!("cannot be read: {e}"));
                Err(errors)
            }
        }
    }

    /// True if `text` looks like a monitor configuration (it has `[[target]]` or `[defaults]`)
    /// rather than a resilience one. Unparseable text is not.
    pub fn looks_like(text: &str) -> bool {
        text.parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("target") || t.contains_key("defaults"))
    }

    /// The target names in each group, for reports.
    pub fn groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for t in &self.targets {
            groups.entry(&t.group).or_default().push(&t.name);
        }
        groups
    }
}

#[cfg(test)]
mod tests;
