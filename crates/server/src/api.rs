//! Targets, summary and heartbeats.

use axum::Json;
use axum::extract::{Path, State};
use rampart_monitor::config::TargetConfig;
use rampart_monitor::health::{Summary, TargetHealth};
use serde_json::{Value, json};

use crate::time::ms;
use crate::{ApiError, Current, ServerState};

/// `GET /api/summary`.
pub(crate) async fn summary(State(s): State<ServerState>) -> Json<Value> {
    let Summary {
        overall,
        groups,
        counts,
        targets,
        ..
    } = s.monitor().summary();
    let counts: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(state, n)| (state.as_str().to_owned(), json!(n)))
        .collect();
    let targets: Vec<Value> = targets
        .iter()
        .map(|t| json!({ "name": t.name, "state": t.state.as_str(), "score": t.score }))
        .collect();
    Json(json!({
        "overall": overall,
        "groups": groups,
        "counts": counts,
        "targets": targets,
    }))
}

/// `GET /api/targets`.
pub(crate) async fn targets(State(s): State<ServerState>) -> Json<Value> {
    let c = s.current();
    let all: Vec<Value> = c.config.targets.iter().map(|t| describe(t, &c)).collect();
    Json(json!({ "targets": all }))
}

/// `GET /api/targets/{name}`.
pub(crate) async fn target(
    State(s): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = s.current();
    Ok(Json(describe(find(&c, &name)?, &c)))
}

/// `POST /api/heartbeat/{token}`. The token is never echoed or logged.
pub(crate) async fn heartbeat(
    State(s): State<ServerState>,
    Path(token): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match s.monitor().heartbeat(&token) {
        Ok(target) => Ok(Json(json!({ "target": target }))),
        Err(_) => Err(ApiError::not_found("no heartbeat target has this token")),
    }
}

/// The configured target named `name`.
pub(crate) fn find<'a>(c: &'a Current, name: &str) -> Result<&'a TargetConfig, ApiError> {
    c.config
        .targets
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no target named {name:?}")))
}

/// A target as the API shows it: its settings without the check's details (which may hold
/// secrets: connection strings, tokens), and its health.
pub(crate) fn describe(t: &TargetConfig, c: &Current) -> Value {
    let health = c.monitor.target(&t.name).map(|h: TargetHealth| {
        json!({
            "state": h.state.as_str(),
            "own_state": h.own_state.as_str(),
            "unreachable_via": h.unreachable_via,
            "score": h.score,
            "consecutive_failures": h.consecutive_failures,
            "consecutive_successes": h.consecutive_successes,
            "last_latency_ms": h.last_latency.map(ms),
        })
    });
    let host = match t.check.kind() {
        "heartbeat" => None,
        _ => Some(t.check.host()),
    };
    json!({
        "name": t.name,
        "group": t.group,
        "kind": t.check.kind(),
        "host": host,
        "interval_s": t.interval.as_secs_f64(),
        "timeout_s": t.timeout.as_secs_f64(),
        "weight": t.weight,
        "depends_on": t.depends_on,
        "source": if c.api.contains_key(&t.name) { "api" } else { "config" },
        "health": health,
    })
}
