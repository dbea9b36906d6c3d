//! Resilience for AI calls: a circuit breaker per route (provider + model), retries of
//! retryable errors only, optional hedging, and a fallback chain across routes.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use rampart_resilience::breaker::{BreakerConfig, CircuitBreaker};
use rampart_resilience::retry::{Retry, RetryConfig, RetryDecision};
use rampart_resilience::{ConfigError, Error, Events, Outcome};
use serde::Deserialize;

use super::client::{ChatStream, OpenAiClient, OpenAiConfig};
use super::error::AiError;
use super::types::{ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse};

/// One way to answer a request: a model at a provider, with its own breaker.
#[derive(Debug, Clone)]
pub struct Route {
    name: String,
    client: OpenAiClient,
    model: String,
    breaker: CircuitBreaker,
}

impl Route {
    /// `model` at `client`'s provider, named `"{provider}/{model}"`, with a breaker built from
    /// `breaker` (which counts timeouts, connection failures, 5xx, cut streams and undecodable
    /// answers as failures; throttling and 4xx are ignored).
    pub fn new(
        client: OpenAiClient,
        model: impl Into<String>,
        breaker: &BreakerConfig,
        events: &Events,
    ) -> Result<Route, ConfigError> {
        let model = model.into();
        let name = format!("{}/{model}", client.name());
        let breaker = breaker.build(&name, events)?;
        Ok(Route {
            name,
            client,
            model,
            breaker,
        })
    }

    /// `"{provider}/{model}"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model this route asks for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Its client.
    pub fn client(&self) -> &OpenAiClient {
        &self.client
    }

    /// Its breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Runs `call` through the breaker.
    async fn through_breaker<T, Fut>(&self, call: impl FnOnce() -> Fut) -> Result<T, AiError>
    where
        Fut: Future<Output = Result<T, AiError>>,
    {
        let result = self
            .breaker
            .call_classified(call, |r: &Result<T, AiError>| match r {
                Ok(_) => Outcome::Success,
                Err(e) if e.is_provider_failure() => Outcome::Failure,
                Err(_) => Outcome::Ignored,
            })
            .await;
        result.map_err(|e| self.unwrap_policy_error(e))
    }

    fn unwrap_policy_error(&self, e: Error<AiError>) -> AiError {
        match e {
            Error::Inner(e) => e,
            Error::BudgetExhausted { last, .. } => self.unwrap_policy_error(*last),
            Error::BreakerOpen { .. } => AiError::BreakerOpen {
                route: self.name.clone(),
            },
            Error::RateLimited { retry_after, .. } => AiError::RateLimited {
                provider: self.client.name().to_owned(),
                retry_after: Some(retry_after),
                local: true,
            },
            Error::Timeout { after, .. } => AiError::Timeout {
                provider: self.client.name().to_owned(),
                after,
            },
            _ => AiError::DeadlineExceeded {
                provider: self.client.name().to_owned(),
            },
        }
    }
}

/// What a [`ModelRouter`] returns: the answer and the route that gave it.
#[derive(Debug)]
pub struct Routed<T> {
    /// The answer.
    pub value: T,
    /// The route that answered (`"{provider}/{model}"`).
    pub route: String,
    /// The routes that failed first, with their errors.
    pub failed: Vec<(String, AiError)>,
}

/// Routes calls down a fallback chain: each route in order (skipping those whose breaker is
/// open), each retried for retryable errors (honouring `Retry-After` up to the retry's longest
/// delay), until one answers. With hedging on, a route that has not answered within the hedge
/// delay gets company: the next route is called too, and the first answer wins.
///
/// A [`Deadline`](rampart_resilience::timeout::Deadline) in scope bounds everything: each
/// request's timeout is the time left, and no retry starts that could not finish.
#[derive(Debug, Clone)]
pub struct ModelRouter {
    routes: Vec<Route>,
    retry: Option<Retry>,
    hedge_after: Option<Duration>,
}

impl ModelRouter {
    /// Tries `routes` in order, each once.
    pub fn new(routes: Vec<Route>) -> Self {
        ModelRouter {
            routes,
            retry: None,
            hedge_after: None,
        }
    }

    /// Retries each route with `retry` (retryable errors only).
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Calls the next route as well when a route has not answered within `after`.
    #[must_use]
    pub fn with_hedge(mut self, after: Duration) -> Self {
        self.hedge_after = Some(after);
        self
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// A chat completion from the first route that gives one. The request's `model` is replaced
    /// by each route's.
    pub async fn chat(&self, request: &ChatRequest) -> Result<Routed<ChatResponse>, AiError> {
        self.route(|route| {
            let mut request = request.clone();
            request.model = route.model.clone();
            async move { route.client.chat(&request).await }
        })
        .await
    }

    /// A streamed chat from the first route whose stream starts. Falls back only before the
    /// stream starts: a stream cut later is returned to the caller (its text was already seen).
    pub async fn chat_stream(&self, request: &ChatRequest) -> Result<Routed<ChatStream>, AiError> {
        self.route(|route| {
            let mut request = request.clone();
            request.model = route.model.clone();
            async move { route.client.chat_stream(&request).await }
        })
        .await
    }

    /// Embeddings from the first route that gives them.
    pub async fn embeddings(
        &self,
        request: &EmbeddingRequest,
    ) -> Result<Routed<EmbeddingResponse>, AiError> {
        self.route(|route| {
            let mut request = request.clone();
            request.model = route.model.clone();
            async move { route.client.embeddings(&request).await }
        })
        .await
    }

    async fn route<'a, T, F, Fut>(&'a self, call: F) -> Result<Routed<T>, AiError>
    where
        F: Fn(&'a Route) -> Fut,
        Fut: Future<Output = Result<T, AiError>>,
    {
        let mut failed = Vec::new();
        let mut i = 0;
        while i < self.routes.len() {
            let route = &self.routes[i];
            i += 1;
            if route.breaker.rejects_now() {
                failed.push((
                    route.name.clone(),
                    AiError::BreakerOpen {
                        route: route.name.clone(),
                    },
                ));
                continue;
            }
            let hedge = self.hedge_after.and_then(|after| {
                let next = self.routes[i..]
                    .iter()
                    .position(|r| !r.breaker.rejects_now())?;
                Some((after, i + next))
            });
            let result = match hedge {
                None => self.attempt(route, &call).await.map(|v| (v, route)),
                Some((after, next)) => {
                    let other = &self.routes[next];
                    match self.hedged(route, other, after, &call).await {
                        Ok(won) => Ok(won),
                        Err(e) => {
                            // Both ran: skip past the hedge route too.
                            i = next + 1;
                            failed.push((other.name.clone(), e.1));
                            Err(e.0)
                        }
                    }
                }
            };
            match result {
                Ok((value, by)) => {
                    return Ok(Routed {
                        value,
                        route: by.name.clone(),
                        failed,
                    });
                }
                Err(e) => {
                    let fatal = matches!(e, AiError::DeadlineExceeded { .. });
                    failed.push((route.name.clone(), e));
                    if fatal {
                        break;
                    }
                }
            }
        }
        Err(AiError::AllRoutesFailed { errors: failed })
    }

    /// Runs `first`; if it has not finished after `after`, runs `second` too; the first `Ok`
    /// wins. Both errors when both fail (the first route's, then the second's).
    async fn hedged<'a, T, F, Fut>(
        &self,
        first: &'a Route,
        second: &'a Route,
        after: Duration,
        call: &F,
    ) -> Result<(T, &'a Route), (AiError, AiError)>
    where
        F: Fn(&'a Route) -> Fut,
        Fut: Future<Output = Result<T, AiError>>,
    {
        let a = self.attempt(first, call);
        tokio::pin!(a);
        let delay = tokio::time::sleep(after);
        tokio::pin!(delay);
        tokio::select! {
            result = &mut a => {
                return match result {
                    Ok(v) => Ok((v, first)),
                    // Failed before the hedge delay: the hedge route is simply the next one.
                    Err(e) => match self.attempt(second, call).await {
                        Ok(v) => Ok((v, second)),
                        Err(e2) => Err((e, e2)),
                    },
                };
            }
            () = &mut delay => {}
        }
        let b = self.attempt(second, call);
        tokio::pin!(b);
        let mut a_err = None;
        let mut b_err = None;
        loop {
            tokio::select! {
                result = &mut a, if a_err.is_none() => match result {
                    Ok(v) => return Ok((v, first)),
                    Err(e) => a_err = Some(e),
                },
                result = &mut b, if b_err.is_none() => match result {
                    Ok(v) => return Ok((v, second)),
                    Err(e) => b_err = Some(e),
                },
            }
            if let (Some(_), Some(_)) = (&a_err, &b_err)
                && let (Some(ea), Some(eb)) = (a_err.take(), b_err.take())
            {
                return Err((ea, eb));
            }
        }
    }

    /// One route, through its breaker, retried for retryable errors.
    async fn attempt<'a, T, F, Fut>(&self, route: &'a Route, call: &F) -> Result<T, AiError>
    where
        F: Fn(&'a Route) -> Fut,
        Fut: Future<Output = Result<T, AiError>>,
    {
        let Some(retry) = &self.retry else {
            return route.through_breaker(|| call(route)).await;
        };
        let result = retry
            .call_with(
                || route.through_breaker(|| call(route)),
                |r: &Result<T, AiError>| match r {
                    Ok(_) => RetryDecision::Return,
                    Err(e) if e.is_retryable() => match e.retry_after() {
                        Some(after) => RetryDecision::RetryAfter(after),
                        None => RetryDecision::Retry,
                    },
                    Err(_) => RetryDecision::Return,
                },
            )
            .await;
        result.map_err(|e| route.unwrap_policy_error(e))
    }
}

/// A [`ModelRouter`] from configuration: the providers, the routes in fallback order
/// (`"provider/model"`), one breaker configuration for every route, an optional retry and
/// hedge. Unknown keys are refused.
///
/// ```toml
/// routes = ["openai/gpt-4o", "openai/gpt-4o-mini", "local/llama-3.1-8b"]
/// hedge_after = "800ms"
///
/// [providers.openai]
/// api_key_env = "OPENAI_API_KEY"
/// tokens_per_minute = 200000
///
/// [providers.local]
/// base_url = "http://127.0.0.1:8000/v1"
///
/// [breaker]
/// window = "consecutive"
/// consecutive_failures = 5
/// wait_in_open = "30s"
///
/// [retry]
/// max_attempts = 3
/// base_delay = "200ms"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRouterConfig {
    /// The providers by name. At least one.
    pub providers: BTreeMap<String, OpenAiConfig>,
    /// The routes, tried in this order: `"provider/model"` (the model may contain `/`). At
    /// least one; each names a provider above.
    pub routes: Vec<String>,
    /// Calls the next route too when a route has not answered within this. Default: no hedging;
    /// at least 1ms.
    #[serde(default, with = "rampart_resilience::serde_duration::option")]
    pub hedge_after: Option<Duration>,
    /// The breaker of each route. Default: `BreakerConfig::default()`.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Retries of each route (retryable errors only). Default: no retry.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

impl ModelRouterConfig {
    /// Records every problem under `path` (such as `ai`): providers, routes, breaker, retry. Does
    /// not read the keys.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.providers.is_empty() {
            errors.push(
                format!("{path}.providers"),
                "at least one provider is needed",
            );
        }
        for (name, provider) in &self.providers {
            provider.validate(&format!("{path}.providers.{name}"), errors);
        }
        if self.routes.is_empty() {
            errors.push(format!("{path}.routes"), "at least one route is needed");
        }
        for (i, route) in self.routes.iter().enumerate() {
            match route.split_once('/') {
                Some((provider, model)) if !model.is_empty() => {
                    if !self.providers.contains_key(provider) {
                        errors.push(
                            format!("{path}.routes[{i}]"),
                            format!("names no provider {provider:?}"),
                        );
                    }
                }
                _ => errors.push(
                    format!("{path}.routes[{i}]"),
                    format!("must be \"provider/model\", got {route:?}"),
                ),
            }
        }
        if let Some(d) = self.hedge_after {
            crate::duration::at_least_1ms(errors, format!("{path}.hedge_after"), d);
        }
        self.breaker.validate(&format!("{path}.breaker"), errors);
        if let Some(retry) = &self.retry {
            retry.validate(&format!("{path}.retry"), errors);
        }
    }

    /// Validates, reads the keys and builds the router; every client is named after its
    /// provider, every breaker after its route, the retry `name`.
    pub fn build(&self, name: &str, events: &Events) -> Result<ModelRouter, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut clients = BTreeMap::new();
        for (provider, config) in &self.providers {
            match config.build(provider, events) {
                Ok(client) => {
                    clients.insert(provider.as_str(), client);
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut routes = Vec::new();
        for route in &self.routes {
            let Some((provider, model)) = route.split_once('/') else {
                continue;
            };
            let Some(client) = clients.get(provider) else {
                continue;
            };
            match Route::new(client.clone(), model, &self.breaker, events) {
                Ok(route) => routes.push(route),
                Err(e) => errors.extend(e),
            }
        }
        let retry = match self.retry.as_ref().map(|r| r.build(name, events)) {
            Some(Ok(retry)) => Some(retry),
            Some(Err(e)) => {
                errors.extend(e);
                None
            }
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut router = ModelRouter::new(routes);
        if let Some(retry) = retry {
            router = router.with_retry(retry);
        }
        if let Some(after) = self.hedge_after {
            router = router.with_hedge(after);
        }
        Ok(router)
    }
}
