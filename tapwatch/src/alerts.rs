//! Alert output: the JSON-lines file (or stdout) of `--alerts-out`, and the alerts kept
//! for the summary.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use tapwatch_analyzer::Finding;
use tapwatch_rules::webhook::{WebhookConfig, WebhookSink};
use tapwatch_rules::{AlertEngine, AlertEvent, AlertState, RulesConfig};

use crate::DeliveryArgs;

/// Alert events kept for the summary at most.
const KEPT: usize = 200;

/// Findings → alert events → outputs.
pub struct AlertOutput {
    engine: AlertEngine,
    file: Option<Box<dyn Write>>,
    sinks: Vec<WebhookSink>,
    drained: Vec<serde_json::Value>,
    /// Events so far (the first [`KEPT`]), for the summary.
    pub kept: Vec<AlertEvent>,
    /// Events so far.
    pub total: u64,
    /// Events not yet taken by the storage sink (kept only when it runs).
    for_store: Option<Vec<AlertEvent>>,
}

impl AlertOutput {
    /// Writes JSON lines to `path` (`-`: stdout) when given, and starts the webhook sinks of
    /// the config plus `--webhook` URLs (delivering what earlier runs left spooled first).
    pub fn new(
        path: Option<&Path>,
        rules: &RulesConfig,
        configured: &[WebhookConfig],
        delivery: &DeliveryArgs,
        data_dir: &Path,
    ) -> anyhow::Result<AlertOutput> {
        let engine = AlertEngine::new(rules.clone())?;
        let spool = data_dir.join("spool");
        let mut sinks = Vec::new();
        for cfg in configured
            .iter()
            .cloned()
            .chain(delivery.webhooks.iter().map(|u| WebhookConfig::for_url(u)))
        {
            let sink = WebhookSink::start(cfg, &spool)?;
            let pending = sink.pending();
            if pending > 0 {
                tracing::info!(
                    "webhook {}: delivering {pending} alerts spooled by an earlier run",
                    sink.url()
                );
            }
            sinks.push(sink);
        }
        let file: Option<Box<dyn Write>> = match path {
            None => None,
            Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
            Some(p) => Some(Box::new(BufWriter::new(
                File::create(p).with_context(|| format!("creating alerts file {}", p.display()))?,
            ))),
        };
        Ok(AlertOutput {
            engine,
            file,
            sinks,
            drained: Vec::new(),
            kept: Vec::new(),
            total: 0,
            for_store: None,
        })
    }

    /// Applies findings and writes the events they cause.
    pub fn publish(&mut self, findings: Vec<Finding>) -> anyhow::Result<()> {
        for f in findings {
            let events = self.engine.process(&f);
            self.write(events)?;
        }
        Ok(())
    }

    /// Advances event time in the rules (held resolves come due).
    pub fn tick(&mut self, now_ns: u64) -> anyhow::Result<()> {
        let events = self.engine.tick(now_ns);
        self.write(events)
    }

    fn write(&mut self, events: Vec<AlertEvent>) -> anyhow::Result<()> {
        for event in events {
            self.total += 1;
            for sink in &mut self.sinks {
                sink.send(&event);
            }
            if let Some(out) = &mut self.file {
                serde_json::to_writer(&mut *out, &event)?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            if let Some(v) = &mut self.for_store {
                v.push(event.clone());
            }
            if self.kept.len() < KEPT {
                self.kept.push(event);
            }
        }
        Ok(())
    }

    /// Keeps every event for [`AlertOutput::take_for_store`].
    pub fn keep_for_store(&mut self) {
        self.for_store.get_or_insert_with(Vec::new);
    }

    /// Events since the last call (empty unless [`AlertOutput::keep_for_store`] was called).
    pub fn take_for_store(&mut self) -> Vec<AlertEvent> {
        self.for_store
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Webhook sinks running.
    pub fn sink_count(&self) -> usize {
        self.sinks.len()
    }

    /// Webhook delivery counters, per sink (final once [`AlertOutput::finish`] ran).
    pub fn delivery_report(&self) -> serde_json::Value {
        serde_json::Value::Array(self.drained.clone())
    }

    /// Releases held resolves, drains every sink (bounded by `--drain-timeout`) and says
    /// what stays spooled.
    pub fn finish(&mut self, delivery: &DeliveryArgs) -> anyhow::Result<()> {
        let events = self.engine.finish();
        self.write(events)?;
        use std::sync::atomic::Ordering::Relaxed;
        let timeout = std::time::Duration::from_secs_f64(delivery.drain_timeout.max(0.0));
        for sink in self.sinks.drain(..) {
            let url = sink.url().to_string();
            let stats = std::sync::Arc::clone(&sink.stats);
            let drained = sink.drain(timeout);
            let (left, waited) = (drained.left, drained.waited.as_secs_f64());
            let delivered = stats.delivered.load(Relaxed);
            if left > 0 {
                tracing::warn!("webhook {url}: {delivered} delivered, {left} remain spooled after waiting {waited:.1} s; the next run delivers them");
            } else {
                tracing::info!("webhook {url}: {delivered} delivered, none left spooled");
            }
            self.drained.push(serde_json::json!({
                "url": url,
                "accepted": stats.accepted.load(Relaxed),
                "delivered": delivered,
                "retries": stats.retries.load(Relaxed),
                "rejected": stats.rejected.load(Relaxed),
                "spool_overflow": stats.overflow.load(Relaxed),
                "corrupt_spool_records": stats.corrupt.load(Relaxed),
                "torn_spool_records": stats.torn.load(Relaxed),
                "still_spooled": left,
            }));
        }
        Ok(())
    }

    /// Applies reloaded rules (SIGHUP).
    pub fn set_rules(&mut self, rules: &RulesConfig) -> anyhow::Result<()> {
        Ok(self.engine.set_rules(rules.clone())?)
    }

    /// The open alerts, oldest first.
    pub fn open_list(&self) -> Vec<serde_json::Value> {
        self.engine.open_list()
    }

    /// Delivery counters of the running sinks: (url, delivered, retries, rejected, overflow, spooled).
    pub fn sink_stats(&self) -> Vec<(String, [u64; 5])> {
        use std::sync::atomic::Ordering::Relaxed;
        self.sinks
            .iter()
            .map(|s| {
                (
                    s.url().to_string(),
                    [
                        s.stats.delivered.load(Relaxed),
                        s.stats.retries.load(Relaxed),
                        s.stats.rejected.load(Relaxed),
                        s.stats.overflow.load(Relaxed),
                        s.pending(),
                    ],
                )
            })
            .collect()
    }

    /// Alerts still open.
    pub fn open(&self) -> usize {
        self.engine.open_alerts()
    }

    /// Events by `kind/state`.
    pub fn counts(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut counts: Vec<_> = self.engine.counts.iter().collect();
        counts.sort();
        for ((kind, state), n) in counts {
            m.insert(format!("{kind}/{state}"), serde_json::json!(n));
        }
        serde_json::Value::Object(m)
    }
}

/// One event on one line, for people.
pub fn human_line(e: &AlertEvent) -> String {
    let state = match e.state {
        AlertState::Firing => "FIRING  ",
        AlertState::Resolved => "resolved",
    };
    let severity = serde_json::to_value(e.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let tenant = e
        .tenant
        .as_deref()
        .map(|t| format!(" tenant={t}"))
        .unwrap_or_default();
    let detail = match (e.kind, e.state) {
        ("missed_heartbeat", AlertState::Firing) => {
            format!("silent for {:.3} s (deadline)", e.value)
        }
        ("missed_heartbeat", AlertState::Resolved) => format!("gap {:.3} s", e.value),
        ("heavy_hitter", _) => format!(
            "share {:.1}% (threshold {:.0}%)",
            e.value * 100.0,
            e.threshold * 100.0
        ),
        ("quadratic_setup_growth", _) => format!(
            "setups ~ nodes^{:.2} (threshold {:.1}), at 2x nodes {:.0} setups/s",
            e.value,
            e.threshold,
            e.evidence["projected_setup_rate_at_2x_nodes"]
                .as_f64()
                .unwrap_or(0.0)
        ),
        ("syn_retransmits", _) => {
            format!("{} retransmitted SYNs (threshold {})", e.value, e.threshold)
        }
        ("isolation_advice", AlertState::Firing) => {
            e.evidence["advice"].as_str().unwrap_or("").to_string()
        }
        ("isolation_advice", AlertState::Resolved) => {
            format!(
                "the {} alert behind it resolved",
                e.evidence["cause"].as_str().unwrap_or("")
            )
        }
        _ => format!("value {} threshold {}", e.value, e.threshold),
    };
    format!(
        "{} {state} {:<22} {:<8} {}{tenant}: {detail}",
        e.detected_at, e.kind, severity, e.subject
    )
}

/// The `--windows-out` JSON-lines writer.
pub struct WindowLog(Option<BufWriter<File>>);

impl WindowLog {
    /// Opens the file if one was asked for.
    pub fn open(path: Option<&Path>) -> anyhow::Result<WindowLog> {
        Ok(WindowLog(match path {
            Some(p) => {
                Some(BufWriter::new(File::create(p).with_context(|| {
                    format!("creating windows file {}", p.display())
                })?))
            }
            None => None,
        }))
    }

    /// Whether summaries are wanted.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Writes summaries, one per line.
    pub fn write(&mut self, lines: Vec<serde_json::Value>) -> anyhow::Result<()> {
        if let Some(out) = &mut self.0 {
            for v in lines {
                serde_json::to_writer(&mut *out, &v)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Ok(())
    }
}
