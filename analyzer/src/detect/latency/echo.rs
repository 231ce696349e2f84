//! ICMP and ICMPv6 echo: request → reply, matched by addresses, identifier and sequence.
//! Both reach the same worker (the flow hash of an ICMP packet has no ports).
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use tapwatch_classifier::{Detail, PacketMeta};

use super::cells::Sample;
use super::{LatencyConfig, Measure};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EchoKey {
    requester: IpAddr,
    responder: IpAddr,
    id: u16,
    seq: u16,
}

/// Outstanding echo requests of one worker, bounded in number and age.
pub(crate) struct EchoTable {
    pending: FxHashMap<EchoKey, u64>,
    max: usize,
    timeout_ns: u64,
    /// Requests not tracked because the table was full.
    pub untracked: u64,
}

impl EchoTable {
    /// A table with these settings.
    pub fn new(cfg: &LatencyConfig) -> EchoTable {
        EchoTable {
            pending: FxHashMap::with_capacity_and_hasher(
                cfg.max_echo.min(4096),
                Default::default(),
            ),
            max: cfg.max_echo,
            timeout_ns: (cfg.echo_timeout_s * 1e9) as u64,
            untracked: 0,
        }
    }

    /// An ICMP or ICMPv6 packet; a reply to a tracked request is a sample.
    #[inline]
    pub fn observe(&mut self, m: &PacketMeta) -> Option<Sample> {
        let reply = m.kind.echo(&m.detail)?;
        let (Some(src), Some(dst), Detail::Icmp { id, seq, .. }) = (m.src, m.dst, m.detail) else {
            return None;
        };
        if !reply {
            let key = EchoKey {
                requester: src,
                responder: dst,
                id,
                seq,
            };
            if self.pending.len() >= self.max && !self.pending.contains_key(&key) {
                self.untracked += 1;
            } else {
                // A copy of the request keeps the first one's time.
                self.pending.entry(key).or_insert(m.ts_ns);
            }
            return None;
        }
        let key = EchoKey {
            requester: dst,
            responder: src,
            id,
            seq,
        };
        let at = self.pending.remove(&key)?;
        Some(Sample {
            subject: (src, 0, m.ip_proto),
            measure: Measure::Echo,
            us: m.ts_ns.saturating_sub(at) / 1000,
            flow: (dst, id, src, seq, m.ip_proto),
        })
    }

    /// Forgets requests older than the timeout.
    pub fn sweep(&mut self, now: u64) {
        let t = self.timeout_ns;
        self.pending.retain(|_, at| now.saturating_sub(*at) < t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{addr, udp, SEC};
    use tapwatch_classifier::ProtocolType;

    fn ping(t: u64, src: u8, dst: u8, ty: u8, seq: u16) -> PacketMeta {
        let mut m = udp(t, (addr(src), 0), (addr(dst), 0), 74);
        m.ip_proto = 1;
        m.kind = ProtocolType::Icmp;
        m.detail = Detail::Icmp {
            ty,
            code: 0,
            id: 9,
            seq,
        };
        m
    }

    #[test]
    fn a_reply_matches_its_request_by_id_and_sequence() {
        let cfg = LatencyConfig {
            max_echo: 2,
            ..LatencyConfig::default()
        };
        let mut e = EchoTable::new(&cfg);
        assert_eq!(e.observe(&ping(SEC, 1, 2, 8, 1)), None);
        assert_eq!(e.observe(&ping(SEC + 5, 1, 2, 8, 1)), None, "a copy");
        assert_eq!(e.observe(&ping(SEC, 1, 2, 8, 2)), None);
        assert_eq!(e.observe(&ping(SEC, 1, 2, 8, 3)), None);
        assert_eq!(e.untracked, 1);
        assert_eq!(
            e.observe(&ping(SEC + 7_000, 2, 1, 0, 9)),
            None,
            "unknown sequence"
        );
        let s = e.observe(&ping(SEC + 7_000, 2, 1, 0, 1)).expect("matched");
        assert_eq!((s.subject, s.us, s.flow.3), ((addr(2), 0, 1), 7, 1));
        assert_eq!(e.observe(&ping(SEC + 8_000, 2, 1, 0, 1)), None, "once");
        e.sweep(SEC + 30 * SEC);
        assert!(e.pending.is_empty());
    }
}
