//! One tumbling window's aggregates, mergeable across shards and into wider rollups.
use std::net::IpAddr;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use tapwatch_classifier::{Fragment, PacketMeta, ProtocolType, SizeClass, TenantId, TenantMap};

use crate::detect::latency::{LatencyConfig, LatencyWindow};
use crate::detect::PacketHashes;
use crate::health::ServerHealth;
use crate::sketch::{DistinctCounter, FrequentItems};

/// A service: destination address, port and IP protocol.
pub type ServiceKey = (IpAddr, u16, u8);
/// A flow: source, source port, destination, destination port, IP protocol.
pub type FlowTuple = (IpAddr, u16, IpAddr, u16, u8);

/// Handshake latency histogram, µs, 1 µs to 60 s at 2 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("static histogram bounds are valid")
}

/// Per-tenant numbers of a window.
#[derive(Clone, Debug)]
pub struct TenantWindow {
    /// Packets from the tenant's sources.
    pub packets: u64,
    /// Bytes from the tenant's sources.
    pub bytes: u64,
    /// Connection setups from the tenant's sources.
    pub setups: u64,
    /// Distinct sources (the tenant's active nodes).
    pub nodes: DistinctCounter<IpAddr>,
    /// SYN → SYN-ACK, µs, for connections from the tenant.
    pub syn_to_syn_ack: Option<Histogram<u64>>,
    /// SYN-ACK → ACK, µs.
    pub syn_ack_to_ack: Option<Histogram<u64>>,
}

impl TenantWindow {
    fn new(exact_nodes: usize) -> TenantWindow {
        TenantWindow {
            packets: 0,
            bytes: 0,
            setups: 0,
            nodes: DistinctCounter::new(exact_nodes),
            syn_to_syn_ack: None,
            syn_ack_to_ack: None,
        }
    }

    fn merge(&mut self, o: &TenantWindow) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.setups += o.setups;
        self.nodes.merge(&o.nodes);
        merge_hist(&mut self.syn_to_syn_ack, &o.syn_to_syn_ack);
        merge_hist(&mut self.syn_ack_to_ack, &o.syn_ack_to_ack);
    }
}

fn merge_hist(a: &mut Option<Histogram<u64>>, b: &Option<Histogram<u64>>) {
    if let Some(b) = b {
        let _ = a.get_or_insert_with(latency_histogram).add(b);
    }
}

/// Per-server (destination service of SYNs) numbers of a window.
#[derive(Clone, Debug)]
pub struct ServerWindow {
    /// First SYNs seen towards the server.
    pub syns: u64,
    /// SYNs sent again.
    pub retransmits: u64,
    /// RSTs to or from the server.
    pub rsts: u64,
    /// SYN → SYN-ACK, µs.
    pub syn_to_syn_ack: Option<Histogram<u64>>,
}

impl ServerWindow {
    fn new() -> ServerWindow {
        ServerWindow {
            syns: 0,
            retransmits: 0,
            rsts: 0,
            syn_to_syn_ack: None,
        }
    }
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The class of a packet's source address: the address family, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceClass {
    /// An IPv4 source.
    Ipv4 = 0,
    /// An IPv6 source.
    Ipv6 = 1,
    /// No IP source (ARP, LLDP, malformed).
    NonIp = 2,
}

impl SourceClass {
    /// Every class, in index order.
    pub const ALL: [SourceClass; 3] = [SourceClass::Ipv4, SourceClass::Ipv6, SourceClass::NonIp];

    /// The class of a source address.
    #[inline]
    pub fn of(src: Option<IpAddr>) -> SourceClass {
        match src {
            Some(IpAddr::V4(_)) => SourceClass::Ipv4,
            Some(IpAddr::V6(_)) => SourceClass::Ipv6,
            None => SourceClass::NonIp,
        }
    }

    /// Its name in storage rows: `ipv4`, `ipv6`, `non_ip`.
    pub fn name(self) -> &'static str {
        match self {
            SourceClass::Ipv4 => "ipv4",
            SourceClass::Ipv6 => "ipv6",
            SourceClass::NonIp => "non_ip",
        }
    }
}

/// Packets and bytes by tenant × protocol type × source class × size class, in one flat array
/// (no hashing per packet): cell `((tenant · types + type) · 3 + source class) · 7 + size class`.
#[derive(Clone, Debug, Default)]
pub struct TrafficTable {
    types: usize,
    cells: Vec<Traffic>,
}

impl TrafficTable {
    fn new(types: usize) -> TrafficTable {
        TrafficTable {
            types: types.max(ProtocolType::BUILTIN),
            cells: Vec::new(),
        }
    }

    /// Counts a packet record of `bytes` standing for `weight` packets.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        tenant: TenantId,
        kind: ProtocolType,
        class: SourceClass,
        size: SizeClass,
        bytes: u32,
        weight: u64,
    ) {
        let i = (((tenant.0 as usize * self.types) + kind.index().min(self.types - 1)) * 3
            + class as usize)
            * 7
            + size as usize;
        if i >= self.cells.len() {
            self.cells.resize(i + 1, Traffic::default());
        }
        let c = &mut self.cells[i];
        c.packets += weight;
        c.bytes += u64::from(bytes) * weight;
    }

    /// Non-empty cells as (tenant, protocol-type index, source class, size class, traffic).
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = (TenantId, usize, SourceClass, SizeClass, Traffic)> + '_ {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.packets > 0)
            .map(|(i, c)| {
                let size = SizeClass::ALL[i % 7];
                let class = SourceClass::ALL[(i / 7) % 3];
                let rest = i / 21;
                (
                    TenantId((rest / self.types) as u16),
                    rest % self.types,
                    class,
                    size,
                    *c,
                )
            })
    }

    fn merge(&mut self, o: &TrafficTable) {
        if o.cells.len() > self.cells.len() {
            self.cells.resize(o.cells.len(), Traffic::default());
        }
        for (a, b) in self.cells.iter_mut().zip(&o.cells) {
            a.packets += b.packets;
            a.bytes += b.bytes;
        }
    }
}

/// Aggregates of one window `[start_ns, end_ns)`.
#[derive(Clone, Debug)]
pub struct WindowStats {
    /// Window start (event time, ns).
    pub start_ns: u64,
    /// Window end (exclusive).
    pub end_ns: u64,
    /// Packets (scaled: each sampled record counts as its sampling rate).
    pub packets: u64,
    /// Packet records actually seen (equals `packets` when unsampled).
    pub samples: u64,
    /// Bytes.
    pub bytes: u64,
    /// Per tenant, indexed by [`TenantId`].
    pub tenants: Vec<TenantWindow>,
    /// Packets and bytes by tenant × protocol type × size class.
    pub traffic: TrafficTable,
    /// Sources by packets (secondary: bytes).
    pub sources: FrequentItems<IpAddr>,
    /// Sources by bytes.
    pub source_bytes: FrequentItems<IpAddr>,
    /// (source, protocol type, size class) by packets.
    pub source_kinds: FrequentItems<(IpAddr, ProtocolType, SizeClass)>,
    /// Destination services by packets.
    pub services: FrequentItems<ServiceKey>,
    /// Destination addresses by packets (a victim attacked on many ports).
    pub destinations: FrequentItems<IpAddr>,
    /// Flows by packets.
    pub flows: FrequentItems<FlowTuple>,
    /// Servers that received SYNs (bounded; overflow counted in `servers_untracked`).
    pub servers: FxHashMap<(IpAddr, u16), ServerWindow>,
    /// Handshake events for servers beyond the bound.
    pub servers_untracked: u64,
    /// Latency samples per (server, measure) (bounded by `latency.max_subjects`).
    pub latency: LatencyWindow,
    // flow health (issue 14)
    /// TCP servers' flow health: retransmissions, upgrade outcomes (bounded like `servers`).
    pub health: FxHashMap<(IpAddr, u16), ServerHealth>,
    /// Flow-health events for servers beyond the bound.
    pub health_untracked: u64,
    exact_nodes: usize,
    max_servers: usize,
}

impl WindowStats {
    /// An empty window.
    pub fn new(
        start_ns: u64,
        end_ns: u64,
        sketch_capacity: usize,
        exact_nodes: usize,
        max_servers: usize,
        type_count: usize,
    ) -> WindowStats {
        WindowStats {
            start_ns,
            end_ns,
            packets: 0,
            samples: 0,
            bytes: 0,
            tenants: Vec::new(),
            traffic: TrafficTable::new(type_count),
            sources: FrequentItems::new(sketch_capacity),
            source_bytes: FrequentItems::new(sketch_capacity),
            source_kinds: FrequentItems::new(sketch_capacity),
            services: FrequentItems::new(sketch_capacity),
            destinations: FrequentItems::new(sketch_capacity),
            flows: FrequentItems::new(sketch_capacity),
            servers: FxHashMap::default(),
            servers_untracked: 0,
            latency: LatencyWindow::new(LatencyConfig::default().max_subjects),
            health: FxHashMap::default(),
            health_untracked: 0,
            exact_nodes,
            max_servers,
        }
    }

    /// Loads the sketch lines `m` will be counted in (see
    /// [`Shard::prefetch`](crate::Shard::prefetch)): the same sketches, keys and hashes as
    /// the shard's count of it.
    #[inline]
    pub(crate) fn prefetch(&self, m: &PacketMeta, h: &PacketHashes) {
        if m.src.is_none() || m.malformed.is_some() {
            return;
        }
        if let Some(t) = self.tenants.get(m.tenant.0 as usize) {
            t.nodes.prefetch(h.source);
        }
        self.sources.prefetch(h.source);
        self.source_bytes.prefetch(h.source);
        self.source_kinds.prefetch(h.source_kind);
        if m.dst.is_some() {
            self.destinations.prefetch(h.destination);
            if m.fragment != Fragment::Later {
                self.services.prefetch(h.service);
                self.flows.prefetch(h.flow_tuple);
            }
        }
    }

    /// An empty window with the same settings over another span.
    pub fn empty_like(&self, start_ns: u64, end_ns: u64) -> WindowStats {
        let mut w = WindowStats::new(
            start_ns,
            end_ns,
            self.sources.capacity(),
            self.exact_nodes,
            self.max_servers,
            self.traffic.types,
        );
        w.latency = LatencyWindow::new(self.latency.capacity());
        w
    }

    /// Width in seconds.
    pub fn width_s(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// Whether some of the window's packets are estimates from sampled records (a window
    /// that counted no records, as tests build them, is taken as unsampled).
    pub fn sampled(&self) -> bool {
        self.samples > 0 && self.samples < self.packets
    }

    /// The records behind `packets` of this window's packets: the window's samples
    /// apportioned by packets (exact when unsampled, or when every record of the window had
    /// one sampling rate; the window counts samples, not each cell, to keep the per-packet
    /// cost to one add).
    pub fn samples_of(&self, packets: u64) -> u64 {
        if !self.sampled() {
            return packets;
        }
        let n = u128::from(packets) * u128::from(self.samples);
        let d = u128::from(self.packets);
        ((n + d / 2) / d) as u64
    }

    /// The tenant's numbers, created on first use.
    #[inline]
    pub fn tenant(&mut self, t: TenantId) -> &mut TenantWindow {
        let i = t.0 as usize;
        if i >= self.tenants.len() {
            let exact = self.exact_nodes;
            self.tenants.resize_with(i + 1, || TenantWindow::new(exact));
        }
        &mut self.tenants[i]
    }

    /// The server's numbers, if it is tracked (or there is room to track it).
    #[inline]
    pub fn server(&mut self, s: (IpAddr, u16)) -> Option<&mut ServerWindow> {
        if !self.servers.contains_key(&s) && self.servers.len() >= self.max_servers * 4 {
            self.servers_untracked += 1;
            return None;
        }
        Some(self.servers.entry(s).or_insert_with(ServerWindow::new))
    }

    /// The server's flow health, if it is tracked (or there is room to track it).
    #[inline]
    pub fn health_of(&mut self, s: (IpAddr, u16)) -> Option<&mut ServerHealth> {
        use std::collections::hash_map::Entry;
        let full = self.health.len() >= self.max_servers * 4;
        // One probe: the entry, not a lookup and then an insert.
        let h = match self.health.entry(s) {
            Entry::Occupied(o) => Some(o.into_mut()),
            Entry::Vacant(v) if !full => Some(v.insert(ServerHealth::default())),
            Entry::Vacant(_) => None,
        };
        if h.is_none() {
            self.health_untracked += 1;
        }
        h
    }

    /// Adds another window's aggregates (another shard's, or a narrower window in a rollup).
    pub fn merge(&mut self, o: &WindowStats) {
        self.start_ns = self.start_ns.min(o.start_ns);
        self.end_ns = self.end_ns.max(o.end_ns);
        self.packets += o.packets;
        self.samples += o.samples;
        self.bytes += o.bytes;
        for (i, t) in o.tenants.iter().enumerate() {
            self.tenant(TenantId(i as u16)).merge(t);
        }
        self.traffic.merge(&o.traffic);
        self.sources.merge(&o.sources);
        self.source_bytes.merge(&o.source_bytes);
        self.source_kinds.merge(&o.source_kinds);
        self.services.merge(&o.services);
        self.destinations.merge(&o.destinations);
        self.flows.merge(&o.flows);
        for (k, v) in &o.servers {
            if let Some(s) = self.server(*k) {
                s.syns += v.syns;
                s.retransmits += v.retransmits;
                s.rsts += v.rsts;
                merge_hist(&mut s.syn_to_syn_ack, &v.syn_to_syn_ack);
            }
        }
        self.servers_untracked += o.servers_untracked;
        self.latency.merge(&o.latency);
        for (k, v) in &o.health {
            if let Some(h) = self.health_of(*k) {
                h.merge(v);
            }
        }
        self.health_untracked += o.health_untracked;
    }
}

/// Accumulates consecutive windows into one of a wider width.
pub(crate) struct Rollup {
    width_ns: u64,
    current: Option<WindowStats>,
}

impl Rollup {
    /// A rollup `width_s` seconds wide.
    pub(crate) fn new(width_s: f64) -> Rollup {
        Rollup {
            width_ns: ((width_s * 1e9) as u64).max(1),
            current: None,
        }
    }

    /// Adds a window; returns the finished rollup when this window starts a new one.
    pub(crate) fn push(&mut self, w: &WindowStats) -> Option<WindowStats> {
        let start = w.start_ns / self.width_ns * self.width_ns;
        let done = match &self.current {
            Some(c) if c.start_ns != start => self.current.take(),
            _ => None,
        };
        let cur = self
            .current
            .get_or_insert_with(|| w.empty_like(start, start + self.width_ns));
        cur.merge(w);
        cur.start_ns = start;
        cur.end_ns = start + self.width_ns;
        done
    }

    /// The rollup in progress, if any (end of input).
    pub(crate) fn finish(&mut self) -> Option<WindowStats> {
        self.current.take()
    }
}

/// p50 / p99 / max / count of a latency histogram, µs (null when empty).
fn quantiles(h: Option<&Histogram<u64>>) -> serde_json::Value {
    match h {
        Some(h) if !h.is_empty() => {
            serde_json::json!({"p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "max_us": h.max(), "count": h.len()})
        }
        _ => serde_json::Value::Null,
    }
}

impl WindowStats {
    /// One JSON object describing the window: totals, per tenant (with handshake latency
    /// quantiles), the busiest sources and services, the servers that saw SYNs, and the TCP
    /// servers' flow health (most retransmissions first).
    pub fn summary(&self, tenants: &TenantMap) -> serde_json::Value {
        let per_tenant: serde_json::Map<String, serde_json::Value> = self
            .tenants
            .iter()
            .enumerate()
            .filter(|(_, t)| t.packets > 0)
            .map(|(i, t)| {
                (
                    tenants.name(TenantId(i as u16)).to_string(),
                    serde_json::json!({
                        "packets": t.packets,
                        "bytes": t.bytes,
                        "setups": t.setups,
                        "nodes": t.nodes.count().0,
                        "syn_to_syn_ack": quantiles(t.syn_to_syn_ack.as_ref()),
                        "syn_ack_to_ack": quantiles(t.syn_ack_to_ack.as_ref()),
                    }),
                )
            })
            .collect();
        let mut servers: Vec<_> = self.servers.iter().collect();
        servers.sort_by(|a, b| b.1.syns.cmp(&a.1.syns).then(a.0.cmp(b.0)));
        let mut health: Vec<_> = self.health.iter().collect();
        health.sort_by(|a, b| {
            (b.1.retransmits(), b.1.segments)
                .cmp(&(a.1.retransmits(), a.1.segments))
                .then(a.0.cmp(b.0))
        });
        serde_json::json!({
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "window_s": self.width_s(),
            "packets": self.packets,
            "bytes": self.bytes,
            "tenants": per_tenant,
            "top_sources": self.sources.top(10).iter().map(|e| serde_json::json!({"address": e.key.to_string(), "packets": e.count, "bytes": e.secondary})).collect::<Vec<_>>(),
            "top_services": self.services.top(10).iter().map(|e| serde_json::json!({"address": e.key.0.to_string(), "port": e.key.1, "proto": e.key.2, "packets": e.count})).collect::<Vec<_>>(),
            "sketch_error_bound": self.sources.error_bound(),
            "latency": self.latency.summary(50),
            "flow_health": health.iter().take(20).map(|(k, h)| serde_json::json!({"address": k.0.to_string(), "port": k.1, "segments": h.segments, "retransmits_to_server": h.retransmits_to_server, "retransmits_from_server": h.retransmits_from_server, "zero_windows": h.zero_windows, "dup_acks": h.dup_acks, "upgrades_ok": h.upgrades_ok, "upgrades_refused": h.upgrades_refused, "upgrades_unanswered": h.upgrades_unanswered})).collect::<Vec<_>>(),
            "servers": servers.iter().take(20).map(|(k, s)| serde_json::json!({"address": k.0.to_string(), "port": k.1, "syns": s.syns, "retransmitted_syns": s.retransmits, "rsts": s.rsts, "syn_to_syn_ack": quantiles(s.syn_to_syn_ack.as_ref())})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{addr, SEC};

    #[test]
    fn merging_adds_everything_and_keeps_the_server_bound() {
        let mut a = WindowStats::new(0, SEC, 16, 16, 1, 32);
        let mut b = a.empty_like(0, SEC);
        for n in 0..5 {
            if let Some(s) = a.server((addr(n), 443)) {
                s.syns += 1;
            }
        }
        assert_eq!(
            (a.servers.len(), a.servers_untracked),
            (4, 1),
            "4 × max_servers"
        );
        b.packets = 2;
        b.tenant(TenantId(2)).setups = 3;
        b.server((addr(9), 80)).expect("room").retransmits = 1;
        a.merge(&b);
        assert_eq!((a.packets, a.tenants[2].setups, a.tenants.len()), (2, 3, 3));
        assert_eq!(
            a.servers_untracked, 2,
            "the merged server did not fit either"
        );
    }

    #[test]
    fn the_traffic_table_gives_back_what_it_counted() {
        let mut t = TrafficTable::new(ProtocolType::BUILTIN);
        t.add(
            TenantId(1),
            ProtocolType::Udp,
            SourceClass::Ipv6,
            SizeClass::UpTo128,
            100,
            1,
        );
        t.add(
            TenantId(1),
            ProtocolType::Udp,
            SourceClass::Ipv6,
            SizeClass::UpTo128,
            28,
            1,
        );
        let cells: Vec<_> = t.iter().collect();
        assert_eq!(
            cells,
            vec![(
                TenantId(1),
                ProtocolType::Udp.index(),
                SourceClass::Ipv6,
                SizeClass::UpTo128,
                Traffic {
                    packets: 2,
                    bytes: 128
                }
            )]
        );
    }

    #[test]
    fn samples_are_apportioned_by_packets_and_exact_when_unsampled() {
        let mut w = WindowStats::new(0, SEC, 16, 16, 16, 32);
        w.packets = 7;
        w.samples = 7;
        assert!(!w.sampled());
        assert_eq!(w.samples_of(3), 3);
        // 1 in 10: 30 records stand for 300 packets; a cell of 120 packets is 12 records.
        w.packets = 300;
        w.samples = 30;
        assert!(w.sampled());
        assert_eq!(
            (w.samples_of(120), w.samples_of(300), w.samples_of(0)),
            (12, 30, 0)
        );
        let mut m = w.empty_like(0, SEC);
        m.merge(&w);
        m.merge(&w);
        assert_eq!((m.packets, m.samples), (600, 60));
    }

    #[test]
    fn a_rollup_hands_over_its_window_when_the_next_one_starts() {
        let mut r = Rollup::new(10.0);
        for i in 0..10 {
            let mut w = WindowStats::new(i * SEC, (i + 1) * SEC, 16, 16, 16, 32);
            w.packets = 1;
            assert!(r.push(&w).is_none());
        }
        let next = WindowStats::new(10 * SEC, 11 * SEC, 16, 16, 16, 32);
        let done = r.push(&next).expect("the first 10 s are complete");
        assert_eq!(
            (done.start_ns, done.end_ns, done.packets),
            (0, 10 * SEC, 10)
        );
        let partial = r.finish().expect("the second has begun");
        assert_eq!((partial.start_ns, partial.end_ns), (10 * SEC, 20 * SEC));
    }
}
