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
use super::persist::AlertStateStore;
use super::silence::Silence;
use crate::Monitor;
use crate::health::{HealthState, StateChange};
use crate::scheduler::ProbeReport;
use crate::store::StoreError;

/// How often every rule is evaluated on every target without new results (windows and `for`
/// durations end with time alone).
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// The alert engine at work, driven by a monitor.
///
/// Each probe result is evaluated as it arrives and the groups that are due flushed at once
/// (so with `group_wait = 0` and `for = 0` a notification is on its way within one store
/// write of the result); every [`EVALUATE_EVERY`] all rules run on all targets. A notification
/// counts as sent once the sink accepted it: a sink that fails is retried with backoff (100 ms
/// doubling to 5 s) until it accepts, and nothing is dropped meanwhile.
pub struct AlertService {
    engine: Arc<Mutex<AlertEngine>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    store: Option<Arc<dyn AlertStateStore>>,
}

impl std::fmt::Debug for AlertService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertService")
            .field("running", &self.is_running())
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
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
        Self::spawn(engine, monitor, sink, None)
    }

    /// Like [`start`](Self::start), keeping alerting's state in `store`: the state saved
    /// before a restart is taken back first (see [`AlertEngine::restore`]) with every silence,
    /// and from then on the state is saved after each change, once the notifications it made
    /// are in the sink (so a crash can repeat a notification, never lose one).
    pub async fn start_with_store(
        mut engine: AlertEngine,
        monitor: &Monitor,
        sink: Arc<dyn NotificationSink>,
        store: Arc<dyn AlertStateStore>,
    ) -> Result<Self, StoreError> {
        let now = Instant::now();
        if let Some(state) = store.load_alert_state().await? {
            tracing::info!(alerts = state.alert_count(), "alert state restored");
            engine.restore(state, now);
        }
        for silence in store.silences().await? {
            engine.put_silence(silence);
        }
        Ok(Self::spawn(engine, monitor, sink, Some(store)))
    }

    fn spawn(
        engine: AlertEngine,
        monitor: &Monitor,
        sink: Arc<dyn NotificationSink>,
        store: Option<Arc<dyn AlertStateStore>>,
    ) -> Self {
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
            store.clone(),
        ));
        AlertService {
            engine,
            wake,
            task,
            store,
        }
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

    /// Adds or replaces a silence, in the store first (when there is one).
    pub async fn put_silence(&self, silence: Silence) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.put_silence(&silence).await?;
        }
        self.engine().put_silence(silence);
        self.wake.notify_one();
        Ok(())
    }

    /// Ends a silence now, in the store first; `None` if there is none with that id.
    pub async fn expire_silence(&self, id: &str) -> Result<Option<Silence>, StoreError> {
        let now = Instant::now();
        let ended = {
            let engine = self.engine();
            let wall = engine.wall(now);
            engine.silences().iter().find(|s| s.id == id).map(|s| {
                let mut s = s.clone();
                if s.ends_at > wall {
                    s.ends_at = wall.max(s.starts_at);
                    s.updated_at = wall;
                }
                s
            })
        };
        let Some(ended) = ended else {
            return Ok(None);
        };
        if let Some(store) = &self.store {
            store.put_silence(&ended).await?;
        }
        self.engine().put_silence(ended.clone());
        self.wake.notify_one();
        Ok(Some(ended))
    }

    /// Every silence the engine holds (active, pending and recently expired).
    pub fn silences(&self) -> Vec<Silence> {
        self.engine().silences().to_vec()
    }

    /// Reports a bottleneck at `target` (telemetry's detectors named it): `bottleneck` rules
    /// see it for their window.
    pub fn report_bottleneck(&self, target: &str) {
        self.engine().observe_bottleneck(target, Instant::now());
        self.wake.notify_one();
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
    store: Option<Arc<dyn AlertStateStore>>,
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
        if let Some(store) = &store {
            save(&engine, store.as_ref()).await;
        }
    }
}

/// Saves the engine's durable state if it changed; on failure it stays marked changed, so the
/// next round tries again.
async fn save(engine: &Mutex<AlertEngine>, store: &dyn AlertStateStore) {
    let state = {
        let mut engine = lock(engine);
        if !engine.take_dirty() {
            return;
        }
        engine.durable_state(Instant::now())
    };
    if let Err(e) = store.save_alert_state(&state).await {
        tracing::warn!(error = %e, "cannot save the alert state; will retry");
        lock(engine).mark_dirty();
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
