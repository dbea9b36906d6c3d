//! Balancing calls over several endpoints (a primary and its replicas, a set of Redis servers) with
//! outlier ejection.
//!
//! A [`Balancer<T>`] holds named endpoints of any type `T` (a pool, a client, an address). Each
//! [`pick`](Balancer::pick) chooses by *power of two choices*: two distinct endpoints at random, and
//! of those the one with the lower cost, `peak EWMA latency x (in-flight + 1)` (zero for an
//! endpoint with no sample and nothing in flight, so it is tried at once). The returned [`Lease`]
//! counts as in flight until its call is [recorded](Lease::record), which feeds the latency
//! estimate (a failure counts as at least `failure_penalty`) and the outlier detector, or dropped
//! (a cancelled call: no sample).
//!
//! An endpoint is ejected (left out of every pick) when it fails `consecutive_failures` calls in a
//! row, or when its latency estimate exceeds `latency_factor` times the median of the others. The
//! n-th ejection lasts n x `base_ejection`, up to `max_ejection`; successes in a row forgive past
//! ejections. At most `floor(max_ejected_share x n)` of `n` endpoints are out at once (at least
//! one when the share is above 0 and there are two or more), and one always stays.
//! When its time is up the endpoint comes back at a weight that ramps from 0 to 1 over `ramp_up`.
//!
//! ```
//! use rampart_pool::balance::{BalanceEvents, BalancerConfig, EndpointState, Outcome};
//! use std::time::Duration;
//!
//! let replicas = BalancerConfig::default().build(
//!     "orders-db",
//!     [("primary", "10.0.0.1:5432"), ("replica-1", "10.0.0.2:5432")],
//!     &BalanceEvents::new(),
//! )?;
//!
//! let lease = replicas.pick().ok_or("no endpoint")?;
//! let address: &str = *lease; // the endpoint itself
//! assert!(address.ends_with(":5432"));
//! lease.record(Duration::from_millis(3), Outcome::Success);
//!
//! let stats = replicas.stats();
//! assert!(stats.endpoints.iter().all(|e| e.in_flight == 0 && e.state == EndpointState::Active));
//! assert_eq!(stats.endpoints.iter().map(|e| e.picks).sum::<u64>(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Time comes from `tokio::time::Instant`, so tests run on paused time.

mod config;
mod endpoint;
mod event;
mod ewma;
mod lease;
mod stats;

pub use config::BalancerConfig;
pub use event::{BalanceEvent, BalanceEvents, BalanceSubscription, EjectionReason};
pub use lease::Lease;
pub use rampart_resilience::Outcome;
pub use stats::{BalancerStats, EndpointState, EndpointStats};

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_resilience::Name;
use tokio::time::Instant;

use endpoint::{Availability, Endpoint};

/// Picks among named endpoints by power of two choices on peak EWMA latency x in-flight, ejecting
/// outliers. Cheap to clone; clones share endpoints and state. Built by [`BalancerConfig::build`].
pub struct Balancer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Balancer<T> {
    fn clone(&self) -> Self {
        Balancer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for Balancer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.shared.name)
            .field("endpoints", &self.shared.endpoints.len())
            .finish()
    }
}

/// The validated configuration in the units the hot path uses.
struct Settings {
    decay_ns: f64,
    default_rtt_ns: f64,
    failure_penalty_ns: f64,
    consecutive_failures: u32,
    latency_factor: f64,
    min_samples: u64,
    base_ejection: Duration,
    max_ejection: Duration,
    /// `max_ejected_share` of the endpoints, rounded down but at least 1 when the share is above 0
    /// and there are two endpoints or more, and always at least one fewer than all.
    max_ejected: usize,
    ramp_up: Duration,
    ramp_up_ns: u64,
    recovery_streak: u32,
}

struct Shared<T> {
    name: Name,
    endpoints: Box<[Endpoint<T>]>,
    settings: Settings,
    events: BalanceEvents,
    /// Times are kept as nanoseconds since this instant, so they fit in atomics.
    epoch: Instant,
    /// Serialises ejections and readmissions, so the share of ejected endpoints is counted and
    /// changed as one step. Taken only on a failure past the threshold, on a latency outlier, and
    /// once per readmission; never on a plain pick or a success.
    ejection: Mutex<()>,
}

/// Why an ejection is considered.
#[derive(Clone, Copy)]
enum Cause {
    Failures,
    Latency,
}

impl<T> Balancer<T> {
    fn from_parts(
        name: Name,
        config: &BalancerConfig,
        endpoints: Vec<(Name, T)>,
        events: BalanceEvents,
    ) -> Self {
        let count = endpoints.len();
        let share = config.max_ejected_share;
        let mut by_share = (count as f64 * share).floor() as usize;
        if share > 0.0 && count >= 2 {
            by_share = by_share.max(1);
        }
        let settings = Settings {
            decay_ns: config.decay.as_nanos() as f64,
            default_rtt_ns: config.default_rtt.as_nanos() as f64,
            failure_penalty_ns: config.failure_penalty.as_nanos() as f64,
            consecutive_failures: config.consecutive_failures,
            latency_factor: config.latency_factor,
            min_samples: u64::from(config.min_samples),
            base_ejection: config.base_ejection,
            max_ejection: config.max_ejection,
            max_ejected: by_share.min(count.saturating_sub(1)),
            ramp_up: config.ramp_up,
            ramp_up_ns: nanos(config.ramp_up),
            recovery_streak: config.recovery_streak,
        };
        let endpoints = endpoints
            .into_iter()
            .map(|(name, value)| Endpoint::new(name, value))
            .collect();
        Balancer {
            shared: Arc::new(Shared {
                name,
                endpoints,
                settings,
                events,
                epoch: Instant::now(),
                ejection: Mutex::new(()),
            }),
        }
    }

    /// The balancer's name.
    pub fn name(&self) -> &Name {
        &self.shared.name
    }

    /// How many endpoints it holds, ejected or not.
    pub fn len(&self) -> usize {
        self.shared.endpoints.len()
    }

    /// True if it holds no endpoint.
    pub fn is_empty(&self) -> bool {
        self.shared.endpoints.is_empty()
    }

    /// Every endpoint with its name, in the order the balancer was built with, ejected or not.
    pub fn endpoints(&self) -> impl ExactSizeIterator<Item = (&Name, &T)> + '_ {
        self.shared.endpoints.iter().map(|e| (&e.name, &e.value))
    }

    /// The endpoint named `name`, ejected or not.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.shared
            .endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.value)
    }

    /// Chooses an endpoint for one call: two distinct endpoints at random among those not ejected
    /// (a ramping endpoint takes part with probability equal to its weight), and of the two the one
    /// with the lower `latency x (in-flight + 1)`.
    ///
    /// Returns `None` only when the balancer has no endpoint: ejection always leaves one.
    /// Takes no lock (except once when an ejection has just ended) and allocates nothing.
    pub fn pick(&self) -> Option<Lease<'_, T>> {
        self.shared.pick()
    }

    /// A snapshot of every endpoint.
    pub fn stats(&self) -> BalancerStats {
        let shared = &*self.shared;
        let now = shared.now();
        let endpoints = shared
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                let availability = shared.availability(i, now);
                let (state, weight) = match availability {
                    Availability::Active => (EndpointState::Active, 1.0),
                    Availability::Ramping(w) => (EndpointState::Ramping, w),
                    Availability::Ejected => (EndpointState::Ejected, 0.0),
                };
                let readmit_in = (availability == Availability::Ejected).then(|| {
                    Duration::from_nanos(ep.readmit_at.load(Ordering::Acquire).saturating_sub(now))
                });
                EndpointStats {
                    name: ep.name.clone(),
                    in_flight: ep.in_flight.load(Ordering::Relaxed),
                    ewma: ep
                        .ewma
                        .decayed_at(now, shared.settings.decay_ns)
                        .map(|ns| Duration::from_nanos(ns as u64)),
                    ewma_raw: ep.ewma.get().map(|ns| Duration::from_nanos(ns as u64)),
                    latency: ep.latency.get().map(|ns| Duration::from_nanos(ns as u64)),
                    state,
                    weight,
                    readmit_in,
                    consecutive_failures: ep.failures.load(Ordering::Relaxed),
                    ejections: ep.ejections.load(Ordering::Relaxed),
                    picks: ep.picks.load(Ordering::Relaxed),
                }
            })
            .collect();
        BalancerStats {
            name: shared.name.clone(),
            endpoints,
        }
    }
}

impl<T> Shared<T> {
    /// Nanoseconds since the epoch.
    #[inline]
    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    /// The availability of endpoint `i` at `now`, first processing a readmission that is due.
    #[inline]
    fn availability(&self, i: usize, now: u64) -> Availability {
        let ep = &self.endpoints[i];
        let availability = ep.availability(now, self.settings.ramp_up_ns);
        if availability != Availability::Ejected && ep.pending_readmission.load(Ordering::Acquire) {
            let _guard = self.lock();
            self.settle(i, now);
        }
        availability
    }

    fn pick(&self) -> Option<Lease<'_, T>> {
        let now = self.now();
        // Reservoir sampling of two among the eligible endpoints in one pass: the i-th eligible one
        // replaces a random slot with probability 2/i, which leaves every pair equally likely.
        let mut slots = [0usize; 2];
        let mut eligible = 0u32;
        let mut available = 0u32;
        for i in 0..self.endpoints.len() {
            match self.availability(i, now) {
                Availability::Ejected => continue,
                Availability::Ramping(weight) => {
                    available += 1;
                    if fastrand::f64() >= weight {
                        continue;
                    }
                }
                Availability::Active => available += 1,
            }
            eligible += 1;
            if eligible <= 2 {
                slots[eligible as usize - 1] = i;
            } else {
                let j = fastrand::u32(0..eligible) as usize;
                if j < 2 {
                    slots[j] = i;
                }
            }
        }
        let chosen = match eligible {
            // Every endpoint looks ejected: only possible when this pick's clock reading is a
            // moment older than an ejection decided concurrently. One endpoint always stays, so
            // take the one whose ejection ends first.
            0 if available == 0 => self.soonest_readmitted()?,
            // Only ramping endpoints are left and each one's coin said no: take one of them anyway.
            0 => self.nth_available(fastrand::u32(0..available), now)?,
            1 => slots[0],
            _ => {
                let s = &self.settings;
                let [a, b] = slots;
                let cost_a = self.endpoints[a].cost(now, s.decay_ns, s.default_rtt_ns);
                let cost_b = self.endpoints[b].cost(now, s.decay_ns, s.default_rtt_ns);
                if cost_a < cost_b || (cost_a == cost_b && fastrand::bool()) {
                    a
                } else {
                    b
                }
            }
        };
        let ep = &self.endpoints[chosen];
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        ep.picks.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            shared: self,
            index: chosen,
            picked_at: now,
            open: true,
        })
    }

    /// The index of the `n`-th endpoint that is not ejected at `now`.
    #[cold]
    fn nth_available(&self, n: u32, now: u64) -> Option<usize> {
        self.endpoints
            .iter()
            .enumerate()
            .filter(|(_, ep)| !ep.is_ejected(now))
            .nth(n as usize)
            .map(|(i, _)| i)
    }

    /// The index of the endpoint whose ejection ends first; `None` if there is no endpoint.
    #[cold]
    fn soonest_readmitted(&self) -> Option<usize> {
        (0..self.endpoints.len())
            .min_by_key(|&i| self.endpoints[i].readmit_at.load(Ordering::Acquire))
    }

    /// A lease was dropped without a record.
    fn release(&self, i: usize) {
        self.endpoints[i].in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A lease was recorded.
    fn record(&self, i: usize, latency: Duration, outcome: Outcome) {
        let s = &self.settings;
        let ep = &self.endpoints[i];
        ep.in_flight.fetch_sub(1, Ordering::Relaxed);
        // An ignored result says nothing about the endpoint: no sample at all.
        if matches!(outcome, Outcome::Ignored) {
            return;
        }
        let now = self.now();
        let sample = latency.as_nanos() as f64;
        ep.latency.observe(sample, now, s.decay_ns);
        // A failure costs at least the penalty, so an endpoint failing fast looks expensive.
        let cost = match outcome {
            Outcome::Failure => sample.max(s.failure_penalty_ns),
            _ => sample,
        };
        ep.ewma.observe(cost, now, s.decay_ns);
        let samples = ep.samples.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        match outcome {
            Outcome::Failure => {
                ep.streak.store(0, Ordering::Relaxed);
                let failures = ep
                    .failures
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                        Some(f.saturating_add(1))
                    })
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                if failures >= s.consecutive_failures {
                    self.eject(i, Cause::Failures, now);
                }
            }
            Outcome::Success => {
                if ep.failures.load(Ordering::Relaxed) != 0 {
                    ep.failures.store(0, Ordering::Relaxed);
                }
                let streak = ep.streak.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                if streak >= s.recovery_streak {
                    ep.streak.store(0, Ordering::Relaxed);
                    let _ = ep
                        .level
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                            (l > 0).then(|| l - 1)
                        });
                }
            }
            Outcome::Ignored => {}
        }
        if samples >= s.min_samples && self.may_be_latency_outlier(i, now) {
            self.eject(i, Cause::Latency, now);
        }
    }

    /// A lock-free first look: is endpoint `i`'s estimate above `latency_factor` times the
    /// *lowest* qualifying estimate of the others? The median is at least the lowest, so only then
    /// can it be an outlier; [`Shared::eject`] then checks against the median under the lock.
    fn may_be_latency_outlier(&self, i: usize, now: u64) -> bool {
        let s = &self.settings;
        let Some(own) = self.endpoints[i].latency.get() else {
            return false;
        };
        let mut lowest = f64::INFINITY;
        for (j, other) in self.endpoints.iter().enumerate() {
            if j == i
                || other.samples.load(Ordering::Relaxed) < s.min_samples
                || other.is_ejected(now)
            {
                continue;
            }
            if let Some(estimate) = other.latency.get() {
                lowest = lowest.min(estimate);
            }
        }
        lowest.is_finite() && own > s.latency_factor * lowest
    }

    /// The median real-latency estimate of the endpoints other than `i` that are not ejected at
    /// `now` and have at least `min_samples` samples.
    fn median_of_others(&self, i: usize, now: u64, min_samples: u64) -> Option<f64> {
        let mut estimates: Vec<f64> = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|&(j, other)| {
                j != i
                    && !other.is_ejected(now)
                    && other.samples.load(Ordering::Relaxed) >= min_samples
            })
            .filter_map(|(_, other)| other.latency.get())
            .collect();
        if estimates.is_empty() {
            return None;
        }
        estimates.sort_by(f64::total_cmp);
        let mid = estimates.len() / 2;
        Some(if estimates.len().is_multiple_of(2) {
            (estimates[mid - 1] + estimates[mid]) / 2.0
        } else {
            estimates[mid]
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.ejection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ejects endpoint `i` if `cause` still holds and the share of ejected endpoints allows it.
    #[cold]
    fn eject(&self, i: usize, cause: Cause, now: u64) {
        let s = &self.settings;
        let ep = &self.endpoints[i];
        let _guard = self.lock();
        if ep.is_ejected(now) {
            return;
        }
        self.settle(i, now);
        let reason = match cause {
            Cause::Failures => {
                let failures = ep.failures.load(Ordering::Relaxed);
                if failures < s.consecutive_failures {
                    return;
                }
                EjectionReason::ConsecutiveFailures { failures }
            }
            Cause::Latency => {
                if ep.samples.load(Ordering::Relaxed) < s.min_samples {
                    return;
                }
                let (Some(own), Some(median)) = (
                    ep.latency.get(),
                    self.median_of_others(i, now, s.min_samples),
                ) else {
                    return;
                };
                if own <= s.latency_factor * median {
                    return;
                }
                EjectionReason::LatencyOutlier {
                    ewma: Duration::from_nanos(own as u64),
                    median: Duration::from_nanos(median as u64),
                }
            }
        };
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        if ejected >= s.max_ejected {
            return;
        }
        let level = ep.level.load(Ordering::Relaxed).saturating_add(1);
        ep.level.store(level, Ordering::Relaxed);
        let duration = s.base_ejection.saturating_mul(level).min(s.max_ejection);
        ep.readmit_at.store(
            now.saturating_add(nanos(duration)).max(1),
            Ordering::Release,
        );
        ep.pending_readmission.store(true, Ordering::Release);
        ep.ejections.fetch_add(1, Ordering::Relaxed);
        self.events.emit_with(|| BalanceEvent::Ejected {
            balancer: self.name.clone(),
            endpoint: ep.name.clone(),
            reason,
            duration,
            level,
        });
    }

    /// Processes the readmission of endpoint `i` if its ejection has ended: its counters start
    /// afresh, and both its estimates start at the median of the others' real-latency estimates,
    /// so that the ramp and not a stale (or guessed) latency decides its share at first. Called
    /// with the lock held.
    fn settle(&self, i: usize, now: u64) {
        let ep = &self.endpoints[i];
        if !ep.pending_readmission.load(Ordering::Acquire) || ep.is_ejected(now) {
            return;
        }
        ep.pending_readmission.store(false, Ordering::Release);
        let seed = self.median_of_others(i, now, 0);
        ep.ewma.reset(seed, now);
        ep.latency.reset(seed, now);
        ep.samples.store(0, Ordering::Relaxed);
        ep.failures.store(0, Ordering::Relaxed);
        ep.streak.store(0, Ordering::Relaxed);
        self.events.emit_with(|| BalanceEvent::Readmitted {
            balancer: self.name.clone(),
            endpoint: ep.name.clone(),
            ramp_up: self.settings.ramp_up,
        });
    }
}

/// A duration in nanoseconds, saturating (durations in config are capped far below `u64::MAX`).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
