//! The daemon's own health: `GET /api/database/health` (the history store and the connection
//! pools the daemon owns) and `GET /api/circuit-breakers/health` (the breakers of its
//! [`Registry`]).
//!
//! Both answer `{"status": "healthy" | "degraded" | "unhealthy", ...}`: 200 when healthy or
//! degraded (it works, something needs a look), 503 when unhealthy (it does not work).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_pool::PoolStats;
use rampart_resilience::breaker::BreakerState;
use rampart_resilience::{Event, Registry, Subscription};
use serde_json::{Value, json};

use crate::ServerState;
use crate::time::rfc3339;

/// How long the store's trivial query may take before the store counts as unreachable.
pub const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A query slower than this makes the store `degraded`.
pub const DB_SLOW: Duration = Duration::from_millis(500);

/// A source of a connection pool's stats, registered with [`ServerState::with_pool`].
pub(crate) type PoolSource = Arc<dyn Fn() -> PoolStats + Send + Sync>;

/// The pools registered with [`ServerState::with_pool`].
#[derive(Clone, Default)]
pub(crate) struct Pools(pub(crate) Arc<Vec<PoolSource>>);

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("len", &self.0.len()).finish()
    }
}

/// Each breaker's last change of state: from, to, when.
type Transitions = HashMap<String, (BreakerState, BreakerState, SystemTime)>;

/// The breakers' registry and when each breaker last changed state.
#[derive(Clone)]
pub(crate) struct Breakers {
    pub(crate) registry: Registry,
    transitions: Arc<Mutex<Transitions>>,
    _subscription: Arc<Subscription>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Breakers {
    /// Follows `registry`'s state changes from now on.
    pub(crate) fn new(registry: Registry) -> Self {
        let transitions: Arc<Mutex<Transitions>> = Arc::default();
        let seen = Arc::clone(&transitions);
        let subscription = registry.events().subscribe(move |e: &Event| {
            if let Event::BreakerStateChanged { name, from, to } = e {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_string(), (*from, *to, SystemTime::now()));
            }
        });
        Breakers {
            registry,
            transitions,
            _subscription: Arc::new(subscription),
        }
    }
}

/// `GET /api/database/health`.
pub(crate) async fn database(State(s): State<ServerState>) -> Response {
    let monitor = s.monitor();
    let pools: Vec<PoolStats> = s.pools.0.iter().map(|p| p()).collect();
    let pools_healthy = pools
        .iter()
        .all(|p| p.health == rampart_pool::HealthState::Healthy);
    let store_failures = monitor.store_failures();
    let (status, store) = match monitor.store() {
        None => (
            Status::Unhealthy,
            json!({ "reachable": false, "error": "the monitor has no store" }),
        ),
        Some(store) => match tokio::time::timeout(DB_CHECK_TIMEOUT, store.health()).await {
            Ok(Ok(h)) => {
                let status = if h.latency > DB_SLOW {
                    Status::Degraded
                } else {
                    Status::Healthy
                };
                let mut v = serde_json::to_value(&h).unwrap_or_else(|_| json!({}));
                if let Some(o) = v.as_object_mut() {
                    o.insert("reachable".into(), json!(true));
                    o.insert("latency_ms".into(), json!(h.latency.as_secs_f64() * 1e3));
                }
                (status, v)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "database health check failed");
                (
                    Status::Unhealthy,
                    json!({ "reachable": false, "error": e.to_string() }),
                )
            }
            Err(_) => (
                Status::Unhealthy,
                json!({
                    "reachable": false,
                    "error": format!("no answer within {DB_CHECK_TIMEOUT:?}"),
                }),
            ),
        },
    };
    let status = if status == Status::Healthy && !pools_healthy {
        Status::Degraded
    } else {
        status
    };
    let mut store = store;
    if let Some(o) = store.as_object_mut() {
        o.insert("store_failures".into(), json!(store_failures));
    }
    respond(
        status,
        json!({ "status": status.as_str(), "store": store, "pools": pools }),
    )
}

/// `GET /api/circuit-breakers/health`.
pub(crate) async fn circuit_breakers(State(s): State<ServerState>) -> Response {
    let stats = s.breakers.registry.stats().breaker;
    let transitions = s
        .breakers
        .transitions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut open = 0usize;
    let mut troubled = 0usize;
    let list: Vec<Value> = stats
        .values()
        .map(|b| {
            if b.state.rejects() {
                open += 1;
            }
            if b.state != BreakerState::Closed && b.state != BreakerState::Disabled {
                troubled += 1;
            }
            let last = transitions
                .get(&b.name)
                .map(|(from, to, at)| json!({ "from": from, "to": to, "at": rfc3339(*at) }));
            json!({
                "name": b.name,
                "state": b.state,
                "failure_rate": b.failure_rate,
                "consecutive_failures": b.consecutive_failures,
                "successful": b.successful,
                "failed": b.failed,
                "rejected": b.rejected,
                "opened": b.opened,
                "last_transition": last,
            })
        })
        .collect();
    let status = if !list.is_empty() && open == list.len() {
        Status::Unhealthy
    } else if troubled > 0 {
        Status::Degraded
    } else {
        Status::Healthy
    };
    respond(
        status,
        json!({
            "status": status.as_str(),
            "total": list.len(),
            "open": open,
            "breakers": list,
        }),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

fn respond(status: Status, body: Value) -> Response {
    let code = match status {
        Status::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, Json(body)).into_response()
}
