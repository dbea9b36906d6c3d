//! Recording: sliding windows on paused time, cardinality limits, concurrency, instrumentation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rampart_telemetry::{
    Labels, OVERFLOW_OPERATION, Outcome, Telemetry, TelemetryConfig, Value, Window,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Records `per_sec` calls of `latency` every second for `secs` seconds, ticking each second.
async fn run(
    telemetry: &Telemetry,
    op: &rampart_telemetry::Operation,
    secs: u64,
    per_sec: u64,
    latency: Duration,
) {
    for _ in 0..secs {
        for _ in 0..per_sec {
            op.record_ok(latency);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        telemetry.tick();
    }
}

#[tokio::test(start_paused = true)]
async fn windows_slide_and_forget_old_calls() {
    let telemetry = Telemetry::new();
    let op = telemetry.operation("db");
    // 300 s at 10 ms, then 50 s at 100 ms, then 9 s at 1 ms.
    run(&telemetry, &op, 300, 10, ms(10)).await;
    run(&telemetry, &op, 50, 10, ms(100)).await;
    run(&telemetry, &op, 9, 10, ms(1)).await;

    let stats = op.stats();
    let ten = stats.window(Window::TenSeconds);
    // 9 closed 1-second slots plus the (empty) current second.
    assert_eq!(ten.count, 90, "{ten:?}");
    assert_eq!(ten.p99.map(|d| d < ms(2)), Some(true), "{ten:?}");
    assert!((ten.rate - 10.0).abs() < 0.01, "{ten:?}");

    let minute = stats.window(Window::OneMinute);
    assert!(minute.covered >= Duration::from_secs(55) && minute.covered <= Duration::from_secs(60));
    // The last 9 s at 1 ms, the rest of the minute at 100 ms.
    assert_eq!(minute.count, minute.covered.as_secs() * 10, "{minute:?}");
    assert!(
        minute.p50.unwrap() >= ms(100) && minute.p50.unwrap() < ms(102),
        "{minute:?}"
    );

    let five = stats.window(Window::FiveMinutes);
    assert!(five.covered >= Duration::from_secs(285) && five.covered <= Duration::from_secs(300));
    assert_eq!(five.count, five.covered.as_secs() * 10);
    // 59 s of 100 ms calls out of ~290 s: the median is still 10 ms, p90 is 100 ms.
    assert!(
        five.p50.unwrap() >= ms(10) && five.p50.unwrap() < ms(11),
        "{five:?}"
    );
    assert!(five.p90.unwrap() >= ms(100), "{five:?}");

    let all = stats.window(Window::SinceStart);
    assert_eq!(all.count, 359 * 10);
    assert_eq!(all.max.map(|d| d >= ms(100) && d < ms(102)), Some(true));
}

#[tokio::test(start_paused = true)]
async fn calls_since_the_last_tick_are_visible_at_once() {
    let telemetry = Telemetry::new();
    let op = telemetry.operation("cache");
    op.record_ok(ms(3));
    op.record_error(ms(7));
    let stats = op.stats();
    for w in [
        Window::TenSeconds,
        Window::OneMinute,
        Window::FiveMinutes,
        Window::SinceStart,
    ] {
        let s = stats.window(w);
        assert_eq!((s.count, s.errors), (2, 1), "{w}");
        assert!((s.error_ratio - 0.5).abs() < 1e-9);
    }
    // The tick moves them into the windows: still counted exactly once.
    tokio::time::advance(Duration::from_secs(1)).await;
    let report = telemetry.tick().expect("a tick ended");
    assert_eq!(report.operations.len(), 1);
    assert_eq!(report.operations[0].interval.count, 2);
    assert_eq!(op.stats().window(Window::TenSeconds).count, 2);
    assert!(
        telemetry.tick().is_none(),
        "no second tick within the same second"
    );
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_closed_as_empty_seconds() {
    let telemetry = Telemetry::new();
    let op = telemetry.operation("late");
    op.record_ok(ms(1));
    tokio::time::advance(Duration::from_secs(20)).await;
    let report = telemetry.tick().expect("ticks ended");
    assert_eq!(report.operations[0].length, Duration::from_secs(20));
    // The calls land in the newest second, so the 10 s window still has them.
    assert_eq!(op.stats().window(Window::TenSeconds).count, 1);
    tokio::time::advance(Duration::from_secs(10)).await;
    telemetry.tick();
    assert_eq!(op.stats().window(Window::TenSeconds).count, 0);
    assert_eq!(op.stats().window(Window::OneMinute).count, 1);
}

#[tokio::test(start_paused = true)]
async fn the_ticker_feeds_subscribers_every_second() {
    let telemetry = Telemetry::new();
    let op = telemetry.operation("rpc");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = telemetry.subscribe_ticks(move |r| {
        let _ = tx.send((r.at, r.operations[0].interval.count));
    });
    let _ticker = telemetry.spawn_ticker();
    let start = Instant::now();
    for second in 1..=5u64 {
        for _ in 0..second {
            op.record_ok(ms(2));
        }
        let (at, count) = rx.recv().await.unwrap();
        assert_eq!(at - start, Duration::from_secs(second));
        assert_eq!(count, second);
    }
}

#[test]
fn label_sets_past_the_limit_share_an_overflow_series() {
    let config = TelemetryConfig {
        max_series_per_metric: 3,
        max_operations: 5,
        ..TelemetryConfig::default()
    };
    let telemetry = config.build();
    for user in 0..100 {
        let op = telemetry.operation_with("login", Labels::new().with("user", format!("u{user}")));
        op.record_ok(ms(1));
    }
    let ops = telemetry.operations();
    assert_eq!(ops.len(), 4, "3 label sets plus one overflow series");
    let overflow = ops.iter().find(|o| o.labels().is_overflow()).unwrap();
    assert_eq!(overflow.stats().window(Window::SinceStart).count, 97);
    // An existing label set keeps its own series.
    let first = telemetry.operation_with("login", Labels::new().with("user", "u0"));
    assert!(!first.labels().is_overflow());

    for n in 0..10 {
        telemetry.operation(&format!("op{n}")).record_ok(ms(1));
    }
    let names: std::collections::BTreeSet<String> = telemetry
        .operations()
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    assert_eq!(
        names.len(),
        6,
        "5 names plus the overflow operation: {names:?}"
    );
    assert!(names.contains(OVERFLOW_OPERATION));

    for n in 0..50 {
        telemetry
            .counter(
                "rampart_jobs",
                "jobs",
                Labels::new().with("id", n.to_string()),
            )
            .inc();
    }
    let snap = telemetry.snapshot();
    let jobs = snap.family("rampart_jobs").unwrap();
    assert_eq!(jobs.series.len(), 4);
    assert_eq!(
        snap.value("rampart_jobs", &[("rampart_overflow", "true")]),
        Some(&Value::Counter(47.0))
    );
}

#[test]
fn memory_stays_bounded_under_unbounded_label_values() {
    let config = TelemetryConfig {
        max_series_per_metric: 100,
        max_operations: 100,
        shards: 1,
    };
    let telemetry = config.build();
    for i in 0..20_000u64 {
        telemetry
            .operation_with("req", Labels::new().with("path", format!("/item/{i}")))
            .record_ok(ms(i % 50));
    }
    assert_eq!(telemetry.operations().len(), 101);
    // One shard of 1,728 counters per operation, plus history.
    assert!(
        telemetry.memory_bytes() < 101 * (14 * 1024 + 4 * 1024),
        "{}",
        telemetry.memory_bytes()
    );
}

#[test]
fn threads_record_without_losing_a_call() {
    let telemetry = Telemetry::new();
    let op = telemetry.operation("hot");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let op = op.clone();
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    op.record(
                        Duration::from_micros(i % 1000 + t),
                        if i % 100 == 0 {
                            Outcome::Error
                        } else {
                            Outcome::Success
                        },
                    );
                }
            })
        })
        .collect();
    // Drain concurrently with the writers: nothing may be lost or counted twice.
    let mut seen = 0;
    let mut ticks = 0u64;
    let start = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) {
        ticks += 1;
        if let Some(r) = telemetry.tick_at(start + Duration::from_secs(ticks)) {
            seen += r.operations[0].interval.count;
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    ticks += 1;
    seen += telemetry
        .tick_at(start + Duration::from_secs(ticks))
        .map_or(0, |r| r.operations[0].interval.count);
    assert_eq!(seen, 400_000);
    let all = op.stats();
    let all = all.window(Window::SinceStart);
    assert_eq!((all.count, all.errors), (400_000, 4_000));
}

#[tokio::test(start_paused = true)]
async fn instrument_counts_errors_and_cancellations() {
    let telemetry = Telemetry::new();
    let ok: Result<(), &str> = telemetry
        .instrument("call", async {
            tokio::time::sleep(ms(30)).await;
            Ok(())
        })
        .await;
    assert!(ok.is_ok());
    let err: Result<(), &str> = telemetry.instrument("call", async { Err("boom") }).await;
    assert!(err.is_err());
    // Dropped after it started: cancelled, not in the latency figures.
    let slow = telemetry.instrument("call", async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), &str>(())
    });
    assert!(tokio::time::timeout(ms(10), slow).await.is_err());
    // Never polled: not a call at all.
    drop(telemetry.instrument("call", async { Ok::<(), &str>(()) }));

    let timer = telemetry.operation("manual").start();
    tokio::time::advance(ms(5)).await;
    timer.finish(Outcome::Error);
    drop(telemetry.operation("manual").start());

    let stats = telemetry.stats_of("call").unwrap();
    let all = stats.window(Window::SinceStart);
    assert_eq!((all.count, all.errors, stats.cancelled), (2, 1, 1));
    assert!(all.max.unwrap() >= ms(30) && all.max.unwrap() < ms(31));
    let manual = telemetry.stats_of("manual").unwrap();
    assert_eq!(
        (manual.window(Window::SinceStart).errors, manual.cancelled),
        (1, 1)
    );
}

#[tokio::test]
async fn the_tower_layer_records_failures() {
    use rampart_telemetry::TelemetryLayer;
    use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    let telemetry = Telemetry::new();
    let mut svc = ServiceBuilder::new()
        .layer(TelemetryLayer::new(
            telemetry.operation_with("http", Labels::new().with("route", "/x")),
        ))
        .service(service_fn(|n: u32| async move {
            if n.is_multiple_of(2) {
                Ok(n)
            } else {
                Err("odd")
            }
        }));
    for n in 0..10 {
        let _ = svc.ready().await.unwrap().call(n).await;
    }
    let snap = telemetry.snapshot();
    assert_eq!(
        snap.value(
            "rampart_operation_requests",
            &[("operation", "http"), ("route", "/x")]
        ),
        Some(&Value::Counter(10.0))
    );
    assert_eq!(
        snap.value("rampart_operation_errors", &[("operation", "http")]),
        Some(&Value::Counter(5.0))
    );
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_exports_histograms_and_window_percentiles() {
    let telemetry = Telemetry::new();
    let op = telemetry.operation("db");
    for i in 1..=1000u64 {
        op.record_ok(Duration::from_micros(i * 100)); // 0.1 ms .. 100 ms
    }
    let snap = Arc::new(telemetry.snapshot());
    let Some(Value::Histogram(h)) =
        snap.value("rampart_operation_duration", &[("operation", "db")])
    else {
        panic!("no histogram");
    };
    assert_eq!(h.count, 1000);
    assert!((h.sum - 50.05).abs() < 0.01, "{}", h.sum);
    let le = |bound: f64| {
        h.buckets
            .iter()
            .find(|b| (b.0 - bound).abs() < 1e-12)
            .map(|b| b.1)
    };
    // 10 ms is a bucket boundary away from the HDR edges: within one HDR bucket (1.6 %) of 100.
    let at_10ms = le(0.01).unwrap();
    assert!((98..=100).contains(&at_10ms), "{at_10ms}");
    assert_eq!(le(0.1), Some(1000));
    assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
    let p99 = snap
        .value(
            "rampart_operation_latency",
            &[("operation", "db"), ("window", "10s"), ("percentile", "99")],
        )
        .cloned();
    let Some(Value::Gauge(p99)) = p99 else {
        panic!("no p99")
    };
    assert!((0.099..=0.1006).contains(&p99), "{p99}");
}
