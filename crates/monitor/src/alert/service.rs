//! [`AlertService`]: the alert engine driven by a monitor's results and state changes, its
//! notifications handed to a [`NotificationSink`] (the durable outbox in the daemon).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::NotificationSink;
use super::engine::{AckError, AlertEngine, AlertView, EngineStats, TargetInfo};
use super::model::Notification;
use super::silence::Silence;
use crate::Monitor;
use crate::health::{HealthState, StateChange};
use crate::scheduler::ProbeReport;

/// How often every rule is evaluated on every target without new results (windows and `for`
/// durations end with time alone).
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// The alert engine at work: see the [module docs](self).
///
/// Each probe result is evaluated as it arrives and the groups that are due flushed at once
/// (so with `group_wait = 0` and `for = 0` a notification is on its way within one store
/// write of the result); every [`EVALUATE_EVERY`] all rules run on all targets. A notification
/// counts as sent once the sink accepted it: a sink that fails is retried with backoff (100 ms
/// doubling to 5 s) until it accepts, and nothing is dropped meanwhile.
#[derive(Debug)]
pub struct AlertService {
    engine: Arc<Mutex<AlertEngine>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for AlertService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AlertService {
    /// Starts evaluating `engine` on `monitor`'s results and state changes, sending what it
    /// makes to `sink`. Must be called inside a tokio runtime.
    pub fn start(engine: AlertEngine, monitor: &Monitor, sink: Arc<dyn NotificationSink>) -> Self {
        let engine = Arc::new(Mutex::new(engine));
        let wake = Arc::new(Notify::new());
        let model = monitor.model_handle();
        let health = move |target: &str| {
            let model = model.lock().unwrap_or_else(PoisonError::into_inner);
            model.target(target).map(|t| (t.state, t.score))
        };
        let task = tokio::spawn(run(
            Arc::clone(&engine),
            health,
            monitor.subscribe_results(),
            monitor.subscribe(),
            Arc::clone(&wake),
            sink,
        ));
        AlertService { engine, wake, task }
    }

    /// Every alert, firing first.
    pub fn alerts(&self) -> Vec<AlertView> {
        self.engine().alerts(Instant::now())
    }

    /// One alert by fingerprint.
    pub fn alert(&self, fingerprint: &str) -> Option<AlertView> {
        self.engine().alert(fingerprint, Instant::now())
    }

    /// Acknowledges a firing alert: its escalation stops and its receivers are told.
    pub fn acknowledge(
        &self,
        fingerprint: &str,
        by: &str,
        comment: Option<String>,
    ) -> Result<AlertView, AckError> {
        let view = self
            .engine()
            .acknowledge(fingerprint, by, comment, Instant::now())?;
        self.wake.notify_one();
        Ok(view)
    }

    /// Adds or replaces a silence.
    pub fn put_silence(&self, silence: Silence) {
        self.engine().put_silence(silence);
        self.wake.notify_one();
    }

    /// Ends a silence now; `None` if there is none with that id.
    pub fn expire_silence(&self, id: &str) -> Option<Silence> {
        let s = self.engine().expire_silence(id, Instant::now());
        self.wake.notify_one();
        s
    }

    /// Every silence the engine holds (active, pending and recently expired).
    pub fn silences(&self) -> Vec<Silence> {
        self.engine().silences().to_vec()
    }

    /// Replaces the targets the rules watch (after a reload).
    pub fn set_targets(&self, targets: &[TargetInfo]) {
        self.engine().set_targets(targets, Instant::now());
        self.wake.notify_one();
    }

    /// What the engine did so far.
    pub fn stats(&self) -> EngineStats {
        self.engine().stats()
    }

    /// True while the evaluation task runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    fn engine(&self) -> MutexGuard<'_, AlertEngine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn lock(engine: &Mutex<AlertEngine>) -> MutexGuard<'_, AlertEngine> {
    engine.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run(
    engine: Arc<Mutex<AlertEngine>>,
    health: impl Fn(&str) -> Option<(HealthState, Option<u8>)> + Send + 'static,
    mut results: broadcast::Receiver<ProbeReport>,
    mut changes: broadcast::Receiver<StateChange>,
    wake: Arc<Notify>,
    sink: Arc<dyn NotificationSink>,
) {
    let mut next_sweep = Instant::now() + EVALUATE_EVERY;
    loop {
        let deadline = lock(&engine)
            .next_flush()
            .map_or(next_sweep, |f| f.min(next_sweep));
        tokio::select! {
            r = results.recv() => match r {
                Ok(report) => {
                    let (state, score) = health(&report.target).unwrap_or((HealthState::Unknown, None));
                    lock(&engine).observe(&report.target, &report.result, state, score, Instant::now());
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "alert engine fell behind the probe results");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            c = changes.recv() => match c {
                Ok(change) => {
                    let score = health(&change.target).and_then(|(_, score)| score);
                    lock(&engine).observe_state(&change.target, change.to, score, Instant::now());
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "alert engine fell behind the state changes");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        let now = Instant::now();
        let due = {
            let mut engine = lock(&engine);
            if now >= next_sweep {
                engine.evaluate_all(now);
                next_sweep = now + EVALUATE_EVERY;
                let wall = engine.wall(now) - chrono::Duration::days(1);
                engine.prune_silences(wall);
            }
            engine.flush(now)
        };
        if !due.is_empty() {
            deliver(sink.as_ref(), due).await;
        }
    }
}

/// Hands `notifications` to the sink, retrying with backoff until it accepts them.
async fn deliver(sink: &dyn NotificationSink, notifications: Vec<Notification>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sink.enqueue(notifications.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, count = notifications.len(), "cannot queue notifications; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
