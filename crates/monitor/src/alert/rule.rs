//! Alert rules: a condition on a target's health signals, how long it must hold (`for`) or how
//! often (N of the last M results), a severity, labels and annotation templates; and the nine
//! rules Rampart ships switched on.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::matcher::{Matcher, all_match};
use super::model::{Labels, Severity};
use crate::health::HealthState;

/// Results kept per target for window conditions, whatever the windows say.
pub const MAX_SAMPLES: usize = 512;

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Condition {
    /// The target's shown state is one of these.
    State(Vec<HealthState>),
    /// The target's score (0–100) is below this.
    ScoreBelow(f64),
    /// The given percentile (0–100) of the target's probe latency over `window` is above
    /// `above` (needs `min_samples` results in the window).
    Latency {
        /// The percentile, like 99.
        percentile: f64,
        /// The limit.
        above: Duration,
        /// How far back results count.
        window: Duration,
        /// Fewer results than this in the window: the condition does not hold.
        min_samples: usize,
    },
    /// The share of failed probes over `window` is above `above` (0–1).
    ErrorRate {
        /// The limit, as a fraction.
        above: f64,
        /// How far back results count.
        window: Duration,
        /// Fewer results than this in the window: the condition does not hold.
        min_samples: usize,
    },
    /// The server certificate expires in fewer days than this.
    CertificateDaysBelow(i64),
    /// A heartbeat target's last evaluation found its heartbeat missing.
    HeartbeatMissed,
    /// A bottleneck was reported for the target (from telemetry) within `window`.
    Bottleneck {
        /// How long a report keeps the condition true.
        window: Duration,
    },
}

impl Condition {
    /// The condition's kind as configs write it.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::State(_) => "state",
            Condition::ScoreBelow(_) => "score",
            Condition::Latency { .. } => "latency",
            Condition::ErrorRate { .. } => "error_rate",
            Condition::CertificateDaysBelow(_) => "certificate",
            Condition::HeartbeatMissed => "heartbeat",
            Condition::Bottleneck { .. } => "bottleneck",
        }
    }

    /// The longest look back this condition needs.
    pub(crate) fn horizon(&self) -> Duration {
        match self {
            Condition::Latency { window, .. }
            | Condition::ErrorRate { window, .. }
            | Condition::Bottleneck { window } => *window,
            _ => Duration::ZERO,
        }
    }

    /// Whether the condition holds for `signals` at `now`, with the value that decided it.
    pub(crate) fn check(&self, s: &Signals, now: Instant, scratch: &mut Vec<u64>) -> Check {
        match self {
            Condition::State(_) if s.state == HealthState::Unknown => Check::UNKNOWN,
            Condition::State(states) => {
                Check::new(states.contains(&s.state), s.score.map(f64::from))
            }
            Condition::ScoreBelow(limit) => match s.score {
                Some(score) => Check::new(f64::from(score) < *limit, Some(f64::from(score))),
                None => Check::UNKNOWN,
            },
            Condition::Latency {
                percentile,
                above,
                window,
                min_samples,
            } => {
                scratch.clear();
                scratch.extend(s.recent(now, *window).map(|x| x.latency_us));
                if scratch.is_empty() || scratch.len() < *min_samples {
                    return Check::UNKNOWN;
                }
                // Nearest rank, as HDR histograms and Prometheus summaries report it.
                let rank = ((percentile / 100.0) * scratch.len() as f64).ceil() as usize;
                let index = rank.clamp(1, scratch.len()) - 1;
                let (_, v, _) = scratch.select_nth_unstable(index);
                let us = *v;
                Check::new(us > above.as_micros() as u64, Some(us as f64 / 1000.0))
            }
            Condition::ErrorRate {
                above,
                window,
                min_samples,
            } => {
                let (mut total, mut failed) = (0usize, 0usize);
                for x in s.recent(now, *window) {
                    total += 1;
                    failed += usize::from(!x.success);
                }
                if total == 0 || total < *min_samples {
                    return Check::UNKNOWN;
                }
                let rate = failed as f64 / total as f64;
                Check::new(rate > *above, Some(rate))
            }
            Condition::CertificateDaysBelow(days) => match s.certificate_days_left {
                Some(left) => Check::new(left < *days, Some(left as f64)),
                None => Check::UNKNOWN,
            },
            Condition::HeartbeatMissed => Check::new(s.heartbeat_missed, None),
            Condition::Bottleneck { window } => Check::new(
                s.bottleneck_at
                    .is_some_and(|at| now.saturating_duration_since(at) <= *window),
                None,
            ),
        }
    }
}

/// A condition's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Check {
    pub(crate) holds: bool,
    pub(crate) value: Option<f64>,
    /// False when the signals are too few to judge (no score yet, fewer samples than the rule
    /// needs, say): an alert that fires stays as it is instead of resolving on no evidence.
    pub(crate) known: bool,
}

impl Check {
    const UNKNOWN: Check = Check {
        holds: false,
        value: None,
        known: false,
    };

    fn new(holds: bool, value: Option<f64>) -> Self {
        Check {
            holds,
            value,
            known: true,
        }
    }
}

/// "At least `at_least` of the last `of` results": a condition that must hold often, not
/// always, to fire (a flapping target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NOfM {
    /// N.
    pub at_least: u32,
    /// M, at most 64.
    pub of: u32,
}

/// One alert rule. Build it with [`Rule::new`] and the `with_*` methods, or from
/// `[[alerting.rule]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) condition: Condition,
    pub(crate) for_: Duration,
    pub(crate) n_of_m: Option<NOfM>,
    pub(crate) severity: Severity,
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) labels: Labels,
    pub(crate) annotations: Vec<(String, Template)>,
}

impl Rule {
    /// A rule named `name` (its alerts' `alertname`) on `condition`, firing at once, warning.
    pub fn new(name: impl Into<String>, condition: Condition) -> Self {
        let name = name.into();
        Rule {
            annotations: vec![(
                "summary".to_owned(),
                Template::parse(&format!("{name} on {{{{ target }}}}")).unwrap_or_default(),
            )],
            name,
            condition,
            for_: Duration::ZERO,
            n_of_m: None,
            severity: Severity::Warning,
            matchers: Vec::new(),
            labels: Labels::new(),
        }
    }

    /// The condition must hold this long (the alert is pending meanwhile) before it fires.
    pub fn with_for(mut self, duration: Duration) -> Self {
        self.for_ = duration;
        self
    }

    /// The condition must hold in at least `at_least` of the target's last `of` results.
    pub fn with_n_of_m(mut self, at_least: u32, of: u32) -> Self {
        self.n_of_m = Some(NOfM { at_least, of });
        self
    }

    /// The alerts' severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Only targets whose labels (`target`, `group`, `kind`) match every matcher.
    pub fn with_matchers(mut self, matchers: Vec<Matcher>) -> Self {
        self.matchers = matchers;
        self
    }

    /// Adds a label to the alerts.
    pub fn with_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }

    /// Sets an annotation template (`summary`, `description`, ...).
    pub fn with_annotation(mut self, name: impl Into<String>, template: Template) -> Self {
        let name = name.into();
        self.annotations.retain(|(n, _)| *n != name);
        self.annotations.push((name, template));
        self
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it watches.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// Its severity.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// True if the rule applies to a target with these labels.
    pub(crate) fn applies_to(&self, target_labels: &Labels) -> bool {
        all_match(&self.matchers, target_labels)
    }
}

/// A text with `{{ name }}` placeholders: `target`, `group`, `kind`, `rule`, `severity`,
/// `state`, `value`, and `labels.NAME` for any alert label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// The placeholders a template may use besides `labels.NAME`.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "target", "group", "kind", "rule", "severity", "state", "value",
];

impl Template {
    /// Reads `text`; an unclosed `{{` or an unknown placeholder is an error that says which.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {text:?}"))?;
            let name = after[..close].trim();
            let known = TEMPLATE_VARIABLES.contains(&name)
                || name.strip_prefix("labels.").is_some_and(|l| !l.is_empty());
            if !known {
                return Err(format!(
                    "unknown placeholder `{{{{ {name} }}}}`; expected one of {} or labels.NAME",
                    TEMPLATE_VARIABLES.join(", ")
                ));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Fills in the placeholders; a label the alert lacks is empty.
    pub(crate) fn render(&self, vars: &TemplateVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => match v.as_str() {
                    "value" => {
                        if let Some(value) = vars.value {
                            out.push_str(&format_value(value));
                        }
                    }
                    "state" => out.push_str(vars.state.as_str()),
                    other => {
                        let label = other.strip_prefix("labels.").unwrap_or(match other {
                            "rule" => "alertname",
                            name => name,
                        });
                        if let Some(value) = vars.labels.get(label) {
                            out.push_str(value);
                        }
                    }
                },
            }
        }
        out
    }
}

/// What a template is filled in with.
pub(crate) struct TemplateVars<'a> {
    pub(crate) labels: &'a Labels,
    pub(crate) value: Option<f64>,
    pub(crate) state: HealthState,
}

/// A value as people read it: at most three decimals, no trailing zeros.
fn format_value(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Var(v) => write!(f, "{{{{ {v} }}}}")?,
            }
        }
        Ok(())
    }
}

/// One probe result as rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    pub(crate) latency_us: u64,
    pub(crate) success: bool,
}

/// What the rules know of one target.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    pub(crate) state: HealthState,
    pub(crate) score: Option<u8>,
    pub(crate) samples: VecDeque<Sample>,
    pub(crate) certificate_days_left: Option<i64>,
    pub(crate) heartbeat_missed: bool,
    pub(crate) bottleneck_at: Option<Instant>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            state: HealthState::Unknown,
            score: None,
            samples: VecDeque::new(),
            certificate_days_left: None,
            heartbeat_missed: false,
            bottleneck_at: None,
        }
    }
}

impl Signals {
    /// Samples within `window` of `now`, newest last.
    fn recent(&self, now: Instant, window: Duration) -> impl Iterator<Item = &Sample> {
        let from = now.checked_sub(window);
        self.samples
            .iter()
            .rev()
            .take_while(move |s| from.is_none_or(|from| s.at >= from))
    }

    /// Adds a sample, dropping those older than `horizon` and beyond [`MAX_SAMPLES`].
    pub(crate) fn push(&mut self, sample: Sample, horizon: Duration) {
        self.samples.push_back(sample);
        if let Some(oldest) = sample.at.checked_sub(horizon) {
            while self.samples.front().is_some_and(|s| s.at < oldest) {
                self.samples.pop_front();
            }
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }
}

/// The nine rules Rampart ships, each switchable off by name in `[alerting.default_rules]`.
pub fn default_rules() -> Vec<Rule> {
    let t = |text: &str| Template::parse(text).unwrap_or_default();
    let minutes = |m: u64| Duration::from_secs(m * 60);
    vec![
        Rule::new("TargetDown", Condition::State(vec![HealthState::Unhealthy]))
            .with_severity(Severity::Critical)
            .with_annotation("summary", t("{{ target }} is down"))
            .with_annotation(
                "description",
                t("{{ target }} ({{ kind }}) failed enough probes in a row to be unhealthy."),
            ),
        Rule::new(
            "TargetDegraded",
            Condition::State(vec![HealthState::Degraded]),
        )
        .with_for(minutes(5))
        .with_annotation("summary", t("{{ target }} has been degraded for 5 minutes")),
        Rule::new("HealthScoreLow", Condition::ScoreBelow(50.0))
            .with_for(minutes(5))
            .with_annotation("summary", t("{{ target }}'s health score is {{ value }}")),
        Rule::new(
            "LatencyHigh",
            Condition::Latency {
                percentile: 99.0,
                above: Duration::from_secs(1),
                window: minutes(5),
                min_samples: 5,
            },
        )
        .with_for(minutes(5))
        .with_annotation(
            "summary",
            t("{{ target }}'s p99 latency over 5 minutes is {{ value }} ms"),
        ),
        Rule::new(
            "ErrorRateHigh",
            Condition::ErrorRate {
                above: 0.10,
                window: minutes(5),
                min_samples: 5,
            },
        )
        .with_for(minutes(2))
        .with_annotation(
            "summary",
            t("{{ target }} failed a share of {{ value }} of its probes over 5 minutes"),
        ),
        Rule::new(
            "CertificateExpiringSoon",
            Condition::CertificateDaysBelow(14),
        )
        .with_annotation(
            "summary",
            t("{{ target }}'s certificate expires in {{ value }} days"),
        ),
        Rule::new(
            "CertificateExpiringCritical",
            Condition::CertificateDaysBelow(3),
        )
        .with_severity(Severity::Critical)
        .with_annotation(
            "summary",
            t("{{ target }}'s certificate expires in {{ value }} days"),
        ),
        Rule::new("HeartbeatMissed", Condition::HeartbeatMissed)
            .with_severity(Severity::Critical)
            .with_annotation("summary", t("{{ target }} missed its heartbeat")),
        Rule::new(
            "BottleneckDetected",
            Condition::Bottleneck { window: minutes(5) },
        )
        .with_annotation("summary", t("a bottleneck was detected at {{ target }}")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(now: Instant, latencies_ms: &[(u64, bool)]) -> Signals {
        let mut s = Signals::default();
        let n = latencies_ms.len() as u32;
        for (i, (ms, ok)) in latencies_ms.iter().enumerate() {
            let at = now - Duration::from_secs(u64::from(n - i as u32));
            s.push(
                Sample {
                    at,
                    latency_us: ms * 1000,
                    success: *ok,
                },
                Duration::from_secs(3600),
            );
        }
        s
    }

    #[test]
    fn latency_uses_the_nearest_rank_percentile_over_the_window() {
        let now = Instant::now();
        let latency = |p, above_ms, window_s| Condition::Latency {
            percentile: p,
            above: Duration::from_millis(above_ms),
            window: Duration::from_secs(window_s),
            min_samples: 1,
        };
        // Ten results, one second apart, 10..100 ms.
        let s = signals(now, &(1..=10).map(|i| (i * 10, true)).collect::<Vec<_>>());
        let mut scratch = Vec::new();
        let c = latency(90.0, 85, 60).check(&s, now, &mut scratch);
        assert_eq!((c.holds, c.value), (true, Some(90.0)));
        assert!(!latency(90.0, 90, 60).check(&s, now, &mut scratch).holds);
        // The last three results only: 80, 90, 100; p50 is 90.
        let c = latency(50.0, 0, 3).check(&s, now, &mut scratch);
        assert_eq!(c.value, Some(90.0));
        // Too few samples: no verdict.
        let few = Condition::Latency {
            percentile: 99.0,
            above: Duration::ZERO,
            window: Duration::from_secs(60),
            min_samples: 11,
        };
        assert!(!few.check(&s, now, &mut scratch).holds);
    }

    #[test]
    fn error_rate_counts_failures_in_the_window() {
        let now = Instant::now();
        let s = signals(
            now,
            &[(1, false), (1, false), (1, true), (1, true), (1, false)],
        );
        let rate = |above, window_s| Condition::ErrorRate {
            above,
            window: Duration::from_secs(window_s),
            min_samples: 1,
        };
        let mut scratch = Vec::new();
        assert_eq!(rate(0.5, 60).check(&s, now, &mut scratch).value, Some(0.6));
        assert!(rate(0.5, 60).check(&s, now, &mut scratch).holds);
        // The last two: one of two failed.
        assert_eq!(rate(0.5, 2).check(&s, now, &mut scratch).value, Some(0.5));
        assert!(!rate(0.5, 2).check(&s, now, &mut scratch).holds);
    }

    #[test]
    fn samples_are_bounded_by_the_horizon_and_the_cap() {
        let now = Instant::now();
        let mut s = Signals::default();
        for i in 0..(MAX_SAMPLES as u64 + 100) {
            s.push(
                Sample {
                    at: now + Duration::from_millis(i),
                    latency_us: 1,
                    success: true,
                },
                Duration::from_secs(3600),
            );
        }
        assert_eq!(s.samples.len(), MAX_SAMPLES);
        s.push(
            Sample {
                at: now + Duration::from_secs(100),
                latency_us: 1,
                success: true,
            },
            Duration::from_secs(10),
        );
        assert_eq!(s.samples.len(), 1);
    }

    #[test]
    fn templates_fill_in_labels_and_values_and_reject_unknown_names() {
        let t = Template::parse("{{ target }} p99 {{value}} ms ({{ labels.team }})").unwrap();
        let labels: Labels = [("target", "api"), ("team", "web")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let vars = TemplateVars {
            labels: &labels,
            value: Some(1234.5),
            state: HealthState::Degraded,
        };
        assert_eq!(t.render(&vars), "api p99 1234.5 ms (web)");
        let err = Template::parse("{{ tagret }}").unwrap_err();
        assert!(err.contains("unknown placeholder `{{ tagret }}`"), "{err}");
        assert!(
            Template::parse("{{ target")
                .unwrap_err()
                .contains("unclosed")
        );
    }

    #[test]
    fn nine_default_rules_with_distinct_names() {
        let rules = default_rules();
        assert_eq!(rules.len(), 9);
        let mut names: Vec<&str> = rules.iter().map(Rule::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 9);
    }
}
