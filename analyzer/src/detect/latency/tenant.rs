//! Tenant-level latency shifts: in one judgement window, at least `tenant_share` of a
//! tenant's judged servers (at least `tenant_min_servers` of them) shift together — a
//! shared path or a shared dependency rather than one server. Servers of no tenant
//! (`unassigned`) are never judged together.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tapwatch_classifier::{TenantId, TenantMap};

use super::cells::LatencySubject;
use super::shift::subject_name;
use crate::finding::{Evidence, Finding, FindingKind, Severity};

/// Shifted servers named in the evidence at most.
const NAMED: usize = 10;

/// The numbers behind a tenant-level `latency_shift`, firing or resolved (fields serialise
/// in this order: by name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyTenantEvidence {
    /// Servers judged in the window (a baseline and enough samples).
    pub servers_judged: usize,
    /// Servers with a sustained shift.
    pub servers_shifted: usize,
    /// Share of the judged servers that shifted.
    pub share: f64,
    /// The shifted servers (at most 10).
    pub shifted: Vec<String>,
    /// Judgement window width, seconds.
    pub window_s: f64,
}

/// Tenants whose servers shift together.
pub(crate) struct TenantShift {
    min_servers: usize,
    share: f64,
    /// Firing tenants and since when.
    open: BTreeMap<String, u64>,
}

impl TenantShift {
    /// Off when `min_servers` is 0.
    pub fn new(min_servers: usize, share: f64) -> TenantShift {
        TenantShift {
            min_servers,
            share,
            open: BTreeMap::new(),
        }
    }

    /// Judges the window `[start, end)`: `judged` servers, of which `shifted` shifted.
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        &mut self,
        judged: &BTreeSet<LatencySubject>,
        shifted: &BTreeSet<LatencySubject>,
        tenants: &TenantMap,
        start: u64,
        end: u64,
        window_s: f64,
        out: &mut Vec<Finding>,
    ) {
        if self.min_servers == 0 {
            return;
        }
        let mut by: BTreeMap<&str, (usize, Vec<&LatencySubject>)> = BTreeMap::new();
        for s in judged {
            let t = tenants.lookup(s.0);
            if t == TenantId::UNASSIGNED {
                continue;
            }
            let e = by.entry(tenants.name(t)).or_default();
            e.0 += 1;
            if shifted.contains(s) {
                e.1.push(s);
            }
        }
        let evidence = |n: usize, hot: &[&LatencySubject]| LatencyTenantEvidence {
            share: if n > 0 {
                hot.len() as f64 / n as f64
            } else {
                0.0
            },
            servers_judged: n,
            servers_shifted: hot.len(),
            shifted: hot.iter().take(NAMED).map(|s| subject_name(s)).collect(),
            window_s,
        };
        let mut firing = BTreeSet::new();
        for (tenant, (n, hot)) in &by {
            if *n < self.min_servers
                || hot.is_empty()
                || (hot.len() as f64) < self.share * *n as f64
            {
                continue;
            }
            firing.insert(tenant.to_string());
            let since = *self.open.entry(tenant.to_string()).or_insert(start);
            let e = evidence(*n, hot);
            out.push(Finding {
                kind: FindingKind::LatencyShift,
                active: true,
                tenant: Some(tenant.to_string()),
                subject: tenant.to_string(),
                severity: Severity::Warning,
                started_ns: since,
                detected_ns: end,
                value: e.share,
                threshold: self.share,
                evidence: Evidence::LatencyTenant(e),
            });
        }
        let share = self.share;
        self.open.retain(|tenant, since| {
            if firing.contains(tenant) {
                return true;
            }
            let (n, hot) = by.get(tenant.as_str()).cloned().unwrap_or_default();
            let e = evidence(n, &hot);
            out.push(Finding {
                kind: FindingKind::LatencyShift,
                active: false,
                tenant: Some(tenant.clone()),
                subject: tenant.clone(),
                severity: Severity::Warning,
                started_ns: *since,
                detected_ns: end,
                value: e.share,
                threshold: share,
                evidence: Evidence::LatencyTenant(e),
            });
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn tenants() -> TenantMap {
        TenantMap::parse(
            std::path::Path::new("t"),
            "[[tenant]]\nname = \"web\"\nprefixes = [\"10.9.0.0/16\"]\n",
        )
        .unwrap()
    }

    fn server(n: u8) -> LatencySubject {
        (IpAddr::V4(Ipv4Addr::new(10, 9, 0, n)), 443, 6)
    }

    #[test]
    fn most_of_a_tenants_servers_shifting_together_fire_once_for_the_tenant() {
        let mut t = TenantShift::new(3, 0.5);
        let judged: BTreeSet<_> = (1..=4)
            .map(server)
            .chain([(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 80, 6)])
            .collect();
        let mut out = Vec::new();
        let one: BTreeSet<_> = [server(1)].into();
        t.judge(&judged, &one, &tenants(), 0, 10, 10.0, &mut out);
        assert!(out.is_empty(), "one of four");
        let two: BTreeSet<_> = [server(1), server(3)].into();
        t.judge(&judged, &two, &tenants(), 10, 20, 10.0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].subject.as_str(), out[0].active, out[0].value),
            ("web", true, 0.5)
        );
        let Evidence::LatencyTenant(e) = &out[0].evidence else {
            panic!()
        };
        assert_eq!(e.shifted, ["10.9.0.1:443/tcp", "10.9.0.3:443/tcp"]);
        assert_eq!((e.servers_judged, out[0].started_ns), (4, 10));
        out.clear();
        t.judge(&judged, &one, &tenants(), 20, 30, 10.0, &mut out);
        assert_eq!((out.len(), out[0].active), (1, false));
        // Two servers are too few to speak for a tenant.
        let mut out = Vec::new();
        let pair: BTreeSet<_> = [server(1), server(2)].into();
        t.judge(&pair, &pair, &tenants(), 30, 40, 10.0, &mut out);
        assert!(out.is_empty());
    }
}
