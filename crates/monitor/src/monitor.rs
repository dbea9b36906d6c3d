//! [`Monitor`]: configuration, scheduler and health model wired together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{CheckConfig, MonitorConfig, TargetConfig};
use crate::health::{HealthModel, HealthState, SCORE_WINDOW, StateChange, Summary, TargetHealth};
use crate::heartbeat::{HeartbeatProbe, HeartbeatTracker, UnknownToken};
use crate::probe::{self, Probe};
use crate::scheduler::{Limits, ProbeReport, ScheduledTarget, Scheduler};
use crate::store::{Batch, ResultRecord, StateChangeRecord, Store, StoreError};

/// Events kept for a slow subscriber before it starts missing some.
const EVENT_BUFFER: usize = 1024;

/// Probes every configured target on its schedule and keeps their health.
///
/// Subscribers get every [`StateChange`] ([`Monitor::subscribe`]) and every probe result
/// ([`Monitor::subscribe_results`]); [`Monitor::summary`] gives scores and counts at any time.
/// Dropping the monitor stops every probe.
///
/// ```
/// use rampart_monitor::config::MonitorConfig;
/// use rampart_monitor::health::HealthState;
/// use rampart_monitor::Monitor;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let config = MonitorConfig::from_str(
///     &format!(
///         "[[target]]\nname = \"db\"\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
///          [target.tcp]\naddress = \"{}\"\n",
///         listener.local_addr()?
///     ),
///     None,
/// )?;
/// let monitor = Monitor::start(&config);
/// let mut changes = monitor.subscribe();
/// let change = changes.recv().await?;
/// assert_eq!((change.target.as_str(), change.to), ("db", HealthState::Healthy));
/// assert_eq!(monitor.summary().overall, Some(100.0));
/// # Ok(())
/// # }
/// ```
pub struct Monitor {
    model: Arc<Mutex<HealthModel>>,
    changes: broadcast::Sender<StateChange>,
    results: broadcast::Sender<ProbeReport>,
    heartbeats: HeartbeatTracker,
    // Taken (under the lock, never held across an await) by `shutdown`.
    scheduler: Mutex<Option<Scheduler>>,
    router: Mutex<Option<JoinHandle<()>>>,
    store: Option<Arc<dyn Store>>,
    store_failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("model", &self.model)
            .field("running", &self.is_running())
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(router) = take(&self.router) {
            router.abort();
        }
    }
}

impl Monitor {
    /// Starts probing every target of `config` with the probe its kind asks for and the default
    /// [`Limits`]; heartbeat targets are evaluated against the monitor's own
    /// [`HeartbeatTracker`]. Must be called inside a tokio runtime.
    pub fn start(config: &MonitorConfig) -> Self {
        Self::with_tracker(
            config,
            Limits::default(),
            HeartbeatTracker::from_config(config),
        )
    }

    /// Like [`start`](Self::start), with the given limits and heartbeat tracker (one anchored at a
    /// chosen wall-clock time, say, for tests on paused time). The tracker should hold the
    /// configuration's heartbeat targets.
    pub fn with_tracker(config: &MonitorConfig, limits: Limits, tracker: HeartbeatTracker) -> Self {
        let mut monitor = Self::with_probes(config, limits, default_probes(tracker.clone()));
        monitor.heartbeats = tracker;
        monitor
    }

    /// Like [`with_tracker`](Self::with_tracker), keeping history in `store`: the daemon's
    /// constructor. See [`with_store`](Self::with_store).
    pub async fn with_tracker_and_store(
        config: &MonitorConfig,
        limits: Limits,
        tracker: HeartbeatTracker,
        store: Arc<dyn Store>,
    ) -> Result<Self, StoreError> {
        let probes = default_probes(tracker.clone());
        let mut monitor = Self::with_store(config, limits, probes, store).await?;
        monitor.heartbeats = tracker;
        Ok(monitor)
    }

    /// Starts probing like [`with_probes`](Self::with_probes), keeping history in `store`.
    ///
    /// Before the first probe, each target is restored from the store: its last recorded state
    /// and its last [`SCORE_WINDOW`] results (see [`HealthModel::restore`]), so a target that
    /// was unhealthy when the process died is unhealthy at once, and its open incident
    /// continues. Every result and the state changes it caused are then written to the store
    /// **before** they are published to subscribers: what a subscriber sees is durable. A write
    /// that fails is retried with backoff (100 ms doubling to 5 s) until it succeeds; meanwhile
    /// later results wait in the scheduler's queue, which grows by one result per target
    /// interval ([`store_failures`](Self::store_failures) counts the failed attempts).
    pub async fn with_store(
        config: &MonitorConfig,
        limits: Limits,
        make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StoreError> {
        let mut model = HealthModel::new(&config.targets);
        let states = store.last_states().await?;
        for t in &config.targets {
            let state = states
                .iter()
                .find(|s| s.target == t.name)
                .map_or(HealthState::Unknown, |s| s.state);
            let recent = store.latest_results(&t.name, SCORE_WINDOW).await?;
            model.restore(&t.name, state, &recent);
        }
        Ok(Self::build(config, limits, make_probe, model, Some(store)))
    }

    /// Starts probing with probes made by `make_probe` (say, fakes in tests) and the given limits.
    pub fn with_probes(
        config: &MonitorConfig,
        limits: Limits,
        make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe>,
    ) -> Self {
        Self::build(
            config,
            limits,
            make_probe,
            HealthModel::new(&config.targets),
            None,
        )
    }

    fn build(
        config: &MonitorConfig,
        limits: Limits,
        mut make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe>,
        model: HealthModel,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let model = Arc::new(Mutex::new(model));
        let (changes, _) = broadcast::channel(EVENT_BUFFER);
        let (results, _) = broadcast::channel(EVENT_BUFFER);
        let (tx, rx) = mpsc::unbounded_channel();
        let targets = config
            .targets
            .iter()
            .map(|t| {
                ScheduledTarget::new(
                    t.name.clone(),
                    t.check.host(),
                    t.interval,
                    t.timeout,
                    make_probe(t),
                )
            })
            .collect();
        let scheduler = Scheduler::start(targets, limits, tx);
        let store_failures = Arc::new(AtomicU64::new(0));
        let router = tokio::spawn(route(
            rx,
            Router {
                model: Arc::clone(&model),
                changes: changes.clone(),
                results: results.clone(),
                store: store.clone(),
                failures: Arc::clone(&store_failures),
            },
        ));
        Monitor {
            model,
            changes,
            results,
            heartbeats: HeartbeatTracker::from_config(config),
            scheduler: Mutex::new(Some(scheduler)),
            router: Mutex::new(Some(router)),
            store,
            store_failures,
        }
    }

    /// Stops gracefully: no new probe starts, probes in flight may finish until `grace` has
    /// passed (then they are cancelled), and every result they produced is written to the store
    /// and published before this returns (unless the store is still failing at the deadline).
    /// A second call returns at once.
    pub async fn shutdown(&self, grace: Duration) {
        let until = Instant::now() + grace;
        let scheduler = take(&self.scheduler);
        if let Some(scheduler) = scheduler {
            scheduler.stop(until).await;
        }
        // The router ends once the last probe's sender is gone and its queue is drained.
        let router = take(&self.router);
        if let Some(mut router) = router
            && tokio::time::timeout_at(until, &mut router).await.is_err()
        {
            router.abort();
        }
    }

    /// True while probes are being scheduled and results routed (false after a
    /// [`shutdown`](Self::shutdown) began or if the router died).
    pub fn is_running(&self) -> bool {
        let scheduling = lock(&self.scheduler).is_some();
        scheduling
            && lock(&self.router)
                .as_ref()
                .is_some_and(|r| !r.is_finished())
    }

    /// The store results are written to, if any.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Store writes that failed and were retried since the start.
    pub fn store_failures(&self) -> u64 {
        self.store_failures.load(Ordering::Relaxed)
    }

    /// Records a heartbeat with `token` (what `POST /api/heartbeat/{token}` does) and returns
    /// the target it belongs to. The token is never logged or shown.
    pub fn heartbeat(&self, token: &str) -> Result<String, UnknownToken> {
        self.heartbeats.heartbeat(token)
    }

    /// The tracker of the heartbeat targets.
    pub fn heartbeats(&self) -> &HeartbeatTracker {
        &self.heartbeats
    }

    /// Every state change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// Every probe result from now on (after the health model has recorded it).
    pub fn subscribe_results(&self) -> broadcast::Receiver<ProbeReport> {
        self.results.subscribe()
    }

    /// Scores and counts over every target.
    pub fn summary(&self) -> Summary {
        self.model().summary()
    }

    /// The shown state of `target`.
    pub fn state(&self, target: &str) -> Option<HealthState> {
        self.model().state(target)
    }

    /// The health model's view of `target`.
    pub fn target(&self, target: &str) -> Option<TargetHealth> {
        self.model().target(target)
    }

    /// The health model, shared (for the alert engine, which reads states and scores).
    pub(crate) fn model_handle(&self) -> Arc<Mutex<HealthModel>> {
        Arc::clone(&self.model)
    }

    fn model(&self) -> MutexGuard<'_, HealthModel> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    lock(m).take()
}

/// The probes a configuration asks for, heartbeat targets evaluated against `tracker`.
fn default_probes(tracker: HeartbeatTracker) -> impl FnMut(&TargetConfig) -> Arc<dyn Probe> {
    move |t| match &t.check {
        CheckConfig::Heartbeat(_) => Arc::new(HeartbeatProbe::new(tracker.clone(), &t.name)),
        check => Arc::from(probe::for_check(check)),
    }
}

/// Where the router sends what it routes.
struct Router {
    model: Arc<Mutex<HealthModel>>,
    changes: broadcast::Sender<StateChange>,
    results: broadcast::Sender<ProbeReport>,
    store: Option<Arc<dyn Store>>,
    failures: Arc<AtomicU64>,
}

/// Feeds each result to the model, writes it and the changes it caused to the store (if any),
/// then publishes them.
async fn route(mut rx: mpsc::UnboundedReceiver<ProbeReport>, to: Router) {
    while let Some(report) = rx.recv().await {
        let caused = to
            .model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(&report.target, &report.result);
        if let Some(store) = &to.store {
            let now = SystemTime::now();
            let batch = caused.iter().fold(
                Batch::new().result(ResultRecord::new(&report.target, now, &report.result)),
                |batch, change| batch.change(StateChangeRecord::new(now, change)),
            );
            write_until_stored(store.as_ref(), batch, &to.failures).await;
        }
        for change in caused {
            // No subscriber is fine: the change is in the model either way.
            let _ = to.changes.send(change);
        }
        let _ = to.results.send(report);
    }
}

/// Writes `batch`, retrying with backoff until the store acknowledges it.
async fn write_until_stored(store: &dyn Store, batch: Batch, failures: &AtomicU64) {
    let mut backoff = Duration::from_millis(100);
    while store.write(batch.clone()).await.is_err() {
        failures.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
