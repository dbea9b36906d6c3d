//! Telemetry per model: latency (total and time to first token), tokens in and out, throttles
//! and errors, labelled `provider` and `model`.

use rampart_telemetry::{Counter, Labels, Operation, Telemetry};

/// The series of one provider's model. Names:
///
/// | series | kind | what |
/// | --- | --- | --- |
/// | `ai.request` | operation (latency histogram, errors) | each call, start to last byte |
/// | `ai.first_token` | operation (latency histogram) | streamed calls: start to first content |
/// | `rampart_ai_tokens_in` | counter | prompt tokens (from `usage`) |
/// | `rampart_ai_tokens_out` | counter | completion tokens (from `usage`) |
/// | `rampart_ai_throttles` | counter | calls refused by a 429 or the local limiter |
/// | `rampart_ai_errors` | counter | calls that failed otherwise |
#[derive(Clone)]
pub struct ModelMetrics {
    /// Each call, total latency and outcome.
    pub request: Operation,
    /// Streamed calls, time to first token.
    pub first_token: Operation,
    /// Prompt tokens.
    pub tokens_in: Counter,
    /// Completion tokens.
    pub tokens_out: Counter,
    /// Throttled calls.
    pub throttles: Counter,
    /// Failed calls (other than throttled).
    pub errors: Counter,
}

impl std::fmt::Debug for ModelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelMetrics")
            .field("tokens_in", &self.tokens_in.get())
            .field("tokens_out", &self.tokens_out.get())
            .field("throttles", &self.throttles.get())
            .field("errors", &self.errors.get())
            .finish()
    }
}

impl ModelMetrics {
    /// Registers (or finds) the series of `model` at `provider` in `telemetry`.
    pub fn new(telemetry: &Telemetry, provider: &str, model: &str) -> Self {
        let labels = Labels::new()
            .with("provider", provider.to_owned())
            .with("model", model.to_owned());
        ModelMetrics {
            request: telemetry.operation_with("ai.request", labels.clone()),
            first_token: telemetry.operation_with("ai.first_token", labels.clone()),
            tokens_in: telemetry.counter(
                "rampart_ai_tokens_in",
                "Prompt tokens counted by the provider.",
                labels.clone(),
            ),
            tokens_out: telemetry.counter(
                "rampart_ai_tokens_out",
                "Completion tokens counted by the provider.",
                labels.clone(),
            ),
            throttles: telemetry.counter(
                "rampart_ai_throttles",
                "AI calls throttled by the provider (429) or the local limiter.",
                labels.clone(),
            ),
            errors: telemetry.counter(
                "rampart_ai_errors",
                "AI calls that failed other than by throttling.",
                labels,
            ),
        }
    }
}
