//! The storage sink as the binary wires it: finished windows, growth points, alert events,
//! periodic flows, the agent's record and the sFlow agents' interface counters become rows
//! for ClickHouse or the file store.
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use tapwatch_rules::AlertEvent;

use tapwatch_capture::sflow::InterfaceCounters;
use tapwatch_storage::rows::{address, InterfaceRow};
use tapwatch_storage::{convert, Backend, Rows, Store};

use crate::config::Config;
use crate::engine::{RunReport, Sink, WindowDone};
use crate::http::Telemetry;

/// Rows this process could not store (the spool full or the disk full); a run that lost
/// any exits non-zero.
static ROWS_LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Rows the storage sinks of this process could not write.
pub fn rows_lost() -> u64 {
    ROWS_LOST.load(std::sync::atomic::Ordering::Relaxed)
}

/// Heavy-hitter entries stored per window and dimension.
const TOP_PER_WINDOW: usize = 10;

/// The interface counters last stored per (sFlow agent, data source index).
type StoredCounters = HashMap<(IpAddr, u32), InterfaceCounters>;

/// The pipeline's handle on storage.
pub struct StoreSink {
    /// The store; taken when the run closes it.
    store: Option<Store>,
    agent: String,
    mode: &'static str,
    inputs: Vec<String>,
    started: u32,
    last_agent_row: Instant,
    agent_every: Duration,
    /// sFlow runs: where the sources' latest interface counters are, and the counters last
    /// stored per (sFlow agent, data source).
    interfaces: Option<(Arc<Telemetry>, StoredCounters)>,
}

impl StoreSink {
    /// Starts the sink the config selects (`[clickhouse]`/`TAPWATCH_CLICKHOUSE_URL`, else
    /// the file store under the data directory), or none with `--no-store`.
    pub fn open(
        config: &Config,
        args: &crate::StoreArgs,
        mode: &'static str,
        inputs: Vec<String>,
    ) -> anyhow::Result<Option<StoreSink>> {
        if args.no_store {
            return Ok(None);
        }
        let agent = args
            .agent_id
            .clone()
            .or_else(|| config.storage.agent_id.clone())
            .unwrap_or_else(tapwatch_storage::agent::hostname);
        let mut storage = config.storage.clone();
        if mode == "replay" {
            // Retention is the daemon's job: a replay of an old capture must not drop the
            // very rows it writes (nor anyone else's).
            storage.retention_every_s = 0.0;
        }
        let backend = Backend::from_config(&config.clickhouse, &storage)?;
        let store = Store::start(&storage, backend, &agent)?;
        tracing::debug!("storing rows as agent {agent:?} in {}", store.describe());
        let started = unix_s();
        let mut sink = StoreSink {
            store: Some(store),
            agent,
            mode,
            inputs,
            started,
            last_agent_row: Instant::now(),
            agent_every: Duration::from_secs_f64(config.storage.agent_every_s.max(1.0)),
            interfaces: None,
        };
        sink.agent_row();
        Ok(Some(sink))
    }

    /// Stores the sFlow sources' interface counters too: each new counter sample once, with
    /// the base window that closes after it.
    pub fn store_interfaces(&mut self, telemetry: Arc<Telemetry>) {
        self.interfaces = Some((telemetry, HashMap::new()));
    }

    /// Rows of the counter samples that arrived since the last call, at `ts`.
    fn interface_rows(&mut self, ts: u32, rows: &mut Rows) {
        let Some((telemetry, stored)) = &mut self.interfaces else {
            return;
        };
        for view in telemetry.sflow_views() {
            for (sflow_agent, source, c) in view.interfaces {
                if stored.get(&(sflow_agent, source)) == Some(&c) {
                    continue;
                }
                stored.insert((sflow_agent, source), c);
                rows.interfaces
                    .push(interface_row(ts, &self.agent, sflow_agent, &c));
            }
        }
    }

    fn agent_row(&mut self) {
        let mut rows = Rows::default();
        rows.agents.push(tapwatch_storage::agent::agent_row(
            &self.agent,
            self.mode,
            self.started,
            &self.inputs,
        ));
        self.last_agent_row = Instant::now();
        self.submit(rows);
    }

    fn submit(&mut self, rows: Rows) {
        if let Some(store) = &mut self.store {
            store.submit(rows);
        }
    }

    /// Writes everything buffered, drains the spool (bounded) and reports.
    fn close(&mut self) -> Option<serde_json::Value> {
        use std::sync::atomic::Ordering::Relaxed;
        let store = self.store.take()?;
        let stats = std::sync::Arc::clone(&store.stats);
        let describe = store.describe().to_string();
        let left = store.close();
        let v = serde_json::json!({
            "backend": describe,
            "agent": self.agent,
            "rows_accepted": stats.rows_accepted.load(Relaxed),
            "rows_written": stats.rows_written.load(Relaxed),
            "batches_written": stats.batches_written.load(Relaxed),
            "insert_failures": stats.insert_failures.load(Relaxed),
            "batches_spooled": stats.batches_spooled.load(Relaxed),
            "batches_deduplicated": stats.batches_deduplicated.load(Relaxed),
            "batches_left_spooled": left,
            "rows_lost_spool_full": stats.overflow_rows.load(Relaxed),
        });
        let lost = stats.overflow_rows.load(Relaxed);
        if lost > 0 {
            ROWS_LOST.fetch_add(lost, Relaxed);
            tracing::error!(
                "storage: {lost} of {} rows could not be written to {describe} (disk or spool full; see the warnings above)",
                stats.rows_accepted.load(Relaxed)
            );
        }
        if left > 0 {
            tracing::warn!("storage: {left} batches remain spooled for {describe}; `tapwatch deliver` or the next run writes them");
        } else {
            tracing::debug!(
                "storage: {} rows written to {describe}",
                stats.rows_written.load(Relaxed)
            );
        }
        Some(v)
    }

    /// The agent id on every row.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> Option<std::sync::Arc<tapwatch_storage::StoreStats>> {
        self.store.as_ref().map(|s| std::sync::Arc::clone(&s.stats))
    }
}

impl Sink for StoreSink {
    /// Stores alert events.
    fn alerts(&mut self, events: &[AlertEvent]) -> anyhow::Result<()> {
        let mut rows = Rows::default();
        for e in events {
            convert::alert_rows(e, &self.agent, &mut rows);
        }
        self.submit(rows);
        Ok(())
    }

    /// Stores the merger's finished windows and growth points.
    fn window(&mut self, done: &WindowDone<'_>) -> anyhow::Result<()> {
        if !done.closed.is_empty() || !done.growth.is_empty() || !done.drops.is_empty() {
            let mut rows = Rows::default();
            for w in done.closed {
                convert::window_rows(
                    w,
                    done.merger.labels(),
                    &self.agent,
                    TOP_PER_WINDOW,
                    &mut rows,
                );
            }
            for g in done.growth {
                rows.setup_growth.push(convert::growth_row(g, &self.agent));
            }
            for d in done.drops {
                rows.drop_rates.push(convert::drop_rate_row(d, &self.agent));
            }
            if let Some(w) = done.closed.last() {
                self.interface_rows((w.start_ns / 1_000_000_000) as u32, &mut rows);
            }
            self.submit(rows);
        }
        if self.last_agent_row.elapsed() >= self.agent_every {
            self.agent_row();
        }
        Ok(())
    }

    /// Stores a snapshot of the periodic flows at event time `at_ns`.
    fn periodic(&mut self, flows: &[serde_json::Value], at_ns: u64) -> anyhow::Result<()> {
        let mut rows = Rows::default();
        convert::periodic_rows(flows, at_ns, &self.agent, &mut rows);
        self.submit(rows);
        Ok(())
    }

    /// Writes everything buffered, drains the spool (bounded) and reports.
    fn finish(&mut self, report: &mut RunReport) -> anyhow::Result<()> {
        // Counter samples that came after the last window closed.
        let mut rows = Rows::default();
        self.interface_rows(unix_s(), &mut rows);
        self.submit(rows);
        report.storage = self.close();
        Ok(())
    }
}

/// The stored form of one counter sample's generic interface counters.
fn interface_row(ts: u32, agent: &str, sflow_agent: IpAddr, c: &InterfaceCounters) -> InterfaceRow {
    let sum = |a: u32, b: u32, c: u32| u64::from(a) + u64::from(b) + u64::from(c);
    InterfaceRow {
        ts,
        agent: agent.to_string(),
        batch: 0,
        sflow_agent: address(Some(sflow_agent)),
        if_index: c.if_index,
        if_type: c.if_type,
        speed_bits: c.if_speed,
        direction: c.if_direction.min(255) as u8,
        status: (c.if_status & 3) as u8,
        in_octets: c.in_octets,
        out_octets: c.out_octets,
        in_packets: sum(c.in_unicast, c.in_multicast, c.in_broadcast),
        out_packets: sum(c.out_unicast, c.out_multicast, c.out_broadcast),
        in_errors: u64::from(c.in_errors),
        out_errors: u64::from(c.out_errors),
        in_discards: u64::from(c.in_discards),
        out_discards: u64::from(c.out_discards),
    }
}

fn unix_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Puts the setup-growth points this agent stored at the coarse levels (1 min and wider by
/// default) back into the merger, so growth over days survives a restart. A history that
/// cannot be read is a warning, never a reason not to start.
pub fn restore_growth(config: &Config, agent: &str, merger: &mut tapwatch_analyzer::Merger) {
    use tapwatch_storage::restore::{growth_points, GrowthSource};
    let g = &config.analyzer.setup_growth;
    let Some(finest_coarse) = g.coarse_levels_s.first() else {
        return;
    };
    let span_s = g
        .coarse_levels_s
        .iter()
        .fold(0f64, |m, w| m.max(w * g.coarse_history as f64))
        .min(30.0 * 86_400.0);
    let since = unix_s().saturating_sub(span_s as u32);
    let read = match config.clickhouse.effective_url() {
        Some(url) => tapwatch_storage::ClickHouse::new(&url, &config.clickhouse).and_then(|ch| {
            growth_points(
                &GrowthSource::ClickHouse(&ch),
                agent,
                since,
                *finest_coarse as u32,
            )
        }),
        None => {
            let files = tapwatch_storage::FileStore::new(&config.storage.data_dir);
            growth_points(
                &GrowthSource::Files(&files),
                agent,
                since,
                *finest_coarse as u32,
            )
        }
    };
    match read {
        Ok(points) => {
            let points: Vec<tapwatch_analyzer::growth::StoredPoint> = points
                .into_iter()
                .map(|p| tapwatch_analyzer::growth::StoredPoint {
                    tenant: p.tenant,
                    width_s: f64::from(p.point_s),
                    start_ns: u64::from(p.ts) * 1_000_000_000,
                    nodes: p.nodes,
                    setups: p.setups,
                })
                .collect();
            let n = merger.restore_growth(&points);
            if n > 0 {
                tracing::info!("restored {n} setup-growth points of agent {agent} from history");
            }
        }
        Err(e) => tracing::warn!("setup-growth history not restored: {e}"),
    }
}
