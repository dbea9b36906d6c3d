//! A self-contained HTML report: summary tables and inline SVG charts of the per-second series,
//! no scripts, no external assets.

use std::fmt::Write as _;

use crate::record::SecondRow;
use crate::report::{Percentiles, Report};

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

/// A chart line: its label, colour, and value in a row.
type Line = (&'static str, &'static str, fn(&SecondRow) -> Option<f64>);

const W: f64 = 860.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;

/// One line chart of `lines` (label, colour, value of a row) over the series.
fn chart(title: &str, unit: &str, series: &[SecondRow], lines: &[Line]) -> String {
    let t_max = series.last().map_or(1.0, |r| r.t).max(1.0);
    let y_max = series
        .iter()
        .flat_map(|r| lines.iter().filter_map(move |(_, _, f)| f(r)))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |t: f64| PAD + t / t_max * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD + -(v / y_max) * (H - 2.0 * PAD);
    let mut svg = format!(
        r#"<h3>{}</h3><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{PAD}" y="{PAD}" width="{}" height="{}" fill="none" stroke="#ccc"/>"##,
        W - 2.0 * PAD,
        H - 2.0 * PAD
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{v:.1}</text>"##,
            PAD - 4.0,
            y(v) + 3.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="10" fill="#555">{} · seconds 0–{t_max:.0}</text>"##,
        PAD,
        H - PAD + 16.0,
        esc(unit)
    );
    for (i, (label, colour, f)) in lines.iter().enumerate() {
        let points: Vec<String> = series
            .iter()
            .filter_map(|r| f(r).map(|v| format!("{:.1},{:.1}", x(r.t), y(v))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            points.join(" "),
            W - PAD - 150.0 + 75.0 * i as f64,
            PAD - 8.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn row(out: &mut String, cells: &[String]) {
    out.push_str("<tr>");
    for c in cells {
        let _ = write!(out, "<td>{c}</td>");
    }
    out.push_str("</tr>");
}

fn percentile_cells(p: &Percentiles) -> [String; 5] {
    [num(p.p50), num(p.p90), num(p.p99), num(p.p99_9), num(p.max)]
}

/// The report as one HTML page.
pub(crate) fn render(r: &Report) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rampart load report</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\
         .fail{color:#b00;font-weight:bold}.pass{color:#070}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>rampart load</h1><p>{} model, ran {:.1} s of {:.1} s{}. Latency in ms{}.</p>",
        esc(&r.model),
        r.duration_s,
        r.planned_s,
        if r.aborted {
            ", <span class=\"fail\">aborted by a failing threshold</span>"
        } else {
            ""
        },
        if r.model == "open" {
            ", counted from each request's scheduled send time (coordinated omission corrected)"
        } else {
            ""
        }
    );
    out.push_str("<table><tr><th>request</th><th>count</th><th>rate/s</th><th>errors</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>errors by kind</th></tr>");
    let mut all: Vec<_> = r.requests.iter().collect();
    if r.requests.len() > 1 {
        all.push(&r.total);
    }
    for q in all {
        let kinds: Vec<String> = q
            .errors_by_kind
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let mut cells = vec![
            esc(&q.name),
            q.count.to_string(),
            format!("{:.1}", q.rate),
            q.errors.to_string(),
        ];
        cells.extend(percentile_cells(&q.latency_ms));
        cells.push(kinds.join(", "));
        row(&mut out, &cells);
        if let Some(s) = &q.service_ms {
            let mut cells = vec![
                "&nbsp;&nbsp;service time".to_owned(),
                String::new(),
                String::new(),
                String::new(),
            ];
            cells.extend(percentile_cells(s));
            cells.push(String::new());
            row(&mut out, &cells);
        }
    }
    out.push_str("</table>");
    if !r.thresholds.is_empty() {
        out.push_str("<h2>Thresholds</h2><table><tr><th>threshold</th><th>result</th><th>run value</th><th>windows failed</th></tr>");
        for t in &r.thresholds {
            let result = if t.passed {
                "<span class=\"pass\">pass</span>"
            } else {
                "<span class=\"fail\">FAIL</span>"
            };
            row(
                &mut out,
                &[
                    esc(&t.threshold),
                    result.to_owned(),
                    num(t.value),
                    format!("{} of {}", t.windows_failed, t.windows),
                ],
            );
        }
        out.push_str("</table>");
    }
    if let Some(c) = &r.comparison {
        let _ = write!(
            out,
            "<h2>Compared with baseline {} ({:?} test)</h2><table><tr><th>metric</th><th>baseline</th><th>this run</th><th>change</th><th>p-value</th><th>verdict</th></tr>",
            esc(&c.baseline),
            c.test
        );
        for m in &c.metrics {
            let verdict = format!("{:?}", m.verdict);
            let class = if verdict == "Regression" { "fail" } else { "" };
            row(
                &mut out,
                &[
                    esc(&m.metric),
                    num(m.baseline),
                    num(m.current),
                    num(m.change),
                    m.p_value.map_or("-".to_owned(), |p| format!("{p:.2e}")),
                    format!("<span class=\"{class}\">{verdict}</span>"),
                ],
            );
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Over time</h2>");
    out.push_str(&chart(
        "Latency per second",
        "ms",
        &r.series,
        &[
            ("p50", "#1f77b4", |s| s.p50_ms),
            ("p99", "#d62728", |s| s.p99_ms),
        ],
    ));
    out.push_str(&chart(
        "Requests and errors per second",
        "per second",
        &r.series,
        &[
            ("requests", "#2ca02c", |s| Some(s.count as f64)),
            ("errors", "#d62728", |s| Some(s.errors as f64)),
        ],
    ));
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_self_contained_and_escaped() {
        let series: Vec<SecondRow> = (1..=5)
            .map(|t| SecondRow {
                t: f64::from(t),
                count: 100,
                p50_ms: Some(1.0),
                p99_ms: Some(f64::from(t)),
                ..SecondRow::default()
            })
            .collect();
        let mut total = crate::report::RequestReport {
            name: "GET /<x>".into(),
            count: 500,
            ..Default::default()
        };
        total.latency_ms.p99 = Some(5.0);
        let r = Report {
            schema: 1,
            model: "open".into(),
            started_unix: 0,
            duration_s: 5.0,
            planned_s: 5.0,
            aborted: false,
            passed: true,
            requests: vec![total.clone()],
            total,
            thresholds: Vec::new(),
            series,
            comparison: None,
        };
        let html = render(&r);
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
        assert!(html.contains("GET /&lt;x&gt;") && !html.contains("/<x>"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("<polyline").count(), 4);
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }
}
