//! Says when live capture does not keep up: the kernel dropped packets since the last look.
//! The warning names the busiest capture worker and what to do: a worker that holds a whole
//! core is the limit (more workers, a narrower BPF filter); with none saturated, bursts
//! overflow the ring (a larger ring holds them).
use std::time::{Duration, Instant};

/// How often the counts are compared.
const EVERY: Duration = Duration::from_secs(10);
/// A thread busy this share of the time holds a whole core.
const SATURATED: f64 = 0.9;
/// The capture workers' thread names: this and the worker's number.
pub const WORKER: &str = "tw-capture-";

/// The kernel's drop count and the threads' CPU time at the last look.
pub struct KeepUp {
    last_at: Instant,
    last_drops: u64,
    last_cpu: Vec<(String, Duration)>,
}

impl KeepUp {
    /// Starts watching at `now`, with the drop count and threads' CPU time then.
    pub fn new(now: Instant, drops: u64, cpu: Vec<(String, Duration)>) -> KeepUp {
        KeepUp {
            last_at: now,
            last_drops: drops,
            last_cpu: cpu,
        }
    }

    /// Called often; once [`EVERY`] has passed, compares the kernel's drop count with the last
    /// look's and returns a warning when it grew. `cpu` (the threads' CPU time now, by
    /// name) is read only then.
    pub fn check(
        &mut self,
        now: Instant,
        drops: u64,
        cpu: impl FnOnce() -> Vec<(String, Duration)>,
    ) -> Option<String> {
        let span = now.checked_duration_since(self.last_at)?;
        if span < EVERY {
            return None;
        }
        let cpu = cpu();
        let dropped = drops.saturating_sub(self.last_drops);
        let busiest = cpu
            .iter()
            .filter(|(name, _)| name.starts_with(WORKER))
            .map(|(name, now_cpu)| {
                let before = self
                    .last_cpu
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(Duration::ZERO, |(_, c)| *c);
                let busy = now_cpu.saturating_sub(before).as_secs_f64() / span.as_secs_f64();
                (name.clone(), busy)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        self.last_at = now;
        self.last_drops = drops;
        self.last_cpu = cpu;
        (dropped > 0).then(|| warning(dropped, span, busiest))
    }
}

/// The warning for `dropped` packets over `span`, given the busiest worker and its share of
/// a core.
fn warning(dropped: u64, span: Duration, busiest: Option<(String, f64)>) -> String {
    let head = format!(
        "the kernel dropped {dropped} packets in the last {:.0} s: capture is not keeping up",
        span.as_secs_f64()
    );
    match busiest {
        Some((name, busy)) if busy >= SATURATED => format!(
            "{head}; {name} used {:.0} % of a core and is the limit: more --workers if cores \
             are free, or a --bpf-file that leaves out traffic no detector needs",
            busy * 100.0
        ),
        Some((name, busy)) => format!(
            "{head}; no worker is saturated (the busiest, {name}, used {:.0} % of a core): \
             bursts overflow the ring, which a larger --ring-mib holds",
            busy * 100.0
        ),
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(list: &[(&str, u64)]) -> Vec<(String, Duration)> {
        list.iter()
            .map(|(n, ms)| (n.to_string(), Duration::from_millis(*ms)))
            .collect()
    }

    #[test]
    fn no_drops_no_warning_however_busy_the_workers() {
        let t = Instant::now();
        let mut k = KeepUp::new(t, 7, cpu(&[("tw-capture-0", 0)]));
        let warned = k.check(t + EVERY, 7, || cpu(&[("tw-capture-0", 10_000)]));
        assert_eq!(warned, None);
    }

    #[test]
    fn drops_with_a_saturated_worker_name_it_as_the_limit() {
        let t = Instant::now();
        let start = cpu(&[
            ("tapwatch", 0),
            ("tw-capture-0", 1_000),
            ("tw-capture-1", 0),
        ]);
        let mut k = KeepUp::new(t, 100, start);
        // Worker 1 was busy 9.7 s of 10; the main thread more, but it is not a worker.
        let now = cpu(&[
            ("tapwatch", 10_000),
            ("tw-capture-0", 3_000),
            ("tw-capture-1", 9_700),
        ]);
        let w = k.check(t + EVERY, 150, || now).expect("a warning");
        assert!(
            w.starts_with("the kernel dropped 50 packets in the last 10 s"),
            "{w}"
        );
        assert!(
            w.contains("tw-capture-1 used 97 % of a core and is the limit"),
            "{w}"
        );
        assert!(w.contains("--workers"), "{w}");
    }

    #[test]
    fn drops_with_no_saturated_worker_point_at_the_ring() {
        let t = Instant::now();
        let mut k = KeepUp::new(t, 0, cpu(&[("tw-capture-0", 0)]));
        let w = k
            .check(t + EVERY, 3, || cpu(&[("tw-capture-0", 4_000)]))
            .expect("a warning");
        assert!(
            w.contains("the busiest, tw-capture-0, used 40 % of a core"),
            "{w}"
        );
        assert!(w.contains("--ring-mib"), "{w}");
    }

    #[test]
    fn it_looks_once_a_period_and_compares_with_the_last_look() {
        let t = Instant::now();
        let mut k = KeepUp::new(t, 0, cpu(&[]));
        let mut read = false;
        assert_eq!(
            k.check(t + EVERY / 2, 5, || {
                read = true;
                cpu(&[])
            }),
            None,
            "too soon"
        );
        assert!(!read, "the threads are not read before the period is over");
        assert!(k.check(t + EVERY, 5, || cpu(&[])).is_some());
        // The next period starts from the count of the last look: no new drops, no warning.
        assert_eq!(k.check(t + 2 * EVERY, 5, || cpu(&[])), None);
        let w = k
            .check(t + 3 * EVERY, 6, || cpu(&[]))
            .expect("one more drop");
        assert_eq!(
            w,
            "the kernel dropped 1 packets in the last 10 s: capture is not keeping up"
        );
    }
}
