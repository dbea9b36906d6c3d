//! `rampart load`: the command line over [`crate::engine`].
//!
//! Exit codes: 0 when every threshold passed (and no regression against a baseline), 1 when a
//! threshold failed (whether or not the run was aborted), 2 for bad input (an invalid scenario,
//! listed in full, an unreachable target, a missing or unreadable baseline), 3 when a report or
//! baseline could not be written, 4 when thresholds passed but a metric regressed against the
//! baseline.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rampart_resilience::ConfigError;

use crate::baseline::{self, CompareConfig, Test};
use crate::config::{RequestConfig, ScenarioConfig};
use crate::engine::{self, Progress};
use crate::error::LoadError;
use crate::report::Report;

/// Load-test an HTTP target: open model (`--rate`) or closed model (`--vus`), with thresholds.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(name = "rampart load")]
pub struct LoadArgs {
    /// The URL to load (`http://host:port/path`); or give `--config`.
    pub url: Option<String>,
    /// A TOML scenario file; flags given as well override its settings.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Open model: requests per second.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<String>,
    /// Closed model: virtual users.
    #[arg(long, value_name = "N")]
    pub vus: Option<String>,
    /// Closed model: pause between a user's iterations, such as `100ms`.
    #[arg(long, value_name = "DURATION")]
    pub think: Option<String>,
    /// Length of the run, such as `30s` (default 10s, or the profile's).
    #[arg(long, short = 'd', value_name = "DURATION")]
    pub duration: Option<String>,
    /// Shape of the run: smoke, load, stress, spike, soak or breakpoint.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Open model: connections kept alive (default 50).
    #[arg(long, value_name = "N")]
    pub connections: Option<String>,
    /// Speak HTTP/2 (cleartext, prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    pub http2: bool,
    /// Open model over HTTP/2: concurrent requests per connection (default 10).
    #[arg(long, value_name = "N")]
    pub streams: Option<String>,
    /// Open model: waiting requests beyond which new ones are dropped (default 100000).
    #[arg(long, value_name = "N")]
    pub max_queue: Option<String>,
    /// Time allowed per request (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// HTTP method for the URL (default GET).
    #[arg(long, short = 'm')]
    pub method: Option<String>,
    /// A header for the URL, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A body for the URL.
    #[arg(long)]
    pub body: Option<String>,
    /// A variable, `name=value`; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A CSV file whose columns feed variables, one row per iteration.
    #[arg(long, value_name = "FILE")]
    pub data: Option<String>,
    /// A threshold such as `p99<200ms`, `error_rate<1%`, `p99<300ms over 10s`; repeatable.
    #[arg(long = "threshold", short = 't', value_name = "EXPR")]
    pub thresholds: Vec<String>,
    /// Stop as soon as a threshold fails.
    #[arg(long)]
    pub abort_on_fail: bool,
    /// Write the report as JSON to this file (`-` for standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No live progress and no summary table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Save this run as the named baseline (in `--baseline-dir`).
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Compare this run with the named baseline; a regression exits with 4.
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// Where baselines are kept.
    #[arg(long, value_name = "DIR", default_value = ".rampart/baselines")]
    pub baseline_dir: PathBuf,
    /// Significance level of the baseline comparison (default 0.05).
    #[arg(long, value_name = "P")]
    pub alpha: Option<String>,
    /// Smallest relative change of latency or rate that counts as a regression, such as `10%`
    /// (default 10%).
    #[arg(long, value_name = "PERCENT")]
    pub min_effect: Option<String>,
    /// Smallest absolute change of the error rate that counts as a regression, such as `1%`
    /// (default 1%).
    #[arg(long, value_name = "PERCENT")]
    pub min_error_effect: Option<String>,
    /// The test comparing per-second samples with the baseline: welch or mann-whitney (default
    /// welch).
    #[arg(long, value_name = "TEST")]
    pub test: Option<String>,
    /// Write a self-contained HTML report to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Worker threads of the runtime that sends the load (default: one per core). The dispatcher
    /// of the open model is a thread of its own besides these.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// Reads a numeric flag. A bad one is reported under its config key and replaced by 1, a valid
/// stand-in that keeps validation from also calling it missing; the run cannot start anyway.
fn number<T: std::str::FromStr>(key: &str, v: &Option<String>, e: &mut ConfigError) -> Option<T> {
    let s = v.as_ref()?;
    match s.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            e.push(
                key,
                format!("{s:?} is not a number (from --{})", key.replace('_', "-")),
            );
            "1".parse().ok()
        }
    }
}

/// A fraction written as `10%` or `0.1`.
fn fraction(key: &str, v: &Option<String>, default: f64, e: &mut ConfigError) -> f64 {
    let Some(s) = v else { return default };
    let parsed = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    };
    match parsed {
        Ok(v) if v.is_finite() && (0.0..1.0).contains(&v) => v,
        _ => {
            e.push(
                key,
                format!("{s:?} must be a fraction from 0 to below 1, such as 0.05 or 5%"),
            );
            default
        }
    }
}

impl LoadArgs {
    /// How to compare with a baseline; bad values are added to `e`.
    pub fn compare_config(&self, e: &mut ConfigError) -> CompareConfig {
        let d = CompareConfig::default();
        let alpha = fraction("--alpha", &self.alpha, d.alpha, e);
        if self.alpha.is_some() && alpha == 0.0 {
            e.push("--alpha", "must be above 0");
        }
        for (key, name) in [
            ("--save-baseline", &self.save_baseline),
            ("--baseline", &self.baseline),
        ] {
            if let Some(Err(err)) = name.as_deref().map(baseline::check_name) {
                e.push(key, err.to_string());
            }
        }
        let test = match self.test.as_deref().map(str::parse::<Test>) {
            None => d.test,
            Some(Ok(t)) => t,
            Some(Err(err)) => {
                e.push("--test", err);
                d.test
            }
        };
        CompareConfig {
            alpha,
            test,
            min_effect: fraction("--min-effect", &self.min_effect, d.min_effect, e),
            min_error_effect: fraction(
                "--min-error-effect",
                &self.min_error_effect,
                d.min_error_effect,
                e,
            ),
        }
    }

    /// The scenario the flags describe (laid over `--config` if given) and the problems found so
    /// far (in the file's shape and the flags' numbers).
    pub fn scenario_config(&self) -> (ScenarioConfig, ConfigError) {
        let mut e = ConfigError::new(None);
        let mut flags = ScenarioConfig {
            rate: number("rate", &self.rate, &mut e),
            vus: number("vus", &self.vus, &mut e),
            connections: number("connections", &self.connections, &mut e),
            max_queue: number("max_queue", &self.max_queue, &mut e),
            streams: number("streams", &self.streams, &mut e),
            http: self.http2.then(|| "2".to_owned()),
            think: self.think.clone(),
            duration: self.duration.clone(),
            profile: self.profile.clone(),
            timeout: self.timeout.clone(),
            data: self.data.clone(),
            thresholds: self.thresholds.clone(),
            abort_on_fail: self.abort_on_fail.then_some(true),
            ..ScenarioConfig::default()
        };
        for v in &self.vars {
            match v.split_once('=') {
                Some((k, val)) => {
                    flags.variables.insert(k.trim().to_owned(), val.to_owned());
                }
                None => e.push("--var", format!("{v:?} is not name=value")),
            }
        }
        match &self.url {
            Some(url) => {
                let mut r = RequestConfig {
                    url: Some(url.clone()),
                    method: self.method.clone(),
                    body: self.body.clone(),
                    ..RequestConfig::default()
                };
                for h in &self.headers {
                    match h.split_once(':') {
                        Some((k, v)) => {
                            r.headers.insert(k.trim().to_owned(), v.trim().to_owned());
                        }
                        None => e.push("--header", format!("{h:?} is not `Name: value`")),
                    }
                }
                flags.requests.push(r);
            }
            None if self.method.is_some() || self.body.is_some() || !self.headers.is_empty() => {
                e.push("--method/--header/--body", "go with a URL argument");
            }
            None => {}
        }
        let (base, mut errors) = match &self.config {
            Some(path) => ScenarioConfig::read_file(path),
            None => (ScenarioConfig::default(), ConfigError::new(None)),
        };
        errors.extend(e);
        (base.overlay(flags), errors)
    }
}

/// Runs `rampart load` on a runtime of its own and returns the exit code.
pub fn run(args: LoadArgs) -> u8 {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(usize::from(n));
    }
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(run_async(args)),
        Err(e) => {
            eprintln!("rampart load: cannot start the runtime: {e}");
            3
        }
    }
}

/// Runs `rampart load` on the current runtime and returns the exit code; messages go to standard
/// error, the table to standard output.
pub async fn run_async(args: LoadArgs) -> u8 {
    match execute(&args).await {
        Ok(report) => {
            // With `--json -` standard output holds the JSON alone.
            let table = !args.quiet && args.json.as_deref() != Some(std::path::Path::new("-"));
            if table {
                print!("{}", report.table());
            }
            let regressed = report.comparison.as_ref().is_some_and(|c| c.regressed);
            if let Some(c) = report.comparison.as_ref().filter(|_| table) {
                print!("{}", c.table());
            }
            if !report.passed {
                eprintln!("rampart load: a threshold failed");
                1
            } else if regressed {
                eprintln!("rampart load: regression against the baseline");
                4
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("rampart load: {e}");
            if e.is_input() { 2 } else { 3 }
        }
    }
}

/// Validates, checks the targets, runs and writes the JSON report: everything but printing.
pub async fn execute(args: &LoadArgs) -> Result<Report, LoadError> {
    let (config, mut errors) = args.scenario_config();
    let compare_config = args.compare_config(&mut errors);
    let base = args
        .config
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from));
    let scenario = config.build_after(base.as_deref(), errors)?;
    let before = match &args.baseline {
        Some(name) => Some(baseline::load(&args.baseline_dir, name)?),
        None => None,
    };
    engine::preflight(&scenario, scenario.timeout.min(Duration::from_secs(5))).await?;
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| progress_bar(&scenario));
    let mut report = engine::run(scenario, |p| {
        if let Some(bar) = &bar {
            show(bar, p);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let (Some(before), Some(name)) = (&before, &args.baseline) {
        report.comparison = Some(baseline::compare(name, before, &report, &compare_config));
    }
    if let Some(name) = &args.save_baseline {
        baseline::save(&args.baseline_dir, name, &report)?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report.to_html()).map_err(|source| LoadError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    if let Some(path) = &args.json {
        let text = report.to_json();
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text).map_err(|source| LoadError::Write {
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    Ok(report)
}

fn progress_bar(scenario: &crate::config::Scenario) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(scenario.schedule.duration().as_secs().max(1)),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len}s {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn show(bar: &ProgressBar, p: &Progress) {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}ms"));
    bar.set_position(p.elapsed.as_secs());
    bar.set_message(format!(
        "{} req/s  p50 {}  p99 {}  errors {}{}",
        p.row.count,
        ms(p.row.p50_ms),
        ms(p.row.p99_ms),
        p.errors,
        if p.failing { "  threshold failing" } else { "" }
    ));
}
