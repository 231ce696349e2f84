//! `latency_shift`: per (subject, measure), the merged samples of each judgement window
//! (`latency.window_s`, a rollup of base windows) against a baseline of the trailing
//! `baseline_s`.
//!
//! The baseline is robust: its median is the median of the windows' medians and its p99 the
//! 90th percentile of the windows' p99s, so a shift moves it only once it has lasted half
//! the horizon (then it is the new normal and the alert resolves), and a rare spike never.
//! A measure fires when its window median is at least `factor` × and `min_delta_ms` above
//! the baseline median for `windows` consecutive windows with `min_samples` each (windows
//! with fewer samples neither advance nor break the run), or at once when a single sample is
//! at least `spike_min_ms` and `spike_factor` × the baseline p99. Nothing is judged before
//! the baseline has `min_baseline_windows` windows and `min_baseline_samples` samples. One
//! alert per subject: it names the measure that moved most, and resolves when no measure of
//! the subject fires. When most of a tenant's judged servers shift in the same window, the
//! tenant gets an alert of its own ([`super::tenant`]).
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rustc_hash::FxHashMap;
use serde::Serialize;
use tapwatch_classifier::TenantMap;

use super::cells::{LatencyCell, LatencySubject, LatencyWindow};
use super::tenant::TenantShift;
use super::{LatencyConfig, Measure};
use crate::detect::WindowDetector;
use crate::finding::{endpoint, proto_label, Evidence, Finding, FindingKind, Severity};
use crate::window::WindowStats;

/// A large sample and the flow it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorstFlow {
    /// `client:port->server:port/tcp`, or `requester->responder/icmp id N seq M`.
    pub flow: String,
    /// The sample, µs.
    pub us: u64,
}

/// The numbers behind a firing `latency_shift` (fields serialise in this order: by name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyShiftEvidence {
    /// Baseline median, µs.
    pub baseline_p50_us: u64,
    /// Baseline p99, µs.
    pub baseline_p99_us: u64,
    /// Samples behind the baseline.
    pub baseline_samples: u64,
    /// Consecutive shifted windows (0 for a spike in a window that is not shifted).
    pub consecutive_windows: usize,
    /// Largest sample of the window, µs.
    pub max_us: u64,
    /// Which measure moved.
    pub measure: Measure,
    /// Window median, µs.
    pub p50_us: u64,
    /// Window p90, µs.
    pub p90_us: u64,
    /// Window p99, µs.
    pub p99_us: u64,
    /// Samples in the window.
    pub samples: u64,
    /// `sustained` (the median moved) or `spike` (one extreme sample).
    pub trigger: &'static str,
    /// Judgement window width, seconds.
    pub window_s: f64,
    /// The largest samples with their flows.
    pub worst: Vec<WorstFlow>,
}

/// The numbers behind a resolved `latency_shift`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyShiftResolvedEvidence {
    /// Baseline median of the measure that had fired, µs.
    pub baseline_p50_us: u64,
    /// The measure that had fired.
    pub measure: Measure,
    /// Its window median now, µs (0 without samples).
    pub p50_us: u64,
    /// Its samples in the window.
    pub samples: u64,
    /// Judgement window width, seconds.
    pub window_s: f64,
}

#[derive(Clone, Copy, Debug)]
struct Summary {
    p50: u64,
    p99: u64,
    count: u64,
}

#[derive(Clone, Copy, Debug)]
struct Baseline {
    p50: u64,
    p99: u64,
    samples: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    Sustained,
    Spike,
}

#[derive(Debug, Default)]
struct KeyState {
    ring: VecDeque<Summary>,
    streak: usize,
    sustained: bool,
    idle: usize,
    quiet: usize,
}

impl KeyState {
    fn baseline(&self, cfg: &LatencyConfig) -> Option<Baseline> {
        let samples: u64 = self.ring.iter().map(|s| s.count).sum();
        if self.ring.len() < cfg.min_baseline_windows || samples < cfg.min_baseline_samples {
            return None;
        }
        let mut p50: Vec<u64> = self.ring.iter().map(|s| s.p50).collect();
        let mut p99: Vec<u64> = self.ring.iter().map(|s| s.p99).collect();
        p50.sort_unstable();
        p99.sort_unstable();
        Some(Baseline {
            p50: p50[p50.len() / 2].max(1),
            p99: p99[(p99.len() - 1) * 9 / 10].max(1),
            samples,
        })
    }
}

/// A measure firing in one window.
struct Hot {
    measure: Measure,
    trigger: Trigger,
    base: Baseline,
    streak: usize,
    /// How far it moved: window median (or max for a spike) over the baseline's.
    ratio: f64,
}

/// The `latency_shift` detector, run by the merger on each closed base window. It keeps at
/// most 4 × `max_subjects` baselines; samples of pairs beyond are counted, not judged.
pub(crate) struct LatencyShift {
    cfg: LatencyConfig,
    width_ns: u64,
    acc: Option<(u64, LatencyWindow)>,
    keys: FxHashMap<(LatencySubject, Measure), KeyState>,
    /// Subjects with an open alert: since when, and the measure it named last.
    open: BTreeMap<LatencySubject, (u64, Measure)>,
    /// Tenants whose servers shift together.
    tenants: TenantShift,
    /// Samples of (subject, measure) pairs beyond the 4 × `max_subjects` baselines kept.
    pub untracked: u64,
}

impl LatencyShift {
    /// A detector with these settings.
    pub fn new(cfg: LatencyConfig) -> LatencyShift {
        LatencyShift {
            width_ns: ((cfg.window_s * 1e9) as u64).max(1),
            acc: None,
            keys: FxHashMap::default(),
            open: BTreeMap::new(),
            tenants: TenantShift::new(cfg.tenant_min_servers, cfg.tenant_share),
            untracked: 0,
            cfg,
        }
    }

    /// Whether a measure of a subject has a baseline and enough samples in this window.
    fn judged(&self, key: (LatencySubject, Measure), cell: Option<&LatencyCell>) -> bool {
        cell.is_some_and(|c| c.hist.len() >= self.cfg.min_samples)
            && self
                .keys
                .get(&key)
                .is_some_and(|st| st.baseline(&self.cfg).is_some())
    }

    /// Judges one measure of one subject; learns the window into its baseline.
    fn judge_key(
        &mut self,
        key: (LatencySubject, Measure),
        cell: Option<&LatencyCell>,
    ) -> Option<Hot> {
        let cfg = &self.cfg;
        if !self.keys.contains_key(&key) && self.keys.len() >= cfg.max_subjects * 4 {
            self.untracked += cell.map_or(0, |c| c.hist.len());
            return None;
        }
        let st = self.keys.entry(key).or_default();
        let base = st.baseline(cfg);
        let count = cell.map_or(0, |c| c.hist.len());
        let mut hot = None;
        match (base, cell) {
            (Some(b), Some(c)) if count >= cfg.min_samples => {
                let p50 = c.hist.value_at_quantile(0.5);
                let delta = (cfg.min_delta_ms * 1000.0) as u64;
                let shifted = p50 as f64 >= cfg.factor * b.p50 as f64 && p50 >= b.p50 + delta;
                st.streak = if shifted { st.streak + 1 } else { 0 };
                st.idle = 0;
                if st.streak >= cfg.windows {
                    st.sustained = true;
                }
                let clear =
                    (p50 as f64) < cfg.clear_factor * b.p50 as f64 || p50 < b.p50 + delta / 2;
                if st.sustained && clear {
                    st.sustained = false;
                }
            }
            _ => {
                st.idle += 1;
                if st.idle >= cfg.idle_windows {
                    st.sustained = false;
                    st.streak = 0;
                }
            }
        }
        if let (Some(b), Some(c)) = (base, cell) {
            let max = c.hist.max();
            if st.sustained {
                hot = Some(Hot {
                    measure: key.1,
                    trigger: Trigger::Sustained,
                    base: b,
                    streak: st.streak,
                    ratio: c.hist.value_at_quantile(0.5) as f64 / b.p50 as f64,
                });
            } else if key.1.spikes()
                && max as f64 >= cfg.spike_min_ms * 1000.0
                && max as f64 >= cfg.spike_factor * b.p99 as f64
            {
                hot = Some(Hot {
                    measure: key.1,
                    trigger: Trigger::Spike,
                    base: b,
                    streak: st.streak,
                    ratio: max as f64 / b.p99 as f64,
                });
            }
        } else if let (true, Some(b)) = (st.sustained, base) {
            // Too few samples this window: the alert holds (until `idle_windows`).
            hot = Some(Hot {
                measure: key.1,
                trigger: Trigger::Sustained,
                base: b,
                streak: st.streak,
                ratio: 0.0,
            });
        }
        match cell {
            Some(c) if count > 0 => {
                st.quiet = 0;
                st.ring.push_back(Summary {
                    p50: c.hist.value_at_quantile(0.5),
                    p99: c.hist.value_at_quantile(0.99),
                    count,
                });
                if st.ring.len() > cfg.horizon() {
                    st.ring.pop_front();
                }
            }
            _ => st.quiet += 1,
        }
        hot
    }

    /// Judges one finished judgement window `[start, end)`.
    fn judge(&mut self, start: u64, w: LatencyWindow, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let end = start + self.width_ns;
        let mut keys: Vec<(LatencySubject, Measure)> =
            self.keys.keys().chain(w.cells.keys()).copied().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut hot: BTreeMap<LatencySubject, Hot> = BTreeMap::new();
        let mut judged = BTreeSet::new();
        for key in keys {
            let cell = w.cells.get(&key);
            if self.judged(key, cell) {
                judged.insert(key.0);
            }
            if let Some(h) = self.judge_key(key, cell) {
                let better = hot.get(&key.0).is_none_or(|o| {
                    (h.trigger == Trigger::Sustained, h.ratio)
                        > (o.trigger == Trigger::Sustained, o.ratio)
                });
                if better {
                    hot.insert(key.0, h);
                }
            }
        }
        let shifted: BTreeSet<LatencySubject> = hot
            .iter()
            .filter(|(s, h)| h.trigger == Trigger::Sustained && judged.contains(*s))
            .map(|(s, _)| *s)
            .collect();
        self.tenants.judge(
            &judged,
            &shifted,
            tenants,
            start,
            end,
            self.cfg.window_s,
            out,
        );
        let horizon = self.cfg.horizon();
        self.keys
            .retain(|k, st| st.sustained || st.quiet < horizon || hot.contains_key(&k.0));
        let window_s = self.cfg.window_s;
        for (subject, h) in &hot {
            let cell = w.cells.get(&(*subject, h.measure));
            let q = |x: f64| cell.map_or(0, |c| c.hist.value_at_quantile(x));
            let started = match h.trigger {
                Trigger::Sustained => {
                    start.saturating_sub(h.streak.saturating_sub(1) as u64 * self.width_ns)
                }
                Trigger::Spike => start,
            };
            let since = self.open.entry(*subject).or_insert((started, h.measure));
            since.1 = h.measure;
            let (value, threshold) = match h.trigger {
                Trigger::Sustained => (
                    q(0.5) as f64 / 1000.0,
                    (self.cfg.factor * h.base.p50 as f64 / 1000.0)
                        .max(h.base.p50 as f64 / 1000.0 + self.cfg.min_delta_ms),
                ),
                Trigger::Spike => (
                    cell.map_or(0, |c| c.hist.max()) as f64 / 1000.0,
                    self.cfg
                        .spike_min_ms
                        .max(self.cfg.spike_factor * h.base.p99 as f64 / 1000.0),
                ),
            };
            let critical = h.trigger == Trigger::Sustained && value >= self.cfg.critical_ms;
            out.push(Finding {
                kind: FindingKind::LatencyShift,
                active: true,
                tenant: Some(tenants.name(tenants.lookup(subject.0)).to_string()),
                subject: subject_name(subject),
                severity: if critical {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                started_ns: since.0,
                detected_ns: end,
                value,
                threshold,
                evidence: Evidence::LatencyShift(LatencyShiftEvidence {
                    baseline_p50_us: h.base.p50,
                    baseline_p99_us: h.base.p99,
                    baseline_samples: h.base.samples,
                    consecutive_windows: h.streak,
                    max_us: cell.map_or(0, |c| c.hist.max()),
                    measure: h.measure,
                    p50_us: q(0.5),
                    p90_us: q(0.9),
                    p99_us: q(0.99),
                    samples: cell.map_or(0, |c| c.hist.len()),
                    trigger: match h.trigger {
                        Trigger::Sustained => "sustained",
                        Trigger::Spike => "spike",
                    },
                    window_s,
                    worst: cell
                        .map(|c| {
                            c.worst
                                .iter()
                                .flatten()
                                .map(|s| WorstFlow {
                                    flow: flow_name(h.measure, s.flow),
                                    us: s.us,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
            });
        }
        let (keys, cfg) = (&self.keys, &self.cfg);
        self.open.retain(|subject, (since, measure)| {
            if hot.contains_key(subject) {
                return true;
            }
            let cell = w.cells.get(&(*subject, *measure));
            let base = keys
                .get(&(*subject, *measure))
                .and_then(|st| st.baseline(cfg))
                .map_or(0, |b| b.p50);
            out.push(Finding {
                kind: FindingKind::LatencyShift,
                active: false,
                tenant: Some(tenants.name(tenants.lookup(subject.0)).to_string()),
                subject: subject_name(subject),
                severity: Severity::Warning,
                started_ns: *since,
                detected_ns: end,
                value: cell.map_or(0, |c| c.hist.value_at_quantile(0.5)) as f64 / 1000.0,
                threshold: 0.0,
                evidence: Evidence::LatencyShiftResolved(LatencyShiftResolvedEvidence {
                    baseline_p50_us: base,
                    measure: *measure,
                    p50_us: cell.map_or(0, |c| c.hist.value_at_quantile(0.5)),
                    samples: cell.map_or(0, |c| c.hist.len()),
                    window_s,
                }),
            });
            false
        });
    }
}

/// `ADDR:PORT/tcp`, or `ADDR/icmp` (`ADDR/icmpv6`) for echo.
pub(crate) fn subject_name(s: &LatencySubject) -> String {
    match s.2 {
        6 => format!("{}/tcp", endpoint(s.0, s.1)),
        p => format!("{}/{}", s.0, proto_label(p)),
    }
}

fn flow_name(m: Measure, f: crate::window::FlowTuple) -> String {
    match m {
        Measure::Echo => format!(
            "{}->{}/{} id {} seq {}",
            f.0,
            f.2,
            proto_label(f.4),
            f.1,
            f.3
        ),
        _ => format!("{}->{}/tcp", endpoint(f.0, f.1), endpoint(f.2, f.3)),
    }
}

impl WindowDetector for LatencyShift {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let start = w.start_ns / self.width_ns * self.width_ns;
        if let Some((s, _)) = &self.acc {
            if *s != start {
                let (s, done) = self.acc.take().expect("checked");
                self.judge(s, done, tenants, out);
            }
        }
        let acc = self
            .acc
            .get_or_insert_with(|| (start, LatencyWindow::new(w.latency.capacity())));
        acc.1.merge(&w.latency);
    }

    fn finish(&mut self, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some((s, done)) = self.acc.take() {
            self.judge(s, done, tenants, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::latency::cells::Sample;
    use crate::testkit::{addr, SEC};

    const MS: u64 = 1000;

    fn cfg() -> LatencyConfig {
        LatencyConfig {
            window_s: 1.0,
            baseline_s: 60.0,
            ..LatencyConfig::default()
        }
    }

    /// Base window `i` with the given samples (µs) of `measure` on server `n`.
    fn window(i: u64, cells: &[(u8, Measure, &[u64])]) -> WindowStats {
        let mut w = WindowStats::new(i * SEC, (i + 1) * SEC, 16, 16, 16, 32);
        for (n, measure, samples) in cells {
            // Echo: the responder with port 0; its flow carries the id and sequence.
            let (port, proto) = if *measure == Measure::Echo {
                (0, 1)
            } else {
                (443, 6)
            };
            for (k, us) in samples.iter().enumerate() {
                w.latency.record(Sample {
                    subject: (addr(*n), port, proto),
                    measure: *measure,
                    us: *us,
                    flow: match proto {
                        1 => (addr(100), 7, addr(*n), k as u16, 1),
                        _ => (addr(100), 40000 + k as u16, addr(*n), 443, 6),
                    },
                });
            }
        }
        w
    }

    /// Feeds windows `from..to` made by `f`; returns the findings (the last window judged
    /// once the next one arrives, so `to` itself is not).
    fn feed(
        d: &mut LatencyShift,
        from: u64,
        to: u64,
        f: impl Fn(u64) -> WindowStats,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        for i in from..to {
            d.window(&f(i), &TenantMap::default(), &mut out);
        }
        out
    }

    const STEADY: [u64; 6] = [10 * MS, 11 * MS, 9 * MS, 12 * MS, 10 * MS, 10 * MS];
    const SLOW: [u64; 6] = [110 * MS, 111 * MS, 109 * MS, 112 * MS, 110 * MS, 110 * MS];

    #[test]
    fn a_sustained_shift_fires_on_the_third_window_and_resolves_when_back() {
        let mut d = LatencyShift::new(cfg());
        let steady = |i| {
            window(
                i,
                &[
                    (2, Measure::Response, &STEADY),
                    (3, Measure::Response, &STEADY),
                ],
            )
        };
        assert!(feed(&mut d, 0, 30, steady).is_empty());
        let shifted = |i| {
            window(
                i,
                &[
                    (2, Measure::Response, &SLOW),
                    (3, Measure::Response, &STEADY),
                ],
            )
        };
        let out = feed(&mut d, 30, 33, shifted);
        assert!(
            out.is_empty(),
            "two shifted windows are not enough: {out:?}"
        );
        let out = feed(&mut d, 33, 34, shifted);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(
            (f.subject.as_str(), f.active, f.severity),
            ("10.0.0.2:443/tcp", true, Severity::Warning)
        );
        assert_eq!((f.started_ns, f.detected_ns), (30 * SEC, 33 * SEC));
        let Evidence::LatencyShift(e) = &f.evidence else {
            panic!("{f:?}")
        };
        assert_eq!(
            (e.measure, e.trigger, e.consecutive_windows, e.samples),
            (Measure::Response, "sustained", 3, 6)
        );
        assert!(
            e.baseline_p50_us.abs_diff(10 * MS) < 200 && e.p50_us.abs_diff(110 * MS) < 2 * MS,
            "{e:?}"
        );
        assert_eq!(e.worst.len(), 3);
        assert!(
            e.worst[0].flow.ends_with("->10.0.0.2:443/tcp"),
            "{:?}",
            e.worst
        );
        let out = feed(&mut d, 34, 36, steady);
        assert_eq!(
            out.len(),
            2,
            "still firing for window 33, resolved on 34: {out:?}"
        );
        assert!(out[0].active && !out[1].active);
        assert!(
            matches!(&out[1].evidence, Evidence::LatencyShiftResolved(r) if r.measure == Measure::Response)
        );
    }

    #[test]
    fn nothing_is_judged_before_the_baseline_has_enough_samples() {
        let mut d = LatencyShift::new(cfg());
        // A server seen for the first time, slow from the start, with one very slow sample.
        let out = feed(&mut d, 0, 5, |i| {
            let s: &[u64] = if i == 3 {
                &[5_000 * MS, 200 * MS, 200 * MS, 200 * MS, 200 * MS]
            } else {
                &SLOW
            };
            window(i, &[(2, Measure::HandshakeServer, s)])
        });
        assert!(out.is_empty(), "{out:?}");
        // One sample a window: 30 windows before a baseline, then never 5 in a window.
        let mut d = LatencyShift::new(cfg());
        let out = feed(&mut d, 0, 60, |i| {
            let us = if i >= 40 && i % 2 == 0 {
                500 * MS
            } else {
                10 * MS
            };
            window(i, &[(2, Measure::Rst, &[us])])
        });
        assert!(out.is_empty(), "one sample a window never shifts: {out:?}");
    }

    #[test]
    fn a_spike_fires_in_its_window_only_against_a_baseline() {
        let mut d = LatencyShift::new(cfg());
        let echo = |i: u64| {
            let s: &[u64] = if i == 20 {
                &[300, 280, 1_500 * MS, 310, 290]
            } else {
                &[300, 280, 320, 310, 290]
            };
            window(i, &[(4, Measure::Echo, s)])
        };
        let out = feed(&mut d, 0, 23, echo);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].subject, "10.0.0.4/icmp");
        assert!(out[0].active && !out[1].active);
        assert_eq!(
            out[0].detected_ns,
            21 * SEC,
            "the end of the window of the sample"
        );
        let Evidence::LatencyShift(e) = &out[0].evidence else {
            panic!()
        };
        assert_eq!((e.trigger, e.measure), ("spike", Measure::Echo));
        assert!(e.max_us >= 1_500 * MS && e.worst[0].us == 1_500 * MS);
        assert_eq!(e.worst[0].flow, "10.0.0.100->10.0.0.4/icmp id 7 seq 2");
        // 900 ms is not 1 s: not a spike whatever the baseline.
        let mut d = LatencyShift::new(cfg());
        let out = feed(&mut d, 0, 22, |i| {
            let s: &[u64] = if i == 20 {
                &[300, 900 * MS, 310, 290, 300]
            } else {
                &[300, 280, 320, 310, 290]
            };
            window(i, &[(4, Measure::Echo, s)])
        });
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn one_alert_per_server_names_the_measure_that_moved_most() {
        let mut d = LatencyShift::new(cfg());
        let both = |i: u64| {
            let (r, h): (&[u64], &[u64]) = if i >= 20 {
                (&SLOW, &[40 * MS; 6])
            } else {
                (&STEADY, &STEADY)
            };
            window(
                i,
                &[(2, Measure::Response, r), (2, Measure::HandshakeServer, h)],
            )
        };
        let out = feed(&mut d, 0, 24, both);
        assert_eq!(out.len(), 1, "{out:?}");
        let Evidence::LatencyShift(e) = &out[0].evidence else {
            panic!()
        };
        assert_eq!(e.measure, Measure::Response, "11x beats 4x");
    }

    #[test]
    fn baselines_are_bounded_and_what_finds_no_room_is_counted() {
        let mut d = LatencyShift::new(LatencyConfig {
            max_subjects: 1,
            ..cfg()
        });
        let five = |i| {
            let cells: Vec<(u8, Measure, &[u64])> = (1..=5)
                .map(|n| (n, Measure::Response, &STEADY[..]))
                .collect();
            window(i, &cells)
        };
        feed(&mut d, 0, 3, five);
        assert_eq!(
            (d.keys.len(), d.untracked),
            (4, 12),
            "4 x max_subjects; 6 samples x 2 windows"
        );
    }

    #[test]
    fn a_median_of_a_second_or_more_is_critical() {
        let mut d = LatencyShift::new(cfg());
        let out = feed(&mut d, 0, 24, |i| {
            let s: &[u64] = if i >= 20 { &[1_200 * MS; 6] } else { &STEADY };
            window(i, &[(2, Measure::Response, s)])
        });
        let last = out.last().expect("fired");
        assert_eq!(last.severity, Severity::Critical);
    }
}
