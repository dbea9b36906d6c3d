//! The adaptive limiter as tower middleware.

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::{Classifier, ErrIsFailure, Error};

use super::{AdaptiveLimiter, Token};

/// Wraps services in an [`AdaptiveLimiter`]; the classifier `C` decides how responses count
/// (by default `Err` is a drop).
#[derive(Debug, Clone)]
pub struct AdaptiveLayer<C = ErrIsFailure> {
    limiter: AdaptiveLimiter,
    classifier: C,
}

impl AdaptiveLayer {
    /// A layer sharing `limiter`, counting `Err` responses as drops.
    pub fn new(limiter: AdaptiveLimiter) -> Self {
        AdaptiveLayer {
            limiter,
            classifier: ErrIsFailure,
        }
    }
}

impl<C> AdaptiveLayer<C> {
    /// The same layer, with `classifier` deciding how responses count.
    pub fn with_classifier<C2>(self, classifier: C2) -> AdaptiveLayer<C2> {
        AdaptiveLayer {
            limiter: self.limiter,
            classifier,
        }
    }
}

impl<S, C: Clone> tower_layer::Layer<S> for AdaptiveLayer<C> {
    type Service = AdaptiveService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveService {
            inner,
            limiter: self.limiter.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service whose calls pass through an [`AdaptiveLimiter`].
///
/// Readiness is the inner service's; the slot is taken in `call`, so a caller that polls ready and
/// never calls holds nothing. A call over the limit fails at once with
/// [`Error::ConcurrencyLimited`] without reaching the inner service.
#[derive(Debug, Clone)]
pub struct AdaptiveService<S, C = ErrIsFailure> {
    inner: S,
    limiter: AdaptiveLimiter,
    classifier: C,
}

impl<S, C> AdaptiveService<S, C> {
    /// Wraps `inner` in `limiter`, with `classifier` deciding how responses count.
    pub fn new(inner: S, limiter: AdaptiveLimiter, classifier: C) -> Self {
        AdaptiveService {
            inner,
            limiter,
            classifier,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, Req> tower_service::Service<Req> for AdaptiveService<S, C>
where
    S: tower_service::Service<Req>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.acquire() {
            Ok(token) => ResponseFuture {
                inner: Some(self.inner.call(req)),
                token: Some(token),
                rejected: None,
                classifier: self.classifier.clone(),
            },
            Err(limit) => ResponseFuture {
                inner: None,
                token: None,
                rejected: Some((self.limiter.shared.name.clone(), limit)),
                classifier: self.classifier.clone(),
            },
        }
    }
}

pin_project! {
    /// The response future of an [`AdaptiveService`]; holds the call's slot until it finishes or
    /// is dropped.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        token: Option<Token>,
        rejected: Option<(Name, usize)>,
        classifier: C,
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("token", &self.token)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classifier<T, E>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => {
                let result = std::task::ready!(inner.poll(cx));
                if let Some(token) = this.token.take() {
                    token.settle(this.classifier.classify(&result));
                }
                Poll::Ready(result.map_err(Error::Inner))
            }
            None => match this.rejected.take() {
                Some((name, limit)) => Poll::Ready(Err(Error::ConcurrencyLimited { name, limit })),
                // Polled again after completion: the rejection was already handed out.
                None => Poll::Pending,
            },
        }
    }
}
