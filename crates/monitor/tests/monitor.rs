//! A whole monitor against a real HTTP server: a target fails, its dependent becomes
//! unreachable, both recover. Real time, 1 s intervals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestServer;
use rampart_monitor::Monitor;
use rampart_monitor::config::MonitorConfig;
use rampart_monitor::health::{ChangeCause, HealthState, StateChange};
use rampart_monitor::scheduler::ProbeReport;
use tokio::sync::broadcast::Receiver;
use tokio::time::timeout;

use HealthState::*;

const DEADLINE: Duration = Duration::from_secs(15);

fn config(server: &TestServer) -> MonitorConfig {
    MonitorConfig::from_str(
        &format!(
            r#"
            [defaults]
            interval = "1s"
            timeout = "1s"
            failures_to_unhealthy = 3
            successes_to_healthy = 2

            [[target]]
            name = "db"
            kind = "tcp"
            [target.tcp]
            address = "{addr}"

            [[target]]
            name = "api"
            kind = "http"
            [target.http]
            url = "{flip}"

            [[target]]
            name = "web"
            kind = "http"
            depends_on = ["api"]
            [target.http]
            url = "{health}"
            "#,
            addr = server.addr,
            flip = server.url("/flip"),
            health = server.url("/health"),
        ),
        None,
    )
    .unwrap()
}

/// The next change of `target`, within the deadline.
async fn next_change(changes: &mut Receiver<StateChange>, target: &str) -> StateChange {
    timeout(DEADLINE, async {
        loop {
            let c = changes.recv().await.unwrap();
            if c.target == target {
                return c;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no change of {target} within {DEADLINE:?}"))
}

/// The next probe report of `target`, within the deadline.
async fn next_result(results: &mut Receiver<ProbeReport>, target: &str) -> ProbeReport {
    timeout(DEADLINE, async {
        loop {
            let r = results.recv().await.unwrap();
            if r.target == target {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no result of {target} within {DEADLINE:?}"))
}

#[tokio::test]
async fn a_failing_target_goes_unhealthy_after_three_failures_takes_its_dependent_down_and_recovers()
 {
    let server = TestServer::start().await;
    let monitor = Monitor::start(&config(&server));
    let mut changes = monitor.subscribe();
    let mut results = monitor.subscribe_results();

    // Everything comes up.
    let mut up = std::collections::BTreeSet::new();
    timeout(DEADLINE, async {
        while up.len() < 3 {
            let c = changes.recv().await.unwrap();
            assert_eq!((c.from, c.to), (Unknown, Healthy), "{c:?}");
            up.insert(c.target);
        }
    })
    .await
    .expect("all three healthy");
    assert_eq!(monitor.summary().overall, Some(100.0));

    // api starts failing: two failures keep it healthy, the third makes it unhealthy.
    server.control.failing.store(true, Ordering::SeqCst);
    let mut failures = 0;
    while failures < 3 {
        let r = next_result(&mut results, "api").await;
        if r.result.is_success() {
            continue; // a probe already in flight when the switch flipped
        }
        failures += 1;
        let expected = if failures < 3 { Healthy } else { Unhealthy };
        assert_eq!(
            monitor.state("api"),
            Some(expected),
            "after {failures} failures"
        );
    }
    let summary = monitor.summary();
    assert_eq!(monitor.state("web"), Some(Unreachable));
    assert_eq!(monitor.state("db"), Some(Healthy));
    assert_eq!(summary.counts[&Unhealthy], 1);
    assert_eq!(summary.counts[&Unreachable], 1);
    let web = monitor.target("web").unwrap();
    assert_eq!(web.unreachable_via.as_deref(), Some("api"));
    assert_eq!(web.own_state, Healthy, "web itself still answers");
    let change = next_change(&mut changes, "web").await;
    assert_eq!((change.from, change.to), (Healthy, Unreachable));
    assert_eq!(
        change.cause,
        ChangeCause::Dependency {
            parent: "api".into()
        }
    );

    // api recovers: recovering after one success, healthy after two. As soon as api is no
    // longer down, web shows its own state again.
    server.control.failing.store(false, Ordering::SeqCst);
    let mut seen = Vec::new();
    timeout(DEADLINE, async {
        while monitor.state("api") != Some(Healthy)
            || seen
                .iter()
                .all(|c: &StateChange| c.to != Healthy || c.target != "api")
        {
            seen.push(changes.recv().await.unwrap());
        }
    })
    .await
    .expect("api healthy again");
    let moved: Vec<(&str, HealthState, HealthState)> = seen
        .iter()
        .map(|c| (c.target.as_str(), c.from, c.to))
        .collect();
    assert_eq!(
        moved,
        [
            ("api", Unhealthy, Recovering),
            ("web", Unreachable, Healthy),
            ("api", Recovering, Healthy),
        ]
    );
    assert_eq!(
        seen[1].cause,
        ChangeCause::Dependency {
            parent: "api".into()
        }
    );
    assert_eq!(monitor.summary().counts[&Healthy], 3);
}
