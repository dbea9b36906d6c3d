//! How long each level is kept, and which level answers a query.

use std::time::{Duration, SystemTime};

use rampart_resilience::serde_duration;
use serde::Deserialize;

use super::rollup::Level;

const DAY: Duration = Duration::from_secs(86_400);

/// How long the store keeps each level; older rows go at the next [`sweep`](super::Store::sweep).
///
/// In TOML (every key optional): `raw = "7d"`, `minute = "30d"`, `hour = "365d"`, and `day` absent
/// to keep daily rollups forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Retention {
    /// Raw results. Default 7 days.
    #[serde(default = "defaults::raw", with = "serde_duration")]
    pub raw: Duration,
    /// 1-minute rollups. Default 30 days.
    #[serde(default = "defaults::minute", with = "serde_duration")]
    pub minute: Duration,
    /// 1-hour rollups. Default 365 days.
    #[serde(default = "defaults::hour", with = "serde_duration")]
    pub hour: Duration,
    /// 1-day rollups; `None` (the default) keeps them forever.
    #[serde(default, with = "serde_duration::option")]
    pub day: Option<Duration>,
}

mod defaults {
    use super::{DAY, Duration};
    pub(super) fn raw() -> Duration {
        DAY * 7
    }
    pub(super) fn minute() -> Duration {
        DAY * 30
    }
    pub(super) fn hour() -> Duration {
        DAY * 365
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: defaults::raw(),
            minute: defaults::minute(),
            hour: defaults::hour(),
            day: None,
        }
    }
}

impl Retention {
    /// Keeps raw results for `raw`.
    pub fn with_raw(mut self, raw: Duration) -> Self {
        self.raw = raw;
        self
    }
    /// Keeps rollups of `level` for `keep` (`None`: forever; only meaningful for days).
    pub fn with_level(mut self, level: Level, keep: Option<Duration>) -> Self {
        let forever = Duration::MAX;
        match level {
            Level::Minute => self.minute = keep.unwrap_or(forever),
            Level::Hour => self.hour = keep.unwrap_or(forever),
            Level::Day => self.day = keep,
        }
        self
    }
    /// How long rollups of `level` are kept; `None` for forever.
    pub fn of(&self, level: Level) -> Option<Duration> {
        match level {
            Level::Minute => Some(self.minute),
            Level::Hour => Some(self.hour),
            Level::Day => self.day,
        }
        .filter(|&d| d != Duration::MAX)
    }
}

/// The most points a query should return; [`Resolution::choose`] picks the finest level that
/// stays under it.
pub const MAX_POINTS: u64 = 1500;

/// The longest range answered with raw results.
pub const RAW_RANGE: Duration = Duration::from_secs(3600);

/// Which data answers a query: raw results or one rollup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// Raw results ([`Store::results`](super::Store::results)).
    Raw,
    /// Rollups of a level ([`Store::rollups`](super::Store::rollups)).
    Rollup(Level),
}

impl Resolution {
    /// The finest resolution for the range `from..to` asked at `now` that still holds data for
    /// the whole range under `retention` and returns at most about [`MAX_POINTS`] points: raw for
    /// ranges up to [`RAW_RANGE`], then 1-minute rollups up to 25 hours, 1-hour ones up to
    /// 62.5 days, daily ones beyond.
    pub fn choose(
        from: SystemTime,
        to: SystemTime,
        now: SystemTime,
        retention: &Retention,
    ) -> Self {
        let span = to.duration_since(from).unwrap_or_default();
        let age = now.duration_since(from).unwrap_or_default();
        if span <= RAW_RANGE && age <= retention.raw {
            return Resolution::Raw;
        }
        for level in [Level::Minute, Level::Hour] {
            let points = span.as_millis() / level.step().as_millis().max(1);
            let kept = retention.of(level).is_none_or(|keep| age <= keep);
            if points <= u128::from(MAX_POINTS) && kept {
                return Resolution::Rollup(level);
            }
        }
        Resolution::Rollup(Level::Day)
    }
}

/// Settings of a [`SqliteStore`](super::SqliteStore).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// How long each level is kept.
    pub retention: Retention,
    /// Writes that may wait for the writer before `write` waits for room. Default 1024.
    pub queue: usize,
    /// The most results committed in one transaction; more queued writes wait for the next.
    /// Default 20,000.
    pub max_batch: usize,
    /// Rows deleted per transaction by a sweep, so a sweep never holds the writer for long.
    /// Default 5,000.
    pub sweep_batch: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            retention: Retention::default(),
            queue: 1024,
            max_batch: 20_000,
            sweep_batch: 5_000,
        }
    }
}

impl SqliteConfig {
    /// Uses `retention`.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
    /// Deletes at most `rows` per sweep transaction (at least 1).
    pub fn with_sweep_batch(mut self, rows: usize) -> Self {
        self.sweep_batch = rows.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_recent_ranges_are_raw_and_longer_ones_coarser() {
        let r = Retention::default();
        let now = SystemTime::UNIX_EPOCH + DAY * 1000;
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let pick = |back: Duration, span: Duration| {
            Resolution::choose(now - back, now - back + span, now, &r)
        };
        assert_eq!(pick(hours(1), hours(1)), Resolution::Raw);
        assert_eq!(pick(hours(6), hours(6)), Resolution::Rollup(Level::Minute));
        // Raw is gone after 7 days, even for a short range.
        assert_eq!(pick(DAY * 8, hours(1)), Resolution::Rollup(Level::Minute));
        assert_eq!(pick(DAY * 7, DAY * 7), Resolution::Rollup(Level::Hour));
        // 1-minute rollups are gone after 30 days.
        assert_eq!(pick(DAY * 40, hours(2)), Resolution::Rollup(Level::Hour));
        assert_eq!(pick(DAY * 400, DAY), Resolution::Rollup(Level::Day));
    }

    #[test]
    fn retention_reads_from_toml_with_defaults() {
        let r: Retention = toml::from_str("raw = \"2d\"\nday = \"3650d\"").unwrap();
        assert_eq!(r.raw, DAY * 2);
        assert_eq!(r.minute, DAY * 30);
        assert_eq!(r.day, Some(DAY * 3650));
        assert!(toml::from_str::<Retention>("weekly = \"1d\"").is_err());
    }
}
