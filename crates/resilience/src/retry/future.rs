//! The retry loop as a state machine, shared by the plain calls and the `tower` service.

use std::borrow::Borrow;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep};

use super::{Next, Progress, Retry, ShouldRetry};
use crate::Error;

/// Makes the future of one more attempt.
pub(crate) trait MakeAttempt {
    /// The attempt's future.
    type Future;
    /// Starts one attempt.
    fn make(&mut self) -> Self::Future;
}

impl<F, Fut> MakeAttempt for F
where
    F: FnMut() -> Fut,
{
    type Future = Fut;

    fn make(&mut self) -> Fut {
        self()
    }
}

/// Turns an attempt's error into the policy's error.
pub(crate) trait Lift<X> {
    /// The inner error type of the result.
    type Inner;
    /// Wraps (or passes through) one error.
    fn lift(x: X) -> Error<Self::Inner>;
}

/// The attempt returns the inner error itself: wrap it in [`Error::Inner`].
pub(crate) struct Wrap;

impl<E> Lift<E> for Wrap {
    type Inner = E;

    fn lift(e: E) -> Error<E> {
        Error::Inner(e)
    }
}

/// The attempt already returns an [`Error`]: pass it through.
pub(crate) struct Flat;

impl<E> Lift<Error<E>> for Flat {
    type Inner = E;

    fn lift(e: Error<E>) -> Error<E> {
        e
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut> {
        // Not polled yet: the first poll counts the call and starts the first attempt.
        Start,
        Attempt { #[pin] fut: Fut },
        // Boxed: a timer is large (over 100 bytes) and only a call that retries needs one, so
        // a call that succeeds at once carries no room for it.
        Backoff { sleep: Pin<Box<Sleep>> },
        // The deadline had passed before the first attempt.
        Expired,
        Done,
    }
}

pin_project! {
    /// Runs attempts made by `M` until `D` says to return or the policy gives up. `R` is the
    /// policy, borrowed by plain calls (no reference count touched) and owned by the tower
    /// service's `'static` futures.
    pub(crate) struct RetryFuture<R, M, Fut, D, L> {
        retry: R,
        make: M,
        decide: D,
        progress: Progress,
        lift: PhantomData<fn() -> L>,
        #[pin]
        state: State<Fut>,
    }
}

impl<R, M, D, L> RetryFuture<R, M, M::Future, D, L>
where
    R: Borrow<Retry>,
    M: MakeAttempt,
{
    /// A retry loop that starts on its first poll.
    pub(crate) fn new(retry: R, make: M, decide: D) -> Self {
        RetryFuture {
            retry,
            make,
            decide,
            progress: Progress::default(),
            lift: PhantomData,
            state: State::Start,
        }
    }

    /// A retry loop that starts now, its first attempt made by `first` (a `tower` service's
    /// `call` happens right after `poll_ready`, not on the first poll).
    pub(crate) fn begun(
        retry: R,
        mut make: M,
        decide: D,
        first: impl FnOnce(&mut M) -> M::Future,
    ) -> Self {
        let mut progress = Progress::default();
        let state = if Borrow::<Retry>::borrow(&retry).begin(&mut progress) {
            State::Attempt {
                fut: first(&mut make),
            }
        } else {
            State::Expired
        };
        RetryFuture {
            retry,
            make,
            decide,
            progress,
            lift: PhantomData,
            state,
        }
    }
}

impl<R, M, D, L, T, X> Future for RetryFuture<R, M, M::Future, D, L>
where
    R: Borrow<Retry>,
    M: MakeAttempt,
    M::Future: Future<Output = Result<T, X>>,
    D: ShouldRetry<T, X>,
    L: Lift<X>,
{
    type Output = Result<T, Error<L::Inner>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Start => {
                    if <R as Borrow<Retry>>::borrow(this.retry).begin(this.progress) {
                        let fut = this.make.make();
                        this.state.set(State::Attempt { fut });
                    } else {
                        this.state.set(State::Expired);
                    }
                }
                StateProj::Attempt { fut } => {
                    let result = match fut.poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => return Poll::Pending,
                    };
                    let decision = this.decide.should_retry(&result);
                    match <R as Borrow<Retry>>::borrow(this.retry).next(
                        this.progress,
                        decision,
                        result.is_ok(),
                    ) {
                        Next::Return => {
                            this.state.set(State::Done);
                            return Poll::Ready(result.map_err(L::lift));
                        }
                        Next::BudgetExhausted(name) => {
                            this.state.set(State::Done);
                            return Poll::Ready(result.map_err(|last| Error::BudgetExhausted {
                                name,
                                last: Box::new(L::lift(last)),
                            }));
                        }
                        Next::Sleep(delay) => {
                            // The result is dropped here: the next attempt replaces it.
                            this.state.set(State::Backoff {
                                sleep: Box::pin(sleep(delay)),
                            });
                        }
                    }
                }
                StateProj::Backoff { sleep } => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    <R as Borrow<Retry>>::borrow(this.retry).attempt(this.progress);
                    let fut = this.make.make();
                    this.state.set(State::Attempt { fut });
                }
                StateProj::Expired => {
                    this.state.set(State::Done);
                    return Poll::Ready(Err(Error::DeadlineExceeded));
                }
                // Polled after completion: the contract allows anything but a panic is not
                // allowed here, so stay pending.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
