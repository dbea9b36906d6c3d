//! The PostgreSQL probe against throwaway servers from `rampart-testkit`.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rampart_monitor::Monitor;
use rampart_monitor::config::{ExpectedRole, MonitorConfig, PostgresCheck};
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{FailureKind, PostgresProbe, Probe};
use rampart_testkit::server::{Postgres, require_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

async fn sessions(server: &Postgres) -> String {
    let rows = server
        .query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rampart-monitor'")
        .await
        .unwrap();
    rows[0][0].clone().unwrap()
}

#[tokio::test]
async fn a_healthy_server_passes_with_version_and_role_on_one_kept_session() {
    let Some(server) = require_or_skip(Postgres::start().await) else {
        return;
    };
    let probe = PostgresProbe::new(PostgresCheck::new(server.url()));
    let first = probe.probe(TIMEOUT).await;
    assert!(first.is_success(), "{first:?}");
    assert!(first.phases.connect.is_some() && first.phases.query.is_some());
    assert!(!first.details.reused_connection);
    let version = first.details.server_version.clone().expect("a version");
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "{version}"
    );
    assert_eq!(first.details.role.as_deref(), Some("primary"));

    let second = probe.probe(TIMEOUT).await;
    assert!(second.is_success(), "{second:?}");
    assert!(second.details.reused_connection && second.phases.connect.is_none());
    assert_eq!(sessions(&server).await, "1");

    let mut fresh = PostgresCheck::new(server.url());
    fresh.fresh_connection = true;
    let probe = PostgresProbe::new(fresh);
    for _ in 0..2 {
        let r = probe.probe(TIMEOUT).await;
        assert!(r.is_success() && !r.details.reused_connection, "{r:?}");
        assert!(r.phases.connect.is_some());
    }
}

#[tokio::test]
async fn killed_is_refused_paused_is_a_timeout_and_a_restart_is_picked_up() {
    let Some(mut server) = require_or_skip(Postgres::start().await) else {
        return;
    };
    let kept = PostgresProbe::new(PostgresCheck::new(server.url()));
    assert!(kept.probe(TIMEOUT).await.is_success());

    // The kept connection dies with the server; after a restart the next probe replaces it and
    // passes: a stale connection is not reported as a failure of the server.
    server.kill().await.unwrap();
    server.restart().await.unwrap();
    let r = kept.probe(TIMEOUT).await;
    assert!(r.is_success() && !r.details.reused_connection, "{r:?}");

    server.pause().unwrap();
    let r = kept.probe(Duration::from_millis(500)).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Timeout), "{r:?}");
    assert!(r.latency < Duration::from_secs(1), "{r:?}");
    let mut fresh = PostgresCheck::new(server.url());
    fresh.fresh_connection = true;
    let fresh = PostgresProbe::new(fresh);
    let r = fresh.probe(Duration::from_millis(500)).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectTimeout), "{r:?}");
    server.resume().unwrap();

    server.kill().await.unwrap();
    let r = kept.probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectRefused), "{r:?}");

    server.restart().await.unwrap();
    let r = kept.probe(TIMEOUT).await;
    assert!(r.is_success(), "{r:?}");
}

#[tokio::test]
async fn unknown_user_bad_query_and_wrong_role_are_told_apart() {
    let Some(server) = require_or_skip(Postgres::start().await) else {
        return;
    };
    let url = format!("postgres://nobody@127.0.0.1:{}/postgres", server.port());
    let r = PostgresProbe::new(PostgresCheck::new(url))
        .probe(TIMEOUT)
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AuthFailed), "{r:?}");

    let mut bad = PostgresCheck::new(server.url());
    bad.query = "SELECT * FROM no_such_table".to_owned();
    let r = PostgresProbe::new(bad).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::QueryFailed), "{r:?}");

    let mut replica = PostgresCheck::new(server.url());
    replica.role = Some(ExpectedRole::Replica);
    let r = PostgresProbe::new(replica).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::RoleMismatch), "{r:?}");
    assert_eq!(r.details.role.as_deref(), Some("primary"));
}

/// The connection string comes from a file; the configuration's Debug output does not show it.
#[tokio::test]
async fn a_configured_target_reads_its_url_from_a_file_and_never_shows_it() {
    let Some(server) = require_or_skip(Postgres::start().await) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg-url");
    // Trust authentication ignores the password; it stands for a real one.
    let url = format!(
        "postgres://postgres:s3cret@127.0.0.1:{}/postgres",
        server.port()
    );
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let config = MonitorConfig::from_str(
        &format!(
            r#"
            [[target]]
            name = "db"
            kind = "postgres"
            interval = "1s"
            timeout = "1s"
            [target.postgres]
            url_file = {:?}
            role = "primary"
            "#,
            file.display().to_string()
        ),
        None,
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(
        config.targets[0].check.host(),
        format!("127.0.0.1:{}", server.port())
    );
    let monitor = Monitor::start(&config);
    let mut results = monitor.subscribe_results();
    let report = results.recv().await.unwrap();
    assert!(report.result.is_success(), "{:?}", report.result);
    assert_eq!(monitor.state("db"), Some(HealthState::Healthy));
}
