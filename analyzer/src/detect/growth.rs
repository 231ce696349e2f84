//! Quadratic growth of connection setups with a tenant's node count.
//!
//! Each point is one rollup window: the tenant's distinct sources (nodes) and its
//! connection setups. Over a sliding history the detector fits `log(setups) = a + b·log(nodes)`
//! with the Theil–Sen estimator (the median of pairwise slopes: robust to a few outlying
//! windows), with Sen's distribution-free confidence interval for `b`. A tenant whose
//! exponent `b` is at least the threshold, whose node counts span enough range, and whose
//! points fit well (R² on the log scale) is flagged: at `b = 2`, doubling its nodes
//! quadruples its setups.
use std::collections::VecDeque;
use std::net::IpAddr;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};
use tapwatch_classifier::{TenantId, TenantMap};

use super::WindowDetector;
use crate::finding::{Evidence, Finding, FindingKind, Severity};
use crate::labels::Labels;
use crate::sampling::SampledEstimate;
use crate::sketch::DistinctCounter;
use crate::thresholds::TenantThresholds;
use crate::window::WindowStats;

/// Quadratic growth of connection setups with a tenant's node count.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SetupGrowthConfig {
    /// Width of the points the fit uses, seconds (a rollup of the base windows).
    pub point_s: f64,
    /// Points kept per tenant (the sliding history).
    pub history: usize,
    /// Points needed before fitting.
    pub min_points: usize,
    /// Exponent at or above which growth is flagged.
    pub min_exponent: f64,
    /// Hysteresis: a flagged tenant clears when its exponent falls below this.
    pub clear_exponent: f64,
    /// Ratio of largest to smallest node count the history must span.
    pub min_node_range: f64,
    /// Coefficient of determination the fit must reach (log-log).
    pub min_r2: f64,
    /// Extra protocol types (by name) that count as connection setups besides the default
    /// ones (TCP SYN, QUIC Initial, WireGuard initiation, IKE_SA_INIT, DTLS ClientHello,
    /// OpenVPN hard reset).
    pub setup_types: Vec<String>,
    /// Distinct sources per tenant counted exactly up to this many, then estimated.
    pub exact_nodes: usize,
    /// Widths of the coarser levels of points, seconds, each a multiple of the one before
    /// (the first of `point_s`): growth too slow to span `min_node_range` within the finer
    /// histories is judged here.
    pub coarse_levels_s: Vec<f64>,
    /// Points kept per tenant at each coarser level.
    pub coarse_history: usize,
    /// At the coarser levels, how steadily the node count must have grown (Kendall's tau of
    /// nodes over time, 0 to 1) for growth to be flagged: a tenant whose nodes swing with
    /// the time of day is not rolling out.
    pub min_node_trend: f64,
    /// A node counts as active in a point when it was seen within this many seconds before
    /// the point's end (or within the point, for points at least this wide): a node that
    /// opens one connection a minute is one node, not a sixth of one.
    pub node_horizon_s: f64,
}

impl Default for SetupGrowthConfig {
    fn default() -> Self {
        SetupGrowthConfig {
            point_s: 10.0,
            history: 30,
            min_points: 6,
            min_exponent: 1.6,
            clear_exponent: 1.4,
            min_node_range: 2.0,
            min_r2: 0.8,
            setup_types: Vec::new(),
            exact_nodes: 4096,
            coarse_levels_s: vec![60.0, 600.0, 3600.0],
            coarse_history: 200,
            min_node_trend: 0.5,
            node_horizon_s: 300.0,
        }
    }
}

/// The numbers behind a growth finding, firing or resolved (fields in the order they
/// serialise: by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GrowthEvidence {
    /// Fitted exponent of setups against nodes.
    pub exponent: f64,
    /// Its 95 % confidence interval.
    pub exponent_ci95: [f64; 2],
    /// The points fitted: `[start_ns, nodes, setups]`.
    pub history: Vec<(u64, f64, f64)>,
    /// Largest over smallest node count in the history.
    pub node_range: f64,
    /// Largest node count in the history.
    pub nodes_max: f64,
    /// Smallest node count in the history.
    pub nodes_min: f64,
    /// Nodes in the latest point.
    pub nodes_now: u64,
    /// The tenant's share of all packets in the latest point.
    pub packet_share: f64,
    /// Point width, seconds.
    pub point_s: f64,
    /// Points fitted.
    pub points: usize,
    /// The setup rate expected at twice the nodes: rate × 2^exponent.
    pub projected_setup_rate_at_2x_nodes: f64,
    /// Coefficient of determination of the fit (log-log).
    pub r2: f64,
    /// Sampled input only: the records behind `setups_now` and its 95 % interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<SampledEstimate>,
    /// Setups per second in the latest point.
    pub setup_rate_per_s: f64,
    /// The tenant's share of all setups in the latest point.
    pub setup_share: f64,
    /// Setups in the latest point.
    pub setups_now: u64,
}

/// A Theil–Sen fit of `y = a + b·x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Slope (the growth exponent on log-log axes).
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// 95 % confidence interval of the slope (Sen 1968).
    pub slope_low: f64,
    /// Upper end of the interval.
    pub slope_high: f64,
    /// Coefficient of determination of the fitted line.
    pub r2: f64,
    /// Points used.
    pub n: usize,
}

/// Theil–Sen regression over points with distinct `x`; `None` with fewer than 3 usable points.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len();
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let dx = points[j].0 - points[i].0;
            if dx.abs() > 1e-9 {
                slopes.push((points[j].1 - points[i].1) / dx);
            }
        }
    }
    if n < 3 || slopes.len() < 3 {
        return None;
    }
    // Order statistics by selection, not a full sort: O(m) each, and the coarse levels fit
    // up to 200 points (about 20 000 slopes).
    let m = slopes.len();
    let slope = median(&mut slopes);
    let mut intercepts: Vec<f64> = points.iter().map(|(x, y)| y - slope * x).collect();
    let intercept = median(&mut intercepts);
    // Sen's interval: ranks (m ∓ C)/2 with C = z·sqrt(n(n−1)(2n+5)/18), z = 1.96.
    let nf = n as f64;
    let c = 1.96 * (nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0).sqrt();
    let lo = (((m as f64 - c) / 2.0).floor().max(0.0) as usize).min(m - 1);
    let hi = (((m as f64 + c) / 2.0).ceil() as usize).min(m - 1);
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    let ss_res: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        0.0
    };
    Some(Fit {
        slope,
        intercept,
        slope_low: nth(&mut slopes, lo),
        slope_high: nth(&mut slopes, hi),
        r2,
        n,
    })
}

/// Kendall's tau of a series against its order: +1 when it only rises, −1 when it only
/// falls, about 0 when it has no trend (ties count as neither).
fn kendall_tau(series: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = series.collect();
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let mut score = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            score += match v[j].partial_cmp(&v[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    score as f64 / (n * (n - 1) / 2) as f64
}

/// The `k`-th smallest value (reorders `v`).
fn nth(v: &mut [f64], k: usize) -> f64 {
    *v.select_nth_unstable_by(k, f64::total_cmp).1
}

/// The median (reorders `v`; `v` not empty).
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let upper = nth(v, n / 2);
    if n % 2 == 1 {
        upper
    } else {
        // The lower middle is the largest of the half below the upper middle.
        let lower = v[..n / 2].iter().copied().fold(f64::MIN, f64::max);
        (lower + upper) / 2.0
    }
}

/// One point of one tenant at one level.
#[derive(Clone, Copy, Debug)]
pub struct GrowthPoint<'a> {
    /// Level (0: `point_s`, then the coarser levels in order).
    pub level: usize,
    /// Tenant index.
    pub index: usize,
    /// Tenant name.
    pub tenant: &'a str,
    /// Point start (event time, ns).
    pub start_ns: u64,
    /// Point end.
    pub end_ns: u64,
    /// Active nodes of the tenant at the point (distinct sources within the node horizon).
    pub nodes: u64,
    /// Connection setups from the tenant in the point.
    pub setups: u64,
    /// Width of the point, seconds.
    pub width_s: f64,
    /// The tenant's share of all setups in the point.
    pub setup_share: f64,
    /// The tenant's share of all packets in the point.
    pub packet_share: f64,
}

/// One tenant's history at one level, with its latest fit.
#[derive(Clone, Debug, Default)]
struct LevelHistory {
    points: VecDeque<(u64, f64, f64)>,
    /// Fit over `points`: the fit, node range, smallest and largest node counts, and the
    /// node trend (Kendall's tau of node counts over time: 1 steadily up, 0 no trend).
    fit: Option<(Fit, f64, f64, f64, f64)>,
    /// The latest point: nodes, setups, width (s), setup share, packet share, and the
    /// packets and records of its windows (sampled input).
    last: (u64, u64, f64, f64, f64, (u64, u64)),
}

/// One tenant's alert state over all levels.
#[derive(Clone, Debug, Default)]
struct TenantState {
    levels: Vec<LevelHistory>,
    firing_since: Option<u64>,
}

/// The per-tenant growth detector over every level of points, run by the merger.
///
/// Each level keeps its own history and fit. The level that judges a tenant is the finest
/// whose history holds enough points and spans `min_node_range`: growth fast enough to
/// show within minutes is judged on 10 s points, growth that takes hours or days on the
/// coarser ones, and a finer level that sees the range is never overruled by a coarser one.
pub struct GrowthDetector {
    cfg: SetupGrowthConfig,
    tenants: Vec<TenantState>,
    /// Last fit per tenant of the level judging it (or the finest fitted): fit, node range,
    /// setups per second in that level's latest point; for reports.
    pub last_fit: Vec<Option<(Fit, f64, f64)>>,
    /// Per-tenant exponents (`[[analyzer.override]]`); `cfg`'s for every tenant if unset.
    thresholds: Option<TenantThresholds>,
    /// Packets and packet records of the windows behind the points being observed (equal
    /// unless sampled; (0, 0) when unknown, as for restored points).
    pub(crate) sampling: (u64, u64),
}

impl GrowthDetector {
    /// A detector with these settings.
    pub fn new(cfg: SetupGrowthConfig) -> GrowthDetector {
        GrowthDetector {
            cfg,
            tenants: Vec::new(),
            last_fit: Vec::new(),
            thresholds: None,
            sampling: (0, 0),
        }
    }

    /// Judges each tenant by its own exponents from now on.
    pub fn set_thresholds(&mut self, thresholds: TenantThresholds) {
        self.thresholds = Some(thresholds);
    }

    /// The (flag, clear) exponents of a tenant index.
    fn exponents(&self, t: usize) -> (f64, f64) {
        match (&self.thresholds, u16::try_from(t)) {
            (Some(th), Ok(i)) => {
                let th = th.get(TenantId(i));
                (th.growth_min_exponent, th.growth_clear_exponent)
            }
            _ => (self.cfg.min_exponent, self.cfg.clear_exponent),
        }
    }

    fn capacity(&self, level: usize) -> usize {
        if level == 0 {
            self.cfg.history
        } else {
            self.cfg.coarse_history
        }
    }

    /// The (nodes, setups) points of a tenant's finest level.
    pub fn history(&self, t: usize) -> Vec<(f64, f64)> {
        self.tenants
            .get(t)
            .and_then(|s| s.levels.first())
            .map(|h| h.points.iter().map(|p| (p.1, p.2)).collect())
            .unwrap_or_default()
    }

    /// Adds one point of one level for a tenant; reports changes of state.
    pub fn observe(&mut self, p: &GrowthPoint<'_>, out: &mut Vec<Finding>) {
        let t = p.index;
        if self.tenants.len() <= t {
            self.tenants.resize_with(t + 1, TenantState::default);
            self.last_fit.resize(t + 1, None);
        }
        if p.nodes < 2 || p.setups < 1 {
            return;
        }
        let capacity = self.capacity(p.level);
        let state = &mut self.tenants[t];
        if state.levels.len() <= p.level {
            state.levels.resize_with(p.level + 1, LevelHistory::default);
        }
        let h = &mut state.levels[p.level];
        h.points
            .push_back((p.start_ns, p.nodes as f64, p.setups as f64));
        while h.points.len() > capacity {
            h.points.pop_front();
        }
        h.last = (
            p.nodes,
            p.setups,
            p.width_s,
            p.setup_share,
            p.packet_share,
            self.sampling,
        );
        if h.points.len() < self.cfg.min_points {
            return;
        }
        let logs: Vec<(f64, f64)> = h.points.iter().map(|(_, n, s)| (n.ln(), s.ln())).collect();
        let Some(fit) = theil_sen(&logs) else { return };
        let (min_n, max_n) = h
            .points
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let trend = kendall_tau(h.points.iter().map(|q| q.1));
        h.fit = Some((fit, max_n / min_n.max(1.0), min_n, max_n, trend));
        self.judge(p, out);
    }

    /// Decides a tenant's state from its levels after a point of `p.level`.
    fn judge(&mut self, p: &GrowthPoint<'_>, out: &mut Vec<Finding>) {
        let (min_exponent, clear_exponent) = self.exponents(p.index);
        let cfg = &self.cfg;
        let state = &mut self.tenants[p.index];
        let firing = state.firing_since.is_some();
        let judge_level = state.levels.iter().position(|l| {
            l.fit
                .is_some_and(|(_, range, _, _, _)| range >= cfg.min_node_range)
        });
        let Some(level) = judge_level.or_else(|| state.levels.iter().position(|l| l.fit.is_some()))
        else {
            return;
        };
        let h = &state.levels[level];
        let Some((fit, range, min_n, max_n, trend)) = h.fit else {
            return;
        };
        // Coarse points span days: a node count that swings with the time of day (and a
        // per-node rate that swings with it) is not a rollout. Beyond the finest level the
        // nodes must also have grown steadily.
        let steady = level == 0 || trend >= cfg.min_node_trend;
        let (nodes, setups, width_s, setup_share, packet_share, (packets, records)) = h.last;
        let rate_now = setups as f64 / width_s.max(1e-9);
        self.last_fit[p.index] = Some((fit, range, rate_now));
        let hot = match judge_level {
            // Hysteresis: once flagged, the tenant clears only below `clear_exponent`.
            Some(_) => {
                (fit.slope >= min_exponent && fit.r2 >= cfg.min_r2 && steady)
                    || (firing && fit.slope >= clear_exponent)
            }
            None => firing && fit.slope >= clear_exponent,
        };
        let evidence = Evidence::Growth(GrowthEvidence {
            exponent: fit.slope,
            exponent_ci95: [fit.slope_low, fit.slope_high],
            history: h.points.iter().copied().collect(),
            node_range: range,
            nodes_max: max_n,
            nodes_min: min_n,
            nodes_now: nodes,
            packet_share,
            point_s: width_s,
            points: fit.n,
            projected_setup_rate_at_2x_nodes: rate_now * 2f64.powf(fit.slope),
            r2: fit.r2,
            sampled: SampledEstimate::from_totals(setups, packets, packets, records),
            setup_rate_per_s: rate_now,
            setup_share,
            setups_now: setups,
        });
        let first_point = h.points.front().map_or(p.start_ns, |q| q.0);
        let tenant = p.tenant.to_string();
        if hot {
            let started = *state.firing_since.get_or_insert(first_point);
            out.push(Finding {
                kind: FindingKind::QuadraticSetupGrowth,
                active: true,
                tenant: Some(tenant.clone()),
                subject: tenant,
                severity: if fit.slope >= 1.9 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                started_ns: started,
                detected_ns: p.end_ns,
                value: fit.slope,
                threshold: min_exponent,
                evidence,
            });
        } else if let Some(started) = state.firing_since.take() {
            out.push(Finding {
                kind: FindingKind::QuadraticSetupGrowth,
                active: false,
                tenant: Some(tenant.clone()),
                subject: tenant,
                severity: Severity::Warning,
                started_ns: started,
                detected_ns: p.end_ns,
                value: fit.slope,
                threshold: min_exponent,
                evidence,
            });
        }
    }

    /// Puts a stored point back into a tenant's history at one level (a restart): no
    /// judgement now; the next point of that level is judged with it.
    fn restore(&mut self, level: usize, t: usize, start_ns: u64, nodes: u64, setups: u64) {
        if nodes < 2 || setups < 1 {
            return;
        }
        if self.tenants.len() <= t {
            self.tenants.resize_with(t + 1, TenantState::default);
            self.last_fit.resize(t + 1, None);
        }
        let capacity = self.capacity(level);
        let state = &mut self.tenants[t];
        if state.levels.len() <= level {
            state.levels.resize_with(level + 1, LevelHistory::default);
        }
        let h = &mut state.levels[level];
        h.points.push_back((start_ns, nodes as f64, setups as f64));
        while h.points.len() > capacity {
            h.points.pop_front();
        }
    }

    /// The fit of one tenant at one level, if it has one.
    fn level_fit(&self, t: usize, level: usize) -> Option<Fit> {
        self.tenants.get(t)?.levels.get(level)?.fit.map(|f| f.0)
    }
}

/// One setup-growth point with the fit it produced, for storage.
#[derive(Clone, Debug)]
pub struct GrowthSample {
    /// Tenant name.
    pub tenant: String,
    /// Point start (event time, ns).
    pub start_ns: u64,
    /// Point width, seconds.
    pub width_s: f64,
    /// Distinct sources (nodes) in the point.
    pub nodes: u64,
    /// Connection setups in the point.
    pub setups: u64,
    /// The fit over the tenant's history after this point, if there were enough points.
    pub fit: Option<Fit>,
}

/// A point stored by an earlier run, to be put back into a tenant's history.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPoint {
    /// Tenant name.
    pub tenant: String,
    /// Point width, seconds.
    pub width_s: f64,
    /// Point start (event time, ns).
    pub start_ns: u64,
    /// Active nodes.
    pub nodes: u64,
    /// Connection setups.
    pub setups: u64,
}

/// One tenant's part of a point being accumulated.
#[derive(Clone, Debug)]
struct TenantAcc {
    setups: u64,
    packets: u64,
    nodes: DistinctCounter<IpAddr>,
}

/// A finished point: start, end (ns), its tenants, and the packets and packet records of
/// its windows.
type DonePoint = (u64, u64, Vec<TenantAcc>, (u64, u64));

/// A level of points being accumulated from base windows: per tenant setups, packets and
/// distinct sources (only what the growth fit needs, not whole windows).
struct LevelAcc {
    width_ns: u64,
    start_ns: Option<u64>,
    tenants: Vec<TenantAcc>,
    packets: u64,
    /// Packet records behind `packets`.
    samples: u64,
}

impl LevelAcc {
    fn new(width_s: f64) -> LevelAcc {
        LevelAcc {
            width_ns: ((width_s * 1e9) as u64).max(1),
            start_ns: None,
            tenants: Vec::new(),
            packets: 0,
            samples: 0,
        }
    }

    /// Whether `w` starts a new point (the current one is then complete).
    fn starts_new(&self, w: &WindowStats) -> bool {
        self.start_ns
            .is_some_and(|s| s != w.start_ns / self.width_ns * self.width_ns)
    }

    fn add(&mut self, w: &WindowStats, exact_nodes: usize) {
        self.start_ns
            .get_or_insert(w.start_ns / self.width_ns * self.width_ns);
        self.packets += w.packets;
        self.samples += w.samples;
        if self.tenants.len() < w.tenants.len() {
            self.tenants.resize_with(w.tenants.len(), || TenantAcc {
                setups: 0,
                packets: 0,
                nodes: DistinctCounter::new(exact_nodes),
            });
        }
        for (acc, t) in self.tenants.iter_mut().zip(&w.tenants) {
            acc.setups += t.setups;
            acc.packets += t.packets;
            acc.nodes.merge(&t.nodes);
        }
    }

    fn take(&mut self) -> Option<DonePoint> {
        let start = self.start_ns.take()?;
        let packets = std::mem::take(&mut self.packets);
        let samples = std::mem::take(&mut self.samples);
        Some((
            start,
            start + self.width_ns,
            std::mem::take(&mut self.tenants),
            (packets, samples),
        ))
    }
}

/// The setup-growth detector as the merger runs it: base windows accumulated into points
/// at every level (`point_s`, then `coarse_levels_s`), each tenant's active nodes counted
/// over the node horizon, every point fed to the [`GrowthDetector`].
pub struct SetupGrowth {
    detector: GrowthDetector,
    levels: Vec<LevelAcc>,
    /// Per tenant: when each source was last seen (event time, ns), for the node horizon.
    last_seen: Vec<FxHashMap<IpAddr, u64>>,
    horizon_ns: u64,
    exact_nodes: usize,
    /// Keep every point as a [`GrowthSample`] for storage.
    pub(crate) keep: bool,
    pub(crate) samples: Vec<GrowthSample>,
}

impl SetupGrowth {
    /// Judges each tenant by the exponents `labels` resolved for it.
    pub fn relabel(&mut self, labels: &Labels) {
        self.detector
            .set_thresholds(labels.tenant_thresholds().clone());
    }

    /// A detector with these settings.
    pub fn new(cfg: SetupGrowthConfig) -> SetupGrowth {
        let levels = std::iter::once(cfg.point_s)
            .chain(cfg.coarse_levels_s.iter().copied())
            .map(LevelAcc::new)
            .collect();
        SetupGrowth {
            levels,
            last_seen: Vec::new(),
            horizon_ns: (cfg.node_horizon_s.max(0.0) * 1e9) as u64,
            exact_nodes: cfg.exact_nodes,
            detector: GrowthDetector::new(cfg),
            keep: false,
            samples: Vec::new(),
        }
    }

    /// The detector behind it (fits and histories).
    pub fn detector(&self) -> &GrowthDetector {
        &self.detector
    }

    /// Puts stored points back (a restart), each at the level of its width; points of
    /// widths no level has, and of tenants the map no longer has, are left out. Returns
    /// how many were restored.
    pub fn restore(&mut self, points: &[StoredPoint], tenants: &TenantMap) -> usize {
        let mut restored = 0;
        for p in points {
            let level = self
                .levels
                .iter()
                .position(|l| l.width_ns == (p.width_s * 1e9) as u64);
            let tenant = tenants.names().iter().position(|n| *n == p.tenant);
            if let (Some(level), Some(t)) = (level, tenant) {
                if t != TenantId::UNASSIGNED.0 as usize {
                    self.detector
                        .restore(level, t, p.start_ns, p.nodes, p.setups);
                    restored += 1;
                }
            }
        }
        restored
    }

    /// Remembers when each source of each tenant was last seen (exact counters only).
    fn note_sources(&mut self, w: &WindowStats) {
        if self.horizon_ns == 0 {
            return;
        }
        if self.last_seen.len() < w.tenants.len() {
            self.last_seen
                .resize_with(w.tenants.len(), FxHashMap::default);
        }
        // "unassigned" is never judged: its sources (a spoofed flood's among them) are not
        // remembered.
        let judged = self.last_seen.iter_mut().zip(&w.tenants).enumerate();
        for (_, (seen, t)) in judged.filter(|(i, _)| *i != TenantId::UNASSIGNED.0 as usize) {
            if let Some(keys) = t.nodes.exact_keys() {
                for k in keys {
                    seen.insert(*k, w.end_ns);
                }
            }
        }
    }

    /// Active nodes of tenant `i` at a point `[start, end)`: distinct sources in the point,
    /// or seen within the horizon before its end when the point is narrower than that.
    fn active_nodes(&self, i: usize, start: u64, end: u64, in_point: u64) -> u64 {
        if end - start >= self.horizon_ns {
            return in_point;
        }
        let since = end.saturating_sub(self.horizon_ns);
        let recent = self.last_seen.get(i).map_or(0, |seen| {
            seen.values().filter(|t| **t > since).count() as u64
        });
        recent.max(in_point)
    }

    fn point(
        &mut self,
        level: usize,
        (start, end, tenants_acc, (packets, samples)): DonePoint,
        tenants: &TenantMap,
        out: &mut Vec<Finding>,
    ) {
        let total_setups: u64 = tenants_acc.iter().map(|t| t.setups).sum();
        let share = |x: u64, total: u64| {
            if total > 0 {
                x as f64 / total as f64
            } else {
                0.0
            }
        };
        let width_s = (end - start) as f64 / 1e9;
        self.detector.sampling = (packets, samples);
        for (i, t) in tenants_acc.iter().enumerate() {
            if i == TenantId::UNASSIGNED.0 as usize {
                continue; // "unassigned" is not one tenant: its nodes are unrelated
            }
            let name = tenants.name(TenantId(i as u16)).to_string();
            let point = GrowthPoint {
                level,
                index: i,
                tenant: &name,
                start_ns: start,
                end_ns: end,
                nodes: self.active_nodes(i, start, end, t.nodes.count().0),
                setups: t.setups,
                width_s,
                setup_share: share(t.setups, total_setups),
                packet_share: share(t.packets, packets),
            };
            self.detector.observe(&point, out);
            if self.keep && point.nodes >= 2 && point.setups >= 1 {
                self.samples.push(GrowthSample {
                    tenant: name.clone(),
                    start_ns: start,
                    width_s,
                    nodes: point.nodes,
                    setups: point.setups,
                    fit: self.detector.level_fit(i, level),
                });
            }
        }
    }

    /// Forgets sources not seen within the horizon.
    fn prune(&mut self, now: u64) {
        let since = now.saturating_sub(self.horizon_ns);
        for seen in &mut self.last_seen {
            seen.retain(|_, t| *t > since);
        }
    }
}

impl WindowDetector for SetupGrowth {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        // A point is complete when a window of the next one arrives: judge it with the
        // sources seen up to its end, then count this window.
        for level in 0..self.levels.len() {
            if self.levels[level].starts_new(w) {
                if let Some(done) = self.levels[level].take() {
                    if level == 0 {
                        self.prune(done.1);
                    }
                    self.point(level, done, tenants, out);
                }
            }
        }
        self.note_sources(w);
        for acc in &mut self.levels {
            acc.add(w, self.exact_nodes);
        }
    }

    fn finish(&mut self, tenants: &TenantMap, out: &mut Vec<Finding>) {
        for level in 0..self.levels.len() {
            if let Some(done) = self.levels[level].take() {
                self.point(level, done, tenants, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapwatch_synth::Rng;

    #[test]
    fn recovers_exponents_with_noise_and_outliers() {
        let mut rng = Rng::new(5);
        for exponent in [1.0, 1.5, 2.0] {
            let mut pts: Vec<(f64, f64)> = (0..30)
                .map(|i| {
                    let n = 20.0 + 10.0 * i as f64;
                    let noise = 1.0 + 0.2 * (rng.unit() - 0.5);
                    (n.ln(), (0.1 * n.powf(exponent) * noise).ln())
                })
                .collect();
            pts[7].1 += 3.0; // one wild window
            let fit = theil_sen(&pts).unwrap();
            assert!(
                (fit.slope - exponent).abs() < 0.1,
                "exponent {exponent}: fitted {fit:?}"
            );
            assert!(fit.slope_low <= fit.slope && fit.slope <= fit.slope_high);
            assert!(fit.slope_high - fit.slope_low < 0.3, "{fit:?}");
        }
    }

    #[test]
    fn a_tenant_override_sets_that_tenants_exponent() {
        // Setups ~ nodes^1.4 for tenants 1 ("strict") and 2 ("edge"): below the default
        // exponent, above edge's own.
        let cfg: crate::AnalyzerConfig =
            toml::from_str("[[override]]\ntenant = \"edge\"\ngrowth_min_exponent = 1.3\n").unwrap();
        let names = ["unassigned", "strict", "edge"].map(String::from);
        let mut d = GrowthDetector::new(cfg.setup_growth.clone());
        d.set_thresholds(TenantThresholds::new(&cfg, &names));
        let mut out = Vec::new();
        for i in 0..20u64 {
            let n = 20 + 10 * i;
            for (index, tenant) in [(1, "strict"), (2, "edge")] {
                d.observe(
                    &GrowthPoint {
                        level: 0,
                        index,
                        tenant,
                        start_ns: i * 10,
                        end_ns: (i + 1) * 10,
                        nodes: n,
                        setups: (n as f64).powf(1.4) as u64,
                        width_s: 10.0,
                        setup_share: 0.5,
                        packet_share: 0.5,
                    },
                    &mut out,
                );
            }
        }
        assert!(!out.is_empty());
        assert!(
            out.iter()
                .all(|f| f.subject == "edge" && f.active && f.threshold == 1.3),
            "{out:#?}"
        );
    }

    #[test]
    fn flags_quadratic_not_linear() {
        let cfg = SetupGrowthConfig::default();
        let mut d = GrowthDetector::new(cfg);
        let mut out = Vec::new();
        for i in 0..20u64 {
            let n = 20 + 10 * i;
            d.observe(
                &GrowthPoint {
                    level: 0,
                    index: 1,
                    tenant: "quad",
                    start_ns: i * 10,
                    end_ns: (i + 1) * 10,
                    nodes: n,
                    setups: n * n / 10,
                    width_s: 10.0,
                    setup_share: 0.5,
                    packet_share: 0.5,
                },
                &mut out,
            );
            d.observe(
                &GrowthPoint {
                    level: 0,
                    index: 2,
                    tenant: "linear",
                    start_ns: i * 10,
                    end_ns: (i + 1) * 10,
                    nodes: n,
                    setups: 3 * n,
                    width_s: 10.0,
                    setup_share: 0.5,
                    packet_share: 0.5,
                },
                &mut out,
            );
        }
        assert!(out.iter().all(|f| f.subject == "quad"), "{out:?}");
        let last = out.last().unwrap();
        assert!(last.active && (last.value - 2.0).abs() < 0.05);
        let Evidence::Growth(e) = &last.evidence else {
            panic!("growth evidence: {last:?}")
        };
        let projected = e.projected_setup_rate_at_2x_nodes;
        let now = e.setup_rate_per_s;
        assert!((projected / now - 4.0).abs() < 0.3, "{projected} vs {now}");
    }

    #[test]
    fn a_flagged_tenant_resolves_once_its_growth_turns_linear() {
        let mut d = GrowthDetector::new(SetupGrowthConfig::default());
        let mut out = Vec::new();
        for i in 0..60u64 {
            let n = 20 + 10 * (i % 30);
            let setups = if i < 30 { n * n / 10 } else { 90 * n };
            d.observe(
                &GrowthPoint {
                    level: 0,
                    index: 1,
                    tenant: "swarm",
                    start_ns: i * 10,
                    end_ns: (i + 1) * 10,
                    nodes: n,
                    setups,
                    width_s: 10.0,
                    setup_share: 0.5,
                    packet_share: 0.5,
                },
                &mut out,
            );
        }
        let first = out.iter().position(|f| f.active).expect("fires");
        let resolved: Vec<_> = out.iter().filter(|f| !f.active).collect();
        assert_eq!(resolved.len(), 1, "{out:?}");
        let r = resolved[0];
        assert!(
            r.value < 1.4,
            "clears below the clear exponent: {}",
            r.value
        );
        assert_eq!(r.started_ns, out[first].started_ns);
        assert!(!out.last().unwrap().active, "stays resolved");
    }

    #[test]
    fn no_flag_without_node_range() {
        let mut d = GrowthDetector::new(SetupGrowthConfig::default());
        let mut out = Vec::new();
        for i in 0..20u64 {
            let n = 100 + i % 3; // steady node count, noisy setups
            d.observe(
                &GrowthPoint {
                    level: 0,
                    index: 0,
                    tenant: "steady",
                    start_ns: i,
                    end_ns: i + 1,
                    nodes: n,
                    setups: 1000 + (i * 37 % 200),
                    width_s: 10.0,
                    setup_share: 0.5,
                    packet_share: 0.5,
                },
                &mut out,
            );
        }
        assert!(out.is_empty(), "{out:?}");
    }

    /// Feeds one tenant's points at the levels in `levels` (indices into the default widths
    /// 10 s, 60 s, 600 s, 3600 s) for `duration_s`: `nodes(t)` active nodes and
    /// `rate(t, nodes)` setups per second (±10 % noise) at the end `t` (s) of each point;
    /// returns the event time (s) of the first firing, if any.
    fn feed(
        nodes: impl Fn(f64) -> f64,
        rate: impl Fn(f64, f64) -> f64,
        duration_s: u64,
        levels: &[usize],
        seed: u64,
    ) -> Option<f64> {
        let cfg = SetupGrowthConfig::default();
        let widths: Vec<u64> = std::iter::once(cfg.point_s)
            .chain(cfg.coarse_levels_s.iter().copied())
            .map(|w| w as u64)
            .collect();
        let mut d = GrowthDetector::new(cfg);
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        let step = widths[levels[0]];
        let mut t = 0;
        while t < duration_s {
            t += step;
            for &level in levels {
                let w = widths[level];
                if t % w != 0 {
                    continue;
                }
                let n = nodes(t as f64);
                let r = rate(t as f64, n) * (0.9 + 0.2 * rng.unit());
                d.observe(
                    &GrowthPoint {
                        level,
                        index: 1,
                        tenant: "t",
                        start_ns: (t - w) * 1_000_000_000,
                        end_ns: t * 1_000_000_000,
                        nodes: n as u64,
                        setups: (r * w as f64).max(1.0) as u64,
                        width_s: w as f64,
                        setup_share: 0.5,
                        packet_share: 0.5,
                    },
                    &mut out,
                );
                if let Some(f) = out.iter().find(|f| f.active) {
                    return Some(f.detected_ns as f64 / 1e9);
                }
            }
        }
        None
    }

    /// A tenant growing from 40 nodes, doubling every `doubling_s`, with setups
    /// ~ nodes^`exponent`.
    fn grow(doubling_s: f64, exponent: f64, duration_s: u64, levels: &[usize]) -> Option<f64> {
        feed(
            |t| 40.0 * 2f64.powf(t / doubling_s),
            |_, n| 0.01 * n.powf(exponent),
            duration_s,
            levels,
            doubling_s as u64 ^ (exponent * 10.0) as u64,
        )
    }

    #[test]
    fn a_daily_swing_of_nodes_and_their_activity_is_not_growth() {
        let day = 86_400.0;
        let swing = |t: f64| 200.0 * (1.0 + 0.5 * (std::f64::consts::TAU * t / day).sin());
        // Busy hours bring more nodes and more setups per node: setups ~ nodes^1.65 over
        // the day, a 3x node range, and a near-perfect fit, yet no rollout.
        let at = feed(
            swing,
            |_, n| 0.01 * n * (n / 200.0).powf(0.65),
            3 * 86_400,
            &[1, 2, 3],
            7,
        );
        assert_eq!(at, None);
        // A real rollout with the same daily swing on top is still flagged, a day or so
        // after its nodes doubled.
        let week = 7.0 * day;
        let at = feed(
            |t| 40.0 * 2f64.powf(t / week) * (1.0 + 0.3 * (std::f64::consts::TAU * t / day).sin()),
            |_, n| 0.01 * n * n,
            10 * 86_400,
            &[2, 3],
            8,
        )
        .expect("a rollout with a daily swing is flagged");
        assert!((week..=week + 2.0 * day).contains(&at), "flagged at {at} s");
    }

    #[test]
    fn growth_is_flagged_once_nodes_double_whatever_its_speed() {
        let all = [0, 1, 2, 3];
        // Doubling in 10 minutes: the 10 s points span too little; the 1 min points judge.
        let at = grow(600.0, 2.0, 3600, &all).expect("10-minute doubling flagged");
        assert!((600.0..=900.0).contains(&at), "flagged at {at} s");
        // Doubling in 2 hours.
        let at = grow(7200.0, 2.0, 4 * 3600, &all).expect("2-hour doubling flagged");
        assert!((7200.0..=9000.0).contains(&at), "flagged at {at} s");
        // Doubling in a week, seen on 10 min and 1 h points.
        let week = 7.0 * 86_400.0;
        let at = grow(week, 2.0, 9 * 86_400, &[2, 3]).expect("1-week doubling flagged");
        assert!((week..=week + 86_400.0).contains(&at), "flagged at {at} s");
    }

    #[test]
    fn growth_on_sampled_setups_states_the_estimates_error() {
        for (sampling, sampled) in [((10_000, 1_000), true), ((10_000, 10_000), false)] {
            let mut d = GrowthDetector::new(SetupGrowthConfig::default());
            d.sampling = sampling;
            let mut out = Vec::new();
            // Quadratic growth from 40 nodes, doubling in 10 minutes, on 1 min points.
            let mut t = 0u64;
            while out.iter().all(|f: &Finding| !f.active) && t < 3600 {
                t += 60;
                let n = 40.0 * 2f64.powf(t as f64 / 600.0);
                d.observe(
                    &GrowthPoint {
                        level: 1,
                        index: 1,
                        tenant: "t",
                        start_ns: (t - 60) * 1_000_000_000,
                        end_ns: t * 1_000_000_000,
                        nodes: n as u64,
                        setups: (0.01 * n * n * 60.0) as u64 / 10 * 10,
                        width_s: 60.0,
                        setup_share: 0.5,
                        packet_share: 0.5,
                    },
                    &mut out,
                );
            }
            let Some(Evidence::Growth(e)) = out.iter().find(|f| f.active).map(|f| &f.evidence)
            else {
                panic!("quadratic growth fires: {out:?}");
            };
            assert_eq!(e.sampled.is_some(), sampled, "{e:?}");
            if let Some(s) = &e.sampled {
                assert_eq!((s.rate, s.samples), (10.0, e.setups_now / 10), "{s:?}");
                assert!(s.count_low < e.setups_now as f64 && (e.setups_now as f64) < s.count_high);
            }
        }
    }

    #[test]
    fn linear_growth_is_never_flagged_at_any_speed() {
        for (doubling, duration, levels) in [
            (600.0, 3600, &[0, 1, 2, 3][..]),
            (7200.0, 4 * 3600, &[0, 1, 2, 3][..]),
            (7.0 * 86_400.0, 9 * 86_400, &[2, 3][..]),
        ] {
            for exponent in [1.0, 1.2]
                .into_iter()
                .take(if levels.len() == 2 { 1 } else { 2 })
            {
                assert_eq!(
                    grow(doubling, exponent, duration, levels),
                    None,
                    "doubling in {doubling} s, exponent {exponent}"
                );
            }
        }
    }

    #[test]
    fn a_finer_level_that_sees_the_range_is_not_overruled_by_a_coarser_one() {
        let mut d = GrowthDetector::new(SetupGrowthConfig::default());
        let mut out = Vec::new();
        let point = |level: usize, i: u64, nodes: u64, setups: u64| GrowthPoint {
            level,
            index: 1,
            tenant: "t",
            start_ns: i,
            end_ns: i + 1,
            nodes,
            setups,
            width_s: 10.0,
            setup_share: 0.5,
            packet_share: 0.5,
        };
        // The coarse level saw quadratic growth long ago...
        for i in 0..10 {
            let n = 20 + 20 * i;
            d.observe(&point(1, i, n, n * n), &mut out);
        }
        let raised = out.iter().filter(|f| f.active).count();
        assert!(raised > 0);
        // ...the fine level now sees a 3x node range with setups linear in nodes: it judges.
        for i in 0..12 {
            let n = 100 + 20 * i;
            d.observe(&point(0, 100 + i, n, 10 * n), &mut out);
        }
        assert!(!out.last().unwrap().active, "{:?}", out.last());
    }

    #[test]
    fn a_node_seen_once_a_minute_counts_at_every_10_s_point() {
        let cfg = SetupGrowthConfig::default();
        let mut g = SetupGrowth::new(cfg.clone());
        let tenants = TenantMap::default();
        let mut out = Vec::new();
        // 60 nodes, each sending one setup a minute, spread evenly: 1 per second.
        for s in 0..600u64 {
            let mut w =
                WindowStats::new(s * 1_000_000_000, (s + 1) * 1_000_000_000, 64, 4096, 16, 32);
            let t = w.tenant(TenantId(1));
            t.setups += 1;
            t.packets += 1;
            t.nodes.add(IpAddr::from([10, 0, 0, (s % 60) as u8]));
            w.packets += 1;
            g.window(&w, &tenants, &mut out);
        }
        let h = g.detector().history(1);
        assert!(h.len() >= 30, "{h:?}");
        // Once a full horizon has passed, every point counts all 60 nodes, not 10.
        assert!(
            h[h.len() - 25..].iter().all(|(nodes, _)| *nodes == 60.0),
            "{h:?}"
        );
    }

    #[test]
    fn restored_coarse_points_let_slow_growth_be_flagged_right_after_a_restart() {
        let cfg = SetupGrowthConfig::default();
        let tenants = TenantMap::parse(
            std::path::Path::new("t.toml"),
            "[[tenant]]\nname = \"rollout\"\nprefixes = [\"10.9.0.0/16\"]\n",
        )
        .unwrap();
        // Six days of hourly points stored by the run before: nodes 40 -> 80, setups ~ n^2.
        let hour = 3_600_000_000_000u64;
        let stored: Vec<StoredPoint> = (0..150u64)
            .map(|i| {
                let n = (40.0 * 2f64.powf(i as f64 / 144.0)) as u64;
                StoredPoint {
                    tenant: "rollout".into(),
                    width_s: 3600.0,
                    start_ns: i * hour,
                    nodes: n,
                    setups: n * n,
                }
            })
            .collect();
        let mut g = SetupGrowth::new(cfg.clone());
        assert_eq!(g.restore(&stored, &tenants), 150);
        // The next hourly point (the daemon's first after the restart) is judged with them.
        let next = GrowthPoint {
            level: 3,
            index: 1,
            tenant: "rollout",
            start_ns: 150 * hour,
            end_ns: 151 * hour,
            nodes: 82,
            setups: 82 * 82,
            width_s: 3600.0,
            setup_share: 0.5,
            packet_share: 0.5,
        };
        let mut out = Vec::new();
        let mut d = g.detector;
        d.observe(&next, &mut out);
        assert!(out.iter().any(|f| f.active), "{out:?}");
        // Without the stored history the same point proves nothing.
        let mut none = Vec::new();
        GrowthDetector::new(cfg).observe(&next, &mut none);
        assert!(none.is_empty());
    }
}
