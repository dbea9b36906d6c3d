//! Bottlenecks: which dependency (or operation) a rise of latency or errors comes from.
//!
//! Operations have a [`Role`]: **dependencies** are calls to something else (a database, a
//! cache, another service), **end-to-end** operations are requests as their caller sees them,
//! and everything else is internal. Roles come from [`BottleneckConfig`]: by default an operation
//! labelled `dependency="postgres"` is a call to the dependency `postgres`.
//!
//! When a dependency's latency or error ratio steps up, it is named. When an end-to-end
//! operation's does, the dependency whose added time per end-to-end call (or added errors per
//! second) accounts for at least half of the rise is named, or else the end-to-end operation
//! itself. Time is counted as calls per second × mean latency, so a dependency called ten times
//! per request weighs ten times.

use super::OperationKey;
use super::event::{Bottleneck, Change, EndToEnd, Signal};
use super::summary::Agg;
use crate::Labels;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which operations are dependency calls and which are end-to-end requests.
#[derive(Debug, Clone, PartialEq)]
pub struct BottleneckConfig {
    /// The label whose value names the dependency an operation calls: with the default
    /// `"dependency"`, an operation labelled `dependency="postgres"` is a call to `postgres`
    /// (several operations may call one dependency; their time adds up). `None` turns labels off.
    pub dependency_label: Option<String>,
    /// Operation names that are dependency calls without the label; the dependency is named
    /// after the operation. Default none.
    pub dependencies: Vec<String>,
    /// Operation names that are end-to-end requests (`"http.request"`). Default none: then only
    /// dependency steps are attributed, and shares are of the time spent in dependencies.
    pub end_to_end: Vec<String>,
    /// After naming a culprit for latency (or for errors), it is not named again for the same
    /// signal for this long. Default 60 s.
    pub cooldown: Duration,
}

impl Default for BottleneckConfig {
    fn default() -> Self {
        BottleneckConfig {
            dependency_label: Some("dependency".into()),
            dependencies: Vec::new(),
            end_to_end: Vec::new(),
            cooldown: Duration::from_secs(60),
        }
    }
}

/// What an operation is to bottleneck attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A request as its caller sees it.
    EndToEnd,
    /// A call to the named dependency.
    Dependency(Arc<str>),
    /// Anything else: its steps are reported, but it is neither a culprit nor a victim.
    Internal,
}

impl BottleneckConfig {
    /// The role of operation `name` with `labels`: end-to-end if listed so, else a dependency by
    /// label or by name, else internal.
    ///
    /// ```
    /// use rampart_telemetry::Labels;
    /// use rampart_telemetry::detect::{BottleneckConfig, Role};
    ///
    /// let config = BottleneckConfig {
    ///     end_to_end: vec!["http.request".into()],
    ///     ..BottleneckConfig::default()
    /// };
    /// let db = Labels::new().with("dependency", "postgres");
    /// assert_eq!(config.role_of("db.query", &db), Role::Dependency("postgres".into()));
    /// assert_eq!(config.role_of("http.request", &Labels::new()), Role::EndToEnd);
    /// assert_eq!(config.role_of("render", &Labels::new()), Role::Internal);
    /// ```
    pub fn role_of(&self, name: &str, labels: &Labels) -> Role {
        if self.end_to_end.iter().any(|n| n == name) {
            return Role::EndToEnd;
        }
        if let Some(value) = self
            .dependency_label
            .as_deref()
            .and_then(|label| labels.get(label))
        {
            return Role::Dependency(value.into());
        }
        if self.dependencies.iter().any(|n| n == name) {
            return Role::Dependency(name.into());
        }
        Role::Internal
    }
}

/// One operation as attribution sees it: before the rise and since its onset.
pub(crate) struct View<'a> {
    pub(crate) key: &'a OperationKey,
    pub(crate) role: &'a Role,
    pub(crate) before: Agg,
    pub(crate) now: Agg,
}

impl View<'_> {
    /// How much the signal rose per second: busy seconds per second, or errors per second.
    fn added(&self, cause: Signal) -> f64 {
        match cause {
            Signal::Latency => self.now.busy() - self.before.busy(),
            Signal::ErrorRatio => error_rate(&self.now) - error_rate(&self.before),
        }
    }

    /// How much the signal rose, in the unit `added` is divided by to get the share explained:
    /// seconds per call for latency, errors per second for errors.
    fn rise(&self, cause: Signal) -> f64 {
        match cause {
            Signal::Latency => self.now.mean().as_secs_f64() - self.before.mean().as_secs_f64(),
            Signal::ErrorRatio => self.added(cause),
        }
    }

    /// `added` (of a culprit, per second) as a share of this end-to-end operation's rise.
    fn explained(&self, added: f64, cause: Signal) -> Option<f64> {
        let rise = self.rise(cause);
        let per = match cause {
            Signal::Latency => self.now.rate(),
            Signal::ErrorRatio => 1.0,
        };
        (rise > 0.0 && per > 0.0).then(|| added / per / rise)
    }
}

fn error_rate(a: &Agg) -> f64 {
    if a.secs > 0.0 { a.errors / a.secs } else { 0.0 }
}

#[derive(Default)]
struct Group {
    before: f64,
    now: f64,
    added: f64,
    /// The member that added the most.
    top: Option<(usize, f64)>,
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Names the culprit of a step of `cause` on `views[trigger]`; returns its index and the event.
pub(crate) fn attribute(
    views: &[View<'_>],
    trigger: usize,
    cause: Signal,
    onset: Instant,
    now: Instant,
) -> Option<(usize, Bottleneck)> {
    let mut groups: HashMap<&Arc<str>, Group> = HashMap::new();
    for (i, v) in views.iter().enumerate() {
        if let Role::Dependency(name) = v.role {
            let g = groups.entry(name).or_default();
            g.before += v.before.busy();
            g.now += v.now.busy();
            let added = v.added(cause);
            g.added += added;
            if g.top.is_none_or(|(_, best)| added > best) {
                g.top = Some((i, added));
            }
        }
    }
    let total = |f: fn(&Group) -> f64| groups.values().map(f).sum::<f64>();
    let (total_before, total_now) = (total(|g| g.before), total(|g| g.now));
    let is_e2e = |v: &View<'_>| *v.role == Role::EndToEnd;
    let (culprit, name, e2e) = match views[trigger].role {
        Role::Dependency(name) => {
            // The end-to-end operation that rose the most, if any.
            let e2e = views
                .iter()
                .filter(|v| is_e2e(v))
                .max_by(|a, b| a.rise(cause).total_cmp(&b.rise(cause)));
            (trigger, name.clone(), e2e)
        }
        Role::EndToEnd => {
            let e2e = &views[trigger];
            let best = groups
                .iter()
                .max_by(|a, b| a.1.added.total_cmp(&b.1.added))
                .filter(|(_, g)| e2e.explained(g.added, cause).is_some_and(|x| x >= 0.5));
            match best.and_then(|(name, g)| Some(((*name).clone(), g.top?.0))) {
                Some((name, op)) => (op, name, Some(e2e)),
                None => (trigger, e2e.key.name.clone(), Some(e2e)),
            }
        }
        Role::Internal => return None,
    };
    let c = &views[culprit];
    let share_of_time = match groups.get(&name) {
        Some(g) => Change {
            baseline: share(g.before, total_before),
            current: share(g.now, total_now),
        },
        // The end-to-end operation itself: the share of its time not spent in dependencies.
        None => Change {
            baseline: share(c.before.busy() - total_before, c.before.busy()),
            current: share(c.now.busy() - total_now, c.now.busy()),
        },
    };
    let culprit_added = match groups.get(&name) {
        Some(g) => g.added,
        None => {
            // Its own added time: its rise per call less what the dependencies added.
            let deps = groups.values().map(|g| g.added).sum::<f64>();
            match cause {
                Signal::Latency => c.rise(cause) * c.now.rate() - deps,
                Signal::ErrorRatio => c.added(cause) - deps,
            }
        }
    };
    let end_to_end = e2e.map(|e| EndToEnd {
        operation: e.key.clone(),
        mean: Change {
            baseline: e.before.mean(),
            current: e.now.mean(),
        },
        error_ratio: Change {
            baseline: e.before.error_ratio(),
            current: e.now.error_ratio(),
        },
        explained: e.explained(culprit_added, cause),
    });
    let event = Bottleneck {
        dependency: name,
        operation: c.key.clone(),
        cause,
        share_of_time,
        mean: Change {
            baseline: c.before.mean(),
            current: c.now.mean(),
        },
        error_ratio: Change {
            baseline: c.before.error_ratio(),
            current: c.now.error_ratio(),
        },
        added_latency: c.now.mean().saturating_sub(c.before.mean()),
        end_to_end,
        onset,
        detected_at: now,
    };
    Some((culprit, event))
}
