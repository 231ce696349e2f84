//! The per-packet half: one fixed-size table of TCP flows (both directions in one entry),
//! the highest sequence end each direction has sent, and what each segment was.
//!
//! A segment with payload whose end (`seq + len`, FIN counted, wraparound arithmetic) is
//! not past the highest end its direction already sent is a retransmission — except a
//! keep-alive (0 or 1 byte at `highest − 1`) and a zero-window probe (1 byte while the other
//! side's last advertisement was a zero window) — and a segment that arrives within the
//! handshake's round trip (`reorder_ms` when the handshake was not seen) of the segment
//! that advanced the highest end, and does not end there, which was reordered on the way
//! rather than sent again (Wireshark's out-of-order rule), unless the other side asked for it
//! with two or more duplicate ACKs (a fast retransmission). The highest end also advances with
//! a pure ACK's sequence number and with what the other side acknowledged, so a segment
//! already acknowledged is a retransmission even when its first copy was not captured. The server is the side that received the
//! SYN (or sent the SYN-ACK); for a flow whose handshake was not seen, the side with the
//! lower port, and on equal ports the destination of the first packet seen.
use std::net::IpAddr;

use tapwatch_classifier::PacketMeta;

use super::RetransmitConfig;
use crate::window::WindowStats;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// One direction of a flow.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    /// Highest sequence end sent (valid when `seen`).
    high: u32,
    seen: bool,
    /// Its last advertised receive window was zero.
    zero_window: bool,
    /// When `high` last advanced (event time, ns).
    high_ns: u64,
    /// Last acknowledgement number and window sent (valid when `acked`).
    last_ack: u32,
    last_win: u16,
    acked: bool,
    /// Duplicate ACKs in a row.
    dup_run: u16,
}

/// One flow, both directions: sides indexed by endpoint order (`a` ≤ `b`, see
/// [`flow_ends`](crate::detect::flow_ends)).
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The flow's [`flow_hash`](tapwatch_classifier::flow_hash): all 64 bits, the same in
    /// both directions, stand for its endpoints (which the packet itself gives), so an
    /// entry is 96 bytes and a bucket of two three cache lines (with the endpoints, 128
    /// bytes and four). Two live flows of one bucket would have to agree in every bit above
    /// the bucket's (49 at the default 65 536 flows) to be taken for one.
    flow: u64,
    last_ns: u64,
    /// The server is `b` (else `a`).
    server_b: bool,
    sides: [Side; 2],
    /// Retransmissions in the window starting at `window_start` (32 bits, saturating).
    window_start: u64,
    retransmits: u32,
    /// When the SYN was seen (0: not seen) and the handshake's round trip (0: unknown).
    syn_ns: u64,
    rtt_ns: u64,
}

/// What one segment was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// New data, a pure ACK, a handshake or a RST: nothing to count but the segment.
    Plain,
    /// Data sent again.
    Retransmit,
    /// A keep-alive or a zero-window probe.
    Probe,
    /// A duplicate ACK.
    DupAck,
}

/// `a` is after `b` in sequence space.
#[inline]
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The flow table of one worker.
pub struct FlowTable {
    /// Two slots per bucket; the older entry of a full bucket makes room.
    slots: crate::sketch::HugeTable<Option<Entry>>,
    mask: usize,
    idle_ns: u64,
    reorder_ns: u64,
    /// Flows the table had no room for: a live flow (active within the idle time) replaced
    /// by a new one, or a new flow's bare SYN turned away rather than replace one.
    pub evicted: u64,
}

impl FlowTable {
    /// A table with these settings.
    pub fn new(cfg: &RetransmitConfig) -> FlowTable {
        let buckets = (cfg.max_flows / 2).max(1).next_power_of_two();
        FlowTable {
            slots: crate::sketch::HugeTable::new(buckets * 2, None),
            mask: buckets - 1,
            idle_ns: (cfg.idle_s * 1e9) as u64,
            reorder_ns: (cfg.reorder_ms * 1e6) as u64,
            evicted: 0,
        }
    }

    /// Flows held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The first of the two slots of the bucket of a flow whose
    /// [`flow_hash`](tapwatch_classifier::flow_hash) is `hash`.
    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        (hash as usize & self.mask) * 2
    }

    /// Loads the bucket of a TCP flow (by its flow hash) ahead of [`FlowTable::observe`].
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let bucket = self.bucket(hash);
        crate::sketch::prefetch_all(&self.slots[bucket..bucket + 2]);
    }

    /// Feeds one TCP packet counted in the window starting at `window_start`; returns the
    /// server endpoint, whether the sender is the server, what the segment was, and the
    /// flow's retransmissions in that window so far. One bucket probe, at `hash` (the
    /// packet's [`flow_hash`](tapwatch_classifier::flow_hash)).
    #[inline]
    pub fn observe(
        &mut self,
        m: &PacketMeta,
        hash: u64,
        window_start: u64,
    ) -> Option<((IpAddr, u16), bool, Segment, u64)> {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return None;
        };
        if m.ip_proto != 6 || m.malformed.is_some() {
            return None;
        }
        debug_assert_eq!(
            hash,
            tapwatch_classifier::flow_hash(src, m.src_port, dst, m.dst_port, 6)
        );
        let (a, b, from_a) = crate::detect::flow_ends(src, dst, m);
        let bucket = self.bucket(hash);
        // By reference: an entry is too big to copy per packet.
        let slot = match (&self.slots[bucket], &self.slots[bucket + 1]) {
            (Some(e), _) if e.flow == hash => bucket,
            (_, Some(e)) if e.flow == hash => bucket + 1,
            (None, _) => self.fresh(bucket, hash, (a.1, b.1), m, from_a),
            (_, None) => self.fresh(bucket + 1, hash, (a.1, b.1), m, from_a),
            (Some(x), Some(y)) => {
                let (old, last) = if x.last_ns <= y.last_ns {
                    (bucket, x.last_ns)
                } else {
                    (bucket + 1, y.last_ns)
                };
                if m.ts_ns.saturating_sub(last) < self.idle_ns {
                    self.evicted += 1;
                    if m.tcp_flags & (SYN | ACK) == SYN {
                        // A bare SYN (a flood's, a scan's) does not push out a live flow.
                        return None;
                    }
                }
                self.fresh(old, hash, (a.1, b.1), m, from_a)
            }
        };
        let e = self.slots[slot].as_mut().expect("just found or made");
        e.last_ns = e.last_ns.max(m.ts_ns);
        let flags = m.tcp_flags;
        let me = usize::from(!from_a);
        if flags & SYN != 0 {
            // The SYN's receiver (the SYN-ACK's sender) listens.
            e.server_b = if flags & ACK == 0 { from_a } else { !from_a };
            if flags & ACK == 0 {
                e.syn_ns = m.ts_ns;
            }
        } else if e.syn_ns > 0 && e.rtt_ns == 0 && e.server_b == from_a && flags & ACK != 0 {
            // The client's first ACK: SYN to it is the round trip (as Wireshark's first RTT).
            e.rtt_ns = m.ts_ns.saturating_sub(e.syn_ns).max(1);
        }
        let rtt_ns = e.rtt_ns;
        let server_is_sender = e.server_b != from_a;
        let server = if e.server_b { b } else { a };
        let other_zero = e.sides[1 - me].zero_window;
        // Fast retransmission: the segment the other side keeps asking for.
        let asked = e.sides[1 - me].dup_run >= 2 && e.sides[1 - me].last_ack == m.tcp_seq;
        let side = &mut e.sides[me];
        if flags & RST != 0 {
            return Some((server, server_is_sender, Segment::Plain, 0));
        }
        side.zero_window = m.tcp_window == 0 && flags & SYN == 0;
        let fin = u32::from(flags & (FIN | SYN) != 0);
        let len = m.payload_len;
        let end = m.tcp_seq.wrapping_add(len).wrapping_add(fin);
        let mut what = Segment::Plain;
        if !side.seen || seq_after(end, side.high) {
            // New data; a pure ACK's sequence number is what its sender will send next.
            side.high = end;
            side.seen = true;
            side.high_ns = m.ts_ns;
        } else if len > 0 {
            let keep_alive = len <= 1 && m.tcp_seq == side.high.wrapping_sub(1);
            let reorder_ns = if rtt_ns > 0 { rtt_ns } else { self.reorder_ns };
            let reordered =
                !asked && m.ts_ns.saturating_sub(side.high_ns) < reorder_ns && end != side.high;
            what = if keep_alive || (len <= 1 && other_zero) {
                Segment::Probe
            } else if reordered {
                Segment::Plain
            } else {
                Segment::Retransmit
            };
        }
        if len == 0
            && fin == 0
            && what == Segment::Plain
            && flags & ACK != 0
            && side.acked
            && side.last_ack == m.tcp_ack
            && side.last_win == m.tcp_window
        {
            what = Segment::DupAck;
        }
        if what == Segment::DupAck {
            side.dup_run = side.dup_run.saturating_add(1);
        } else if flags & ACK != 0 && side.last_ack != m.tcp_ack {
            side.dup_run = 0;
        }
        if flags & ACK != 0 {
            side.acked = true;
            side.last_ack = m.tcp_ack;
            side.last_win = m.tcp_window;
            // What the other side had acknowledged, it had sent.
            let peer = &mut e.sides[1 - me];
            if !peer.seen || seq_after(m.tcp_ack, peer.high) {
                peer.high = m.tcp_ack;
                peer.seen = true;
            }
        }
        let mut flow_retransmits = 0;
        if what == Segment::Retransmit {
            if e.window_start != window_start {
                e.window_start = window_start;
                e.retransmits = 0;
            }
            e.retransmits = e.retransmits.saturating_add(1);
            flow_retransmits = u64::from(e.retransmits);
        }
        Some((server, server_is_sender, what, flow_retransmits))
    }

    /// Makes `slot` the entry of a new flow of hash `flow` whose endpoints have the ports
    /// `(a, b)`.
    fn fresh(
        &mut self,
        slot: usize,
        flow: u64,
        (a, b): (u16, u16),
        m: &PacketMeta,
        from_a: bool,
    ) -> usize {
        // Without a handshake: the lower port listens; on equal ports, the first receiver.
        let server_b = match a.cmp(&b) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => from_a,
        };
        self.slots[slot] = Some(Entry {
            flow,
            last_ns: m.ts_ns,
            server_b,
            sides: [Side::default(); 2],
            window_start: 0,
            retransmits: 0,
            syn_ns: 0,
            rtt_ns: 0,
        });
        slot
    }
}

/// Counts one segment into the window, per server.
#[inline]
pub fn record(
    w: &mut WindowStats,
    m: &PacketMeta,
    server: (IpAddr, u16),
    server_is_sender: bool,
    what: Segment,
    flow_retransmits: u64,
) {
    let counts = m.payload_len > 0 || m.tcp_window == 0 || what == Segment::DupAck;
    if !counts || m.tcp_flags & (SYN | RST) != 0 {
        return;
    }
    let Some(h) = w.health_of(server) else { return };
    if m.payload_len > 0 {
        h.segments += 1;
    }
    if m.tcp_window == 0 {
        h.zero_windows += 1;
    }
    match what {
        Segment::Retransmit if server_is_sender => h.retransmits_from_server += 1,
        Segment::Retransmit => h.retransmits_to_server += 1,
        Segment::DupAck => h.dup_acks += 1,
        Segment::Plain | Segment::Probe => {}
    }
    if what == Segment::Retransmit {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return;
        };
        let flow = if server_is_sender {
            (dst, m.dst_port, src, m.src_port, 6)
        } else {
            (src, m.src_port, dst, m.dst_port, 6)
        };
        h.note_flow(flow, flow_retransmits);
    }
}

#[cfg(test)]
mod layout {
    /// Two entries fill three cache lines of a bucket, not four.
    #[test]
    fn a_bucket_fits_three_cache_lines() {
        assert!(std::mem::size_of::<Option<super::Entry>>() <= 96);
    }
}
