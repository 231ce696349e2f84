//! Rows from the pipeline's outputs: finished windows, growth points, alert events, the
//! periodic-flow list, and the agent's own record.
use std::net::IpAddr;

use hdrhistogram::{Counter, Histogram};
use tapwatch_analyzer::{DropRate, Evidence, GrowthSample, Labels, Measure, WindowStats};
use tapwatch_rules::{AlertEvent, AlertEvidence, AlertState};

use crate::rows::*;

fn secs(ns: u64) -> u32 {
    (ns / 1_000_000_000).min(u64::from(u32::MAX)) as u32
}

/// Rows of one finished base window: traffic cells, tenants, heavy hitters (top `top` per
/// dimension), handshake latency per tenant, latency per server and measure, and servers'
/// flow health.
pub fn window_rows(w: &WindowStats, labels: &Labels, agent: &str, top: usize, out: &mut Rows) {
    let ts = secs(w.start_ns);
    let window_ms = ((w.end_ns - w.start_ns) / 1_000_000) as u32;
    for (tenant, kind, class, size, c) in w.traffic.iter() {
        out.traffic.push(TrafficRow {
            ts,
            agent: agent.to_string(),
            batch: 0,
            window_ms,
            tenant: labels.tenant_name(usize::from(tenant.0)).to_string(),
            source_class: class.name().to_string(),
            protocol_type: labels.type_name(kind).unwrap_or("other").to_string(),
            size_class: size.name().to_string(),
            packets: c.packets,
            samples: w.samples_of(c.packets),
            bytes: c.bytes,
            setups: if labels.is_setup(kind) { c.packets } else { 0 },
        });
    }
    for (i, t) in w.tenants.iter().enumerate() {
        if t.packets == 0 {
            continue;
        }
        let tenant = labels.tenant_name(i).to_string();
        out.tenants.push(TenantRow {
            ts,
            agent: agent.to_string(),
            batch: 0,
            window_ms,
            tenant: tenant.clone(),
            packets: t.packets,
            samples: w.samples_of(t.packets),
            bytes: t.bytes,
            setups: t.setups,
            sources: t.nodes.count().0,
        });
        for (measure, h) in [
            (Measure::HandshakeServer, &t.syn_to_syn_ack),
            (Measure::HandshakeClient, &t.syn_ack_to_ack),
        ] {
            let at = (ts, agent, window_ms);
            if let Some(row) = latency_row(at, &tenant, None, measure, h.as_ref()) {
                out.latency.push(row);
            }
        }
    }
    let mut cells: Vec<_> = w.latency.cells.iter().collect();
    cells.sort_unstable_by_key(|(k, _)| *k);
    for (((addr, port, _), measure), c) in cells {
        let tenant = labels.tenant_name_of(*addr);
        let at = (ts, agent, window_ms);
        if let Some(row) = latency_row(at, tenant, Some((*addr, *port)), *measure, Some(&c.hist)) {
            out.latency.push(row);
        }
    }
    for ((addr, port), h) in &w.health {
        out.server_health.push(ServerHealthRow {
            ts,
            agent: agent.to_string(),
            batch: 0,
            window_ms,
            tenant: labels.tenant_name_of(*addr).to_string(),
            server: address(Some(*addr)),
            server_port: *port,
            segments: h.segments,
            retransmits_to_server: h.retransmits_to_server,
            retransmits_from_server: h.retransmits_from_server,
            zero_windows: h.zero_windows,
            dup_acks: h.dup_acks,
            upgrades_ok: h.upgrades_ok,
            upgrades_refused: h.upgrades_refused,
            upgrades_unanswered: h.upgrades_unanswered,
        });
    }
    let mut hh = |dimension: &str, entries: Vec<(IpAddr, u16, u8, u64, u64)>, bound: u64| {
        for (rank, (a, port, proto, count, secondary)) in entries.into_iter().enumerate() {
            out.heavy_hitters.push(HeavyHitterRow {
                ts,
                agent: agent.to_string(),
                batch: 0,
                window_ms,
                dimension: dimension.to_string(),
                rank: rank as u16 + 1,
                address: address(Some(a)),
                port,
                proto,
                tenant: labels.tenant_name_of(a).to_string(),
                packets: count,
                bytes: secondary,
                error_bound: bound,
                window_packets: w.packets,
                window_samples: w.samples_of(w.packets),
            });
        }
    };
    hh(
        "source",
        w.sources
            .top(top)
            .iter()
            .map(|e| (e.key, 0, 0, e.count, e.secondary))
            .collect(),
        w.sources.error_bound(),
    );
    hh(
        "source_bytes",
        w.source_bytes
            .top(top)
            .iter()
            .map(|e| (e.key, 0, 0, e.count, e.secondary))
            .collect(),
        w.source_bytes.error_bound(),
    );
    hh(
        "service",
        w.services
            .top(top)
            .iter()
            .map(|e| (e.key.0, e.key.1, e.key.2, e.count, e.secondary))
            .collect(),
        w.services.error_bound(),
    );
    hh(
        "destination",
        w.destinations
            .top(top)
            .iter()
            .map(|e| (e.key, 0, 0, e.count, e.secondary))
            .collect(),
        w.destinations.error_bound(),
    );
}

/// A latency row at `(ts, agent, window_ms)`; the handshake measures keep their stage name.
fn latency_row<C: Counter>(
    (ts, agent, window_ms): (u32, &str, u32),
    tenant: &str,
    server: Option<(IpAddr, u16)>,
    measure: Measure,
    h: Option<&Histogram<C>>,
) -> Option<LatencyRow> {
    let h = h.filter(|h| !h.is_empty())?;
    let stage = match measure {
        Measure::HandshakeServer => "syn_to_syn_ack",
        Measure::HandshakeClient => "syn_ack_to_ack",
        _ => "",
    };
    Some(LatencyRow {
        ts,
        agent: agent.to_string(),
        batch: 0,
        window_ms,
        tenant: tenant.to_string(),
        server: address(server.map(|s| s.0)),
        server_port: server.map_or(0, |s| s.1),
        stage: stage.to_string(),
        measure: measure.name().to_string(),
        samples: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    })
}

/// A setup-growth row.
pub fn growth_row(g: &GrowthSample, agent: &str) -> GrowthRow {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    GrowthRow {
        ts: secs(g.start_ns),
        agent: agent.to_string(),
        batch: 0,
        tenant: g.tenant.clone(),
        point_s: g.width_s.round() as u32,
        nodes: g.nodes,
        setups: g.setups,
        exponent: g.fit.map_or(0.0, |f| finite(f.slope)),
        exponent_low: g.fit.map_or(0.0, |f| finite(f.slope_low)),
        exponent_high: g.fit.map_or(0.0, |f| finite(f.slope_high)),
        r2: g.fit.map_or(0.0, |f| finite(f.r2)),
        fit_points: g.fit.map_or(0, |f| f.n as u32),
    }
}

/// The `drop_rates` row of a tracked key's count in a traffic-drop window.
pub fn drop_rate_row(d: &DropRate, agent: &str) -> DropRateRow {
    DropRateRow {
        ts: secs(d.start_ns),
        agent: agent.to_string(),
        batch: 0,
        window_ms: (d.width_s * 1000.0).round() as u32,
        dimension: d.dimension.to_string(),
        tenant: d.tenant.clone(),
        address: address(d.address),
        port: d.port,
        proto: d.proto,
        packets: d.packets,
        packets_upper: d.packets_upper,
        baseline_pps: d.baseline_pps,
        steady: u8::from(d.steady),
        quiet_windows: d.quiet_windows,
    }
}

/// The `alerts` row of an alert event, and its `heartbeat_gaps` row for a missed heartbeat.
pub fn alert_rows(e: &AlertEvent, agent: &str, out: &mut Rows) {
    let detected_ms = e.detected_ns / 1_000_000;
    let started_ms = e.started_ns / 1_000_000;
    let ts = (detected_ms / 1000) as u32;
    out.alerts.push(AlertRow {
        ts,
        agent: agent.to_string(),
        batch: 0,
        id: e.id.clone(),
        kind: e.kind.as_str().to_string(),
        state: e.state.as_str().to_string(),
        severity: e.severity.as_str().to_string(),
        tenant: e.tenant.clone().unwrap_or_default(),
        subject: e.subject.clone(),
        started_ms,
        detected_ms,
        value: if e.value.is_finite() { e.value } else { 0.0 },
        threshold: if e.threshold.is_finite() {
            e.threshold
        } else {
            0.0
        },
        evidence: e.evidence_json(),
        version: e.version,
    });
    if let AlertEvidence::Finding(Evidence::Heartbeat(h)) = &e.evidence {
        let gap_s = match e.state {
            AlertState::Resolved => h.gap_s.unwrap_or(e.value),
            AlertState::Firing => e.value,
        };
        out.heartbeat_gaps.push(HeartbeatGapRow {
            ts,
            agent: agent.to_string(),
            batch: 0,
            tenant: e.tenant.clone().unwrap_or_default(),
            flow: e.subject.clone(),
            state: e.state.as_str().to_string(),
            bfd: u8::from(h.bfd.is_some()),
            period_ms: h.period_s * 1000.0,
            gap_ms: gap_s * 1000.0,
            started_ms,
            alert_id: e.id.clone(),
        });
    }
}

/// `periodic_flows` rows from the analyzer's periodic-flow list (JSON objects with
/// `subject`, `tenant`, `bfd`, `period_s`, `late`, `last_gap_s`).
pub fn periodic_rows(list: &[serde_json::Value], ts_ns: u64, agent: &str, out: &mut Rows) {
    for f in list {
        out.periodic_flows.push(PeriodicFlowRow {
            ts: secs(ts_ns),
            agent: agent.to_string(),
            batch: 0,
            tenant: f["tenant"].as_str().unwrap_or("unassigned").to_string(),
            flow: f["subject"].as_str().unwrap_or_default().to_string(),
            bfd: u8::from(f["bfd"].as_bool().unwrap_or(false)),
            period_ms: f["period_s"].as_f64().unwrap_or(0.0) * 1000.0,
            last_gap_ms: f["last_gap_s"].as_f64().unwrap_or(0.0) * 1000.0,
            late: u8::from(f["late"].as_bool().unwrap_or(false)),
        });
    }
}
