//! One endpoint and the counters a pick reads and a record writes, all atomics.

use rampart_resilience::Name;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::ewma::PeakEwma;

/// Whether a pick may choose an endpoint, and how likely.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Availability {
    /// In the rotation at full weight.
    Active,
    /// Readmitted, at this weight in `[0, 1)`.
    Ramping(f64),
    /// Out of the rotation.
    Ejected,
}

/// An endpoint with its counters. Aligned to its own cache lines so that picks and records on one
/// endpoint do not slow down those on its neighbours (false sharing).
#[repr(align(128))]
pub(super) struct Endpoint<T> {
    pub(super) name: Name,
    pub(super) value: T,
    /// Leases handed out and not yet recorded or dropped.
    pub(super) in_flight: AtomicUsize,
    /// Times a pick chose this endpoint.
    pub(super) picks: AtomicU64,
    /// The estimate picks compare: failures count as at least `failure_penalty`.
    pub(super) ewma: PeakEwma,
    /// The estimate the latency-outlier detector compares: real latencies of successes and
    /// failures, no penalty.
    pub(super) latency: PeakEwma,
    /// Samples since creation or the last readmission.
    pub(super) samples: AtomicU64,
    /// Failures in a row.
    pub(super) failures: AtomicU32,
    /// Successes in a row, toward forgiving one past ejection.
    pub(super) streak: AtomicU32,
    /// When the current or last ejection ends (nanoseconds since the balancer's epoch); 0 if the
    /// endpoint was never ejected.
    pub(super) readmit_at: AtomicU64,
    /// Ejected, and the readmission has not been processed yet (counters reset, event emitted).
    pub(super) pending_readmission: AtomicBool,
    /// Past ejections that still count toward the next one's duration.
    pub(super) level: AtomicU32,
    /// Ejections in total.
    pub(super) ejections: AtomicU64,
}

impl<T> Endpoint<T> {
    pub(super) fn new(name: Name, value: T) -> Self {
        Endpoint {
            name,
            value,
            in_flight: AtomicUsize::new(0),
            picks: AtomicU64::new(0),
            ewma: PeakEwma::new(),
            latency: PeakEwma::new(),
            samples: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            readmit_at: AtomicU64::new(0),
            pending_readmission: AtomicBool::new(false),
            level: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// True while an ejection lasts at `now`.
    #[inline]
    pub(super) fn is_ejected(&self, now: u64) -> bool {
        now < self.readmit_at.load(Ordering::Acquire)
    }

    /// The availability at `now`, read from the ejection's end time alone (no lock, no write).
    #[inline]
    pub(super) fn availability(&self, now: u64, ramp_up_ns: u64) -> Availability {
        let until = self.readmit_at.load(Ordering::Acquire);
        if until == 0 {
            return Availability::Active;
        }
        if now < until {
            return Availability::Ejected;
        }
        let since = now - until;
        if since >= ramp_up_ns {
            Availability::Active
        } else {
            Availability::Ramping(since as f64 / ramp_up_ns as f64)
        }
    }

    /// The cost a pick compares: the decayed estimate x (in-flight + 1). With no estimate yet it
    /// is zero while nothing is in flight, so a new endpoint is tried at once (as in Finagle), and
    /// `default_rtt` x (in-flight + 1) otherwise.
    #[inline]
    pub(super) fn cost(&self, now: u64, decay_ns: f64, default_rtt_ns: f64) -> f64 {
        let pending = self.in_flight.load(Ordering::Relaxed);
        match self.ewma.decayed_at(now, decay_ns) {
            Some(estimate) => estimate * (pending as f64 + 1.0),
            None if pending == 0 => 0.0,
            None => default_rtt_ns * (pending as f64 + 1.0),
        }
    }
}
