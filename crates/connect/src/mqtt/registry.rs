//! A device registry fed from the broker: which devices are online, late or offline.
//!
//! Devices announce themselves and send heartbeats by publishing on a topic that matches a
//! [`TopicPattern`] such as `devices/{group}/{id}/status`; the named segments become the device's
//! labels and the whole topic is its key. A heartbeat (any payload but an offline one) makes the
//! device **online**; with no heartbeat for one interval plus the grace it is **late**; after
//! `offline_after` intervals it is **offline**. A message whose payload is one of
//! `offline_payloads` (what devices set as their MQTT last will) marks it offline at once.
//!
//! [`Registry`] is the pure state: messages and clock ticks in, [`Transition`]s out, with the
//! time passed in, so its logic is tested without a broker or a clock. [`RegistryHandle::spawn`]
//! feeds one from an [`MqttClient`] and ticks it on the tokio clock.
//!
//! Memory is bounded: at most `max_devices` devices are kept (others are counted in
//! [`FleetSummary::rejected`]), each an entry of a hash map holding its topic, its label values
//! and a few numbers; [`Registry::approx_bytes`] estimates the total.
//!
//! ```no_run
//! use std::time::Duration;
//! use rampart_connect::mqtt::MqttConfig;
//! use rampart_connect::mqtt::registry::{RegistryConfig, RegistryHandle};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, messages) = MqttConfig::new("mqtt://127.0.0.1:1883", "rampart-fleet").connect("mqtt")?;
//! let mut config = RegistryConfig::new("devices/{group}/{id}/status");
//! config.heartbeat_interval = Duration::from_secs(10);
//! let registry = RegistryHandle::spawn(config.build("registry")?, client, messages).await?;
//! let summary = registry.summary(Some("group"));
//! println!("{:.1}% of {} devices online", summary.percent_online, summary.total);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rampart_resilience::ConfigError;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Messages, MqttClient, MqttError, QoS};

/// A topic pattern with named segments: `devices/{group}/{id}/status`. Each segment is a literal
/// or a `{name}` that matches any one level and becomes a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    segments: Vec<Segment>,
    names: Vec<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Label,
}

impl TopicPattern {
    /// Parses `pattern`.
    ///
    /// # Errors
    /// A message when it is empty, has an empty level, a wildcard, a malformed or repeated
    /// `{name}`, or no named segment at all.
    pub fn parse(pattern: &str) -> Result<TopicPattern, String> {
        if pattern.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let mut segments = Vec::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        for level in pattern.split('/') {
            if level.contains(['+', '#']) {
                return Err(format!("must not use wildcards, got {level:?}"));
            }
            if let Some(name) = level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("has a bad segment name {level:?}"));
                }
                if names.iter().any(|n| &**n == name) {
                    return Err(format!("names {name:?} twice"));
                }
                names.push(name.into());
                segments.push(Segment::Label);
            } else if level.contains(['{', '}']) || level.is_empty() {
                return Err(format!("has a bad level {level:?}"));
            } else {
                segments.push(Segment::Literal(level.to_owned()));
            }
        }
        if names.is_empty() {
            return Err("needs at least one {name} segment".to_owned());
        }
        Ok(TopicPattern { segments, names })
    }

    /// The subscription filter: every named segment becomes `+`.
    pub fn filter(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Label => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The label names, in order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The label values of `topic`, in the order of [`names`](Self::names), or `None` when it does
    /// not match.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        let mut values = Vec::with_capacity(self.names.len());
        let mut levels = topic.split('/');
        for segment in &self.segments {
            let level = levels.next()?;
            match segment {
                Segment::Literal(l) if l == level => {}
                Segment::Literal(_) => return None,
                Segment::Label => values.push(level),
            }
        }
        levels.next().is_none().then_some(values)
    }
}

/// How the registry reads the fleet. Unknown keys are refused; durations are strings.
///
/// ```toml
/// topic_pattern = "devices/{group}/{id}/status"
/// heartbeat_interval = "10s"
/// grace = "5s"
/// offline_after = 3
/// offline_payloads = ["offline"]
/// max_devices = 100000
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The topic devices publish on, with named segments. Required.
    pub topic_pattern: String,
    /// How often devices send a heartbeat. Default `"10s"`; at least 1 ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::heartbeat_interval"
    )]
    pub heartbeat_interval: Duration,
    /// Extra time before a device is late. Default `"5s"`.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::grace"
    )]
    pub grace: Duration,
    /// Missed intervals after which a device is offline. Default 3; at least 2.
    #[serde(default = "defaults::offline_after")]
    pub offline_after: u32,
    /// Payloads that mark a device offline at once (its last will). Default `["offline"]`.
    #[serde(default = "defaults::offline_payloads")]
    pub offline_payloads: Vec<String>,
    /// Most devices kept. Default 100,000; at least 1.
    #[serde(default = "defaults::max_devices")]
    pub max_devices: usize,
    /// How often states are re-evaluated. Default `"1s"`; at least 1 ms.
    #[serde(
        with = "rampart_resilience::serde_duration",
        default = "defaults::tick"
    )]
    pub tick: Duration,
}

mod defaults {
    use std::time::Duration;
    pub(super) fn heartbeat_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn grace() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn offline_after() -> u32 {
        3
    }
    pub(super) fn offline_payloads() -> Vec<String> {
        vec!["offline".to_owned()]
    }
    pub(super) fn max_devices() -> usize {
        100_000
    }
    pub(super) fn tick() -> Duration {
        Duration::from_secs(1)
    }
}

impl RegistryConfig {
    /// A configuration for `topic_pattern` with every other field at its default.
    pub fn new(topic_pattern: impl Into<String>) -> Self {
        RegistryConfig {
            topic_pattern: topic_pattern.into(),
            heartbeat_interval: defaults::heartbeat_interval(),
            grace: defaults::grace(),
            offline_after: defaults::offline_after(),
            offline_payloads: defaults::offline_payloads(),
            max_devices: defaults::max_devices(),
            tick: defaults::tick(),
        }
    }

    /// Records every problem under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if let Err(problem) = TopicPattern::parse(&self.topic_pattern) {
            errors.push(format!("{path}.topic_pattern"), problem);
        }
        crate::duration::at_least_1ms(
            errors,
            format!("{path}.heartbeat_interval"),
            self.heartbeat_interval,
        );
        crate::duration::at_least_1ms(errors, format!("{path}.tick"), self.tick);
        if self.offline_after < 2 {
            errors.push(
                format!("{path}.offline_after"),
                format!("must be at least 2, got {}", self.offline_after),
            );
        } else if self.heartbeat_interval + self.grace
            >= self.heartbeat_interval * self.offline_after
        {
            errors.push(
                format!("{path}.grace"),
                "must end before offline_after intervals".to_owned(),
            );
        }
        if self.max_devices == 0 {
            errors.push(
                format!("{path}.max_devices"),
                "must be at least 1".to_owned(),
            );
        }
    }

    /// Validates (problems under `path`) and builds an empty registry.
    ///
    /// # Errors
    /// Every problem with its key path.
    pub fn build(&self, path: &str) -> Result<Registry, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(path, &mut errors);
        errors.into_result(())?;
        let pattern = TopicPattern::parse(&self.topic_pattern).map_err(|p| {
            let mut e = ConfigError::new(None);
            e.push(format!("{path}.topic_pattern"), p);
            e
        })?;
        Ok(Registry {
            pattern,
            late_after: self.heartbeat_interval + self.grace,
            offline_after: self.heartbeat_interval * self.offline_after,
            offline_payloads: self.offline_payloads.clone(),
            max_devices: self.max_devices,
            tick: self.tick,
            devices: HashMap::new(),
            churn: Churn::default(),
            rejected: 0,
            heartbeats: 0,
        })
    }
}

/// A device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceState {
    /// Heard from within one interval plus the grace.
    Online,
    /// Not heard from for longer than one interval plus the grace.
    Late,
    /// Not heard from for `offline_after` intervals, or its last will arrived.
    Offline,
}

/// Why a device changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A heartbeat (or the first announcement) arrived.
    Heartbeat,
    /// An offline payload (the last will) arrived.
    Will,
    /// Time passed without a heartbeat.
    Silence,
}

/// A device changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The device's topic.
    pub device: String,
    /// Its state before; `None` for a device seen for the first time.
    pub from: Option<DeviceState>,
    /// Its state now.
    pub to: DeviceState,
    /// Why.
    pub cause: Cause,
}

/// What the registry knows of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its topic (its key).
    pub topic: String,
    /// Its labels, by name.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: DeviceState,
    /// When it was last heard from.
    pub last_seen: Instant,
    /// Since when it has been in its state.
    pub since: Instant,
    /// Heartbeats received.
    pub heartbeats: u64,
}

struct Device {
    /// Label values in pattern order.
    labels: Box<[Box<str>]>,
    state: DeviceState,
    last_seen: Instant,
    since: Instant,
    heartbeats: u64,
}

/// Counts of devices by state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSummary {
    /// Devices known.
    pub total: usize,
    /// Online.
    pub online: usize,
    /// Late.
    pub late: usize,
    /// Offline.
    pub offline: usize,
    /// `online / total` in percent (0 with no devices).
    pub percent_online: f64,
}

impl GroupSummary {
    fn add(&mut self, state: DeviceState) {
        self.total += 1;
        match state {
            DeviceState::Online => self.online += 1,
            DeviceState::Late => self.late += 1,
            DeviceState::Offline => self.offline += 1,
        }
    }

    fn finish(&mut self) {
        self.percent_online = if self.total == 0 {
            0.0
        } else {
            self.online as f64 * 100.0 / self.total as f64
        };
    }
}

/// The fleet at a glance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSummary {
    /// Devices known.
    pub total: usize,
    /// Online.
    pub online: usize,
    /// Late.
    pub late: usize,
    /// Offline.
    pub offline: usize,
    /// `online / total` in percent.
    pub percent_online: f64,
    /// Devices that went online or offline in the last minute.
    pub churn_per_minute: u64,
    /// Heartbeats received in all.
    pub heartbeats: u64,
    /// Messages from new devices refused because `max_devices` were already known.
    pub rejected: u64,
    /// The same counts per value of the label asked for.
    pub groups: BTreeMap<String, GroupSummary>,
}

/// Online/offline changes per second over the last minute, in a ring.
#[derive(Debug)]
struct Churn {
    /// (second, count) per slot.
    slots: [(u64, u64); 60],
    epoch: Option<Instant>,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            slots: [(0, 0); 60],
            epoch: None,
        }
    }
}

impl Churn {
    fn second(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    fn record(&mut self, now: Instant) {
        let s = self.second(now);
        let slot = &mut self.slots[(s % 60) as usize];
        if slot.0 != s {
            *slot = (s, 0);
        }
        slot.1 += 1;
    }

    fn last_minute(&mut self, now: Instant) -> u64 {
        let s = self.second(now);
        self.slots
            .iter()
            .filter(|(second, _)| *second + 60 > s && *second <= s)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The registry's state: devices by topic. See the [module documentation](self).
pub struct Registry {
    pattern: TopicPattern,
    late_after: Duration,
    offline_after: Duration,
    offline_payloads: Vec<String>,
    max_devices: usize,
    tick: Duration,
    devices: HashMap<Box<str>, Device>,
    churn: Churn,
    rejected: u64,
    heartbeats: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("pattern", &self.pattern.filter())
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The topic pattern.
    pub fn pattern(&self) -> &TopicPattern {
        &self.pattern
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is known.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Takes in a message received at `now`. Returns the device's change of state, if any; a
    /// topic that does not match the pattern is ignored.
    pub fn observe(&mut self, topic: &str, payload: &[u8], now: Instant) -> Option<Transition> {
        let values = self.pattern.matches(topic)?;
        let offline = self
            .offline_payloads
            .iter()
            .any(|p| p.as_bytes() == payload);
        let (to, cause) = if offline {
            (DeviceState::Offline, Cause::Will)
        } else {
            (DeviceState::Online, Cause::Heartbeat)
        };
        if !offline {
            self.heartbeats += 1;
        }
        let from = match self.devices.get_mut(topic) {
            Some(device) => {
                if !offline {
                    device.last_seen = now;
                    device.heartbeats += 1;
                }
                if device.state == to {
                    return None;
                }
                let from = device.state;
                device.state = to;
                device.since = now;
                Some(from)
            }
            None => {
                if self.devices.len() >= self.max_devices {
                    self.rejected += 1;
                    return None;
                }
                self.devices.insert(
                    topic.into(),
                    Device {
                        labels: values.into_iter().map(Box::from).collect(),
                        state: to,
                        last_seen: now,
                        since: now,
                        heartbeats: u64::from(!offline),
                    },
                );
                None
            }
        };
        if from.is_none() || from == Some(DeviceState::Offline) || to == DeviceState::Offline {
            self.churn.record(now);
        }
        Some(Transition {
            device: topic.to_owned(),
            from,
            to,
            cause,
        })
    }

    /// Re-evaluates every device at `now`: online ones not heard from for one interval plus the
    /// grace become late, and any not heard from for `offline_after` intervals offline.
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut changes = Vec::new();
        for (topic, device) in &mut self.devices {
            if device.state == DeviceState::Offline {
                continue;
            }
            let silent = now.saturating_duration_since(device.last_seen);
            let to = if silent >= self.offline_after {
                DeviceState::Offline
            } else if silent >= self.late_after {
                DeviceState::Late
            } else {
                DeviceState::Online
            };
            if to != device.state {
                changes.push(Transition {
                    device: topic.to_string(),
                    from: Some(device.state),
                    to,
                    cause: Cause::Silence,
                });
                device.state = to;
                device.since = now;
            }
        }
        for change in &changes {
            if change.to == DeviceState::Offline {
                self.churn.record(now);
            }
        }
        changes
    }

    /// One device, by topic.
    pub fn device(&self, topic: &str) -> Option<DeviceInfo> {
        let (key, d) = self.devices.get_key_value(topic)?;
        Some(DeviceInfo {
            topic: key.to_string(),
            labels: self
                .pattern
                .names()
                .iter()
                .zip(d.labels.iter())
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            state: d.state,
            last_seen: d.last_seen,
            since: d.since,
            heartbeats: d.heartbeats,
        })
    }

    /// The topics of the devices in `state`, sorted.
    pub fn devices_in(&self, state: DeviceState) -> Vec<String> {
        let mut topics: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, d)| d.state == state)
            .map(|(t, _)| t.to_string())
            .collect();
        topics.sort();
        topics
    }

    /// Counts at `now`, grouped by the values of `group_by` (a label name; `None` or an unknown
    /// name: no groups).
    pub fn summary(&mut self, group_by: Option<&str>, now: Instant) -> FleetSummary {
        let index = group_by.and_then(|g| self.pattern.names().iter().position(|n| &**n == g));
        let mut all = GroupSummary::default();
        let mut groups: BTreeMap<String, GroupSummary> = BTreeMap::new();
        for device in self.devices.values() {
            all.add(device.state);
            if let Some(i) = index
                && let Some(value) = device.labels.get(i)
            {
                if let Some(g) = groups.get_mut(&**value) {
                    g.add(device.state);
                } else {
                    let mut g = GroupSummary::default();
                    g.add(device.state);
                    groups.insert(value.to_string(), g);
                }
            }
        }
        all.finish();
        groups.values_mut().for_each(GroupSummary::finish);
        FleetSummary {
            total: all.total,
            online: all.online,
            late: all.late,
            offline: all.offline,
            percent_online: all.percent_online,
            churn_per_minute: self.churn.last_minute(now),
            heartbeats: self.heartbeats,
            rejected: self.rejected,
            groups,
        }
    }

    /// An estimate of the heap memory the registry holds for its devices: the hash map's table
    /// (sized by its capacity) plus each device's topic and label strings.
    pub fn approx_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(Box<str>, Device)>() + 1;
        let table = self.devices.capacity() * slot;
        let strings: usize = self
            .devices
            .iter()
            .map(|(t, d)| {
                t.len()
                    + d.labels.len() * std::mem::size_of::<Box<str>>()
                    + d.labels.iter().map(|l| l.len()).sum::<usize>()
            })
            .sum();
        table + strings
    }
}

/// A [`Registry`] fed from the broker by a task of its own. Dropping the handle stops the task.
pub struct RegistryHandle {
    registry: Arc<Mutex<Registry>>,
    client: Option<MqttClient>,
    feed: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

impl std::fmt::Debug for RegistryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryHandle").finish_non_exhaustive()
    }
}

impl Drop for RegistryHandle {
    fn drop(&mut self) {
        self.feed.abort();
        self.ticker.abort();
    }
}

impl RegistryHandle {
    /// Subscribes `client` to the registry's topic filter (QoS 1) and feeds every message it
    /// receives into `registry`; re-evaluates states every `tick`. The subscription is made again
    /// by the client after reconnects.
    ///
    /// # Errors
    /// When the subscription cannot be queued.
    pub async fn spawn(
        registry: Registry,
        client: MqttClient,
        mut messages: Messages,
    ) -> Result<RegistryHandle, MqttError> {
        client
            .subscribe(registry.pattern.filter(), QoS::AtLeastOnce)
            .await?;
        let tick = registry.tick;
        let mut handle = Self::detached(registry, tick);
        let shared = handle.registry.clone();
        handle.feed = tokio::spawn(async move {
            while let Some(message) = messages.recv().await {
                let now = Instant::now();
                let mut registry = shared.lock().unwrap_or_else(PoisonError::into_inner);
                registry.observe(&message.topic, &message.payload, now);
                // Take what is already waiting under the same lock.
                while let Some(message) = messages.try_recv() {
                    registry.observe(&message.topic, &message.payload, now);
                }
            }
        });
        handle.client = Some(client);
        Ok(handle)
    }

    /// A handle ticking `registry` every `tick` with no broker feed: messages come through
    /// [`observe`](Self::observe).
    pub fn detached(registry: Registry, tick: Duration) -> RegistryHandle {
        let registry = Arc::new(Mutex::new(registry));
        let shared = registry.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let now = interval.tick().await;
                shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tick(now);
            }
        });
        RegistryHandle {
            registry,
            client: None,
            feed: tokio::spawn(async {}),
            ticker,
        }
    }

    /// Feeds a message in by hand, received now.
    pub fn observe(&self, topic: &str, payload: &[u8]) -> Option<Transition> {
        self.lock().observe(topic, payload, Instant::now())
    }

    /// The fleet now, grouped by label `group_by`.
    pub fn summary(&self, group_by: Option<&str>) -> FleetSummary {
        self.lock().summary(group_by, Instant::now())
    }

    /// One device, by topic.
    pub fn device(&self, topic: &str) -> Option<DeviceInfo> {
        self.lock().device(topic)
    }

    /// The topics of the devices in `state`, sorted.
    pub fn devices_in(&self, state: DeviceState) -> Vec<String> {
        self.lock().devices_in(state)
    }

    /// Estimated heap bytes held for the devices.
    pub fn approx_bytes(&self) -> usize {
        self.lock().approx_bytes()
    }

    /// The client feeding the registry, if any.
    pub fn client(&self) -> Option<&MqttClient> {
        self.client.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let mut config = RegistryConfig::new("devices/{group}/{id}/status");
        config.heartbeat_interval = Duration::from_secs(10);
        config.grace = Duration::from_secs(5);
        config.offline_after = 3;
        config.build("registry").unwrap()
    }

    #[test]
    fn patterns() {
        let p = TopicPattern::parse("devices/{group}/{id}/status").unwrap();
        assert_eq!(p.filter(), "devices/+/+/status");
        assert_eq!(
            p.matches("devices/kiln/d7/status"),
            Some(vec!["kiln", "d7"])
        );
        assert_eq!(p.matches("devices/kiln/d7/other"), None);
        assert_eq!(p.matches("devices/kiln/d7/status/x"), None);
        assert_eq!(p.matches("devices/kiln/status"), None);
        for bad in ["", "a/+/b", "a/{x}/{x}", "a//{x}", "plain/topic", "a/{x-y}"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_problems_have_paths() {
        let mut config = RegistryConfig::new("a/#");
        config.offline_after = 1;
        config.max_devices = 0;
        let mut errors = ConfigError::new(None);
        config.validate("fleet", &mut errors);
        let text = errors.to_string();
        for key in [
            "fleet.topic_pattern",
            "fleet.offline_after",
            "fleet.max_devices",
        ] {
            assert!(text.contains(key), "{text}");
        }
        let mut config = RegistryConfig::new("d/{id}");
        config.grace = Duration::from_secs(60);
        let mut errors = ConfigError::new(None);
        config.validate("fleet", &mut errors);
        assert!(errors.to_string().contains("fleet.grace"));
        assert!(toml::from_str::<RegistryConfig>("topic_pattern = \"d/{id}\"\nbogus = 1").is_err());
    }

    #[test]
    fn online_late_offline_and_back() {
        let mut r = registry();
        let t0 = Instant::now();
        let d = "devices/kiln/d1/status";
        let t = r.observe(d, b"up", t0).unwrap();
        assert_eq!((t.from, t.to), (None, DeviceState::Online));
        assert_eq!(r.device(d).unwrap().labels["group"], "kiln");
        // Within interval + grace: still online.
        assert!(r.tick(t0 + Duration::from_millis(14_999)).is_empty());
        let late = r.tick(t0 + Duration::from_secs(15));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].to, DeviceState::Late);
        assert!(r.tick(t0 + Duration::from_millis(29_999)).is_empty());
        let off = r.tick(t0 + Duration::from_secs(30));
        assert_eq!(
            (off[0].from, off[0].to),
            (Some(DeviceState::Late), DeviceState::Offline)
        );
        assert_eq!(off[0].cause, Cause::Silence);
        let back = r.observe(d, b"up", t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(
            (back.from, back.to),
            (Some(DeviceState::Offline), DeviceState::Online)
        );
        assert_eq!(r.device(d).unwrap().heartbeats, 2);
        // A heartbeat while online changes nothing and is counted.
        assert!(r.observe(d, b"up", t0 + Duration::from_secs(32)).is_none());
        assert_eq!(r.summary(None, t0 + Duration::from_secs(32)).heartbeats, 3);
    }

    #[test]
    fn last_will_is_offline_at_once() {
        let mut r = registry();
        let t0 = Instant::now();
        r.observe("devices/a/d1/status", b"up", t0);
        let t = r
            .observe(
                "devices/a/d1/status",
                b"offline",
                t0 + Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!((t.to, t.cause), (DeviceState::Offline, Cause::Will));
        // Ticks do not bring it back; only a heartbeat does.
        assert!(r.tick(t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(
            r.device("devices/a/d1/status").unwrap().state,
            DeviceState::Offline
        );
    }

    #[test]
    fn summary_by_group_and_churn() {
        let mut r = registry();
        let t0 = Instant::now();
        for i in 0..10 {
            r.observe(&format!("devices/a/d{i}/status"), b"up", t0);
            r.observe(&format!("devices/b/d{i}/status"), b"up", t0);
        }
        for i in 0..4 {
            r.observe(&format!("devices/b/d{i}/status"), b"offline", t0);
        }
        let s = r.summary(Some("group"), t0);
        assert_eq!((s.total, s.online, s.offline), (20, 16, 4));
        assert!((s.percent_online - 80.0).abs() < 1e-9);
        assert_eq!(s.groups["a"].online, 10);
        assert_eq!(s.groups["b"].offline, 4);
        assert!((s.groups["b"].percent_online - 60.0).abs() < 1e-9);
        // 20 arrivals and 4 departures in the last minute.
        assert_eq!(s.churn_per_minute, 24);
        // A minute later the churn has aged out.
        let later = t0 + Duration::from_secs(61);
        for i in 0..10 {
            r.observe(&format!("devices/a/d{i}/status"), b"up", later);
        }
        assert_eq!(r.summary(None, later).churn_per_minute, 0);
    }

    #[test]
    fn devices_are_bounded() {
        let mut config = RegistryConfig::new("d/{id}");
        config.max_devices = 3;
        let mut r = config.build("r").unwrap();
        let now = Instant::now();
        for i in 0..5 {
            r.observe(&format!("d/{i}"), b"up", now);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.summary(None, now).rejected, 2);
    }

    /// 10,000 devices with realistic topics: the estimate stays under 256 bytes a device (about
    /// 200: a hash map slot of ~80 bytes at ~70 % load, the topic and two label values).
    #[test]
    fn bytes_per_device_are_measured() {
        let mut r = registry();
        let now = Instant::now();
        for i in 0..10_000 {
            r.observe(
                &format!("devices/group-{}/device-{i:05}/status", i % 10),
                b"up",
                now,
            );
        }
        let per_device = r.approx_bytes() / r.len();
        assert!(
            (50..256).contains(&per_device),
            "{per_device} bytes per device"
        );
    }

    /// On paused time: the ticker task moves a silent device to late and offline at the
    /// configured moments, and a heartbeat brings it back.
    #[tokio::test(start_paused = true)]
    async fn ticker_on_paused_time() {
        let mut config = RegistryConfig::new("devices/{group}/{id}/status");
        config.heartbeat_interval = Duration::from_secs(10);
        config.grace = Duration::from_secs(5);
        config.tick = Duration::from_secs(1);
        let handle = RegistryHandle::detached(config.build("r").unwrap(), config.tick);
        let d = "devices/a/d1/status";
        handle.observe(d, b"up");
        tokio::time::sleep(Duration::from_millis(14_500)).await;
        assert_eq!(handle.device(d).unwrap().state, DeviceState::Online);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(handle.device(d).unwrap().state, DeviceState::Late);
        assert_eq!(handle.devices_in(DeviceState::Late), vec![d.to_owned()]);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(handle.device(d).unwrap().state, DeviceState::Offline);
        handle.observe(d, b"up");
        let s = handle.summary(Some("group"));
        assert_eq!((s.online, s.groups["a"].online), (1, 1));
    }
}
