//! One receiver as configured: a name and exactly one kind of notifier.
//!
//! ```toml
//! [[alerting.receiver]]
//! name = "ops"
//! webhook = { url = "https://hooks.example.com/rampart", secret_env = "RAMPART_WEBHOOK_SECRET" }
//!
//! [[alerting.receiver]]
//! name = "chat"
//! slack = { url_env = "SLACK_WEBHOOK_URL" }
//!
//! [[alerting.receiver]]
//! name = "mail"
//! email = { smtp = "smtp.example.com:587", from = "rampart@example.com", to = ["ops@example.com"], username = "rampart", password_file = "/run/secrets/smtp" }
//!
//! [[alerting.receiver]]
//! name = "pager"
//! pagerduty = { routing_key_env = "PD_ROUTING_KEY" }
//!
//! [[alerting.receiver]]
//! name = "am"
//! alertmanager = { url = "http://127.0.0.1:9093" }
//! ```
//!
//! Every secret (`url` of webhook and Slack, `secret`, `password`, `routing_key`) can be written
//! inline, or as `<key>_env` (an environment variable) or `<key>_file` (a file; one trailing
//! newline dropped). A `delivery` table is kept as written for the outbox to read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use rampart_resilience::{ConfigError, serde_duration};
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::http::{self, DEFAULT_TIMEOUT};
use super::{
    AlertmanagerConfig, AlertmanagerNotifier, BuildError, DEFAULT_PAGERDUTY_URL, EmailConfig,
    EmailNotifier, Notifier, PagerDutyConfig, PagerDutyNotifier, SlackConfig, SlackNotifier,
    SmtpSecurity, WebhookConfig, WebhookNotifier,
};
use crate::config::{Secret, SecretSource, read_lenient};

/// The kinds of receiver, as keys of a receiver table.
pub const RECEIVER_KINDS: &[&str] = &["webhook", "slack", "email", "pagerduty", "alertmanager"];

/// One configured receiver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReceiverConfig {
    /// Its name, which routes refer to.
    pub name: String,
    /// What it is and its settings.
    pub kind: ReceiverKind,
    /// The `delivery` table as written (retries, rate limits: read by the outbox), if any.
    pub delivery: Option<toml::Value>,
}

/// A receiver's kind and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiverKind {
    /// A generic, signed webhook.
    Webhook(WebhookConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// Email over SMTP.
    Email(EmailConfig),
    /// PagerDuty Events API v2.
    PagerDuty(PagerDutyConfig),
    /// A Prometheus Alertmanager.
    Alertmanager(AlertmanagerConfig),
}

impl ReceiverKind {
    /// `"webhook"`, `"slack"`, `"email"`, `"pagerduty"` or `"alertmanager"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReceiverKind::Webhook(_) => "webhook",
            ReceiverKind::Slack(_) => "slack",
            ReceiverKind::Email(_) => "email",
            ReceiverKind::PagerDuty(_) => "pagerduty",
            ReceiverKind::Alertmanager(_) => "alertmanager",
        }
    }
}

impl ReceiverConfig {
    /// A receiver named `name` of `kind`.
    pub fn new(name: impl Into<String>, kind: ReceiverKind) -> Self {
        ReceiverConfig {
            name: name.into(),
            kind,
            delivery: None,
        }
    }

    /// Reads one receiver table (see the module docs), reporting every problem under `path`
    /// (`alerting.receiver[0]`).
    pub fn from_toml(path: &str, value: &toml::Value) -> Result<ReceiverConfig, ConfigError> {
        let mut errors = ConfigError::new(None);
        match receiver(path, value, &mut errors) {
            Some(r) if errors.is_empty() => Ok(r),
            _ => Err(errors),
        }
    }

    /// Makes the notifier.
    pub fn build(&self) -> Result<Arc<dyn Notifier>, BuildError> {
        let name = self.name.clone();
        Ok(match &self.kind {
            ReceiverKind::Webhook(c) => Arc::new(WebhookNotifier::new(name, c)?),
            ReceiverKind::Slack(c) => Arc::new(SlackNotifier::new(name, c)?),
            ReceiverKind::Email(c) => Arc::new(EmailNotifier::new(name, c)?),
            ReceiverKind::PagerDuty(c) => Arc::new(PagerDutyNotifier::new(name, c)?),
            ReceiverKind::Alertmanager(c) => Arc::new(AlertmanagerNotifier::new(name, c)?),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    webhook: Option<toml::Value>,
    slack: Option<toml::Value>,
    email: Option<toml::Value>,
    pagerduty: Option<toml::Value>,
    alertmanager: Option<toml::Value>,
    delivery: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    host: Option<String>,
    port: Option<u16>,
    /// `"host:port"`, instead of `host` and `port`.
    smtp: Option<String>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    from: String,
    to: Vec<String>,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerDuty {
    routing_key: Option<String>,
    routing_key_env: Option<String>,
    routing_key_file: Option<String>,
    url: Option<String>,
    source: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: String,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

/// Reads one receiver table at `path` (`alerting.receiver[0]`), reporting every problem under
/// it: unknown keys, a missing or empty name, not exactly one kind, bad URLs, addresses,
/// headers, timeouts, and secrets that cannot be read.
pub(crate) fn receiver(
    path: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<ReceiverConfig> {
    let raw: RawReceiver = read_lenient(path, value, errors)?;
    let before = errors.problems.len();
    if raw.name.trim().is_empty() {
        errors.push(format!("{path}.name"), "must not be empty");
    }
    let given: Vec<(&str, &toml::Value)> = [
        ("webhook", &raw.webhook),
        ("slack", &raw.slack),
        ("email", &raw.email),
        ("pagerduty", &raw.pagerduty),
        ("alertmanager", &raw.alertmanager),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let (key, table) = match given.as_slice() {
        [one] => *one,
        [] => {
            errors.push(
                path.to_owned(),
                format!("needs one of {}", RECEIVER_KINDS.join(", ")),
            );
            return None;
        }
        many => {
            let keys: Vec<&str> = many.iter().map(|(k, _)| *k).collect();
            errors.push(
                path.to_owned(),
                format!("give only one kind, not {}", keys.join(" and ")),
            );
            return None;
        }
    };
    let at = format!("{path}.{key}");
    let kind = match key {
        "webhook" => webhook(&at, table, errors).map(ReceiverKind::Webhook),
        "slack" => slack(&at, table, errors).map(ReceiverKind::Slack),
        "email" => email(&at, table, errors).map(ReceiverKind::Email),
        "pagerduty" => pagerduty(&at, table, errors).map(ReceiverKind::PagerDuty),
        _ => alertmanager(&at, table, errors).map(ReceiverKind::Alertmanager),
    }?;
    if errors.problems.len() > before {
        return None;
    }
    Some(ReceiverConfig {
        name: raw.name,
        kind,
        delivery: raw.delivery,
    })
}

fn timeout(at: &str, timeout: Option<Duration>, errors: &mut ConfigError) -> Duration {
    match timeout {
        Some(t) if t.is_zero() => {
            errors.push(format!("{at}.timeout"), "must be more than 0s");
            DEFAULT_TIMEOUT
        }
        Some(t) => t,
        None => DEFAULT_TIMEOUT,
    }
}

/// Checks a URL; a secret one is never repeated in the message.
fn url(at: &str, key: &str, value: &str, secret: bool, errors: &mut ConfigError) {
    if http::check_url(key, value).is_err() {
        let message = if secret {
            "must be an absolute http(s) URL".to_owned()
        } else {
            format!("must be an absolute http(s) URL, got {value:?}")
        };
        errors.push(format!("{at}.{key}"), message);
    }
}

fn secret_url(
    at: &str,
    inline: Option<&str>,
    env: Option<&str>,
    file: Option<&str>,
    errors: &mut ConfigError,
) -> Option<Secret> {
    let source = SecretSource { inline, env, file };
    let secret = source.read(at, "url", errors)?;
    url(at, "url", secret.expose(), true, errors);
    Some(secret)
}

fn webhook(at: &str, value: &toml::Value, errors: &mut ConfigError) -> Option<WebhookConfig> {
    let raw: RawWebhook = read_lenient(at, value, errors)?;
    let url = secret_url(
        at,
        raw.url.as_deref(),
        raw.url_env.as_deref(),
        raw.url_file.as_deref(),
        errors,
    );
    let secret = if raw.secret.is_some() || raw.secret_env.is_some() || raw.secret_file.is_some() {
        let source = SecretSource {
            inline: raw.secret.as_deref(),
            env: raw.secret_env.as_deref(),
            file: raw.secret_file.as_deref(),
        };
        source.read(at, "secret", errors)
    } else {
        None
    };
    for (name, value) in &raw.headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(format!("{at}.headers.{name}"), "is not a valid header name");
        } else if HeaderValue::from_str(value).is_err() {
            errors.push(
                format!("{at}.headers.{name}"),
                "is not a valid header value",
            );
        }
    }
    let timeout = timeout(at, raw.timeout, errors);
    Some(WebhookConfig {
        url: url?,
        secret,
        headers: raw.headers,
        timeout,
    })
}

fn slack(at: &str, value: &toml::Value, errors: &mut ConfigError) -> Option<SlackConfig> {
    let raw: RawSlack = read_lenient(at, value, errors)?;
    let url = secret_url(
        at,
        raw.url.as_deref(),
        raw.url_env.as_deref(),
        raw.url_file.as_deref(),
        errors,
    );
    let timeout = timeout(at, raw.timeout, errors);
    Some(SlackConfig { url: url?, timeout })
}

fn email(at: &str, value: &toml::Value, errors: &mut ConfigError) -> Option<EmailConfig> {
    let raw: RawEmail = read_lenient(at, value, errors)?;
    let security = match raw.security.as_deref() {
        None | Some("starttls") => SmtpSecurity::StartTls,
        Some("tls") => SmtpSecurity::Tls,
        Some("none") => SmtpSecurity::None,
        Some(other) => {
            errors.push(
                format!("{at}.security"),
                format!("must be \"starttls\", \"tls\" or \"none\", got {other:?}"),
            );
            SmtpSecurity::StartTls
        }
    };
    let (host, port) = match (&raw.smtp, &raw.host) {
        (Some(_), Some(_)) => {
            errors.push(
                format!("{at}.smtp"),
                "give either `smtp = \"host:port\"` or `host` (and `port`), not both",
            );
            (String::new(), None)
        }
        (Some(smtp), None) => {
            if raw.port.is_some() {
                errors.push(format!("{at}.port"), "goes in `smtp` (\"host:port\")");
            }
            match smtp.rsplit_once(':') {
                Some((host, port)) => match port.parse::<u16>() {
                    Ok(port) => (host.to_owned(), Some(port)),
                    Err(_) => {
                        errors.push(
                            format!("{at}.smtp"),
                            format!("must be \"host:port\", got {smtp:?}"),
                        );
                        (host.to_owned(), None)
                    }
                },
                None => (smtp.clone(), None),
            }
        }
        (None, Some(host)) => (host.clone(), raw.port),
        (None, None) => {
            errors.push(
                format!("{at}.host"),
                "is required (or `smtp = \"host:port\"`)",
            );
            (String::new(), None)
        }
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.trim().is_empty() && (raw.host.is_some() || raw.smtp.is_some()) {
        let key = if raw.smtp.is_some() { "smtp" } else { "host" };
        errors.push(format!("{at}.{key}"), "must name a host");
    }
    if port == Some(0) {
        errors.push(format!("{at}.port"), "must not be 0");
    }
    if raw.from.parse::<Mailbox>().is_err() {
        errors.push(
            format!("{at}.from"),
            format!("is not an email address: {:?}", raw.from),
        );
    }
    if raw.to.is_empty() {
        errors.push(format!("{at}.to"), "needs at least one address");
    }
    for (i, to) in raw.to.iter().enumerate() {
        if to.parse::<Mailbox>().is_err() {
            errors.push(
                format!("{at}.to[{i}]"),
                format!("is not an email address: {to:?}"),
            );
        }
    }
    let has_password =
        raw.password.is_some() || raw.password_env.is_some() || raw.password_file.is_some();
    let password = match (&raw.username, has_password) {
        (Some(_), _) => SecretSource {
            inline: raw.password.as_deref(),
            env: raw.password_env.as_deref(),
            file: raw.password_file.as_deref(),
        }
        .read(at, "password", errors),
        (None, true) => {
            errors.push(format!("{at}.username"), "is required with a password");
            None
        }
        (None, false) => None,
    };
    let timeout = timeout(at, raw.timeout, errors);
    Some(EmailConfig {
        host,
        port: port.unwrap_or(security.default_port()),
        security,
        username: raw.username,
        password,
        from: raw.from,
        to: raw.to,
        timeout,
    })
}

fn pagerduty(at: &str, value: &toml::Value, errors: &mut ConfigError) -> Option<PagerDutyConfig> {
    let raw: RawPagerDuty = read_lenient(at, value, errors)?;
    let routing_key = SecretSource {
        inline: raw.routing_key.as_deref(),
        env: raw.routing_key_env.as_deref(),
        file: raw.routing_key_file.as_deref(),
    }
    .read(at, "routing_key", errors);
    let base = raw.url.unwrap_or_else(|| DEFAULT_PAGERDUTY_URL.to_owned());
    url(at, "url", &base, false, errors);
    if raw.source.as_deref().is_some_and(|s| s.trim().is_empty()) {
        errors.push(format!("{at}.source"), "must not be empty");
    }
    let timeout = timeout(at, raw.timeout, errors);
    Some(PagerDutyConfig {
        routing_key: routing_key?,
        url: base,
        source: raw.source.unwrap_or_else(|| "rampart".to_owned()),
        timeout,
    })
}

fn alertmanager(
    at: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<AlertmanagerConfig> {
    let raw: RawAlertmanager = read_lenient(at, value, errors)?;
    url(at, "url", &raw.url, false, errors);
    let timeout = timeout(at, raw.timeout, errors);
    Some(AlertmanagerConfig {
        url: raw.url,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ReceiverConfig, String> {
        let value: toml::Value = toml::from_str(text).unwrap();
        let mut errors = ConfigError::new(None);
        match receiver("alerting.receiver[0]", &value, &mut errors) {
            Some(r) if errors.is_empty() => Ok(r),
            _ => Err(errors.to_string()),
        }
    }

    #[test]
    fn each_kind_parses() {
        let r = parse(
            r#"name = "ops"
               webhook = { url = "https://h.example/hook", secret = "k", headers = { "X-A" = "b" }, timeout = "3s" }
               delivery = { max_age = "1h" }"#,
        )
        .unwrap();
        assert_eq!(r.name, "ops");
        let ReceiverKind::Webhook(w) = &r.kind else {
            panic!("{r:?}")
        };
        assert_eq!(w.url.expose(), "https://h.example/hook");
        assert_eq!(w.secret.as_ref().map(Secret::expose), Some("k"));
        assert_eq!(w.timeout, Duration::from_secs(3));
        assert!(r.delivery.as_ref().unwrap().get("max_age").is_some());
        assert_eq!(r.build().unwrap().kind(), "webhook");

        let r = parse(
            r#"name = "m"
               email = { host = "localhost", security = "none", from = "Rampart <r@x.org>", to = ["a@x.org", "b@x.org"] }"#,
        )
        .unwrap();
        let ReceiverKind::Email(e) = &r.kind else {
            panic!()
        };
        assert_eq!(
            (e.port, e.security, e.to.len()),
            (25, SmtpSecurity::None, 2)
        );
        assert_eq!(r.build().unwrap().kind(), "email");

        let r = parse(
            r#"name = "p"
                         pagerduty = { routing_key = "R" }"#,
        )
        .unwrap();
        let ReceiverKind::PagerDuty(p) = &r.kind else {
            panic!()
        };
        assert_eq!(p.url, DEFAULT_PAGERDUTY_URL);
        assert_eq!(r.build().unwrap().kind(), "pagerduty");
        let r = parse("name = \"s\"\nslack = { url = \"https://hooks.slack.com/services/T/B/x\" }")
            .unwrap();
        assert_eq!(r.build().unwrap().kind(), "slack");
        let r = parse("name = \"a\"\nalertmanager = { url = \"http://127.0.0.1:9093/\" }").unwrap();
        assert_eq!(r.build().unwrap().kind(), "alertmanager");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = parse(r#"name = "x""#).unwrap_err();
        assert!(err.contains("alerting.receiver[0]: needs one of"), "{err}");
        let err = parse("name = \"x\"\nslack = { url = \"https://a/b\" }\nalertmanager = { url = \"http://a\" }")
            .unwrap_err();
        assert!(
            err.contains("give only one kind, not slack and alertmanager"),
            "{err}"
        );
        let err = parse(
            r#"name = ""
               color = "red"
               email = { host = "", port = 0, security = "ssl", from = "nope", to = ["ok@x.org", "bad"], password = "p", typo = 1 }"#,
        )
        .unwrap_err();
        for want in [
            "alerting.receiver[0].color",
            "alerting.receiver[0].name: must not be empty",
            "alerting.receiver[0].email.typo",
            "alerting.receiver[0].email.security",
            "alerting.receiver[0].email.host",
            "alerting.receiver[0].email.port",
            "alerting.receiver[0].email.from",
            "alerting.receiver[0].email.to[1]",
            "alerting.receiver[0].email.username: is required with a password",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
    }

    #[test]
    fn secrets_come_from_env_or_files_and_are_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "routing-key-123\n").unwrap();
        let r = parse(&format!(
            "name = \"p\"\npagerduty = {{ routing_key_file = {:?}, url = \"http://127.0.0.1:1\" }}",
            file.display().to_string()
        ))
        .unwrap();
        let ReceiverKind::PagerDuty(p) = &r.kind else {
            panic!()
        };
        assert_eq!(p.routing_key.expose(), "routing-key-123");
        assert!(!format!("{r:?}").contains("routing-key-123"));

        let err = parse(
            "name = \"w\"\nwebhook = { url_env = \"RAMPART_TEST_SURELY_UNSET_VAR\", secret = \"a\", secret_env = \"B\" }",
        )
        .unwrap_err();
        assert!(
            err.contains("webhook.url_env: environment variable"),
            "{err}"
        );
        assert!(err.contains("webhook.secret: give only one"), "{err}");
        let err = parse("name = \"w\"\nslack = { url = \"ftp://token-xyz@h/x\" }").unwrap_err();
        assert!(
            err.contains("slack.url: must be an absolute http(s) URL"),
            "{err}"
        );
        assert!(!err.contains("token-xyz"), "{err}");
        let err = parse("name = \"w\"\nwebhook = { url = \"http://h\", timeout = \"0s\", headers = { \"bad header\" = \"v\" } }").unwrap_err();
        assert!(
            err.contains("webhook.timeout: must be more than 0s"),
            "{err}"
        );
        assert!(err.contains("webhook.headers.bad header"), "{err}");
    }
}
