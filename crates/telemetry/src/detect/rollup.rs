//! Rollups: 1-minute and 1-hour summaries of an operation or a gauge, in bounded rings.
//!
//! An operation's rollup keeps the open minute and the open hour as histograms (so each closed
//! bucket has a true p50 and p99), and only a small summary per closed bucket: by default 60
//! minutes and 48 hours, a few kilobytes per operation however long it runs.

use crate::histogram::Interval;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How many closed buckets a rollup keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupConfig {
    /// 1-minute buckets kept. Default 60 (the last hour); at least the trend window.
    pub minutes: usize,
    /// 1-hour buckets kept. Default 48 (the last two days).
    pub hours: usize,
}

impl Default for RollupConfig {
    fn default() -> Self {
        RollupConfig {
            minutes: 60,
            hours: 48,
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3_600);

/// What can be summed into a bucket and summarised when it closes.
pub(crate) trait Accumulator: Default {
    /// The summary of a closed bucket.
    type Bucket;
    fn absorb(&mut self, other: &Self);
    fn finish(&self, start: Instant, end: Instant) -> Self::Bucket;
}

struct Open<A> {
    index: u64,
    start: Instant,
    end: Instant,
    acc: A,
}

/// Buckets of one length, aligned on `origin`, the newest `capacity` kept once closed.
pub(crate) struct Tier<A: Accumulator> {
    length: Duration,
    capacity: usize,
    closed: VecDeque<A::Bucket>,
    open: Option<Open<A>>,
}

impl<A: Accumulator> std::fmt::Debug for Tier<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("length", &self.length)
            .field("closed", &self.closed.len())
            .finish()
    }
}

impl<A: Accumulator> Tier<A> {
    pub(crate) fn new(length: Duration, capacity: usize) -> Self {
        Tier {
            length,
            capacity,
            closed: VecDeque::with_capacity(capacity),
            open: None,
        }
    }

    fn index(&self, origin: Instant, at: Instant) -> u64 {
        let since = at.saturating_duration_since(origin).as_micros();
        u64::try_from(since / self.length.as_micros().max(1)).unwrap_or(u64::MAX)
    }

    /// Closes the open bucket if `at` (the start of new data) falls in a later one; returns the
    /// closed bucket's start, end and accumulator.
    pub(crate) fn roll(&mut self, origin: Instant, at: Instant) -> Option<(Instant, Instant, A)> {
        let index = self.index(origin, at);
        if self.open.as_ref().is_none_or(|o| o.index == index) {
            return None;
        }
        let open = self.open.take()?;
        if self.closed.len() == self.capacity {
            self.closed.pop_front();
        }
        self.closed.push_back(open.acc.finish(open.start, open.end));
        Some((open.start, open.end, open.acc))
    }

    pub(crate) fn add(&mut self, origin: Instant, start: Instant, end: Instant, acc: &A) {
        let index = self.index(origin, start);
        let open = self.open.get_or_insert_with(|| Open {
            index,
            start,
            end,
            acc: A::default(),
        });
        open.end = end;
        open.acc.absorb(acc);
    }

    pub(crate) fn closed(&self) -> impl ExactSizeIterator<Item = &A::Bucket> + DoubleEndedIterator {
        self.closed.iter()
    }
}

/// A minute tier feeding an hour tier.
#[derive(Debug)]
pub(crate) struct TwoTiers<A: Accumulator> {
    origin: Option<Instant>,
    pub(crate) minutes: Tier<A>,
    pub(crate) hours: Tier<A>,
}

impl<A: Accumulator> TwoTiers<A> {
    pub(crate) fn new(config: &RollupConfig) -> Self {
        TwoTiers {
            origin: None,
            minutes: Tier::new(MINUTE, config.minutes),
            hours: Tier::new(HOUR, config.hours),
        }
    }

    /// Adds what happened from `start` to `end`; true if a minute closed.
    pub(crate) fn add(&mut self, start: Instant, end: Instant, acc: &A) -> bool {
        let origin = *self.origin.get_or_insert(start);
        let closed = self.minutes.roll(origin, start);
        let minute_closed = closed.is_some();
        if let Some((minute_start, minute_end, minute)) = closed {
            self.hours.add(origin, minute_start, minute_end, &minute);
        }
        self.hours.roll(origin, start);
        self.minutes.add(origin, start, end, acc);
        minute_closed
    }
}

/// One closed bucket of an operation's rollup.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RollupBucket {
    /// Its start.
    pub start: Instant,
    /// The end of the last tick in it.
    pub end: Instant,
    /// Calls completed.
    pub count: u64,
    /// Of which failed.
    pub errors: u64,
    /// Mean latency.
    pub mean: Option<Duration>,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// The highest latency (top of its histogram bucket).
    pub max: Option<Duration>,
    /// Mean of the natural log of latency in microseconds: the scale trends are fitted on.
    pub log_mean: Option<f64>,
}

impl RollupBucket {
    /// `errors / count`, 0 without calls.
    pub fn error_ratio(&self) -> f64 {
        if self.count > 0 {
            self.errors as f64 / self.count as f64
        } else {
            0.0
        }
    }

    /// Calls per second.
    pub fn rate(&self) -> f64 {
        let secs = self.end.saturating_duration_since(self.start).as_secs_f64();
        if secs > 0.0 {
            self.count as f64 / secs
        } else {
            0.0
        }
    }
}

impl Accumulator for Interval {
    type Bucket = RollupBucket;

    fn absorb(&mut self, other: &Self) {
        self.merge(other);
    }

    fn finish(&self, start: Instant, end: Instant) -> RollupBucket {
        let q = |q| self.quantile(q).map(Duration::from_micros);
        RollupBucket {
            start,
            end,
            count: self.count,
            errors: self.errors,
            mean: self.mean().map(|m| Duration::from_secs_f64(m / 1e6)),
            p50: q(0.5),
            p99: q(0.99),
            max: self.max().map(Duration::from_micros),
            log_mean: self.log_moments().map(|(m, _)| m),
        }
    }
}

/// An operation's 1-minute and 1-hour rollups. A [`Detector`](super::Detector) keeps one per
/// operation ([`Detector::rollup`](super::Detector::rollup)); it can also be fed directly.
///
/// ```
/// use rampart_telemetry::detect::{Rollup, RollupConfig};
/// use rampart_telemetry::Telemetry;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let telemetry = Telemetry::new();
/// let op = telemetry.operation("db.query");
/// let mut rollup = Rollup::new(&RollupConfig::default());
/// for _ in 0..61 {
///     op.record_ok(Duration::from_millis(5));
///     tokio::time::advance(Duration::from_secs(1)).await;
///     let report = telemetry.tick().expect("a second passed");
///     rollup.observe(&report.operations[0]);
/// }
/// let minute = rollup.minutes().next().expect("one minute closed");
/// assert_eq!(minute.count, 60);
/// assert!(minute.p50 >= Some(Duration::from_millis(5)));
/// # }
/// ```
#[derive(Debug)]
pub struct Rollup {
    tiers: TwoTiers<Interval>,
}

impl Rollup {
    /// An empty rollup keeping as many buckets as `config` says.
    pub fn new(config: &RollupConfig) -> Self {
        Rollup {
            tiers: TwoTiers::new(config),
        }
    }

    /// Adds one tick of the operation; returns true if a minute bucket closed.
    pub fn observe(&mut self, op: &crate::OperationInterval) -> bool {
        let start = op.end.checked_sub(op.length).unwrap_or(op.end);
        self.tiers.add(start, op.end, &op.interval)
    }

    /// Closed 1-minute buckets, oldest first.
    pub fn minutes(&self) -> impl ExactSizeIterator<Item = &RollupBucket> + DoubleEndedIterator {
        self.tiers.minutes.closed()
    }

    /// Closed 1-hour buckets, oldest first.
    pub fn hours(&self) -> impl ExactSizeIterator<Item = &RollupBucket> + DoubleEndedIterator {
        self.tiers.hours.closed()
    }

    /// Bytes held: the open minute and hour histograms plus the closed summaries.
    pub fn memory_bytes(&self) -> usize {
        let open =
            |t: &Tier<Interval>| t.open.as_ref().map_or(0, |o| o.acc.buckets.capacity() * 16);
        open(&self.tiers.minutes)
            + open(&self.tiers.hours)
            + (self.tiers.minutes.closed.capacity() + self.tiers.hours.closed.capacity())
                * std::mem::size_of::<RollupBucket>()
    }
}

/// One closed bucket of a gauge's rollup.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct GaugeBucket {
    /// Its start.
    pub start: Instant,
    /// Its last sample's time.
    pub end: Instant,
    /// How many samples.
    pub samples: u64,
    /// Their mean.
    pub mean: f64,
    /// The lowest.
    pub min: f64,
    /// The highest.
    pub max: f64,
    /// The last.
    pub last: f64,
}

/// Running sums of gauge samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GaugeAcc {
    samples: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
}

impl Default for GaugeAcc {
    fn default() -> Self {
        GaugeAcc {
            samples: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NAN,
        }
    }
}

impl GaugeAcc {
    pub(crate) fn one(value: f64) -> Self {
        GaugeAcc {
            samples: 1,
            sum: value,
            min: value,
            max: value,
            last: value,
        }
    }
}

impl Accumulator for GaugeAcc {
    type Bucket = GaugeBucket;

    fn absorb(&mut self, other: &Self) {
        self.samples += other.samples;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.last = other.last;
    }

    fn finish(&self, start: Instant, end: Instant) -> GaugeBucket {
        GaugeBucket {
            start,
            end,
            samples: self.samples,
            mean: if self.samples > 0 {
                self.sum / self.samples as f64
            } else {
                f64::NAN
            },
            min: self.min,
            max: self.max,
            last: self.last,
        }
    }
}

/// 1-minute and 1-hour rollups of a gauge (mean, min, max, last), for values sampled at any
/// pace: pool utilisation, disk usage, queue depth.
///
/// ```
/// use rampart_telemetry::detect::{GaugeRollup, RollupConfig};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let start = Instant::now();
/// let mut disk = GaugeRollup::new(&RollupConfig::default());
/// for s in 0..=120u32 {
///     disk.observe(start + Duration::from_secs(u64::from(s)), f64::from(s));
/// }
/// let minutes: Vec<_> = disk.minutes().collect();
/// assert_eq!(minutes.len(), 2);
/// assert_eq!((minutes[0].mean, minutes[0].max, minutes[1].min), (29.5, 59.0, 60.0));
/// ```
#[derive(Debug)]
pub struct GaugeRollup {
    tiers: TwoTiers<GaugeAcc>,
}

impl GaugeRollup {
    /// An empty rollup keeping as many buckets as `config` says.
    pub fn new(config: &RollupConfig) -> Self {
        GaugeRollup {
            tiers: TwoTiers::new(config),
        }
    }

    /// Adds a sample taken at `at` (samples come in time order; NaN is ignored).
    pub fn observe(&mut self, at: Instant, value: f64) {
        if !value.is_nan() {
            self.tiers.add(at, at, &GaugeAcc::one(value));
        }
    }

    /// Closed 1-minute buckets, oldest first.
    pub fn minutes(&self) -> impl ExactSizeIterator<Item = &GaugeBucket> + DoubleEndedIterator {
        self.tiers.minutes.closed()
    }

    /// Closed 1-hour buckets, oldest first.
    pub fn hours(&self) -> impl ExactSizeIterator<Item = &GaugeBucket> + DoubleEndedIterator {
        self.tiers.hours.closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_close_with_their_last_minute_and_rings_are_bounded() {
        let start = Instant::now();
        let mut g = GaugeRollup::new(&RollupConfig {
            minutes: 5,
            hours: 2,
        });
        // Three hours and one second of a sample per second, valued by the hour.
        for s in 0..=3 * 3_600u64 {
            g.observe(start + Duration::from_secs(s), (s / 3_600) as f64);
        }
        assert_eq!(g.minutes().len(), 5);
        let hours: Vec<_> = g.hours().collect();
        assert_eq!(
            hours.len(),
            2,
            "the third hour closed, the first was dropped"
        );
        assert_eq!((hours[0].mean, hours[1].mean), (1.0, 2.0));
        assert_eq!(hours[1].samples, 3_600);
        assert_eq!(hours[1].start, start + Duration::from_secs(2 * 3_600));
    }
}
