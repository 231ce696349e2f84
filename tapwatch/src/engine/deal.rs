//! Replay's frame source: one reader classifies every frame and deals the packets to the
//! workers by a symmetric flow hash (both directions of a flow go to the same worker, as
//! the kernel's `PACKET_FANOUT_HASH` does for live rings). With one worker there are no
//! threads: the reader feeds the worker and the merger stage inline.
//!
//! Event time is the reader's: every packet carries the reader's watermark, and whenever
//! the watermark opens or closes a window every worker is told first, so each shard sees
//! exactly the clock it would see alone and windows close at the same points for any
//! number of workers.
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use indicatif::ProgressBar;
use tapwatch_analyzer::sketch::prefetch_all;
use tapwatch_analyzer::{AnalyzerConfig, PacketHashes, Shard, Totals};
use tapwatch_capture::{FrameSource, Pacer};
use tapwatch_classifier::{Classifier, Fragment, PacketMeta};

use super::{Coordinator, Worker, WorkerOutput};
use crate::cpu::ThreadCpu;

/// Packets between progress updates.
const PROGRESS_EVERY: u64 = 1 << 14;
/// Items a worker is handed at once.
const BATCH: usize = 1024;
/// Batches in flight to one worker before the reader waits.
const QUEUE: usize = 4;

/// How a replay is dealt.
pub struct DealOptions<'a> {
    /// Labels packets.
    pub classifier: &'a Classifier,
    /// Detector settings.
    pub analyzer: &'a AnalyzerConfig,
    /// Workers (1: inline, no threads).
    pub workers: usize,
    /// Event-time period of periodic-flow snapshots, seconds (0: only at the end).
    pub periodic_every_s: f64,
    /// Paces the reader (`--pace`).
    pub pacer: &'a mut Pacer,
    /// Progress display.
    pub bar: &'a ProgressBar,
    /// Print one line per packet on standard error.
    pub print_packets: bool,
    /// Set to stop reading early (SIGINT/SIGTERM); windows seen so far are finished.
    pub stop: &'a AtomicBool,
    /// Keeps recent headers for evidence captures (the reader's ring), when on.
    pub evidence: Option<&'a mut crate::evidence::Recorder>,
}

/// What the workers counted, once the replay is over.
pub struct Dealt {
    /// Whole-run totals of every worker.
    pub totals: Totals,
    /// Every worker's shard, for its counters.
    pub shards: Vec<Shard>,
    /// CPU time of the reader and worker threads (none with one worker: the caller's
    /// thread did it all).
    pub threads: Vec<ThreadCpu>,
}

/// The reader's event-time clock: tells when every worker must be told the time.
struct Clock {
    width_ns: u64,
    grace_ns: u64,
    watermark: u64,
    open: u64,
    close: u64,
    /// The watermark at which `open` or `close` next changes: below it a packet costs no
    /// division.
    next_edge: u64,
}

impl Clock {
    fn new(cfg: &AnalyzerConfig) -> Clock {
        Clock {
            // The shards' own window arithmetic: the clock must agree with it exactly.
            width_ns: cfg.window_ns(),
            grace_ns: cfg.grace_ns(),
            watermark: 0,
            open: u64::MAX,
            close: u64::MAX,
            next_edge: 0,
        }
    }

    /// Moves the watermark to `ts`; true when that opens or closes a window.
    #[inline]
    fn advance(&mut self, ts: u64) -> bool {
        if ts <= self.watermark && self.open != u64::MAX {
            return false;
        }
        self.watermark = self.watermark.max(ts);
        if self.watermark < self.next_edge {
            return false;
        }
        let open = self.watermark / self.width_ns;
        let close = self.watermark.saturating_sub(self.grace_ns) / self.width_ns;
        // The next window opens at the next multiple of the width; the oldest open one
        // closes a grace period after its end.
        self.next_edge = (open + 1).saturating_mul(self.width_ns).min(
            (close + 1)
                .saturating_mul(self.width_ns)
                .saturating_add(self.grace_ns),
        );
        if open == self.open && close == self.close {
            return false;
        }
        self.open = open;
        self.close = close;
        true
    }
}

/// The worker a packet belongs to: a hash of its flow that is the same in both directions.
/// Worker 0 shares the reader's thread, so it is dealt half the flows of any other: the
/// hash picks one of `2 × workers − 1` equal parts, part 0 for worker 0 and two for each
/// other worker.
#[inline]
pub fn worker_of(m: &PacketMeta, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let (Some(src), Some(dst)) = (m.src, m.dst) else {
        return 0;
    };
    let (sp, dp) = if m.fragment == Fragment::Later {
        (0, 0)
    } else {
        (m.src_port, m.dst_port)
    };
    let h = tapwatch_classifier::flow_hash(src, sp, dst, dp, m.ip_proto);
    // Multiply-shift onto the parts (no division on the hot path).
    let part = ((u128::from(h) * (2 * workers - 1) as u128) >> 64) as usize;
    part.div_ceil(2)
}

/// Packets a worker looks ahead in its batch to load their tables (far enough for a miss
/// to the memory to complete while the packets in between are worked).
const AHEAD: usize = 6;
/// Packets ahead at which a worker loads the entries of known flows, found in the index
/// lines loaded [`AHEAD`] packets before their turn (the second stage of a probe).
const ENTRIES_AHEAD: usize = AHEAD / 2;
/// Items a worker looks ahead in a dealt batch to load the item itself: the reader wrote it
/// on another core, and reading it for its tables' load, AHEAD places before its turn,
/// would stall on that transfer.
const ITEM_AHEAD: usize = 4 * AHEAD;

/// Works a batch of items on `w`, handing each output to `emit` as soon as it is made.
#[inline]
fn feed(
    w: &mut Worker,
    batch: &[Item],
    mut emit: impl FnMut(WorkerOutput) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Each packet's hashes are computed when its tables are loaded, AHEAD packets before
    // its turn, and kept here until then. The batch's first packets have no packet AHEAD
    // places before them: loaded here.
    let mut ahead = [PacketHashes::default(); AHEAD];
    for (slot, item) in ahead.iter_mut().zip(batch) {
        if let Item::Packet(m, _) = item {
            *slot = w.prefetch(m);
        }
    }
    for far in batch.iter().take(ITEM_AHEAD) {
        prefetch_all(std::slice::from_ref(far));
    }
    for (i, item) in batch.iter().enumerate() {
        let h = ahead[i % AHEAD];
        if let Some(far) = batch.get(i + ITEM_AHEAD) {
            prefetch_all(std::slice::from_ref(far));
        }
        if let Some(Item::Packet(near, _)) = batch.get(i + ENTRIES_AHEAD) {
            w.prefetch_entries(near, &ahead[(i + ENTRIES_AHEAD) % AHEAD]);
        }
        if let Some(Item::Packet(next, _)) = batch.get(i + AHEAD) {
            ahead[i % AHEAD] = w.prefetch(next);
        }
        match item {
            Item::Packet(m, now) => work(w, m, &h, *now, &mut emit)?,
            Item::Advance(now) => advance(w, *now, &mut emit)?,
        }
    }
    Ok(())
}

/// The one-worker loop's packets in flight: a packet's hashes are computed and its tables
/// loaded as soon as it is read, and it is worked [`AHEAD`] packets later. Every packet
/// gets the same lead (a batch's first packets get none), and the records stay in the L1
/// cache between the two.
struct Lookahead {
    ring: [(PacketMeta, u64, PacketHashes); AHEAD],
    /// Where the next packet goes; once the ring is full, the slot of the oldest.
    next: usize,
    full: bool,
}

impl Lookahead {
    fn new() -> Lookahead {
        Lookahead {
            ring: [(PacketMeta::empty(0, 0, 0, 0), 0, PacketHashes::default()); AHEAD],
            next: 0,
            full: false,
        }
    }

    /// Takes a packet read at event time `now`; works the oldest one when the ring is full,
    /// handing its outputs to `emit`.
    #[inline]
    fn push(
        &mut self,
        w: &mut Worker,
        meta: &PacketMeta,
        now: u64,
        emit: &mut impl FnMut(WorkerOutput) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let slot = self.next;
        if self.full {
            let (m, at, h) = &self.ring[slot];
            work(w, m, h, *at, emit)?;
        }
        self.ring[slot] = (*meta, now, w.prefetch(meta));
        self.next = if slot + 1 == AHEAD { 0 } else { slot + 1 };
        self.full |= self.next == 0;
        // The packet worked ENTRIES_AHEAD pushes from now (the oldest is worked at the next).
        if self.full {
            let (m, _, h) = &self.ring[(self.next + ENTRIES_AHEAD - 1) % AHEAD];
            w.prefetch_entries(m, h);
        }
        Ok(())
    }

    /// Works every packet in flight, oldest first.
    fn flush(
        &mut self,
        w: &mut Worker,
        emit: &mut impl FnMut(WorkerOutput) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let (start, n) = if self.full {
            (self.next, AHEAD)
        } else {
            (0, self.next)
        };
        for k in 0..n {
            let (m, at, h) = &self.ring[(start + k) % AHEAD];
            work(w, m, h, *at, emit)?;
        }
        self.next = 0;
        self.full = false;
        Ok(())
    }
}

/// Works one packet on `w` and hands its outputs to `emit`.
#[inline]
fn work(
    w: &mut Worker,
    m: &PacketMeta,
    h: &PacketHashes,
    now: u64,
    emit: &mut impl FnMut(WorkerOutput) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    w.packet(m, h, now);
    if w.has_output() {
        for out in w.drain() {
            emit(out)?;
        }
    }
    Ok(())
}

/// Moves `w`'s event time to `now` and hands its outputs to `emit`.
fn advance(
    w: &mut Worker,
    now: u64,
    emit: &mut impl FnMut(WorkerOutput) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    w.advance(now);
    for out in w.drain() {
        emit(out)?;
    }
    Ok(())
}

/// What a worker is handed.
enum Item {
    Packet(PacketMeta, u64),
    Advance(u64),
}

/// Reads `source` to its end (or until `stop`), classifying each frame; calls `deal` with
/// each packet, the reader's watermark, and whether every worker must be told the time
/// first. Returns the packets read.
fn read<S: FrameSource>(
    source: &mut S,
    o: &mut DealOptions<'_>,
    mut deal: impl FnMut(&PacketMeta, u64, bool) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut clock = Clock::new(o.analyzer);
    let mut packets = 0u64;
    let mut next_tick = PROGRESS_EVERY;
    // One record, filled in place frame after frame.
    let mut meta = PacketMeta::empty(0, 0, 0, 0);
    while let Some(frame) = source.next_frame()? {
        o.pacer.wait(frame.ts_ns);
        o.classifier.classify_into(&frame, &mut meta);
        if let Some(r) = o.evidence.as_deref_mut() {
            r.record(&frame, &meta);
        }
        let tell_all = clock.advance(meta.ts_ns);
        deal(&meta, clock.watermark, tell_all)?;
        packets += 1;
        if o.print_packets {
            let line = crate::packets::packet_line(o.classifier, &meta);
            // A closed standard error (`2>&1 | head`) ends the run quietly, never a panic.
            o.bar
                .suspend(|| writeln!(std::io::stderr().lock(), "{packets:>7} {line}"))
                .context("printing packets to standard error")?;
        }
        if packets >= next_tick {
            next_tick += PROGRESS_EVERY;
            o.bar.set_position(source.position());
            o.bar.set_message(format!("{packets} packets"));
        }
        if o.stop.load(Ordering::Relaxed) {
            tracing::warn!("stopped after {packets} packets; finishing the windows seen");
            break;
        }
    }
    Ok(packets)
}

/// Replays `source` through `o.workers` workers into `coordinator`. Worker 0 shares the
/// reader's thread (the reader works its batches between reads; it is dealt a smaller part
/// of the flows, see [`worker_of`]), the others have a thread each: as many busy threads as
/// workers, so on a machine with as many cores none waits for a core the reader holds.
pub fn deal_files<S: FrameSource + Send>(
    source: &mut S,
    mut o: DealOptions<'_>,
    coordinator: &mut Coordinator,
) -> anyhow::Result<Dealt> {
    if o.workers <= 1 {
        return inline(source, o, coordinator);
    }
    let workers = o.workers;
    let (cfg, classifier, periodic) = (o.analyzer, o.classifier, o.periodic_every_s);
    std::thread::scope(|scope| -> anyhow::Result<Dealt> {
        let (out_tx, out_rx) = mpsc::channel();
        let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<Item>>();
        // Queues and threads of workers 1.. (worker 0 is the reader's).
        let mut queues = Vec::with_capacity(workers - 1);
        let mut handles = Vec::with_capacity(workers - 1);
        for id in 1..workers {
            let (tx, rx) = mpsc::sync_channel::<Vec<Item>>(QUEUE);
            let (out_tx, recycle_tx) = (out_tx.clone(), recycle_tx.clone());
            handles.push(super::spawn_named(
                scope,
                format!("tw-worker-{id}"),
                move || {
                    let mut w = Worker::new(cfg, classifier, periodic);
                    for mut batch in rx {
                        let _ = feed(&mut w, &batch, |out| {
                            let _ = out_tx.send((id, out));
                            Ok(())
                        });
                        batch.clear();
                        let _ = recycle_tx.send(batch);
                    }
                    w.finish();
                    for out in w.drain() {
                        let _ = out_tx.send((id, out));
                    }
                    let (totals, shard) = w.into_parts();
                    (
                        totals,
                        shard,
                        ThreadCpu::of_this_thread("its share of the flows"),
                    )
                },
            )?);
            queues.push(tx);
        }
        drop(recycle_tx);
        let stop = o.stop;
        let reader = super::spawn_named(scope, "tw-reader".into(), move || {
            let mut own = Worker::new(cfg, classifier, periodic);
            let emit = |out| {
                let _ = out_tx.send((0, out));
                Ok(())
            };
            let mut batches: Vec<Vec<Item>> =
                (0..workers).map(|_| Vec::with_capacity(BATCH)).collect();
            let fresh = |recycle: &mpsc::Receiver<Vec<Item>>| {
                recycle
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH))
            };
            // Hands worker `id` its batch: worked here for worker 0, else sent.
            let mut hand = |id: usize, batch: &mut Vec<Item>| -> anyhow::Result<()> {
                if id == 0 {
                    feed(&mut own, batch, emit)?;
                    batch.clear();
                    return Ok(());
                }
                let full = std::mem::replace(batch, fresh(&recycle_rx));
                queues[id - 1]
                    .send(full)
                    .map_err(|_| anyhow::anyhow!("a replay worker stopped early"))
            };
            let packets = read(source, &mut o, |meta, now, tell_all| {
                if tell_all {
                    for (id, batch) in batches.iter_mut().enumerate() {
                        batch.push(Item::Advance(now));
                        // Flush on every window edge: the merger hears from each worker
                        // at least once a window, however its flows are spread.
                        hand(id, batch)?;
                    }
                }
                let id = worker_of(meta, workers);
                let batch = &mut batches[id];
                batch.push(Item::Packet(*meta, now));
                if batch.len() >= BATCH {
                    hand(id, batch)?;
                }
                Ok(())
            });
            // The packets read before an error are worked and handed on before it is
            // reported.
            for (id, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    let _ = hand(id, batch);
                }
            }
            own.finish();
            for out in own.drain() {
                let _ = out_tx.send((0, out));
            }
            let cpu = ThreadCpu::of_this_thread("reading, classifying, dealing; worker 0's flows");
            (packets, own.into_parts(), cpu)
        })?;
        let mut failed = None;
        for (id, out) in out_rx {
            if failed.is_none() {
                if let Err(e) = coordinator.handle(id, out) {
                    stop.store(true, Ordering::Relaxed);
                    failed = Some(e);
                }
            }
        }
        let (read, own, reader_cpu) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the replay reader panicked"))?;
        let mut totals = Totals::new(classifier.type_count());
        let mut shards = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        totals.merge(&own.0);
        shards.push(own.1);
        threads.push(reader_cpu);
        for h in handles {
            let (t, s, cpu) = h
                .join()
                .map_err(|_| anyhow::anyhow!("a replay worker panicked"))?;
            totals.merge(&t);
            shards.push(s);
            threads.push(cpu);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        read.context("reading the capture")?;
        Ok(Dealt {
            totals,
            shards,
            threads,
        })
    })
}

/// One worker, no threads: the reader feeds the worker and the merger stage in turn.
fn inline<S: FrameSource>(
    source: &mut S,
    mut o: DealOptions<'_>,
    coordinator: &mut Coordinator,
) -> anyhow::Result<Dealt> {
    let mut w = Worker::new(o.analyzer, o.classifier, o.periodic_every_s);
    // Packets are worked a few behind the reader, so that the worker can load the tables of
    // the packets ahead (outputs reach the merger stage in the same order as packet by
    // packet). A window edge works the packets in flight first, as the dealer does for its
    // workers: windows close and findings reach the merger stage at once.
    let mut ahead = Lookahead::new();
    let mut emit = |out| coordinator.handle(0, out);
    let read_all = read(source, &mut o, |meta, now, tell_all| {
        if tell_all {
            ahead.flush(&mut w, &mut emit)?;
            advance(&mut w, now, &mut emit)?;
        }
        ahead.push(&mut w, meta, now, &mut emit)
    });
    // The packets read before an error are worked and handed on before it is reported.
    ahead.flush(&mut w, &mut emit)?;
    read_all?;
    w.finish();
    for out in w.drain() {
        coordinator.handle(0, out)?;
    }
    let (totals, shard) = w.into_parts();
    Ok(Dealt {
        totals,
        shards: vec![shard],
        threads: Vec::new(),
    })
}
