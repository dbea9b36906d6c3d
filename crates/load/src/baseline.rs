//! Baselines: save a run's report under a name; compare a later run with it, metric by metric,
//! with Welch's t-test (or the Mann–Whitney U test) on the per-second samples.
//!
//! The samples are the time series' full seconds (the last, shorter row is left out): per-second
//! p50 and p99 latency, error rate, and completed requests per second. A metric has *regressed*
//! when the test says the means differ (two-sided p-value below `alpha`) **and** the change is at
//! least the minimum effect (relative for latency and rate, absolute for the error rate), in the
//! worse direction; an *improvement* likewise in the better one. Both conditions matter: with many
//! seconds a 0.5 % shift is significant but rarely interesting, and with few a large one may be
//! noise.
//!
//! ```
//! use rampart_load::baseline::{CompareConfig, Verdict, welch};
//!
//! let before = [10.0, 11.0, 10.5, 9.5, 10.0, 10.2, 9.8, 10.1];
//! let after = [14.0, 15.0, 14.5, 13.9, 14.2, 14.8, 14.1, 14.6];
//! let p = welch(&before, &after).expect("enough samples");
//! assert!(p < 1e-6);
//! assert_eq!(CompareConfig::default().judge(10.0, 14.4, p, true, false), Verdict::Regression);
//! ```

use std::path::{Path, PathBuf};

use rampart_telemetry::detect::stats::student_t_sf;
use serde::{Deserialize, Serialize};

use crate::report::Report;

/// Why a baseline could not be saved or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaselineError {
    /// The name is not usable as a file name.
    #[error(
        "baseline name {name:?} is invalid: use letters, digits, `-`, `_` and `.`, not starting with `.`"
    )]
    Name {
        /// The name given.
        name: String,
    },
    /// No baseline of that name.
    #[error("no baseline {name:?} in {dir} (save one with --save-baseline {name})")]
    Missing {
        /// The name.
        name: String,
        /// Where it was looked for.
        dir: String,
    },
    /// The file could not be read or written.
    #[error("baseline file {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a report.
    #[error("baseline file {path} is not a rampart load report: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What the JSON reader said.
        reason: String,
    },
}

/// Checks that `name` can name a baseline file.
pub fn check_name(name: &str) -> Result<(), BaselineError> {
    path_of(Path::new(""), name).map(|_| ())
}

fn path_of(dir: &Path, name: &str) -> Result<PathBuf, BaselineError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(BaselineError::Name {
            name: name.to_owned(),
        });
    }
    Ok(dir.join(format!("{name}.json")))
}

/// Saves `report` as baseline `name` in `dir` (created if need be); returns the file.
pub fn save(dir: &Path, name: &str, report: &Report) -> Result<PathBuf, BaselineError> {
    let path = path_of(dir, name)?;
    let io = |source| BaselineError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(&path, report.to_json()).map_err(io)?;
    Ok(path)
}

/// Reads baseline `name` from `dir`.
pub fn load(dir: &Path, name: &str) -> Result<Report, BaselineError> {
    let path = path_of(dir, name)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BaselineError::Missing {
                name: name.to_owned(),
                dir: dir.display().to_string(),
            });
        }
        Err(source) => {
            return Err(BaselineError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| BaselineError::Format {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The two-sided p-value of Welch's t-test that `a` and `b` have the same mean; `None` with
/// fewer than two samples on either side.
pub fn welch(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let moments = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let (na, ma, va) = moments(a);
    let (nb, mb, vb) = moments(b);
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        // No spread on either side: the means are equal or they plainly differ.
        return Some(if ma == mb { 1.0 } else { 0.0 });
    }
    let t = (mb - ma) / se2.sqrt();
    // Welch–Satterthwaite degrees of freedom.
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    Some((2.0 * student_t_sf(t.abs(), df)).min(1.0))
}

/// The complementary error function, `erfc(x)`, to about 1.2e-7 relative (the Chebyshev fit of
/// Numerical Recipes, 2nd ed., section 6.2).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The two-sided p-value of the Mann–Whitney U test that `a` and `b` come from the same
/// distribution, by the normal approximation with tie and continuity corrections; `None` with
/// fewer than two samples on either side. It needs no assumption of normality, which suits
/// percentiles, but with fewer than four samples a side it cannot reach p < 0.05.
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len() as f64;
    let (mut rank_a, mut ties, mut i) = (0.0, 0.0, 0);
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let rank = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_a += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u = rank_a - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return Some(if u == mean { 1.0 } else { 0.0 });
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    Some(erfc(z / std::f64::consts::SQRT_2).min(1.0))
}

/// Which test compares the per-second samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Test {
    /// Welch's t-test on the means (unequal variances).
    #[default]
    Welch,
    /// The Mann–Whitney U rank test.
    MannWhitney,
}

impl Test {
    /// The p-value of this test for `a` against `b`.
    pub fn p_value(self, a: &[f64], b: &[f64]) -> Option<f64> {
        match self {
            Test::Welch => welch(a, b),
            Test::MannWhitney => mann_whitney(a, b),
        }
    }
}

impl std::str::FromStr for Test {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "welch" => Ok(Test::Welch),
            "mann-whitney" => Ok(Test::MannWhitney),
            _ => Err(format!(
                "unknown test {s:?}; expected welch or mann-whitney"
            )),
        }
    }
}

/// What a comparison found for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Significantly and materially worse.
    Regression,
    /// Significantly and materially better.
    Improvement,
    /// No difference both significant and as large as the minimum effect.
    Unchanged,
    /// Fewer than two seconds on a side.
    NotEnoughData,
}

/// How sure and how large a change must be to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareConfig {
    /// Significance level of the two-sided test. Default 0.05.
    pub alpha: f64,
    /// Smallest relative change of latency or rate that counts. Default 0.1 (10 %).
    pub min_effect: f64,
    /// Smallest absolute change of the error rate that counts. Default 0.01 (1 point).
    pub min_error_effect: f64,
    /// The test. Default Welch's t-test.
    pub test: Test,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            alpha: 0.05,
            min_effect: 0.1,
            min_error_effect: 0.01,
            test: Test::Welch,
        }
    }
}

impl CompareConfig {
    /// The verdict for means `before` and `after` with p-value `p`; `higher_is_worse` for latency
    /// and errors, not for rate; `absolute` compares the plain difference with `min_error_effect`.
    pub fn judge(
        &self,
        before: f64,
        after: f64,
        p: f64,
        higher_is_worse: bool,
        absolute: bool,
    ) -> Verdict {
        let change = after - before;
        let material = if absolute {
            change.abs() >= self.min_error_effect
        } else if before.abs() > 0.0 {
            (change / before).abs() >= self.min_effect
        } else {
            change != 0.0
        };
        if !(p < self.alpha && material) {
            return Verdict::Unchanged;
        }
        if (change > 0.0) == higher_is_worse {
            Verdict::Regression
        } else {
            Verdict::Improvement
        }
    }
}

/// One metric compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    /// `p50_ms`, `p99_ms`, `error_rate` or `rate`.
    pub metric: String,
    /// Mean of the baseline's per-second values.
    pub baseline: Option<f64>,
    /// Mean of this run's per-second values.
    pub current: Option<f64>,
    /// `(current - baseline) / baseline` (absolute difference for `error_rate`).
    pub change: Option<f64>,
    /// Two-sided p-value of Welch's t-test.
    pub p_value: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A run compared with a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline's name.
    pub baseline: String,
    /// The test used.
    #[serde(default)]
    pub test: Test,
    /// Each metric.
    pub metrics: Vec<MetricComparison>,
    /// True if any metric regressed.
    pub regressed: bool,
}

/// Per-second samples of one metric: the full seconds only.
fn samples(r: &Report, metric: &str) -> Vec<f64> {
    let full = r.series.len().saturating_sub(1);
    r.series[..full]
        .iter()
        .filter_map(|row| match metric {
            "p50_ms" => row.p50_ms,
            "p99_ms" => row.p99_ms,
            "error_rate" => {
                let due = row.count + row.dropped;
                (due > 0).then(|| row.errors as f64 / due as f64)
            }
            _ => Some(row.count as f64),
        })
        .collect()
}

fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

/// Compares `current` with `baseline` (named `name`).
pub fn compare(
    name: &str,
    baseline: &Report,
    current: &Report,
    config: &CompareConfig,
) -> Comparison {
    let metrics: Vec<MetricComparison> = ["p50_ms", "p99_ms", "error_rate", "rate"]
        .iter()
        .map(|&metric| {
            let (a, b) = (samples(baseline, metric), samples(current, metric));
            let (ma, mb) = (mean(&a), mean(&b));
            let absolute = metric == "error_rate";
            let p = config.test.p_value(&a, &b);
            let change = match (ma, mb) {
                (Some(x), Some(y)) if absolute => Some(y - x),
                (Some(x), Some(y)) if x != 0.0 => Some((y - x) / x),
                _ => None,
            };
            let verdict = match (ma, mb, p) {
                (Some(x), Some(y), Some(p)) => config.judge(x, y, p, metric != "rate", absolute),
                _ => Verdict::NotEnoughData,
            };
            MetricComparison {
                metric: metric.to_owned(),
                baseline: ma,
                current: mb,
                change,
                p_value: p,
                verdict,
            }
        })
        .collect();
    Comparison {
        baseline: name.to_owned(),
        test: config.test,
        regressed: metrics.iter().any(|m| m.verdict == Verdict::Regression),
        metrics,
    }
}

impl Comparison {
    /// The comparison as lines for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!(
            "compared with baseline {:?} ({:?} test):\n",
            self.baseline, self.test
        );
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        for m in &self.metrics {
            let change = match (m.change, m.metric.as_str()) {
                (Some(c), "error_rate") => format!("{:+.2} points", c * 100.0),
                (Some(c), _) => format!("{:+.1} %", c * 100.0),
                (None, _) => "-".to_owned(),
            };
            out.push_str(&format!(
                "  {:<11} {:>10} -> {:<10} {:>14}  p={:<8} {:?}\n",
                m.metric,
                f(m.baseline),
                f(m.current),
                change,
                m.p_value.map_or("-".to_owned(), |p| format!("{p:.2e}")),
                m.verdict
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SecondRow;

    fn report(p50: &[f64], errors: u64) -> Report {
        let mut series: Vec<SecondRow> = p50
            .iter()
            .enumerate()
            .map(|(i, &p)| SecondRow {
                t: (i + 1) as f64,
                count: 100,
                errors,
                p50_ms: Some(p),
                p99_ms: Some(p * 3.0),
                ..SecondRow::default()
            })
            .collect();
        series.push(SecondRow {
            t: 99.5,
            count: 1,
            errors: 1,
            p50_ms: Some(1e6),
            ..SecondRow::default()
        });
        Report {
            schema: 1,
            model: "open".into(),
            started_unix: 0,
            duration_s: 0.0,
            planned_s: 0.0,
            aborted: false,
            passed: true,
            requests: Vec::new(),
            total: Default::default(),
            thresholds: Vec::new(),
            series,
            comparison: None,
        }
    }

    #[test]
    fn welch_matches_a_known_value() {
        // Wikipedia's first Welch example: t = -2.46, df = 24.9, p = 0.021.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let p = welch(&a, &b).unwrap();
        assert!((p - 0.0214).abs() < 0.0005, "{p}");
        assert_eq!(welch(&[1.0], &b), None);
        assert_eq!(welch(&[2.0, 2.0], &[2.0, 2.0]), Some(1.0));
        assert_eq!(welch(&[2.0, 2.0], &[3.0, 3.0]), Some(0.0));
    }

    #[test]
    fn mann_whitney_matches_known_values() {
        // scipy.stats.mannwhitneyu([1..5], [6..10], method="asymptotic"): p = 0.01219.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let p = mann_whitney(&a, &b).unwrap();
        assert!((p - 0.01219).abs() < 1e-4, "{p}");
        assert_eq!(mann_whitney(&b, &a), Some(p), "symmetric");
        // Interleaved: no evidence of a difference.
        let p = mann_whitney(&[1.0, 3.0, 5.0, 7.0], &[2.0, 4.0, 6.0, 8.0]).unwrap();
        assert!(p > 0.5, "{p}");
        // Ties across both samples are ranked by their mean.
        let p = mann_whitney(&[1.0, 1.0, 2.0], &[1.0, 2.0, 2.0]).unwrap();
        assert!(p > 0.3 && p <= 1.0, "{p}");
        assert_eq!(mann_whitney(&[1.0, 1.0], &[1.0, 1.0]), Some(1.0));
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(1.0) - 0.157_299_21).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_79).abs() < 1e-7);
        assert_eq!("mann-whitney".parse::<Test>(), Ok(Test::MannWhitney));
        assert!("t".parse::<Test>().is_err());
    }

    #[test]
    fn regressions_need_significance_and_size() {
        let noise = [10.0, 10.4, 9.7, 10.1, 9.9, 10.3, 9.8, 10.2, 10.0, 9.6];
        let base = report(&noise, 0);
        let slower: Vec<f64> = noise.iter().map(|v| v * 1.5).collect();
        let faster: Vec<f64> = noise.iter().map(|v| v * 0.5).collect();
        let slightly: Vec<f64> = noise.iter().map(|v| v * 1.03).collect();
        let cfg = CompareConfig::default();
        let c = compare("b", &base, &report(&slower, 0), &cfg);
        assert!(c.regressed);
        assert_eq!(c.metrics[0].verdict, Verdict::Regression);
        assert_eq!(c.metrics[1].verdict, Verdict::Regression);
        assert_eq!(c.metrics[3].verdict, Verdict::Unchanged, "same rate");
        let c = compare("b", &base, &report(&faster, 0), &cfg);
        assert!(!c.regressed);
        assert_eq!(c.metrics[0].verdict, Verdict::Improvement);
        let c = compare("b", &base, &report(&slightly, 0), &cfg);
        assert_eq!(
            c.metrics[0].verdict,
            Verdict::Unchanged,
            "3 % is below the 10 % minimum"
        );
        let c = compare("b", &base, &report(&noise, 5), &cfg);
        assert_eq!(
            c.metrics[2].verdict,
            Verdict::Regression,
            "errors 0 % -> 5 %"
        );
        assert!((c.metrics[2].change.unwrap() - 0.05).abs() < 1e-12);
        let rank = CompareConfig {
            test: Test::MannWhitney,
            ..cfg
        };
        let c = compare("b", &base, &report(&slower, 0), &rank);
        assert_eq!(
            (c.test, c.metrics[0].verdict),
            (Test::MannWhitney, Verdict::Regression)
        );
        let short = report(&[10.0], 0);
        assert_eq!(
            compare("b", &short, &base, &cfg).metrics[0].verdict,
            Verdict::NotEnoughData
        );
    }

    #[test]
    fn saves_and_loads_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let r = report(&[1.0, 2.0], 0);
        let path = save(dir.path(), "main-1.2", &r).unwrap();
        assert!(path.ends_with("main-1.2.json"));
        assert_eq!(load(dir.path(), "main-1.2").unwrap(), r);
        assert!(matches!(
            load(dir.path(), "other"),
            Err(BaselineError::Missing { .. })
        ));
        assert!(matches!(
            save(dir.path(), "../x", &r),
            Err(BaselineError::Name { .. })
        ));
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        assert!(matches!(
            load(dir.path(), "bad"),
            Err(BaselineError::Format { .. })
        ));
    }
}
