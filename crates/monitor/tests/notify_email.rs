//! The email notifier against a real SMTP server: `aiosmtpd` (PyPI, installed by
//! `scripts/setup`) started by the test on a free port, storing every mail it accepts
//! (`tests/support/smtp_sink.py`). A missing aiosmtpd skips the tests unless
//! `RAMPART_REQUIRE_SERVERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use rampart_monitor::alert::notify::{EmailConfig, EmailNotifier, SmtpSecurity};
use rampart_monitor::alert::{Notifier, NotifyError};
use rampart_monitor::config::Secret;
use rampart_testkit::server::servers_required;
use serde_json::Value;
use support::{DEADLINE, closed_port, mixed};

/// A running aiosmtpd; killed on drop.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpSink {
    /// Starts the sink (requiring `credentials` `user:password` when given), or returns `None`
    /// (after a skip note) when python3 or aiosmtpd is missing and servers are not required.
    async fn start(credentials: Option<&str>) -> Option<SmtpSink> {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(c) = credentials {
            command.arg(c);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return skip("python3"),
            Err(e) => panic!("cannot start python3: {e}"),
        };
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(
            DEADLINE,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("aiosmtpd did not start in time")
        .unwrap()
        .unwrap();
        if line.trim() == "MISSING aiosmtpd" {
            let _ = child.wait();
            return skip("aiosmtpd (pip install aiosmtpd, or scripts/setup)");
        }
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from smtp_sink.py: {line:?}"));
        Some(SmtpSink { child, port, dir })
    }

    /// The mails received so far, oldest first.
    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    fn config(&self, to: &[&str]) -> EmailConfig {
        EmailConfig::new(
            "127.0.0.1",
            "Rampart <rampart@example.org>",
            to.iter().map(|s| s.to_string()).collect(),
        )
        .with_security(SmtpSecurity::None, self.port)
    }
}

fn skip<T>(what: &str) -> Option<T> {
    assert!(
        !servers_required(),
        "{what} is missing and RAMPART_REQUIRE_SERVERS=1: run scripts/setup"
    );
    eprintln!("skipped: {what} is missing (set RAMPART_REQUIRE_SERVERS=1 to fail instead)");
    None
}

/// The value of header `name` in a raw message (first occurrence, unfolded).
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let mut lines = head.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            let mut value = v.trim().to_owned();
            while let Some(next) = lines.peek()
                && next.starts_with([' ', '\t'])
            {
                value.push(' ');
                value.push_str(next.trim());
                lines.next();
            }
            return Some(value);
        }
    }
    None
}

#[tokio::test]
async fn a_mail_reaches_every_recipient_with_the_title_as_subject() {
    let Some(sink) = SmtpSink::start(None).await else {
        return;
    };
    let notifier = EmailNotifier::new(
        "mail",
        &sink.config(&["ops@example.org", "Oncall <oncall@example.org>"]),
    )
    .unwrap();
    assert_eq!(notifier.kind(), "email");
    let n = mixed();
    notifier.send(&n).await.unwrap();

    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail["mail_from"], "rampart@example.org");
    assert_eq!(
        mail["rcpt_tos"],
        serde_json::json!(["ops@example.org", "oncall@example.org"])
    );
    let raw = mail["content"].as_str().unwrap();
    assert_eq!(header(raw, "Subject").unwrap(), n.title());
    assert_eq!(
        header(raw, "Subject").unwrap(),
        "[FIRING:2] TargetDown (group=shop)"
    );
    let to = header(raw, "To").unwrap();
    assert!(
        to.contains("ops@example.org") && to.contains("oncall@example.org"),
        "{to}"
    );
    assert_eq!(header(raw, "Message-ID").unwrap(), "<n-mixed-1@rampart>");
    assert!(
        header(raw, "Content-Type")
            .unwrap()
            .starts_with("multipart/alternative")
    );
    assert!(
        raw.contains("text/plain") && raw.contains("text/html"),
        "{raw}"
    );
    // Undo quoted-printable's soft line breaks and `=` escapes before looking inside.
    let decoded = raw.replace("=\r\n", "").replace("=3D", "=");
    for want in [
        "db is TargetDown",
        "CertExpiring",
        "<table border=\"1\"",
        "<td>db</td>",
    ] {
        assert!(decoded.contains(want), "{want} missing from {decoded}");
    }
}

#[tokio::test]
async fn authentication_is_used_and_refused_credentials_are_final() {
    let Some(sink) = SmtpSink::start(Some("rampart:s3cret-pw")).await else {
        return;
    };
    let good = EmailNotifier::new(
        "mail",
        &sink
            .config(&["ops@example.org"])
            .with_credentials("rampart", Secret::new("s3cret-pw")),
    )
    .unwrap();
    good.send(&mixed()).await.unwrap();
    assert_eq!(sink.mails().len(), 1);

    let bad = EmailNotifier::new(
        "mail",
        &sink
            .config(&["ops@example.org"])
            .with_credentials("rampart", Secret::new("wrong-pw")),
    )
    .unwrap();
    let err = bad.send(&mixed()).await.unwrap_err();
    assert!(matches!(err, NotifyError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pw"));

    // Without credentials the server refuses with 530 (permanent).
    let none = EmailNotifier::new("mail", &sink.config(&["ops@example.org"])).unwrap();
    assert!(!none.send(&mixed()).await.unwrap_err().is_retryable());
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn smtp_replies_are_classified() {
    let Some(sink) = SmtpSink::start(None).await else {
        return;
    };
    let rejected = EmailNotifier::new("mail", &sink.config(&["reject@example.org"])).unwrap();
    let err = rejected.send(&mixed()).await.unwrap_err();
    assert!(matches!(err, NotifyError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("550"), "{err}");

    let busy = EmailNotifier::new("mail", &sink.config(&["busy@example.org"])).unwrap();
    let err = busy.send(&mixed()).await.unwrap_err();
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("451"), "{err}");
    assert!(sink.mails().is_empty());

    let config = EmailConfig::new("127.0.0.1", "r@example.org", vec!["a@example.org".into()])
        .with_security(SmtpSecurity::None, closed_port());
    let down = EmailNotifier::new("mail", &config).unwrap();
    let err = down.send(&mixed()).await.unwrap_err();
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err}");
}
