//! Turning raw targets into validated ones, and the checks across targets.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Uri};
use rampart_resilience::{ConfigError, format_duration};
use regex::Regex;

use super::parse::{RawDefaults, RawHttp, RawJsonPointer, RawStatus, RawTarget};
use super::sections;
use super::{
    CheckConfig, HttpCheck, JsonPointerCheck, KINDS, ModelServer, StatusRange, TargetConfig,
    TcpCheck, Thresholds,
};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Validates one raw target, recording its problems under `path`.
pub(super) fn target(
    path: &str,
    raw: RawTarget,
    defaults: &RawDefaults,
    errors: &mut ConfigError,
) -> Option<TargetConfig> {
    let before = errors.problems.len();
    let thresholds = Thresholds {
        failures_to_unhealthy: raw
            .thresholds
            .failures_to_unhealthy
            .or(defaults.failures_to_unhealthy)
            .unwrap_or(3),
        successes_to_healthy: raw
            .thresholds
            .successes_to_healthy
            .or(defaults.successes_to_healthy)
            .unwrap_or(2),
        degraded_latency: raw
            .thresholds
            .degraded_latency
            .or(defaults.degraded_latency),
    };
    let check = check(path, &raw, errors);
    let interval = raw
        .interval
        .or(defaults.interval)
        .unwrap_or(DEFAULT_INTERVAL);
    let timeout = raw.timeout.or(defaults.timeout).unwrap_or(DEFAULT_TIMEOUT);
    let weight = raw.weight.unwrap_or(1.0);
    timing(path, interval, timeout, weight, &thresholds, errors);
    let target = TargetConfig {
        name: raw.name,
        group: raw.group.unwrap_or_else(|| "default".to_owned()),
        interval,
        timeout,
        weight,
        depends_on: raw.depends_on,
        thresholds,
        check: check?,
    };
    (errors.problems.len() == before).then_some(target)
}

fn check(path: &str, raw: &RawTarget, errors: &mut ConfigError) -> Option<CheckConfig> {
    let kind = raw.kind.as_str();
    if !KINDS.contains(&kind) {
        errors.push(
            format!("{path}.kind"),
            format!(
                "unknown kind {kind:?}; expected one of {}",
                KINDS.join(", ")
            ),
        );
        return None;
    }
    let present = [
        ("http", raw.http.is_some()),
        ("tcp", raw.tcp.is_some()),
        ("tls", raw.tls.is_some()),
        ("postgres", raw.postgres.is_some()),
        ("redis", raw.redis.is_some()),
        ("mqtt", raw.mqtt.is_some()),
        ("heartbeat", raw.heartbeat.is_some()),
        ("dns", raw.dns.is_some()),
        ("tfserving", raw.tfserving.is_some()),
        ("torchserve", raw.torchserve.is_some()),
        ("kserve", raw.kserve.is_some()),
    ];
    for (other, is_there) in present {
        if is_there && other != kind {
            errors.push(
                format!("{path}.{other}"),
                format!("section for kind {other:?}, but the target's kind is {kind:?}"),
            );
        }
    }
    match kind {
        "http" => match &raw.http {
            Some(h) => {
                http(&format!("{path}.http"), h, errors).map(|h| CheckConfig::Http(Box::new(h)))
            }
            None => missing(path, kind, errors),
        },
        "tls" => match &raw.tls {
            Some(t) => sections::tls(&format!("{path}.tls"), t, errors).map(CheckConfig::Tls),
            None => missing(path, kind, errors),
        },
        "postgres" => match &raw.postgres {
            Some(p) => sections::postgres(&format!("{path}.postgres"), p, errors)
                .map(CheckConfig::Postgres),
            None => missing(path, kind, errors),
        },
        "redis" => match &raw.redis {
            Some(r) => sections::redis(&format!("{path}.redis"), r, errors).map(CheckConfig::Redis),
            None => missing(path, kind, errors),
        },
        "heartbeat" => match &raw.heartbeat {
            Some(h) => sections::heartbeat(&format!("{path}.heartbeat"), h, errors)
                .map(CheckConfig::Heartbeat),
            None => missing(path, kind, errors),
        },
        "dns" => match &raw.dns {
            Some(d) => sections::dns(&format!("{path}.dns"), d, errors).map(CheckConfig::Dns),
            None => missing(path, kind, errors),
        },
        "tfserving" | "torchserve" | "kserve" => {
            let (server, section) = match kind {
                "tfserving" => (ModelServer::TfServing, &raw.tfserving),
                "torchserve" => (ModelServer::TorchServe, &raw.torchserve),
                _ => (ModelServer::KServe, &raw.kserve),
            };
            match section {
                Some(m) => sections::model_server(&format!("{path}.{kind}"), server, m, errors)
                    .map(CheckConfig::ModelServer),
                None => missing(path, kind, errors),
            }
        }
        "mqtt" => match &raw.mqtt {
            Some(m) => sections::mqtt(&format!("{path}.mqtt"), m, errors).map(CheckConfig::Mqtt),
            None => missing(path, kind, errors),
        },
        _ => match &raw.tcp {
            Some(t) => {
                let p = format!("{path}.tcp.address");
                address_ok(&p, &t.address, errors)
                    .then(|| CheckConfig::Tcp(TcpCheck::new(t.address.clone())))
            }
            None => missing(path, kind, errors),
        },
    }
}

fn missing(path: &str, kind: &str, errors: &mut ConfigError) -> Option<CheckConfig> {
    errors.push(
        format!("{path}.{kind}"),
        format!("kind is {kind:?} but the [target.{kind}] section is missing"),
    );
    None
}

pub(super) fn address_ok(path: &str, address: &str, errors: &mut ConfigError) -> bool {
    let ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        errors.push(path, format!("expected \"host:port\", got {address:?}"));
    }
    ok
}

fn http(path: &str, raw: &RawHttp, errors: &mut ConfigError) -> Option<HttpCheck> {
    let before = errors.problems.len();
    let url = match raw.url.parse::<Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty()) =>
        {
            Some(u)
        }
        _ => {
            errors.push(
                format!("{path}.url"),
                format!("not an absolute http(s) URL: {:?}", raw.url),
            );
            None
        }
    };
    let method = match &raw.method {
        None => Method::GET,
        Some(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                errors.push(
                    format!("{path}.method"),
                    format!("not an HTTP method: {m:?}"),
                );
                Method::GET
            }
        },
    };
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => errors.push(
                format!("{path}.headers.{name}"),
                "not a valid header name and value",
            ),
        }
    }
    let expected_status = match &raw.expected_status {
        None => vec![StatusRange::new(200, 299)],
        Some(list) => {
            if list.is_empty() {
                errors.push(
                    format!("{path}.expected_status"),
                    "must list at least one status",
                );
            }
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| status(&format!("{path}.expected_status[{i}]"), s, errors))
                .collect()
        }
    };
    let body_regex = raw.body_regex.as_ref().and_then(|r| match Regex::new(r) {
        Ok(re) => Some(re),
        Err(e) => {
            let first = e.to_string();
            let last = first.lines().last().unwrap_or_default().trim().to_owned();
            errors.push(
                format!("{path}.body_regex"),
                format!("invalid regex: {last}"),
            );
            None
        }
    });
    let json_pointer = raw
        .json_pointer
        .as_ref()
        .and_then(|j| json_pointer(&format!("{path}.json_pointer"), j, errors));
    let check = HttpCheck {
        url: url?,
        method,
        headers,
        body: raw.body.clone(),
        expected_status,
        body_contains: raw.body_contains.clone(),
        body_regex,
        json_pointer,
        max_redirects: raw.max_redirects.unwrap_or(0),
        keep_alive: raw.keep_alive,
    };
    (errors.problems.len() == before).then_some(check)
}

fn status(path: &str, raw: &RawStatus, errors: &mut ConfigError) -> Option<StatusRange> {
    let valid = |n: i64| (100..=599).contains(&n).then_some(n as u16);
    let range = match raw {
        RawStatus::Code(n) => valid(*n).map(|n| StatusRange::new(n, n)),
        RawStatus::Text(t) => {
            let t = t.trim();
            if let Some(class) = t.strip_suffix("xx").and_then(|c| c.parse::<i64>().ok()) {
                valid(class * 100).map(|low| StatusRange::new(low, low + 99))
            } else if let Some((a, b)) = t.split_once('-') {
                match (
                    a.trim().parse().ok().and_then(valid),
                    b.trim().parse().ok().and_then(valid),
                ) {
                    (Some(a), Some(b)) if a <= b => Some(StatusRange::new(a, b)),
                    _ => None,
                }
            } else {
                t.parse()
                    .ok()
                    .and_then(valid)
                    .map(|n| StatusRange::new(n, n))
            }
        }
    };
    if range.is_none() {
        errors.push(
            path,
            "expected a status 100-599, a class like \"2xx\" or a range like \"200-204\"",
        );
    }
    range
}

fn json_pointer(
    path: &str,
    raw: &RawJsonPointer,
    errors: &mut ConfigError,
) -> Option<JsonPointerCheck> {
    if !(raw.pointer.is_empty() || raw.pointer.starts_with('/')) {
        errors.push(
            format!("{path}.pointer"),
            format!("a JSON pointer starts with \"/\", got {:?}", raw.pointer),
        );
        return None;
    }
    match serde_json::to_value(&raw.equals) {
        Ok(equals) => Some(JsonPointerCheck {
            pointer: raw.pointer.clone(),
            equals,
        }),
        Err(e) => {
            errors.push(
                format!("{path}.equals"),
                format!("cannot be compared as JSON: {e}"),
            );
            None
        }
    }
}

/// One target as the graph checks see it: where it is, its name, its parents.
pub(super) struct Node {
    pub(super) path: String,
    pub(super) name: String,
    pub(super) depends_on: Vec<String>,
}

impl Node {
    pub(super) fn of(path: String, t: &TargetConfig) -> Self {
        Node {
            path,
            name: t.name.clone(),
            depends_on: t.depends_on.clone(),
        }
    }
}

/// Checks the targets together: non-empty unique names, dependencies that exist, no
/// self-dependency, no cycle.
pub(super) fn check_graph(nodes: &[Node], errors: &mut ConfigError) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in nodes.iter().enumerate() {
        let path = &t.path;
        if t.name.trim().is_empty() {
            errors.push(format!("{path}.name"), "must not be empty");
        }
        let first = *index.entry(&t.name).or_insert(i);
        if first != i {
            errors.push(
                format!("{path}.name"),
                format!(
                    "duplicate name {:?}, also used by {}",
                    t.name, nodes[first].path
                ),
            );
        }
    }
    let mut edges: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, t) in nodes.iter().enumerate() {
        for (j, parent) in t.depends_on.iter().enumerate() {
            let path = format!("{}.depends_on[{j}]", t.path);
            match index.get(parent.as_str()) {
                _ if *parent == t.name => errors.push(path, "a target cannot depend on itself"),
                Some(&p) => edges.entry(i).or_default().push(p),
                None => errors.push(path, format!("no target is named {parent:?}")),
            }
        }
    }
    if let Some(cycle) = find_cycle(nodes.len(), &edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| nodes[i].name.as_str()).collect();
        errors.push(
            format!("{}.depends_on", nodes[cycle[0]].path),
            format!("dependency cycle: {}", names.join(" -> ")),
        );
    }
}

/// Checks one target's timing, weight and thresholds.
pub(super) fn timing(
    path: &str,
    interval: Duration,
    timeout: Duration,
    weight: f64,
    thresholds: &Thresholds,
    errors: &mut ConfigError,
) {
    if interval < MIN_INTERVAL {
        errors.push(
            format!("{path}.interval"),
            format!("must be at least 1s, got {}", format_duration(interval)),
        );
    }
    if timeout.is_zero() {
        errors.push(format!("{path}.timeout"), "must be more than 0s");
    } else if timeout > interval {
        errors.push(
            format!("{path}.timeout"),
            format!(
                "must not exceed the interval ({}), got {}",
                format_duration(interval),
                format_duration(timeout)
            ),
        );
    }
    if !(weight.is_finite() && weight > 0.0) {
        errors.push(
            format!("{path}.weight"),
            format!("must be a positive number, got {}", weight),
        );
    }
    for (key, n) in [
        ("failures_to_unhealthy", thresholds.failures_to_unhealthy),
        ("successes_to_healthy", thresholds.successes_to_healthy),
    ] {
        if n == 0 {
            errors.push(
                format!("{path}.thresholds.{key}"),
                "must be at least 1, got 0",
            );
        }
    }
}

/// A cycle in the dependency graph as a path of indices ending where it starts, if any.
fn find_cycle(n: usize, edges: &BTreeMap<usize, Vec<usize>>) -> Option<Vec<usize>> {
    // Colours: 0 unvisited, 1 on the stack, 2 done. Iterative DFS keeps deep chains off the stack.
    let mut colour = vec![0u8; n];
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let children = edges.get(&node).map(Vec::as_slice).unwrap_or_default();
            if let Some(&child) = children.get(*next) {
                *next += 1;
                match colour[child] {
                    0 => {
                        colour[child] = 1;
                        stack.push((child, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(v, _)| v == child).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(v, _)| v).collect();
                        cycle.push(child);
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    None
}
