//! What the detectors report: one typed value per finding, each with a one-line `Display` for logs.

use super::OperationKey;
use super::trend::Forecast;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A finding of a [`Detector`](super::Detector) or an [`ExhaustionWatch`](super::ExhaustionWatch).
///
/// `Display` gives the log line; [`kind`](Self::kind) a stable name for counters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DetectionEvent {
    /// An operation's latency rose in a step.
    LatencyStep(LatencyStep),
    /// An operation's error ratio rose in a step.
    ErrorStep(ErrorStep),
    /// The dependency (or operation) responsible for a rise, with its share of the time.
    Bottleneck(Bottleneck),
    /// A step's signal came back to its level before the step.
    Recovered(Recovered),
    /// An operation's latency or error ratio is drifting.
    Trend(Trend),
    /// A resource is forecast to run out (pool saturated, disk full, certificate expired).
    Exhaustion(Exhaustion),
}

impl DetectionEvent {
    /// A stable snake_case name for the kind of event (`latency_step`, `error_step`,
    /// `bottleneck`, `recovered`, `trend`, `exhaustion`), for counters and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            DetectionEvent::LatencyStep(_) => "latency_step",
            DetectionEvent::ErrorStep(_) => "error_step",
            DetectionEvent::Bottleneck(_) => "bottleneck",
            DetectionEvent::Recovered(_) => "recovered",
            DetectionEvent::Trend(_) => "trend",
            DetectionEvent::Exhaustion(_) => "exhaustion",
        }
    }

    /// The operation the event is about (for a bottleneck, the culprit); `None` for exhaustion.
    pub fn operation(&self) -> Option<&OperationKey> {
        match self {
            DetectionEvent::LatencyStep(e) => Some(&e.operation),
            DetectionEvent::ErrorStep(e) => Some(&e.operation),
            DetectionEvent::Bottleneck(e) => Some(&e.operation),
            DetectionEvent::Recovered(e) => Some(&e.operation),
            DetectionEvent::Trend(e) => Some(&e.operation),
            DetectionEvent::Exhaustion(_) => None,
        }
    }

    /// When the detector reported it (the end of the tick that completed the evidence).
    pub fn detected_at(&self) -> Instant {
        match self {
            DetectionEvent::LatencyStep(e) => e.detected_at,
            DetectionEvent::ErrorStep(e) => e.detected_at,
            DetectionEvent::Bottleneck(e) => e.detected_at,
            DetectionEvent::Recovered(e) => e.detected_at,
            DetectionEvent::Trend(e) => e.detected_at,
            DetectionEvent::Exhaustion(e) => e.detected_at,
        }
    }
}

/// Which signal of an operation an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// Latency.
    Latency,
    /// The share of calls that failed.
    ErrorRatio,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Latency => "latency",
            Signal::ErrorRatio => "error ratio",
        })
    }
}

/// A value before and now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change<T> {
    /// Over the baseline window (before the step).
    pub baseline: T,
    /// Over the recent window.
    pub current: T,
}

/// An operation's latency rose in a step.
///
/// The test is on log latency, so [`ratio`](Self::ratio) is the ratio of geometric means, which
/// for log-normal latency is the ratio of medians. The p50 and p99 shown are the medians of the
/// per-second p50s and p99s of the baseline and of the seconds since the onset, read from the
/// histograms; the current figures of every step event describe the seconds since the onset.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LatencyStep {
    /// The operation.
    pub operation: OperationKey,
    /// Median latency before and now.
    pub p50: Change<Duration>,
    /// 99th percentile before and now.
    pub p99: Change<Duration>,
    /// Mean latency before and now.
    pub mean: Change<Duration>,
    /// How many times slower: the geometric mean since the onset over the baseline's (at least
    /// the configured minimum).
    pub ratio: f64,
    /// The test's p-value (one-sided); below the configured significance level split over the
    /// tick's tests.
    pub p_value: f64,
    /// When the step most likely began (start of the first second at the new level).
    pub onset: Instant,
    /// When it was detected.
    pub detected_at: Instant,
}

/// An operation's error ratio rose in a step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ErrorStep {
    /// The operation.
    pub operation: OperationKey,
    /// Share of calls that failed, before and now.
    pub error_ratio: Change<f64>,
    /// Failed calls in the recent window.
    pub errors: u64,
    /// Calls in the recent window.
    pub requests: u64,
    /// The test's p-value (one-sided).
    pub p_value: f64,
    /// When the step most likely began.
    pub onset: Instant,
    /// When it was detected.
    pub detected_at: Instant,
}

/// The dependency (or operation) responsible for a rise in latency or errors.
///
/// Raised when a dependency's latency or error ratio steps up, and when an end-to-end
/// operation's does: then the culprit is the dependency whose added time (or added errors) per
/// second explains at least half of the end-to-end rise, or else the end-to-end operation itself
/// (the time went into its own work).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Bottleneck {
    /// The culprit: the dependency's name (its label value, or the operation's name).
    pub dependency: Arc<str>,
    /// The culprit operation.
    pub operation: OperationKey,
    /// Whether latency or errors rose.
    pub cause: Signal,
    /// The culprit's share of the time spent in all dependencies (calls per second × mean
    /// latency, summed over the dependency's operations), 0 to 1.
    pub share_of_time: Change<f64>,
    /// The culprit's mean latency.
    pub mean: Change<Duration>,
    /// The culprit's error ratio.
    pub error_ratio: Change<f64>,
    /// How much the culprit's mean latency rose (zero if it did not).
    pub added_latency: Duration,
    /// The effect on the end-to-end operation, when one is configured.
    pub end_to_end: Option<EndToEnd>,
    /// When the rise most likely began.
    pub onset: Instant,
    /// When it was detected.
    pub detected_at: Instant,
}

/// How an end-to-end operation changed alongside a bottleneck.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EndToEnd {
    /// The end-to-end operation.
    pub operation: OperationKey,
    /// Its mean latency.
    pub mean: Change<Duration>,
    /// Its error ratio.
    pub error_ratio: Change<f64>,
    /// The share of the end-to-end rise the culprit accounts for: for latency, the culprit's
    /// added time per end-to-end call over the rise of the end-to-end mean; for errors, its added
    /// errors per second over the end-to-end's. About 1 when the culprit explains it all; above 1
    /// when calls to it overlap; `None` when the end-to-end signal did not rise.
    pub explained: Option<f64>,
}

/// A step's signal came back to within half the step's threshold of its level before the step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Recovered {
    /// The operation.
    pub operation: OperationKey,
    /// Which signal recovered.
    pub signal: Signal,
    /// When the step began.
    pub since: Instant,
    /// When the recovery most likely began.
    pub onset: Instant,
    /// When it was detected.
    pub detected_at: Instant,
}

/// An operation's latency or error ratio is drifting: a significant least-squares slope over the
/// 1-minute rollups, steep enough to matter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Trend {
    /// The operation.
    pub operation: OperationKey,
    /// Which signal drifts.
    pub signal: Signal,
    /// The fitted value at the start and at the end of the fitted span: median latency in
    /// seconds (geometric mean), or error ratio.
    pub fitted: Change<f64>,
    /// Change per hour at the fitted rate: relative for latency (the fitted slope of log latency
    /// per hour, so 0.5 means rising by half its value per hour), absolute for the error ratio
    /// (0.01 = one percentage point per hour).
    pub per_hour: f64,
    /// How much history the fit covers.
    pub span: Duration,
    /// Goodness of the linear fit, 0 to 1.
    pub r2: f64,
    /// The slope test's p-value.
    pub p_value: f64,
    /// When it was detected.
    pub detected_at: Instant,
}

/// A resource is forecast to run out within the watch's horizon.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Exhaustion {
    /// What runs out (`"pool orders"`, `"disk /var"`, `"certificate api.example.com"`).
    pub resource: String,
    /// What happens when it does (`"saturated"`, `"full"`, `"expires"`).
    pub outcome: String,
    /// The forecast.
    pub forecast: Forecast,
    /// When it was detected.
    pub detected_at: Instant,
}

/// `850 µs`, `10.2 ms`, `1.35 s`.
pub(crate) struct Latency(pub(crate) Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_secs_f64() * 1e6;
        if us < 1_000.0 {
            write!(f, "{us:.0} µs")
        } else if us < 1_000_000.0 {
            write!(f, "{:.1} ms", us / 1e3)
        } else {
            write!(f, "{:.2} s", us / 1e6)
        }
    }
}

/// A time to go, rounded to a unit a person reads at a glance: `~40 s`, `~12 min`, `~5 h`,
/// `~3 days`; without the `~` when the forecast is exact (a perfect line, as for a certificate).
pub(crate) struct Eta {
    pub(crate) eta: Duration,
    pub(crate) exact: bool,
}

impl fmt::Display for Eta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.eta.as_secs_f64();
        let (value, unit) = if s < 90.0 {
            (s, "s")
        } else if s < 90.0 * 60.0 {
            (s / 60.0, "min")
        } else if s < 48.0 * 3600.0 {
            (s / 3600.0, "h")
        } else {
            (s / 86_400.0, "days")
        };
        let tilde = if self.exact { "" } else { "~" };
        write!(f, "{tilde}{} {unit}", value.round())
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl fmt::Display for DetectionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectionEvent::LatencyStep(e) => e.fmt(f),
            DetectionEvent::ErrorStep(e) => e.fmt(f),
            DetectionEvent::Bottleneck(e) => e.fmt(f),
            DetectionEvent::Recovered(e) => e.fmt(f),
            DetectionEvent::Trend(e) => e.fmt(f),
            DetectionEvent::Exhaustion(e) => e.fmt(f),
        }
    }
}

impl fmt::Display for LatencyStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: latency step, p50 {} -> {}, p99 {} -> {} (x{:.2}, p={:.1e})",
            self.operation,
            Latency(self.p50.baseline),
            Latency(self.p50.current),
            Latency(self.p99.baseline),
            Latency(self.p99.current),
            self.ratio,
            self.p_value
        )
    }
}

impl fmt::Display for ErrorStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: error step, {} -> {} ({} of {} calls failed, p={:.1e})",
            self.operation,
            percent(self.error_ratio.baseline),
            percent(self.error_ratio.current),
            self.errors,
            self.requests,
            self.p_value
        )
    }
}

impl fmt::Display for Bottleneck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bottleneck: {} ({}), {} rose; mean {} -> {}, errors {} -> {}, {} of dependency time (was {})",
            self.dependency,
            self.operation,
            self.cause,
            Latency(self.mean.baseline),
            Latency(self.mean.current),
            percent(self.error_ratio.baseline),
            percent(self.error_ratio.current),
            percent(self.share_of_time.current),
            percent(self.share_of_time.baseline)
        )?;
        if let Some(e2e) = &self.end_to_end {
            write!(
                f,
                "; {} mean {} -> {}",
                e2e.operation,
                Latency(e2e.mean.baseline),
                Latency(e2e.mean.current)
            )?;
            if let Some(x) = e2e.explained {
                write!(f, ", {} of the rise explained", percent(x))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Recovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} recovered after {:.0?}",
            self.operation,
            self.signal,
            self.onset.saturating_duration_since(self.since)
        )
    }
}

impl fmt::Display for Trend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal {
            Signal::Latency => write!(
                f,
                "{}: latency trend, median {} -> {} over {:.0?} ({:+.0}%/h, r2={:.2})",
                self.operation,
                Latency(Duration::from_secs_f64(self.fitted.baseline.max(0.0))),
                Latency(Duration::from_secs_f64(self.fitted.current.max(0.0))),
                self.span,
                self.per_hour * 100.0,
                self.r2
            ),
            Signal::ErrorRatio => write!(
                f,
                "{}: error ratio trend, {} -> {} over {:.0?} ({:+.2} points/h, r2={:.2})",
                self.operation,
                percent(self.fitted.baseline),
                percent(self.fitted.current),
                self.span,
                self.per_hour * 100.0,
                self.r2
            ),
        }
    }
}

impl fmt::Display for Exhaustion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} in {}",
            self.resource,
            self.outcome,
            self.forecast.eta_text()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etas_read_at_a_glance() {
        let eta = |s: u64, exact| {
            Eta {
                eta: Duration::from_secs(s),
                exact,
            }
            .to_string()
        };
        assert_eq!(eta(40, false), "~40 s");
        assert_eq!(eta(12 * 60 + 10, false), "~12 min");
        assert_eq!(eta(5 * 3600, false), "~5 h");
        assert_eq!(eta(3 * 86_400 + 3600, false), "~3 days");
        assert_eq!(eta(9 * 86_400, true), "9 days");
        assert_eq!(Latency(Duration::from_micros(850)).to_string(), "850 µs");
        assert_eq!(
            Latency(Duration::from_micros(10_240)).to_string(),
            "10.2 ms"
        );
        assert_eq!(Latency(Duration::from_millis(1_350)).to_string(), "1.35 s");
    }
}
