//! Evidence captures: for every firing alert, a header-only pcap of the subject's packets
//! around detection, written to `DATA_DIR/evidence/<alert id>.pcap`.
//!
//! ```text
//!  ring owners (replay: the reader; live: each worker)  ── Recorder: a Ring of recent headers
//!       │  per packet: one bounded copy into the ring; following captures match the packet
//!       │  every CHECK_EVERY packets: one relaxed atomic load (new requests?)
//!  merger (Coordinator) ── Collector: firing alerts → requests in the Hub; finished captures
//!                          are merged by time, capped, written whole (temp file + rename)
//! ```
//!
//! A request takes from each ring the subject's packets of the `before_s` seconds before
//! detection (the newest half of `max_packets` at most), then follows the packets that
//! come until `after_s` past detection or `max_packets` in all. A ring that has finished
//! (end of input) is parked in the hub and serves later requests from what it holds, so a
//! replay's captures are complete when it exits. Memory: `ring_packets` × [`ring::SLOT_BYTES`]
//! per ring owner, and `max_packets` slots per capture following at once (`max_active`
//! per ring at most). Disk: `max_disk_mib` in all, the oldest files removed to make room.
mod config;
pub mod pcap;
pub mod ring;
mod subject;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tapwatch_capture::Frame;
use tapwatch_classifier::{Classifier, PacketMeta};
use tapwatch_rules::{AlertEvent, AlertKind, AlertState};

pub use config::EvidenceConfig;
use ring::{Ring, Slot};
use subject::Subject;

/// Packets between two looks for new requests on a ring owner.
const CHECK_EVERY: u32 = 1024;

/// Longest a paced reader waits for a merger that makes no progress, ms. A merger that
/// keeps closing windows is waited for however slow it is (a loaded machine starves it
/// for a while: a bound on the whole wait let the reader's ring run past packets an alert
/// still needed); one that made none for this long has stopped (an error), and the reader
/// waits for it no more: it slows the reader once, never stops it.
const MAX_STALL_MS: u32 = 2_000;

/// Alert ids remembered as captured in this run (a re-announced alert is not captured
/// again); the set is cleared when full.
const REMEMBERED: usize = 65_536;

/// What evidence captures cost and lost, for `/metrics` and the summary.
#[derive(Debug, Default)]
pub struct EvidenceStats {
    /// Capture files written.
    pub written: AtomicU64,
    /// Packets in them.
    pub packets: AtomicU64,
    /// Captures cut by `max_packets` (or not followed after detection: `max_active`).
    pub truncated: AtomicU64,
    /// Captures whose `before_s` reached past the oldest packet a ring still held.
    pub short_history: AtomicU64,
    /// Older capture files removed to stay within `max_disk_mib`.
    pub removed_for_disk: AtomicU64,
    /// Captures not written: a write failed, or the run ended before every ring answered.
    pub failed: AtomicU64,
    /// Packets whose headers were longer than a ring slot (kept cut at the slot).
    pub headers_cut: AtomicU64,
    /// Bytes of every ring's arena.
    pub ring_bytes: AtomicU64,
}

impl EvidenceStats {
    /// The counters as the summary's `evidence` object.
    pub fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "captures_written": g(&self.written),
            "packets_written": g(&self.packets),
            "captures_truncated": g(&self.truncated),
            "captures_short_history": g(&self.short_history),
            "files_removed_for_disk": g(&self.removed_for_disk),
            "captures_failed": g(&self.failed),
            "headers_cut": g(&self.headers_cut),
            "ring_bytes": g(&self.ring_bytes),
        })
    }
}

/// One alert's capture request.
#[derive(Debug)]
struct Request {
    id: String,
    subject: Subject,
    detected_ns: u64,
    from_ns: u64,
    until_ns: u64,
}

/// A capture being gathered from every ring.
#[derive(Default)]
struct Pending {
    detected_ns: u64,
    remaining: usize,
    slots: Vec<Slot>,
    truncated: bool,
    short: bool,
}

#[derive(Default)]
struct Inner {
    /// Requests not yet taken by every live ring owner: (sequence, request, owners left).
    log: Vec<(u64, Arc<Request>, usize)>,
    next_seq: u64,
    /// Rings whose owners have finished.
    parked: Vec<Ring>,
    /// Ring owners still reading.
    owners: usize,
    pending: HashMap<String, Pending>,
    done: Vec<(String, Pending)>,
}

/// Where requests meet ring owners: shared by the merger and every ring owner.
pub struct Hub {
    cfg: EvidenceConfig,
    classifier: Arc<Classifier>,
    dir: PathBuf,
    generation: AtomicU64,
    /// End of the last window the merger merged (event time, ns).
    merged_until: AtomicU64,
    inner: Mutex<Inner>,
    /// Counters.
    pub stats: Arc<EvidenceStats>,
}

impl Hub {
    /// A hub writing under `data_dir`, or none when captures are off.
    pub fn new(
        cfg: &EvidenceConfig,
        classifier: Arc<Classifier>,
        data_dir: &std::path::Path,
    ) -> Option<Arc<Hub>> {
        cfg.enabled.then(|| {
            Arc::new(Hub {
                cfg: cfg.clone(),
                classifier,
                dir: tapwatch_storage::evidence::under(data_dir),
                generation: AtomicU64::new(0),
                merged_until: AtomicU64::new(0),
                inner: Mutex::new(Inner::default()),
                stats: Arc::new(EvidenceStats::default()),
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ring owner: create every one before the first packet.
    pub fn recorder(self: &Arc<Hub>) -> Recorder {
        self.paced_recorder(None)
    }

    /// A ring owner that, when its ring is full, waits for the merger to come within
    /// `lag_ns` of its packets (replay with worker threads: the reader may run far ahead of
    /// the merger, and the ring must still hold the packets before an alert it has not
    /// raised yet). A file's captures then do not depend on thread timing as long as the
    /// ring holds `lag_ns` + `before_s` of traffic.
    pub fn paced_recorder(self: &Arc<Hub>, lag_ns: Option<u64>) -> Recorder {
        let ring = Ring::new(self.cfg.ring_packets);
        self.stats
            .ring_bytes
            .fetch_add(ring.bytes() as u64, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.owners += 1;
        Recorder {
            hub: Arc::clone(self),
            ring,
            next_seq: inner.next_seq,
            generation: self.generation.load(Ordering::Relaxed),
            active: Vec::new(),
            countdown: CHECK_EVERY,
            cut_seen: 0,
            lag_ns,
        }
    }

    /// Asks every ring for `id`'s packets; rings already parked answer now.
    fn submit(&self, req: Request) {
        let mut inner = self.lock();
        let mut p = Pending {
            detected_ns: req.detected_ns,
            remaining: inner.owners,
            ..Pending::default()
        };
        for ring in &inner.parked {
            let a = scan(
                ring,
                Arc::new(clone_request(&req)),
                &self.cfg,
                &self.classifier,
            );
            p.slots.extend(a.got);
            p.truncated |= a.truncated;
            p.short |= a.short;
        }
        let id = req.id.clone();
        if p.remaining == 0 {
            inner.done.push((id, p));
            return;
        }
        inner.pending.insert(id, p);
        let (seq, owners) = (inner.next_seq, inner.owners);
        inner.log.push((seq, Arc::new(req), owners));
        inner.next_seq += 1;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// One ring's part of a capture.
    fn contribute(&self, a: Active) {
        let mut inner = self.lock();
        let id = &a.req.id;
        let finished = match inner.pending.get_mut(id) {
            Some(p) => {
                p.slots.extend(a.got);
                p.truncated |= a.truncated;
                p.short |= a.short;
                p.remaining = p.remaining.saturating_sub(1);
                p.remaining == 0
            }
            None => false,
        };
        if finished {
            if let Some(p) = inner.pending.remove(id) {
                inner.done.push((id.clone(), p));
            }
        }
    }

    /// Requests logged since `seq`, taking them off the log once every owner has.
    fn take_new(&self, seq: &mut u64) -> Vec<Arc<Request>> {
        let mut inner = self.lock();
        let mut taken = Vec::new();
        for (s, req, left) in &mut inner.log {
            if *s >= *seq {
                taken.push(Arc::clone(req));
                *left -= 1;
            }
        }
        inner.log.retain(|e| e.2 > 0);
        *seq = inner.next_seq;
        taken
    }
}

fn clone_request(r: &Request) -> Request {
    Request {
        id: r.id.clone(),
        subject: r.subject.clone(),
        detected_ns: r.detected_ns,
        from_ns: r.from_ns,
        until_ns: r.until_ns,
    }
}

/// A capture one ring is gathering.
struct Active {
    req: Arc<Request>,
    got: Vec<Slot>,
    truncated: bool,
    short: bool,
}

/// The ring's packets of `req`: the newest half of `max_packets` before detection at
/// most, then those after it up to `max_packets` in all.
fn scan(ring: &Ring, req: Arc<Request>, cfg: &EvidenceConfig, c: &Classifier) -> Active {
    let tenants = c.tenants();
    let max = cfg.max_packets;
    let in_range = |s: &&Slot| s.ts_ns >= req.from_ns && s.ts_ns <= req.until_ns;
    let short =
        ring.len() == ring.capacity() && ring.iter().next().is_some_and(|s| s.ts_ns > req.from_ns);
    let before = ring
        .iter()
        .filter(in_range)
        .filter(|s| s.ts_ns <= req.detected_ns && req.subject.matches(s, tenants))
        .count();
    let mut skip = before.saturating_sub(max.div_ceil(2));
    let mut a = Active {
        got: Vec::with_capacity(max.min(ring.len())),
        truncated: skip > 0,
        short,
        req: Arc::clone(&req),
    };
    for s in ring.iter().filter(in_range) {
        if !req.subject.matches(s, tenants) {
            continue;
        }
        if s.ts_ns <= req.detected_ns && skip > 0 {
            skip -= 1;
            continue;
        }
        if a.got.len() >= max {
            a.truncated = true;
            break;
        }
        a.got.push(*s);
    }
    a
}

/// A ring owner's side: the ring, and the captures it follows. Not shared: one per
/// replay reader or live worker.
pub struct Recorder {
    hub: Arc<Hub>,
    ring: Ring,
    next_seq: u64,
    generation: u64,
    active: Vec<Active>,
    countdown: u32,
    cut_seen: u64,
    lag_ns: Option<u64>,
}

impl Recorder {
    /// Keeps one classified frame's headers; follows the captures under way. Per packet:
    /// one bounded copy, no allocation, no lock, no system call.
    #[inline]
    pub fn record(&mut self, frame: &Frame<'_>, m: &PacketMeta) {
        // The classifier says where the transport header ends (0: no IP header).
        if m.src.is_some() && m.headers_len > 0 {
            let n = usize::from(m.headers_len);
            self.ring.push(frame.link.to_linktype(), frame.data, n, m);
            if !self.active.is_empty() {
                self.follow();
            }
        }
        self.countdown -= 1;
        if self.countdown == 0 {
            self.tick(m.ts_ns);
        }
    }

    /// Looks for new requests and ends captures past their time (`now`: event time, ns);
    /// every [`CHECK_EVERY`] packets, and on a quiet link's clock.
    pub fn tick(&mut self, now: u64) {
        self.countdown = CHECK_EVERY;
        if self.ring.cut != self.cut_seen {
            let stats = &self.hub.stats;
            stats
                .headers_cut
                .fetch_add(self.ring.cut - self.cut_seen, Ordering::Relaxed);
            self.cut_seen = self.ring.cut;
        }
        let generation = self.hub.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            for req in self.hub.take_new(&mut self.next_seq) {
                self.start(req);
            }
        }
        self.expire(now);
        if let Some(lag) = self.lag_ns {
            self.wait_for_merger(now, lag);
        }
    }

    /// Waits while the ring is full and the merger is more than `lag` behind, as long as
    /// the merger makes progress; pacing ends for good after [`MAX_STALL_MS`] without any.
    fn wait_for_merger(&mut self, now: u64, lag: u64) {
        let merged = || self.hub.merged_until.load(Ordering::Acquire);
        let mut last = merged();
        let mut stalled = 0;
        while self.ring.len() == self.ring.capacity() && now > last.saturating_add(lag) {
            if stalled >= MAX_STALL_MS {
                self.lag_ns = None;
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            let m = merged();
            if m == last {
                stalled += 1;
            } else {
                last = m;
                stalled = 0;
            }
        }
    }

    fn start(&mut self, req: Arc<Request>) {
        let mut a = scan(&self.ring, req, &self.hub.cfg, &self.hub.classifier);
        let newest = self.ring.newest().map_or(0, |s| s.ts_ns);
        if a.got.len() >= self.hub.cfg.max_packets || newest > a.req.until_ns {
            self.hub.contribute(a);
        } else if self.active.len() >= self.hub.cfg.max_active {
            a.truncated = true;
            self.hub.contribute(a);
        } else {
            self.active.push(a);
        }
    }

    /// The newest packet against every capture being followed.
    fn follow(&mut self) {
        let Some(s) = self.ring.newest().copied() else {
            return;
        };
        let tenants = self.hub.classifier.tenants();
        let max = self.hub.cfg.max_packets;
        let mut i = 0;
        while i < self.active.len() {
            let a = &mut self.active[i];
            let over = s.ts_ns > a.req.until_ns;
            if !over && a.req.subject.matches(&s, tenants) {
                a.got.push(s);
            }
            if over || a.got.len() >= max {
                let a = self.active.swap_remove(i);
                self.hub.contribute(a);
            } else {
                i += 1;
            }
        }
    }

    fn expire(&mut self, now: u64) {
        let mut i = 0;
        while i < self.active.len() {
            if now > self.active[i].req.until_ns {
                let a = self.active.swap_remove(i);
                self.hub.contribute(a);
            } else {
                i += 1;
            }
        }
    }

    /// End of this owner's input: answers every request so far and parks the ring in the
    /// hub, where later requests find it.
    pub fn finish(mut self) {
        self.tick(0);
        for a in std::mem::take(&mut self.active) {
            self.hub.contribute(a);
        }
        loop {
            let mut inner = self.hub.lock();
            if inner.next_seq == self.next_seq {
                inner.owners -= 1;
                inner.parked.push(self.ring);
                return;
            }
            drop(inner);
            for req in self.hub.take_new(&mut self.next_seq) {
                let a = scan(&self.ring, req, &self.hub.cfg, &self.hub.classifier);
                self.hub.contribute(a);
            }
        }
    }
}

/// The merger's side: names the capture in each firing alert, asks the rings, and writes
/// the captures they have finished.
pub struct Collector {
    hub: Arc<Hub>,
    requested: HashSet<String>,
}

impl Collector {
    /// The collector of `hub`.
    pub fn new(hub: Arc<Hub>) -> Collector {
        Collector {
            hub,
            requested: HashSet::new(),
        }
    }

    /// Names the capture in every firing alert whose subject packets carry (isolation
    /// advice rides on the alert that has one) and requests it once per alert.
    pub fn alerts(&mut self, events: &mut [AlertEvent]) {
        let cfg = &self.hub.cfg;
        for e in events {
            if e.state != AlertState::Firing || e.kind == AlertKind::IsolationAdvice {
                continue;
            }
            let Some(subject) = Subject::parse(&e.subject, self.hub.classifier.tenants()) else {
                continue;
            };
            e.evidence_pcap = Some(tapwatch_storage::evidence::name_of(&e.id));
            if self.requested.len() >= REMEMBERED {
                self.requested.clear();
            }
            if !self.requested.insert(e.id.clone()) {
                continue;
            }
            self.hub.submit(Request {
                id: e.id.clone(),
                subject,
                detected_ns: e.detected_ns,
                from_ns: e.detected_ns.saturating_sub(cfg.before_ns()),
                until_ns: e.detected_ns.saturating_add(cfg.after_ns()),
            });
        }
        self.write_done();
    }

    /// A window merged up to `end_ns`: paced rings may move on; finished captures are
    /// written.
    pub fn window(&mut self, end_ns: u64) {
        self.hub.merged_until.store(end_ns, Ordering::Release);
        self.write_done();
    }

    /// Writes every capture the rings have finished.
    pub fn write_done(&mut self) {
        let done = std::mem::take(&mut self.hub.lock().done);
        for (id, p) in done {
            self.write(&id, p);
        }
    }

    fn write(&self, id: &str, mut p: Pending) {
        let (cfg, stats) = (&self.hub.cfg, &self.hub.stats);
        p.slots.sort_by_key(|s| s.ts_ns);
        let link = p.slots.first().map_or(1, |s| s.link);
        p.slots.retain(|s| s.link == link);
        // Parts of several rings: the newest before detection, the first after, capped.
        let max = cfg.max_packets;
        let before = p.slots.partition_point(|s| s.ts_ns <= p.detected_ns);
        let after = p.slots.len() - before;
        let keep_after = after.min(max - before.min(max.div_ceil(2)));
        let keep_before = before.min(max - keep_after);
        if keep_before < before || keep_after < after {
            p.truncated = true;
        }
        let slots = &p.slots[before - keep_before..before + keep_after];
        stats
            .truncated
            .fetch_add(u64::from(p.truncated), Ordering::Relaxed);
        stats
            .short_history
            .fetch_add(u64::from(p.short), Ordering::Relaxed);
        let bytes = pcap::encode(link, slots);
        let max_bytes = cfg.max_disk_mib.saturating_mul(1 << 20);
        match tapwatch_storage::evidence::write(&self.hub.dir, id, &bytes, max_bytes) {
            Ok(removed) => {
                stats.written.fetch_add(1, Ordering::Relaxed);
                stats
                    .packets
                    .fetch_add(slots.len() as u64, Ordering::Relaxed);
                stats.removed_for_disk.fetch_add(removed, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("evidence capture {id}: {e}");
            }
        }
    }

    /// End of the run (every ring parked): writes what is left; captures still waiting for
    /// a ring that never finished are counted as failed.
    pub fn finish(&mut self) {
        self.write_done();
        let left = std::mem::take(&mut self.hub.lock().pending);
        self.hub
            .stats
            .failed
            .fetch_add(left.len() as u64, Ordering::Relaxed);
    }

    /// The summary's `evidence`: the counters and the directory.
    pub fn report(&self) -> serde_json::Value {
        let mut v = self.hub.stats.json();
        v["dir"] = self.hub.dir.display().to_string().into();
        v
    }
}

#[cfg(test)]
mod tests {
    use tapwatch_analyzer::{Evidence, HeartbeatEvidence, Severity};
    use tapwatch_capture::LinkType;
    use tapwatch_classifier::ClassifierConfig;

    use super::*;

    /// An Ethernet/IPv4/UDP frame from `src` to 192.0.2.1:53 with 100 payload bytes.
    fn frame(src: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00, 0x45, 0, 0, 128, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend(src);
        f.extend([192, 0, 2, 1, 0x30, 0x39, 0, 53, 0, 108, 0, 0]);
        f.extend([0xee; 100]);
        f
    }

    fn alert(id: &str, subject: &str, detected_ns: u64) -> AlertEvent {
        AlertEvent {
            version: 1,
            kind: AlertKind::HeavyHitter,
            state: AlertState::Firing,
            id: id.into(),
            severity: Severity::Critical,
            tenant: None,
            subject: subject.into(),
            started_ns: detected_ns,
            detected_ns,
            value: 1.0,
            threshold: 0.5,
            evidence: tapwatch_rules::AlertEvidence::Finding(Evidence::Heartbeat(
                HeartbeatEvidence::default(),
            )),
            evidence_pcap: None,
        }
    }

    #[test]
    fn many_requests_each_get_their_subject_before_and_after_detection() {
        let dir = std::env::temp_dir().join(format!("tw-evidence-hub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = EvidenceConfig {
            ring_packets: 1024,
            before_s: 1.0,
            after_s: 1.0,
            max_packets: 40,
            max_active: 4,
            ..EvidenceConfig::default()
        };
        let classifier = Arc::new(Classifier::new(
            tapwatch_classifier::TenantMap::default(),
            &ClassifierConfig::default(),
        ));
        let hub = Hub::new(&cfg, Arc::clone(&classifier), &dir).unwrap();
        let mut rec = hub.recorder();
        let mut collector = Collector::new(Arc::clone(&hub));
        let frames: Vec<Vec<u8>> = (1..=10).map(|i| frame([10, 0, 0, i])).collect();
        let feed = |rec: &mut Recorder, from: u64, to: u64| {
            for t in from..to {
                let f = &frames[(t % 10) as usize];
                let fr = Frame {
                    ts_ns: t * 10_000_000,
                    wire_len: f.len() as u32,
                    link: LinkType::Ethernet,
                    interface: 0,
                    data: f,
                };
                rec.record(&fr, &classifier.classify(&fr));
            }
        };
        // 2 s of traffic, ten sources each every 100 ms; eight alerts at 1 s.
        feed(&mut rec, 1, 100);
        let mut events: Vec<AlertEvent> = (1..=8)
            .map(|i| alert(&format!("{i:016x}"), &format!("10.0.0.{i}"), 1_000_000_000))
            .collect();
        events.push(alert("00000000000000ff", "no-such-tenant", 1_000_000_000));
        collector.alerts(&mut events);
        assert!(events[..8].iter().all(|e| e.evidence_pcap.is_some()));
        assert_eq!(
            events[8].evidence_pcap, None,
            "nothing to match: nothing named"
        );
        // The ring owner's next look (every CHECK_EVERY packets) finds them.
        rec.tick(990_000_000);
        feed(&mut rec, 100, 300);
        rec.finish();
        collector.finish();
        let stats = collector.report();
        assert_eq!(stats["captures_written"], 8);
        assert_eq!(stats["captures_failed"], 0);
        // Four followed after detection; four beyond max_active only had the ring's.
        assert_eq!(stats["captures_truncated"], 4);
        for i in 1..=8u8 {
            let bytes = std::fs::read(dir.join(format!("evidence/{i:016x}.pcap"))).unwrap();
            let mut at = 24;
            let mut n = 0;
            while at < bytes.len() {
                let caplen =
                    u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
                let origlen = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap());
                assert_eq!(
                    (caplen, origlen),
                    (42, 142),
                    "headers only, wire length kept"
                );
                assert_eq!(bytes[at + 16 + 29], i, "the subject's packets only");
                at += 16 + caplen;
                n += 1;
            }
            // 10 before (1 s at 100 ms), and up to 10 after for those followed.
            assert!((10..=21).contains(&n), "{i}: {n}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
