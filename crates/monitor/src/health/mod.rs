//! The health model: a state machine and a score per target, scores per group and overall, and
//! dependencies between targets.
//!
//! Pure logic: feed it probe results with [`HealthModel::record`]; it returns the
//! [`StateChange`]s they cause. Nothing here does I/O or reads a clock.
//!
//! # States
//! A target starts [`HealthState::Unknown`]. Its own state then follows its probe results:
//! - `failures_to_unhealthy` consecutive failures make it **unhealthy** (from any state; while
//!   fewer have failed in a row it keeps its state);
//! - from unhealthy, a success makes it **recovering**; `successes_to_healthy` consecutive
//!   successes make it healthy again, and one failure while recovering sends it back to unhealthy;
//! - otherwise a success makes it **healthy**, or **degraded** if it took longer than
//!   `degraded_latency` or carries a warning (a certificate expiring soon).
//!
//! While any target it depends on is unhealthy or unreachable, a target is shown as
//! **unreachable** (through that parent) instead of failing on its own. Its own state machine
//! keeps running underneath, so when the parent recovers the target shows its true state at once.
//!
//! # Score
//! `score = round(base × (0.5 + 0.5 × r))`, where `base` is 100 for healthy, 70 for degraded,
//! 50 for recovering and 0 for unhealthy or unreachable, and `r` is the share of successes among
//! the target's last [`SCORE_WINDOW`] results. A healthy target whose last ten probes all
//! passed scores 100; one with two failures among them scores 90. A target with no result yet has
//! no score. Group and overall scores are the weight-weighted means of the scores that exist.
//!
//! ```
//! use std::time::Duration;
//! use rampart_monitor::config::{CheckConfig, TargetConfig, TcpCheck, Thresholds};
//! use rampart_monitor::health::{HealthModel, HealthState};
//! use rampart_monitor::probe::{FailureKind, ProbeResult};
//!
//! let tcp = |name: &str| TargetConfig::new(name, CheckConfig::Tcp(TcpCheck::new("db:5432")));
//! let mut model = HealthModel::new(&[
//!     tcp("db").with_thresholds(Thresholds::new(2, 1)),
//!     tcp("api").depends_on("db"),
//! ]);
//! let ok = ProbeResult::success(Duration::from_millis(5));
//! let down = ProbeResult::failure(FailureKind::ConnectRefused, "refused", Duration::ZERO);
//! model.record("db", &ok);
//! model.record("api", &ok);
//! assert_eq!(model.state("api"), Some(HealthState::Healthy));
//!
//! model.record("db", &down);
//! let changes = model.record("db", &down);
//! assert_eq!(model.state("db"), Some(HealthState::Unhealthy));
//! assert_eq!(model.state("api"), Some(HealthState::Unreachable));
//! assert_eq!(changes.len(), 2, "db went unhealthy, api unreachable: {changes:?}");
//! assert_eq!(model.score("db"), Some(0));
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::config::{TargetConfig, Thresholds};
use crate::probe::{ProbeOutcome, ProbeResult};
use crate::store::ResultRecord;

/// How many recent results refine a target's score.
pub const SCORE_WINDOW: usize = 10;

/// The health of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HealthState {
    /// No result yet (or too few failures in a row to decide).
    Unknown,
    /// Passing.
    Healthy,
    /// Passing, but slower than its `degraded_latency` or with a warning (see
    /// [`ProbeResult::warning`](crate::probe::ProbeResult::warning)).
    Degraded,
    /// Was unhealthy; passing again, but not yet `successes_to_healthy` times in a row.
    Recovering,
    /// Failed `failures_to_unhealthy` times in a row.
    Unhealthy,
    /// A target it depends on is unhealthy or unreachable.
    Unreachable,
}

impl HealthState {
    /// Every state, in order.
    pub const ALL: [HealthState; 6] = [
        HealthState::Unknown,
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Recovering,
        HealthState::Unhealthy,
        HealthState::Unreachable,
    ];

    /// The score of a target in this state before the success ratio refines it; `None` for
    /// unknown.
    pub fn base_score(self) -> Option<u8> {
        match self {
            HealthState::Unknown => None,
            HealthState::Healthy => Some(100),
            HealthState::Degraded => Some(70),
            HealthState::Recovering => Some(50),
            HealthState::Unhealthy | HealthState::Unreachable => Some(0),
        }
    }

    /// A lower-case name, for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Recovering => "recovering",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unreachable => "unreachable",
        }
    }

    /// True for unhealthy and unreachable: the target cannot be used.
    pub fn is_down(self) -> bool {
        matches!(self, HealthState::Unhealthy | HealthState::Unreachable)
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target's shown state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The target's name.
    pub target: String,
    /// The state before.
    pub from: HealthState,
    /// The state now.
    pub to: HealthState,
    /// Why.
    pub cause: ChangeCause,
}

/// Why a target's state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeCause {
    /// Its own probe result (the failure message, if it failed).
    Probe {
        /// The failure message, `None` for a success.
        failure: Option<String>,
    },
    /// A target it depends on went down or came back.
    Dependency {
        /// The parent whose state caused it (for unreachable: the first parent that is down).
        parent: String,
    },
    /// The configuration changed: its check changed (its state starts over as unknown), or a
    /// dependency was added or removed (see [`HealthModel::reconfigure`]).
    Reconfigured,
}

/// The model's view of one target.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TargetHealth {
    /// The target's name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// The state shown (unreachable when a parent is down).
    pub state: HealthState,
    /// Its own state from its own results, whatever its parents do.
    pub own_state: HealthState,
    /// The parent that makes it unreachable, if it is.
    pub unreachable_via: Option<String>,
    /// Its score, `None` before the first result.
    pub score: Option<u8>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Successes in a row.
    pub consecutive_successes: u32,
    /// The last probe's latency.
    pub last_latency: Option<Duration>,
}

/// Scores and state counts over every target.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Summary {
    /// The weighted score over every target with a score.
    pub overall: Option<f64>,
    /// The weighted score of each group.
    pub groups: BTreeMap<String, Option<f64>>,
    /// How many targets are in each state (every state is present, maybe with 0).
    pub counts: BTreeMap<HealthState, usize>,
    /// Each target, in configuration order.
    pub targets: Vec<TargetHealth>,
}

#[derive(Debug)]
struct Entry {
    name: String,
    group: String,
    weight: f64,
    parents: Vec<usize>,
    thresholds: Thresholds,
    own: HealthState,
    shown: HealthState,
    via: Option<usize>,
    failures: u32,
    successes: u32,
    recent: VecDeque<bool>,
    last_latency: Option<Duration>,
}

/// Every target's health. See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct HealthModel {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl HealthModel {
    /// A model of `targets`, all unknown. Dependencies on names not in `targets` are ignored
    /// (a validated [`MonitorConfig`](crate::config::MonitorConfig) has none).
    pub fn new(targets: &[TargetConfig]) -> Self {
        let index: HashMap<String, usize> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let entries = targets
            .iter()
            .map(|t| Entry {
                name: t.name.clone(),
                group: t.group.clone(),
                weight: t.weight,
                parents: t
                    .depends_on
                    .iter()
                    .filter_map(|p| index.get(p).copied())
                    .collect(),
                thresholds: t.thresholds,
                own: HealthState::Unknown,
                shown: HealthState::Unknown,
                via: None,
                failures: 0,
                successes: 0,
                recent: VecDeque::with_capacity(SCORE_WINDOW),
                last_latency: None,
            })
            .collect();
        HealthModel { entries, index }
    }

    /// Records one probe result of `target` and returns the state changes it causes (its own and
    /// its dependents'), parents before children. An unknown name changes nothing.
    pub fn record(&mut self, target: &str, result: &ProbeResult) -> Vec<StateChange> {
        let Some(&i) = self.index.get(target) else {
            return Vec::new();
        };
        let e = &mut self.entries[i];
        let success = result.is_success();
        if e.recent.len() == SCORE_WINDOW {
            e.recent.pop_front();
        }
        e.recent.push_back(success);
        e.last_latency = Some(result.latency);
        e.own = next_state(e, success, result.latency, result.warning.is_some());
        let failure = match &result.outcome {
            ProbeOutcome::Failure { message, .. } => Some(message.clone()),
            ProbeOutcome::Success => None,
        };
        self.propagate(i, failure)
    }

    /// Restores `target` after a restart, from its last stored shown `state` and its `recent`
    /// results (oldest first, at most [`SCORE_WINDOW`] are used): rebuilds the score window, the
    /// runs of failures or successes and the last latency, sets its own state to `state`, and
    /// recomputes every shown state **without reporting changes**: the store already holds them.
    ///
    /// For a target stored as unreachable, its own state is worked out by replaying `recent`,
    /// and the dependency logic decides what is shown once its parents are restored. An unknown
    /// name changes nothing.
    pub fn restore(&mut self, target: &str, state: HealthState, recent: &[ResultRecord]) {
        let Some(&i) = self.index.get(target) else {
            return;
        };
        let e = &mut self.entries[i];
        e.own = HealthState::Unknown;
        e.failures = 0;
        e.successes = 0;
        e.recent.clear();
        let skip = recent.len().saturating_sub(SCORE_WINDOW);
        for r in &recent[skip..] {
            e.recent.push_back(r.is_success());
            e.last_latency = Some(r.latency);
            // Replayed only for the counters (and the own state of an unreachable target).
            e.own = next_state(e, r.is_success(), r.latency, false);
        }
        if state != HealthState::Unreachable {
            e.own = state;
        }
        self.propagate(i, None);
    }

    /// Follows a new configuration: the model becomes one of `targets`, in their order.
    ///
    /// A target also in the old model keeps its state, score window and runs (its group,
    /// weight, thresholds and dependencies are taken from `targets`), unless it is named in
    /// `reset`: then it starts over as unknown, like a new target. Targets no longer present are
    /// forgotten. Each target named in `restored` is then [restored](Self::restore) (a target
    /// added back, with its stored history). Dependencies are resolved again and every shown
    /// state recomputed; the changes returned are those of targets in both models whose shown
    /// state differs from before, each with cause [`ChangeCause::Reconfigured`].
    pub fn reconfigure(
        &mut self,
        targets: &[TargetConfig],
        reset: &[&str],
        restored: &[(&str, HealthState, &[ResultRecord])],
    ) -> Vec<StateChange> {
        let old = std::mem::replace(self, HealthModel::new(targets));
        for i in 0..self.entries.len() {
            let name = self.entries[i].name.clone();
            if reset.contains(&name.as_str()) {
                continue;
            }
            let Some(o) = old.entry(&name) else { continue };
            let via = o
                .via
                .and_then(|p| self.index.get(&old.entries[p].name).copied());
            let e = &mut self.entries[i];
            e.own = o.own;
            e.shown = o.shown;
            e.via = via;
            e.failures = o.failures;
            e.successes = o.successes;
            e.recent = o.recent.clone();
            e.last_latency = o.last_latency;
        }
        for (name, state, recent) in restored {
            self.restore(name, *state, recent);
        }
        // The changes it reports are measured against the old model below.
        self.propagate(usize::MAX, None);
        self.entries
            .iter()
            .filter_map(|e| {
                let from = old.entry(&e.name)?.shown;
                (from != e.shown).then(|| StateChange {
                    target: e.name.clone(),
                    from,
                    to: e.shown,
                    cause: ChangeCause::Reconfigured,
                })
            })
            .collect()
    }

    /// Recomputes the shown state of every target (a fixpoint over the dependency graph, which is
    /// acyclic), reporting each change. `origin` is the target whose own result started it.
    fn propagate(&mut self, origin: usize, failure: Option<String>) -> Vec<StateChange> {
        let mut changes = Vec::new();
        // Each round settles at least one more level of the graph; n rounds settle all.
        for _ in 0..=self.entries.len() {
            let mut changed = false;
            for i in 0..self.entries.len() {
                let via = self.entries[i]
                    .parents
                    .iter()
                    .copied()
                    .find(|&p| self.entries[p].shown.is_down());
                let e = &self.entries[i];
                let shown = if via.is_some() {
                    HealthState::Unreachable
                } else {
                    e.own
                };
                if shown == e.shown && via == e.via {
                    continue;
                }
                let cause = match (i == origin && via.is_none(), via.or(e.via)) {
                    (false, Some(p)) => ChangeCause::Dependency {
                        parent: self.entries[p].name.clone(),
                    },
                    _ => ChangeCause::Probe {
                        failure: failure.clone(),
                    },
                };
                let e = &mut self.entries[i];
                if shown != e.shown {
                    changes.push(StateChange {
                        target: e.name.clone(),
                        from: e.shown,
                        to: shown,
                        cause,
                    });
                }
                e.shown = shown;
                e.via = via;
                changed = true;
            }
            if !changed {
                break;
            }
        }
        changes
    }

    /// The shown state of `target`.
    pub fn state(&self, target: &str) -> Option<HealthState> {
        self.entry(target).map(|e| e.shown)
    }

    /// The score of `target` (0–100), `None` if unknown or before its first result.
    pub fn score(&self, target: &str) -> Option<u8> {
        self.entry(target).and_then(score)
    }

    /// The model's view of `target`.
    pub fn target(&self, target: &str) -> Option<TargetHealth> {
        self.entry(target).map(|e| self.health(e))
    }

    /// Scores and counts over every target.
    pub fn summary(&self) -> Summary {
        let mut counts: BTreeMap<HealthState, usize> =
            HealthState::ALL.iter().map(|&s| (s, 0)).collect();
        let mut groups: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut overall = (0.0, 0.0);
        for e in &self.entries {
            *counts.entry(e.shown).or_default() += 1;
            let group = groups.entry(e.group.clone()).or_default();
            if let Some(s) = score(e) {
                let w = e.weight;
                group.0 += w * f64::from(s);
                group.1 += w;
                overall.0 += w * f64::from(s);
                overall.1 += w;
            }
        }
        let mean = |(sum, weight): (f64, f64)| (weight > 0.0).then(|| sum / weight);
        Summary {
            overall: mean(overall),
            groups: groups.into_iter().map(|(g, v)| (g, mean(v))).collect(),
            counts,
            targets: self.entries.iter().map(|e| self.health(e)).collect(),
        }
    }

    fn entry(&self, target: &str) -> Option<&Entry> {
        self.index.get(target).map(|&i| &self.entries[i])
    }

    fn health(&self, e: &Entry) -> TargetHealth {
        TargetHealth {
            name: e.name.clone(),
            group: e.group.clone(),
            state: e.shown,
            own_state: e.own,
            unreachable_via: e.via.map(|p| self.entries[p].name.clone()),
            score: score(e),
            consecutive_failures: e.failures,
            consecutive_successes: e.successes,
            last_latency: e.last_latency,
        }
    }
}

/// The next own state after one result; updates the run counters.
fn next_state(e: &mut Entry, success: bool, latency: Duration, warned: bool) -> HealthState {
    let t = e.thresholds;
    if !success {
        e.successes = 0;
        e.failures = e.failures.saturating_add(1);
        return match e.own {
            HealthState::Recovering => HealthState::Unhealthy,
            _ if e.failures >= t.failures_to_unhealthy => HealthState::Unhealthy,
            own => own,
        };
    }
    e.failures = 0;
    e.successes = e.successes.saturating_add(1);
    let slow = warned || t.degraded_latency.is_some_and(|limit| latency > limit);
    let passing = if slow {
        HealthState::Degraded
    } else {
        HealthState::Healthy
    };
    match e.own {
        HealthState::Unhealthy if t.successes_to_healthy > 1 => HealthState::Recovering,
        HealthState::Recovering if e.successes < t.successes_to_healthy => HealthState::Recovering,
        _ => passing,
    }
}

fn score(e: &Entry) -> Option<u8> {
    let base = f64::from(e.shown.base_score()?);
    if e.recent.is_empty() {
        return None;
    }
    let ratio = e.recent.iter().filter(|&&ok| ok).count() as f64 / e.recent.len() as f64;
    Some((base * (0.5 + 0.5 * ratio)).round() as u8)
}

#[cfg(test)]
mod tests;
