//! Recording: a lock-free recorder per request name, drained once a second into bounded rollups.
//!
//! Per request name the [`Recorder`] keeps two [`AtomicHistogram`]s from `rampart-telemetry`
//! (log-linear buckets in microseconds, within 1.6 %): the latency counted from when the request
//! was *meant* to be sent (coordinated-omission corrected) and the service time counted from when it
//! actually was. Microsecond buckets are fine enough for network latency, and reusing the
//! telemetry histogram keeps one bucket layout across Rampart. Errors are counted by
//! [`ErrorKind`]. Nothing is stored per request: memory is the same for a minute or a day.
//!
//! A [`Rollup`] drains the recorder every second: it adds the second into the run's totals, keeps
//! the last few seconds (as many as the longest threshold window) for sliding windows, and appends
//! one small [`SecondRow`] to the time series (86,400 rows for a day).
//!
//! ```
//! use std::time::Duration;
//! use rampart_load::record::{ErrorKind, Recorder, Rollup};
//!
//! let rec = Recorder::new(vec!["get".into()]);
//! rec.record(0, Duration::from_millis(12), Duration::from_millis(10), None);
//! rec.record(0, Duration::from_millis(30), Duration::from_millis(30), Some(ErrorKind::Http5xx));
//! let mut rollup = Rollup::new(&rec, 10);
//! let row = rollup.tick(&rec, Duration::from_secs(1), 1.0).clone();
//! assert_eq!((row.count, row.errors), (2, 1));
//! assert_eq!(rollup.total(Some(0)).latency.count, 2);
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rampart_telemetry::histogram::{AtomicHistogram, Interval, default_shards, micros};
use serde::{Deserialize, Serialize};

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection could not be made.
    Connect,
    /// No full response within the request timeout.
    Timeout,
    /// A 4xx status.
    Http4xx,
    /// A 5xx status.
    Http5xx,
    /// The connection broke or the response was malformed.
    Io,
    /// The database refused the query or command (an SQL error, a Redis error reply).
    Query,
    /// A value to extract for a later request was not in the response.
    Extract,
    /// Never sent: the open model's queue was full when it was due.
    Dropped,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Http4xx,
        ErrorKind::Http5xx,
        ErrorKind::Io,
        ErrorKind::Query,
        ErrorKind::Extract,
        ErrorKind::Dropped,
    ];

    /// Its name in reports: `connect`, `timeout`, `http_4xx`, `http_5xx`, `io`, `query`, `extract`,
    /// `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Io => "io",
            ErrorKind::Query => "query",
            ErrorKind::Extract => "extract",
            ErrorKind::Dropped => "dropped",
        }
    }

    fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

struct NameStats {
    latency: AtomicHistogram,
    service: AtomicHistogram,
    kinds: [AtomicU64; ErrorKind::ALL.len()],
}

/// The hot-path recorder shared by every connection and virtual user: per request name, two
/// histograms and error counters, all atomic.
pub struct Recorder {
    names: Vec<String>,
    stats: Vec<NameStats>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("names", &self.names)
            .finish()
    }
}

impl Recorder {
    /// A recorder for these request names (indexed in this order).
    pub fn new(names: Vec<String>) -> Self {
        let shards = default_shards();
        let stats = names
            .iter()
            .map(|_| NameStats {
                latency: AtomicHistogram::new(shards),
                service: AtomicHistogram::new(shards),
                kinds: Default::default(),
            })
            .collect();
        Recorder { names, stats }
    }

    /// The request names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Records one finished request of name index `req`: its latency from the intended send time,
    /// its service time from the actual send, and how it failed if it did.
    pub fn record(
        &self,
        req: usize,
        latency: Duration,
        service: Duration,
        error: Option<ErrorKind>,
    ) {
        let Some(s) = self.stats.get(req) else { return };
        s.latency.record(micros(latency), error.is_some());
        s.service.record(micros(service), error.is_some());
        if let Some(kind) = error {
            s.kinds[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a request that was never sent because the queue was full.
    pub fn record_dropped(&self, req: usize) {
        if let Some(s) = self.stats.get(req) {
            s.kinds[ErrorKind::Dropped.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors so far of name index `req`, by kind (never reset).
    pub fn errors_by_kind(&self, req: usize) -> Vec<(ErrorKind, u64)> {
        let Some(s) = self.stats.get(req) else {
            return Vec::new();
        };
        ErrorKind::ALL
            .iter()
            .map(|&k| (k, s.kinds[k.index()].load(Ordering::Relaxed)))
            .collect()
    }

    fn dropped_total(&self, req: usize) -> u64 {
        self.stats.get(req).map_or(0, |s| {
            s.kinds[ErrorKind::Dropped.index()].load(Ordering::Relaxed)
        })
    }
}

/// Latency, service time and drops over some span: a second, a sliding window or the whole run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Latency from the intended send time (µs buckets); `errors` counts failed requests.
    pub latency: Interval,
    /// Service time from the actual send.
    pub service: Interval,
    /// Requests never sent (queue full).
    pub dropped: u64,
    /// The span's length in seconds.
    pub seconds: f64,
}

impl Window {
    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Window) {
        self.latency.merge(&other.latency);
        self.service.merge(&other.service);
        self.dropped += other.dropped;
        self.seconds += other.seconds;
    }

    /// Failed plus dropped requests.
    pub fn errors(&self) -> u64 {
        self.latency.errors + self.dropped
    }

    /// Errors (dropped included) per request due; `None` if none was due.
    pub fn error_rate(&self) -> Option<f64> {
        let due = self.latency.count + self.dropped;
        (due > 0).then(|| self.errors() as f64 / due as f64)
    }

    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.latency.count as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// One second of the run, all request names together. Latencies in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondRow {
    /// Seconds from the start to the end of this row's interval.
    pub t: f64,
    /// Requests completed (failed ones included).
    pub count: u64,
    /// Requests failed or dropped.
    pub errors: u64,
    /// Requests dropped (never sent).
    pub dropped: u64,
    /// Median latency from the intended send time.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency from the intended send time.
    pub p99_ms: Option<f64>,
    /// 99th percentile service time.
    pub service_p99_ms: Option<f64>,
}

/// Microseconds to milliseconds for reports.
pub(crate) fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

/// The run's totals, recent seconds and time series, drained from a [`Recorder`] once a second.
#[derive(Debug)]
pub struct Rollup {
    totals: Vec<Window>,
    recent: Vec<VecDeque<Window>>,
    keep: usize,
    dropped_seen: Vec<u64>,
    series: Vec<SecondRow>,
    scratch: Vec<u64>,
}

impl Rollup {
    /// A rollup for `rec`'s names that keeps the last `keep` seconds for sliding windows.
    pub fn new(rec: &Recorder, keep: usize) -> Self {
        let n = rec.names().len();
        Rollup {
            totals: vec![Window::default(); n],
            recent: vec![VecDeque::new(); n],
            keep,
            dropped_seen: vec![0; n],
            series: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Drains everything recorded since the last tick as one interval of `length` seconds ending at
    /// `t` from the start, and returns its row of the time series.
    pub fn tick(&mut self, rec: &Recorder, t: Duration, length: f64) -> &SecondRow {
        let mut all = Window::default();
        for (i, s) in rec.stats.iter().enumerate() {
            let mut w = Window {
                seconds: length,
                ..Window::default()
            };
            s.latency.drain_into(&mut w.latency, &mut self.scratch);
            s.service.drain_into(&mut w.service, &mut self.scratch);
            let dropped = rec.dropped_total(i);
            w.dropped = dropped - self.dropped_seen[i];
            self.dropped_seen[i] = dropped;
            self.totals[i].merge(&w);
            all.merge(&w);
            if self.keep > 0 {
                if self.recent[i].len() == self.keep {
                    self.recent[i].pop_front();
                }
                self.recent[i].push_back(w);
            }
        }
        self.series.push(SecondRow {
            t: t.as_secs_f64(),
            count: all.latency.count,
            errors: all.errors(),
            dropped: all.dropped,
            p50_ms: ms(all.latency.quantile(0.5)),
            p99_ms: ms(all.latency.quantile(0.99)),
            service_p99_ms: ms(all.service.quantile(0.99)),
        });
        &self.series[self.series.len() - 1]
    }

    /// The whole run so far, of name index `req` or (`None`) of all names together.
    pub fn total(&self, req: Option<usize>) -> Window {
        match req {
            Some(i) => self.totals.get(i).cloned().unwrap_or_default(),
            None => merge_names(self.totals.iter()),
        }
    }

    /// The last `seconds` seconds (fewer early in the run), of one name or all.
    pub fn recent(&self, req: Option<usize>, seconds: usize) -> Window {
        let last = |q: &VecDeque<Window>| {
            let mut w = Window::default();
            for s in q.iter().rev().take(seconds) {
                w.merge(s);
            }
            w
        };
        match req {
            Some(i) => self.recent.get(i).map(last).unwrap_or_default(),
            None => {
                let names: Vec<Window> = self.recent.iter().map(last).collect();
                merge_names(names.iter())
            }
        }
    }

    /// How many seconds have been drained.
    pub fn ticks(&self) -> usize {
        self.series.len()
    }

    /// The time series so far.
    pub fn series(&self) -> &[SecondRow] {
        &self.series
    }

    /// Takes the time series out.
    pub fn into_series(self) -> Vec<SecondRow> {
        self.series
    }
}

/// Merges windows of different names over the same span (the span is not added up).
fn merge_names<'a>(mut names: impl Iterator<Item = &'a Window>) -> Window {
    let mut w = names.next().cloned().unwrap_or_default();
    for other in names {
        let seconds = w.seconds;
        w.merge(other);
        w.seconds = seconds;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_split_seconds_and_windows_slide() {
        let rec = Recorder::new(vec!["a".into(), "b".into()]);
        let mut r = Rollup::new(&rec, 3);
        for sec in 1..=5u64 {
            for _ in 0..sec {
                rec.record(
                    0,
                    Duration::from_millis(sec),
                    Duration::from_millis(1),
                    None,
                );
            }
            rec.record(
                1,
                Duration::from_millis(100),
                Duration::from_millis(100),
                Some(ErrorKind::Timeout),
            );
            if sec == 5 {
                rec.record_dropped(0);
            }
            let row = r.tick(&rec, Duration::from_secs(sec), 1.0);
            assert_eq!(row.count, sec + 1);
            assert_eq!(row.errors, 1 + u64::from(sec == 5));
        }
        assert_eq!(r.ticks(), 5);
        // Only as many seconds are kept per name as the longest window needs.
        assert!(r.recent.iter().all(|q| q.len() == 3));
        let total = r.total(None);
        assert_eq!(total.latency.count, 15 + 5);
        assert_eq!(total.dropped, 1);
        assert_eq!(total.seconds, 5.0);
        assert_eq!(r.total(Some(0)).rate(), 3.0);
        // The last 3 seconds of "a": 3 + 4 + 5 requests, p50 in the 4 ms bucket.
        let w = r.recent(Some(0), 3);
        assert_eq!((w.latency.count, w.seconds), (12, 3.0));
        let p50 = w.latency.quantile(0.5).unwrap();
        assert!((4_000..4_064).contains(&p50), "{p50}");
        let all = r.recent(None, 2);
        assert_eq!((all.latency.count, all.seconds), (9 + 2, 2.0));
        assert_eq!(all.error_rate(), Some(3.0 / 12.0));
        assert_eq!(rec.errors_by_kind(1)[1], (ErrorKind::Timeout, 5));
    }
}
