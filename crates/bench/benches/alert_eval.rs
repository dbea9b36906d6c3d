//! Evaluating the nine default alert rules over 1,000 and 10,000 targets (the target:
//! 10,000 targets in at most 10 ms), each target holding five minutes of results at a 10 s
//! interval (30 samples), 1 % of them down so alerts exist and groups are flushed.
//!
//! One iteration is one full sweep: [`AlertEngine::evaluate_all`] then [`AlertEngine::flush`],
//! what the daemon does every second.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use rampart_monitor::alert::{AlertEngine, EngineConfig, TargetInfo, default_rules};
use rampart_monitor::health::HealthState;
use rampart_monitor::probe::{FailureKind, ProbeResult};
use tokio::time::Instant;

fn engine(n: usize) -> (AlertEngine, Instant) {
    let targets: Vec<TargetInfo> = (0..n)
        .map(|i| TargetInfo {
            name: format!("target-{i}"),
            group: format!("group-{}", i % 50),
            kind: "http".into(),
            parents: Vec::new(),
        })
        .collect();
    let t0 = Instant::now();
    let mut e = AlertEngine::new(
        EngineConfig::new(default_rules(), "ops"),
        &targets,
        t0,
        DateTime::<Utc>::UNIX_EPOCH,
    );
    let mut rng = fastrand::Rng::with_seed(3);
    for step in 0..30u64 {
        let now = t0 + Duration::from_secs(step * 10);
        for (i, t) in targets.iter().enumerate() {
            let down = i % 100 == 0;
            let latency = Duration::from_micros(2_000 + rng.u64(0..20_000));
            let result = if down {
                ProbeResult::failure(FailureKind::ConnectRefused, "refused", latency)
            } else {
                ProbeResult::success(latency)
            };
            let (state, score) = if down {
                (HealthState::Unhealthy, Some(0))
            } else {
                (HealthState::Healthy, Some(100))
            };
            e.observe(&t.name, &result, state, score, now);
        }
    }
    (e, t0 + Duration::from_secs(300))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("alert_eval");
    for n in [1_000usize, 10_000] {
        let (mut e, start) = engine(n);
        let mut now = start;
        group.bench_function(format!("nine_rules/{n}_targets"), |b| {
            b.iter(|| {
                now += Duration::from_millis(1);
                e.evaluate_all(now);
                black_box(e.flush(now));
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
