//! Several policies stacked around one call, in a documented order.
//!
//! From the outside in:
//!
//! 1. **deadline** — the whole call, retries included, must finish by then;
//! 2. **retry** (with its budget) — tries again after failures, never past the deadline;
//! 3. **hedge** — starts a second attempt when the first is slow;
//! 4. **circuit breaker, checked** — an open breaker rejects at once, before any queueing;
//! 5. **rate limiter** — one unit per attempt, so retries and hedges are limited too;
//! 6. **bulkhead**, then **adaptive concurrency limit** — bound what is in flight (the adaptive
//!    limiter measures latency after the bulkhead's queue, so queueing does not read as slowness);
//! 7. **circuit breaker, permit taken** — after the waits, so a half-open trial slot is not held
//!    in a queue and queueing time does not count as a slow call;
//! 8. **timeout** — bounds each attempt;
//! 9. the call itself.
//!
//! The breaker and the adaptive limiter learn from each attempt's outcome as the classifier judges
//! it (timeouts count as failures; rejections by the inner policies count as nothing). Retries follow
//! the same verdict: failures are retried, a rate limiter's rejection is retried after its
//! `retry_after`, other rejections are returned at once. A fallback goes around the pipeline:
//! [`Fallback::call`](crate::fallback::Fallback).
//!
//! ```
//! use rampart_resilience::pipeline::Pipeline;
//! use rampart_resilience::breaker::CircuitBreaker;
//! use rampart_resilience::retry::RetryConfig;
//! use rampart_resilience::timeout::TimeoutConfig;
//! use rampart_resilience::Events;
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let events = Events::new();
//! let pipeline = Pipeline::builder("payments")
//!     .timeout(TimeoutConfig::default().build("payments", &events)?)
//!     .retry(RetryConfig::default().build("payments", &events)?)
//!     .breaker(CircuitBreaker::with_defaults("payments"))
//!     .build();
//! let calls = AtomicU32::new(0);
//! let value = pipeline
//!     .call(|| async {
//!         // Fails once, then succeeds: the retry hides the blip.
//!         if calls.fetch_add(1, Ordering::Relaxed) == 0 {
//!             Err(std::io::Error::other("blip"))
//!         } else {
//!             Ok(42)
//!         }
//!     })
//!     .await?;
//! assert_eq!(value, 42);
//! # Ok(()) }
//! ```

use crate::Name;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::adaptive::AdaptiveLimiter;
use crate::breaker::CircuitBreaker;
use crate::bulkhead::Bulkhead;
use crate::duration::serde_duration;
use crate::hedge::Hedge;
use crate::rate_limit::RateLimiter;
use crate::retry::{Retry, RetryDecision};
use crate::timeout::{Deadline, Timeout};
use crate::{Classifier, ErrIsFailure, Error, Outcome};

/// `[pipeline.NAME]`: which named policies a pipeline stacks. Every key is optional.
///
/// ```toml
/// [pipeline.payments]
/// deadline = "5s"
/// timeout = "payments"
/// retry = "payments"
/// breaker = "payments"
/// rate_limit = "payments-api"
/// bulkhead = "payments"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// A deadline for the whole call, retries included. Default: none.
    #[serde(with = "serde_duration::option", default)]
    pub deadline: Option<Duration>,
    /// The `[timeout.NAME]` that bounds each attempt.
    pub timeout: Option<String>,
    /// The `[retry.NAME]` policy.
    pub retry: Option<String>,
    /// The `[breaker.NAME]`.
    pub breaker: Option<String>,
    /// The `[rate_limit.NAME]`.
    pub rate_limit: Option<String>,
    /// The `[bulkhead.NAME]`.
    pub bulkhead: Option<String>,
    /// The `[adaptive.NAME]` concurrency limiter.
    pub adaptive: Option<String>,
    /// The `[hedge.NAME]` policy.
    pub hedge: Option<String>,
}

impl PipelineConfig {
    /// Records every problem of this section under `path` (such as `pipeline.checkout`). The names
    /// it refers to are checked by [`ResilienceConfig`](crate::registry::ResilienceConfig), which
    /// knows the other sections.
    pub fn validate(&self, path: &str, errors: &mut crate::ConfigError) {
        if let Some(deadline) = self.deadline {
            crate::timeout::validate_timeout(
                &format!("{path}.deadline"),
                deadline,
                crate::timeout::MIN_TIMEOUT,
                crate::timeout::MAX_TIMEOUT,
                errors,
            );
        }
    }

    /// The `(kind, name)` pairs this section refers to.
    pub fn references(&self) -> Vec<(&'static str, &str)> {
        [
            ("timeout", &self.timeout),
            ("retry", &self.retry),
            ("breaker", &self.breaker),
            ("rate_limit", &self.rate_limit),
            ("bulkhead", &self.bulkhead),
            ("adaptive", &self.adaptive),
            ("hedge", &self.hedge),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Policies stacked around a call in the documented order. Cheap to clone; clones share policies.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    name: Name,
    deadline: Option<Duration>,
    retry: Option<Retry>,
    hedge: Option<Hedge>,
    breaker: Option<CircuitBreaker>,
    rate_limiter: Option<(RateLimiter, Name)>,
    adaptive: Option<(AdaptiveLimiter, Name)>,
    bulkhead: Option<(Bulkhead, Name)>,
    timeout: Option<Timeout>,
}

/// Builds a [`Pipeline`]; the order of the calls does not matter, the stacking order is fixed.
#[derive(Debug, Default)]
pub struct PipelineBuilder {
    pipeline: Pipeline,
}

impl PipelineBuilder {
    /// A deadline for the whole call, retries included.
    pub fn deadline(mut self, within: Duration) -> Self {
        self.pipeline.deadline = Some(within);
        self
    }
    /// Retries failed attempts.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.pipeline.retry = Some(retry);
        self
    }
    /// Hedges slow attempts.
    pub fn hedge(mut self, hedge: Hedge) -> Self {
        self.pipeline.hedge = Some(hedge);
        self
    }
    /// Rejects attempts while the breaker is open.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.pipeline.breaker = Some(breaker);
        self
    }
    /// Takes one unit from the rate limiter per attempt.
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        let name = Name::new(limiter.name());
        self.pipeline.rate_limiter = Some((limiter, name));
        self
    }
    /// Bounds attempts in flight adaptively.
    pub fn adaptive(mut self, limiter: AdaptiveLimiter) -> Self {
        let name = Name::new(limiter.name());
        self.pipeline.adaptive = Some((limiter, name));
        self
    }
    /// Bounds attempts in flight.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        let name = Name::new(bulkhead.name());
        self.pipeline.bulkhead = Some((bulkhead, name));
        self
    }
    /// Bounds each attempt.
    pub fn timeout(mut self, timeout: Timeout) -> Self {
        self.pipeline.timeout = Some(timeout);
        self
    }
    /// The pipeline.
    pub fn build(self) -> Pipeline {
        self.pipeline
    }
}

const SUCCESS: u8 = 0;
const FAILURE: u8 = 1;
const IGNORED: u8 = 2;

impl Pipeline {
    /// Starts a pipeline named `name` with no policies.
    pub fn builder(name: &str) -> PipelineBuilder {
        PipelineBuilder {
            pipeline: Pipeline {
                name: name.into(),
                ..Pipeline::default()
            },
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker, if the pipeline has one.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// The retry policy, if the pipeline has one.
    pub fn retry(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }

    /// Runs `op` through every policy; `Err` results count as failures.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(op, ErrIsFailure).await
    }

    /// Runs `op` through every policy; `classifier` decides which results are failures (to the
    /// breaker, the adaptive limiter and the retry alike).
    pub async fn call_classified<T, E, F, Fut, C>(
        &self,
        op: F,
        classifier: C,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E>,
    {
        match self.deadline {
            // Boxed: the deadline's timer is large and a pipeline without a deadline should
            // not carry room for it; one that has one arms a timer per call anyway.
            Some(within) => {
                Box::pin(Deadline::after(within).run_flat(|| self.retried(op, &classifier))).await
            }
            None => self.retried(op, &classifier).await,
        }
    }

    async fn retried<T, E, F, Fut, C>(&self, mut op: F, classifier: &C) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E>,
    {
        let last = AtomicU8::new(SUCCESS);
        let decide = |result: &Result<T, Error<E>>| decide(result, last.load(Ordering::Relaxed));
        match (&self.retry, &self.hedge) {
            (None, None) => self.attempt(op(), classifier, &last).await,
            // Hedged calls are boxed: a hedge's future is large, and a pipeline without hedging
            // should not carry room for it. Hedging allocates per attempt anyway.
            (None, Some(hedge)) => Box::pin(hedge.call(|| self.attempt(op(), classifier, &last)))
                .await
                .map_err(Error::flatten),
            (Some(retry), None) => {
                retry
                    .call_flat_with(|| self.attempt(op(), classifier, &last), decide)
                    .await
            }
            (Some(retry), Some(hedge)) => {
                // Retry and hedge both call the operation again; they take turns, never at once,
                // so this lock is never contended.
                let op = Mutex::new(op);
                let next = || {
                    let mut op = op.lock().unwrap_or_else(|p| p.into_inner());
                    (*op)()
                };
                Box::pin(retry.call_flat_with(
                    || async {
                        hedge
                            .call(|| self.attempt(next(), classifier, &last))
                            .await
                            .map_err(Error::flatten)
                    },
                    decide,
                ))
                .await
            }
        }
    }

    async fn attempt<T, E, Fut, C>(
        &self,
        fut: Fut,
        classifier: &C,
        last: &AtomicU8,
    ) -> Result<T, Error<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        C: Classifier<T, E>,
    {
        last.store(IGNORED, Ordering::Relaxed);
        if let Some(breaker) = &self.breaker
            && breaker.rejects_now()
        {
            return Err(breaker.rejection());
        }
        if let Some((limiter, name)) = &self.rate_limiter
            && let Err(limited) = limiter.acquire(1).await
        {
            return Err(limited.into_error(name.clone()));
        }
        let _slot = match &self.bulkhead {
            Some((bulkhead, name)) => match bulkhead.acquire_ref().await {
                Ok(slot) => Some(slot),
                Err(_) => return Err(Error::BulkheadFull { name: name.clone() }),
            },
            None => None,
        };
        let token = match &self.adaptive {
            Some((limiter, name)) => match limiter.try_acquire() {
                Some(t) => Some(t),
                None => {
                    return Err(Error::ConcurrencyLimited {
                        name: name.clone(),
                        limit: limiter.limit(),
                    });
                }
            },
            None => None,
        };
        let permit = match &self.breaker {
            Some(breaker) => match breaker.try_acquire() {
                Some(p) => Some(p),
                None => return Err(breaker.rejection()),
            },
            None => None,
        };
        // The raw result is kept so the classifier can judge it before the error is wrapped.
        let raw: Result<Result<T, E>, Error<E>> = match &self.timeout {
            Some(timeout) => timeout
                .call(|| async { Ok::<_, std::convert::Infallible>(fut.await) })
                .await
                .map_err(|e| e.map_inner(|never| match never {})),
            None => Ok(fut.await),
        };
        let outcome = match &raw {
            Ok(result) => classifier.classify(result),
            Err(Error::Timeout { .. }) => Outcome::Failure,
            Err(_) => Outcome::Ignored,
        };
        if let Some(permit) = permit {
            permit.record(outcome);
        }
        if let Some(token) = token {
            match outcome {
                Outcome::Success => token.success(),
                Outcome::Failure => token.dropped(),
                Outcome::Ignored => drop(token),
            }
        }
        last.store(
            match outcome {
                Outcome::Success => SUCCESS,
                Outcome::Failure => FAILURE,
                Outcome::Ignored => IGNORED,
            },
            Ordering::Relaxed,
        );
        match raw {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Inner(e)),
            Err(e) => Err(e),
        }
    }
}

/// Whether the pipeline retries an attempt's result, given how the classifier judged it.
fn decide<T, E>(result: &Result<T, Error<E>>, outcome: u8) -> RetryDecision {
    match result {
        Err(Error::RateLimited { retry_after, .. }) => RetryDecision::RetryAfter(*retry_after),
        Err(Error::Timeout { .. }) => RetryDecision::Retry,
        Err(e) if e.is_rejection() => RetryDecision::Return,
        _ if outcome == FAILURE => RetryDecision::Retry,
        _ => RetryDecision::Return,
    }
}
