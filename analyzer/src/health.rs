//! Per-server flow-health counts of a window (retransmitted data segments, HTTP upgrade
//! outcomes), counted on the shards and merged like the rest of [`WindowStats`](crate::window::WindowStats).
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::window::{FlowTuple, WindowStats};

/// Flows kept per server as the worst retransmitters.
pub const WORST_FLOWS: usize = 3;

/// One server's (`addr:port`, the listening side of TCP connections) flow health in a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerHealth {
    /// TCP segments carrying payload, both directions.
    pub segments: u64,
    /// Data segments sent again by the clients (towards the server).
    pub retransmits_to_server: u64,
    /// Data segments sent again by the server.
    pub retransmits_from_server: u64,
    /// Segments advertising a zero receive window, both directions.
    pub zero_windows: u64,
    /// Duplicate ACKs, both directions.
    pub dup_acks: u64,
    /// The flows with the most retransmissions (client first), most first.
    pub worst: [Option<(FlowTuple, u64)>; WORST_FLOWS],
    /// HTTP upgrade requests answered `101 Switching Protocols`.
    pub upgrades_ok: u64,
    /// HTTP upgrade requests answered with another status.
    pub upgrades_refused: u64,
    /// HTTP upgrade requests with no response before the connection closed or the client
    /// sent the request again after the timeout.
    pub upgrades_unanswered: u64,
    /// The latest status other than 101 (0: none).
    pub last_refusal_status: u16,
}

impl ServerHealth {
    /// Retransmitted data segments, both directions.
    pub fn retransmits(&self) -> u64 {
        self.retransmits_to_server + self.retransmits_from_server
    }

    /// Upgrade attempts with an outcome.
    pub fn upgrade_attempts(&self) -> u64 {
        self.upgrades_ok + self.upgrades_refused + self.upgrades_unanswered
    }

    /// Puts `flow`, with `total` retransmissions so far in this window, among the worst flows.
    #[inline]
    pub fn note_flow(&mut self, flow: FlowTuple, total: u64) {
        insert_worst(&mut self.worst, flow, total);
    }

    /// Adds another shard's (or window's) counts.
    pub fn merge(&mut self, o: &ServerHealth) {
        self.segments += o.segments;
        self.retransmits_to_server += o.retransmits_to_server;
        self.retransmits_from_server += o.retransmits_from_server;
        self.zero_windows += o.zero_windows;
        self.dup_acks += o.dup_acks;
        for (flow, n) in o.worst.iter().flatten() {
            let mine = self
                .worst
                .iter()
                .flatten()
                .find(|(f, _)| f == flow)
                .map_or(0, |(_, m)| *m);
            insert_worst(&mut self.worst, *flow, mine + n);
        }
        self.upgrades_ok += o.upgrades_ok;
        self.upgrades_refused += o.upgrades_refused;
        self.upgrades_unanswered += o.upgrades_unanswered;
        if o.last_refusal_status != 0 {
            self.last_refusal_status = o.last_refusal_status;
        }
    }
}

/// Puts `flow` with `total` into the worst list (most first, ties by flow), replacing its
/// old entry.
fn insert_worst(worst: &mut [Option<(FlowTuple, u64)>; WORST_FLOWS], flow: FlowTuple, total: u64) {
    let mut list: [Option<(FlowTuple, u64)>; WORST_FLOWS + 1] = [None; WORST_FLOWS + 1];
    let mut n = 0;
    for e in worst.iter().flatten().filter(|(f, _)| *f != flow) {
        list[n] = Some(*e);
        n += 1;
    }
    list[n] = Some((flow, total));
    // At most four entries: an insertion pass, no allocation.
    for i in (1..=n).rev() {
        let (a, b) = (list[i - 1].expect("filled"), list[i].expect("filled"));
        if (b.1, std::cmp::Reverse(b.0)) > (a.1, std::cmp::Reverse(a.0)) {
            list.swap(i - 1, i);
        }
    }
    worst.copy_from_slice(&list[..WORST_FLOWS]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::addr;

    fn flow(n: u8) -> FlowTuple {
        (addr(n), 40000, addr(1), 443, 6)
    }

    #[test]
    fn the_worst_flows_stay_ordered_and_merge_by_flow() {
        let mut a = ServerHealth::default();
        for (n, c) in [(2, 1), (3, 5), (4, 2), (5, 3)] {
            a.note_flow(flow(n), c);
        }
        let keys = |h: &ServerHealth| {
            h.worst
                .iter()
                .flatten()
                .map(|e| (e.0 .0, e.1))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&a), vec![(addr(3), 5), (addr(5), 3), (addr(4), 2)]);
        let mut b = ServerHealth::default();
        b.note_flow(flow(4), 4);
        b.segments = 10;
        a.merge(&b);
        assert_eq!(keys(&a), vec![(addr(4), 6), (addr(3), 5), (addr(5), 3)]);
        assert_eq!(a.segments, 10);
    }
}

/// Servers' flow health over a judged window: a rollup of the base windows' `health` alone
/// (the detectors that judge it need none of a window's sketches).
#[derive(Clone, Debug, Default)]
pub(crate) struct HealthWindow {
    /// Start (event time, ns).
    pub start_ns: u64,
    /// End (exclusive).
    pub end_ns: u64,
    /// Per server.
    pub servers: FxHashMap<(IpAddr, u16), ServerHealth>,
}

impl HealthWindow {
    /// Width in seconds.
    pub fn width_s(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }
}

/// Accumulates the base windows' flow health into windows `width_s` wide.
pub(crate) struct HealthRollup {
    width_ns: u64,
    current: Option<HealthWindow>,
}

impl HealthRollup {
    /// A rollup `width_s` seconds wide.
    pub fn new(width_s: f64) -> HealthRollup {
        HealthRollup {
            width_ns: ((width_s * 1e9) as u64).max(1),
            current: None,
        }
    }

    /// Adds a base window; returns the finished one when this window starts a new one.
    pub fn push(&mut self, w: &WindowStats) -> Option<HealthWindow> {
        let start = w.start_ns / self.width_ns * self.width_ns;
        let done = match &self.current {
            Some(c) if c.start_ns != start => self.current.take(),
            _ => None,
        };
        let cur = self.current.get_or_insert_with(|| HealthWindow {
            start_ns: start,
            end_ns: start + self.width_ns,
            servers: FxHashMap::default(),
        });
        for (k, h) in &w.health {
            cur.servers.entry(*k).or_default().merge(h);
        }
        done
    }

    /// The window in progress, if any (end of input).
    pub fn finish(&mut self) -> Option<HealthWindow> {
        self.current.take()
    }
}
