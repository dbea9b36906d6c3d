//! The durable outbox: every notification is written to the store before it is sent, then
//! delivered to its receiver in order, at least once, with retries, a circuit breaker and a rate
//! limit per receiver, and dead-lettered when it cannot be delivered.
//!
//! - **Durable first**: [`Outbox`] is the daemon's [`NotificationSink`]; `enqueue` returns `Ok`
//!   once the notifications are committed to the `outbox` table of the history store, then wakes
//!   the receivers' workers.
//! - **In order**: one worker per receiver sends that receiver's notifications strictly in the
//!   order they were enqueued (`seq`): the head is retried until it is delivered or
//!   dead-lettered before the next one is tried, so a resolve never overtakes its trigger.
//! - **At least once**: an entry is marked delivered only after the notifier returned `Ok`;
//!   after a crash every pending entry is sent again, so the last ones in flight may arrive twice.
//!   Each carries its [`Notification::id`] as an idempotency key for receivers to drop copies.
//! - **Retries**: a retryable failure ([`NotifyError::is_retryable`]) is retried after an
//!   exponential backoff with full jitter, never sooner than the `Retry-After` a 429 or 503 asked
//!   for; a rejection ([`NotifyError::Rejected`]) is dead-lettered at once; an entry older than
//!   `max_age` is dead-lettered. Dead letters are listed with [`Outbox::list`] and put back at the
//!   end of their receiver's queue with [`Outbox::retry`].
//! - **Breaker and rate limit per receiver**, named `notify:<receiver>`, from the resilience crate
//!   (see [`DeliveryConfig::register`] to have them in a [`Registry`] and so in its stats).
//! - Every transition is a [`DeliveryEvent`] on a broadcast channel ([`Outbox::subscribe`]) and
//!   counted ([`Outbox::stats`]).
//!
//! The guide is the "Delivery" section of `docs/alerting.md`.
//!
//! [`Registry`]: rampart_resilience::Registry

mod config;
mod store;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rampart_resilience::breaker::{BreakerState, CircuitBreaker};
use rampart_resilience::rate_limit::RateLimiter;
use rampart_resilience::registry::ResilienceConfig;
use rampart_resilience::{ConfigError, Registry};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;

pub use config::{
    BackoffConfig, DEFAULT_BURST, DEFAULT_MAX_AGE, DEFAULT_RATE, DeliveryConfig, parse_rate,
    read_delivery,
};
pub use store::{EntryState, MAX_LIST, MemoryOutboxStore, OutboxEntry, OutboxFilter, OutboxStore};

use super::NotificationSink;
use super::model::Notification;
use super::notify::Notifier;
use crate::store::{StoreError, StoreFuture};

#[cfg(doc)]
use super::notify::NotifyError;

/// The prefix of the breaker and rate limiter names: `notify:<receiver>`.
pub const POLICY_PREFIX: &str = "notify:";

/// The name of `receiver`'s breaker and rate limiter.
pub fn policy_name(receiver: &str) -> String {
    format!("{POLICY_PREFIX}{receiver}")
}

/// What happened to a notification. Sent on [`Outbox::subscribe`]'s channel.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DeliveryEvent {
    /// The receiver accepted it.
    Delivered {
        /// The notification's id.
        id: String,
        /// The receiver.
        receiver: String,
        /// The attempt that succeeded (1 for the first).
        attempt: u32,
    },
    /// An attempt failed and will be retried.
    AttemptFailed {
        /// The notification's id.
        id: String,
        /// The receiver.
        receiver: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// What went wrong, with no secret in it.
        error: String,
        /// How long until the next attempt (the backoff, or the receiver's `Retry-After` when
        /// longer).
        retry_in: Duration,
    },
    /// Given up: rejected by the receiver, or older than `max_age`.
    DeadLettered {
        /// The notification's id.
        id: String,
        /// The receiver.
        receiver: String,
        /// Attempts made.
        attempt: u32,
        /// Why.
        error: String,
    },
}

impl DeliveryEvent {
    /// The notification's id.
    pub fn id(&self) -> &str {
        match self {
            DeliveryEvent::Delivered { id, .. }
            | DeliveryEvent::AttemptFailed { id, .. }
            | DeliveryEvent::DeadLettered { id, .. } => id,
        }
    }

    /// The receiver.
    pub fn receiver(&self) -> &str {
        match self {
            DeliveryEvent::Delivered { receiver, .. }
            | DeliveryEvent::AttemptFailed { receiver, .. }
            | DeliveryEvent::DeadLettered { receiver, .. } => receiver,
        }
    }
}

/// One receiver's counters, for `/metrics`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ReceiverStats {
    /// The receiver.
    pub receiver: String,
    /// Its notifier's kind (`"webhook"`, ...).
    pub kind: &'static str,
    /// Notifications delivered since start.
    pub delivered: u64,
    /// Attempts that failed and were retried, since start.
    pub failed_attempts: u64,
    /// Notifications dead-lettered since start.
    pub dead_letters: u64,
    /// Pending notifications now.
    pub queue_depth: u64,
    /// The breaker's state now.
    pub breaker: BreakerState,
}

/// Why an [`Outbox`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A receiver's delivery settings are invalid, or two receivers share a name.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Settings of the whole outbox (per-receiver ones are in [`DeliveryConfig`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxOptions {
    /// How long delivered entries are kept before they are pruned. Default 7 days. Dead letters
    /// are kept until retried.
    pub retention: Duration,
    /// How often delivered entries are pruned. Default an hour.
    pub prune_every: Duration,
    /// Capacity of the event channel (a slow subscriber misses the oldest events). Default 1024.
    pub event_capacity: usize,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            prune_every: Duration::from_secs(3600),
            event_capacity: 1024,
        }
    }
}

impl OutboxOptions {
    /// Sets the retention of delivered entries.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
}

/// Wall-clock time that moves with tokio's clock (so tests on paused time see it move), read as
/// the wall clock at start plus tokio's elapsed time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall: SystemTime,
    at: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            wall: SystemTime::now(),
            at: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.wall + self.at.elapsed()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) queue_depth: AtomicU64,
}

impl Counters {
    pub(crate) fn dequeued(&self) {
        let _ = self
            .queue_depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(1))
            });
    }
}

/// One receiver as the outbox runs it.
pub(crate) struct Receiver {
    pub(crate) name: String,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) config: DeliveryConfig,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) limiter: RateLimiter,
    pub(crate) wake: Notify,
    pub(crate) counters: Counters,
}

/// What the workers share with the handle.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn OutboxStore>,
    pub(crate) receivers: HashMap<String, Arc<Receiver>>,
    pub(crate) events: broadcast::Sender<DeliveryEvent>,
    pub(crate) clock: Clock,
}

impl Shared {
    pub(crate) fn emit(&self, event: DeliveryEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }
}

/// The delivery engine: a durable outbox with one worker per receiver. See the [module
/// docs](self).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use rampart_monitor::alert::notify::NotifyFuture;
/// use rampart_monitor::alert::outbox::{
///     DeliveryConfig, DeliveryEvent, MemoryOutboxStore, Outbox, OutboxOptions,
/// };
/// use rampart_monitor::alert::{AlertStatus, Notification, NotificationSink, Notifier};
/// use rampart_resilience::Registry;
///
/// #[derive(Debug)]
/// struct Stdout;
///
/// impl Notifier for Stdout {
///     fn receiver(&self) -> &str {
///         "ops"
///     }
///     fn kind(&self) -> &'static str {
///         "stdout"
///     }
///     fn send<'a>(&'a self, n: &'a Notification) -> NotifyFuture<'a> {
///         Box::pin(async move {
///             println!("{}", n.title());
///             Ok(())
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In the daemon the store is the history store (`SqliteStore`); here it is memory.
/// let outbox = Outbox::start(
///     Arc::new(MemoryOutboxStore::new()),
///     vec![(Arc::new(Stdout) as Arc<dyn Notifier>, DeliveryConfig::default())],
///     &Registry::default(),
///     OutboxOptions::default(),
/// )
/// .await?;
/// let mut events = outbox.subscribe();
/// let notification: Notification = serde_json::from_value(serde_json::json!({
///     "id": "n-1", "receiver": "ops", "group_key": "{}", "group_labels": {},
///     "status": "firing", "alerts": [], "created_at": "2026-11-23T21:00:00Z",
/// }))?;
/// outbox.enqueue(vec![notification]).await?; // durable from here on
/// let event = events.recv().await?;
/// assert!(matches!(event, DeliveryEvent::Delivered { attempt: 1, .. }));
/// assert_eq!(outbox.stats()[0].delivered, 1);
/// outbox.shutdown(Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
pub struct Outbox {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    options: OutboxOptions,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.shared.receivers.keys().collect();
        names.sort();
        f.debug_struct("Outbox")
            .field("receivers", &names)
            .field("options", &self.options)
            .finish()
    }
}

impl DeliveryConfig {
    /// Adds this receiver's breaker and rate limiter to `config` as `[breaker."notify:<receiver>"]`
    /// and `[rate_limit."notify:<receiver>"]`, unless sections of those names are there already
    /// (a `[resilience]` section written by hand wins). A [`Registry`] built from `config` then
    /// holds them, so its stats (and `/api/circuit-breakers/health`) show them, and
    /// [`Outbox::start`] takes them from it.
    pub fn register(&self, receiver: &str, config: &mut ResilienceConfig) {
        let name = policy_name(receiver);
        config
            .breaker
            .entry(name.clone())
            .or_insert_with(|| self.breaker.clone());
        config
            .rate_limit
            .entry(name)
            .or_insert_with(|| self.rate_limit.clone());
    }
}

impl Outbox {
    /// Starts delivering: one worker per receiver, each resuming the receiver's pending entries
    /// from `store` in order. The breaker and rate limiter of receiver `r` are the registry's
    /// `notify:r` when it has a section of that name (see [`DeliveryConfig::register`]); else they
    /// are built from the receiver's [`DeliveryConfig`] (emitting to the registry's events).
    /// Must be called inside a tokio runtime.
    pub async fn start(
        store: Arc<dyn OutboxStore>,
        receivers: Vec<(Arc<dyn Notifier>, DeliveryConfig)>,
        registry: &Registry,
        options: OutboxOptions,
    ) -> Result<Outbox, OutboxError> {
        let mut errors = ConfigError::new(None);
        let mut map = HashMap::new();
        for (i, (notifier, config)) in receivers.into_iter().enumerate() {
            let name = notifier.receiver().to_owned();
            let path = format!("alerting.receiver[{i}].delivery");
            config.validate(&path, &mut errors);
            let policy = policy_name(&name);
            let breaker = if registry.config().breaker.contains_key(&policy) {
                registry.breaker(&policy)
            } else {
                match config.breaker.build(&policy, registry.events()) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.extend(e);
                        continue;
                    }
                }
            };
            let limiter = if registry.config().rate_limit.contains_key(&policy) {
                registry.rate_limiter(&policy)
            } else {
                match config.rate_limit.build(&policy, registry.events()) {
                    Ok(l) => l,
                    Err(e) => {
                        errors.extend(e);
                        continue;
                    }
                }
            };
            if map.contains_key(&name) {
                errors.push(
                    format!("alerting.receiver[{i}].name"),
                    format!("receiver {name:?} is configured twice"),
                );
                continue;
            }
            map.insert(
                name.clone(),
                Arc::new(Receiver {
                    name,
                    notifier,
                    config,
                    breaker,
                    limiter,
                    wake: Notify::new(),
                    counters: Counters::default(),
                }),
            );
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
        for (receiver, depth) in store.depths().await? {
            if let Some(r) = map.get(&receiver) {
                r.counters.queue_depth.store(depth, Ordering::Relaxed);
            }
        }
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let shared = Arc::new(Shared {
            store,
            receivers: map,
            events,
            clock: Clock::new(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for receiver in shared.receivers.values() {
            tasks.push(tokio::spawn(worker::run(
                Arc::clone(&shared),
                Arc::clone(receiver),
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(worker::prune(
            Arc::clone(&shared),
            options.clone(),
            stopped,
        )));
        Ok(Outbox {
            shared,
            stop,
            tasks: Mutex::new(tasks),
            options,
        })
    }

    /// Events of every transition from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryEvent> {
        self.shared.events.subscribe()
    }

    /// Every receiver's counters, by name.
    pub fn stats(&self) -> Vec<ReceiverStats> {
        let mut stats: Vec<ReceiverStats> = self
            .shared
            .receivers
            .values()
            .map(|r| {
                let c = &r.counters;
                ReceiverStats {
                    receiver: r.name.clone(),
                    kind: r.notifier.kind(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
                    dead_letters: c.dead_letters.load(Ordering::Relaxed),
                    queue_depth: c.queue_depth.load(Ordering::Relaxed),
                    breaker: r.breaker.state(),
                }
            })
            .collect();
        stats.sort_by(|a, b| a.receiver.cmp(&b.receiver));
        stats
    }

    /// The breaker of `receiver`, if it is configured.
    pub fn breaker(&self, receiver: &str) -> Option<&CircuitBreaker> {
        self.shared.receivers.get(receiver).map(|r| &r.breaker)
    }

    /// Entries that pass `filter` (bounded by [`MAX_LIST`]), oldest first.
    pub async fn list(&self, filter: OutboxFilter) -> Result<Vec<OutboxEntry>, StoreError> {
        self.shared.store.list(filter).await
    }

    /// The entry `id`, if any.
    pub async fn get(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.shared.store.get(id).await
    }

    /// Puts the dead letter `id` back to pending, at the end of its receiver's queue (so it may
    /// now arrive after notifications made after it), with its attempts and age reset, and wakes
    /// the receiver's worker. `None` if there is no dead letter with that id.
    pub async fn retry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let entry = self.shared.store.retry(id, self.shared.clock.now()).await?;
        if let Some(e) = &entry
            && let Some(r) = self.shared.receivers.get(&e.receiver)
        {
            r.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
            r.wake.notify_one();
        }
        Ok(entry)
    }

    /// Deletes delivered entries older than the retention now; returns how many.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        worker::prune_once(&self.shared, self.options.retention).await
    }

    /// Stops: no new attempt starts; attempts under way may finish until `deadline` has passed,
    /// then they are abandoned (their entries stay pending and are sent again after a restart).
    /// Everything acknowledged by `enqueue` stays in the store.
    pub async fn shutdown(&self, deadline: Duration) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let until = tokio::time::Instant::now() + deadline;
        for mut task in tasks {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl NotificationSink for Outbox {
    /// Writes `notifications` to the outbox (durable once `Ok`), then wakes their receivers'
    /// workers. Ids already in the outbox are ignored. Notifications for a receiver this outbox
    /// does not run stay pending until one of that name is configured.
    fn enqueue(&self, notifications: Vec<Notification>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let receivers: Vec<String> = notifications.iter().map(|n| n.receiver.clone()).collect();
            let fresh = self
                .shared
                .store
                .enqueue(notifications, self.shared.clock.now())
                .await?;
            let mut woken: Vec<&Receiver> = Vec::new();
            for (receiver, fresh) in receivers.iter().zip(fresh) {
                if !fresh {
                    continue;
                }
                if let Some(r) = self.shared.receivers.get(receiver) {
                    r.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
                    if !woken.iter().any(|w| std::ptr::eq(*w, &**r)) {
                        woken.push(r);
                    }
                }
            }
            for r in woken {
                r.wake.notify_one();
            }
            Ok(())
        })
    }
}
