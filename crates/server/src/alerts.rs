//! Alerting's API: alerts and their acknowledgement, silences, and the notification outbox.
//! Reads are open like the rest of the API; acknowledging, silencing and retrying need the write
//! token.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rampart_monitor::alert::outbox::{EntryState, ReceiverStats};
use rampart_monitor::alert::{AckError, AlertService, Matcher, Outbox, OutboxFilter, Silence};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, ServerState};

/// The longest a silence may last (a year): longer ones are mistakes more often than not.
const MAX_SILENCE: chrono::TimeDelta = chrono::TimeDelta::days(366);
/// The most matchers one silence may have.
const MAX_MATCHERS: usize = 16;
/// The longest matcher or author accepted.
const MAX_SHORT: usize = 256;
/// The longest `created_by`, `comment` or `by` accepted.
const MAX_TEXT: usize = 1024;

/// What alerting adds to the server: the engine's service and the outbox.
#[derive(Debug, Clone)]
pub struct Alerting {
    /// Alerts, acknowledgements and silences.
    pub service: Arc<AlertService>,
    /// The notifications, their delivery state and dead letters.
    pub outbox: Arc<Outbox>,
}

fn alerting(s: &ServerState) -> Result<&Alerting, ApiError> {
    s.alerting.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "alerting is not configured: add an [alerting] section",
        )
    })
}

/// 422 in the API's error shape, each problem `path: message` split into its parts.
fn unprocessable(problems: Vec<String>) -> Response {
    let listed: Vec<serde_json::Value> = problems
        .iter()
        .map(|p| match p.split_once(": ") {
            Some((path, message)) if !path.contains(' ') => {
                json!({ "path": path, "message": message })
            }
            _ => json!({ "path": "", "message": p }),
        })
        .collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": {
            "code": "invalid",
            "message": problems.join("; "),
            "problems": listed,
        }})),
    )
        .into_response()
}

fn store_failed(e: &dyn std::error::Error) -> ApiError {
    ApiError::internal(e)
}

/// `?state=firing|pending|resolved`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    state: Option<String>,
}

/// `GET /api/alerts`.
pub(crate) async fn list(
    State(s): State<ServerState>,
    q: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let a = alerting(&s)?;
    let wanted = match q.state.as_deref() {
        None => None,
        Some(state @ ("firing" | "pending" | "resolved")) => Some(state.to_owned()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state must be firing, pending or resolved, got {other:?}"
            )));
        }
    };
    let alerts: Vec<_> = a
        .service
        .alerts()
        .into_iter()
        .filter(|v| {
            wanted.as_deref().is_none_or(|w| {
                serde_json::to_value(v.state)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    == Some(w.to_owned())
            })
        })
        .collect();
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

/// `GET /api/alerts/{fingerprint}`.
pub(crate) async fn one(
    State(s): State<ServerState>,
    Path(fingerprint): Path<String>,
) -> Result<Response, ApiError> {
    let a = alerting(&s)?;
    a.service
        .alert(&fingerprint)
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no alert {fingerprint:?}")))
}

/// The body of `POST /api/alerts/{fingerprint}/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    by: String,
    comment: Option<String>,
}

/// `POST /api/alerts/{fingerprint}/ack` (token).
pub(crate) async fn ack(
    State(s): State<ServerState>,
    Path(fingerprint): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    crate::writes::authorize(&s, &headers)?;
    let a = alerting(&s)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut problems = Vec::new();
    if body.by.trim().is_empty() || body.by.len() > MAX_TEXT {
        problems.push(format!("by: must be 1 to {MAX_TEXT} characters"));
    }
    if body.comment.as_ref().is_some_and(|c| c.len() > MAX_TEXT) {
        problems.push(format!("comment: at most {MAX_TEXT} characters"));
    }
    if !problems.is_empty() {
        return Ok(unprocessable(problems));
    }
    match a.service.acknowledge(&fingerprint, &body.by, body.comment) {
        Ok(view) => Ok(Json(view).into_response()),
        Err(AckError::NotFound(_)) => Err(ApiError::not_found(format!("no alert {fingerprint:?}"))),
        Err(e @ AckError::NotFiring { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_firing",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
        )),
    }
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn silence_json(silence: &Silence, at: DateTime<Utc>) -> serde_json::Value {
    let mut v = serde_json::to_value(silence).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("status".to_owned(), json!(silence.status(at)));
    }
    v
}

/// `GET /api/silences`.
pub(crate) async fn silences(State(s): State<ServerState>) -> Result<Response, ApiError> {
    let a = alerting(&s)?;
    let at = now();
    let mut all = a.service.silences();
    all.sort_by_key(|x| std::cmp::Reverse(x.updated_at));
    let shown: Vec<_> = all.iter().map(|x| silence_json(x, at)).collect();
    Ok(Json(json!({ "silences": shown })).into_response())
}

/// `GET /api/silences/{id}`.
pub(crate) async fn silence(
    State(s): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = alerting(&s)?;
    a.service
        .silences()
        .iter()
        .find(|x| x.id == id)
        .map(|x| Json(silence_json(x, now())).into_response())
        .ok_or_else(|| ApiError::not_found(format!("no silence {id:?}")))
}

/// The body of `POST /api/silences`: `ends_at` or `duration` (`"2h"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSilence {
    matchers: Vec<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    duration: Option<String>,
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// `POST /api/silences` (token): 201 with the silence and its id.
pub(crate) async fn create_silence(
    State(s): State<ServerState>,
    headers: HeaderMap,
    body: Result<Json<NewSilence>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    crate::writes::authorize(&s, &headers)?;
    let a = alerting(&s)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let at = now();
    let mut problems = Vec::new();
    if body.matchers.len() > MAX_MATCHERS {
        problems.push(format!("matchers: at most {MAX_MATCHERS}"));
    }
    let mut matchers = Vec::new();
    for (i, m) in body.matchers.iter().take(MAX_MATCHERS).enumerate() {
        if m.len() > MAX_SHORT {
            problems.push(format!("matchers[{i}]: at most {MAX_SHORT} characters"));
            continue;
        }
        match Matcher::parse(m) {
            Ok(m) => matchers.push(m),
            Err(e) => problems.push(format!("matchers[{i}]: {e}")),
        }
    }
    let starts_at = body.starts_at.unwrap_or(at);
    let ends_at = match (body.ends_at, &body.duration) {
        (Some(end), None) => Some(end),
        (None, Some(d)) => match rampart_resilience::parse_duration(d) {
            Ok(d) => chrono::TimeDelta::from_std(d).ok().map(|d| starts_at + d),
            Err(e) => {
                problems.push(format!("duration: {e}"));
                None
            }
        },
        _ => {
            problems.push("give exactly one of ends_at and duration".to_owned());
            None
        }
    };
    if body.created_by.len() > MAX_TEXT || body.comment.len() > MAX_TEXT {
        problems.push(format!(
            "created_by and comment: at most {MAX_TEXT} characters"
        ));
    }
    let Some(ends_at) = ends_at else {
        return Ok(unprocessable(problems));
    };
    if ends_at - starts_at > MAX_SILENCE {
        problems.push("a silence may last at most 366 days".to_owned());
    }
    if ends_at <= at {
        problems.push("ends_at: must be in the future".to_owned());
    }
    let silence = Silence {
        id: Silence::new_id(),
        matchers,
        starts_at,
        ends_at,
        created_by: body.created_by,
        comment: body.comment,
        updated_at: at,
    };
    problems.extend(silence.problems());
    if !problems.is_empty() {
        return Ok(unprocessable(problems));
    }
    a.service
        .put_silence(silence.clone())
        .await
        .map_err(|e| store_failed(&e))?;
    Ok((StatusCode::CREATED, Json(silence_json(&silence, at))).into_response())
}

/// `DELETE /api/silences/{id}` (token): ends it now; 200 with the silence as it is now.
pub(crate) async fn expire_silence(
    State(s): State<ServerState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::writes::authorize(&s, &headers)?;
    let a = alerting(&s)?;
    match a
        .service
        .expire_silence(&id)
        .await
        .map_err(|e| store_failed(&e))?
    {
        Some(x) => Ok(Json(silence_json(&x, now())).into_response()),
        None => Err(ApiError::not_found(format!("no silence {id:?}"))),
    }
}

/// `?state=pending|delivered|dead&receiver=NAME&limit=N&after=SEQ`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutboxQuery {
    state: Option<String>,
    receiver: Option<String>,
    limit: Option<usize>,
    after: Option<i64>,
}

/// `GET /api/notifications`: outbox entries (oldest first) and each receiver's counters.
pub(crate) async fn notifications(
    State(s): State<ServerState>,
    q: Result<Query<OutboxQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let a = alerting(&s)?;
    let mut filter = OutboxFilter::all();
    if let Some(state) = &q.state {
        let parsed = EntryState::parse(state).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state must be pending, delivered or dead, got {state:?}"
            ))
        })?;
        filter = filter.state(parsed);
    }
    if let Some(r) = q.receiver {
        filter = filter.receiver(r);
    }
    if let Some(after) = q.after {
        filter = filter.after_seq(after);
    }
    filter = filter.limit(q.limit.unwrap_or(100));
    let entries = a.outbox.list(filter).await.map_err(|e| store_failed(&e))?;
    let receivers: Vec<ReceiverStats> = a.outbox.stats();
    Ok(Json(json!({ "notifications": entries, "receivers": receivers })).into_response())
}

/// `POST /api/notifications/{id}/retry` (token): a dead letter back to pending.
pub(crate) async fn retry(
    State(s): State<ServerState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::writes::authorize(&s, &headers)?;
    let a = alerting(&s)?;
    match a.outbox.retry(&id).await.map_err(|e| store_failed(&e))? {
        Some(entry) => Ok(Json(entry).into_response()),
        None => Err(ApiError::not_found(format!("no dead letter {id:?}"))),
    }
}
