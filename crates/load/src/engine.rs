//! Running a scenario: the open model's scheduler and connections, the closed model's virtual
//! users, the per-second rollup and threshold judging.
//!
//! Open model: a dispatcher thread computes each iteration's intended send time from the
//! [`Schedule`](crate::schedule::Schedule) and, at that time, puts it on a queue; workers take
//! iterations off the queue in order: over HTTP/1.1 `connections` workers, each owning one
//! kept-alive connection per host; over HTTP/2 `streams` workers per connection, sharing it. When
//! every worker is busy the iteration waits in the queue and its latency, counted from the intended
//! time, grows with the wait, as it would for a real user (wrk2's coordinated-omission correction).
//! Service time is counted from the actual send. When the queue already holds `max_queue`
//! iterations, new ones are dropped and counted as errors of kind `dropped`.
//!
//! Closed model: `peak` virtual users, user `i` active while the schedule's target exceeds `i`;
//! each loops iteration, think time. Latency and service time are the same.
//!
//! An iteration sends the scenario's requests in order and stops at the first that fails (later
//! ones may need its extracted values). After the last second is due, in-flight work may finish
//! within the request timeout; what is still queued then is counted as dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until, timeout};

use crate::config::{Model, Scenario, Target};
use crate::db::Pools;
use crate::error::LoadError;
use crate::http::{Conns, H2Group, HttpVersion};
use crate::judge::Judge;
use crate::record::{ErrorKind, Recorder, Rollup, SecondRow};
use crate::report::{Report, RequestReport};
use crate::template::Vars;

/// What the engine tells its caller once a second.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Progress {
    /// Time since the start.
    pub elapsed: Duration,
    /// The planned length of the run.
    pub planned: Duration,
    /// The second just finished.
    pub row: SecondRow,
    /// Requests completed so far.
    pub count: u64,
    /// Requests failed or dropped so far.
    pub errors: u64,
    /// True if a threshold is failing now.
    pub failing: bool,
}

/// Checks that every host of the scenario accepts a TCP connection, within `limit` each.
pub async fn preflight(scenario: &Scenario, limit: Duration) -> Result<(), LoadError> {
    for authority in scenario.authorities() {
        match timeout(limit, tokio::net::TcpStream::connect(&authority)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(LoadError::Unreachable {
                    target: authority,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(LoadError::Unreachable {
                    target: authority,
                    reason: format!("no answer within {limit:?}"),
                });
            }
        }
    }
    Ok(())
}

struct Shared {
    scenario: Arc<Scenario>,
    pools: Pools,
    recorder: Arc<Recorder>,
    iterations: AtomicU64,
}

impl Shared {
    /// One iteration: the requests in order, the first one due at `intended`.
    async fn iterate(&self, conns: &mut Conns, vars: &mut Vars, intended: Instant) {
        vars.clear();
        if let Some(data) = &self.scenario.data {
            let i = self.iterations.fetch_add(1, Ordering::Relaxed);
            data.fill(i as usize, vars);
        }
        let mut due = intended;
        for (idx, spec) in self.scenario.requests.iter().enumerate() {
            let limit = self.scenario.timeout;
            let sent = if spec.target == Target::Http {
                conns.send(spec, vars, limit).await
            } else {
                self.pools.send(spec, vars, limit).await
            };
            let done = Instant::now();
            self.recorder
                .record(idx, done - due, done - sent.started, sent.error);
            if sent.error.is_some() {
                break;
            }
            due = done;
        }
    }
}

fn spawn_open(
    set: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    start: Instant,
    connections: usize,
    streams: usize,
    max_queue: usize,
) -> (Arc<Mutex<mpsc::Receiver<Instant>>>, Scheduler) {
    let (tx, rx) = mpsc::channel::<Instant>(max_queue);
    let rx = Arc::new(Mutex::new(rx));
    let scheduler = Scheduler::spawn(
        shared.scenario.schedule.clone(),
        start,
        tx,
        Arc::clone(&shared.recorder),
    );
    // HTTP/1.1: one worker per connection. HTTP/2: `streams` workers share each connection.
    let h2 = shared.scenario.http == HttpVersion::Http2;
    for _ in 0..connections {
        let group = h2.then(|| Arc::new(H2Group::default()));
        for _ in 0..streams.max(1) {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(shared);
            let group = group.clone();
            set.spawn(async move {
                let (mut conns, mut vars) = (Conns::new(group), Vars::default());
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some(intended) = job else { break };
                    shared.iterate(&mut conns, &mut vars, intended).await;
                }
            });
        }
    }
    (rx, scheduler)
}

/// The open model's dispatcher: a thread of its own that puts each iteration on the queue at its
/// intended send time. A thread, not a task: the runtime's timer rounds every sleep up to the next
/// millisecond, which would make every request up to a millisecond late and count that lateness
/// as latency; a thread's sleep wakes within tens of microseconds, so requests go out at most
/// about a quarter of a millisecond late (see [`Scheduler::MIN_SLEEP`]). The schedule itself is pure
/// ([`Schedule::send_time`](crate::schedule::Schedule::send_time)) and tested on its own.
struct Scheduler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// The longest single sleep, so that a stop is noticed soon.
    const SLICE: Duration = Duration::from_millis(20);
    /// The shortest sleep: at high rates, waking for every request would cost a context switch
    /// each (tens of thousands a second); sleeping at least this long sends what fell due in a
    /// burst, each request at most this late (plus the kernel's timer slack, about 50 µs).
    const MIN_SLEEP: Duration = Duration::from_micros(200);

    fn spawn(
        schedule: crate::schedule::Schedule,
        start: Instant,
        tx: mpsc::Sender<Instant>,
        recorder: Arc<Recorder>,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let start_std = start.into_std();
        let thread = std::thread::Builder::new()
            .name("rampart-load-scheduler".to_owned())
            .spawn(move || {
                for k in 0..schedule.total() {
                    let Some(offset) = schedule.send_time(k) else {
                        break;
                    };
                    let at = start_std + offset;
                    loop {
                        if stopped.load(Ordering::Relaxed) {
                            return;
                        }
                        let now = std::time::Instant::now();
                        if now >= at {
                            break;
                        }
                        std::thread::sleep((at - now).clamp(Self::MIN_SLEEP, Self::SLICE));
                    }
                    match tx.try_send(Instant::from_std(at)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => recorder.record_dropped(0),
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            })
            .ok();
        // Without a thread (the system refused one) the queue is closed at once and the run
        // ends empty, which its report shows.
        Scheduler { stop, thread }
    }

    /// Stops the thread and waits for it (at most one sleep slice).
    async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_closed(set: &mut JoinSet<()>, shared: &Arc<Shared>, start: Instant, think: Duration) {
    let schedule = shared.scenario.schedule.clone();
    let end = start + schedule.duration();
    let users = schedule.peak().round() as usize;
    for user in 0..users {
        let shared = Arc::clone(shared);
        let schedule = schedule.clone();
        let group =
            (shared.scenario.http == HttpVersion::Http2).then(|| Arc::new(H2Group::default()));
        set.spawn(async move {
            let (mut conns, mut vars) = (Conns::new(group), Vars::default());
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if (user as f64) + 0.5 >= schedule.target_at(now - start) {
                    // Not active now: look again shortly (stages ramp users in and out).
                    sleep_until((now + Duration::from_millis(20)).min(end)).await;
                    continue;
                }
                shared.iterate(&mut conns, &mut vars, now).await;
                if !think.is_zero() {
                    sleep_until((Instant::now() + think).min(end)).await;
                }
            }
        });
    }
}

/// Runs `scenario`, calling `on_progress` once a second, and returns the report. Does not check
/// reachability first: call [`preflight`] for that.
pub async fn run(scenario: Scenario, mut on_progress: impl FnMut(&Progress)) -> Report {
    let scenario = Arc::new(scenario);
    let names: Vec<String> = scenario.requests.iter().map(|r| r.name.clone()).collect();
    let recorder = Arc::new(Recorder::new(names.clone()));
    let mut judge = Judge::new(&scenario.thresholds, &names);
    let mut rollup = Rollup::new(&recorder, judge.longest_window());
    let concurrency = match scenario.model {
        Model::Open { connections, .. } => connections,
        Model::Closed { .. } => scenario.schedule.peak().round() as usize,
    };
    let shared = Arc::new(Shared {
        pools: Pools::build(&scenario, concurrency),
        scenario: Arc::clone(&scenario),
        recorder: Arc::clone(&recorder),
        iterations: AtomicU64::new(0),
    });
    let planned = scenario.schedule.duration();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let start = Instant::now();
    let mut set = JoinSet::new();
    let (open, queue, scheduler) = match scenario.model {
        Model::Open {
            connections,
            streams,
            max_queue,
        } => {
            let (queue, scheduler) =
                spawn_open(&mut set, &shared, start, connections, streams, max_queue);
            (true, Some(queue), Some(scheduler))
        }
        Model::Closed { think } => {
            spawn_closed(&mut set, &shared, start, think);
            (false, None, None)
        }
    };
    // In-flight work may finish within one request timeout per request after the plan ends.
    let requests = u32::try_from(scenario.requests.len()).unwrap_or(u32::MAX);
    let deadline = start + planned + scenario.timeout * requests + Duration::from_millis(100);
    let mut ticks = interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_tick = start;
    let mut aborted = false;
    loop {
        tokio::select! {
            biased;
            done = set.join_next() => {
                if done.is_none() {
                    break;
                }
            }
            at = ticks.tick() => {
                let length = (at - last_tick).as_secs_f64();
                last_tick = at;
                let row = rollup.tick(&recorder, at - start, length).clone();
                let failing = judge.on_tick(&rollup, (at - start).as_secs_f64());
                let total = rollup.total(None);
                on_progress(&Progress {
                    elapsed: at - start,
                    planned,
                    row,
                    count: total.latency.count,
                    errors: total.errors(),
                    failing,
                });
                if failing && scenario.abort_on_fail {
                    aborted = true;
                    break;
                }
            }
            _ = sleep_until(deadline) => break,
        }
    }
    set.abort_all();
    while set.join_next().await.is_some() {}
    if let Some(scheduler) = scheduler {
        scheduler.finish().await;
    }
    if let Some(queue) = queue {
        // Iterations still queued were never sent.
        let mut rx = queue.lock().await;
        while rx.try_recv().is_ok() {
            recorder.record_dropped(0);
        }
    }
    shared.pools.close(Duration::from_millis(100)).await;
    let now = Instant::now();
    if now > last_tick {
        rollup.tick(&recorder, now - start, (now - last_tick).as_secs_f64());
    }
    let thresholds = judge.results(&rollup);
    let requests: Vec<RequestReport> = names
        .iter()
        .enumerate()
        .map(|(i, n)| RequestReport::of(n, &rollup.total(Some(i)), open, kinds(&recorder, i)))
        .collect();
    let mut all_kinds = std::collections::BTreeMap::new();
    for r in &requests {
        for (k, v) in &r.errors_by_kind {
            *all_kinds.entry(k.clone()).or_insert(0) += v;
        }
    }
    let total = RequestReport::of("all", &rollup.total(None), open, all_kinds);
    Report {
        schema: 1,
        model: if open { "open" } else { "closed" }.to_owned(),
        started_unix,
        duration_s: (now - start).as_secs_f64(),
        planned_s: planned.as_secs_f64(),
        aborted,
        passed: thresholds.iter().all(|t| t.passed),
        requests,
        total,
        thresholds,
        series: rollup.into_series(),
        comparison: None,
    }
}

fn kinds(rec: &Recorder, i: usize) -> std::collections::BTreeMap<String, u64> {
    rec.errors_by_kind(i)
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(k, n): (ErrorKind, u64)| (k.as_str().to_owned(), n))
        .collect()
}
