//! Whether a flow keeps a rhythm, judged from running statistics of its inter-arrival times.
//!
//! Each interval updates a mean and variance (exact averages over the first
//! `full_samples` intervals, then exponentially weighted with weight `1 / full_samples`,
//! so a flow that changes rhythm is learned again), and the share of intervals that landed
//! near the mean of those before them. O(1) per packet: no samples kept, nothing sorted.
//!
//! A flow is periodic when its coefficient of variation (σ / mean) is small and nearly every
//! interval is near the period. Poisson arrivals have a coefficient of variation of 1 and
//! heavy-tailed or on/off arrivals more; a heartbeat with ±25 % jitter about 0.15. To be
//! learned the limit starts tight and widens with evidence, `max_cv × (n / full_samples)²`
//! after `n` intervals, so a few lucky random gaps cannot pass while a clean keepalive is
//! learned after `min_samples`; a learned flow stays periodic while within `max_cv`.
use super::HeartbeatConfig;

/// Intervals whose nearness is not judged: the mean of fewer is no reference yet.
const UNJUDGED: u32 = 2;

/// Running statistics of one flow's inter-arrival times.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rhythm {
    /// Intervals since the rhythm was last reset.
    n: u32,
    /// Mean interval, ns.
    mean: f64,
    /// Variance of the intervals, ns².
    var: f64,
    /// Share of the judged intervals that were near the mean of those before them.
    near: f64,
}

impl Rhythm {
    /// Adds one inter-arrival interval (ns).
    #[inline]
    pub fn push(&mut self, gap_ns: u64, cfg: &HeartbeatConfig) {
        let x = gap_ns as f64;
        let full = cfg.full_samples.max(1);
        let steady = 1.0 / f64::from(full);
        // The weight of the `i`-th interval is `max(1 / i, 1 / full_samples)`: from
        // `full_samples` on that is `steady` (1 / i is no larger there, rounding included),
        // so a followed flow's packet divides once, not three times.
        let weight = |i: u32| {
            if i >= full {
                steady
            } else {
                (1.0 / f64::from(i)).max(steady)
            }
        };
        self.n = self.n.saturating_add(1);
        if self.n > UNJUDGED {
            let near = (x - self.mean).abs() <= cfg.tolerance * self.mean;
            let alpha = weight(self.n - UNJUDGED);
            self.near += alpha * (f64::from(u8::from(near)) - self.near);
        }
        let alpha = weight(self.n);
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
    }

    /// Forgets every interval (the flow resumed after a gap: learn its rhythm again).
    pub fn reset(&mut self) {
        *self = Rhythm::default();
    }

    /// Intervals seen since the last reset.
    pub fn samples(&self) -> u32 {
        self.n
    }

    /// The period: mean interval, ns.
    pub fn period_ns(&self) -> u64 {
        self.mean as u64
    }

    /// Standard deviation of the intervals, ns.
    pub fn spread_ns(&self) -> u64 {
        self.var.sqrt() as u64
    }

    /// Whether the intervals so far show a rhythm random arrivals would not; `learned`:
    /// whether they did at the previous interval (then the full `max_cv` applies).
    #[inline]
    pub fn periodic(&self, cfg: &HeartbeatConfig, learned: bool) -> bool {
        if self.n < cfg.min_samples {
            return false;
        }
        let evidence = match learned {
            true => 1.0,
            false => (f64::from(self.n) / f64::from(cfg.full_samples.max(1))).min(1.0),
        };
        let max_sd = cfg.max_cv * evidence * evidence * self.mean;
        let period_s = self.mean / 1e9;
        self.var <= max_sd * max_sd
            && self.near >= cfg.min_regular
            && (cfg.min_period_s..=cfg.max_period_s).contains(&period_s)
    }
}

#[cfg(test)]
mod tests;
