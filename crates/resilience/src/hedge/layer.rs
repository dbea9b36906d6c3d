//! Hedging as tower middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Error;

use super::Hedge;

/// Wraps services in a [`Hedge`]. The service and the request must be `Clone`: every hedge sends
/// a clone of the request through a clone of the service.
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    hedge: Hedge,
}

impl HedgeLayer {
    /// A layer sharing `hedge`.
    pub fn new(hedge: Hedge) -> Self {
        HedgeLayer { hedge }
    }
}

impl<S> tower_layer::Layer<S> for HedgeLayer {
    type Service = HedgeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HedgeService {
            inner,
            hedge: self.hedge.clone(),
        }
    }
}

/// A service whose slow calls are hedged; see [`Hedge`].
///
/// The first attempt uses the service that was polled ready; each hedge uses a fresh clone and
/// waits for its readiness first.
#[derive(Debug, Clone)]
pub struct HedgeService<S> {
    inner: S,
    hedge: Hedge,
}

impl<S> HedgeService<S> {
    /// Wraps `inner` in `hedge`.
    pub fn new(inner: S, hedge: Hedge) -> Self {
        HedgeService { inner, hedge }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The response future of a [`HedgeService`]: the attempts race inside it, so it is boxed.
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, Error<E>>> + Send>>;

impl<S, Req> tower_service::Service<Req> for HedgeService<S>
where
    S: tower_service::Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service goes to the first attempt; `self` keeps an unready clone.
        let template = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, template.clone());
        let hedge = self.hedge.clone();
        Box::pin(async move {
            let mut ready = Some(ready);
            hedge
                .call(move || {
                    let request = req.clone();
                    let service = ready.take().ok_or_else(|| template.clone());
                    async move {
                        match service {
                            Ok(mut ready) => ready.call(request).await,
                            Err(mut fresh) => {
                                std::future::poll_fn(|cx| fresh.poll_ready(cx)).await?;
                                fresh.call(request).await
                            }
                        }
                    }
                })
                .await
        })
    }
}
