//! Balancing over endpoints, on paused time: power of two choices on peak EWMA latency, outlier
//! ejection, ejection time, the ejected share, gradual readmission, cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use rampart_pool::balance::{
    BalanceEvent, BalanceEvents, Balancer, BalancerConfig, EjectionReason, EndpointState, Lease,
    Outcome,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, advance};

const MS: Duration = Duration::from_millis(1);

/// A balancer over endpoints named `names`, each endpoint being its own index.
fn balancer(config: &BalancerConfig, names: &[&str], events: &BalanceEvents) -> Balancer<usize> {
    config
        .build(
            "test",
            names.iter().enumerate().map(|(i, n)| (*n, i)),
            events,
        )
        .unwrap()
}

fn state(b: &Balancer<usize>, name: &str) -> EndpointState {
    b.stats().endpoint(name).unwrap().state
}

fn drain(rx: &mut UnboundedReceiver<BalanceEvent>) -> Vec<BalanceEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Picks until `target` comes up and records `outcome` on it. The other leases are held meanwhile
/// (their growing in-flight count makes `target` win whatever its estimate), then dropped, which
/// records nothing. Panics if `target` never comes up.
fn record_on(b: &Balancer<usize>, target: &str, latency: Duration, outcome: Outcome) {
    let mut held = Vec::new();
    for _ in 0..100_000 {
        let lease = b.pick().unwrap();
        if lease.name() == target {
            lease.record(latency, outcome);
            return;
        }
        held.push(lease);
    }
    panic!("{target} was never picked: {:?}", b.stats());
}

fn fail(b: &Balancer<usize>, target: &str, times: u32) {
    for _ in 0..times {
        record_on(b, target, MS, Outcome::Failure);
    }
}

struct Call<'a> {
    done_at: Instant,
    latency: Duration,
    lease: Lease<'a, usize>,
}

/// Starts one call every `every` for `calls` calls, each taking `latencies[endpoint]`, with calls
/// overlapping as they would in a service; returns the picks per endpoint.
async fn simulate(
    b: &Balancer<usize>,
    latencies: &[Duration],
    calls: usize,
    every: Duration,
) -> Vec<u64> {
    let mut picks = vec![0u64; b.len()];
    let mut pending: Vec<Call<'_>> = Vec::new();
    for _ in 0..calls {
        advance(every).await;
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|c| c.done_at <= now);
        pending = rest;
        for call in due {
            call.lease.record(call.latency, Outcome::Success);
        }
        let lease = b.pick().unwrap();
        let latency = latencies[*lease];
        picks[*lease] += 1;
        pending.push(Call {
            done_at: now + latency,
            latency,
            lease,
        });
    }
    for call in pending {
        call.lease.record(call.latency, Outcome::Success);
    }
    picks
}

#[tokio::test(start_paused = true)]
async fn slow_endpoint_receives_far_less_traffic() {
    fastrand::seed(7);
    // Latency ejection off: power of two choices alone steers traffic away.
    let config = BalancerConfig {
        latency_factor: 1e9,
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b", "slow"], &BalanceEvents::new());
    let picks = simulate(&b, &[10 * MS, 10 * MS, 100 * MS], 3_000, MS).await;
    assert_eq!(picks.iter().sum::<u64>(), 3_000);
    assert!(picks[2] * 10 < picks[0], "{picks:?}");
    assert!(picks[2] * 10 < picks[1], "{picks:?}");
    let stats = b.stats();
    assert_eq!(stats.ejected(), 0);
    assert!(stats.endpoints.iter().all(|e| e.in_flight == 0));
    // The estimates reflect the latencies.
    assert_eq!(stats.endpoint("slow").unwrap().ewma_raw, Some(100 * MS));
    let fast = stats.endpoint("a").unwrap().ewma_raw.unwrap();
    assert!(fast >= 10 * MS && fast < 11 * MS, "{fast:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_endpoint_is_ejected_as_latency_outlier() {
    fastrand::seed(11);
    let events = BalanceEvents::new();
    let (_sub, mut rx) = events.channel();
    let b = balancer(&BalancerConfig::default(), &["a", "b", "slow"], &events);
    // Under enough load that the fast endpoints queue up and power of two choices alone would keep
    // sending the slow one a share of the calls.
    let picks = simulate(&b, &[10 * MS, 10 * MS, 100 * MS], 3_000, MS / 4).await;
    assert!(picks[2] * 20 < 3_000, "{picks:?}");

    let stats = b.stats();
    let slow = stats.endpoint("slow").unwrap();
    assert_eq!(slow.state, EndpointState::Ejected, "{stats:?}");
    assert_eq!(slow.ejections, 1);
    assert_eq!(stats.ejected(), 1);
    let events = drain(&mut rx);
    assert_eq!(events.len(), 1, "{events:?}");
    match &events[0] {
        BalanceEvent::Ejected {
            endpoint,
            reason: EjectionReason::LatencyOutlier { ewma, median },
            duration,
            level,
            ..
        } => {
            assert_eq!(endpoint, "slow");
            assert_eq!(*ewma, 100 * MS);
            assert!(*median < 11 * MS, "{median:?}");
            assert_eq!(*duration, Duration::from_secs(30));
            assert_eq!(*level, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn latency_close_to_the_others_does_not_eject() {
    fastrand::seed(3);
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "c"],
        &BalanceEvents::new(),
    );
    let picks = simulate(&b, &[10 * MS, 12 * MS, 25 * MS], 3_000, MS).await;
    assert_eq!(b.stats().ejected(), 0, "{picks:?}");
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject() {
    fastrand::seed(1);
    let events = BalanceEvents::new();
    let (_sub, mut rx) = events.channel();
    let b = balancer(&BalancerConfig::default(), &["a", "b", "c"], &events);
    fail(&b, "a", 4);
    let a = b.stats().endpoint("a").unwrap().clone();
    assert_eq!(a.state, EndpointState::Active);
    assert_eq!(a.consecutive_failures, 4);
    // A success in between resets the count.
    record_on(&b, "a", MS, Outcome::Success);
    fail(&b, "a", 4);
    assert_eq!(state(&b, "a"), EndpointState::Active);
    // Ignored outcomes count neither way.
    record_on(&b, "a", MS, Outcome::Ignored);
    assert_eq!(state(&b, "a"), EndpointState::Active);
    assert!(drain(&mut rx).is_empty());

    fail(&b, "a", 1);
    let a = b.stats().endpoint("a").unwrap().clone();
    assert_eq!(a.state, EndpointState::Ejected);
    assert_eq!(a.readmit_in, Some(Duration::from_secs(30)));
    assert_eq!(a.weight, 0.0);
    assert_eq!(
        drain(&mut rx),
        [BalanceEvent::Ejected {
            balancer: "test".into(),
            endpoint: "a".into(),
            reason: EjectionReason::ConsecutiveFailures { failures: 5 },
            duration: Duration::from_secs(30),
            level: 1,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn ejection_time_grows_with_repeated_ejections_up_to_the_cap() {
    fastrand::seed(2);
    let events = BalanceEvents::new();
    let (_sub, mut rx) = events.channel();
    let config = BalancerConfig {
        max_ejection: Duration::from_secs(80),
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b", "c"], &events);
    let mut durations = Vec::new();
    for expected in [30, 60, 80, 80] {
        let expected = Duration::from_secs(expected);
        fail(&b, "a", 5);
        assert_eq!(b.stats().endpoint("a").unwrap().readmit_in, Some(expected));
        advance(expected - MS).await;
        assert_eq!(state(&b, "a"), EndpointState::Ejected);
        advance(MS).await;
        assert_eq!(state(&b, "a"), EndpointState::Ramping);
        // Wait out the ramp so the next failures find it at full weight.
        advance(config.ramp_up).await;
        assert_eq!(state(&b, "a"), EndpointState::Active);
        for e in drain(&mut rx) {
            if let BalanceEvent::Ejected { duration, .. } = e {
                durations.push(duration.as_secs());
            }
        }
    }
    assert_eq!(durations, [30, 60, 80, 80]);
    assert_eq!(b.stats().endpoint("a").unwrap().ejections, 4);
}

#[tokio::test(start_paused = true)]
async fn a_success_streak_forgives_one_past_ejection() {
    fastrand::seed(4);
    let config = BalancerConfig {
        recovery_streak: 10,
        ramp_up: Duration::ZERO,
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b", "c"], &BalanceEvents::new());
    fail(&b, "a", 5);
    advance(Duration::from_secs(30)).await;
    fail(&b, "a", 5);
    assert_eq!(
        b.stats().endpoint("a").unwrap().readmit_in,
        Some(Duration::from_secs(60))
    );
    advance(Duration::from_secs(60)).await;
    for _ in 0..10 {
        record_on(&b, "a", MS, Outcome::Success);
    }
    fail(&b, "a", 5);
    // Two past ejections, one forgiven: this one counts as the second.
    assert_eq!(
        b.stats().endpoint("a").unwrap().readmit_in,
        Some(Duration::from_secs(60))
    );
}

#[tokio::test(start_paused = true)]
async fn max_ejected_share_is_honoured() {
    fastrand::seed(5);
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "c"],
        &BalanceEvents::new(),
    );
    fail(&b, "a", 5);
    fail(&b, "b", 8);
    let stats = b.stats();
    assert_eq!(stats.ejected(), 1, "{stats:?}");
    assert_eq!(stats.endpoint("a").unwrap().state, EndpointState::Ejected);
    let b_stats = stats.endpoint("b").unwrap();
    assert_eq!(b_stats.state, EndpointState::Active);
    assert_eq!(b_stats.consecutive_failures, 8);

    // Once "a" is back, the next failure of "b" ejects it.
    advance(Duration::from_secs(30)).await;
    fail(&b, "b", 1);
    assert_eq!(state(&b, "b"), EndpointState::Ejected);
    assert_eq!(b.stats().ejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn one_endpoint_always_stays_whatever_the_share() {
    fastrand::seed(6);
    let everything = BalancerConfig {
        max_ejected_share: 1.0,
        ..BalancerConfig::default()
    };
    let b = balancer(&everything, &["a", "b"], &BalanceEvents::new());
    fail(&b, "a", 5);
    fail(&b, "b", 5);
    assert_eq!(b.stats().ejected(), 1);

    let single = balancer(&everything, &["only"], &BalanceEvents::new());
    fail(&single, "only", 20);
    assert_eq!(state(&single, "only"), EndpointState::Active);

    let off = BalancerConfig {
        max_ejected_share: 0.0,
        ..BalancerConfig::default()
    };
    let b = balancer(&off, &["a", "b", "c"], &BalanceEvents::new());
    fail(&b, "a", 20);
    assert_eq!(b.stats().ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn never_picks_an_ejected_endpoint() {
    fastrand::seed(8);
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "c"],
        &BalanceEvents::new(),
    );
    fail(&b, "a", 5);
    for _ in 0..2_000 {
        advance(10 * MS).await; // 20s in all, within the 30s ejection
        let lease = b.pick().unwrap();
        assert_ne!(lease.name(), "a");
        lease.record(MS, Outcome::Success);
    }
    assert_eq!(state(&b, "a"), EndpointState::Ejected);
    // Its only picks are the five failed calls.
    assert_eq!(b.stats().endpoint("a").unwrap().picks, 5);
}

#[tokio::test(start_paused = true)]
async fn traffic_ramps_up_gradually_after_readmission() {
    fastrand::seed(9);
    let events = BalanceEvents::new();
    let (_sub, mut rx) = events.channel();
    let b = balancer(&BalancerConfig::default(), &["a", "b", "c"], &events);
    let warm_up = simulate(&b, &[10 * MS; 3], 600, MS).await;
    assert!(warm_up.iter().all(|&p| p > 100), "{warm_up:?}");
    fail(&b, "c", 5);
    advance(Duration::from_secs(30)).await;
    drain(&mut rx);

    // Six windows of 5s over the 30s ramp, then one at full weight.
    let mut per_window = Vec::new();
    for _ in 0..7 {
        let mut picks = 0;
        for _ in 0..2_000 {
            let lease = b.pick().unwrap();
            if lease.name() == "c" {
                picks += 1;
            }
            advance(Duration::from_micros(2_500)).await;
            lease.record(10 * MS, Outcome::Success);
        }
        per_window.push(picks);
    }
    assert!(
        per_window.windows(2).take(6).all(|w| w[0] < w[1]),
        "{per_window:?}"
    );
    assert!(per_window[0] < 2_000 / 10, "{per_window:?}");
    // At full weight it takes about a third again.
    assert!(per_window[6] > 2_000 / 4, "{per_window:?}");
    assert_eq!(state(&b, "c"), EndpointState::Active);
    assert_eq!(
        drain(&mut rx),
        [BalanceEvent::Readmitted {
            balancer: "test".into(),
            endpoint: "c".into(),
            ramp_up: Duration::from_secs(30),
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn readmission_is_weighted_halfway_through_the_ramp() {
    fastrand::seed(10);
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "c"],
        &BalanceEvents::new(),
    );
    fail(&b, "a", 5);
    advance(Duration::from_secs(45)).await;
    let a = b.stats().endpoint("a").unwrap().clone();
    assert_eq!(a.state, EndpointState::Ramping);
    assert!((a.weight - 0.5).abs() < 1e-9, "{}", a.weight);
    assert_eq!(a.readmit_in, None);
    assert_eq!(a.consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_leases_return_in_flight_to_zero_and_record_nothing() {
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "c"],
        &BalanceEvents::new(),
    );
    let leases: Vec<_> = (0..10).map(|_| b.pick().unwrap()).collect();
    let in_flight = |b: &Balancer<usize>| {
        b.stats()
            .endpoints
            .iter()
            .map(|e| e.in_flight)
            .sum::<usize>()
    };
    assert_eq!(in_flight(&b), 10);
    drop(leases);
    assert_eq!(in_flight(&b), 0);
    let stats = b.stats();
    assert!(
        stats.endpoints.iter().all(|e| e.ewma.is_none()),
        "{stats:?}"
    );
    assert_eq!(stats.endpoints.iter().map(|e| e.picks).sum::<u64>(), 10);

    // A call cancelled mid-way (its task aborted while it holds the lease) releases it too.
    let shared = b.clone();
    let (picked_tx, picked_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let lease = shared.pick().unwrap();
        let _ = picked_tx.send(());
        tokio::time::sleep(Duration::from_secs(60)).await;
        lease.finish(Outcome::Success);
    });
    picked_rx.await.unwrap();
    assert_eq!(in_flight(&b), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(in_flight(&b), 0);
    assert!(b.stats().endpoints.iter().all(|e| e.ewma.is_none()));
}

#[tokio::test(start_paused = true)]
async fn finish_measures_latency_from_the_pick() {
    let b = balancer(&BalancerConfig::default(), &["a"], &BalanceEvents::new());
    let lease = b.pick().unwrap();
    assert_eq!(*lease, 0);
    advance(40 * MS).await;
    lease.finish(Outcome::Success);
    assert_eq!(b.stats().endpoint("a").unwrap().ewma, Some(40 * MS));
}

#[test]
fn empty_balancer_picks_nothing() {
    let b: Balancer<()> = BalancerConfig::default()
        .build("empty", Vec::<(&str, ())>::new(), &BalanceEvents::new())
        .unwrap();
    assert!(b.is_empty());
    assert!(b.pick().is_none());
}

#[test]
fn endpoints_are_kept_in_order_by_name() {
    let b = BalancerConfig::default()
        .build(
            "redis",
            [("r1", "10.0.0.1"), ("r2", "10.0.0.2")],
            &BalanceEvents::new(),
        )
        .unwrap();
    assert_eq!(b.name(), "redis");
    assert_eq!(b.len(), 2);
    assert_eq!(b.get("r2"), Some(&"10.0.0.2"));
    assert_eq!(b.get("r3"), None);
    let names: Vec<&str> = b.endpoints().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["r1", "r2"]);
}

#[derive(Debug, Clone)]
enum Op {
    Pick,
    Record(usize, u64, u8),
    Drop(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Pick),
        2 => (any::<usize>(), 0u64..200, 0u8..3).prop_map(|(i, ms, o)| Op::Record(i, ms, o)),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => (0u64..40_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn in_flight_equals_live_leases(ops in prop::collection::vec(op(), 1..300), seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            fastrand::seed(seed);
            let config = BalancerConfig {
                consecutive_failures: 2,
                min_samples: 2,
                base_ejection: Duration::from_secs(5),
                ramp_up: Duration::from_secs(5),
                ..BalancerConfig::default()
            };
            let b = balancer(&config, &["a", "b", "c", "d"], &BalanceEvents::new());
            let mut live: Vec<Lease<'_, usize>> = Vec::new();
            for op in ops {
                match op {
                    Op::Pick => live.push(b.pick().unwrap()),
                    Op::Record(i, ms, o) if !live.is_empty() => {
                        let lease = live.swap_remove(i % live.len());
                        let outcome = [Outcome::Success, Outcome::Failure, Outcome::Ignored][usize::from(o)];
                        lease.record(Duration::from_millis(ms), outcome);
                    }
                    Op::Drop(i) if !live.is_empty() => drop(live.swap_remove(i % live.len())),
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    _ => {}
                }
                let stats = b.stats();
                for (index, e) in stats.endpoints.iter().enumerate() {
                    let expected = live.iter().filter(|l| l.index() == index).count();
                    prop_assert_eq!(e.in_flight, expected, "{}", e.name);
                }
                // Half of four endpoints at most.
                prop_assert!(stats.ejected() <= 2, "{:?}", stats);
            }
            drop(live);
            prop_assert!(b.stats().endpoints.iter().all(|e| e.in_flight == 0));
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn equal_endpoints_share_traffic_evenly() {
    fastrand::seed(12);
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "c", "d"],
        &BalanceEvents::new(),
    );
    let picks = simulate(&b, &[10 * MS; 4], 4_000, MS / 2).await;
    assert!(
        picks.iter().all(|&p| (800..1_200).contains(&p)),
        "{picks:?}"
    );
}

#[test]
fn concurrent_picks_and_records_leave_nothing_in_flight() {
    let config = BalancerConfig {
        consecutive_failures: 3,
        min_samples: 2,
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b", "c", "d"], &BalanceEvents::new());
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let b = &b;
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for i in 0..5_000u64 {
                    let lease = b.pick().unwrap();
                    match rng.u8(0..4) {
                        0 => drop(lease),
                        1 => lease
                            .record(Duration::from_micros(rng.u64(1..50_000)), Outcome::Failure),
                        _ => lease.record(Duration::from_micros(100 + i % 900), Outcome::Success),
                    }
                }
            });
        }
    });
    let stats = b.stats();
    assert!(
        stats.endpoints.iter().all(|e| e.in_flight == 0),
        "{stats:?}"
    );
    assert_eq!(stats.endpoints.iter().map(|e| e.picks).sum::<u64>(), 20_000);
    assert!(stats.ejected() <= 2, "{stats:?}");
}

/// Sequential calls, one at a time, `every` apart: each picked endpoint `i` answers with
/// `answer(i)`. Returns the picks per endpoint.
async fn sequential(
    b: &Balancer<usize>,
    calls: usize,
    every: Duration,
    mut answer: impl FnMut(usize) -> (Duration, Outcome),
) -> Vec<u64> {
    let mut picks = vec![0u64; b.len()];
    for _ in 0..calls {
        advance(every).await;
        let lease = b.pick().unwrap();
        picks[*lease] += 1;
        let (latency, outcome) = answer(*lease);
        lease.record(latency, outcome);
    }
    picks
}

#[tokio::test(start_paused = true)]
async fn fast_failures_make_an_endpoint_look_expensive_not_cheap() {
    fastrand::seed(13);
    // Ejection off: only the cost steers traffic.
    let config = BalancerConfig {
        max_ejected_share: 0.0,
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b", "failing"], &BalanceEvents::new());
    for name in ["a", "b", "failing"] {
        record_on(&b, name, 10 * MS, Outcome::Success);
    }
    // From now on "failing" answers every call in 1ms, with an error.
    let picks = sequential(&b, 1_000, MS, |i| {
        if i == 2 {
            (MS, Outcome::Failure)
        } else {
            (10 * MS, Outcome::Success)
        }
    })
    .await;
    assert!(picks[2] < 20, "{picks:?}");
    let stats = b.stats();
    let failing = stats.endpoint("failing").unwrap();
    // Its one failure counted as the 1s penalty, and it has had no traffic since.
    assert_eq!(
        failing.ewma_raw,
        Some(Duration::from_secs(1)),
        "{failing:?}"
    );
    assert!(failing.ewma.unwrap() > 500 * MS, "{failing:?}");
    // The outlier detector sees the real latency of the failures: it fell below the 10ms.
    assert!(failing.latency.unwrap() < 10 * MS, "{failing:?}");
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_feed_no_sample_and_never_eject() {
    fastrand::seed(14);
    let events = BalanceEvents::new();
    let (_sub, mut rx) = events.channel();
    let b = balancer(&BalancerConfig::default(), &["a", "b", "c"], &events);
    for name in ["a", "b"] {
        for _ in 0..10 {
            record_on(&b, name, 10 * MS, Outcome::Success);
        }
    }
    // Slow results the classifier says nothing about: no sample, so no latency ejection.
    for _ in 0..20 {
        record_on(&b, "c", 500 * MS, Outcome::Ignored);
    }
    let c = b.stats().endpoint("c").unwrap().clone();
    assert_eq!(c.state, EndpointState::Active, "{c:?}");
    assert_eq!((c.ewma, c.ewma_raw, c.latency), (None, None, None));
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_positive_share_ejects_at_least_one_of_two_or_more() {
    fastrand::seed(15);
    // floor(2 x 0.3) = 0, but a positive share allows one.
    let config = BalancerConfig {
        max_ejected_share: 0.3,
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b"], &BalanceEvents::new());
    fail(&b, "a", 5);
    assert_eq!(state(&b, "a"), EndpointState::Ejected);
    fail(&b, "b", 10);
    assert_eq!(b.stats().ejected(), 1);
    // floor(5 x 0.5) = 2.
    let config = BalancerConfig {
        max_ejected_share: 0.5,
        ..BalancerConfig::default()
    };
    let b = balancer(&config, &["a", "b", "c", "d", "e"], &BalanceEvents::new());
    for name in ["a", "b", "c"] {
        fail(&b, name, 5);
    }
    assert_eq!(b.stats().ejected(), 2);
}

#[tokio::test(start_paused = true)]
async fn stats_report_the_decayed_estimate_picks_compare() {
    let b = balancer(&BalancerConfig::default(), &["a"], &BalanceEvents::new());
    record_on(&b, "a", 100 * MS, Outcome::Success);
    assert_eq!(b.stats().endpoint("a").unwrap().ewma, Some(100 * MS));
    // One time constant (decay = 10s) later with no traffic, picks see 100ms / e.
    advance(Duration::from_secs(10)).await;
    let ewma = b.stats().endpoint("a").unwrap().ewma.unwrap();
    let expected = Duration::from_secs_f64(0.1 / std::f64::consts::E);
    assert!(
        ewma.abs_diff(expected) < Duration::from_micros(1),
        "{ewma:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_with_no_sample_is_tried_under_sequential_calls() {
    fastrand::seed(16);
    let b = balancer(
        &BalancerConfig::default(),
        &["a", "b", "new"],
        &BalanceEvents::new(),
    );
    // "a" and "b" answer in 1ms, well under the 30ms default_rtt.
    for name in ["a", "b"] {
        record_on(&b, name, MS, Outcome::Success);
    }
    let picks = sequential(&b, 100, MS, |_| (MS, Outcome::Success)).await;
    assert!(picks[2] >= 1, "{picks:?}");
    assert!(b.stats().endpoint("new").unwrap().ewma.is_some());
}
