//! The scheduler on paused time, with fake probes (no I/O).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rampart_monitor::probe::{FailureKind, Probe, ProbeFuture, ProbeResult};
use rampart_monitor::scheduler::{Limits, ProbeReport, ScheduledTarget, Scheduler, jitter_offset};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Succeeds after `takes`, counting how many run at once.
struct Sleepy {
    takes: Duration,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Sleepy {
    fn new(takes: Duration) -> Self {
        Self::sharing(takes, &Arc::default(), &Arc::default())
    }
    fn sharing(takes: Duration, running: &Arc<AtomicUsize>, peak: &Arc<AtomicUsize>) -> Self {
        Sleepy {
            takes,
            running: Arc::clone(running),
            peak: Arc::clone(peak),
        }
    }
}

impl Probe for Sleepy {
    fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            // Counted down even if the scheduler cuts the probe off.
            struct Done<'a>(&'a AtomicUsize);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let _done = Done(&self.running);
            tokio::time::sleep(self.takes).await;
            ProbeResult::success(self.takes)
        })
    }
}

fn target(
    name: &str,
    host: &str,
    interval: u64,
    timeout: u64,
    probe: impl Probe + 'static,
) -> ScheduledTarget {
    ScheduledTarget::new(
        name,
        host,
        Duration::from_secs(interval),
        Duration::from_secs(timeout),
        Arc::new(probe),
    )
}

/// Every report that arrives before `until`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<ProbeReport>,
    until: Instant,
) -> Vec<ProbeReport> {
    let mut out = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout_at(until, rx.recv()).await {
        out.push(r);
    }
    out
}

#[test]
fn jitter_offsets_are_deterministic_and_within_the_interval() {
    let interval = Duration::from_secs(30);
    for i in 0..200 {
        let name = format!("target-{i}");
        let offset = jitter_offset(&name, interval);
        assert!(offset < interval);
        assert_eq!(offset, jitter_offset(&name, interval));
    }
    assert_eq!(jitter_offset("x", Duration::ZERO), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn first_runs_are_spread_across_the_interval_by_name() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
    let targets = names
        .iter()
        .map(|n| target(n, n, 10, 1, Sleepy::new(Duration::ZERO)))
        .collect();
    let _scheduler = Scheduler::start(targets, Limits::default(), tx);
    let reports = collect(&mut rx, start + Duration::from_secs(10)).await;
    assert_eq!(
        reports.len(),
        20,
        "each target exactly once in its first interval"
    );
    let mut buckets = [0usize; 10];
    for r in &reports {
        let offset = r.started - start;
        assert_eq!(
            offset,
            jitter_offset(&r.target, Duration::from_secs(10)),
            "{}",
            r.target
        );
        buckets[offset.as_secs() as usize] += 1;
    }
    // 20 targets over 10 one-second buckets: spread, not bunched.
    assert!(
        buckets.iter().filter(|&&b| b > 0).count() >= 6,
        "{buckets:?}"
    );
    assert!(buckets.iter().all(|&b| b <= 5), "{buckets:?}");
}

#[tokio::test(start_paused = true)]
async fn each_target_runs_on_its_own_interval_and_a_slow_probe_delays_no_one() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let targets = vec![
        target("slow", "h", 10, 9, Sleepy::new(Duration::from_secs(9))),
        target("fast", "h", 1, 1, Sleepy::new(Duration::from_millis(10))),
    ];
    let _scheduler = Scheduler::start(targets, Limits::default(), tx);
    let reports = collect(&mut rx, start + Duration::from_secs(30)).await;
    let fast: Vec<&ProbeReport> = reports.iter().filter(|r| r.target == "fast").collect();
    let offset = jitter_offset("fast", Duration::from_secs(1));
    assert_eq!(fast.len(), 30, "fast ran every second while slow ran");
    for (k, r) in fast.iter().enumerate() {
        assert_eq!(
            r.started - start,
            offset + Duration::from_secs(k as u64),
            "probe {k}"
        );
        assert_eq!(r.started, r.scheduled, "never waited");
    }
    let slow: Vec<&ProbeReport> = reports.iter().filter(|r| r.target == "slow").collect();
    assert!(slow.len() >= 2, "{}", slow.len());
    for pair in slow.windows(2) {
        assert_eq!(pair[1].started - pair[0].started, Duration::from_secs(10));
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_hangs_is_cut_off_at_its_timeout_and_never_overlaps_itself() {
    struct Hangs(Arc<AtomicUsize>);
    impl Probe for Hangs {
        fn probe(&self, _timeout: Duration) -> ProbeFuture<'_> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let _scheduler = Scheduler::start(
        vec![target("stuck", "h", 2, 2, Hangs(Arc::clone(&calls)))],
        Limits::default(),
        tx,
    );
    let reports = collect(&mut rx, start + Duration::from_secs(9)).await;
    assert!(!reports.is_empty());
    for r in &reports {
        assert_eq!(r.result.failure_kind(), Some(FailureKind::Timeout));
        assert_eq!(r.result.latency, Duration::from_secs(2));
    }
    // Each probe ends exactly at its timeout, which is also the next tick; at most one ran
    // per tick.
    assert!(
        calls.load(Ordering::SeqCst) <= 5,
        "{}",
        calls.load(Ordering::SeqCst)
    );
}

#[tokio::test(start_paused = true)]
async fn global_and_per_host_limits_bound_concurrency() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let (running, peak) = (Arc::default(), Arc::default());
    let targets = (0..6)
        .map(|i| {
            let p = Sleepy::sharing(Duration::from_secs(3), &running, &peak);
            target(&format!("t{i}"), &format!("host{}", i % 3), 5, 5, p)
        })
        .collect();
    let _scheduler = Scheduler::start(targets, Limits::new(2, 4), tx);
    let reports = collect(&mut rx, start + Duration::from_secs(30)).await;
    assert!(reports.len() >= 8, "{}", reports.len());
    assert_eq!(peak.load(Ordering::SeqCst), 2, "at most 2 at once overall");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let (running, peak) = (Arc::default(), Arc::default());
    let targets = (0..4)
        .map(|i| {
            target(
                &format!("t{i}"),
                "one-host",
                5,
                5,
                Sleepy::sharing(Duration::from_secs(3), &running, &peak),
            )
        })
        .collect();
    let _scheduler = Scheduler::start(targets, Limits::new(64, 1), tx);
    let reports = collect(&mut rx, start + Duration::from_secs(30)).await;
    assert!(reports.len() >= 5, "{}", reports.len());
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "at most 1 at once against one host"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_scheduler_stops_every_probe() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let scheduler = Scheduler::start(
        vec![target("a", "h", 1, 1, Sleepy::new(Duration::ZERO))],
        Limits::default(),
        tx,
    );
    assert!(rx.recv().await.is_some());
    drop(scheduler);
    // Every sender was owned by the scheduler's tasks: the channel closes.
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn stop_lets_the_probe_in_flight_finish_within_the_deadline_and_starts_no_more() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    // Interval 10 s, first probe at the jitter offset, each taking 3 s.
    let t = target("api", "h:1", 10, 5, Sleepy::new(Duration::from_secs(3)));
    let first = start + jitter_offset("api", Duration::from_secs(10));
    let scheduler = Scheduler::start(vec![t], Limits::default(), tx);
    tokio::time::sleep_until(first + Duration::from_secs(1)).await;
    scheduler
        .stop(Instant::now() + Duration::from_secs(5))
        .await;
    // The probe in flight finished (2 s later) and its result was sent; the channel is closed.
    assert_eq!(Instant::now(), first + Duration::from_secs(3));
    assert!(rx.recv().await.unwrap().result.is_success());
    assert!(rx.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_a_probe_still_running_at_the_deadline() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let t = target("api", "h:1", 10, 5, Sleepy::new(Duration::from_secs(3)));
    let first = start + jitter_offset("api", Duration::from_secs(10));
    let scheduler = Scheduler::start(vec![t], Limits::default(), tx);
    tokio::time::sleep_until(first + Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    scheduler.stop(deadline).await;
    assert_eq!(Instant::now(), deadline);
    assert!(
        rx.recv().await.is_none(),
        "no result from the cancelled probe"
    );
}

#[tokio::test(start_paused = true)]
async fn targets_added_and_removed_while_running_leave_the_others_alone() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let stays = || target("stays", "h", 2, 1, Sleepy::new(Duration::from_millis(10)));
    let goes = target("goes", "h", 2, 1, Sleepy::new(Duration::from_millis(10)));
    let mut scheduler = Scheduler::start(vec![stays(), goes], Limits::default(), tx);
    let before = collect(&mut rx, start + Duration::from_secs(10)).await;
    assert_eq!(before.iter().filter(|r| r.target == "goes").count(), 5);

    assert!(scheduler.remove("goes"));
    assert!(!scheduler.remove("goes"));
    let added_at = Instant::now();
    scheduler.add(target("new", "h2", 2, 1, Sleepy::new(Duration::ZERO)));
    let mut names: Vec<&str> = scheduler.targets().collect();
    names.sort_unstable();
    assert_eq!(names, ["new", "stays"]);
    let after = collect(&mut rx, start + Duration::from_secs(20)).await;
    assert!(after.iter().all(|r| r.target != "goes"), "{after:?}");
    let new: Vec<_> = after.iter().filter(|r| r.target == "new").collect();
    assert_eq!(
        new[0].started - added_at,
        jitter_offset("new", Duration::from_secs(2)),
        "the first run after its offset from when it was added"
    );
    // The target that stayed kept its rhythm: every 2 s from its first run, across the change.
    let first = start + jitter_offset("stays", Duration::from_secs(2));
    let stays: Vec<Instant> = before
        .iter()
        .chain(&after)
        .filter(|r| r.target == "stays")
        .map(|r| r.started)
        .collect();
    assert_eq!(stays.len(), 10);
    for (k, at) in stays.iter().enumerate() {
        assert_eq!(*at, first + Duration::from_secs(2 * k as u64));
    }
    assert_eq!(scheduler.skipped(), 0);
}
