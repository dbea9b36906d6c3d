//! Heartbeat targets in a running monitor, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rampart_monitor::Monitor;
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::FailureKind;

const TOKEN: &str = "job-token-0123456789abcdef";

fn config(token_file: &std::path::Path) -> MonitorConfig {
    MonitorConfig::from_str(
        &format!(
            r#"
            [[target]]
            name = "backup"
            kind = "heartbeat"
            interval = "10s"
            thresholds = {{ failures_to_unhealthy = 1, successes_to_healthy = 1 }}
            [target.heartbeat]
            token_file = {:?}
            every = "30s"
            grace = "5s"
            "#,
            token_file.display().to_string()
        ),
        None,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_missed_beat_makes_the_target_unhealthy_and_a_beat_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let config = config(&file);
    assert!(!format!("{config:?}").contains(TOKEN));

    let monitor = Monitor::start(&config);
    let mut results = monitor.subscribe_results();
    let first = results.recv().await.unwrap();
    assert!(first.result.is_success(), "{:?}", first.result);
    assert_eq!(monitor.state("backup"), Some(HealthState::Healthy));

    // No beat: within 35 s (every + grace) and one more interval the target fails.
    let missed = loop {
        let report = results.recv().await.unwrap();
        if !report.result.is_success() {
            break report;
        }
    };
    assert_eq!(missed.result.failure_kind(), Some(FailureKind::Missed));
    let late = missed.started - first.started;
    assert!(
        late.as_secs() >= 35 - 10 && late.as_secs() <= 35 + 10,
        "{late:?}"
    );
    assert_eq!(monitor.state("backup"), Some(HealthState::Unhealthy));

    assert_eq!(monitor.heartbeat(TOKEN).unwrap(), "backup");
    assert!(monitor.heartbeat("not-the-token-0123456789").is_err());
    let next = results.recv().await.unwrap();
    assert!(next.result.is_success(), "{:?}", next.result);
    assert_eq!(monitor.state("backup"), Some(HealthState::Healthy));
    assert_eq!(monitor.heartbeats().evaluate("backup").unwrap().beats, 1);
}

#[test]
fn heartbeat_sections_are_checked_and_tokens_must_differ() {
    let text = |section: &str| {
        format!("[[target]]\nname = \"a\"\nkind = \"heartbeat\"\n[target.heartbeat]\n{section}\n")
    };
    let ok = MonitorConfig::from_str(
        &text("token = \"0123456789abcdef\"\ncron = \"0 3 * * *\"\ngrace = \"10m\""),
        None,
    );
    assert!(ok.is_ok(), "{ok:?}");

    let problems = |section: &str| {
        MonitorConfig::from_str(&text(section), None)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let p = problems("token = \"short\"\nevery = \"1m\"\ncron = \"0 * * * *\"");
    assert!(
        p.contains("target[0].heartbeat.token: must be at least 16"),
        "{p}"
    );
    assert!(p.contains("target[0].heartbeat.cron: give only one"), "{p}");
    let p = problems("token_env = \"RAMPART_MONITOR_TEST_UNSET_VARIABLE\"\ncron = \"61 * * * *\"");
    assert!(
        p.contains("target[0].heartbeat.token_env: environment variable"),
        "{p}"
    );
    assert!(
        p.contains("target[0].heartbeat.cron: not a cron expression"),
        "{p}"
    );
    let p = problems("token = \"0123456789abcdef\"");
    assert!(
        p.contains("target[0].heartbeat: one of `every` or `cron`"),
        "{p}"
    );

    let two = "[[target]]\nname = \"a\"\nkind = \"heartbeat\"\n[target.heartbeat]\n\
               token = \"0123456789abcdef\"\nevery = \"1m\"\n\
               [[target]]\nname = \"b\"\nkind = \"heartbeat\"\n[target.heartbeat]\n\
               token = \"0123456789abcdef\"\nevery = \"1h\"\n";
    let err = MonitorConfig::from_str(two, None).unwrap_err().to_string();
    assert!(
        err.contains("target[1].heartbeat.token") && err.contains("target[0]'s"),
        "{err}"
    );
    assert!(!err.contains("0123456789abcdef"), "{err}");
}
