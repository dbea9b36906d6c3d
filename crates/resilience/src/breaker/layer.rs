//! The breaker as a `tower` layer.

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{CircuitBreaker, OwnedPermit};
use crate::{Classifier, ErrIsFailure, Error};

/// Wraps services in a [`CircuitBreaker`]. Every service it makes shares the one breaker.
#[derive(Clone, Debug)]
pub struct BreakerLayer<C = ErrIsFailure> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl BreakerLayer {
    /// A layer whose services count `Err` responses as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        BreakerLayer {
            breaker,
            classifier: ErrIsFailure,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// A layer whose services classify responses with `classifier` (so that an HTTP 503 counts
    /// as a failure, say).
    pub fn with_classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service behind a circuit breaker. Readiness is the inner service's; the breaker decides per
/// call, so a rejected call costs no inner readiness.
#[derive(Clone, Debug)]
pub struct BreakerService<S, C = ErrIsFailure> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Some(permit) => ResponseFuture {
                kind: Kind::Running {
                    future: self.inner.call(req),
                },
                permit: Some(permit),
                classifier: self.classifier.clone(),
                name: None,
            },
            None => ResponseFuture {
                kind: Kind::Rejected,
                permit: None,
                classifier: self.classifier.clone(),
                name: Some(self.breaker.inner.name.clone()),
            },
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Running { #[pin] future: F },
        Rejected,
    }
}

pin_project! {
    /// The response future of a [`BreakerService`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        permit: Option<OwnedPermit>,
        classifier: C,
        name: Option<Name>,
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
        match this.kind.project() {
            KindProj::Rejected => Poll::Ready(Err(Error::BreakerOpen {
                name: this.name.take().unwrap_or_else(|| Name::new("")),
            })),
            KindProj::Running { future } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(permit) = this.permit.take() {
                    permit.record(this.classifier.classify(&result));
                }
                Poll::Ready(result.map_err(Error::Inner))
            }
        }
    }
}
