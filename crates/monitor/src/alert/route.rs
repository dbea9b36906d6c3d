//! The routing tree: which receiver gets an alert, how alerts are grouped, and how often a
//! group is notified. Alertmanager's semantics: an alert walks down from the root; at each node
//! the first child whose matchers match takes it (and its siblings after it too, when that child
//! sets `continue`); a node no child takes it from is where it lands.

use std::time::Duration;

use super::matcher::{Matcher, all_match};
use super::model::Labels;

/// Alertmanager's default `group_wait`.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's default `group_interval`.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// How a route groups its alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// By the values of these labels (an empty list: one group for the route).
    Labels(Vec<String>),
    /// Every alert alone (`group_by = ["..."]`).
    All,
}

impl GroupBy {
    /// The group's labels for an alert with `labels`.
    pub(crate) fn key_labels(&self, labels: &Labels) -> Labels {
        match self {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }
}

/// One node of the routing tree, its settings inherited from its parent where not set.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where the path of this node is in the tree (`"0"` for the root, `"0.1"` for its second
    /// child); part of every group key.
    pub id: String,
    /// The receiver that gets this node's notifications.
    pub receiver: String,
    /// What an alert's labels must match to enter this node (the root matches everything).
    pub matchers: Vec<Matcher>,
    /// How alerts are grouped.
    pub group_by: GroupBy,
    /// How long a new group waits for more alerts before its first notification.
    pub group_wait: Duration,
    /// How long a group waits before notifying about alerts that joined or resolved.
    pub group_interval: Duration,
    /// How long before a notification that changed nothing is sent again.
    pub repeat_interval: Duration,
    /// Whether siblings after this node are tried too when it matches.
    pub continue_matching: bool,
    /// The escalation policy for unacknowledged alerts of this node, if any.
    pub escalation: Option<String>,
    /// Child nodes, tried in order.
    pub routes: Vec<Route>,
}

impl Route {
    /// A root sending everything to `receiver`, grouped by `alertname`, with Alertmanager's
    /// default timings.
    pub fn root(receiver: impl Into<String>) -> Self {
        Route {
            id: "0".to_owned(),
            receiver: receiver.into(),
            matchers: Vec::new(),
            group_by: GroupBy::Labels(vec!["alertname".to_owned()]),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            continue_matching: false,
            escalation: None,
            routes: Vec::new(),
        }
    }

    /// Sets the timings.
    pub fn with_timings(mut self, wait: Duration, interval: Duration, repeat: Duration) -> Self {
        self.group_wait = wait;
        self.group_interval = interval;
        self.repeat_interval = repeat;
        self
    }

    /// Sets how alerts are grouped.
    pub fn with_group_by(mut self, group_by: GroupBy) -> Self {
        self.group_by = group_by;
        self
    }

    /// Sets the escalation policy.
    pub fn with_escalation(mut self, policy: impl Into<String>) -> Self {
        self.escalation = Some(policy.into());
        self
    }

    /// Adds a child that matches `matchers` and sends to `receiver`, inheriting this node's
    /// other settings; `configure` may change them.
    pub fn with_child(
        mut self,
        matchers: Vec<Matcher>,
        receiver: impl Into<String>,
        configure: impl FnOnce(Route) -> Route,
    ) -> Self {
        let child = Route {
            id: format!("{}.{}", self.id, self.routes.len()),
            receiver: receiver.into(),
            matchers,
            group_by: self.group_by.clone(),
            group_wait: self.group_wait,
            group_interval: self.group_interval,
            repeat_interval: self.repeat_interval,
            continue_matching: false,
            escalation: self.escalation.clone(),
            routes: Vec::new(),
        };
        self.routes.push(configure(child));
        self
    }

    /// The nodes an alert with `labels` lands on, in tree order.
    pub fn matching(&self, labels: &Labels) -> Vec<&Route> {
        let mut out = Vec::new();
        self.walk(labels, &mut out);
        out
    }

    fn walk<'a>(&'a self, labels: &Labels, out: &mut Vec<&'a Route>) -> bool {
        if !all_match(&self.matchers, labels) {
            return false;
        }
        let mut taken = false;
        for child in &self.routes {
            if child.walk(labels, out) {
                taken = true;
                if !child.continue_matching {
                    break;
                }
            }
        }
        if !taken {
            out.push(self);
        }
        true
    }

    /// Every node, depth first.
    pub fn nodes(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for child in &self.routes {
            out.extend(child.nodes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(text: &str) -> Vec<Matcher> {
        vec![Matcher::parse(text).unwrap()]
    }

    #[test]
    fn first_matching_child_wins_unless_it_continues() {
        let tree = Route::root("default")
            .with_child(m("severity=critical"), "pager", |r| Route {
                continue_matching: true,
                ..r
            })
            .with_child(m("team=web"), "web", |r| r)
            .with_child(m("team=~web|db"), "fallback", |r| r);
        let receivers = |l: &Labels| -> Vec<String> {
            tree.matching(l)
                .into_iter()
                .map(|r| r.receiver.clone())
                .collect()
        };
        assert_eq!(receivers(&labels(&[("team", "db")])), ["fallback"]);
        // `web` matches and does not continue: `fallback` is not tried.
        assert_eq!(receivers(&labels(&[("team", "web")])), ["web"]);
        // `pager` continues, so `web` gets it too.
        assert_eq!(
            receivers(&labels(&[("team", "web"), ("severity", "critical")])),
            ["pager", "web"]
        );
        // Nothing below matches: the root takes it.
        assert_eq!(receivers(&labels(&[("team", "ops")])), ["default"]);
    }

    #[test]
    fn children_inherit_and_get_path_ids() {
        let tree = Route::root("default")
            .with_timings(
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(2),
            )
            .with_child(m("a=b"), "x", |r| r.with_child(m("c=d"), "y", |r| r));
        let leaf = &tree.routes[0].routes[0];
        assert_eq!(leaf.id, "0.0.0");
        assert_eq!(leaf.group_interval, Duration::from_secs(1));
        assert_eq!(tree.nodes().len(), 3);
    }

    #[test]
    fn group_labels_take_only_the_named_labels() {
        let l = labels(&[("alertname", "Down"), ("target", "api"), ("team", "web")]);
        let by = GroupBy::Labels(vec!["alertname".into(), "missing".into()]);
        assert_eq!(by.key_labels(&l), labels(&[("alertname", "Down")]));
        assert_eq!(GroupBy::All.key_labels(&l), l);
    }
}
