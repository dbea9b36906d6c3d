#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use tokio::time::advance;

use super::*;

const TOKEN: &str = "0123456789abcdef-job";
const MINUTE: Duration = Duration::from_secs(60);

fn check(schedule: HeartbeatSchedule, grace: Duration) -> HeartbeatCheck {
    let mut check = HeartbeatCheck::new(TOKEN, schedule);
    check.grace = grace;
    check
}

fn healthy(tracker: &HeartbeatTracker) -> bool {
    tracker.evaluate("job").unwrap().healthy
}

/// 2026-01-01T00:30:00Z.
fn half_past_midnight() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 30 * 60)
}

#[tokio::test(start_paused = true)]
async fn every_is_missed_after_every_plus_grace_without_a_beat() {
    let tracker = HeartbeatTracker::new();
    tracker.add("job", &check(HeartbeatSchedule::Every(MINUTE), 10 * SECOND));
    let status = tracker.evaluate("job").unwrap();
    assert!(status.healthy && status.beats == 0 && status.since_last_beat.is_none());
    advance(70 * SECOND).await;
    assert!(healthy(&tracker), "exactly every + grace is still in time");
    advance(SECOND).await;
    let status = tracker.evaluate("job").unwrap();
    assert!(!status.healthy);
    assert!(
        status.message.contains("since tracking started"),
        "{}",
        status.message
    );

    assert_eq!(tracker.heartbeat(TOKEN), Ok("job".to_owned()));
    advance(30 * SECOND).await;
    let status = tracker.evaluate("job").unwrap();
    assert!(status.healthy && status.beats == 1);
    assert_eq!(status.since_last_beat, Some(30 * SECOND));
    advance(41 * SECOND).await;
    let status = tracker.evaluate("job").unwrap();
    assert!(!status.healthy);
    assert!(
        status.message.contains("no heartbeat for 71s"),
        "{}",
        status.message
    );
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn cron_expects_a_beat_per_run_once_its_grace_is_over() {
    let tracker = HeartbeatTracker::anchored_at(half_past_midnight());
    let hourly = HeartbeatSchedule::cron("0 * * * *").unwrap();
    tracker.add("job", &check(hourly, MINUTE));
    // 00:00 was before tracking started: nothing is due.
    assert!(healthy(&tracker));
    // 01:01:00 — the 01:00 run is within its grace.
    advance(31 * MINUTE).await;
    assert!(healthy(&tracker));
    // 01:01:01 — the 01:00 run had no beat.
    advance(SECOND).await;
    let status = tracker.evaluate("job").unwrap();
    assert!(!status.healthy);
    assert!(
        status.message.contains("2026-01-01T01:00:00"),
        "{}",
        status.message
    );
    // A late beat covers it; it also covers 02:00 only if it comes after 01:59.
    tracker.heartbeat(TOKEN).unwrap();
    assert!(healthy(&tracker));
    advance(60 * MINUTE).await; // 02:01:01
    assert!(!healthy(&tracker), "the 02:00 run had no beat");
    advance(58 * MINUTE).await; // 02:59:01, a beat just before 03:00, within its grace
    tracker.heartbeat(TOKEN).unwrap();
    advance(2 * MINUTE).await; // 03:01:01
    assert!(healthy(&tracker));
}

#[tokio::test(start_paused = true)]
async fn unknown_tokens_are_refused_and_never_shown() {
    let tracker = HeartbeatTracker::new();
    tracker.add("job", &check(HeartbeatSchedule::Every(MINUTE), MINUTE));
    let err = tracker.heartbeat("0123456789abcdef-jo").unwrap_err();
    assert_eq!(err.to_string(), "no heartbeat target has this token");
    assert_eq!(tracker.evaluate("job").unwrap().beats, 0);
    assert!(tracker.evaluate("other").is_none());
    let shown = format!("{tracker:?}");
    assert!(shown.contains("job") && !shown.contains(TOKEN), "{shown}");
}

#[tokio::test(start_paused = true)]
async fn the_probe_fails_as_missed() {
    let tracker = HeartbeatTracker::new();
    tracker.add("job", &check(HeartbeatSchedule::Every(MINUTE), SECOND));
    let probe = HeartbeatProbe::new(tracker.clone(), "job");
    assert!(probe.probe(SECOND).await.is_success());
    advance(2 * MINUTE).await;
    let r = probe.probe(SECOND).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Missed), "{r:?}");
    let r = HeartbeatProbe::new(tracker, "nope").probe(SECOND).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Missed));
}

#[tokio::test(start_paused = true)]
async fn a_removed_target_forgets_its_token_and_the_others_keep_theirs() {
    let tracker = HeartbeatTracker::new();
    tracker.add("job", &check(HeartbeatSchedule::Every(MINUTE), MINUTE));
    let other = HeartbeatCheck::new("another-token-0123456789", HeartbeatSchedule::Every(MINUTE));
    tracker.add("other", &other);
    assert!(tracker.remove("job"));
    assert!(!tracker.remove("job"));
    assert!(tracker.evaluate("job").is_none());
    assert!(tracker.heartbeat(TOKEN).is_err());
    assert_eq!(
        tracker.heartbeat("another-token-0123456789").unwrap(),
        "other"
    );
    assert_eq!(tracker.evaluate("other").unwrap().beats, 1);
}
