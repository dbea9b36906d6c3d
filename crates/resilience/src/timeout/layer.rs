//! `tower` layers: [`TimeoutLayer`] bounds each request by a [`Timeout`] policy, [`DeadlineLayer`]
//! sets a [`Deadline`] for each request and everything below it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;

use super::{Deadline, Expiry, Timeout};
use crate::Error;

/// Applies a [`Timeout`] to every request of the wrapped service.
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Timeout,
}

impl TimeoutLayer {
    /// A layer that bounds every request by `timeout` (shared: all services it wraps count into
    /// the same stats).
    pub fn new(timeout: Timeout) -> TimeoutLayer {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> TimeoutService<S> {
        TimeoutService {
            inner,
            timeout: self.timeout.clone(),
        }
    }
}

/// A service whose requests are bounded by a [`Timeout`] and the current [`Deadline`].
///
/// The deadline is read when `call` is made. A request whose deadline has already passed is not
/// passed to the inner service at all.
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Timeout,
}

impl<S> TimeoutService<S> {
    /// The policy applied to each request.
    pub fn timeout(&self) -> &Timeout {
        &self.timeout
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for TimeoutService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let plan = self.timeout.plan();
        if plan.expired {
            return ResponseFuture {
                inner: None,
                on_expiry: OnExpiry::Policy(self.timeout.clone(), Expiry::Deadline),
            };
        }
        ResponseFuture {
            inner: Some(tokio::time::timeout_at(plan.until, self.inner.call(req))),
            on_expiry: OnExpiry::Policy(self.timeout.clone(), plan.expiry),
        }
    }
}

/// Sets a [`Deadline`] a fixed time after each request starts (or keeps the caller's, if that is
/// earlier); everything below sees it through [`Deadline::current`], and the request is dropped
/// with [`Error::DeadlineExceeded`] when it passes.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    within: Duration,
}

impl DeadlineLayer {
    /// A layer giving each request `within` to finish, all layers below included.
    pub fn new(within: Duration) -> DeadlineLayer {
        DeadlineLayer { within }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            within: self.within,
        }
    }
}

/// A service that runs each request under a [`Deadline`]. See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    within: Duration,
}

impl<S, Req> Service<Req> for DeadlineService<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<TaskLocalFuture<Deadline, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let deadline = Deadline::after(self.within).or_earlier_current();
        if deadline.is_expired() {
            return ResponseFuture {
                inner: None,
                on_expiry: OnExpiry::Deadline,
            };
        }
        // The inner `call` runs inside the scope too: services below read the deadline there.
        let fut = deadline.sync_scope(|| self.inner.call(req));
        ResponseFuture {
            inner: Some(tokio::time::timeout_at(
                deadline.instant(),
                deadline.scope(fut),
            )),
            on_expiry: OnExpiry::Deadline,
        }
    }
}

#[derive(Debug)]
enum OnExpiry {
    Policy(Timeout, Expiry),
    Deadline,
}

pin_project! {
    /// The response future of [`TimeoutService`] and [`DeadlineService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        // `None` when the deadline had passed before the request was made.
        #[pin]
        inner: Option<tokio::time::Timeout<F>>,
        on_expiry: OnExpiry,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let expiry = match this.inner.as_pin_mut() {
            None => Expiry::Deadline,
            Some(inner) => match inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(result)) => return Poll::Ready(result.map_err(Error::Inner)),
                Poll::Ready(Err(_elapsed)) => match this.on_expiry {
                    OnExpiry::Policy(_, expiry) => *expiry,
                    OnExpiry::Deadline => Expiry::Deadline,
                },
            },
        };
        Poll::Ready(Err(match this.on_expiry {
            OnExpiry::Policy(timeout, _) => timeout.expired(expiry),
            OnExpiry::Deadline => Error::DeadlineExceeded,
        }))
    }
}
