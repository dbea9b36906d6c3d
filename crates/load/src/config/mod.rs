//! Scenario configuration: a TOML file or command-line flags, validated into a [`Scenario`].
//!
//! Both sources fill the same [`ScenarioConfig`]; [`ScenarioConfig::build`] checks everything and
//! reports every problem at once, each with its key path (`stage[1].duration: ...`). Serde only
//! reads shapes (unknown keys and wrong types are problems too); values are checked here, so one
//! bad value does not hide the next.
//!
//! ```
//! use rampart_load::config::{Model, ScenarioConfig};
//!
//! let scenario = ScenarioConfig::from_toml_str(
//!     r#"
//!     rate = 50
//!     duration = "2s"
//!     thresholds = ["p99<200ms"]
//!
//!     [[request]]
//!     name = "home"
//!     url = "http://127.0.0.1:8080/"
//!     "#,
//!     Some("scenario.toml"),
//! )?
//! .build(None)?;
//! assert!(matches!(scenario.model, Model::Open { .. }));
//! assert_eq!(scenario.schedule.total(), 100);
//!
//! let err = ScenarioConfig::scenario_from_toml("rate = -1\nduration = \"soon\"\ncolour = 1\n", None, None)
//!     .unwrap_err()
//!     .to_string();
//! for key in ["rate", "duration", "colour", "request"] {
//!     assert!(err.contains(key), "{err}");
//! }
//! # Ok::<(), rampart_resilience::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderName;
use rampart_resilience::ConfigError;
use serde::Deserialize;

pub use crate::http::HttpVersion;
use crate::schedule::Schedule;
use crate::template::{DataRows, Template};
use crate::threshold::Threshold;

mod build;
mod shape;
mod target;
#[cfg(test)]
mod tests;

use shape::deserialize_all;

/// One `[[stage]]`: move the target to `target` over `duration`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// How long, such as `"30s"`. Required, more than 0.
    pub duration: Option<String>,
    /// Requests per second (open model) or virtual users (closed) at the stage's end. Required.
    pub target: Option<f64>,
}

/// One `[[request]]` of the scenario; an iteration sends them in order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Its name in reports and thresholds. Default `"METHOD URL"`.
    pub name: Option<String>,
    /// HTTP method. Default `GET`.
    pub method: Option<String>,
    /// `http://host:port/path?query`, with `${variables}`; the scheme and host must not depend on
    /// data-file or extracted variables. Required.
    pub url: Option<String>,
    /// Headers, values with `${variables}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body, with `${variables}`.
    pub body: Option<String>,
    /// PostgreSQL (`postgres://` URL): the SQL to run, with `${variables}`.
    pub query: Option<String>,
    /// Redis (`redis://` URL): the command and its arguments, with `${variables}`.
    pub command: Option<Vec<String>>,
    /// Variables to take from the JSON response for later requests: name -> JSON pointer
    /// (`"/data/token"`). PostgreSQL rows are read as an array of objects of text
    /// (`"/0/id"`), a Redis reply as the JSON of its value.
    #[serde(default)]
    pub extract: BTreeMap<String, String>,
}

/// A scenario as written: every field optional, checked by [`ScenarioConfig::build`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// `"open"` (arrival rate) or `"closed"` (virtual users). Default: closed if `vus` or `think`
    /// is set, else open.
    pub model: Option<String>,
    /// Open model: requests (iterations) per second, held for `duration` or the profile's peak.
    pub rate: Option<f64>,
    /// Closed model: virtual users, held for `duration` or the profile's peak.
    pub vus: Option<f64>,
    /// Closed model: pause between a user's iterations. Default 0s.
    pub think: Option<String>,
    /// Length of the run when there are no stages. Default 10s, or the profile's.
    pub duration: Option<String>,
    /// A named profile (`smoke`, `load`, `stress`, `spike`, `soak`, `breakpoint`) shaping the run.
    pub profile: Option<String>,
    /// The target before the first `[[stage]]`. Default 0.
    pub start: Option<f64>,
    /// Open model: connections kept alive. Default 50.
    pub connections: Option<u64>,
    /// `"1.1"` or `"2"` (HTTP/2 over cleartext with prior knowledge). Default `"1.1"`.
    pub http: Option<String>,
    /// Open model over HTTP/2: concurrent requests (streams) per connection. Default 10.
    pub streams: Option<u64>,
    /// Open model: requests waiting for a free connection beyond which new ones are dropped.
    /// Default 100000.
    pub max_queue: Option<u64>,
    /// Time allowed for each request (connect, send, whole response). Default 10s.
    pub timeout: Option<String>,
    /// Pass/fail thresholds such as `"p99<200ms"`.
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// Stop the run as soon as a threshold fails. Default false (true for `breakpoint`).
    pub abort_on_fail: Option<bool>,
    /// A CSV file whose header names variables; each iteration takes the next row.
    pub data: Option<String>,
    /// Fixed variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// A one-request scenario: its URL (instead of `[[request]]`).
    pub url: Option<String>,
    /// The one-request scenario's method.
    pub method: Option<String>,
    /// Stages.
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageConfig>,
    /// Requests.
    #[serde(default, rename = "request")]
    pub requests: Vec<RequestConfig>,
}

/// How load is generated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Model {
    /// Iterations arrive on a schedule whatever the server does; latency counts from the schedule.
    Open {
        /// Connections.
        connections: usize,
        /// Concurrent requests per connection (1 for HTTP/1.1).
        streams: usize,
        /// Waiting iterations beyond which new ones are dropped.
        max_queue: usize,
    },
    /// Virtual users each loop: iteration, think, iteration.
    Closed {
        /// Pause between iterations.
        think: Duration,
    },
}

/// What a request talks to.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// HTTP: the method, headers and body of the [`RequestSpec`].
    Http,
    /// PostgreSQL: run this SQL (simple query protocol) on the URL's database.
    Postgres {
        /// The SQL.
        query: Template,
    },
    /// Redis: send this command.
    Redis {
        /// The command and its arguments.
        command: Vec<Template>,
    },
}

/// One validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Its name.
    pub name: String,
    /// What it talks to.
    pub target: Target,
    /// Its method.
    pub method: Method,
    /// `host:port` it connects to.
    pub authority: String,
    /// The whole URL, fixed variables already filled in.
    pub url: Template,
    /// Headers.
    pub headers: Vec<(HeaderName, Template)>,
    /// Body, if any.
    pub body: Option<Template>,
    /// `(variable, JSON pointer)` to take from the response.
    pub extract: Vec<(String, String)>,
}

/// A validated scenario, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Open or closed.
    pub model: Model,
    /// The HTTP version.
    pub http: HttpVersion,
    /// Rate (open) or virtual users (closed) over time.
    pub schedule: Schedule,
    /// The requests of one iteration, in order.
    pub requests: Vec<RequestSpec>,
    /// Rows feeding variables, one per iteration.
    pub data: Option<DataRows>,
    /// Pass/fail thresholds.
    pub thresholds: Vec<Threshold>,
    /// Stop at the first failing threshold.
    pub abort_on_fail: bool,
    /// Time allowed per request.
    pub timeout: Duration,
}

impl Scenario {
    /// Every distinct `host:port` the scenario connects to.
    pub fn authorities(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for r in &self.requests {
            if !seen.contains(&r.authority) {
                seen.push(r.authority.clone());
            }
        }
        seen
    }
}

/// Deserialises `value` into `T`, recording each unknown key or mistyped value as a problem under
impl ScenarioConfig {
    /// Reads TOML text, keeping what can be read: the result and the shape problems found (unknown
    /// keys, wrong types), which [`ScenarioConfig::build`] adds to its own with
    /// [`ScenarioConfig::build_after`]. `file` names the text in messages.
    pub fn read_toml(source: &str, file: Option<&str>) -> (Self, ConfigError) {
        let mut errors = ConfigError::new(file);
        let table: toml::Table = match source.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                errors.push("(syntax)", e.to_string().trim().to_owned());
                return (ScenarioConfig::default(), errors);
            }
        };
        let config = deserialize_all(toml::Value::Table(table), &mut errors);
        (config, errors)
    }

    /// Reads a TOML file the same way as [`ScenarioConfig::read_toml`].
    pub fn read_file(path: &Path) -> (Self, ConfigError) {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::read_toml(&text, Some(&shown)),
            Err(e) => {
                let mut errors = ConfigError::new(Some(&shown));
                errors.push("(file)", format!("cannot be read: {e}"));
                (ScenarioConfig::default(), errors)
            }
        }
    }

    /// Reads TOML text, failing on any shape problem.
    pub fn from_toml_str(source: &str, file: Option<&str>) -> Result<Self, ConfigError> {
        let (config, errors) = Self::read_toml(source, file);
        errors.into_result(config)
    }

    /// Reads and validates TOML text into a scenario, listing shape and value problems together.
    pub fn scenario_from_toml(
        source: &str,
        file: Option<&str>,
        base: Option<&Path>,
    ) -> Result<Scenario, ConfigError> {
        let (config, errors) = Self::read_toml(source, file);
        config.build_after(base, errors)
    }

    /// Lays `over` on top of this one: its set fields win, its thresholds, variables, stages and
    /// requests are added. Command-line flags are laid over a file this way.
    pub fn overlay(mut self, over: ScenarioConfig) -> ScenarioConfig {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            model,
            http,
            streams,
            rate,
            vus,
            think,
            duration,
            profile,
            start,
            connections,
            max_queue,
            timeout,
            abort_on_fail,
            data,
            url,
            method
        );
        self.thresholds.extend(over.thresholds);
        self.variables.extend(over.variables);
        self.stages.extend(over.stages);
        self.requests.extend(over.requests);
        self
    }
}
