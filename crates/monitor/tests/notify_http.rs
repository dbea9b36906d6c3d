//! The HTTP notifiers against in-process receivers that check each payload against the
//! service's documented format: the signed webhook, Slack's Block Kit, PagerDuty's Events API
//! v2, Alertmanager's v2 alerts; how failures are classified; and the dead man's switch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use rampart_monitor::alert::notify::{
    AlertmanagerConfig, AlertmanagerNotifier, PagerDutyConfig, PagerDutyNotifier, ReceiverConfig,
    SIGNATURE_HEADER, SignatureError, SlackConfig, SlackNotifier, TIMESTAMP_HEADER, WebhookConfig,
    WebhookNotifier, verify_signature,
};
use rampart_monitor::alert::watchdog::{PingConfig, PingMethod, Watchdog};
use rampart_monitor::alert::{AlertStatus, Notification, Notifier, NotifyError, Severity};
use rampart_monitor::config::Secret;
use serde_json::Value;
use support::{Receiver, Reply, alert, closed_port, mixed, notification};

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

const SECRET: &str = "whsec-test-123";

#[tokio::test]
async fn webhook_posts_the_signed_notification_with_an_idempotency_key() {
    let mut rx = Receiver::start(Reply::status(204)).await;
    let config = WebhookConfig::new(Secret::new(rx.url("/hooks/rampart?token=t0k")))
        .with_secret(Secret::new(SECRET))
        .with_header("Authorization", "Bearer abc");
    let notifier = WebhookNotifier::new("ops", &config).unwrap();
    let n = mixed();
    notifier.send(&n).await.unwrap();

    let req = rx.next().await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/rampart");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("idempotency-key"), Some("n-mixed-1"));
    assert_eq!(req.header("authorization"), Some("Bearer abc"));
    // The receiver's check: signature over the raw body, within 5 minutes.
    let signature = req.header(SIGNATURE_HEADER).unwrap();
    let tolerance = Duration::from_secs(300);
    verify_signature(SECRET.as_bytes(), signature, &req.body, now(), tolerance).unwrap();
    let t: i64 = req.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
    assert!(signature.starts_with(&format!("t={t},v1=")));
    // Forgeries and replays are refused.
    assert_eq!(
        verify_signature(b"wrong", signature, &req.body, now(), tolerance),
        Err(SignatureError::Mismatch)
    );
    let mut tampered = req.body.to_vec();
    tampered[10] ^= 1;
    assert_eq!(
        verify_signature(SECRET.as_bytes(), signature, &tampered, now(), tolerance),
        Err(SignatureError::Mismatch)
    );
    let replayed_at = now() + chrono::Duration::minutes(6);
    assert!(matches!(
        verify_signature(
            SECRET.as_bytes(),
            signature,
            &req.body,
            replayed_at,
            tolerance
        ),
        Err(SignatureError::OutsideTolerance { .. })
    ));

    // The JSON shape: the notification plus `version`, and it reads back as a Notification.
    let json = req.json();
    assert_eq!(json["version"], "1");
    assert_eq!(json["id"], "n-mixed-1");
    assert_eq!(json["status"], "firing");
    assert_eq!(json["alerts"].as_array().unwrap().len(), 3);
    assert_eq!(
        json["alerts"][0]["fingerprint"],
        n.alerts[0].fingerprint.to_string()
    );
    assert_eq!(json["alerts"][0]["labels"]["alertname"], "TargetDown");
    assert_eq!(json["alerts"][1]["acknowledged"]["by"], "alice");
    assert_eq!(json["alerts"][2]["ends_at"], "2023-11-14T22:18:20Z");
    let back: Notification = serde_json::from_value(json).unwrap();
    assert_eq!(back, n);

    // A retry of the same notification carries the same idempotency key.
    notifier.send(&n).await.unwrap();
    assert_eq!(rx.next().await.header("idempotency-key"), Some("n-mixed-1"));
}

#[tokio::test]
async fn an_unsigned_webhook_sends_no_signature() {
    let mut rx = Receiver::start(Reply::status(200)).await;
    let notifier =
        WebhookNotifier::new("ops", &WebhookConfig::new(Secret::new(rx.url("/h")))).unwrap();
    notifier.send(&mixed()).await.unwrap();
    let req = rx.next().await;
    assert!(req.header(SIGNATURE_HEADER).is_none());
    assert!(req.header(TIMESTAMP_HEADER).is_some());
}

/// Checks a Slack message against Slack's documented Block Kit structure and limits.
fn check_slack_message(msg: &Value) {
    let text = msg["text"].as_str().expect("a fallback `text`");
    assert!(!text.is_empty() && text.chars().count() <= 3000);
    let blocks = msg["blocks"].as_array().expect("`blocks`");
    assert!(
        !blocks.is_empty() && blocks.len() <= 50,
        "{} blocks",
        blocks.len()
    );
    for block in blocks {
        match block["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(block["text"]["type"], "plain_text");
                let t = block["text"]["text"].as_str().unwrap();
                assert!(!t.is_empty() && t.chars().count() <= 150, "{t}");
            }
            "section" => {
                assert_eq!(block["text"]["type"], "mrkdwn");
                let t = block["text"]["text"].as_str().unwrap();
                assert!(!t.is_empty() && t.chars().count() <= 3000, "{}", t.len());
            }
            "context" => {
                let elements = block["elements"].as_array().unwrap();
                assert!(!elements.is_empty() && elements.len() <= 10);
                for e in elements {
                    assert!(matches!(e["type"].as_str(), Some("mrkdwn" | "plain_text")));
                    assert!(e["text"].as_str().unwrap().chars().count() <= 3000);
                }
            }
            other => panic!("unexpected block type {other}"),
        }
        let keys: BTreeSet<&str> = block
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert!(
            keys.is_subset(&BTreeSet::from(["type", "text", "elements", "block_id"])),
            "{keys:?}"
        );
    }
}

#[tokio::test]
async fn slack_gets_block_kit_within_its_limits() {
    let mut rx = Receiver::start(Reply::status(200).body("ok")).await;
    let notifier = SlackNotifier::new(
        "chat",
        &SlackConfig::new(Secret::new(rx.url("/services/T/B/X"))),
    )
    .unwrap();

    notifier.send(&mixed()).await.unwrap();
    let req = rx.next().await;
    assert_eq!(req.path, "/services/T/B/X");
    let msg = req.json();
    check_slack_message(&msg);
    let blocks = msg["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 5, "header, 3 alerts, context");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "[FIRING:2] TargetDown (group=shop)"
    );
    let first = blocks[1]["text"]["text"].as_str().unwrap();
    for want in [
        "TargetDown",
        "CRITICAL",
        "db is TargetDown",
        "*Target:* `db`",
        "*Started:*",
    ] {
        assert!(first.contains(want), "{want} missing from {first}");
    }
    assert!(
        blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Acknowledged by")
    );
    assert!(
        blocks[3]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("*Ended:*")
    );
    assert_eq!(blocks[4]["type"], "context");
    assert!(msg["text"].as_str().unwrap().starts_with("[FIRING:2]"));

    // 120 alerts with 5000-character summaries: still a valid message, the rest counted.
    let alerts = (0..120)
        .map(|i| {
            let mut a = alert(
                "Big",
                &format!("t{i}"),
                Severity::Warning,
                AlertStatus::Firing,
            );
            a.annotations.insert("summary".into(), "x".repeat(5000));
            a
        })
        .collect();
    notifier.send(&notification("n-big", alerts)).await.unwrap();
    let msg = rx.next().await.json();
    check_slack_message(&msg);
    let blocks = msg["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 50);
    assert_eq!(blocks[48]["text"]["text"], "... and 73 more");
    assert!(blocks[1]["text"]["text"].as_str().unwrap().ends_with("..."));
}

#[tokio::test]
async fn pagerduty_gets_one_event_per_alert_with_a_stable_dedup_key() {
    let mut rx = Receiver::start(
        Reply::status(202).body(r#"{"status":"success","message":"Event processed"}"#),
    )
    .await;
    let config =
        PagerDutyConfig::new(Secret::new("R0UTINGKEY0123456789abcdef012345")).with_url(rx.url(""));
    let notifier = PagerDutyNotifier::new("pager", &config).unwrap();
    let n = mixed();
    notifier.send(&n).await.unwrap();

    let events: Vec<Value> = [rx.next().await, rx.next().await, rx.next().await]
        .into_iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/v2/enqueue");
            assert_eq!(r.header("content-type"), Some("application/json"));
            r.json()
        })
        .collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
    for (event, alert) in events.iter().zip(&n.alerts) {
        assert_eq!(event["routing_key"], "R0UTINGKEY0123456789abcdef012345");
        assert_eq!(event["dedup_key"], alert.fingerprint.to_string());
        assert!(event["dedup_key"].as_str().unwrap().len() <= 255);
    }
    // The trigger's payload, per the Events API v2 reference.
    let payload = &events[0]["payload"];
    assert_eq!(payload["summary"], "db is TargetDown");
    assert_eq!(payload["source"], "db");
    assert!(
        ["critical", "error", "warning", "info"].contains(&payload["severity"].as_str().unwrap())
    );
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["timestamp"], "2023-11-14T22:13:20+00:00");
    assert_eq!(payload["component"], "db");
    assert_eq!(payload["group"], "shop");
    assert_eq!(payload["class"], "TargetDown");
    assert_eq!(
        payload["custom_details"]["labels"]["alertname"],
        "TargetDown"
    );
    assert_eq!(
        payload["custom_details"]["annotations"]["description"],
        "TargetDown on db for 5m"
    );
    assert_eq!(
        events[0]["client_url"],
        "http://rampart.example:8080/alerts"
    );
    // The same alert later, in another process: the same dedup key.
    let again = alert(
        "TargetDown",
        "db",
        Severity::Critical,
        AlertStatus::Resolved,
    );
    assert_eq!(events[0]["dedup_key"], again.fingerprint.to_string());

    // PagerDuty's documented errors: 400 is final, 429 means slow down.
    rx.then(Reply::status(400).body(r#"{"status":"invalid event","errors":["x"]}"#));
    let err = notifier.send(&n).await.unwrap_err();
    assert!(matches!(err, NotifyError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("invalid event"));
    rx.drain();
    rx.then(Reply::status(429));
    assert!(notifier.send(&n).await.unwrap_err().is_rate_limited());
}

#[tokio::test]
async fn alertmanager_payload_has_labels_times_and_generator_url() {
    let mut rx = Receiver::start(Reply::status(200)).await;
    let notifier = AlertmanagerNotifier::new("am", &AlertmanagerConfig::new(rx.url("/"))).unwrap();
    notifier.send(&mixed()).await.unwrap();
    let req = rx.next().await;
    assert_eq!(req.path, "/api/v2/alerts");
    let alerts = req.json();
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 3);
    assert_eq!(alerts[0]["labels"]["alertname"], "TargetDown");
    assert_eq!(alerts[0]["annotations"]["summary"], "db is TargetDown");
    assert_eq!(alerts[0]["startsAt"], "2023-11-14T22:13:20+00:00");
    assert!(alerts[0].get("endsAt").is_none());
    assert_eq!(alerts[2]["endsAt"], "2023-11-14T22:18:20+00:00");
    assert_eq!(
        alerts[0]["generatorURL"],
        "http://rampart.example:8080/alerts"
    );
}

#[tokio::test]
async fn failures_are_classified_for_the_outbox() {
    let mut rx = Receiver::start(Reply::status(200)).await;
    let config = WebhookConfig::new(Secret::new(rx.url("/h?token=SECRET-TOKEN")))
        .with_timeout(Duration::from_secs(3));
    let notifier = WebhookNotifier::new("ops", &config).unwrap();
    let n = mixed();

    rx.then(Reply::status(429).header("retry-after", "17"));
    let err = notifier.send(&n).await.unwrap_err();
    assert!(err.is_rate_limited() && err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));

    let in_90s = (now() + chrono::Duration::seconds(90)).format("%a, %d %b %Y %H:%M:%S GMT");
    rx.then(Reply::status(429).header("retry-after", in_90s.to_string()));
    let err = notifier.send(&n).await.unwrap_err();
    let wait = err.retry_after().unwrap().as_secs();
    assert!((80..=90).contains(&wait), "{wait}");

    rx.then(Reply::status(503).header("retry-after", "5"));
    let err = notifier.send(&n).await.unwrap_err();
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));

    rx.then(Reply::status(500));
    assert!(matches!(
        notifier.send(&n).await.unwrap_err(),
        NotifyError::Unavailable {
            retry_after: None,
            ..
        }
    ));
    rx.then(Reply::status(408));
    assert!(notifier.send(&n).await.unwrap_err().is_retryable());

    rx.then(Reply::status(400).body("bad payload"));
    let err = notifier.send(&n).await.unwrap_err();
    assert!(matches!(err, NotifyError::Rejected { .. }) && !err.is_retryable());
    assert!(err.to_string().contains("bad payload"), "{err}");
    rx.then(Reply::status(404));
    assert!(!notifier.send(&n).await.unwrap_err().is_retryable());

    // A receiver that never answers: the attempt ends at the timeout.
    rx.then(Reply::hang());
    let err = notifier.send(&n).await.unwrap_err();
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(rx.drain().len(), 8);

    // Nothing listening.
    let refused = WebhookNotifier::new(
        "ops",
        &WebhookConfig::new(Secret::new(format!(
            "http://127.0.0.1:{}/h?token=SECRET-TOKEN",
            closed_port()
        ))),
    )
    .unwrap();
    let err = refused.send(&n).await.unwrap_err();
    assert!(matches!(err, NotifyError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("could not connect"), "{err}");
    // No error, nor its causes, shows the URL's token.
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!chain.contains("SECRET-TOKEN"), "{chain}");
}

#[tokio::test]
async fn a_parsed_receiver_config_builds_a_working_notifier() {
    let mut rx = Receiver::start(Reply::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("hook-url");
    std::fs::write(&url_file, format!("{}\n", rx.url("/from-file"))).unwrap();
    let table: toml::Value = toml::from_str(&format!(
        r#"name = "ops"
           webhook = {{ url_file = {:?}, secret = "{SECRET}", timeout = "2s" }}
           delivery = {{ max_attempts = 5 }}"#,
        url_file.display().to_string()
    ))
    .unwrap();
    let config = ReceiverConfig::from_toml("alerting.receiver[0]", &table).unwrap();
    assert!(config.delivery.is_some());
    let notifier: Arc<dyn Notifier> = config.build().unwrap();
    assert_eq!((notifier.receiver(), notifier.kind()), ("ops", "webhook"));
    assert!(!format!("{config:?} {notifier:?}").contains("from-file"));
    notifier.send(&mixed()).await.unwrap();
    let req = rx.next().await;
    assert_eq!(req.path, "/from-file");
    let sig = req.header(SIGNATURE_HEADER).unwrap();
    verify_signature(
        SECRET.as_bytes(),
        sig,
        &req.body,
        now(),
        Duration::from_secs(60),
    )
    .unwrap();
}

#[tokio::test]
async fn the_dead_mans_switch_pings_and_sends_the_watchdog_alert() {
    let mut ping = Receiver::start(Reply::status(200).body("OK")).await;
    let mut am = Receiver::start(Reply::status(200)).await;
    // The first ping fails and is retried within the interval.
    ping.then(Reply::status(503));
    let mut handle = Watchdog::new(Duration::from_secs(3600))
        .with_ping(
            PingConfig::new(Secret::new(ping.url("/ping/uuid-1")))
                .with_method(PingMethod::Post)
                .with_timeout(Duration::from_secs(5)),
        )
        .with_alertmanager(am.url(""))
        .start()
        .unwrap();
    handle.wait_for(|s| s.delivered == 2).await;
    let status = handle.status();
    assert_eq!(
        (status.rounds, status.failed_attempts, status.missed),
        (1, 1, 0)
    );

    let (first, retry) = (ping.next().await, ping.next().await);
    for r in [&first, &retry] {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/ping/uuid-1")
        );
    }
    let req = am.next().await;
    assert_eq!(req.path, "/api/v2/alerts");
    let alerts = req.json();
    assert_eq!(alerts[0]["labels"]["alertname"], "Watchdog");
    assert!(alerts[0].get("endsAt").is_none(), "always firing");
    drop(handle);
}

/// Runs the Python verifier from the guide on a header and body; `None` without python3.
fn python_verifies(secret: &str, header: &str, body: &[u8]) -> Option<bool> {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/verify_webhook.py"
    );
    let mut child = match std::process::Command::new("python3")
        .args([script, secret, header])
        .stdin(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{e}"),
    };
    child.stdin.take().unwrap().write_all(body).unwrap();
    Some(child.wait().unwrap().success())
}

#[tokio::test]
async fn the_python_receiver_in_the_guide_verifies_the_signature() {
    let mut rx = Receiver::start(Reply::status(200)).await;
    let config = WebhookConfig::new(Secret::new(rx.url("/h"))).with_secret(Secret::new(SECRET));
    let notifier = WebhookNotifier::new("ops", &config).unwrap();
    notifier.send(&mixed()).await.unwrap();
    let req = rx.next().await;
    let header = req.header(SIGNATURE_HEADER).unwrap().to_owned();
    let Some(ok) = python_verifies(SECRET, &header, &req.body) else {
        assert!(
            !rampart_testkit::server::servers_required(),
            "python3 is missing and RAMPART_REQUIRE_SERVERS=1"
        );
        eprintln!("skipped: python3 is missing");
        return;
    };
    assert!(ok, "the Python verifier refused a good signature");
    let mut tampered = req.body.to_vec();
    tampered.push(b' ');
    assert_eq!(python_verifies(SECRET, &header, &tampered), Some(false));
    assert_eq!(python_verifies("other", &header, &req.body), Some(false));
    let old = header.replacen("t=", "t=1", 1);
    assert_eq!(python_verifies(SECRET, &old, &req.body), Some(false));
}
