#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Acknowledged writes survive `kill -9` of the process that made them.
//!
//! The test re-runs its own binary as the writer (`RAMPART_STORE_WRITER` names the database): the
//! child writes results and state changes from several tasks and prints each acknowledged write;
//! the parent kills it with SIGKILL mid-stream, reopens the file and checks every acknowledged
//! write is there and the target is still down with its incident open.

mod reexec;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{FailureKind, ProbeResult};
use rampart_monitor::store::{
    Batch, ResultRecord, SqliteConfig, SqliteStore, StateChangeRecord, Store,
};

const WRITER_ENV: &str = "RAMPART_STORE_WRITER";
const TEST_NAME: &str = "acknowledged_writes_and_the_open_incident_survive_kill_9";
/// Acknowledgements to see before the kill.
const ACKS_BEFORE_KILL: usize = 3000;

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_799_971_200)
}

fn at(seq: u64) -> SystemTime {
    t0() + Duration::from_millis(seq)
}

fn failure(seq: u64) -> ResultRecord {
    let probe = ProbeResult::failure(
        FailureKind::ConnectRefused,
        "refused",
        Duration::from_micros(100 + seq % 1000),
    );
    ResultRecord::new("api", at(seq), &probe)
}

/// The child: writes until killed, printing `ack <seq>` for each acknowledged write.
fn run_writer(path: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(
            SqliteStore::open(path, SqliteConfig::default())
                .await
                .unwrap(),
        );
        // seq 0: healthy; seq 1: the failure that makes it unhealthy, opening the incident.
        let ok = ResultRecord::new(
            "api",
            at(0),
            &ProbeResult::success(Duration::from_millis(1)),
        );
        let up = StateChangeRecord::between(
            "api",
            at(0),
            HealthState::Unknown,
            HealthState::Healthy,
            None,
        );
        store
            .write(Batch::new().result(ok).change(up))
            .await
            .unwrap();
        println!("ack 0");
        let down = StateChangeRecord::between(
            "api",
            at(1),
            HealthState::Healthy,
            HealthState::Unhealthy,
            Some("refused".into()),
        );
        store
            .write(Batch::new().result(failure(1)).change(down))
            .await
            .unwrap();
        println!("ack 1");
        let next = Arc::new(AtomicU64::new(2));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (store, next) = (Arc::clone(&store), Arc::clone(&next));
            tasks.spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    store
                        .write(Batch::new().result(failure(seq)))
                        .await
                        .unwrap();
                    println!("ack {seq}");
                }
            });
        }
        tasks.join_next().await;
    });
}

#[test]
fn acknowledged_writes_and_the_open_incident_survive_kill_9() {
    if let Ok(path) = std::env::var(WRITER_ENV) {
        run_writer(path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let mut child = reexec::spawn_self(TEST_NAME, WRITER_ENV, &path);
    let child = &mut child.0;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut acked = BTreeSet::new();
    let mut killed = false;
    // Lines already in the pipe when the kill lands were acknowledged too: read to the end.
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(seq) = line.strip_prefix("ack ") {
            acked.insert(seq.parse::<u64>().unwrap());
        }
        if !killed && acked.len() >= ACKS_BEFORE_KILL {
            kill(pid, Signal::SIGKILL).unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the writer stopped on its own after {} acks: {status}",
        acked.len()
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&path, SqliteConfig::default())
            .await
            .unwrap();
        let stored: BTreeSet<u64> = store
            .results("api", t0(), t0() + Duration::from_secs(86_400))
            .await
            .unwrap()
            .iter()
            .map(|r| r.at.duration_since(t0()).unwrap().as_millis() as u64)
            .collect();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged results lost: {lost:?}",
            lost.len()
        );
        eprintln!(
            "{} acknowledged, {} stored (the rest were committed but not yet acknowledged)",
            acked.len(),
            stored.len()
        );

        // The target is still unhealthy and its incident continues...
        let states = store.last_states().await.unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].state, HealthState::Unhealthy);
        let incident = states[0]
            .incident
            .clone()
            .expect("the incident is still open");
        assert_eq!(incident.opened, at(1));
        // ...until the target recovers, which closes that same incident.
        let back = StateChangeRecord::between(
            "api",
            at(1 << 40),
            HealthState::Unhealthy,
            HealthState::Healthy,
            None,
        );
        store.write(Batch::new().change(back)).await.unwrap();
        let incidents = store.incidents("api").await.unwrap();
        assert_eq!(incidents.len(), 1);
        assert_eq!(
            (incidents[0].id, incidents[0].closed),
            (incident.id, Some(at(1 << 40)))
        );
    });
}
