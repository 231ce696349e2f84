//! A window's latency samples: one histogram and the worst samples per (subject, measure),
//! bounded in number of cells.
use std::net::IpAddr;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use super::Measure;
use crate::window::FlowTuple;

/// A latency subject: server address, port (0 for echo) and IP protocol.
pub type LatencySubject = (IpAddr, u16, u8);

/// Worst samples kept per cell.
pub const WORST: usize = 3;

/// One sample: what it measured, where, and the flow it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The server (or echo responder).
    pub subject: LatencySubject,
    /// What it measured.
    pub measure: Measure,
    /// µs.
    pub us: u64,
    /// Client, client port, server, server port, protocol.
    pub flow: FlowTuple,
}

/// A large sample and its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorstSample {
    /// µs.
    pub us: u64,
    /// Client, client port, server, server port, protocol.
    pub flow: FlowTuple,
}

/// The samples of one (subject, measure) in a window.
#[derive(Clone, Debug)]
pub struct LatencyCell {
    /// µs, 1 µs to 60 s at two significant digits.
    pub hist: Histogram<u32>,
    /// The largest samples, largest first.
    pub worst: [Option<WorstSample>; WORST],
}

impl LatencyCell {
    fn new() -> LatencyCell {
        LatencyCell {
            hist: Histogram::new_with_bounds(1, 60_000_000, 2)
                .expect("static histogram bounds are valid"),
            worst: [None; WORST],
        }
    }

    #[inline]
    fn keep_worst(&mut self, w: WorstSample) {
        let mut w = Some(w);
        for slot in &mut self.worst {
            if slot.is_none_or(|s| w.is_some_and(|n| n.us > s.us)) {
                std::mem::swap(slot, &mut w);
            }
        }
    }

    fn merge(&mut self, o: &LatencyCell) {
        let _ = self.hist.add(&o.hist);
        for w in o.worst.iter().flatten() {
            self.keep_worst(*w);
        }
    }
}

/// A window's latency cells.
#[derive(Clone, Debug, Default)]
pub struct LatencyWindow {
    /// Cells by (subject, measure).
    pub cells: FxHashMap<(LatencySubject, Measure), LatencyCell>,
    max: usize,
}

impl LatencyWindow {
    /// Empty, with room for `max` cells from packets (merges may add more).
    pub fn new(max: usize) -> LatencyWindow {
        LatencyWindow {
            cells: FxHashMap::default(),
            max,
        }
    }

    /// Cells it has room for.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Records a sample; false when its cell is new and there is no room.
    #[inline]
    pub fn record(&mut self, s: Sample) -> bool {
        let key = (s.subject, s.measure);
        if !self.cells.contains_key(&key) && self.cells.len() >= self.max {
            return false;
        }
        let c = self.cells.entry(key).or_insert_with(LatencyCell::new);
        let _ = c.hist.record(s.us.clamp(1, 60_000_000));
        c.keep_worst(WorstSample {
            us: s.us,
            flow: s.flow,
        });
        true
    }

    /// Up to `limit` cells for the window log, by subject and measure: `subject`,
    /// `measure`, `p50_us`, `p90_us`, `p99_us`, `max_us`, `count`.
    pub fn summary(&self, limit: usize) -> Vec<serde_json::Value> {
        let mut keys: Vec<_> = self.cells.keys().collect();
        keys.sort_unstable();
        keys.into_iter()
            .take(limit)
            .map(|k| {
                let h = &self.cells[k].hist;
                serde_json::json!({
                    "subject": super::shift::subject_name(&k.0),
                    "measure": k.1.name(),
                    "p50_us": h.value_at_quantile(0.5),
                    "p90_us": h.value_at_quantile(0.9),
                    "p99_us": h.value_at_quantile(0.99),
                    "max_us": h.max(),
                    "count": h.len(),
                })
            })
            .collect()
    }

    /// Every cell as (subject named as alerts name it, measure, its histogram).
    pub fn named_cells(&self) -> impl Iterator<Item = (String, Measure, &Histogram<u32>)> + '_ {
        self.cells
            .iter()
            .map(|((s, m), c)| (super::shift::subject_name(s), *m, &c.hist))
    }

    /// Adds another window's cells (every one: each shard's are bounded).
    pub fn merge(&mut self, o: &LatencyWindow) {
        for (k, c) in &o.cells {
            match self.cells.get_mut(k) {
                Some(mine) => mine.merge(c),
                None => {
                    self.cells.insert(*k, c.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::addr;

    fn sample(us: u64, port: u16) -> Sample {
        Sample {
            subject: (addr(2), 80, 6),
            measure: Measure::Response,
            us,
            flow: (addr(1), port, addr(2), 80, 6),
        }
    }

    #[test]
    fn cells_keep_the_worst_samples_and_merge() {
        let mut a = LatencyWindow::new(1);
        for (us, port) in [(5, 1), (50, 2), (7, 3), (9, 4)] {
            assert!(a.record(sample(us, port)));
        }
        let mut other = sample(1, 5);
        other.measure = Measure::Rst;
        assert!(!a.record(other), "no room for a second cell");
        let mut b = LatencyWindow::new(4);
        b.record(sample(20, 6));
        b.record(other);
        a.merge(&b);
        let c = &a.cells[&((addr(2), 80, 6), Measure::Response)];
        let worst: Vec<_> = c.worst.iter().flatten().map(|w| (w.us, w.flow.1)).collect();
        assert_eq!(worst, vec![(50, 2), (20, 6), (9, 4)]);
        assert_eq!((c.hist.len(), a.cells.len()), (5, 2));
    }
}
