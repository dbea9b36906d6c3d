//! Named test profiles: the shape of the load over time for six kinds of test.
//!
//! Each profile turns a duration and a peak (a rate for the open model, virtual users for the
//! closed one) into stages:
//!
//! | profile | shape | default duration |
//! | --- | --- | --- |
//! | `smoke` | the peak (1 VU if closed and none given) held, a quick check that it works | 10s |
//! | `load` | ramp up over 10 %, hold 80 %, ramp down 10 % | 5m |
//! | `stress` | three steps up to the peak (⅓, ⅔, 1), each ramped then held, then down | 10m |
//! | `spike` | 10 % of the peak, a jump to the peak within 2 %, held 16 %, back to 10 % | 5m |
//! | `soak` | ramp up over 5 %, hold 90 %, ramp down 5 % | 1h |
//! | `breakpoint` | a steady ramp from 0 to the peak over the whole run; thresholds abort it | 10m |
//!
//! ```
//! use std::time::Duration;
//! use rampart_load::profile::Profile;
//!
//! let p: Profile = "load".parse()?;
//! let s = p.schedule(Duration::from_secs(100), 50.0);
//! assert_eq!(s.duration(), Duration::from_secs(100));
//! assert_eq!(s.target_at(Duration::from_secs(50)), 50.0);
//! # Ok::<(), String>(())
//! ```

use std::str::FromStr;
use std::time::Duration;

use crate::schedule::{Schedule, Stage};

/// A named profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// A short, light check that the scenario works.
    Smoke,
    /// The expected load, ramped up and held.
    Load,
    /// Steps above the expected load.
    Stress,
    /// A sudden burst from a low base.
    Spike,
    /// The expected load for a long time.
    Soak,
    /// A ramp until something breaks.
    Breakpoint,
}

impl Profile {
    /// Every profile's name.
    pub const NAMES: [&'static str; 6] = ["smoke", "load", "stress", "spike", "soak", "breakpoint"];

    /// Its duration when none is given.
    pub fn default_duration(self) -> Duration {
        let secs = match self {
            Profile::Smoke => 10,
            Profile::Load | Profile::Spike => 300,
            Profile::Stress | Profile::Breakpoint => 600,
            Profile::Soak => 3600,
        };
        Duration::from_secs(secs)
    }

    /// Whether a failing threshold stops the run by default (only for `breakpoint`).
    pub fn aborts_on_fail(self) -> bool {
        self == Profile::Breakpoint
    }

    /// Its stages for a run of `duration` peaking at `peak`.
    pub fn schedule(self, duration: Duration, peak: f64) -> Schedule {
        // (fraction of the duration, fraction of the peak reached at its end)
        let shape: &[(f64, f64)] = match self {
            Profile::Smoke => &[(1.0, 1.0)],
            Profile::Load => &[(0.1, 1.0), (0.8, 1.0), (0.1, 0.0)],
            Profile::Stress => &[
                (0.1, 1.0 / 3.0),
                (0.15, 1.0 / 3.0),
                (0.1, 2.0 / 3.0),
                (0.15, 2.0 / 3.0),
                (0.1, 1.0),
                (0.3, 1.0),
                (0.1, 0.0),
            ],
            Profile::Spike => &[
                (0.4, 0.1),
                (0.02, 1.0),
                (0.16, 1.0),
                (0.02, 0.1),
                (0.4, 0.1),
            ],
            Profile::Soak => &[(0.05, 1.0), (0.9, 1.0), (0.05, 0.0)],
            Profile::Breakpoint => &[(1.0, 1.0)],
        };
        let start = match self {
            Profile::Smoke => peak,
            Profile::Spike => peak * 0.1,
            _ => 0.0,
        };
        let stages = shape
            .iter()
            .map(|&(f, t)| Stage::new(duration.mul_f64(f), peak * t))
            .collect();
        Schedule::new(start, stages)
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "smoke" => Profile::Smoke,
            "load" => Profile::Load,
            "stress" => Profile::Stress,
            "spike" => Profile::Spike,
            "soak" => Profile::Soak,
            "breakpoint" => Profile::Breakpoint,
            _ => {
                return Err(format!(
                    "unknown profile {s:?}; expected one of {}",
                    Profile::NAMES.join(", ")
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_fills_its_duration_and_reaches_its_peak() {
        let d = Duration::from_secs(1000);
        for name in Profile::NAMES {
            let p: Profile = name.parse().unwrap();
            let s = p.schedule(d, 90.0);
            let total: f64 = s.stages().iter().map(|s| s.duration.as_secs_f64()).sum();
            assert!((total - 1000.0).abs() < 1e-6, "{name}: {total}");
            assert!((s.peak() - 90.0).abs() < 1e-9, "{name}");
        }
        let spike = Profile::Spike.schedule(d, 100.0);
        assert!((spike.target_at(Duration::from_secs(100)) - 10.0).abs() < 1e-9);
        assert!((spike.target_at(Duration::from_secs(500)) - 100.0).abs() < 1e-9);
        let bp = Profile::Breakpoint.schedule(d, 100.0);
        assert!((bp.target_at(Duration::from_secs(250)) - 25.0).abs() < 1e-9);
        assert!(
            "chaos"
                .parse::<Profile>()
                .unwrap_err()
                .contains("breakpoint")
        );
    }
}
