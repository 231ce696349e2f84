//! Heavy-hitter sketch accuracy against exact counting on a skewed (Zipf) trace:
//! precision and recall of the top 100, the guaranteed error bound, and memory.
//!
//! Run: `cargo bench -p tapwatch-analyzer --bench heavy_hitters`. Prints a table; no pass/fail.
use std::collections::HashMap;
use std::time::Instant;

use tapwatch_analyzer::sketch::FrequentItems;
use tapwatch_synth::Rng;

/// Zipf(s) over `n` keys by inverse-CDF sampling on a precomputed table.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        let total = acc;
        cdf.iter_mut().for_each(|c| *c /= total);
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u32 {
        let u = rng.unit();
        self.cdf.partition_point(|c| *c < u) as u32
    }
}

fn main() {
    let items = 10_000_000usize;
    let keys = 1_000_000usize;
    let top = 100usize;
    println!("trace: {items} items over {keys} keys; top {top} compared with exact counts\n");
    println!(
        "{:>6} {:>9} {:>10} {:>8} {:>10} {:>14} {:>12} {:>10}",
        "zipf s",
        "capacity",
        "precision",
        "recall",
        "max err",
        "error bound",
        "memory KiB",
        "M items/s"
    );
    for s in [0.8, 1.0, 1.2] {
        let zipf = Zipf::new(keys, s);
        let mut rng = Rng::new(11);
        let trace: Vec<u32> = (0..items).map(|_| zipf.sample(&mut rng)).collect();
        let mut exact: HashMap<u32, u64> = HashMap::new();
        for k in &trace {
            *exact.entry(*k).or_insert(0) += 1;
        }
        let mut truth: Vec<(u32, u64)> = exact.iter().map(|(k, v)| (*k, *v)).collect();
        truth.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let true_top: std::collections::HashSet<u32> =
            truth.iter().take(top).map(|t| t.0).collect();
        let threshold = truth[top - 1].1;
        for capacity in [512usize, 1024, 4096] {
            let mut sketch = FrequentItems::new(capacity);
            let t = Instant::now();
            for k in &trace {
                sketch.add(*k, 1, 0);
            }
            let rate = items as f64 / t.elapsed().as_secs_f64() / 1e6;
            let reported = sketch.top(top);
            let hits = reported
                .iter()
                .filter(|e| true_top.contains(&e.key))
                .count();
            // Recall counts ties at the 100th count as found.
            let found = truth
                .iter()
                .filter(|t| t.1 >= threshold)
                .filter(|t| {
                    sketch
                        .get(&t.0)
                        .is_some_and(|e| reported.iter().any(|r| r.key == e.key))
                })
                .count()
                .min(top);
            let max_err = reported
                .iter()
                .map(|e| exact[&e.key] - e.count)
                .max()
                .unwrap_or(0);
            println!(
                "{s:>6} {:>9} {:>10.3} {:>8.3} {max_err:>10} {:>14} {:>12} {rate:>10.1}",
                sketch.capacity(),
                hits as f64 / reported.len().max(1) as f64,
                found as f64 / top as f64,
                sketch.error_bound(),
                sketch.memory_bytes() / 1024,
            );
        }
    }
}
