//! Email over SMTP with `lettre`: STARTTLS (port 587), implicit TLS (465) or plain (for a local
//! relay or a test server), optional authentication, several recipients. The subject is
//! [`Notification::title`]; the body has a plain-text and an HTML part. The `Message-ID` is
//! derived from the notification's id, so mail clients can spot a re-delivered copy.
//!
//! SMTP 4xx replies (transient) are [`NotifyError::Unavailable`]; 5xx replies (permanent, such
//! as an unknown recipient or refused credentials) are [`NotifyError::Rejected`].

use std::fmt;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::http::DEFAULT_TIMEOUT;
use super::{BuildError, Notifier, NotifyError, NotifyFuture};
use crate::alert::model::Notification;
use crate::config::Secret;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (default; port 587).
    #[default]
    StartTls,
    /// TLS from the first byte ("SMTPS"; port 465).
    Tls,
    /// No encryption at all: only for a relay on the same host or a test server (port 25).
    None,
}

impl SmtpSecurity {
    /// The usual port: 587, 465 or 25.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// An email receiver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmailConfig {
    /// The SMTP server's host name (also the name its certificate must have).
    pub host: String,
    /// Its port (default: [`SmtpSecurity::default_port`]).
    pub port: u16,
    /// How the connection is secured.
    pub security: SmtpSecurity,
    /// The user name, when the server wants authentication.
    pub username: Option<String>,
    /// The password (a secret), with `username`.
    pub password: Option<Secret>,
    /// The sender, `"Rampart <rampart@example.com>"` or a bare address.
    pub from: String,
    /// The recipients (at least one).
    pub to: Vec<String>,
    /// How long one delivery may take, connection included (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl EmailConfig {
    /// Mails `to` from `from` through `host` with STARTTLS on port 587.
    pub fn new(host: impl Into<String>, from: impl Into<String>, to: Vec<String>) -> Self {
        EmailConfig {
            host: host.into(),
            port: SmtpSecurity::StartTls.default_port(),
            security: SmtpSecurity::StartTls,
            username: None,
            password: None,
            from: from.into(),
            to,
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Sets the security and the port.
    pub fn with_security(mut self, security: SmtpSecurity, port: u16) -> Self {
        self.security = security;
        self.port = port;
        self
    }
    /// Authenticates as `username` with `password`.
    pub fn with_credentials(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }
    /// Sets the timeout of one delivery.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Sends notifications as email.
pub struct EmailNotifier {
    receiver: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
}

impl fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("receiver", &self.receiver)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl EmailNotifier {
    /// A notifier for the receiver named `receiver`.
    pub fn new(receiver: impl Into<String>, config: &EmailConfig) -> Result<Self, BuildError> {
        let parse = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|_| BuildError::InvalidAddress(text.to_owned()))
        };
        let from = parse(&config.from)?;
        let to = config
            .to
            .iter()
            .map(|t| parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(BuildError::InvalidAddress(String::new()));
        }
        let tls = |wrap: bool| {
            TlsParameters::new(config.host.clone())
                .map(|p| {
                    if wrap {
                        Tls::Wrapper(p)
                    } else {
                        Tls::Required(p)
                    }
                })
                .map_err(|e| BuildError::Client(e.to_string()))
        };
        let tls = match config.security {
            SmtpSecurity::StartTls => tls(false)?,
            SmtpSecurity::Tls => tls(true)?,
            SmtpSecurity::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(EmailNotifier {
            receiver: receiver.into(),
            transport: builder.build(),
            from,
            to,
            timeout: config.timeout,
        })
    }

    /// The message sent for `notification`.
    pub fn message(&self, notification: &Notification) -> Result<Message, NotifyError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(notification.title())
            .message_id(Some(message_id(&notification.id)));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                text_body(notification),
                html_body(notification),
            ))
            .map_err(|e| NotifyError::Rejected {
                receiver: self.receiver.clone(),
                message: format!("cannot build the message: {e}"),
            })
    }

    fn classify(&self, error: lettre::transport::smtp::Error) -> NotifyError {
        let receiver = self.receiver.clone();
        if error.is_permanent() {
            let code = error.status().map(|c| c.to_string()).unwrap_or_default();
            return NotifyError::Rejected {
                receiver,
                message: format!("SMTP {code}: {error}"),
            };
        }
        let message = if error.is_transient() {
            let code = error.status().map(|c| c.to_string()).unwrap_or_default();
            format!("SMTP {code} (transient)")
        } else if error.is_timeout() {
            "SMTP timed out".to_owned()
        } else if error.is_tls() {
            "SMTP TLS failed".to_owned()
        } else {
            "SMTP connection failed".to_owned()
        };
        NotifyError::Unavailable {
            receiver,
            message,
            retry_after: None,
            source: Some(Box::new(error)),
        }
    }
}

impl Notifier for EmailNotifier {
    fn receiver(&self) -> &str {
        &self.receiver
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let message = self.message(notification)?;
            match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(self.classify(e)),
                Err(_) => Err(NotifyError::Unavailable {
                    receiver: self.receiver.clone(),
                    message: "SMTP timed out".to_owned(),
                    retry_after: None,
                    source: None,
                }),
            }
        })
    }
}

/// `<id@rampart>`, with anything but `[A-Za-z0-9.-_]` in the id replaced.
fn message_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("<{clean}@rampart>")
}

fn text_body(n: &Notification) -> String {
    let mut text = format!("{}\n\n", n.title());
    for alert in &n.alerts {
        text.push_str(&format!(
            "[{}] {} ({})\n  {}\n",
            alert.status.as_str().to_uppercase(),
            alert.rule,
            alert.severity,
            alert.summary()
        ));
        if let Some(target) = alert.target() {
            text.push_str(&format!("  target: {target}\n"));
        }
        text.push_str(&format!("  started: {}\n", alert.starts_at.to_rfc3339()));
        if let Some(ends) = alert.ends_at {
            text.push_str(&format!("  ended: {}\n", ends.to_rfc3339()));
        }
        if let Some(description) = alert.annotations.get("description") {
            text.push_str(&format!("  {description}\n"));
        }
        let labels: Vec<String> = alert
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        text.push_str(&format!("  labels: {}\n\n", labels.join(", ")));
    }
    if let Some(url) = &n.external_url {
        text.push_str(&format!("{url}\n"));
    }
    text
}

fn html_body(n: &Notification) -> String {
    let mut html = format!(
        "<!DOCTYPE html><html><body><h2>{}</h2><table border=\"1\" cellpadding=\"4\" \
         style=\"border-collapse:collapse\"><tr><th>Status</th><th>Severity</th><th>Alert</th>\
         <th>Target</th><th>Summary</th><th>Started</th><th>Ended</th></tr>",
        escape(&n.title())
    );
    for alert in &n.alerts {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            alert.status,
            alert.severity,
            escape(&alert.rule),
            escape(alert.target().unwrap_or("")),
            escape(alert.summary()),
            alert.starts_at.to_rfc3339(),
            alert.ends_at.map(|e| e.to_rfc3339()).unwrap_or_default(),
        ));
    }
    html.push_str("</table>");
    if let Some(url) = &n.external_url {
        html.push_str(&format!(
            "<p><a href=\"{}\">Open Rampart</a></p>",
            escape(url)
        ));
    }
    html.push_str("</body></html>");
    html
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_html_are_made_safe() {
        assert_eq!(message_id("a b<c>.d"), "<a_b_c_.d@rampart>");
        assert_eq!(
            escape("<b>\"x\" & 'y'"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn bad_addresses_are_refused_and_debug_hides_the_password() {
        let config = EmailConfig::new("localhost", "not an address", vec!["a@b.c".into()]);
        assert!(matches!(
            EmailNotifier::new("m", &config),
            Err(BuildError::InvalidAddress(_))
        ));
        let config = EmailConfig::new("localhost", "r@b.c", vec!["a@b.c".into()])
            .with_credentials("u", Secret::new("pw-123"));
        assert!(!format!("{config:?}").contains("pw-123"));
        let n = EmailNotifier::new("m", &config).unwrap();
        assert!(!format!("{n:?}").contains("pw-123"));
    }
}
