//! `rampart serve --config FILE`: the monitor daemon. Probes the configured targets, keeps
//! their history in the store, serves the HTTP API, and stops cleanly on SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use rampart_monitor::Monitor;
use rampart_monitor::config::{MonitorConfig, ServerConfig, StoreConfig};
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{SqliteConfig, SqliteStore, Store};
use rampart_server::ServerState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

use crate::Failure;

/// How long probes in flight may take to finish after SIGTERM.
const PROBE_GRACE: Duration = Duration::from_secs(5);
/// How long requests in flight may take to finish after SIGTERM.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Arguments of `rampart serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The monitor configuration: `[[target]]`s, optional `[server]` and `[store]`.
    #[arg(long, short)]
    config: PathBuf,
    /// How log lines on standard error look.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Runs the daemon until SIGTERM or SIGINT; a bad configuration is an input failure (exit 2),
/// anything else that stops it a runtime failure (exit 1).
pub(crate) fn run(args: ServeArgs) -> Result<(), Failure> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let config = MonitorConfig::from_file(&args.config)
        .map_err(|e| Failure::Input(anyhow::Error::new(e)))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(e.into()))?;
    runtime
        .block_on(daemon(config, args.config))
        .map_err(Failure::Runtime)
}

async fn daemon(config: MonitorConfig, file: PathBuf) -> anyhow::Result<()> {
    // Installed first, so a signal during start-up is a clean stop too, not a kill.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let server_config = config.server.clone().unwrap_or_default();
    let store_config = config.store.clone().unwrap_or_default();
    let table: toml::Table = std::fs::read_to_string(&file)?.parse()?;
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

    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        served = &mut http => {
            served??;
            anyhow::bail!("the HTTP server stopped on its own");
        }
    };
    tracing::info!(
        signal,
        "stopping: no new probes, waiting for those in flight"
    );
    let _ = stop_http.send(());
    state.shutdown(PROBE_GRACE).await;
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

/// Logs every state change; follows the monitor as writes through the API replace it.
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
