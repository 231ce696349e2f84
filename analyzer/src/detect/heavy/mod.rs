//! Heavy hitters: keys that hold a large share of a window *and* stand far above their own
//! baseline ([`baseline`]: their normal per-window count). Change is judged, not dominance:
//! a big source, or a relay's own service that nearly every packet goes to, that has been
//! big since the start is the baseline; a new key, or one that jumped, is an anomaly.
//! During warm-up baselines are learned and only a one-way flood is flagged (a destination
//! taking most packets, answering almost none, receiving SYNs or reflected datagrams: a
//! SYN or reflection flood's victim, never a relay or a VIP); any other key present from the
//! first packet, a flood from one source included, becomes baseline and is flagged only if
//! it jumps again.
use std::hash::Hash;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tapwatch_classifier::{ProtocolType, SizeClass, TenantId, TenantMap};

use super::WindowDetector;
use crate::finding::{endpoint, proto_label, Evidence, Finding, FindingKind, Severity};
use crate::labels::Labels;
use crate::sampling::SampledEstimate;
use crate::sketch::FrequentItems;
use crate::thresholds::{TenantThresholds, Thresholds};
use crate::window::{ServiceKey, WindowStats};
use baseline::Baseline;

mod baseline;

/// Heavy hitters: a key with a large share of a window that is also far above its own baseline.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeavyHitterConfig {
    /// Keys tracked per window per sketch (error bound ≈ 2 × packets / capacity).
    pub sketch_capacity: usize,
    /// Share of the window's packets (or bytes) a key must hold.
    pub min_share: f64,
    /// Packets per second a key must reach, whatever its share.
    pub min_pps: f64,
    /// Bytes per second a key must reach to be heavy by bytes.
    pub min_bytes_per_s: f64,
    /// How many times its baseline mean the key must reach.
    pub baseline_factor: f64,
    /// Standard deviations above its baseline mean the key must reach.
    pub baseline_sigmas: f64,
    /// EWMA weight of each new window in a key's recent level.
    pub ewma_alpha: f64,
    /// EWMA weight of each new window in a key's long level (its baseline is the larger).
    pub long_alpha: f64,
    /// Seconds from the first window during which baselines are learned (plain averages):
    /// whatever is there from the start is the baseline, except a one-way flood.
    pub warmup_s: f64,
    /// During warm-up a destination (service or address) is flagged only with this share…
    pub warmup_share: f64,
    /// …at this multiple of `min_pps`…
    pub warmup_factor: f64,
    /// …while it sends back less than this fraction of what it receives, mostly TCP SYNs or
    /// UDP from ports below 1024: a flood's victim, not a relay or a load balancer (which
    /// answer, and whose clients send from ephemeral ports). 0: warm-up never flags.
    pub warmup_max_reply: f64,
    /// Hysteresis: a firing key keeps firing while it holds at least this share…
    pub clear_share: f64,
    /// …and at least this many times its baseline mean.
    pub clear_factor: f64,
    /// Windows a firing key must stay below `clear_share` before it resolves.
    pub clear_windows: u32,
}

impl Default for HeavyHitterConfig {
    fn default() -> Self {
        HeavyHitterConfig {
            sketch_capacity: 1024,
            min_share: 0.2,
            min_pps: 200.0,
            min_bytes_per_s: 1_000_000.0,
            baseline_factor: 3.0,
            baseline_sigmas: 6.0,
            ewma_alpha: 0.05,
            long_alpha: 0.002,
            warmup_s: 5.0,
            warmup_share: 0.5,
            warmup_factor: 5.0,
            warmup_max_reply: 0.1,
            clear_share: 0.1,
            clear_factor: 1.5,
            clear_windows: 5,
        }
    }
}

/// Which key a heavy hitter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeavyDimension {
    /// A source, by packets.
    SourcePackets,
    /// A source, by bytes.
    SourceBytes,
    /// A source's packets of one protocol type and size class.
    SourceTypeSize,
    /// A destination service.
    DestinationService,
    /// A destination address.
    Destination,
    /// A tenant.
    Tenant,
}

/// What a heavy hitter's count counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeavyUnit {
    /// Packets.
    Packets,
    /// Bytes.
    Bytes,
}

/// A source behind a hot service, with its packets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourcePackets {
    /// Packets towards the service.
    pub packets: u64,
    /// Source address.
    pub source: String,
}

/// A service of a hot destination, with its packets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServicePackets {
    /// Packets towards the service.
    pub packets: u64,
    /// `addr:port/proto`.
    pub service: String,
}

/// The numbers behind a firing heavy hitter (fields in the order they serialise: by name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeavyHitterEvidence {
    /// How many times its baseline mean a key must reach.
    pub baseline_factor: f64,
    /// The key's baseline mean per window.
    pub baseline_mean: f64,
    /// The key's baseline standard deviation.
    pub baseline_sd: f64,
    /// The key's count in the window.
    pub count: u64,
    /// Which key.
    pub dimension: HeavyDimension,
    /// Destinations: distinct sources among the top flows towards it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_sources_in_top_flows: Option<usize>,
    /// Tenants: distinct sources in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u64>,
    /// (source, type, size) keys: the protocol type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_type: Option<String>,
    /// Count per second.
    pub rate_per_s: f64,
    /// Sampled windows only: the records behind `count` and its 95 % interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<SampledEstimate>,
    /// Share of the window.
    pub share: f64,
    /// (source, type, size) keys: the size class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_class: Option<&'static str>,
    /// Most the sketch may overcount.
    pub sketch_error_bound: u64,
    /// Sources: their commonest protocol type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_protocol_type: Option<String>,
    /// Destinations: their busiest services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_services: Option<Vec<ServicePackets>>,
    /// Sources: the size class of their commonest type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_size_class: Option<&'static str>,
    /// Services: their busiest sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_sources: Option<Vec<SourcePackets>>,
    /// What `count` counts.
    pub unit: HeavyUnit,
    /// Bytes in the window.
    pub window_bytes: u64,
    /// Packets in the window.
    pub window_packets: u64,
    /// Window width, seconds.
    pub window_s: f64,
}

/// The numbers behind a resolved heavy hitter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeavyHitterResolvedEvidence {
    /// The largest share it held while firing.
    pub peak_share: f64,
    /// Windows it stayed quiet before resolving.
    pub quiet_windows: u32,
}

/// Candidates judged per dimension per window.
const CANDIDATES: usize = 8;
/// Keys with a baseline at most, per dimension.
const MAX_BASELINES: usize = 16_384;

#[derive(Clone, Debug)]
struct Firing {
    since_ns: u64,
    quiet: u32,
    peak: f64,
}

/// One dimension: baselines and firing state for its keys.
struct Dimension<K> {
    baselines: FxHashMap<K, Baseline>,
    firing: FxHashMap<K, Firing>,
}

impl<K: Copy + Eq + Hash> Dimension<K> {
    fn new() -> Dimension<K> {
        Dimension {
            baselines: FxHashMap::default(),
            firing: FxHashMap::default(),
        }
    }
}

/// A candidate's verdict.
struct Verdict {
    hot: bool,
    count: u64,
    share: f64,
    rate: f64,
    baseline: Baseline,
    /// The share threshold the key was judged by (its tenant's).
    min_share: f64,
}

/// The heavy-hitter judge, run by the merger on each closed base window.
pub struct HeavyJudge {
    cfg: HeavyHitterConfig,
    first_ns: Option<u64>,
    sources: Dimension<IpAddr>,
    source_bytes: Dimension<IpAddr>,
    source_kinds: Dimension<(IpAddr, ProtocolType, SizeClass)>,
    services: Dimension<ServiceKey>,
    tenant_dim: Dimension<u16>,
    destinations: Dimension<IpAddr>,
    type_names: Vec<String>,
    thresholds: TenantThresholds,
}

impl HeavyJudge {
    /// A judge with these settings; type names come from the labels.
    pub fn new(cfg: HeavyHitterConfig, labels: &Labels) -> HeavyJudge {
        let type_names = type_names(labels);
        HeavyJudge {
            cfg,
            first_ns: None,
            sources: Dimension::new(),
            source_bytes: Dimension::new(),
            source_kinds: Dimension::new(),
            services: Dimension::new(),
            tenant_dim: Dimension::new(),
            destinations: Dimension::new(),
            type_names,
            thresholds: labels.tenant_thresholds().clone(),
        }
    }

    /// Takes the protocol-type names of a reloaded classifier.
    pub fn relabel(&mut self, labels: &Labels) {
        self.type_names = type_names(labels);
        self.thresholds = labels.tenant_thresholds().clone();
    }

    /// Judges one closed window.
    pub fn judge(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let first = *self.first_ns.get_or_insert(w.start_ns);
        let judging = w.end_ns.saturating_sub(first) as f64 / 1e9 > self.cfg.warmup_s;
        let width = w.width_s().max(1e-9);
        let cfg = self.cfg.clone();
        // Each key is judged with the thresholds of its tenant (`[[analyzer.override]]`).
        let th = &self.thresholds;
        let pps = |t: &Thresholds| (t.heavy_min_share, t.heavy_min_pps);
        let bps = |t: &Thresholds| (t.heavy_min_share, t.heavy_min_bytes_per_s);
        let flows = w.flows.top(64);
        // A flood's victim (all of `host`, or its `port`): it answers less than
        // `warmup_max_reply` of what it receives, and what it receives is mostly SYNs or
        // datagrams from reflectors' service ports (< 1024) — not a relay's or a VIP's
        // clients seen on a one-direction tap, who send data from ephemeral ports.
        let flooded = |host: &IpAddr, port: Option<u16>, count: f64| -> bool {
            let replies = w.sources.get(host).map(|e| e.count).unwrap_or(0);
            let ours = |a: &IpAddr, p: u16| a == host && port.is_none_or(|x| x == p);
            let syns: u64 = w
                .servers
                .iter()
                .filter(|((a, p), _)| ours(a, *p))
                .map(|(_, s)| s.syns + s.retransmits)
                .sum();
            let (mut top, mut reflected) = (0, 0);
            for f in flows.iter().filter(|f| ours(&f.key.2, f.key.3)) {
                top += f.count;
                if f.key.4 == 17 && f.key.1 < 1024 {
                    reflected += f.count;
                }
            }
            (replies as f64) < cfg.warmup_max_reply * count
                && (syns as f64 >= 0.5 * count || (top > 0 && 2 * reflected >= top))
        };

        // Sources by packets, then by bytes; a source hot on either is one alert.
        let by_packets = judge_dimension(
            &cfg,
            &mut self.sources,
            &w.sources,
            w.packets,
            width,
            |k: &IpAddr| pps(th.get(tenants.lookup(*k))),
            (!judging).then_some(never),
        );
        let by_bytes = judge_dimension(
            &cfg,
            &mut self.source_bytes,
            &w.source_bytes,
            w.bytes,
            width,
            |k: &IpAddr| bps(th.get(tenants.lookup(*k))),
            (!judging).then_some(never),
        );
        let mut hot_sources: Vec<IpAddr> = Vec::new();
        for (key, v) in by_packets.iter().chain(by_bytes.iter()) {
            if v.hot && !hot_sources.contains(key) {
                hot_sources.push(*key);
            }
        }
        for key in &hot_sources {
            let p = by_packets.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            let b = by_bytes.iter().find(|(k, _)| k == key).map(|(_, v)| v);
            let (dim, v, unit) = match (p, b) {
                (Some(p), _) if p.hot => (HeavyDimension::SourcePackets, p, HeavyUnit::Packets),
                (_, Some(b)) => (HeavyDimension::SourceBytes, b, HeavyUnit::Bytes),
                (Some(p), None) => (HeavyDimension::SourcePackets, p, HeavyUnit::Packets),
                (None, None) => continue,
            };
            let top_kind = w.source_kinds.top(64).into_iter().find(|e| e.key.0 == *key);
            let mut evidence = evidence(dim, unit, v, w, width, &cfg, w.sources.error_bound());
            if let Some(k) = top_kind {
                evidence.top_protocol_type = Some(
                    self.type_names
                        .get(k.key.1.index())
                        .cloned()
                        .unwrap_or_default(),
                );
                evidence.top_size_class = Some(k.key.2.name());
            }
            let tenant = Some(tenants.name(tenants.lookup(*key)).to_string());
            raise(
                &mut self.sources,
                *key,
                key.to_string(),
                tenant,
                v,
                w,
                evidence,
                out,
            );
        }

        // (source, type, size) only where the source as a whole is not already hot: it
        // catches a new kind of packet from a source that is big anyway.
        let kinds = judge_dimension(
            &cfg,
            &mut self.source_kinds,
            &w.source_kinds,
            w.packets,
            width,
            |k: &(IpAddr, ProtocolType, SizeClass)| pps(th.get(tenants.lookup(k.0))),
            (!judging).then_some(never),
        );
        for (key, v) in kinds
            .iter()
            .filter(|(k, v)| v.hot && !hot_sources.contains(&k.0))
        {
            let name = self
                .type_names
                .get(key.1.index())
                .cloned()
                .unwrap_or_default();
            let subject = format!("{} {} {}", key.0, name, key.2.name());
            let mut e = evidence(
                HeavyDimension::SourceTypeSize,
                HeavyUnit::Packets,
                v,
                w,
                width,
                &cfg,
                w.source_kinds.error_bound(),
            );
            e.protocol_type = Some(name);
            e.size_class = Some(key.2.name());
            let tenant = Some(tenants.name(tenants.lookup(key.0)).to_string());
            raise(&mut self.source_kinds, *key, subject, tenant, v, w, e, out);
        }

        // Destination services, unless one hot source drives most of the service's packets.
        let services = judge_dimension(
            &cfg,
            &mut self.services,
            &w.services,
            w.packets,
            width,
            |k: &ServiceKey| pps(th.get(tenants.lookup(k.0))),
            (!judging).then_some(|k: &ServiceKey, count: f64| flooded(&k.0, Some(k.1), count)),
        );
        for (key, v) in services.iter().filter(|(_, v)| v.hot) {
            // Packets towards the service from sources already reported as hot.
            let from_hot: u64 = flows
                .iter()
                .filter(|f| (f.key.2, f.key.3, f.key.4) == *key && hot_sources.contains(&f.key.0))
                .map(|f| f.count)
                .sum();
            if from_hot * 2 >= v.count {
                continue;
            }
            let subject = format!("{}/{}", endpoint(key.0, key.1), proto_label(key.2));
            let mut e = evidence(
                HeavyDimension::DestinationService,
                HeavyUnit::Packets,
                v,
                w,
                width,
                &cfg,
                w.services.error_bound(),
            );
            e.top_sources = Some(
                flows
                    .iter()
                    .filter(|f| (f.key.2, f.key.3, f.key.4) == *key)
                    .take(5)
                    .map(|f| SourcePackets {
                        packets: f.count,
                        source: f.key.0.to_string(),
                    })
                    .collect(),
            );
            raise(&mut self.services, *key, subject, None, v, w, e, out);
        }

        // Destination addresses: a victim flooded on many ports (amplification), reported
        // only when neither one of its services nor hot sources already explain it.
        let destinations = judge_dimension(
            &cfg,
            &mut self.destinations,
            &w.destinations,
            w.packets,
            width,
            |k: &IpAddr| pps(th.get(tenants.lookup(*k))),
            (!judging).then_some(|a: &IpAddr, count: f64| flooded(a, None, count)),
        );
        for (addr, v) in destinations.iter().filter(|(_, v)| v.hot) {
            let by_service = services.iter().any(|(k, sv)| k.0 == *addr && sv.hot);
            let from_hot: u64 = flows
                .iter()
                .filter(|f| f.key.2 == *addr && hot_sources.contains(&f.key.0))
                .map(|f| f.count)
                .sum();
            if by_service || from_hot * 2 >= v.count {
                continue;
            }
            let mut e = evidence(
                HeavyDimension::Destination,
                HeavyUnit::Packets,
                v,
                w,
                width,
                &cfg,
                w.destinations.error_bound(),
            );
            e.top_services = Some(
                w.services
                    .top(64)
                    .iter()
                    .filter(|s| s.key.0 == *addr)
                    .take(5)
                    .map(|s| ServicePackets {
                        packets: s.count,
                        service: format!("{}/{}", endpoint(s.key.0, s.key.1), proto_label(s.key.2)),
                    })
                    .collect(),
            );
            e.distinct_sources_in_top_flows =
                Some(flows.iter().filter(|f| f.key.2 == *addr).count());
            raise(
                &mut self.destinations,
                *addr,
                addr.to_string(),
                None,
                v,
                w,
                e,
                out,
            );
        }

        // Tenants, counted exactly: a tenant jumping far above its own baseline, unless its
        // hot sources (already reported) explain most of it. "unassigned" is not a tenant.
        let mut tenant_counts = FrequentItems::new(w.tenants.len().max(16));
        for (i, t) in w.tenants.iter().enumerate().skip(1) {
            if t.packets > 0 {
                tenant_counts.add(i as u16, t.packets, t.bytes);
            }
        }
        let tenant_verdicts = judge_dimension(
            &cfg,
            &mut self.tenant_dim,
            &tenant_counts,
            w.packets,
            width,
            |k: &u16| pps(th.get(TenantId(*k))),
            (!judging).then_some(never),
        );
        for (key, v) in tenant_verdicts.iter().filter(|(_, v)| v.hot) {
            let from_hot: u64 = hot_sources
                .iter()
                .filter(|s| tenants.lookup(**s).0 == *key)
                .map(|s| w.sources.get(s).map(|e| e.count).unwrap_or(0))
                .sum();
            if from_hot * 2 >= v.count {
                continue;
            }
            let name = tenants.name(TenantId(*key)).to_string();
            let mut e = evidence(
                HeavyDimension::Tenant,
                HeavyUnit::Packets,
                v,
                w,
                width,
                &cfg,
                0,
            );
            e.nodes = Some(w.tenants[*key as usize].nodes.count().0);
            raise(
                &mut self.tenant_dim,
                *key,
                name.clone(),
                Some(name),
                v,
                w,
                e,
                out,
            );
        }

        // Hysteresis: a firing key stays firing while it holds at least `clear_share` of the
        // window, even below the raise thresholds; otherwise it counts quiet windows, then
        // resolves.
        let (clear, min_share, end) = (cfg.clear_windows, cfg.min_share, w.end_ns);
        // Holding means: at least `clear_share` of the window and still at least
        // `clear_factor` times the key's (frozen) baseline.
        let holds = |count: Option<u64>, total: u64, base: Option<&f64>| {
            count.is_some_and(|c| {
                total > 0
                    && c as f64 >= cfg.clear_share * total as f64
                    && c as f64 >= cfg.clear_factor * base.copied().unwrap_or(0.0)
            })
        };
        let (src_base, src_bytes_base) = (
            firing_baselines(&self.sources),
            firing_baselines(&self.source_bytes),
        );
        let dest_base = firing_baselines(&self.destinations);
        let (kind_base, service_base, tenant_base) = (
            firing_baselines(&self.source_kinds),
            firing_baselines(&self.services),
            firing_baselines(&self.tenant_dim),
        );
        let tenant_of = |a: &IpAddr| Some(tenants.name(tenants.lookup(*a)).to_string());
        let names = &self.type_names;
        settle(
            &mut self.sources,
            |k| {
                hot_sources.contains(k)
                    || holds(
                        w.sources.get(k).map(|e| e.count),
                        w.packets,
                        src_base.get(k),
                    )
                    || holds(
                        w.source_bytes.get(k).map(|e| e.count),
                        w.bytes,
                        src_bytes_base.get(k),
                    )
            },
            |k| (k.to_string(), tenant_of(k)),
            clear,
            min_share,
            end,
            out,
        );
        settle(
            &mut self.source_kinds,
            |k| {
                kinds.iter().any(|(kk, v)| kk == k && v.hot)
                    || holds(
                        w.source_kinds.get(k).map(|e| e.count),
                        w.packets,
                        kind_base.get(k),
                    )
            },
            |k| {
                (
                    format!(
                        "{} {} {}",
                        k.0,
                        names.get(k.1.index()).cloned().unwrap_or_default(),
                        k.2.name()
                    ),
                    tenant_of(&k.0),
                )
            },
            clear,
            min_share,
            end,
            out,
        );
        settle(
            &mut self.services,
            |k| {
                services.iter().any(|(kk, v)| kk == k && v.hot)
                    || holds(
                        w.services.get(k).map(|e| e.count),
                        w.packets,
                        service_base.get(k),
                    )
            },
            |k| (format!("{}/{}", endpoint(k.0, k.1), proto_label(k.2)), None),
            clear,
            min_share,
            end,
            out,
        );
        settle(
            &mut self.tenant_dim,
            |k| {
                tenant_verdicts.iter().any(|(kk, v)| kk == k && v.hot)
                    || holds(
                        tenant_counts.get(k).map(|e| e.count),
                        w.packets,
                        tenant_base.get(k),
                    )
            },
            |k| {
                let name = tenants.name(TenantId(*k)).to_string();
                (name.clone(), Some(name))
            },
            clear,
            min_share,
            end,
            out,
        );
        settle(
            &mut self.destinations,
            |k| {
                destinations.iter().any(|(kk, v)| kk == k && v.hot)
                    || holds(
                        w.destinations.get(k).map(|e| e.count),
                        w.packets,
                        dest_base.get(k),
                    )
            },
            |k| (k.to_string(), None),
            clear,
            min_share,
            end,
            out,
        );
    }
}

/// Names of every protocol-type index, custom ones included.
fn type_names(labels: &Labels) -> Vec<String> {
    (0..labels.type_count())
        .map(|i| labels.type_name(i).unwrap_or_default().to_string())
        .collect()
}

impl WindowDetector for HeavyJudge {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        self.judge(w, tenants, out);
    }
}

/// Baseline means of a dimension's firing keys (frozen while they fire).
fn firing_baselines<K: Copy + Eq + Hash>(dim: &Dimension<K>) -> FxHashMap<K, f64> {
    dim.firing
        .keys()
        .map(|k| (*k, dim.baselines.get(k).map(Baseline::mean).unwrap_or(0.0)))
        .collect()
}

/// Counts a quiet window for every firing key that was not hot; resolves those quiet for
/// `clear` windows.
#[allow(clippy::too_many_arguments)]
fn settle<K: Copy + Eq + Hash>(
    dim: &mut Dimension<K>,
    hot: impl Fn(&K) -> bool,
    subject: impl Fn(&K) -> (String, Option<String>),
    clear: u32,
    threshold: f64,
    end_ns: u64,
    out: &mut Vec<Finding>,
) {
    dim.firing.retain(|k, f| {
        if hot(k) {
            return true;
        }
        f.quiet += 1;
        if f.quiet < clear {
            return true;
        }
        let (subject, tenant) = subject(k);
        out.push(Finding {
            kind: FindingKind::HeavyHitter,
            active: false,
            tenant,
            subject,
            severity: Severity::Warning,
            started_ns: f.since_ns,
            detected_ns: end_ns,
            value: f.peak,
            threshold,
            evidence: Evidence::HeavyHitterResolved(HeavyHitterResolvedEvidence {
                peak_share: f.peak,
                quiet_windows: f.quiet,
            }),
        });
        false
    });
}

/// Records a hot key as firing and reports it.
#[allow(clippy::too_many_arguments)]
fn raise<K: Copy + Eq + Hash>(
    dim: &mut Dimension<K>,
    key: K,
    subject: String,
    tenant: Option<String>,
    v: &Verdict,
    w: &WindowStats,
    evidence: HeavyHitterEvidence,
    out: &mut Vec<Finding>,
) {
    let f = dim.firing.entry(key).or_insert(Firing {
        since_ns: w.start_ns,
        quiet: 0,
        peak: 0.0,
    });
    f.quiet = 0;
    f.peak = f.peak.max(v.share);
    out.push(Finding {
        kind: FindingKind::HeavyHitter,
        active: true,
        tenant,
        subject,
        severity: if v.share >= 0.5 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        started_ns: f.since_ns,
        detected_ns: w.end_ns,
        value: v.share,
        threshold: v.min_share,
        evidence: Evidence::HeavyHitter(evidence),
    });
}

/// During warm-up, for keys that are no destination: never a one-way flood.
fn never<K>(_: &K, _: f64) -> bool {
    false
}

/// Judges the top candidates of one sketch, then updates every baseline with this window.
/// `warm_up`: during warm-up, whether a key is a destination flooded one way.
fn judge_dimension<K: crate::sketch::SketchKey>(
    cfg: &HeavyHitterConfig,
    dim: &mut Dimension<K>,
    sketch: &FrequentItems<K>,
    total: u64,
    width_s: f64,
    limits: impl Fn(&K) -> (f64, f64),
    warm_up: Option<impl Fn(&K, f64) -> bool>,
) -> Vec<(K, Verdict)> {
    let mut verdicts = Vec::new();
    for e in sketch.top(CANDIDATES) {
        let (min_share, min_rate) = limits(&e.key);
        let count = e.count as f64;
        let share = if total > 0 { count / total as f64 } else { 0.0 };
        let rate = count / width_s;
        let baseline = dim.baselines.get(&e.key).copied().unwrap_or_default();
        let mean = baseline.mean();
        let sd = baseline.sd().max(mean.sqrt()).max(1.0);
        let above = count > cfg.baseline_factor * mean && count > mean + cfg.baseline_sigmas * sd;
        let hot = match &warm_up {
            None => share >= min_share && rate >= min_rate && above,
            // Warm-up learns: dominance is no anomaly (a relay's service, a VIP), only an
            // overwhelming flood towards a destination that does not answer is.
            Some(one_way) => {
                share >= cfg.warmup_share.max(min_share)
                    && rate >= cfg.warmup_factor * min_rate
                    && one_way(&e.key, count)
            }
        };
        verdicts.push((
            e.key,
            Verdict {
                hot,
                count: e.count,
                share,
                rate,
                baseline,
                min_share,
            },
        ));
    }
    // Baselines: every key with one is updated (0 if absent this window); firing keys keep
    // theirs frozen so a long flood does not become the norm.
    for (k, b) in dim.baselines.iter_mut() {
        let hot_now = verdicts.iter().any(|(vk, v)| vk == k && v.hot);
        if !(hot_now || dim.firing.contains_key(k)) {
            let x = sketch.get(k).map(|e| e.count).unwrap_or(0) as f64;
            b.update(x, cfg, warm_up.is_some());
        }
    }
    dim.baselines.retain(|k, b| {
        b.matters(limits(k).1 * width_s, cfg.baseline_factor) || dim.firing.contains_key(k)
    });
    for (k, v) in &verdicts {
        if !dim.baselines.contains_key(k) && !v.hot && dim.baselines.len() < MAX_BASELINES {
            // First sighting: start from this window's count (an established key is not new).
            dim.baselines.insert(*k, Baseline::first(v.count as f64));
        }
    }
    verdicts
}

fn evidence(
    dimension: HeavyDimension,
    unit: HeavyUnit,
    v: &Verdict,
    w: &WindowStats,
    width_s: f64,
    cfg: &HeavyHitterConfig,
    error_bound: u64,
) -> HeavyHitterEvidence {
    HeavyHitterEvidence {
        baseline_factor: cfg.baseline_factor,
        baseline_mean: v.baseline.mean(),
        baseline_sd: v.baseline.sd(),
        count: v.count,
        dimension,
        distinct_sources_in_top_flows: None,
        nodes: None,
        protocol_type: None,
        rate_per_s: v.rate,
        sampled: SampledEstimate::of(
            v.count,
            match unit {
                HeavyUnit::Packets => w.packets,
                HeavyUnit::Bytes => w.bytes,
            },
            w,
        ),
        share: v.share,
        size_class: None,
        sketch_error_bound: error_bound,
        top_protocol_type: None,
        top_services: None,
        top_size_class: None,
        top_sources: None,
        unit,
        window_bytes: w.bytes,
        window_packets: w.packets,
        window_s: width_s,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tapwatch_classifier::Classifier;

    use super::*;
    use crate::config::AnalyzerConfig;

    fn labels(classifier: &Classifier) -> Labels {
        Labels::new(&AnalyzerConfig::default(), classifier)
    }

    fn window(i: u64, senders: &[(u8, u32, u64)], tenants: &TenantMap) -> WindowStats {
        let mut w = WindowStats::new(
            i * 1_000_000_000,
            (i + 1) * 1_000_000_000,
            1024,
            4096,
            16,
            32,
        );
        for &(b, sources, each) in senders {
            for s in 0..sources {
                let src = IpAddr::V4(Ipv4Addr::new(10, b, (s >> 8) as u8, s as u8));
                let t = tenants.lookup(src);
                for _ in 0..each {
                    w.packets += 1;
                    w.bytes += 100;
                    w.sources.add(src, 1, 100);
                    w.source_bytes.add(src, 100, 1);
                    w.source_kinds
                        .add((src, ProtocolType::Udp, SizeClass::UpTo128), 1, 100);
                    let tw = w.tenant(t);
                    tw.packets += 1;
                    tw.bytes += 100;
                    tw.nodes.add(src);
                }
            }
        }
        w
    }

    #[test]
    fn a_tenant_surge_from_many_small_sources_is_a_tenant_alert() {
        let tenants = TenantMap::parse(std::path::Path::new("t"), "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.1.0.0/16\"]\n[[tenant]]\nname = \"beta\"\nprefixes = [\"10.2.0.0/16\"]\n").unwrap();
        let classifier = Classifier::new(tenants.clone(), &Default::default());
        let mut judge = HeavyJudge::new(HeavyHitterConfig::default(), &labels(&classifier));
        let mut out = Vec::new();
        for i in 0..30 {
            judge.judge(
                &window(i, &[(1, 50, 1), (2, 50, 1)], &tenants),
                &tenants,
                &mut out,
            );
        }
        assert!(out.is_empty(), "steady traffic raised {out:?}");
        for i in 30..33 {
            judge.judge(
                &window(i, &[(1, 50, 1), (2, 1000, 2)], &tenants),
                &tenants,
                &mut out,
            );
        }
        assert!(
            out.iter().all(|f| f.subject == "beta" && f.active),
            "{out:#?}"
        );
        assert_eq!(out.len(), 3);
        assert!(
            matches!(&out[0].evidence, Evidence::HeavyHitter(e) if e.dimension == HeavyDimension::Tenant)
        );
        for i in 33..40 {
            judge.judge(
                &window(i, &[(1, 50, 1), (2, 50, 1)], &tenants),
                &tenants,
                &mut out,
            );
        }
        let last = out.last().unwrap();
        assert!(
            !last.active && last.subject == "beta",
            "the surge resolves: {last:?}"
        );
    }

    #[test]
    fn a_tenant_override_raises_only_that_tenants_thresholds() {
        let tenants = TenantMap::parse(std::path::Path::new("t"), "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.1.0.0/16\"]\n[[tenant]]\nname = \"beta\"\nprefixes = [\"10.2.0.0/16\"]\n").unwrap();
        let classifier = Classifier::new(tenants.clone(), &Default::default());
        // The same surge as above, from beta and then from acme; beta may burst to 90 %.
        let run = |overrides: &str, surging: u8| {
            let cfg: crate::AnalyzerConfig = toml::from_str(overrides).unwrap();
            let labels = Labels::new(&cfg, &classifier);
            let mut judge = HeavyJudge::new(cfg.heavy_hitters.clone(), &labels);
            let mut out = Vec::new();
            for i in 0..33 {
                let hot = if i >= 30 {
                    (surging, 1000, 2)
                } else {
                    (surging, 50, 1)
                };
                let other = (3 - surging, 50, 1);
                judge.judge(&window(i, &[hot, other], &tenants), &tenants, &mut out);
            }
            out
        };
        let beta_loose = "[[override]]\ntenant = \"be*\"\nheavy_min_share = 0.99\n";
        assert!(run(beta_loose, 2).is_empty(), "beta's own threshold holds");
        let acme = run(beta_loose, 1);
        assert!(
            acme.len() == 3
                && acme
                    .iter()
                    .all(|f| f.subject == "acme" && f.threshold == 0.2),
            "acme keeps the default: {acme:#?}"
        );
        let strict = run("[[override]]\ntenant = \"beta\"\nheavy_min_pps = 1e6\n", 2);
        assert!(strict.is_empty(), "a rate floor per tenant: {strict:#?}");
        assert_eq!(
            run("", 2).len(),
            3,
            "without overrides beta's surge is flagged"
        );
    }

    #[test]
    fn a_heavy_hitter_judged_on_sampled_counts_states_the_estimates_error() {
        let tenants = TenantMap::default();
        let classifier = Classifier::default();
        let mut judge = HeavyJudge::new(HeavyHitterConfig::default(), &labels(&classifier));
        let mut out = Vec::new();
        // The windows as a 1-in-10 sFlow agent's records scaled by 10 would count them.
        let sampled = |i: u64, senders: &[(u8, u32, u64)]| {
            let mut w = window(i, senders, &tenants);
            w.samples = w.packets / 10;
            w
        };
        for i in 0..40 {
            judge.judge(
                &sampled(i, &[(1, 1, 600), (3, 100, 10)]),
                &tenants,
                &mut out,
            );
        }
        let before = out.len();
        judge.judge(
            &sampled(40, &[(1, 1, 600), (3, 100, 10), (4, 1, 3000)]),
            &tenants,
            &mut out,
        );
        let new: Vec<_> = out[before..].iter().filter(|f| f.active).collect();
        let Some(Evidence::HeavyHitter(e)) = new.first().map(|f| &f.evidence) else {
            panic!("the new source fires: {new:?}");
        };
        let s = e
            .sampled
            .as_ref()
            .expect("sampled window: the error is stated");
        let n = (e.count as f64 / 10.0).round();
        assert_eq!((s.samples, s.rate), (n as u64, 10.0), "{s:?}");
        assert!(s.count_low < e.count as f64 && e.count as f64 <= s.count_high);
        let json = serde_json::to_value(e).unwrap();
        assert!(json["sampled"]["relative_se"].as_f64().unwrap() < 0.1);
        // Unsampled: no field at all.
        let mut plain = judge_fresh_unsampled(&tenants);
        let Some(Evidence::HeavyHitter(e)) = plain.pop().map(|f| f.evidence) else {
            panic!("fires unsampled too");
        };
        assert!(e.sampled.is_none());
        assert!(serde_json::to_value(&e).unwrap().get("sampled").is_none());
    }

    fn judge_fresh_unsampled(tenants: &TenantMap) -> Vec<Finding> {
        let mut judge = HeavyJudge::new(
            HeavyHitterConfig::default(),
            &labels(&Classifier::default()),
        );
        let mut out = Vec::new();
        for i in 0..40 {
            judge.judge(
                &window(i, &[(1, 1, 600), (3, 100, 10)], tenants),
                tenants,
                &mut out,
            );
        }
        judge.judge(
            &window(40, &[(1, 1, 600), (3, 100, 10), (4, 1, 3000)], tenants),
            tenants,
            &mut out,
        );
        out.retain(|f| f.active);
        out
    }

    #[test]
    fn a_big_source_that_was_always_there_is_not_an_anomaly_but_a_new_one_is() {
        let tenants = TenantMap::default();
        let classifier = Classifier::default();
        let mut judge = HeavyJudge::new(HeavyHitterConfig::default(), &labels(&classifier));
        let mut out = Vec::new();
        // 10.1.0.0 sends 600 of ~700 packets per window from the start.
        for i in 0..40 {
            judge.judge(
                &window(i, &[(1, 1, 600), (3, 100, 1)], &tenants),
                &tenants,
                &mut out,
            );
        }
        assert!(
            out.is_empty(),
            "a source big from the start is baseline: {out:?}"
        );
        let before = out.len();
        for i in 40..42 {
            judge.judge(
                &window(i, &[(1, 1, 600), (3, 100, 1), (4, 1, 3000)], &tenants),
                &tenants,
                &mut out,
            );
        }
        let new: Vec<_> = out[before..].iter().filter(|f| f.active).collect();
        assert!(
            !new.is_empty() && new.iter().all(|f| f.subject == "10.4.0.0"),
            "{new:#?}"
        );
    }

    const RELAY: (u8, u8, u8, u8) = (192, 0, 2, 10);

    /// A window of relay traffic: `clients` sources (10.9.x.y) send `pps` packets in total
    /// to the relay's service 443/udp (each client's share random around equal), the relay
    /// answers every other packet, and `extra` sources send their own packets to it (answered
    /// alike when their flag says so).
    fn relay_window(
        i: u64,
        rng: &mut tapwatch_synth::Rng,
        clients: u32,
        pps: f64,
        fill: f64,
        extra: &[(IpAddr, u16, u64, bool)],
    ) -> WindowStats {
        let relay = IpAddr::V4(Ipv4Addr::new(RELAY.0, RELAY.1, RELAY.2, RELAY.3));
        let mut w = WindowStats::new(i * SEC, (i + 1) * SEC, 1024, 4096, 16, 32);
        let add = |w: &mut WindowStats, src: IpAddr, sport: u16, dst: IpAddr, n: u64| {
            if n == 0 {
                return;
            }
            w.packets += n;
            w.bytes += 200 * n;
            w.sources.add(src, n, 200 * n);
            w.source_bytes.add(src, 200 * n, n);
            w.source_kinds
                .add((src, ProtocolType::Udp, SizeClass::UpTo256), n, 200 * n);
            w.destinations.add(dst, n, 200 * n);
            w.services.add((dst, 443, 17), n, 200 * n);
            w.flows.add((src, sport, dst, 443, 17), n, 200 * n);
            let tw = w.tenant(TenantId(0));
            tw.packets += n;
            tw.bytes += 200 * n;
            tw.nodes.add(src);
        };
        let total = (pps * fill * (0.9 + 0.2 * rng.unit())) as u64;
        for c in 0..clients {
            let src = IpAddr::V4(Ipv4Addr::new(10, 9, (c >> 8) as u8, c as u8));
            let n = (2 * total / u64::from(clients)) * rng.below(100) / 100;
            add(&mut w, src, 5000, relay, n);
            add(&mut w, relay, 443, src, n / 2);
        }
        for &(src, sport, n, answered) in extra {
            let n = (n as f64 * fill) as u64;
            add(&mut w, src, sport, relay, n);
            if answered {
                add(&mut w, relay, 443, src, n / 2);
            }
        }
        w
    }

    const SEC: u64 = 1_000_000_000;

    fn judge() -> HeavyJudge {
        HeavyJudge::new(
            HeavyHitterConfig::default(),
            &labels(&Classifier::default()),
        )
    }

    #[test]
    fn a_relay_service_fed_by_hundreds_of_sources_is_the_baseline_from_the_start() {
        let tenants = TenantMap::default();
        for seed in 0..6 {
            let mut rng = tapwatch_synth::Rng::new(seed);
            let mut judge = judge();
            let mut out = Vec::new();
            let clients = 100 + rng.below(300) as u32;
            let pps = 1000.0 + 9000.0 * rng.unit();
            // The capture starts anywhere in its first window; the rate ramps up to 3x and
            // back over 15 minutes, as a day would over a longer span.
            let first_fill = rng.unit();
            for i in 0..900u64 {
                let ramp = 2.0 - (i as f64 / 900.0 * std::f64::consts::TAU).cos();
                let fill = if i == 0 { first_fill } else { 1.0 };
                let w = relay_window(i, &mut rng, clients, pps * ramp, fill, &[]);
                judge.judge(&w, &tenants, &mut out);
            }
            assert!(out.is_empty(), "seed {seed}: {out:#?}");
        }
    }

    #[test]
    fn a_steady_dominant_service_that_jumps_5x_fires_at_once() {
        let tenants = TenantMap::default();
        let mut rng = tapwatch_synth::Rng::new(1);
        let mut judge = judge();
        let mut out = Vec::new();
        for i in 0..120 {
            let w = relay_window(i, &mut rng, 300, 2000.0, 1.0, &[]);
            judge.judge(&w, &tenants, &mut out);
        }
        assert!(out.is_empty(), "{out:#?}");
        let w = relay_window(120, &mut rng, 300, 10_000.0, 1.0, &[]);
        judge.judge(&w, &tenants, &mut out);
        let service = out
            .iter()
            .find(|f| f.subject == "192.0.2.10:443/udp")
            .unwrap_or_else(|| panic!("the service's 5x jump did not fire: {out:#?}"));
        assert!(service.active && service.severity == Severity::Critical);
        let Evidence::HeavyHitter(e) = &service.evidence else {
            panic!("{service:?}")
        };
        assert!(e.count as f64 > 4.0 * e.baseline_mean, "{e:?}");
    }

    #[test]
    fn a_flood_present_from_the_first_packet_is_baseline_until_it_grows() {
        let tenants = TenantMap::default();
        let mut rng = tapwatch_synth::Rng::new(2);
        let mut judge = judge();
        let mut out = Vec::new();
        // One source sends 6x all the clients together from the start, and the relay
        // answers it: nothing tells it from a big peer, so it is the baseline.
        let flooder = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
        for i in 0..60 {
            let w = relay_window(i, &mut rng, 200, 500.0, 1.0, &[(flooder, 5000, 3000, true)]);
            judge.judge(&w, &tenants, &mut out);
        }
        assert!(
            out.is_empty(),
            "a flood from the start is baseline: {out:#?}"
        );
        for i in 60..63 {
            let w = relay_window(
                i,
                &mut rng,
                200,
                500.0,
                1.0,
                &[(flooder, 5000, 15_000, true)],
            );
            judge.judge(&w, &tenants, &mut out);
        }
        assert!(
            out.iter().any(|f| f.subject == "203.0.113.66"),
            "the flood grew 5x and was not flagged: {out:#?}"
        );
        // The relay, answering the flood, jumps with it as a source; nothing else moved.
        assert!(
            out.iter()
                .all(|f| f.active && ["203.0.113.66", "192.0.2.10"].contains(&f.subject.as_str())),
            "{out:#?}"
        );
    }

    #[test]
    fn a_flood_that_starts_after_warm_up_fires_on_its_source_only() {
        let tenants = TenantMap::default();
        let mut rng = tapwatch_synth::Rng::new(3);
        let mut judge = judge();
        let mut out = Vec::new();
        let flooder = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
        for i in 0..30 {
            let w = relay_window(i, &mut rng, 400, 3000.0, 1.0, &[]);
            judge.judge(&w, &tenants, &mut out);
        }
        let w = relay_window(
            30,
            &mut rng,
            400,
            3000.0,
            1.0,
            &[(flooder, 5000, 4000, false)],
        );
        judge.judge(&w, &tenants, &mut out);
        let subjects: Vec<_> = out.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["203.0.113.66"], "{out:#?}");
    }

    #[test]
    fn a_one_way_flood_from_the_first_packet_fires_in_warm_up_on_its_victim() {
        // A reflection or SYN flood captured from its first packet: the victim takes nearly
        // every packet and answers none. A relay answers; this destination does not.
        let tenants = TenantMap::default();
        let mut rng = tapwatch_synth::Rng::new(4);
        let mut judge = judge();
        let mut out = Vec::new();
        let reflectors = |sport| -> Vec<_> {
            (0..400u32)
                .map(|r| {
                    let src = IpAddr::V4(Ipv4Addr::new(198, 18, (r >> 8) as u8, r as u8));
                    (src, sport, 20, false)
                })
                .collect()
        };
        let w = relay_window(0, &mut rng, 100, 300.0, 1.0, &reflectors(161));
        judge.judge(&w, &tenants, &mut out);
        let subjects: Vec<_> = out.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["192.0.2.10:443/udp"], "{out:#?}");
        assert_eq!(out[0].severity, Severity::Critical);
        // The same one-way traffic from clients' ephemeral ports is a relay seen on a tap
        // that carries one direction only: the baseline, not a flood.
        let mut judge = super::tests::judge();
        let mut out = Vec::new();
        let w = relay_window(0, &mut rng, 100, 300.0, 1.0, &reflectors(40_000));
        judge.judge(&w, &tenants, &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }
}
