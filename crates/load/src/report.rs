//! The run's report: per request name and overall, thresholds, and the per-second series; printed
//! as a table or written as JSON (schema in `docs/load.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rampart_telemetry::histogram::Interval;
use serde::{Deserialize, Serialize};

use crate::record::{SecondRow, Window, ms};

/// Latency percentiles in milliseconds (`None` when nothing was recorded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p99_9: Option<f64>,
    /// Highest.
    pub max: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

impl Percentiles {
    /// Of one histogram. Each is the top of its bucket: at most 1.6 % above the true value.
    pub fn of(h: &Interval) -> Self {
        Percentiles {
            p50: ms(h.quantile(0.5)),
            p90: ms(h.quantile(0.9)),
            p99: ms(h.quantile(0.99)),
            p99_9: ms(h.quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean().map(|m| m / 1000.0),
        }
    }
}

/// One request name's results, or all of them together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestReport {
    /// The request's name (`"all"` for the total).
    pub name: String,
    /// Requests completed, failed ones included.
    pub count: u64,
    /// Requests failed or dropped.
    pub errors: u64,
    /// Requests never sent because the queue was full.
    pub dropped: u64,
    /// `errors / (count + dropped)`.
    pub error_rate: f64,
    /// Completed requests per second over the run.
    pub rate: f64,
    /// Errors by kind (`connect`, `timeout`, `http_4xx`, `http_5xx`, `io`, `query`, `extract`, `dropped`),
    /// only kinds that occurred.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency: from the intended send time in the open model (coordinated-omission corrected),
    /// from the actual send in the closed model.
    pub latency_ms: Percentiles,
    /// Open model only: service time, from the actual send.
    pub service_ms: Option<Percentiles>,
}

impl RequestReport {
    /// From a window over the whole run.
    pub fn of(name: &str, w: &Window, open: bool, errors_by_kind: BTreeMap<String, u64>) -> Self {
        RequestReport {
            name: name.to_owned(),
            count: w.latency.count,
            errors: w.errors(),
            dropped: w.dropped,
            error_rate: w.error_rate().unwrap_or(0.0),
            rate: w.rate(),
            errors_by_kind,
            latency_ms: Percentiles::of(&w.latency),
            service_ms: open.then(|| Percentiles::of(&w.service)),
        }
    }
}

/// How one threshold fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdReport {
    /// As written (normalised).
    pub threshold: String,
    /// True if the whole run and every window passed.
    pub passed: bool,
    /// Its value over the whole run (ms for latencies, a fraction for `error_rate`).
    pub value: Option<f64>,
    /// Sliding windows judged (0 without `over`).
    pub windows: u64,
    /// Sliding windows that failed.
    pub windows_failed: u64,
    /// The worst value of any window.
    pub worst_window: Option<f64>,
    /// Seconds from the start to the end of the first failing window.
    pub first_failed_at: Option<f64>,
}

/// The report of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Version of this layout: 1.
    pub schema: u32,
    /// `"open"` or `"closed"`.
    pub model: String,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// How long it ran, seconds.
    pub duration_s: f64,
    /// How long it was planned to run, seconds.
    pub planned_s: f64,
    /// True if a failing threshold stopped it early.
    pub aborted: bool,
    /// True if every threshold passed.
    pub passed: bool,
    /// Per request name, in scenario order.
    pub requests: Vec<RequestReport>,
    /// All requests together.
    pub total: RequestReport,
    /// Each threshold's result.
    pub thresholds: Vec<ThresholdReport>,
    /// One row per second.
    pub series: Vec<SecondRow>,
    /// The comparison with a baseline, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<crate::baseline::Comparison>,
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

impl Report {
    /// The summary table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} model, ran {:.1}s of {:.1}s{}",
            self.model,
            self.duration_s,
            self.planned_s,
            if self.aborted {
                " (aborted: a threshold failed)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  (ms)",
            "request", "count", "rate/s", "errors", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut rows: Vec<&RequestReport> = self.requests.iter().collect();
        if self.requests.len() > 1 {
            rows.push(&self.total);
        }
        for r in rows {
            let mut line =
                |label: String, p: &Percentiles, count: String, rate: String, errors: String| {
                    let _ = writeln!(
                        out,
                        "{:<24} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        label,
                        count,
                        rate,
                        errors,
                        cell(p.p50),
                        cell(p.p90),
                        cell(p.p99),
                        cell(p.p99_9),
                        cell(p.max)
                    );
                };
            let mut name = r.name.clone();
            if name.chars().count() > 24 {
                name = name.chars().take(23).collect::<String>() + "…";
            }
            line(
                name,
                &r.latency_ms,
                r.count.to_string(),
                format!("{:.1}", r.rate),
                r.errors.to_string(),
            );
            if let Some(s) = &r.service_ms {
                line(
                    "  service time".to_owned(),
                    s,
                    String::new(),
                    String::new(),
                    String::new(),
                );
            }
            if !r.errors_by_kind.is_empty() {
                let kinds: Vec<String> = r
                    .errors_by_kind
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let _ = writeln!(out, "  errors: {}", kinds.join(", "));
            }
        }
        if self.model == "open" {
            let _ = writeln!(
                out,
                "latency counts from each request's scheduled send time (coordinated omission corrected); service time from its actual send"
            );
        }
        for t in &self.thresholds {
            let windows = if t.windows > 0 {
                format!(", {} of {} windows failed", t.windows_failed, t.windows)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "threshold {:<28} {}  (run: {}{windows})",
                t.threshold,
                if t.passed { "pass" } else { "FAIL" },
                cell(t.value),
            );
        }
        out
    }

    /// The report as one self-contained HTML page: tables and inline SVG charts of the series,
    /// no scripts or external assets.
    pub fn to_html(&self) -> String {
        crate::html::render(self)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
