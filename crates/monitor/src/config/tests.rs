#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn problems(text: &str) -> Vec<(String, String)> {
    MonitorConfig::from_str(text, Some("m.toml"))
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

fn has(problems: &[(String, String)], path: &str, needle: &str) -> bool {
    problems
        .iter()
        .any(|(p, m)| p == path && m.contains(needle))
}

#[test]
fn reads_a_full_target_with_defaults_applied() {
    let c = MonitorConfig::from_str(
        r#"
        [defaults]
        interval = "20s"
        timeout = "4s"
        failures_to_unhealthy = 5

        [[target]]
        name = "db"
        kind = "tcp"
        [target.tcp]
        address = "127.0.0.1:5432"

        [[target]]
        name = "api"
        group = "web"
        kind = "http"
        interval = "10s"
        timeout = "2s"
        weight = 2.5
        depends_on = ["db"]
        [target.thresholds]
        successes_to_healthy = 4
        degraded_latency = "500ms"
        [target.http]
        url = "http://127.0.0.1:8080/health"
        method = "POST"
        headers = { "x-probe" = "rampart" }
        body = "{}"
        expected_status = [200, "3xx", "404-410"]
        body_contains = "ok"
        body_regex = "^o"
        json_pointer = { pointer = "/status", equals = "ok" }
        max_redirects = 2
        keep_alive = true
        "#,
        None,
    )
    .unwrap();
    let db = &c.targets[0];
    assert_eq!(
        (db.interval, db.timeout),
        (Duration::from_secs(20), Duration::from_secs(4))
    );
    assert_eq!(db.thresholds, Thresholds::new(5, 2));
    assert_eq!(db.group, "default");
    let api = &c.targets[1];
    assert_eq!(api.group, "web");
    assert_eq!(api.weight, 2.5);
    assert_eq!(api.depends_on, ["db"]);
    assert_eq!(
        api.thresholds,
        Thresholds::new(5, 4).with_degraded_latency(Duration::from_millis(500))
    );
    let CheckConfig::Http(h) = &api.check else {
        panic!("http")
    };
    assert_eq!(h.method, Method::POST);
    assert_eq!(
        h.expected_status,
        [
            StatusRange::new(200, 200),
            StatusRange::new(300, 399),
            StatusRange::new(404, 410)
        ]
    );
    assert_eq!(h.headers[0].0.as_str(), "x-probe");
    assert_eq!(
        h.json_pointer.as_ref().unwrap().equals,
        serde_json::json!("ok")
    );
    assert_eq!((h.max_redirects, h.keep_alive), (2, true));
    assert_eq!(api.check.host(), "127.0.0.1:8080");
    assert_eq!(c.groups()["web"], ["api"]);
}

#[test]
fn reports_every_problem_with_its_path() {
    let p = problems(
        r#"
        [defaults]
        interval = "soon"

        [[target]]
        name = "a"
        kind = "gopher"

        [[target]]
        name = "a"
        kind = "http"
        interval = "500ms"
        timeout = "1s"
        colour = "red"
        [target.http]
        url = "not a url"
        expected_status = [999]
        body_regex = "(unclosed"
        method = "GE T"
        [target.tcp]
        address = "x:1"

        [[target]]
        name = "c"
        kind = "tcp"
        timeout = "40s"
        depends_on = ["c", "nobody"]

        [[target]]
        name = "d"
        kind = "http"
        [target.http]
        url = "ftp://example.com/"
        "#,
    );
    for (path, needle) in [
        ("defaults.interval", "invalid duration"),
        ("target[0].kind", "expected one of http, tcp"),
        ("target[1].colour", "unknown field"),
        ("target[1].http.url", "not an absolute http(s) URL"),
        ("target[1].http.expected_status[0]", "100-599"),
        ("target[1].http.body_regex", "invalid regex"),
        ("target[1].http.method", "not an HTTP method"),
        ("target[1].tcp", "section for kind \"tcp\""),
        ("target[2].tcp", "section is missing"),
        ("target[3].http.url", "not an absolute http(s) URL"),
    ] {
        assert!(has(&p, path, needle), "{path}: {needle} not in {p:#?}");
    }
}

#[test]
fn cross_target_checks_report_duplicates_self_unknown_cycles_and_timing() {
    let tcp = |n: &str| TargetConfig::new(n, CheckConfig::Tcp(TcpCheck::new("127.0.0.1:1")));
    let err = MonitorConfig::new(vec![
        tcp("a").depends_on("b"),
        tcp("b").depends_on("c"),
        tcp("c").depends_on("a"),
        tcp("a").depends_on("a").depends_on("zz"),
        tcp("e").with_timing(Duration::from_millis(10), Duration::from_secs(1)),
        tcp("f").with_weight(0.0).with_thresholds(Thresholds {
            failures_to_unhealthy: 0,
            ..Thresholds::default()
        }),
    ])
    .unwrap_err();
    let p: Vec<(String, String)> = err
        .problems
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect();
    for (path, needle) in [
        (
            "target[3].name",
            "duplicate name \"a\", also used by target[0]",
        ),
        ("target[3].depends_on[0]", "cannot depend on itself"),
        ("target[3].depends_on[1]", "no target is named \"zz\""),
        ("target[0].depends_on", "dependency cycle: a -> b -> c -> a"),
        ("target[4].interval", "at least 1s, got 10ms"),
        ("target[4].timeout", "must not exceed the interval"),
        ("target[5].weight", "positive"),
        ("target[5].thresholds.failures_to_unhealthy", "at least 1"),
    ] {
        assert!(has(&p, path, needle), "{path}: {needle} not in {p:#?}");
    }
}

#[test]
fn nested_unknown_and_missing_keys_are_reported_under_their_section() {
    let p = problems(
        r#"
        [[target]]
        name = "a"
        kind = "http"
        [target.thresholds]
        failures = 3
        [target.http]
        url = "http://h/"
        expected_stat = [200]

        [[target]]
        kind = "tcp"

        [nonsense]
        "#,
    );
    assert!(
        has(&p, "target[0].thresholds.failures", "unknown field"),
        "{p:#?}"
    );
    assert!(
        has(&p, "target[0].http.expected_stat", "unknown field"),
        "{p:#?}"
    );
    assert!(has(&p, "target[1]", "missing field `name`"), "{p:#?}");
    assert!(has(&p, "nonsense", "unknown key"), "{p:#?}");
}

#[test]
fn syntax_errors_and_unreadable_files_are_problems_too() {
    assert!(has(&problems("[[target]\n"), "(syntax)", ""));
    let err = MonitorConfig::from_file("/nonexistent/monitor.toml").unwrap_err();
    assert_eq!(err.problems[0].path, "(file)");
}

#[test]
fn looks_like_tells_monitor_files_from_resilience_files() {
    assert!(MonitorConfig::looks_like("[[target]]\nname = \"a\"\n"));
    assert!(MonitorConfig::looks_like("[defaults]\ninterval = \"5s\"\n"));
    assert!(!MonitorConfig::looks_like(
        "[breaker.a]\nfailure_rate = 0.5\n"
    ));
}

#[test]
fn tls_sections_are_read_with_defaults_and_every_problem_reported() {
    let c = MonitorConfig::from_str(
        "[[target]]\nname = \"a\"\nkind = \"tls\"\n[target.tls]\naddress = \"example.com:443\"\n",
        None,
    )
    .unwrap();
    let CheckConfig::Tls(t) = &c.targets[0].check else {
        panic!("{:?}", c.targets[0].check)
    };
    assert_eq!(
        (t.server_name.as_str(), t.warn_days, t.min_days),
        ("example.com", 30, 7)
    );
    assert_eq!(c.targets[0].check.host(), "example.com:443");

    let p = problems(
        r#"
        [[target]]
        name = "a"
        kind = "tls"
        [target.tls]
        address = "example.com"
        server_name = "not a name"
        warn_days = 5
        min_days = 10
        ca_file = "/nonexistent/ca.pem"

        [[target]]
        name = "b"
        kind = "tls"
        [target.tcp]
        address = "h:1"
        "#,
    );
    for (path, needle) in [
        ("target[0].tls.address", "host:port"),
        ("target[0].tls.server_name", "not a DNS name"),
        ("target[0].tls.min_days", "must not exceed warn_days (5)"),
        ("target[0].tls.ca_file", "cannot read"),
        ("target[1].tcp", "the target's kind is \"tls\""),
        ("target[1].tls", "section is missing"),
    ] {
        assert!(has(&p, path, needle), "{path}: {p:#?}");
    }
}

#[test]
fn postgres_sections_take_the_url_one_way_and_report_every_problem() {
    let c = MonitorConfig::from_str(
        "[[target]]\nname = \"db\"\nkind = \"postgres\"\n[target.postgres]\n\
         url = \"postgres://app:pw@db.internal/app\"\n",
        None,
    )
    .unwrap();
    let CheckConfig::Postgres(p) = &c.targets[0].check else {
        panic!("{:?}", c.targets[0].check)
    };
    assert_eq!(
        (p.query.as_str(), p.role, p.fresh_connection),
        ("SELECT 1", None, false)
    );
    assert_eq!(c.targets[0].check.host(), "db.internal:5432");
    assert!(!format!("{c:?}").contains("pw@"));

    let p = problems(
        r#"
        [[target]]
        name = "a"
        kind = "postgres"
        [target.postgres]
        url = "postgres://h/db"
        url_env = "PG_URL"
        role = "leader"
        query = " "

        [[target]]
        name = "b"
        kind = "postgres"
        [target.postgres]
        url_env = "RAMPART_MONITOR_TEST_UNSET_VARIABLE"

        [[target]]
        name = "c"
        kind = "postgres"
        [target.postgres]
        url_file = "/nonexistent/pg-url"

        [[target]]
        name = "d"
        kind = "postgres"
        [target.postgres]
        query = "SELECT 1"
        "#,
    );
    for (path, needle) in [
        ("target[0].postgres.url", "only one of"),
        ("target[0].postgres.role", "\"primary\" or \"replica\""),
        ("target[0].postgres.query", "must not be empty"),
        ("target[1].postgres.url_env", "is not set"),
        ("target[2].postgres.url_file", "cannot read"),
        ("target[3].postgres.url", "is required"),
    ] {
        assert!(has(&p, path, needle), "{path}: {p:#?}");
    }
}

const ONE_TARGET: &str =
    "[[target]]\nname = \"db\"\nkind = \"tcp\"\n[target.tcp]\naddress = \"h:1\"\n";

#[test]
fn server_and_store_sections_are_read_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:9090\"\nwrite_token_file = {token:?}\n\
         [store]\npath = \"h.db\"\nretention = {{ raw = \"2d\" }}\n{ONE_TARGET}"
    );
    let c = MonitorConfig::from_str(&text, None).unwrap();
    let server = c.server.unwrap();
    assert_eq!(server.listen.port(), 9090);
    assert_eq!(server.write_token.unwrap().expose(), "s3cret");
    let store = c.store.unwrap();
    assert_eq!(store.path, std::path::Path::new("h.db"));
    assert_eq!(store.retention.raw, Duration::from_secs(2 * 86_400));
    assert_eq!(
        store.retention.minute,
        crate::store::Retention::default().minute
    );

    let c = MonitorConfig::from_str(&format!("[server]\n{ONE_TARGET}"), None).unwrap();
    assert_eq!(c.server.unwrap(), ServerConfig::default());
    assert!(c.store.is_none());
}

#[test]
fn server_and_store_problems_are_reported_with_their_paths() {
    let p = problems(&format!(
        "[server]\nlisten = \"nowhere\"\nwrite_token_env = \"RAMPART_TEST_NO_SUCH_VAR\"\nport = 1\n\
         [store]\npath = \"\"\nretention = {{ raw = \"soon\" }}\n{ONE_TARGET}"
    ));
    assert!(has(&p, "server.listen", "127.0.0.1:8080"), "{p:?}");
    assert!(
        has(&p, "server.write_token_env", "RAMPART_TEST_NO_SUCH_VAR"),
        "{p:?}"
    );
    assert!(has(&p, "server.port", "unknown field"), "{p:?}");
    assert!(has(&p, "store.path", "empty"), "{p:?}");
    assert!(has(&p, "store.retention.raw", ""), "{p:?}");
}
