//! `Lease`: one pick of an endpoint, counted in flight until recorded or dropped.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use rampart_resilience::{Name, Outcome};

use super::Shared;

/// An endpoint chosen by [`Balancer::pick`](super::Balancer::pick), counted as in flight until the
/// lease is recorded or dropped.
///
/// [`record`](Lease::record) (or [`finish`](Lease::finish)) feeds the call's latency into the
/// endpoint's peak EWMA and its outcome into outlier detection. Dropping the lease without recording
/// (a cancelled call) only releases it: no sample, no failure.
#[must_use = "a lease counts as in flight until it is recorded or dropped"]
pub struct Lease<'a, T> {
    pub(super) shared: &'a Shared<T>,
    pub(super) index: usize,
    pub(super) picked_at: u64,
    pub(super) open: bool,
}

impl<T> Lease<'_, T> {
    /// The endpoint.
    pub fn endpoint(&self) -> &T {
        &self.shared.endpoints[self.index].value
    }

    /// The endpoint's name.
    pub fn name(&self) -> &Name {
        &self.shared.endpoints[self.index].name
    }

    /// The endpoint's position in the order the balancer was built with.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Ends the lease with the call's `latency` and `outcome`. A [`Outcome::Success`] feeds the
    /// latency to the peak EWMA and resets the failures in a row; a [`Outcome::Failure`] feeds
    /// `max(latency, failure_penalty)` to the estimate picks compare (the real latency to the
    /// outlier detector) and counts toward ejection; an [`Outcome::Ignored`] feeds no sample and
    /// counts neither way, as if the lease had been dropped.
    pub fn record(mut self, latency: Duration, outcome: Outcome) {
        self.open = false;
        self.shared.record(self.index, latency, outcome);
    }

    /// Ends the lease with `outcome`, taking the time since the pick as the latency.
    pub fn finish(self, outcome: Outcome) {
        let latency = Duration::from_nanos(self.shared.now().saturating_sub(self.picked_at));
        self.record(latency, outcome);
    }
}

impl<T> Deref for Lease<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.endpoint()
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if self.open {
            self.shared.release(self.index);
        }
    }
}

impl<T> fmt::Debug for Lease<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("endpoint", self.name())
            .field("index", &self.index)
            .finish()
    }
}
