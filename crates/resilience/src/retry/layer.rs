//! `tower` layer: [`RetryLayer`] retries requests of the wrapped service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{MakeAttempt, RetryFuture, Wrap};
use super::{Retry, RetryErrors, ShouldRetry};
use crate::Error;

/// Retries the requests of the wrapped service with a [`Retry`] policy.
///
/// Requests must be `Clone` (each attempt sends a copy) and so must the service: as `tower`'s own
/// retry does, each retry calls a fresh clone of the service, driven to readiness first.
///
/// ```
/// use tower_layer::Layer;
/// use rampart_resilience::Events;
/// use rampart_resilience::retry::{RetryConfig, RetryLayer};
///
/// # fn main() -> Result<(), rampart_resilience::ConfigError> {
/// let retry = RetryConfig::default().build("backend", &Events::new())?;
/// let service = tower::service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) });
/// let _retrying = RetryLayer::new(retry).layer(service);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<D = RetryErrors> {
    retry: Retry,
    decide: D,
}

impl RetryLayer {
    /// A layer retrying every error of the wrapped service.
    pub fn new(retry: Retry) -> RetryLayer {
        RetryLayer {
            retry,
            decide: RetryErrors,
        }
    }
}

impl<D> RetryLayer<D> {
    /// The same layer deciding with `decide` which results to retry (for example
    /// [`RetryRejections`](super::RetryRejections) over services that return [`Error`]).
    pub fn with_decider<D2>(self, decide: D2) -> RetryLayer<D2> {
        RetryLayer {
            retry: self.retry,
            decide,
        }
    }
}

impl<S, D: Clone> Layer<S> for RetryLayer<D> {
    type Service = RetryService<S, D>;

    fn layer(&self, inner: S) -> RetryService<S, D> {
        RetryService {
            inner,
            retry: self.retry.clone(),
            decide: self.decide.clone(),
        }
    }
}

/// A service whose requests are retried. See [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S, D = RetryErrors> {
    inner: S,
    retry: Retry,
    decide: D,
}

impl<S, D> RetryService<S, D> {
    /// The policy applied to each request.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req, D> Service<Req> for RetryService<S, D>
where
    S: Service<Req> + Clone,
    Req: Clone,
    D: ShouldRetry<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S, Req, D>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The service that was polled ready makes the first attempt; a clone stays behind for
        // the next `poll_ready`.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let attempts = ServiceAttempts {
            service: ready,
            req,
        };
        ResponseFuture {
            inner: RetryFuture::begun(
                self.retry.clone(),
                attempts,
                self.decide.clone(),
                |attempts| Attempt {
                    service: None,
                    req: None,
                    fut: Some(attempts.service.call(attempts.req.clone())),
                },
            ),
        }
    }
}

pin_project! {
    /// The response future of [`RetryService`].
    pub struct ResponseFuture<S, Req, D>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: RetryFuture<Retry, ServiceAttempts<S, Req>, Attempt<S, Req>, D, Wrap>,
    }
}

impl<S, Req, D> Future for ResponseFuture<S, Req, D>
where
    S: Service<Req> + Clone,
    Req: Clone,
    D: ShouldRetry<S::Response, S::Error>,
{
    type Output = Result<S::Response, Error<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// Makes each retry: a fresh clone of the service and of the request.
pub(crate) struct ServiceAttempts<S, Req> {
    service: S,
    req: Req,
}

impl<S, Req> MakeAttempt for ServiceAttempts<S, Req>
where
    S: Service<Req> + Clone,
    Req: Clone,
{
    type Future = Attempt<S, Req>;

    fn make(&mut self) -> Attempt<S, Req> {
        Attempt {
            service: Some(self.service.clone()),
            req: Some(self.req.clone()),
            fut: None,
        }
    }
}

pin_project! {
    /// One attempt: drives its service clone to readiness, then calls it.
    pub(crate) struct Attempt<S, Req>
    where
        S: Service<Req>,
    {
        service: Option<S>,
        req: Option<Req>,
        #[pin]
        fut: Option<S::Future>,
    }
}

impl<S, Req> Future for Attempt<S, Req>
where
    S: Service<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.fut.is_none() {
            let (Some(service), Some(_)) = (this.service.as_mut(), this.req.as_ref()) else {
                // Neither a call in flight nor one to make: only after completion.
                return Poll::Pending;
            };
            match service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if let (Some(mut service), Some(req)) = (this.service.take(), this.req.take()) {
                this.fut.set(Some(service.call(req)));
            }
        }
        match this.fut.as_pin_mut() {
            Some(fut) => fut.poll(cx),
            None => Poll::Pending,
        }
    }
}
