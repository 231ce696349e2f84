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
use serde::Serialize;
use tapwatch_classifier::TenantMap;

use super::handshake::HandshakeConfig;
use super::WindowDetector;
use crate::finding::{endpoint, Evidence, Finding, FindingKind, Severity};
use crate::window::{Rollup, WindowStats};

/// p50 / p99 / max and sample count of a latency histogram, µs (0 when empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyQuantiles {
    /// Largest.
    pub max: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Samples.
    pub samples: u64,
}

/// The numbers behind a firing SYN burst (fields in the order they serialise: by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SynBurstEvidence {
    /// The ratio a burst needs.
    pub min_ratio: f64,
    /// Retransmissions over all SYNs.
    pub retransmit_ratio: f64,
    /// SYNs sent again.
    pub retransmitted_syns: u64,
    /// RSTs to or from the server.
    pub rsts: u64,
    /// The server's SYN → SYN-ACK latency.
    pub syn_to_syn_ack_us: LatencyQuantiles,
    /// First SYNs.
    pub syns: u64,
    /// Burst window width, seconds.
    pub window_s: f64,
}

/// The numbers behind a resolved SYN burst.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SynBurstResolvedEvidence {
    /// Burst window width, seconds.
    pub window_s: f64,
}

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
                    severity: if ratio >= 0.5 {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    started_ns: started,
                    detected_ns: b.end_ns,
                    value: s.retransmits as f64,
                    threshold: cfg.min_retransmits as f64,
                    evidence: Evidence::SynBurst(SynBurstEvidence {
                        min_ratio: cfg.min_retransmit_ratio,
                        retransmit_ratio: ratio,
                        retransmitted_syns: s.retransmits,
                        rsts: s.rsts,
                        syn_to_syn_ack_us: LatencyQuantiles {
                            max: h.map(|h| h.max()).unwrap_or(0),
                            p50: pct(0.5),
                            p99: pct(0.99),
                            samples: h.map(|h| h.len()).unwrap_or(0),
                        },
                        syns: s.syns,
                        window_s: b.width_s(),
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
                evidence: Evidence::SynBurstResolved(SynBurstResolvedEvidence {
                    window_s: b.width_s(),
                }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{addr, SEC};

    fn server() -> (IpAddr, u16) {
        (addr(2), 443)
    }

    /// Base window `i` (1 s) with `syns` first SYNs and `retransmits` retransmissions.
    fn base(i: u64, syns: u64, retransmits: u64) -> WindowStats {
        let mut w = WindowStats::new(i * SEC, (i + 1) * SEC, 16, 16, 16, 32);
        let s = w.server(server()).expect("room");
        s.syns = syns;
        s.retransmits = retransmits;
        w
    }

    /// Feeds base windows `from..to`; returns the findings.
    fn feed(
        d: &mut SynBurst,
        from: u64,
        to: u64,
        syns: u64,
        re: impl Fn(u64) -> u64,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        for i in from..to {
            d.window(&base(i, syns, re(i)), &TenantMap::default(), &mut out);
        }
        out
    }

    #[test]
    fn a_burst_fires_holds_down_to_the_clear_level_then_resolves() {
        let mut d = SynBurst::new(HandshakeConfig::default());
        assert!(
            feed(&mut d, 0, 10, 2, |_| 1).is_empty(),
            "judged when the 10 s window ends"
        );
        let fired = feed(&mut d, 10, 11, 2, |_| 0);
        assert_eq!(fired.len(), 1);
        let f = &fired[0];
        assert!(f.active && f.kind == FindingKind::SynRetransmits);
        assert_eq!((f.started_ns, f.detected_ns, f.value), (0, 10 * SEC, 10.0));
        assert_eq!(
            (f.subject.as_str(), f.severity),
            ("10.0.0.2:443/tcp", Severity::Warning)
        );
        // 3 retransmissions in the next 10 s: below the raise level, above the clear level.
        let held = feed(&mut d, 11, 21, 2, |i| u64::from(i < 13));
        assert_eq!(held.len(), 1);
        assert!(held[0].active && held[0].started_ns == 0);
        let resolved = feed(&mut d, 21, 31, 2, |_| 0);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].active);
        assert_eq!(
            (resolved[0].started_ns, resolved[0].detected_ns),
            (0, 30 * SEC)
        );
    }

    #[test]
    fn few_or_diluted_retransmissions_do_not_fire() {
        let mut diluted = SynBurst::new(HandshakeConfig::default());
        assert!(
            feed(&mut diluted, 0, 31, 100, |_| 1).is_empty(),
            "10 of 1010 SYNs"
        );
        let mut few = SynBurst::new(HandshakeConfig::default());
        assert!(
            feed(&mut few, 0, 31, 0, |i| u64::from(i % 10 < 4)).is_empty(),
            "4 per window"
        );
    }

    #[test]
    fn the_end_of_input_judges_the_partial_window() {
        let mut d = SynBurst::new(HandshakeConfig::default());
        assert!(feed(&mut d, 0, 5, 1, |_| 3).is_empty());
        let mut out = Vec::new();
        d.finish(&TenantMap::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].detected_ns, out[0].severity),
            (10 * SEC, Severity::Critical)
        );
    }
}
