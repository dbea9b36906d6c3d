#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The alert engine's logic: lifecycle, `for` and N-of-M, grouping and its timings, routing,
//! silences, maintenance windows, inhibition by dependency, acknowledgement and escalation.
//! The engine reads no clock, so every test moves `now` by hand.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rampart_monitor::alert::{
    AlertEngine, AlertState, AlertStatus, Condition, EngineConfig, EscalationPolicy,
    EscalationTier, GroupBy, MaintenanceWindow, Matcher, Notification, Route, Rule, Schedule,
    Severity, Silence, TargetInfo,
};
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{FailureKind, ProbeResult};
use tokio::time::Instant;

const S: Duration = Duration::from_secs(1);

fn wall0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn target(name: &str, group: &str, parents: &[&str]) -> TargetInfo {
    TargetInfo {
        name: name.into(),
        group: group.into(),
        kind: "http".into(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
    }
}

fn down_rule() -> Rule {
    Rule::new("TargetDown", Condition::State(vec![HealthState::Unhealthy]))
        .with_severity(Severity::Critical)
}

/// Everything to `ops`, grouped by alertname, waiting `wait`, interval 60 s, repeat 1 h.
fn config(rules: Vec<Rule>, wait: Duration) -> EngineConfig {
    let mut c = EngineConfig::new(rules, "ops");
    c.route = Route::root("ops").with_timings(wait, 60 * S, 3600 * S);
    c
}

struct Clock {
    t0: Instant,
}

impl Clock {
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }
}

fn engine(config: EngineConfig, targets: &[TargetInfo]) -> (AlertEngine, Clock) {
    let t0 = Instant::now();
    (AlertEngine::new(config, targets, t0, wall0()), Clock { t0 })
}

fn ok() -> ProbeResult {
    ProbeResult::success(Duration::from_millis(5))
}

fn fail() -> ProbeResult {
    ProbeResult::failure(
        FailureKind::ConnectRefused,
        "refused",
        Duration::from_millis(1),
    )
}

fn down(e: &mut AlertEngine, name: &str, now: Instant) {
    e.observe(name, &fail(), HealthState::Unhealthy, Some(0), now);
}

fn up(e: &mut AlertEngine, name: &str, now: Instant) {
    e.observe(name, &ok(), HealthState::Healthy, Some(100), now);
}

/// (receiver, status, [(target, status)]) of each notification, alerts sorted by target.
type Shape = Vec<(String, AlertStatus, Vec<(String, AlertStatus)>)>;

fn shape(ns: &[Notification]) -> Shape {
    ns.iter()
        .map(|n| {
            let mut alerts: Vec<(String, AlertStatus)> = n
                .alerts
                .iter()
                .map(|a| (a.target().unwrap_or("").to_owned(), a.status))
                .collect();
            alerts.sort();
            (n.receiver.clone(), n.status, alerts)
        })
        .collect()
}

fn firing(t: &str) -> (String, AlertStatus) {
    (t.to_owned(), AlertStatus::Firing)
}

fn resolved(t: &str) -> (String, AlertStatus) {
    (t.to_owned(), AlertStatus::Resolved)
}

#[test]
fn an_alert_fires_after_group_wait_and_resolves_at_the_next_interval() {
    let (mut e, c) = engine(config(vec![down_rule()], 30 * S), &[target("api", "", &[])]);
    down(&mut e, "api", c.at(0));
    assert_eq!(e.alerts(c.at(0))[0].state, AlertState::Firing);
    assert!(
        e.flush(c.at(0)).is_empty(),
        "group_wait holds the first notification"
    );
    assert!(e.flush(c.at(29)).is_empty());
    let sent = e.flush(c.at(30));
    assert_eq!(
        shape(&sent),
        [("ops".into(), AlertStatus::Firing, vec![firing("api")])]
    );
    let a = &sent[0].alerts[0];
    assert_eq!(a.labels["alertname"], "TargetDown");
    assert_eq!(a.labels["severity"], "critical");
    assert_eq!(a.starts_at, wall0());
    assert_eq!(a.summary(), "TargetDown on api");
    // Nothing new: nothing sent until the repeat interval.
    assert!(e.flush(c.at(90)).is_empty());

    up(&mut e, "api", c.at(100));
    assert_eq!(e.alerts(c.at(100))[0].state, AlertState::Resolved);
    // The group's interval runs from its last flush at 90 s.
    assert!(e.flush(c.at(149)).is_empty());
    let sent = e.flush(c.at(150));
    assert_eq!(
        shape(&sent),
        [("ops".into(), AlertStatus::Resolved, vec![resolved("api")])]
    );
    assert_eq!(
        sent[0].alerts[0].ends_at,
        Some(wall0() + chrono::Duration::seconds(100))
    );
    assert!(
        e.alerts(c.at(150)).is_empty(),
        "a resolved alert is gone once notified"
    );
    assert!(e.flush(c.at(10_000)).is_empty());
}

#[test]
fn an_unchanged_group_is_sent_again_after_the_repeat_interval() {
    let (mut e, c) = engine(
        config(vec![down_rule()], Duration::ZERO),
        &[target("api", "", &[])],
    );
    down(&mut e, "api", c.at(0));
    assert_eq!(e.flush(c.at(0)).len(), 1);
    let mut t = 60;
    let mut repeats = Vec::new();
    while t <= 7200 {
        for n in e.flush(c.at(t)) {
            repeats.push((t, n.status));
        }
        t += 60;
    }
    assert_eq!(
        repeats,
        [(3600, AlertStatus::Firing), (7200, AlertStatus::Firing)]
    );
}

#[test]
fn pending_alerts_fire_only_after_their_for_duration() {
    let rule = down_rule().with_for(120 * S);
    let (mut e, c) = engine(
        config(vec![rule], Duration::ZERO),
        &[target("api", "", &[])],
    );
    down(&mut e, "api", c.at(0));
    assert_eq!(e.alerts(c.at(0))[0].state, AlertState::Pending);
    assert!(
        e.flush(c.at(0)).is_empty(),
        "pending alerts are not notified"
    );
    // Recovered before `for` ran out: the pending alert is dropped without a word.
    up(&mut e, "api", c.at(60));
    assert!(e.alerts(c.at(60)).is_empty());
    down(&mut e, "api", c.at(100));
    e.evaluate_all(c.at(219));
    assert_eq!(e.alerts(c.at(219))[0].state, AlertState::Pending);
    // Time alone fires it: no new result needed.
    e.evaluate_all(c.at(220));
    assert_eq!(e.alerts(c.at(220))[0].state, AlertState::Firing);
    assert_eq!(e.flush(c.at(220)).len(), 1);
}

#[test]
fn n_of_m_fires_on_a_flapping_target() {
    let flapping = Rule::new(
        "Flapping",
        Condition::ErrorRate {
            above: 0.0,
            window: Duration::ZERO,
            min_samples: 0,
        },
    );
    // A window of zero sees only the newest result: "this result failed".
    let rule = flapping.with_n_of_m(3, 5);
    let (mut e, c) = engine(
        config(vec![rule], Duration::ZERO),
        &[target("api", "", &[])],
    );
    let mut t = 0;
    let feed = |e: &mut AlertEngine, t: &mut u64, ok_: bool| {
        let r = if ok_ { ok() } else { fail() };
        e.observe("api", &r, HealthState::Healthy, Some(100), c.at(*t));
        *t += 1;
    };
    for ok_ in [false, true, false, true] {
        feed(&mut e, &mut t, ok_);
    }
    assert!(e.alerts(c.at(t)).is_empty(), "two of the last five failed");
    feed(&mut e, &mut t, false);
    assert_eq!(
        e.alerts(c.at(t))[0].state,
        AlertState::Firing,
        "three of five"
    );
    for _ in 0..3 {
        feed(&mut e, &mut t, true);
    }
    assert_eq!(
        e.alerts(c.at(t))[0].state,
        AlertState::Resolved,
        "one of the last five failed"
    );
}

#[test]
fn alerts_of_a_group_go_out_together_and_late_joiners_wait_for_the_interval() {
    let targets = [
        target("a", "shop", &[]),
        target("b", "shop", &[]),
        target("c", "shop", &[]),
    ];
    let (mut e, c) = engine(config(vec![down_rule()], 10 * S), &targets);
    down(&mut e, "a", c.at(0));
    down(&mut e, "b", c.at(5));
    let sent = e.flush(c.at(10));
    assert_eq!(
        shape(&sent),
        [(
            "ops".into(),
            AlertStatus::Firing,
            vec![firing("a"), firing("b")]
        )]
    );
    assert_eq!(sent[0].title(), "[FIRING:2] TargetDown");
    down(&mut e, "c", c.at(20));
    assert!(
        e.flush(c.at(20)).is_empty(),
        "a joiner waits for group_interval"
    );
    let sent = e.flush(c.at(70));
    assert_eq!(
        shape(&sent),
        [(
            "ops".into(),
            AlertStatus::Firing,
            vec![firing("a"), firing("b"), firing("c")]
        )]
    );
    // One resolves: the group reports it resolved with the others still firing.
    up(&mut e, "a", c.at(80));
    let sent = e.flush(c.at(130));
    assert_eq!(
        shape(&sent),
        [(
            "ops".into(),
            AlertStatus::Firing,
            vec![resolved("a"), firing("b"), firing("c")]
        )]
    );
}

#[test]
fn group_by_splits_groups_and_routes_send_to_every_matching_receiver() {
    let mut c = EngineConfig::new(vec![down_rule()], "ops");
    c.route = Route::root("ops")
        .with_timings(Duration::ZERO, 60 * S, 3600 * S)
        .with_group_by(GroupBy::Labels(vec!["group".into()]))
        .with_child(
            vec![Matcher::parse("severity=critical").unwrap()],
            "pager",
            |r| Route {
                continue_matching: true,
                ..r
            },
        )
        .with_child(
            vec![Matcher::parse("group=pay").unwrap()],
            "payments",
            |r| r,
        );
    let targets = [target("a", "shop", &[]), target("b", "pay", &[])];
    let (mut e, clock) = engine(c, &targets);
    down(&mut e, "a", clock.at(0));
    down(&mut e, "b", clock.at(0));
    let mut sent = shape(&e.flush(clock.at(0)));
    sent.sort();
    assert_eq!(
        sent,
        [
            ("pager".into(), AlertStatus::Firing, vec![firing("a")]),
            ("pager".into(), AlertStatus::Firing, vec![firing("b")]),
            ("payments".into(), AlertStatus::Firing, vec![firing("b")]),
        ]
    );
}

fn silence(matcher: &str, from: i64, to: i64) -> Silence {
    Silence {
        id: format!("s-{matcher}"),
        matchers: vec![Matcher::parse(matcher).unwrap()],
        starts_at: wall0() + chrono::Duration::seconds(from),
        ends_at: wall0() + chrono::Duration::seconds(to),
        created_by: "ana".into(),
        comment: "deploy".into(),
        updated_at: wall0(),
    }
}

#[test]
fn silenced_alerts_wait_and_notified_ones_still_get_their_resolve() {
    let targets = [target("a", "", &[]), target("b", "", &[])];
    let (mut e, c) = engine(config(vec![down_rule()], Duration::ZERO), &targets);
    // `a` is notified before any silence.
    down(&mut e, "a", c.at(0));
    assert_eq!(e.flush(c.at(0)).len(), 1);
    e.put_silence(silence("target=~a|b", 10, 200));
    down(&mut e, "b", c.at(20));
    assert!(
        e.flush(c.at(60)).is_empty(),
        "b is silenced, a is unchanged"
    );
    let view = e
        .alert(&e.alerts(c.at(60))[1].fingerprint.to_string(), c.at(60))
        .unwrap();
    assert_eq!(view.silenced_by, ["s-target=~a|b"]);
    // `a` resolves while silenced: its resolve goes out all the same.
    up(&mut e, "a", c.at(70));
    assert_eq!(
        shape(&e.flush(c.at(120))),
        [("ops".into(), AlertStatus::Resolved, vec![resolved("a")])]
    );
    // Expiring the silence releases `b` at the next flush.
    e.expire_silence("s-target=~a|b", c.at(130));
    assert_eq!(
        shape(&e.flush(c.at(180))),
        [("ops".into(), AlertStatus::Firing, vec![firing("b")])]
    );
}

#[test]
fn maintenance_windows_hold_back_matching_alerts() {
    let mut cfg = config(vec![down_rule()], Duration::ZERO);
    cfg.maintenance.push(MaintenanceWindow {
        name: "db upgrade".into(),
        matchers: vec![Matcher::parse("target=db").unwrap()],
        schedule: Schedule::Once {
            start: wall0(),
            end: wall0() + chrono::Duration::seconds(100),
        },
    });
    let (mut e, c) = engine(cfg, &[target("db", "", &[])]);
    down(&mut e, "db", c.at(0));
    assert!(e.flush(c.at(0)).is_empty());
    assert_eq!(e.alerts(c.at(0))[0].silenced_by, ["maintenance:db upgrade"]);
    assert!(e.flush(c.at(60)).is_empty());
    assert_eq!(e.flush(c.at(120)).len(), 1, "the window is over");
}

#[test]
fn a_firing_parent_holds_back_its_dependents_until_it_resolves() {
    let targets = [
        target("db", "", &[]),
        target("api", "", &["db"]),
        target("web", "", &["api"]),
    ];
    let (mut e, c) = engine(config(vec![down_rule()], Duration::ZERO), &targets);
    // `web` fired and was notified before its grandparent went down.
    down(&mut e, "web", c.at(0));
    assert_eq!(e.flush(c.at(0)).len(), 1);
    down(&mut e, "db", c.at(10));
    down(&mut e, "api", c.at(10));
    let sent = e.flush(c.at(60));
    assert_eq!(
        shape(&sent),
        [("ops".into(), AlertStatus::Firing, vec![firing("db")])],
        "api is held back by db; web, already notified, is not repeated"
    );
    let api = e
        .alerts(c.at(60))
        .into_iter()
        .find(|a| a.target == "api")
        .unwrap();
    assert_eq!(api.inhibited_by.as_deref(), Some("db"));
    // `web` resolves while inhibited: its resolve still goes out.
    up(&mut e, "web", c.at(70));
    assert_eq!(
        shape(&e.flush(c.at(120))),
        [(
            "ops".into(),
            AlertStatus::Firing,
            vec![firing("db"), resolved("web")]
        )]
    );
    // `db` recovers, `api` is still down: now `api` is notified.
    up(&mut e, "db", c.at(130));
    assert_eq!(
        shape(&e.flush(c.at(180))),
        [(
            "ops".into(),
            AlertStatus::Firing,
            vec![firing("api"), resolved("db")]
        )]
    );
}

#[test]
fn unacknowledged_alerts_escalate_tier_by_tier_and_acknowledging_stops_it() {
    let mut cfg = config(vec![down_rule()], Duration::ZERO);
    cfg.route = cfg.route.with_escalation("oncall");
    cfg.escalations = BTreeMap::from([(
        "oncall".to_owned(),
        EscalationPolicy {
            tiers: vec![
                EscalationTier {
                    after: 300 * S,
                    receivers: vec!["lead".into()],
                },
                EscalationTier {
                    after: 900 * S,
                    receivers: vec!["cto".into()],
                },
            ],
        },
    )]);
    let (mut e, c) = engine(cfg, &[target("api", "", &[]), target("db", "", &[])]);
    down(&mut e, "api", c.at(0));
    assert_eq!(e.flush(c.at(0)).len(), 1);
    assert!(e.flush(c.at(299)).is_empty());
    let sent = e.flush(c.at(300));
    assert_eq!(
        shape(&sent),
        [("lead".into(), AlertStatus::Firing, vec![firing("api")])]
    );
    assert_eq!(sent[0].tier, 1);
    let fp = e.alerts(c.at(300))[0].fingerprint.to_string();
    let view = e
        .acknowledge(&fp, "ana", Some("looking".into()), c.at(400))
        .unwrap();
    assert_eq!(view.acknowledged.as_ref().unwrap().by, "ana");
    // The ack goes out at once to the route's receiver, marked acknowledged.
    let sent = e.flush(c.at(400));
    assert_eq!(
        shape(&sent),
        [("ops".into(), AlertStatus::Firing, vec![firing("api")])]
    );
    assert!(sent[0].alerts[0].acknowledged.is_some());
    // No second tier after an ack.
    for t in (460..2000).step_by(60) {
        assert!(e.flush(c.at(t)).is_empty(), "at {t} s");
    }
    // The resolve reaches the route's receiver and the tier that was paged.
    up(&mut e, "api", c.at(2000));
    let mut sent = shape(&e.flush(c.at(2020)));
    sent.sort();
    assert_eq!(
        sent,
        [
            ("lead".into(), AlertStatus::Resolved, vec![resolved("api")]),
            ("ops".into(), AlertStatus::Resolved, vec![resolved("api")]),
        ]
    );
    // Acknowledging what does not fire is refused.
    assert!(e.acknowledge(&fp, "ana", None, c.at(2100)).is_err());
    down(&mut e, "db", c.at(2100));
    let fp_db = e.alerts(c.at(2100))[0].fingerprint.to_string();
    e.flush(c.at(2100));
    // Unacknowledged, `db` goes through both tiers.
    let mut tiers = Vec::new();
    for t in (2100..3100).step_by(10) {
        for n in e.flush(c.at(t)) {
            tiers.push((n.receiver, n.tier, t));
        }
    }
    assert_eq!(
        tiers,
        [("lead".into(), 1, 2400), ("cto".into(), 2, 3000)],
        "{fp_db}"
    );
}

#[test]
fn removed_targets_resolve_their_alerts() {
    let (mut e, c) = engine(
        config(vec![down_rule()], Duration::ZERO),
        &[target("api", "", &[])],
    );
    down(&mut e, "api", c.at(0));
    assert_eq!(e.flush(c.at(0)).len(), 1);
    e.set_targets(&[], c.at(10));
    assert_eq!(
        shape(&e.flush(c.at(60))),
        [("ops".into(), AlertStatus::Resolved, vec![resolved("api")])]
    );
}

#[test]
fn annotations_are_rendered_with_the_value() {
    let rule = Rule::new(
        "Slow",
        Condition::Latency {
            percentile: 50.0,
            above: Duration::from_millis(100),
            window: 60 * S,
            min_samples: 1,
        },
    )
    .with_label("team", "web")
    .with_annotation(
        "summary",
        rampart_monitor::alert::Template::parse(
            "{{ target }} p50 {{ value }} ms for {{ labels.team }}",
        )
        .unwrap(),
    );
    let (mut e, c) = engine(
        config(vec![rule], Duration::ZERO),
        &[target("api", "", &[])],
    );
    e.observe(
        "api",
        &ProbeResult::success(Duration::from_millis(250)),
        HealthState::Healthy,
        Some(100),
        c.at(0),
    );
    let sent = e.flush(c.at(0));
    assert_eq!(sent[0].alerts[0].summary(), "api p50 250 ms for web");
    assert_eq!(sent[0].alerts[0].value, Some(250.0));
}

#[test]
fn a_reported_bottleneck_fires_for_its_window_then_resolves() {
    let rule = Rule::new("Bottleneck", Condition::Bottleneck { window: 300 * S });
    let (mut e, c) = engine(config(vec![rule], Duration::ZERO), &[target("db", "", &[])]);
    up(&mut e, "db", c.at(0));
    assert!(e.alerts(c.at(0)).is_empty());
    e.observe_bottleneck("db", c.at(10));
    assert_eq!(
        shape(&e.flush(c.at(10))),
        [("ops".into(), AlertStatus::Firing, vec![firing("db")])]
    );
    e.evaluate_all(c.at(310));
    assert_eq!(
        e.alerts(c.at(310))[0].state,
        AlertState::Firing,
        "within the window"
    );
    e.evaluate_all(c.at(311));
    assert_eq!(e.alerts(c.at(311))[0].state, AlertState::Resolved);
    // Unknown targets are ignored.
    e.observe_bottleneck("nope", c.at(400));
}
