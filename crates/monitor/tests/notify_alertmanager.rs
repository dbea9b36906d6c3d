//! The Alertmanager notifier and the dead man's switch against a real Prometheus Alertmanager
//! (Debian package `prometheus-alertmanager`, installed by `scripts/setup`), started by the test
//! on a free port with a minimal configuration and a temporary storage path. Alerts go in
//! through its v2 API and are read back through its own `GET /api/v2/alerts`. A missing binary
//! skips the tests unless `RAMPART_REQUIRE_SERVERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use rampart_monitor::alert::notify::{AlertmanagerConfig, AlertmanagerNotifier};
use rampart_monitor::alert::watchdog::Watchdog;
use rampart_monitor::alert::{AlertStatus, Labels, Notifier, NotifyError, Severity};
use rampart_testkit::server::servers_required;
use serde_json::Value;
use support::{DEADLINE, alert, closed_port, mixed, notification};

/// A running Alertmanager; killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["prometheus-alertmanager", "alertmanager"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

impl Alertmanager {
    async fn start() -> Option<Alertmanager> {
        let Some(bin) = binary() else {
            assert!(
                !servers_required(),
                "prometheus-alertmanager is missing and RAMPART_REQUIRE_SERVERS=1: run scripts/setup"
            );
            eprintln!(
                "skipped: prometheus-alertmanager is missing (apt-get install \
                 prometheus-alertmanager; set RAMPART_REQUIRE_SERVERS=1 to fail instead)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\n  group_wait: 1h\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        // A port just released is free unless something takes it meanwhile; try a few.
        for _ in 0..5 {
            let port = closed_port();
            let mut child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("alertmanager.log")).unwrap())
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}");
            let client = reqwest::Client::new();
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(dir.path().join("alertmanager.log"))
                        .unwrap_or_default();
                    eprintln!("alertmanager exited ({status}), retrying on another port:\n{log}");
                    break;
                }
                if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
                    && r.status().is_success()
                {
                    return Some(Alertmanager {
                        child,
                        url,
                        _dir: dir,
                    });
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "alertmanager did not become ready"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("alertmanager would not start");
    }

    /// Its own view: `GET /api/v2/alerts` (active alerts; resolved ones are not listed).
    async fn alerts(&self) -> Vec<Value> {
        let body: Value = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut alerts = body.as_array().unwrap().clone();
        alerts.sort_by_key(|a| a["labels"]["alertname"].as_str().unwrap().to_owned());
        alerts
    }

    /// Waits until its view satisfies `condition` (alerts are processed asynchronously).
    async fn wait_for(&self, mut condition: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let alerts = self.alerts().await;
            if condition(&alerts) {
                return alerts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Alertmanager never showed the expected alerts: {alerts:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn names(alerts: &[Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn alertmanager_receives_firing_and_resolved_alerts_through_its_v2_api() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    let notifier = AlertmanagerNotifier::new("am", &AlertmanagerConfig::new(&am.url)).unwrap();
    let n = mixed();
    notifier.send(&n).await.unwrap();

    // The two firing alerts show; the resolved one (its endsAt is past) does not.
    let alerts = am
        .wait_for(|a| names(a) == ["HighLatency", "TargetDown"])
        .await;
    let down = &alerts[1];
    assert_eq!(down["labels"]["target"], "db");
    assert_eq!(down["labels"]["severity"], "critical");
    assert_eq!(down["annotations"]["summary"], "db is TargetDown");
    assert_eq!(down["generatorURL"], "http://rampart.example:8080/alerts");
    assert_eq!(down["startsAt"], "2023-11-14T22:13:20.000Z");
    assert_eq!(down["status"]["state"], "active");
    assert_eq!(down["receivers"][0]["name"], "blackhole");
    // Alertmanager's fingerprint is its own; it is the same for the same labels.
    assert!(down["fingerprint"].as_str().is_some());

    // TargetDown resolves: Rampart sends it with endsAt, and Alertmanager drops it from the
    // active alerts.
    let mut resolved = alert(
        "TargetDown",
        "db",
        Severity::Critical,
        AlertStatus::Resolved,
    );
    let now = DateTime::<Utc>::from(SystemTime::now());
    resolved.ends_at = Some(now);
    notifier
        .send(&notification("n-resolve", vec![resolved]))
        .await
        .unwrap();
    am.wait_for(|a| names(a) == ["HighLatency"]).await;

    // Alertmanager refuses an alert without labels with 400: final, not retried.
    let mut bad = alert("X", "y", Severity::Info, AlertStatus::Firing);
    bad.labels = Labels::new();
    let err = notifier
        .send(&notification("n-bad", vec![bad]))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Rejected { .. }), "{err}");

    // Alertmanager down: retryable.
    drop(am);
    let err = notifier.send(&n).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn the_watchdog_alert_stays_active_in_alertmanager() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    let labels: Labels = [("env".to_owned(), "test".to_owned())].into();
    let mut handle = Watchdog::new(Duration::from_secs(3600))
        .with_alertmanager(&am.url)
        .with_labels(labels)
        .start()
        .unwrap();
    handle.wait_for(|s| s.delivered == 1).await;
    let alerts = am.wait_for(|a| names(a) == ["Watchdog"]).await;
    assert_eq!(alerts[0]["labels"]["env"], "test");
    assert_eq!(alerts[0]["labels"]["severity"], "info");
    assert_eq!(alerts[0]["status"]["state"], "active");
}
