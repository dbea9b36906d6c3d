//! A counting global allocator: how many allocations a service makes and how many bytes, so
//! allocation churn shows up next to latency.
//!
//! [`CountingAllocator`] wraps another allocator (the system's by default) and counts with
//! relaxed atomic additions; [`AllocCollector`] exports the counts; [`AllocStats`] reads them
//! in-process, and two of them give rates per second.

use crate::Labels;
use crate::snapshot::{Collector, MetricKind, MetricsWriter, Unit, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// Counters are spread over this many stripes, each on its own cache lines, so threads that
/// allocate at once do not all contend for one line.
const STRIPES: usize = 16;

// 128 bytes: x86 prefetches cache lines in pairs, so 64-byte alignment still shares.
#[repr(align(128))]
struct Stripe {
    allocations: AtomicU64,
    deallocations: AtomicU64,
    reallocations: AtomicU64,
    allocated: AtomicU64,
    freed: AtomicU64,
}

impl Stripe {
    const fn new() -> Self {
        Stripe {
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            reallocations: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
            freed: AtomicU64::new(0),
        }
    }
}

/// A [`GlobalAlloc`] that forwards every call to `A` (the system allocator by default) and counts
/// allocations, deallocations, reallocations and their bytes. Install it with
/// `#[global_allocator]`, then register an [`AllocCollector`] over it.
///
/// Counting costs a few relaxed atomic additions per call, spread over stripes picked by the
/// calling thread's stack address, so no thread-local storage, lock or allocation is involved.
///
/// ```
/// use rampart_telemetry::{AllocCollector, CountingAllocator, Telemetry, Value};
/// use std::alloc::System;
///
/// #[global_allocator]
/// static ALLOC: CountingAllocator = CountingAllocator::new(System);
///
/// fn main() {
///     let telemetry = Telemetry::new();
///     telemetry.register_collector(AllocCollector::new(&ALLOC));
///     let before = ALLOC.stats();
///     let boxes: Vec<Box<u64>> = (0..100).map(Box::new).collect();
///     let grown = ALLOC.stats().since(&before);
///     assert!(grown.allocations >= 100);
///     drop(boxes);
///     let snapshot = telemetry.snapshot();
///     assert!(matches!(
///         snapshot.value("rampart_alloc_allocations", &[]),
///         Some(Value::Counter(n)) if *n >= 100.0
///     ));
/// }
/// ```
pub struct CountingAllocator<A = System> {
    inner: A,
    stripes: [Stripe; STRIPES],
}

impl<A> fmt::Debug for CountingAllocator<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingAllocator")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<A> CountingAllocator<A> {
    /// Counts what goes through `inner`.
    pub const fn new(inner: A) -> Self {
        CountingAllocator {
            inner,
            stripes: [const { Stripe::new() }; STRIPES],
        }
    }

    /// The allocator counted.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The counts so far.
    pub fn stats(&self) -> AllocStats {
        let sum = |f: fn(&Stripe) -> &AtomicU64| {
            self.stripes
                .iter()
                .fold(0u64, |acc, s| acc.wrapping_add(f(s).load(Relaxed)))
        };
        // Frees are read before allocations, so a free racing with the read is less likely to be
        // counted without its allocation.
        let freed_bytes = sum(|s| &s.freed);
        let deallocations = sum(|s| &s.deallocations);
        AllocStats {
            at: Instant::now(),
            allocations: sum(|s| &s.allocations),
            deallocations,
            reallocations: sum(|s| &s.reallocations),
            allocated_bytes: sum(|s| &s.allocated),
            freed_bytes,
        }
    }

    #[inline]
    fn stripe(&self) -> &Stripe {
        // Threads' stacks lie far apart, so the bits of a stack address above 64 KiB tell threads
        // apart; a Fibonacci hash spreads them over the stripes.
        let marker = 0u8;
        let addr = std::ptr::from_ref(&marker).addr() as u64;
        let hash = (addr >> 16).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.stripes[(hash >> (64 - STRIPES.trailing_zeros())) as usize]
    }
}

#[allow(unsafe_code)]
// SAFETY: every method forwards to `inner` with the caller's arguments unchanged and returns what
// `inner` returned, so `inner`'s guarantees are ours; counting only adds to atomics, never
// allocates and cannot unwind.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on unchanged.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            let s = self.stripe();
            s.allocations.fetch_add(1, Relaxed);
            s.allocated.fetch_add(layout.size() as u64, Relaxed);
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract, passed on unchanged.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            let s = self.stripe();
            s.allocations.fetch_add(1, Relaxed);
            s.allocated.fetch_add(layout.size() as u64, Relaxed);
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let s = self.stripe();
        s.deallocations.fetch_add(1, Relaxed);
        s.freed.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract: `ptr` was allocated by
        // this allocator, so by `inner`, with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract: `ptr` was allocated by
        // this allocator, so by `inner`, with `layout`.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            let s = self.stripe();
            s.reallocations.fetch_add(1, Relaxed);
            s.allocated.fetch_add(new_size as u64, Relaxed);
            s.freed.fetch_add(layout.size() as u64, Relaxed);
        }
        new
    }
}

/// A [`CountingAllocator`]'s counts at one moment. A reallocation counts its new size as
/// allocated and its old size as freed, so `allocated_bytes - freed_bytes` is what is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocStats {
    /// When the counts were read.
    pub at: Instant,
    /// Allocations made (reallocations not included).
    pub allocations: u64,
    /// Deallocations made.
    pub deallocations: u64,
    /// Reallocations made (a `Vec` or `String` growing in place or moving).
    pub reallocations: u64,
    /// Bytes allocated, reallocations' new sizes included.
    pub allocated_bytes: u64,
    /// Bytes freed, reallocations' old sizes included.
    pub freed_bytes: u64,
}

impl AllocStats {
    /// Bytes allocated and not yet freed.
    pub fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }

    /// Allocations not yet freed.
    pub fn live_allocations(&self) -> u64 {
        self.allocations.saturating_sub(self.deallocations)
    }

    /// What happened between `earlier` and these counts.
    pub fn since(&self, earlier: &AllocStats) -> AllocDelta {
        AllocDelta {
            elapsed: self.at.saturating_duration_since(earlier.at),
            allocations: self.allocations.wrapping_sub(earlier.allocations),
            deallocations: self.deallocations.wrapping_sub(earlier.deallocations),
            reallocations: self.reallocations.wrapping_sub(earlier.reallocations),
            allocated_bytes: self.allocated_bytes.wrapping_sub(earlier.allocated_bytes),
            freed_bytes: self.freed_bytes.wrapping_sub(earlier.freed_bytes),
        }
    }
}

/// The difference of two [`AllocStats`]: what was allocated and freed in between, and how fast.
///
/// ```
/// use rampart_telemetry::{AllocDelta, AllocStats};
/// # fn show(before: AllocStats, after: AllocStats) {
/// let delta: AllocDelta = after.since(&before);
/// if let Some(rate) = delta.allocations_per_second() {
///     println!("{rate:.0} allocations/s, {:?} B/s", delta.allocated_bytes_per_second());
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocDelta {
    /// Time between the two reads.
    pub elapsed: Duration,
    /// Allocations made in between.
    pub allocations: u64,
    /// Deallocations made in between.
    pub deallocations: u64,
    /// Reallocations made in between.
    pub reallocations: u64,
    /// Bytes allocated in between.
    pub allocated_bytes: u64,
    /// Bytes freed in between.
    pub freed_bytes: u64,
}

impl AllocDelta {
    fn rate(&self, n: u64) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (secs > 0.0).then(|| n as f64 / secs)
    }

    /// Allocations per second; `None` if no time passed.
    pub fn allocations_per_second(&self) -> Option<f64> {
        self.rate(self.allocations)
    }

    /// Deallocations per second; `None` if no time passed.
    pub fn deallocations_per_second(&self) -> Option<f64> {
        self.rate(self.deallocations)
    }

    /// Bytes allocated per second; `None` if no time passed.
    pub fn allocated_bytes_per_second(&self) -> Option<f64> {
        self.rate(self.allocated_bytes)
    }

    /// Bytes freed per second; `None` if no time passed.
    pub fn freed_bytes_per_second(&self) -> Option<f64> {
        self.rate(self.freed_bytes)
    }
}

/// Exports a [`CountingAllocator`]'s counts: counters `rampart_alloc_allocations`,
/// `_deallocations`, `_reallocations`, `rampart_alloc_allocated` and `_freed` (bytes), gauges
/// `rampart_alloc_live` (bytes) and `rampart_alloc_live_allocations`. Rates per second come from
/// the counters (`rate()` in PromQL) or from [`AllocStats::since`].
///
/// See [`CountingAllocator`] for an example.
pub struct AllocCollector<A: 'static = System> {
    alloc: &'static CountingAllocator<A>,
}

impl<A> fmt::Debug for AllocCollector<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AllocCollector").field(self.alloc).finish()
    }
}

impl<A> AllocCollector<A> {
    /// A collector of `alloc`'s counts, normally the `static` installed as `#[global_allocator]`.
    pub fn new(alloc: &'static CountingAllocator<A>) -> Self {
        AllocCollector { alloc }
    }
}

impl<A: Sync> Collector for AllocCollector<A> {
    fn collect(&self, out: &mut MetricsWriter<'_>) {
        let s = self.alloc.stats();
        let bytes = || Some(Unit::Bytes);
        for (name, help, kind, unit, v) in [
            (
                "rampart_alloc_allocations",
                "Heap allocations made (reallocations not included).",
                MetricKind::Counter,
                None,
                s.allocations,
            ),
            (
                "rampart_alloc_deallocations",
                "Heap deallocations made.",
                MetricKind::Counter,
                None,
                s.deallocations,
            ),
            (
                "rampart_alloc_reallocations",
                "Heap reallocations made.",
                MetricKind::Counter,
                None,
                s.reallocations,
            ),
            (
                "rampart_alloc_allocated",
                "Heap bytes allocated, reallocations' new sizes included.",
                MetricKind::Counter,
                bytes(),
                s.allocated_bytes,
            ),
            (
                "rampart_alloc_freed",
                "Heap bytes freed, reallocations' old sizes included.",
                MetricKind::Counter,
                bytes(),
                s.freed_bytes,
            ),
            (
                "rampart_alloc_live",
                "Heap bytes allocated and not yet freed.",
                MetricKind::Gauge,
                bytes(),
                s.live_bytes(),
            ),
            (
                "rampart_alloc_live_allocations",
                "Heap allocations not yet freed.",
                MetricKind::Gauge,
                None,
                s.live_allocations(),
            ),
        ] {
            let value = match kind {
                MetricKind::Gauge => Value::Gauge(v as f64),
                _ => Value::Counter(v as f64),
            };
            out.family(name, help, kind, unit)
                .series(Labels::new(), value);
        }
    }
}
