#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The alert service on a real monitor and a real SQLite store: results become notifications,
//! and alerting's state survives a restart — a firing alert notified before the restart is not
//! notified again, gets its resolve after it, and silences are still there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rampart_monitor::Monitor;
use rampart_monitor::alert::{
    AlertEngine, AlertStateStore, AlertStatus, EngineConfig, Matcher, Notification,
    NotificationSink, Route, Silence, TargetInfo, default_rules,
};
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::probe::{FailureKind, Probe, ProbeFuture, ProbeResult};
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, StoreFuture};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A sink that keeps what it gets.
#[derive(Default)]
struct Kept {
    all: Mutex<Vec<Notification>>,
    more: Notify,
}

impl NotificationSink for Kept {
    fn enqueue(&self, notifications: Vec<Notification>) -> StoreFuture<'_, ()> {
        self.all.lock().unwrap().extend(notifications);
        self.more.notify_waiters();
        Box::pin(async { Ok(()) })
    }
}

impl Kept {
    /// Waits (up to 10 s) until `done` holds for what was received.
    async fn until(&self, what: &str, done: impl Fn(&[Notification]) -> bool) -> Vec<Notification> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let more = self.more.notified();
            {
                let all = self.all.lock().unwrap();
                if done(&all) {
                    return all.clone();
                }
            }
            if tokio::time::timeout_at(deadline, more).await.is_err() {
                panic!(
                    "timed out waiting for {what}: {:#?}",
                    self.all.lock().unwrap()
                );
            }
        }
    }
}

/// A probe that passes or fails as the test says.
struct Switch(Arc<AtomicBool>);

impl Probe for Switch {
    fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
        let up = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if up {
                ProbeResult::success(Duration::from_millis(1))
            } else {
                ProbeResult::failure(
                    FailureKind::ConnectRefused,
                    "refused",
                    Duration::from_millis(1),
                )
            }
        })
    }
}

fn config() -> MonitorConfig {
    MonitorConfig::from_str(
        "[[target]]\nname = \"api\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
         thresholds = { failures_to_unhealthy = 1, successes_to_healthy = 1 }\n\
         [target.tcp]\naddress = \"127.0.0.1:1\"\n",
        None,
    )
    .unwrap()
}

fn engine(config: &MonitorConfig) -> AlertEngine {
    let mut c = EngineConfig::new(default_rules(), "ops");
    c.route = Route::root("ops").with_timings(
        Duration::ZERO,
        Duration::from_millis(100),
        Duration::from_secs(3600),
    );
    let targets: Vec<TargetInfo> = config.targets.iter().map(TargetInfo::from_config).collect();
    AlertEngine::new(
        c,
        &targets,
        Instant::now(),
        DateTime::<Utc>::from(std::time::SystemTime::now()),
    )
}

fn down_alerts(ns: &[Notification], status: AlertStatus) -> usize {
    ns.iter()
        .flat_map(|n| &n.alerts)
        .filter(|a| a.rule == "TargetDown" && a.status == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_alert_is_not_repeated_after_a_restart_and_still_gets_its_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let config = config();
    let up = Arc::new(AtomicBool::new(false));

    // First life: the target is down; TargetDown fires and is notified; a silence is made.
    {
        let store = Arc::new(
            SqliteStore::open(&path, SqliteConfig::default())
                .await
                .unwrap(),
        );
        let switch = Arc::clone(&up);
        let monitor = Monitor::with_probes(&config, Limits::default(), move |_| {
            Arc::new(Switch(Arc::clone(&switch)))
        });
        let sink = Arc::new(Kept::default());
        let service = rampart_monitor::alert::AlertService::start_with_store(
            engine(&config),
            &monitor,
            Arc::clone(&sink) as Arc<dyn NotificationSink>,
            Arc::clone(&store) as Arc<dyn AlertStateStore>,
        )
        .await
        .unwrap();
        let got = sink
            .until("TargetDown firing", |ns| {
                down_alerts(ns, AlertStatus::Firing) > 0
            })
            .await;
        assert_eq!(got[0].receiver, "ops");
        let now = DateTime::<Utc>::from(std::time::SystemTime::now());
        service
            .put_silence(Silence {
                id: "s1".into(),
                matchers: vec![Matcher::parse("target=db").unwrap()],
                starts_at: now,
                ends_at: now + chrono::Duration::hours(1),
                created_by: "ana".into(),
                comment: "db work".into(),
                updated_at: now,
            })
            .await
            .unwrap();
        // The state is saved once the notification is in the sink.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store
            .load_alert_state()
            .await
            .unwrap()
            .is_none_or(|s| s.alert_count() == 0)
        {
            assert!(Instant::now() < deadline, "the alert state was never saved");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(service);
        monitor.shutdown(Duration::from_secs(1)).await;
    }

    // Second life: the target is still down at first, then comes back.
    let store = Arc::new(
        SqliteStore::open(&path, SqliteConfig::default())
            .await
            .unwrap(),
    );
    let switch = Arc::clone(&up);
    let monitor = Monitor::with_probes(&config, Limits::default(), move |_| {
        Arc::new(Switch(Arc::clone(&switch)))
    });
    let mut results = monitor.subscribe_results();
    let sink = Arc::new(Kept::default());
    let service = rampart_monitor::alert::AlertService::start_with_store(
        engine(&config),
        &monitor,
        Arc::clone(&sink) as Arc<dyn NotificationSink>,
        Arc::clone(&store) as Arc<dyn AlertStateStore>,
    )
    .await
    .unwrap();
    assert_eq!(service.silences().len(), 1, "the silence survived");
    assert_eq!(service.alerts().len(), 1, "the firing alert survived");
    // A failing result after the restart: still firing, nothing sent again.
    results.recv().await.unwrap();
    up.store(true, Ordering::SeqCst);
    let got = sink
        .until("TargetDown resolved", |ns| {
            down_alerts(ns, AlertStatus::Resolved) > 0
        })
        .await;
    assert_eq!(
        down_alerts(&got, AlertStatus::Firing),
        0,
        "the alert was notified before the restart and must not be repeated: {got:#?}"
    );
    drop(service);
    monitor.shutdown(Duration::from_secs(1)).await;
}
