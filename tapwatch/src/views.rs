//! The status views behind `/api/top`, `/api/alerts`, `/api/tenants`, `/api/latency` and
//! `/status`,
//! refreshed once per merged window (never per packet).
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, VecDeque};

use tapwatch_analyzer::{Merger, WindowStats};
use tapwatch_classifier::TenantId;
use tapwatch_rules::AlertEngine;

use crate::engine::{Sink, WindowDone};
use crate::http::Telemetry;

/// Periodic flows shown on the status page at most.
const SHOWN_PERIODIC: usize = 200;
/// Latency series (server and measure) kept for the status page at most.
const LATENCY_SERIES: usize = 32;
/// Windows each latency series keeps.
const LATENCY_POINTS: usize = 600;

/// Per server and measure, the median, p99 and samples of the last windows that had any:
/// what `/api/latency` and the status page's latency table show.
#[derive(Debug, Default)]
pub struct LatencySeries {
    /// (subject, measure) → points `[unix seconds, p50 µs, p99 µs, samples]`, oldest first.
    series: BTreeMap<(String, &'static str), VecDeque<[u64; 4]>>,
}

impl LatencySeries {
    /// Adds a merged window's latency cells; a new series is admitted while there is room.
    pub fn add(&mut self, w: &WindowStats) {
        let at_s = w.end_ns / 1_000_000_000;
        for (subject, measure, h) in w.latency.named_cells() {
            let key = (subject, measure.name());
            if !self.series.contains_key(&key) && self.series.len() >= LATENCY_SERIES {
                continue;
            }
            let points = self.series.entry(key).or_default();
            points.push_back([
                at_s,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.len(),
            ]);
            if points.len() > LATENCY_POINTS {
                points.pop_front();
            }
        }
    }

    /// The JSON of `/api/latency`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.series
                .iter()
                .map(|((subject, measure), points)| {
                    serde_json::json!({"subject": subject, "measure": measure, "points": points})
                })
                .collect(),
        )
    }
}

/// Wall-clock time, ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Alert events so far by `kind/state`.
pub fn alert_counts(rules: &AlertEngine) -> serde_json::Value {
    let mut counts: Vec<_> = rules.counts.iter().collect();
    counts.sort();
    let mut m = serde_json::Map::new();
    for ((kind, state), n) in counts {
        m.insert(format!("{kind}/{state}"), serde_json::json!(n));
    }
    serde_json::Value::Object(m)
}

/// Refreshes the JSON views from the merger and the rules.
pub fn refresh(t: &Telemetry, merger: &Merger, rules: &AlertEngine) {
    t.windows.store(merger.windows[0], Ordering::Relaxed);
    t.servers_untracked
        .store(merger.servers_untracked(), Ordering::Relaxed);
    t.latency_unjudged
        .store(merger.latency_untracked(), Ordering::Relaxed);
    t.alerts_suppressed
        .store(rules.suppressed, Ordering::Relaxed);
    t.drop_keys_evicted
        .store(merger.drop_keys_evicted(), Ordering::Relaxed);
    let tenants = merger.tenants();
    let top = merger.last_window.as_ref().map(|w| {
        t.window_lag_ms.store(wall_ns().saturating_sub(w.end_ns) / 1_000_000, Ordering::Relaxed);
        serde_json::json!({
            "window_start": tapwatch_rules::rfc3339(w.start_ns),
            "window_s": w.width_s(),
            "packets": w.packets,
            "bytes": w.bytes,
            "sources": w.sources.top(20).iter().map(|e| serde_json::json!({"address": e.key.to_string(), "tenant": tenants.name(tenants.lookup(e.key)), "packets": e.count, "bytes": e.secondary})).collect::<Vec<_>>(),
            "services": w.services.top(20).iter().map(|e| serde_json::json!({"service": format!("{}:{}/{}", e.key.0, e.key.1, e.key.2), "packets": e.count})).collect::<Vec<_>>(),
            "sketch_error_bound": w.sources.error_bound(),
        })
    });
    let mut per_tenant = serde_json::Map::new();
    for (i, fit) in merger.growth_fits().iter().enumerate() {
        if let Some((f, range, rate)) = fit {
            per_tenant.insert(
                tenants.name(TenantId(i as u16)).to_string(),
                serde_json::json!({"exponent": f.slope, "exponent_ci95": [f.slope_low, f.slope_high], "r2": f.r2, "points": f.n, "node_range": range, "setup_rate_per_s": rate, "history": merger.growth_history(i)}),
            );
        }
    }
    if let Ok(mut v) = t.views.lock() {
        if let Some(top) = top {
            v.top = top;
        }
        v.alerts = serde_json::Value::Array(rules.open_list());
        v.tenants = serde_json::Value::Object(per_tenant);
        v.alert_counts = alert_counts(rules);
    }
}

/// The status views as a sink.
pub struct Views {
    telemetry: Arc<Telemetry>,
    /// Whether the engine's periodic-flow snapshots feed `/api/heartbeats` (replay); live
    /// workers publish their own, fresher, lists.
    periodic: bool,
}

impl Views {
    /// Views published into `telemetry`; `periodic`: show the engine's periodic-flow
    /// snapshots.
    pub fn new(telemetry: Arc<Telemetry>, periodic: bool) -> Views {
        Views {
            telemetry,
            periodic,
        }
    }
}

impl Sink for Views {
    fn window(&mut self, done: &WindowDone<'_>) -> anyhow::Result<()> {
        refresh(&self.telemetry, done.merger, done.rules);
        // The series are kept as numbers; `/api/latency` renders them when asked.
        if let (Some(w), Ok(mut v)) = (&done.merger.last_window, self.telemetry.views.lock()) {
            v.latency.add(w);
        }
        Ok(())
    }

    fn periodic(&mut self, flows: &[serde_json::Value], _at_ns: u64) -> anyhow::Result<()> {
        if self.periodic {
            if let Some(w) = self.telemetry.workers.first() {
                if let Ok(mut h) = w.heartbeats.lock() {
                    *h = flows.iter().take(SHOWN_PERIODIC).cloned().collect();
                }
            }
        }
        Ok(())
    }
}
