//! Sliding windows of recent outcomes, lock-free.
//!
//! The count window keeps the last N outcomes in a ring of one-byte slots. Its aggregate counters
//! change only by the difference between the byte a writer swapped out and the byte it swapped in, so
//! they equal the sum over the slots whenever no writer is mid-way, whatever the interleaving, and a
//! reset (which swaps every slot to empty the same way) can race with writers without corrupting them.
//! A writer whose outcome equals the slot's current byte writes nothing: a healthy breaker's hot path
//! is one `fetch_add` and one load.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// A value alone on its cache line (128 bytes: two lines, as adjacent-line prefetch pairs them).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(super) struct Padded<T>(pub(super) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a window holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Counts {
    pub(super) calls: u32,
    pub(super) failed: u32,
    pub(super) slow: u32,
}

impl Counts {
    pub(super) fn failure_rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            f64::from(self.failed) / f64::from(self.calls)
        }
    }
    pub(super) fn slow_rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            f64::from(self.slow) / f64::from(self.calls)
        }
    }
}

fn outcome_byte(failed: bool, slow: bool) -> u8 {
    PRESENT | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 }
}

/// Reads a wrapping counter that may be transiently "negative" while writers race.
fn read_counter(c: &AtomicU32) -> u32 {
    let v = c.load(Ordering::Relaxed) as i32;
    v.max(0) as u32
}

fn apply_bit(counter: &AtomicU32, bit: u8, old: u8, new: u8) {
    match (old & bit != 0, new & bit != 0) {
        (false, true) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// The last `size` outcomes.
pub(super) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// `u64::MAX / size + 1`, for Lemire's fast modulo of a 32-bit cursor.
    fastmod_m: u64,
    size: u32,
    /// Written by every call: on a cache line of its own.
    cursor: Padded<AtomicU64>,
    calls: AtomicU32,
    failed: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    pub(super) fn new(size: u32) -> CountWindow {
        let size = size.max(1);
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            fastmod_m: (u64::MAX / u64::from(size)).wrapping_add(1),
            size,
            cursor: Padded(AtomicU64::new(0)),
            calls: AtomicU32::new(0),
            failed: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    /// `a % size` without a division (Lemire, "Faster Remainder by Direct Computation", 2019).
    #[inline]
    fn slot_index(&self, a: u32) -> usize {
        let low = self.fastmod_m.wrapping_mul(u64::from(a));
        ((u128::from(low) * u128::from(self.size)) >> 64) as usize
    }

    /// Records one outcome. Returns whether the rates may have risen: the outcome failed or was
    /// slow, or it filled an empty slot (the window is still filling, so `minimum_calls` may just
    /// have been reached).
    #[inline]
    pub(super) fn record(&self, failed: bool, slow: bool) -> bool {
        let new = outcome_byte(failed, slow);
        // The cursor's low 32 bits pick the slot; at 2^32 the ring restarts at slot 0, which only
        // changes which old outcome is overwritten first.
        let at = self.slot_index(self.cursor.fetch_add(1, Ordering::Relaxed) as u32);
        let Some(slot) = self.slots.get(at) else {
            return false;
        };
        if slot.load(Ordering::Relaxed) == new {
            return failed || slow;
        }
        let old = slot.swap(new, Ordering::Relaxed);
        self.apply(old, new);
        failed || slow || old & PRESENT == 0
    }

    fn apply(&self, old: u8, new: u8) {
        apply_bit(&self.calls, PRESENT, old, new);
        apply_bit(&self.failed, FAILED, old, new);
        apply_bit(&self.slow, SLOW, old, new);
    }

    /// Outcomes recorded since the window was built.
    pub(super) fn recorded(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }

    pub(super) fn counts(&self) -> Counts {
        Counts {
            calls: read_counter(&self.calls).min(self.size),
            failed: read_counter(&self.failed).min(self.size),
            slow: read_counter(&self.slow).min(self.size),
        }
    }

    pub(super) fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::Relaxed);
            self.apply(old, 0);
        }
    }
}

struct Bucket {
    epoch: AtomicU64,
    calls: AtomicU32,
    failed: AtomicU32,
    slow: AtomicU32,
}

const NO_EPOCH: u64 = u64::MAX;

/// The outcomes of the last `duration`, in buckets.
///
/// Under races at a bucket boundary a handful of outcomes recorded just as the bucket is recycled
/// can be lost; the window is exact when writers do not race a rollover.
pub(super) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    base: Instant,
}

impl TimeWindow {
    pub(super) fn new(duration: Duration, base: Instant) -> TimeWindow {
        let secs = duration.as_secs().max(1);
        let (count, bucket_nanos) = if secs <= 120 {
            (secs, 1_000_000_000)
        } else {
            (120, (duration.as_nanos() / 120) as u64)
        };
        TimeWindow {
            buckets: (0..count)
                .map(|_| Bucket {
                    epoch: AtomicU64::new(NO_EPOCH),
                    calls: AtomicU32::new(0),
                    failed: AtomicU32::new(0),
                    slow: AtomicU32::new(0),
                })
                .collect(),
            bucket_nanos: bucket_nanos.max(1),
            base,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.base).as_nanos() as u64) / self.bucket_nanos
    }

    pub(super) fn record(&self, now: Instant, failed: bool, slow: bool) {
        let epoch = self.epoch(now);
        let n = self.buckets.len() as u64;
        let Some(b) = self.buckets.get((epoch % n) as usize) else {
            return;
        };
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.calls.store(0, Ordering::Relaxed);
            b.failed.store(0, Ordering::Relaxed);
            b.slow.store(0, Ordering::Relaxed);
        }
        b.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            b.failed.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            b.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn counts(&self, now: Instant) -> Counts {
        let epoch = self.epoch(now);
        let n = self.buckets.len() as u64;
        let mut c = Counts::default();
        for b in self.buckets.iter() {
            let e = b.epoch.load(Ordering::Acquire);
            if e != NO_EPOCH && e <= epoch && epoch - e < n {
                c.calls = c.calls.saturating_add(b.calls.load(Ordering::Relaxed));
                c.failed = c.failed.saturating_add(b.failed.load(Ordering::Relaxed));
                c.slow = c.slow.saturating_add(b.slow.load(Ordering::Relaxed));
            }
        }
        c
    }

    pub(super) fn reset(&self) {
        for b in self.buckets.iter() {
            b.epoch.store(NO_EPOCH, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The window's counts equal a model that keeps the last `size` outcomes.
        #[test]
        fn count_window_matches_a_model(size in 1u32..50, outcomes in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300)) {
            let w = CountWindow::new(size);
            let mut model: std::collections::VecDeque<(bool, bool)> = Default::default();
            for (f, s) in outcomes {
                w.record(f, s);
                model.push_back((f, s));
                if model.len() > size as usize {
                    model.pop_front();
                }
                let c = w.counts();
                prop_assert_eq!(c.calls as usize, model.len());
                prop_assert_eq!(c.failed as usize, model.iter().filter(|o| o.0).count());
                prop_assert_eq!(c.slow as usize, model.iter().filter(|o| o.1).count());
            }
            w.reset();
            prop_assert_eq!(w.counts(), Counts::default());
        }

        #[test]
        fn fast_modulo_equals_remainder(size in 1u32..=100_000, a: u32) {
            let w = CountWindow::new(size);
            prop_assert_eq!(w.slot_index(a), (a % size) as usize);
        }

        /// A time window holds exactly the outcomes of the buckets that overlap the last `secs`.
        #[test]
        fn time_window_forgets_old_buckets(secs in 1u64..30, steps in proptest::collection::vec((0u64..3_000, any::<bool>()), 1..200)) {
            let base = Instant::now();
            let w = TimeWindow::new(Duration::from_secs(secs), base);
            let mut now_ms = 0u64;
            let mut log: Vec<(u64, bool)> = Vec::new();
            for (advance, failed) in steps {
                now_ms += advance;
                let now = base + Duration::from_millis(now_ms);
                w.record(now, failed, false);
                log.push((now_ms / 1000, failed));
                let epoch = now_ms / 1000;
                let expect: Vec<_> = log.iter().filter(|(e, _)| epoch - e < secs).collect();
                let c = w.counts(now);
                prop_assert_eq!(c.calls as usize, expect.len());
                prop_assert_eq!(c.failed as usize, expect.iter().filter(|(_, f)| *f).count());
            }
        }
    }

    #[test]
    fn count_window_stays_consistent_under_concurrent_writers_and_resets() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        w.record((i + t) % 3 == 0, i % 5 == 0);
                        if t == 0 && i % 1000 == 0 {
                            w.reset();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Quiescent: the counters must equal the sum over the slots exactly.
        let mut expect = Counts::default();
        for s in w.slots.iter() {
            let b = s.load(Ordering::Relaxed);
            expect.calls += u32::from(b & PRESENT != 0);
            expect.failed += u32::from(b & FAILED != 0);
            expect.slow += u32::from(b & SLOW != 0);
        }
        assert_eq!(w.counts(), expect);
        assert_eq!(w.calls.load(Ordering::Relaxed), expect.calls);
    }
}
