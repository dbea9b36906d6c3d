//! PostgreSQL and Redis targets against real, throwaway servers: the server-side count matches
//! the schedule, values chain from a SQL row into a Redis command, SQL errors are counted by kind.
//! A missing server binary skips a test unless `RAMPART_REQUIRE_SERVERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rampart_load::config::ScenarioConfig;
use rampart_load::engine;
use rampart_testkit::require_server;
use rampart_testkit::server::{Postgres, Redis};

async fn redis_get(url: &str, cmd: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let mut c = redis::cmd(cmd[0]);
    for a in &cmd[1..] {
        c.arg(*a);
    }
    c.query_async(&mut con).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_arrive_on_schedule() {
    let server = require_server!(Redis::start().await);
    let url = server.url();
    let s = ScenarioConfig::scenario_from_toml(
        &format!(
            "rate = 100\nduration = \"1s\"\nconnections = 5\n[[request]]\nurl = \"{url}\"\ncommand = [\"INCR\", \"load:n\"]\n"
        ),
        None,
        None,
    )
    .unwrap();
    engine::preflight(&s, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let report = engine::run(s, |_| {}).await;
    assert_eq!(report.requests[0].name, "REDIS INCR load:n");
    assert_eq!(report.total.count, 100);
    assert_eq!(report.total.errors, 0);
    assert_eq!(
        redis_get(&url, &["GET", "load:n"]).await,
        redis::Value::BulkString(b"100".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_result_feeds_a_redis_command_and_sql_errors_count_as_query() {
    let pg = require_server!(Postgres::start().await);
    let rd = require_server!(Redis::start().await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pairs.csv"), "a,b\n1,2\n10,20\n100,200\n").unwrap();
    let toml = format!(
        r#"
vus = 1
duration = "600ms"
data = "pairs.csv"

[[request]]
name = "sum"
url = "{pg}"
query = "select ${{a}}::int + ${{b}}::int as sum"
extract = {{ sum = "/0/sum" }}

[[request]]
name = "store"
url = "{rd}"
command = ["RPUSH", "sums", "${{sum}}"]
"#,
        pg = pg.url(),
        rd = rd.url()
    );
    let s = ScenarioConfig::scenario_from_toml(&toml, None, Some(dir.path())).unwrap();
    let report = engine::run(s, |_| {}).await;
    assert_eq!(report.total.errors, 0, "{:?}", report.total.errors_by_kind);
    let stored = report.requests[1].count as usize;
    assert!(stored >= 3, "{stored}");
    let redis::Value::Array(list) = redis_get(&rd.url(), &["LRANGE", "sums", "0", "-1"]).await
    else {
        panic!("a list")
    };
    assert_eq!(list.len(), stored);
    for (i, v) in list.iter().enumerate() {
        let want = ["3", "30", "300"][i % 3];
        assert_eq!(
            v,
            &redis::Value::BulkString(want.as_bytes().to_vec()),
            "item {i}"
        );
    }

    let bad = ScenarioConfig::scenario_from_toml(
        &format!("rate = 20\nduration = \"500ms\"\nurl = \"{}\"\n", pg.url()).replace(
            "url =",
            "[[request]]\nquery = \"select no_such_column\"\nurl =",
        ),
        None,
        None,
    )
    .unwrap();
    let report = engine::run(bad, |_| {}).await;
    assert_eq!(report.total.count, 10);
    assert_eq!(report.total.errors_by_kind.get("query"), Some(&10));
}

#[test]
fn database_requests_are_checked() {
    let err = ScenarioConfig::scenario_from_toml(
        r#"
        rate = 1
        [[request]]
        url = "postgres://u@127.0.0.1/db"
        method = "POST"
        [[request]]
        url = "redis://127.0.0.1/"
        command = []
        query = "select 1"
        [[request]]
        url = "http://127.0.0.1/"
        command = ["GET", "k"]
        [[request]]
        url = "postgres://127.0.0.1/${db}"
        query = "select 1"
        [[request]]
        url = "postgres://127.0.0.1:99999/db"
        query = "select 1"
        "#,
        None,
        None,
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for key in [
        "request[0].method",
        "request[0].query",
        "request[1].command",
        "request[1].query",
        "request[2].command",
        "request[3].url",
    ] {
        assert!(keys.contains(&key), "{key} in {err}");
    }
}
