//! The OpenAI-compatible client: chat completions (whole or streamed) and embeddings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_resilience::timeout::Deadline;
use rampart_resilience::{ConfigError, Events};
use rampart_telemetry::Telemetry;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use tokio::time::Instant;

use super::error::AiError;
use super::key::ApiKey;
use super::limit::{BillingLimits, Charge, retry_after};
use super::metrics::ModelMetrics;
use super::sse::SseParser;
use super::types::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Usage,
    estimate_input_tokens,
};
use crate::duration::at_least_1ms;

/// How to reach an OpenAI-compatible provider. Unknown keys are refused; durations are strings.
///
/// ```toml
/// [ai.openai]
/// base_url = "https://api.openai.com/v1"
/// api_key_env = "OPENAI_API_KEY"
/// timeout = "60s"
/// requests_per_minute = 500
/// tokens_per_minute = 200000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API root, paths `chat/completions` and `embeddings` are appended. Default
    /// `"https://api.openai.com/v1"`; `http` or `https`.
    #[serde(default = "defaults::base_url")]
    pub base_url: String,
    /// The environment variable holding the API key. At most one of this and `api_key_file`;
    /// with neither, requests carry no `Authorization` header (local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A file holding the API key (a mounted secret); surrounding whitespace is trimmed.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Longest a call may take, to the last byte of a streamed answer; a shorter deadline in
    /// scope ([`Deadline`]) wins. Default `"60s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::timeout"
    )]
    pub timeout: Duration,
    /// Longest connecting may take. Default `"5s"`; at least 1ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// Requests a minute this client sends at most. Default: no limit; at least 1.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens a minute (estimated prompt + `max_tokens` up front, corrected by `usage`). Default:
    /// no limit; at least 1.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
    /// Longest a call waits for the limits to admit it before failing with a local
    /// `RateLimited`; a shorter deadline in scope wins. Default `"0s"`: refuse at once. Waiting
    /// calls are not queued in order: each tries again when the limiter said it would pass.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::max_wait"
    )]
    pub max_wait: Duration,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn base_url() -> String {
        "https://api.openai.com/v1".to_owned()
    }
    pub(super) fn timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn max_wait() -> Duration {
        Duration::ZERO
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig::new(defaults::base_url())
    }
}

impl OpenAiConfig {
    /// A configuration for `base_url` with every other field at its default.
    pub fn new(base_url: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key_env: None,
            api_key_file: None,
            timeout: defaults::timeout(),
            connect_timeout: defaults::connect_timeout(),
            requests_per_minute: None,
            tokens_per_minute: None,
            max_wait: defaults::max_wait(),
        }
    }

    /// Records every problem of this configuration under `path` (such as `ai.openai`). Does not
    /// read the key.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => errors.push(
                format!("{path}.base_url"),
                format!("must be http or https, got {}", url.scheme()),
            ),
            Err(e) => errors.push(format!("{path}.base_url"), format!("is not a url ({e})")),
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            errors.push(
                format!("{path}.api_key_file"),
                "only one of api_key_env and api_key_file may be set",
            );
        }
        if self.api_key_env.as_deref() == Some("") {
            errors.push(format!("{path}.api_key_env"), "must not be empty");
        }
        at_least_1ms(errors, format!("{path}.timeout"), self.timeout);
        at_least_1ms(
            errors,
            format!("{path}.connect_timeout"),
            self.connect_timeout,
        );
        for (key, value) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
        ] {
            if value == Some(0) {
                errors.push(format!("{path}.{key}"), "must be at least 1, got 0");
            }
        }
    }

    /// Validates, reads the key and builds the client called `name` (the `provider` label).
    pub fn build(&self, name: &str, events: &Events) -> Result<OpenAiClient, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        let key = match (&self.api_key_env, &self.api_key_file) {
            (Some(var), None) if !var.is_empty() => ApiKey::from_env(var)
                .map_err(|e| errors.push(format!("{name}.api_key_env"), e.to_string()))
                .ok(),
            (None, Some(file)) => ApiKey::from_file(file)
                .map_err(|e| errors.push(format!("{name}.api_key_file"), e.to_string()))
                .ok(),
            _ => None,
        };
        let limits = BillingLimits::per_minute(
            name,
            self.requests_per_minute.filter(|&n| n > 0),
            self.tokens_per_minute.filter(|&n| n > 0),
            events,
        );
        let limits = match limits {
            Ok(limits) => limits,
            Err(e) => {
                errors.extend(e);
                BillingLimits::unlimited()
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .build();
        let http = match http {
            Ok(http) => Some(http),
            Err(e) => {
                errors.push(
                    name.to_owned(),
                    format!("cannot build the http client ({e})"),
                );
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let Some(http) = http else {
            return Err(errors);
        };
        Ok(OpenAiClient {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                http,
                base_url: self.base_url.trim_end_matches('/').to_owned(),
                key,
                timeout: self.timeout,
                max_wait: self.max_wait,
                limits,
                telemetry: None,
                metrics: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A client for one OpenAI-compatible provider. Cheap to clone; clones share limits and
/// metrics. `Debug` shows no key.
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    http: reqwest::Client,
    base_url: String,
    key: Option<ApiKey>,
    timeout: Duration,
    max_wait: Duration,
    limits: BillingLimits,
    telemetry: Option<Telemetry>,
    metrics: Mutex<HashMap<String, ModelMetrics>>,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("name", &self.inner.name)
            .field("base_url", &crate::redact::redact(&self.inner.base_url))
            .field("key", &self.inner.key)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// The HTTP answer of one call, before its body is read.
struct Sent {
    response: reqwest::Response,
    charge: Charge,
    metrics: Option<ModelMetrics>,
    started: Instant,
    timeout: Duration,
    /// The answer's headers: the provider's view of its limits, applied again after the usage
    /// correction so that it wins.
    headers: HeaderMap,
}

impl OpenAiClient {
    /// This client with per-model metrics recorded into `telemetry` (see [`ModelMetrics`]).
    #[must_use]
    pub fn with_telemetry(self, telemetry: &Telemetry) -> Self {
        self.rebuild(|inner| inner.telemetry = Some(telemetry.clone()))
    }

    /// This client with `key` (instead of the configured one).
    #[must_use]
    pub fn with_key(self, key: ApiKey) -> Self {
        self.rebuild(|inner| inner.key = Some(key))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            name: self.inner.name.clone(),
            http: self.inner.http.clone(),
            base_url: self.inner.base_url.clone(),
            key: self.inner.key.clone(),
            timeout: self.inner.timeout,
            max_wait: self.inner.max_wait,
            limits: self.inner.limits.clone(),
            telemetry: self.inner.telemetry.clone(),
            metrics: Mutex::new(HashMap::new()),
        };
        change(&mut inner);
        OpenAiClient {
            inner: Arc::new(inner),
        }
    }

    /// The provider name this client was built with.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its requests/tokens-per-minute limits.
    pub fn limits(&self) -> &BillingLimits {
        &self.inner.limits
    }

    /// The metrics of `model`, when telemetry is attached.
    pub fn metrics(&self, model: &str) -> Option<ModelMetrics> {
        let telemetry = self.inner.telemetry.as_ref()?;
        let mut map = self
            .inner
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = map.get(model) {
            return Some(m.clone());
        }
        let m = ModelMetrics::new(telemetry, &self.inner.name, model);
        map.insert(model.to_owned(), m.clone());
        Some(m)
    }

    /// `POST chat/completions`: the whole answer.
    pub async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, AiError> {
        let body = serde_json::to_value(request).map_err(|e| self.decode_error(e))?;
        let sent = self
            .send(
                "chat/completions",
                &request.model,
                &body,
                request.estimated_cost(),
                false,
            )
            .await?;
        let answer: ChatResponse = self.read_json(sent, |r: &ChatResponse| r.usage).await?;
        Ok(answer)
    }

    /// `POST embeddings`.
    pub async fn embeddings(
        &self,
        request: &EmbeddingRequest,
    ) -> Result<EmbeddingResponse, AiError> {
        let body = serde_json::to_value(request).map_err(|e| self.decode_error(e))?;
        let estimate = estimate_input_tokens(&request.input);
        let sent = self
            .send("embeddings", &request.model, &body, estimate, false)
            .await?;
        self.read_json(sent, |r: &EmbeddingResponse| r.usage).await
    }

    /// `POST chat/completions` with `"stream": true` (and `stream_options.include_usage`, unless
    /// the request sets `stream_options` itself): the answer as it is generated. The stream must
    /// end with `data: [DONE]`; one that ends or breaks before is [`AiError::StreamCut`].
    pub async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, AiError> {
        let mut body = serde_json::to_value(request).map_err(|e| self.decode_error(e))?;
        if let Some(map) = body.as_object_mut() {
            map.insert("stream".into(), serde_json::Value::Bool(true));
            map.entry("stream_options")
                .or_insert_with(|| serde_json::json!({"include_usage": true}));
        }
        let sent = self
            .send(
                "chat/completions",
                &request.model,
                &body,
                request.estimated_cost(),
                true,
            )
            .await?;
        Ok(ChatStream {
            client: self.clone(),
            sent: Some(sent),
            parser: SseParser::default(),
            events: 0,
            first_token: false,
            usage: None,
            finished: false,
        })
    }

    fn decode_error(&self, e: impl std::error::Error + Send + Sync + 'static) -> AiError {
        AiError::Decode {
            provider: self.inner.name.clone(),
            source: Box::new(e),
        }
    }

    fn transport_error(&self, e: reqwest::Error, timeout: Duration) -> AiError {
        if e.is_timeout() {
            AiError::Timeout {
                provider: self.inner.name.clone(),
                after: timeout,
            }
        } else {
            AiError::Connect {
                provider: self.inner.name.clone(),
                source: Box::new(e),
            }
        }
    }

    /// Admits, sends, and turns throttling and HTTP errors into [`AiError`]s.
    async fn send(
        &self,
        path: &str,
        model: &str,
        body: &serde_json::Value,
        estimated_tokens: u32,
        stream: bool,
    ) -> Result<Sent, AiError> {
        let inner = &*self.inner;
        let metrics = self.metrics(model);
        let deadline = Deadline::current();
        if deadline.is_some_and(Deadline::is_expired) {
            return Err(AiError::DeadlineExceeded {
                provider: inner.name.clone(),
            });
        }
        let charge = self
            .admit(estimated_tokens, deadline, metrics.as_ref())
            .await?;
        let mut timeout = inner.timeout;
        if let Some(deadline) = deadline {
            if deadline.is_expired() {
                inner.limits.cancel(charge);
                return Err(AiError::DeadlineExceeded {
                    provider: inner.name.clone(),
                });
            }
            timeout = timeout.min(deadline.remaining());
        }
        let started = Instant::now();
        let mut builder = inner
            .http
            .post(format!("{}/{path}", inner.base_url))
            .timeout(timeout)
            .json(body);
        if stream {
            builder = builder.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        if let Some(key) = &inner.key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                if !e.is_timeout() {
                    // Nothing reached the provider: it counted nothing.
                    inner.limits.cancel(charge);
                }
                let err = self.transport_error(e, timeout);
                record_failure(metrics.as_ref(), started, &err);
                return Err(err);
            }
        };
        let headers = response.headers().clone();
        inner.limits.observe_headers(&headers);
        let status = response.status();
        if status.is_success() {
            return Ok(Sent {
                response,
                charge,
                metrics,
                started,
                timeout,
                headers,
            });
        }
        // The provider refused the call: it is not billed.
        inner.limits.cancel(charge);
        let err = self.status_error(status.as_u16(), &headers, response).await;
        if let AiError::RateLimited {
            retry_after: Some(d),
            ..
        } = &err
        {
            inner.limits.pause_for(*d);
        }
        record_failure(metrics.as_ref(), started, &err);
        Err(err)
    }

    /// Admits a call estimated at `tokens`, waiting up to `max_wait` (and never past the
    /// deadline) for the limits. Cancellation-safe: nothing is held while waiting.
    async fn admit(
        &self,
        tokens: u32,
        deadline: Option<Deadline>,
        metrics: Option<&ModelMetrics>,
    ) -> Result<Charge, AiError> {
        let inner = &*self.inner;
        let now = Instant::now();
        // A max_wait too large to add to the clock means "as long as it takes".
        let mut wait_until = now
            .checked_add(inner.max_wait)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        if let Some(deadline) = deadline {
            wait_until = wait_until.min(deadline.instant());
        }
        loop {
            let throttled = match inner.limits.try_admit(tokens) {
                Ok(charge) => return Ok(charge),
                Err(throttled) => throttled,
            };
            let now = Instant::now();
            match throttled.retry_after {
                Some(wait) if now.checked_add(wait).is_some_and(|t| t <= wait_until) => {
                    tokio::time::sleep(wait).await;
                }
                retry_after => {
                    if let Some(m) = metrics {
                        m.throttles.inc();
                    }
                    return Err(AiError::RateLimited {
                        provider: inner.name.clone(),
                        retry_after,
                        local: true,
                    });
                }
            }
        }
    }

    async fn status_error(
        &self,
        status: u16,
        headers: &HeaderMap,
        response: reqwest::Response,
    ) -> AiError {
        let retry_after = retry_after(headers);
        if status == 429 {
            return AiError::RateLimited {
                provider: self.inner.name.clone(),
                retry_after,
                local: false,
            };
        }
        let body = response.text().await.unwrap_or_default();
        AiError::Status {
            provider: self.inner.name.clone(),
            status,
            message: error_message(&body),
            retry_after,
        }
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        sent: Sent,
        usage: impl Fn(&T) -> Option<Usage>,
    ) -> Result<T, AiError> {
        let Sent {
            response,
            charge,
            metrics,
            started,
            timeout,
            headers,
        } = sent;
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                let err = self.transport_error(e, timeout);
                record_failure(metrics.as_ref(), started, &err);
                return Err(err);
            }
        };
        let answer: T = match serde_json::from_slice(&bytes) {
            Ok(answer) => answer,
            Err(e) => {
                let err = self.decode_error(e);
                record_failure(metrics.as_ref(), started, &err);
                return Err(err);
            }
        };
        let usage = usage(&answer);
        self.settle(charge, usage, &headers, metrics.as_ref(), started);
        Ok(answer)
    }

    /// Corrects the charge from `usage` and records a success.
    fn settle(
        &self,
        charge: Charge,
        usage: Option<Usage>,
        headers: &HeaderMap,
        metrics: Option<&ModelMetrics>,
        started: Instant,
    ) {
        if let Some(usage) = usage {
            let total = if usage.total_tokens > 0 {
                usage.total_tokens
            } else {
                usage.prompt_tokens.saturating_add(usage.completion_tokens)
            };
            self.inner.limits.correct(charge, total);
            self.inner.limits.observe_headers(headers);
        }
        if let Some(m) = metrics {
            m.request.record_ok(started.elapsed());
            if let Some(usage) = usage {
                m.tokens_in.add(u64::from(usage.prompt_tokens));
                m.tokens_out.add(u64::from(usage.completion_tokens));
            }
        }
    }
}

fn record_failure(metrics: Option<&ModelMetrics>, started: Instant, err: &AiError) {
    if let Some(m) = metrics {
        m.request.record_error(started.elapsed());
        if err.is_rate_limited() {
            m.throttles.inc();
        } else {
            m.errors.inc();
        }
    }
}

/// `error.message` of an OpenAI error body, else the body itself, at most 500 characters.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: String,
    }
    let message = serde_json::from_str::<Body>(body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| body.trim().to_owned());
    message.chars().take(500).collect()
}

/// A streamed chat answer: call [`next`](ChatStream::next) until it returns `None`.
///
/// Dropping it mid-way closes the connection; the tokens charged up front stay charged (the
/// provider bills what it generated) and no latency is recorded.
pub struct ChatStream {
    client: OpenAiClient,
    sent: Option<Sent>,
    parser: SseParser,
    events: usize,
    first_token: bool,
    usage: Option<Usage>,
    finished: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("provider", &self.client.inner.name)
            .field("events", &self.events)
            .field("finished", &self.finished)
            .finish()
    }
}

impl ChatStream {
    /// The next chunk; `None` after `data: [DONE]` (or after an error was returned). A stream that
    /// ends or breaks before `[DONE]` returns [`AiError::StreamCut`] once.
    ///
    /// Cancellation-safe: dropping the future loses no chunk already received.
    pub async fn next(&mut self) -> Option<Result<ChatChunk, AiError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(data) = self.parser.next_event() {
                self.events += 1;
                if data.trim() == "[DONE]" {
                    self.finish(None);
                    return None;
                }
                match serde_json::from_str::<ChatChunk>(&data) {
                    Ok(chunk) => {
                        if let Some(usage) = chunk.usage {
                            self.usage = Some(usage);
                        }
                        if !self.first_token && !chunk.text().is_empty() {
                            self.first_token = true;
                            if let Some(sent) = &self.sent
                                && let Some(m) = &sent.metrics
                            {
                                m.first_token.record_ok(sent.started.elapsed());
                            }
                        }
                        return Some(Ok(chunk));
                    }
                    Err(e) => {
                        let err = self.client.decode_error(e);
                        return Some(Err(self.finish(Some(err))?));
                    }
                }
            }
            let sent = self.sent.as_mut()?;
            match sent.response.chunk().await {
                Ok(Some(bytes)) => self.parser.feed(&bytes),
                Ok(None) => {
                    // The WHATWG parser discards an unfinished event at end of stream.
                    let err = AiError::StreamCut {
                        provider: self.client.inner.name.clone(),
                        events: self.events,
                        source: None,
                    };
                    return Some(Err(self.finish(Some(err))?));
                }
                Err(e) => {
                    let err = if e.is_timeout() {
                        self.client.transport_error(e, sent.timeout)
                    } else {
                        AiError::StreamCut {
                            provider: self.client.inner.name.clone(),
                            events: self.events,
                            source: Some(Box::new(e)),
                        }
                    };
                    return Some(Err(self.finish(Some(err))?));
                }
            }
        }
    }

    /// Reads the stream to its end: the text of the first choice and the usage, if sent.
    pub async fn collect_text(mut self) -> Result<(String, Option<Usage>), AiError> {
        let mut text = String::new();
        while let Some(chunk) = self.next().await {
            text.push_str(chunk?.text());
        }
        Ok((text, self.usage))
    }

    /// The usage, once the chunk carrying it has arrived.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Events received so far (`[DONE]` included).
    pub fn events(&self) -> usize {
        self.events
    }

    /// Ends the stream: settles the charge and records the outcome; gives `err` back.
    fn finish(&mut self, err: Option<AiError>) -> Option<AiError> {
        self.finished = true;
        let sent = self.sent.take()?;
        match err {
            None => {
                self.client.settle(
                    sent.charge,
                    self.usage,
                    &sent.headers,
                    sent.metrics.as_ref(),
                    sent.started,
                );
                None
            }
            Some(err) => {
                record_failure(sent.metrics.as_ref(), sent.started, &err);
                Some(err)
            }
        }
    }
}
