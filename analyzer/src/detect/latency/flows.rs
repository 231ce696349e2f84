//! TCP flows of one worker for the samples that need per-connection state: response time
//! (first request payload → first response payload; HTTP request line → status line), RST
//! delay (the peer's last packet, when it carried payload or a FIN → the RST that answers
//! it) and the timestamp matcher. One hash probe per
//! TCP packet other than a SYN; a flow enters on its SYN-ACK (a server answered: a spoofed
//! SYN flood never enters), or on a timestamped segment when it began before the capture
//! (then the endpoint with the lower port is taken for the server). A flow seen from one
//! side only can yield nothing but a RST sample, so it is forgotten after `rst_max_s`.
use tapwatch_classifier::{PacketMeta, ProtocolType, FLAG_TCP_TIMESTAMPS};

use super::cells::Sample;
use super::timestamps::TsMatch;
use super::{LatencyConfig, Measure};
use crate::table::{Align64, ConnHash, FlowMap};

// Every TCP packet of a known flow loads its whole entry: one cache line.
const _: () = {
    type Table = FlowMap<ConnHash, FlowState, Align64>;
    assert!(Table::lines_spanned(Table::ENTRY_BYTES) <= 1);
};

const CLIENT_SPOKE: u8 = 1;
const SERVER_SPOKE: u8 = 2;
const FIN_A: u8 = 4;
const FIN_B: u8 = 8;
/// The last packet from a (from b) asked for an answer: it carried payload or a FIN.
const ASKED_A: u8 = 16;
const ASKED_B: u8 = 32;

#[derive(Clone, Copy, Debug)]
struct FlowState {
    client_is_a: bool,
    /// Seen from its SYN: the roles are known and response times are measured.
    opened: bool,
    bits: u8,
    /// Last packet from a, from b (0: none yet).
    last: [u64; 2],
    /// A request waiting for its response (0: none).
    request_at: u64,
    ts: TsMatch,
}

/// TCP flows of one worker, bounded in number and idle time.
pub(crate) struct FlowTable {
    /// Entries of 64 bytes, each one cache line.
    flows: FlowMap<ConnHash, FlowState, Align64>,
    max: usize,
    idle_ns: u64,
    rst_max_ns: u64,
    /// Flows not tracked because the table was full.
    pub untracked: u64,
}

impl FlowTable {
    /// A table with these settings.
    pub fn new(cfg: &LatencyConfig) -> FlowTable {
        FlowTable {
            flows: FlowMap::with_room(cfg.max_flows),
            max: cfg.max_flows,
            idle_ns: (cfg.flow_idle_s * 1e9) as u64,
            rst_max_ns: (cfg.rst_max_s * 1e9) as u64,
            untracked: 0,
        }
    }

    /// Loads the index line of a TCP flow (by its flow hash, see [`FlowMap::prefetch`]).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.flows.prefetch(hash);
    }

    /// Loads the entry of a known TCP flow (see [`FlowMap::prefetch_entry`]).
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        self.flows.prefetch_entry(hash);
    }

    /// One TCP packet whose [`flow_hash`](tapwatch_classifier::flow_hash) is `hash`;
    /// returns the sample it completes, if any.
    #[inline]
    pub fn observe(&mut self, m: &PacketMeta, hash: u64) -> Option<Sample> {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return None;
        };
        debug_assert_eq!(
            hash,
            tapwatch_classifier::flow_hash(src, m.src_port, dst, m.dst_port, 6)
        );
        let key = ConnHash(hash);
        let (a, b, from_a) = crate::detect::flow_ends(src, dst, m);
        let side = usize::from(!from_a);
        let full = self.flows.len() >= self.max;
        match m.kind {
            ProtocolType::TcpSyn => return None,
            ProtocolType::TcpSynAck => {
                // The receiver of the SYN-ACK is the client.
                match self.flows.find(&key, hash) {
                    Ok(pos) => {
                        let f = self.flows.at_mut(pos);
                        if f.opened && f.client_is_a != from_a {
                            f.last[side] = m.ts_ns;
                        } else {
                            *f = FlowState::answered_by(!from_a, side, m.ts_ns);
                        }
                    }
                    Err(_) if full => self.untracked += 1,
                    Err(vacant) => {
                        let f = FlowState::answered_by(!from_a, side, m.ts_ns);
                        self.flows.insert_vacant(vacant, hash, key, f);
                    }
                }
                return None;
            }
            _ => {}
        }
        let timestamps = m.flags & FLAG_TCP_TIMESTAMPS != 0;
        // One probe: the flow's state, or the slot a flow begun before the capture takes.
        let pos = match self.flows.find(&key, hash) {
            Ok(pos) => pos,
            Err(_) if !timestamps || m.tcp_flags & 0x05 != 0 => return None,
            Err(_) if full => {
                self.untracked += 1;
                return None;
            }
            Err(vacant) => {
                // Begun before the capture: the lower port is the server's.
                let server_is_a = m.src_port.min(m.dst_port) == a.1;
                let f = FlowState {
                    client_is_a: !server_is_a,
                    opened: false,
                    bits: 0,
                    last: [0; 2],
                    request_at: 0,
                    ts: TsMatch::default(),
                };
                self.flows.insert_vacant(vacant, hash, key, f)
            }
        };
        let f = self.flows.at_mut(pos);
        let from_client = from_a == f.client_is_a;
        let (client, server) = if f.client_is_a { (a, b) } else { (b, a) };
        let sample = |measure, ns: u64| Sample {
            subject: (server.0, server.1, 6),
            measure,
            us: ns / 1000,
            flow: (client.0, client.1, server.0, server.1, 6),
        };
        let (asked_own, asked_peer) = if from_a {
            (ASKED_A, ASKED_B)
        } else {
            (ASKED_B, ASKED_A)
        };
        if m.tcp_flags & 0x04 != 0 {
            // A RST that answers the peer: its last packet asked for something (payload or
            // FIN) and nothing was sent back since. A RST after the peer's bare ACK is an
            // idle close, not an answer.
            let (own, peer) = (f.last[side], f.last[1 - side]);
            let answers = peer > own && f.bits & asked_peer != 0;
            self.flows.remove(&key, hash);
            let delay = m.ts_ns.saturating_sub(peer);
            return (answers && delay <= self.rst_max_ns).then(|| sample(Measure::Rst, delay));
        }
        f.last[side] = m.ts_ns;
        if m.payload_len > 0 || m.tcp_flags & 0x01 != 0 {
            f.bits |= asked_own;
        } else {
            f.bits &= !asked_own;
        }
        let mut out = None;
        if f.opened && m.payload_len > 0 {
            if from_client {
                let first = f.bits & CLIENT_SPOKE == 0;
                if f.request_at == 0 && (first || m.kind == ProtocolType::HttpRequest) {
                    f.request_at = m.ts_ns;
                }
                f.bits |= CLIENT_SPOKE;
            } else {
                let first = f.bits & SERVER_SPOKE == 0;
                if f.request_at != 0 && (first || m.kind == ProtocolType::HttpResponse) {
                    out = Some(sample(
                        Measure::Response,
                        m.ts_ns.saturating_sub(f.request_at),
                    ));
                    f.request_at = 0;
                }
                f.bits |= SERVER_SPOKE;
            }
        }
        if timestamps && out.is_none() {
            if let Some(ns) =
                f.ts.observe(!from_client, m.tcp_tsval, m.tcp_tsecr, m.ts_ns)
            {
                out = Some(sample(Measure::TcpRtt, ns));
            }
        }
        if m.tcp_flags & 0x01 != 0 {
            f.bits |= if from_a { FIN_A } else { FIN_B };
            if f.bits & (FIN_A | FIN_B) == FIN_A | FIN_B {
                self.flows.remove(&key, hash);
            }
        }
        out
    }

    /// Forgets flows idle longer than `flow_idle_s`, and flows seen from one side only
    /// after `rst_max_s`.
    pub fn sweep(&mut self, now: u64) {
        let (idle, one_sided) = (self.idle_ns, self.rst_max_ns);
        self.flows.retain(|_, f| {
            let limit = if f.last[0] == 0 || f.last[1] == 0 {
                one_sided
            } else {
                idle
            };
            now.saturating_sub(f.last[0].max(f.last[1])) < limit
        });
    }
}

impl FlowState {
    /// A flow whose server (on `side`) just sent its SYN-ACK.
    fn answered_by(client_is_a: bool, side: usize, now: u64) -> FlowState {
        let mut last = [0; 2];
        last[side] = now;
        FlowState {
            client_is_a,
            opened: true,
            bits: 0,
            last,
            request_at: 0,
            ts: TsMatch::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{addr, tcp, SEC};
    use std::net::IpAddr;
    use tapwatch_classifier::{Detail, HttpLine};

    const MS: u64 = 1_000_000;
    const C: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)), 40000);

    fn srv() -> (IpAddr, u16) {
        (addr(2), 80)
    }

    fn data(t: u64, from: (IpAddr, u16), to: (IpAddr, u16), kind: ProtocolType) -> PacketMeta {
        let mut m = tcp(t, from, to, kind, 1, 1);
        m.payload_len = 100;
        m.tcp_flags = 0x18;
        m
    }

    fn table() -> FlowTable {
        FlowTable::new(&LatencyConfig::default())
    }

    impl FlowTable {
        /// [`FlowTable::observe`] with the packet's own flow hash.
        fn observe_alone(&mut self, m: &PacketMeta) -> Option<Sample> {
            self.observe(m, crate::detect::PacketHashes::of(m).flow)
        }
    }

    #[test]
    fn first_payloads_and_each_http_request_give_response_times() {
        let mut t = table();
        assert_eq!(
            t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2)),
            None
        );
        let mut req = data(SEC + 10 * MS, C, srv(), ProtocolType::HttpRequest);
        req.detail = Detail::Http(HttpLine::Request { upgrade: false });
        assert_eq!(t.observe_alone(&req), None);
        let s = t
            .observe_alone(&data(SEC + 110 * MS, srv(), C, ProtocolType::HttpResponse))
            .expect("first response");
        assert_eq!(
            (s.measure, s.us, s.subject),
            (Measure::Response, 100_000, (addr(2), 80, 6))
        );
        assert_eq!(s.flow, (C.0, C.1, addr(2), 80, 6));
        assert_eq!(
            t.observe_alone(&data(SEC + 120 * MS, srv(), C, ProtocolType::TcpData)),
            None,
            "body"
        );
        req.ts_ns = SEC + 200 * MS;
        t.observe_alone(&req);
        let s = t.observe_alone(&data(SEC + 230 * MS, srv(), C, ProtocolType::HttpResponse));
        assert_eq!(
            s.map(|s| s.us),
            Some(30_000),
            "the second request's status line"
        );
    }

    #[test]
    fn a_server_that_speaks_first_gives_no_response_time() {
        let mut t = table();
        t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2));
        assert_eq!(
            t.observe_alone(&data(SEC + MS, srv(), C, ProtocolType::TcpData)),
            None
        );
        assert_eq!(
            t.observe_alone(&data(SEC + 2 * MS, C, srv(), ProtocolType::TcpData)),
            None
        );
        assert_eq!(
            t.observe_alone(&data(SEC + 3 * MS, srv(), C, ProtocolType::TcpData)),
            None
        );
    }

    #[test]
    fn a_rst_answering_the_peer_is_a_sample_an_idle_close_is_not() {
        let mut t = table();
        t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2));
        t.observe_alone(&data(SEC + MS, C, srv(), ProtocolType::TcpData));
        let rst = t.observe_alone(&tcp(SEC + 201 * MS, srv(), C, ProtocolType::TcpRst, 1, 1));
        assert_eq!(
            rst.map(|s| (s.measure, s.us)),
            Some((Measure::Rst, 200_000))
        );
        assert!(t.flows.len() == 0, "a reset flow is forgotten");
        t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2));
        t.observe_alone(&data(SEC + MS, C, srv(), ProtocolType::TcpData));
        t.observe_alone(&data(SEC + 2 * MS, srv(), C, ProtocolType::TcpData));
        assert_eq!(
            t.observe_alone(&tcp(SEC + 9 * SEC, srv(), C, ProtocolType::TcpRst, 1, 1)),
            None,
            "the server had spoken last"
        );
        t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2));
        t.observe_alone(&data(SEC + MS, C, srv(), ProtocolType::TcpData));
        t.observe_alone(&data(SEC + 2 * MS, srv(), C, ProtocolType::TcpData));
        t.observe_alone(&tcp(SEC + 3 * MS, C, srv(), ProtocolType::TcpAck, 1, 1));
        assert_eq!(
            t.observe_alone(&tcp(SEC + 5 * SEC, srv(), C, ProtocolType::TcpRst, 1, 1)),
            None,
            "an idle close after the client's bare ACK"
        );
        t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2));
        t.observe_alone(&data(SEC + MS, C, srv(), ProtocolType::TcpData));
        assert_eq!(
            t.observe_alone(&tcp(SEC + 11 * SEC, srv(), C, ProtocolType::TcpRst, 1, 1)),
            None,
            "later than rst_max_s"
        );
    }

    #[test]
    fn a_syn_never_enters_and_a_one_sided_flow_is_forgotten_soon() {
        let mut t = table();
        assert_eq!(
            t.observe_alone(&tcp(SEC, C, srv(), ProtocolType::TcpSyn, 1, 0)),
            None
        );
        assert!(t.flows.len() == 0, "a spoofed SYN flood takes no room");
        t.observe_alone(&tcp(SEC, srv(), C, ProtocolType::TcpSynAck, 1, 2));
        let other = (addr(3), 5000);
        t.observe_alone(&tcp(SEC, srv(), other, ProtocolType::TcpSynAck, 1, 2));
        t.observe_alone(&tcp(SEC + MS, other, srv(), ProtocolType::TcpAck, 2, 2));
        t.sweep(SEC + 10 * SEC);
        assert_eq!(t.flows.len(), 1, "the unanswered SYN-ACK after rst_max_s");
        t.sweep(SEC + 120 * SEC + MS);
        assert!(t.flows.len() == 0, "the other after flow_idle_s");
    }

    #[test]
    fn timestamps_of_a_flow_begun_before_the_capture_give_rtt_samples() {
        let cfg = LatencyConfig {
            max_flows: 1,
            ..LatencyConfig::default()
        };
        let mut t = FlowTable::new(&cfg);
        let ts = |at: u64, from, to, tsval, tsecr| {
            let mut m = data(at, from, to, ProtocolType::TcpData);
            m.flags |= FLAG_TCP_TIMESTAMPS;
            (m.tcp_tsval, m.tcp_tsecr) = (tsval, tsecr);
            m
        };
        assert_eq!(t.observe_alone(&ts(SEC, srv(), C, 500, 70)), None);
        let s = t
            .observe_alone(&ts(SEC + 40 * MS, C, srv(), 71, 500))
            .expect("echoed");
        assert_eq!(
            (s.measure, s.us, s.subject.1),
            (Measure::TcpRtt, 40_000, 80)
        );
        let other = (addr(3), 5000);
        assert_eq!(t.observe_alone(&ts(SEC, other, srv(), 1, 1)), None);
        assert_eq!(t.untracked, 1);
        t.sweep(SEC + 200 * SEC);
        assert!(t.flows.len() == 0);
    }
}
