//! Validating the sections of the kinds beyond HTTP and TCP.

use std::collections::HashMap;
use std::time::Duration;

use rampart_resilience::{ConfigError, format_duration};

use super::parse::{RawDns, RawHeartbeat, RawModelServer, RawMqtt, RawPostgres, RawRedis, RawTls};
use super::secret::SecretSource;
use super::validate::{MIN_INTERVAL, address_ok};
use super::{
    CheckConfig, DnsCheck, DnsMatch, DnsRecordType, ExpectedRole, HeartbeatCheck,
    HeartbeatSchedule, ModelServer, ModelServerCheck, MqttCheck, PostgresCheck, RedisCheck,
    TargetConfig, TlsCheck,
};

pub(super) fn postgres(
    path: &str,
    raw: &RawPostgres,
    errors: &mut ConfigError,
) -> Option<PostgresCheck> {
    let before = errors.problems.len();
    let source = SecretSource {
        inline: raw.url.as_deref(),
        env: raw.url_env.as_deref(),
        file: raw.url_file.as_deref(),
    };
    let url = source.read(path, "url", errors);
    if let Some(_url) = &url {
        feature_gated(
            path,
            "postgres",
            cfg!(feature = "postgres"),
            errors,
            |_errors| {
                #[cfg(feature = "postgres")]
                rampart_connect::postgres::PgConfig::new(_url.expose()).validate(path, _errors);
            },
        );
    }
    let query = raw.query.clone().unwrap_or_else(|| "SELECT 1".to_owned());
    if query.trim().is_empty() {
        errors.push(format!("{path}.query"), "must not be empty");
    }
    let role = expected_role(path, raw.role.as_deref(), errors);
    let check = PostgresCheck {
        url: url?,
        query,
        role,
        fresh_connection: raw.fresh_connection,
    };
    (errors.problems.len() == before).then_some(check)
}

pub(super) fn redis(path: &str, raw: &RawRedis, errors: &mut ConfigError) -> Option<RedisCheck> {
    let before = errors.problems.len();
    let source = SecretSource {
        inline: raw.url.as_deref(),
        env: raw.url_env.as_deref(),
        file: raw.url_file.as_deref(),
    };
    let url = source.read(path, "url", errors);
    if let Some(_url) = &url {
        feature_gated(path, "redis", cfg!(feature = "redis"), errors, |_errors| {
            #[cfg(feature = "redis")]
            rampart_connect::redis::RedisConfig::new(_url.expose()).validate(path, _errors);
        });
    }
    let mut check = RedisCheck::new("");
    if let Some(command) = &raw.command {
        if command.first().is_none_or(|c| c.trim().is_empty()) {
            errors.push(
                format!("{path}.command"),
                "must name a command, like [\"PING\"] or [\"GET\", \"key\"]",
            );
        }
        check.command = command.clone();
        check.expect = None;
    }
    if raw.expect.is_some() {
        check.expect = raw.expect.clone();
    }
    check.role = expected_role(path, raw.role.as_deref(), errors);
    check.fresh_connection = raw.fresh_connection;
    check.url = url?;
    (errors.problems.len() == before).then_some(check)
}

pub(super) fn model_server(
    path: &str,
    server: ModelServer,
    raw: &RawModelServer,
    errors: &mut ConfigError,
) -> Option<ModelServerCheck> {
    let before = errors.problems.len();
    feature_gated(path, "ai", cfg!(feature = "ai"), errors, |_| {});
    let url_ok = |key: &str, url: &str, errors: &mut ConfigError| {
        let ok = url
            .parse::<hyper::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            errors.push(
                format!("{path}.{key}"),
                format!("must be an absolute http:// or https:// url, got {url:?}"),
            );
        }
        ok
    };
    let url = raw.url.trim_end_matches('/').to_owned();
    let url_valid = url_ok("url", &url, errors);
    if url_valid && (url.ends_with("/v1") || url.ends_with("/v2")) {
        errors.push(
            format!("{path}.url"),
            "is the server's root, without /v1 or /v2 (the probe adds the API's paths)",
        );
    }
    if raw.model.trim().is_empty() || raw.model.contains(['/', '?', '#', ' ']) {
        errors.push(
            format!("{path}.model"),
            format!(
                "must be a model name without '/', '?', '#' or spaces, got {:?}",
                raw.model
            ),
        );
    }
    if raw.version.as_deref().is_some_and(|v| v.trim().is_empty()) {
        errors.push(format!("{path}.version"), "must not be empty");
    }
    let management_url = match (&raw.management_url, server) {
        (Some(m), ModelServer::TorchServe) => {
            url_ok("management_url", m, errors);
            Some(m.trim_end_matches('/').to_owned())
        }
        (Some(_), _) => {
            errors.push(
                format!("{path}.management_url"),
                "only a torchserve target has a management api",
            );
            None
        }
        (None, ModelServer::TorchServe) if url_valid => Some(with_port(&url, 8081)),
        (None, _) => None,
    };
    let check = ModelServerCheck {
        server,
        url,
        management_url,
        model: raw.model.clone(),
        version: raw.version.clone(),
    };
    (errors.problems.len() == before).then_some(check)
}

/// `url` (a valid absolute URL without a path) with its port replaced by `port`.
fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    // An IPv6 literal keeps its brackets; a port follows the last ':' after them.
    let host = match authority.rfind(']') {
        Some(end) => &authority[..=end],
        None => authority.split(':').next().unwrap_or(authority),
    };
    format!("{scheme}://{host}:{port}")
}

pub(super) fn mqtt(path: &str, raw: &RawMqtt, errors: &mut ConfigError) -> Option<MqttCheck> {
    let before = errors.problems.len();
    feature_gated(path, "mqtt", cfg!(feature = "mqtt"), errors, |_| {});
    address_ok(&format!("{path}.address"), &raw.address, errors);
    let mut check = MqttCheck::new(raw.address.clone());
    check.username = raw.username.clone();
    let source = SecretSource {
        inline: raw.password.as_deref(),
        env: raw.password_env.as_deref(),
        file: raw.password_file.as_deref(),
    };
    if source.inline.is_some() || source.env.is_some() || source.file.is_some() {
        check.password = source.read(path, "password", errors);
        if check.username.is_none() {
            errors.push(
                format!("{path}.username"),
                "is required with a password (MQTT 3.1.1 sends no password without a user name)",
            );
        }
    }
    if let Some(topic) = &raw.topic {
        if topic.is_empty() || topic.contains(['+', '#']) || topic.starts_with('$') {
            errors.push(
                format!("{path}.topic"),
                format!("must be a plain topic without wildcards or a leading `$`, got {topic:?}"),
            );
        }
        check.topic = topic.trim_end_matches('/').to_owned();
    }
    (errors.problems.len() == before).then_some(check)
}

/// The shortest heartbeat token accepted: long enough not to be guessed.
const MIN_TOKEN_LEN: usize = 16;

pub(super) fn heartbeat(
    path: &str,
    raw: &RawHeartbeat,
    errors: &mut ConfigError,
) -> Option<HeartbeatCheck> {
    let before = errors.problems.len();
    let source = SecretSource {
        inline: raw.token.as_deref(),
        env: raw.token_env.as_deref(),
        file: raw.token_file.as_deref(),
    };
    let token = source.read(path, "token", errors);
    if token
        .as_ref()
        .is_some_and(|t| t.expose().len() < MIN_TOKEN_LEN)
    {
        errors.push(
            format!("{path}.token"),
            format!("must be at least {MIN_TOKEN_LEN} characters long"),
        );
    }
    let schedule = match (raw.every, &raw.cron) {
        (Some(every), None) if every < MIN_INTERVAL => {
            errors.push(
                format!("{path}.every"),
                format!("must be at least 1s, got {}", format_duration(every)),
            );
            None
        }
        (Some(every), None) => Some(HeartbeatSchedule::Every(every)),
        (None, Some(pattern)) => match HeartbeatSchedule::cron(pattern) {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                errors.push(
                    format!("{path}.cron"),
                    format!("not a cron expression: {e}"),
                );
                None
            }
        },
        (None, None) => {
            errors.push(path, "one of `every` or `cron` is required");
            None
        }
        (Some(_), Some(_)) => {
            errors.push(
                format!("{path}.cron"),
                "give only one of `every` and `cron`",
            );
            None
        }
    };
    let check = HeartbeatCheck {
        token: token?,
        schedule: schedule?,
        grace: raw.grace.unwrap_or(Duration::from_secs(60)),
    };
    (errors.problems.len() == before).then_some(check)
}

/// Reports a heartbeat token used by two targets (a beat must name one target).
pub(super) fn unique_tokens<'a>(
    targets: impl IntoIterator<Item = (&'a str, &'a TargetConfig)>,
    errors: &mut ConfigError,
) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (path, t) in targets {
        if let CheckConfig::Heartbeat(h) = &t.check
            && let Some(first) = seen.insert(h.token.expose(), path)
        {
            errors.push(
                format!("{path}.heartbeat.token"),
                format!("the same token as {first}'s; each heartbeat target needs its own"),
            );
        }
    }
}

/// Runs `validate` if `feature` is `enabled` in this build, else reports that the kind needs it.
fn feature_gated(
    path: &str,
    feature: &str,
    enabled: bool,
    errors: &mut ConfigError,
    validate: impl FnOnce(&mut ConfigError),
) {
    if enabled {
        validate(errors);
    } else {
        errors.push(
            path,
            format!("this build has no {feature} probe (rampart-monitor's `{feature}` feature)"),
        );
    }
}

fn expected_role(path: &str, raw: Option<&str>, errors: &mut ConfigError) -> Option<ExpectedRole> {
    match raw? {
        "primary" => Some(ExpectedRole::Primary),
        "replica" => Some(ExpectedRole::Replica),
        other => {
            errors.push(
                format!("{path}.role"),
                format!("expected \"primary\" or \"replica\", got {other:?}"),
            );
            None
        }
    }
}

pub(super) fn tls(path: &str, raw: &RawTls, errors: &mut ConfigError) -> Option<TlsCheck> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let before = errors.problems.len();
    address_ok(&format!("{path}.address"), &raw.address, errors);
    let mut check = TlsCheck::new(raw.address.clone());
    if let Some(name) = &raw.server_name {
        check.server_name = name.clone();
    }
    if ServerName::try_from(check.server_name.as_str()).is_err() {
        errors.push(
            format!("{path}.server_name"),
            format!("not a DNS name or IP address: {:?}", check.server_name),
        );
    }
    check.warn_days = raw.warn_days.unwrap_or(check.warn_days);
    check.min_days = raw.min_days.unwrap_or(check.min_days.min(check.warn_days));
    if check.min_days > check.warn_days {
        errors.push(
            format!("{path}.min_days"),
            format!(
                "must not exceed warn_days ({}), got {}",
                check.warn_days, check.min_days
            ),
        );
    }
    if let Some(file) = &raw.ca_file {
        let read: Result<Vec<_>, _> =
            CertificateDer::pem_file_iter(file).and_then(|certs| certs.collect());
        match read {
            Ok(certs) if !certs.is_empty() => check.roots = Some(certs),
            Ok(_) => errors.push(
                format!("{path}.ca_file"),
                format!("{file:?} holds no PEM certificate"),
            ),
            Err(e) => errors.push(
                format!("{path}.ca_file"),
                format!("cannot read certificates from {file:?}: {e}"),
            ),
        }
    }
    (errors.problems.len() == before).then_some(check)
}

pub(super) fn dns(path: &str, raw: &RawDns, errors: &mut ConfigError) -> Option<DnsCheck> {
    let before = errors.problems.len();
    let name = raw.name.trim_end_matches('.');
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.contains(char::is_whitespace));
    if !labels_ok {
        errors.push(
            format!("{path}.name"),
            format!("not a DNS name: {:?}", raw.name),
        );
    }
    let record = match raw
        .record
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("A") => DnsRecordType::A,
        Some("AAAA") => DnsRecordType::Aaaa,
        Some("CNAME") => DnsRecordType::Cname,
        Some("MX") => DnsRecordType::Mx,
        Some("TXT") => DnsRecordType::Txt,
        Some(other) => {
            errors.push(
                format!("{path}.record"),
                format!("expected A, AAAA, CNAME, MX or TXT, got {other:?}"),
            );
            DnsRecordType::A
        }
    };
    let mut check = DnsCheck::new(&raw.name, record);
    if let Some(server) = &raw.server {
        match server.parse() {
            Ok(addr) => check.server = Some(addr),
            Err(_) => errors.push(
                format!("{path}.server"),
                format!("expected an \"ip:port\" address, got {server:?}"),
            ),
        }
    }
    for (i, answer) in raw.expected.iter().enumerate() {
        match normalise(record, answer) {
            Some(answer) => check.expected.push(answer),
            None => errors.push(
                format!("{path}.expected[{i}]"),
                format!("not a {} answer: {answer:?}", record.as_str()),
            ),
        }
    }
    check.matching = match raw.matching.as_deref() {
        None | Some("exact") => DnsMatch::Exact,
        Some("contains") => DnsMatch::Contains,
        Some(other) => {
            errors.push(
                format!("{path}.match"),
                format!("expected \"exact\" or \"contains\", got {other:?}"),
            );
            DnsMatch::Exact
        }
    };
    if check.matching == DnsMatch::Contains && check.expected.is_empty() {
        errors.push(
            format!("{path}.expected"),
            "`match = \"contains\"` needs answers",
        );
    }
    (errors.problems.len() == before).then_some(check)
}

/// An expected answer written the way the probe writes answers of `record`; `None` if it
/// cannot be one.
fn normalise(record: DnsRecordType, answer: &str) -> Option<String> {
    let name = |n: &str| {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        (!n.is_empty() && !n.contains(char::is_whitespace)).then_some(n)
    };
    match record {
        DnsRecordType::A => answer
            .trim()
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(|a| a.to_string()),
        DnsRecordType::Aaaa => answer
            .trim()
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| a.to_string()),
        DnsRecordType::Cname => name(answer),
        DnsRecordType::Mx => {
            let (preference, exchange) = answer.trim().split_once(char::is_whitespace)?;
            let preference: u16 = preference.parse().ok()?;
            Some(format!("{preference} {}", name(exchange)?))
        }
        DnsRecordType::Txt => Some(answer.to_owned()),
    }
}
