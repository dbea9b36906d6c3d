#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A monitor with a store survives `kill -9`: no published result is lost, and a target that was
//! unhealthy is unhealthy again at once after a restart, with the same incident.
//!
//! The test re-runs its own binary as the daemon (`RAMPART_MONITOR_DAEMON` names the database):
//! the child runs an HTTP server answering 500 and a `Monitor` with a `SqliteStore` probing it,
//! and prints `ack` for each result published to subscribers (published means stored) and
//! `unhealthy` when the target goes down. The parent kills it with SIGKILL, then starts a new
//! monitor on the same file.

mod common;

mod reexec;

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestServer;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rampart_monitor::Monitor;
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{Probe, ProbeFuture, ProbeResult};
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};

const DAEMON_ENV: &str = "RAMPART_MONITOR_DAEMON";
const TEST_NAME: &str = "unhealthy_target_and_its_incident_survive_kill_9_of_the_monitor";
/// Results to see published before the kill (the target is unhealthy after two).
const ACKS_BEFORE_KILL: usize = 4;

fn config(url: &str) -> MonitorConfig {
    MonitorConfig::from_str(
        &format!(
            "[[target]]\nname = \"api\"\nkind = \"http\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             thresholds = {{ failures_to_unhealthy = 2, successes_to_healthy = 2 }}\n\
             [target.http]\nurl = \"{url}\"\n"
        ),
        None,
    )
    .unwrap()
}

/// The child: probes a failing server until killed.
fn run_daemon(path: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = TestServer::start().await;
        let store = Arc::new(
            SqliteStore::open(path, SqliteConfig::default())
                .await
                .unwrap(),
        );
        let monitor = Monitor::with_store(
            &config(&server.url("/error")),
            Limits::default(),
            |t| Arc::from(rampart_monitor::probe::for_check(&t.check)),
            store,
        )
        .await
        .unwrap();
        let mut results = monitor.subscribe_results();
        let mut changes = monitor.subscribe();
        loop {
            tokio::select! {
                r = results.recv() => { r.unwrap(); println!("ack"); }
                c = changes.recv() => {
                    if c.unwrap().to == HealthState::Unhealthy { println!("unhealthy"); }
                }
            }
        }
    });
}

/// A probe that always passes and counts its runs.
struct Passing(Arc<AtomicUsize>);

impl Probe for Passing {
    fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { ProbeResult::success(Duration::from_millis(1)) })
    }
}

#[test]
fn unhealthy_target_and_its_incident_survive_kill_9_of_the_monitor() {
    if let Ok(path) = std::env::var(DAEMON_ENV) {
        run_daemon(path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let mut child = reexec::spawn_self(TEST_NAME, DAEMON_ENV, &path);
    let child = &mut child.0;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (mut acked, mut unhealthy, mut killed) = (0, false, false);
    // Lines already in the pipe when the kill lands were published too: read to the end.
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        match line.unwrap().as_str() {
            "ack" => acked += 1,
            "unhealthy" => unhealthy = true,
            _ => {}
        }
        if !killed && unhealthy && acked >= ACKS_BEFORE_KILL {
            kill(pid, Signal::SIGKILL).unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the daemon stopped on its own: {status}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(
            SqliteStore::open(&path, SqliteConfig::default())
                .await
                .unwrap(),
        );
        let all = |store: Arc<SqliteStore>| async move {
            store
                .results(
                    "api",
                    UNIX_EPOCH,
                    SystemTime::now() + Duration::from_secs(60),
                )
                .await
                .unwrap()
        };
        let stored = all(Arc::clone(&store)).await;
        assert!(
            stored.len() >= acked,
            "{acked} results published, {} stored",
            stored.len()
        );
        assert!(stored.iter().all(|r| r.status == Some(500)));
        let before = store.incidents("api").await.unwrap();
        assert_eq!(before.len(), 1);
        assert!(before[0].is_open());

        // Restart on the same file, with a probe that passes from now on.
        let probes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&probes);
        let monitor = Monitor::with_store(
            &config("http://127.0.0.1:1/"),
            Limits::default(),
            move |_| Arc::new(Passing(Arc::clone(&counter))),
            Arc::clone(&store) as Arc<dyn Store>,
        )
        .await
        .unwrap();
        // Unhealthy at once, before any new probe, with the score of its stored results.
        assert_eq!(probes.load(Ordering::SeqCst), 0);
        let api = monitor.target("api").unwrap();
        assert_eq!(api.state, HealthState::Unhealthy);
        assert_eq!(api.score, Some(0));
        assert!(api.consecutive_failures >= 2, "{api:?}");

        // It recovers through recovering; the incident that closes is the one from before.
        let mut changes = monitor.subscribe();
        let mut seen = Vec::new();
        while seen.last() != Some(&HealthState::Healthy) {
            let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
                .await
                .expect("recovery within 10 s")
                .unwrap();
            seen.push(change.to);
        }
        assert_eq!(seen, [HealthState::Recovering, HealthState::Healthy]);
        monitor.shutdown(Duration::from_secs(2)).await;
        let after = store.incidents("api").await.unwrap();
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0].id, before[0].id);
        assert_eq!(after[0].opened, before[0].opened);
        assert!(!after[0].is_open());
        let now = all(Arc::clone(&store)).await;
        assert!(
            now.len() >= stored.len() + 2,
            "{} then {}",
            stored.len(),
            now.len()
        );
        assert!(now[stored.len()..].iter().all(|r| r.is_success()));
    });
}
