//! Whole-run counters: packets and bytes by protocol type, size class, tenant, IP
//! protocol, malformed reason, and top sources.
use std::collections::BTreeMap;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Serialize;
use tapwatch_classifier::{Classifier, Fragment, PacketMeta, ProtocolType, SizeClass};

use crate::sketch::{DistinctCounter, FrequentItems};

/// Keys the top-sources sketch tracks: any source above 1/2048 of all packets is listed.
pub const TOP_SOURCES_CAPACITY: usize = 4096;
/// Distinct sources are counted exactly up to this many, then estimated (HyperLogLog).
pub const EXACT_DISTINCT_SOURCES: usize = 1 << 16;

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    packets: u64,
    bytes: u64,
}

impl Count {
    /// Counts a record of `bytes` standing for `weight` packets.
    #[inline]
    fn add(&mut self, bytes: u32, weight: u64) {
        self.packets += weight;
        self.bytes += u64::from(bytes) * weight;
    }
}

/// Counters over every packet of a run, in bounded memory: array increments, one
/// frequent-items sketch update and one distinct-count update per packet.
#[derive(Clone, Debug)]
pub struct Totals {
    /// Packets seen (for sampled sources, the estimate: each sample times its rate).
    pub packets: u64,
    /// Packet records counted: `packets` unless the source was sampled.
    pub samples: u64,
    /// Wire bytes seen (estimated likewise).
    pub bytes: u64,
    /// Earliest and latest timestamps (ns).
    pub first_ts: u64,
    /// Latest timestamp (ns).
    pub last_ts: u64,
    by_type: Vec<Count>,
    by_size: [Count; 7],
    by_tenant: Vec<Count>,
    by_ip_proto: [u64; 256],
    /// Packets carrying IP.
    pub ip_packets: u64,
    /// TCP packets (first fragments included) with SYN set and ACK clear.
    pub tcp_syn_flag: u64,
    /// Packets whose headers the snaplen cut short.
    pub snapped_headers: u64,
    malformed: FxHashMap<(&'static str, &'static str), u64>,
    sources: FrequentItems<IpAddr>,
    distinct_sources: DistinctCounter<IpAddr>,
}

impl Totals {
    /// Empty counters, sized for `type_count` protocol types.
    pub fn new(type_count: usize) -> Totals {
        Totals {
            packets: 0,
            samples: 0,
            bytes: 0,
            first_ts: u64::MAX,
            last_ts: 0,
            by_type: vec![Count::default(); type_count.max(ProtocolType::BUILTIN)],
            by_size: [Count::default(); 7],
            by_tenant: vec![Count::default(); 1],
            by_ip_proto: [0; 256],
            ip_packets: 0,
            tcp_syn_flag: 0,
            snapped_headers: 0,
            malformed: FxHashMap::default(),
            sources: FrequentItems::new(TOP_SOURCES_CAPACITY),
            distinct_sources: DistinctCounter::new(EXACT_DISTINCT_SOURCES),
        }
    }

    /// Counts one packet.
    #[inline]
    pub fn add(&mut self, m: &PacketMeta) {
        self.add_hashed(m, m.src.map_or(0, |src| crate::sketch::mix64(&src)));
    }

    /// Loads the lines a packet whose source has [`mix64`](crate::sketch::mix64) hash
    /// `source_hash` will be counted in, a few packets ahead: a hint, nothing is read.
    #[inline]
    pub fn prefetch(&self, source_hash: u64) {
        self.sources.prefetch(source_hash);
        self.distinct_sources.prefetch(source_hash);
    }

    /// [`Totals::add`] with the source address's [`mix64`](crate::sketch::mix64) hash
    /// already computed (the worker's, shared with the window's sketches).
    #[inline]
    pub fn add_hashed(&mut self, m: &PacketMeta, source_hash: u64) {
        let w = u64::from(m.weight);
        self.packets += w;
        self.samples += 1;
        self.bytes += u64::from(m.wire_len) * w;
        self.first_ts = self.first_ts.min(m.ts_ns);
        self.last_ts = self.last_ts.max(m.ts_ns);
        if let Some(c) = self.by_type.get_mut(m.kind.index()) {
            c.add(m.wire_len, w);
        }
        self.by_size[m.size_class as usize].add(m.wire_len, w);
        if m.flags & tapwatch_classifier::FLAG_SNAPPED_HEADER != 0 {
            self.snapped_headers += w;
        }
        if let Some(bad) = m.malformed {
            *self.malformed.entry((bad.layer, bad.reason)).or_insert(0) += w;
        }
        let Some(src) = m.src else {
            return;
        };
        self.ip_packets += w;
        self.by_ip_proto[m.ip_proto as usize] += w;
        // Counted without a branch: whether a packet is a SYN is as random as the traffic.
        let syn =
            (m.ip_proto == 6) & (m.fragment != Fragment::Later) & (m.tcp_flags & 0x12 == 0x02);
        self.tcp_syn_flag += w * u64::from(syn);
        let t = m.tenant.0 as usize;
        if t >= self.by_tenant.len() {
            self.by_tenant.resize(t + 1, Count::default());
        }
        self.by_tenant[t].add(m.wire_len, w);
        debug_assert_eq!(source_hash, crate::sketch::mix64(&src));
        self.sources
            .add_hashed(src, source_hash, w, u64::from(m.wire_len) * w);
        self.distinct_sources.add_hashed(src, source_hash);
    }

    /// Adds another shard's counters into these.
    pub fn merge(&mut self, other: &Totals) {
        self.packets += other.packets;
        self.samples += other.samples;
        self.bytes += other.bytes;
        self.first_ts = self.first_ts.min(other.first_ts);
        self.last_ts = self.last_ts.max(other.last_ts);
        for (a, b) in self.by_type.iter_mut().zip(&other.by_type) {
            a.packets += b.packets;
            a.bytes += b.bytes;
        }
        for (a, b) in self.by_size.iter_mut().zip(&other.by_size) {
            a.packets += b.packets;
            a.bytes += b.bytes;
        }
        if other.by_tenant.len() > self.by_tenant.len() {
            self.by_tenant
                .resize(other.by_tenant.len(), Count::default());
        }
        for (a, b) in self.by_tenant.iter_mut().zip(&other.by_tenant) {
            a.packets += b.packets;
            a.bytes += b.bytes;
        }
        for (a, b) in self.by_ip_proto.iter_mut().zip(other.by_ip_proto.iter()) {
            *a += b;
        }
        self.ip_packets += other.ip_packets;
        self.tcp_syn_flag += other.tcp_syn_flag;
        self.snapped_headers += other.snapped_headers;
        for (k, v) in &other.malformed {
            *self.malformed.entry(*k).or_insert(0) += v;
        }
        self.sources.merge(&other.sources);
        self.distinct_sources.merge(&other.distinct_sources);
    }

    /// Packets by protocol type index (see [`ProtocolType::index`]).
    pub fn type_count(&self, kind: ProtocolType) -> u64 {
        self.by_type
            .get(kind.index())
            .map(|c| c.packets)
            .unwrap_or(0)
    }

    /// Packets with IP protocol number `proto`.
    pub fn ip_proto_count(&self, proto: u8) -> u64 {
        self.by_ip_proto[proto as usize]
    }

    /// Malformed packets.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }

    /// A serialisable report with names resolved, top `top_n` sources by packets.
    pub fn report(&self, classifier: &Classifier, top_n: usize) -> Report {
        let span_ns = self.last_ts.saturating_sub(self.first_ts);
        let duration_s = if self.packets > 1 {
            span_ns as f64 / 1e9
        } else {
            0.0
        };
        let mut by_protocol_type = BTreeMap::new();
        for (i, c) in self.by_type.iter().enumerate() {
            if c.packets > 0 {
                if let Some(kind) = classifier.type_at(i) {
                    by_protocol_type.insert(classifier.type_name(kind).to_string(), c.packets);
                }
            }
        }
        let by_size_class = SizeClass::ALL
            .iter()
            .map(|s| (s.name().to_string(), self.by_size[*s as usize].packets))
            .collect();
        let tenants = classifier.tenants();
        let by_tenant = self
            .by_tenant
            .iter()
            .enumerate()
            .filter(|(_, c)| c.packets > 0)
            .map(|(i, c)| {
                (
                    tenants
                        .name(tapwatch_classifier::TenantId(i as u16))
                        .to_string(),
                    TenantReport {
                        packets: c.packets,
                        bytes: c.bytes,
                    },
                )
            })
            .collect();
        let mut by_ip_protocol = BTreeMap::new();
        for (p, n) in self.by_ip_proto.iter().enumerate() {
            if *n > 0 {
                by_ip_protocol.insert(ip_proto_name(p as u8), *n);
            }
        }
        let by_reason: BTreeMap<String, u64> = self
            .malformed
            .iter()
            .map(|((l, r), n)| (format!("{l}: {r}"), *n))
            .collect();
        let mut top = self.sources.top(top_n);
        top.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        let top_sources = top
            .into_iter()
            .map(|e| SourceReport {
                address: e.key,
                tenant: tenants.name(tenants.lookup(e.key)).to_string(),
                packets: e.count,
                bytes: e.secondary,
            })
            .collect();
        let (distinct_sources, distinct_sources_exact) = self.distinct_sources.count();
        Report {
            packets: self.packets,
            samples: self.samples,
            bytes: self.bytes,
            duration_s,
            pps: if duration_s > 0.0 {
                self.packets as f64 / duration_s
            } else {
                0.0
            },
            first_ts_ns: (self.packets > 0).then_some(self.first_ts),
            last_ts_ns: (self.packets > 0).then_some(self.last_ts),
            ip_packets: self.ip_packets,
            tcp_syn_flag: self.tcp_syn_flag,
            snapped_headers: self.snapped_headers,
            malformed: self.malformed_total(),
            malformed_by_reason: by_reason,
            by_protocol_type,
            by_size_class,
            by_tenant,
            by_ip_protocol,
            top_sources,
            top_sources_error_bound: self.sources.error_bound(),
            distinct_sources,
            distinct_sources_exact,
        }
    }
}

/// Conventional name of an IP protocol number.
pub fn ip_proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        89 => "ospf".into(),
        132 => "sctp".into(),
        other => format!("ip_proto_{other}"),
    }
}

/// Per-tenant totals in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantReport {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One of the top sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// Source address.
    pub address: IpAddr,
    /// Its tenant.
    pub tenant: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The summary `tapwatch replay` and `tapwatch run` print (`--format json` serialises it).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Packets seen (for sampled sources, the estimate).
    pub packets: u64,
    /// Packet records counted: `packets` unless a source was sampled.
    pub samples: u64,
    /// Wire bytes.
    pub bytes: u64,
    /// Span of capture time, seconds.
    pub duration_s: f64,
    /// Packets per second of capture time.
    pub pps: f64,
    /// Earliest timestamp.
    pub first_ts_ns: Option<u64>,
    /// Latest timestamp.
    pub last_ts_ns: Option<u64>,
    /// Packets carrying IP.
    pub ip_packets: u64,
    /// TCP packets with SYN set and ACK clear (by flags, malformed headers included).
    pub tcp_syn_flag: u64,
    /// Packets whose headers the capture's snaplen cut short (labelled as far as possible).
    pub snapped_headers: u64,
    /// Malformed packets (skipped by detectors).
    pub malformed: u64,
    /// Malformed packets by `layer: reason`.
    pub malformed_by_reason: BTreeMap<String, u64>,
    /// Packets by protocol type.
    pub by_protocol_type: BTreeMap<String, u64>,
    /// Packets by size class.
    pub by_size_class: BTreeMap<String, u64>,
    /// Packets and bytes by source tenant.
    pub by_tenant: BTreeMap<String, TenantReport>,
    /// Packets by IP protocol (after IPv6 extension headers).
    pub by_ip_protocol: BTreeMap<String, u64>,
    /// Busiest sources by packets (counts are lower bounds, exact when the bound is 0).
    pub top_sources: Vec<SourceReport>,
    /// Most packets any top-source count may be short by (0: exact).
    pub top_sources_error_bound: u64,
    /// Distinct source addresses.
    pub distinct_sources: u64,
    /// Whether `distinct_sources` is exact (else a HyperLogLog estimate, ±0.8 %).
    pub distinct_sources_exact: bool,
}
