//! The binary's sinks for the engine's outputs: the alerts JSON-lines file, webhooks and the
//! window log. (History storage is in `store.rs`, the live status views in `views.rs`.)
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tapwatch_rules::webhook::{WebhookConfig, WebhookSink};
use tapwatch_rules::AlertEvent;

use crate::engine::{RunReport, Sink, WindowDone};
use crate::http::Telemetry;
use crate::DeliveryArgs;

/// Opens `path` for writing, `-` meaning standard output.
fn open_output(path: &Path, what: &str) -> anyhow::Result<Box<dyn Write>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let file = File::create(path).with_context(|| format!("creating {what} {}", path.display()))?;
    Ok(Box::new(BufWriter::new(file)))
}

/// `--alerts-out`: one alert event per line.
pub struct AlertsFile {
    out: Box<dyn Write>,
    path: PathBuf,
}

impl AlertsFile {
    /// Writes to `path` (`-`: standard output).
    pub fn open(path: &Path) -> anyhow::Result<AlertsFile> {
        Ok(AlertsFile {
            out: open_output(path, "alerts file")?,
            path: path.to_path_buf(),
        })
    }
}

impl Sink for AlertsFile {
    fn alerts(&mut self, events: &[AlertEvent]) -> anyhow::Result<()> {
        let path = &self.path;
        let context = || format!("writing alerts to {}", path.display());
        for event in events {
            serde_json::to_writer(&mut self.out, event).with_context(context)?;
            self.out.write_all(b"\n").with_context(context)?;
        }
        self.out.flush().with_context(context)
    }
}

/// `--windows-out`: one JSON summary per finished window and rollup.
pub struct WindowLog {
    out: Box<dyn Write>,
    path: PathBuf,
}

impl WindowLog {
    /// Writes to `path` (`-`: standard output).
    pub fn open(path: &Path) -> anyhow::Result<WindowLog> {
        Ok(WindowLog {
            out: open_output(path, "windows file")?,
            path: path.to_path_buf(),
        })
    }
}

impl Sink for WindowLog {
    fn window(&mut self, done: &WindowDone<'_>) -> anyhow::Result<()> {
        if done.log.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let context = || format!("writing window summaries to {}", path.display());
        for v in done.log {
            serde_json::to_writer(&mut self.out, v).with_context(context)?;
            self.out.write_all(b"\n").with_context(context)?;
        }
        self.out.flush().with_context(context)
    }
}

/// Webhook delivery: one spooled, retrying sender per configured receiver.
pub struct Webhooks {
    sinks: Vec<WebhookSink>,
    drain_timeout_s: f64,
    telemetry: Option<Arc<Telemetry>>,
}

impl Webhooks {
    /// Starts the `[[webhook]]` sinks of the config plus `--webhook` URLs; each first
    /// delivers what earlier runs left spooled under `data_dir/spool`.
    pub fn start(
        configured: &[WebhookConfig],
        delivery: &DeliveryArgs,
        data_dir: &Path,
    ) -> anyhow::Result<Webhooks> {
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
        Ok(Webhooks {
            sinks,
            drain_timeout_s: delivery.drain_timeout,
            telemetry: None,
        })
    }

    /// Publishes delivery counters to the status views after every window.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Webhooks {
        self.telemetry = Some(telemetry);
        self
    }

    /// Whether no receiver is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Delivery counters per sink: (url, [delivered, retries, rejected, overflow, spooled]).
    fn stats(&self) -> Vec<(String, [u64; 5])> {
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
}

impl Sink for Webhooks {
    fn alerts(&mut self, events: &[AlertEvent]) -> anyhow::Result<()> {
        for event in events {
            for sink in &mut self.sinks {
                sink.send(event);
            }
        }
        Ok(())
    }

    fn window(&mut self, _done: &WindowDone<'_>) -> anyhow::Result<()> {
        if let Some(t) = &self.telemetry {
            let stats = self.stats();
            if let Ok(mut v) = t.views.lock() {
                v.webhooks = stats;
            }
        }
        Ok(())
    }

    /// Drains every sink (bounded by `--drain-timeout`) and says what stays spooled.
    fn finish(&mut self, report: &mut RunReport) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let timeout = std::time::Duration::from_secs_f64(self.drain_timeout_s.max(0.0));
        for sink in self.sinks.drain(..) {
            let url = sink.url().to_string();
            let stats = Arc::clone(&sink.stats);
            let drained = sink.drain(timeout);
            let (left, waited) = (drained.left, drained.waited.as_secs_f64());
            let delivered = stats.delivered.load(Relaxed);
            if left > 0 {
                tracing::warn!("webhook {url}: {delivered} delivered, {left} remain spooled after waiting {waited:.1} s; the next run delivers them");
            } else {
                tracing::info!("webhook {url}: {delivered} delivered, none left spooled");
            }
            report.webhooks.push(serde_json::json!({
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
}

/// The sinks of `replay` and `run`: alerts file, webhooks, window log, history storage and
/// status views (when something serves them), each only when asked for.
pub fn standard(
    config: &crate::config::Config,
    common: &crate::CommonArgs,
    alerts_out: Option<&Path>,
    store: Option<crate::store::StoreSink>,
    telemetry: Arc<Telemetry>,
    views: Option<crate::views::Views>,
) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = alerts_out {
        sinks.push(Box::new(AlertsFile::open(path)?));
    }
    let webhooks = Webhooks::start(&config.webhook, &common.delivery, &config.storage.data_dir)?;
    if !webhooks.is_empty() {
        sinks.push(Box::new(webhooks.with_telemetry(Arc::clone(&telemetry))));
    }
    if let Some(path) = &common.windows_out {
        sinks.push(Box::new(WindowLog::open(path)?));
    }
    if let Some(store) = store {
        if let Some(stats) = store.stats() {
            let _ = telemetry.storage.set(stats);
        }
        sinks.push(Box::new(store));
    }
    if let Some(views) = views {
        sinks.push(Box::new(views));
    }
    Ok(sinks)
}
