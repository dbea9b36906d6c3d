//! The dead man's switch: proof of life sent out on a schedule, so that someone else notices
//! when Rampart itself is dead, hung, or cut off.
//!
//! Two independent beats, each optional, both once per `interval`:
//!
//! - **ping**: a `GET` or `POST` to an external URL, healthchecks.io-style (the service expects a
//!   ping every period and alerts its own way when one is missing);
//! - **alert**: an always-firing `Watchdog` alert sent to an Alertmanager, where a route to a
//!   dead man's switch receiver (for example PagerDuty's or healthchecks' own) pages when the
//!   alert stops arriving. Alertmanager ends a firing alert it has not heard of for its
//!   `resolve_timeout` (5 minutes by default): keep `interval` well below that.
//!
//! A failed beat is retried with backoff (1 s, 2 s, 4 s, ... at most a quarter of the
//! interval), each attempt bounded by the timeout, until it succeeds, is rejected (4xx), or the
//! next interval begins. [`Watchdog::start`] returns a [`WatchdogHandle`]; dropping it stops the
//! switch.
//!
//! ```no_run
//! use rampart_monitor::alert::watchdog::{PingConfig, Watchdog};
//! use rampart_monitor::config::Secret;
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), rampart_monitor::alert::notify::BuildError> {
//! let handle = Watchdog::new(Duration::from_secs(60))
//!     .with_ping(PingConfig::new(Secret::new("https://hc-ping.com/your-uuid")))
//!     .with_alertmanager("http://127.0.0.1:9093")
//!     .start()?;
//! // ... run the daemon; `drop(handle)` stops the pings.
//! # drop(handle);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::Method;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::model::{AlertSnapshot, AlertStatus, Fingerprint, Labels, Notification, Severity};
use super::notify::{
    AlertmanagerConfig, AlertmanagerNotifier, BuildError, DEFAULT_TIMEOUT, Notifier, NotifyError,
};
use crate::config::{Secret, SecretSource, read_lenient};
use rampart_resilience::{ConfigError, serde_duration};
use serde::Deserialize;

/// The name of the always-firing alert (its `alertname` label), as Prometheus's own
/// `Watchdog` alert.
pub const WATCHDOG_ALERT: &str = "Watchdog";

/// The first retry delay; it doubles up to a quarter of the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How the ping is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PingMethod {
    /// `GET` (default).
    #[default]
    Get,
    /// `POST` with an empty body.
    Post,
}

/// The external URL pinged every interval.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PingConfig {
    /// The URL (a secret: ping URLs are bearer capabilities).
    pub url: Secret,
    /// `GET` or `POST`.
    pub method: PingMethod,
    /// How long one attempt may take (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl PingConfig {
    /// `GET url` with the default timeout.
    pub fn new(url: Secret) -> Self {
        PingConfig {
            url,
            method: PingMethod::Get,
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Sends with `method`.
    pub fn with_method(mut self, method: PingMethod) -> Self {
        self.method = method;
        self
    }
    /// Sets the timeout of one attempt.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A dead man's switch, configured and not yet started.
pub struct Watchdog {
    interval: Duration,
    ping: Option<PingConfig>,
    alert: Option<AlertTarget>,
    labels: Labels,
}

enum AlertTarget {
    Alertmanager(AlertmanagerConfig),
    Notifier(Arc<dyn Notifier>),
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("interval", &self.interval)
            .field("ping", &self.ping)
            .field("alert", &self.alert.is_some())
            .field("labels", &self.labels)
            .finish()
    }
}

impl Watchdog {
    /// A switch that beats every `interval` (nothing is sent until a ping or an alert is added).
    pub fn new(interval: Duration) -> Self {
        Watchdog {
            interval: interval.max(Duration::from_millis(1)),
            ping: None,
            alert: None,
            labels: Labels::new(),
        }
    }

    /// Pings `ping` every interval.
    pub fn with_ping(mut self, ping: PingConfig) -> Self {
        self.ping = Some(ping);
        self
    }

    /// Sends the `Watchdog` alert every interval to the Alertmanager at `url` (base URL).
    pub fn with_alertmanager(self, url: impl Into<String>) -> Self {
        self.with_alertmanager_config(AlertmanagerConfig::new(url))
    }

    /// Sends the `Watchdog` alert every interval to the Alertmanager configured by `config`.
    pub fn with_alertmanager_config(mut self, config: AlertmanagerConfig) -> Self {
        self.alert = Some(AlertTarget::Alertmanager(config));
        self
    }

    /// Sends the `Watchdog` alert every interval through `notifier` (any receiver).
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.alert = Some(AlertTarget::Notifier(notifier));
        self
    }

    /// Adds labels to the `Watchdog` alert (besides `alertname="Watchdog"` and
    /// `severity="info"`), for example to route it in Alertmanager.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Starts the switch on the current tokio runtime; the first beat goes out at once.
    pub fn start(self) -> Result<WatchdogHandle, BuildError> {
        let mut beats: Vec<Arc<dyn Beat>> = Vec::new();
        if let Some(ping) = &self.ping {
            beats.push(Arc::new(PingBeat::new(ping)?));
        }
        if let Some(target) = self.alert {
            let (notifier, timeout) = match target {
                AlertTarget::Alertmanager(config) => (
                    Arc::new(AlertmanagerNotifier::new("watchdog", &config)?) as Arc<dyn Notifier>,
                    config.timeout,
                ),
                AlertTarget::Notifier(n) => (n, DEFAULT_TIMEOUT),
            };
            let mut beat = AlertBeat::new(notifier, self.labels);
            // The notifier bounds its own attempts; this is a backstop.
            beat.timeout = timeout.saturating_mul(2);
            beats.push(Arc::new(beat));
        }
        Ok(run(self.interval, beats))
    }
}

/// What the switch has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchdogStatus {
    /// Intervals begun.
    pub rounds: u64,
    /// Beats (pings and alerts) that went through.
    pub delivered: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Beats given up on within their interval (rejected, or out of time).
    pub missed: u64,
    /// The last failure, with no secret in it.
    pub last_error: Option<String>,
}

/// A running dead man's switch; dropping it stops the switch.
#[derive(Debug)]
pub struct WatchdogHandle {
    task: JoinHandle<()>,
    status: watch::Receiver<WatchdogStatus>,
}

impl WatchdogHandle {
    /// What it has done so far.
    pub fn status(&self) -> WatchdogStatus {
        self.status.borrow().clone()
    }

    /// Waits until `condition` holds for the status (at once if it already does).
    pub async fn wait_for(&mut self, condition: impl FnMut(&WatchdogStatus) -> bool) {
        // An error means the task ended, which only dropping the handle does.
        let _ = self.status.wait_for(condition).await;
    }

    /// Stops the switch (as dropping the handle does).
    pub fn stop(self) {}
}

impl Drop for WatchdogHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BeatFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;

/// One kind of proof of life, sent once per attempt.
trait Beat: Send + Sync {
    fn beat(&self) -> BeatFuture<'_>;
    /// The bound on one attempt.
    fn timeout(&self) -> Duration;
}

struct PingBeat {
    url: Secret,
    method: Method,
    timeout: Duration,
    client: reqwest::Client,
}

impl PingBeat {
    fn new(config: &PingConfig) -> Result<Self, BuildError> {
        super::notify::http::check_url("ping.url", config.url.expose())?;
        Ok(PingBeat {
            url: config.url.clone(),
            method: match config.method {
                PingMethod::Get => Method::GET,
                PingMethod::Post => Method::POST,
            },
            timeout: config.timeout,
            client: super::notify::http::client(config.timeout)?,
        })
    }
}

impl Beat for PingBeat {
    fn beat(&self) -> BeatFuture<'_> {
        Box::pin(async move {
            let response = self
                .client
                .request(self.method.clone(), self.url.expose())
                .send()
                .await
                .map_err(|e| super::notify::http::transport_error("watchdog ping", e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            Err(super::notify::http::status_error(
                "watchdog ping",
                status,
                &headers,
                &body,
                DateTime::<Utc>::from(SystemTime::now()),
            ))
        })
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

struct AlertBeat {
    notifier: Arc<dyn Notifier>,
    labels: Labels,
    started: DateTime<Utc>,
    sent: std::sync::atomic::AtomicU64,
    timeout: Duration,
}

impl AlertBeat {
    fn new(notifier: Arc<dyn Notifier>, extra: Labels) -> Self {
        let mut labels = extra;
        labels.insert("alertname".into(), WATCHDOG_ALERT.into());
        labels.insert("severity".into(), Severity::Info.as_str().into());
        AlertBeat {
            notifier,
            labels,
            started: DateTime::<Utc>::from(SystemTime::now()),
            sent: std::sync::atomic::AtomicU64::new(0),
            timeout: DEFAULT_TIMEOUT.saturating_mul(2),
        }
    }

    fn notification(&self) -> Notification {
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut annotations = Labels::new();
        annotations.insert(
            "summary".into(),
            "Rampart is alive: this alert always fires; page when it stops".into(),
        );
        Notification {
            id: format!("watchdog-{}-{n}", self.started.timestamp_millis()),
            receiver: self.notifier.receiver().to_owned(),
            group_key: "watchdog".into(),
            group_labels: [("alertname".to_owned(), WATCHDOG_ALERT.to_owned())].into(),
            status: AlertStatus::Firing,
            alerts: vec![AlertSnapshot {
                fingerprint: Fingerprint::of(&self.labels),
                status: AlertStatus::Firing,
                rule: WATCHDOG_ALERT.into(),
                severity: Severity::Info,
                labels: self.labels.clone(),
                annotations,
                starts_at: self.started,
                ends_at: None,
                value: None,
                acknowledged: None,
            }],
            created_at: DateTime::<Utc>::from(SystemTime::now()),
            tier: 0,
            external_url: None,
        }
    }
}

impl Beat for AlertBeat {
    fn beat(&self) -> BeatFuture<'_> {
        Box::pin(async move {
            let notification = self.notification();
            self.notifier.send(&notification).await
        })
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn run(interval: Duration, beats: Vec<Arc<dyn Beat>>) -> WatchdogHandle {
    let (tx, rx) = watch::channel(WatchdogStatus::default());
    let tx = Arc::new(tx);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let start = ticks.tick().await;
            tx.send_modify(|s| s.rounds += 1);
            let deadline = start + interval;
            // Dropping the set (when the handle aborts this task) aborts the beats too.
            let mut round = JoinSet::new();
            for beat in &beats {
                let (beat, tx) = (Arc::clone(beat), Arc::clone(&tx));
                round.spawn(async move { beat_until(&*beat, deadline, interval, &tx).await });
            }
            while round.join_next().await.is_some() {}
        }
    });
    WatchdogHandle { task, status: rx }
}

/// Sends one beat, retrying until it goes through, is rejected, or `deadline` comes.
async fn beat_until(
    beat: &dyn Beat,
    deadline: Instant,
    interval: Duration,
    status: &watch::Sender<WatchdogStatus>,
) {
    let max_delay = (interval / 4).max(FIRST_RETRY);
    let mut delay = FIRST_RETRY;
    loop {
        let bound = beat
            .timeout()
            .min(deadline.saturating_duration_since(Instant::now()));
        let outcome = match tokio::time::timeout(bound, beat.beat()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(NotifyError::Unavailable {
                receiver: "watchdog".into(),
                message: "timed out".into(),
                retry_after: None,
                source: None,
            }),
        };
        let error = match outcome {
            Ok(()) => {
                status.send_modify(|s| s.delivered += 1);
                return;
            }
            Err(e) => e,
        };
        let retryable = error.is_retryable();
        let wait = error.retry_after().unwrap_or(delay).max(delay);
        status.send_modify(|s| {
            s.failed_attempts += 1;
            s.last_error = Some(error.to_string());
        });
        let next = Instant::now() + wait;
        if !retryable || next >= deadline {
            status.send_modify(|s| s.missed += 1);
            return;
        }
        tokio::time::sleep_until(next).await;
        delay = (delay * 2).min(max_delay);
    }
}

/// `[alerting.watchdog]` as configured: the interval, and the ping and/or the Alertmanager.
///
/// ```toml
/// [alerting.watchdog]
/// interval = "1m"                                             # default 1m
/// ping = { url_env = "HEALTHCHECKS_URL", method = "POST" }    # url, url_env or url_file; timeout
/// alertmanager = { url = "http://127.0.0.1:9093" }            # sends the Watchdog alert; timeout
/// labels = { env = "prod" }                                   # added to the Watchdog alert
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchdogConfig {
    /// How often to beat (default [`DEFAULT_INTERVAL`]).
    pub interval: Duration,
    /// The URL to ping, if any.
    pub ping: Option<PingConfig>,
    /// The Alertmanager to send the `Watchdog` alert to, if any.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Labels added to the `Watchdog` alert.
    pub labels: Labels,
}

/// The default beat interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

impl WatchdogConfig {
    /// Reads a `[alerting.watchdog]` table, reporting every problem under `path`.
    pub fn from_toml(path: &str, value: &toml::Value) -> Result<WatchdogConfig, ConfigError> {
        let mut errors = ConfigError::new(None);
        match watchdog(path, value, &mut errors) {
            Some(w) if errors.is_empty() => Ok(w),
            _ => Err(errors),
        }
    }

    /// The switch this configures (start it with [`Watchdog::start`]).
    pub fn watchdog(&self) -> Watchdog {
        let mut w = Watchdog::new(self.interval).with_labels(self.labels.clone());
        if let Some(ping) = &self.ping {
            w = w.with_ping(ping.clone());
        }
        if let Some(am) = &self.alertmanager {
            w = w.with_alertmanager_config(am.clone());
        }
        w
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    #[serde(default, with = "serde_duration::option")]
    interval: Option<Duration>,
    ping: Option<RawPing>,
    alertmanager: Option<RawAlertmanager>,
    #[serde(default)]
    labels: Labels,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPing {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<String>,
    method: Option<String>,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: String,
    #[serde(default, with = "serde_duration::option")]
    timeout: Option<Duration>,
}

/// Reads `[alerting.watchdog]` at `path`, reporting every problem under it.
pub(crate) fn watchdog(
    path: &str,
    value: &toml::Value,
    errors: &mut ConfigError,
) -> Option<WatchdogConfig> {
    let raw: RawWatchdog = read_lenient(path, value, errors)?;
    let before = errors.problems.len();
    let positive = |key: &str, d: Option<Duration>, errors: &mut ConfigError| match d {
        Some(d) if d.is_zero() => {
            errors.push(format!("{path}.{key}"), "must be more than 0s");
            None
        }
        d => d,
    };
    let interval = positive("interval", raw.interval, errors).unwrap_or(DEFAULT_INTERVAL);
    if raw.ping.is_none() && raw.alertmanager.is_none() {
        errors.push(path.to_owned(), "needs `ping`, `alertmanager` or both");
    }
    let ping = raw.ping.and_then(|p| {
        let at = format!("{path}.ping");
        let url = SecretSource {
            inline: p.url.as_deref(),
            env: p.url_env.as_deref(),
            file: p.url_file.as_deref(),
        }
        .read(&at, "url", errors);
        if let Some(u) = &url
            && super::notify::http::check_url("url", u.expose()).is_err()
        {
            errors.push(format!("{at}.url"), "must be an absolute http(s) URL");
        }
        let method = match p.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => PingMethod::Get,
            Some("POST") => PingMethod::Post,
            Some(other) => {
                errors.push(
                    format!("{at}.method"),
                    format!("must be \"GET\" or \"POST\", got {other:?}"),
                );
                PingMethod::Get
            }
        };
        let timeout = positive("ping.timeout", p.timeout, errors).unwrap_or(DEFAULT_TIMEOUT);
        Some(PingConfig {
            url: url?,
            method,
            timeout,
        })
    });
    let alertmanager = raw.alertmanager.map(|a| {
        if super::notify::http::check_url("url", &a.url).is_err() {
            errors.push(
                format!("{path}.alertmanager.url"),
                format!("must be an absolute http(s) URL, got {:?}", a.url),
            );
        }
        let timeout =
            positive("alertmanager.timeout", a.timeout, errors).unwrap_or(DEFAULT_TIMEOUT);
        AlertmanagerConfig::new(a.url).with_timeout(timeout)
    });
    if errors.problems.len() > before {
        return None;
    }
    Some(WatchdogConfig {
        interval,
        ping,
        alertmanager,
        labels: raw.labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails its first `failures` attempts (or hangs them when `hang`), then succeeds; records
    /// when each attempt began, relative to `origin`.
    struct FakeBeat {
        origin: Instant,
        failures: u32,
        hang: bool,
        reject: bool,
        attempts: Mutex<Vec<Duration>>,
    }

    impl FakeBeat {
        fn new(failures: u32) -> Arc<Self> {
            Arc::new(FakeBeat {
                origin: Instant::now(),
                failures,
                hang: false,
                reject: false,
                attempts: Mutex::new(Vec::new()),
            })
        }
        fn attempts(&self) -> Vec<u64> {
            self.attempts
                .lock()
                .unwrap()
                .iter()
                .map(|d| d.as_secs())
                .collect()
        }
    }

    impl Beat for FakeBeat {
        fn beat(&self) -> BeatFuture<'_> {
            Box::pin(async move {
                let n = {
                    let mut a = self.attempts.lock().unwrap();
                    a.push(self.origin.elapsed());
                    a.len() as u32
                };
                if self.reject {
                    return Err(NotifyError::Rejected {
                        receiver: "fake".into(),
                        message: "404".into(),
                    });
                }
                if n <= self.failures {
                    if self.hang {
                        std::future::pending::<()>().await;
                    }
                    return Err(NotifyError::Unavailable {
                        receiver: "fake".into(),
                        message: "down".into(),
                        retry_after: None,
                        source: None,
                    });
                }
                Ok(())
            })
        }
        fn timeout(&self) -> Duration {
            Duration::from_secs(5)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beats_once_per_interval() {
        let beat = FakeBeat::new(0);
        let mut handle = run(Duration::from_secs(60), vec![beat.clone()]);
        handle.wait_for(|s| s.delivered == 4).await;
        assert_eq!(beat.attempts(), vec![0, 60, 120, 180]);
        assert_eq!(handle.status().failed_attempts, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_within_the_interval() {
        let beat = FakeBeat::new(3);
        let mut handle = run(Duration::from_secs(60), vec![beat.clone()]);
        handle.wait_for(|s| s.delivered == 2).await;
        // 0 fails, +1 s, +2 s, +4 s succeeds; the next interval starts on schedule.
        assert_eq!(beat.attempts(), vec![0, 1, 3, 7, 60]);
        let status = handle.status();
        assert_eq!((status.failed_attempts, status.missed), (3, 0));
        assert!(status.last_error.unwrap().contains("down"));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_next_interval_and_hung_attempts_time_out() {
        let beat = Arc::new(FakeBeat {
            hang: true,
            ..Arc::into_inner(FakeBeat::new(1000)).unwrap()
        });
        let mut handle = run(Duration::from_secs(20), vec![beat.clone()]);
        handle.wait_for(|s| s.missed == 2).await;
        // Each attempt hangs until its 5 s timeout; delays 1, 2, 4 (capped at 20/4 = 5 s).
        // 0 → 5, +1 → 6 → 11, +2 → 13 → 18, +4 = 22 > 20: missed. Then 20 → 25, ...
        let attempts = beat.attempts();
        assert_eq!(&attempts[..4], &[0, 6, 13, 20], "{attempts:?}");
        assert!(handle.status().rounds >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_beats_are_not_retried_and_dropping_stops() {
        let beat = Arc::new(FakeBeat {
            reject: true,
            ..Arc::into_inner(FakeBeat::new(0)).unwrap()
        });
        let mut handle = run(Duration::from_secs(30), vec![beat.clone()]);
        handle.wait_for(|s| s.missed == 2).await;
        assert_eq!(beat.attempts(), vec![0, 30]);
        drop(handle);
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(beat.attempts().len(), 2, "stopped on drop");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_retries_in_flight() {
        let beat = FakeBeat::new(1000);
        let mut handle = run(Duration::from_secs(600), vec![beat.clone()]);
        handle.wait_for(|s| s.failed_attempts == 3).await;
        drop(handle);
        let before = beat.attempts().len();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(beat.attempts().len(), before);
    }

    #[test]
    fn the_watchdog_alert_always_fires_with_stable_identity() {
        #[derive(Debug)]
        struct Nop;
        impl Notifier for Nop {
            fn receiver(&self) -> &str {
                "am"
            }
            fn kind(&self) -> &'static str {
                "test"
            }
            fn send<'a>(&'a self, _: &'a Notification) -> super::super::notify::NotifyFuture<'a> {
                Box::pin(async { Ok(()) })
            }
        }
        let beat = AlertBeat::new(
            Arc::new(Nop),
            [("env".to_owned(), "prod".to_owned())].into(),
        );
        let (a, b) = (beat.notification(), beat.notification());
        assert_ne!(a.id, b.id);
        assert_eq!(a.alerts[0].fingerprint, b.alerts[0].fingerprint);
        assert_eq!(a.alerts[0].status, AlertStatus::Firing);
        assert_eq!(a.alerts[0].labels["alertname"], "Watchdog");
        assert_eq!(a.alerts[0].labels["env"], "prod");
        assert_eq!(a.title(), "[FIRING:1] Watchdog");
    }

    #[test]
    fn the_config_parses_and_reports_problems() {
        let value: toml::Value = toml::from_str(
            r#"interval = "30s"
               ping = { url = "https://hc.example/ping/abc", method = "post", timeout = "5s" }
               alertmanager = { url = "http://127.0.0.1:9093" }
               labels = { env = "prod" }"#,
        )
        .unwrap();
        let c = WatchdogConfig::from_toml("alerting.watchdog", &value).unwrap();
        assert_eq!(c.interval, Duration::from_secs(30));
        let ping = c.ping.as_ref().unwrap();
        assert_eq!(
            (ping.method, ping.timeout),
            (PingMethod::Post, Duration::from_secs(5))
        );
        assert_eq!(
            c.alertmanager.as_ref().unwrap().url,
            "http://127.0.0.1:9093"
        );
        assert_eq!(c.labels["env"], "prod");
        assert!(!format!("{c:?}").contains("abc"));

        let value: toml::Value = toml::from_str(
            r#"interval = "0s"
               ping = { url = "nope", method = "PUT" }
               alertmanager = { url = "x" }
               extra = 1"#,
        )
        .unwrap();
        let err = WatchdogConfig::from_toml("alerting.watchdog", &value)
            .unwrap_err()
            .to_string();
        for want in [
            "alerting.watchdog.extra",
            "alerting.watchdog.interval: must be more than 0s",
            "alerting.watchdog.ping.url: must be an absolute",
            "alerting.watchdog.ping.method",
            "alerting.watchdog.alertmanager.url",
        ] {
            assert!(err.contains(want), "{want} missing from {err}");
        }
        let err = WatchdogConfig::from_toml("w", &toml::from_str("interval = \"1m\"").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs `ping`, `alertmanager` or both"),
            "{err}"
        );
    }
}
