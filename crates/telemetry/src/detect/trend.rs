//! Trends: slow drifts of an operation's latency or error ratio, and forecasts of when a gauge
//! reaches a limit ("pool saturated in ~12 min", "disk full in ~3 days").
//!
//! Both fit an ordinary least-squares line and accept it only when its slope is significant (a
//! t-test on the slope) and steep enough to matter; a forecast also needs the line to explain
//! most of the variation (R²).

use super::event::{Change, DetectionEvent, Eta, Exhaustion, Signal, Trend};
use super::rollup::{GaugeAcc, RollupBucket, Tier};
use super::stats::LinearFit;
use super::{OperationKey, check_level, window_path};
use rampart_resilience::ConfigError;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// When a drift of an operation's latency or error ratio counts as a trend.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendConfig {
    /// The history fitted: the newest 1-minute rollups within it. Default 30 min; at most the
    /// rollup's minutes.
    pub window: Duration,
    /// The least history before fitting, at start and after each step. Default 10 min.
    pub min_span: Duration,
    /// The significance level per minute, split evenly over that minute's tests (two per
    /// operation). Default 1e-6.
    pub alpha: f64,
    /// The least latency growth that counts, as the ratio reached over one `window` at the
    /// fitted rate. Default 1.2 (+20 % per 30 min).
    pub min_latency_ratio: f64,
    /// The least error-ratio growth over one `window` at the fitted rate. Default 0.01.
    pub min_error_increase: f64,
    /// Quiet time after a trend is reported for one signal of one operation. Default 30 min.
    pub cooldown: Duration,
}

impl Default for TrendConfig {
    fn default() -> Self {
        TrendConfig {
            window: Duration::from_secs(30 * 60),
            min_span: Duration::from_secs(10 * 60),
            alpha: 1e-6,
            min_latency_ratio: 1.2,
            min_error_increase: 0.01,
            cooldown: Duration::from_secs(30 * 60),
        }
    }
}

impl TrendConfig {
    pub(crate) fn validate(&self, path: &str, rollup_minutes: usize, errors: &mut ConfigError) {
        let p = |field: &str| format!("{path}.{field}");
        let max = 60 * rollup_minutes as u64;
        window_path(errors, &p("window"), self.window, 300, max.max(300));
        window_path(errors, &p("min_span"), self.min_span, 180, max.max(180));
        if self.min_span > self.window {
            errors.push(
                p("min_span"),
                format!(
                    "must be at most window ({:?}), got {:?}",
                    self.window, self.min_span
                ),
            );
        }
        check_level(errors, &p("alpha"), self.alpha);
        if !(self.min_latency_ratio > 1.0 && self.min_latency_ratio.is_finite()) {
            errors.push(
                p("min_latency_ratio"),
                format!("must be above 1, got {}", self.min_latency_ratio),
            );
        }
        if !(self.min_error_increase > 0.0 && self.min_error_increase < 1.0) {
            errors.push(
                p("min_error_increase"),
                format!("must be in (0, 1), got {}", self.min_error_increase),
            );
        }
    }

    /// Fits the signal over the operation's closed minutes (newer than `floor`) and returns a
    /// trend event if the drift is significant at `alpha` and steep enough.
    pub(crate) fn evaluate<'a>(
        &self,
        key: &OperationKey,
        signal: Signal,
        minutes: impl DoubleEndedIterator<Item = &'a RollupBucket>,
        floor: Option<Instant>,
        alpha: f64,
        now: Instant,
    ) -> Option<DetectionEvent> {
        let since = now.checked_sub(self.window);
        let mut buckets: Vec<&RollupBucket> = minutes
            .rev()
            .take_while(|b| {
                since.is_none_or(|s| b.start >= s) && floor.is_none_or(|f| b.start >= f)
            })
            .filter(|b| b.count > 0)
            .collect();
        buckets.reverse();
        let (first, last) = (buckets.first()?, buckets.last()?);
        let span = last.end.saturating_duration_since(first.start);
        if buckets.len() < 5 || span < self.min_span {
            return None;
        }
        let t0 = first.start;
        let x = |b: &RollupBucket| {
            mid(b.start, b.end)
                .saturating_duration_since(t0)
                .as_secs_f64()
        };
        let y = |b: &RollupBucket| match signal {
            Signal::Latency => b.log_mean.unwrap_or(0.0),
            Signal::ErrorRatio => b.error_ratio(),
        };
        let fit = LinearFit::fit(buckets.iter().map(|b| (x(b), y(b))))?;
        let window = self.window.as_secs_f64();
        let steep = match signal {
            Signal::Latency => (fit.slope * window).exp() >= self.min_latency_ratio,
            Signal::ErrorRatio => fit.slope * window >= self.min_error_increase,
        };
        if !steep || fit.slope <= 0.0 || fit.p_value / 2.0 >= alpha {
            return None;
        }
        let (x0, x1) = (x(first), x(last));
        let (fitted, per_hour) = match signal {
            Signal::Latency => (
                Change {
                    baseline: fit.value_at(x0).exp() / 1e6,
                    current: fit.value_at(x1).exp() / 1e6,
                },
                fit.slope * 3_600.0,
            ),
            Signal::ErrorRatio => (
                Change {
                    baseline: fit.value_at(x0),
                    current: fit.value_at(x1),
                },
                fit.slope * 3_600.0,
            ),
        };
        Some(DetectionEvent::Trend(Trend {
            operation: key.clone(),
            signal,
            fitted,
            per_hour,
            span,
            r2: fit.r2,
            p_value: fit.p_value / 2.0,
            detected_at: now,
        }))
    }
}

fn mid(start: Instant, end: Instant) -> Instant {
    start + end.saturating_duration_since(start) / 2
}

/// The level a series is heading for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// A ceiling the value rises to (a pool's utilisation reaching 1.0, a disk's used bytes
    /// reaching its capacity).
    Rising(f64),
    /// A floor the value falls to (a certificate's days left reaching 0, free memory reaching 0).
    Falling(f64),
}

impl Limit {
    /// The limit's value.
    pub fn value(self) -> f64 {
        match self {
            Limit::Rising(v) | Limit::Falling(v) => v,
        }
    }
}

/// When a line fitted to a series is trusted for a forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastConfig {
    /// The least points fitted. Default 5.
    pub min_samples: usize,
    /// The slope's t-test must give a two-sided p-value below this. Default 0.01.
    pub alpha: f64,
    /// The line must explain at least this share of the variation (R²). Default 0.6.
    pub min_r2: f64,
    /// The samples must cover at least this much time: a series with a daily cycle needs a day,
    /// or the cycle's rising half reads as a trend. Default zero.
    pub min_span: Duration,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            min_samples: 5,
            alpha: 0.01,
            min_r2: 0.6,
            min_span: Duration::ZERO,
        }
    }
}

impl ForecastConfig {
    /// Checks the values and builds the forecaster.
    pub fn build(self) -> Result<Forecaster, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate("forecast", &mut errors);
        errors.into_result(Forecaster { config: self })
    }

    fn validate(&self, path: &str, errors: &mut ConfigError) {
        if self.min_samples < 3 {
            errors.push(
                format!("{path}.min_samples"),
                format!("must be at least 3, got {}", self.min_samples),
            );
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            errors.push(
                format!("{path}.alpha"),
                format!("must be in (0, 1], got {}", self.alpha),
            );
        }
        if !(0.0..=1.0).contains(&self.min_r2) {
            errors.push(
                format!("{path}.min_r2"),
                format!("must be between 0 and 1, got {}", self.min_r2),
            );
        }
    }
}

/// Fits a line to `(time, value)` samples and says when it reaches a limit.
///
/// ```
/// use rampart_telemetry::detect::{ForecastConfig, Limit};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let forecaster = ForecastConfig::default().build().expect("valid");
/// let t0 = Instant::now();
/// // A pool's utilisation, sampled every 10 s, rising 0.01 per 10 s from 0.40 to 0.64.
/// let samples = (0..25u32).map(|i| {
///     let wobble = if i % 2 == 0 { 0.005 } else { -0.005 };
///     (t0 + Duration::from_secs(10 * u64::from(i)), 0.40 + 0.01 * f64::from(i) + wobble)
/// });
/// let f = forecaster.forecast(samples, Limit::Rising(1.0)).expect("a clear rise");
/// assert!((f.eta.as_secs_f64() - 360.0).abs() < 1.0, "{:?}", f.eta); // 0.36 to go at 0.001/s
/// assert_eq!(f.eta_text(), "~6 min");
/// ```
#[derive(Debug, Clone)]
pub struct Forecaster {
    config: ForecastConfig,
}

impl Forecaster {
    /// The forecast for `samples` (in time order) reaching `limit`; `None` if there are too few,
    /// the line is not trusted, or it heads away from the limit.
    pub fn forecast(
        &self,
        samples: impl IntoIterator<Item = (Instant, f64)>,
        limit: Limit,
    ) -> Option<Forecast> {
        let samples: Vec<(Instant, f64)> = samples.into_iter().collect();
        let (t0, now) = (samples.first()?.0, samples.last()?.0);
        if samples.len() < self.config.min_samples
            || now.saturating_duration_since(t0) < self.config.min_span
        {
            return None;
        }
        let x = |t: Instant| t.saturating_duration_since(t0).as_secs_f64();
        let fit = LinearFit::fit(samples.iter().map(|&(t, v)| (x(t), v)))?;
        if fit.p_value > self.config.alpha || fit.r2 < self.config.min_r2 {
            return None;
        }
        let current = fit.value_at(x(now));
        let target = limit.value();
        let (toward, reached) = match limit {
            Limit::Rising(_) => (fit.slope > 0.0, current >= target),
            Limit::Falling(_) => (fit.slope < 0.0, current <= target),
        };
        if !toward {
            return None;
        }
        let eta = if reached {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64((target - current) / fit.slope).ok()?
        };
        Some(Forecast {
            eta,
            reaches_at: now.checked_add(eta)?,
            now,
            current,
            limit: target,
            slope_per_sec: fit.slope,
            r2: fit.r2,
            p_value: fit.p_value,
            samples: fit.n,
        })
    }
}

/// When a series is expected to reach its limit, and how sure the fit is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Forecast {
    /// Time from `now` until the limit is reached (zero if already there).
    pub eta: Duration,
    /// When the limit is reached.
    pub reaches_at: Instant,
    /// The newest sample's time, which the forecast counts from.
    pub now: Instant,
    /// The fitted value at `now`.
    pub current: f64,
    /// The limit.
    pub limit: f64,
    /// The fitted change per second.
    pub slope_per_sec: f64,
    /// How well the line fits, 0 to 1.
    pub r2: f64,
    /// The slope's two-sided p-value.
    pub p_value: f64,
    /// How many points were fitted.
    pub samples: usize,
}

impl Forecast {
    /// The time to go for people: `~12 min`, `~3 days`, or `9 days` when the line is exact.
    pub fn eta_text(&self) -> String {
        Eta {
            eta: self.eta,
            exact: self.r2 >= 1.0 - 1e-9,
        }
        .to_string()
    }
}

impl fmt::Display for Forecast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} reached in {} (now {:.3}, {:+.3e}/s, r2={:.2})",
            self.limit,
            self.eta_text(),
            self.current,
            self.slope_per_sec,
            self.r2
        )
    }
}

/// Which resource an [`ExhaustionWatch`] watches, and when it warns.
#[derive(Debug, Clone, PartialEq)]
pub struct ExhaustionConfig {
    /// What runs out, for messages (`"pool orders"`).
    pub resource: String,
    /// What happens when it does (`"saturated"`).
    pub outcome: String,
    /// The limit the samples head for.
    pub limit: Limit,
    /// Samples are averaged into buckets this long before fitting.
    pub resolution: Duration,
    /// How much history is fitted (at most 10,000 buckets).
    pub history: Duration,
    /// Warn when the limit is forecast within this.
    pub warn_within: Duration,
    /// When the fit is trusted.
    pub forecast: ForecastConfig,
}

impl ExhaustionConfig {
    /// A pool's utilisation (`in_use / max_size`) reaching 1.0: 10-second buckets, the last
    /// 30 minutes fitted, a warning when saturation is less than an hour away.
    pub fn pool_saturation(pool: &str) -> Self {
        ExhaustionConfig {
            resource: format!("pool {pool}"),
            outcome: "saturated".into(),
            limit: Limit::Rising(1.0),
            resolution: Duration::from_secs(10),
            history: Duration::from_secs(30 * 60),
            warn_within: Duration::from_secs(3_600),
            forecast: ForecastConfig::default(),
        }
    }

    /// A disk's used bytes reaching `capacity_bytes`: 10-minute buckets, the last 7 days fitted
    /// once a whole day is seen (so a daily cycle does not read as a trend), a warning when it is
    /// less than 7 days from full.
    pub fn disk_full(path: &str, capacity_bytes: f64) -> Self {
        ExhaustionConfig {
            resource: format!("disk {path}"),
            outcome: "full".into(),
            limit: Limit::Rising(capacity_bytes),
            resolution: Duration::from_secs(600),
            history: Duration::from_secs(7 * 86_400),
            warn_within: Duration::from_secs(7 * 86_400),
            forecast: ForecastConfig {
                min_span: Duration::from_secs(86_400),
                ..ForecastConfig::default()
            },
        }
    }

    /// A certificate's days left reaching 0: hourly buckets, the last 7 days fitted, a warning
    /// when it expires within 14 days. The line is exact, so three samples suffice.
    pub fn certificate_expiry(name: &str) -> Self {
        ExhaustionConfig {
            resource: format!("certificate {name}"),
            outcome: "expires".into(),
            limit: Limit::Falling(0.0),
            resolution: Duration::from_secs(3_600),
            history: Duration::from_secs(7 * 86_400),
            warn_within: Duration::from_secs(14 * 86_400),
            forecast: ForecastConfig {
                min_samples: 3,
                ..ForecastConfig::default()
            },
        }
    }

    /// Checks the values and builds the watch.
    pub fn build(self) -> Result<ExhaustionWatch, ConfigError> {
        let mut errors = ConfigError::new(None);
        if self.resolution.is_zero() {
            errors.push("resolution", "must be above zero");
        } else if self.history < self.resolution * 3 {
            errors.push(
                "history",
                format!(
                    "must hold at least 3 buckets of {:?}, got {:?}",
                    self.resolution, self.history
                ),
            );
        } else if self.history.as_secs_f64() / self.resolution.as_secs_f64() > 10_000.0 {
            errors.push(
                "history",
                format!(
                    "must hold at most 10000 buckets of {:?}, got {:?}",
                    self.resolution, self.history
                ),
            );
        }
        self.forecast.validate("forecast", &mut errors);
        let buckets = (self.history.as_secs_f64() / self.resolution.as_secs_f64().max(1e-9))
            .ceil()
            .clamp(3.0, 10_000.0) as usize;
        let forecaster = Forecaster {
            config: self.forecast.clone(),
        };
        let tier = Tier::new(self.resolution.max(Duration::from_nanos(1)), buckets);
        errors.into_result(ExhaustionWatch {
            config: self,
            forecaster,
            tier,
            origin: None,
            latest: None,
            warned: false,
        })
    }
}

/// Watches a gauge and reports, once, when it is forecast to reach its limit within the warning
/// horizon; it re-arms when the forecast moves well beyond the horizon (by a quarter) or goes
/// away.
///
/// ```
/// use rampart_telemetry::detect::{DetectionEvent, ExhaustionConfig};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let mut watch = ExhaustionConfig::pool_saturation("orders").build().expect("valid");
/// let t0 = Instant::now();
/// let mut warning = None;
/// for s in 0..=300u32 {
///     // 20 connections of 50 in use, one more every 20 s.
///     let in_use = 20.0 + f64::from(s / 20);
///     let at = t0 + Duration::from_secs(u64::from(s));
///     if let Some(event) = watch.observe(at, in_use / 50.0) {
///         warning.get_or_insert(event);
///     }
/// }
/// let Some(DetectionEvent::Exhaustion(e)) = warning else { panic!("no warning") };
/// // Warned after a minute of history; saturation really comes at 600 s.
/// let saturated = e.forecast.reaches_at.duration_since(t0).as_secs_f64();
/// assert!((saturated - 600.0).abs() < 90.0, "{saturated}");
/// assert_eq!(e.to_string(), "pool orders saturated in ~10 min");
/// ```
#[derive(Debug)]
pub struct ExhaustionWatch {
    config: ExhaustionConfig,
    forecaster: Forecaster,
    tier: Tier<GaugeAcc>,
    origin: Option<Instant>,
    latest: Option<Forecast>,
    warned: bool,
}

impl ExhaustionWatch {
    /// Adds a sample taken at `at` (in time order; NaN is ignored). When it closes a bucket the
    /// forecast is refreshed, and an [`Exhaustion`] event is returned if the limit has just come
    /// within the warning horizon.
    pub fn observe(&mut self, at: Instant, value: f64) -> Option<DetectionEvent> {
        if value.is_nan() {
            return None;
        }
        let origin = *self.origin.get_or_insert(at);
        let closed = self.tier.roll(origin, at).is_some();
        self.tier.add(origin, at, at, &GaugeAcc::one(value));
        if !closed {
            return None;
        }
        self.latest = self.forecaster.forecast(
            self.tier.closed().map(|b| (mid(b.start, b.end), b.mean)),
            self.config.limit,
        );
        let within = self.config.warn_within;
        match &self.latest {
            Some(f) if f.eta <= within && !self.warned => {
                self.warned = true;
                Some(DetectionEvent::Exhaustion(Exhaustion {
                    resource: self.config.resource.clone(),
                    outcome: self.config.outcome.clone(),
                    forecast: f.clone(),
                    detected_at: at,
                }))
            }
            Some(f) if f.eta <= within + within / 4 => None,
            _ => {
                self.warned = false;
                None
            }
        }
    }

    /// The latest forecast, if the fit is trusted and heads for the limit.
    pub fn forecast(&self) -> Option<&Forecast> {
        self.latest.as_ref()
    }

    /// What this watch watches.
    pub fn config(&self) -> &ExhaustionConfig {
        &self.config
    }
}
