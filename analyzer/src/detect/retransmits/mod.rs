//! Retransmitted TCP data: a server whose segments are sent again far more than usual.
//!
//! Per packet, on the shard, the [flow table](flows) tells a retransmitted data segment from
//! new data, keep-alives and zero-window probes, and counts segments, retransmissions (by
//! direction), zero-window advertisements and duplicate ACKs per server into the open window.
//! On the merger, base windows are rolled up to `window_s` and each server is judged
//! against its own baseline share (the ratio of EWMAs of its retransmissions and segments
//! over earlier windows): at least `min_retransmits` retransmissions that are at least
//! `min_share` of its segments and at least `baseline_factor` × its baseline share fire;
//! `critical` from `critical_share`. A firing server holds down to half of `min_share` and
//! resolves below it. A server is judged once it has `min_baseline_windows` windows of
//! baseline; its baseline learns only from windows where it does not fire.
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tapwatch_classifier::{PacketMeta, TenantMap};

use super::{PacketDetector, PacketHashes, WindowDetector};
use crate::finding::{endpoint, Evidence, Finding, FindingKind, Severity};
use crate::health::{HealthRollup, HealthWindow};
use crate::labels::Labels;
use crate::window::WindowStats;

pub mod flows;

/// Retransmitted TCP data: the `[analyzer.retransmits]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetransmitConfig {
    /// TCP flows tracked at most per worker (a full bucket replaces its older flow).
    pub max_flows: usize,
    /// A flow silent this long may be replaced without counting an eviction, seconds.
    pub idle_s: f64,
    /// A segment sent again within this many ms of the one that advanced its direction was
    /// reordered, not retransmitted (when the handshake's round trip is unknown).
    pub reorder_ms: f64,
    /// Width of the judged windows, seconds (a rollup of the base windows).
    pub window_s: f64,
    /// Retransmitted segments a server needs in a window.
    pub min_retransmits: u64,
    /// Share of its data segments that must be retransmissions.
    pub min_share: f64,
    /// …and this many times its baseline share.
    pub baseline_factor: f64,
    /// EWMA weight of each window in the baseline.
    pub ewma_alpha: f64,
    /// Windows of baseline before a server is judged.
    pub min_baseline_windows: u32,
    /// Share that makes a firing server `critical`.
    pub critical_share: f64,
    /// Servers with a baseline kept at most on the merger (the least busy is forgotten).
    pub max_servers: usize,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        RetransmitConfig {
            max_flows: 1 << 16,
            idle_s: 120.0,
            reorder_ms: 3.0,
            window_s: 10.0,
            min_retransmits: 5,
            min_share: 0.02,
            baseline_factor: 3.0,
            ewma_alpha: 0.1,
            min_baseline_windows: 3,
            critical_share: 0.1,
            max_servers: 4096,
        }
    }
}

/// A flow with its retransmissions in the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetransmittingFlow {
    /// `client:port->server:port/tcp`.
    pub flow: String,
    /// Retransmitted segments.
    pub retransmits: u64,
}

/// The numbers behind firing retransmissions (fields in the order they serialise: by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetransmitEvidence {
    /// The server's baseline share (before this window).
    pub baseline_share: f64,
    /// Duplicate ACKs, both directions.
    pub dup_acks: u64,
    /// Data segments sent again by the server.
    pub retransmits_from_server: u64,
    /// Data segments sent again by its clients.
    pub retransmits_to_server: u64,
    /// Data segments, both directions.
    pub segments: u64,
    /// Retransmissions over segments.
    pub share: f64,
    /// Judged window width, seconds.
    pub window_s: f64,
    /// The flows with the most retransmissions.
    pub worst_flows: Vec<RetransmittingFlow>,
    /// Zero-window advertisements, both directions.
    pub zero_windows: u64,
}

/// The numbers behind resolved retransmissions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RetransmitResolvedEvidence {
    /// Retransmissions over segments in the window that resolved it.
    pub share: f64,
    /// Judged window width, seconds.
    pub window_s: f64,
}

/// The per-packet half, on each shard.
pub(crate) struct RetransmitTracker {
    /// The flow table.
    pub flows: flows::FlowTable,
}

impl RetransmitTracker {
    /// A tracker with these settings.
    pub fn new(cfg: &RetransmitConfig) -> RetransmitTracker {
        RetransmitTracker {
            flows: flows::FlowTable::new(cfg),
        }
    }
}

impl PacketDetector for RetransmitTracker {
    #[inline]
    fn prefetch(&self, m: &PacketMeta, h: &PacketHashes) {
        if m.ip_proto == 6 && m.src.is_some() {
            self.flows.prefetch(h.flow);
        }
    }

    #[inline]
    fn packet(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        window: Option<&mut WindowStats>,
        _labels: &Labels,
        _out: &mut Vec<Finding>,
    ) {
        if m.ip_proto != 6 {
            return;
        }
        let start = window.as_ref().map_or(0, |w| w.start_ns);
        if let Some((server, by_server, what, n)) = self.flows.observe(m, h.flow, start) {
            if let Some(w) = window {
                flows::record(w, m, server, by_server, what, n);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    segments: f64,
    retransmits: f64,
    windows: u32,
    firing_since: Option<u64>,
}

impl Baseline {
    fn share(&self) -> f64 {
        if self.segments > 0.0 {
            self.retransmits / self.segments
        } else {
            0.0
        }
    }
}

/// The window half, on the merger.
pub(crate) struct Retransmits {
    cfg: RetransmitConfig,
    window: HealthRollup,
    servers: FxHashMap<(IpAddr, u16), Baseline>,
}

impl Retransmits {
    /// A detector with these settings.
    pub fn new(cfg: RetransmitConfig) -> Retransmits {
        Retransmits {
            window: HealthRollup::new(cfg.window_s),
            servers: FxHashMap::default(),
            cfg,
        }
    }

    fn judge(&mut self, b: &HealthWindow, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let cfg = &self.cfg;
        let width = b.width_s();
        let mut servers: Vec<_> = b.servers.iter().filter(|(_, h)| h.segments > 0).collect();
        servers.sort_unstable_by_key(|(k, _)| **k);
        for (server, h) in servers {
            let re = h.retransmits();
            let share = re as f64 / h.segments as f64;
            if !self.servers.contains_key(server) && self.servers.len() >= cfg.max_servers {
                // Forget the least busy server that is not firing.
                let victim = self
                    .servers
                    .iter()
                    .filter(|(_, s)| s.firing_since.is_none())
                    .min_by(|a, b| a.1.segments.total_cmp(&b.1.segments).then(a.0.cmp(b.0)))
                    .map(|(k, _)| *k);
                match victim {
                    Some(v) => {
                        self.servers.remove(&v);
                    }
                    None => continue,
                }
            }
            let s = self.servers.entry(*server).or_default();
            let base = s.share();
            let judged = s.windows >= cfg.min_baseline_windows;
            let raise = judged
                && re >= cfg.min_retransmits
                && share >= cfg.min_share
                && share >= cfg.baseline_factor * base;
            let holds = s.firing_since.is_some() && re >= 2 && share >= cfg.min_share / 2.0;
            let subject = format!("{}/tcp", endpoint(server.0, server.1));
            let tenant = Some(tenants.name(tenants.lookup(server.0)).to_string());
            if raise || holds {
                let since = *s.firing_since.get_or_insert(b.start_ns);
                out.push(Finding {
                    kind: FindingKind::Retransmits,
                    active: true,
                    tenant,
                    subject,
                    severity: if share >= cfg.critical_share {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    started_ns: since,
                    detected_ns: b.end_ns,
                    value: share,
                    threshold: cfg.min_share.max(cfg.baseline_factor * base),
                    evidence: Evidence::Retransmits(RetransmitEvidence {
                        baseline_share: base,
                        dup_acks: h.dup_acks,
                        retransmits_from_server: h.retransmits_from_server,
                        retransmits_to_server: h.retransmits_to_server,
                        segments: h.segments,
                        share,
                        window_s: width,
                        worst_flows: h
                            .worst
                            .iter()
                            .flatten()
                            .map(|(f, n)| RetransmittingFlow {
                                flow: format!("{}->{}/tcp", endpoint(f.0, f.1), endpoint(f.2, f.3)),
                                retransmits: *n,
                            })
                            .collect(),
                        zero_windows: h.zero_windows,
                    }),
                });
                continue;
            }
            if let Some(since) = s.firing_since.take() {
                out.push(Finding {
                    kind: FindingKind::Retransmits,
                    active: false,
                    tenant,
                    subject,
                    severity: Severity::Warning,
                    started_ns: since,
                    detected_ns: b.end_ns,
                    value: share,
                    threshold: cfg.min_share.max(cfg.baseline_factor * base),
                    evidence: Evidence::RetransmitsResolved(RetransmitResolvedEvidence {
                        share,
                        window_s: width,
                    }),
                });
            }
            let a = if s.windows == 0 { 1.0 } else { cfg.ewma_alpha };
            s.segments += a * (h.segments as f64 - s.segments);
            s.retransmits += a * (re as f64 - s.retransmits);
            s.windows = s.windows.saturating_add(1);
        }
        // A firing server with no segments at all in the window resolves too.
        let mut gone: Vec<_> = self
            .servers
            .iter()
            .filter(|(k, s)| {
                s.firing_since.is_some() && b.servers.get(k).is_none_or(|h| h.segments == 0)
            })
            .map(|(k, _)| *k)
            .collect();
        gone.sort_unstable();
        for server in gone {
            let s = self.servers.get_mut(&server).expect("listed");
            let since = s.firing_since.take().expect("firing");
            out.push(Finding {
                kind: FindingKind::Retransmits,
                active: false,
                tenant: Some(tenants.name(tenants.lookup(server.0)).to_string()),
                subject: format!("{}/tcp", endpoint(server.0, server.1)),
                severity: Severity::Warning,
                started_ns: since,
                detected_ns: b.end_ns,
                value: 0.0,
                threshold: cfg.min_share,
                evidence: Evidence::RetransmitsResolved(RetransmitResolvedEvidence {
                    share: 0.0,
                    window_s: width,
                }),
            });
        }
    }
}

impl WindowDetector for Retransmits {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(b) = self.window.push(w) {
            self.judge(&b, tenants, out);
        }
    }

    fn finish(&mut self, _tenants: &TenantMap, _out: &mut Vec<Finding>) {
        // The window in progress is partial: too few segments to judge a share fairly.
        let _ = self.window.finish();
    }
}

#[cfg(test)]
mod tests;
