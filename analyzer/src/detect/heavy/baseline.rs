//! A key's own normal level, against which its count in a window is judged.
//!
//! Two exponentially weighted averages of the key's per-window count: a recent one (weight
//! `ewma_alpha`, ~20 windows) with its variance, and a long one (weight `long_alpha`,
//! ~500 windows). The key's level is the larger of the two, so a key that comes back to
//! what it has long been (after an outage or a quiet spell) is not new. Each average starts
//! as the plain mean of the key's windows (weight `1 / windows` while that is larger), and
//! during warm-up the recent one too: the capture's first window, usually partial, weighs
//! no more than any other.
use super::HeavyHitterConfig;

/// A key's baseline.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Baseline {
    recent: f64,
    var: f64,
    long: f64,
    windows: u32,
}

impl Baseline {
    /// A baseline that starts from a key's first count.
    pub fn first(count: f64) -> Baseline {
        Baseline {
            recent: count,
            var: 0.0,
            long: count,
            windows: 1,
        }
    }

    /// Adds one window's count; `warming`: the judge is still in its warm-up.
    pub fn update(&mut self, count: f64, cfg: &HeavyHitterConfig, warming: bool) {
        self.windows = self.windows.saturating_add(1);
        let plain = 1.0 / f64::from(self.windows);
        let alpha = match warming {
            true => plain.max(cfg.ewma_alpha),
            false => cfg.ewma_alpha,
        };
        let d = count - self.recent;
        self.recent += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        self.long += plain.max(cfg.long_alpha) * (count - self.long);
    }

    /// The key's normal count per window: the larger of its recent and long averages.
    pub fn mean(&self) -> f64 {
        self.recent.max(self.long)
    }

    /// Standard deviation of the recent counts.
    pub fn sd(&self) -> f64 {
        self.var.sqrt()
    }

    /// Whether the baseline still matters: its recent average is not yet ~0, or its long
    /// average could still keep a count of `min_count` from being `factor` times above it.
    pub fn matters(&self, min_count: f64, factor: f64) -> bool {
        self.recent >= 0.5 || self.long * factor >= min_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_first_window_weighs_no_more_than_any_other_in_warm_up() {
        let cfg = HeavyHitterConfig::default();
        let mut b = Baseline::first(10.0);
        for _ in 0..4 {
            b.update(1000.0, &cfg, true);
        }
        assert!((b.mean() - 802.0).abs() < 1e-6, "{}", b.mean());
        let mut after = Baseline::first(10.0);
        for _ in 0..4 {
            after.update(1000.0, &cfg, false);
        }
        assert!(
            after.recent < 200.0,
            "after warm-up the recent level moves by ewma_alpha"
        );
    }

    #[test]
    fn a_key_that_comes_back_to_its_long_level_is_not_new() {
        let cfg = HeavyHitterConfig::default();
        let mut b = Baseline::first(1000.0);
        for _ in 0..600 {
            b.update(1000.0, &cfg, false);
        }
        for _ in 0..60 {
            b.update(0.0, &cfg, false); // a minute's outage
        }
        assert!(b.recent < 100.0);
        assert!(b.mean() > 800.0, "long level {}", b.long);
        assert!(b.matters(200.0, 3.0));
        for _ in 0..5000 {
            b.update(0.0, &cfg, false);
        }
        assert!(!b.matters(200.0, 3.0), "gone for good: {b:?}");
    }
}
