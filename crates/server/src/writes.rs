//! Targets created, replaced and deleted through the API, behind a bearer token.
//!
//! A write is validated by adding the API targets to the configuration file's table and
//! validating the whole (so dependencies and heartbeat tokens are checked across both), stored
//! in the history store (so it survives restarts), and then applied to the running monitor with
//! [`Monitor::reconfigure`]: only the target written starts, restarts or stops; every other
//! target keeps running with its state, and subscribers keep their receivers.
//!
//! A reload of the configuration file ([`ServerState::reload`]) goes the same way, with the API
//! targets added to the new file's table.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rampart_monitor::config::{ConfigError, MonitorConfig, Secret};
use rampart_monitor::heartbeat::HeartbeatTracker;
use rampart_monitor::scheduler::Limits;
use rampart_monitor::store::{Store, StoreError};
use rampart_monitor::{Monitor, Reconfiguration, ReconfigureError};
use rampart_telemetry::Telemetry;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::describe;
use crate::{ApiError, Current, ServerState};

/// Why the daemon's state could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration, with the stored API targets added, is not valid.
    #[error("the configuration with the targets created through the API is not valid")]
    Config(#[source] ConfigError),
    /// The store could not be read.
    #[error("cannot read the targets created through the API")]
    Store(#[source] StoreError),
    /// A stored API target is not a JSON object.
    #[error("stored API target {name} is not valid JSON")]
    Stored {
        /// The target's name.
        name: String,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

/// Why [`ServerState::reload`] kept the running configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The state was built without a configuration file ([`ServerState::new`]).
    #[error("this server was not started from a configuration file")]
    NoFile,
    /// The server is stopping.
    #[error("the server is stopping")]
    Closed,
    /// The new file, with the targets created through the API added, is not valid.
    #[error("the new configuration with the targets created through the API is not valid")]
    Config(#[source] ConfigError),
    /// The monitor could not follow (it is shut down, or the store could not be read).
    #[error("the monitor could not follow the new configuration")]
    Monitor(#[source] ReconfigureError),
}

impl ReloadError {
    /// The configuration's problems, each with its key path, if that is why.
    pub fn config(&self) -> Option<&ConfigError> {
        match self {
            ReloadError::Config(e) => Some(e),
            _ => None,
        }
    }
}

/// What writes need: the file's table, the store, the token's digest.
pub(crate) struct Writes {
    /// The configuration file's table; replaced by a reload, under the write lock.
    base: std::sync::Mutex<toml::Table>,
    origin: Option<String>,
    store: Arc<dyn Store>,
    limits: Limits,
    token: Option<[u8; 32]>,
    /// One write at a time; `None` once shut down.
    lock: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the token's digest nor the file (which may hold secrets) is shown.
        f.debug_struct("Writes")
            .field("origin", &self.origin)
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerState {
    /// The daemon's state: the configuration file's `table` (named `origin` in errors) plus the
    /// targets created through the API and kept in `store`, a monitor started on them (restored
    /// from the store), and writes allowed with `write_token`.
    pub async fn start(
        table: toml::Table,
        origin: Option<&str>,
        store: Arc<dyn Store>,
        limits: Limits,
        write_token: Option<&Secret>,
        telemetry: Telemetry,
    ) -> Result<Self, StartError> {
        let mut api = BTreeMap::new();
        for t in store.api_targets().await.map_err(StartError::Store)? {
            let value =
                serde_json::from_str(&t.definition).map_err(|source| StartError::Stored {
                    name: t.name.clone(),
                    source,
                })?;
            api.insert(t.name, value);
        }
        let writes = Writes {
            base: std::sync::Mutex::new(table),
            origin: origin.map(str::to_owned),
            store,
            limits,
            token: write_token.map(|t| digest(t.expose())),
            lock: tokio::sync::Mutex::new(true),
        };
        let config = writes.merge(&api, None).map_err(StartError::Config)?;
        let monitor = writes.monitor(&config).await.map_err(StartError::Store)?;
        let current = Current {
            monitor: Arc::new(monitor),
            config: Arc::new(config),
            api: Arc::new(api),
        };
        Ok(Self::with_current(
            current,
            telemetry,
            Some(Arc::new(writes)),
        ))
    }

    /// Applies a new configuration file's `table` (already read; the API targets are added to
    /// it) through [`Monitor::reconfigure`]: unchanged targets keep running untouched. On any
    /// error the running configuration is kept. The `[server]` and `[store]` sections of the
    /// new table are not applied (the caller decides what to say about them).
    pub async fn reload(&self, table: toml::Table) -> Result<Reconfiguration, ReloadError> {
        let w = self.writes.as_deref().ok_or(ReloadError::NoFile)?;
        w.reload(self, table).await
    }
}

impl Writes {
    /// The file's configuration with `api` added; problems of the target named `body` are
    /// reported under `body`.
    fn merge(
        &self,
        api: &BTreeMap<String, Value>,
        body: Option<&str>,
    ) -> Result<MonitorConfig, ConfigError> {
        let base = self
            .base
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.merge_into(base, api, body)
    }

    /// `table` with `api` added, validated.
    fn merge_into(
        &self,
        mut table: toml::Table,
        api: &BTreeMap<String, Value>,
        body: Option<&str>,
    ) -> Result<MonitorConfig, ConfigError> {
        let file_targets = table
            .get("target")
            .and_then(toml::Value::as_array)
            .map_or(0, Vec::len);
        let mut added = Vec::new();
        let mut errors = ConfigError::new(self.origin.as_deref());
        for (name, definition) in api {
            match toml::Value::deserialize(definition.clone()) {
                Ok(v) => added.push((name.as_str(), v)),
                Err(e) => errors.push(format!("api.{name}"), e.to_string()),
            }
        }
        if !errors.problems.is_empty() {
            return Err(errors);
        }
        let names: Vec<&str> = added.iter().map(|(n, _)| *n).collect();
        let items = table
            .entry("target")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(items) = items {
            items.extend(added.into_iter().map(|(_, v)| v));
        }
        MonitorConfig::from_table(&table, self.origin.as_deref()).map_err(|mut e| {
            for p in &mut e.problems {
                for (i, name) in names.iter().enumerate() {
                    let prefix = format!("target[{}]", file_targets + i);
                    if let Some(rest) = p.path.strip_prefix(&prefix) {
                        let shown = if Some(*name) == body {
                            "body".to_owned()
                        } else {
                            format!("api.{name}")
                        };
                        p.path = format!("{shown}{rest}");
                    }
                }
            }
            e
        })
    }

    async fn monitor(&self, config: &MonitorConfig) -> Result<Monitor, StoreError> {
        Monitor::with_tracker_and_store(
            config,
            self.limits,
            HeartbeatTracker::from_config(config),
            Arc::clone(&self.store),
        )
        .await
    }

    /// The writes, if the request carries the right token.
    fn authorize(&self, headers: &HeaderMap) -> Result<&Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let Some(expected) = self.token else {
            return Err(unauthorized(
                "writes are disabled: the server has no write token",
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("writes need `Authorization: Bearer <token>`"))?;
        // Digests compared in constant time: the comparison's timing says nothing of the token.
        if bool::from(digest(given).ct_eq(&expected)) {
            Ok(self)
        } else {
            Err(unauthorized("the token is not valid"))
        }
    }

    /// Validates `api`, stores the change to `name`, and applies it to the running monitor.
    async fn apply(
        &self,
        s: &ServerState,
        api: BTreeMap<String, Value>,
        name: &str,
    ) -> Result<Current, Response> {
        let config = self
            .merge(&api, Some(name))
            .map_err(|e| invalid(&e).into_response())?;
        let now = SystemTime::now();
        let stored = match api.get(name) {
            Some(definition) => {
                self.store
                    .put_api_target(name, &definition.to_string(), now)
                    .await
            }
            None => self.store.delete_api_target(name).await.map(drop),
        };
        stored.map_err(|e| ApiError::internal(&e).into_response())?;
        let monitor = s.monitor();
        monitor
            .reconfigure(&config)
            .await
            .map_err(|e| ApiError::internal(&e).into_response())?;
        let current = Current {
            monitor,
            config: Arc::new(config),
            api: Arc::new(api),
        };
        *s.current.write().unwrap_or_else(PoisonError::into_inner) = current.clone();
        s.sync_alert_targets(&current.config);
        tracing::info!(target_name = %name, "targets changed through the API");
        Ok(current)
    }

    /// Applies a new file `table`, one write at a time.
    async fn reload(
        &self,
        s: &ServerState,
        table: toml::Table,
    ) -> Result<Reconfiguration, ReloadError> {
        let open = self.lock.lock().await;
        if !*open {
            return Err(ReloadError::Closed);
        }
        let c = s.current();
        let config = self
            .merge_into(table.clone(), &c.api, None)
            .map_err(ReloadError::Config)?;
        let plan = c
            .monitor
            .reconfigure(&config)
            .await
            .map_err(ReloadError::Monitor)?;
        *self.base.lock().unwrap_or_else(PoisonError::into_inner) = table;
        let config = Arc::new(config);
        s.sync_alert_targets(&config);
        *s.current.write().unwrap_or_else(PoisonError::into_inner) = Current {
            monitor: c.monitor,
            config,
            api: c.api,
        };
        drop(open);
        Ok(plan)
    }

    pub(crate) async fn shutdown(&self, s: &ServerState, grace: Duration) {
        let mut open = self.lock.lock().await;
        *open = false;
        s.monitor().shutdown(grace).await;
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 422 with every problem and its path.
fn invalid(e: &ConfigError) -> impl IntoResponse {
    let problems: Vec<Value> = e
        .problems
        .iter()
        .map(|p| json!({ "path": p.path, "message": p.message }))
        .collect();
    let body = json!({ "error": {
        "code": "invalid_target",
        "message": format!("{} problems", problems.len()),
        "problems": problems,
    }});
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body))
}

/// Checks the request's bearer token against the write token (for writes outside the targets).
pub(crate) fn authorize(s: &ServerState, headers: &HeaderMap) -> Result<(), ApiError> {
    writes(s)?.authorize(headers).map(drop)
}

fn writes(s: &ServerState) -> Result<&Writes, ApiError> {
    s.writes.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "writes are disabled on this server",
        )
    })
}

fn body(
    body: Result<Json<Value>, JsonRejection>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    match body.map_err(|e| ApiError::bad_request(e.body_text()))? {
        Json(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_request(
            "the body must be a JSON object (a target)",
        )),
    }
}

fn read_only(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "read_only",
        format!("target {name:?} comes from the configuration file and cannot be changed here"),
    )
}

fn closed() -> ApiError {
    ApiError::unavailable("the server is stopping")
}

/// A write's start: the token checked, the write lock taken (one write at a time), and the
/// current targets.
async fn begin<'a>(
    s: &'a ServerState,
    headers: &HeaderMap,
) -> Result<(&'a Writes, tokio::sync::MutexGuard<'a, bool>, Current), Response> {
    let w = writes(s)
        .and_then(|w| w.authorize(headers))
        .map_err(IntoResponse::into_response)?;
    let open = w.lock.lock().await;
    if !*open {
        return Err(closed().into_response());
    }
    Ok((w, open, s.current()))
}

/// Puts `target` as `name` and shows it as it now runs.
async fn put(
    w: &Writes,
    s: &ServerState,
    c: &Current,
    name: &str,
    target: serde_json::Map<String, Value>,
) -> Result<Value, Response> {
    let mut api = (*c.api).clone();
    api.insert(name.to_owned(), Value::Object(target));
    let now = w.apply(s, api, name).await?;
    let t = super::api::find(&now, name).map_err(IntoResponse::into_response)?;
    Ok(describe(t, &now))
}

fn unprocessable(message: &str) -> Response {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_target", message).into_response()
}

/// `POST /api/targets`: creates a target; 409 if the name is taken.
pub(crate) async fn create(
    State(s): State<ServerState>,
    headers: HeaderMap,
    json: Result<Json<Value>, JsonRejection>,
) -> Result<Response, Response> {
    let (w, _write, c) = begin(&s, &headers).await?;
    let target = body(json).map_err(IntoResponse::into_response)?;
    let Some(name) = target
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err(unprocessable("`name` is required"));
    };
    if c.config.targets.iter().any(|t| t.name == name) {
        let message = format!("a target named {name:?} exists");
        return Err(ApiError::new(StatusCode::CONFLICT, "conflict", message).into_response());
    }
    let shown = put(w, &s, &c, &name, target).await?;
    Ok((StatusCode::CREATED, Json(shown)).into_response())
}

/// `PUT /api/targets/{name}`: creates or replaces an API target; 403 for a file target.
pub(crate) async fn replace(
    State(s): State<ServerState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    json: Result<Json<Value>, JsonRejection>,
) -> Result<Response, Response> {
    let (w, _write, c) = begin(&s, &headers).await?;
    let mut target = body(json).map_err(IntoResponse::into_response)?;
    match target.get("name") {
        None => {
            target.insert("name".to_owned(), Value::String(name.clone()));
        }
        Some(given) if given.as_str() == Some(name.as_str()) => {}
        Some(_) => return Err(unprocessable("`name` must match the path")),
    }
    if !c.api.contains_key(&name) && c.config.targets.iter().any(|t| t.name == name) {
        return Err(read_only(&name).into_response());
    }
    Ok(Json(put(w, &s, &c, &name, target).await?).into_response())
}

/// `DELETE /api/targets/{name}`: deletes an API target; 403 for a file target.
pub(crate) async fn delete(
    State(s): State<ServerState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let (w, _write, c) = begin(&s, &headers).await?;
    if !c.api.contains_key(&name) {
        return Err(match c.config.targets.iter().any(|t| t.name == name) {
            true => read_only(&name),
            false => ApiError::not_found(format!("no target named {name:?}")),
        }
        .into_response());
    }
    let mut api = (*c.api).clone();
    api.remove(&name);
    w.apply(&s, api, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
