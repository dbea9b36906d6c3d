//! A retry budget: retries allowed as a fraction of recent requests, shared by many retry policies.
//!
//! As in Finagle's `RetryBudget`, Envoy's retry budgets and tower's `TpsBudget`: every original
//! request deposits, every retry withdraws, and a retry is allowed while the retries over the last
//! `window` stay within `min_retries_per_second * window + ratio * requests`. When a dependency
//! fails hard, retries then add at most `ratio` extra load instead of multiplying it.
//!
//! The window is a ring of ten time buckets of atomics (no lock): the counts of buckets older than
//! the window are reset lazily by the first writer that reaches them, so the window slides in steps
//! of a tenth of its length.

use crate::Name;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::timeout::validate_timeout;
use crate::{ConfigError, Event, Events, PolicyKind};

/// Settings of one retry budget, read from a `[retry_budget.NAME]` section and named by
/// `budget = "NAME"` in `[retry.*]` sections.
///
/// ```toml
/// [retry_budget.backend]
/// ratio = 0.2                  # default 0.2: retries may add 20% to the requests
/// min_retries_per_second = 10  # default 10: always allowed, so low traffic can still retry
/// window = "10s"               # default "10s"; between 1s and 1h
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per original request over the window. Default 0.2; between 0 and 1000
    /// (above 1 lets each request retry more than once on average, as Finagle allows).
    #[serde(default = "defaults::ratio")]
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic. Default 10.
    #[serde(default = "defaults::min_retries_per_second")]
    pub min_retries_per_second: u32,
    /// How far back requests and retries count. Default `"10s"`; between 1s and 1h.
    #[serde(with = "crate::duration::serde_duration", default = "defaults::window")]
    pub window: Duration,
}

mod defaults {
    use std::time::Duration;

    pub(super) fn ratio() -> f64 {
        0.2
    }
    pub(super) fn min_retries_per_second() -> u32 {
        10
    }
    pub(super) fn window() -> Duration {
        Duration::from_secs(10)
    }
}

/// The largest `ratio` a budget accepts.
const MAX_RATIO: f64 = 1000.0;
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(3600);

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: defaults::ratio(),
            min_retries_per_second: defaults::min_retries_per_second(),
            window: defaults::window(),
        }
    }
}

impl RetryBudgetConfig {
    /// Pushes every problem of this section into `errors`, each with its key path under `path`
    /// (for example `retry_budget.backend`).
    pub fn validate(&self, path: &str, errors: &mut ConfigError) {
        if !self.ratio.is_finite() {
            errors.push(
                format!("{path}.ratio"),
                format!("must be a finite number, got {}", self.ratio),
            );
        } else if !(0.0..=MAX_RATIO).contains(&self.ratio) {
            errors.push(
                format!("{path}.ratio"),
                format!("must be between 0 and {MAX_RATIO}, got {}", self.ratio),
            );
        }
        validate_timeout(
            &format!("{path}.window"),
            self.window,
            MIN_WINDOW,
            MAX_WINDOW,
            errors,
        );
    }

    /// Validates the section and builds the budget called `name`, emitting into `events`.
    pub fn build(&self, name: &str, events: &Events) -> Result<RetryBudget, ConfigError> {
        let mut errors = ConfigError::new(None);
        self.validate(name, &mut errors);
        errors.into_result(())?;
        let window_secs = self.window.as_secs_f64();
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                name: name.into(),
                events: events.clone(),
                start: Instant::now(),
                bucket_nanos: bucket_nanos(self.window),
                reserve: f64::from(self.min_retries_per_second) * window_secs,
                ratio: self.ratio,
                ring: Ring::default(),
                deposits: AtomicU64::new(0),
                withdrawals: AtomicU64::new(0),
                rejections: AtomicU64::new(0),
            }),
        })
    }
}

/// Counters of one retry budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetryBudgetStats {
    /// Original requests deposited since the budget was built.
    pub deposits: u64,
    /// Retries allowed since the budget was built.
    pub withdrawals: u64,
    /// Retries refused since the budget was built.
    pub rejections: u64,
    /// Retries the budget would allow right now.
    pub available: u64,
}

/// A budget of retries shared by every [`Retry`](super::Retry) it is attached to. Cheap to clone;
/// clones share the budget. Lock-free.
///
/// ```
/// use rampart_resilience::Events;
/// use rampart_resilience::retry::RetryBudgetConfig;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), rampart_resilience::ConfigError> {
/// let config = RetryBudgetConfig { ratio: 0.5, min_retries_per_second: 0, ..Default::default() };
/// let budget = config.build("backend", &Events::new())?;
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.try_withdraw()); // 1 retry <= 0.5 * 2 requests
/// assert!(!budget.try_withdraw());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    name: Name,
    events: Events,
    start: Instant,
    bucket_nanos: u64,
    /// Retries always allowed over one window: `min_retries_per_second * window`.
    reserve: f64,
    ratio: f64,
    ring: Ring,
    deposits: AtomicU64,
    withdrawals: AtomicU64,
    rejections: AtomicU64,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("name", &self.inner.name)
            .field("ratio", &self.inner.ratio)
            .field("reserve", &self.inner.reserve)
            .finish()
    }
}

impl RetryBudget {
    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub(crate) fn name_arc(&self) -> Name {
        self.inner.name.clone()
    }

    /// Records one original request.
    pub fn deposit(&self) {
        self.inner.deposits.fetch_add(1, Ordering::Relaxed);
        self.inner.ring.deposit(self.bucket());
    }

    /// Takes one retry out of the budget if it allows one; emits [`Event::Rejected`] (with
    /// [`PolicyKind::Budget`]) if it does not.
    pub fn try_withdraw(&self) -> bool {
        let allowed =
            self.inner
                .ring
                .try_withdraw(self.bucket(), self.inner.reserve, self.inner.ratio);
        if allowed {
            self.inner.withdrawals.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.rejections.fetch_add(1, Ordering::Relaxed);
            self.inner.events.emit_with(|| Event::Rejected {
                name: self.inner.name.clone(),
                policy: PolicyKind::Budget,
            });
        }
        allowed
    }

    /// Counters, and the retries available now.
    pub fn stats(&self) -> RetryBudgetStats {
        RetryBudgetStats {
            deposits: self.inner.deposits.load(Ordering::Relaxed),
            withdrawals: self.inner.withdrawals.load(Ordering::Relaxed),
            rejections: self.inner.rejections.load(Ordering::Relaxed),
            available: self.inner.ring.available(
                self.bucket(),
                self.inner.reserve,
                self.inner.ratio,
            ),
        }
    }

    /// The index of the current time bucket, wrapping at 2^32 (over 13 years of the shortest
    /// buckets, far beyond the window).
    fn bucket(&self) -> u32 {
        let elapsed = Instant::now().saturating_duration_since(self.inner.start);
        (elapsed.as_nanos() / u128::from(self.inner.bucket_nanos)) as u32
    }
}

/// Buckets per window: the window slides in steps of a tenth of its length.
const BUCKETS: u32 = 10;

fn bucket_nanos(window: Duration) -> u64 {
    u64::try_from(window.as_nanos() / u128::from(BUCKETS))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Counts per time bucket, each slot one atomic word: the bucket index in the high 32 bits, the
/// count in the low 32 bits, so a slot moves to a new bucket and resets its count in one step.
#[derive(Default)]
pub(crate) struct Ring {
    deposits: [AtomicU64; BUCKETS as usize],
    withdrawals: [AtomicU64; BUCKETS as usize],
}

fn pack(bucket: u32, count: u32) -> u64 {
    (u64::from(bucket) << 32) | u64::from(count)
}

fn bucket_of(word: u64) -> u32 {
    (word >> 32) as u32
}

fn count_of(word: u64) -> u32 {
    word as u32
}

/// How many buckets `now` is past `bucket`; negative if `bucket` is ahead (a writer that read the
/// clock later got there first).
fn age(now: u32, bucket: u32) -> i64 {
    i64::from(now.wrapping_sub(bucket) as i32)
}

/// How far ahead of a writer's clock a slot may be and still be taken for a newer bucket rather
/// than a stale one left from before the index wrapped (2^20 buckets: over a day at the shortest).
const MAX_AHEAD: i64 = 1 << 20;

/// True if a slot last written in `bucket` belongs to the window ending at `now`.
fn in_window(now: u32, bucket: u32) -> bool {
    let age = age(now, bucket);
    age > -i64::from(BUCKETS) && age < i64::from(BUCKETS)
}

impl Ring {
    fn slot(slots: &[AtomicU64; BUCKETS as usize], now: u32) -> &AtomicU64 {
        &slots[(now % BUCKETS) as usize]
    }

    /// Adds one to the slot for `now`, resetting it first if it holds an older bucket. Returns the
    /// bucket the slot holds afterwards.
    fn add(slot: &AtomicU64, now: u32) -> u32 {
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let bucket = bucket_of(word);
            let age = age(now, bucket);
            let next = if age <= 0 && age > -MAX_AHEAD {
                // This bucket, or a newer one written by a caller that read the clock later
                // (this caller was delayed): count there rather than wipe the newer counts.
                pack(bucket, count_of(word).saturating_add(1))
            } else {
                pack(now, 1)
            };
            match slot.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return bucket_of(next),
                Err(actual) => word = actual,
            }
        }
    }

    /// Takes back one count added by [`Ring::add`] in `bucket`, unless the slot has moved on.
    fn undo(slot: &AtomicU64, bucket: u32) {
        let mut word = slot.load(Ordering::Relaxed);
        while bucket_of(word) == bucket && count_of(word) > 0 {
            match slot.compare_exchange_weak(word, word - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    fn sum(slots: &[AtomicU64; BUCKETS as usize], now: u32) -> u64 {
        slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&word| in_window(now, bucket_of(word)))
            .map(|word| u64::from(count_of(word)))
            .sum()
    }

    fn allowance(&self, now: u32, reserve: f64, ratio: f64) -> f64 {
        reserve + ratio * Self::sum(&self.deposits, now) as f64
    }

    pub(crate) fn deposit(&self, now: u32) {
        Self::add(Self::slot(&self.deposits, now), now);
    }

    /// Counts the withdrawal first and checks after, taking it back if over: two racing callers
    /// can then both be refused near the limit, but never both allowed past it.
    pub(crate) fn try_withdraw(&self, now: u32, reserve: f64, ratio: f64) -> bool {
        let slot = Self::slot(&self.withdrawals, now);
        let bucket = Self::add(slot, now);
        let withdrawn = Self::sum(&self.withdrawals, now) as f64;
        if withdrawn <= self.allowance(now, reserve, ratio) {
            true
        } else {
            Self::undo(slot, bucket);
            false
        }
    }

    pub(crate) fn available(&self, now: u32, reserve: f64, ratio: f64) -> u64 {
        let left = self.allowance(now, reserve, ratio) - Self::sum(&self.withdrawals, now) as f64;
        if left >= 1.0 { left.floor() as u64 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(ratio: f64, min: u32, window: &str) -> RetryBudget {
        RetryBudgetConfig {
            ratio,
            min_retries_per_second: min,
            window: crate::parse_duration(window).unwrap(),
        }
        .build("b", &Events::new())
        .unwrap()
    }

    #[test]
    fn an_empty_section_takes_every_default() {
        let config: RetryBudgetConfig = toml::from_str("").unwrap();
        assert_eq!(config, RetryBudgetConfig::default());
        assert_eq!(config.ratio, 0.2);
        assert_eq!(config.min_retries_per_second, 10);
        assert_eq!(config.window, Duration::from_secs(10));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let config: RetryBudgetConfig = toml::from_str("ratio = -0.5\nwindow = \"500ms\"").unwrap();
        let err = config.build("retry_budget.x", &Events::new()).unwrap_err();
        let problems: Vec<_> = err
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "retry_budget.x.ratio",
                    "must be between 0 and 1000, got -0.5"
                ),
                ("retry_budget.x.window", "must be at least 1s, got 500ms"),
            ]
        );
        let config: RetryBudgetConfig = toml::from_str("ratio = nan\nwindow = \"2h\"").unwrap();
        let err = config.build("r", &Events::new()).unwrap_err();
        assert_eq!(err.problems[0].message, "must be a finite number, got NaN");
        assert_eq!(err.problems[1].message, "must be at most 1h, got 2h");
        assert!(toml::from_str::<RetryBudgetConfig>("ratio = inf").is_ok());
        assert!(toml::from_str::<RetryBudgetConfig>("percent = 1").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_allows_retries_without_any_request() {
        let b = budget(0.0, 2, "1s");
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        assert_eq!(
            b.stats(),
            RetryBudgetStats {
                deposits: 0,
                withdrawals: 2,
                rejections: 1,
                available: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_earn_retries_at_the_ratio_and_expire_with_the_window() {
        let b = budget(0.5, 0, "1s");
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(b.stats().available, 2);
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        // After a whole window both the deposits and the withdrawals have expired.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.stats().available, 0);
        assert!(!b.try_withdraw());
        b.deposit();
        b.deposit();
        assert!(b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_emit_a_budget_rejection() {
        let events = Events::new();
        let (_sub, mut rx) = events.channel();
        let b = RetryBudgetConfig {
            ratio: 0.0,
            min_retries_per_second: 0,
            ..Default::default()
        }
        .build("backend", &events)
        .unwrap();
        assert!(!b.try_withdraw());
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::Rejected {
                name: "backend".into(),
                policy: PolicyKind::Budget
            }
        );
    }

    #[test]
    fn a_slot_written_by_a_late_reader_keeps_the_newer_bucket() {
        let ring = Ring::default();
        ring.deposit(15);
        ring.deposit(5); // a caller that read the clock at bucket 5 but wrote after bucket 15
        assert_eq!(Ring::sum(&ring.deposits, 15), 2);
        // A slot 10+ buckets old is reset rather than added to.
        ring.deposit(25);
        assert_eq!(Ring::sum(&ring.deposits, 25), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deposit,
        Withdraw,
        Advance(u32),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(Op::Deposit),
                4 => Just(Op::Withdraw),
                1 => (1u32..25).prop_map(Op::Advance),
            ],
            0..400,
        )
    }

    proptest! {
        /// At every allowed withdrawal, the withdrawals in the window of ten buckets ending there
        /// stay within the reserve plus ratio times the deposits in that same window; and over any
        /// ten buckets no more is allowed than the reserve plus ratio times the deposits over the
        /// twenty buckets ending there (a window never reaches further back than one more window).
        #[test]
        fn withdrawals_in_a_window_never_exceed_reserve_plus_ratio_times_deposits(
            ops in ops(), ratio in 0.0f64..3.0, min in 0u32..5, window_secs in 1u32..5
        ) {
            let reserve = f64::from(min) * f64::from(window_secs);
            let ring = Ring::default();
            let mut now = 0u32;
            // Per bucket: (deposits, allowed withdrawals), as a naive model.
            let mut log = vec![(0u64, 0u64)];
            let window = |log: &[(u64, u64)], end: usize, len: usize| {
                let start = (end + 1).saturating_sub(len);
                log[start..=end].iter().fold((0, 0), |(d, w), (bd, bw)| (d + bd, w + bw))
            };
            for op in ops {
                match op {
                    Op::Deposit => {
                        ring.deposit(now);
                        log[now as usize].0 += 1;
                    }
                    Op::Withdraw => {
                        let expected = {
                            let (d, w) = window(&log, now as usize, BUCKETS as usize);
                            (w + 1) as f64 <= reserve + ratio * d as f64
                        };
                        let allowed = ring.try_withdraw(now, reserve, ratio);
                        prop_assert_eq!(allowed, expected);
                        if allowed {
                            log[now as usize].1 += 1;
                            let (d, w) = window(&log, now as usize, BUCKETS as usize);
                            prop_assert!(w as f64 <= reserve + ratio * d as f64);
                        }
                    }
                    Op::Advance(n) => {
                        now += n;
                        log.resize(now as usize + 1, (0, 0));
                    }
                }
            }
            for end in 0..log.len() {
                let (_, w) = window(&log, end, BUCKETS as usize);
                let (d, _) = window(&log, end, 2 * BUCKETS as usize);
                prop_assert!(w as f64 <= reserve + ratio * d as f64 + 1e-9);
            }
        }
    }
}
