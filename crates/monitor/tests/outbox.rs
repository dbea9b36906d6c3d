#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The outbox's delivery logic on paused time, with an in-memory store and a fake notifier that
//! records each call and answers as told: order, backoff, Retry-After, the breaker, the rate
//! limit, max age, rejections, dead letters and retrying them, idempotent enqueue, resuming.

mod outbox_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outbox_support::notification;
use rampart_monitor::alert::notify::NotifyFuture;
use rampart_monitor::alert::outbox::{
    DeliveryConfig, DeliveryEvent, EntryState, MemoryOutboxStore, Outbox, OutboxFilter,
    OutboxOptions, OutboxStore,
};
use rampart_monitor::alert::{Notification, NotificationSink, Notifier, NotifyError};
use rampart_resilience::Registry;
use rampart_resilience::breaker::{BreakerConfig, BreakerState};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// What the fake answers: `Ok`, or an error made fresh for each call.
#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Down,
    Throttle(Duration),
    Reject,
}

type Rule = Box<dyn Fn(&str) -> Option<Answer> + Send + Sync>;

/// Records every call and answers from a script, then by a rule per id, else `Ok`.
struct Fake {
    name: String,
    script: Mutex<VecDeque<Answer>>,
    rule: Mutex<Option<Rule>>,
    calls: Mutex<Vec<(String, Instant)>>,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fake").field("name", &self.name).finish()
    }
}

impl Fake {
    fn new(name: &str, script: Vec<Answer>) -> Arc<Self> {
        Arc::new(Fake {
            name: name.into(),
            script: Mutex::new(script.into()),
            rule: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn with_rule(
        self: Arc<Self>,
        rule: impl Fn(&str) -> Option<Answer> + Send + Sync + 'static,
    ) -> Arc<Self> {
        *self.rule.lock().unwrap() = Some(Box::new(rule));
        self
    }

    fn calls(&self) -> Vec<(String, Instant)> {
        self.calls.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.calls().into_iter().map(|(id, _)| id).collect()
    }
}

impl Notifier for Fake {
    fn receiver(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn send<'a>(&'a self, n: &'a Notification) -> NotifyFuture<'a> {
        self.calls
            .lock()
            .unwrap()
            .push((n.id.clone(), Instant::now()));
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| self.rule.lock().unwrap().as_ref().and_then(|r| r(&n.id)))
            .unwrap_or(Answer::Ok);
        let receiver = self.name.clone();
        Box::pin(async move {
            match answer {
                Answer::Ok => Ok(()),
                Answer::Down => Err(NotifyError::Unavailable {
                    receiver,
                    message: "connection refused".into(),
                    retry_after: None,
                    source: None,
                }),
                Answer::Throttle(d) => Err(NotifyError::RateLimited {
                    receiver,
                    retry_after: Some(d),
                }),
                Answer::Reject => Err(NotifyError::Rejected {
                    receiver,
                    message: "HTTP 400".into(),
                }),
            }
        })
    }
}

/// Fast settings: a high rate, a short backoff, a lenient breaker.
fn fast() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_rate(1000.0, Duration::from_secs(1), 1000)
        .with_backoff(Duration::from_millis(100), Duration::from_secs(2))
        .with_breaker(BreakerConfig::consecutive(1000, Duration::from_secs(1)))
}

async fn start(store: &MemoryOutboxStore, receivers: Vec<(Arc<Fake>, DeliveryConfig)>) -> Outbox {
    let receivers = receivers
        .into_iter()
        .map(|(f, c)| (f as Arc<dyn Notifier>, c))
        .collect();
    Outbox::start(
        Arc::new(store.clone()),
        receivers,
        &Registry::default(),
        OutboxOptions::default(),
    )
    .await
    .unwrap()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:04}")).collect()
}

async fn enqueue(outbox: &Outbox, receiver: &str, ids: &[String]) {
    outbox
        .enqueue(ids.iter().map(|id| notification(id, receiver)).collect())
        .await
        .unwrap();
}

/// Collects events until `done` says enough (a day of paused time at most).
async fn until(
    events: &mut broadcast::Receiver<DeliveryEvent>,
    mut done: impl FnMut(&[DeliveryEvent]) -> bool,
) -> Vec<DeliveryEvent> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(86_400);
    while !done(&seen) {
        let e = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for delivery events after {} events: {:?}",
                    seen.len(),
                    seen.iter().rev().take(3).collect::<Vec<_>>()
                )
            })
            .unwrap();
        seen.push(e);
    }
    seen
}

fn delivered(events: &[DeliveryEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| matches!(e, DeliveryEvent::Delivered { .. }))
        .map(|e| e.id().to_owned())
        .collect()
}

fn count(events: &[DeliveryEvent], f: impl Fn(&DeliveryEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

#[tokio::test(start_paused = true)]
async fn a_receiver_gets_everything_in_order_through_failures() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![Answer::Down; 7]);
    let outbox = start(&store, vec![(Arc::clone(&fake), fast())]).await;
    let mut events = outbox.subscribe();
    let want = ids("n", 20);
    enqueue(&outbox, "ops", &want[..10]).await;
    enqueue(&outbox, "ops", &want[10..]).await;
    let seen = until(&mut events, |e| delivered(e).len() == 20).await;
    assert_eq!(delivered(&seen), want);
    // The head is retried until it goes: calls never step back and never skip ahead.
    let calls = fake.ids();
    assert_eq!(calls.len(), 27);
    assert!(calls[..8].iter().all(|id| id == "n0000"), "{calls:?}");
    let mut deduped = calls.clone();
    deduped.dedup();
    assert_eq!(deduped, want);
    let stats = &outbox.stats()[0];
    assert_eq!(
        (
            stats.delivered,
            stats.failed_attempts,
            stats.dead_letters,
            stats.queue_depth
        ),
        (20, 7, 0, 0)
    );
    assert_eq!(
        store
            .list(OutboxFilter::all().state(EntryState::Delivered))
            .await
            .unwrap()
            .len(),
        20
    );
    let first = store.get("n0000").await.unwrap().unwrap();
    assert_eq!(first.attempts, 8);
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_with_full_jitter() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![Answer::Down; 8]);
    let config = fast().with_backoff(Duration::from_millis(100), Duration::from_secs(3));
    let outbox = start(&store, vec![(Arc::clone(&fake), config)]).await;
    let mut events = outbox.subscribe();
    enqueue(&outbox, "ops", &ids("n", 1)).await;
    let seen = until(&mut events, |e| delivered(e).len() == 1).await;
    let waits: Vec<Duration> = seen
        .iter()
        .filter_map(|e| match e {
            DeliveryEvent::AttemptFailed { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 8);
    let calls = fake.calls();
    for (n, wait) in waits.iter().enumerate() {
        // Full jitter: uniform in [0, min(max, base * 2^n)].
        let ceiling = Duration::from_millis(100 * (1 << n)).min(Duration::from_secs(3));
        assert!(*wait <= ceiling, "retry {n} waited {wait:?} > {ceiling:?}");
        let gap = calls[n + 1].1 - calls[n].1;
        assert!(
            gap >= *wait,
            "retry {n} came after {gap:?}, before its {wait:?}"
        );
        assert!(
            gap <= *wait + Duration::from_millis(5),
            "retry {n}: {gap:?} for {wait:?}"
        );
    }
    // Random, not fixed: eight draws are not all the ceiling.
    assert!(
        waits
            .iter()
            .enumerate()
            .any(|(n, w)| *w < Duration::from_millis(100 * (1 << n)).min(Duration::from_secs(3)))
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new(
        "ops",
        vec![
            Answer::Throttle(Duration::from_secs(30)),
            Answer::Throttle(Duration::from_secs(5)),
        ],
    );
    let outbox = start(&store, vec![(Arc::clone(&fake), fast())]).await;
    let mut events = outbox.subscribe();
    enqueue(&outbox, "ops", &ids("n", 2)).await;
    let seen = until(&mut events, |e| delivered(e).len() == 2).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 4);
    assert!(
        calls[1].1 - calls[0].1 >= Duration::from_secs(30),
        "{calls:?}"
    );
    assert!(
        calls[2].1 - calls[1].1 >= Duration::from_secs(5),
        "{calls:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, DeliveryEvent::AttemptFailed { retry_in, .. } if *retry_in >= Duration::from_secs(30))));
    // Throttling says the receiver is alive: the breaker does not count it.
    assert_eq!(outbox.breaker("ops").unwrap().stats().failed, 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_holds_attempts_until_it_half_opens() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![Answer::Down; 3]);
    let config = fast()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .with_breaker(BreakerConfig {
            half_open_calls: 1,
            ..BreakerConfig::consecutive(3, Duration::from_secs(60))
        });
    let outbox = start(&store, vec![(Arc::clone(&fake), config)]).await;
    let mut events = outbox.subscribe();
    enqueue(&outbox, "ops", &ids("n", 3)).await;
    until(&mut events, |e| {
        count(e, |e| matches!(e, DeliveryEvent::AttemptFailed { .. })) == 3
    })
    .await;
    assert_eq!(outbox.stats()[0].breaker, BreakerState::Open);
    let seen = until(&mut events, |e| delivered(e).len() == 3).await;
    assert_eq!(delivered(&seen), ids("n", 3));
    let calls = fake.calls();
    assert_eq!(
        calls.len(),
        6,
        "no call while the breaker was open: {calls:?}"
    );
    assert!(
        calls[3].1 - calls[2].1 >= Duration::from_secs(60),
        "{calls:?}"
    );
    assert_eq!(outbox.stats()[0].breaker, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_spaces_attempts_after_the_burst() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![]);
    let config = fast().with_rate(1.0, Duration::from_secs(1), 2);
    let outbox = start(&store, vec![(Arc::clone(&fake), config)]).await;
    let mut events = outbox.subscribe();
    enqueue(&outbox, "ops", &ids("n", 6)).await;
    let seen = until(&mut events, |e| delivered(e).len() == 6).await;
    assert_eq!(delivered(&seen), ids("n", 6));
    let calls = fake.calls();
    assert!(
        calls[1].1 - calls[0].1 < Duration::from_millis(10),
        "a burst of 2"
    );
    for w in calls[1..].windows(2) {
        assert!(w[1].1 - w[0].1 >= Duration::from_millis(999), "{calls:?}");
    }
    assert!(calls[5].1 - calls[0].1 >= Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn a_notification_older_than_max_age_is_dead_lettered_and_the_next_goes() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![]).with_rule(|id| (id == "n0000").then_some(Answer::Down));
    let config = fast()
        .with_backoff(Duration::from_secs(1), Duration::from_secs(2))
        .with_max_age(Duration::from_secs(10));
    let outbox = start(&store, vec![(Arc::clone(&fake), config)]).await;
    let mut events = outbox.subscribe();
    let started = Instant::now();
    let both = ids("n", 2);
    enqueue(&outbox, "ops", &both[..1]).await;
    // The second is younger: still within its max age when the first is given up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    enqueue(&outbox, "ops", &both[1..]).await;
    let seen = until(&mut events, |e| delivered(e).len() == 1).await;
    let dead: Vec<&DeliveryEvent> = seen
        .iter()
        .filter(|e| matches!(e, DeliveryEvent::DeadLettered { .. }))
        .collect();
    assert_eq!(dead.len(), 1);
    let DeliveryEvent::DeadLettered {
        id, error, attempt, ..
    } = dead[0]
    else {
        unreachable!()
    };
    assert_eq!(id, "n0000");
    assert!(error.contains("max_age 10s"), "{error}");
    assert!(error.contains("connection refused"), "{error}");
    assert!(*attempt >= 5, "retried until it was too old: {attempt}");
    // Dead-lettered at its age, not before, not much after.
    let calls = fake.calls();
    let last_a = calls.iter().rfind(|(id, _)| id == "n0000").unwrap().1;
    let b = calls.iter().find(|(id, _)| id == "n0001").unwrap().1;
    assert!(last_a - started < Duration::from_secs(10));
    assert!(b - started >= Duration::from_secs(10));
    assert!(b - started < Duration::from_millis(10_100));
    let entry = store.get("n0000").await.unwrap().unwrap();
    assert_eq!(entry.state, EntryState::Dead);
    assert!(entry.last_error.unwrap().contains("max_age"));
    assert_eq!(outbox.stats()[0].dead_letters, 1);
    assert_eq!(outbox.stats()[0].queue_depth, 0);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_dead_lettered_at_once_and_a_retried_dead_letter_goes_last() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![Answer::Reject]);
    let outbox = start(&store, vec![(Arc::clone(&fake), fast())]).await;
    let mut events = outbox.subscribe();
    enqueue(&outbox, "ops", &ids("n", 3)).await;
    let seen = until(&mut events, |e| delivered(e).len() == 2).await;
    assert!(matches!(
        &seen[0],
        DeliveryEvent::DeadLettered { id, attempt: 1, error, .. } if id == "n0000" && error.contains("HTTP 400")
    ));
    let dead = outbox
        .list(OutboxFilter::all().state(EntryState::Dead).receiver("ops"))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    // Only a dead letter can be retried.
    assert!(outbox.retry("n0001").await.unwrap().is_none());
    assert!(outbox.retry("nope").await.unwrap().is_none());
    let retried = outbox.retry("n0000").await.unwrap().unwrap();
    assert_eq!(retried.state, EntryState::Pending);
    assert_eq!(retried.attempts, 0);
    let last = store.get("n0002").await.unwrap().unwrap();
    assert!(retried.seq > last.seq, "back at the end of the queue");
    let seen = until(&mut events, |e| delivered(e).len() == 1).await;
    assert_eq!(delivered(&seen), ["n0000"]);
    assert_eq!(fake.ids(), ["n0000", "n0001", "n0002", "n0000"]);
    let entry = store.get("n0000").await.unwrap().unwrap();
    assert_eq!((entry.state, entry.attempts), (EntryState::Delivered, 1));
}

#[tokio::test(start_paused = true)]
async fn enqueueing_an_id_twice_delivers_it_once() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![]);
    let outbox = start(&store, vec![(Arc::clone(&fake), fast())]).await;
    let mut events = outbox.subscribe();
    let want = ids("n", 3);
    enqueue(&outbox, "ops", &want).await;
    until(&mut events, |e| delivered(e).len() == 3).await;
    enqueue(&outbox, "ops", &[want[1].clone(), "m".into(), "m".into()]).await;
    until(&mut events, |e| delivered(e).len() == 1).await;
    assert_eq!(fake.ids(), ["n0000", "n0001", "n0002", "m"]);
    assert_eq!(store.list(OutboxFilter::all()).await.unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn receivers_do_not_wait_for_each_other_and_pending_entries_resume_at_start() {
    let store = MemoryOutboxStore::new();
    // Written before the outbox starts: what a restarted daemon finds.
    let mut queued: Vec<Notification> = ids("a", 5)
        .iter()
        .map(|id| notification(id, "down"))
        .collect();
    queued.extend(ids("b", 5).iter().map(|id| notification(id, "up")));
    store
        .enqueue(queued, std::time::SystemTime::now())
        .await
        .unwrap();
    let down = Fake::new("down", vec![]).with_rule(|_| Some(Answer::Down));
    let up = Fake::new("up", vec![]);
    let outbox = start(
        &store,
        vec![(Arc::clone(&down), fast()), (Arc::clone(&up), fast())],
    )
    .await;
    let stats = outbox.stats();
    assert_eq!(
        (stats[0].receiver.as_str(), stats[0].queue_depth),
        ("down", 5)
    );
    let mut events = outbox.subscribe();
    let seen = until(&mut events, |e| delivered(e).len() == 5).await;
    assert_eq!(delivered(&seen), ids("b", 5));
    assert!(down.ids().iter().all(|id| id == "a0000"));
    outbox.shutdown(Duration::from_secs(1)).await;
    let calls = down.calls().len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(down.calls().len(), calls, "no attempt after shutdown");
    assert_eq!(
        store
            .list(OutboxFilter::all().state(EntryState::Pending))
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_settings_and_duplicate_receivers_are_refused() {
    let store = MemoryOutboxStore::new();
    let bad = fast().with_max_age(Duration::ZERO);
    let err = Outbox::start(
        Arc::new(store.clone()),
        vec![
            (Fake::new("ops", vec![]) as Arc<dyn Notifier>, bad),
            (Fake::new("ops", vec![]) as Arc<dyn Notifier>, fast()),
        ],
        &Registry::default(),
        OutboxOptions::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("alerting.receiver[0].delivery.max_age"),
        "{err}"
    );
    assert!(err.contains("alerting.receiver[1].name"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_registered_breaker_is_the_registry_s_own() {
    let mut config = rampart_resilience::registry::ResilienceConfig::default();
    let delivery = fast().with_breaker(BreakerConfig::consecutive(2, Duration::from_secs(9)));
    delivery.register("ops", &mut config);
    let registry = Registry::new(config, rampart_resilience::Events::new());
    let store = MemoryOutboxStore::new();
    let outbox = Outbox::start(
        Arc::new(store),
        vec![(Fake::new("ops", vec![]) as Arc<dyn Notifier>, delivery)],
        &registry,
        OutboxOptions::default(),
    )
    .await
    .unwrap();
    let from_registry = registry.breaker("notify:ops");
    from_registry.force_open();
    assert_eq!(outbox.stats()[0].breaker, BreakerState::ForcedOpen);
    assert!(registry.stats().breaker.contains_key("notify:ops"));
    assert_eq!(from_registry.config().consecutive_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn delivered_entries_are_pruned_after_the_retention_and_dead_letters_kept() {
    let store = MemoryOutboxStore::new();
    let fake = Fake::new("ops", vec![Answer::Reject]);
    let outbox = Outbox::start(
        Arc::new(store.clone()),
        vec![(Arc::clone(&fake) as Arc<dyn Notifier>, fast())],
        &Registry::default(),
        OutboxOptions::default().with_retention(Duration::from_secs(86_400)),
    )
    .await
    .unwrap();
    let mut events = outbox.subscribe();
    enqueue(&outbox, "ops", &ids("n", 3)).await;
    until(&mut events, |e| delivered(e).len() == 2).await;
    assert_eq!(
        outbox.prune().await.unwrap(),
        0,
        "younger than the retention"
    );
    // The hourly pruner takes them once they are a day old.
    tokio::time::sleep(Duration::from_secs(86_400 + 2 * 3600)).await;
    let left = store.list(OutboxFilter::all()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id.as_str(), left[0].state),
        ("n0000", EntryState::Dead)
    );
}

/// Never answers.
#[derive(Debug)]
struct Hung;

impl Notifier for Hung {
    fn receiver(&self) -> &str {
        "hung"
    }
    fn kind(&self) -> &'static str {
        "hung"
    }
    fn send<'a>(&'a self, _: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_counts_as_failed_and_shutdown_does_not_wait_for_it_past_its_deadline() {
    let store = MemoryOutboxStore::new();
    let outbox = Outbox::start(
        Arc::new(store.clone()),
        vec![(Arc::new(Hung) as Arc<dyn Notifier>, fast())],
        &Registry::default(),
        OutboxOptions::default(),
    )
    .await
    .unwrap();
    let mut events = outbox.subscribe();
    enqueue(&outbox, "hung", &ids("n", 1)).await;
    let seen = until(&mut events, |e| !e.is_empty()).await;
    assert!(matches!(
        &seen[0],
        DeliveryEvent::AttemptFailed { error, .. } if error.contains("no answer within 5m")
    ));
    let started = Instant::now();
    outbox.shutdown(Duration::from_secs(2)).await;
    assert!(Instant::now() - started <= Duration::from_secs(3));
    let entry = store.get("n0000").await.unwrap().unwrap();
    assert_eq!(
        entry.state,
        EntryState::Pending,
        "sent again after a restart"
    );
}
