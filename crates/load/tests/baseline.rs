//! Baselines through the command: a slower run than the saved baseline exits 4 and says which
//! metric regressed; reports are saved and an HTML page is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use rampart_load::baseline::{self, Verdict};
use rampart_load::cli::{execute, run_async};
use rampart_load::record::SecondRow;
use rampart_load::report::Report;

/// A baseline of ten steady seconds: 100 requests each, p50 near 1 ms, no errors.
fn fast_baseline() -> Report {
    let doc = serde_json::json!({
        "schema": 1, "model": "open", "started_unix": 0, "duration_s": 10.0, "planned_s": 10.0,
        "aborted": false, "passed": true, "requests": [],
        "total": {"name": "all", "count": 1000, "errors": 0, "dropped": 0, "error_rate": 0.0,
                  "rate": 100.0, "errors_by_kind": {}, "latency_ms": {}, "service_ms": null},
        "thresholds": [], "series": []
    });
    let mut r: Report = serde_json::from_value(doc).unwrap();
    r.series = (1..=10)
        .map(|t| SecondRow {
            t: f64::from(t),
            count: 100,
            p50_ms: Some(1.0 + f64::from(t % 3) * 0.05),
            p99_ms: Some(2.0 + f64::from(t % 2) * 0.1),
            ..SecondRow::default()
        })
        .collect();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_run_regresses_against_its_baseline() {
    let server = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    baseline::save(dir.path(), "fast", &fast_baseline()).unwrap();
    let html = dir.path().join("report.html");
    // /slow answers in 20 ms: p50 and p99 regress, the rate does not.
    let url = server.url("/slow");
    let argv = [
        url.as_str(),
        "--rate",
        "100",
        "--duration",
        "2200ms",
        "--connections",
        "10",
        "-q",
        "--baseline",
        "fast",
        "--baseline-dir",
        dir.path().to_str().unwrap(),
        "--save-baseline",
        "slow",
        "--html",
        html.to_str().unwrap(),
        // Two seconds of this run against ten of the baseline leave Welch's test about one degree
        // of freedom; a looser alpha keeps a busy machine's jitter from hiding a 20x slowdown.
        "--alpha",
        "0.2",
    ];
    assert_eq!(
        run_async(common::args(&argv)).await,
        4,
        "regression exits 4"
    );
    // The run was saved as a baseline of its own, comparison included.
    let report = baseline::load(dir.path(), "slow").unwrap();
    let c = report.comparison.as_ref().unwrap();
    let verdict = |m: &str| c.metrics.iter().find(|x| x.metric == m).unwrap().verdict;
    assert!(c.regressed, "{}", c.table());
    assert_eq!(verdict("p50_ms"), Verdict::Regression, "{}", c.table());
    // With two seconds a side the p99's spread on a busy machine may keep it from significance;
    // its direction is still plain.
    let p99 = c.metrics.iter().find(|x| x.metric == "p99_ms").unwrap();
    assert!(
        p99.current.unwrap() > 10.0 * p99.baseline.unwrap(),
        "{}",
        c.table()
    );
    assert_ne!(p99.verdict, Verdict::Improvement);
    assert_eq!(verdict("error_rate"), Verdict::Unchanged);
    assert_eq!(verdict("rate"), Verdict::Unchanged, "{}", c.table());
    assert!(report.total.count >= 200, "{}", report.total.count);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("Regression"));
}

#[tokio::test]
async fn a_missing_baseline_is_bad_input_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let argv = [
        "http://127.0.0.1:1/",
        "--rate",
        "10",
        "-q",
        "--baseline",
        "nope",
        "--baseline-dir",
        dir.path().to_str().unwrap(),
        "--alpha",
        "2",
        "--save-baseline",
        "../x",
        "--test",
        "t",
    ];
    let err = execute(&common::args(&argv)).await.unwrap_err().to_string();
    for key in ["--alpha", "--save-baseline", "--test"] {
        assert!(err.contains(key), "{key} in {err}");
    }
    let argv = [
        "http://127.0.0.1:1/",
        "--rate",
        "10",
        "-q",
        "--baseline",
        "nope",
        "--baseline-dir",
        dir.path().to_str().unwrap(),
    ];
    let err = execute(&common::args(&argv)).await.unwrap_err().to_string();
    assert!(err.contains("no baseline \"nope\""), "{err}");
    assert_eq!(run_async(common::args(&argv)).await, 2);
}
