//! Traffic drops: a destination address, a destination service (`addr:port/proto`) or a
//! tenant whose steady traffic falls to near zero — an ECMP member whose routes were
//! withdrawn, a backend taken out of a pool, a tenant cut off.
//!
//! Judged on the merger, on its own rollup of the base windows (`window_s`), from counts the
//! windows already keep (nothing per packet): destination addresses and services from the
//! windows' frequent-items sketches, whose bounds are rigorous (a tracked key's true count
//! lies in `[count, count + error bound]`, an absent key's is at most the error bound), and
//! tenants' exact packet counts. A key is tracked once it reaches the rate a baseline needs;
//! at most `max_tracked` keys are tracked, the lowest-rate idle one is evicted for a busier
//! newcomer and evictions are counted.
//!
//! A key is *steady* when its last `baseline_s` of windows are all there and none but the
//! newest (the window a drop began in) fell below `steady_floor` × their mean: a new, bursty
//! or intermittent key never is; nor is one conversation (a key whose largest flow carried
//! more than `max_flow_share` of its packets in most baseline windows: a transfer that
//! finishes is not a destination that lost its traffic). A steady key
//! with a mean of at least `min_baseline_pps` whose upper-bound count falls below
//! `drop_ratio` × its baseline for `min_windows` windows fires; it resolves once a window
//! holds `resume_ratio` of the baseline again. Peers (a configured `[[group]]` the address
//! belongs to, else for a service the tracked services on the same port and protocol whose
//! address maps to the same tenant) that rose by `min_pickup` of the lost rate make the
//! finding `critical` (the traffic was rerouted: the member was withdrawn); otherwise it is
//! a `warning`.
//!
//! Two silences are not drops. The end of input: the rollup in progress when input ends is
//! partial and never judged. A quiet link: a window whose total packets are below
//! `drop_ratio` × the link's own mean (a live link ticked by the wall clock with nothing
//! arriving, a mirror port that went dark) is blind — no key gains or ends a quiet window
//! in it, firing keys stay as they are. One member of a group going quiet while the rest of
//! the link carries on is a drop; everything going quiet at once is the tap, not a member.
use std::collections::VecDeque;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tapwatch_classifier::{TenantId, TenantMap};

use super::WindowDetector;
use crate::finding::{endpoint, proto_label, Evidence, Finding, FindingKind, Severity};
use crate::sketch::FrequentItems;
use crate::window::{Rollup, WindowStats};

/// Traffic drops: the `[analyzer.traffic_drop]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficDropConfig {
    /// Width of the judged windows, seconds (a rollup of the base windows).
    pub window_s: f64,
    /// Trailing span of a key's baseline, seconds.
    pub baseline_s: f64,
    /// Baseline rate a key needs, packets per second.
    pub min_baseline_pps: f64,
    /// A window below this share of the baseline is quiet.
    pub drop_ratio: f64,
    /// Quiet windows in a row that make a drop.
    pub min_windows: u32,
    /// Steady: no baseline window below this share of the baseline's mean.
    pub steady_floor: f64,
    /// A firing key resolves once a window holds this share of its baseline.
    pub resume_ratio: f64,
    /// Share of the lost rate the peers must have gained for `critical`.
    pub min_pickup: f64,
    /// A key whose largest flow carried more than this share of its packets in most baseline
    /// windows is one conversation, never steady (1: no such rule).
    pub max_flow_share: f64,
    /// Keys (addresses, services, tenants) tracked at most.
    pub max_tracked: usize,
    /// `[[analyzer.traffic_drop.group]]`: sets of member addresses that share traffic (an
    /// ECMP set, a pool behind a load balancer).
    pub group: Vec<DropGroup>,
}

/// A configured set of addresses that share traffic.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DropGroup {
    /// Name shown in the evidence.
    pub name: String,
    /// Member addresses.
    pub members: Vec<IpAddr>,
}

impl Default for TrafficDropConfig {
    fn default() -> Self {
        TrafficDropConfig {
            window_s: 10.0,
            baseline_s: 300.0,
            min_baseline_pps: 20.0,
            drop_ratio: 0.05,
            min_windows: 3,
            steady_floor: 0.25,
            resume_ratio: 0.5,
            min_pickup: 0.5,
            max_flow_share: 0.5,
            max_tracked: 1024,
            group: Vec::new(),
        }
    }
}

/// What dropped: its dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DropKey {
    Tenant(u16),
    Address(IpAddr),
    Service(IpAddr, u16, u8),
}

/// The numbers behind a firing traffic drop (fields in the order they serialise: by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficDropEvidence {
    /// The key's baseline, packets/s (mean over `baseline_s` before the drop).
    pub baseline_pps: f64,
    /// Its rate in the latest window, packets/s (an upper bound).
    pub current_pps: f64,
    /// `address`, `service` or `tenant`.
    pub dimension: String,
    /// The peer group: a configured group's name, `port+tenant`, or empty (no peers).
    pub group: String,
    /// Peers tracked in the group (members that dropped too are left out).
    pub peers: u64,
    /// The peers' summed baseline when the drop began, packets/s.
    pub peers_baseline_pps: f64,
    /// The peers' summed rate in the latest window, packets/s.
    pub peers_current_pps: f64,
    /// What the peers gained over the rate this key lost (1: they took all of it).
    pub pickup: f64,
    /// Quiet windows so far.
    pub quiet_windows: u32,
    /// Judged window width, seconds.
    pub window_s: f64,
}

/// The numbers behind a resolved traffic drop.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficDropResolvedEvidence {
    /// The baseline before the drop, packets/s.
    pub baseline_pps: f64,
    /// The rate of the window that ended it, packets/s.
    pub current_pps: f64,
    /// Judged window width, seconds.
    pub window_s: f64,
}

/// One tracked key's count in one judged window, kept for storage (the `drop_rates` table).
#[derive(Clone, Debug, PartialEq)]
pub struct DropRate {
    /// `address`, `service` or `tenant`.
    pub dimension: &'static str,
    /// The tenant (of the address, or the tenant itself).
    pub tenant: String,
    /// The address (none for a tenant).
    pub address: Option<IpAddr>,
    /// Port and IP protocol (0 unless a service).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Window start (event time, ns).
    pub start_ns: u64,
    /// Window width, seconds.
    pub width_s: f64,
    /// Packets counted (a lower bound).
    pub packets: u64,
    /// Upper bound of the packets (the sketch's error bound added).
    pub packets_upper: u64,
    /// Its baseline, packets/s (0 until it has a full one).
    pub baseline_pps: f64,
    /// Whether its baseline is steady.
    pub steady: bool,
    /// Quiet windows in a row so far (0 outside a drop).
    pub quiet_windows: u32,
}

/// A quiet run in progress.
#[derive(Clone, Copy, Debug)]
struct Quiet {
    since: u64,
    windows: u32,
    /// Baseline count per window when it began.
    base: f64,
    /// The peers' summed baseline count per window when it began.
    peers_base: f64,
    firing: bool,
    critical: bool,
}

#[derive(Clone, Debug, Default)]
struct Track {
    /// Counts (lower bounds) of the last windows outside quiet runs, oldest first, and
    /// whether one flow carried most of each.
    history: VecDeque<(u64, bool)>,
    quiet: Option<Quiet>,
    /// The count that got it tracked (its rate until it has a history).
    admitted: u64,
}

impl Track {
    fn mean(&self) -> f64 {
        if self.history.is_empty() {
            return 0.0;
        }
        self.history.iter().map(|h| h.0).sum::<u64>() as f64 / self.history.len() as f64
    }

    fn push(&mut self, count: u64, dominated: bool, keep: usize) {
        self.history.push_back((count, dominated));
        while self.history.len() > keep {
            self.history.pop_front();
        }
    }
}

/// The traffic-drop detector, run by the merger on each closed base window.
pub(crate) struct TrafficDrop {
    cfg: TrafficDropConfig,
    window: Rollup,
    /// Windows a baseline spans.
    keep: usize,
    tracked: FxHashMap<DropKey, Track>,
    /// The link's total packets over the last windows that were not blind.
    link: VecDeque<u64>,
    /// Configured group index of each member address.
    group_of: FxHashMap<IpAddr, usize>,
    /// Tracked keys evicted for a busier one.
    pub evicted: u64,
    /// Keep every tracked key's count per judged window in `samples` (for storage).
    pub keep_rates: bool,
    /// Counts kept since the merger last took them.
    pub samples: Vec<DropRate>,
}

impl TrafficDrop {
    /// A detector with these settings.
    pub fn new(cfg: TrafficDropConfig) -> TrafficDrop {
        let group_of = cfg
            .group
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.members.iter().map(move |a| (*a, i)))
            .collect();
        TrafficDrop {
            window: Rollup::new(cfg.window_s),
            keep: ((cfg.baseline_s / cfg.window_s).round() as usize).max(1),
            tracked: FxHashMap::default(),
            link: VecDeque::new(),
            group_of,
            evicted: 0,
            keep_rates: false,
            samples: Vec::new(),
            cfg,
        }
    }

    /// Count bounds of a key in a window: (lower, upper).
    fn count(b: &WindowStats, k: &DropKey) -> (u64, u64) {
        match k {
            DropKey::Tenant(t) => {
                let n = b.tenants.get(*t as usize).map_or(0, |t| t.packets);
                (n, n)
            }
            DropKey::Address(a) => bounds(&b.destinations, a),
            DropKey::Service(a, p, x) => bounds(&b.services, &(*a, *p, *x)),
        }
    }

    /// Peers of a key: its group's name and the other tracked keys in it.
    fn peers(&self, k: &DropKey, tenants: &TenantMap) -> (String, Vec<DropKey>) {
        let (addr, port) = match k {
            DropKey::Tenant(_) => return (String::new(), Vec::new()),
            DropKey::Address(a) => (*a, None),
            DropKey::Service(a, p, x) => (*a, Some((*p, *x))),
        };
        let configured = self.group_of.get(&addr).copied();
        let tenant = tenants.lookup(addr);
        let peers = self
            .tracked
            .keys()
            .filter(|o| *o != k)
            .filter(|o| match (**o, port, configured) {
                (DropKey::Address(b), None, Some(g)) => self.group_of.get(&b) == Some(&g),
                (DropKey::Service(b, p, x), Some(pp), Some(g)) => {
                    (p, x) == pp && self.group_of.get(&b) == Some(&g)
                }
                (DropKey::Service(b, p, x), Some(pp), None) => {
                    (p, x) == pp && tenants.lookup(b) == tenant
                }
                _ => false,
            })
            .copied()
            .collect();
        let name = match (configured, port) {
            (Some(g), _) => self.cfg.group[g].name.clone(),
            (None, Some(_)) => "port+tenant".into(),
            (None, None) => String::new(),
        };
        (name, peers)
    }

    /// Whether a key's history makes a steady baseline: full, busy enough, no window but
    /// the newest (the one a drop may have begun in) below the floor, and not one
    /// conversation (a transfer that ends is not a destination that lost its traffic).
    fn steady(&self, t: &Track, width_s: f64) -> bool {
        let mean = t.mean();
        let dominated = t.history.iter().filter(|h| h.1).count();
        t.history.len() >= self.keep
            && mean / width_s >= self.cfg.min_baseline_pps
            && dominated * 2 < t.history.len()
            && t.history
                .iter()
                .rev()
                .skip(1)
                .all(|h| h.0 as f64 >= self.cfg.steady_floor * mean)
    }

    /// The largest flow's packets towards each address and service among the window's
    /// heaviest flows.
    fn largest_flows(&self, b: &WindowStats) -> FxHashMap<DropKey, u64> {
        let mut m: FxHashMap<DropKey, u64> = FxHashMap::default();
        for e in b.flows.top(self.cfg.max_tracked) {
            let (_, _, dst, port, proto) = e.key;
            for k in [DropKey::Address(dst), DropKey::Service(dst, port, proto)] {
                let v = m.entry(k).or_default();
                *v = (*v).max(e.count);
            }
        }
        m
    }

    /// Judges one finished window.
    fn judge(&mut self, b: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let width = b.width_s();
        let link_mean = if self.link.is_empty() {
            0.0
        } else {
            self.link.iter().sum::<u64>() as f64 / self.link.len() as f64
        };
        if (b.packets as f64) < self.cfg.drop_ratio * link_mean {
            return; // the whole link went quiet: blind, not a drop
        }
        self.link.push_back(b.packets);
        while self.link.len() > self.keep {
            self.link.pop_front();
        }
        let counts: FxHashMap<DropKey, (u64, u64)> = self
            .tracked
            .keys()
            .map(|k| (*k, Self::count(b, k)))
            .collect();
        let largest = self.largest_flows(b);
        let share = self.cfg.max_flow_share;
        let one_flow = |k: &DropKey, count: u64| {
            largest
                .get(k)
                .is_some_and(|f| *f as f64 > share * count as f64)
        };
        let mut keys: Vec<DropKey> = self.tracked.keys().copied().collect();
        keys.sort_unstable(); // findings in a fixed order
        for k in keys {
            let (lo, hi) = counts[&k];
            let t = &self.tracked[&k];
            let steady = self.steady(t, width);
            let mean = t.mean();
            let keep = self.keep;
            match t.quiet {
                None if steady && (hi as f64) < self.cfg.drop_ratio * mean => {
                    let (_, peers) = self.peers(&k, tenants);
                    let peers_base = peers
                        .iter()
                        .filter(|p| self.tracked[p].quiet.is_none())
                        .map(|p| self.tracked[p].mean())
                        .sum();
                    let q = Quiet {
                        since: b.start_ns,
                        windows: 1,
                        base: mean,
                        peers_base,
                        firing: false,
                        critical: false,
                    };
                    self.tracked.get_mut(&k).expect("tracked").quiet = Some(q);
                    self.fire_if_due(&k, &counts, b, tenants, out);
                }
                None => {
                    let dominated = one_flow(&k, lo);
                    self.tracked
                        .get_mut(&k)
                        .expect("tracked")
                        .push(lo, dominated, keep)
                }
                Some(q) if (hi as f64) < self.cfg.drop_ratio * q.base => {
                    if let Some(q) = &mut self.tracked.get_mut(&k).expect("tracked").quiet {
                        q.windows += 1;
                    }
                    self.fire_if_due(&k, &counts, b, tenants, out);
                }
                Some(q) if q.firing && (lo as f64) < self.cfg.resume_ratio * q.base => {
                    self.fire_if_due(&k, &counts, b, tenants, out); // partly back: holds
                }
                Some(q) => {
                    let t = self.tracked.get_mut(&k).expect("tracked");
                    t.quiet = None;
                    if q.firing {
                        out.push(self.finding(
                            &k,
                            tenants,
                            q,
                            b,
                            false,
                            hi,
                            Evidence::TrafficDropResolved(TrafficDropResolvedEvidence {
                                baseline_pps: q.base / width,
                                current_pps: lo as f64 / width,
                                window_s: width,
                            }),
                        ));
                    } else {
                        // A short quiet run: no drop, but the key is not steady for a while.
                        for _ in 0..q.windows {
                            t.push(0, false, keep);
                        }
                    }
                    let dominated = one_flow(&k, lo);
                    self.tracked
                        .get_mut(&k)
                        .expect("tracked")
                        .push(lo, dominated, keep);
                }
            }
        }
        if self.keep_rates {
            self.keep_samples(b, tenants, &counts);
        }
        self.admit(b, width);
    }

    /// Every tracked key's count in the window, for storage.
    fn keep_samples(
        &mut self,
        b: &WindowStats,
        tenants: &TenantMap,
        counts: &FxHashMap<DropKey, (u64, u64)>,
    ) {
        let width = b.width_s();
        let mut keys: Vec<DropKey> = counts.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let Some(t) = self.tracked.get(&k) else {
                continue;
            };
            let (lo, hi) = counts[&k];
            let steady = self.steady(t, width);
            let (dimension, tenant, address, port, proto) = match k {
                DropKey::Tenant(i) => ("tenant", tenants.name(TenantId(i)).to_string(), None, 0, 0),
                DropKey::Address(a) => (
                    "address",
                    tenants.name(tenants.lookup(a)).to_string(),
                    Some(a),
                    0,
                    0,
                ),
                DropKey::Service(a, p, x) => (
                    "service",
                    tenants.name(tenants.lookup(a)).to_string(),
                    Some(a),
                    p,
                    x,
                ),
            };
            let baseline = match t.quiet {
                Some(q) => q.base,
                None if t.history.len() >= self.keep => t.mean(),
                None => 0.0,
            };
            self.samples.push(DropRate {
                dimension,
                tenant,
                address,
                port,
                proto,
                start_ns: b.start_ns,
                width_s: width,
                packets: lo,
                packets_upper: hi,
                baseline_pps: baseline / width,
                steady,
                quiet_windows: t.quiet.map_or(0, |q| q.windows),
            });
        }
    }

    /// Emits the active finding of a key in a quiet run once the run is long enough.
    fn fire_if_due(
        &mut self,
        k: &DropKey,
        counts: &FxHashMap<DropKey, (u64, u64)>,
        b: &WindowStats,
        tenants: &TenantMap,
        out: &mut Vec<Finding>,
    ) {
        let Some(q) = self.tracked[k].quiet else {
            return;
        };
        if q.windows < self.cfg.min_windows {
            return;
        }
        let width = b.width_s();
        let (group, peers) = self.peers(k, tenants);
        let live: Vec<&DropKey> = peers
            .iter()
            .filter(|p| self.tracked[p].quiet.is_none())
            .collect();
        let peers_now: u64 = live.iter().map(|p| counts[p].0).sum();
        let pickup = if q.base > 0.0 && !live.is_empty() {
            (peers_now as f64 - q.peers_base) / q.base
        } else {
            0.0
        };
        let critical = q.critical || pickup >= self.cfg.min_pickup;
        let hi = counts[k].1;
        let q = {
            let t = self.tracked.get_mut(k).expect("tracked");
            let q = t.quiet.as_mut().expect("in a quiet run");
            q.firing = true;
            q.critical = critical;
            *q
        };
        let dimension = match k {
            DropKey::Tenant(_) => "tenant",
            DropKey::Address(_) => "address",
            DropKey::Service(..) => "service",
        };
        let evidence = Evidence::TrafficDrop(TrafficDropEvidence {
            baseline_pps: q.base / width,
            current_pps: hi as f64 / width,
            dimension: dimension.into(),
            group,
            peers: live.len() as u64,
            peers_baseline_pps: q.peers_base / width,
            peers_current_pps: peers_now as f64 / width,
            pickup,
            quiet_windows: q.windows,
            window_s: width,
        });
        out.push(self.finding(k, tenants, q, b, true, hi, evidence));
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        k: &DropKey,
        tenants: &TenantMap,
        q: Quiet,
        b: &WindowStats,
        active: bool,
        count: u64,
        evidence: Evidence,
    ) -> Finding {
        let width = b.width_s();
        let (tenant, subject) = match k {
            DropKey::Tenant(t) => {
                let name = tenants.name(TenantId(*t)).to_string();
                (name.clone(), name)
            }
            DropKey::Address(a) => (tenants.name(tenants.lookup(*a)).to_string(), a.to_string()),
            DropKey::Service(a, p, x) => (
                tenants.name(tenants.lookup(*a)).to_string(),
                format!("{}/{}", endpoint(*a, *p), proto_label(*x)),
            ),
        };
        Finding {
            kind: FindingKind::TrafficDrop,
            active,
            tenant: Some(tenant),
            subject,
            severity: if q.critical {
                Severity::Critical
            } else {
                Severity::Warning
            },
            started_ns: q.since,
            detected_ns: b.end_ns,
            value: count as f64 / width,
            threshold: self.cfg.drop_ratio * q.base / width,
            evidence,
        }
    }

    /// Starts tracking keys busy enough to build a baseline, evicting the least busy idle
    /// key when the table is full.
    fn admit(&mut self, b: &WindowStats, width: f64) {
        let floor = self.cfg.min_baseline_pps * width * self.cfg.steady_floor;
        let n = self.cfg.max_tracked;
        let mut candidates: Vec<(DropKey, u64)> = Vec::new();
        for (i, t) in b.tenants.iter().enumerate() {
            candidates.push((DropKey::Tenant(i as u16), t.packets));
        }
        for e in b.destinations.top(n) {
            candidates.push((DropKey::Address(e.key), e.count));
        }
        for e in b.services.top(n) {
            candidates.push((DropKey::Service(e.key.0, e.key.1, e.key.2), e.count));
        }
        for (k, c) in candidates {
            if (c as f64) < floor || self.tracked.contains_key(&k) {
                continue;
            }
            if self.tracked.len() >= n {
                let victim = self
                    .tracked
                    .iter()
                    .filter(|(_, t)| t.quiet.is_none())
                    .map(|(k, t)| {
                        let rate = if t.history.is_empty() {
                            t.admitted as f64
                        } else {
                            t.mean()
                        };
                        (rate, *k)
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                match victim {
                    Some((mean, v)) if mean < c as f64 => {
                        self.tracked.remove(&v);
                        self.evicted += 1;
                    }
                    _ => continue,
                }
            }
            // Its first window may be partial: the baseline starts with the next one.
            self.tracked.insert(
                k,
                Track {
                    admitted: c,
                    ..Track::default()
                },
            );
        }
    }
}

/// A key's count bounds in a sketch: (lower, upper); an absent key's is at most the error bound.
fn bounds<K: crate::sketch::SketchKey>(s: &FrequentItems<K>, k: &K) -> (u64, u64) {
    s.get(k)
        .map_or((0, s.error_bound()), |e| (e.count, e.upper))
}

impl WindowDetector for TrafficDrop {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(b) = self.window.push(w) {
            self.judge(&b, tenants, out);
        }
    }

    fn finish(&mut self, _tenants: &TenantMap, _out: &mut Vec<Finding>) {
        // The window in progress ends with the input: partial, never judged as silence.
        let _ = self.window.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{addr, SEC};

    /// Base window `i` (10 s, the judged width) with these packets per member of `10.0.0.1..=4`
    /// on 443/udp and `other` packets elsewhere.
    fn base(i: u64, members: [u64; 4], other: u64) -> WindowStats {
        let mut w = WindowStats::new(i * 10 * SEC, (i + 1) * 10 * SEC, 64, 16, 16, 32);
        for (n, c) in members.iter().enumerate() {
            if *c > 0 {
                w.destinations.add(addr(n as u8 + 1), *c, 0);
                w.services.add((addr(n as u8 + 1), 443, 17), *c, 0);
                // Many clients: the largest flow carries a tenth.
                w.flows
                    .add((addr(50), 1000, addr(n as u8 + 1), 443, 17), c / 10, 0);
            }
        }
        if other > 0 {
            w.destinations.add(addr(99), other, 0);
        }
        w.packets = members.iter().sum::<u64>() + other;
        w
    }

    fn cfg() -> TrafficDropConfig {
        TrafficDropConfig {
            baseline_s: 100.0,
            ..TrafficDropConfig::default()
        }
    }

    fn feed(
        d: &mut TrafficDrop,
        from: u64,
        to: u64,
        f: impl Fn(u64) -> ([u64; 4], u64),
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        for i in from..to {
            let (m, o) = f(i);
            d.window(&base(i, m, o), &TenantMap::default(), &mut out);
        }
        out
    }

    #[test]
    fn a_member_that_drops_while_its_peers_rise_is_critical_and_resolves_when_back() {
        let mut d = TrafficDrop::new(cfg());
        assert!(feed(&mut d, 0, 15, |_| ([300; 4], 1000)).is_empty());
        let out = feed(&mut d, 15, 19, |_| ([0, 400, 400, 400], 1000));
        // Judged when the next window starts: windows 15, 16, 17 are quiet → fires at 18 s·10.
        let fired: Vec<_> = out.iter().filter(|f| f.active).collect();
        assert_eq!(
            fired.iter().map(|f| f.subject.as_str()).collect::<Vec<_>>(),
            vec!["10.0.0.1", "10.0.0.1:443/udp"]
        );
        let f = fired[1];
        assert_eq!((f.started_ns, f.detected_ns), (150 * SEC, 180 * SEC));
        assert_eq!(f.severity, Severity::Critical);
        let Evidence::TrafficDrop(e) = &f.evidence else {
            panic!("{f:?}")
        };
        assert_eq!(
            (e.baseline_pps, e.peers, e.group.as_str()),
            (30.0, 3, "port+tenant")
        );
        assert!((e.pickup - 1.0).abs() < 1e-9, "{e:?}");
        assert_eq!(
            fired[0].severity,
            Severity::Warning,
            "an address without a configured group has no peers"
        );
        let back = feed(&mut d, 19, 21, |_| ([300; 4], 1000));
        let resolved: Vec<_> = back.iter().filter(|f| !f.active).collect();
        assert_eq!(resolved.len(), 2, "{back:?}");
        assert!(resolved.iter().all(|f| f.detected_ns == 200 * SEC));
    }

    #[test]
    fn a_configured_group_gives_addresses_peers() {
        let mut c = cfg();
        c.group = vec![DropGroup {
            name: "vip".into(),
            members: (1..=4).map(addr).collect(),
        }];
        let mut d = TrafficDrop::new(c);
        feed(&mut d, 0, 15, |_| ([300; 4], 1000));
        let out = feed(&mut d, 15, 19, |_| ([0, 400, 400, 400], 1000));
        let f = out.iter().find(|f| f.subject == "10.0.0.1").expect("fired");
        assert_eq!(f.severity, Severity::Critical);
        let Evidence::TrafficDrop(e) = &f.evidence else {
            panic!()
        };
        assert_eq!(e.group, "vip");
    }

    #[test]
    fn a_drop_without_pickup_is_a_warning() {
        let mut d = TrafficDrop::new(cfg());
        feed(&mut d, 0, 15, |_| ([300; 4], 1000));
        let out = feed(&mut d, 15, 19, |_| ([0, 300, 300, 300], 1000));
        assert!(!out.is_empty());
        assert!(
            out.iter().all(|f| f.severity == Severity::Warning),
            "{out:?}"
        );
    }

    #[test]
    fn short_dips_bursty_and_young_keys_and_slow_declines_never_fire() {
        let mut d = TrafficDrop::new(cfg());
        feed(&mut d, 0, 15, |_| ([300; 4], 1000));
        assert!(
            feed(&mut d, 15, 30, |i| (
                [if i % 5 < 2 { 0 } else { 300 }, 300, 300, 300],
                1000
            ))
            .is_empty(),
            "two quiet windows at a time"
        );
        let mut bursty = TrafficDrop::new(cfg());
        assert!(feed(&mut bursty, 0, 60, |i| (
            [if i % 7 < 3 { 0 } else { 600 }, 300, 300, 300],
            1000
        ))
        .is_empty());
        let mut young = TrafficDrop::new(cfg());
        assert!(
            feed(&mut young, 0, 30, |i| (
                [if (5..10).contains(&i) { 300 } else { 0 }, 300, 300, 300],
                1000
            ))
            .is_empty(),
            "busy for less than a baseline"
        );
        let mut diurnal = TrafficDrop::new(cfg());
        assert!(feed(&mut diurnal, 0, 100, |i| {
            let f = 1.0 - 0.0095 * i as f64;
            let c = (300.0 * f) as u64;
            ([c; 4], (1000.0 * f) as u64)
        })
        .is_empty());
    }

    #[test]
    fn the_end_of_input_and_a_quiet_link_are_not_drops() {
        let mut d = TrafficDrop::new(cfg());
        feed(&mut d, 0, 15, |_| ([300; 4], 1000));
        // Everything goes quiet (a live link ticked by the wall clock): blind windows.
        assert!(feed(&mut d, 15, 25, |_| ([0; 4], 0)).is_empty());
        assert!(feed(&mut d, 25, 27, |_| ([300; 4], 1000)).is_empty());
        // Input ends right after member 1 stopped in a partial window.
        let mut out = feed(&mut d, 27, 28, |_| ([0, 300, 300, 300], 1000));
        d.finish(&TenantMap::default(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_drop_that_begins_mid_window_still_fires() {
        let mut d = TrafficDrop::new(cfg());
        feed(&mut d, 0, 15, |_| ([300; 4], 1000));
        let out = feed(&mut d, 15, 20, |i| {
            ([if i == 15 { 80 } else { 0 }, 400, 400, 400], 1000)
        });
        let f = out.iter().find(|f| f.active).expect("fires");
        assert_eq!((f.started_ns, f.detected_ns), (160 * SEC, 190 * SEC));
    }

    #[test]
    fn one_conversation_ending_is_not_a_drop() {
        for (share, fires) in [(0.5, false), (1.0, true)] {
            one_conversation(share, fires);
        }
    }

    fn one_conversation(max_flow_share: f64, fires: bool) {
        let mut d = TrafficDrop::new(TrafficDropConfig {
            max_flow_share,
            ..cfg()
        });
        let one_flow = |i: u64, c: u64| {
            let mut w = base(i, [c, 300, 300, 300], 1000);
            w.flows = crate::sketch::FrequentItems::new(64);
            w.flows.add((addr(50), 1000, addr(1), 443, 17), c, 0);
            w
        };
        let mut out = Vec::new();
        for i in 0..15 {
            d.window(&one_flow(i, 300), &TenantMap::default(), &mut out);
        }
        for i in 15..20 {
            d.window(&one_flow(i, 0), &TenantMap::default(), &mut out);
        }
        let fired = out.iter().any(|f| f.subject == "10.0.0.1:443/udp");
        assert_eq!(fired, fires, "a transfer that finished: {out:?}");
    }

    #[test]
    fn a_full_table_evicts_the_least_busy_idle_key_and_counts_it() {
        let mut c = cfg();
        c.max_tracked = 4;
        let mut d = TrafficDrop::new(c);
        feed(&mut d, 0, 2, |_| ([300, 300, 300, 0], 0));
        assert_eq!(d.tracked.len(), 4, "two addresses, two services");
        feed(&mut d, 2, 4, |_| ([300, 300, 300, 900], 0));
        assert!(d.evicted >= 1);
        assert!(d.tracked.contains_key(&DropKey::Address(addr(4))));
    }
}
