//! `rampart serve --config FILE`: the monitor daemon. Probes the configured targets, keeps
//! their history in the store, serves the HTTP API, and stops cleanly on SIGTERM or SIGINT.
//!
//! On SIGHUP, and when the file's content changes (unless `--no-watch`), the file is read and
//! validated again: an invalid file is refused with every problem logged and the running
//! configuration kept; a valid one is applied target by target (`Monitor::reconfigure`), the
//! targets created through the API kept. Changes to `[server]` and `[store]` need a restart:
//! they are logged and ignored.
//!
//! The file's directory is watched with `notify` (inotify on Linux), not the file itself: editors
//! and configuration managers replace a file by renaming a new one over it (or swap a symlink),
//! which a watch on the old file would not see. Once the file has been left alone for
//! [`DEBOUNCE`] it is read, and reloaded if its content changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use rampart_monitor::alert::config::AlertingConfig;
use rampart_monitor::alert::outbox::OutboxOptions;
use rampart_monitor::alert::{
    AlertEngine, AlertService, AlertStateStore, NotificationSink, Outbox, OutboxStore, TargetInfo,
    WatchdogHandle,
};
use rampart_monitor::config::{ConfigError, MonitorConfig, ServerConfig, StoreConfig};
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};
use rampart_monitor::{Monitor, Reconfiguration};
use rampart_resilience::Events;
use rampart_resilience::registry::{Registry, ResilienceConfig};
use rampart_server::{Alerting, ServerState};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

use crate::Failure;

/// How long probes in flight may take to finish after SIGTERM.
const PROBE_GRACE: Duration = Duration::from_secs(5);
/// How long requests in flight may take to finish after SIGTERM.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// How long notifications being sent may take to finish after SIGTERM.
const ALERT_GRACE: Duration = Duration::from_secs(5);
/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long the configuration file's directory must be quiet before a change is applied, so a
/// file being written is not read half-way.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// The longest a change waits for the file to be left alone.
const DEBOUNCE_AT_MOST: Duration = Duration::from_secs(5);

/// Arguments of `rampart serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The monitor configuration: `[[target]]`s, optional `[server]` and `[store]`.
    #[arg(long, short)]
    config: PathBuf,
    /// How log lines on standard error look.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Reload the configuration on SIGHUP only, not when the file changes.
    #[arg(long)]
    no_watch: bool,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Runs the daemon until SIGTERM or SIGINT; a bad configuration is an input failure (exit 2),
/// anything else that stops it a runtime failure (exit 1).
pub(crate) fn run(args: ServeArgs) -> Result<(), Failure> {
    init_logs(args.log_format);
    let config = MonitorConfig::from_file(&args.config)
        .map_err(|e| Failure::Input(anyhow::Error::new(e)))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime
        .block_on(daemon(config, args.config, !args.no_watch))
        .map_err(Failure::Runtime)
}

/// Log lines on standard error, filtered by `RUST_LOG` (default `info`).
pub(crate) fn init_logs(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

pub(crate) async fn daemon(
    config: MonitorConfig,
    file: PathBuf,
    watch: bool,
) -> anyhow::Result<()> {
    // Installed first, so a signal during start-up is a clean stop too, not a kill (and SIGHUP,
    // whose default is to end the process, a reload).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let server_config = config.server.clone().unwrap_or_default();
    let store_config = config.store.clone().unwrap_or_default();
    let text = tokio::fs::read(&file).await?;
    let table: toml::Table = std::str::from_utf8(&text)?.parse()?;
    let started_alerting = table.get("alerting").cloned();
    let store = open_store(&store_config).await?;
    let shown = file.display().to_string();
    let state = ServerState::start(
        table,
        Some(&shown),
        Arc::clone(&store) as Arc<dyn Store>,
        Limits::default(),
        server_config.write_token.as_ref(),
        rampart_telemetry::Telemetry::new(),
    )
    .await
    .context("cannot start the monitor")?;
    log_restored(&state.monitor());
    let (state, alerting) = match &config.alerting {
        Some(a) => {
            let (alerts, registry, running) = start_alerting(a, &state, &store).await?;
            // The receivers' breakers show at /api/circuit-breakers/health.
            let state = state.with_resilience(registry).with_alerting(alerts);
            (state, Some(running))
        }
        None => (state, None),
    };
    let changes = tokio::spawn(log_changes(state.clone()));
    let sweeper = tokio::spawn(sweep(Arc::clone(&store)));
    let probes = rampart_server::record_probes(state.clone());

    let listener = bind(&server_config).await?;
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let app = rampart_server::app(state.clone());
    let mut http = match &server_config.tls {
        Some(tls) => {
            let acceptor = rampart_server::tls_acceptor(tls)
                .with_context(|| format!("cannot serve HTTPS with {}", tls.cert.display()))?;
            tracing::info!(cert = %tls.cert.display(), "serving HTTPS");
            tokio::spawn(rampart_server::serve_tls(listener, acceptor, app, stopped))
        }
        None => tokio::spawn(rampart_server::serve(listener, app, stopped)),
    };

    let mut reloader = Reloader {
        file: file.clone(),
        shown: shown.clone(),
        server: server_config,
        store: store_config,
        last: Some(text),
        alerting: started_alerting,
    };
    let (changed, mut changes_seen) = tokio::sync::mpsc::channel(1);
    let watcher = watch.then(|| tokio::spawn(watch_file(file.clone(), changed)));
    let signal = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => reloader.reload(&state, "SIGHUP").await,
            Some(()) = changes_seen.recv() => reloader.reload(&state, "file changed").await,
            served = &mut http => {
                served??;
                anyhow::bail!("the HTTP server stopped on its own");
            }
        }
    };
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    tracing::info!(
        signal,
        "stopping: no new probes, waiting for those in flight"
    );
    let _ = stop_http.send(());
    state.shutdown(PROBE_GRACE).await;
    if let Some(running) = alerting {
        running.stop(&state).await;
    }
    if tokio::time::timeout(HTTP_GRACE, &mut http).await.is_err() {
        tracing::warn!("requests still running after {HTTP_GRACE:?}; cutting them off");
        http.abort();
    }
    for task in [changes, sweeper, probes] {
        task.abort();
        // An aborted task lets go of what it holds (the store) only once it has been polled.
        let _ = task.await;
    }
    drop(state);
    close_store(store).await;
    tracing::info!("stopped");
    Ok(())
}

/// Alerting's parts that run beside the server: the dead man's switch, and what must be
/// stopped in order at exit.
struct RunningAlerting {
    _watchdog: Option<WatchdogHandle>,
}

impl RunningAlerting {
    /// Stops evaluating, then lets the outbox finish the attempts in flight.
    async fn stop(self, state: &ServerState) {
        if let Some(a) = state.alerting() {
            a.outbox.shutdown(ALERT_GRACE).await;
        }
    }
}

/// Starts the outbox (one worker per receiver, resuming what was queued), the alert engine
/// (restoring its state and silences) and the dead man's switch.
async fn start_alerting(
    config: &AlertingConfig,
    state: &ServerState,
    store: &Arc<SqliteStore>,
) -> anyhow::Result<(Alerting, Registry, RunningAlerting)> {
    let mut resilience = ResilienceConfig::default();
    let mut receivers = Vec::new();
    for (name, receiver) in &config.receivers {
        let delivery = config.delivery.get(name).cloned().unwrap_or_default();
        delivery.register(name, &mut resilience);
        let notifier = receiver
            .build()
            .with_context(|| format!("cannot set up receiver {name:?}"))?;
        receivers.push((notifier, delivery));
    }
    let registry = Registry::new(resilience, Events::default());
    let outbox = Outbox::start(
        Arc::clone(store) as Arc<dyn OutboxStore>,
        receivers,
        &registry,
        OutboxOptions::default(),
    )
    .await
    .context("cannot start the notification outbox")?;
    let outbox = Arc::new(outbox);
    let targets: Vec<TargetInfo> = state
        .config()
        .targets
        .iter()
        .map(TargetInfo::from_config)
        .collect();
    let engine = AlertEngine::new(
        config.engine.clone(),
        &targets,
        tokio::time::Instant::now(),
        chrono::DateTime::<chrono::Utc>::from(SystemTime::now()),
    );
    let service = AlertService::start_with_store(
        engine,
        &state.monitor(),
        Arc::clone(&outbox) as Arc<dyn NotificationSink>,
        Arc::clone(store) as Arc<dyn AlertStateStore>,
    )
    .await
    .context("cannot restore the alert state")?;
    let watchdog = match &config.watchdog {
        Some(w) => Some(
            w.watchdog()
                .start()
                .context("cannot start the dead man's switch")?,
        ),
        None => None,
    };
    tracing::info!(
        rules = config.engine.rules.len(),
        receivers = config.receivers.len(),
        "alerting on"
    );
    Ok((
        Alerting {
            service: Arc::new(service),
            outbox,
        },
        registry,
        RunningAlerting {
            _watchdog: watchdog,
        },
    ))
}

async fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<SqliteStore>> {
    let store = SqliteStore::open(
        &config.path,
        SqliteConfig::default().with_retention(config.retention),
    )
    .await?;
    tracing::info!(path = %config.path.display(), "history store open");
    Ok(Arc::new(store))
}

async fn bind(config: &ServerConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    Ok(listener)
}

/// Closes the store once nothing else holds it, so every queued write is committed.
async fn close_store(store: Arc<SqliteStore>) {
    // Connection tasks of the HTTP server that just stopped may still be letting go of theirs.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match Arc::try_unwrap(store) {
        Ok(store) => {
            store.close().await;
            tracing::info!("history store closed");
        }
        // Every write was acknowledged already; dropping it stops the writer after the queue.
        Err(_) => tracing::warn!("history store still shared at exit; dropped"),
    }
}

fn log_restored(monitor: &Monitor) {
    for t in monitor.summary().targets {
        tracing::info!(target_name = %t.name, state = %t.state, score = ?t.score, "restored");
    }
}

/// Logs every state change (writes and reloads reconfigure the monitor in place; should it ever
/// be replaced, this follows the new one).
async fn log_changes(state: ServerState) {
    loop {
        let mut changes = state.monitor().subscribe();
        loop {
            match changes.recv().await {
                Ok(c) => {
                    tracing::info!(target_name = %c.target, from = %c.from, to = %c.to, "state changed");
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "state change log fell behind");
                }
                // That monitor is gone: a write replaced it.
                Err(RecvError::Closed) => break,
            }
        }
    }
}

/// What a reload needs: the file, and what runs now of what cannot change without a restart.
struct Reloader {
    file: PathBuf,
    shown: String,
    server: ServerConfig,
    store: StoreConfig,
    /// The content last read (applied or refused).
    last: Option<Vec<u8>>,
    /// `[alerting]` as the daemon started with it.
    alerting: Option<toml::Value>,
}

impl Reloader {
    /// Reads, validates and applies the file; on any problem logs it and keeps what runs.
    async fn reload(&mut self, state: &ServerState, why: &'static str) {
        let text = tokio::fs::read(&self.file).await;
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                self.last = None;
                tracing::error!(reason = why, file = %self.shown, error = %e,
                    "reload failed: cannot read the configuration; keeping the running one");
                return;
            }
        };
        if why == "file changed" && self.last.as_ref() == Some(&text) {
            return;
        }
        self.last = Some(text.clone());
        tracing::info!(reason = why, file = %self.shown, "reloading the configuration");
        let Ok(text) = String::from_utf8(text) else {
            tracing::error!(
                "reload rejected: the file is not UTF-8; keeping the running configuration"
            );
            return;
        };
        let config = match MonitorConfig::from_str(&text, Some(&self.shown)) {
            Ok(config) => config,
            Err(e) => return rejected(&e),
        };
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(e) => {
                tracing::error!(error = %e, "reload rejected; keeping the running configuration");
                return;
            }
        };
        if config.server.clone().unwrap_or_default() != self.server {
            tracing::warn!("[server] changed: needs a restart; ignored until then");
        }
        if config.store.clone().unwrap_or_default() != self.store {
            tracing::warn!("[store] changed: needs a restart; ignored until then");
        }
        if table.get("alerting") != self.alerting.as_ref() {
            tracing::warn!("[alerting] changed: needs a restart; ignored until then");
        }
        match state.reload(table).await {
            Ok(plan) => reloaded(&plan),
            Err(e) => match e.config() {
                Some(problems) => rejected(problems),
                None => tracing::error!(error = %e,
                    "reload failed; keeping the running configuration"),
            },
        }
    }
}

/// Logs every problem of a refused configuration, then the refusal.
fn rejected(e: &ConfigError) {
    for p in &e.problems {
        tracing::error!(path = %p.path, problem = %p.message, "configuration problem");
    }
    tracing::error!(
        problems = e.problems.len(),
        "reload rejected; keeping the running configuration"
    );
}

fn reloaded(plan: &Reconfiguration) {
    tracing::info!(
        added = ?plan.added,
        removed = ?plan.removed,
        reset = ?plan.reset,
        rescheduled = ?plan.rescheduled,
        updated = ?plan.updated,
        unchanged = plan.unchanged.len(),
        "configuration reloaded"
    );
}

/// Watches the directory of `file`; once the file has been left alone for [`DEBOUNCE`] after a
/// change (or [`DEBOUNCE_AT_MOST`] has passed), says so on `changed`; the reload compares the
/// content, so a false alarm is a no-op. Only events that name the file count, unless the file
/// is a symlink (swapped through other names, as Kubernetes does with ConfigMaps): then every
/// event in the directory does. If the directory cannot be watched, logs it and leaves reloads
/// to SIGHUP.
async fn watch_file(file: PathBuf, changed: tokio::sync::mpsc::Sender<()>) {
    use notify::event::{AccessKind, AccessMode};
    use notify::{EventKind, RecursiveMode, Watcher};

    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // Called on notify's own thread; the watcher (and that thread) lives as long as this task.
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e,
            "cannot watch the configuration's directory; reload with SIGHUP");
        return;
    }
    let name = file.file_name().map(ToOwned::to_owned);
    let symlink = tokio::fs::symlink_metadata(&file)
        .await
        .is_ok_and(|m| m.file_type().is_symlink());
    // Reading a file is an access event too: only accesses that wrote count, or the reload's
    // own read would start the next one. Other files in the directory (the store, say) are
    // ignored.
    let matters = |event: &notify::Event| {
        let kind = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        kind && (symlink || event.paths.iter().any(|p| p.file_name() == name.as_deref()))
    };
    loop {
        match events.recv().await {
            None => return,
            Some(Ok(event)) if matters(&event) => {}
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching the configuration file failed");
                continue;
            }
        }
        // Debounce: wait until nothing has happened to the file for a while.
        let give_up = tokio::time::Instant::now() + DEBOUNCE_AT_MOST;
        loop {
            let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(give_up);
            match tokio::time::timeout_at(quiet, events.recv()).await {
                Err(_) => break,
                Ok(None) => return,
                Ok(Some(Ok(event))) if matters(&event) => {}
                Ok(Some(_)) => {}
            }
        }
        if changed.send(()).await.is_err() {
            return;
        }
    }
}

/// Applies the retention at start and then every [`SWEEP_EVERY`].
async fn sweep(store: Arc<SqliteStore>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        match store.sweep(SystemTime::now()).await {
            Ok(report) => tracing::debug!(results = report.results, "retention sweep"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}
