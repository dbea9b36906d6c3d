//! The per-receiver delivery worker and the pruner.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use rampart_resilience::Outcome;
use rampart_resilience::format_duration;
use tokio::sync::watch;

use super::store::OutboxEntry;
use super::{DeliveryEvent, OutboxOptions, Receiver, Shared};
use crate::alert::notify::NotifyError;
use crate::store::StoreError;

/// Pending entries read from the store at a time.
const PAGE: usize = 256;
/// The longest wait between polls of an open breaker.
const BREAKER_POLL: Duration = Duration::from_secs(1);
/// A safety net for a notifier that does not bound its own attempts (they should): an attempt
/// still running after this counts as failed, so one hung request cannot stall a queue for good.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(300);
/// Delivered entries pruned per transaction.
const PRUNE_BATCH: usize = 1000;

/// Sleeps for `d`; false if told to stop first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = stop.changed() => !*stop.borrow(),
    }
}

/// Runs a store write until it succeeds (backing off from 50 ms to 5 s); false if told to stop
/// first (the entry then stays as the store has it: pending, sent again later).
async fn persist<F, Fut>(mut write: F, stop: &mut watch::Receiver<bool>) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        if write().await.is_ok() {
            return true;
        }
        if !sleep_or_stop(wait, stop).await {
            return false;
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Delivers `receiver`'s pending entries, strictly in `seq` order, until told to stop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    receiver: Arc<Receiver>,
    mut stop: watch::Receiver<bool>,
) {
    let r = &*receiver;
    let backoff = r.config.backoff.backoff();
    let mut rng = fastrand::Rng::new();
    let mut queue: VecDeque<OutboxEntry> = VecDeque::new();
    let mut cursor = 0i64;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(head) = queue.front_mut() else {
            match shared.store.pending(&r.name, cursor, PAGE).await {
                Ok(page) if !page.is_empty() => {
                    cursor = page.last().map_or(cursor, |e| e.seq);
                    queue.extend(page);
                }
                Ok(_) => {
                    tokio::select! {
                        () = r.wake.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(_) => {
                    if !sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                }
            }
            continue;
        };
        let now = shared.clock.now();
        let age = now.duration_since(head.created).unwrap_or_default();
        let max_age = r.config.max_age;
        if age >= max_age {
            let reason = match &head.last_error {
                Some(last) => format!(
                    "not delivered within max_age {} after {} attempts; last error: {last}",
                    format_duration(max_age),
                    head.attempts
                ),
                None => format!(
                    "not delivered within max_age {} after {} attempts",
                    format_duration(max_age),
                    head.attempts
                ),
            };
            let attempts = head.attempts;
            if !dead_letter(&shared, r, head, attempts, reason, &mut stop).await {
                return;
            }
            queue.pop_front();
            continue;
        }
        if let Ok(wait) = head.next_attempt.duration_since(now)
            && !wait.is_zero()
        {
            // Wake for the attempt, or when it grows too old, whichever comes first.
            if !sleep_or_stop(wait.min(max_age - age), &mut stop).await {
                return;
            }
            continue;
        }
        let Some(permit) = r.breaker.try_acquire() else {
            let poll = r.breaker.config().wait_in_open.min(BREAKER_POLL);
            if !sleep_or_stop(poll, &mut stop).await {
                return;
            }
            continue;
        };
        if let Err(limited) = r.limiter.try_acquire(1) {
            drop(permit);
            let wait = limited.retry_after().unwrap_or(Duration::from_secs(1));
            if !sleep_or_stop(wait, &mut stop).await {
                return;
            }
            continue;
        }
        let notification = match head.notification() {
            Ok(n) => n,
            Err(e) => {
                drop(permit);
                let attempts = head.attempts;
                let reason = format!("unreadable payload: {e}");
                if !dead_letter(&shared, r, head, attempts, reason, &mut stop).await {
                    return;
                }
                queue.pop_front();
                continue;
            }
        };
        let attempt = head.attempts.saturating_add(1);
        let result = match tokio::time::timeout(ATTEMPT_LIMIT, r.notifier.send(&notification)).await
        {
            Ok(result) => result,
            Err(_) => Err(NotifyError::Unavailable {
                receiver: r.name.clone(),
                message: format!("no answer within {}", format_duration(ATTEMPT_LIMIT)),
                retry_after: None,
                source: None,
            }),
        };
        permit.record(match &result {
            Ok(()) => Outcome::Success,
            Err(NotifyError::Unavailable { .. }) => Outcome::Failure,
            Err(_) => Outcome::Ignored,
        });
        match result {
            Ok(()) => {
                let at = shared.clock.now();
                let store = &shared.store;
                let id = head.id.clone();
                if !persist(|| store.mark_delivered(&id, attempt, at), &mut stop).await {
                    return;
                }
                r.counters.delivered.fetch_add(1, Ordering::Relaxed);
                r.counters.dequeued();
                shared.emit(DeliveryEvent::Delivered {
                    id,
                    receiver: r.name.clone(),
                    attempt,
                });
                queue.pop_front();
            }
            Err(e) if !e.is_retryable() => {
                if !dead_letter(&shared, r, head, attempt, e.to_string(), &mut stop).await {
                    return;
                }
                queue.pop_front();
            }
            Err(e) => {
                let mut retry_in = backoff.delay(head.attempts, backoff.base_delay(), &mut rng);
                if let Some(asked) = e.retry_after() {
                    retry_in = retry_in.max(asked);
                }
                let now = shared.clock.now();
                let next = now + retry_in;
                let error = e.to_string();
                let store = &shared.store;
                let id = head.id.clone();
                if !persist(
                    || store.record_attempt(&id, attempt, next, &error),
                    &mut stop,
                )
                .await
                {
                    return;
                }
                head.attempts = attempt;
                head.next_attempt = next;
                head.last_error = Some(error.clone());
                r.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                shared.emit(DeliveryEvent::AttemptFailed {
                    id,
                    receiver: r.name.clone(),
                    attempt,
                    error,
                    retry_in,
                });
            }
        }
    }
}

/// Dead-letters `entry`; false if told to stop before the store took it.
async fn dead_letter(
    shared: &Shared,
    r: &Receiver,
    entry: &OutboxEntry,
    attempts: u32,
    reason: String,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let at = shared.clock.now();
    let store = &shared.store;
    if !persist(|| store.dead_letter(&entry.id, attempts, at, &reason), stop).await {
        return false;
    }
    r.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
    r.counters.dequeued();
    shared.emit(DeliveryEvent::DeadLettered {
        id: entry.id.clone(),
        receiver: r.name.clone(),
        attempt: attempts,
        error: reason,
    });
    true
}

/// Deletes delivered entries older than `retention`, in bounded batches.
pub(crate) async fn prune_once(shared: &Shared, retention: Duration) -> Result<u64, StoreError> {
    let before = shared
        .clock
        .now()
        .checked_sub(retention)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut total = 0;
    loop {
        let n = shared.store.prune(before, PRUNE_BATCH).await?;
        total += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Prunes every `prune_every` until told to stop.
pub(crate) async fn prune(
    shared: Arc<Shared>,
    options: OutboxOptions,
    mut stop: watch::Receiver<bool>,
) {
    let every = options.prune_every.max(Duration::from_secs(1));
    while sleep_or_stop(every, &mut stop).await {
        // A failure is tried again next time.
        let _ = prune_once(&shared, options.retention).await;
    }
}
