//! The bulkhead as `tower` middleware.

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_service::Service;

use super::{Bulkhead, BulkheadFull, BulkheadPermit};
use crate::Error;

type Acquire = Pin<Box<dyn Future<Output = Result<BulkheadPermit, BulkheadFull>> + Send>>;

/// Applies a [`Bulkhead`] to a service: at most `max_concurrent` requests in flight; more wait up
/// to `max_wait` or fail with [`Error::BulkheadFull`].
///
/// ```
/// use rampart_resilience::bulkhead::{BulkheadConfig, BulkheadLayer};
/// use rampart_resilience::Events;
///
/// let bulkhead = BulkheadConfig::new(8).build("reports", &Events::new()).unwrap();
/// let layer = BulkheadLayer::new(bulkhead);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer that puts every request through `bulkhead`.
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> tower_layer::Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// A service behind a [`Bulkhead`]; see [`BulkheadLayer`].
///
/// The slot is taken in `call` and held by the response future until it completes or is dropped,
/// not in `poll_ready`: a slot taken in `poll_ready` would be held by a service that may never be
/// called (and tokio-util's `PollSemaphore` is not a dependency). `poll_ready` only asks the inner
/// service. When a slot is free, the inner service is called at once. When the caller must wait for
/// one (`max_wait` above zero), the service that was polled ready moves into the response future
/// and a clone takes its place, so the inner call happens only once the slot is held: this is why
/// the service must be `Clone`. Dropping the response future while it waits leaves the queue
/// holding nothing.
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> BulkheadService<S> {
    /// The bulkhead in front of the inner service.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let state = if let Some(permit) = self.bulkhead.take_free() {
            State::Called {
                future: self.inner.call(request),
                permit: Some(permit),
            }
        } else if !self.bulkhead.waits() {
            State::Rejected {
                name: self.bulkhead.reject().name,
            }
        } else {
            let bulkhead = self.bulkhead.clone();
            let clone = self.inner.clone();
            State::Waiting {
                acquire: Box::pin(async move { bulkhead.acquire().await }),
                service: Some(std::mem::replace(&mut self.inner, clone)),
                request: Some(request),
            }
        };
        ResponseFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`BulkheadService`]; holds the slot until it completes or is dropped.
    pub struct ResponseFuture<F, S, R> {
        #[pin]
        state: State<F, S, R>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, S, R> {
        Waiting {
            acquire: Acquire,
            service: Option<S>,
            request: Option<R>,
        },
        Called {
            #[pin]
            future: F,
            permit: Option<BulkheadPermit>,
        },
        Rejected {
            name: Name,
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
                StateProj::Called { future, permit } => {
                    let output = std::task::ready!(future.poll(cx));
                    // Release the slot as soon as the inner call is done.
                    permit.take();
                    return Poll::Ready(output.map_err(Error::Inner));
                }
                StateProj::Rejected { name } => {
                    return Poll::Ready(Err(Error::BulkheadFull { name: name.clone() }));
                }
                StateProj::Waiting {
                    acquire,
                    service,
                    request,
                } => {
                    let permit = match std::task::ready!(acquire.as_mut().poll(cx)) {
                        Ok(permit) => permit,
                        Err(full) => {
                            this.state.set(State::Rejected { name: full.name });
                            continue;
                        }
                    };
                    let (Some(mut service), Some(request)) = (service.take(), request.take())
                    else {
                        // Only reachable if polled again after a panic in the inner `call`.
                        return Poll::Pending;
                    };
                    let future = service.call(request);
                    this.state.set(State::Called {
                        future,
                        permit: Some(permit),
                    });
                }
            }
        }
    }
}
