//! [`Monitor`]: configuration, scheduler and health model wired together.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::config::{CheckConfig, MonitorConfig, TargetConfig};
use crate::health::{HealthModel, HealthState, StateChange, Summary, TargetHealth};
use crate::heartbeat::{HeartbeatProbe, HeartbeatTracker, UnknownToken};
use crate::probe::{self, Probe};
use crate::scheduler::{Limits, ProbeReport, ScheduledTarget, Scheduler};

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
#[derive(Debug)]
pub struct Monitor {
    model: Arc<Mutex<HealthModel>>,
    changes: broadcast::Sender<StateChange>,
    results: broadcast::Sender<ProbeReport>,
    heartbeats: HeartbeatTracker,
    _scheduler: Scheduler,
    router: JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.router.abort();
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
        let probes = tracker.clone();
        let mut monitor = Self::with_probes(config, limits, move |t| match &t.check {
            CheckConfig::Heartbeat(_) => Arc::new(HeartbeatProbe::new(probes.clone(), &t.name)),
            check => Arc::from(probe::for_check(check)),
        });
        monitor.heartbeats = tracker;
        monitor
    }

    /// Starts probing with probes made by `make_probe` (say, fakes in tests) and the given limits.
    pub fn with_probes(
        config: &MonitorConfig,
        limits: Limits,
        mut make_probe: impl FnMut(&TargetConfig) -> Arc<dyn Probe>,
    ) -> Self {
        let model = Arc::new(Mutex::new(HealthModel::new(&config.targets)));
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
        let router = tokio::spawn(route(
            rx,
            Arc::clone(&model),
            changes.clone(),
            results.clone(),
        ));
        Monitor {
            model,
            changes,
            results,
            heartbeats: HeartbeatTracker::from_config(config),
            _scheduler: scheduler,
            router,
        }
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

    fn model(&self) -> MutexGuard<'_, HealthModel> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Feeds each result to the model, then publishes the changes it caused and the result.
async fn route(
    mut rx: mpsc::UnboundedReceiver<ProbeReport>,
    model: Arc<Mutex<HealthModel>>,
    changes: broadcast::Sender<StateChange>,
    results: broadcast::Sender<ProbeReport>,
) {
    while let Some(report) = rx.recv().await {
        let caused = model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(&report.target, &report.result);
        for change in caused {
            // No subscriber is fine: the change is in the model either way.
            let _ = changes.send(change);
        }
        let _ = results.send(report);
    }
}
