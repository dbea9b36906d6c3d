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

mod checks;
pub(crate) mod parse;
mod secret;
mod sections;
mod serve;
mod tls;
mod validate;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use self::checks::url_authority;
pub use self::checks::{
    DnsCheck, DnsMatch, DnsRecordType, ExpectedRole, HeartbeatCheck, HeartbeatSchedule,
    ModelServer, ModelServerCheck, MqttCheck, PostgresCheck, RedisCheck, TlsCheck,
};
pub use self::secret::Secret;
pub use self::serve::{DEFAULT_LISTEN, DEFAULT_STORE_PATH, ServerConfig, StoreConfig};
pub use self::tls::ServerTls;
use hyper::{Method, Uri};
pub use rampart_resilience::{ConfigError, ConfigProblem};
use regex::Regex;

use self::parse::RawDefaults;
pub(crate) use self::parse::read_lenient;
pub(crate) use self::secret::SecretSource;
use self::validate::Node;

/// The kinds of probe this version knows.
pub const KINDS: &[&str] = &[
    "http",
    "tcp",
    "tls",
    "postgres",
    "redis",
    "mqtt",
    "heartbeat",
    "dns",
    "tfserving",
    "torchserve",
    "kserve",
];

/// A whole monitor configuration, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MonitorConfig {
    /// Every target, in file order. Names are unique; dependencies name existing targets and
    /// form no cycle.
    pub targets: Vec<TargetConfig>,
    /// `[server]`, if the file has one (`rampart serve` uses the defaults otherwise).
    pub server: Option<ServerConfig>,
    /// `[store]`, if the file has one (`rampart serve` uses the defaults otherwise).
    pub store: Option<StoreConfig>,
    /// `[alerting]`, if the file has one (no alerts are evaluated otherwise).
    pub alerting: Option<crate::alert::config::AlertingConfig>,
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
    /// `kind = "heartbeat"` with a `[target.heartbeat]` section: no active probe, the target's
    /// job reports in (see [`crate::heartbeat`]).
    Heartbeat(HeartbeatCheck),
    /// `kind = "dns"` with a `[target.dns]` section.
    Dns(DnsCheck),
    /// `kind = "tfserving"`, `"torchserve"` or `"kserve"` with the section of that name.
    ModelServer(ModelServerCheck),
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
            CheckConfig::Heartbeat(_) => "heartbeat",
            CheckConfig::Dns(_) => "dns",
            CheckConfig::ModelServer(m) => m.server.kind(),
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
            // Evaluated in memory: no host to spare.
            CheckConfig::Heartbeat(_) => "heartbeat".to_owned(),
            CheckConfig::Dns(d) => d.server.map_or_else(|| "dns".to_owned(), |s| s.to_string()),
            CheckConfig::ModelServer(m) => {
                let default = if m.url.starts_with("https://") {
                    443
                } else {
                    80
                };
                url_authority(&m.url, m.server.kind(), default)
            }
        }
    }
}

impl CheckConfig {
    /// True if `other` checks the same thing the same way (secrets compared too), so a
    /// reconfigured target with this check keeps its health state. Kinds this comparison does
    /// not know yet count as different: such a target starts over on every reconfiguration.
    pub fn same_as(&self, other: &CheckConfig) -> bool {
        match (self, other) {
            (CheckConfig::Http(a), CheckConfig::Http(b)) => {
                a.url == b.url
                    && a.method == b.method
                    && a.headers == b.headers
                    && a.body == b.body
                    && a.expected_status == b.expected_status
                    && a.body_contains == b.body_contains
                    && a.body_regex.as_ref().map(Regex::as_str)
                        == b.body_regex.as_ref().map(Regex::as_str)
                    && a.json_pointer == b.json_pointer
                    && a.max_redirects == b.max_redirects
                    && a.keep_alive == b.keep_alive
            }
            (CheckConfig::Tcp(a), CheckConfig::Tcp(b)) => a == b,
            (CheckConfig::Tls(a), CheckConfig::Tls(b)) => a == b,
            (CheckConfig::Postgres(a), CheckConfig::Postgres(b)) => a == b,
            (CheckConfig::Redis(a), CheckConfig::Redis(b)) => a == b,
            (CheckConfig::Mqtt(a), CheckConfig::Mqtt(b)) => a == b,
            (CheckConfig::Dns(a), CheckConfig::Dns(b)) => a == b,
            (CheckConfig::ModelServer(a), CheckConfig::ModelServer(b)) => a == b,
            (CheckConfig::Heartbeat(a), CheckConfig::Heartbeat(b)) => {
                let schedule = match (&a.schedule, &b.schedule) {
                    (HeartbeatSchedule::Every(x), HeartbeatSchedule::Every(y)) => x == y,
                    (HeartbeatSchedule::Cron(x), HeartbeatSchedule::Cron(y)) => {
                        x.pattern.to_string() == y.pattern.to_string()
                    }
                    _ => false,
                };
                schedule && a.token == b.token && a.grace == b.grace
            }
            // Different kinds, or a kind not compared above.
            #[allow(unreachable_patterns)]
            _ => false,
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
        sections::unique_tokens(
            nodes.iter().map(|n| n.path.as_str()).zip(&targets),
            &mut errors,
        );
        errors.into_result(MonitorConfig {
            targets,
            server: None,
            store: None,
            alerting: None,
        })
    }

    /// Reads and validates a configuration from TOML text; `origin` names it in error messages.
    #[allow(clippy::should_implement_trait)] // `FromStr` has no room for the origin.
    pub fn from_str(text: &str, origin: Option<&str>) -> Result<Self, ConfigError> {
        match text.parse::<toml::Table>() {
            Ok(table) => Self::from_table(&table, origin),
            Err(e) => {
                let mut errors = ConfigError::new(origin);
                errors.push("(syntax)", e.to_string().trim().to_owned());
                Err(errors)
            }
        }
    }

    /// Validates a configuration already parsed as a TOML table (say, a file's table with
    /// targets added to it); `origin` names it in error messages.
    pub fn from_table(table: &toml::Table, origin: Option<&str>) -> Result<Self, ConfigError> {
        let mut errors = ConfigError::new(origin);
        let mut defaults = RawDefaults::default();
        let (mut server, mut store, mut alerting) = (None, None, None);
        let mut raw_targets = Vec::new();
        for (key, value) in table {
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
                "server" => server = serve::server(value, &mut errors),
                "store" => store = serve::store(value, &mut errors),
                "alerting" => alerting = crate::alert::config::alerting(value, &mut errors),
                _ => errors.push(
                    key.as_str(),
                    "unknown key; expected `defaults`, `target`, `server`, `store` or `alerting`",
                ),
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
                targets.push((path, t));
            }
        }
        validate::check_graph(&nodes, &mut errors);
        sections::unique_tokens(targets.iter().map(|(p, t)| (p.as_str(), t)), &mut errors);
        let targets = targets.into_iter().map(|(_, t)| t).collect();
        errors.into_result(MonitorConfig {
            targets,
            server,
            store,
            alerting,
        })
    }

    /// The same configuration with `server` and `store` sections (for tests and embedding).
    pub fn with_sections(
        mut self,
        server: Option<ServerConfig>,
        store: Option<StoreConfig>,
    ) -> Self {
        self.server = server;
        self.store = store;
        self
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
