//! The engine shared by `tapwatch replay` and `tapwatch run`.
//!
//! ```text
//!  frame source ─┬─ files: the dealer classifies and deals packets by flow hash (deal.rs)
//!                └─ live: one ring per worker, each worker classifies its own (live.rs)
//!  workers (N; 1 = inline, no threads): shard + totals              (worker.rs)
//!  merger stage (this module): merges closed windows, orders findings,
//!                rules → alert events, fans everything out to sinks  (sink.rs)
//! ```
//!
//! Results do not depend on the number of workers: a flow lives on one worker, every
//! worker is told when event time opens or closes a window, window-level detectors run on
//! windows merged from every worker, and a worker's findings reach the rules only once the
//! windows it had closed before making them are merged. The rules clock advances with
//! merged windows, in both modes.
mod deal;
pub mod sink;
mod worker;

use std::collections::{BTreeMap, VecDeque};

use tapwatch_analyzer::{Finding, Merger};
use tapwatch_classifier::Classifier;
use tapwatch_rules::{AlertEngine, AlertEvent, RulesConfig};

pub use deal::{deal_files, DealOptions};
pub use sink::{RunReport, Sink, WindowDone};
pub use worker::{Worker, WorkerOutput};

/// Starts a scoped thread with a name (`top -H`, profilers and panics show it).
pub fn spawn_named<'scope, 'env, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    name: String,
    f: impl FnOnce() -> T + Send + 'scope,
) -> anyhow::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(scope, f)
        .map_err(|e| anyhow::anyhow!("starting thread {name}: {e}"))
}

/// Periodic flows in subject order (every worker's list is; their union is not).
fn sort_by_subject(flows: &mut [serde_json::Value]) {
    flows.sort_by(|a, b| a["subject"].as_str().cmp(&b["subject"].as_str()));
}

/// Alert events kept for the summary at most.
const KEPT: usize = 200;

/// What the summary shows of the alerts.
#[derive(Debug, Default)]
pub struct AlertTally {
    /// Events so far (the first [`KEPT`]).
    pub kept: Vec<AlertEvent>,
    /// Events so far.
    pub total: u64,
}

/// The merger stage: merges windows from every worker, releases findings to the rules in
/// an order that does not depend on the number of workers, and feeds the sinks.
pub struct Coordinator {
    merger: Merger,
    rules: AlertEngine,
    sinks: Vec<Box<dyn Sink>>,
    /// Per worker: findings waiting for the windows their worker had closed before them.
    waiting: Vec<VecDeque<(u64, Finding)>>,
    /// Periodic-flow snapshots being gathered: per event time, workers heard and flows.
    snapshots: BTreeMap<u64, (usize, Vec<serde_json::Value>)>,
    findings: Vec<Finding>,
    /// Evidence captures of firing alerts, when on.
    evidence: Option<crate::evidence::Collector>,
    /// What the summary shows of the alerts.
    pub tally: AlertTally,
}

impl Coordinator {
    /// A merger stage for `workers` workers.
    pub fn new(
        merger: Merger,
        rules: &RulesConfig,
        workers: usize,
        sinks: Vec<Box<dyn Sink>>,
    ) -> anyhow::Result<Coordinator> {
        Ok(Coordinator {
            merger,
            rules: AlertEngine::new(rules.clone())?,
            sinks,
            waiting: (0..workers).map(|_| VecDeque::new()).collect(),
            snapshots: BTreeMap::new(),
            findings: Vec::new(),
            evidence: None,
            tally: AlertTally::default(),
        })
    }

    /// Names and requests an evidence capture for every firing alert from now on.
    pub fn set_evidence(&mut self, collector: crate::evidence::Collector) {
        self.evidence = Some(collector);
    }

    /// End of the last merged window (event time, ns; 0 before the first).
    fn merged_until(&self) -> u64 {
        self.merger.last_window.as_ref().map_or(0, |w| w.end_ns)
    }

    /// Takes one output of worker `worker`.
    pub fn handle(&mut self, worker: usize, out: WorkerOutput) -> anyhow::Result<()> {
        match out {
            WorkerOutput::Findings { tag, findings } => {
                if let Some(q) = self.waiting.get_mut(worker) {
                    q.extend(findings.into_iter().map(|f| (tag, f)));
                }
            }
            WorkerOutput::Window(w) => {
                let merged = self.merger.windows[0];
                self.merger.push(worker, *w, &mut self.findings);
                if self.merger.windows[0] != merged {
                    self.window_merged()?;
                }
            }
            WorkerOutput::Periodic { at_ns, flows, last } => {
                let workers = self.waiting.len();
                let entry = self.snapshots.entry(at_ns).or_default();
                entry.0 += 1;
                entry.1.extend(flows);
                if entry.0 >= workers {
                    if let Some((_, mut flows)) = self.snapshots.remove(&at_ns) {
                        sort_by_subject(&mut flows);
                        if !last {
                            flows.truncate(worker::SNAPSHOT_FLOWS);
                        }
                        self.periodic(flows, at_ns)?;
                    }
                }
            }
        }
        self.release()
    }

    /// Releases the findings whose windows are merged, worker by worker in their order.
    fn release(&mut self) -> anyhow::Result<()> {
        let until = self.merged_until();
        let mut ready = Vec::new();
        for q in &mut self.waiting {
            while q.front().is_some_and(|(tag, _)| *tag <= until) {
                ready.extend(q.pop_front().map(|(_, f)| f));
            }
        }
        self.publish(ready)
    }

    /// A base window was merged: its findings, the rules clock, then the sinks.
    fn window_merged(&mut self) -> anyhow::Result<()> {
        let findings = std::mem::take(&mut self.findings);
        self.publish(findings)?;
        let end = self.merged_until();
        let events = self.rules.tick(end);
        self.emit(events)?;
        if let Some(c) = &mut self.evidence {
            c.window(end);
        }
        self.sinks_window()
    }

    fn sinks_window(&mut self) -> anyhow::Result<()> {
        let (closed, growth) = self.merger.take_closed();
        let drops = self.merger.take_drop_rates();
        let log = self.merger.take_window_log();
        let done = WindowDone {
            merger: &self.merger,
            rules: &self.rules,
            closed: &closed,
            growth: &growth,
            drops: &drops,
            log: &log,
        };
        for s in &mut self.sinks {
            s.window(&done)?;
        }
        Ok(())
    }

    /// A snapshot of every worker's periodic flows (sorted by subject) to the sinks.
    fn periodic(&mut self, flows: Vec<serde_json::Value>, at_ns: u64) -> anyhow::Result<()> {
        for s in &mut self.sinks {
            s.periodic(&flows, at_ns)?;
        }
        Ok(())
    }

    /// Findings → alert events → sinks.
    fn publish(&mut self, findings: Vec<Finding>) -> anyhow::Result<()> {
        for f in findings {
            let events = self.rules.process(&f);
            self.emit(events)?;
        }
        Ok(())
    }

    fn emit(&mut self, mut events: Vec<AlertEvent>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(c) = &mut self.evidence {
            c.alerts(&mut events);
        }
        for s in &mut self.sinks {
            s.alerts(&events)?;
        }
        self.tally.total += events.len() as u64;
        let room = KEPT.saturating_sub(self.tally.kept.len());
        self.tally.kept.extend(events.into_iter().take(room));
        Ok(())
    }

    /// End of input (or shutdown): every worker has finished. Merges what is pending, runs
    /// the last rollups, releases every finding and held resolve, and closes the sinks.
    pub fn finish(&mut self) -> anyhow::Result<RunReport> {
        self.merger.finish(&mut self.findings);
        // Findings of shards first (they came before the windows merged now), then the
        // merger's, then the held resolves.
        let waiting: Vec<Finding> = self
            .waiting
            .iter_mut()
            .flat_map(|q| q.drain(..).map(|(_, f)| f))
            .collect();
        self.publish(waiting)?;
        let findings = std::mem::take(&mut self.findings);
        self.publish(findings)?;
        let events = self.rules.finish();
        self.emit(events)?;
        // The last rollups and anything merged just now.
        self.sinks_window()?;
        let snapshots = std::mem::take(&mut self.snapshots);
        for (at_ns, (_, mut flows)) in snapshots {
            sort_by_subject(&mut flows);
            self.periodic(flows, at_ns)?;
        }
        let mut report = RunReport::default();
        if let Some(c) = &mut self.evidence {
            c.finish();
            report.evidence = Some(c.report());
        }
        for s in &mut self.sinks {
            s.finish(&mut report)?;
        }
        Ok(report)
    }

    /// The merger (window counts, latency, fits).
    pub fn merger(&self) -> &Merger {
        &self.merger
    }

    /// The rules engine (open alerts, counts, suppressed events).
    pub fn rules(&self) -> &AlertEngine {
        &self.rules
    }

    /// Applies reloaded rules and labels (SIGHUP).
    pub fn reload(&mut self, rules: &RulesConfig, classifier: &Classifier) -> anyhow::Result<()> {
        self.rules.set_rules(rules.clone())?;
        self.merger.relabel(classifier);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use tapwatch_analyzer::AnalyzerConfig;

    use super::*;

    /// Snapshots seen: event time and subjects.
    type Seen = Rc<RefCell<Vec<(u64, Vec<String>)>>>;

    /// Keeps the periodic-flow snapshots it is given.
    struct Snapshots(Seen);

    impl Sink for Snapshots {
        fn periodic(&mut self, flows: &[serde_json::Value], at_ns: u64) -> anyhow::Result<()> {
            let subjects = flows.iter().map(|f| f["subject"].to_string()).collect();
            self.0.borrow_mut().push((at_ns, subjects));
            Ok(())
        }
    }

    fn flows(worker: usize, n: usize) -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| serde_json::json!({"subject": format!("{:05}-{worker}", i)}))
            .collect()
    }

    #[test]
    fn snapshots_wait_for_every_worker_and_stay_bounded_until_the_last() {
        let classifier = Classifier::default();
        let merger = Merger::new(&AnalyzerConfig::default(), &classifier, 2);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink: Box<dyn Sink> = Box::new(Snapshots(Rc::clone(&seen)));
        let mut c = Coordinator::new(merger, &RulesConfig::default(), 2, vec![sink]).unwrap();
        for (worker, last, at_ns) in [(0, false, 60), (1, false, 60), (1, true, 90), (0, true, 90)]
        {
            c.handle(
                worker,
                WorkerOutput::Periodic {
                    at_ns,
                    flows: flows(worker, 800),
                    last,
                },
            )
            .unwrap();
            if worker == 0 && at_ns == 60 {
                assert!(seen.borrow().is_empty(), "one worker is not a snapshot");
            }
        }
        let seen = seen.borrow();
        assert_eq!(seen.len(), 2);
        let (at, mid) = &seen[0];
        assert_eq!((*at, mid.len()), (60, worker::SNAPSHOT_FLOWS));
        assert!(mid.windows(2).all(|w| w[0] <= w[1]), "by subject");
        assert_eq!(seen[1].1.len(), 1600, "the last snapshot holds every flow");
    }
}
