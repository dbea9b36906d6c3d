//! The managed client's configuration.

use std::time::Duration;

use rampart_resilience::ConfigError;
use rampart_resilience::breaker::BreakerConfig;
use rampart_resilience::retry::{Backoff, Jitter};
use serde::Deserialize;

use super::{Messages, MqttClient, MqttError};
use crate::duration::at_least_1ms;

/// How to reach an MQTT broker and how to behave when it goes away. Unknown keys are refused;
/// durations are strings (`"5s"`).
///
/// ```toml
/// [mqtt.fleet]
/// url = "mqtt://127.0.0.1:1883"
/// client_id = "rampart-fleet"
/// keep_alive = "30s"
/// clean_session = true
/// inflight = 100
/// reconnect = { base_delay = "500ms", max_delay = "30s", multiplier = 2.0 }
/// breaker = { window = "consecutive", consecutive_failures = 5, wait_in_open = "10s" }
/// ```
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker: `mqtt://host:port` (port 1883 when left out), or `mqtts://host:port` for TLS
    /// (port 8883 when left out; rustls, the server's certificate checked against `ca_file` or,
    /// without it, the Mozilla roots). Required.
    pub url: String,
    /// PEM file with the certificate authorities trusted for `mqtts://` (instead of the Mozilla
    /// roots). Only with `mqtts://`.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The client id; the broker keeps a persistent session under it. Required; 1 to 128
    /// characters, no spaces or control characters.
    pub client_id: String,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, with `username`. Never shown in `Debug`.
    #[serde(default)]
    pub password: Option<String>,
    /// How often the client proves it is alive when it has nothing else to send. Default `"30s"`;
    /// at least 1 s (MQTT counts it in seconds).
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::keep_alive"
    )]
    pub keep_alive: Duration,
    /// `true` (default): every connection starts a new session and the client subscribes again
    /// itself. `false`: the broker keeps subscriptions and queued QoS 1/2 messages while the
    /// client is away.
    #[serde(default = "defaults::clean_session")]
    pub clean_session: bool,
    /// QoS 1/2 publishes that may await acknowledgement at once. Default 100; 1 to 65,535.
    #[serde(default = "defaults::inflight")]
    pub inflight: u16,
    /// Requests (publish, subscribe) queued for the connection before callers wait. Default 256; at
    /// least 1.
    #[serde(default = "defaults::request_queue")]
    pub request_queue: usize,
    /// Incoming messages queued for [`Messages`] before the connection stops reading. Default
    /// 1024; at least 1.
    #[serde(default = "defaults::message_queue")]
    pub message_queue: usize,
    /// Longest a TCP connect plus CONNECT/CONNACK may take. Default `"5s"`; whole seconds, at
    /// least 1 s.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// The backoff between reconnect attempts.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Seed of the client's jitter RNG. Default: derived from `client_id`, so every client of a
    /// fleet draws different delays, the same ones on every run.
    #[serde(default)]
    pub jitter_seed: Option<u64>,
    /// The circuit breaker on connect. Default: five failed connects in a row open it for 10 s.
    #[serde(default = "defaults::breaker")]
    pub breaker: BreakerConfig,
    /// The message the broker publishes for this client when its connection dies without a
    /// DISCONNECT.
    #[serde(default)]
    pub last_will: Option<LastWillConfig>,
}

/// Exponential backoff with full jitter between reconnect attempts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Ceiling of the first delay (the delay itself is uniform between 0 and the ceiling).
    /// Default `"500ms"`; at least 1 ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::base_delay"
    )]
    pub base_delay: Duration,
    /// No ceiling grows beyond this. Default `"30s"`; at least `base_delay`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::max_delay"
    )]
    pub max_delay: Duration,
    /// Growth of the ceiling per failed attempt. Default 2.0; 1 to 10.
    #[serde(default = "defaults::multiplier")]
    pub multiplier: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            base_delay: defaults::base_delay(),
            max_delay: defaults::max_delay(),
            multiplier: defaults::multiplier(),
        }
    }
}

impl ReconnectConfig {
    /// The backoff this describes (always full jitter).
    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            self.base_delay,
            self.max_delay,
            self.multiplier,
            Jitter::Full,
        )
    }
}

/// A last-will message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastWillConfig {
    /// Topic the will is published on. Required, not empty, no wildcards.
    pub topic: String,
    /// Its payload (UTF-8). Default empty.
    #[serde(default)]
    pub payload: String,
    /// Its QoS: 0, 1 or 2. Default 1.
    #[serde(default = "defaults::will_qos")]
    pub qos: u8,
    /// Whether the broker retains it. Default `false`.
    #[serde(default)]
    pub retain: bool,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &crate::redact::redact(&self.url))
            .field("ca_file", &self.ca_file)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("keep_alive", &self.keep_alive)
            .field("clean_session", &self.clean_session)
            .field("inflight", &self.inflight)
            .field("request_queue", &self.request_queue)
            .field("message_queue", &self.message_queue)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("jitter_seed", &self.jitter_seed)
            .field("breaker", &self.breaker)
            .field("last_will", &self.last_will)
            .finish()
    }
}

mod defaults {
    use std::time::Duration;

    use rampart_resilience::breaker::BreakerConfig;

    pub(super) fn keep_alive() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn clean_session() -> bool {
        true
    }
    pub(super) fn inflight() -> u16 {
        100
    }
    pub(super) fn request_queue() -> usize {
        256
    }
    pub(super) fn message_queue() -> usize {
        1024
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn base_delay() -> Duration {
        Duration::from_millis(500)
    }
    pub(super) fn max_delay() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn multiplier() -> f64 {
        2.0
    }
    pub(super) fn will_qos() -> u8 {
        1
    }
    pub(super) fn breaker() -> BreakerConfig {
        BreakerConfig::consecutive(5, Duration::from_secs(10))
    }
}

/// The broker's host and port, parsed from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Address {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
}

pub(super) fn parse_url(url: &str) -> Result<Address, String> {
    let (rest, tls) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (rest, true)
    } else {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| "must start with mqtt:// or mqtts://".to_owned())?;
        (rest, false)
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if rest.contains('/') {
        return Err("must not have a path".to_owned());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("has a bad port {port:?}"))?;
            (host, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    Ok(Address {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// The trusted roots: the certificates of `ca_file`, or the Mozilla roots.
fn load_roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let Some(file) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("cannot read certificates from {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", file.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("bad certificate in {}: {e}", file.display()))?;
    }
    Ok(roots)
}

/// QoS from its number.
pub(super) fn qos(n: u8) -> Option<rumqttc::QoS> {
    match n {
        0 => Some(rumqttc::QoS::AtMostOnce),
        1 => Some(rumqttc::QoS::AtLeastOnce),
        2 => Some(rumqttc::QoS::ExactlyOnce),
        _ => None,
    }
}

/// A seed from the client id (FNV-1a), so each client of a fleet jitters differently.
pub(super) fn seed_from(client_id: &str) -> u64 {
    client_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl MqttConfig {
    /// A configuration for `url` and `client_id` with every other field at its default.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        MqttConfig {
            url: url.into(),
            ca_file: None,
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: defaults::keep_alive(),
            clean_session: defaults::clean_session(),
            inflight: defaults::inflight(),
            request_queue: defaults::request_queue(),
            message_queue: defaults::message_queue(),
            connect_timeout: defaults::connect_timeout(),
            reconnect: ReconnectConfig::default(),
            jitter_seed: None,
            breaker: defaults::breaker(),
            last_will: None,
        }
    }

    /// The seed of this client's jitter RNG: [`jitter_seed`](Self::jitter_seed), or one derived
    /// from the client id.
    pub fn seed(&self) -> u64 {
        self.jitter_seed
            .unwrap_or_else(|| seed_from(&self.client_id))
    }

    /// The delays this client would wait before its first `attempts` reconnects in a row when
    /// every one of them fails (what [`ConnectionEvent::BackingOff`](super::ConnectionEvent)
    /// reports, in order). Pure: the same configuration always gives the same delays.
    pub fn reconnect_delays(&self, attempts: u32) -> Vec<Duration> {
        let backoff = self.reconnect.backoff();
        let mut rng = fastrand::Rng::with_seed(self.seed());
        let mut prev = backoff.base_delay();
        (0..attempts)
            .map(|n| {
                prev = backoff.delay(n, prev, &mut rng);
                prev
            })
            .collect()
    }

    /// Records every problem of this configuration under `path` (such as `mqtt.fleet`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        match parse_url(&self.url) {
            Err(problem) => errors.push(format!("{path}.url"), problem),
            Ok(address) => {
                if let Some(file) = &self.ca_file {
                    if !address.tls {
                        errors.push(
                            format!("{path}.ca_file"),
                            "needs an mqtts:// url".to_owned(),
                        );
                    } else if let Err(problem) = load_roots(Some(file)) {
                        errors.push(format!("{path}.ca_file"), problem);
                    }
                }
            }
        }
        if self.client_id.is_empty()
            || self.client_id.chars().count() > 128
            || self
                .client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(
                format!("{path}.client_id"),
                format!(
                    "must be 1 to 128 characters without spaces, got {:?}",
                    self.client_id
                ),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            errors.push(format!("{path}.password"), "needs a username".to_owned());
        }
        if self.keep_alive < Duration::from_secs(1) {
            errors.push(
                format!("{path}.keep_alive"),
                "must be at least 1s".to_owned(),
            );
        }
        if self.inflight == 0 {
            errors.push(format!("{path}.inflight"), "must be at least 1".to_owned());
        }
        if self.request_queue == 0 {
            errors.push(
                format!("{path}.request_queue"),
                "must be at least 1".to_owned(),
            );
        }
        if self.message_queue == 0 {
            errors.push(
                format!("{path}.message_queue"),
                "must be at least 1".to_owned(),
            );
        }
        if self.connect_timeout < Duration::from_secs(1) || self.connect_timeout.subsec_nanos() != 0
        {
            errors.push(
                format!("{path}.connect_timeout"),
                "must be whole seconds, at least 1s".to_owned(),
            );
        }
        at_least_1ms(
            errors,
            format!("{path}.reconnect.base_delay"),
            self.reconnect.base_delay,
        );
        if self.reconnect.max_delay < self.reconnect.base_delay {
            errors.push(
                format!("{path}.reconnect.max_delay"),
                "must be at least base_delay".to_owned(),
            );
        }
        if !(1.0..=10.0).contains(&self.reconnect.multiplier) {
            errors.push(
                format!("{path}.reconnect.multiplier"),
                format!(
                    "must be between 1 and 10, got {}",
                    self.reconnect.multiplier
                ),
            );
        }
        self.breaker.validate(&format!("{path}.breaker"), errors);
        if let Some(will) = &self.last_will {
            if will.topic.is_empty() || will.topic.contains(['+', '#']) {
                errors.push(
                    format!("{path}.last_will.topic"),
                    "must be non-empty without wildcards".to_owned(),
                );
            }
            if qos(will.qos).is_none() {
                errors.push(
                    format!("{path}.last_will.qos"),
                    format!("must be 0, 1 or 2, got {}", will.qos),
                );
            }
        }
    }

    /// Validates this configuration (problems reported under `path`, which also names the
    /// client's breaker) and starts the client: it connects in the background, see
    /// [`MqttClient::wait_connected`]. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`MqttError::Config`] listing every problem.
    pub fn connect(&self, path: &str) -> Result<(MqttClient, Messages), MqttError> {
        let mut errors = ConfigError::new(None);
        self.validate(path, &mut errors);
        errors.into_result(())?;
        MqttClient::start(self, path)
    }

    pub(super) fn options(&self) -> Result<rumqttc::MqttOptions, MqttError> {
        let address = parse_url(&self.url).map_err(|problem| {
            let mut errors = ConfigError::new(None);
            errors.push("url".to_owned(), problem);
            errors
        })?;
        let tls = address.tls;
        let mut options =
            rumqttc::MqttOptions::new(self.client_id.clone(), address.host, address.port);
        if tls {
            let roots = load_roots(self.ca_file.as_deref()).map_err(|problem| {
                let mut errors = ConfigError::new(None);
                errors.push("ca_file".to_owned(), problem);
                errors
            })?;
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| {
                    let mut errors = ConfigError::new(None);
                    errors.push("url".to_owned(), format!("tls: {e}"));
                    errors
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(client)),
            ));
        }
        options.set_keep_alive(self.keep_alive);
        options.set_clean_session(self.clean_session);
        options.set_inflight(self.inflight);
        options.set_request_channel_capacity(self.request_queue);
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(will) = &self.last_will {
            options.set_last_will(rumqttc::LastWill::new(
                will.topic.clone(),
                will.payload.clone().into_bytes(),
                qos(will.qos).unwrap_or(rumqttc::QoS::AtLeastOnce),
                will.retain,
            ));
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884"),
            Ok(Address {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false,
            })
        );
        assert_eq!(parse_url("mqtt://broker").map(|a| a.port), Ok(1883));
        assert_eq!(
            parse_url("mqtt://[::1]:1885").map(|a| a.host),
            Ok("::1".to_owned())
        );
        assert_eq!(
            parse_url("mqtts://broker").map(|a| (a.port, a.tls)),
            Ok((8883, true))
        );
        assert!(parse_url("ws://broker").is_err());
        assert!(parse_url("mqtt://broker:x").is_err());
        assert!(parse_url("mqtt://:1883").is_err());
    }

    #[test]
    fn every_problem_with_its_path() {
        let mut config = MqttConfig::new("http://x", "has space");
        config.inflight = 0;
        config.keep_alive = Duration::from_millis(10);
        config.reconnect.multiplier = 0.5;
        config.last_will = Some(LastWillConfig {
            topic: "a/#".into(),
            payload: String::new(),
            qos: 3,
            retain: false,
        });
        let mut errors = ConfigError::new(None);
        config.validate("mqtt.fleet", &mut errors);
        let text = errors.to_string();
        for key in [
            "mqtt.fleet.url",
            "mqtt.fleet.client_id",
            "mqtt.fleet.inflight",
            "mqtt.fleet.keep_alive",
            "mqtt.fleet.reconnect.multiplier",
            "mqtt.fleet.last_will.topic",
            "mqtt.fleet.last_will.qos",
        ] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn toml_with_unknown_keys_is_refused() {
        let ok: MqttConfig = toml::from_str(
            "url = \"mqtt://127.0.0.1\"\nclient_id = \"a\"\nreconnect = { base_delay = \"1s\" }\n",
        )
        .unwrap();
        assert_eq!(ok.reconnect.base_delay, Duration::from_secs(1));
        assert_eq!(ok.reconnect.max_delay, Duration::from_secs(30));
        assert!(
            toml::from_str::<MqttConfig>("url = \"mqtt://x\"\nclient_id = \"a\"\nbogus = 1\n")
                .is_err()
        );
    }

    #[test]
    fn password_is_redacted() {
        let mut config = MqttConfig::new("mqtt://u:secret@host", "a");
        config.username = Some("u".into());
        config.password = Some("hunter2".into());
        let text = format!("{config:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("secret"),
            "{text}"
        );
    }

    #[test]
    fn delays_are_seeded_per_client_and_capped() {
        let a = MqttConfig::new("mqtt://x", "a");
        let b = MqttConfig::new("mqtt://x", "b");
        assert_eq!(a.reconnect_delays(8), a.reconnect_delays(8));
        assert_ne!(a.reconnect_delays(8), b.reconnect_delays(8));
        for (n, d) in a.reconnect_delays(12).into_iter().enumerate() {
            let ceiling = a.reconnect.backoff().ceiling(n as u32);
            assert!(d <= ceiling && d <= a.reconnect.max_delay, "{n}: {d:?}");
        }
    }

    /// 500 clients whose broker went away at the same moment: their first reconnects, uniform
    /// over `[0, base_delay]`, are spread over the whole window. With base_delay 2 s the 20
    /// buckets of 100 ms expect 5 % each; none may hold more than 9 %. Derived from the
    /// configuration alone, so it holds on any machine.
    #[test]
    fn first_reconnects_of_a_fleet_are_spread() {
        let mut buckets = [0u32; 20];
        for i in 0..500 {
            let mut config = MqttConfig::new("mqtt://x", format!("device-{i}"));
            config.reconnect.base_delay = Duration::from_secs(2);
            let first = config.reconnect_delays(1)[0];
            let bucket = (first.as_millis() / 100).min(19) as usize;
            buckets[bucket] += 1;
        }
        let max = *buckets.iter().max().unwrap();
        assert!(max <= 45, "a 100 ms bucket holds {max} of 500: {buckets:?}");
        assert!(buckets.iter().all(|&n| n > 0), "{buckets:?}");
    }
}
