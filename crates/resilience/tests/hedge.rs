//! Hedging through its public API, on paused time.

// Helpers outside `#[test]` functions unwrap like the tests themselves; clippy only exempts the latter.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rampart_resilience::hedge::{Hedge, HedgeConfig, HedgeLayer};
use rampart_resilience::{Event, Events};
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt};

fn hedge(toml: &str) -> Hedge {
    hedge_with(toml, &Events::new())
}

fn hedge_with(toml: &str, events: &Events) -> Hedge {
    let config: HedgeConfig = toml::from_str(toml).unwrap();
    config.build("search", events).unwrap()
}

/// What happened to each attempt of one call.
#[derive(Default)]
struct Attempts {
    started: Mutex<Vec<Duration>>,
    finished: Mutex<Vec<u32>>,
    dropped: Mutex<Vec<u32>>,
    count: AtomicU32,
}

/// Records its attempt as dropped unless it finished.
struct Guard {
    attempts: Arc<Attempts>,
    attempt: u32,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let list = if self.finished {
            &self.attempts.finished
        } else {
            &self.attempts.dropped
        };
        list.lock().unwrap().push(self.attempt);
    }
}

/// A call whose attempt `n` takes `latency(n)` and then returns `outcome(n)`.
fn attempt_fn(
    attempts: &Arc<Attempts>,
    origin: Instant,
    latency: impl Fn(u32) -> u64,
    outcome: impl Fn(u32) -> Result<u32, String>,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, String>> + Send>> {
    let attempts = attempts.clone();
    move || {
        let attempt = attempts.count.fetch_add(1, Ordering::SeqCst) + 1;
        attempts.started.lock().unwrap().push(origin.elapsed());
        let guard = Guard {
            attempts: attempts.clone(),
            attempt,
            finished: false,
        };
        let wait = Duration::from_millis(latency(attempt));
        let result = outcome(attempt);
        Box::pin(async move {
            let mut guard = guard;
            sleep(wait).await;
            guard.finished = true;
            result
        })
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn slow_first_attempt_is_hedged_after_the_delay_and_the_hedge_wins() {
    let events = Events::new();
    let (_subscription, mut seen) = events.channel();
    let hedge = hedge_with("delay = \"50ms\"\nmax_hedge_ratio = 1.0", &events);
    let attempts = Arc::new(Attempts::default());
    let origin = Instant::now();
    let f = attempt_fn(&attempts, origin, |n| if n == 1 { 1000 } else { 10 }, Ok);

    let answer = hedge.call(f).await;

    assert_eq!(answer.unwrap(), 2, "the hedge's result is returned");
    assert_eq!(origin.elapsed(), ms(60));
    assert_eq!(*attempts.started.lock().unwrap(), [ms(0), ms(50)]);
    assert_eq!(*attempts.finished.lock().unwrap(), [2]);
    assert_eq!(
        *attempts.dropped.lock().unwrap(),
        [1],
        "the slow attempt is dropped"
    );
    let stats = hedge.stats();
    assert_eq!((stats.calls, stats.hedges, stats.hedge_wins), (1, 1, 1));
    assert_eq!(stats.current_delay, Some(ms(50)));
    assert_eq!(
        seen.try_recv().unwrap(),
        Event::Hedge {
            name: "search".into(),
            attempt: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn fast_call_is_never_hedged() {
    let hedge = hedge("delay = \"50ms\"\nmax_hedge_ratio = 1.0");
    let attempts = Arc::new(Attempts::default());
    let origin = Instant::now();
    for _ in 0..5 {
        let f = attempt_fn(&attempts, origin, |_| 49, Ok);
        hedge.call(f).await.unwrap();
    }
    assert_eq!(attempts.count.load(Ordering::SeqCst), 5);
    assert!(attempts.dropped.lock().unwrap().is_empty());
    assert_eq!(hedge.stats().hedges, 0);
}

#[tokio::test(start_paused = true)]
async fn max_hedges_is_honoured() {
    let events = Events::new();
    let (_subscription, mut seen) = events.channel();
    let hedge = hedge_with(
        "delay = \"50ms\"\nmax_hedges = 2\nmax_hedge_ratio = 1.0",
        &events,
    );
    let attempts = Arc::new(Attempts::default());
    let origin = Instant::now();
    let f = attempt_fn(&attempts, origin, |_| 1000, Ok);

    assert_eq!(
        hedge.call(f).await.unwrap(),
        1,
        "the first attempt finishes first"
    );
    assert_eq!(origin.elapsed(), ms(1000));
    assert_eq!(*attempts.started.lock().unwrap(), [ms(0), ms(50), ms(100)]);
    let mut dropped = attempts.dropped.lock().unwrap().clone();
    dropped.sort_unstable();
    assert_eq!(dropped, [2, 3]);
    let stats = hedge.stats();
    assert_eq!((stats.hedges, stats.hedge_wins), (2, 0));
    let hedge_events: Vec<u32> = std::iter::from_fn(|| seen.try_recv().ok())
        .filter_map(|e| match e {
            Event::Hedge { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(hedge_events, [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn hedge_ratio_cap_is_honoured() {
    let hedge = hedge("delay = \"10ms\"\nmax_hedge_ratio = 0.1");
    let origin = Instant::now();
    for _ in 0..50 {
        let attempts = Arc::new(Attempts::default());
        let f = attempt_fn(&attempts, origin, |_| 100, Ok);
        hedge.call(f).await.unwrap();
    }
    // One hedge in hand at start, then one per ten calls: calls 1, 10, 20, 30, 40 and 50.
    let stats = hedge.stats();
    assert_eq!((stats.calls, stats.hedges), (50, 6));
}

#[tokio::test(start_paused = true)]
async fn percentile_mode_waits_for_samples_then_hedges_at_the_observed_latency() {
    let hedge = hedge("percentile = 90.0\nmin_samples = 20\nmax_hedge_ratio = 1.0");
    assert_eq!(hedge.stats().current_delay, None);
    let origin = Instant::now();

    // Warming up: even a slow call is not hedged.
    let attempts = Arc::new(Attempts::default());
    hedge
        .call(attempt_fn(&attempts, origin, |_| 500, Ok))
        .await
        .unwrap();
    assert_eq!(attempts.count.load(Ordering::SeqCst), 1);

    for _ in 0..19 {
        let attempts = Arc::new(Attempts::default());
        hedge
            .call(attempt_fn(&attempts, origin, |_| 20, Ok))
            .await
            .unwrap();
    }
    assert_eq!(hedge.stats().current_delay, Some(ms(20)));

    let attempts = Arc::new(Attempts::default());
    let start = Instant::now();
    let f = attempt_fn(&attempts, start, |n| if n == 1 { 500 } else { 5 }, Ok);
    assert_eq!(hedge.call(f).await.unwrap(), 2);
    assert_eq!(*attempts.started.lock().unwrap(), [ms(0), ms(20)]);
    assert_eq!(start.elapsed(), ms(25));
    assert_eq!(hedge.stats().hedges, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_waits_for_the_hedge_still_running() {
    let hedge = hedge("delay = \"50ms\"\nmax_hedge_ratio = 1.0");
    let attempts = Arc::new(Attempts::default());
    let origin = Instant::now();
    let f = attempt_fn(
        &attempts,
        origin,
        |n| if n == 1 { 80 } else { 50 },
        |n| if n == 1 { Err("first".into()) } else { Ok(n) },
    );
    assert_eq!(hedge.call(f).await.unwrap(), 2);
    assert_eq!(origin.elapsed(), ms(100));
    assert_eq!(hedge.stats().hedge_wins, 1);
}

#[tokio::test(start_paused = true)]
async fn returns_the_error_when_every_started_attempt_failed() {
    let hedge = hedge("delay = \"50ms\"\nmax_hedge_ratio = 1.0");
    let attempts = Arc::new(Attempts::default());
    let origin = Instant::now();
    let f = attempt_fn(&attempts, origin, |_| 10, |n| Err(format!("attempt {n}")));
    let error = hedge.call(f).await.unwrap_err();
    assert_eq!(error.into_inner().as_deref(), Some("attempt 1"));
    assert_eq!(
        origin.elapsed(),
        ms(10),
        "a failure does not wait for a hedge"
    );
    assert_eq!(attempts.count.load(Ordering::SeqCst), 1);

    let attempts = Arc::new(Attempts::default());
    let f = attempt_fn(
        &attempts,
        origin,
        |n| if n == 1 { 70 } else { 40 },
        |n| Err(format!("attempt {n}")),
    );
    let error = hedge.call(f).await.unwrap_err();
    assert_eq!(
        error.into_inner().as_deref(),
        Some("attempt 2"),
        "the last error"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_midway_drops_every_attempt() {
    let hedge = hedge("delay = \"50ms\"\nmax_hedge_ratio = 1.0");
    let attempts = Arc::new(Attempts::default());
    let origin = Instant::now();
    let f = attempt_fn(&attempts, origin, |_| 1000, Ok);
    let outcome = tokio::time::timeout(ms(70), hedge.call(f)).await;
    assert!(outcome.is_err());
    let mut dropped = attempts.dropped.lock().unwrap().clone();
    dropped.sort_unstable();
    assert_eq!(dropped, [1, 2]);
    assert!(attempts.finished.lock().unwrap().is_empty());
    let stats = hedge.stats();
    assert_eq!((stats.calls, stats.hedges, stats.hedge_wins), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn layer_hedges_with_a_clone_of_the_request() {
    let hedge = hedge("delay = \"50ms\"\nmax_hedge_ratio = 1.0");
    let calls = Arc::new(AtomicU32::new(0));
    let first_dropped = Arc::new(AtomicBool::new(false));
    let (c, d) = (calls.clone(), first_dropped.clone());
    let inner = tower::service_fn(move |query: &'static str| {
        let attempt = c.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = DropFlag(if attempt == 1 { Some(d.clone()) } else { None });
        async move {
            let _guard = guard;
            sleep(if attempt == 1 { ms(1000) } else { ms(5) }).await;
            Ok::<_, String>(format!("{query} from attempt {attempt}"))
        }
    });
    let origin = Instant::now();
    let answer = HedgeLayer::new(hedge.clone())
        .layer(inner)
        .oneshot("rust")
        .await;
    assert_eq!(answer.unwrap(), "rust from attempt 2");
    assert_eq!(origin.elapsed(), ms(55));
    assert!(first_dropped.load(Ordering::SeqCst));
    assert_eq!(hedge.stats().hedge_wins, 1);
}

struct DropFlag(Option<Arc<AtomicBool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::SeqCst);
        }
    }
}
