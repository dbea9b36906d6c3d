//! The rate limiter as `tower` middleware.

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_service::Service;

use super::{RateLimited, RateLimiter, Wait};
use crate::Error;

/// What a request costs, in the limiter's units. Any `Fn(&Req) -> u32` is one.
pub trait RequestCost<Req> {
    /// The cost of `request`.
    fn cost(&self, request: &Req) -> u32;
}

/// Every request costs 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<Req> RequestCost<Req> for UnitCost {
    #[inline]
    fn cost(&self, _request: &Req) -> u32 {
        1
    }
}

impl<Req, F> RequestCost<Req> for F
where
    F: Fn(&Req) -> u32,
{
    #[inline]
    fn cost(&self, request: &Req) -> u32 {
        self(request)
    }
}

/// Applies a [`RateLimiter`] to a service: requests over the limit fail with
/// [`Error::RateLimited`] (after waiting up to `max_wait` for a turn, if set).
///
/// ```
/// use rampart_resilience::rate_limit::{RateLimitConfig, RateLimitLayer};
/// use rampart_resilience::Events;
/// use std::time::Duration;
///
/// let limiter = RateLimitConfig::new(90_000.0, Duration::from_secs(60))
///     .build("openai", &Events::new())
///     .unwrap();
/// // Count each request's tokens rather than the requests.
/// let layer = RateLimitLayer::with_cost(limiter, |prompt: &String| prompt.len() as u32);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer<C = UnitCost> {
    limiter: RateLimiter,
    cost: C,
}

impl RateLimitLayer {
    /// Every request costs one unit.
    pub fn new(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            cost: UnitCost,
        }
    }
}

impl<C> RateLimitLayer<C> {
    /// Each request costs what `cost` says.
    pub fn with_cost(limiter: RateLimiter, cost: C) -> Self {
        RateLimitLayer { limiter, cost }
    }
}

impl<S, C: Clone> tower_layer::Layer<S> for RateLimitLayer<C> {
    type Service = RateLimitService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            cost: self.cost.clone(),
        }
    }
}

/// A service behind a [`RateLimiter`]; see [`RateLimitLayer`].
///
/// The decision is made in `call`, where the request (and so its cost) is known; `poll_ready` only
/// asks the inner service. A request admitted now calls the inner service at once. A request that
/// must wait for its turn (with `max_wait` set) moves the service that was polled ready into the
/// response future and leaves a clone in its place, so the inner call happens only when the turn
/// comes: this is why the service must be `Clone`. Dropping the response future while it waits
/// gives the reserved slot back.
#[derive(Debug, Clone)]
pub struct RateLimitService<S, C = UnitCost> {
    inner: S,
    limiter: RateLimiter,
    cost: C,
}

impl<S, C> RateLimitService<S, C> {
    /// The limiter in front of the inner service.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, Req> Service<Req> for RateLimitService<S, C>
where
    S: Service<Req> + Clone,
    C: RequestCost<Req>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let cost = self.cost.cost(&request);
        let state = match self.limiter.reserve(cost) {
            Ok(None) => State::Called {
                future: self.inner.call(request),
            },
            Ok(Some(reservation)) => {
                let clone = self.inner.clone();
                State::Waiting {
                    // Boxed so that the common, admitted-now response future stays small.
                    wait: Box::pin(reservation.into_wait()),
                    service: Some(std::mem::replace(&mut self.inner, clone)),
                    request: Some(request),
                }
            }
            Err(rejection) => State::Rejected {
                name: self.limiter.inner.name.clone(),
                rejection,
            },
        };
        ResponseFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`RateLimitService`].
    pub struct ResponseFuture<F, S, R> {
        #[pin]
        state: State<F, S, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, S, R> {
        Waiting {
            wait: Pin<Box<Wait>>,
            service: Option<S>,
            request: Option<R>,
        },
        Called {
            #[pin]
            future: F,
        },
        Rejected {
            name: Name,
            rejection: RateLimited,
        },
    }
}

impl<F, S, R> std::fmt::Debug for ResponseFuture<F, S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Called { .. } => "called",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, S, R, T, E> Future for ResponseFuture<F, S, R>
where
    F: Future<Output = Result<T, E>>,
    S: Service<R, Response = T, Error = E, Future = F>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx).map_err(Error::Inner),
                StateProj::Rejected { name, rejection } => {
                    return Poll::Ready(Err(rejection.into_error(name.clone())));
                }
                StateProj::Waiting {
                    wait,
                    service,
                    request,
                } => {
                    std::task::ready!(wait.as_mut().poll(cx));
                    let (Some(mut service), Some(request)) = (service.take(), request.take())
                    else {
                        // Only reachable if polled again after a panic in the inner `call`.
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}
