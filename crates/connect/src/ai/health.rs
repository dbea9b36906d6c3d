//! Health of model servers: TensorFlow Serving (REST), TorchServe and KServe / the Open
//! Inference Protocol v2, as readiness plus the versions each serves.
//!
//! | server | calls | ready when |
//! | --- | --- | --- |
//! | TensorFlow Serving | `GET {base}/v1/models/{name}` | a version's `state` is `AVAILABLE` |
//! | TorchServe | `GET {inference}/ping`, `GET {management}/models/{name}` | ping says `Healthy` and a worker is `READY` |
//! | KServe (v2) | `GET /v2/health/live`, `/v2/health/ready`, `/v2/models/{name}/ready`, `/v2/models/{name}` | the server and the model say ready |

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Which kind of model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelServerKind {
    /// TensorFlow Serving's REST API.
    TfServing,
    /// TorchServe's inference and management APIs.
    TorchServe,
    /// KServe's Open Inference Protocol v2 (also Triton, MLServer).
    KServe,
}

impl std::fmt::Display for ModelServerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelServerKind::TfServing => "tfserving",
            ModelServerKind::TorchServe => "torchserve",
            ModelServerKind::KServe => "kserve",
        })
    }
}

/// One version of a model and its state as the server words it (`AVAILABLE`, `LOADING`,
/// `READY`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    /// The version (`"1"`, `"1.0"`); empty when the server names none.
    pub version: String,
    /// The state, as the server says it.
    pub state: String,
    /// True when this version can serve.
    pub ready: bool,
}

/// What a model server said about itself and one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelHealth {
    /// The kind of server.
    pub kind: ModelServerKind,
    /// The model asked about.
    pub model: String,
    /// The server answers (its liveness endpoint said so).
    pub live: bool,
    /// The model can serve requests now.
    pub ready: bool,
    /// The versions the server reported.
    pub versions: Vec<ModelVersion>,
    /// Why not ready, in the server's words, when it said.
    pub detail: Option<String>,
    /// How long the checks took together.
    pub latency: Duration,
}

/// Why a health check could not tell readiness (the server is unreachable or answered with
/// something that is not its documented format).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The request failed (connection refused, timed out, ...).
    #[error("cannot reach {url}")]
    Request {
        /// The URL asked.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was an HTTP error that says nothing about readiness (such as a 404: no such
    /// model).
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer was not the documented JSON.
    #[error("cannot decode the answer of {url}")]
    Decode {
        /// The URL asked.
        url: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

impl HealthError {
    /// True when the server could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HealthError::Request { .. })
    }
}

/// Fetches `url`: the status and body.
async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), HealthError> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|source| HealthError::Request {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|source| HealthError::Request {
            url: url.to_owned(),
            source,
        })?;
    Ok((status, body))
}

fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &str) -> Result<T, HealthError> {
    serde_json::from_str(body).map_err(|source| HealthError::Decode {
        url: url.to_owned(),
        source,
    })
}

fn status_error(url: &str, status: u16, body: &str) -> HealthError {
    HealthError::Status {
        url: url.to_owned(),
        status,
        body: body.trim().chars().take(300).collect(),
    }
}

fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// TensorFlow Serving: `GET {base}/v1/models/{model}` (the REST API's model status). Ready when
/// a version is `AVAILABLE`. A 404 (model unknown) is an error.
pub async fn tf_serving_health(
    http: &reqwest::Client,
    base_url: &str,
    model: &str,
) -> Result<ModelHealth, HealthError> {
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        model_version_status: Vec<VersionStatus>,
    }
    #[derive(Deserialize)]
    struct VersionStatus {
        #[serde(default)]
        version: String,
        #[serde(default)]
        state: String,
        #[serde(default)]
        status: Option<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        error_code: String,
        #[serde(default)]
        error_message: String,
    }
    let started = Instant::now();
    let url = join(base_url, &format!("v1/models/{model}"));
    let (status, body) = get(http, &url).await?;
    if status != 200 {
        return Err(status_error(&url, status, &body));
    }
    let answer: Status = decode(&url, &body)?;
    let mut detail = None;
    let versions: Vec<ModelVersion> = answer
        .model_version_status
        .into_iter()
        .map(|v| {
            if let Some(d) = &v.status
                && d.error_code != "OK"
                && !d.error_code.is_empty()
            {
                detail = Some(format!("{}: {}", d.error_code, d.error_message));
            }
            ModelVersion {
                ready: v.state == "AVAILABLE",
                version: v.version,
                state: v.state,
            }
        })
        .collect();
    Ok(ModelHealth {
        kind: ModelServerKind::TfServing,
        model: model.to_owned(),
        live: true,
        ready: versions.iter().any(|v| v.ready),
        versions,
        detail,
        latency: started.elapsed(),
    })
}

/// TorchServe: `GET {inference_url}/ping` (`{"status": "Healthy"}`) and
/// `GET {management_url}/models/{model}` (the model's versions and workers). Ready when the
/// ping says `Healthy` and some version has a `READY` worker.
pub async fn torchserve_health(
    http: &reqwest::Client,
    inference_url: &str,
    management_url: &str,
    model: &str,
) -> Result<ModelHealth, HealthError> {
    #[derive(Deserialize)]
    struct Ping {
        #[serde(default)]
        status: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Model {
        #[serde(default)]
        model_version: String,
        #[serde(default)]
        workers: Vec<Worker>,
    }
    #[derive(Deserialize)]
    struct Worker {
        #[serde(default)]
        status: String,
    }
    let started = Instant::now();
    let ping_url = join(inference_url, "ping");
    let (status, body) = get(http, &ping_url).await?;
    // TorchServe answers 500 with `{"status": "Unhealthy"}` when a model is unhealthy.
    let ping: Ping = decode(&ping_url, &body)?;
    let live = status == 200 && ping.status == "Healthy";
    let url = join(management_url, &format!("models/{model}"));
    let (status, body) = get(http, &url).await?;
    if status != 200 {
        return Err(status_error(&url, status, &body));
    }
    let models: Vec<Model> = decode(&url, &body)?;
    let versions: Vec<ModelVersion> = models
        .into_iter()
        .map(|m| {
            let ready = m.workers.iter().any(|w| w.status == "READY");
            let state = if ready {
                "READY".to_owned()
            } else {
                m.workers
                    .first()
                    .map_or_else(|| "NO_WORKERS".to_owned(), |w| w.status.clone())
            };
            ModelVersion {
                version: m.model_version,
                state,
                ready,
            }
        })
        .collect();
    let ready = live && versions.iter().any(|v| v.ready);
    Ok(ModelHealth {
        kind: ModelServerKind::TorchServe,
        model: model.to_owned(),
        live,
        ready,
        detail: (!live).then(|| format!("ping: {}", ping.status)),
        versions,
        latency: started.elapsed(),
    })
}

/// KServe / Open Inference Protocol v2: `GET /v2/health/live`, `/v2/health/ready`,
/// `/v2/models/{model}/ready` and the model metadata `/v2/models/{model}` (for its versions).
/// A not-ready answer may be a non-200 status (the protocol says so for HTTP); either way it
/// counts as not ready. Missing metadata (404) is an error: no such model.
pub async fn kserve_health(
    http: &reqwest::Client,
    base_url: &str,
    model: &str,
) -> Result<ModelHealth, HealthError> {
    #[derive(Deserialize)]
    struct Live {
        #[serde(default)]
        live: bool,
    }
    #[derive(Deserialize)]
    struct Ready {
        #[serde(default)]
        ready: bool,
    }
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        versions: Option<Vec<String>>,
        #[serde(default)]
        platform: String,
    }
    let started = Instant::now();
    let live_url = join(base_url, "v2/health/live");
    let (status, body) = get(http, &live_url).await?;
    let live = status == 200 && decode::<Live>(&live_url, &body).is_ok_and(|l| l.live);
    let ready_url = join(base_url, "v2/health/ready");
    let (status, body) = get(http, &ready_url).await?;
    let server_ready = status == 200 && decode::<Ready>(&ready_url, &body).is_ok_and(|r| r.ready);
    let model_url = join(base_url, &format!("v2/models/{model}/ready"));
    let (status, body) = get(http, &model_url).await?;
    let model_ready = status == 200 && decode::<Ready>(&model_url, &body).is_ok_and(|r| r.ready);
    let meta_url = join(base_url, &format!("v2/models/{model}"));
    let (status, body) = get(http, &meta_url).await?;
    if status != 200 {
        return Err(status_error(&meta_url, status, &body));
    }
    let meta: Metadata = decode(&meta_url, &body)?;
    let state = if model_ready { "READY" } else { "UNAVAILABLE" };
    let versions = match meta.versions {
        Some(v) if !v.is_empty() => v
            .into_iter()
            .map(|version| ModelVersion {
                version,
                state: state.to_owned(),
                ready: model_ready,
            })
            .collect(),
        _ => vec![ModelVersion {
            version: String::new(),
            state: state.to_owned(),
            ready: model_ready,
        }],
    };
    let detail = match (live, server_ready, model_ready) {
        (false, _, _) => Some("server not live".to_owned()),
        (_, false, _) => Some("server not ready".to_owned()),
        (_, _, false) => Some(format!("model {model} not ready")),
        _ => (!meta.platform.is_empty()).then(|| format!("platform {}", meta.platform)),
    };
    Ok(ModelHealth {
        kind: ModelServerKind::KServe,
        model: model.to_owned(),
        live,
        ready: live && server_ready && model_ready,
        versions,
        detail,
        latency: started.elapsed(),
    })
}
