//! Probes: one check of one target, timed phase by phase.
//!
//! A [`Probe`] runs once per scheduled tick and always returns a [`ProbeResult`]: success, or a
//! failure with a [`FailureKind`] that says which step failed (DNS, connect, status, body, ...).
//! Probes never panic and never outlive their timeout.
//!
//! ```
//! use std::time::Duration;
//! use rampart_monitor::probe::{Probe, TcpProbe, FailureKind};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let probe = TcpProbe::new(listener.local_addr()?.to_string());
//! let result = probe.probe(Duration::from_secs(1)).await;
//! assert!(result.is_success());
//! assert!(result.phases.connect.is_some());
//!
//! drop(listener); // the port is now closed: connecting is refused
//! let result = probe.probe(Duration::from_secs(1)).await;
//! assert_eq!(result.failure_kind(), Some(FailureKind::ConnectRefused));
//! # Ok(())
//! # }
//! ```

mod cert;
mod dns;
mod http;
#[cfg(feature = "ai")]
mod model_server;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod tcp;
mod tls;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

pub use self::dns::DnsProbe;
pub use self::http::{BODY_CAP, HttpProbe};
#[cfg(feature = "ai")]
pub use self::model_server::ModelServerProbe;
#[cfg(feature = "mqtt")]
pub use self::mqtt::MqttProbe;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresProbe;
#[cfg(feature = "redis")]
pub use self::redis::RedisProbe;
pub use self::tcp::TcpProbe;
pub use self::tls::TlsProbe;
use crate::config::CheckConfig;
/// A DER-encoded certificate, for [`HttpProbe::with_root_certificates`].
pub use rustls::pki_types::CertificateDer;

/// The future a [`Probe`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'a>>;

/// One kind of check. Object-safe so a scheduler can hold probes of every kind side by side.
pub trait Probe: Send + Sync {
    /// Runs the check once; it must finish within `timeout` (a probe that runs out of time
    /// returns a failure of kind [`FailureKind::Timeout`] or [`FailureKind::ConnectTimeout`]).
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_>;
}

/// Builds the probe a target's configuration asks for. A heartbeat target needs the monitor's
/// [`HeartbeatTracker`](crate::heartbeat::HeartbeatTracker) (as [`Monitor`](crate::Monitor)
/// provides); from here alone its probe always fails.
pub fn for_check(check: &CheckConfig) -> Box<dyn Probe> {
    match check {
        CheckConfig::Http(h) => Box::new(HttpProbe::new((**h).clone())),
        CheckConfig::Tcp(t) => Box::new(TcpProbe::new(t.address.clone())),
        CheckConfig::Tls(t) => Box::new(TlsProbe::new(t.clone())),
        #[cfg(feature = "postgres")]
        CheckConfig::Postgres(p) => Box::new(PostgresProbe::new(p.clone())),
        #[cfg(feature = "redis")]
        CheckConfig::Redis(r) => Box::new(RedisProbe::new(r.clone())),
        #[cfg(feature = "mqtt")]
        CheckConfig::Mqtt(m) => Box::new(MqttProbe::new(m.clone())),
        CheckConfig::Dns(d) => Box::new(DnsProbe::new(d.clone())),
        #[cfg(feature = "ai")]
        CheckConfig::ModelServer(m) => Box::new(ModelServerProbe::new(m.clone())),
        CheckConfig::Heartbeat(_) => Box::new(Unsupported(
            "a heartbeat target is evaluated by a HeartbeatProbe over the monitor's tracker"
                .to_owned(),
        )),
        #[allow(unreachable_patterns)] // reachable when a probe's feature is off
        other => Box::new(Unsupported(format!(
            "this build has no {kind} probe (rampart-monitor's `{kind}` feature)",
            kind = other.kind()
        ))),
    }
}

/// A check [`for_check`] cannot probe (its cargo feature is off, or it needs more than its
/// configuration): every probe fails with this message.
struct Unsupported(String);

impl Probe for Unsupported {
    fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            ProbeResult::failure(FailureKind::Protocol, self.0.clone(), Duration::ZERO)
        })
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProbeResult {
    /// Success, or which step failed and why.
    pub outcome: ProbeOutcome,
    /// Time from start to the end of the probe.
    pub latency: Duration,
    /// Time spent in each step that was reached.
    pub phases: Phases,
    /// What was observed along the way.
    pub details: Details,
    /// On a success, why the target should still count as degraded (a certificate that expires
    /// soon, say); `None` on a plain success and on failures.
    pub warning: Option<String>,
}

impl ProbeResult {
    /// A success that took `latency`.
    pub fn success(latency: Duration) -> Self {
        ProbeResult {
            outcome: ProbeOutcome::Success,
            latency,
            phases: Phases::default(),
            details: Details::default(),
            warning: None,
        }
    }
    /// A failure of `kind` that took `latency`.
    pub fn failure(kind: FailureKind, message: impl Into<String>, latency: Duration) -> Self {
        ProbeResult {
            outcome: ProbeOutcome::Failure {
                kind,
                message: message.into(),
            },
            latency,
            phases: Phases::default(),
            details: Details::default(),
            warning: None,
        }
    }
    /// This result turned into a failure of `kind`, keeping the phases and details gathered.
    pub(crate) fn into_failure(self, kind: FailureKind, message: impl Into<String>) -> Self {
        ProbeResult {
            outcome: ProbeOutcome::Failure {
                kind,
                message: message.into(),
            },
            warning: None,
            ..self
        }
    }
    /// The same success, with a warning that makes the target degraded.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warning = Some(warning.into());
        self
    }
    /// True if the check passed.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, ProbeOutcome::Success)
    }
    /// The failure's kind, if it failed.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match &self.outcome {
            ProbeOutcome::Success => None,
            ProbeOutcome::Failure { kind, .. } => Some(*kind),
        }
    }
}

/// Whether a probe passed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeOutcome {
    /// Every check passed.
    Success,
    /// A step failed.
    Failure {
        /// Which step.
        kind: FailureKind,
        /// What happened, lower-case, for people.
        message: String,
    },
}

/// Which step of a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The host name did not resolve.
    Dns,
    /// The connection was refused (nothing listens on the port).
    ConnectRefused,
    /// The connection was not established within the timeout.
    ConnectTimeout,
    /// The connection failed for another reason (unreachable network, reset, ...).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The probe ran out of time after connecting (no first byte, slow body, ...).
    Timeout,
    /// The server did not speak the protocol (malformed response, connection closed early).
    Protocol,
    /// The response status was not one of the expected ones.
    StatusMismatch,
    /// The body did not contain, match or hold what was expected (or was not JSON).
    BodyMismatch,
    /// More redirects than the target allows.
    TooManyRedirects,
    /// The certificate chain does not lead to a trusted root (or is otherwise invalid).
    CertificateUntrusted,
    /// The certificate is not valid for the name asked for.
    CertificateNameMismatch,
    /// The certificate has expired (or is not valid yet).
    CertificateExpired,
    /// The certificate is valid but expires within the target's `min_days`.
    CertificateExpiring,
    /// The server refused the credentials (wrong password, unknown user, not authorised).
    AuthFailed,
    /// The server answered the query or command with an error.
    QueryFailed,
    /// The answer was not the expected one (query result, command reply, DNS records).
    AnswerMismatch,
    /// The server's role (primary or replica) is not the expected one.
    RoleMismatch,
    /// A heartbeat target's job did not report in on schedule.
    Missed,
    /// The name does not exist (DNS `NXDOMAIN`).
    NxDomain,
    /// The name exists but has no record of the type asked for.
    NoRecords,
}

impl FailureKind {
    /// A short snake_case name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Connect => "connect",
            FailureKind::Tls => "tls",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::StatusMismatch => "status_mismatch",
            FailureKind::BodyMismatch => "body_mismatch",
            FailureKind::TooManyRedirects => "too_many_redirects",
            FailureKind::CertificateUntrusted => "certificate_untrusted",
            FailureKind::CertificateNameMismatch => "certificate_name_mismatch",
            FailureKind::CertificateExpired => "certificate_expired",
            FailureKind::CertificateExpiring => "certificate_expiring",
            FailureKind::AuthFailed => "auth_failed",
            FailureKind::QueryFailed => "query_failed",
            FailureKind::AnswerMismatch => "answer_mismatch",
            FailureKind::RoleMismatch => "role_mismatch",
            FailureKind::Missed => "missed",
            FailureKind::NxDomain => "nxdomain",
            FailureKind::NoRecords => "no_records",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Time spent in each step of a probe (summed over redirects); `None` for a step not reached or
/// not done (a reused connection has no DNS or connect phase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Phases {
    /// Resolving the host name.
    pub dns: Option<Duration>,
    /// Establishing the TCP connection.
    pub connect: Option<Duration>,
    /// The TLS handshake (https only).
    pub tls: Option<Duration>,
    /// From sending the request to the response head.
    pub first_byte: Option<Duration>,
    /// Reading the body.
    pub body: Option<Duration>,
    /// The query or command itself (database probes), or the round trip (mqtt).
    pub query: Option<Duration>,
}

/// What a probe observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Details {
    /// The address connected to (the last one, after redirects).
    pub remote: Option<SocketAddr>,
    /// The final HTTP status.
    pub status: Option<u16>,
    /// Redirects followed.
    pub redirects: u32,
    /// Body bytes read (at most the cap).
    pub body_bytes: Option<usize>,
    /// True if an existing connection was reused.
    pub reused_connection: bool,
    /// Whole days until the server's certificate expires (https on a fresh connection only).
    pub certificate_days_left: Option<i64>,
    /// Certificates the server sent, its own first (tls probes).
    pub chain_length: Option<usize>,
    /// The server certificate's subject, like `CN=example.com, O=Example` (tls probes).
    pub certificate_subject: Option<String>,
    /// The server certificate's issuer, written like the subject (tls probes).
    pub certificate_issuer: Option<String>,
    /// The server's version as it reports it (database probes).
    pub server_version: Option<String>,
    /// The server's role, `primary` or `replica` (database probes).
    pub role: Option<String>,
    /// The answers of a DNS probe, written as [`DnsRecordType`](crate::config::DnsRecordType)
    /// says, sorted.
    pub answers: Vec<String>,
    /// The versions a model server reported for the model, as `"VERSION STATE"` (`"1
    /// AVAILABLE"`; a KServe model without versions shows as `"- READY"`).
    pub model_versions: Vec<String>,
}

/// A failed step: its kind and a message for people.
pub(crate) type Failure = (FailureKind, String);

/// Ends a probe that started at `started`: `result` as gathered, turned into a failure if
/// `outcome` is one, with the latency measured up to now.
pub(crate) fn conclude(
    result: ProbeResult,
    outcome: Result<(), Failure>,
    started: tokio::time::Instant,
) -> ProbeResult {
    let mut result = match outcome {
        Ok(()) => result,
        Err((kind, message)) => result.into_failure(kind, message),
    };
    result.latency = started.elapsed();
    result
}

/// A failure of kind [`FailureKind::Timeout`]: `what` did not answer in time.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn timed_out(what: &str) -> Failure {
    (
        FailureKind::Timeout,
        format!("{what} did not answer within the timeout"),
    )
}

/// Records `actual` as the server's role, and fails as [`FailureKind::RoleMismatch`] if it is
/// not `expected`.
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn check_role(
    result: &mut ProbeResult,
    expected: Option<crate::config::ExpectedRole>,
    actual: crate::config::ExpectedRole,
) -> Result<(), Failure> {
    result.details.role = Some(actual.as_str().to_owned());
    match expected {
        Some(expected) if expected != actual => Err((
            FailureKind::RoleMismatch,
            format!(
                "server is a {}, expected a {}",
                actual.as_str(),
                expected.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

/// Resolves `host:port` and connects to the first address that accepts, filling in the DNS and
/// connect phases. Shared by the TCP and HTTP probes.
pub(crate) async fn connect(
    address: &str,
    deadline: tokio::time::Instant,
    phases: &mut Phases,
) -> Result<(tokio::net::TcpStream, SocketAddr), (FailureKind, String)> {
    use tokio::time::{Instant, timeout_at};
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = match timeout_at(deadline, tokio::net::lookup_host(address)).await
    {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err((FailureKind::Dns, format!("cannot resolve {address}: {e}"))),
        Err(_) => return Err((FailureKind::Dns, format!("resolving {address} timed out"))),
    };
    phases.dns = Some(started.elapsed());
    let Some(&first) = addrs.first() else {
        return Err((
            FailureKind::Dns,
            format!("{address} resolved to no address"),
        ));
    };
    let connecting = Instant::now();
    let mut last = (FailureKind::Connect, format!("cannot connect to {first}"));
    for addr in addrs {
        match timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                phases.connect = Some(connecting.elapsed());
                return Ok((stream, addr));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = (
                    FailureKind::ConnectRefused,
                    format!("connection to {addr} refused"),
                );
            }
            Ok(Err(e)) => {
                last = (
                    FailureKind::Connect,
                    format!("cannot connect to {addr}: {e}"),
                )
            }
            Err(_) => {
                return Err((
                    FailureKind::ConnectTimeout,
                    format!("connecting to {addr} timed out"),
                ));
            }
        }
    }
    Err(last)
}
