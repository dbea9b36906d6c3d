//! `rampart load`: the command line over [`crate::engine`].
//!
//! Exit codes: 0 when every threshold passed, 1 when one failed (whether or not the run was
//! aborted), 2 for bad input (an invalid scenario, listed in full, or an unreachable target), 3 when
//! the report could not be written.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rampart_resilience::ConfigError;

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

impl LoadArgs {
    /// The scenario the flags describe (laid over `--config` if given) and the problems found so
    /// far (in the file's shape and the flags' numbers).
    pub fn scenario_config(&self) -> (ScenarioConfig, ConfigError) {
        let mut e = ConfigError::new(None);
        let mut flags = ScenarioConfig {
            rate: number("rate", &self.rate, &mut e),
            vus: number("vus", &self.vus, &mut e),
            connections: number("connections", &self.connections, &mut e),
            max_queue: number("max_queue", &self.max_queue, &mut e),
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
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
            if !args.quiet {
                print!("{}", report.table());
            }
            if report.passed {
                0
            } else {
                eprintln!("rampart load: a threshold failed");
                1
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
    let (config, errors) = args.scenario_config();
    let base = args
        .config
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from));
    let scenario = config.build_after(base.as_deref(), errors)?;
    engine::preflight(&scenario, scenario.timeout.min(Duration::from_secs(5))).await?;
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| progress_bar(&scenario));
    let report = engine::run(scenario, |p| {
        if let Some(bar) = &bar {
            show(bar, p);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
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
