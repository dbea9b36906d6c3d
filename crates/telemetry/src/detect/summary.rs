//! Per-second summaries of an operation and sums over runs of them: what the step tests read.

use crate::OperationInterval;
use std::time::Duration;
use tokio::time::Instant;

/// One tick of one operation, reduced to what the tests need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) count: u64,
    pub(crate) errors: u64,
    pub(crate) sum_us: u64,
    pub(crate) log_mean: f64,
    pub(crate) log_var: f64,
    pub(crate) p50: u32,
    pub(crate) p99: u32,
}

impl Slot {
    pub(crate) fn of(op: &OperationInterval) -> Slot {
        let iv = &op.interval;
        let (log_mean, log_var) = iv.log_moments().unwrap_or((0.0, 0.0));
        let q = |q| u32::try_from(iv.quantile(q).unwrap_or(0)).unwrap_or(u32::MAX);
        Slot {
            start: op.end.checked_sub(op.length).unwrap_or(op.end),
            end: op.end,
            count: iv.count,
            errors: iv.errors,
            sum_us: iv.sum,
            log_mean,
            log_var,
            p50: q(0.5),
            p99: q(0.99),
        }
    }
}

/// Sums over a run of slots, and the dispersion of its seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Agg {
    pub(crate) n: f64,
    pub(crate) errors: f64,
    pub(crate) secs: f64,
    pub(crate) sum_us: f64,
    log_sum: f64,
    log_sq: f64,
    pub(crate) seconds: usize,
    /// Overdispersion of per-second mean log latency (at least 1).
    pub(crate) lat_phi: f64,
    /// Overdispersion of per-second error counts (at least 1).
    pub(crate) err_phi: f64,
    pub(crate) p50: u32,
    pub(crate) p99: u32,
}

impl Agg {
    pub(crate) fn of<'a, I>(slots: I) -> Agg
    where
        I: Iterator<Item = &'a Slot> + Clone,
    {
        let mut a = Agg::default();
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for s in slots.clone() {
            a.secs += s.end.saturating_duration_since(s.start).as_secs_f64();
            if s.count == 0 {
                continue;
            }
            let n = s.count as f64;
            a.n += n;
            a.errors += s.errors as f64;
            a.sum_us += s.sum_us as f64;
            a.log_sum += n * s.log_mean;
            a.log_sq += n * (s.log_var + s.log_mean * s.log_mean);
            a.seconds += 1;
            p50s.push(s.p50);
            p99s.push(s.p99);
        }
        a.p50 = median(&mut p50s);
        a.p99 = median(&mut p99s);
        // Pearson dispersion statistics: how much more the seconds differ than sampling of
        // individual calls explains (Wedderburn 1974's quasi-likelihood scale).
        let (m, v, p) = (a.log_mean(), a.log_var(), a.error_ratio());
        let (mut lat, mut err) = (0.0, 0.0);
        for s in slots.filter(|s| s.count > 0) {
            let n = s.count as f64;
            lat += n * (s.log_mean - m).powi(2);
            if p > 0.0 && p < 1.0 {
                err += (s.errors as f64 - n * p).powi(2) / (n * p * (1.0 - p));
            }
        }
        let k = a.seconds as f64 - 1.0;
        a.lat_phi = if k >= 1.0 && v > 0.0 {
            (lat / v / k).max(1.0)
        } else {
            1.0
        };
        a.err_phi = if k >= 1.0 { (err / k).max(1.0) } else { 1.0 };
        a
    }

    pub(crate) fn log_mean(&self) -> f64 {
        if self.n > 0.0 {
            self.log_sum / self.n
        } else {
            0.0
        }
    }

    /// The unbiased variance of log latency over every call.
    pub(crate) fn log_var(&self) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        let m = self.log_mean();
        ((self.log_sq / self.n - m * m) * self.n / (self.n - 1.0)).max(0.0)
    }

    pub(crate) fn error_ratio(&self) -> f64 {
        if self.n > 0.0 {
            self.errors / self.n
        } else {
            0.0
        }
    }

    pub(crate) fn mean(&self) -> Duration {
        if self.n > 0.0 {
            Duration::from_secs_f64(self.sum_us / self.n / 1e6)
        } else {
            Duration::ZERO
        }
    }

    /// Seconds spent in calls per second of wall time.
    pub(crate) fn busy(&self) -> f64 {
        if self.secs > 0.0 {
            self.sum_us / 1e6 / self.secs
        } else {
            0.0
        }
    }

    /// Calls per second.
    pub(crate) fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.n / self.secs
        } else {
            0.0
        }
    }

    pub(crate) fn geo_mean_us(&self) -> f64 {
        self.log_mean().exp()
    }
}

fn median(v: &mut [u32]) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn slot(
        at: Instant,
        i: u32,
        count: u64,
        log_mean: f64,
        log_var: f64,
        errors: u64,
    ) -> Slot {
        Slot {
            start: at + Duration::from_secs(u64::from(i)),
            end: at + Duration::from_secs(u64::from(i) + 1),
            count,
            errors,
            sum_us: (count as f64 * (log_mean + log_var / 2.0).exp()) as u64,
            log_mean,
            log_var,
            p50: log_mean.exp() as u32,
            p99: (log_mean + 2.326 * log_var.sqrt()).exp() as u32,
        }
    }

    #[test]
    fn dispersion_is_one_for_sampling_noise_and_grows_with_extra_variation() {
        let t0 = Instant::now();
        // Per-second means exactly at their sampling spread: 0.25 / 100 per second.
        let iid: Vec<Slot> = (0..40)
            .map(|i| {
                let m = 9.2 + if i % 2 == 0 { 0.05 } else { -0.05 };
                slot(t0, i, 100, m, 0.25 - 0.0025, 0)
            })
            .collect();
        let a = Agg::of(iid.iter());
        assert!((a.lat_phi - 1.0).abs() < 0.05, "{}", a.lat_phi);
        // Seconds that swing ten times wider than sampling explains.
        let wide: Vec<Slot> = (0..40)
            .map(|i| {
                slot(
                    t0,
                    i,
                    100,
                    9.2 + if i % 2 == 0 { 0.5 } else { -0.5 },
                    0.0,
                    0,
                )
            })
            .collect();
        assert!(Agg::of(wide.iter()).lat_phi > 50.0);
    }
}
