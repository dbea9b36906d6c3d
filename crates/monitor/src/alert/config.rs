//! `[alerting]`: rules (the nine defaults plus the file's own), the routing tree, receivers,
//! escalation policies and maintenance windows, validated with every problem reported at once
//! with its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rampart_resilience::{ConfigError, serde_duration};
use serde::Deserialize;

use super::engine::{EngineConfig, EscalationPolicy, EscalationTier};
use super::matcher::Matcher;
use super::model::{Labels, Severity};
use super::notify::ReceiverConfig;
use super::notify::receiver;
use super::outbox::{DeliveryConfig, read_delivery};
use super::route::{
    DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, GroupBy, Route,
};
use super::rule::{Condition, Rule, Template, default_rules};
use super::silence::{MaintenanceWindow, Schedule};
use super::watchdog::{WatchdogConfig, watchdog as read_watchdog};
use crate::config::parse::read_lenient;
use crate::health::HealthState;

/// The labels a rule's `matchers` can select targets by.
pub const TARGET_LABELS: &[&str] = &["target", "group", "kind"];

/// `[alerting]`, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AlertingConfig {
    /// Rules, routes, escalations and maintenance windows: what the engine runs.
    pub engine: EngineConfig,
    /// Each `[[alerting.receiver]]` by name.
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// How the outbox delivers to each receiver (its `delivery = {...}`, or the defaults).
    pub delivery: BTreeMap<String, DeliveryConfig>,
    /// `[alerting.watchdog]`: the dead man's switch, if configured.
    pub watchdog: Option<WatchdogConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerting {
    external_url: Option<String>,
    #[serde(default = "yes")]
    inhibit_by_dependency: bool,
    #[serde(default)]
    default_rules: BTreeMap<String, bool>,
    #[serde(default)]
    rule: Vec<toml::Value>,
    route: Option<toml::Value>,
    #[serde(default)]
    receiver: Vec<toml::Value>,
    #[serde(default)]
    escalation: Vec<toml::Value>,
    #[serde(default)]
    maintenance: Vec<toml::Value>,
    watchdog: Option<toml::Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    condition: RawCondition,
    #[serde(default, rename = "for", with = "serde_duration::option")]
    for_: Option<Duration>,
    n_of_m: Option<RawNOfM>,
    severity: Option<Severity>,
    #[serde(default)]
    matchers: Vec<Matcher>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNOfM {
    at_least: u32,
    of: u32,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawCondition {
    State {
        #[serde(default)]
        states: Vec<String>,
    },
    Score {
        below: f64,
    },
    Latency {
        #[serde(default = "p99")]
        percentile: f64,
        #[serde(with = "serde_duration")]
        above: Duration,
        #[serde(default = "five_minutes", with = "serde_duration")]
        window: Duration,
        #[serde(default = "five")]
        min_samples: usize,
    },
    ErrorRate {
        above: f64,
        #[serde(default = "five_minutes", with = "serde_duration")]
        window: Duration,
        #[serde(default = "five")]
        min_samples: usize,
    },
    Certificate {
        days_below: i64,
    },
    Heartbeat {},
    Bottleneck {
        #[serde(default = "five_minutes", with = "serde_duration")]
        window: Duration,
    },
}

fn p99() -> f64 {
    99.0
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn five() -> usize {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: Option<String>,
    #[serde(default)]
    matchers: Vec<Matcher>,
    group_by: Option<Vec<String>>,
    #[serde(default, with = "serde_duration::option")]
    group_wait: Option<Duration>,
    #[serde(default, with = "serde_duration::option")]
    group_interval: Option<Duration>,
    #[serde(default, with = "serde_duration::option")]
    repeat_interval: Option<Duration>,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
    escalation: Option<String>,
    #[serde(default)]
    routes: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    name: String,
    tiers: Vec<RawTier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(with = "serde_duration")]
    after: Duration,
    receivers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaintenance {
    name: String,
    #[serde(default)]
    matchers: Vec<Matcher>,
    start: Option<String>,
    end: Option<String>,
    cron: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    duration: Option<Duration>,
}

/// Reads `[alerting]`, reporting problems under `alerting.`; `target_names` are the configured
/// targets (rules may not select others by name).
pub(crate) fn alerting(value: &toml::Value, errors: &mut ConfigError) -> Option<AlertingConfig> {
    let raw: RawAlerting = read_lenient("alerting", value, errors)?;
    let before = errors.problems.len();

    // Receivers first: routes and escalations name them. A receiver whose settings are bad
    // is still known by name, so the routes that name it are not reported too.
    let mut receivers = BTreeMap::new();
    let mut delivery_configs = BTreeMap::new();
    let mut names = BTreeMap::new();
    for (i, r) in raw.receiver.iter().enumerate() {
        let path = format!("alerting.receiver[{i}]");
        let name = r
            .get("name")
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        let parsed = receiver(&path, r, errors);
        if let Some(name) = name.filter(|n| !n.trim().is_empty()) {
            if names.insert(name.clone(), ()).is_some() {
                errors.push(
                    format!("{path}.name"),
                    format!("receiver {name:?} is defined twice"),
                );
            }
            if let Some(parsed) = parsed {
                let delivery = match &parsed.delivery {
                    Some(value) => read_delivery(&format!("{path}.delivery"), value, errors),
                    None => Some(DeliveryConfig::default()),
                };
                if let Some(d) = delivery {
                    delivery_configs.insert(name.clone(), d);
                }
                receivers.insert(name, parsed);
            }
        }
    }
    let watchdog = raw
        .watchdog
        .as_ref()
        .and_then(|w| read_watchdog("alerting.watchdog", w, errors));

    let mut escalations = BTreeMap::new();
    for (i, e) in raw.escalation.iter().enumerate() {
        let path = format!("alerting.escalation[{i}]");
        let Some(e) = read_lenient::<RawEscalation>(&path, e, errors) else {
            continue;
        };
        if e.tiers.is_empty() {
            errors.push(format!("{path}.tiers"), "needs at least one tier");
        }
        let mut last = None;
        for (j, t) in e.tiers.iter().enumerate() {
            let tpath = format!("{path}.tiers[{j}]");
            if last.is_some_and(|l| t.after <= l) {
                errors.push(
                    format!("{tpath}.after"),
                    "tiers must come in increasing `after` order",
                );
            }
            last = Some(t.after);
            if t.receivers.is_empty() {
                errors.push(format!("{tpath}.receivers"), "needs at least one receiver");
            }
            for r in &t.receivers {
                if !names.contains_key(r) {
                    errors.push(format!("{tpath}.receivers"), unknown_receiver(r, &names));
                }
            }
        }
        let policy = EscalationPolicy {
            tiers: e
                .tiers
                .into_iter()
                .map(|t| EscalationTier {
                    after: t.after,
                    receivers: t.receivers,
                })
                .collect(),
        };
        if escalations.insert(e.name.clone(), policy).is_some() {
            errors.push(
                format!("{path}.name"),
                format!("escalation {:?} is defined twice", e.name),
            );
        }
    }

    let route = match &raw.route {
        Some(value) => {
            let root = Route::root(String::new());
            read_route(
                "alerting.route",
                value,
                &root,
                "0",
                true,
                &names,
                &escalations,
                errors,
            )
        }
        None => match names.keys().next() {
            Some(first) if names.len() == 1 => Some(Route::root(first.clone())),
            _ => {
                if !names.is_empty() {
                    errors.push(
                        "alerting.route",
                        "missing: with several receivers, a route must say which gets what",
                    );
                }
                None
            }
        },
    };

    let mut rules = Vec::new();
    let defaults = default_rules();
    for (name, on) in &raw.default_rules {
        if !defaults.iter().any(|r| r.name() == name) {
            let known: Vec<&str> = defaults.iter().map(Rule::name).collect();
            errors.push(
                format!("alerting.default_rules.{name}"),
                format!(
                    "no default rule has this name; they are {}",
                    known.join(", ")
                ),
            );
        } else if !on {
            continue;
        }
    }
    let own_names: BTreeSet<String> = raw
        .rule
        .iter()
        .filter_map(|r| {
            r.get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    for rule in defaults {
        let on = raw.default_rules.get(rule.name()).copied().unwrap_or(true);
        // A rule of the file's own with a default's name replaces the default.
        if on && !own_names.contains(rule.name()) {
            rules.push(rule);
        }
    }
    let mut seen = BTreeSet::new();
    for (i, r) in raw.rule.iter().enumerate() {
        let path = format!("alerting.rule[{i}]");
        if let Some(rule) = read_rule(&path, r, errors) {
            if !seen.insert(rule.name.clone()) {
                errors.push(
                    format!("{path}.name"),
                    format!("rule {:?} is defined twice", rule.name),
                );
            }
            rules.push(rule);
        }
    }

    let mut maintenance = Vec::new();
    for (i, m) in raw.maintenance.iter().enumerate() {
        let path = format!("alerting.maintenance[{i}]");
        if let Some(w) = read_maintenance(&path, m, errors) {
            maintenance.push(w);
        }
    }

    if let Some(url) = &raw.external_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        errors.push(
            "alerting.external_url",
            format!("must be an http(s) URL, got {url:?}"),
        );
    }

    if errors.problems.len() > before {
        return None;
    }
    let route = route.unwrap_or_else(|| Route::root(String::new()));
    Some(AlertingConfig {
        engine: EngineConfig {
            rules,
            route,
            escalations,
            maintenance,
            external_url: raw.external_url,
            inhibit_by_dependency: raw.inhibit_by_dependency,
        },
        receivers,
        delivery: delivery_configs,
        watchdog,
    })
}

fn unknown_receiver(name: &str, receivers: &BTreeMap<String, ()>) -> String {
    let known: Vec<&str> = receivers.keys().map(String::as_str).collect();
    if known.is_empty() {
        format!("no receiver {name:?}: no [[alerting.receiver]] is defined")
    } else {
        format!("no receiver {name:?}; receivers are {}", known.join(", "))
    }
}

#[allow(clippy::too_many_arguments)]
fn read_route(
    path: &str,
    value: &toml::Value,
    parent: &Route,
    id: &str,
    root: bool,
    receivers: &BTreeMap<String, ()>,
    escalations: &BTreeMap<String, EscalationPolicy>,
    errors: &mut ConfigError,
) -> Option<Route> {
    let raw: RawRoute = read_lenient(path, value, errors)?;
    let receiver = match (&raw.receiver, root) {
        (Some(r), _) => r.clone(),
        (None, false) => parent.receiver.clone(),
        (None, true) => {
            errors.push(
                format!("{path}.receiver"),
                "missing: the root route needs a receiver",
            );
            String::new()
        }
    };
    if raw.receiver.is_some() && !receivers.contains_key(&receiver) {
        errors.push(
            format!("{path}.receiver"),
            unknown_receiver(&receiver, receivers),
        );
    }
    if root && !raw.matchers.is_empty() {
        errors.push(
            format!("{path}.matchers"),
            "the root route matches every alert; it takes no matchers",
        );
    }
    if root && raw.continue_matching {
        errors.push(
            format!("{path}.continue"),
            "the root route has no siblings to continue to",
        );
    }
    if let Some(e) = &raw.escalation
        && !escalations.contains_key(e)
    {
        errors.push(
            format!("{path}.escalation"),
            format!("no [[alerting.escalation]] named {e:?}"),
        );
    }
    let group_by = match &raw.group_by {
        None => parent.group_by.clone(),
        Some(names) if names.iter().any(|n| n == "...") => {
            if names.len() > 1 {
                errors.push(
                    format!("{path}.group_by"),
                    "\"...\" (group every alert alone) must be the only entry",
                );
            }
            GroupBy::All
        }
        Some(names) => GroupBy::Labels(names.clone()),
    };
    for (key, d) in [
        ("group_interval", raw.group_interval),
        ("repeat_interval", raw.repeat_interval),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            errors.push(format!("{path}.{key}"), "must be more than 0s");
        }
    }
    let (wait, interval, repeat) = if root {
        (
            DEFAULT_GROUP_WAIT,
            DEFAULT_GROUP_INTERVAL,
            DEFAULT_REPEAT_INTERVAL,
        )
    } else {
        (
            parent.group_wait,
            parent.group_interval,
            parent.repeat_interval,
        )
    };
    let mut route = Route {
        id: id.to_owned(),
        receiver,
        matchers: raw.matchers,
        group_by,
        group_wait: raw.group_wait.unwrap_or(wait),
        group_interval: raw.group_interval.unwrap_or(interval),
        repeat_interval: raw.repeat_interval.unwrap_or(repeat),
        continue_matching: raw.continue_matching,
        escalation: raw
            .escalation
            .or_else(|| (!root).then(|| parent.escalation.clone()).flatten()),
        routes: Vec::new(),
    };
    for (i, child) in raw.routes.iter().enumerate() {
        let child_path = format!("{path}.routes[{i}]");
        let child_id = format!("{id}.{i}");
        if let Some(c) = read_route(
            &child_path,
            child,
            &route,
            &child_id,
            false,
            receivers,
            escalations,
            errors,
        ) {
            route.routes.push(c);
        }
    }
    Some(route)
}

fn read_rule(path: &str, value: &toml::Value, errors: &mut ConfigError) -> Option<Rule> {
    let raw: RawRule = read_lenient(path, value, errors)?;
    let before = errors.problems.len();
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(
            format!("{path}.name"),
            format!("{:?} must be letters, digits, `_` or `-`", raw.name),
        );
    }
    let cpath = format!("{path}.condition");
    let condition = match raw.condition {
        RawCondition::State { states } => {
            let mut parsed = Vec::new();
            let states = if states.is_empty() {
                vec!["unhealthy".to_owned()]
            } else {
                states
            };
            for s in &states {
                match parse_state(s) {
                    Some(state) => parsed.push(state),
                    None => errors.push(
                        format!("{cpath}.states"),
                        format!("unknown state {s:?}; expected healthy, degraded, recovering, unhealthy, unreachable or unknown"),
                    ),
                }
            }
            Condition::State(parsed)
        }
        RawCondition::Score { below } => {
            if !(0.0..=100.0).contains(&below) {
                errors.push(
                    format!("{cpath}.below"),
                    format!("must be between 0 and 100, got {below}"),
                );
            }
            Condition::ScoreBelow(below)
        }
        RawCondition::Latency {
            percentile,
            above,
            window,
            min_samples,
        } => {
            if !(percentile > 0.0 && percentile <= 100.0) {
                errors.push(
                    format!("{cpath}.percentile"),
                    format!("must be in (0, 100], got {percentile}"),
                );
            }
            if window.is_zero() {
                errors.push(format!("{cpath}.window"), "must be more than 0s");
            }
            Condition::Latency {
                percentile,
                above,
                window,
                min_samples,
            }
        }
        RawCondition::ErrorRate {
            above,
            window,
            min_samples,
        } => {
            if !(0.0..1.0).contains(&above) {
                errors.push(
                    format!("{cpath}.above"),
                    format!("must be a fraction in [0, 1), got {above}"),
                );
            }
            if window.is_zero() {
                errors.push(format!("{cpath}.window"), "must be more than 0s");
            }
            Condition::ErrorRate {
                above,
                window,
                min_samples,
            }
        }
        RawCondition::Certificate { days_below } => Condition::CertificateDaysBelow(days_below),
        RawCondition::Heartbeat {} => Condition::HeartbeatMissed,
        RawCondition::Bottleneck { window } => Condition::Bottleneck { window },
    };
    let mut rule = Rule::new(raw.name.clone(), condition)
        .with_for(raw.for_.unwrap_or_default())
        .with_severity(raw.severity.unwrap_or(Severity::Warning));
    if let Some(nm) = raw.n_of_m {
        if nm.of == 0 || nm.of > 64 {
            errors.push(
                format!("{path}.n_of_m.of"),
                format!("must be between 1 and 64, got {}", nm.of),
            );
        }
        if nm.at_least == 0 || nm.at_least > nm.of {
            errors.push(
                format!("{path}.n_of_m.at_least"),
                format!(
                    "must be between 1 and `of` ({}), got {}",
                    nm.of, nm.at_least
                ),
            );
        }
        rule = rule.with_n_of_m(nm.at_least, nm.of);
    }
    for m in &raw.matchers {
        if !TARGET_LABELS.contains(&m.name()) {
            errors.push(
                format!("{path}.matchers"),
                format!(
                    "{m} selects by `{}`; rules select targets by {}",
                    m.name(),
                    TARGET_LABELS.join(", ")
                ),
            );
        }
    }
    rule = rule.with_matchers(raw.matchers);
    for reserved in ["alertname", "severity", "target", "group", "kind"] {
        if raw.labels.contains_key(reserved) {
            errors.push(
                format!("{path}.labels.{reserved}"),
                "is set by the engine; choose another label name",
            );
        }
    }
    for (name, value) in raw.labels {
        rule = rule.with_label(name, value);
    }
    for (name, text) in raw.annotations {
        match Template::parse(&text) {
            Ok(t) => rule = rule.with_annotation(name, t),
            Err(e) => errors.push(format!("{path}.annotations.{name}"), e),
        }
    }
    (errors.problems.len() == before).then_some(rule)
}

fn read_maintenance(
    path: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<MaintenanceWindow> {
    let raw: RawMaintenance = read_lenient(path, value, errors)?;
    let time =
        |key: &str, text: &Option<String>, errors: &mut ConfigError| -> Option<DateTime<Utc>> {
            let text = text.as_ref()?;
            match DateTime::parse_from_rfc3339(text) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    errors.push(
                        format!("{path}.{key}"),
                        format!("{text:?} is not an RFC 3339 time: {e}"),
                    );
                    None
                }
            }
        };
    let schedule = match (&raw.cron, &raw.start, &raw.end) {
        (Some(cron), None, None) => {
            let Some(duration) = raw.duration else {
                errors.push(
                    format!("{path}.duration"),
                    "missing: a recurring window needs a duration",
                );
                return None;
            };
            match cron.parse::<croner::Cron>() {
                Ok(c) => Schedule::Recurring {
                    cron: Box::new(c),
                    duration,
                },
                Err(e) => {
                    errors.push(
                        format!("{path}.cron"),
                        format!("{cron:?} is not a cron expression: {e}"),
                    );
                    return None;
                }
            }
        }
        (None, Some(_), Some(_)) => {
            if raw.duration.is_some() {
                errors.push(
                    format!("{path}.duration"),
                    "only for recurring windows (with `cron`)",
                );
            }
            let start = time("start", &raw.start, errors)?;
            let end = time("end", &raw.end, errors)?;
            if end <= start {
                errors.push(format!("{path}.end"), "must be after `start`");
                return None;
            }
            Schedule::Once { start, end }
        }
        _ => {
            errors.push(
                path,
                "needs either `start` and `end` (one-off) or `cron` and `duration` (recurring)",
            );
            return None;
        }
    };
    Some(MaintenanceWindow {
        name: raw.name,
        matchers: raw.matchers,
        schedule,
    })
}

fn parse_state(s: &str) -> Option<HealthState> {
    Some(match s {
        "healthy" => HealthState::Healthy,
        "degraded" => HealthState::Degraded,
        "recovering" => HealthState::Recovering,
        "unhealthy" => HealthState::Unhealthy,
        "unreachable" => HealthState::Unreachable,
        "unknown" => HealthState::Unknown,
        _ => return None,
    })
}
