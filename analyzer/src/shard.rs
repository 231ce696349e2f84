//! One worker's analyzer state: open windows, heartbeat deadlines, pending handshakes.
//!
//! A shard is fed the packets its worker classified, in (roughly) event-time order. It
//! updates the open window inline — no lock, channel or allocation per packet — and hands
//! closed windows and immediate findings (missed heartbeats) to the caller.
use std::collections::VecDeque;

use tapwatch_classifier::{Classifier, Fragment, PacketMeta};

use crate::config::AnalyzerConfig;
use crate::detect::{PacketDetectors, PacketHashes};
use crate::finding::Finding;
use crate::labels::Labels;
use crate::window::{SourceClass, WindowStats};

/// Windows a jump forward in time may create before the shard skips ahead instead.
const MAX_EMPTY_WINDOWS: u64 = 600;

/// Counters of the shard itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardCounters {
    /// Packets seen.
    pub packets: u64,
    /// Packets later than the grace period (not in any window).
    pub late: u64,
    /// Jumps forward in event time too long to fill with empty windows.
    pub time_jumps: u64,
}

/// Work a shard turned away because a bounded table was full: packets or handshakes that
/// were seen but not tracked. Each counter only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostWork {
    /// Packets of flows the heartbeat table had no room for (`heartbeat.max_flows`).
    pub heartbeat_untracked: u64,
    /// SYNs of handshakes the pending table had no room for (`handshake.max_pending`).
    pub handshake_untracked: u64,
    /// TCP flows the latency table had no room for (`latency.max_flows`).
    pub latency_flows_untracked: u64,
    /// Echo requests the latency table had no room for (`latency.max_echo`).
    pub latency_echo_untracked: u64,
    /// Latency samples whose (server, measure) had no room in the window
    /// (`latency.max_subjects`).
    pub latency_samples_untracked: u64,
    // flow health (issue 14)
    /// TCP flows the retransmission table had no room for (`retransmits.max_flows`): a live
    /// flow replaced, or a new flow's SYN turned away.
    pub retransmit_flows_evicted: u64,
    /// HTTP upgrade requests the pending table had no room for (`upgrade_failure.max_pending`).
    pub upgrades_untracked: u64,
}

/// The sum of two shards' counts.
impl std::ops::Add for LostWork {
    type Output = LostWork;

    fn add(self, o: LostWork) -> LostWork {
        LostWork {
            heartbeat_untracked: self.heartbeat_untracked + o.heartbeat_untracked,
            handshake_untracked: self.handshake_untracked + o.handshake_untracked,
            latency_flows_untracked: self.latency_flows_untracked + o.latency_flows_untracked,
            latency_echo_untracked: self.latency_echo_untracked + o.latency_echo_untracked,
            latency_samples_untracked: self.latency_samples_untracked + o.latency_samples_untracked,
            retransmit_flows_evicted: self.retransmit_flows_evicted + o.retransmit_flows_evicted,
            upgrades_untracked: self.upgrades_untracked + o.upgrades_untracked,
        }
    }
}

/// Per-worker analyzer state.
pub struct Shard {
    cfg: AnalyzerConfig,
    width_ns: u64,
    grace_ns: u64,
    open: VecDeque<WindowStats>,
    watermark: u64,
    /// Event time at which [`Shard::advance`] next has window work to do.
    next_edge_ns: u64,
    detectors: PacketDetectors,
    labels: Labels,
    /// The shard's own counters.
    pub counters: ShardCounters,
}

impl Shard {
    /// A shard for packets labelled by `classifier`.
    pub fn new(cfg: &AnalyzerConfig, classifier: &Classifier) -> Shard {
        Shard {
            width_ns: cfg.window_ns(),
            grace_ns: cfg.grace_ns(),
            open: VecDeque::new(),
            watermark: 0,
            next_edge_ns: 0,
            detectors: PacketDetectors::new(cfg),
            labels: Labels::new(cfg, classifier),
            counters: ShardCounters::default(),
            cfg: cfg.clone(),
        }
    }

    /// Takes new labels after a reload (tenant names, protocol types that count as setups).
    /// Windows in flight keep the tenant indices they were counted under.
    pub fn relabel(&mut self, classifier: &Classifier) {
        self.labels = self.labels.next(&self.cfg, classifier);
    }

    /// Event time as far as this shard has seen it.
    pub fn now(&self) -> u64 {
        self.watermark
    }

    /// Heartbeat flows tracked (all, periodic).
    pub fn heartbeat_flows(&self) -> (usize, usize) {
        (
            self.detectors.heartbeat.len(),
            self.detectors.heartbeat.periodic(),
        )
    }

    /// Periodic flows and BFD sessions with their last gap (for status views).
    pub fn periodic_flows(&self, limit: usize) -> Vec<serde_json::Value> {
        self.detectors.heartbeat.periodic_list(limit)
    }

    /// Handshakes in progress.
    pub fn pending_handshakes(&self) -> usize {
        self.detectors.handshake.len()
    }

    /// What the shard's bounded tables turned away so far.
    pub fn lost_work(&self) -> LostWork {
        LostWork {
            heartbeat_untracked: self.detectors.heartbeat.untracked,
            handshake_untracked: self.detectors.handshake.untracked,
            latency_flows_untracked: self.detectors.latency.flows_untracked(),
            latency_echo_untracked: self.detectors.latency.echo_untracked(),
            latency_samples_untracked: self.detectors.latency.subjects_untracked
                + self.detectors.handshake.samples_untracked,
            retransmit_flows_evicted: self.detectors.retransmits.flows.evicted,
            upgrades_untracked: self.detectors.upgrade.untracked,
        }
    }

    fn new_window(&self, index: u64) -> WindowStats {
        let start = index * self.width_ns;
        let mut w = WindowStats::new(
            start,
            start + self.width_ns,
            self.cfg.heavy_hitters.sketch_capacity,
            self.cfg.setup_growth.exact_nodes,
            self.cfg.handshake.max_servers,
            self.labels.type_count(),
        );
        w.latency = crate::detect::latency::LatencyWindow::new(self.cfg.latency.max_subjects);
        w
    }

    /// A packet a few places ahead of the one being observed: computes its table hashes
    /// and loads the flow-table entries it will touch, so that the cache misses of many
    /// packets overlap. The hashes go back in with the packet
    /// ([`Shard::observe_prefetched`]).
    #[inline]
    pub fn prefetch(&self, m: &PacketMeta) -> PacketHashes {
        let h = PacketHashes::of(m);
        if m.weight <= 1 {
            self.detectors.prefetch(m, &h);
        }
        // The newest window: where a packet in time order is counted.
        if let Some(w) = self.open.back() {
            w.prefetch(m, &h);
        }
        h
    }

    /// The second stage of [`Shard::prefetch`], for the same packet a few places later
    /// (about half as far ahead): loads the table entries of its known flows, found in the
    /// index lines the first stage loaded. Only packets with hashes from
    /// [`Shard::prefetch`] are given here.
    #[inline]
    pub fn prefetch_entries(&self, m: &PacketMeta, h: &PacketHashes) {
        if m.weight <= 1 {
            self.detectors.prefetch_entries(m, h);
        }
    }

    /// Feeds one classified packet.
    #[inline]
    pub fn observe(
        &mut self,
        m: &PacketMeta,
        findings: &mut Vec<Finding>,
        closed: &mut Vec<WindowStats>,
    ) {
        self.observe_prefetched(m, &PacketHashes::of(m), findings, closed);
    }

    /// [`Shard::observe`] of a packet whose hashes [`Shard::prefetch`] computed.
    #[inline]
    pub fn observe_prefetched(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        findings: &mut Vec<Finding>,
        closed: &mut Vec<WindowStats>,
    ) {
        self.counters.packets += 1;
        if m.ts_ns > self.watermark {
            self.advance(m.ts_ns, findings, closed);
        }
        let mut window = window_at(&mut self.open, self.width_ns, m.ts_ns);
        if window.is_none() {
            self.counters.late += 1;
        }
        // Per-packet detectors follow flows packet by packet (deadlines, handshakes,
        // sequences): a sampled record (weight > 1) is not the flow's next packet.
        if m.weight <= 1 {
            self.detectors
                .packet(m, h, window.as_deref_mut(), &self.labels, findings);
        }
        let Some(w) = window else { return };
        let weight = u64::from(m.weight);
        let bytes = u64::from(m.wire_len) * weight;
        w.packets += weight;
        w.samples += 1;
        w.bytes += bytes;
        w.traffic.add(
            m.tenant,
            m.kind,
            SourceClass::of(m.src),
            m.size_class,
            m.wire_len,
            weight,
        );
        let Some(src) = m.src else { return };
        if m.malformed.is_some() {
            return;
        }
        // The addresses' hashes (computed once, at prefetch) serve every sketch keyed by
        // them or by keys built from them.
        let hs = h.source;
        let tw = w.tenant(m.tenant);
        tw.packets += weight;
        tw.bytes += bytes;
        tw.nodes.add_hashed(src, hs);
        if self.labels.is_setup(m.kind.index()) {
            tw.setups += weight;
        }
        w.sources.add_hashed(src, hs, weight, bytes);
        w.source_bytes.add_hashed(src, hs, bytes, weight);
        w.source_kinds
            .add_hashed((src, m.kind, m.size_class), h.source_kind, weight, bytes);
        if let Some(dst) = m.dst {
            w.destinations.add_hashed(dst, h.destination, weight, bytes);
            if m.fragment != Fragment::Later {
                w.services
                    .add_hashed((dst, m.dst_port, m.ip_proto), h.service, weight, bytes);
                w.flows.add_hashed(
                    (src, m.src_port, dst, m.dst_port, m.ip_proto),
                    h.flow_tuple,
                    weight,
                    bytes,
                );
            }
        }
    }

    /// Advances event time to `now` (a packet's time, or the wall clock in live mode):
    /// fires due heartbeat deadlines and closes windows past the grace period.
    #[inline]
    pub fn advance(
        &mut self,
        now: u64,
        findings: &mut Vec<Finding>,
        closed: &mut Vec<WindowStats>,
    ) {
        if now > self.watermark {
            self.watermark = now;
        }
        self.detectors.tick(self.watermark, findings);
        if self.watermark < self.next_edge_ns {
            // No window opens or closes before the next edge: nothing else to do (the
            // common case, once per packet).
            debug_assert!(self.open.back().is_some_and(|w| {
                w.start_ns / self.width_ns.max(1) == self.watermark / self.width_ns.max(1)
            }));
            debug_assert!(self
                .open
                .front()
                .is_some_and(|w| w.end_ns + self.grace_ns > self.watermark));
            return;
        }
        self.cross_edge(closed);
    }

    /// [`Shard::advance`] past the next edge: opens and closes windows.
    fn cross_edge(&mut self, closed: &mut Vec<WindowStats>) {
        let width = self.width_ns.max(1);
        let want_last = self.watermark / width;
        match self.open.back().map(|w| w.start_ns / width) {
            None => self.open.push_back(self.new_window(want_last)),
            Some(last) if want_last > last => {
                if want_last - last > MAX_EMPTY_WINDOWS {
                    self.counters.time_jumps += 1;
                    while let Some(w) = self.open.pop_front() {
                        closed.push(w);
                    }
                    self.open.push_back(self.new_window(want_last));
                } else {
                    for i in last + 1..=want_last {
                        self.open.push_back(self.new_window(i));
                    }
                }
            }
            Some(_) => {}
        }
        while self
            .open
            .front()
            .is_some_and(|w| w.end_ns + self.grace_ns <= self.watermark)
        {
            let w = self.open.pop_front().expect("checked");
            self.detectors.sweep(self.watermark);
            closed.push(w);
        }
        // The next event time at which a window opens or the oldest open one closes.
        let opens = (self.watermark / width + 1).saturating_mul(width);
        let closes = self
            .open
            .front()
            .map_or(u64::MAX, |w| w.end_ns.saturating_add(self.grace_ns));
        self.next_edge_ns = opens.min(closes);
    }

    /// Closes every open window (end of a replay).
    pub fn finish(&mut self, closed: &mut Vec<WindowStats>) {
        closed.extend(self.open.drain(..));
        self.next_edge_ns = 0;
    }
}

/// The open window an event time falls in, if it is still open.
#[inline]
fn window_at(
    open: &mut VecDeque<WindowStats>,
    width_ns: u64,
    ts_ns: u64,
) -> Option<&mut WindowStats> {
    let width = width_ns.max(1);
    // Most packets belong to the newest window: found with no division.
    let newest = open.back()?.start_ns;
    if ts_ns >= newest && ts_ns - newest < width {
        return open.back_mut();
    }
    let first = open.front()?.start_ns / width;
    let index = (ts_ns / width).checked_sub(first)?;
    open.get_mut(index as usize)
}

/// Whether each protocol-type index counts as a connection setup: the classifier's
/// connection setups (TCP SYN and the first handshake packets of QUIC, WireGuard, IKEv2,
/// DTLS and OpenVPN), plus the configured `setup_types`.
pub(crate) fn setup_kinds(cfg: &AnalyzerConfig, classifier: &Classifier) -> Vec<bool> {
    (0..classifier.type_count())
        .map(|i| {
            classifier.type_at(i).is_some_and(|k| {
                k.is_connection_setup()
                    || cfg
                        .setup_growth
                        .setup_types
                        .iter()
                        .any(|name| classifier.type_name(k) == name)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use tapwatch_classifier::ProtocolType;

    use super::*;
    use crate::testkit::{addr, tcp, udp, SEC};

    const T: u64 = 1_000 * SEC;

    fn shard() -> Shard {
        Shard::new(&AnalyzerConfig::default(), &Classifier::default())
    }

    fn packet(s: &mut Shard, t: u64, closed: &mut Vec<WindowStats>) -> Vec<Finding> {
        let mut findings = Vec::new();
        s.observe(
            &udp(T + t, (addr(1), 4000), (addr(2), 9999), 80),
            &mut findings,
            closed,
        );
        findings
    }

    #[test]
    fn a_window_closes_once_the_grace_period_has_passed() {
        let mut s = shard();
        let mut closed = Vec::new();
        packet(&mut s, SEC / 2, &mut closed);
        packet(&mut s, 2_900_000_000, &mut closed);
        assert!(closed.is_empty(), "[T, T+1 s) is open until T+3 s");
        packet(&mut s, 3 * SEC, &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].start_ns, closed[0].end_ns, closed[0].packets),
            (T, T + SEC, 1)
        );
        assert_eq!(s.now(), T + 3 * SEC);
        packet(&mut s, SEC / 2, &mut closed);
        assert_eq!(
            (s.counters.packets, s.counters.late),
            (4, 1),
            "too late for its window"
        );
        packet(&mut s, 1_500_000_000, &mut closed);
        assert_eq!(s.counters.late, 1, "within the grace period");
        let mut rest = Vec::new();
        s.finish(&mut rest);
        assert_eq!(rest.iter().map(|w| w.packets).sum::<u64>(), 3);
        assert_eq!(rest.first().map(|w| w.start_ns), Some(T + SEC));
    }

    #[test]
    fn sampled_records_count_as_their_weight_and_skip_flow_detectors() {
        let mut s = shard();
        let (mut findings, mut closed) = (Vec::new(), Vec::new());
        for i in 0..20 {
            let mut m = udp(T + i * SEC / 10, (addr(1), 4000), (addr(2), 9999), 80);
            m.weight = 10;
            s.observe(&m, &mut findings, &mut closed);
        }
        s.finish(&mut closed);
        let packets: u64 = closed.iter().map(|w| w.packets).sum();
        let bytes: u64 = closed.iter().map(|w| w.bytes).sum();
        assert_eq!((packets, bytes), (200, 200 * 80));
        let src = closed[0].sources.get(&addr(1)).unwrap();
        assert_eq!((src.count, src.secondary), (100, 100 * 80));
        assert_eq!(s.heartbeat_flows().0, 0, "no per-flow tracking of samples");
    }

    #[test]
    fn full_tables_count_the_work_they_turn_away() {
        let mut cfg = AnalyzerConfig::default();
        cfg.heartbeat.max_flows = 1;
        cfg.handshake.max_pending = 1;
        let mut s = Shard::new(&cfg, &Classifier::default());
        let (mut findings, mut closed) = (Vec::new(), Vec::new());
        for t in [0, SEC] {
            for n in [3, 4] {
                let m = udp(T + t, (addr(n), 4000), (addr(2), 9999), 80);
                s.observe(&m, &mut findings, &mut closed);
            }
        }
        for n in [5, 6] {
            let m = tcp(
                T + SEC,
                (addr(n), 5000),
                (addr(2), 443),
                ProtocolType::TcpSyn,
                1,
                0,
            );
            s.observe(&m, &mut findings, &mut closed);
        }
        assert_eq!(
            s.lost_work(),
            LostWork {
                heartbeat_untracked: 1,
                handshake_untracked: 1,
                ..LostWork::default()
            }
        );
        assert_eq!(s.heartbeat_flows().0, 1);
    }

    #[test]
    fn a_long_jump_in_time_skips_ahead() {
        let mut s = shard();
        let mut closed = Vec::new();
        packet(&mut s, 0, &mut closed);
        packet(&mut s, 1_000 * SEC, &mut closed);
        assert_eq!(s.counters.time_jumps, 1);
        assert_eq!(
            closed.len(),
            1,
            "only the window that held a packet, no 1000 empty ones"
        );
    }

    #[test]
    fn advancing_without_packets_fires_heartbeat_deadlines() {
        let mut s = shard();
        let mut closed = Vec::new();
        for i in 0..=20 {
            assert!(packet(&mut s, i * SEC, &mut closed).is_empty());
        }
        assert_eq!(s.heartbeat_flows(), (1, 1));
        let mut findings = Vec::new();
        s.advance(T + 22 * SEC, &mut findings, &mut closed);
        assert!(findings.is_empty());
        s.advance(T + 23 * SEC, &mut findings, &mut closed);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].tenant.as_deref(), Some("unassigned"));
        assert_eq!(s.periodic_flows(10).len(), 1);
    }
}
