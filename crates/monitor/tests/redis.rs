//! The Redis probe against throwaway servers from `rampart-testkit`.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rampart_monitor::config::{ExpectedRole, MonitorConfig, RedisCheck};
use rampart_monitor::probe::{FailureKind, Probe, RedisProbe};
use rampart_testkit::server::{Redis, require_or_skip};

const TIMEOUT: Duration = Duration::from_secs(2);

fn command(url: &str, parts: &[&str], expect: Option<&str>) -> RedisCheck {
    let mut check = RedisCheck::new(url);
    check.command = parts.iter().map(|p| (*p).to_owned()).collect();
    check.expect = expect.map(str::to_owned);
    check
}

#[tokio::test]
async fn a_healthy_server_passes_with_version_and_role_on_one_kept_connection() {
    let Some(server) = require_or_skip(Redis::start().await) else {
        return;
    };
    let probe = RedisProbe::new(RedisCheck::new(server.url()));
    let first = probe.probe(TIMEOUT).await;
    assert!(first.is_success(), "{first:?}");
    assert!(first.phases.connect.is_some() && first.phases.query.is_some());
    let version = first.details.server_version.clone().expect("a version");
    assert!(
        version.starts_with(|c: char| c.is_ascii_digit()),
        "{version}"
    );
    assert_eq!(first.details.role.as_deref(), Some("primary"));
    let second = probe.probe(TIMEOUT).await;
    assert!(second.is_success(), "{second:?}");
    assert!(second.details.reused_connection && second.phases.connect.is_none());

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        clients.matches("name=rampart-monitor").count(),
        1,
        "{clients}"
    );
}

#[tokio::test]
async fn commands_are_checked_for_errors_replies_and_role() {
    let Some(server) = require_or_skip(Redis::start().await) else {
        return;
    };
    let url = server.url();
    let set = command(&url, &["SET", "probe:key", "v"], Some("OK"));
    assert!(RedisProbe::new(set).probe(TIMEOUT).await.is_success());
    let get = command(&url, &["GET", "probe:key"], Some("v"));
    assert!(RedisProbe::new(get).probe(TIMEOUT).await.is_success());

    let wrong = command(&url, &["GET", "probe:key"], Some("w"));
    let r = RedisProbe::new(wrong).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AnswerMismatch), "{r:?}");
    let unknown = command(&url, &["NO-SUCH-COMMAND"], None);
    let r = RedisProbe::new(unknown).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::QueryFailed), "{r:?}");

    let mut replica = RedisCheck::new(url);
    replica.role = Some(ExpectedRole::Replica);
    let r = RedisProbe::new(replica).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::RoleMismatch), "{r:?}");
    assert_eq!(r.details.role.as_deref(), Some("primary"));
}

#[tokio::test]
async fn missing_or_wrong_passwords_are_auth_failures() {
    let Some(server) = require_or_skip(Redis::start().await) else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    let fresh = |url: String| {
        let mut check = RedisCheck::new(url);
        check.fresh_connection = true;
        RedisProbe::new(check)
    };
    let r = fresh(server.url()).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AuthFailed), "{r:?}");
    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let r = fresh(wrong).probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AuthFailed), "{r:?}");
    let right = format!("redis://:s3cret@127.0.0.1:{}", server.port());
    let r = fresh(right).probe(TIMEOUT).await;
    assert!(r.is_success(), "{r:?}");
}

#[tokio::test]
async fn killed_is_refused_paused_is_a_timeout_and_a_restart_is_picked_up() {
    let Some(mut server) = require_or_skip(Redis::start().await) else {
        return;
    };
    let kept = RedisProbe::new(RedisCheck::new(server.url()));
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
    let mut fresh = RedisCheck::new(server.url());
    fresh.fresh_connection = true;
    let r = RedisProbe::new(fresh)
        .probe(Duration::from_millis(500))
        .await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectTimeout), "{r:?}");
    server.resume().unwrap();

    // The timed-out connection was dropped: this one is new, and works.
    assert!(kept.probe(TIMEOUT).await.is_success());
    server.kill().await.unwrap();
    let r = kept.probe(TIMEOUT).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::ConnectRefused), "{r:?}");
    server.restart().await.unwrap();
    let r = kept.probe(TIMEOUT).await;
    assert!(r.is_success(), "{r:?}");
}

#[test]
fn redis_sections_are_read_and_checked() {
    let c = MonitorConfig::from_str(
        "[[target]]\nname = \"cache\"\nkind = \"redis\"\n[target.redis]\n\
         url = \"redis://:pw@cache.internal\"\ncommand = [\"GET\", \"flag\"]\nexpect = \"on\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.targets[0].check.host(), "cache.internal:6379");
    assert!(!format!("{c:?}").contains(":pw@"));

    let err = MonitorConfig::from_str(
        "[[target]]\nname = \"cache\"\nkind = \"redis\"\n[target.redis]\n\
         url = \"http://nope\"\ncommand = []\nrole = \"master\"\n",
        None,
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for path in [
        "target[0].redis.url",
        "target[0].redis.command",
        "target[0].redis.role",
    ] {
        assert!(paths.contains(&path), "{path}: {err}");
    }
}
