//! The HTTP side of `rampart serve`: a JSON API over a running [`Monitor`] and its history
//! store, Prometheus metrics, and liveness and readiness checks.
//!
//! [`app`] builds the whole API as an `axum` [`Router`] value (tested without a socket);
//! [`serve`] runs it on a listener until a shutdown future completes.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /health` | 200 while the process runs (liveness) |
//! | `GET /ready` | 200 once the store is open and the scheduler runs, 503 otherwise |
//! | `GET /metrics` | Prometheus text or OpenMetrics (by `Accept`) |
//! | `GET /api/summary` | overall and group scores, counts per state |
//! | `GET /api/targets`, `/api/targets/{name}` | targets with their health; no secrets |
//! | `POST /api/targets`, `PUT`/`DELETE /api/targets/{name}` | API targets (bearer token) |
//! | `GET /api/targets/{name}/results?from&to&step` | raw results or rollups |
//! | `GET /api/targets/{name}/incidents` | incidents, oldest first |
//! | `POST /api/heartbeat/{token}` | records a heartbeat |
//! | `GET /api/openapi.json` | the OpenAPI 3 document of these routes ([`openapi`]) |
//! | `GET /api/database/health` | the history store and the daemon's pools; 503 when unhealthy |
//! | `GET /api/circuit-breakers/health` | the breakers of [`ServerState::resilience`]; 503 when all are open |
//!
//! Errors are JSON, `{"error": {"code": "...", "message": "..."}}`. Bodies are limited to
//! [`MAX_BODY`] and each request to [`REQUEST_TIMEOUT`]. [`serve_tls`] serves the same router
//! over HTTPS; [`record_probes`] records every probe result as the telemetry operation
//! [`PROBE_OPERATION`] (label `target`). The guide is `docs/monitor.md`.
//!
//! ```
//! use std::sync::Arc;
//! use rampart_monitor::{Monitor, config::MonitorConfig};
//! use rampart_server::{ServerState, app};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MonitorConfig::from_str(
//!     "[[target]]\nname = \"db\"\nkind = \"tcp\"\n[target.tcp]\naddress = \"127.0.0.1:1\"\n",
//!     None,
//! )?;
//! let monitor = Arc::new(Monitor::start(&config));
//! let state = ServerState::new(monitor, Arc::new(config), rampart_telemetry::Telemetry::new());
//! let app = app(state);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(rampart_server::serve(listener, app, std::future::pending()));
//! server.abort();
//! # Ok(())
//! # }
//! ```

// The OpenAPI document is one `json!` literal.
#![recursion_limit = "512"]

mod alerts;
mod api;
mod error;
mod history;
mod metrics;
mod openapi;
mod probes;
mod selfcheck;
mod time;
mod tls;
mod writes;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rampart_monitor::Monitor;
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::store::Retention;
use rampart_telemetry::Telemetry;

pub use alerts::Alerting;
pub use error::ApiError;
pub use openapi::openapi;
pub use probes::{PROBE_OPERATION, record_probes};
pub use selfcheck::{DB_CHECK_TIMEOUT, DB_SLOW};
pub use tls::{HANDSHAKE_TIMEOUT, TlsError, serve_tls, tls_acceptor};
pub use writes::{ReloadError, StartError};

/// The largest request body accepted (64 KiB); larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// The longest a request may take before it gets 503 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share: the monitor and its configuration (the configuration replaced when
/// a write or a reload changes the targets, the monitor reconfigured in place), the metrics
/// registry, and what writes need.
#[derive(Debug, Clone)]
pub struct ServerState {
    pub(crate) current: Arc<RwLock<Current>>,
    pub(crate) telemetry: Telemetry,
    pub(crate) retention: Retention,
    pub(crate) writes: Option<Arc<writes::Writes>>,
    pub(crate) alerting: Option<Arc<Alerting>>,
    pub(crate) breakers: selfcheck::Breakers,
    pub(crate) pools: selfcheck::Pools,
}

/// The running monitor, its configuration, and the definitions of the targets created through
/// the API (by name).
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) config: Arc<MonitorConfig>,
    pub(crate) api: Arc<BTreeMap<String, serde_json::Value>>,
}

impl ServerState {
    /// Read-only state over `monitor` running `config`, exporting `telemetry` at `/metrics`;
    /// the monitor's own gauges (score per target, targets per state) are registered into it.
    /// Writes answer 401. [`ServerState::start`] builds the daemon's state, with writes.
    pub fn new(monitor: Arc<Monitor>, config: Arc<MonitorConfig>, telemetry: Telemetry) -> Self {
        let current = Current {
            monitor,
            config,
            api: Arc::default(),
        };
        Self::with_current(current, telemetry, None)
    }

    fn with_current(
        current: Current,
        telemetry: Telemetry,
        writes: Option<Arc<writes::Writes>>,
    ) -> Self {
        let retention = current
            .config
            .store
            .as_ref()
            .map(|s| s.retention)
            .unwrap_or_default();
        let current = Arc::new(RwLock::new(current));
        metrics::register(&telemetry, &current);
        ServerState {
            current,
            telemetry,
            retention,
            writes,
            breakers: selfcheck::Breakers::new(rampart_resilience::Registry::default()),
            pools: selfcheck::Pools::default(),
            alerting: None,
        }
    }

    /// Serves alerting's API (`/api/alerts`, `/api/silences`, `/api/notifications`) from
    /// `alerting`; without it those routes answer 404 `not_configured`.
    pub fn with_alerting(mut self, alerting: Alerting) -> Self {
        self.alerting = Some(Arc::new(alerting));
        self
    }

    /// Alerting, if configured.
    pub fn alerting(&self) -> Option<&Alerting> {
        self.alerting.as_deref()
    }

    /// The configuration running now: the file's targets and those created through the API.
    pub fn config(&self) -> Arc<MonitorConfig> {
        self.current().config
    }

    /// Tells the alert engine (if any) which targets run now.
    pub(crate) fn sync_alert_targets(&self, config: &MonitorConfig) {
        if let Some(a) = &self.alerting {
            let targets: Vec<rampart_monitor::alert::TargetInfo> = config
                .targets
                .iter()
                .map(rampart_monitor::alert::TargetInfo::from_config)
                .collect();
            a.service.set_targets(&targets);
        }
    }

    /// Reports the circuit breakers of `registry` at `GET /api/circuit-breakers/health` (by
    /// default an empty registry of the server's own).
    #[must_use]
    pub fn with_resilience(mut self, registry: rampart_resilience::Registry) -> Self {
        self.breakers = selfcheck::Breakers::new(registry);
        self
    }

    /// The registry whose circuit breakers `GET /api/circuit-breakers/health` reports; the
    /// daemon's parts that call out (notification receivers) take their breakers from it.
    pub fn resilience(&self) -> &rampart_resilience::Registry {
        &self.breakers.registry
    }

    /// Adds a connection pool the daemon owns to `GET /api/database/health`: `stats` is called
    /// on each request (`|| pool.stats()` for a [`rampart_pool::Pool`]).
    #[must_use]
    pub fn with_pool(
        mut self,
        stats: impl Fn() -> rampart_pool::PoolStats + Send + Sync + 'static,
    ) -> Self {
        let mut pools: Vec<selfcheck::PoolSource> = self.pools.0.iter().cloned().collect();
        pools.push(Arc::new(stats));
        self.pools = selfcheck::Pools(Arc::new(pools));
        self
    }

    pub(crate) fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The monitor running now (the same one for the server's life: writes and reloads
    /// reconfigure it).
    pub fn monitor(&self) -> Arc<Monitor> {
        self.current().monitor
    }

    /// Stops the monitor running now (see [`Monitor::shutdown`]); writes after this fail.
    pub async fn shutdown(&self, grace: Duration) {
        match &self.writes {
            Some(w) => w.shutdown(self, grace).await,
            None => self.monitor().shutdown(grace).await,
        }
    }
}

/// The whole HTTP API as a router value.
pub fn app(state: ServerState) -> Router {
    let api = Router::new()
        .route("/summary", get(api::summary))
        .route("/targets", get(api::targets).post(writes::create))
        .route(
            "/targets/{name}",
            get(api::target).put(writes::replace).delete(writes::delete),
        )
        .route("/targets/{name}/results", get(history::results))
        .route("/targets/{name}/incidents", get(history::incidents))
        .route("/heartbeat/{token}", post(api::heartbeat))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{fingerprint}", get(alerts::one))
        .route("/alerts/{fingerprint}/ack", post(alerts::ack))
        .route(
            "/silences",
            get(alerts::silences).post(alerts::create_silence),
        )
        .route(
            "/silences/{id}",
            get(alerts::silence).delete(alerts::expire_silence),
        )
        .route("/notifications", get(alerts::notifications))
        .route("/notifications/{id}/retry", post(alerts::retry))
        .route("/openapi.json", get(openapi::document))
        .route("/database/health", get(selfcheck::database))
        .route("/circuit-breakers/health", get(selfcheck::circuit_breakers));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::scrape))
        .nest("/api", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(bounded))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(axum::extract::State(s): axum::extract::State<ServerState>) -> Response {
    let monitor = s.monitor();
    if monitor.is_running() && monitor.store().is_some() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::unavailable("the monitor is not running or has no store").into_response()
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request bodies are limited to {MAX_BODY} bytes"),
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Bounds each request's time, and turns axum's own plain-text rejections (a body too large)
/// into JSON errors.
async fn bounded(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY) {
        return too_large().into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) if response.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            too_large().into_response()
        }
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {REQUEST_TIMEOUT:?}"),
        )
        .into_response(),
    }
}
