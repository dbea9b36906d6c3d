#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::config::{CheckConfig, TcpCheck};
use crate::probe::FailureKind;

use HealthState::*;

fn tcp(name: &str) -> TargetConfig {
    TargetConfig::new(name, CheckConfig::Tcp(TcpCheck::new("h:1")))
}
fn ok() -> ProbeResult {
    ProbeResult::success(Duration::from_millis(10))
}
fn slow() -> ProbeResult {
    ProbeResult::success(Duration::from_secs(2))
}
fn fail() -> ProbeResult {
    ProbeResult::failure(FailureKind::Timeout, "timed out", Duration::from_secs(1))
}
fn model_of(t: TargetConfig) -> HealthModel {
    HealthModel::new(&[t])
}
/// Records `results` on target "a" and returns the shown state after each.
fn run(model: &mut HealthModel, results: &[ProbeResult]) -> Vec<HealthState> {
    results
        .iter()
        .map(|r| {
            model.record("a", r);
            model.state("a").unwrap()
        })
        .collect()
}

#[test]
fn starts_unknown_and_a_success_makes_it_healthy() {
    let mut m = model_of(tcp("a"));
    assert_eq!(m.state("a"), Some(Unknown));
    assert_eq!(m.score("a"), None);
    let changes = m.record("a", &ok());
    assert_eq!(m.state("a"), Some(Healthy));
    assert_eq!(
        changes,
        [StateChange {
            target: "a".into(),
            from: Unknown,
            to: Healthy,
            cause: ChangeCause::Probe { failure: None },
        }]
    );
}

#[test]
fn becomes_unhealthy_only_after_n_consecutive_failures() {
    let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(3, 2)));
    let states = run(
        &mut m,
        &[ok(), fail(), fail(), ok(), fail(), fail(), fail()],
    );
    assert_eq!(
        states,
        [
            Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy
        ]
    );
    let t = m.target("a").unwrap();
    assert_eq!(t.consecutive_failures, 3);
}

#[test]
fn failures_from_unknown_stay_unknown_until_the_threshold() {
    let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(2, 2)));
    assert_eq!(run(&mut m, &[fail(), fail()]), [Unknown, Unhealthy]);
}

#[test]
fn recovers_through_recovering_after_m_successes() {
    let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(1, 3)));
    let states = run(&mut m, &[fail(), ok(), ok(), ok(), ok()]);
    assert_eq!(
        states,
        [Unhealthy, Recovering, Recovering, Healthy, Healthy]
    );
}

#[test]
fn a_failure_while_recovering_goes_back_to_unhealthy_at_once() {
    let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(3, 2)));
    let states = run(&mut m, &[fail(), fail(), fail(), ok(), fail(), ok(), ok()]);
    assert_eq!(
        states,
        [
            Unknown, Unknown, Unhealthy, Recovering, Unhealthy, Recovering, Healthy
        ]
    );
}

#[test]
fn one_success_to_healthy_skips_recovering() {
    let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(1, 1)));
    assert_eq!(run(&mut m, &[fail(), ok()]), [Unhealthy, Healthy]);
}

#[test]
fn slow_successes_are_degraded_and_fast_ones_heal() {
    let t = Thresholds::new(3, 2).with_degraded_latency(Duration::from_millis(500));
    let mut m = model_of(tcp("a").with_thresholds(t));
    assert_eq!(
        run(&mut m, &[ok(), slow(), slow(), ok()]),
        [Healthy, Degraded, Degraded, Healthy]
    );
    // A slow success that completes recovery lands in degraded, not healthy.
    let mut m =
        model_of(tcp("a").with_thresholds(
            Thresholds::new(1, 2).with_degraded_latency(Duration::from_millis(500)),
        ));
    assert_eq!(
        run(&mut m, &[fail(), ok(), slow()]),
        [Unhealthy, Recovering, Degraded]
    );
}

#[test]
fn score_follows_the_documented_formula() {
    let mut m =
        model_of(tcp("a").with_thresholds(
            Thresholds::new(3, 2).with_degraded_latency(Duration::from_millis(500)),
        ));
    m.record("a", &ok());
    assert_eq!(m.score("a"), Some(100));
    m.record("a", &fail()); // healthy, 1 of 2 failed: 100 × (0.5 + 0.25)
    assert_eq!(m.score("a"), Some(75));
    for _ in 0..8 {
        m.record("a", &ok());
    }
    // 9 of the last 10 passed: 100 × 0.95.
    assert_eq!(m.score("a"), Some(95));
    m.record("a", &slow()); // degraded, still 9 of 10 passed: 70 × 0.95 = 66.5, rounded
    assert_eq!(m.score("a"), Some(67));
    for _ in 0..3 {
        m.record("a", &fail());
    }
    assert_eq!(m.score("a"), Some(0));
    m.record("a", &ok()); // recovering, 7 of 10 passed: 50 × 0.85 = 42.5, rounded
    assert_eq!(m.state("a"), Some(Recovering));
    assert_eq!(m.score("a"), Some(43));
}

#[test]
fn dependents_of_a_down_parent_are_unreachable_transitively_and_come_back() {
    let one = Thresholds::new(1, 1);
    let mut m = HealthModel::new(&[
        tcp("db").with_thresholds(one),
        tcp("api").depends_on("db").with_thresholds(one),
        tcp("web").depends_on("api").with_thresholds(one),
        tcp("other").with_thresholds(one),
    ]);
    for t in ["db", "api", "web", "other"] {
        m.record(t, &ok());
    }
    let changes = m.record("db", &fail());
    let moved: Vec<(&str, HealthState, HealthState)> = changes
        .iter()
        .map(|c| (c.target.as_str(), c.from, c.to))
        .collect();
    assert_eq!(
        moved,
        [
            ("db", Healthy, Unhealthy),
            ("api", Healthy, Unreachable),
            ("web", Healthy, Unreachable)
        ]
    );
    assert_eq!(
        changes[1].cause,
        ChangeCause::Dependency {
            parent: "db".into()
        }
    );
    assert_eq!(
        changes[2].cause,
        ChangeCause::Dependency {
            parent: "api".into()
        }
    );
    assert_eq!(
        m.target("web").unwrap().unreachable_via.as_deref(),
        Some("api")
    );
    // The dependent's own failures while its parent is down do not surface as unhealthy.
    assert!(m.record("api", &fail()).is_empty());
    assert_eq!(m.state("api"), Some(Unreachable));
    assert_eq!(m.target("api").unwrap().own_state, Unhealthy);
    assert_eq!(m.state("other"), Some(Healthy));
    // The parent recovers: api shows its own state again; web stays unreachable, through api.
    let changes = m.record("db", &ok());
    let moved: Vec<(&str, HealthState)> =
        changes.iter().map(|c| (c.target.as_str(), c.to)).collect();
    assert_eq!(moved, [("db", Healthy), ("api", Unhealthy)]);
    assert_eq!(m.state("web"), Some(Unreachable));
    assert_eq!(
        m.target("web").unwrap().unreachable_via.as_deref(),
        Some("api")
    );
    m.record("api", &ok());
    assert_eq!(m.state("web"), Some(Healthy));
}

#[test]
fn summary_weights_scores_per_group_and_overall_and_counts_states() {
    let one = Thresholds::new(1, 1);
    let mut m = HealthModel::new(&[
        tcp("a")
            .with_group("web")
            .with_weight(3.0)
            .with_thresholds(one),
        tcp("b")
            .with_group("web")
            .with_weight(1.0)
            .with_thresholds(one),
        tcp("c").with_group("data").with_thresholds(one),
        tcp("d").with_group("data"),
    ]);
    m.record("a", &ok());
    m.record("b", &fail());
    m.record("c", &ok());
    let s = m.summary();
    assert_eq!(s.groups["web"], Some(75.0)); // (3×100 + 1×0) / 4
    assert_eq!(s.groups["data"], Some(100.0)); // d has no score yet
    assert_eq!(s.overall, Some(80.0)); // (300 + 0 + 100) / 5
    assert_eq!(s.counts[&Healthy], 2);
    assert_eq!(s.counts[&Unhealthy], 1);
    assert_eq!(s.counts[&Unknown], 1);
    assert_eq!(s.counts[&Degraded], 0);
    assert_eq!(s.targets.len(), 4);
}

#[test]
fn unknown_targets_are_ignored() {
    let mut m = model_of(tcp("a"));
    assert!(m.record("nope", &fail()).is_empty());
    assert_eq!(m.state("nope"), None);
}

fn arb_result() -> impl Strategy<Value = ProbeResult> {
    prop_oneof![Just(ok()), Just(slow()), Just(fail())]
}

proptest! {
    #[test]
    fn n_failures_in_a_row_always_mean_unhealthy(
        n in 1u32..6, m_ in 1u32..6,
        prefix in proptest::collection::vec(arb_result(), 0..30),
    ) {
        let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(n, m_)));
        run(&mut m, &prefix);
        run(&mut m, &vec![fail(); n as usize]);
        prop_assert_eq!(m.state("a"), Some(Unhealthy));
        prop_assert_eq!(m.score("a"), Some(0));
    }

    #[test]
    fn events_are_consistent_and_never_jump_from_unhealthy_to_healthy(
        n in 1u32..5, m_ in 2u32..5,
        results in proptest::collection::vec(arb_result(), 0..60),
    ) {
        let t = Thresholds::new(n, m_).with_degraded_latency(Duration::from_secs(1));
        let mut m = model_of(tcp("a").with_thresholds(t));
        let mut shown = Unknown;
        for r in &results {
            for c in m.record("a", r) {
                prop_assert_eq!(c.from, shown);
                prop_assert_ne!(c.from, c.to);
                prop_assert!(!(c.from == Unhealthy && matches!(c.to, Healthy | Degraded)));
                shown = c.to;
            }
            prop_assert_eq!(m.state("a"), Some(shown));
            let score = m.score("a");
            prop_assert!(score.is_none_or(|s| s <= 100));
            prop_assert_eq!(score.is_none(), shown == Unknown);
        }
    }

    #[test]
    fn a_target_is_unreachable_exactly_when_a_parent_is_down(
        steps in proptest::collection::vec((0usize..3, arb_result()), 0..80),
    ) {
        let names = ["db", "api", "web"];
        let th = Thresholds::new(2, 2);
        let mut m = HealthModel::new(&[
            tcp("db").with_thresholds(th),
            tcp("api").depends_on("db").with_thresholds(th),
            tcp("web").depends_on("api").depends_on("db").with_thresholds(th),
        ]);
        for (i, r) in steps {
            m.record(names[i], &r);
            let s = m.summary();
            let down = |k: usize| s.targets[k].state.is_down();
            prop_assert_eq!(s.targets[0].state, s.targets[0].own_state);
            prop_assert_eq!(s.targets[1].state == Unreachable, down(0));
            prop_assert_eq!(s.targets[2].state == Unreachable, down(0) || down(1));
            for t in &s.targets {
                if t.state != Unreachable {
                    prop_assert_eq!(t.state, t.own_state);
                }
            }
            prop_assert_eq!(s.counts.values().sum::<usize>(), 3);
        }
    }
}

fn records(target: &str, results: &[ProbeResult]) -> Vec<ResultRecord> {
    results
        .iter()
        .map(|r| ResultRecord::new(target, std::time::SystemTime::UNIX_EPOCH, r))
        .collect()
}

#[test]
fn restored_target_matches_one_that_saw_the_same_results_and_reports_no_change() {
    let history = [ok(), ok(), fail(), ok(), fail(), fail(), fail(), fail()];
    let t = tcp("a").with_thresholds(Thresholds::new(3, 2));
    let mut live = model_of(t.clone());
    run(&mut live, &history);
    let mut restored = model_of(t);
    restored.restore("a", Unhealthy, &records("a", &history));
    assert_eq!(restored.target("a"), live.target("a"));
    assert_eq!(restored.score("a"), live.score("a"));
    // Still unhealthy: another failure changes nothing, and recovery goes through recovering.
    assert!(restored.record("a", &fail()).is_empty());
    let back = restored.record("a", &ok());
    assert_eq!((back[0].from, back[0].to), (Unhealthy, Recovering));
}

#[test]
fn restored_states_are_trusted_over_a_short_window() {
    // Twelve failures in a row but only the last ten kept: the stored state still says unhealthy.
    let mut m = model_of(tcp("a").with_thresholds(Thresholds::new(12, 1)));
    m.restore("a", Unhealthy, &records("a", &vec![fail(); 12]));
    let a = m.target("a").unwrap();
    assert_eq!((a.state, a.consecutive_failures), (Unhealthy, 10));
    assert_eq!(a.score, Some(0));
}

#[test]
fn restored_unreachable_child_follows_its_restored_parent() {
    let mut m = HealthModel::new(&[tcp("db"), tcp("api").depends_on("db")]);
    m.restore("api", Unreachable, &records("api", &[ok(), ok()]));
    m.restore("db", Unhealthy, &records("db", &[fail(), fail(), fail()]));
    let api = m.target("api").unwrap();
    assert_eq!((api.state, api.own_state), (Unreachable, Healthy));
    assert_eq!(api.unreachable_via.as_deref(), Some("db"));
    // The parent's recovery shows the child's own state at once.
    let changes = m.record("db", &ok());
    assert!(changes.iter().any(|c| c.target == "api" && c.to == Healthy));
}

#[test]
fn restoring_an_unknown_target_changes_nothing() {
    let mut m = model_of(tcp("a"));
    m.restore("zz", Unhealthy, &[]);
    assert_eq!(m.state("a"), Some(Unknown));
}

#[test]
fn reconfigure_keeps_resets_restores_and_resolves_dependencies_again() {
    let one = Thresholds::new(1, 1);
    let mut m = HealthModel::new(&[
        tcp("db").with_thresholds(one),
        tcp("api").depends_on("db"),
        tcp("web"),
        tcp("gone"),
    ]);
    m.record("db", &fail());
    m.record("api", &ok());
    m.record("web", &ok());
    m.record("web", &fail());
    assert_eq!(m.state("api"), Some(Unreachable));
    let web = m.target("web").unwrap();

    // api no longer depends on db, web is kept as it was, db is reset, gone is gone, and new is
    // added back with a stored history.
    let stored = [ResultRecord::new(
        "new",
        std::time::SystemTime::now(),
        &fail(),
    )];
    let changes = m.reconfigure(
        &[
            tcp("db").with_thresholds(one),
            tcp("api").with_group("g2"),
            tcp("web"),
            tcp("new"),
        ],
        &["db"],
        &[("new", Unhealthy, &stored)],
    );
    assert_eq!(m.state("db"), Some(Unknown));
    assert_eq!(m.state("api"), Some(Healthy));
    assert_eq!(m.target("api").unwrap().group, "g2");
    assert_eq!(m.target("web").unwrap(), web);
    assert_eq!(m.state("gone"), None);
    assert_eq!(m.state("new"), Some(Unhealthy));
    assert_eq!(m.target("new").unwrap().consecutive_failures, 1);
    let summary: Vec<String> = m.summary().targets.into_iter().map(|t| t.name).collect();
    assert_eq!(summary, ["db", "api", "web", "new"], "in the new order");
    // Changes only for targets in both models, each said to come from the reconfiguration.
    let seen: Vec<(&str, HealthState, HealthState)> = changes
        .iter()
        .map(|c| (c.target.as_str(), c.from, c.to))
        .collect();
    assert_eq!(
        seen,
        [("db", Unhealthy, Unknown), ("api", Unreachable, Healthy)]
    );
    assert!(changes.iter().all(|c| c.cause == ChangeCause::Reconfigured));

    // A new dependency on a target that is down makes the child unreachable at once.
    let changes = m.reconfigure(&[tcp("new"), tcp("web").depends_on("new")], &[], &[]);
    assert_eq!(m.state("web"), Some(Unreachable));
    assert_eq!(
        m.target("web").unwrap().unreachable_via.as_deref(),
        Some("new")
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
}
