//! Results and incidents from the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use rampart_monitor::store::{Level, RAW_RANGE, Resolution, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::find;
use crate::time::{ms, parse, rfc3339};
use crate::{ApiError, ServerState};

/// The longest range a results query may ask for (about 10 years: daily rollups).
pub(crate) const MAX_RANGE: Duration = Duration::from_secs(3660 * 86_400);

/// The most raw results one answer holds; a busier hour is cut to the latest ones.
pub(crate) const MAX_RAW: usize = 5000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

fn store(s: &ServerState) -> Result<Arc<dyn Store>, ApiError> {
    s.monitor()
        .store()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("this monitor keeps no history"))
}

/// `GET /api/targets/{name}/results?from&to&step`: `to` defaults to now, `from` to an hour
/// before `to`; `step` is `raw`, `1m`, `1h` or `1d`, chosen for the range if absent.
pub(crate) async fn results(
    State(s): State<ServerState>,
    Path(name): Path<String>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let target = find(&s.current(), &name)?.name.clone();
    let now = SystemTime::now();
    let to = q.to.as_deref().map_or(Ok(now), |v| parse("to", v))?;
    let from = match q.from.as_deref() {
        Some(v) => parse("from", v)?,
        None => to.checked_sub(RAW_RANGE).unwrap_or(SystemTime::UNIX_EPOCH),
    };
    let span = to
        .duration_since(from)
        .map_err(|_| ApiError::bad_request("`from` must be before `to`"))?;
    if span > MAX_RANGE || span.is_zero() {
        return Err(ApiError::bad_request(format!(
            "the range must be longer than 0 and at most {} days",
            MAX_RANGE.as_secs() / 86_400
        )));
    }
    let resolution = match q.step.as_deref() {
        None => Resolution::choose(from, to, now, &s.retention),
        Some(step) => chosen(step, span)?,
    };
    let store = store(&s)?;
    let (step, points) = match resolution {
        Resolution::Rollup(level) => (
            level.as_str(),
            rollups(&store, &target, level, from, to).await?,
        ),
        _ => ("raw", raw(&store, &target, from, to).await?),
    };
    Ok(Json(json!({
        "target": target,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "step": step,
        "points": points,
    })))
}

/// The resolution `step` asks for, if the range is not too long for it.
fn chosen(step: &str, span: Duration) -> Result<Resolution, ApiError> {
    let resolution = match step {
        "raw" => Resolution::Raw,
        "1m" => Resolution::Rollup(Level::Minute),
        "1h" => Resolution::Rollup(Level::Hour),
        "1d" => Resolution::Rollup(Level::Day),
        other => {
            return Err(ApiError::bad_request(format!(
                "`step` must be raw, 1m, 1h or 1d, got {other:?}"
            )));
        }
    };
    let limit = match resolution {
        Resolution::Rollup(level) => {
            level.step() * u32::try_from(rampart_monitor::store::MAX_POINTS).unwrap_or(u32::MAX)
        }
        _ => RAW_RANGE,
    };
    if span > limit {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "range_too_long",
            format!(
                "step {step} answers ranges up to {}s; use a coarser step",
                limit.as_secs()
            ),
        ));
    }
    Ok(resolution)
}

async fn raw(
    store: &Arc<dyn Store>,
    target: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<Vec<Value>, ApiError> {
    let results = store
        .results(target, from, to)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let skip = results.len().saturating_sub(MAX_RAW);
    Ok(results[skip..]
        .iter()
        .map(|r| {
            json!({
                "at": rfc3339(r.at),
                "ok": r.is_success(),
                "latency_ms": ms(r.latency),
                "failure": r.failure.map(|f| f.as_str()),
                "message": r.message,
                "status": r.status,
            })
        })
        .collect())
}

async fn rollups(
    store: &Arc<dyn Store>,
    target: &str,
    level: Level,
    from: SystemTime,
    to: SystemTime,
) -> Result<Vec<Value>, ApiError> {
    let rows = store
        .rollups(target, level, from, to)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "at": rfc3339(r.start),
                "count": r.count,
                "failures": r.failures,
                "success_ratio": r.success_ratio(),
                "latency_mean_ms": r.mean().map(ms),
                "latency_p50_ms": r.quantile(0.5).map(ms),
                "latency_p99_ms": r.quantile(0.99).map(ms),
                "latency_min_ms": ms(r.latency_min),
                "latency_max_ms": ms(r.latency_max),
            })
        })
        .collect())
}

/// `GET /api/targets/{name}/incidents`, oldest first.
pub(crate) async fn incidents(
    State(s): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let target = find(&s.current(), &name)?.name.clone();
    let incidents = store(&s)?
        .incidents(&target)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let all: Vec<Value> = incidents
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "opened": rfc3339(i.opened),
                "closed": i.closed.map(rfc3339),
                "open": i.is_open(),
                "state": i.state.as_str(),
                "cause": i.cause,
            })
        })
        .collect();
    Ok(Json(json!({ "target": target, "incidents": all })))
}
