//! Pass/fail thresholds: `p99<200ms`, `error_rate<1%`, `p99{login}<300ms over 10s`.
//!
//! Grammar: `METRIC[{REQUEST}] OP VALUE [over DURATION]`, spaces optional.
//! - METRIC: `pNN` or `pNN.N` (latency percentile, from the intended send time in the open
//!   model), `service_pNN` (from the actual send), `mean`, `max`, `error_rate`, `errors`, `rate`
//!   (completed requests per second).
//! - `{REQUEST}` limits it to one request name; without it, all requests count together.
//! - OP: `<`, `<=`, `>`, `>=`.
//! - VALUE: a duration for latency metrics (`200ms`), a percentage or fraction for `error_rate`
//!   (`1%`, `0.01`), a number for `errors` and `rate`.
//! - `over 10s` judges every sliding window of that length (each second, once the run is that
//!   long) as well as the whole run; without it, only the whole run.
//!
//! ```
//! use rampart_load::threshold::Threshold;
//!
//! let t: Threshold = "p99 < 200ms over 10s".parse()?;
//! assert_eq!(t.to_string(), "p99<200ms over 10s");
//! let err = "p99 < fast".parse::<Threshold>().unwrap_err();
//! assert!(err.contains("duration"), "{err}");
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rampart_resilience::{format_duration, parse_duration};

use crate::record::Window;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Metric {
    /// A latency percentile (0..=100) from the intended send time.
    Latency(f64),
    /// A service-time percentile (0..=100) from the actual send.
    Service(f64),
    /// Mean latency.
    Mean,
    /// Highest latency.
    Max,
    /// Failed and dropped per request due, 0..=1.
    ErrorRate,
    /// Failed and dropped requests.
    Errors,
    /// Completed requests per second.
    Rate,
}

impl Metric {
    fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::Latency(_) | Metric::Service(_) | Metric::Mean | Metric::Max
        )
    }

    /// Its value over `w`: milliseconds for latencies; `None` when there is nothing to judge.
    pub fn value(self, w: &Window) -> Option<f64> {
        let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
        match self {
            Metric::Latency(p) => ms(w.latency.quantile(p / 100.0)),
            Metric::Service(p) => ms(w.service.quantile(p / 100.0)),
            Metric::Mean => w.latency.mean().map(|m| m / 1000.0),
            Metric::Max => ms(w.latency.max()),
            Metric::ErrorRate => w.error_rate(),
            Metric::Errors => Some(w.errors() as f64),
            Metric::Rate => (w.seconds > 0.0).then(|| w.rate()),
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub metric: Metric,
    /// The request name it is limited to, if any.
    pub request: Option<String>,
    /// The comparison that must hold.
    pub op: Op,
    /// The bound: milliseconds for latencies, a fraction for `error_rate`.
    pub value: f64,
    /// The sliding window, if judged over windows too.
    pub window: Option<Duration>,
    text: String,
}

impl Threshold {
    /// Whether `w` passes; a span with nothing to judge (no requests) passes.
    pub fn passes(&self, w: &Window) -> bool {
        self.metric
            .value(w)
            .is_none_or(|v| self.op.holds(v, self.value))
    }

    /// The window in whole seconds (at least 1), if any.
    pub fn window_secs(&self) -> Option<usize> {
        self.window
            .map(|d| (d.as_secs_f64().ceil() as usize).max(1))
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_metric(s: &str) -> Result<Metric, String> {
    let pct = |p: &str| -> Option<f64> {
        let v: f64 = p.parse().ok()?;
        (v > 0.0 && v <= 100.0).then_some(v)
    };
    let m = match s {
        "mean" | "avg" => Metric::Mean,
        "max" => Metric::Max,
        "error_rate" => Metric::ErrorRate,
        "errors" => Metric::Errors,
        "rate" => Metric::Rate,
        _ => {
            if let Some(p) = s.strip_prefix("service_p").and_then(pct) {
                Metric::Service(p)
            } else if let Some(p) = s.strip_prefix('p').and_then(pct) {
                Metric::Latency(p)
            } else {
                return Err(format!(
                    "unknown metric {s:?}; expected pNN (p50, p99, p99.9), service_pNN, mean, max, error_rate, errors or rate"
                ));
            }
        }
    };
    Ok(m)
}

fn parse_value(metric: Metric, s: &str) -> Result<f64, String> {
    if metric.is_latency() {
        return parse_duration(s)
            .map(|d| d.as_secs_f64() * 1000.0)
            .map_err(|e| format!("{e}: a latency bound is a duration"));
    }
    let (num, percent) = match s.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (s, false),
    };
    let v: f64 = num
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a non-negative number"))?;
    match metric {
        Metric::ErrorRate => {
            let v = if percent { v / 100.0 } else { v };
            if v > 1.0 {
                return Err(format!("an error rate is at most 100% (or 1.0), got {s:?}"));
            }
            Ok(v)
        }
        _ if percent => Err(format!("a percentage fits only error_rate, got {s:?}")),
        _ => Ok(v),
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let op_at = s
            .find(['<', '>'])
            .ok_or_else(|| format!("{input:?} has no comparison: write it like \"p99<200ms\""))?;
        let (left, right) = s.split_at(op_at);
        let (op, right) = if let Some(r) = right.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = right.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = right.strip_prefix('<') {
            (Op::Lt, r)
        } else {
            (Op::Gt, &right[1..])
        };
        let left = left.trim();
        let (metric_text, request) = match left.split_once('{') {
            Some((m, rest)) => {
                let name = rest.strip_suffix('}').ok_or_else(|| {
                    format!("{input:?}: a request name is written {{name}}, closed by }}")
                })?;
                if name.trim().is_empty() {
                    return Err(format!("{input:?}: the request name in {{}} is empty"));
                }
                (m.trim(), Some(name.trim().to_owned()))
            }
            None => (left, None),
        };
        let metric = parse_metric(metric_text).map_err(|e| format!("{input:?}: {e}"))?;
        let (value_text, window) = match right.split_once(" over ") {
            Some((v, w)) => {
                let d = parse_duration(w.trim()).map_err(|e| format!("{input:?}: window {e}"))?;
                if d < Duration::from_secs(1) {
                    return Err(format!(
                        "{input:?}: a window is at least 1s, got {}",
                        w.trim()
                    ));
                }
                (v.trim(), Some(d))
            }
            None => (right.trim(), None),
        };
        if value_text.is_empty() {
            return Err(format!("{input:?} has no value after {}", op.as_str()));
        }
        let value = parse_value(metric, value_text).map_err(|e| format!("{input:?}: {e}"))?;
        let mut text = format!(
            "{metric_text}{}{}{value_text}",
            request
                .as_ref()
                .map(|r| format!("{{{r}}}"))
                .unwrap_or_default(),
            op.as_str()
        );
        if let Some(w) = window {
            text.push_str(&format!(" over {}", format_duration(w)));
        }
        Ok(Threshold {
            metric,
            request,
            op,
            value,
            window,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_telemetry::histogram::AtomicHistogram;

    fn window(latencies_ms: &[u64], errors: usize, dropped: u64) -> Window {
        let h = AtomicHistogram::new(1);
        for (i, &l) in latencies_ms.iter().enumerate() {
            h.record(l * 1000, i < errors);
        }
        let mut w = Window {
            dropped,
            seconds: 2.0,
            ..Window::default()
        };
        h.drain_into(&mut w.latency, &mut Vec::new());
        w
    }

    #[test]
    fn parses_each_form() {
        let t: Threshold = "p99.9{login} <= 1.5s over 10s".parse().unwrap();
        assert_eq!(t.metric, Metric::Latency(99.9));
        assert_eq!(t.request.as_deref(), Some("login"));
        assert_eq!(t.op, Op::Le);
        assert_eq!(t.value, 1500.0);
        assert_eq!(t.window_secs(), Some(10));
        let t: Threshold = "error_rate<1%".parse().unwrap();
        assert_eq!((t.metric, t.value), (Metric::ErrorRate, 0.01));
        let t: Threshold = "error_rate < 0.05".parse().unwrap();
        assert_eq!(t.value, 0.05);
        let t: Threshold = "rate>=100".parse().unwrap();
        assert_eq!((t.metric, t.op, t.value), (Metric::Rate, Op::Ge, 100.0));
        let t: Threshold = "service_p50>1ms".parse().unwrap();
        assert_eq!((t.metric, t.op), (Metric::Service(50.0), Op::Gt));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, says) in [
            ("p99 200ms", "no comparison"),
            ("p999x<1s", "unknown metric"),
            ("p0<1s", "unknown metric"),
            ("p101<1s", "unknown metric"),
            ("p99<", "no value"),
            ("p99<fast", "duration"),
            ("error_rate<150%", "at most 100%"),
            ("rate>5%", "only error_rate"),
            ("errors<-1", "non-negative"),
            ("p99<1s over 0.5s", "at least 1s"),
            ("p99<1s over soon", "window"),
            ("p99{login<1s", "closed by"),
            ("p99{}<1s", "empty"),
        ] {
            let e = bad.parse::<Threshold>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn judges_windows() {
        let w = window(&[10, 10, 10, 10, 300], 1, 0);
        assert!("p50<20ms".parse::<Threshold>().unwrap().passes(&w));
        assert!(!"p99<200ms".parse::<Threshold>().unwrap().passes(&w));
        assert!(!"max<=200ms".parse::<Threshold>().unwrap().passes(&w));
        assert!("error_rate<=20%".parse::<Threshold>().unwrap().passes(&w));
        assert!(!"error_rate<20%".parse::<Threshold>().unwrap().passes(&w));
        let w = window(&[10; 9], 0, 1);
        assert!(
            !"error_rate<5%".parse::<Threshold>().unwrap().passes(&w),
            "a drop is an error"
        );
        assert!("rate>=4.5".parse::<Threshold>().unwrap().passes(&w));
        assert!(
            "p99<1ms"
                .parse::<Threshold>()
                .unwrap()
                .passes(&Window::default()),
            "no data passes"
        );
    }
}
