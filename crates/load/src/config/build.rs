//! Validation: a [`ScenarioConfig`] checked into a [`Scenario`], every problem listed.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderName;
use rampart_resilience::{ConfigError, parse_duration};

use super::target::{Scheme, authority_of, target_of};
use super::{HttpVersion, Model, RequestConfig, RequestSpec, Scenario, ScenarioConfig, Target};
use crate::profile::Profile;
use crate::schedule::{Schedule, Stage};
use crate::template::{DataRows, Template, Vars};
use crate::threshold::Threshold;

impl ScenarioConfig {
    /// Checks everything and builds the scenario, or lists every problem. Relative data-file paths
    /// are taken from `base` (the config file's directory).
    pub fn build(&self, base: Option<&Path>) -> Result<Scenario, ConfigError> {
        self.build_after(base, ConfigError::new(None))
    }

    /// Like [`ScenarioConfig::build`], adding its problems to `errors` found earlier (shape
    /// problems from reading), so all are reported together.
    pub fn build_after(
        &self,
        base: Option<&Path>,
        mut errors: ConfigError,
    ) -> Result<Scenario, ConfigError> {
        let e = &mut errors;
        let positive = |key: &str, v: Option<f64>, e: &mut ConfigError| -> Option<f64> {
            let v = v?;
            if v.is_finite() && v > 0.0 {
                Some(v)
            } else {
                e.push(key, format!("must be a number above 0, got {v}"));
                None
            }
        };

        // The model.
        let closed = match self.model.as_deref() {
            None => self.vus.is_some() || self.think.is_some(),
            Some("open") => false,
            Some("closed") => true,
            Some(other) => {
                e.push(
                    "model",
                    format!("must be \"open\" or \"closed\", got {other:?}"),
                );
                self.vus.is_some()
            }
        };
        let rate = positive("rate", self.rate, e);
        let vus = positive("vus", self.vus, e);
        if self.vus.is_some_and(|v| v > 100_000.0) {
            e.push("vus", "must be at most 100000");
        }
        if closed && self.rate.is_some() {
            e.push(
                "rate",
                "sets an arrival rate, which the closed model (vus, think) has not; choose one",
            );
        }
        if !closed && self.vus.is_some() {
            e.push(
                "vus",
                "sets virtual users, which the open model has not; choose one",
            );
        }
        let think = duration("think", self.think.as_deref(), false, e).unwrap_or_default();
        if !closed && self.think.is_some() && self.model.is_some() {
            e.push("think", "only the closed model thinks");
        }
        let timeout = duration("timeout", self.timeout.as_deref(), true, e)
            .unwrap_or(Duration::from_secs(10));
        let connections = self.connections.unwrap_or(50);
        if !(1..=10_000).contains(&connections) {
            e.push(
                "connections",
                format!("must be between 1 and 10000, got {connections}"),
            );
        }
        let http = match self.http.as_deref() {
            None | Some("1.1") | Some("1") => HttpVersion::Http1,
            Some("2") => HttpVersion::Http2,
            Some(other) => {
                e.push("http", format!("must be \"1.1\" or \"2\", got {other:?}"));
                HttpVersion::Http1
            }
        };
        let streams = match (self.streams, http) {
            (None, HttpVersion::Http2) => 10,
            (None, _) => 1,
            (Some(n), HttpVersion::Http2) if (1..=1000).contains(&n) => n,
            (Some(n), HttpVersion::Http2) => {
                e.push("streams", format!("must be between 1 and 1000, got {n}"));
                1
            }
            (Some(_), _) => {
                e.push(
                    "streams",
                    "only HTTP/2 multiplexes requests: set http = \"2\"",
                );
                1
            }
        };
        if closed && self.streams.is_some() {
            e.push(
                "streams",
                "only the open model shares connections among requests",
            );
        }
        let max_queue = self.max_queue.unwrap_or(100_000);
        if max_queue == 0 {
            e.push("max_queue", "must be at least 1");
        }
        if !closed && self.connections.is_none() && self.model.as_deref() == Some("closed") {
            e.push("connections", "only the open model has connections");
        }

        let schedule = self.schedule(closed, rate, vus, e);

        // Variables and data.
        let mut fixed = Vars::default();
        for (name, value) in &self.variables {
            if Template::parse(&format!("${{{name}}}")).is_err() {
                e.push(
                    format!("variables.{name}"),
                    "a variable name has letters, digits, `_`, `-`, `.`",
                );
            }
            fixed.set(name.clone(), value.clone());
        }
        let data = self.data.as_ref().and_then(|file| {
            let path = match base {
                Some(b) if Path::new(file).is_relative() => b.join(file),
                _ => Path::new(file).to_path_buf(),
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|err| e.push("data", format!("{} cannot be read: {err}", path.display())))
                .ok()?;
            DataRows::parse(&text)
                .map_err(|err| e.push("data", format!("{}: {err}", path.display())))
                .ok()
        });
        let mut known: HashSet<String> = data
            .iter()
            .flat_map(|d| d.columns().iter().cloned())
            .collect();

        let requests = self.requests(&fixed, &mut known, e);

        let mut thresholds = Vec::new();
        for (i, t) in self.thresholds.iter().enumerate() {
            match t.parse::<Threshold>() {
                Ok(t) => {
                    if let Some(r) = &t.request
                        && !requests.iter().any(|q| &q.name == r)
                    {
                        e.push(
                            format!("thresholds[{i}]"),
                            format!("names request {r:?}, which the scenario does not have"),
                        );
                    }
                    thresholds.push(t);
                }
                Err(err) => e.push(format!("thresholds[{i}]"), err),
            }
        }
        let profile = self
            .profile
            .as_deref()
            .and_then(|p| p.parse::<Profile>().ok());
        let abort_on_fail = self
            .abort_on_fail
            .unwrap_or(profile.is_some_and(Profile::aborts_on_fail));
        let model = if closed {
            Model::Closed { think }
        } else {
            Model::Open {
                connections: connections as usize,
                streams: streams as usize,
                max_queue: max_queue as usize,
            }
        };
        errors.into_result(Scenario {
            model,
            http,
            schedule: schedule.unwrap_or_else(|| Schedule::new(0.0, Vec::new())),
            requests,
            data,
            thresholds,
            abort_on_fail,
            timeout,
        })
    }

    fn schedule(
        &self,
        closed: bool,
        rate: Option<f64>,
        vus: Option<f64>,
        e: &mut ConfigError,
    ) -> Option<Schedule> {
        let peak_key = if closed { "vus" } else { "rate" };
        let peak = if closed { vus } else { rate };
        let peak_given = if closed {
            self.vus.is_some()
        } else {
            self.rate.is_some()
        };
        let run_length = duration("duration", self.duration.as_deref(), true, e);
        let profile = match self.profile.as_deref().map(str::parse::<Profile>) {
            Some(Ok(p)) => Some(p),
            Some(Err(err)) => {
                e.push("profile", err);
                None
            }
            None => None,
        };
        if !self.stages.is_empty() {
            if self.profile.is_some() {
                e.push(
                    "profile",
                    "a profile makes its own stages; give either stages or a profile",
                );
            }
            if self.duration.is_some() {
                e.push(
                    "duration",
                    "stages set the run's length; leave duration out",
                );
            }
            if peak_given {
                e.push(
                    peak_key,
                    "stages set the target; leave it out or use it without stages",
                );
            }
            let start = self.start.unwrap_or(0.0);
            if !(start.is_finite() && start >= 0.0) {
                e.push("start", format!("must be 0 or more, got {start}"));
            }
            let mut stages = Vec::new();
            for (i, s) in self.stages.iter().enumerate() {
                let key = format!("stage[{i}].duration");
                if s.duration.is_none() {
                    e.push(&key, "is required");
                }
                let d = duration(&key, s.duration.as_deref(), true, e);
                let t = match s.target {
                    None => {
                        e.push(format!("stage[{i}].target"), "is required");
                        None
                    }
                    Some(t) if !(t.is_finite() && t >= 0.0) => {
                        e.push(
                            format!("stage[{i}].target"),
                            format!("must be 0 or more, got {t}"),
                        );
                        None
                    }
                    Some(t) => Some(t),
                };
                if let (Some(d), Some(t)) = (d, t) {
                    stages.push(Stage::new(d, t));
                }
            }
            let schedule = Schedule::new(start, stages);
            if schedule.peak() <= 0.0 && !self.stages.is_empty() {
                e.push("stage", "every target is 0: nothing would be sent");
            }
            return Some(schedule);
        }
        if self.start.is_some() {
            e.push("start", "only applies to stages");
        }
        let peak = match (peak, peak_given, profile) {
            (Some(p), _, _) => p,
            (None, true, _) => return None, // already reported
            (None, false, Some(Profile::Smoke)) if closed => 1.0,
            (None, false, _) => {
                if closed {
                    e.push(
                        "vus",
                        "is required: how many virtual users (or give [[stage]]s)",
                    );
                } else {
                    e.push("rate", "is required: requests per second (or vus for the closed model, or [[stage]]s)");
                }
                return None;
            }
        };
        let duration = match (run_length, self.duration.is_some(), profile) {
            (Some(d), _, _) => d,
            (None, true, _) => return None,
            (None, false, Some(p)) => p.default_duration(),
            (None, false, None) => Duration::from_secs(10),
        };
        Some(match profile {
            Some(p) => p.schedule(duration, peak),
            None => Schedule::constant(peak, duration),
        })
    }

    fn requests(
        &self,
        fixed: &Vars,
        known: &mut HashSet<String>,
        e: &mut ConfigError,
    ) -> Vec<RequestSpec> {
        let mut list: Vec<(String, RequestConfig)> = Vec::new();
        if let Some(url) = &self.url {
            if !self.requests.is_empty() {
                e.push("url", "give either url or [[request]] sections, not both");
            }
            let one = RequestConfig {
                url: Some(url.clone()),
                method: self.method.clone(),
                ..RequestConfig::default()
            };
            list.push(("url".to_owned(), one));
        } else if self.method.is_some() {
            e.push("method", "goes with url; a [[request]] has its own method");
        }
        for (i, r) in self.requests.iter().enumerate() {
            list.push((format!("request[{i}]"), r.clone()));
        }
        if list.is_empty() {
            e.push("request", "no request: give a URL or [[request]] sections");
        }
        let mut out = Vec::new();
        let mut names = HashSet::new();
        for (path, r) in list {
            let key = |k: &str| {
                if path == "url" {
                    k.to_owned()
                } else {
                    format!("{path}.{k}")
                }
            };
            let method = r.method.as_deref().unwrap_or("GET");
            let method = match Method::from_bytes(method.as_bytes()) {
                Ok(m) => m,
                Err(_) => {
                    e.push(key("method"), format!("{method:?} is not an HTTP method"));
                    Method::GET
                }
            };
            let mut template = |k: &str, s: &str, e: &mut ConfigError| -> Option<Template> {
                match Template::parse(s) {
                    Ok(t) => {
                        let t = t.bind(fixed);
                        for v in t.variables() {
                            if !known.contains(v) {
                                e.push(k, format!("uses ${{{v}}}, which is not a variable, a data-file column or extracted by an earlier request"));
                            }
                        }
                        Some(t)
                    }
                    Err(err) => {
                        e.push(k, err);
                        None
                    }
                }
            };
            let Some(url_text) = &r.url else {
                e.push(key("url"), "is required");
                continue;
            };
            let url_key = key("url");
            let url = template(&url_key, url_text, e);
            let located = url.as_ref().and_then(|u| match authority_of(u) {
                Ok(a) => Some(a),
                Err(err) => {
                    e.push(&url_key, err);
                    None
                }
            });
            let scheme = located.as_ref().map_or(Scheme::Http, |(_, s)| *s);
            let authority = located.map(|(a, _)| a);
            let target = match &url {
                Some(u) => target_of(&r, u, scheme, &key, &mut template, e),
                None => None,
            };
            let mut headers = Vec::new();
            for (h, v) in &r.headers {
                let k = key(&format!("headers.{h}"));
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => {
                        if let Some(t) = template(&k, v, e) {
                            headers.push((name, t));
                        }
                    }
                    Err(_) => e.push(k, "is not a valid header name"),
                }
            }
            let body = r.body.as_ref().and_then(|b| template(&key("body"), b, e));
            let mut extract = Vec::new();
            for (var, pointer) in &r.extract {
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    e.push(
                        key(&format!("extract.{var}")),
                        format!(
                            "a JSON pointer starts with `/`, like \"/data/id\"; got {pointer:?}"
                        ),
                    );
                }
                extract.push((var.clone(), pointer.clone()));
            }
            // Extracted values are known to the requests after this one.
            known.extend(extract.iter().map(|(v, _)| v.clone()));
            let name = r
                .name
                .clone()
                .unwrap_or_else(|| match (&target, &r.query, &r.command) {
                    (Some(Target::Postgres { .. }), Some(q), _) => format!("SQL {q}"),
                    (Some(Target::Redis { .. }), _, Some(c)) => format!("REDIS {}", c.join(" ")),
                    _ => {
                        // "GET /path": the URL without scheme and host, which are the same for all.
                        let shown = url.as_ref().map_or(url_text.clone(), ToString::to_string);
                        let path = shown.split_once("://").map_or(shown.as_str(), |(_, rest)| {
                            rest.find('/').map_or("/", |i| &rest[i..])
                        });
                        format!("{method} {path}")
                    }
                });
            if !names.insert(name.clone()) {
                e.push(
                    key("name"),
                    format!("{name:?} is used by an earlier request; names must differ"),
                );
            }
            if let (Some(url), Some(authority), Some(target)) = (url, authority, target) {
                out.push(RequestSpec {
                    name,
                    target,
                    method,
                    authority,
                    url,
                    headers,
                    body,
                    extract,
                });
            }
        }
        out
    }
}

/// Reads an optional duration, reporting a malformed one (or a zero one when `nonzero`) at `key`.
fn duration(key: &str, text: Option<&str>, nonzero: bool, e: &mut ConfigError) -> Option<Duration> {
    match parse_duration(text?) {
        Ok(d) if nonzero && d.is_zero() => {
            e.push(key, "must be more than 0s");
            None
        }
        Ok(d) => Some(d),
        Err(err) => {
            e.push(key, err.to_string());
            None
        }
    }
}
