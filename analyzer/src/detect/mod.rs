//! The detectors, one module each, with their settings, evidence and tests beside them.
//!
//! A detector says what it needs by the trait it implements:
//! - [`PacketDetector`]: every packet on its worker's shard, plus the shard's event-time
//!   ticks (deadlines) and window closes (table sweeps): [`heartbeat`], [`handshake`],
//!   [`retransmits`] (its flow table), [`upgrade`] (pending upgrade requests).
//! - [`WindowDetector`]: every closed base window, merged across shards, on the merger
//!   (a detector that judges wider spans keeps its own [`Rollup`](crate::window::Rollup)):
//!   [`heavy`], [`growth`], [`syn_burst`], [`latency`] (its `shift` half; the per-packet
//!   half samples on the shard), [`traffic_drop`], [`retransmits`], [`upgrade`].
//!
//! Adding a detector is one new module plus its field in [`PacketDetectors`] (its calls in
//! `packet`, `prefetch`, `tick` and `sweep`, which destructure the struct whole so a field
//! left out does not compile) or in [`WindowDetectors`] (field and entry of `each`, in
//! judging order).
use tapwatch_classifier::{flow_hash, PacketMeta, TenantMap};

use crate::config::AnalyzerConfig;
use crate::finding::Finding;
use crate::labels::Labels;
use crate::sketch::{flow_tuple_hash, mix64, service_hash, source_kind_hash};
use crate::window::WindowStats;

pub mod growth;
pub(crate) mod handshake;
pub(crate) mod heartbeat;
pub(crate) mod heavy;
pub mod latency;
pub(crate) mod retransmits;
pub(crate) mod syn_burst;
pub(crate) mod traffic_drop;
pub(crate) mod upgrade;

/// The table hashes of one packet, computed once, a few packets ahead of its turn (when
/// its table lines are loaded: [`Shard::prefetch`](crate::Shard::prefetch)), and handed
/// to every per-packet detector with the packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHashes {
    /// [`mix64`] of the source address: the sketches and counters keyed by the source, and
    /// the keys built from it ([`SketchKey`](crate::sketch::SketchKey)); 0 without one.
    pub source: u64,
    /// [`mix64`] of the destination address, likewise; 0 without one.
    pub destination: u64,
    /// [`flow_hash`] of the packet's addresses, ports and IP protocol: the hash of its
    /// connection in the TCP tables (handshakes, latency, retransmissions); 0 without
    /// addresses.
    pub flow: u64,
    /// The hash of the packet's heartbeat flow key (one direction); 0 when it has none.
    pub heartbeat: u64,
    /// The window's `(source, protocol type, size class)` sketch key's hash; 0 without a
    /// source.
    pub source_kind: u64,
    /// The window's `(destination, port, protocol)` sketch key's hash; 0 without addresses.
    pub service: u64,
    /// The window's 5-tuple sketch key's hash (one direction); 0 without addresses.
    pub flow_tuple: u64,
}

impl PacketHashes {
    /// The hashes of `m`.
    #[inline]
    pub fn of(m: &PacketMeta) -> PacketHashes {
        let Some(src) = m.src else {
            return PacketHashes::default();
        };
        let source = mix64(&src);
        let source_kind = source_kind_hash(source, m.kind, m.size_class);
        let Some(dst) = m.dst else {
            return PacketHashes {
                source,
                source_kind,
                ..PacketHashes::default()
            };
        };
        let destination = mix64(&dst);
        let flow_tuple = flow_tuple_hash(
            source,
            destination,
            m.src_port.into(),
            m.dst_port,
            m.ip_proto,
        );
        PacketHashes {
            source,
            destination,
            flow: flow_hash(src, m.src_port, dst, m.dst_port, m.ip_proto),
            heartbeat: heartbeat::key_hash(m, source, destination, flow_tuple),
            source_kind,
            service: service_hash(destination, m.dst_port, m.ip_proto),
            flow_tuple,
        }
    }
}

/// Whether a packet was sent by the lower of its two endpoints (address, then port).
#[inline]
pub(crate) fn sent_by_lower(src: std::net::IpAddr, dst: std::net::IpAddr, m: &PacketMeta) -> bool {
    tapwatch_classifier::endpoint_le(src, m.src_port, dst, m.dst_port)
}

/// A packet's two endpoints in flow order (`a` the lower (address, port)), and whether
/// `a` sent it: the sides of the TCP tables' entries, which are found by the symmetric
/// [`flow_hash`] and keep no endpoints.
#[inline]
pub(crate) fn flow_ends(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    m: &PacketMeta,
) -> ((std::net::IpAddr, u16), (std::net::IpAddr, u16), bool) {
    let (s, d) = ((src, m.src_port), (dst, m.dst_port));
    if sent_by_lower(src, dst, m) {
        (s, d, true)
    } else {
        (d, s, false)
    }
}

/// A detector fed every packet of its shard.
pub(crate) trait PacketDetector {
    /// One packet with its hashes; `window` is the open window it counts in (`None` when it
    /// came too late).
    fn packet(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        window: Option<&mut WindowStats>,
        labels: &Labels,
        out: &mut Vec<Finding>,
    );

    /// A packet a few places ahead in the batch: load the table entries it will touch.
    fn prefetch(&self, _m: &PacketMeta, _h: &PacketHashes) {}

    /// The same packet, fewer places ahead: load the entries of its flows that the tables
    /// already hold (found in the index lines `prefetch` loaded).
    fn prefetch_entries(&self, _m: &PacketMeta, _h: &PacketHashes) {}

    /// Event time reached `now` (a packet's time, or the wall clock in live mode).
    fn tick(&mut self, _now: u64, _out: &mut Vec<Finding>) {}

    /// A window closed with event time at `now`: a moment to forget stale state.
    fn sweep(&mut self, _now: u64) {}
}

/// A detector fed every closed base window on the merger.
pub(crate) trait WindowDetector {
    /// One closed base window, merged across shards.
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>);

    /// End of input: judges whatever a partial rollup still holds.
    fn finish(&mut self, _tenants: &TenantMap, _out: &mut Vec<Finding>) {}
}

/// The per-packet detectors of one shard.
pub(crate) struct PacketDetectors {
    /// Missed heartbeats.
    pub heartbeat: heartbeat::HeartbeatTracker,
    /// Handshake latency and SYN retransmissions (recorded into the window).
    pub handshake: handshake::HandshakeTracker,
    /// Response, RST, TCP-timestamp and echo latency samples (recorded into the window).
    pub latency: latency::LatencyTracker,
    /// Retransmitted TCP data (recorded into the window).
    pub retransmits: retransmits::RetransmitTracker,
    /// HTTP upgrade outcomes (recorded into the window).
    pub upgrade: upgrade::UpgradeTracker,
}

impl PacketDetectors {
    /// Every per-packet detector with its settings.
    pub fn new(cfg: &AnalyzerConfig) -> PacketDetectors {
        PacketDetectors {
            heartbeat: heartbeat::HeartbeatTracker::new(cfg.heartbeat.clone()),
            handshake: handshake::HandshakeTracker::new(cfg.handshake.clone()),
            latency: latency::LatencyTracker::new(&cfg.latency),
            retransmits: retransmits::RetransmitTracker::new(&cfg.retransmits),
            upgrade: upgrade::UpgradeTracker::new(cfg.upgrade_failure.clone()),
        }
    }

    /// Feeds one packet to each detector, in this order (static calls: the hot path).
    #[inline]
    pub fn packet(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        mut window: Option<&mut WindowStats>,
        labels: &Labels,
        out: &mut Vec<Finding>,
    ) {
        // Destructured whole: a new detector does not compile until it is wired in here.
        let PacketDetectors {
            heartbeat,
            handshake,
            latency,
            retransmits,
            upgrade,
        } = self;
        heartbeat.packet(m, h, window.as_deref_mut(), labels, out);
        handshake.packet(m, h, window.as_deref_mut(), labels, out);
        latency.packet(m, h, window.as_deref_mut(), labels, out);
        retransmits.packet(m, h, window.as_deref_mut(), labels, out);
        upgrade.packet(m, h, window, labels, out);
    }

    /// Loads the table entries a packet a few places ahead will touch, by its hashes.
    #[inline]
    pub fn prefetch(&self, m: &PacketMeta, h: &PacketHashes) {
        // Destructured whole: a new detector does not compile until it is wired in here.
        let PacketDetectors {
            heartbeat,
            handshake,
            latency,
            retransmits,
            upgrade,
        } = self;
        heartbeat.prefetch(m, h);
        handshake.prefetch(m, h);
        latency.prefetch(m, h);
        retransmits.prefetch(m, h);
        upgrade.prefetch(m, h);
    }

    /// Loads the entries of a packet's known flows, a few places ahead (after [`prefetch`]).
    ///
    /// [`prefetch`]: PacketDetectors::prefetch
    #[inline]
    pub fn prefetch_entries(&self, m: &PacketMeta, h: &PacketHashes) {
        // Destructured whole: a new detector does not compile until it is wired in here.
        let PacketDetectors {
            heartbeat,
            handshake,
            latency,
            retransmits,
            upgrade,
        } = self;
        heartbeat.prefetch_entries(m, h);
        handshake.prefetch_entries(m, h);
        latency.prefetch_entries(m, h);
        retransmits.prefetch_entries(m, h);
        upgrade.prefetch_entries(m, h);
    }

    /// Event time reached `now`.
    #[inline]
    pub fn tick(&mut self, now: u64, out: &mut Vec<Finding>) {
        // Destructured whole: a new detector does not compile until it is wired in here.
        let PacketDetectors {
            heartbeat,
            handshake,
            latency,
            retransmits,
            upgrade,
        } = self;
        heartbeat.tick(now, out);
        handshake.tick(now, out);
        latency.tick(now, out);
        retransmits.tick(now, out);
        upgrade.tick(now, out);
    }

    /// A window closed at `now`.
    pub fn sweep(&mut self, now: u64) {
        // Destructured whole: a new detector does not compile until it is wired in here.
        let PacketDetectors {
            heartbeat,
            handshake,
            latency,
            retransmits,
            upgrade,
        } = self;
        heartbeat.sweep(now);
        handshake.sweep(now);
        latency.sweep(now);
        retransmits.sweep(now);
        upgrade.sweep(now);
    }
}

/// The window-level detectors of the merger.
pub(crate) struct WindowDetectors {
    /// Heavy hitters, judged on each base window.
    pub heavy: heavy::HeavyJudge,
    /// Quadratic setup growth, on its own rollup points.
    pub growth: growth::SetupGrowth,
    /// SYN-retransmission bursts, on their own rollup windows.
    pub syn_burst: syn_burst::SynBurst,
    /// Latency shifts, on their own judgement windows.
    pub latency_shift: latency::shift::LatencyShift,
    /// Traffic drops, on their own rollup windows.
    pub traffic_drop: traffic_drop::TrafficDrop,
    /// Retransmitted TCP data, on their own rollup windows.
    pub retransmits: retransmits::Retransmits,
    /// Failed HTTP upgrades, on their own rollup windows.
    pub upgrade: upgrade::UpgradeFailures,
}

impl WindowDetectors {
    /// Every window-level detector with its settings.
    pub fn new(cfg: &AnalyzerConfig, labels: &Labels) -> WindowDetectors {
        let mut growth = growth::SetupGrowth::new(cfg.setup_growth.clone());
        growth.relabel(labels);
        WindowDetectors {
            heavy: heavy::HeavyJudge::new(cfg.heavy_hitters.clone(), labels),
            growth,
            syn_burst: syn_burst::SynBurst::new(cfg.handshake.clone()),
            latency_shift: latency::shift::LatencyShift::new(cfg.latency.clone()),
            traffic_drop: traffic_drop::TrafficDrop::new(cfg.traffic_drop.clone()),
            retransmits: retransmits::Retransmits::new(cfg.retransmits.clone()),
            upgrade: upgrade::UpgradeFailures::new(cfg.upgrade_failure.clone()),
        }
    }

    /// Each detector, in judging order (the order of their findings on one window).
    pub fn each(&mut self) -> [&mut dyn WindowDetector; 7] {
        [
            &mut self.heavy,
            &mut self.growth,
            &mut self.syn_burst,
            &mut self.latency_shift,
            &mut self.traffic_drop,
            &mut self.retransmits,
            &mut self.upgrade,
        ]
    }
}
