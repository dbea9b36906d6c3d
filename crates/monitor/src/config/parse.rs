//! Reading TOML into the raw (unvalidated) shapes, reporting every bad key with its full path.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_resilience::{ConfigError, serde_duration};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `[defaults]`: values every target inherits unless it sets its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    #[serde(default, with = "serde_duration::option")]
    pub(crate) interval: Option<Duration>,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) timeout: Option<Duration>,
    pub(crate) failures_to_unhealthy: Option<u32>,
    pub(crate) successes_to_healthy: Option<u32>,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) degraded_latency: Option<Duration>,
}

/// One `[[target]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub(crate) name: String,
    pub(crate) group: Option<String>,
    pub(crate) kind: String,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) interval: Option<Duration>,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) timeout: Option<Duration>,
    pub(crate) weight: Option<f64>,
    #[serde(default)]
    pub(crate) depends_on: Vec<String>,
    #[serde(default)]
    pub(crate) thresholds: RawThresholds,
    pub(crate) http: Option<RawHttp>,
    pub(crate) tcp: Option<RawTcp>,
    pub(crate) tls: Option<RawTls>,
    pub(crate) postgres: Option<RawPostgres>,
    pub(crate) redis: Option<RawRedis>,
    pub(crate) mqtt: Option<RawMqtt>,
    pub(crate) heartbeat: Option<RawHeartbeat>,
    pub(crate) dns: Option<RawDns>,
    pub(crate) tfserving: Option<RawModelServer>,
    pub(crate) torchserve: Option<RawModelServer>,
    pub(crate) kserve: Option<RawModelServer>,
}

/// `[target.thresholds]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawThresholds {
    pub(crate) failures_to_unhealthy: Option<u32>,
    pub(crate) successes_to_healthy: Option<u32>,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) degraded_latency: Option<Duration>,
}

/// `[target.http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) url: String,
    pub(crate) method: Option<String>,
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Option<String>,
    pub(crate) expected_status: Option<Vec<RawStatus>>,
    pub(crate) body_contains: Option<String>,
    pub(crate) body_regex: Option<String>,
    pub(crate) json_pointer: Option<RawJsonPointer>,
    pub(crate) max_redirects: Option<u32>,
    #[serde(default)]
    pub(crate) keep_alive: bool,
}

/// One entry of `expected_status`: `200` or `"2xx"` or `"200-299"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawStatus {
    Code(i64),
    Text(String),
}

/// `json_pointer = { pointer = "/status", equals = "ok" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJsonPointer {
    pub(crate) pointer: String,
    pub(crate) equals: toml::Value,
}

/// `[target.tcp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcp {
    pub(crate) address: String,
}

/// `[target.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) address: String,
    pub(crate) server_name: Option<String>,
    pub(crate) warn_days: Option<u32>,
    pub(crate) min_days: Option<u32>,
    pub(crate) ca_file: Option<String>,
}

/// `[target.postgres]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgres {
    pub(crate) url: Option<String>,
    pub(crate) url_env: Option<String>,
    pub(crate) url_file: Option<String>,
    pub(crate) query: Option<String>,
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) fresh_connection: bool,
}

/// `[target.tfserving]`, `[target.torchserve]`, `[target.kserve]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModelServer {
    pub(crate) url: String,
    pub(crate) model: String,
    pub(crate) management_url: Option<String>,
    pub(crate) version: Option<String>,
}

/// `[target.redis]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub(crate) url: Option<String>,
    pub(crate) url_env: Option<String>,
    pub(crate) url_file: Option<String>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) expect: Option<String>,
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) fresh_connection: bool,
}

/// `[target.mqtt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMqtt {
    pub(crate) address: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) password_file: Option<String>,
    pub(crate) topic: Option<String>,
}

/// `[target.heartbeat]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeartbeat {
    pub(crate) token: Option<String>,
    pub(crate) token_env: Option<String>,
    pub(crate) token_file: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) every: Option<Duration>,
    pub(crate) cron: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    pub(crate) grace: Option<Duration>,
}

/// `[target.dns]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub(crate) name: String,
    pub(crate) record: Option<String>,
    pub(crate) server: Option<String>,
    #[serde(default)]
    pub(crate) expected: Vec<String>,
    #[serde(rename = "match")]
    pub(crate) matching: Option<String>,
}

/// Reads `value` into `T`. Each bad key (unknown, wrong type, bad duration) is reported under
/// `path` plus its own key path, removed, and the rest read again, so one mistake does not hide the
/// next. Returns `None` if what is left still cannot be read (a required key is missing, say).
pub(crate) fn read_lenient<T: DeserializeOwned>(
    path: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<T> {
    let mut value = value.clone();
    // Each round removes one key, so this ends; the bound is a safety net.
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let mut keys: Vec<String> = err
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let inner = err.into_inner().to_string();
        // toml appends "\nin `key`" to some messages; the key is in the path already.
        let message = inner.lines().next().unwrap_or_default().trim().to_owned();
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            && keys.last().map(String::as_str) != Some(unknown)
        {
            keys.push(unknown.to_owned());
        }
        let full = keys.iter().fold(path.to_owned(), |p, k| format!("{p}.{k}"));
        if keys.is_empty() || !remove_at(&mut value, &keys) {
            errors.push(full, message);
            return None;
        }
        errors.push(full, message);
    }
    None
}

/// Removes the key at `keys` from nested tables; false if there is none.
fn remove_at(value: &mut toml::Value, keys: &[String]) -> bool {
    match (value, keys) {
        (toml::Value::Table(t), [last]) => t.remove(last).is_some(),
        (toml::Value::Table(t), [first, rest @ ..]) => {
            t.get_mut(first).is_some_and(|v| remove_at(v, rest))
        }
        _ => false,
    }
}
