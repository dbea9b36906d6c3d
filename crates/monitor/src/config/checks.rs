//! The sections of the kinds beyond HTTP and TCP, validated: `[target.tls]`,
//! `[target.postgres]`, `[target.redis]`, `[target.mqtt]`, `[target.heartbeat]`,
//! `[target.dns]`.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::Secret;

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

/// `[target.heartbeat]`, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeartbeatCheck {
    /// The token the job sends (`POST /api/heartbeat/{token}`); from `token`, `token_env` or
    /// `token_file`, at least 16 characters.
    pub token: Secret,
    /// When beats are expected.
    pub schedule: HeartbeatSchedule,
    /// How late a beat may be before it counts as missed (default 1m).
    pub grace: Duration,
}

impl HeartbeatCheck {
    /// A check expecting a beat with `token` on `schedule`, with a grace of one minute.
    pub fn new(token: impl Into<String>, schedule: HeartbeatSchedule) -> Self {
        HeartbeatCheck {
            token: Secret::new(token),
            schedule,
            grace: Duration::from_secs(60),
        }
    }
}

/// When a heartbeat target expects its beats.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HeartbeatSchedule {
    /// `every = "1m"`: at most this long between beats.
    Every(Duration),
    /// `cron = "0 * * * *"`: one beat per occurrence of the expression (UTC), at or after it.
    Cron(Box<croner::Cron>),
}

impl HeartbeatSchedule {
    /// A cron schedule of `pattern` (5 fields, or 6 with seconds; UTC).
    pub fn cron(pattern: &str) -> Result<Self, String> {
        pattern
            .parse::<croner::Cron>()
            .map(|c| HeartbeatSchedule::Cron(Box::new(c)))
            .map_err(|e| e.to_string())
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
pub(super) fn url_authority(url: &str, fallback: &str, default_port: u16) -> String {
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

/// `[target.dns]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DnsCheck {
    /// The name to look up, fully qualified (a trailing dot is added if missing).
    pub name: String,
    /// The record type asked for (default A).
    pub record: DnsRecordType,
    /// The name server to ask (UDP), instead of the system's (`/etc/resolv.conf`).
    pub server: Option<SocketAddr>,
    /// The answers expected, normalised as the probe writes them (see [`DnsRecordType`]); empty:
    /// any answer passes.
    pub expected: Vec<String>,
    /// How answers are compared with `expected` (default: the same set).
    pub matching: DnsMatch,
}

impl DnsCheck {
    /// A check that `name` has at least one record of type `record`, asking the system's name
    /// servers.
    pub fn new(name: &str, record: DnsRecordType) -> Self {
        let name = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        DnsCheck {
            name,
            record,
            server: None,
            expected: Vec::new(),
            matching: DnsMatch::Exact,
        }
    }
}

/// The record types a DNS probe can ask for, and how their answers are written for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DnsRecordType {
    /// An IPv4 address: `192.0.2.1`.
    A,
    /// An IPv6 address, in its canonical form: `2001:db8::1`.
    Aaaa,
    /// The canonical name, lower-case, without the trailing dot: `web.example.com`.
    Cname,
    /// Preference and exchange: `10 mail.example.com`.
    Mx,
    /// The record's strings joined together.
    Txt,
}

impl DnsRecordType {
    /// The type as written in the file: `A`, `AAAA`, `CNAME`, `MX`, `TXT`.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecordType::A => "A",
            DnsRecordType::Aaaa => "AAAA",
            DnsRecordType::Cname => "CNAME",
            DnsRecordType::Mx => "MX",
            DnsRecordType::Txt => "TXT",
        }
    }
}

/// How a DNS probe compares its answers with the expected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DnsMatch {
    /// `match = "exact"`: the answers are exactly the expected ones (as sets).
    Exact,
    /// `match = "contains"`: every expected answer is among the answers (others may be there).
    Contains,
}

/// Which model server a [`ModelServerCheck`] asks, as its `kind` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelServer {
    /// `kind = "tfserving"`: TensorFlow Serving's REST API, `GET /v1/models/{model}`.
    TfServing,
    /// `kind = "torchserve"`: TorchServe's `GET /ping` and management `GET /models/{model}`.
    TorchServe,
    /// `kind = "kserve"`: KServe / Open Inference Protocol v2 health, readiness and metadata.
    KServe,
}

impl ModelServer {
    /// The kind's name as written in the file.
    pub fn kind(self) -> &'static str {
        match self {
            ModelServer::TfServing => "tfserving",
            ModelServer::TorchServe => "torchserve",
            ModelServer::KServe => "kserve",
        }
    }
}

/// `[target.tfserving]`, `[target.torchserve]` or `[target.kserve]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelServerCheck {
    /// Which server.
    pub server: ModelServer,
    /// The server's REST root (`http(s)://host:port`, without `/v1` or `/v2`): TF Serving's REST
    /// port (8501), TorchServe's inference API (8080), KServe's HTTP port (8080).
    pub url: String,
    /// TorchServe's management API root (default: `url` with port 8081); `None` for the others.
    pub management_url: Option<String>,
    /// The model whose readiness is checked.
    pub model: String,
    /// This version must be among the ready ones; `None`: any ready version passes.
    pub version: Option<String>,
}

impl ModelServerCheck {
    /// A check that `model` is ready on the `server` at `url`.
    pub fn new(server: ModelServer, url: impl Into<String>, model: impl Into<String>) -> Self {
        ModelServerCheck {
            server,
            url: url.into(),
            management_url: None,
            model: model.into(),
            version: None,
        }
    }
}
