#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The outbox against a real HTTP receiver (in-process axum) with the SQLite store: a receiver
//! that is down for a while gets everything in order once it is back; 429 and 503 with
//! `Retry-After` are honoured.

mod outbox_support;

use std::sync::Arc;
use std::time::Duration;

use outbox_support::{HttpNotifier, Inbox, ReceiverServer, free_addr, notification};
use rampart_monitor::alert::outbox::{
    DeliveryConfig, DeliveryEvent, EntryState, Outbox, OutboxFilter, OutboxOptions,
};
use rampart_monitor::alert::{NotificationSink, Notifier};
use rampart_monitor::store::{SqliteConfig, SqliteStore};
use rampart_resilience::Registry;
use rampart_resilience::breaker::BreakerConfig;
use tokio::sync::broadcast;

fn quick() -> DeliveryConfig {
    DeliveryConfig::default()
        .with_rate(1000.0, Duration::from_secs(1), 1000)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .with_breaker(BreakerConfig {
            half_open_calls: 1,
            ..BreakerConfig::consecutive(3, Duration::from_millis(100))
        })
}

async fn outbox(dir: &tempfile::TempDir, notifier: Arc<HttpNotifier>) -> Outbox {
    let store = SqliteStore::open(dir.path().join("history.db"), SqliteConfig::default())
        .await
        .unwrap();
    Outbox::start(
        Arc::new(store),
        vec![(notifier as Arc<dyn Notifier>, quick())],
        &Registry::default(),
        OutboxOptions::default(),
    )
    .await
    .unwrap()
}

async fn wait_events(
    events: &mut broadcast::Receiver<DeliveryEvent>,
    deadline: Duration,
    mut done: impl FnMut(&DeliveryEvent) -> bool,
) {
    tokio::time::timeout(deadline, async {
        loop {
            if done(&events.recv().await.unwrap()) {
                return;
            }
        }
    })
    .await
    .expect("timed out waiting for delivery events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_everything_in_order_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let outbox = outbox(&dir, HttpNotifier::new("ops", addr)).await;
    let mut events = outbox.subscribe();
    let want: Vec<String> = (0..60).map(|i| format!("n{i:03}")).collect();
    for chunk in want.chunks(12) {
        outbox
            .enqueue(chunk.iter().map(|id| notification(id, "ops")).collect())
            .await
            .unwrap();
    }
    // Down: connections refused, attempts fail and the breaker opens.
    let mut failed = 0;
    wait_events(&mut events, Duration::from_secs(30), |e| {
        if matches!(e, DeliveryEvent::AttemptFailed { .. }) {
            failed += 1;
        }
        failed >= 6
    })
    .await;
    assert!(outbox.breaker("ops").unwrap().stats().opened >= 1);
    assert_eq!(outbox.stats()[0].delivered, 0);
    // Back.
    let inbox = Arc::new(Inbox::default());
    let server = ReceiverServer::start(addr, Arc::clone(&inbox)).await;
    inbox
        .wait_until(Duration::from_secs(60), "all 60 notifications", |i| {
            i.accepted("ops").len() >= 60
        })
        .await;
    assert_eq!(
        inbox.accepted("ops"),
        want,
        "all of them, once each, in order"
    );
    // The last one is marked delivered just after the receiver answered.
    if outbox.stats()[0].delivered < 60 {
        wait_events(&mut events, Duration::from_secs(30), |_| {
            outbox.stats()[0].delivered == 60
        })
        .await;
    }
    let stats = &outbox.stats()[0];
    assert_eq!(
        (stats.delivered, stats.queue_depth, stats.dead_letters),
        (60, 0, 0)
    );
    assert!(stats.failed_attempts >= 6);
    let stored = outbox
        .list(OutboxFilter::all().state(EntryState::Delivered))
        .await
        .unwrap();
    assert_eq!(stored.len(), 60);
    assert!(stored[0].attempts > 1, "the head was retried");
    outbox.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_429_and_503_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(Inbox::default());
    inbox
        .plan
        .lock()
        .unwrap()
        .extend([(429, Some(2)), (503, Some(1))]);
    let server = ReceiverServer::start(free_addr(), Arc::clone(&inbox)).await;
    let outbox = outbox(&dir, HttpNotifier::new("ops", server.addr)).await;
    let want: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    outbox
        .enqueue(want.iter().map(|id| notification(id, "ops")).collect())
        .await
        .unwrap();
    inbox
        .wait_until(Duration::from_secs(30), "three accepted", |i| {
            i.accepted("ops").len() >= 3
        })
        .await;
    assert_eq!(inbox.accepted("ops"), want);
    let all = inbox.all();
    assert_eq!(
        all.iter()
            .map(|r| (r.id.as_str(), r.status))
            .collect::<Vec<_>>(),
        [
            ("n0", 429),
            ("n0", 503),
            ("n0", 200),
            ("n1", 200),
            ("n2", 200)
        ]
    );
    // The backoff alone would retry within 20 ms.
    assert!(
        all[1].at - all[0].at >= Duration::from_secs(2),
        "{:?}",
        all[1].at - all[0].at
    );
    assert!(
        all[2].at - all[1].at >= Duration::from_secs(1),
        "{:?}",
        all[2].at - all[1].at
    );
    outbox.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}
