//! [`Monitor`]: configuration, scheduler and health model wired together.

use std::collections::HashMap;
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
use crate::scheduler::{Delivery, Limits, ProbeReport, ScheduledTarget, Scheduler};
use crate::store::{Batch, ResultRecord, StateChangeRecord, Store, StoreError};

/// Events kept for a slow subscriber before it starts missing some.
const EVENT_BUFFER: usize = 1024;

/// Reports waiting between the scheduler and the router. Each target has at most one report
/// waiting (its next run is skipped until it is stored), so this bounds only a monitor of more
/// targets than this, whose probes then wait to hand their reports over.
const RESULT_QUEUE: usize = 1024;

/// Makes the probe of a target (kept to make those of targets added later).
type MakeProbe = Box<dyn FnMut(&TargetConfig) -> Arc<dyn Probe> + Send>;

/// Probes every configured target on its schedule and keeps their health.
///
/// Subscribers get every [`StateChange`] ([`Monitor::subscribe`]) and every probe result
/// ([`Monitor::subscribe_results`]); [`Monitor::summary`] gives scores and counts at any time.
/// Dropping the monitor stops every probe. [`Monitor::reconfigure`] follows a new
/// configuration target by target, without a restart.
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
    /// The generation of each running target: a report of another generation is stale (its
    /// target was removed or restarted) and dropped. Locked before `model` where both are.
    live: Arc<Mutex<HashMap<String, u64>>>,
    changes: broadcast::Sender<StateChange>,
    results: broadcast::Sender<ProbeReport>,
    heartbeats: HeartbeatTracker,
    // Taken (under the lock, never held across an await) by `shutdown`.
    scheduler: Mutex<Option<Scheduler>>,
    router: Mutex<Option<JoinHandle<()>>>,
    /// State changes a reconfiguration caused, for the router to store and publish.
    control: mpsc::UnboundedSender<Vec<StateChange>>,
    /// The running targets and how to make probes; one reconfiguration at a time.
    running: tokio::sync::Mutex<Running>,
    store: Option<Arc<dyn Store>>,
    store_failures: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
}

struct Running {
    targets: Vec<TargetConfig>,
    make_probe: MakeProbe,
    next_generation: u64,
}

/// What a [`Monitor::reconfigure`] did, by target name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconfiguration {
    /// New targets, started (restored from the store first, if there is one).
    pub added: Vec<String>,
    /// Targets gone, stopped.
    pub removed: Vec<String>,
    /// Targets whose check changed: restarted with a new probe, their state started over.
    pub reset: Vec<String>,
    /// Targets whose interval or timeout changed: restarted with a new schedule, state kept.
    pub rescheduled: Vec<String>,
    /// Targets whose group, weight, thresholds or dependencies changed: updated in the health
    /// model, probe and state untouched.
    pub updated: Vec<String>,
    /// Targets left exactly as they were.
    pub unchanged: Vec<String>,
}

impl Reconfiguration {
    /// True if nothing but unchanged targets.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.reset.is_empty()
            && self.rescheduled.is_empty()
            && self.updated.is_empty()
    }
}

/// Why a [`Monitor::reconfigure`] changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconfigureError {
    /// The monitor was shut down.
    #[error("the monitor is shut down")]
    Stopped,
    /// The history of an added target could not be read from the store.
    #[error("cannot restore the added targets from the store")]
    Store(#[source] StoreError),
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
    /// that fails is retried with backoff (100 ms doubling to 5 s) until it succeeds.
    ///
    /// Memory stays bounded while the store fails: a result counts as accepted only once it is
    /// stored, and each target has at most one result waiting to be stored. While it waits,
    /// that target's next runs are skipped and counted ([`skipped_runs`](Self::skipped_runs));
    /// no result that was produced is dropped (except a removed target's, see
    /// [`reconfigure`](Self::reconfigure)). [`store_failures`](Self::store_failures) counts the
    /// failed attempts.
    pub async fn with_store(
        config: &MonitorConfig,
        limits: Limits,
        make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe> + Send + 'static,
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

    /// Starts probing with probes made by `make_probe` (say, fakes in tests) and the given
    /// limits. `make_probe` is kept to make the probes of targets added by
    /// [`reconfigure`](Self::reconfigure).
    pub fn with_probes(
        config: &MonitorConfig,
        limits: Limits,
        make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe> + Send + 'static,
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
        make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe> + Send + 'static,
        model: HealthModel,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let mut make_probe: MakeProbe = Box::new(make_probe);
        let model = Arc::new(Mutex::new(model));
        let (changes, _) = broadcast::channel(EVENT_BUFFER);
        let (results, _) = broadcast::channel(EVENT_BUFFER);
        let (tx, rx) = mpsc::channel(RESULT_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let mut live = HashMap::new();
        let mut next_generation = 1;
        let targets = config
            .targets
            .iter()
            .map(|t| {
                live.insert(t.name.clone(), next_generation);
                next_generation += 1;
                scheduled(t, &mut make_probe, next_generation - 1)
            })
            .collect();
        let live = Arc::new(Mutex::new(live));
        let scheduler = Scheduler::start_acked(targets, limits, tx);
        let skipped = scheduler.skipped_counter();
        let store_failures = Arc::new(AtomicU64::new(0));
        let stale = Arc::new(AtomicU64::new(0));
        let router = tokio::spawn(route(
            rx,
            control_rx,
            Router {
                model: Arc::clone(&model),
                live: Arc::clone(&live),
                changes: changes.clone(),
                results: results.clone(),
                store: store.clone(),
                failures: Arc::clone(&store_failures),
                stale: Arc::clone(&stale),
            },
        ));
        Monitor {
            model,
            live,
            changes,
            results,
            heartbeats: HeartbeatTracker::from_config(config),
            scheduler: Mutex::new(Some(scheduler)),
            router: Mutex::new(Some(router)),
            control,
            running: tokio::sync::Mutex::new(Running {
                targets: config.targets.clone(),
                make_probe,
                next_generation,
            }),
            store,
            store_failures,
            skipped,
            stale,
        }
    }

    /// Follows `config` target by target, without stopping the monitor; subscribers keep their
    /// receivers. Targets are matched by name:
    ///
    /// - **unchanged** targets keep running untouched: schedule, probe, state and score;
    /// - a target whose **check** changed (what is probed, or how) gets a new probe and starts
    ///   over as unknown: results of the old check say nothing about the new one;
    /// - a target whose **interval or timeout** changed gets a new schedule (first probe after
    ///   its jitter offset from now) and keeps its state;
    /// - a target whose **group, weight, thresholds or dependencies** changed keeps its probe
    ///   and state; the health model takes the new settings;
    /// - **removed** targets stop at once: a probe in flight is cancelled, and a result of
    ///   theirs waiting to be stored is dropped, so it never brings them back (one being
    ///   written at that very moment is still published);
    /// - **added** targets start (restored from the store first, if the monitor has one).
    ///
    /// Heartbeat targets are tracked or forgotten alike. Dependencies are resolved again; state
    /// changes that follow (a target no longer unreachable through a removed parent, a reset
    /// target) are stored and published with cause
    /// [`ChangeCause::Reconfigured`](crate::health::ChangeCause::Reconfigured). The
    /// configuration's `[server]` and `[store]` sections are ignored here. On an error nothing
    /// changed.
    ///
    /// ```
    /// use rampart_monitor::Monitor;
    /// use rampart_monitor::config::MonitorConfig;
    /// use tokio::sync::broadcast::error::TryRecvError;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tcp = |name: &str, interval: &str| {
    ///     format!("[[target]]\nname = \"{name}\"\nkind = \"tcp\"\ninterval = \"{interval}\"\n\
    ///              timeout = \"1s\"\n[target.tcp]\naddress = \"127.0.0.1:9\"\n")
    /// };
    /// let before = MonitorConfig::from_str(&(tcp("db", "10s") + &tcp("cache", "10s")), None)?;
    /// let monitor = Monitor::start(&before);
    /// let mut changes = monitor.subscribe();
    ///
    /// let after = MonitorConfig::from_str(&(tcp("db", "10s") + &tcp("queue", "5s")), None)?;
    /// let plan = monitor.reconfigure(&after).await?;
    /// assert_eq!(plan.unchanged, ["db"]);
    /// assert_eq!((plan.added, plan.removed), (vec!["queue".to_owned()], vec!["cache".to_owned()]));
    /// assert!(monitor.target("cache").is_none());
    /// // Still subscribed (not closed), nothing changed yet.
    /// assert_eq!(changes.try_recv(), Err(TryRecvError::Empty));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reconfigure(
        &self,
        config: &MonitorConfig,
    ) -> Result<Reconfiguration, ReconfigureError> {
        let mut running = self.running.lock().await;
        let mut plan = Reconfiguration::default();
        for t in &config.targets {
            let Some(old) = running.targets.iter().find(|o| o.name == t.name) else {
                plan.added.push(t.name.clone());
                continue;
            };
            let list = if !old.check.same_as(&t.check) {
                &mut plan.reset
            } else if (old.interval, old.timeout) != (t.interval, t.timeout) {
                &mut plan.rescheduled
            } else if old.group != t.group
                || old.weight != t.weight
                || old.thresholds != t.thresholds
                || old.depends_on != t.depends_on
            {
                &mut plan.updated
            } else {
                &mut plan.unchanged
            };
            list.push(t.name.clone());
        }
        plan.removed = running
            .targets
            .iter()
            .filter(|o| !config.targets.iter().any(|t| t.name == o.name))
            .map(|o| o.name.clone())
            .collect();

        // Read before anything changes, so a store error leaves everything as it was.
        let mut restored = Vec::new();
        if let Some(store) = self.store.as_ref().filter(|_| !plan.added.is_empty()) {
            let states = store.last_states().await.map_err(ReconfigureError::Store)?;
            for name in &plan.added {
                let state = states
                    .iter()
                    .find(|s| &s.target == name)
                    .map_or(HealthState::Unknown, |s| s.state);
                let recent = store
                    .latest_results(name, SCORE_WINDOW)
                    .await
                    .map_err(ReconfigureError::Store)?;
                restored.push((name.clone(), state, recent));
            }
        }

        let mut scheduler = lock(&self.scheduler);
        let Some(scheduler) = scheduler.as_mut() else {
            return Err(ReconfigureError::Stopped);
        };
        let restart: Vec<&TargetConfig> = config
            .targets
            .iter()
            .filter(|t| {
                [&plan.added, &plan.reset, &plan.rescheduled]
                    .iter()
                    .any(|l| l.contains(&t.name))
            })
            .collect();
        let caused = {
            let mut live = lock(&self.live);
            for name in &plan.removed {
                live.remove(name);
            }
            let mut fresh = Vec::new();
            for t in &restart {
                let generation = running.next_generation;
                running.next_generation += 1;
                live.insert(t.name.clone(), generation);
                fresh.push(scheduled(t, &mut running.make_probe, generation));
            }
            // Heartbeats: forget the removed and reset targets, track the added and reset ones
            // (an unchanged or rescheduled one keeps its last beat).
            for name in plan.removed.iter().chain(&plan.reset) {
                self.heartbeats.remove(name);
            }
            for t in &config.targets {
                if let CheckConfig::Heartbeat(h) = &t.check
                    && (plan.added.contains(&t.name) || plan.reset.contains(&t.name))
                {
                    self.heartbeats.add(&t.name, h);
                }
            }
            let reset: Vec<&str> = plan.reset.iter().map(String::as_str).collect();
            let restored: Vec<(&str, HealthState, &[ResultRecord])> = restored
                .iter()
                .map(|(n, s, r)| (n.as_str(), *s, r.as_slice()))
                .collect();
            let caused = lock(&self.model).reconfigure(&config.targets, &reset, &restored);
            for name in &plan.removed {
                scheduler.remove(name);
            }
            for target in fresh {
                scheduler.add(target);
            }
            caused
        };
        if !caused.is_empty() {
            // The router is gone only after a shutdown, when nothing is published any more.
            let _ = self.control.send(caused);
        }
        running.targets = config.targets.clone();
        Ok(plan)
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

    /// Runs skipped since the start because the target's previous probe was still running or
    /// its result was still waiting to be stored (while the store fails, say).
    pub fn skipped_runs(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Results dropped since the start because their target had been removed or restarted by
    /// a [`reconfigure`](Self::reconfigure) before they were stored.
    pub fn stale_results(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
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

/// The scheduled form of `t`, of generation `generation`.
fn scheduled(t: &TargetConfig, make_probe: &mut MakeProbe, generation: u64) -> ScheduledTarget {
    ScheduledTarget::new(
        t.name.clone(),
        t.check.host(),
        t.interval,
        t.timeout,
        make_probe(t),
    )
    .with_generation(generation)
}

/// Where the router sends what it routes.
struct Router {
    model: Arc<Mutex<HealthModel>>,
    live: Arc<Mutex<HashMap<String, u64>>>,
    changes: broadcast::Sender<StateChange>,
    results: broadcast::Sender<ProbeReport>,
    store: Option<Arc<dyn Store>>,
    failures: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
}

/// Feeds each result to the model, writes it and the changes it caused to the store (if any),
/// then publishes them and acknowledges the report (which lets its target run again). Changes
/// a reconfiguration caused are stored and published the same way.
async fn route(
    mut rx: mpsc::Receiver<Delivery>,
    mut control: mpsc::UnboundedReceiver<Vec<StateChange>>,
    to: Router,
) {
    loop {
        tokio::select! {
            biased;
            Some(changes) = control.recv() => to.changes(changes).await,
            delivery = rx.recv() => match delivery {
                Some(delivery) => to.report(delivery).await,
                None => break,
            },
        }
    }
    while let Ok(changes) = control.try_recv() {
        to.changes(changes).await;
    }
}

impl Router {
    async fn report(&self, Delivery { report, ack }: Delivery) {
        let caused = {
            let live = lock(&self.live);
            if live.get(&report.target) != Some(&report.generation) {
                // Its target was removed or restarted: this result must not bring it back.
                self.stale.fetch_add(1, Ordering::Relaxed);
                return;
            }
            lock(&self.model).record(&report.target, &report.result)
        };
        if let Some(store) = &self.store {
            let now = SystemTime::now();
            let batch = caused.iter().fold(
                Batch::new().result(ResultRecord::new(&report.target, now, &report.result)),
                |batch, change| batch.change(StateChangeRecord::new(now, change)),
            );
            write_until_stored(store.as_ref(), batch, &self.failures).await;
        }
        for change in caused {
            // No subscriber is fine: the change is in the model either way.
            let _ = self.changes.send(change);
        }
        let _ = self.results.send(report);
        let _ = ack.send(());
    }

    async fn changes(&self, caused: Vec<StateChange>) {
        if let Some(store) = &self.store {
            let now = SystemTime::now();
            let batch = caused.iter().fold(Batch::new(), |batch, change| {
                batch.change(StateChangeRecord::new(now, change))
            });
            write_until_stored(store.as_ref(), batch, &self.failures).await;
        }
        for change in caused {
            let _ = self.changes.send(change);
        }
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
