//! TCP handshakes seen from the mirror point: SYN → SYN-ACK and SYN-ACK → ACK times, and
//! SYNs sent again (the client's retransmission timer: ~1 s, 3 s, 7 s … after the first).
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use tapwatch_classifier::{PacketMeta, ProtocolType, TenantId};

use super::PacketDetector;
use crate::finding::Finding;
use crate::labels::Labels;
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

/// A TCP connection, client side first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    client: IpAddr,
    server: IpAddr,
    client_port: u16,
    server_port: u16,
}

impl ConnKey {
    /// The connection of a packet the client sent.
    fn sent_by_client(m: &PacketMeta, src: IpAddr, dst: IpAddr) -> ConnKey {
        ConnKey {
            client: src,
            server: dst,
            client_port: m.src_port,
            server_port: m.dst_port,
        }
    }

    /// The connection of a packet the server sent.
    fn sent_by_server(m: &PacketMeta, src: IpAddr, dst: IpAddr) -> ConnKey {
        ConnKey {
            client: dst,
            server: src,
            client_port: m.dst_port,
            server_port: m.src_port,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    first_syn: u64,
    last_syn: u64,
    isn: u32,
    retransmits: u32,
    /// SYN-ACK seen at this time, with the server's initial sequence number.
    syn_ack: Option<(u64, u32)>,
    /// Tenant of the client.
    tenant: TenantId,
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

/// Half-open handshakes of one worker, bounded in number and age.
pub struct HandshakeTracker {
    cfg: HandshakeConfig,
    pending: FxHashMap<ConnKey, Pending>,
    /// SYNs not tracked because the table was full.
    pub untracked: u64,
}

impl HandshakeTracker {
    /// A tracker with these settings.
    pub fn new(cfg: HandshakeConfig) -> HandshakeTracker {
        HandshakeTracker {
            cfg,
            pending: FxHashMap::default(),
            untracked: 0,
        }
    }

    /// Handshakes in progress.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one TCP packet; returns what it meant, with the server endpoint it concerns.
    #[inline]
    pub fn observe(&mut self, m: &PacketMeta) -> Option<((IpAddr, u16), HandshakeEvent)> {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return None;
        };
        if m.ip_proto != 6 || m.malformed.is_some() {
            return None;
        }
        match m.kind {
            ProtocolType::TcpSyn => {
                let key = ConnKey::sent_by_client(m, src, dst);
                let server = (dst, m.dst_port);
                if let Some(p) = self.pending.get_mut(&key) {
                    let gap = m.ts_ns.saturating_sub(p.last_syn);
                    if p.isn == m.tcp_seq && gap as f64 >= self.cfg.min_retransmit_gap_s * 1e9 {
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
                    if p.isn == m.tcp_seq {
                        return None; // a duplicate copy on the mirror, not a retransmission
                    }
                }
                if self.pending.len() >= self.cfg.max_pending && !self.pending.contains_key(&key) {
                    self.untracked += 1;
                    return Some((server, HandshakeEvent::Syn));
                }
                self.pending.insert(
                    key,
                    Pending {
                        first_syn: m.ts_ns,
                        last_syn: m.ts_ns,
                        isn: m.tcp_seq,
                        retransmits: 0,
                        syn_ack: None,
                        tenant: m.tenant,
                    },
                );
                Some((server, HandshakeEvent::Syn))
            }
            ProtocolType::TcpSynAck => {
                let key = ConnKey::sent_by_server(m, src, dst);
                let p = self.pending.get_mut(&key)?;
                if m.tcp_ack != p.isn.wrapping_add(1) || p.syn_ack.is_some() {
                    return None;
                }
                p.syn_ack = Some((m.ts_ns, m.tcp_seq));
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
                let a = ConnKey::sent_by_client(m, src, dst);
                let b = ConnKey::sent_by_server(m, src, dst);
                let known = if let Some(p) = self.pending.remove(&a) {
                    Some(((a.server, a.server_port), p))
                } else {
                    self.pending
                        .remove(&b)
                        .map(|p| ((b.server, b.server_port), p))
                };
                Some((known.map(|k| k.0).unwrap_or(server), HandshakeEvent::Rst))
            }
            _ if m.tcp_flags & 0x10 != 0 => {
                // The client's ACK of the SYN-ACK completes the handshake.
                let key = ConnKey::sent_by_client(m, src, dst);
                let p = self.pending.get(&key)?;
                let (at, server_isn) = p.syn_ack?;
                if m.tcp_ack != server_isn.wrapping_add(1) {
                    return None;
                }
                self.pending.remove(&key);
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

    /// Forgets handshakes older than the timeout (called at window ends).
    pub fn sweep(&mut self, now: u64) {
        let timeout = (self.cfg.timeout_s * 1e9) as u64;
        self.pending
            .retain(|_, p| now.saturating_sub(p.last_syn) < timeout);
    }
}

impl HandshakeEvent {
    /// Counts the event in the window: per server, and latency per tenant.
    #[inline]
    fn record(self, server: (IpAddr, u16), m: &PacketMeta, w: &mut WindowStats) {
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
            }
            HandshakeEvent::Ack { us } => {
                let _ = w
                    .tenant(m.tenant)
                    .syn_ack_to_ack
                    .get_or_insert_with(latency_histogram)
                    .record(us.max(1));
            }
        }
    }
}

impl PacketDetector for HandshakeTracker {
    #[inline]
    fn packet(
        &mut self,
        m: &PacketMeta,
        window: Option<&mut WindowStats>,
        _labels: &Labels,
        _out: &mut Vec<Finding>,
    ) {
        if let Some((server, event)) = self.observe(m) {
            if let Some(w) = window {
                event.record(server, m, w);
            }
        }
    }

    fn sweep(&mut self, now: u64) {
        HandshakeTracker::sweep(self, now);
    }
}
