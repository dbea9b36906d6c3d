#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Detection on a stated workload, through a real `Telemetry` registry on paused time.
//!
//! Workload: five dependencies `dep1`..`dep5` (label `dependency="depN"`), each called 200 times
//! a second with log-normal latency (median 10 ms, sigma 0.5) and 0.1 % errors, recorded into the
//! registry and ticked once a second. Random numbers come from fixed seeds.

use rampart_telemetry::detect::{
    DetectionEvent, Detector, DetectorConfig, ExhaustionConfig, ForecastConfig, Limit, Signal,
};
use rampart_telemetry::{Labels, Operation, Telemetry};
use std::time::Duration;
use tokio::time::Instant;

const DEPS: usize = 5;
const RATE: u32 = 200;
const MEDIAN_MS: f64 = 10.0;
const SIGMA: f64 = 0.5;
const BASE_ERRORS: f64 = 0.001;
const WARM_UP: u64 = 120;

/// What one dependency does during one second.
#[derive(Clone, Copy)]
struct Profile {
    median_ms: f64,
    error_ratio: f64,
}

const NORMAL: Profile = Profile {
    median_ms: MEDIAN_MS,
    error_ratio: BASE_ERRORS,
};

struct Sim {
    telemetry: Telemetry,
    deps: Vec<Operation>,
    rng: fastrand::Rng,
    start: Instant,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let telemetry = Telemetry::new();
        let deps = (1..=DEPS)
            .map(|i| {
                telemetry
                    .operation_with("call", Labels::new().with("dependency", format!("dep{i}")))
            })
            .collect();
        Sim {
            start: Instant::now(),
            telemetry,
            deps,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A log-normal latency with the given median (sigma 0.5), by Box–Muller.
    fn latency(&mut self, median_ms: f64) -> Duration {
        let (u, v) = (1.0 - self.rng.f64(), self.rng.f64());
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        Duration::from_secs_f64(median_ms / 1e3 * (SIGMA * z).exp())
    }

    /// Records one second of calls for every dependency (`profile(dep index 0..5)`), returns the
    /// latencies of each call's dependencies summed per call index (for end-to-end requests).
    fn second(&mut self, profile: impl Fn(usize) -> Profile) -> Vec<Duration> {
        let mut per_call = vec![Duration::ZERO; RATE as usize];
        for d in 0..DEPS {
            let p = profile(d);
            for slot in per_call.iter_mut() {
                let latency = self.latency(p.median_ms);
                *slot += latency;
                if self.rng.f64() < p.error_ratio {
                    self.deps[d].record_error(latency);
                } else {
                    self.deps[d].record_ok(latency);
                }
            }
        }
        per_call
    }

    /// Advances paused time by a second and closes the tick.
    async fn tick(&self) -> rampart_telemetry::TickReport {
        tokio::time::advance(Duration::from_secs(1)).await;
        self.telemetry.tick().expect("a second passed")
    }

    /// The instant second `s` of the simulation began.
    fn at(&self, s: u64) -> Instant {
        self.start + Duration::from_secs(s)
    }
}

fn names(e: &DetectionEvent) -> Option<String> {
    match e {
        DetectionEvent::Bottleneck(b) => Some(b.dependency.to_string()),
        other => other
            .operation()
            .and_then(|k| k.labels.get("dependency").map(str::to_owned)),
    }
}

/// The payloads of one kind of event: `only!(events, Bottleneck)` for `&[DetectionEvent]` or
/// `&[(second, DetectionEvent)]`.
macro_rules! only {
    ($events:expr, $kind:ident) => {
        $events
            .iter()
            .filter_map(|e| match AsEvent::event(e) {
                DetectionEvent::$kind(x) => Some(x),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

trait AsEvent {
    fn event(&self) -> &DetectionEvent;
}

impl AsEvent for DetectionEvent {
    fn event(&self) -> &DetectionEvent {
        self
    }
}

impl AsEvent for (u64, DetectionEvent) {
    fn event(&self) -> &DetectionEvent {
        &self.1
    }
}

/// Runs `seconds` of the workload through a detector fed directly; returns `(second, event)`.
async fn run(
    seed: u64,
    seconds: u64,
    config: DetectorConfig,
    profile: impl Fn(usize, u64) -> Profile,
) -> (Vec<(u64, DetectionEvent)>, Sim, Detector) {
    let mut sim = Sim::new(seed);
    let mut detector = config.build().expect("valid config");
    let mut events = Vec::new();
    for s in 0..seconds {
        sim.second(|d| profile(d, s));
        let report = sim.tick().await;
        events.extend(detector.observe(&report).into_iter().map(|e| (s, e)));
    }
    (events, sim, detector)
}

#[tokio::test(start_paused = true)]
async fn median_doubling_on_one_of_five_dependencies_is_named_within_five_seconds() {
    let mut sim = Sim::new(1);
    let (_attached, mut rx) = DetectorConfig::default()
        .build()
        .unwrap()
        .attach(&sim.telemetry);
    let onset = WARM_UP;
    let mut events = Vec::new();
    for s in 0..onset + 60 {
        sim.second(|d| Profile {
            median_ms: if d == 2 && s >= onset {
                2.0 * MEDIAN_MS
            } else {
                MEDIAN_MS
            },
            ..NORMAL
        });
        sim.tick().await;
        while let Ok(e) = rx.try_recv() {
            events.push((s, e));
        }
    }
    for (s, e) in &events {
        println!("second {s}: {e}");
    }
    assert!(
        events
            .iter()
            .all(|(_, e)| names(e).as_deref() == Some("dep3")),
        "only dep3 is named: {events:?}"
    );
    let true_onset = sim.at(onset);
    let Some(&b) = only!(events, Bottleneck).first() else {
        panic!("no bottleneck: {events:?}");
    };
    let delay = b.detected_at.duration_since(true_onset);
    println!(
        "detection delay {delay:?}, onset estimate {:?} after the true one",
        b.onset.duration_since(true_onset)
    );
    assert!(delay <= Duration::from_secs(5), "{delay:?}");
    assert_eq!(b.cause, Signal::Latency);
    assert_eq!(b.onset, true_onset, "onset estimated to the second");
    // Equal shares before (1/5); after, dep3 takes 2 of 6 equal parts.
    assert!(
        (b.share_of_time.baseline - 0.2).abs() < 0.02,
        "{:?}",
        b.share_of_time
    );
    assert!(
        (b.share_of_time.current - 1.0 / 3.0).abs() < 0.05,
        "{:?}",
        b.share_of_time
    );
    // Log-normal mean is median * exp(sigma²/2): 11.3 ms, rising by as much.
    let added = b.added_latency.as_secs_f64() * 1e3;
    assert!((added - 11.3).abs() < 2.5, "added {added} ms");
    let steps = only!(events, LatencyStep);
    assert_eq!(steps.len(), 1, "one step, not one per second: {steps:?}");
    assert!((1.8..2.2).contains(&steps[0].ratio), "{}", steps[0].ratio);
    assert!(steps[0].p50.current > steps[0].p50.baseline * 18 / 10);
    assert_eq!(events.len(), 2, "a step and its bottleneck: {events:?}");
}

#[tokio::test(start_paused = true)]
async fn recovery_is_reported_once_and_the_step_is_not_reported_again() {
    let (onset, back) = (WARM_UP, WARM_UP + 90);
    let (events, sim, _) = run(2, back + 90, DetectorConfig::default(), |d, s| Profile {
        median_ms: if d == 2 && (onset..back).contains(&s) {
            2.0 * MEDIAN_MS
        } else {
            MEDIAN_MS
        },
        ..NORMAL
    })
    .await;
    let kinds: Vec<(u64, &str)> = events.iter().map(|(s, e)| (*s, e.kind())).collect();
    assert_eq!(
        kinds.iter().map(|k| k.1).collect::<Vec<_>>(),
        ["latency_step", "bottleneck", "recovered"],
        "{events:?}"
    );
    let Some(DetectionEvent::Recovered(r)) = events.last().map(|e| &e.1) else {
        unreachable!()
    };
    assert_eq!(r.signal, Signal::Latency);
    assert_eq!(r.since, sim.at(onset));
    assert_eq!(r.onset, sim.at(back));
    assert!(r.detected_at.duration_since(sim.at(back)) <= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn an_hour_of_stationary_noise_gives_no_event() {
    let started = std::time::Instant::now();
    let (events, _, detector) = run(3, 3_600, DetectorConfig::default(), |_, _| NORMAL).await;
    let elapsed = started.elapsed();
    println!("3600 ticks x 5 dependencies x 200 calls: {elapsed:?}");
    assert!(events.is_empty(), "{events:?}");
    // Bounded memory: a few tens of KiB per operation after an hour.
    let per_op = detector.memory_bytes() / DEPS;
    println!("detector memory per operation: {per_op} bytes");
    assert!(per_op < 64 * 1024, "{per_op}");
    let rollup = detector
        .rollup("call", &Labels::new().with("dependency", "dep1"))
        .unwrap();
    assert_eq!(
        rollup.minutes().len(),
        59,
        "the last hour of closed minutes"
    );
    let minute = rollup.minutes().last().unwrap();
    assert_eq!(minute.count, 60 * u64::from(RATE));
    let p50 = minute.p50.unwrap().as_secs_f64() * 1e3;
    assert!((p50 - MEDIAN_MS).abs() < 0.5, "{p50}");
}

#[tokio::test(start_paused = true)]
async fn seconds_that_jitter_more_than_sampling_explains_do_not_alert() {
    // Each second every dependency's median is multiplied by exp(0.15 z): ten minutes of
    // stationary but bursty latency. Without the overdispersion correction this alerts about
    // once a minute (a three-second mean then often moves past x1.25 with a tiny p-value).
    let mut sim = Sim::new(9);
    let mut jitter = fastrand::Rng::with_seed(10);
    let mut detector = DetectorConfig::default().build().unwrap();
    let mut events = Vec::new();
    for _ in 0..600 {
        let factors: Vec<f64> = (0..DEPS)
            .map(|_| {
                let (u, v) = (1.0 - jitter.f64(), jitter.f64());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                (0.15 * z).exp()
            })
            .collect();
        sim.second(|d| Profile {
            median_ms: MEDIAN_MS * factors[d],
            ..NORMAL
        });
        events.extend(detector.observe(&sim.tick().await));
    }
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn p_values_are_honest_under_stationary_noise() {
    // With the minimum effects off, a test at per-test level 0.01 (0.1 split over ten tests a
    // tick) falls below it in about 1 % of the ~2,900 tested operation-seconds: at most ~29
    // alarms per signal, fewer because overlapping windows make one excursion span several
    // seconds and each alarm restarts that operation's baseline for 20 s (seeds gave 8 to 21).
    // Far more would mean p-values that are too small; none, a test that cannot fire.
    let mut config = DetectorConfig::default();
    config.step.min_latency_ratio = 1.0;
    config.step.min_latency_increase = Duration::ZERO;
    config.step.min_error_ratio = 1.0;
    config.step.min_error_increase = 0.0;
    config.step.alpha = 0.1;
    let (events, _, _) = run(11, 600, config, |_, _| NORMAL).await;
    let count = |kind| events.iter().filter(|(_, e)| e.kind() == kind).count();
    let (latency, errors) = (count("latency_step"), count("error_step"));
    println!("false alarms at level 0.01: latency {latency}, errors {errors}");
    assert!((5..=40).contains(&latency), "{latency}");
    // The exact test on rare errors is conservative (discrete counts), never liberal.
    assert!(errors <= 40, "{errors}");
}

#[tokio::test(start_paused = true)]
async fn slow_drift_is_a_trend_not_a_step() {
    const DRIFT: u64 = 30 * 60;
    let (events, sim, _) = run(
        4,
        WARM_UP + DRIFT + 60,
        DetectorConfig::default(),
        |d, s| {
            let progress = (s.saturating_sub(WARM_UP) as f64 / DRIFT as f64).min(1.0);
            Profile {
                median_ms: if d == 0 {
                    MEDIAN_MS * (1.0 + 0.5 * progress)
                } else {
                    MEDIAN_MS
                },
                ..NORMAL
            }
        },
    )
    .await;
    for (s, e) in &events {
        println!("second {s}: {e}");
    }
    assert!(
        events
            .iter()
            .all(|(_, e)| matches!(e, DetectionEvent::Trend(_))),
        "only trends: {events:?}"
    );
    let trends = only!(events, Trend);
    assert!(!trends.is_empty(), "the drift is reported");
    for t in &trends {
        assert_eq!(t.operation.labels.get("dependency"), Some("dep1"));
        assert_eq!(t.signal, Signal::Latency);
        assert!(t.fitted.current > t.fitted.baseline);
        // The median gains 10 ms an hour: +100 %/h of 10 ms at the start, +67 %/h of 15 ms at
        // the end.
        assert!((0.5..1.2).contains(&t.per_hour), "{}", t.per_hour);
    }
    let first = trends[0].detected_at.duration_since(sim.at(WARM_UP));
    println!("trend reported {first:?} into the drift");
    assert!(first <= Duration::from_secs(15 * 60), "{first:?}");
}

#[tokio::test(start_paused = true)]
async fn error_ratio_step_on_one_dependency_is_named() {
    let onset = WARM_UP;
    let (events, sim, _) = run(5, onset + 30, DetectorConfig::default(), |d, s| Profile {
        error_ratio: if d == 1 && s >= onset {
            0.05
        } else {
            BASE_ERRORS
        },
        ..NORMAL
    })
    .await;
    assert!(
        events
            .iter()
            .all(|(_, e)| names(e).as_deref() == Some("dep2")),
        "{events:?}"
    );
    let step = only!(events, ErrorStep)[0];
    let delay = step.detected_at.duration_since(sim.at(onset));
    println!("error step detected after {delay:?}: {}", events[0].1);
    assert!(delay <= Duration::from_secs(5), "{delay:?}");
    assert!(step.error_ratio.baseline < 0.005 && step.error_ratio.current > 0.02);
    let b = only!(events, Bottleneck);
    assert!(b.len() == 1 && b[0].cause == Signal::ErrorRatio && &*b[0].dependency == "dep2");
}

/// Every request calls the five dependencies one after the other, plus `own` of its own work.
async fn run_end_to_end(
    seed: u64,
    seconds: u64,
    profile: impl Fn(usize, u64) -> Profile,
    own_ms: impl Fn(u64) -> f64,
) -> Vec<DetectionEvent> {
    let mut sim = Sim::new(seed);
    let request = sim.telemetry.operation("http.request");
    let mut config = DetectorConfig::default();
    config.bottleneck.end_to_end = vec!["http.request".into()];
    let mut detector = config.build().unwrap();
    let mut events = Vec::new();
    for s in 0..seconds {
        let calls = sim.second(|d| profile(d, s));
        for deps in calls {
            request.record_ok(deps + Duration::from_secs_f64(own_ms(s) / 1e3));
        }
        events.extend(detector.observe(&sim.tick().await));
    }
    events
}

#[tokio::test(start_paused = true)]
async fn a_dependency_step_explains_the_end_to_end_rise() {
    let events = run_end_to_end(
        6,
        WARM_UP + 20,
        |d, s| Profile {
            median_ms: if d == 3 && s >= WARM_UP {
                2.0 * MEDIAN_MS
            } else {
                MEDIAN_MS
            },
            ..NORMAL
        },
        |_| 1.0,
    )
    .await;
    let bottlenecks = only!(events, Bottleneck);
    assert_eq!(bottlenecks.len(), 1, "{events:?}");
    let b = bottlenecks[0];
    assert_eq!(&*b.dependency, "dep4");
    let e2e = b.end_to_end.as_ref().expect("end-to-end impact");
    assert_eq!(&*e2e.operation.name, "http.request");
    let explained = e2e.explained.expect("the end-to-end mean rose");
    assert!((0.75..1.25).contains(&explained), "{explained}");
    println!("{}", DetectionEvent::Bottleneck(b.clone()));
}

#[tokio::test(start_paused = true)]
async fn an_end_to_end_rise_without_a_dependency_names_the_operation_itself() {
    let events = run_end_to_end(
        7,
        WARM_UP + 20,
        |_, _| NORMAL,
        |s| {
            if s >= WARM_UP { 40.0 } else { 1.0 }
        },
    )
    .await;
    let Some(&b) = only!(events, Bottleneck).first() else {
        panic!("no bottleneck: {events:?}");
    };
    assert_eq!(&*b.dependency, "http.request");
    assert!(
        events
            .iter()
            .all(|e| names(e).is_none_or(|n| n == "http.request")),
        "no dependency named: {events:?}"
    );
    // Its own share of its time grows from ~2 % (1 of ~58 ms) to ~41 % (40 of ~97 ms).
    assert!(
        b.share_of_time.baseline < 0.05 && b.share_of_time.current > 0.3,
        "{b:?}"
    );
}

#[test]
fn config_errors_are_reported_together_with_their_paths() {
    let mut config = DetectorConfig::default();
    config.step.recent = Duration::ZERO;
    config.step.alpha = 2.0;
    config.trend.window = Duration::from_secs(2 * 3_600);
    let err = config.build().unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["step.recent", "step.alpha", "trend.window"],
        "{err}"
    );
}

#[test]
fn a_linear_series_reaching_its_limit_gives_the_right_eta() {
    let forecaster = ForecastConfig::default().build().unwrap();
    let mut rng = fastrand::Rng::with_seed(8);
    let t0 = Instant::now();
    // 0.2 + 0.001/s with ±0.01 noise, sampled every 10 s for 5 minutes: 1.0 at t = 800 s.
    let samples: Vec<_> = (0..=30u64)
        .map(|i| {
            let t = 10.0 * i as f64;
            (
                t0 + Duration::from_secs(10 * i),
                0.2 + 0.001 * t + 0.02 * (rng.f64() - 0.5),
            )
        })
        .collect();
    let f = forecaster
        .forecast(samples.iter().copied(), Limit::Rising(1.0))
        .unwrap();
    let eta = f.eta.as_secs_f64();
    assert!((eta - 500.0).abs() < 25.0, "{eta}");
    assert_eq!(f.now, t0 + Duration::from_secs(300));
    assert!(f.r2 > 0.9 && f.p_value < 1e-6);
    // Heading away from a floor gives no forecast.
    assert!(forecaster.forecast(samples, Limit::Falling(0.0)).is_none());
}

#[test]
fn noise_without_slope_gives_no_forecast() {
    let forecaster = ForecastConfig::default().build().unwrap();
    let t0 = Instant::now();
    for seed in 0..50 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let samples = (0..60u64).map(|i| (t0 + Duration::from_secs(i), 0.5 + 0.2 * rng.f64()));
        assert!(
            forecaster.forecast(samples, Limit::Rising(1.0)).is_none(),
            "seed {seed}"
        );
    }
}

/// Feeds `value(seconds since start)` every `every` seconds until `until`; returns the first
/// event, the second it came at, and the start.
fn watch(
    config: ExhaustionConfig,
    every: u64,
    until: u64,
    value: impl Fn(f64) -> f64,
) -> Option<(u64, DetectionEvent, Instant)> {
    let mut watch = config.build().unwrap();
    let t0 = Instant::now();
    (0..=until / every).find_map(|i| {
        let s = i * every;
        watch
            .observe(t0 + Duration::from_secs(s), value(s as f64))
            .map(|e| (s, e, t0))
    })
}

#[test]
fn pool_saturation_is_forecast() {
    // 50 connections; in use grows from 10 by one every 30 s: saturated at t = 1200 s.
    let (s, e, _) = watch(ExhaustionConfig::pool_saturation("orders"), 1, 1_200, |t| {
        (10.0 + (t / 30.0).floor()) / 50.0
    })
    .expect("a warning before saturation");
    let DetectionEvent::Exhaustion(x) = &e else {
        panic!("{e:?}")
    };
    let left = 1_200.0 - s as f64;
    let eta = x.forecast.eta.as_secs_f64();
    println!("at {s}s: {e}");
    assert!((eta - left).abs() < 0.1 * left, "eta {eta} vs {left}");
    assert!(
        e.to_string().starts_with("pool orders saturated in ~"),
        "{e}"
    );
}

#[test]
fn disk_full_is_forecast_in_days() {
    // 1 TB disk at 400 GB, filling 100 GB a day with ±5 GB of daily swing: full in 6 days.
    let day = 86_400.0;
    let (s, e, _) = watch(
        ExhaustionConfig::disk_full("/var", 1e12),
        300,
        2 * 86_400,
        |t| 4e11 + 1e11 * t / day + 5e9 * (std::f64::consts::TAU * t / day).sin(),
    )
    .expect("a warning");
    let DetectionEvent::Exhaustion(x) = &e else {
        panic!("{e:?}")
    };
    let left_days = 6.0 - s as f64 / day;
    let eta_days = x.forecast.eta.as_secs_f64() / day;
    println!("at {s}s: {e}");
    // After one day the daily swing still tilts the fitted slope by about 10 %.
    assert!(
        (eta_days - left_days).abs() < 0.15 * left_days,
        "{eta_days} vs {left_days}"
    );
    assert!(e.to_string().contains("disk /var full in ~"), "{e}");
}

#[test]
fn certificate_expiry_is_exact() {
    // 9 days and 3 hours left at the start, checked hourly.
    let config = ExhaustionConfig::certificate_expiry("api.example.com");
    let (s, e, t0) = watch(config, 3_600, 86_400, |t| 9.125 - t / 86_400.0)
        .expect("a warning: it expires within 14 days");
    let DetectionEvent::Exhaustion(x) = &e else {
        panic!("{e:?}")
    };
    assert!(
        s <= 4 * 3_600,
        "three hourly buckets, closed by the next sample: {s}"
    );
    let expires = t0 + Duration::from_secs_f64(9.125 * 86_400.0);
    let off = x.forecast.reaches_at.max(expires) - x.forecast.reaches_at.min(expires);
    assert!(off < Duration::from_millis(1), "{off:?}");
    assert_eq!(
        e.to_string(),
        "certificate api.example.com expires in 9 days"
    );
}
