//! The model server probes (`tfserving`, `torchserve`, `kserve`), through `rampart-connect`'s
//! health checks: readiness of one model and the versions served.

use std::time::Duration;

use rampart_connect::ai::{
    HealthError, ModelHealth, kserve_health, tf_serving_health, torchserve_health,
};
use tokio::time::{Instant, timeout_at};

use super::{FailureKind, Probe, ProbeFuture, ProbeResult};
use crate::config::{ModelServer, ModelServerCheck};

/// Asks a model server whether a model is ready, with [`tf_serving_health`],
/// [`torchserve_health`] or [`kserve_health`]. Passes when the model is ready (and, with
/// `version` set, that version is); the versions reported go into
/// [`Details::model_versions`](super::Details::model_versions). Phase: `query` (all the calls).
///
/// Failures: `connect` (unreachable), `timeout`, `status_mismatch` (an HTTP error, such as a 404
/// for an unknown model), `body_mismatch` (not the documented JSON), `answer_mismatch` (the
/// server or the model is not ready, or the version asked for is not among the ready ones).
#[derive(Debug)]
pub struct ModelServerProbe {
    check: ModelServerCheck,
    http: Result<reqwest::Client, String>,
}

impl ModelServerProbe {
    /// A probe for `check`. One HTTP client, kept across probes (its connections are reused).
    pub fn new(check: ModelServerCheck) -> Self {
        let http = reqwest::Client::builder()
            .user_agent("rampart-monitor")
            .build()
            .map_err(|e| format!("cannot build the http client: {e}"));
        ModelServerProbe { check, http }
    }

    async fn health(&self, http: &reqwest::Client) -> Result<ModelHealth, HealthError> {
        let c = &self.check;
        match c.server {
            ModelServer::TfServing => tf_serving_health(http, &c.url, &c.model).await,
            ModelServer::TorchServe => {
                let management = c.management_url.as_deref().unwrap_or(&c.url);
                torchserve_health(http, &c.url, management, &c.model).await
            }
            ModelServer::KServe => kserve_health(http, &c.url, &c.model).await,
        }
    }

    async fn run(&self, timeout: Duration) -> ProbeResult {
        let started = Instant::now();
        let http = match &self.http {
            Ok(http) => http,
            Err(e) => {
                return ProbeResult::failure(FailureKind::Protocol, e.clone(), Duration::ZERO);
            }
        };
        let answer = timeout_at(started + timeout, self.health(http)).await;
        let latency = started.elapsed();
        let health = match answer {
            Err(_) => {
                return ProbeResult::failure(
                    FailureKind::Timeout,
                    format!("no answer within {timeout:?}"),
                    latency,
                );
            }
            Ok(Err(e)) => {
                let kind = match &e {
                    HealthError::Request { source, .. } if source.is_timeout() => {
                        FailureKind::Timeout
                    }
                    HealthError::Request { .. } => FailureKind::Connect,
                    HealthError::Status { .. } => FailureKind::StatusMismatch,
                    _ => FailureKind::BodyMismatch,
                };
                return ProbeResult::failure(kind, error_chain(&e), latency);
            }
            Ok(Ok(health)) => health,
        };
        let mut result = ProbeResult::success(latency);
        result.phases.query = Some(latency);
        result.details.model_versions = health
            .versions
            .iter()
            .map(|v| {
                let version = if v.version.is_empty() {
                    "-"
                } else {
                    &v.version
                };
                format!("{version} {}", v.state)
            })
            .collect();
        let model = &self.check.model;
        if !health.ready {
            let why = health.detail.as_deref().unwrap_or("no version is ready");
            return result.into_failure(
                FailureKind::AnswerMismatch,
                format!("model {model} is not ready: {why}"),
            );
        }
        if let Some(wanted) = &self.check.version
            && !health
                .versions
                .iter()
                .any(|v| v.ready && &v.version == wanted)
        {
            let message = format!(
                "version {wanted} of model {model} is not ready (versions: {})",
                result.details.model_versions.join(", ")
            );
            return result.into_failure(FailureKind::AnswerMismatch, message);
        }
        result
    }
}

/// The error and its causes, `: `-separated (reqwest's own message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

impl Probe for ModelServerProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(self.run(timeout))
    }
}
