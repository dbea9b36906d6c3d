//! AI model endpoints: an OpenAI-compatible client with limits shaped like providers bill, and
//! health checks for model servers. Feature `ai`.
//!
//! - [`OpenAiClient`] (from [`OpenAiConfig`]): chat completions, whole or streamed (server-sent
//!   events), and embeddings, against any provider speaking the OpenAI API (`base_url`).
//!   API keys come from an environment variable or a file and are never shown ([`ApiKey`]).
//! - [`BillingLimits`]: requests and tokens per minute; calls are charged their estimated tokens
//!   up front ([`estimate_prompt_tokens`]: characters / 4) plus `max_tokens`, corrected from the
//!   answer's `usage`; `x-ratelimit-*` headers and a 429's `Retry-After` update them at once.
//! - [`AiError`] says what to do: [`is_retryable`](AiError::is_retryable),
//!   [`is_rate_limited`](AiError::is_rate_limited), [`retry_after`](AiError::retry_after).
//! - [`ModelRouter`]: a fallback chain of [`Route`]s (provider + model), each with its own
//!   circuit breaker, retried for retryable errors only, optionally hedged; a
//!   [`Deadline`](rampart_resilience::timeout::Deadline) in scope becomes each request's timeout.
//! - Model server health: [`tf_serving_health`], [`torchserve_health`], [`kserve_health`]
//!   report liveness, readiness and the versions served ([`ModelHealth`]).
//! - [`ModelMetrics`]: per-model latency (total, time to first token), tokens in/out, throttles,
//!   errors in a `rampart-telemetry` registry.
//!
//! See the guide, `docs/ai.md`.

mod client;
mod error;
mod health;
mod key;
mod limit;
mod metrics;
mod route;
mod sse;
mod types;

pub use client::{ChatStream, OpenAiClient, OpenAiConfig};
pub use error::{AiError, BoxError};
pub use health::{
    HealthError, ModelHealth, ModelServerKind, ModelVersion, kserve_health, tf_serving_health,
    torchserve_health,
};
pub use key::{ApiKey, ApiKeyError};
pub use limit::{BillingLimits, Charge, Throttled};
pub use metrics::ModelMetrics;
pub use route::{ModelRouter, ModelRouterConfig, Route, Routed};
pub use types::{
    ChatChoice, ChatChunk, ChatDelta, ChatMessage, ChatRequest, ChatResponse, ChunkChoice,
    DEFAULT_MAX_COMPLETION_TOKENS, Embedding, EmbeddingRequest, EmbeddingResponse, Usage,
    estimate_input_tokens, estimate_prompt_tokens,
};
