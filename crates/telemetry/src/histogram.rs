//! Log-linear latency buckets (HDR-style), a lock-free sharded recorder, and interval histograms.
//!
//! Values are microseconds. Below 128 µs every value has its own bucket; above, each power of two
//! is split into 64 buckets, so a bucket is at most 1/64 (1.6 %) of its value wide and a reported
//! percentile is within 1.6 % above the true one. Values from 0 to 2³² − 1 µs (71 minutes) are
//! kept; longer ones are clamped to the top bucket. That is 1,728 buckets.
//!
//! Recording is one relaxed `fetch_add` on the bucket plus one on the sum, in a shard chosen per
//! thread, so threads recording the same operation do not share cache lines. Reading drains the
//! shards into a sparse [`Interval`] (only non-empty buckets), which is what windows keep.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const SUB_BUCKET_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS; // 128
const HALF: usize = SUB_BUCKETS / 2; // 64
/// The largest value kept exactly, in microseconds (about 71.6 minutes).
pub const MAX_MICROS: u64 = u32::MAX as u64;
/// How many buckets a histogram has.
pub const BUCKETS: usize = (32 - SUB_BUCKET_BITS as usize) * HALF + SUB_BUCKETS; // 1728

/// The bucket a value (microseconds) falls in.
#[inline]
pub fn bucket_index(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < SUB_BUCKETS as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= 7
    let shift = exp - (SUB_BUCKET_BITS - 1);
    (shift as usize) * HALF + (v >> shift) as usize
}

/// The lowest value (microseconds) that falls in bucket `index`.
#[inline]
pub fn bucket_low(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let shift = (index / HALF - 1) as u32;
    let m = (index % HALF + HALF) as u64;
    m << shift
}

/// The highest value (microseconds) that falls in bucket `index`.
#[inline]
pub fn bucket_high(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let shift = (index / HALF - 1) as u32;
    let m = (index % HALF + HALF) as u64;
    ((m + 1) << shift) - 1
}

/// A value's representative: the middle of its bucket, in microseconds.
#[inline]
pub fn bucket_mid(index: usize) -> f64 {
    (bucket_low(index) as f64 + bucket_high(index) as f64) / 2.0
}

/// Microseconds in `d`, saturating.
#[inline]
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One shard: a bucket array plus the sum of recorded values. Aligned to 128 bytes (two cache
/// lines, as adjacent-line prefetching pairs them) so that the sums of neighbouring shards,
/// written by different threads, never share a line.
#[repr(align(128))]
struct Shard {
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    errors: AtomicU64,
}

impl Shard {
    fn new() -> Self {
        Shard {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn thread_slot() -> usize {
    THREAD_SLOT.with(|slot| {
        let s = slot.get();
        if s != usize::MAX {
            return s;
        }
        let s = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
        slot.set(s);
        s
    })
}

/// The number of shards a recorder uses: the machine's parallelism rounded up to a power of two,
/// at most 64.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .next_power_of_two()
        .min(64)
}

/// A lock-free latency recorder: many threads record, one reader drains.
///
/// Shards are allocated the first time a thread mapped to them records, so an operation recorded
/// from one thread costs one shard (about 14 KiB).
pub struct AtomicHistogram {
    shards: Box<[OnceLock<Shard>]>,
    mask: usize,
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicHistogram")
            .field("shards", &self.shards.len())
            .field("allocated", &self.allocated_shards())
            .finish()
    }
}

impl AtomicHistogram {
    /// A recorder with `shards` shards (rounded up to a power of two, at least one).
    pub fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        AtomicHistogram {
            shards: (0..n).map(|_| OnceLock::new()).collect(),
            mask: n - 1,
        }
    }

    #[inline]
    fn shard(&self) -> &Shard {
        let i = thread_slot() & self.mask;
        // The index is masked to the slice's length, which is a power of two.
        let cell = &self.shards[i];
        cell.get_or_init(Shard::new)
    }

    /// Records one value in microseconds; `error` also counts it as failed.
    #[inline]
    pub fn record(&self, micros: u64, error: bool) {
        let shard = self.shard();
        shard.counts[bucket_index(micros)].fetch_add(1, Ordering::Relaxed);
        shard
            .sum
            .fetch_add(micros.min(MAX_MICROS), Ordering::Relaxed);
        if error {
            shard.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many shards have been allocated so far.
    pub fn allocated_shards(&self) -> usize {
        self.shards.iter().filter(|s| s.get().is_some()).count()
    }

    /// Takes everything recorded since the last drain into `into` (which is cleared first).
    /// Records that race with the drain land either in this interval or the next, never nowhere.
    pub fn drain_into(&self, into: &mut Interval, scratch: &mut Vec<u64>) {
        into.clear();
        scratch.clear();
        scratch.resize(BUCKETS, 0);
        let mut any = false;
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            for (i, c) in shard.counts.iter().enumerate() {
                if c.load(Ordering::Relaxed) != 0 {
                    scratch[i] += c.swap(0, Ordering::Relaxed);
                    any = true;
                }
            }
            into.sum += shard.sum.swap(0, Ordering::Relaxed);
            into.errors += shard.errors.swap(0, Ordering::Relaxed);
        }
        if any {
            for (i, &c) in scratch.iter().enumerate() {
                if c != 0 {
                    into.buckets.push((i as u16, c));
                    into.count += c;
                }
            }
        }
    }
}

impl AtomicHistogram {
    /// Copies what was recorded since the last drain into `into` (cleared first) without taking
    /// it: a live look at the current, unfinished interval.
    pub fn peek_into(&self, into: &mut Interval) {
        into.clear();
        let mut dense: Vec<u64> = Vec::new();
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            if dense.is_empty() {
                dense.resize(BUCKETS, 0);
            }
            for (i, c) in shard.counts.iter().enumerate() {
                dense[i] += c.load(Ordering::Relaxed);
            }
            into.sum += shard.sum.load(Ordering::Relaxed);
            into.errors += shard.errors.load(Ordering::Relaxed);
        }
        for (i, &c) in dense.iter().enumerate() {
            if c != 0 {
                into.buckets.push((i as u16, c));
                into.count += c;
            }
        }
    }
}

/// A sparse histogram of one interval: only the non-empty buckets, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interval {
    /// `(bucket index, count)`, ascending by index.
    pub buckets: Vec<(u16, u64)>,
    /// How many values.
    pub count: u64,
    /// How many of them were errors.
    pub errors: u64,
    /// Their sum in microseconds.
    pub sum: u64,
}

impl Interval {
    /// Empties it, keeping its allocation.
    pub fn clear(&mut self) {
        self.buckets.clear();
        self.count = 0;
        self.errors = 0;
        self.sum = 0;
    }

    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Interval) {
        self.count += other.count;
        self.errors += other.errors;
        self.sum = self.sum.saturating_add(other.sum);
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets.extend_from_slice(&other.buckets);
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, ca)), Some(&&(ib, cb))) => {
                    if ia == ib {
                        merged.push((ia, ca + cb));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        merged.push((ia, ca));
                        a.next();
                    } else {
                        merged.push((ib, cb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    merged.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    merged.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
    }

    /// The value at quantile `q` (0..=1) in microseconds: the highest value of the bucket that
    /// holds the `ceil(q * count)`-th value, so never below the true quantile. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for &(i, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(bucket_high(i as usize));
            }
        }
        self.buckets.last().map(|&(i, _)| bucket_high(i as usize))
    }

    /// The highest recorded value's bucket top, in microseconds.
    pub fn max(&self) -> Option<u64> {
        self.buckets.last().map(|&(i, _)| bucket_high(i as usize))
    }

    /// The mean in microseconds.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// The mean and variance of the natural logarithm of the values (microseconds, each taken at
    /// its bucket's middle, values below 1 µs taken as 1 µs). Latency is close to log-normal, so
    /// change-point tests work on this scale. `None` when empty.
    pub fn log_moments(&self) -> Option<(f64, f64)> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let mut s = 0.0;
        let mut s2 = 0.0;
        for &(i, c) in &self.buckets {
            let l = bucket_mid(i as usize).max(1.0).ln();
            s += l * c as f64;
            s2 += l * l * c as f64;
        }
        let mean = s / n;
        let var = (s2 / n - mean * mean).max(0.0);
        Some((mean, var))
    }

    /// How many values were at most `micros`, to within one bucket: exact when `micros` is a
    /// bucket's top; otherwise the bucket holding `micros` is counted if its middle is within the
    /// bound (the unbiased choice, since where values fall inside a bucket is not kept).
    pub fn count_at_most(&self, micros: u64) -> u64 {
        self.buckets
            .iter()
            .take_while(|&&(i, _)| {
                bucket_high(i as usize) <= micros || bucket_mid(i as usize) <= micros as f64
            })
            .map(|&(_, c)| c)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(127), 127);
        assert_eq!(bucket_index(128), 128);
        assert_eq!(bucket_index(MAX_MICROS), BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
        for i in 0..BUCKETS {
            assert_eq!(bucket_index(bucket_low(i)), i, "low of {i}");
            assert_eq!(bucket_index(bucket_high(i)), i, "high of {i}");
            if i + 1 < BUCKETS {
                assert_eq!(bucket_high(i) + 1, bucket_low(i + 1), "gap after {i}");
            }
            let width = (bucket_high(i) - bucket_low(i) + 1) as f64;
            assert!(width / bucket_low(i).max(1) as f64 <= 1.0 / 64.0 + 1e-9 || i < 128);
        }
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let h = AtomicHistogram::new(4);
        for v in 1..=10_000u64 {
            h.record(v, v % 10 == 0);
        }
        let mut iv = Interval::default();
        h.drain_into(&mut iv, &mut Vec::new());
        assert_eq!(iv.count, 10_000);
        assert_eq!(iv.errors, 1_000);
        assert_eq!(iv.sum, 10_000 * 10_001 / 2);
        for (q, exact) in [
            (0.5, 5_000.0),
            (0.9, 9_000.0),
            (0.99, 9_900.0),
            (0.999, 9_990.0),
        ] {
            let got = iv.quantile(q).unwrap_or_default() as f64;
            assert!(
                got >= exact && got <= exact * (1.0 + 1.0 / 64.0),
                "q{q}: {got}"
            );
        }
        // Drained: the next interval is empty.
        h.drain_into(&mut iv, &mut Vec::new());
        assert_eq!(iv.count, 0);
        assert_eq!(iv.quantile(0.5), None);
    }

    #[test]
    fn merge_adds_buckets() {
        let h = AtomicHistogram::new(1);
        let (mut a, mut b) = (Interval::default(), Interval::default());
        let mut scratch = Vec::new();
        for v in [5, 500, 50_000] {
            h.record(v, false);
        }
        h.drain_into(&mut a, &mut scratch);
        for v in [5, 7, 50_000, 9_000_000] {
            h.record(v, true);
        }
        h.drain_into(&mut b, &mut scratch);
        a.merge(&b);
        assert_eq!(a.count, 7);
        assert_eq!(a.errors, 4);
        assert_eq!(a.buckets.iter().map(|b| b.1).sum::<u64>(), 7);
        assert!(a.buckets.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(a.count_at_most(7), 3);
    }
}
