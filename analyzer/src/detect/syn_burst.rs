//! SYN-retransmission bursts: a server towards which clients send the same SYN again.
//!
//! The shard's [handshake tracker](super::handshake) counts first and retransmitted SYNs per
//! server in each base window; this detector rolls base windows up to
//! `handshake.burst_window_s` and judges each server there: at least `min_retransmits`
//! retransmissions that are at least `min_retransmit_ratio` of its SYNs. A firing server
//! keeps firing down to `clear_retransmits` per burst window (hysteresis). Its knobs live in
//! [`HandshakeConfig`] (the `[analyzer.handshake]` section).
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use tapwatch_classifier::TenantMap;

use super::handshake::HandshakeConfig;
use super::WindowDetector;
use crate::finding::{endpoint, Finding, FindingKind, Severity};
use crate::window::{Rollup, WindowStats};

/// The SYN-burst detector, run by the merger on each closed base window.
pub(crate) struct SynBurst {
    cfg: HandshakeConfig,
    window: Rollup,
    /// Firing servers and the burst window start they fired at.
    firing: FxHashMap<(IpAddr, u16), u64>,
}

impl SynBurst {
    /// A detector with these settings.
    pub fn new(cfg: HandshakeConfig) -> SynBurst {
        SynBurst {
            window: Rollup::new(cfg.burst_window_s),
            firing: FxHashMap::default(),
            cfg,
        }
    }

    /// Judges one finished burst window.
    fn judge(&mut self, b: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let cfg = &self.cfg;
        let mut hot = Vec::new();
        for (server, s) in &b.servers {
            let total = s.syns + s.retransmits;
            let ratio = if total > 0 {
                s.retransmits as f64 / total as f64
            } else {
                0.0
            };
            let raise = s.retransmits >= cfg.min_retransmits && ratio >= cfg.min_retransmit_ratio;
            // Hysteresis: a firing server stays firing down to `clear_retransmits`.
            let holds = self.firing.contains_key(server) && s.retransmits >= cfg.clear_retransmits;
            if raise || holds {
                hot.push(*server);
                let started = *self.firing.entry(*server).or_insert(b.start_ns);
                let h = s.syn_to_syn_ack.as_ref();
                let pct = |q: f64| h.map(|h| h.value_at_quantile(q)).unwrap_or(0);
                out.push(Finding {
                    kind: FindingKind::SynRetransmits,
                    active: true,
                    tenant: Some(tenants.name(tenants.lookup(server.0)).to_string()),
                    subject: format!("{}/tcp", endpoint(server.0, server.1)),
                    severity: if ratio >= 0.5 { Severity::Critical } else { Severity::Warning },
                    started_ns: started,
                    detected_ns: b.end_ns,
                    value: s.retransmits as f64,
                    threshold: cfg.min_retransmits as f64,
                    evidence: serde_json::json!({
                        "window_s": b.width_s(),
                        "syns": s.syns,
                        "retransmitted_syns": s.retransmits,
                        "retransmit_ratio": ratio,
                        "min_ratio": cfg.min_retransmit_ratio,
                        "rsts": s.rsts,
                        "syn_to_syn_ack_us": {"p50": pct(0.5), "p99": pct(0.99), "max": h.map(|h| h.max()).unwrap_or(0), "samples": h.map(|h| h.len()).unwrap_or(0)},
                    }),
                });
            }
        }
        self.firing.retain(|server, since| {
            if hot.contains(server) {
                return true;
            }
            out.push(Finding {
                kind: FindingKind::SynRetransmits,
                active: false,
                tenant: Some(tenants.name(tenants.lookup(server.0)).to_string()),
                subject: format!("{}/tcp", endpoint(server.0, server.1)),
                severity: Severity::Warning,
                started_ns: *since,
                detected_ns: b.end_ns,
                value: b.servers.get(server).map(|s| s.retransmits).unwrap_or(0) as f64,
                threshold: cfg.min_retransmits as f64,
                evidence: serde_json::json!({"window_s": b.width_s()}),
            });
            false
        });
    }
}

impl WindowDetector for SynBurst {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(b) = self.window.push(w) {
            self.judge(&b, tenants, out);
        }
    }

    fn finish(&mut self, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(b) = self.window.finish() {
            self.judge(&b, tenants, out);
        }
    }
}
