//! `Monitor::reconfigure` and the bounded result queue, on paused time with fake probes and a
//! fake store (no I/O).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rampart_monitor::Monitor;
use rampart_monitor::config::{CheckConfig, MonitorConfig, TargetConfig};
use rampart_monitor::health::{ChangeCause, HealthState, StateChange};
use rampart_monitor::probe::{FailureKind, Probe, ProbeFuture, ProbeResult};
use rampart_monitor::scheduler::{Limits, ProbeReport};
use rampart_monitor::store::{
    ApiTarget, Batch, Incident, Level, ResultRecord, Rollup, Store, StoreError, StoreFuture,
    SweepReport, TargetState,
};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

use HealthState::*;

/// Passes unless its address contains "down"; takes `takes`; counts its runs by target.
struct Fake {
    name: String,
    down: bool,
    takes: Duration,
    runs: Arc<Mutex<HashMap<String, usize>>>,
}

impl Probe for Fake {
    fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            *self
                .runs
                .lock()
                .unwrap()
                .entry(self.name.clone())
                .or_default() += 1;
            tokio::time::sleep(self.takes).await;
            if self.down {
                ProbeResult::failure(FailureKind::ConnectRefused, "refused", self.takes)
            } else {
                ProbeResult::success(self.takes)
            }
        })
    }
}

/// Probes made so far (by target) and runs so far (by target).
#[derive(Clone, Default)]
struct Counts {
    made: Arc<Mutex<HashMap<String, usize>>>,
    runs: Arc<Mutex<HashMap<String, usize>>>,
}

impl Counts {
    fn factory(&self) -> impl FnMut(&TargetConfig) -> Arc<dyn Probe> + Send + 'static {
        let counts = self.clone();
        move |t| {
            *counts
                .made
                .lock()
                .unwrap()
                .entry(t.name.clone())
                .or_default() += 1;
            let CheckConfig::Tcp(tcp) = &t.check else {
                panic!("tcp only")
            };
            let takes = if tcp.address.starts_with("slow") {
                Duration::from_secs(5)
            } else {
                Duration::from_millis(10)
            };
            Arc::new(Fake {
                name: t.name.clone(),
                down: tcp.address.contains("down"),
                takes,
                runs: Arc::clone(&counts.runs),
            })
        }
    }
    fn made(&self, name: &str) -> usize {
        self.made.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    fn runs(&self, name: &str) -> usize {
        self.runs.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// `(name, address, extra lines)` as a configuration: 10 s interval, 1 failure is unhealthy.
fn config(targets: &[(&str, &str, &str)]) -> MonitorConfig {
    let mut text = String::from(
        "[defaults]\ninterval = \"10s\"\ntimeout = \"9s\"\nfailures_to_unhealthy = 1\n\
         successes_to_healthy = 1\n",
    );
    for (name, address, extra) in targets {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nkind = \"tcp\"\n{extra}\n[target.tcp]\n\
             address = \"{address}\"\n"
        ));
    }
    MonitorConfig::from_str(&text, None).unwrap()
}

fn drain<T: Clone>(rx: &mut Receiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(v) => out.push(v),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("the subscription broke: {e:?}"),
        }
    }
}

fn started_of(reports: &[ProbeReport], target: &str) -> Vec<tokio::time::Instant> {
    reports
        .iter()
        .filter(|r| r.target == target)
        .map(|r| r.started)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn unchanged_targets_keep_running_changed_ones_restart_removed_ones_stop() {
    let counts = Counts::default();
    let before = config(&[
        ("same", "same:1", ""),
        ("check", "check:1", ""),
        ("timing", "timing:1", ""),
        ("group", "group:1", ""),
        ("gone", "gone:1", ""),
    ]);
    let monitor = Monitor::with_probes(&before, Limits::default(), counts.factory());
    let mut changes = monitor.subscribe();
    let mut results = monitor.subscribe_results();
    tokio::time::sleep(Duration::from_secs(25)).await;
    for name in ["same", "check", "timing", "group", "gone"] {
        assert_eq!(monitor.state(name), Some(Healthy), "{name}");
    }
    let same_before = monitor.target("same").unwrap();
    let timing_before = monitor.target("timing").unwrap();
    let reports_before = drain(&mut results);
    drain(&mut changes);

    let after = config(&[
        ("same", "same:1", ""),
        ("check", "check-down:1", ""),
        ("timing", "timing:1", "interval = \"20s\""),
        ("group", "group:1", "group = \"other\""),
        ("new", "new:1", ""),
    ]);
    let plan = monitor.reconfigure(&after).await.unwrap();
    assert_eq!(plan.unchanged, ["same"]);
    assert_eq!(plan.reset, ["check"]);
    assert_eq!(plan.rescheduled, ["timing"]);
    assert_eq!(plan.updated, ["group"]);
    assert_eq!(plan.added, ["new"]);
    assert_eq!(plan.removed, ["gone"]);

    // At once: untouched targets as they were, the reset one unknown (and told), the removed
    // one gone, the added one unknown.
    assert_eq!(monitor.target("same").unwrap(), same_before);
    assert_eq!(monitor.target("timing").unwrap(), timing_before);
    assert_eq!(monitor.target("group").unwrap().group, "other");
    assert_eq!(monitor.target("group").unwrap().state, Healthy);
    assert_eq!(monitor.state("check"), Some(Unknown));
    assert_eq!(monitor.target("gone"), None);
    assert_eq!(monitor.state("new"), Some(Unknown));
    tokio::task::yield_now().await;
    let told: Vec<StateChange> = drain(&mut changes);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].target.as_str(), told[0].from, told[0].to),
        ("check", Healthy, Unknown)
    );
    assert_eq!(told[0].cause, ChangeCause::Reconfigured);
    // Probes made again only for the targets that restart.
    for (name, made) in [
        ("same", 1),
        ("group", 1),
        ("check", 2),
        ("timing", 2),
        ("new", 1),
    ] {
        assert_eq!(counts.made(name), made, "{name}");
    }

    let gone_runs = counts.runs("gone");
    tokio::time::sleep(Duration::from_secs(40)).await;
    let reports = drain(&mut results);
    // The unchanged target keeps its rhythm: runs exactly `interval` apart across the change.
    let same: Vec<_> = started_of(&reports_before, "same")
        .into_iter()
        .chain(started_of(&reports, "same"))
        .collect();
    assert!(same.len() >= 6, "{same:?}");
    assert!(
        same.windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(10)),
        "{same:?}"
    );
    let timing = started_of(&reports, "timing");
    assert!(
        timing
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_secs(20)),
        "{timing:?}"
    );
    assert_eq!(
        counts.runs("gone"),
        gone_runs,
        "a removed target is not probed"
    );
    assert!(reports.iter().all(|r| r.target != "gone"));
    assert_eq!(
        monitor.state("check"),
        Some(Unhealthy),
        "the new check runs"
    );
    assert_eq!(monitor.state("new"), Some(Healthy));
    assert!(monitor.target("same").unwrap().consecutive_successes >= 6);
    assert_eq!(monitor.summary().targets.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_removed_target_in_flight_never_comes_back() {
    let counts = Counts::default();
    let monitor = Monitor::with_probes(
        &config(&[("slow", "slow:1", ""), ("fast", "fast:1", "")]),
        Limits::default(),
        counts.factory(),
    );
    let mut results = monitor.subscribe_results();
    // Until the slow probe has started (it takes 5 s).
    while counts.runs("slow") == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    monitor
        .reconfigure(&config(&[("fast", "fast:1", "")]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reports = drain(&mut results);
    assert!(reports.iter().all(|r| r.target != "slow"), "{reports:?}");
    assert!(reports.iter().any(|r| r.target == "fast"));
    assert_eq!(monitor.target("slow"), None);
    assert_eq!(counts.runs("slow"), 1);
    assert_eq!(monitor.summary().targets.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dependencies_are_resolved_again() {
    let counts = Counts::default();
    let parent = ("parent", "parent-down:1", "");
    let monitor = Monitor::with_probes(
        &config(&[parent, ("child", "child:1", "depends_on = [\"parent\"]")]),
        Limits::default(),
        counts.factory(),
    );
    let mut changes = monitor.subscribe();
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(monitor.state("parent"), Some(Unhealthy));
    assert_eq!(monitor.state("child"), Some(Unreachable));
    drain(&mut changes);

    // The dependency goes: the child shows its own state at once.
    let plan = monitor
        .reconfigure(&config(&[parent, ("child", "child:1", "")]))
        .await
        .unwrap();
    assert_eq!(plan.updated, ["child"]);
    assert_eq!(monitor.state("child"), Some(Healthy));
    tokio::task::yield_now().await;
    let told = drain(&mut changes);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!((told[0].from, told[0].to), (Unreachable, Healthy));

    // The parent goes, the child depends on nothing: still healthy, no spurious change.
    monitor
        .reconfigure(&config(&[("child", "child:1", "")]))
        .await
        .unwrap();
    assert_eq!(monitor.state("child"), Some(Healthy));
    // Back with the dependency: unreachable again once the parent is known to be down.
    monitor
        .reconfigure(&config(&[
            parent,
            ("child", "child:1", "depends_on = [\"parent\"]"),
        ]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(monitor.state("child"), Some(Unreachable));
}

/// A store that refuses every write while `down` is set; keeps what it accepted.
#[derive(Default)]
struct FlakyStore {
    down: AtomicBool,
    attempts: AtomicUsize,
    stored: Mutex<Vec<ResultRecord>>,
}

impl Store for FlakyStore {
    fn write(&self, batch: Batch) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Closed {
                    path: "fake".into(),
                });
            }
            self.stored.lock().unwrap().extend(batch.results);
            Ok(())
        })
    }
    fn results(&self, _: &str, _: SystemTime, _: SystemTime) -> StoreFuture<'_, Vec<ResultRecord>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn latest_results(&self, _: &str, _: usize) -> StoreFuture<'_, Vec<ResultRecord>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn rollups(
        &self,
        _: &str,
        _: Level,
        _: SystemTime,
        _: SystemTime,
    ) -> StoreFuture<'_, Vec<Rollup>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn incidents(&self, _: &str) -> StoreFuture<'_, Vec<Incident>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn last_states(&self) -> StoreFuture<'_, Vec<TargetState>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn sweep(&self, _: SystemTime) -> StoreFuture<'_, SweepReport> {
        Box::pin(async { Ok(SweepReport::default()) })
    }
    fn api_targets(&self) -> StoreFuture<'_, Vec<ApiTarget>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn put_api_target(&self, _: &str, _: &str, _: SystemTime) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn delete_api_target(&self, _: &str) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(false) })
    }
}

#[tokio::test(start_paused = true)]
async fn while_the_store_fails_each_target_holds_one_result_and_skips_its_runs() {
    let store = Arc::new(FlakyStore::default());
    store.down.store(true, Ordering::SeqCst);
    let counts = Counts::default();
    let monitor = Monitor::with_store(
        &config(&[("a", "a:1", ""), ("b", "b:1", "")]),
        Limits::default(),
        counts.factory(),
        Arc::clone(&store) as Arc<dyn Store>,
    )
    .await
    .unwrap();
    let mut results = monitor.subscribe_results();

    // Ten minutes down: sixty intervals per target, but one probe each, the rest skipped.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!((counts.runs("a"), counts.runs("b")), (1, 1));
    assert!(
        monitor.skipped_runs() >= 2 * 58,
        "{}",
        monitor.skipped_runs()
    );
    assert!(monitor.store_failures() > 0);
    assert!(
        drain(&mut results).is_empty(),
        "nothing is published before it is stored"
    );
    assert!(store.stored.lock().unwrap().is_empty());

    // Back up: both waiting results are stored, then published, and the targets run again.
    store.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(35)).await;
    let published = drain(&mut results);
    let stored = store.stored.lock().unwrap().clone();
    assert!(counts.runs("a") >= 3 && counts.runs("b") >= 3);
    assert_eq!(
        published.len(),
        stored.len(),
        "every result published is stored"
    );
    assert_eq!(
        published.len(),
        counts.runs("a") + counts.runs("b"),
        "and none was lost"
    );
    for name in ["a", "b"] {
        assert_eq!(monitor.state(name), Some(Healthy));
    }
}
