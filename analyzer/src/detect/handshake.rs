//! TCP handshakes seen from the mirror point: SYN → SYN-ACK and SYN-ACK → ACK times, and
//! SYNs sent again (the client's retransmission timer: ~1 s, 3 s, 7 s … after the first).
use std::net::IpAddr;

use serde::Deserialize;
use tapwatch_classifier::{PacketMeta, ProtocolType, TenantId};

use super::latency::cells::Sample;
use super::latency::Measure;
use super::{PacketDetector, PacketHashes};
use crate::detect::sent_by_lower;
use crate::finding::Finding;
use crate::labels::Labels;
use crate::table::{Align64, ConnHash, FlowMap};
use crate::window::{latency_histogram, WindowStats};

/// TCP handshakes seen from the mirror point.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandshakeConfig {
    /// Half-open handshakes tracked at most per worker.
    pub max_pending: usize,
    /// Seconds after which an unanswered SYN is forgotten.
    pub timeout_s: f64,
    /// Seconds between two copies of a SYN for the later one to count as a retransmission.
    pub min_retransmit_gap_s: f64,
    /// Width of the SYN-retransmission judgement, seconds (a rollup of the base windows).
    pub burst_window_s: f64,
    /// Retransmitted SYNs towards one server within the burst window that make an anomaly.
    pub min_retransmits: u64,
    /// Share of that server's SYNs that must be retransmissions.
    pub min_retransmit_ratio: f64,
    /// Hysteresis: a firing server clears when its retransmissions in a burst window fall
    /// below this many.
    pub clear_retransmits: u64,
    /// Servers with their own latency histogram per window (the busiest by SYNs).
    pub max_servers: usize,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig {
            max_pending: 1 << 18,
            timeout_s: 30.0,
            min_retransmit_gap_s: 0.5,
            burst_window_s: 10.0,
            min_retransmits: 5,
            min_retransmit_ratio: 0.2,
            clear_retransmits: 2,
            max_servers: 256,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    first_syn: u64,
    last_syn: u64,
    isn: u32,
    retransmits: u32,
    /// SYN-ACK seen at this time ([`UNANSWERED`]: none yet; an `Option` would take 8
    /// bytes more, see [`Pending::syn_ack`]), with the server's initial sequence number.
    syn_ack_at: u64,
    server_isn: u32,
    /// Tenant of the client.
    tenant: TenantId,
    /// The client is the lower endpoint (address, then port): the sender of the SYN.
    client_lower: bool,
}

/// [`Pending::syn_ack_at`] of a handshake not answered yet (no event time is that late).
const UNANSWERED: u64 = u64::MAX;

// Every SYN and answered ACK loads its handshake's whole entry: one cache line.
const _: () = {
    type Table = FlowMap<ConnHash, Pending, Align64>;
    assert!(Table::lines_spanned(Table::ENTRY_BYTES) <= 1);
};

impl Pending {
    /// When the SYN-ACK was seen, and the server's initial sequence number, once answered.
    fn syn_ack(&self) -> Option<(u64, u32)> {
        (self.syn_ack_at != UNANSWERED).then_some((self.syn_ack_at, self.server_isn))
    }
}

/// What one packet did to a handshake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HandshakeEvent {
    /// A SYN seen for the first time.
    Syn,
    /// The same SYN again, `n`-th retransmission, `since_first_s` after the first.
    SynRetransmit {
        /// Retransmission count for this connection.
        n: u32,
        /// Seconds since the first SYN.
        since_first_s: f64,
    },
    /// SYN-ACK: time since the (last) SYN, µs.
    SynAck {
        /// µs.
        us: u64,
        /// Tenant of the client that sent the SYN.
        client_tenant: TenantId,
    },
    /// Final ACK: time since the SYN-ACK, µs.
    Ack {
        /// µs.
        us: u64,
    },
    /// A RST towards or from the server.
    Rst,
}

/// Which connections may be waiting for their final ACK: one bit per slot of flow hashes,
/// set when a SYN-ACK is recorded and cleared at sweeps (then set again for the handshakes
/// still answered). A connection's ACKs and data, most TCP packets, probe the pending table
/// only when its bit is set: a set bit may be another connection's or a finished one's (the
/// probe then misses), but a clear bit is certain, and it stays in L1 where the table's
/// lines would come from memory.
struct Answered {
    words: Box<[u64; Answered::WORDS]>,
}

impl Answered {
    /// 64-bit words: 2^16 bits, 8 KiB.
    const WORDS: usize = 1 << 10;

    fn new() -> Answered {
        Answered {
            words: Box::new([0; Answered::WORDS]),
        }
    }

    /// The word and bit of a flow hash (its high bits: the table's slot comes from the low).
    #[inline]
    fn slot(hash: u64) -> (usize, u64) {
        let bit = (hash >> 48) as usize;
        (bit / 64 % Self::WORDS, 1 << (bit % 64))
    }

    #[inline]
    fn set(&mut self, hash: u64) {
        let (w, b) = Self::slot(hash);
        self.words[w] |= b;
    }

    #[inline]
    fn may_hold(&self, hash: u64) -> bool {
        let (w, b) = Self::slot(hash);
        self.words[w] & b != 0
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }
}

/// Half-open handshakes of one worker, bounded in number and age.
pub struct HandshakeTracker {
    cfg: HandshakeConfig,
    /// Entries of 64 bytes, each one cache line.
    pending: FlowMap<ConnHash, Pending, Align64>,
    /// The pending handshakes that saw their SYN-ACK (a superset).
    answered: Answered,
    /// SYNs not tracked because the table was full.
    pub untracked: u64,
    /// Handshake latency samples whose server had no room in the window's latency cells.
    pub samples_untracked: u64,
}

impl HandshakeTracker {
    /// A tracker with these settings.
    pub fn new(cfg: HandshakeConfig) -> HandshakeTracker {
        HandshakeTracker {
            pending: FlowMap::with_room(cfg.max_pending),
            cfg,
            answered: Answered::new(),
            untracked: 0,
            samples_untracked: 0,
        }
    }

    /// Handshakes in progress.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one TCP packet whose [`flow_hash`](tapwatch_classifier::flow_hash) is `hash`
    /// (its connection's, in either direction); returns what it meant, with the server
    /// endpoint it concerns.
    #[inline]
    pub fn observe(
        &mut self,
        m: &PacketMeta,
        hash: u64,
    ) -> Option<((IpAddr, u16), HandshakeEvent)> {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return None;
        };
        if m.ip_proto != 6 || m.malformed.is_some() {
            return None;
        }
        match m.kind {
            ProtocolType::TcpSyn => {
                let key = ConnHash(hash);
                let lower = sent_by_lower(src, dst, m);
                let server = (dst, m.dst_port);
                let fresh = || Pending {
                    first_syn: m.ts_ns,
                    last_syn: m.ts_ns,
                    isn: m.tcp_seq,
                    retransmits: 0,
                    syn_ack_at: UNANSWERED,
                    server_isn: 0,
                    tenant: m.tenant,
                    client_lower: lower,
                };
                // One probe: the connection's handshake, or the slot a new one would take.
                match self.pending.find(&key, hash) {
                    Ok(pos) => {
                        let p = self.pending.at_mut(pos);
                        let gap = m.ts_ns.saturating_sub(p.last_syn);
                        // The same client's SYN again, or a connection the other way round
                        // on the same addresses and ports (a new one, below).
                        let same = p.isn == m.tcp_seq && p.client_lower == lower;
                        if same && gap as f64 >= self.cfg.min_retransmit_gap_s * 1e9 {
                            p.retransmits += 1;
                            p.last_syn = m.ts_ns;
                            let since = m.ts_ns.saturating_sub(p.first_syn) as f64 / 1e9;
                            return Some((
                                server,
                                HandshakeEvent::SynRetransmit {
                                    n: p.retransmits,
                                    since_first_s: since,
                                },
                            ));
                        }
                        if same {
                            return None; // a duplicate copy on the mirror, not a retransmission
                        }
                        // Another connection on the same addresses and ports.
                        *p = fresh();
                    }
                    Err(_) if self.pending.len() >= self.cfg.max_pending => {
                        self.untracked += 1;
                        return Some((server, HandshakeEvent::Syn));
                    }
                    Err(vacant) => {
                        self.pending.insert_vacant(vacant, hash, key, fresh());
                    }
                }
                Some((server, HandshakeEvent::Syn))
            }
            ProtocolType::TcpSynAck => {
                let p = self.pending.get_mut(&ConnHash(hash), hash)?;
                // Sent by the server: the receiver is the SYN's sender.
                if p.client_lower == sent_by_lower(src, dst, m)
                    || m.tcp_ack != p.isn.wrapping_add(1)
                    || p.syn_ack().is_some()
                {
                    return None;
                }
                (p.syn_ack_at, p.server_isn) = (m.ts_ns, m.tcp_seq);
                self.answered.set(hash);
                let us = m.ts_ns.saturating_sub(p.last_syn) / 1000;
                Some((
                    (src, m.src_port),
                    HandshakeEvent::SynAck {
                        us,
                        client_tenant: p.tenant,
                    },
                ))
            }
            ProtocolType::TcpRst => {
                let server = if m.src_port < m.dst_port {
                    (src, m.src_port)
                } else {
                    (dst, m.dst_port)
                };
                // From either side: the handshake's own server, when it is known.
                let known = self.pending.remove(&ConnHash(hash), hash).map(|p| {
                    if p.client_lower == sent_by_lower(src, dst, m) {
                        (dst, m.dst_port)
                    } else {
                        (src, m.src_port)
                    }
                });
                Some((known.unwrap_or(server), HandshakeEvent::Rst))
            }
            _ if m.tcp_flags & 0x10 != 0 => {
                // The client's ACK of the SYN-ACK completes the handshake.
                if !self.answered.may_hold(hash) {
                    return None;
                }
                let key = ConnHash(hash);
                let p = self.pending.get(&key, hash)?;
                let (at, server_isn) = p.syn_ack()?;
                if p.client_lower != sent_by_lower(src, dst, m)
                    || m.tcp_ack != server_isn.wrapping_add(1)
                {
                    return None;
                }
                self.pending.remove(&key, hash);
                Some((
                    (dst, m.dst_port),
                    HandshakeEvent::Ack {
                        us: m.ts_ns.saturating_sub(at) / 1000,
                    },
                ))
            }
            _ => None,
        }
    }

    /// Whether [`HandshakeTracker::observe`] will probe the table for this packet, as far as
    /// can be told a few packets ahead: a TCP SYN, SYN-ACK or RST, or an ACK of an answered
    /// handshake (see `Answered`).
    #[inline]
    fn will_probe(&self, m: &PacketMeta, h: &PacketHashes) -> bool {
        m.ip_proto == 6
            && m.src.is_some()
            && (matches!(
                m.kind,
                ProtocolType::TcpSyn | ProtocolType::TcpSynAck | ProtocolType::TcpRst
            ) || self.answered.may_hold(h.flow))
    }

    /// Forgets handshakes older than the timeout (called at window ends).
    pub fn sweep(&mut self, now: u64) {
        let timeout = (self.cfg.timeout_s * 1e9) as u64;
        // One pass: the filter is rebuilt from the handshakes kept.
        self.answered.clear();
        let answered = &mut self.answered;
        self.pending.retain_hashed(|hash, _, p| {
            let keep = now.saturating_sub(p.last_syn) < timeout;
            if keep && p.syn_ack().is_some() {
                answered.set(hash);
            }
            keep
        });
    }
}

impl HandshakeEvent {
    /// Counts the event in the window: per server, and latency per tenant and per server
    /// (`handshake_server`, `handshake_client`); false when the window had no room for the
    /// server's latency cell.
    #[inline]
    fn record(self, server: (IpAddr, u16), m: &PacketMeta, w: &mut WindowStats) -> bool {
        let client = if m.src == Some(server.0) && m.src_port == server.1 {
            (m.dst, m.dst_port)
        } else {
            (m.src, m.src_port)
        };
        let sample = |measure, us: u64| Sample {
            subject: (server.0, server.1, 6),
            measure,
            us,
            flow: (
                client.0.unwrap_or(server.0),
                client.1,
                server.0,
                server.1,
                6,
            ),
        };
        match self {
            HandshakeEvent::Syn => {
                if let Some(s) = w.server(server) {
                    s.syns += 1;
                }
            }
            HandshakeEvent::SynRetransmit { .. } => {
                if let Some(s) = w.server(server) {
                    s.retransmits += 1;
                }
            }
            HandshakeEvent::Rst => {
                if let Some(s) = w.server(server) {
                    s.rsts += 1;
                }
            }
            HandshakeEvent::SynAck { us, client_tenant } => {
                if let Some(s) = w.server(server) {
                    let _ = s
                        .syn_to_syn_ack
                        .get_or_insert_with(latency_histogram)
                        .record(us.max(1));
                }
                let _ = w
                    .tenant(client_tenant)
                    .syn_to_syn_ack
                    .get_or_insert_with(latency_histogram)
                    .record(us.max(1));
                return w.latency.record(sample(Measure::HandshakeServer, us));
            }
            HandshakeEvent::Ack { us } => {
                let _ = w
                    .tenant(m.tenant)
                    .syn_ack_to_ack
                    .get_or_insert_with(latency_histogram)
                    .record(us.max(1));
                return w.latency.record(sample(Measure::HandshakeClient, us));
            }
        }
        true
    }
}

impl PacketDetector for HandshakeTracker {
    #[inline]
    fn packet(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        window: Option<&mut WindowStats>,
        _labels: &Labels,
        _out: &mut Vec<Finding>,
    ) {
        if let Some((server, event)) = self.observe(m, h.flow) {
            if let Some(w) = window {
                if !event.record(server, m, w) {
                    self.samples_untracked += 1;
                }
            }
        }
    }

    #[inline]
    fn prefetch(&self, m: &PacketMeta, h: &PacketHashes) {
        // Both directions of a connection hash alike: one line whoever sent the packet.
        if self.will_probe(m, h) {
            self.pending.prefetch(h.flow);
        }
    }

    #[inline]
    fn prefetch_entries(&self, m: &PacketMeta, h: &PacketHashes) {
        if self.will_probe(m, h) {
            self.pending.prefetch_entry(h.flow);
        }
    }

    fn sweep(&mut self, now: u64) {
        HandshakeTracker::sweep(self, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{addr, tcp, SEC};

    const T: u64 = 1_000 * SEC;
    const CLIENT: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 50000);

    fn server() -> (IpAddr, u16) {
        (addr(2), 443)
    }

    impl HandshakeTracker {
        /// [`HandshakeTracker::observe`] with the packet's own flow hash.
        fn observe_alone(&mut self, m: &PacketMeta) -> Option<((IpAddr, u16), HandshakeEvent)> {
            self.observe(m, crate::detect::PacketHashes::of(m).flow)
        }
    }

    #[test]
    fn a_handshake_yields_both_latencies() {
        let mut h = HandshakeTracker::new(HandshakeConfig::default());
        let syn = tcp(T, CLIENT, server(), ProtocolType::TcpSyn, 100, 0);
        assert_eq!(h.observe_alone(&syn), Some((server(), HandshakeEvent::Syn)));
        let wrong = tcp(
            T + 1_000_000,
            server(),
            CLIENT,
            ProtocolType::TcpSynAck,
            500,
            7,
        );
        assert_eq!(h.observe_alone(&wrong), None, "a SYN-ACK for another SYN");
        let syn_ack = tcp(
            T + 2_000_000,
            server(),
            CLIENT,
            ProtocolType::TcpSynAck,
            500,
            101,
        );
        assert_eq!(
            h.observe_alone(&syn_ack),
            Some((
                server(),
                HandshakeEvent::SynAck {
                    us: 2000,
                    client_tenant: TenantId(0)
                }
            ))
        );
        let ack = tcp(
            T + 5_000_000,
            CLIENT,
            server(),
            ProtocolType::TcpAck,
            101,
            501,
        );
        assert_eq!(
            h.observe_alone(&ack),
            Some((server(), HandshakeEvent::Ack { us: 3000 }))
        );
        assert_eq!(h.len(), 0, "a completed handshake is forgotten");
    }

    /// An entry is found by the connection's hash, the same both ways: which side sent the
    /// SYN decides what counts. A SYN-ACK or final ACK from the wrong side completes
    /// nothing; a RST from either side names the SYN's receiver as the server, also when
    /// the client's port is the lower.
    #[test]
    fn the_syn_decides_the_sides() {
        let mut h = HandshakeTracker::new(HandshakeConfig::default());
        // The client on port 80, the server on 50000: not the lower port's side.
        let (client, server) = ((addr(7), 80), (addr(8), 50000));
        let syn = tcp(T, client, server, ProtocolType::TcpSyn, 100, 0);
        assert_eq!(h.observe_alone(&syn), Some((server, HandshakeEvent::Syn)));
        let backwards = tcp(T + 1_000, client, server, ProtocolType::TcpSynAck, 500, 101);
        assert_eq!(h.observe_alone(&backwards), None, "the client sent it");
        let syn_ack = tcp(T + 2_000, server, client, ProtocolType::TcpSynAck, 500, 101);
        assert!(matches!(
            h.observe_alone(&syn_ack),
            Some((s, HandshakeEvent::SynAck { us: 2, .. })) if s == server
        ));
        let wrong_ack = tcp(T + 3_000, server, client, ProtocolType::TcpAck, 501, 101);
        assert_eq!(h.observe_alone(&wrong_ack), None, "the server's ACK");
        assert_eq!(h.len(), 1);
        let rst = tcp(T + 4_000, server, client, ProtocolType::TcpRst, 501, 0);
        assert_eq!(h.observe_alone(&rst), Some((server, HandshakeEvent::Rst)));
        assert_eq!(h.len(), 0, "a reset handshake is forgotten");
        // A SYN the other way round on the same addresses and ports is a new connection.
        h.observe_alone(&syn);
        let reverse = tcp(T + 5_000, server, client, ProtocolType::TcpSyn, 900, 0);
        assert_eq!(
            h.observe_alone(&reverse),
            Some((client, HandshakeEvent::Syn))
        );
        let rst = tcp(T + 6_000, server, client, ProtocolType::TcpRst, 901, 0);
        assert_eq!(h.observe_alone(&rst), Some((client, HandshakeEvent::Rst)));
    }

    /// The ACK filter (`Answered`) never hides a final ACK: handshakes answered before a
    /// sweep, after it, and across several, with many more connections than the filter has
    /// bits, each complete once; ACKs of unanswered connections and of other ports complete
    /// none.
    #[test]
    fn every_answered_handshake_completes_across_sweeps() {
        let mut h = HandshakeTracker::new(HandshakeConfig::default());
        let n = 100_000u32;
        let client = |i: u32| (addr(10 + (i / 50_000) as u8), 1024 + (i % 50_000) as u16);
        let mut t = T;
        for i in 0..n {
            t += 1_000;
            let syn = tcp(t, client(i), server(), ProtocolType::TcpSyn, i, 0);
            assert!(h.observe_alone(&syn).is_some());
            // Every other connection is answered.
            if i % 2 == 0 {
                let sa = tcp(t, server(), client(i), ProtocolType::TcpSynAck, !i, i + 1);
                assert!(h.observe_alone(&sa).is_some());
            }
            if i % 30_000 == 0 {
                h.sweep(t);
            }
        }
        h.sweep(t);
        let mut completed = 0;
        for i in 0..n {
            t += 1_000;
            let other_port = tcp(t, client(i), (addr(2), 80), ProtocolType::TcpAck, i + 1, 0);
            assert_eq!(h.observe_alone(&other_port), None);
            let ack = tcp(
                t,
                client(i),
                server(),
                ProtocolType::TcpAck,
                i + 1,
                (!i).wrapping_add(1),
            );
            match h.observe_alone(&ack) {
                Some((_, HandshakeEvent::Ack { .. })) => {
                    assert_eq!(i % 2, 0, "connection {i} was never answered");
                    completed += 1;
                }
                None => assert_eq!(i % 2, 1, "connection {i}'s final ACK was missed"),
                other => panic!("unexpected {other:?}"),
            }
            if i % 30_000 == 0 {
                h.sweep(t);
            }
        }
        assert_eq!(completed, n / 2);
        assert_eq!(h.len(), (n / 2) as usize, "the unanswered ones wait");
    }

    #[test]
    fn only_a_late_copy_of_the_same_syn_is_a_retransmission() {
        let mut h = HandshakeTracker::new(HandshakeConfig::default());
        let syn = |t: u64| tcp(T + t, CLIENT, server(), ProtocolType::TcpSyn, 100, 0);
        assert_eq!(
            h.observe_alone(&syn(0)),
            Some((server(), HandshakeEvent::Syn))
        );
        assert_eq!(
            h.observe_alone(&syn(SEC / 5)),
            None,
            "a duplicate on the mirror"
        );
        assert_eq!(
            h.observe_alone(&syn(SEC)),
            Some((
                server(),
                HandshakeEvent::SynRetransmit {
                    n: 1,
                    since_first_s: 1.0
                }
            ))
        );
        assert_eq!(
            h.observe_alone(&syn(3 * SEC)),
            Some((
                server(),
                HandshakeEvent::SynRetransmit {
                    n: 2,
                    since_first_s: 3.0
                }
            ))
        );
        h.sweep(T + 3 * SEC + 29 * SEC);
        assert_eq!(h.len(), 1, "kept until the timeout");
        h.sweep(T + 3 * SEC + 30 * SEC);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn a_full_table_counts_what_it_turns_away() {
        let cfg = HandshakeConfig {
            max_pending: 1,
            ..HandshakeConfig::default()
        };
        let mut h = HandshakeTracker::new(cfg);
        h.observe_alone(&tcp(T, CLIENT, server(), ProtocolType::TcpSyn, 1, 0));
        let other = (addr(3), 50001);
        assert_eq!(
            h.observe_alone(&tcp(T, other, server(), ProtocolType::TcpSyn, 1, 0)),
            Some((server(), HandshakeEvent::Syn)),
            "still counted as a SYN"
        );
        assert_eq!((h.len(), h.untracked), (1, 1));
    }

    #[test]
    fn events_are_recorded_in_the_window() {
        let mut h = HandshakeTracker::new(HandshakeConfig::default());
        let mut w = WindowStats::new(T, T + 10 * SEC, 16, 16, 16, 32);
        let labels = Labels::default();
        let mut out = Vec::new();
        for t in [0, SEC] {
            let syn = tcp(T + t, CLIENT, server(), ProtocolType::TcpSyn, 100, 0);
            h.packet(
                &syn,
                &PacketHashes::of(&syn),
                Some(&mut w),
                &labels,
                &mut out,
            );
        }
        let syn_ack = tcp(
            T + SEC + 4_000_000,
            server(),
            CLIENT,
            ProtocolType::TcpSynAck,
            9,
            101,
        );
        h.packet(
            &syn_ack,
            &PacketHashes::of(&syn_ack),
            Some(&mut w),
            &labels,
            &mut out,
        );
        let s = &w.servers[&server()];
        assert_eq!((s.syns, s.retransmits), (1, 1));
        assert_eq!(s.syn_to_syn_ack.as_ref().map(|h| h.len()), Some(1));
        // 4 ms after the retransmitted SYN, at the histogram's two significant digits.
        let us = w.tenants[0].syn_to_syn_ack.as_ref().map(|h| h.max());
        assert!(us.is_some_and(|us| us.abs_diff(4000) <= 40), "{us:?}");
        assert!(out.is_empty());
    }
}
