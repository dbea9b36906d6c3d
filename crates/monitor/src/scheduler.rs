//! The scheduler: runs each target's probe on its own interval, spread out, within limits.
//!
//! - Each target's first probe runs after a deterministic offset in `[0, interval)` taken from a
//!   hash of its name ([`jitter_offset`]), so targets with the same interval do not all fire at
//!   once, and a restart keeps the same rhythm.
//! - Each probe runs in its own task, bounded by the target's timeout: a slow probe never delays
//!   another target's. A target never has two probes in flight; a tick that finds the previous
//!   one still running is skipped.
//! - A global limit and a per-host limit (tokio semaphores) bound how many probes run at once.
//! - Results go out on a channel as [`ProbeReport`]s.
//! - Targets can be [added](Scheduler::add) and [removed](Scheduler::remove) while it runs;
//!   the others keep their rhythm.
//!
//! All time comes from `tokio::time`, so the schedule can be tested on paused time.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rampart_monitor::probe::{Probe, ProbeFuture, ProbeResult};
//! use rampart_monitor::scheduler::{Limits, ScheduledTarget, Scheduler, jitter_offset};
//!
//! struct AlwaysUp;
//! impl Probe for AlwaysUp {
//!     fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
//!         Box::pin(async { ProbeResult::success(Duration::from_millis(1)) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let start = tokio::time::Instant::now();
//! let target = ScheduledTarget::new("api", "api:80", Duration::from_secs(10), Duration::from_secs(1), Arc::new(AlwaysUp));
//! let _scheduler = Scheduler::start(vec![target], Limits::default(), tx);
//! let report = rx.recv().await.unwrap();
//! assert_eq!(report.target, "api");
//! assert_eq!(report.started - start, jitter_offset("api", Duration::from_secs(10)));
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::probe::{FailureKind, Probe, ProbeResult};

/// A target as the scheduler sees it.
#[derive(Clone)]
#[non_exhaustive]
pub struct ScheduledTarget {
    /// The target's name.
    pub name: String,
    /// The `host:port` its probe connects to, for the per-host limit.
    pub host: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// The check to run.
    pub probe: Arc<dyn Probe>,
    /// Which run of this name it is, so the monitor can tell a stale result of a replaced
    /// target from a current one.
    pub(crate) generation: u64,
}

impl ScheduledTarget {
    /// A target named `name` probed by `probe` every `interval`, each probe bounded by `timeout`.
    pub fn new(
        name: impl Into<String>,
        host: impl Into<String>,
        interval: Duration,
        timeout: Duration,
        probe: Arc<dyn Probe>,
    ) -> Self {
        ScheduledTarget {
            name: name.into(),
            host: host.into(),
            interval,
            timeout,
            probe,
            generation: 0,
        }
    }

    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }
}

impl std::fmt::Debug for ScheduledTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledTarget")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How many probes may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Across all targets (default 64).
    pub max_concurrent: usize,
    /// Against one `host:port` (default 4).
    pub max_per_host: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 64,
            max_per_host: 4,
        }
    }
}

impl Limits {
    /// Limits of `max_concurrent` overall and `max_per_host` per host (each at least 1).
    pub fn new(max_concurrent: usize, max_per_host: usize) -> Self {
        Limits {
            max_concurrent: max_concurrent.max(1),
            max_per_host: max_per_host.max(1),
        }
    }
}

/// One probe's result, with when it was due and when it started.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The target's name.
    pub target: String,
    /// When the tick fired.
    pub scheduled: Instant,
    /// When the probe started (after waiting for the limits).
    pub started: Instant,
    /// What it found.
    pub result: ProbeResult,
    /// The generation of the target that produced it (see [`ScheduledTarget`]).
    pub(crate) generation: u64,
}

/// A report handed over with an acknowledgement: the probe's task (and so its target's next run)
/// waits until the receiver has dealt with the report, or dropped it.
pub(crate) struct Delivery {
    pub(crate) report: ProbeReport,
    pub(crate) ack: oneshot::Sender<()>,
}

/// Where reports go.
#[derive(Clone)]
enum Sink {
    /// Sent and forgotten.
    Unbounded(mpsc::UnboundedSender<ProbeReport>),
    /// Sent with an acknowledgement the probe's task waits for.
    Acked(mpsc::Sender<Delivery>),
}

impl Sink {
    async fn send(&self, report: ProbeReport) {
        match self {
            Sink::Unbounded(tx) => {
                let _ = tx.send(report);
            }
            Sink::Acked(tx) => {
                let (ack, acked) = oneshot::channel();
                if tx.send(Delivery { report, ack }).await.is_ok() {
                    // An error means the receiver dropped the report: done all the same.
                    let _ = acked.await;
                }
            }
        }
    }
}

/// The offset of a target's first probe: a hash of its name (FNV-1a) reduced into
/// `[0, interval)`, in whole milliseconds (the resolution of tokio's timer). The same name always
/// gets the same offset.
pub fn jitter_offset(name: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let millis = interval.as_millis().max(1);
    Duration::from_millis((u128::from(hash) % millis) as u64)
}

/// Runs the probes of a set of targets until dropped (dropping it stops every probe).
pub struct Scheduler {
    tasks: HashMap<String, JoinHandle<()>>,
    stop: watch::Sender<bool>,
    limits: Limits,
    global: Arc<Semaphore>,
    hosts: HashMap<String, Arc<Semaphore>>,
    sink: Sink,
    skipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("targets", &self.tasks.len())
            .field("limits", &self.limits)
            .field("skipped", &self.skipped())
            .finish_non_exhaustive()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

impl Scheduler {
    /// Starts probing `targets`, sending each result to `results`. Must be called inside a tokio
    /// runtime.
    pub fn start(
        targets: Vec<ScheduledTarget>,
        limits: Limits,
        results: mpsc::UnboundedSender<ProbeReport>,
    ) -> Self {
        Self::with_sink(targets, limits, Sink::Unbounded(results))
    }

    /// Like [`start`](Self::start), each report acknowledged: a target's next run is skipped
    /// (and counted) until its previous report was acknowledged, so `results` never holds more
    /// than one report per target.
    pub(crate) fn start_acked(
        targets: Vec<ScheduledTarget>,
        limits: Limits,
        results: mpsc::Sender<Delivery>,
    ) -> Self {
        Self::with_sink(targets, limits, Sink::Acked(results))
    }

    fn with_sink(targets: Vec<ScheduledTarget>, limits: Limits, sink: Sink) -> Self {
        let (stop, _) = watch::channel(false);
        let mut scheduler = Scheduler {
            tasks: HashMap::new(),
            stop,
            limits,
            global: Arc::new(Semaphore::new(limits.max_concurrent)),
            hosts: HashMap::new(),
            sink,
            skipped: Arc::new(AtomicU64::new(0)),
        };
        for target in targets {
            scheduler.add(target);
        }
        scheduler
    }

    /// Starts probing `target`, its first probe after its [`jitter_offset`] from now. A target
    /// of the same name is [removed](Self::remove) first.
    pub fn add(&mut self, target: ScheduledTarget) {
        self.remove(&target.name);
        let host = Arc::clone(
            self.hosts
                .entry(target.host.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_per_host))),
        );
        let first = Instant::now() + jitter_offset(&target.name, target.interval);
        let slots = Slots {
            global: Arc::clone(&self.global),
            host,
        };
        let run = Run {
            slots,
            sink: self.sink.clone(),
            stopped: self.stop.subscribe(),
            skipped: Arc::clone(&self.skipped),
        };
        let name = target.name.clone();
        let task = tokio::spawn(run_target(target, first, run));
        self.tasks.insert(name, task);
    }

    /// Stops probing the target named `name` at once: its probe in flight, if any, is cancelled
    /// and sends nothing more. `false` if there was no such target.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.tasks.remove(name) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// The names of the targets being probed, in no particular order.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// Ticks skipped since the start because the target's previous probe was still running
    /// (or, for a monitor, its result was not yet stored).
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(crate) fn skipped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.skipped)
    }

    /// Stops scheduling: no new probe starts; probes in flight may finish until `until`, when
    /// the rest are cancelled. Returns once every target's loop has ended, so every result
    /// produced has been sent.
    pub async fn stop(mut self, until: Instant) {
        let _ = self.stop.send(true);
        for (_, mut task) in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

#[derive(Clone)]
struct Slots {
    global: Arc<Semaphore>,
    host: Arc<Semaphore>,
}

/// What a target's loop shares with the scheduler.
struct Run {
    slots: Slots,
    sink: Sink,
    stopped: watch::Receiver<bool>,
    skipped: Arc<AtomicU64>,
}

/// One target's loop: a tick per interval, each tick's probe in its own task. The probe tasks
/// live in a `JoinSet` owned by this loop, so aborting the loop stops them too.
async fn run_target(target: ScheduledTarget, first: Instant, run: Run) {
    let Run {
        slots,
        sink,
        mut stopped,
        skipped,
    } = run;
    let mut ticks = tokio::time::interval_at(first, target.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut in_flight = JoinSet::new();
    loop {
        let scheduled = tokio::select! {
            biased;
            // A closed channel means the scheduler is gone: stop all the same.
            _ = stopped.wait_for(|&stop| stop) => break,
            scheduled = ticks.tick() => scheduled,
        };
        while in_flight.try_join_next().is_some() {}
        if !in_flight.is_empty() {
            skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let target = target.clone();
        let slots = slots.clone();
        let sink = sink.clone();
        in_flight.spawn(async move {
            let (started, result) = {
                // Host first: a probe waiting for a busy host must not hold a global slot that
                // a probe of another host could use. Both are released before the report is
                // handed over, so a slow receiver holds no slot.
                let (Ok(_host), Ok(_global)) =
                    (slots.host.acquire().await, slots.global.acquire().await)
                else {
                    return;
                };
                let started = Instant::now();
                let result =
                    match tokio::time::timeout(target.timeout, target.probe.probe(target.timeout))
                        .await
                    {
                        Ok(result) => result,
                        // The probe should have stopped itself; this is the backstop.
                        Err(_) => ProbeResult::failure(
                            FailureKind::Timeout,
                            format!("probe did not finish within {:?}", target.timeout),
                            started.elapsed(),
                        ),
                    };
                (started, result)
            };
            sink.send(ProbeReport {
                target: target.name,
                scheduled,
                started,
                result,
                generation: target.generation,
            })
            .await;
        });
    }
    // Stopping: let the probe in flight finish (the caller bounds how long).
    while in_flight.join_next().await.is_some() {}
}
