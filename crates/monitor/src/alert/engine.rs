//! The alert engine: evaluates rules on each target's signals, runs every alert through its
//! lifecycle (pending, firing, resolved), groups firing alerts by route and labels, and decides
//! when each group is notified (Alertmanager's group_wait / group_interval / repeat_interval),
//! holding back what silences, maintenance windows and parents' alerts suppress, and escalating
//! what nobody acknowledges.
//!
//! The engine does no I/O and reads no clock: every call takes `now`, so it runs the same on
//! paused time. [`AlertService`](super::AlertService) drives it from a monitor.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::model::{
    Acknowledgement, AlertSnapshot, AlertStatus, Fingerprint, Labels, Notification, Severity,
};
use super::route::Route;
use super::rule::{Check, Rule, Sample, Signals, TemplateVars};
use super::silence::{MaintenanceWindow, Silence};
use crate::health::HealthState;
use crate::probe::{FailureKind, ProbeResult};

/// An escalation policy: while an alert stays unacknowledged, each tier's receivers are
/// notified once its delay since the first notification has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    /// The tiers, in order of their delays.
    pub tiers: Vec<EscalationTier>,
}

/// One tier of an [`EscalationPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationTier {
    /// How long after the alert was first notified.
    pub after: Duration,
    /// Who gets it.
    pub receivers: Vec<String>,
}

/// Everything the engine is configured with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The rules.
    pub rules: Vec<Rule>,
    /// The routing tree.
    pub route: Route,
    /// Escalation policies by name.
    pub escalations: BTreeMap<String, EscalationPolicy>,
    /// Maintenance windows.
    pub maintenance: Vec<MaintenanceWindow>,
    /// Put into every notification (a dashboard's address, say).
    pub external_url: Option<String>,
    /// Whether a parent's firing alert holds back its dependents' notifications.
    pub inhibit_by_dependency: bool,
}

impl EngineConfig {
    /// The given rules, everything sent to `receiver` with the default grouping.
    pub fn new(rules: Vec<Rule>, receiver: impl Into<String>) -> Self {
        EngineConfig {
            rules,
            route: Route::root(receiver),
            escalations: BTreeMap::new(),
            maintenance: Vec::new(),
            external_url: None,
            inhibit_by_dependency: true,
        }
    }
}

/// A target as the engine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// Its name.
    pub name: String,
    /// Its group (may be empty).
    pub group: String,
    /// Its probe kind (`http`, `postgres`, ...).
    pub kind: String,
    /// The targets it depends on.
    pub parents: Vec<String>,
}

impl TargetInfo {
    /// From a target's configuration.
    pub fn from_config(t: &crate::config::TargetConfig) -> Self {
        TargetInfo {
            name: t.name.clone(),
            group: t.group.clone(),
            kind: t.check.kind().to_owned(),
            parents: t.depends_on.clone(),
        }
    }

    fn labels(&self) -> Labels {
        let mut l = Labels::new();
        l.insert("target".to_owned(), self.name.clone());
        if !self.group.is_empty() {
            l.insert("group".to_owned(), self.group.clone());
        }
        l.insert("kind".to_owned(), self.kind.clone());
        l
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for`.
    Pending,
    /// The condition has held long enough.
    Firing,
    /// It fired and no longer holds; kept until its resolve is notified.
    Resolved,
}

/// One alert.
#[derive(Debug, Clone)]
struct Alert {
    fingerprint: Fingerprint,
    rule_name: String,
    target: String,
    severity: Severity,
    labels: Labels,
    annotations: Labels,
    value: Option<f64>,
    state: AlertState,
    pending_since: Instant,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    acknowledged: Option<Acknowledgement>,
}

/// An alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AlertView {
    /// Its identity.
    pub fingerprint: Fingerprint,
    /// The rule.
    pub rule: String,
    /// The target.
    pub target: String,
    /// Pending, firing or resolved.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// Labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// The value that tripped the rule.
    pub value: Option<f64>,
    /// When it started firing.
    pub starts_at: Option<DateTime<Utc>>,
    /// When it resolved.
    pub ends_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged: Option<Acknowledgement>,
    /// The silences and maintenance windows that hold back its notifications now.
    pub silenced_by: Vec<String>,
    /// The parent target whose firing alert holds back its notifications now.
    pub inhibited_by: Option<String>,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// No alert has that fingerprint.
    #[error("no alert {0}")]
    NotFound(String),
    /// The alert is not firing (pending or resolved).
    #[error("alert {fingerprint} is {state:?}, only firing alerts can be acknowledged")]
    NotFiring {
        /// The alert.
        fingerprint: String,
        /// Its state.
        state: AlertState,
    },
}

/// A rule's record for one target.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    /// The last 64 verdicts at observations, newest in bit 0.
    ring: u64,
    seen: u32,
    alert: Option<Fingerprint>,
}

#[derive(Debug)]
struct TargetEntry {
    info: TargetInfo,
    labels: Labels,
    signals: Signals,
    /// Per rule: `None` if the rule does not apply to the target.
    tracks: Vec<Option<Track>>,
}

/// An aggregation group: the alerts of one route with the same group labels.
#[derive(Debug, Clone)]
struct Group {
    key: String,
    receiver: String,
    labels: Labels,
    group_interval: Duration,
    repeat_interval: Duration,
    escalation: Option<String>,
    alerts: BTreeSet<Fingerprint>,
    next_flush: Instant,
    last_sent: Option<Instant>,
    /// Alerts reported firing, with when they were first reported.
    notified: BTreeMap<Fingerprint, Instant>,
    /// Alerts reported acknowledged.
    notified_acked: BTreeSet<Fingerprint>,
    /// Escalation tiers notified per alert.
    escalated: BTreeMap<Fingerprint, usize>,
}

/// Counters of what the engine did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EngineStats {
    /// Rule evaluations.
    pub evaluations: u64,
    /// Alerts that started firing.
    pub fired: u64,
    /// Alerts that resolved.
    pub resolved: u64,
    /// Notifications made.
    pub notifications: u64,
    /// Group flushes that held back at least one alert (silenced or inhibited).
    pub suppressed: u64,
}

/// The alert engine. See the [module docs](self).
#[derive(Debug)]
pub struct AlertEngine {
    config: EngineConfig,
    horizon: Duration,
    targets: HashMap<String, TargetEntry>,
    alerts: HashMap<Fingerprint, Alert>,
    groups: BTreeMap<String, Group>,
    silences: Vec<Silence>,
    anchor: (Instant, DateTime<Utc>),
    seq: u64,
    scratch: Vec<u64>,
    stats: EngineStats,
    /// Something durable changed since [`take_dirty`](AlertEngine::take_dirty).
    dirty: bool,
}

impl AlertEngine {
    /// An engine with `config` watching `targets`. `now` and `wall` anchor the engine's clock:
    /// wall-clock times in notifications are `wall + (t - now)`.
    pub fn new(
        config: EngineConfig,
        targets: &[TargetInfo],
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Self {
        let horizon = config
            .rules
            .iter()
            .map(|r| r.condition.horizon())
            .max()
            .unwrap_or_default();
        let mut engine = AlertEngine {
            config,
            horizon,
            targets: HashMap::new(),
            alerts: HashMap::new(),
            groups: BTreeMap::new(),
            silences: Vec::new(),
            anchor: (now, wall),
            seq: 0,
            scratch: Vec::new(),
            stats: EngineStats::default(),
            dirty: false,
        };
        engine.set_targets(targets, now);
        engine
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What the engine did so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The wall-clock time of `now`.
    pub fn wall(&self, now: Instant) -> DateTime<Utc> {
        let since = now.saturating_duration_since(self.anchor.0);
        self.anchor.1 + chrono::Duration::from_std(since).unwrap_or_default()
    }

    /// Replaces the set of targets: new ones are added, changed ones keep their signals,
    /// removed ones lose their alerts (firing ones resolve).
    pub fn set_targets(&mut self, targets: &[TargetInfo], now: Instant) {
        let keep: HashSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let gone: Vec<String> = self
            .targets
            .keys()
            .filter(|n| !keep.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = self.targets.remove(&name) {
                for fp in entry.tracks.iter().flatten().filter_map(|t| t.alert) {
                    self.end_alert(fp, now);
                }
            }
        }
        for info in targets {
            let labels = info.labels();
            let tracks: Vec<Option<Track>> = self
                .config
                .rules
                .iter()
                .map(|r| r.applies_to(&labels).then(Track::default))
                .collect();
            match self.targets.get_mut(&info.name) {
                Some(entry) if entry.info == *info => {}
                Some(entry) => {
                    // Its labels changed: its alerts are other alerts now.
                    let old: Vec<Fingerprint> = entry
                        .tracks
                        .iter()
                        .flatten()
                        .filter_map(|t| t.alert)
                        .collect();
                    entry.info = info.clone();
                    entry.labels = labels;
                    entry.tracks = tracks;
                    for fp in old {
                        self.end_alert(fp, now);
                    }
                }
                None => {
                    self.targets.insert(
                        info.name.clone(),
                        TargetEntry {
                            info: info.clone(),
                            labels,
                            signals: Signals::default(),
                            tracks,
                        },
                    );
                }
            }
        }
    }

    /// Feeds one probe result of `target` with the state and score the health model gave it
    /// after that result, and evaluates the target's rules.
    pub fn observe(
        &mut self,
        target: &str,
        result: &ProbeResult,
        state: HealthState,
        score: Option<u8>,
        now: Instant,
    ) {
        let horizon = self.horizon;
        let Some(entry) = self.targets.get_mut(target) else {
            return;
        };
        let s = &mut entry.signals;
        s.state = state;
        s.score = score;
        s.push(
            Sample {
                at: now,
                latency_us: u64::try_from(result.latency.as_micros()).unwrap_or(u64::MAX),
                success: result.is_success(),
            },
            horizon,
        );
        if let Some(days) = result.details.certificate_days_left {
            s.certificate_days_left = Some(days);
        }
        s.heartbeat_missed = result.failure_kind() == Some(FailureKind::Missed);
        self.evaluate_target(target, now, true);
    }

    /// Updates the state and score of `target` without a result of its own (a parent went
    /// down, say), and evaluates its rules.
    pub fn observe_state(
        &mut self,
        target: &str,
        state: HealthState,
        score: Option<u8>,
        now: Instant,
    ) {
        if let Some(entry) = self.targets.get_mut(target) {
            entry.signals.state = state;
            entry.signals.score = score;
            self.evaluate_target(target, now, false);
        }
    }

    /// Records a bottleneck reported for `target` (by telemetry's detectors) and evaluates its
    /// rules.
    pub fn observe_bottleneck(&mut self, target: &str, now: Instant) {
        if let Some(entry) = self.targets.get_mut(target) {
            entry.signals.bottleneck_at = Some(now);
            self.evaluate_target(target, now, false);
        }
    }

    /// Evaluates every rule on every target at `now` (time passing ends windows and `for`
    /// durations without new results).
    pub fn evaluate_all(&mut self, now: Instant) {
        let mut found = Vec::new();
        let mut due: Vec<(String, usize, Check, bool)> = Vec::new();
        for (name, entry) in &mut self.targets {
            found.clear();
            decide(
                &self.config.rules,
                entry,
                &self.alerts,
                now,
                false,
                &mut self.scratch,
                &mut self.stats.evaluations,
                &mut found,
            );
            due.extend(
                found
                    .iter()
                    .map(|(i, check, holds)| (name.clone(), *i, *check, *holds)),
            );
        }
        for (name, i, check, holds) in due {
            self.step(&name, i, check, holds, now);
        }
    }

    fn evaluate_target(&mut self, target: &str, now: Instant, observation: bool) {
        let Some(entry) = self.targets.get_mut(target) else {
            return;
        };
        let mut found = Vec::new();
        decide(
            &self.config.rules,
            entry,
            &self.alerts,
            now,
            observation,
            &mut self.scratch,
            &mut self.stats.evaluations,
            &mut found,
        );
        for (i, check, holds) in found {
            self.step(target, i, check, holds, now);
        }
    }

    /// Moves the alert of (`target`, rule `i`) through its lifecycle.
    fn step(&mut self, target: &str, i: usize, check: Check, holds: bool, now: Instant) {
        let Some(entry) = self.targets.get(target) else {
            return;
        };
        let Some(Some(track)) = entry.tracks.get(i) else {
            return;
        };
        let current = track.alert;
        let rule = &self.config.rules[i];
        match (current, holds) {
            (None, false) => {}
            (None, true) => {
                let mut labels = entry.labels.clone();
                labels.extend(rule.labels.clone());
                labels.insert("alertname".to_owned(), rule.name.clone());
                labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
                let fingerprint = Fingerprint::of(&labels);
                let alert = Alert {
                    fingerprint,
                    rule_name: rule.name.clone(),
                    target: target.to_owned(),
                    severity: rule.severity,
                    annotations: render(rule, &labels, check.value, entry.signals.state),
                    labels,
                    value: check.value,
                    state: AlertState::Pending,
                    pending_since: now,
                    starts_at: None,
                    ends_at: None,
                    acknowledged: None,
                };
                let for_ = rule.for_;
                // A resolved alert with the same labels still waiting for its resolve to go
                // out is the same alert firing again.
                self.alerts.insert(fingerprint, alert);
                if let Some(Some(track)) = self
                    .targets
                    .get_mut(target)
                    .and_then(|e| e.tracks.get_mut(i))
                {
                    track.alert = Some(fingerprint);
                }
                if for_.is_zero() {
                    self.fire(fingerprint, now);
                }
            }
            (Some(fp), true) => {
                let state = entry.signals.state;
                let for_ = rule.for_;
                if let Some(alert) = self.alerts.get_mut(&fp) {
                    if alert.value != check.value {
                        alert.value = check.value;
                        alert.annotations = render(rule, &alert.labels, check.value, state);
                    }
                    if alert.state == AlertState::Pending
                        && now.saturating_duration_since(alert.pending_since) >= for_
                    {
                        self.fire(fp, now);
                    }
                }
            }
            (Some(fp), false) => {
                if let Some(Some(track)) = self
                    .targets
                    .get_mut(target)
                    .and_then(|e| e.tracks.get_mut(i))
                {
                    track.alert = None;
                }
                self.end_alert(fp, now);
            }
        }
    }

    /// A pending alert is dropped; a firing one resolves.
    fn end_alert(&mut self, fp: Fingerprint, now: Instant) {
        let wall = self.wall(now);
        let Some(alert) = self.alerts.get_mut(&fp) else {
            return;
        };
        match alert.state {
            AlertState::Pending => {
                self.alerts.remove(&fp);
            }
            AlertState::Firing => {
                alert.state = AlertState::Resolved;
                alert.ends_at = Some(wall);
                self.stats.resolved += 1;
                self.dirty = true;
                // If no group holds it (never routed), nothing waits for its resolve.
                if !self.groups.values().any(|g| g.alerts.contains(&fp)) {
                    self.alerts.remove(&fp);
                }
            }
            AlertState::Resolved => {}
        }
    }

    fn fire(&mut self, fp: Fingerprint, now: Instant) {
        let wall = self.wall(now);
        let Some(alert) = self.alerts.get_mut(&fp) else {
            return;
        };
        alert.state = AlertState::Firing;
        alert.starts_at = Some(wall);
        alert.ends_at = None;
        alert.acknowledged = None;
        self.stats.fired += 1;
        self.dirty = true;
        let labels = alert.labels.clone();
        for route in self.config.route.matching(&labels) {
            let group_labels = route.group_by.key_labels(&labels);
            let key = format!("{}:{}", route.id, label_text(&group_labels));
            let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                key,
                receiver: route.receiver.clone(),
                labels: group_labels,
                group_interval: route.group_interval,
                repeat_interval: route.repeat_interval,
                escalation: route.escalation.clone(),
                alerts: BTreeSet::new(),
                next_flush: now + route.group_wait,
                last_sent: None,
                notified: BTreeMap::new(),
                notified_acked: BTreeSet::new(),
                escalated: BTreeMap::new(),
            });
            group.alerts.insert(fp);
        }
    }

    /// Acknowledges the firing alert `fingerprint`: its escalation stops, and its groups tell
    /// their receivers at the next [`flush`](Self::flush).
    pub fn acknowledge(
        &mut self,
        fingerprint: &str,
        by: &str,
        comment: Option<String>,
        now: Instant,
    ) -> Result<AlertView, AckError> {
        let fp = Fingerprint::parse(fingerprint)
            .filter(|fp| self.alerts.contains_key(fp))
            .ok_or_else(|| AckError::NotFound(fingerprint.to_owned()))?;
        let wall = self.wall(now);
        let Some(alert) = self.alerts.get_mut(&fp) else {
            return Err(AckError::NotFound(fingerprint.to_owned()));
        };
        if alert.state != AlertState::Firing {
            return Err(AckError::NotFiring {
                fingerprint: fingerprint.to_owned(),
                state: alert.state,
            });
        }
        alert.acknowledged = Some(Acknowledgement {
            by: by.to_owned(),
            at: wall,
            comment,
        });
        self.dirty = true;
        for group in self.groups.values_mut() {
            if group.alerts.contains(&fp) && group.notified.contains_key(&fp) {
                group.next_flush = group.next_flush.min(now);
            }
        }
        self.view(fp, now)
            .ok_or_else(|| AckError::NotFound(fingerprint.to_owned()))
    }

    /// Adds or replaces (by id) a silence; alerts it matches are held back from the next flush.
    pub fn put_silence(&mut self, silence: Silence) {
        self.silences.retain(|s| s.id != silence.id);
        self.silences.push(silence);
    }

    /// Ends the silence `id` at `now`; false if there is none. Groups it held back are flushed
    /// at their next interval.
    pub fn expire_silence(&mut self, id: &str, now: Instant) -> Option<Silence> {
        let wall = self.wall(now);
        let s = self.silences.iter_mut().find(|s| s.id == id)?;
        if s.ends_at > wall {
            s.ends_at = wall.max(s.starts_at);
            s.updated_at = wall;
        }
        Some(s.clone())
    }

    /// Every silence, including expired ones not yet dropped.
    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    /// Drops silences that ended before `before`.
    pub fn prune_silences(&mut self, before: DateTime<Utc>) {
        self.silences.retain(|s| s.ends_at >= before);
    }

    /// Every alert (pending, firing, and resolved ones whose resolve is not out yet), firing
    /// first, then by severity, rule and target.
    pub fn alerts(&self, now: Instant) -> Vec<AlertView> {
        let mut out: Vec<AlertView> = self
            .alerts
            .keys()
            .filter_map(|fp| self.view(*fp, now))
            .collect();
        let order = |s: AlertState| match s {
            AlertState::Firing => 0,
            AlertState::Pending => 1,
            AlertState::Resolved => 2,
        };
        out.sort_by(|a, b| {
            (
                order(a.state),
                std::cmp::Reverse(a.severity),
                &a.rule,
                &a.target,
            )
                .cmp(&(
                    order(b.state),
                    std::cmp::Reverse(b.severity),
                    &b.rule,
                    &b.target,
                ))
        });
        out
    }

    /// One alert.
    pub fn alert(&self, fingerprint: &str, now: Instant) -> Option<AlertView> {
        self.view(Fingerprint::parse(fingerprint)?, now)
    }

    fn view(&self, fp: Fingerprint, now: Instant) -> Option<AlertView> {
        let a = self.alerts.get(&fp)?;
        let wall = self.wall(now);
        let firing = self.firing_targets();
        Some(AlertView {
            fingerprint: fp,
            rule: a.rule_name.clone(),
            target: a.target.clone(),
            state: a.state,
            severity: a.severity,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            value: a.value,
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            acknowledged: a.acknowledged.clone(),
            silenced_by: self.silenced_by(&a.labels, wall),
            inhibited_by: self.inhibited_by(&a.target, &firing),
        })
    }

    fn silenced_by(&self, labels: &Labels, wall: DateTime<Utc>) -> Vec<String> {
        let silences = self
            .silences
            .iter()
            .filter(|s| s.silences(labels, wall))
            .map(|s| s.id.clone());
        let windows = self
            .config
            .maintenance
            .iter()
            .filter(|w| w.silences(labels, wall))
            .map(|w| format!("maintenance:{}", w.name));
        silences.chain(windows).collect()
    }

    fn firing_targets(&self) -> HashSet<&str> {
        self.alerts
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| a.target.as_str())
            .collect()
    }

    /// The nearest ancestor of `target` with a firing alert.
    fn inhibited_by(&self, target: &str, firing: &HashSet<&str>) -> Option<String> {
        if !self.config.inhibit_by_dependency {
            return None;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue: Vec<&str> = self
            .targets
            .get(target)
            .map(|e| e.info.parents.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(parent) = queue.pop() {
            if !seen.insert(parent) {
                continue;
            }
            if firing.contains(parent) {
                return Some(parent.to_owned());
            }
            if let Some(e) = self.targets.get(parent) {
                queue.extend(e.info.parents.iter().map(String::as_str));
            }
        }
        None
    }

    /// When the next group is due to be flushed, if any group exists.
    pub fn next_flush(&self) -> Option<Instant> {
        self.groups.values().map(|g| g.next_flush).min()
    }

    /// The notifications due at `now`: groups whose wait or interval is over and that have
    /// something new to say (or a repeat due), and escalations whose delay has passed.
    pub fn flush(&mut self, now: Instant) -> Vec<Notification> {
        let wall = self.wall(now);
        let firing_targets: HashSet<String> = self
            .firing_targets()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let firing_ref: HashSet<&str> = firing_targets.iter().map(String::as_str).collect();
        let suppressed: HashMap<Fingerprint, bool> = self
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| {
                let held = !self.silenced_by(&a.labels, wall).is_empty()
                    || self.inhibited_by(&a.target, &firing_ref).is_some();
                (a.fingerprint, held)
            })
            .collect();
        let mut out = Vec::new();
        let keys: Vec<String> = self.groups.keys().cloned().collect();
        for key in keys {
            let Some(mut group) = self.groups.remove(&key) else {
                continue;
            };
            self.escalate(&mut group, &suppressed, now, wall, &mut out);
            if group.next_flush <= now {
                self.flush_group(&mut group, &suppressed, now, wall, &mut out);
            }
            let empty = group.alerts.is_empty() && group.notified.is_empty();
            if !empty {
                self.groups.insert(key, group);
            }
        }
        // Resolved alerts no group holds any more are done.
        let held: HashSet<Fingerprint> = self
            .groups
            .values()
            .flat_map(|g| g.alerts.iter().copied())
            .collect();
        self.alerts
            .retain(|fp, a| a.state != AlertState::Resolved || held.contains(fp));
        self.stats.notifications += out.len() as u64;
        self.dirty |= !out.is_empty();
        out
    }

    /// True if alerts, acknowledgements or what was notified changed since the last call:
    /// time to save a [`DurableState`].
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Marks the state changed (a save failed and must be tried again).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// What must survive a restart: firing alerts and resolved ones whose resolve is not out,
    /// their acknowledgements, and what each group has notified. Pending alerts are left out
    /// (their `for` starts again).
    pub fn durable_state(&self, now: Instant) -> DurableState {
        let wall = |i: Instant| self.wall(i);
        let mut alerts: Vec<SavedAlert> = self
            .alerts
            .values()
            .filter(|a| a.state != AlertState::Pending)
            .map(|a| SavedAlert {
                fingerprint: a.fingerprint,
                rule: a.rule_name.clone(),
                target: a.target.clone(),
                severity: a.severity,
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                value: a.value,
                resolved: a.state == AlertState::Resolved,
                starts_at: a.starts_at,
                ends_at: a.ends_at,
                acknowledged: a.acknowledged.clone(),
            })
            .collect();
        alerts.sort_by_key(|a| a.fingerprint);
        let groups = self
            .groups
            .values()
            .map(|g| SavedGroup {
                key: g.key.clone(),
                receiver: g.receiver.clone(),
                labels: g.labels.clone(),
                group_interval_ms: millis(g.group_interval),
                repeat_interval_ms: millis(g.repeat_interval),
                escalation: g.escalation.clone(),
                alerts: g.alerts.iter().copied().collect(),
                next_flush: wall(g.next_flush),
                last_sent: g.last_sent.map(wall),
                notified: g.notified.iter().map(|(fp, at)| (*fp, wall(*at))).collect(),
                notified_acked: g.notified_acked.iter().copied().collect(),
                escalated: g.escalated.iter().map(|(fp, n)| (*fp, *n)).collect(),
            })
            .collect();
        DurableState {
            saved_at: self.wall(now),
            alerts,
            groups,
        }
    }

    /// Takes back a [`DurableState`] saved before a restart. Firing alerts are tied again to
    /// their target and rule (an alert whose target or rule is gone resolves, so its resolve
    /// goes out); groups resume with what they had notified, so nothing is sent twice and every
    /// notified alert still gets its resolve.
    pub fn restore(&mut self, state: DurableState, now: Instant) {
        let wall_now = self.wall(now);
        let instant = |w: DateTime<Utc>| -> Instant {
            match (wall_now - w).to_std() {
                Ok(ago) => now.checked_sub(ago).unwrap_or(now),
                Err(_) => now + (w - wall_now).to_std().unwrap_or_default(),
            }
        };
        for a in state.alerts {
            let rule = self.config.rules.iter().position(|r| r.name == a.rule);
            let mut alert = Alert {
                fingerprint: a.fingerprint,
                rule_name: a.rule,
                target: a.target,
                severity: a.severity,
                labels: a.labels,
                annotations: a.annotations,
                value: a.value,
                state: if a.resolved {
                    AlertState::Resolved
                } else {
                    AlertState::Firing
                },
                pending_since: now,
                starts_at: a.starts_at,
                ends_at: a.ends_at,
                acknowledged: a.acknowledged,
            };
            if alert.state == AlertState::Firing {
                let track = rule.and_then(|i| {
                    self.targets
                        .get_mut(&alert.target)
                        .and_then(|e| e.tracks.get_mut(i))
                        .and_then(Option::as_mut)
                });
                match track {
                    Some(track) => track.alert = Some(alert.fingerprint),
                    None => {
                        alert.state = AlertState::Resolved;
                        alert.ends_at = Some(wall_now);
                    }
                }
            }
            self.alerts.insert(alert.fingerprint, alert);
        }
        for g in state.groups {
            let group = Group {
                key: g.key.clone(),
                receiver: g.receiver,
                labels: g.labels,
                group_interval: Duration::from_millis(g.group_interval_ms),
                repeat_interval: Duration::from_millis(g.repeat_interval_ms),
                escalation: g.escalation,
                alerts: g
                    .alerts
                    .into_iter()
                    .filter(|fp| self.alerts.contains_key(fp))
                    .collect(),
                next_flush: instant(g.next_flush),
                last_sent: g.last_sent.map(instant),
                notified: g
                    .notified
                    .into_iter()
                    .map(|(fp, at)| (fp, instant(at)))
                    .collect(),
                notified_acked: g.notified_acked.into_iter().collect(),
                escalated: g.escalated.into_iter().collect(),
            };
            self.groups.insert(g.key, group);
        }
        self.dirty = true;
    }

    fn flush_group(
        &mut self,
        group: &mut Group,
        suppressed: &HashMap<Fingerprint, bool>,
        now: Instant,
        wall: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        group.next_flush = now + group.group_interval;
        let mut firing = Vec::new();
        let mut held_back = false;
        for fp in &group.alerts {
            match suppressed.get(fp) {
                Some(false) => firing.push(*fp),
                Some(true) => held_back = true,
                None => {}
            }
        }
        if held_back {
            self.stats.suppressed += 1;
        }
        // Reported firing and no longer firing: their resolve is due, suppressed or not.
        let resolved: Vec<Fingerprint> = group
            .notified
            .keys()
            .filter(|fp| {
                self.alerts
                    .get(fp)
                    .is_none_or(|a| a.state != AlertState::Firing)
            })
            .copied()
            .collect();
        let new = firing.iter().any(|fp| !group.notified.contains_key(fp));
        let acked = firing.iter().any(|fp| {
            self.alerts
                .get(fp)
                .is_some_and(|a| a.acknowledged.is_some())
                && !group.notified_acked.contains(fp)
        });
        let repeat = !firing.is_empty()
            && group
                .last_sent
                .is_some_and(|t| now.saturating_duration_since(t) >= group.repeat_interval);
        if new || acked || repeat || !resolved.is_empty() {
            let mut alerts: Vec<AlertSnapshot> = firing
                .iter()
                .filter_map(|fp| self.snapshot(*fp, AlertStatus::Firing, wall))
                .collect();
            alerts.extend(
                resolved
                    .iter()
                    .filter_map(|fp| self.snapshot(*fp, AlertStatus::Resolved, wall)),
            );
            let receiver = group.receiver.clone();
            out.push(self.notification(group, &receiver, alerts, 0, wall));
            group.last_sent = Some(now);
            // Escalation tiers that were told of an alert hear of its resolve too.
            for fp in &resolved {
                let tiers = group.escalated.remove(fp).unwrap_or(0);
                self.resolve_escalations(group, *fp, tiers, wall, out);
            }
        }
        for fp in &resolved {
            group.notified.remove(fp);
            group.notified_acked.remove(fp);
        }
        for fp in &firing {
            group.notified.entry(*fp).or_insert(now);
            if self
                .alerts
                .get(fp)
                .is_some_and(|a| a.acknowledged.is_some())
            {
                group.notified_acked.insert(*fp);
            }
        }
        // Keep what still fires (notified or held back) and what awaits its resolve.
        let alerts = &self.alerts;
        group.alerts.retain(|fp| {
            alerts
                .get(fp)
                .is_some_and(|a| a.state == AlertState::Firing)
                || group.notified.contains_key(fp)
        });
    }

    fn escalate(
        &mut self,
        group: &mut Group,
        suppressed: &HashMap<Fingerprint, bool>,
        now: Instant,
        wall: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let Some(policy) = group
            .escalation
            .as_ref()
            .and_then(|p| self.config.escalations.get(p))
            .cloned()
        else {
            return;
        };
        let notified: Vec<(Fingerprint, Instant)> =
            group.notified.iter().map(|(fp, at)| (*fp, *at)).collect();
        for (fp, first) in notified {
            let Some(alert) = self.alerts.get(&fp) else {
                continue;
            };
            if alert.state != AlertState::Firing
                || alert.acknowledged.is_some()
                || suppressed.get(&fp) != Some(&false)
            {
                continue;
            }
            let done = group.escalated.get(&fp).copied().unwrap_or(0);
            let elapsed = now.saturating_duration_since(first);
            let due = policy
                .tiers
                .iter()
                .take_while(|t| t.after <= elapsed)
                .count();
            for tier in done..due {
                let Some(snapshot) = self.snapshot(fp, AlertStatus::Firing, wall) else {
                    continue;
                };
                for receiver in &policy.tiers[tier].receivers {
                    let n =
                        self.notification(group, receiver, vec![snapshot.clone()], tier + 1, wall);
                    out.push(n);
                }
            }
            if due > done {
                group.escalated.insert(fp, due);
            }
        }
    }

    fn resolve_escalations(
        &mut self,
        group: &Group,
        fp: Fingerprint,
        tiers: usize,
        wall: DateTime<Utc>,
        out: &mut Vec<Notification>,
    ) {
        let Some(policy) = group
            .escalation
            .as_ref()
            .and_then(|p| self.config.escalations.get(p))
            .cloned()
        else {
            return;
        };
        let Some(snapshot) = self.snapshot(fp, AlertStatus::Resolved, wall) else {
            return;
        };
        for (tier, t) in policy.tiers.iter().enumerate().take(tiers) {
            for receiver in &t.receivers {
                let n = self.notification(group, receiver, vec![snapshot.clone()], tier + 1, wall);
                out.push(n);
            }
        }
    }

    fn snapshot(
        &self,
        fp: Fingerprint,
        status: AlertStatus,
        wall: DateTime<Utc>,
    ) -> Option<AlertSnapshot> {
        let a = self.alerts.get(&fp)?;
        Some(AlertSnapshot {
            fingerprint: fp,
            status,
            rule: a.rule_name.clone(),
            severity: a.severity,
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at.unwrap_or(wall),
            ends_at: match status {
                AlertStatus::Firing => None,
                AlertStatus::Resolved => Some(a.ends_at.unwrap_or(wall)),
            },
            value: a.value,
            acknowledged: a.acknowledged.clone(),
        })
    }

    fn notification(
        &mut self,
        group: &Group,
        receiver: &str,
        alerts: Vec<AlertSnapshot>,
        tier: usize,
        wall: DateTime<Utc>,
    ) -> Notification {
        self.seq += 1;
        let status = if alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        let mut id_labels = group.labels.clone();
        id_labels.insert("__group".to_owned(), group.key.clone());
        id_labels.insert("__receiver".to_owned(), receiver.to_owned());
        Notification {
            id: format!(
                "{}-{}-{}",
                Fingerprint::of(&id_labels),
                wall.timestamp_millis(),
                self.seq
            ),
            receiver: receiver.to_owned(),
            group_key: group.key.clone(),
            group_labels: group.labels.clone(),
            status,
            alerts,
            created_at: wall,
            tier: u32::try_from(tier).unwrap_or(u32::MAX),
            external_url: self.config.external_url.clone(),
        }
    }
}

/// Evaluates the rules that apply to `entry`, recording verdicts at observations, and puts in
/// `out` the rules whose alert must move: (rule, verdict, whether the rule holds).
#[allow(clippy::too_many_arguments)]
fn decide(
    rules: &[Rule],
    entry: &mut TargetEntry,
    alerts: &HashMap<Fingerprint, Alert>,
    now: Instant,
    observation: bool,
    scratch: &mut Vec<u64>,
    evaluations: &mut u64,
    out: &mut Vec<(usize, Check, bool)>,
) {
    for (i, track) in entry.tracks.iter_mut().enumerate() {
        let Some(track) = track else { continue };
        let rule = &rules[i];
        let check = rule.condition.check(&entry.signals, now, scratch);
        *evaluations += 1;
        if observation {
            track.ring = (track.ring << 1) | u64::from(check.holds);
            track.seen = (track.seen + 1).min(64);
        }
        let holds = match rule.n_of_m {
            Some(nm) => {
                let mask = if nm.of >= 64 {
                    u64::MAX
                } else {
                    (1u64 << nm.of) - 1
                };
                (track.ring & mask).count_ones() >= nm.at_least
            }
            None => check.holds,
        };
        let moves = match (track.alert, holds) {
            (None, false) => false,
            // No evidence either way: a firing alert stays as it is.
            (Some(_), false) if !check.known && rule.n_of_m.is_none() => false,
            // Holding on: only a pending alert (its `for` may be over) or a new value matter.
            (Some(fp), true) => alerts
                .get(&fp)
                .is_none_or(|a| a.state == AlertState::Pending || a.value != check.value),
            _ => true,
        };
        if moves {
            out.push((i, check, holds));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The engine's state as [`AlertEngine::durable_state`] saves it (JSON in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurableState {
    /// When it was taken.
    pub saved_at: DateTime<Utc>,
    alerts: Vec<SavedAlert>,
    groups: Vec<SavedGroup>,
}

impl DurableState {
    /// How many alerts it holds.
    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedAlert {
    fingerprint: Fingerprint,
    rule: String,
    target: String,
    severity: Severity,
    labels: Labels,
    annotations: Labels,
    value: Option<f64>,
    resolved: bool,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    acknowledged: Option<Acknowledgement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedGroup {
    key: String,
    receiver: String,
    labels: Labels,
    group_interval_ms: u64,
    repeat_interval_ms: u64,
    escalation: Option<String>,
    alerts: Vec<Fingerprint>,
    next_flush: DateTime<Utc>,
    last_sent: Option<DateTime<Utc>>,
    notified: Vec<(Fingerprint, DateTime<Utc>)>,
    notified_acked: Vec<Fingerprint>,
    escalated: Vec<(Fingerprint, usize)>,
}

fn render(rule: &Rule, labels: &Labels, value: Option<f64>, state: HealthState) -> Labels {
    let vars = TemplateVars {
        labels,
        value,
        state,
    };
    rule.annotations
        .iter()
        .map(|(name, t)| (name.clone(), t.render(&vars)))
        .collect()
}

/// `{a="1", b="2"}`, as Alertmanager writes group keys.
fn label_text(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}
