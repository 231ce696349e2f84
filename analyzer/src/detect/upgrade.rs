//! Failed HTTP upgrades: plain-HTTP requests carrying `Upgrade:` (websocket, h2c) that are
//! not answered `101 Switching Protocols`.
//!
//! Per packet, on the shard: an upgrade request opens a pending entry for its connection;
//! the server's next status line decides it (`101`: switched; any other final status:
//! refused; `1xx` informational lines are skipped); a FIN or RST on the connection, or the
//! client sending the request again `timeout_s` or more after the first copy, decides it as
//! unanswered. An entry nothing decided is forgotten after `forget_s` without counting
//! (the mirror may have missed the answer). Outcomes are counted per server into the window
//! of the packet that decided them. Only the request line, the `Upgrade` header's name and
//! the status line are read (by the classifier); no other payload byte.
//!
//! On the merger, base windows are rolled up to `window_s`; a server with at least
//! `min_attempts` decided upgrades of which at least `min_failure_share` failed fires
//! (`critical` from `critical_share`), holds while at least half that share fails, and
//! resolves otherwise.
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tapwatch_classifier::{Detail, HttpLine, PacketMeta, TenantMap};

use super::{PacketDetector, PacketHashes, WindowDetector};
use crate::finding::{endpoint, Evidence, Finding, FindingKind, Severity};
use crate::health::{HealthRollup, HealthWindow};
use crate::labels::Labels;
use crate::window::WindowStats;

/// Failed HTTP upgrades: the `[analyzer.upgrade_failure]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// Upgrade requests awaiting an answer, at most per worker.
    pub max_pending: usize,
    /// A request sent again this many seconds after the first copy, still unanswered, failed.
    pub timeout_s: f64,
    /// An undecided request is forgotten after this many seconds, not counted.
    pub forget_s: f64,
    /// Width of the judged windows, seconds (a rollup of the base windows).
    pub window_s: f64,
    /// Decided upgrade attempts a server needs in a window.
    pub min_attempts: u64,
    /// Share of them that must have failed.
    pub min_failure_share: f64,
    /// Share that makes it `critical`.
    pub critical_share: f64,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            max_pending: 1 << 16,
            timeout_s: 5.0,
            forget_s: 120.0,
            window_s: 30.0,
            min_attempts: 5,
            min_failure_share: 0.2,
            critical_share: 0.5,
        }
    }
}

/// The numbers behind failing upgrades (fields in the order they serialise: by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpgradeFailureEvidence {
    /// Decided upgrade attempts.
    pub attempts: u64,
    /// Failed over attempts.
    pub failure_share: f64,
    /// The latest status other than 101 (0: none).
    pub last_refusal_status: u16,
    /// Answered `101 Switching Protocols`.
    pub ok: u64,
    /// Answered with another status.
    pub refused: u64,
    /// Not answered before the connection closed or the client sent the request again.
    pub unanswered: u64,
    /// Judged window width, seconds.
    pub window_s: f64,
}

/// The numbers behind resolved upgrade failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UpgradeFailureResolvedEvidence {
    /// Decided upgrade attempts in the window that resolved it.
    pub attempts: u64,
    /// Failed over attempts (0 without attempts).
    pub failure_share: f64,
    /// Judged window width, seconds.
    pub window_s: f64,
}

/// A connection, client first.
type Conn = (IpAddr, u16, IpAddr, u16);

/// How an upgrade ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `101`.
    Switched,
    /// Another final status.
    Refused(u16),
    /// No answer.
    Unanswered,
}

/// The per-packet half, on each shard.
pub(crate) struct UpgradeTracker {
    cfg: UpgradeConfig,
    /// Pending upgrade requests: when first sent.
    pending: FxHashMap<Conn, u64>,
    /// Upgrade requests not tracked because the table was full.
    pub untracked: u64,
}

impl UpgradeTracker {
    /// A tracker with these settings.
    pub fn new(cfg: UpgradeConfig) -> UpgradeTracker {
        UpgradeTracker {
            cfg,
            pending: FxHashMap::default(),
            untracked: 0,
        }
    }

    /// Feeds one TCP packet; returns the server and the outcome it decided, if any.
    #[inline]
    pub fn observe(&mut self, m: &PacketMeta) -> Option<((IpAddr, u16), Outcome)> {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return None;
        };
        match m.detail {
            Detail::Http(HttpLine::Request { upgrade: true }) => {
                let conn = (src, m.src_port, dst, m.dst_port);
                let server = (dst, m.dst_port);
                if let Some(first) = self.pending.get(&conn) {
                    if m.ts_ns.saturating_sub(*first) as f64 >= self.cfg.timeout_s * 1e9 {
                        self.pending.remove(&conn);
                        return Some((server, Outcome::Unanswered));
                    }
                    return None; // sent again before the timeout
                }
                if self.pending.len() >= self.cfg.max_pending {
                    self.untracked += 1;
                    return None;
                }
                self.pending.insert(conn, m.ts_ns);
                None
            }
            _ if self.pending.is_empty() => None,
            Detail::Http(HttpLine::Response { status }) => {
                if (100..200).contains(&status) && status != 101 {
                    return None; // informational: the final answer follows
                }
                let conn = (dst, m.dst_port, src, m.src_port);
                self.pending.remove(&conn)?;
                let outcome = if status == 101 {
                    Outcome::Switched
                } else {
                    Outcome::Refused(status)
                };
                Some(((src, m.src_port), outcome))
            }
            _ if m.ip_proto == 6 && m.tcp_flags & 0x05 != 0 => {
                // FIN or RST, from either side.
                let from_client = (src, m.src_port, dst, m.dst_port);
                if self.pending.remove(&from_client).is_some() {
                    return Some(((dst, m.dst_port), Outcome::Unanswered));
                }
                let from_server = (dst, m.dst_port, src, m.src_port);
                self.pending.remove(&from_server)?;
                Some(((src, m.src_port), Outcome::Unanswered))
            }
            _ => None,
        }
    }
}

impl PacketDetector for UpgradeTracker {
    #[inline]
    fn packet(
        &mut self,
        m: &PacketMeta,
        _h: &PacketHashes,
        window: Option<&mut WindowStats>,
        _labels: &Labels,
        _out: &mut Vec<Finding>,
    ) {
        if m.ip_proto != 6 {
            return;
        }
        let Some((server, outcome)) = self.observe(m) else {
            return;
        };
        let Some(h) = window.and_then(|w| w.health_of(server)) else {
            return;
        };
        match outcome {
            Outcome::Switched => h.upgrades_ok += 1,
            Outcome::Refused(status) => {
                h.upgrades_refused += 1;
                h.last_refusal_status = status;
            }
            Outcome::Unanswered => h.upgrades_unanswered += 1,
        }
    }

    fn sweep(&mut self, now: u64) {
        let forget = (self.cfg.forget_s * 1e9) as u64;
        self.pending
            .retain(|_, first| now.saturating_sub(*first) < forget);
    }
}

/// The window half, on the merger.
pub(crate) struct UpgradeFailures {
    cfg: UpgradeConfig,
    window: HealthRollup,
    /// Firing servers and when they started.
    firing: FxHashMap<(IpAddr, u16), u64>,
}

impl UpgradeFailures {
    /// A detector with these settings.
    pub fn new(cfg: UpgradeConfig) -> UpgradeFailures {
        UpgradeFailures {
            window: HealthRollup::new(cfg.window_s),
            firing: FxHashMap::default(),
            cfg,
        }
    }

    fn judge(&mut self, b: &HealthWindow, tenants: &TenantMap, out: &mut Vec<Finding>) {
        let cfg = &self.cfg;
        let width = b.width_s();
        let mut servers: Vec<_> = b
            .servers
            .iter()
            .filter(|(_, h)| h.upgrade_attempts() > 0)
            .collect();
        servers.sort_unstable_by_key(|(k, _)| **k);
        let mut hot = Vec::new();
        for (server, h) in servers {
            let attempts = h.upgrade_attempts();
            let failed = h.upgrades_refused + h.upgrades_unanswered;
            let share = failed as f64 / attempts as f64;
            let raise = attempts >= cfg.min_attempts && share >= cfg.min_failure_share;
            let holds = self.firing.contains_key(server)
                && failed > 0
                && share >= cfg.min_failure_share / 2.0;
            if !(raise || holds) {
                continue;
            }
            hot.push(*server);
            let since = *self.firing.entry(*server).or_insert(b.start_ns);
            out.push(Finding {
                kind: FindingKind::UpgradeFailure,
                active: true,
                tenant: Some(tenants.name(tenants.lookup(server.0)).to_string()),
                subject: format!("{}/tcp", endpoint(server.0, server.1)),
                severity: if share >= cfg.critical_share {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                started_ns: since,
                detected_ns: b.end_ns,
                value: share,
                threshold: cfg.min_failure_share,
                evidence: Evidence::UpgradeFailure(UpgradeFailureEvidence {
                    attempts,
                    failure_share: share,
                    last_refusal_status: h.last_refusal_status,
                    ok: h.upgrades_ok,
                    refused: h.upgrades_refused,
                    unanswered: h.upgrades_unanswered,
                    window_s: width,
                }),
            });
        }
        let mut cleared: Vec<_> = self
            .firing
            .iter()
            .filter(|(k, _)| !hot.contains(k))
            .map(|(k, since)| (*k, *since))
            .collect();
        cleared.sort_unstable();
        for (server, since) in cleared {
            self.firing.remove(&server);
            let (attempts, share) = b.servers.get(&server).map_or((0, 0.0), |h| {
                let a = h.upgrade_attempts();
                let f = h.upgrades_refused + h.upgrades_unanswered;
                (a, if a > 0 { f as f64 / a as f64 } else { 0.0 })
            });
            out.push(Finding {
                kind: FindingKind::UpgradeFailure,
                active: false,
                tenant: Some(tenants.name(tenants.lookup(server.0)).to_string()),
                subject: format!("{}/tcp", endpoint(server.0, server.1)),
                severity: Severity::Warning,
                started_ns: since,
                detected_ns: b.end_ns,
                value: share,
                threshold: cfg.min_failure_share,
                evidence: Evidence::UpgradeFailureResolved(UpgradeFailureResolvedEvidence {
                    attempts,
                    failure_share: share,
                    window_s: width,
                }),
            });
        }
    }
}

impl WindowDetector for UpgradeFailures {
    fn window(&mut self, w: &WindowStats, tenants: &TenantMap, out: &mut Vec<Finding>) {
        if let Some(b) = self.window.push(w) {
            self.judge(&b, tenants, out);
        }
    }

    fn finish(&mut self, tenants: &TenantMap, out: &mut Vec<Finding>) {
        // Outcomes are events, not rates: a partial window's count is as good as a full one's.
        if let Some(b) = self.window.finish() {
            self.judge(&b, tenants, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use tapwatch_classifier::ProtocolType;

    use super::*;
    use crate::testkit::{addr, tcp, SEC};

    const T: u64 = 1_000 * SEC;

    fn client(n: u16) -> (IpAddr, u16) {
        (addr(1), 40000 + n)
    }

    fn server() -> (IpAddr, u16) {
        (addr(2), 80)
    }

    fn request(t: u64, n: u16) -> PacketMeta {
        let mut m = tcp(T + t, client(n), server(), ProtocolType::HttpRequest, 1, 1);
        m.detail = Detail::Http(HttpLine::Request { upgrade: true });
        m
    }

    fn response(t: u64, n: u16, status: u16) -> PacketMeta {
        let mut m = tcp(T + t, server(), client(n), ProtocolType::HttpResponse, 1, 1);
        m.detail = Detail::Http(HttpLine::Response { status });
        m
    }

    #[test]
    fn responses_closes_and_late_resends_decide_an_upgrade() {
        let mut u = UpgradeTracker::new(UpgradeConfig::default());
        assert_eq!(u.observe(&request(0, 1)), None);
        assert_eq!(u.observe(&response(1, 1, 100)), None, "informational");
        assert_eq!(
            u.observe(&response(2, 1, 101)),
            Some((server(), Outcome::Switched))
        );
        u.observe(&request(0, 2));
        assert_eq!(
            u.observe(&response(1, 2, 403)),
            Some((server(), Outcome::Refused(403)))
        );
        u.observe(&request(0, 3));
        assert_eq!(
            u.observe(&request(SEC, 3)),
            None,
            "resent before the timeout"
        );
        assert_eq!(
            u.observe(&request(6 * SEC, 3)),
            Some((server(), Outcome::Unanswered))
        );
        u.observe(&request(0, 4));
        let rst = tcp(T + SEC, server(), client(4), ProtocolType::TcpRst, 1, 1);
        assert_eq!(u.observe(&rst), Some((server(), Outcome::Unanswered)));
        u.observe(&request(0, 5));
        u.sweep(T + 120 * SEC);
        assert!(u.pending.is_empty(), "forgotten, not counted");
        let plain = response(0, 6, 200);
        assert_eq!(u.observe(&plain), None, "not an upgrade");
    }

    #[test]
    fn a_full_table_counts_what_it_turns_away() {
        let mut u = UpgradeTracker::new(UpgradeConfig {
            max_pending: 1,
            ..UpgradeConfig::default()
        });
        u.observe(&request(0, 1));
        u.observe(&request(0, 2));
        assert_eq!(u.untracked, 1);
    }

    /// Base window `i` (30 s) with these outcomes at the server.
    fn base(i: u64, ok: u64, refused: u64, unanswered: u64) -> WindowStats {
        let mut w = WindowStats::new(i * 30 * SEC, (i + 1) * 30 * SEC, 16, 16, 16, 32);
        let h = w.health_of(server()).expect("room");
        h.upgrades_ok = ok;
        h.upgrades_refused = refused;
        h.upgrades_unanswered = unanswered;
        h.last_refusal_status = if refused > 0 { 502 } else { 0 };
        w
    }

    fn feed(d: &mut UpgradeFailures, windows: &[(u64, u64, u64)]) -> Vec<Finding> {
        let mut out = Vec::new();
        for (i, (o, r, n)) in windows.iter().enumerate() {
            d.window(&base(i as u64, *o, *r, *n), &TenantMap::default(), &mut out);
        }
        d.finish(&TenantMap::default(), &mut out);
        out
    }

    #[test]
    fn failing_upgrades_fire_and_resolve_successes_and_few_attempts_do_not() {
        let mut d = UpgradeFailures::new(UpgradeConfig::default());
        let out = feed(&mut d, &[(10, 0, 0), (6, 2, 2), (10, 0, 0)]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].active && !out[1].active);
        assert_eq!(
            (out[0].subject.as_str(), out[0].severity),
            ("10.0.0.2:80/tcp", Severity::Warning)
        );
        let Evidence::UpgradeFailure(e) = &out[0].evidence else {
            panic!()
        };
        assert_eq!(
            (e.attempts, e.refused, e.unanswered, e.last_refusal_status),
            (10, 2, 2, 502)
        );
        let mut quiet = UpgradeFailures::new(UpgradeConfig::default());
        assert!(feed(&mut quiet, &[(50, 0, 0), (2, 1, 1), (50, 5, 0)]).is_empty());
    }
}
