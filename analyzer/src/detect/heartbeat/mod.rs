//! Missed heartbeats: periodic flows discovered from their own inter-arrival times, and
//! BFD sessions from the intervals they advertise (RFC 5880 §6.8.4).
//!
//! Each flow keeps running statistics of its inter-arrival times ([`rhythm`]); once they
//! show a regularity random arrivals would not (small coefficient of variation, nearly every
//! interval near the period, enough intervals), the flow is periodic and gets a deadline of
//! `k` periods after its last packet. A BFD control flow's deadline is its detection time:
//! `detect_mult × max(its desired min TX, the peer's required min RX)`. Deadlines live in a
//! min-heap, so advancing event time touches only the flows that are due, never every flow.
//! A flow that ends (TCP FIN/RST, BFD Down/AdminDown) drops its deadline.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tapwatch_classifier::{BfdState, Detail, Fragment, PacketMeta, ProtocolType};

use super::{PacketDetector, PacketHashes};
use crate::finding::{endpoint, proto_label, Evidence, Finding, FindingKind, Severity};
use crate::labels::Labels;
use crate::table::{Align64, FlowMap, TableKey};
use crate::window::WindowStats;
use rhythm::Rhythm;

mod rhythm;

/// Periodic flows and BFD sessions that fall silent.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// A periodic flow is late after this many periods of silence.
    pub k: f64,
    /// Inter-arrival intervals needed before a flow counts as periodic.
    pub min_samples: u32,
    /// Intervals after which the limit for learning a rhythm is fully `max_cv` (it is
    /// `max_cv × (n / full_samples)²` before); also the memory of the running statistics.
    pub full_samples: u32,
    /// Largest coefficient of variation (σ / mean) of a periodic flow's intervals. Poisson
    /// arrivals have 1; a heartbeat with ±25 % jitter about 0.14.
    pub max_cv: f64,
    /// Seconds a flow must have kept its rhythm before it counts as periodic.
    pub min_learn_s: f64,
    /// Flows that carry a packet larger than this (wire bytes) are data, not heartbeats.
    pub max_packet_bytes: u32,
    /// An interval is near the period when within this fraction of the mean of the intervals
    /// before it (BFD's own transmit jitter is up to 25 %).
    pub tolerance: f64,
    /// Fraction of the (recent) intervals that must be near the period.
    pub min_regular: f64,
    /// Shortest period considered a heartbeat, seconds (faster flows are streams).
    pub min_period_s: f64,
    /// Longest period considered, seconds.
    pub max_period_s: f64,
    /// Flows tracked at most per worker.
    pub max_flows: usize,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            k: 3.0,
            min_samples: 10,
            full_samples: 32,
            max_cv: 0.18,
            min_learn_s: 10.0,
            max_packet_bytes: 512,
            tolerance: 0.5,
            min_regular: 0.9,
            min_period_s: 0.04,
            max_period_s: 600.0,
            max_flows: 1 << 17,
        }
    }
}

/// Why a missed heartbeat resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// Packets arrived again.
    #[serde(rename = "flow resumed")]
    FlowResumed,
    /// The flow ended (TCP FIN/RST, BFD Down/AdminDown).
    #[serde(rename = "flow ended")]
    FlowEnded,
}

/// A BFD session's advertised timers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BfdEvidence {
    /// Desired minimum transmit interval, µs.
    pub desired_min_tx_us: u32,
    /// Detect time multiplier.
    pub detect_mult: u8,
    /// My discriminator.
    pub my_discriminator: u32,
    /// Required minimum receive interval, µs.
    pub required_min_rx_us: u32,
    /// Your discriminator.
    pub your_discriminator: u32,
}

/// The numbers behind a missed heartbeat (fields in the order they serialise: by name).
/// `gap_s` and `resolution` are there only when it resolved.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeartbeatEvidence {
    /// BFD sessions: their timers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdEvidence>,
    /// Resolved: the whole gap, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_s: Option<f64>,
    /// The last packet before the silence (event time, ns).
    pub last_packet_at_ns: u64,
    /// Learned period, seconds.
    pub period_s: f64,
    /// `udp`, `tcp`, … .
    pub protocol: String,
    /// Resolved: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Inter-arrival intervals the period was learned from.
    pub samples: u32,
    /// Standard deviation of the intervals, seconds.
    pub spread_s: f64,
}

/// Identity of a heartbeat flow, one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port for TCP; BFD's "my discriminator" low bits for BFD; 0 for other UDP,
    /// whose senders may change source port between beats.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
}

impl TableKey for FlowKey {
    #[inline]
    fn table_hash(&self) -> u64 {
        use crate::sketch::mix64;
        self.hash_from(mix64(&self.src), mix64(&self.dst))
    }
}

impl FlowKey {
    /// The key's hash from its addresses' [`mix64`](crate::sketch::mix64) hashes (the
    /// packet path has them already): the hash of a one-way 5-tuple, the same the
    /// frequent-items sketch of flows uses.
    #[inline]
    fn hash_from(&self, source: u64, destination: u64) -> u64 {
        crate::sketch::flow_tuple_hash(
            source,
            destination,
            self.src_port,
            self.dst_port,
            self.proto,
        )
    }

    fn subject(&self, shown_src_port: u16) -> String {
        format!(
            "{}->{}/{}",
            endpoint(self.src, shown_src_port),
            endpoint(self.dst, self.dst_port),
            proto_label(self.proto)
        )
    }
}

#[derive(Clone, Debug)]
struct BfdTiming {
    detect_mult: u8,
    desired_min_tx_us: u32,
    required_min_rx_us: u32,
    my_disc: u32,
    your_disc: u32,
}

/// A followed flow. In this order (`repr(C)`): what every packet of the flow reads or
/// writes first, then what only a missed heartbeat or a new flow touches, so that a
/// packet's reads lie in the entry's first two cache lines ([`HOT_BYTES`]).
#[derive(Clone, Debug)]
#[repr(C)]
struct Flow {
    last_ts: u64,
    /// Start of the current run of samples (reset when the flow resumes after a gap).
    run_start: u64,
    rhythm: Rhythm,
    /// Firing since this event time (the last packet before the silence), or
    /// [`NOT_FIRING`] (an `Option` would take 8 bytes more; see [`Flow::firing_since`]).
    firing_since: u64,
    /// Deadline as a multiple of the period (the tenant's `heartbeat_k`).
    k: f64,
    /// A BFD session's timers (boxed: few flows are BFD).
    bfd: Option<Box<BfdTiming>>,
    generation: u32,
    shown_src_port: u16,
    /// A packet too large for a heartbeat was seen: this flow carries data.
    data: bool,
    periodic: bool,
    /// The tenant's name (read when a finding is made).
    tenant: Option<Box<str>>,
    /// Length of the last missed-heartbeat gap, ns (0: none yet).
    last_gap_ns: u64,
}

/// Bytes of a followed flow's entry that a packet of the flow reads: its key and the
/// fields before `tenant`. The entries start cache lines ([`Align64`]), and only these
/// are loaded ahead.
const HOT_BYTES: usize =
    FlowMap::<FlowKey, Flow, Align64>::VALUE_OFFSET + std::mem::offset_of!(Flow, tenant);

// Two cache lines, in entries of three.
const _: () = {
    type Table = FlowMap<FlowKey, Flow, Align64>;
    assert!(Table::lines_spanned(HOT_BYTES) <= 2);
    assert!(Table::lines_spanned(Table::ENTRY_BYTES) <= 3);
};

/// [`Flow::firing_since`] of a flow that is not firing (no event time is that late).
const NOT_FIRING: u64 = u64::MAX;

impl Flow {
    /// Since when the flow's silence has been firing, if it is.
    fn firing_since(&self) -> Option<u64> {
        (self.firing_since != NOT_FIRING).then_some(self.firing_since)
    }

    /// [`Flow::firing_since`], leaving the flow not firing.
    fn stop_firing(&mut self) -> Option<u64> {
        let since = self.firing_since();
        self.firing_since = NOT_FIRING;
        since
    }
}

/// Per-worker heartbeat state.
pub struct HeartbeatTracker {
    cfg: HeartbeatConfig,
    /// Entries of three cache lines, of which a packet reads two ([`HOT_BYTES`]).
    flows: FlowMap<FlowKey, Flow, Align64>,
    timers: BinaryHeap<Reverse<(u64, FlowKey, u32)>>,
    /// Peer's required min RX by (peer address, peer discriminator) for BFD detect times:
    /// written by every BFD packet, so its line is loaded ahead like the flow table's.
    bfd_rx: FlowMap<BfdSender, u32>,
    /// Packets not tracked because the table was full.
    pub untracked: u64,
    doorkeeper: Doorkeeper,
}

/// A BFD sender: its address and its discriminator ("my discriminator").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BfdSender {
    addr: IpAddr,
    disc: u32,
}

impl BfdSender {
    /// The table hash of a sender from its address's [`mix64`](crate::sketch::mix64) hash.
    #[inline]
    fn hash_from(addr: u64, disc: u32) -> u64 {
        crate::sketch::address_word_hash(addr, disc)
    }

    /// The sender at `addr` (whose [`mix64`](crate::sketch::mix64) hash is `addr_hash`)
    /// with discriminator `disc`, and its table hash.
    #[inline]
    fn keyed(addr: IpAddr, addr_hash: u64, disc: u32) -> (BfdSender, u64) {
        (
            BfdSender { addr, disc },
            BfdSender::hash_from(addr_hash, disc),
        )
    }
}

impl TableKey for BfdSender {
    fn table_hash(&self) -> u64 {
        BfdSender::hash_from(crate::sketch::mix64(&self.addr), self.disc)
    }
}

/// Two rotating Bloom filters of flow hashes: "has this flow been seen before, recently?"
/// A false "yes" only admits a flow early; the table's own cap still bounds memory.
///
/// Each key sets three bits of one 64-bit word (a blocked Bloom filter: one cache line per
/// key). A flood of one-packet flows (a scan, a busy relay's short connections) is what
/// the doorkeeper is for, and the filter keeps most of it out: after 1.6 million keys in
/// an epoch it admits about 5 % of the next 1.6 million falsely, where one bit per key in
/// half as many bits admitted about a quarter (each a table entry, and at the table's cap
/// a real heartbeat turned away).
///
/// Rotation follows fixed epochs of event time (`now / rotate_ns`), not the packets that
/// happened to arrive, so every shard rotates at the same event times: one epoch forward
/// clears the older filter; two or more clear both. The two filters are interleaved word
/// by word, so a key's two words share one cache line (and the table huge pages).
struct Doorkeeper {
    bits: crate::sketch::HugeTable<[u64; 2]>,
    current: usize,
    epoch: u64,
    rotate_ns: u64,
    /// Where the epoch after `epoch` begins (event time): below it, no division.
    next_epoch_ns: u64,
}

impl Doorkeeper {
    /// Bits in each filter (2 MiB).
    const BITS: usize = 1 << 24;

    fn new(rotate_ns: u64) -> Doorkeeper {
        Doorkeeper {
            bits: crate::sketch::HugeTable::new(Self::BITS / 64, [0; 2]),
            current: 0,
            epoch: 0,
            rotate_ns: rotate_ns.max(1),
            next_epoch_ns: rotate_ns.max(1),
        }
    }

    /// The word and the bits of a key's [`mix64`](crate::sketch::mix64) hash: the word
    /// from its low bits, the three bits from high ones.
    #[inline]
    fn slot(hash: u64) -> (usize, u64) {
        let word = hash as usize & (Self::BITS / 64 - 1);
        let bits =
            (1u64 << (hash >> 40 & 63)) | (1u64 << (hash >> 46 & 63)) | (1u64 << (hash >> 52 & 63));
        (word, bits)
    }

    /// Loads a key's words into the cache ahead of [`Doorkeeper::seen_before`].
    #[inline]
    fn prefetch(&self, hash: u64) {
        let (word, _) = Self::slot(hash);
        crate::sketch::prefetch(&self.bits[word]);
    }

    /// Whether the key of `hash` was seen in this epoch or the last; marks it seen.
    #[inline]
    fn seen_before(&mut self, hash: u64, now: u64) -> bool {
        if now >= self.next_epoch_ns {
            let epoch = now / self.rotate_ns;
            self.current ^= 1;
            let both = epoch - self.epoch >= 2;
            for w in self.bits.iter_mut() {
                w[self.current] = 0;
                if both {
                    w[self.current ^ 1] = 0;
                }
            }
            self.epoch = epoch;
            self.next_epoch_ns = (epoch + 1).saturating_mul(self.rotate_ns);
        }
        let (word, bits) = Self::slot(hash);
        let w = &mut self.bits[word];
        let seen = w[0] & bits == bits || w[1] & bits == bits;
        w[self.current] |= bits;
        seen
    }
}

/// The hash of a packet's heartbeat flow key (its [`TableKey::table_hash`]) from the
/// [`mix64`](crate::sketch::mix64) hashes of its source and destination; 0 for a packet the
/// tracker does not follow. `flow_tuple` is the packet's own 5-tuple hash (the same
/// function of the same fields), taken as it is when the key keeps the source port (TCP).
#[inline]
pub(crate) fn key_hash(m: &PacketMeta, source: u64, destination: u64, flow_tuple: u64) -> u64 {
    key_of(m).map_or(0, |(key, _)| {
        if key.src_port == u32::from(m.src_port) {
            flow_tuple
        } else {
            key.hash_from(source, destination)
        }
    })
}

/// The flow a packet belongs to (BFD sessions by their discriminator), with its BFD fields;
/// `None` for packets no flow is followed by (no addresses, malformed, later fragments).
#[inline]
fn key_of(m: &PacketMeta) -> Option<(FlowKey, Option<tapwatch_classifier::BfdControl>)> {
    let (Some(src), Some(dst)) = (m.src, m.dst) else {
        return None;
    };
    if m.malformed.is_some() || m.fragment == Fragment::Later {
        return None;
    }
    let bfd = bfd_of(m);
    // A TCP flow keeps its source port, others none: chosen without a branch (the protocol
    // of the next packet is as random as the traffic); a BFD session is keyed by its
    // discriminator (rare, and predicted).
    let tcp_port = u32::from(m.src_port) * u32::from(m.ip_proto == 6);
    let src_port = bfd.map_or(tcp_port, |b| b.my_disc);
    let key = FlowKey {
        src,
        dst,
        src_port,
        dst_port: m.dst_port,
        proto: m.ip_proto,
    };
    Some((key, bfd))
}

/// A packet's BFD control fields, if it is a BFD control packet.
#[inline]
fn bfd_of(m: &PacketMeta) -> Option<tapwatch_classifier::BfdControl> {
    match m.detail {
        Detail::Bfd(b)
            if matches!(m.kind, ProtocolType::BfdControl | ProtocolType::BfdMultihop) =>
        {
            Some(b)
        }
        _ => None,
    }
}

impl HeartbeatTracker {
    /// A tracker with these settings.
    pub fn new(cfg: HeartbeatConfig) -> HeartbeatTracker {
        let rotate_ns = (cfg.max_period_s * 1e9) as u64;
        HeartbeatTracker {
            flows: FlowMap::with_room(cfg.max_flows),
            bfd_rx: FlowMap::with_room(cfg.max_flows + 1),
            cfg,
            timers: BinaryHeap::new(),
            untracked: 0,
            doorkeeper: Doorkeeper::new(rotate_ns),
        }
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Periodic flows tracked now.
    pub fn periodic(&self) -> usize {
        self.flows.values().filter(|f| f.periodic).count()
    }

    /// Up to `limit` periodic flows and BFD sessions: subject, period (s), late (firing now),
    /// last gap (s).
    pub fn periodic_list(&self, limit: usize) -> Vec<serde_json::Value> {
        let mut v: Vec<_> = self
            .flows
            .iter()
            .filter(|(_, f)| f.periodic || f.bfd.is_some())
            .map(|(k, f)| {
                serde_json::json!({
                    "subject": k.subject(f.shown_src_port),
                    "tenant": f.tenant,
                    "bfd": f.bfd.is_some(),
                    "period_s": f.rhythm.period_ns() as f64 / 1e9,
                    "late": f.firing_since().is_some(),
                    "last_gap_s": f.last_gap_ns as f64 / 1e9,
                })
            })
            .collect();
        v.sort_by(|a, b| a["subject"].as_str().cmp(&b["subject"].as_str()));
        v.truncate(limit);
        v
    }

    /// Feeds one packet; a flow that resumes after a missed deadline yields a resolving finding.
    /// A new flow takes its tenant from `tenant` and its deadline factor from `k` (its
    /// tenant's `heartbeat_k`; `None`: the configured `k`).
    /// `h` are the packet's hashes, computed when it was prefetched.
    pub fn observe(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        tenant: impl FnOnce() -> Option<String>,
        k: Option<f64>,
        out: &mut Vec<Finding>,
    ) {
        let Some((key, bfd)) = key_of(m) else {
            return;
        };
        let hash = h.heartbeat;
        let (src, dst) = (key.src, key.dst);
        let ended = match (bfd, m.kind) {
            (Some(b), _) => matches!(b.state, BfdState::Down | BfdState::AdminDown),
            (None, ProtocolType::TcpFin | ProtocolType::TcpRst) => true,
            _ => false,
        };
        if let Some(b) = bfd {
            let (sender, at) = BfdSender::keyed(src, h.source, b.my_disc);
            self.bfd_rx.insert(sender, at, b.required_min_rx_us);
            if self.bfd_rx.len() > self.cfg.max_flows {
                self.bfd_rx.clear();
            }
        }
        if ended {
            if let Some(f) = self.flows.remove(&key, hash) {
                if let Some(since) = f.firing_since() {
                    out.push(resolved(&key, &f, since, m.ts_ns, Resolution::FlowEnded));
                }
            }
            return;
        }
        // One probe: a known flow's position, or the slot a new one would take.
        let pos = match self.flows.find(&key, hash) {
            Ok(pos) => pos,
            Err(vacant) => {
                // A flow earns a table entry with its second small packet: one-packet flows
                // (scans, spoofed floods) and data flows never cost an entry.
                if (m.wire_len > self.cfg.max_packet_bytes && bfd.is_none())
                    || !self.doorkeeper.seen_before(hash, m.ts_ns)
                {
                    return;
                }
                if self.flows.len() >= self.cfg.max_flows {
                    self.untracked += 1;
                    return;
                }
                let flow = Flow {
                    last_ts: m.ts_ns,
                    run_start: m.ts_ns,
                    data: false,
                    shown_src_port: m.src_port,
                    rhythm: Rhythm::default(),
                    periodic: false,
                    generation: 0,
                    firing_since: NOT_FIRING,
                    bfd: None,
                    tenant: tenant().map(String::into_boxed_str),
                    last_gap_ns: 0,
                    k: k.unwrap_or(self.cfg.k),
                };
                self.flows.insert_vacant(vacant, hash, key, flow)
            }
        };
        let flow = self.flows.at_mut(pos);
        if m.ts_ns < flow.last_ts {
            return; // out of order: no interval to learn from
        }
        if m.wire_len > self.cfg.max_packet_bytes && bfd.is_none() {
            flow.data = true;
        }
        if let Some(since) = flow.stop_firing() {
            flow.last_gap_ns = m.ts_ns.saturating_sub(since);
            out.push(resolved(
                &key,
                flow,
                since,
                m.ts_ns,
                Resolution::FlowResumed,
            ));
            // The gap is not a sample of the period; the rhythm is learned again.
            flow.rhythm.reset();
            flow.run_start = m.ts_ns;
        } else if m.ts_ns > flow.last_ts {
            flow.rhythm.push(m.ts_ns - flow.last_ts, &self.cfg);
        }
        flow.last_ts = m.ts_ns;
        flow.shown_src_port = m.src_port;
        if let Some(b) = bfd {
            let timing = BfdTiming {
                detect_mult: b.detect_mult,
                desired_min_tx_us: b.desired_min_tx_us,
                required_min_rx_us: b.required_min_rx_us,
                my_disc: b.my_disc,
                your_disc: b.your_disc,
            };
            match &mut flow.bfd {
                Some(held) => **held = timing,
                None => flow.bfd = Some(Box::new(timing)),
            }
        }
        flow.periodic = !flow.data
            && m.ts_ns.saturating_sub(flow.run_start) as f64 >= self.cfg.min_learn_s * 1e9
            && flow.rhythm.periodic(&self.cfg, flow.periodic);
        let wait = match &flow.bfd {
            Some(b) => {
                // Detection applies to sessions that are Up and have shown their rhythm.
                let (peer, at) = BfdSender::keyed(dst, h.destination, b.your_disc);
                let peer_rx = self.bfd_rx.get(&peer, at).copied().unwrap_or(0);
                let interval_us = u64::from(b.desired_min_tx_us.max(peer_rx));
                let up = bfd.is_some_and(|p| p.state == BfdState::Up) && flow.rhythm.samples() >= 2;
                (up && interval_us > 0 && b.detect_mult > 0)
                    .then(|| u64::from(b.detect_mult) * interval_us * 1000)
            }
            None => flow
                .periodic
                .then_some((flow.rhythm.period_ns() as f64 * flow.k) as u64),
        };
        flow.generation = flow.generation.wrapping_add(1);
        if let Some(w) = wait {
            self.timers
                .push(Reverse((m.ts_ns + w, key, flow.generation)));
        }
    }

    /// Fires every deadline at or before `now` (event time). Called with every packet: the
    /// look at the earliest deadline is inlined, the firing is not.
    #[inline]
    pub fn advance(&mut self, now: u64, out: &mut Vec<Finding>) {
        if self
            .timers
            .peek()
            .is_some_and(|Reverse((deadline, _, _))| *deadline <= now)
        {
            self.fire(now, out);
        }
    }

    /// [`HeartbeatTracker::advance`] once a deadline is due.
    fn fire(&mut self, now: u64, out: &mut Vec<Finding>) {
        while let Some(Reverse((deadline, key, generation))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(flow) = self.flows.get_mut(&key, key.table_hash()) else {
                continue;
            };
            if flow.generation != generation || flow.firing_since().is_some() {
                continue;
            }
            flow.firing_since = flow.last_ts;
            out.push(firing(&key, flow, deadline));
        }
    }

    /// Drops flows idle for longer than any deadline could matter (called at window ends).
    pub fn sweep(&mut self, now: u64) {
        let max_period_ns = self.cfg.max_period_s * 1e9;
        let young_idle = (self.cfg.min_period_s * 1e9 * 100.0).max(60e9) as u64;
        self.flows.retain(|_, f| {
            let idle = now.saturating_sub(f.last_ts);
            let max_idle = (max_period_ns * f.k) as u64;
            if f.firing_since().is_some() {
                return idle < max_idle.saturating_mul(4);
            }
            if f.periodic || f.bfd.is_some() {
                idle < max_idle
            } else {
                idle < young_idle
            }
        });
        if self.timers.len() > 4 * self.flows.len().max(1024) {
            let live: Vec<_> = self
                .timers
                .drain()
                .filter(|Reverse((_, k, g))| {
                    self.flows
                        .get(k, k.table_hash())
                        .is_some_and(|f| f.generation == *g)
                })
                .collect();
            self.timers = live.into_iter().collect();
        }
    }
}

impl PacketDetector for HeartbeatTracker {
    #[inline]
    fn packet(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        _window: Option<&mut WindowStats>,
        labels: &Labels,
        out: &mut Vec<Finding>,
    ) {
        let tenant = || {
            m.src
                .and(labels.tenant_names().get(m.tenant.0 as usize).cloned())
        };
        let k = labels.thresholds(m.tenant).heartbeat_k;
        self.observe(m, h, tenant, Some(k), out);
    }

    #[inline]
    fn prefetch(&self, m: &PacketMeta, h: &PacketHashes) {
        // Every followed packet probes the flow table; only the packets that may reach the
        // doorkeeper (small ones, BFD) load its words.
        if h.heartbeat != 0 {
            self.flows.prefetch(h.heartbeat);
            let bfd = bfd_of(m);
            if let Some(b) = bfd {
                self.bfd_rx
                    .prefetch(BfdSender::hash_from(h.source, b.my_disc));
            }
            if m.wire_len <= self.cfg.max_packet_bytes || bfd.is_some() {
                self.doorkeeper.prefetch(h.heartbeat);
            }
        }
    }

    #[inline]
    fn prefetch_entries(&self, _m: &PacketMeta, h: &PacketHashes) {
        if h.heartbeat != 0 {
            self.flows.prefetch_entry_head(h.heartbeat, HOT_BYTES);
        }
    }

    #[inline]
    fn tick(&mut self, now: u64, out: &mut Vec<Finding>) {
        self.advance(now, out);
    }

    fn sweep(&mut self, now: u64) {
        HeartbeatTracker::sweep(self, now);
    }
}

fn evidence(key: &FlowKey, flow: &Flow) -> HeartbeatEvidence {
    HeartbeatEvidence {
        bfd: flow.bfd.as_ref().map(|b| BfdEvidence {
            desired_min_tx_us: b.desired_min_tx_us,
            detect_mult: b.detect_mult,
            my_discriminator: b.my_disc,
            required_min_rx_us: b.required_min_rx_us,
            your_discriminator: b.your_disc,
        }),
        gap_s: None,
        last_packet_at_ns: flow.last_ts,
        period_s: flow.rhythm.period_ns() as f64 / 1e9,
        protocol: proto_label(key.proto),
        resolution: None,
        samples: flow.rhythm.samples(),
        spread_s: flow.rhythm.spread_ns() as f64 / 1e9,
    }
}

/// A finding about one flow; BFD sessions are critical, other heartbeats warnings.
#[allow(clippy::too_many_arguments)]
fn finding(
    key: &FlowKey,
    flow: &Flow,
    active: bool,
    started_ns: u64,
    detected_ns: u64,
    value: f64,
    threshold: f64,
    evidence: HeartbeatEvidence,
) -> Finding {
    Finding {
        kind: FindingKind::MissedHeartbeat,
        active,
        tenant: flow.tenant.as_deref().map(str::to_owned),
        subject: key.subject(flow.shown_src_port),
        severity: if flow.bfd.is_some() {
            Severity::Critical
        } else {
            Severity::Warning
        },
        started_ns,
        detected_ns,
        value,
        threshold,
        evidence: Evidence::Heartbeat(evidence),
    }
}

fn firing(key: &FlowKey, flow: &Flow, deadline: u64) -> Finding {
    let allowed = deadline.saturating_sub(flow.last_ts) as f64 / 1e9;
    finding(
        key,
        flow,
        true,
        flow.last_ts,
        deadline,
        allowed,
        allowed,
        evidence(key, flow),
    )
}

fn resolved(key: &FlowKey, flow: &Flow, since: u64, now: u64, why: Resolution) -> Finding {
    let gap = now.saturating_sub(since) as f64 / 1e9;
    let mut e = evidence(key, flow);
    e.gap_s = Some(gap);
    e.resolution = Some(why);
    finding(key, flow, false, since, now, gap, 0.0, e)
}

#[cfg(test)]
mod tests {
    use tapwatch_classifier::BfdControl;

    use super::*;
    use crate::testkit::{addr, tcp, udp, SEC};

    const T: u64 = 1_000 * SEC;

    fn tracker() -> HeartbeatTracker {
        HeartbeatTracker::new(HeartbeatConfig::default())
    }

    impl HeartbeatTracker {
        /// [`HeartbeatTracker::observe`] with the packet's own key hash.
        fn observe_alone(
            &mut self,
            m: &PacketMeta,
            tenant: impl FnOnce() -> Option<String>,
            k: Option<f64>,
            out: &mut Vec<Finding>,
        ) {
            self.observe(m, &PacketHashes::of(m), tenant, k, out);
        }
    }

    /// Packets of one flow at `T + t` for each `t` (ns).
    fn beats(h: &mut HeartbeatTracker, times: impl IntoIterator<Item = u64>, len: u32) {
        let mut out = Vec::new();
        for t in times {
            h.observe_alone(
                &udp(T + t, (addr(1), 4000), (addr(2), 9999), len),
                || None,
                None,
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn the_doorkeeper_rotates_on_fixed_epochs_of_event_time() {
        let key = |n: u8| {
            crate::sketch::mix64(&FlowKey {
                src: addr(n),
                dst: addr(200),
                src_port: 0,
                dst_port: 9999,
                proto: 17,
            })
        };
        let mut d = Doorkeeper::new(10);
        assert!(!d.seen_before(key(1), 19), "epoch 1");
        assert!(d.seen_before(key(1), 19));
        // Epoch 2 begins at 20, whenever the next packet comes: one rotation keeps key 1.
        assert!(!d.seen_before(key(2), 21));
        assert!(d.seen_before(key(1), 22));
        // Epoch 3 (from 30) clears the bitmap of epoch 1… but key 1 was marked again in 2.
        assert!(!d.seen_before(key(3), 30));
        assert!(d.seen_before(key(1), 31));
        assert!(d.seen_before(key(2), 32));
        // Two epochs forward (5 from 3) forget everything.
        assert!(!d.seen_before(key(1), 50));
        assert!(!d.seen_before(key(2), 59));
        // A late packet of an earlier epoch does not rotate back.
        assert!(d.seen_before(key(1), 41));
        // Two shards whose first packets came at different times rotate together: a flow
        // seen only in epoch 1 is forgotten by both in epoch 3.
        let mut a = Doorkeeper::new(10);
        let mut b = Doorkeeper::new(10);
        a.seen_before(key(9), 11);
        b.seen_before(key(9), 18);
        a.seen_before(key(8), 25);
        b.seen_before(key(8), 25);
        assert!(!a.seen_before(key(9), 31));
        assert!(!b.seen_before(key(9), 31));
    }

    #[test]
    fn the_doorkeeper_turns_away_most_of_a_flood_of_one_packet_flows() {
        // 1.6 million distinct flows in one epoch, each seen once, then as many others: the
        // second lot is admitted only where the filter answers falsely (about 5 %; a single
        // bit per key in an 8 Mbit filter would admit about 25 %).
        let key = |n: u32| {
            crate::sketch::mix64(&FlowKey {
                src: IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)),
                dst: addr(200),
                src_port: 40000,
                dst_port: 443,
                proto: 6,
            })
        };
        let mut d = Doorkeeper::new(600 * SEC);
        let n = 1_600_000;
        for i in 0..n {
            d.seen_before(key(i), T);
        }
        let false_yes = (n..2 * n).filter(|&i| d.seen_before(key(i), T)).count();
        let rate = false_yes as f64 / f64::from(n);
        assert!(rate < 0.07, "{rate}");
        // And every flow seen before is known.
        assert!((0..1000).all(|i| d.seen_before(key(i), T + SEC)));
    }

    #[test]
    fn a_tenant_override_sets_the_deadline_factor_of_that_tenants_flows() {
        let tenants = tapwatch_classifier::TenantMap::parse(
            std::path::Path::new("t"),
            "[[tenant]]\nname = \"infra\"\nprefixes = [\"10.0.0.0/24\"]\n",
        )
        .unwrap();
        let classifier = tapwatch_classifier::Classifier::new(tenants, &Default::default());
        let cfg: crate::AnalyzerConfig =
            toml::from_str("[[override]]\ntenant = \"infra\"\nheartbeat_k = 6\n").unwrap();
        let labels = Labels::new(&cfg, &classifier);
        let mut h = HeartbeatTracker::new(cfg.heartbeat.clone());
        let mut out = Vec::new();
        for i in 0..=20 {
            let mut m = udp(T + i * SEC, (addr(1), 4000), (addr(2), 9999), 80);
            m.tenant = classifier.tenants().lookup(addr(1));
            h.packet(&m, &PacketHashes::of(&m), None, &labels, &mut out);
        }
        h.advance(T + 25 * SEC, &mut out);
        assert!(out.is_empty(), "infra waits 6 periods, not 3: {out:?}");
        h.advance(T + 26 * SEC, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].detected_ns, out[0].tenant.as_deref()),
            (T + 26 * SEC, Some("infra"))
        );
    }

    #[test]
    fn a_periodic_flow_fires_at_its_deadline_and_resolves_when_it_resumes() {
        let mut h = tracker();
        beats(&mut h, (0..=20).map(|i| i * SEC), 80);
        assert_eq!(h.periodic(), 1);
        let mut out = Vec::new();
        h.advance(T + 22_900_000_000, &mut out);
        assert!(out.is_empty(), "not before 3 periods: {out:?}");
        h.advance(T + 23 * SEC, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert!(f.active && f.kind == FindingKind::MissedHeartbeat);
        assert_eq!((f.started_ns, f.detected_ns), (T + 20 * SEC, T + 23 * SEC));
        assert_eq!((f.value, f.severity), (3.0, Severity::Warning));
        assert_eq!(f.subject, "10.0.0.1:4000->10.0.0.2:9999/udp");
        h.advance(T + 30 * SEC, &mut out);
        assert_eq!(out.len(), 1, "fires once per silence");
        h.observe_alone(
            &udp(T + 31 * SEC, (addr(1), 4000), (addr(2), 9999), 80),
            || None,
            None,
            &mut out,
        );
        let r = &out[1];
        assert!(!r.active);
        assert_eq!(
            (r.started_ns, r.detected_ns, r.value),
            (T + 20 * SEC, T + 31 * SEC, 11.0)
        );
        let Evidence::Heartbeat(e) = &r.evidence else {
            panic!("{r:?}")
        };
        assert_eq!(
            (e.resolution, e.gap_s),
            (Some(Resolution::FlowResumed), Some(11.0))
        );
    }

    #[test]
    fn irregular_and_data_flows_never_fire() {
        let mut h = tracker();
        // Alternating 0.2 s and 3 s intervals: no rhythm.
        let mut t = 0;
        let irregular = (0..30).map(|i| {
            t += if i % 2 == 0 { SEC / 5 } else { 3 * SEC };
            t
        });
        beats(&mut h, irregular.collect::<Vec<_>>(), 80);
        let mut data = tracker();
        beats(&mut data, (0..=30).map(|i| i * SEC), 1400);
        let mut out = Vec::new();
        h.advance(T + 600 * SEC, &mut out);
        data.advance(T + 600 * SEC, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(data.len(), 0, "large packets never cost a table entry");
    }

    #[test]
    fn a_tcp_flow_that_ends_with_fin_is_not_late() {
        let mut h = tracker();
        let mut out = Vec::new();
        let (a, b) = ((addr(1), 40000), (addr(2), 179));
        for i in 0..=20 {
            h.observe_alone(
                &tcp(T + i * SEC, a, b, ProtocolType::TcpAck, 1, 1),
                || None,
                None,
                &mut out,
            );
        }
        h.observe_alone(
            &tcp(T + 21 * SEC, a, b, ProtocolType::TcpFin, 1, 1),
            || None,
            None,
            &mut out,
        );
        h.advance(T + 100 * SEC, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_bfd_session_is_late_after_its_detection_time() {
        let mut h = tracker();
        let mut out = Vec::new();
        let ctl = BfdControl {
            diag: 0,
            state: BfdState::Up,
            flags: 0,
            detect_mult: 3,
            my_disc: 7,
            your_disc: 8,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
        };
        let at = |t: u64| {
            let mut m = udp(T + t, (addr(1), 49152), (addr(2), 3784), 66);
            m.kind = ProtocolType::BfdControl;
            m.detail = Detail::Bfd(ctl);
            m
        };
        for i in 0..10 {
            h.observe_alone(
                &at(i * 300_000_000),
                || Some("infra".into()),
                None,
                &mut out,
            );
        }
        let last = T + 2_700_000_000;
        h.advance(last + 899_000_000, &mut out);
        assert!(out.is_empty(), "{out:?}");
        h.advance(last + 900_000_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].severity, out[0].tenant.as_deref()),
            (Severity::Critical, Some("infra"))
        );
        assert_eq!(out[0].detected_ns, last + 900_000_000);
    }

    /// The detection time takes the peer's required min RX when it is the larger: the peer's
    /// packets (the other direction, its own discriminator) are looked up by the session's
    /// "your discriminator".
    #[test]
    fn a_bfd_session_waits_for_the_peers_slower_receive_interval() {
        let mut h = tracker();
        let mut out = Vec::new();
        let ctl = |my_disc, your_disc, required_min_rx_us| BfdControl {
            diag: 0,
            state: BfdState::Up,
            flags: 0,
            detect_mult: 3,
            my_disc,
            your_disc,
            desired_min_tx_us: 300_000,
            required_min_rx_us,
        };
        let packet = |t: u64, from: u8, to: u8, c: BfdControl| {
            let mut m = udp(T + t, (addr(from), 49152), (addr(to), 3784), 66);
            m.kind = ProtocolType::BfdControl;
            m.detail = Detail::Bfd(c);
            m
        };
        for i in 0..10 {
            // A (disc 7) sends every 300 ms; B (disc 8) asks for 1 s between A's packets.
            let a = packet(i * 300_000_000, 1, 2, ctl(7, 8, 300_000));
            h.observe_alone(&a, || None, None, &mut out);
            let b = packet(i * 300_000_000 + 150_000_000, 2, 1, ctl(8, 7, 1_000_000));
            h.observe_alone(&b, || None, None, &mut out);
        }
        let last_a = T + 2_700_000_000;
        // B's own detection time is 3 × 300 ms after its last packet (at 2.85 s).
        h.advance(last_a + 2_999_000_000, &mut out);
        assert_eq!(out.len(), 1, "only B is late before A's 3 s: {out:?}");
        assert_eq!(out[0].detected_ns, T + 2_850_000_000 + 900_000_000);
        h.advance(last_a + 3_000_000_000, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1].detected_ns, last_a + 3_000_000_000);
    }

    #[test]
    fn dns_clients_at_poisson_times_beside_jittered_bfd_never_fire() {
        let mut h = tracker();
        let mut rng = tapwatch_synth::Rng::new(9);
        let mut out = Vec::new();
        let resolver = (addr(53), 53);
        // (next query time, client): 2000 clients, mean gaps 0.5-60 s, over 30 minutes.
        let means: Vec<f64> = (0..2000)
            .map(|_| 0.5 * 120f64.powf(rng.unit()) * 1e9)
            .collect();
        let mut next: std::collections::BinaryHeap<Reverse<(u64, usize)>> = (0..means.len())
            .map(|c| Reverse(((-(1.0 - rng.unit()).ln() * means[c]) as u64, c)))
            .collect();
        let ctl = |my, your| BfdControl {
            diag: 0,
            state: BfdState::Up,
            flags: 0,
            detect_mult: 3,
            my_disc: my,
            your_disc: your,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
        };
        let mut bfd_at = [0u64, 40_000_000];
        let end = 1800 * SEC;
        while let Some(Reverse((t, c))) = next.pop() {
            if t >= end {
                break;
            }
            // BFD both ways up to t: 75-100 % of 100 ms (RFC 5880 §6.8.7).
            for (dir, at) in bfd_at.iter_mut().enumerate() {
                while *at <= t {
                    let (a, b) = if dir == 0 { (1, 2) } else { (2, 1) };
                    let mut m = udp(T + *at, (addr(a), 49152), (addr(b), 3784), 66);
                    m.kind = ProtocolType::BfdControl;
                    m.detail = Detail::Bfd(ctl(u32::from(a), u32::from(b)));
                    h.observe_alone(&m, || None, None, &mut out);
                    *at += 100_000_000 - rng.below(25_000_000);
                }
            }
            let client =
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 200, (c >> 8) as u8, c as u8));
            let port = 1024 + rng.below(60_000) as u16;
            h.observe_alone(
                &udp(T + t, (client, port), resolver, 70),
                || None,
                None,
                &mut out,
            );
            h.advance(T + t, &mut out);
            let gap = -(1.0 - rng.unit()).ln() * means[c];
            next.push(Reverse((t + gap as u64 + 1, c)));
        }
        assert!(out.is_empty(), "{out:#?}");
        assert!(h.len() > 1500, "the DNS clients were tracked: {}", h.len());
        assert_eq!(h.periodic(), 2, "only the two BFD directions keep a rhythm");
    }
}
