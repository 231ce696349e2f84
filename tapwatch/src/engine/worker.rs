//! One worker of the engine: an analyzer shard and the whole-run totals of the packets it
//! was given. Replay workers are fed classified packets by the dealer; live workers
//! classify what their own ring hands them. Either way a worker sees every packet of its
//! flows (the flow hash is symmetric), so per-flow detectors need no cross-thread state.
use tapwatch_analyzer::{AnalyzerConfig, Finding, PacketHashes, Shard, Totals, WindowStats};
use tapwatch_classifier::{Classifier, PacketMeta};

/// What a worker hands the merger stage: never per packet, only when a detector spoke or a
/// window closed.
#[derive(Debug)]
pub enum WorkerOutput {
    /// Findings the shard made after it had closed every window ending at or before `tag`
    /// (event time, ns). The merger stage releases them to the rules only once it has
    /// merged those windows too, so their order against window-level findings is the same
    /// for any number of workers.
    Findings {
        /// End of the last window the worker had closed when it made them.
        tag: u64,
        /// The findings, in the order the shard made them.
        findings: Vec<Finding>,
    },
    /// A window the shard closed.
    Window(Box<WindowStats>),
    /// The worker's periodic flows at the end of an event-time snapshot period (at most
    /// [`SNAPSHOT_FLOWS`], first by subject), or all of them at the end of the run.
    Periodic {
        /// The snapshot's event time (ns): the end of the period, or of the run.
        at_ns: u64,
        /// Periodic flows and BFD sessions.
        flows: Vec<serde_json::Value>,
        /// Whether this is the run's last snapshot (not capped).
        last: bool,
    },
}

/// Periodic flows in a snapshot during the run at most (the first by subject over every
/// worker): the history stays bounded on a relay with many keepalives. The last snapshot
/// of a run holds them all.
pub const SNAPSHOT_FLOWS: usize = 1000;

/// A shard with its totals, and the outputs waiting to be handed on.
pub struct Worker {
    shard: Shard,
    totals: Totals,
    closed_until: u64,
    periodic_every_ns: u64,
    findings: Vec<Finding>,
    closed: Vec<WindowStats>,
    out: Vec<WorkerOutput>,
}

impl Worker {
    /// A worker for packets labelled by `classifier`; `periodic_every_s` is the event-time
    /// period of its periodic-flow snapshots (0: only at the end).
    pub fn new(cfg: &AnalyzerConfig, classifier: &Classifier, periodic_every_s: f64) -> Worker {
        Worker {
            shard: Shard::new(cfg, classifier),
            totals: Totals::new(classifier.type_count()),
            closed_until: 0,
            periodic_every_ns: (periodic_every_s.max(0.0) * 1e9) as u64,
            findings: Vec::new(),
            closed: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Feeds one packet with the hashes [`Worker::prefetch`] computed for it, at event time
    /// `now` (the packet's time, or later when the input's clock is already past it: the
    /// dealer's watermark in replay).
    #[inline]
    pub fn packet(&mut self, m: &PacketMeta, h: &PacketHashes, now: u64) {
        self.totals.add_hashed(m, h.source);
        if now > self.shard.now() {
            self.advance(now);
        }
        self.shard
            .observe_prefetched(m, h, &mut self.findings, &mut self.closed);
        if !self.findings.is_empty() || !self.closed.is_empty() {
            self.collect();
        }
    }

    /// A packet a few places ahead of the next one: computes its hashes and loads the
    /// flow-table entries it will touch (see [`Shard::prefetch`]).
    #[inline]
    pub fn prefetch(&self, m: &PacketMeta) -> PacketHashes {
        let h = self.shard.prefetch(m);
        if m.src.is_some() {
            self.totals.prefetch(h.source);
        }
        h
    }

    /// The second stage of [`Worker::prefetch`], a few places later (see
    /// [`Shard::prefetch_entries`](tapwatch_analyzer::Shard::prefetch_entries)).
    #[inline]
    pub fn prefetch_entries(&self, m: &PacketMeta, h: &PacketHashes) {
        self.shard.prefetch_entries(m, h);
    }

    /// Advances event time without a packet: deadlines fire, windows past the grace period
    /// close (the dealer's broadcast in replay, the wall clock on a quiet link).
    pub fn advance(&mut self, now: u64) {
        self.shard
            .advance(now, &mut self.findings, &mut self.closed);
        if !self.findings.is_empty() || !self.closed.is_empty() {
            self.collect();
        }
    }

    /// Closes every open window (end of input) and takes a last periodic-flow snapshot.
    pub fn finish(&mut self) {
        self.shard.finish(&mut self.closed);
        self.collect();
        let at_ns = self.closed_until.max(self.shard.now());
        self.out.push(WorkerOutput::Periodic {
            at_ns,
            flows: self.shard.periodic_flows(usize::MAX),
            last: true,
        });
    }

    /// Findings first (the shard made them before it closed these windows), then windows.
    fn collect(&mut self) {
        if !self.findings.is_empty() {
            self.out.push(WorkerOutput::Findings {
                tag: self.closed_until,
                findings: std::mem::take(&mut self.findings),
            });
        }
        let every = self.periodic_every_ns;
        for w in self.closed.drain(..) {
            let end = w.end_ns;
            let snapshot =
                every > 0 && self.closed_until > 0 && end / every > self.closed_until / every;
            self.out.push(WorkerOutput::Window(Box::new(w)));
            if snapshot {
                self.out.push(WorkerOutput::Periodic {
                    at_ns: end / every * every,
                    flows: self.shard.periodic_flows(SNAPSHOT_FLOWS),
                    last: false,
                });
            }
            self.closed_until = self.closed_until.max(end);
        }
    }

    /// Whether outputs are waiting.
    #[inline]
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Takes the waiting outputs, in the order they were made.
    pub fn drain(&mut self) -> std::vec::Drain<'_, WorkerOutput> {
        self.out.drain(..)
    }

    /// The shard (its counters and tracker sizes).
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The shard, to take new labels after a reload.
    pub fn shard_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }

    /// Whole-run totals of this worker's packets.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The worker's totals and shard, at the end of the run.
    pub fn into_parts(self) -> (Totals, Shard) {
        (self.totals, self.shard)
    }
}
