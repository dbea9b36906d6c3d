//! Cheap counters a pool keeps, and the snapshot [`PoolStats`] built from them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{CloseReason, HealthState};

/// Buckets of the acquire-wait histogram: bucket 0 holds waits under 1µs, bucket `i` waits in
/// `[2^(i-1), 2^i)` µs, the last bucket everything from 2^27 µs (about 2.2 minutes) up.
pub const WAIT_BUCKETS: usize = 29;

/// A fixed-bucket log2 histogram of atomics: recording is one `fetch_add` (two for a wait that is
/// not zero: the sum too), no lock, no allocation.
pub(crate) struct WaitHistogram {
    buckets: [AtomicU64; WAIT_BUCKETS],
    /// Sum of the waits in µs. A checkout that did not wait adds nothing, so the fast path (an idle
    /// connection free at once) does not touch it.
    sum_micros: AtomicU64,
}

impl WaitHistogram {
    pub(crate) fn new() -> Self {
        WaitHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn bucket(wait: Duration) -> usize {
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        let index = (u64::BITS - micros.leading_zeros()) as usize;
        index.min(WAIT_BUCKETS - 1)
    }

    pub(crate) fn record(&self, wait: Duration) {
        if wait.is_zero() {
            self.buckets[0].fetch_add(1, Ordering::Relaxed);
        } else {
            self.buckets[Self::bucket(wait)].fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
            self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    pub(crate) fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// Connections closed, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClosedCounts {
    /// Idle timeout.
    pub idle: u64,
    /// Max lifetime.
    pub lifetime: u64,
    /// Connect failures and fatal errors.
    pub error: u64,
    /// Failed validations.
    pub invalid: u64,
    /// Older generation after a clear.
    pub stale: u64,
    /// Pool closed.
    pub pool_closed: u64,
    /// Pool resized below its size.
    pub resized: u64,
    /// Discarded by the user.
    pub discarded: u64,
    /// Detached by the user.
    pub detached: u64,
    /// Interrupted checks (an acquire dropped mid-validation).
    pub interrupted: u64,
}

impl ClosedCounts {
    pub(crate) fn from_array(counts: &[AtomicU64; CloseReason::ALL.len()]) -> Self {
        let get = |r: CloseReason| counts[r.index()].load(Ordering::Relaxed);
        ClosedCounts {
            idle: get(CloseReason::Idle),
            lifetime: get(CloseReason::Lifetime),
            error: get(CloseReason::Error),
            invalid: get(CloseReason::Invalid),
            stale: get(CloseReason::Stale),
            pool_closed: get(CloseReason::PoolClosed),
            resized: get(CloseReason::Resized),
            discarded: get(CloseReason::Discarded),
            detached: get(CloseReason::Detached),
            interrupted: get(CloseReason::Interrupted),
        }
    }
}

/// A snapshot of a pool's state and counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PoolStats {
    /// The pool's name.
    pub name: String,
    /// Most connections allowed now.
    pub max_size: usize,
    /// Connections open or being opened (idle, in use, being checked, connecting).
    pub size: usize,
    /// Idle connections ready to hand out.
    pub idle: usize,
    /// Connections checked out.
    pub in_use: usize,
    /// Acquires waiting now.
    pub waiters: usize,
    /// Connects in flight now.
    pub pending_connects: usize,
    /// The generation (bumped by each clear).
    pub generation: u64,
    /// Health now.
    pub health: HealthState,
    /// Health score now, 0–100.
    pub score: u8,
    /// Successful checkouts since the pool was built.
    pub checkouts: u64,
    /// Acquires that timed out.
    pub timeouts: u64,
    /// Acquires that failed for any reason (timeouts included).
    pub checkout_failures: u64,
    /// Connections opened.
    pub created: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Validations run (checkout and keepalive).
    pub validations: u64,
    /// Validations that failed.
    pub validation_failures: u64,
    /// Connections closed, by reason.
    pub closed: ClosedCounts,
    /// Leaks reported.
    pub leaks: u64,
    /// Acquire waits of successful checkouts: a log2 histogram in microseconds, see
    /// [`WAIT_BUCKETS`].
    pub acquire_wait: Vec<u64>,
    /// The sum of the acquire waits of successful checkouts, in whole microseconds each (so a
    /// histogram exporter can give the mean wait).
    pub acquire_wait_sum: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_of_microseconds() {
        assert_eq!(WaitHistogram::bucket(Duration::ZERO), 0);
        assert_eq!(WaitHistogram::bucket(Duration::from_micros(1)), 1);
        assert_eq!(WaitHistogram::bucket(Duration::from_micros(3)), 2);
        assert_eq!(WaitHistogram::bucket(Duration::from_micros(4)), 3);
        assert_eq!(
            WaitHistogram::bucket(Duration::from_secs(86_400)),
            WAIT_BUCKETS - 1
        );
    }

    #[test]
    fn the_sum_counts_waits_in_whole_microseconds() {
        let h = WaitHistogram::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(1500));
        h.record(Duration::from_nanos(2_999));
        assert_eq!(h.sum(), Duration::from_micros(1502));
        assert_eq!(h.snapshot().iter().sum::<u64>(), 3);
        assert_eq!(
            WaitHistogram::bucket(Duration::from_micros(1 << 27)),
            WAIT_BUCKETS - 1
        );
        assert_eq!(
            WaitHistogram::bucket(Duration::from_micros((1 << 27) - 1)),
            WAIT_BUCKETS - 2
        );
    }
}
