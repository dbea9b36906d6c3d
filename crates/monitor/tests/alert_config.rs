#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `[alerting]` in a monitor configuration: a full example read into the engine's settings, and
//! a broken one whose every problem is reported with its key path.

use std::time::Duration;

use rampart_monitor::alert::{Condition, GroupBy, Severity};
use rampart_monitor::config::MonitorConfig;

const TARGETS: &str = r#"
[[target]]
name = "api"
group = "shop"
kind = "tcp"
[target.tcp]
address = "127.0.0.1:1"
"#;

#[test]
fn a_full_alerting_section_is_read() {
    let text = format!(
        r#"{TARGETS}
[alerting]
external_url = "http://rampart.example:8080"
default_rules = {{ TargetDegraded = false, BottleneckDetected = false }}

[[alerting.rule]]
name = "CheckoutSlow"
condition = {{ kind = "latency", percentile = 95, above = "300ms", window = "2m" }}
for = "1m"
severity = "critical"
matchers = ["group=shop"]
labels = {{ team = "web" }}
annotations = {{ summary = "{{{{ target }}}} p95 is {{{{ value }}}} ms" }}

[[alerting.rule]]
name = "TargetDown"
condition = {{ kind = "state", states = ["unhealthy", "unreachable"] }}
n_of_m = {{ at_least = 2, of = 3 }}
severity = "critical"

[alerting.route]
receiver = "ops"
group_by = ["alertname", "group"]
group_wait = "10s"
escalation = "oncall"

[[alerting.route.routes]]
matchers = ["severity=critical"]
receiver = "pager"
continue = true
repeat_interval = "1h"

[[alerting.route.routes]]
matchers = ["team=web"]
group_by = ["..."]

[[alerting.receiver]]
name = "ops"
webhook = {{ url = "http://127.0.0.1:9/hook" }}

[[alerting.receiver]]
name = "pager"
pagerduty = {{ routing_key = "R0UT1NGK3Y" }}

[[alerting.escalation]]
name = "oncall"
tiers = [{{ after = "15m", receivers = ["pager"] }}]

[[alerting.maintenance]]
name = "sunday backups"
matchers = ["group=db"]
cron = "0 2 * * SUN"
duration = "1h"

[[alerting.maintenance]]
name = "migration"
start = "2026-12-01T20:00:00Z"
end = "2026-12-01T22:00:00Z"
"#
    );
    let config = MonitorConfig::from_str(&text, Some("monitor.toml")).unwrap();
    let alerting = config.alerting.unwrap();
    let engine = &alerting.engine;
    let names: Vec<&str> = engine.rules.iter().map(|r| r.name()).collect();
    // Nine defaults, two off, one replaced by the file's own `TargetDown`; plus `CheckoutSlow`.
    assert_eq!(
        names,
        [
            "HealthScoreLow",
            "LatencyHigh",
            "ErrorRateHigh",
            "CertificateExpiringSoon",
            "CertificateExpiringCritical",
            "HeartbeatMissed",
            "CheckoutSlow",
            "TargetDown",
        ]
    );
    let slow = &engine.rules[6];
    assert_eq!(slow.severity(), Severity::Critical);
    assert_eq!(
        slow.condition(),
        &Condition::Latency {
            percentile: 95.0,
            above: Duration::from_millis(300),
            window: Duration::from_secs(120),
            min_samples: 5
        }
    );
    let route = &engine.route;
    assert_eq!(
        (route.receiver.as_str(), route.group_wait),
        ("ops", Duration::from_secs(10))
    );
    assert_eq!(route.routes[0].receiver, "pager");
    assert!(route.routes[0].continue_matching);
    assert_eq!(route.routes[0].repeat_interval, Duration::from_secs(3600));
    // Inherited from the root.
    assert_eq!(route.routes[0].group_wait, Duration::from_secs(10));
    assert_eq!(route.routes[0].escalation.as_deref(), Some("oncall"));
    assert_eq!(route.routes[1].receiver, "ops");
    assert_eq!(route.routes[1].group_by, GroupBy::All);
    assert_eq!(
        engine.escalations["oncall"].tiers[0].after,
        Duration::from_secs(900)
    );
    assert_eq!(engine.maintenance.len(), 2);
    assert_eq!(
        engine.external_url.as_deref(),
        Some("http://rampart.example:8080")
    );
    assert_eq!(alerting.receivers.len(), 2);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = format!(
        r#"{TARGETS}
[alerting]
colour = "red"
default_rules = {{ NoSuchRule = false }}

[[alerting.rule]]
name = "bad name!"
condition = {{ kind = "latency", above = "1s", percentile = 120, flavour = 1 }}
n_of_m = {{ at_least = 5, of = 3 }}
matchers = ["team=web"]
labels = {{ severity = "low" }}
annotations = {{ summary = "{{{{ tagret }}}}" }}

[[alerting.rule]]
name = "Unknown"
condition = {{ kind = "vibes" }}

[alerting.route]
receiver = "nobody"
escalation = "missing"

[[alerting.receiver]]
name = "ops"

[[alerting.receiver]]
name = "ops"

[[alerting.escalation]]
name = "e"
tiers = [{{ after = "10m", receivers = ["ops"] }}, {{ after = "5m", receivers = [] }}]

[[alerting.maintenance]]
name = "w"
start = "yesterday"
end = "2026-12-01T22:00:00Z"

[[alerting.maintenance]]
name = "x"
cron = "0 2 * * SUN"
"#
    );
    let err = MonitorConfig::from_str(&text, Some("monitor.toml")).unwrap_err();
    let shown = err.to_string();
    let expect = [
        "alerting.colour: unknown field",
        "alerting.default_rules.NoSuchRule: no default rule has this name",
        "alerting.rule[0].condition.flavour: unknown field",
        "alerting.rule[1].condition.kind: unknown variant `vibes`",
        "alerting.route.receiver: no receiver \"nobody\"; receivers are ops",
        "alerting.route.escalation: no [[alerting.escalation]] named \"missing\"",
        "alerting.receiver[1].name: receiver \"ops\" is defined twice",
        "alerting.escalation[0].tiers[1].after: tiers must come in increasing `after` order",
        "alerting.escalation[0].tiers[1].receivers: needs at least one receiver",
        "alerting.maintenance[0].start: \"yesterday\" is not an RFC 3339 time",
        "alerting.maintenance[1].duration: missing",
    ];
    for e in expect {
        assert!(shown.contains(e), "missing {e:?} in:\n{shown}");
    }
    assert!(shown.starts_with("monitor.toml: "), "{shown}");
}

#[test]
fn a_rule_with_bad_values_names_each_one() {
    let text = format!(
        r#"{TARGETS}
[[alerting.receiver]]
name = "ops"

[[alerting.rule]]
name = "bad name!"
condition = {{ kind = "latency", above = "1s", percentile = 120 }}
n_of_m = {{ at_least = 5, of = 3 }}
matchers = ["team=web"]
labels = {{ severity = "low" }}
annotations = {{ summary = "{{{{ tagret }}}}" }}
"#
    );
    let shown = MonitorConfig::from_str(&text, Some("m.toml"))
        .unwrap_err()
        .to_string();
    for e in [
        "alerting.rule[0].name: \"bad name!\" must be letters",
        "alerting.rule[0].condition.percentile: must be in (0, 100], got 120",
        "alerting.rule[0].n_of_m.at_least: must be between 1 and `of` (3), got 5",
        "alerting.rule[0].matchers: team=\"web\" selects by `team`",
        "alerting.rule[0].labels.severity: is set by the engine",
        "alerting.rule[0].annotations.summary: unknown placeholder `{{ tagret }}`",
    ] {
        assert!(shown.contains(e), "missing {e:?} in:\n{shown}");
    }
}

#[test]
fn the_guides_complete_example_is_valid() {
    let guide = include_str!("../../../docs/alerting.md");
    let start = guide
        .find("## A complete example")
        .expect("the guide has a complete example");
    let block = &guide[start..];
    let open = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let close = block[open..].find("```").expect("a closed block");
    // The example reads its secrets from the environment, as a deployment would; the test
    // writes them inline instead (the environment is the process's, shared by threads).
    let text = regex::Regex::new(r#"(\w+)_env = "[A-Z_]+""#)
        .unwrap()
        .replace_all(
            &block[open..open + close],
            r#"${1} = "https://example.com/secret-value""#,
        );
    let config =
        MonitorConfig::from_str(&text, Some("docs/alerting.md")).unwrap_or_else(|e| panic!("{e}"));
    let alerting = config.alerting.unwrap();
    assert_eq!(alerting.engine.rules.len(), 10);
    assert_eq!(alerting.receivers.len(), 4);
}
