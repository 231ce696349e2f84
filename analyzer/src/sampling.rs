//! The error of a count estimated from sampled packet records: `n` records taken 1 in `N`
//! stand for `n · N` packets, with a standard error of about `N · √n` (each record a
//! Poisson draw; docs/alerts.md), so a relative standard error of `1 / √n`.
use serde::Serialize;

use crate::window::WindowStats;

/// How sure a count judged on sampled packets is (alert evidence; absent when unsampled).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampledEstimate {
    /// Upper end of the 95 % interval of the count (`count + 1.96 · N · √n`).
    pub count_high: f64,
    /// Lower end of the 95 % interval of the count (`count − 1.96 · N · √n`, at least 0).
    pub count_low: f64,
    /// The window's mean sampling rate `N`: packets it stands for per record.
    pub rate: f64,
    /// Relative standard error of the count, `1 / √n`.
    pub relative_se: f64,
    /// Records `n` behind the count: `count / N`, rounded.
    pub samples: u64,
}

impl SampledEstimate {
    /// The estimate's error for `count` of a window whose units (packets, or bytes with
    /// `window_total = w.bytes`) total `window_total`; `None` when the window was not
    /// sampled. The records behind `count` are its share of the window's records.
    pub fn of(count: u64, window_total: u64, w: &WindowStats) -> Option<SampledEstimate> {
        SampledEstimate::from_totals(count, window_total, w.packets, w.samples)
    }

    /// As [`SampledEstimate::of`], for windows of `packets` packets from `samples` records
    /// (taken as unsampled when `samples` is 0 or not below `packets`).
    pub fn from_totals(
        count: u64,
        window_total: u64,
        packets: u64,
        samples: u64,
    ) -> Option<SampledEstimate> {
        if samples == 0 || samples >= packets || window_total == 0 {
            return None;
        }
        let rate = packets as f64 / samples as f64;
        let n = (count as f64 * samples as f64 / window_total as f64).round();
        let per_record = count as f64 / n.max(1.0);
        let se = per_record * n.sqrt();
        let count = count as f64;
        Some(SampledEstimate {
            count_high: count + 1.96 * se,
            count_low: (count - 1.96 * se).max(0.0),
            rate,
            relative_se: if n > 0.0 { 1.0 / n.sqrt() } else { 1.0 },
            samples: n as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::SEC;

    #[test]
    fn a_sampled_count_has_an_interval_and_an_unsampled_one_none() {
        let mut w = WindowStats::new(0, SEC, 16, 16, 16, 32);
        w.packets = 1000;
        w.samples = 1000;
        assert_eq!(SampledEstimate::of(400, w.packets, &w), None);
        // 1 in 10: 100 records; a key with 400 packets is 40 records: SE = 10·√40 ≈ 63.2.
        w.samples = 100;
        let e = SampledEstimate::of(400, w.packets, &w).expect("sampled");
        assert_eq!((e.samples, e.rate), (40, 10.0));
        assert!((e.relative_se - 1.0 / 40f64.sqrt()).abs() < 1e-12);
        let se = 10.0 * 40f64.sqrt();
        assert!((e.count_high - (400.0 + 1.96 * se)).abs() < 1e-9);
        assert!((e.count_low - (400.0 - 1.96 * se)).abs() < 1e-9);
        // One record: the interval reaches down to nothing.
        assert_eq!(
            SampledEstimate::of(10, w.packets, &w).unwrap().count_low,
            0.0
        );
    }
}
