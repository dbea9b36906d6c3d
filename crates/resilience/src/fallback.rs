//! Fallbacks: a value to return instead of an error.
//!
//! A [`Fallback`] runs a call and, when it fails, hands the error to a fallback function that
//! produces the result instead: a cached value, a default, a degraded answer. A predicate can
//! limit which errors fall back, for example only rejections by an inner policy, so real errors
//! still surface.
//!
//! The fallback function receives the call's own error `E`. Wrapped around another policy's call,
//! `E` is that policy's [`Error`], so rejections arrive as themselves (`e.is_rejection()`); the
//! result is then an `Error<Error<X>>` that [`Error::flatten`] turns back into `Error<X>`.
//!
//! ```
//! use rampart_resilience::fallback::Fallback;
//! use rampart_resilience::Events;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let fallback = Fallback::new("profile", &Events::new());
//! let name = fallback
//!     .call_or_else(
//!         || async { Err::<String, _>("profile service down") },
//!         |_error| "guest".to_owned(),
//!     )
//!     .await;
//! assert_eq!(name.ok().as_deref(), Some("guest"));
//! assert_eq!(fallback.stats().fallbacks, 1);
//! # }
//! ```

use crate::Name;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::{Error, Event, Events};

/// What a [`Fallback`] has done so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FallbackStats {
    /// Calls made through the fallback.
    pub calls: u64,
    /// Calls whose result came from the fallback function.
    pub fallbacks: u64,
}

#[derive(Debug)]
struct Shared {
    name: Name,
    events: Events,
    calls: AtomicU64,
    fallbacks: AtomicU64,
}

/// Replaces a failed call's error with a fallback result. Cheap to clone; clones share counters.
#[derive(Debug, Clone)]
pub struct Fallback {
    shared: Arc<Shared>,
}

impl Fallback {
    /// A fallback `name` that emits [`Event::FallbackUsed`] to `events` each time it is used.
    pub fn new(name: &str, events: &Events) -> Self {
        Fallback {
            shared: Arc::new(Shared {
                name: name.into(),
                events: events.clone(),
                calls: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
            }),
        }
    }

    /// The fallback's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Counters so far.
    pub fn stats(&self) -> FallbackStats {
        FallbackStats {
            calls: self.shared.calls.load(Ordering::Relaxed),
            fallbacks: self.shared.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Runs `f`; on any error, returns what the async `fallback` makes of it instead. An error from
    /// the fallback itself is returned as [`Error::Inner`].
    pub async fn call<T, E, F, Fut, G, GFut>(&self, f: F, fallback: G) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        G: FnOnce(E) -> GFut,
        GFut: Future<Output = Result<T, E>>,
    {
        self.call_if(f, |_| true, fallback).await
    }

    /// Runs `f`; on an error for which `predicate` returns true, returns what the async `fallback`
    /// makes of it instead. Other errors pass through as [`Error::Inner`].
    pub async fn call_if<T, E, F, Fut, P, G, GFut>(
        &self,
        f: F,
        predicate: P,
        fallback: G,
    ) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: FnOnce(&E) -> bool,
        G: FnOnce(E) -> GFut,
        GFut: Future<Output = Result<T, E>>,
    {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        match f().await {
            Ok(value) => Ok(value),
            Err(error) if predicate(&error) => {
                self.shared.record_fallback();
                fallback(error).await.map_err(Error::Inner)
            }
            Err(error) => Err(Error::Inner(error)),
        }
    }

    /// Runs `f`; on any error, returns the value the sync `fallback` makes of it instead.
    pub async fn call_or_else<T, E, F, Fut, G>(&self, f: F, fallback: G) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        G: FnOnce(E) -> T,
    {
        self.call(f, |error| std::future::ready(Ok(fallback(error))))
            .await
    }
}

impl Shared {
    fn record_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.events.emit_with(|| Event::FallbackUsed {
            name: self.name.clone(),
        });
    }
}

/// Decides whether an error falls back. Any `Fn(&E) -> bool` is one; [`AnyError`] says yes to all.
pub trait FallbackPredicate<E> {
    /// True if `error` should be replaced by the fallback's result.
    fn should_fall_back(&self, error: &E) -> bool;
}

impl<E, F> FallbackPredicate<E> for F
where
    F: Fn(&E) -> bool,
{
    fn should_fall_back(&self, error: &E) -> bool {
        self(error)
    }
}

/// The default predicate: every error falls back.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyError;

impl<E> FallbackPredicate<E> for AnyError {
    fn should_fall_back(&self, _error: &E) -> bool {
        true
    }
}

#[derive(Debug)]
struct Handlers<G, P> {
    make: G,
    predicate: P,
}

/// Wraps services so that an error (or one the predicate picks) becomes a response made by `G`,
/// a `Fn(S::Error) -> S::Response`.
#[derive(Debug)]
pub struct FallbackLayer<G, P = AnyError> {
    fallback: Fallback,
    handlers: Arc<Handlers<G, P>>,
}

impl<G, P> Clone for FallbackLayer<G, P> {
    fn clone(&self) -> Self {
        FallbackLayer {
            fallback: self.fallback.clone(),
            handlers: Arc::clone(&self.handlers),
        }
    }
}

impl<G> FallbackLayer<G, AnyError> {
    /// A layer counting into `fallback` that turns every error into `make(error)`.
    pub fn new(fallback: Fallback, make: G) -> Self {
        FallbackLayer {
            fallback,
            handlers: Arc::new(Handlers {
                make,
                predicate: AnyError,
            }),
        }
    }
}

impl<G, P> FallbackLayer<G, P> {
    /// The same layer, falling back only for errors `predicate` picks; others pass through.
    pub fn when<P2>(self, predicate: P2) -> FallbackLayer<G, P2>
    where
        G: Clone,
    {
        FallbackLayer {
            fallback: self.fallback,
            handlers: Arc::new(Handlers {
                make: self.handlers.make.clone(),
                predicate,
            }),
        }
    }
}

impl<S, G, P> tower_layer::Layer<S> for FallbackLayer<G, P> {
    type Service = FallbackService<S, G, P>;

    fn layer(&self, inner: S) -> Self::Service {
        FallbackService {
            inner,
            fallback: self.fallback.clone(),
            handlers: Arc::clone(&self.handlers),
        }
    }
}

/// A service whose errors are replaced by fallback responses; see [`FallbackLayer`].
///
/// Readiness errors of the inner service pass through as [`Error::Inner`]: there is no request to
/// answer yet.
#[derive(Debug)]
pub struct FallbackService<S, G, P = AnyError> {
    inner: S,
    fallback: Fallback,
    handlers: Arc<Handlers<G, P>>,
}

impl<S: Clone, G, P> Clone for FallbackService<S, G, P> {
    fn clone(&self) -> Self {
        FallbackService {
            inner: self.inner.clone(),
            fallback: self.fallback.clone(),
            handlers: Arc::clone(&self.handlers),
        }
    }
}

impl<S, G, P, Req> tower_service::Service<Req> for FallbackService<S, G, P>
where
    S: tower_service::Service<Req>,
    G: Fn(S::Error) -> S::Response,
    P: FallbackPredicate<S::Error>,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, G, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.fallback.shared.calls.fetch_add(1, Ordering::Relaxed);
        ResponseFuture {
            inner: self.inner.call(req),
            shared: Arc::clone(&self.fallback.shared),
            handlers: Arc::clone(&self.handlers),
        }
    }
}

pin_project! {
    /// The response future of a [`FallbackService`].
    pub struct ResponseFuture<F, G, P> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        handlers: Arc<Handlers<G, P>>,
    }
}

impl<F, G, P> std::fmt::Debug for ResponseFuture<F, G, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("fallback", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<F, G, P, T, E> Future for ResponseFuture<F, G, P>
where
    F: Future<Output = Result<T, E>>,
    G: Fn(E) -> T,
    P: FallbackPredicate<E>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response),
            Err(error) if this.handlers.predicate.should_fall_back(&error) => {
                this.shared.record_fallback();
                Ok((this.handlers.make)(error))
            }
            Err(error) => Err(Error::Inner(error)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn success_does_not_touch_the_fallback() {
        let fallback = Fallback::new("f", &Events::new());
        let got = fallback
            .call(
                || async { Ok::<_, &str>(1) },
                |_| async { panic!("fallback must not run") },
            )
            .await;
        assert_eq!(got.ok(), Some(1));
        assert_eq!(
            fallback.stats(),
            FallbackStats {
                calls: 1,
                fallbacks: 0
            }
        );
    }

    #[tokio::test]
    async fn a_failing_fallback_returns_its_own_error() {
        let fallback = Fallback::new("f", &Events::new());
        let got = fallback
            .call(
                || async { Err::<u8, _>("first") },
                |e| async move {
                    assert_eq!(e, "first");
                    Err("cache miss")
                },
            )
            .await;
        assert_eq!(got.err().and_then(Error::into_inner), Some("cache miss"));
        assert_eq!(fallback.stats().fallbacks, 1);
    }
}
