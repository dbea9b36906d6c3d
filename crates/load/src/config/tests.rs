use super::*;
use std::time::Duration;

fn build(toml: &str) -> Result<Scenario, ConfigError> {
    ScenarioConfig::scenario_from_toml(toml, Some("t.toml"), None)
}

#[test]
fn closed_model_with_stages_and_chained_variables() {
    let s = build(
        r#"
        think = "50ms"
        start = 1
        [variables]
        base = "http://127.0.0.1:9"
        [[stage]]
        duration = "2s"
        target = 4
        [[request]]
        name = "login"
        method = "POST"
        url = "${base}/login"
        body = '{"u":"x"}'
        extract = { token = "/token" }
        [[request]]
        url = "${base}/me?t=${token}"
        headers = { authorization = "Bearer ${token}" }
        "#,
    )
    .unwrap();
    assert_eq!(
        s.model,
        Model::Closed {
            think: Duration::from_millis(50)
        }
    );
    assert_eq!(s.schedule.target_at(Duration::from_secs(1)), 2.5);
    assert_eq!(s.requests[0].authority, "127.0.0.1:9");
    assert_eq!(s.requests[1].name, "GET /me?t=${token}");
    assert_eq!(
        s.requests[1].url.literal_prefix(),
        "http://127.0.0.1:9/me?t="
    );
    assert_eq!(s.authorities(), ["127.0.0.1:9"]);
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let err = build(
        r#"
        rate = 10
        vus = 3
        model = "sideways"
        timeout = "0s"
        connections = 0
        thresholds = ["p99<fast", "p99{nope}<1s", 7]
        colour = "blue"
        [[stage]]
        duration = "-1s"
        [[stage]]
        target = "high"
        [[request]]
        url = "https://x/"
        method = "G E T"
        [[request]]
        url = "http://h:1/${missing}"
        extract = { v = "nope" }
        [[request]]
        url = "http://${host}/"
        surprise = true
        "#,
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "model:",
        "timeout:",
        "connections:",
        "thresholds[0]:",
        "thresholds[1]:",
        "thresholds[2]:",
        "colour:",
        "stage[0].duration:",
        "stage[0].target: is required",
        "stage[1].target:",
        "stage[1].duration: is required",
        "request[0].url: TLS",
        "request[0].method:",
        "request[1].url: uses ${missing}",
        "request[1].extract.v:",
        "request[2].surprise:",
        "request[2].url: uses ${host}",
        "rate: sets an arrival rate",
        "vus: stages set",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn profiles_and_defaults() {
    let s = build(
        "url = \"http://127.0.0.1/\"\nrate = 10\nprofile = \"breakpoint\"\nduration = \"20s\"\n",
    )
    .unwrap();
    assert!(s.abort_on_fail);
    assert_eq!(s.schedule.total(), 100);
    assert_eq!(s.requests[0].authority, "127.0.0.1:80");
    let s =
        build("url = \"http://127.0.0.1/\"\nprofile = \"smoke\"\nmodel = \"closed\"\n").unwrap();
    assert_eq!(s.schedule.peak(), 1.0);
    assert_eq!(s.schedule.duration(), Duration::from_secs(10));
    let e = build("url = \"http://127.0.0.1/\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rate: is required"), "{e}");
}

#[test]
fn overlay_lets_flags_win() {
    let file = ScenarioConfig::from_toml_str(
        "rate = 5\nurl = \"http://a:1/\"\nthresholds = [\"p99<1s\"]\n",
        None,
    )
    .unwrap();
    let flags = ScenarioConfig {
        rate: Some(7.0),
        thresholds: vec!["max<2s".into()],
        ..Default::default()
    };
    let c = file.overlay(flags);
    assert_eq!(c.rate, Some(7.0));
    assert_eq!(c.thresholds.len(), 2);
    assert_eq!(c.url.as_deref(), Some("http://a:1/"));
}

#[test]
fn http_version_and_streams_are_checked() {
    let s = build("url = \"http://127.0.0.1/\"\nrate = 1\nhttp = \"2\"\n").unwrap();
    assert_eq!(s.http, HttpVersion::Http2);
    assert!(matches!(s.model, Model::Open { streams: 10, .. }));
    let e = build("url = \"http://127.0.0.1/\"\nrate = 1\nhttp = \"3\"\nstreams = 4\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http: must be") && e.contains("streams: only HTTP/2"),
        "{e}"
    );
    let e = build("url = \"http://127.0.0.1/\"\nrate = 1\nhttp = \"2\"\nstreams = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("streams: must be between 1 and 1000"), "{e}");
}

#[cfg(not(feature = "postgres"))]
#[test]
fn a_database_target_needs_its_feature() {
    let e =
        build("rate = 1\n[[request]]\nurl = \"postgres://127.0.0.1/db\"\nquery = \"select 1\"\n")
            .unwrap_err()
            .to_string();
    assert!(e.contains("no `postgres` feature"), "{e}");
}
