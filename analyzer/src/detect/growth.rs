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

use serde::{Deserialize, Serialize};
use tapwatch_classifier::{TenantId, TenantMap};

use super::WindowDetector;
use crate::finding::{Evidence, Finding, FindingKind, Severity};
use crate::window::{Rollup, WindowStats};

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
    slopes.sort_by(f64::total_cmp);
    let m = slopes.len();
    let slope = median_sorted(&slopes);
    let mut intercepts: Vec<f64> = points.iter().map(|(x, y)| y - slope * x).collect();
    intercepts.sort_by(f64::total_cmp);
    let intercept = median_sorted(&intercepts);
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
        slope_low: slopes[lo],
        slope_high: slopes[hi],
        r2,
        n,
    })
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One rollup point of one tenant.
#[derive(Clone, Copy, Debug)]
pub struct GrowthPoint<'a> {
    /// Tenant index.
    pub index: usize,
    /// Tenant name.
    pub tenant: &'a str,
    /// Point start (event time, ns).
    pub start_ns: u64,
    /// Point end.
    pub end_ns: u64,
    /// Distinct sources of the tenant in the point.
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

/// One tenant's history and alert state.
#[derive(Clone, Debug, Default)]
struct TenantHistory {
    points: VecDeque<(u64, f64, f64)>,
    firing_since: Option<u64>,
}

/// The per-tenant growth detector, run by the merger on each rollup point.
pub struct GrowthDetector {
    cfg: SetupGrowthConfig,
    tenants: Vec<TenantHistory>,
    /// Last fit per tenant, for reports.
    pub last_fit: Vec<Option<(Fit, f64, f64)>>,
}

impl GrowthDetector {
    /// A detector with these settings.
    pub fn new(cfg: SetupGrowthConfig) -> GrowthDetector {
        GrowthDetector {
            cfg,
            tenants: Vec::new(),
            last_fit: Vec::new(),
        }
    }

    /// The (nodes, setups) points a tenant's fit uses now.
    pub fn history(&self, t: usize) -> Vec<(f64, f64)> {
        self.tenants
            .get(t)
            .map(|h| h.points.iter().map(|p| (p.1, p.2)).collect())
            .unwrap_or_default()
    }

    /// Adds one point for a tenant; reports changes of state.
    pub fn observe(&mut self, p: &GrowthPoint<'_>, out: &mut Vec<Finding>) {
        let GrowthPoint {
            index: t,
            tenant,
            start_ns,
            end_ns,
            nodes,
            setups,
            width_s,
            setup_share,
            packet_share,
        } = *p;
        if self.tenants.len() <= t {
            self.tenants.resize_with(t + 1, TenantHistory::default);
            self.last_fit.resize(t + 1, None);
        }
        let h = &mut self.tenants[t];
        if nodes < 2 || setups < 1 {
            return;
        }
        h.points.push_back((start_ns, nodes as f64, setups as f64));
        while h.points.len() > self.cfg.history {
            h.points.pop_front();
        }
        if h.points.len() < self.cfg.min_points {
            return;
        }
        let logs: Vec<(f64, f64)> = h.points.iter().map(|(_, n, s)| (n.ln(), s.ln())).collect();
        let Some(fit) = theil_sen(&logs) else { return };
        let (min_n, max_n) = h
            .points
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
        let range = max_n / min_n.max(1.0);
        self.last_fit[t] = Some((fit, range, setups as f64 / width_s.max(1e-9)));
        let raise = fit.slope >= self.cfg.min_exponent
            && range >= self.cfg.min_node_range
            && fit.r2 >= self.cfg.min_r2;
        // Hysteresis: once flagged, the tenant clears only below `clear_exponent`.
        let hot = raise || (h.firing_since.is_some() && fit.slope >= self.cfg.clear_exponent);
        let rate_now = setups as f64 / width_s.max(1e-9);
        let projected = rate_now * 2f64.powf(fit.slope);
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
            projected_setup_rate_at_2x_nodes: projected,
            r2: fit.r2,
            setup_rate_per_s: rate_now,
            setup_share,
            setups_now: setups,
        });
        let since = h.firing_since;
        if hot {
            let started = *h
                .firing_since
                .get_or_insert(h.points.front().map(|p| p.0).unwrap_or(start_ns));
            out.push(Finding {
                kind: FindingKind::QuadraticSetupGrowth,
                active: true,
                tenant: Some(tenant.to_string()),
                subject: tenant.to_string(),
                severity: if fit.slope >= 1.9 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                started_ns: started,
                detected_ns: end_ns,
                value: fit.slope,
                threshold: self.cfg.min_exponent,
                evidence,
            });
        } else if let Some(started) = since {
            h.firing_since = None;
            out.push(Finding {
                kind: FindingKind::QuadraticSetupGrowth,
                active: false,
                tenant: Some(tenant.to_string()),
                subject: tenant.to_string(),
                severity: Severity::Warning,
                started_ns: started,
                detected_ns: end_ns,
                value: fit.slope,
                threshold: self.cfg.min_exponent,
                evidence,
            });
        }
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

/// The setup-growth detector as the merger runs it: base windows rolled up into points of
/// `point_s`, one point per tenant fed to the [`GrowthDetector`].
pub struct SetupGrowth {
    detector: GrowthDetector,
    points: Rollup,
    /// Keep every point as a [`GrowthSample`] for storage.
    pub(crate) keep: bool,
    pub(crate) samples: Vec<GrowthSample>,
}

impl SetupGrowth {
    /// A detector with these settings.
    pub fn new(cfg: SetupGrowthConfig) -> SetupGrowth {
        SetupGrowth {
            points: Rollup::new(cfg.point_s),
            detector: GrowthDetector::new(cfg),
            keep: false,
            samples: Vec::new(),
        }
    }

    /// The detector behind it (fits and histories).
    pub fn detector(&self) -> &GrowthDetector {
        &self.detector
    }

    fn point(&mut self, p: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let total_setups: u64 = p.tenants.iter().map(|t| t.setups).sum();
        let share = |x: u64, total: u64| {
            if total > 0 {
                x as f64 / total as f64
            } else {
                0.0
            }
        };
        for (i, t) in p.tenants.iter().enumerate() {
            if i == TenantId::UNASSIGNED.0 as usize {
                continue; // "unassigned" is not one tenant: its nodes are unrelated
            }
            let name = tenants.name(TenantId(i as u16)).to_string();
            let point = GrowthPoint {
                index: i,
                tenant: &name,
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                nodes: t.nodes.count().0,
                setups: t.setups,
                width_s: p.width_s(),
                setup_share: share(t.setups, total_setups),
                packet_share: share(t.packets, p.packets),
            };
            self.detector.observe(&point, out);
            if self.keep && point.nodes >= 2 && point.setups >= 1 {
                self.samples.push(GrowthSample {
                    tenant: name.clone(),
                    start_ns: p.start_ns,
                    width_s: p.width_s(),
                    nodes: point.nodes,
                    setups: point.setups,
                    fit: self
                        .detector
                        .last_fit
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|f| f.0),
                });
            }
        }
    }
}

impl WindowDetector for SetupGrowth {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(p) = self.points.push(w) {
            self.point(&p, tenants, out);
        }
    }

    fn finish(&mut self, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(p) = self.points.finish() {
            self.point(&p, tenants, out);
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
    fn flags_quadratic_not_linear() {
        let cfg = SetupGrowthConfig::default();
        let mut d = GrowthDetector::new(cfg);
        let mut out = Vec::new();
        for i in 0..20u64 {
            let n = 20 + 10 * i;
            d.observe(
                &GrowthPoint {
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
}
