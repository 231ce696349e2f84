//! tapwatch's own HTTP endpoint for `run`: Prometheus `/metrics`, `/healthz`, `/readyz`, and a
//! small JSON API (`/api/top`, `/api/alerts`, `/api/tenants`), and each alert's evidence
//! capture at `/api/alerts/<id>/pcap`. Workers publish counters into
//! atomics (every 256 packets or poll timeout); the merger thread refreshes the JSON views
//! once per window. Nothing here is touched per packet.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tapwatch_capture::sflow::InterfaceCounters;

/// Counters of one capture worker.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Packets classified.
    pub packets: AtomicU64,
    /// Wire bytes.
    pub bytes: AtomicU64,
    /// Malformed packets.
    pub malformed: AtomicU64,
    /// Packets the kernel saw for this worker's socket.
    pub kernel_packets: AtomicU64,
    /// Packets the kernel dropped (ring full).
    pub kernel_drops: AtomicU64,
    /// Heartbeat flows tracked.
    pub heartbeat_flows: AtomicU64,
    /// Handshakes in progress.
    pub pending_handshakes: AtomicU64,
    /// Packets later than the grace period.
    pub late: AtomicU64,
    /// Packets of flows the heartbeat table had no room for.
    pub heartbeat_untracked: AtomicU64,
    /// SYNs of handshakes the pending table had no room for.
    pub handshake_untracked: AtomicU64,
    /// TCP flows, echo requests and samples the latency tables had no room for.
    pub latency_untracked: [AtomicU64; 3],
    /// Live TCP flows the retransmission table replaced.
    pub retransmit_flows_evicted: AtomicU64,
    /// HTTP upgrade requests the pending table had no room for.
    pub upgrades_untracked: AtomicU64,
    /// Periodic flows and BFD sessions of this worker (refreshed once a second).
    pub heartbeats: Mutex<Vec<serde_json::Value>>,
    /// The worker's sFlow source, if it reads one (refreshed once a second).
    pub sflow: Mutex<Option<crate::sources::SflowView>>,
}

/// Everything the endpoint shows.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Interface captured.
    pub interface: String,
    /// Capture sockets are open.
    pub ready: AtomicBool,
    /// Per worker.
    pub workers: Vec<WorkerCounters>,
    /// Base windows merged.
    pub windows: AtomicU64,
    /// Wall time minus the end of the last merged window, ms.
    pub window_lag_ms: AtomicU64,
    /// Handshake events of servers the windows had no room for.
    pub servers_untracked: AtomicU64,
    /// Latency samples of (server, measure) pairs beyond the baselines kept.
    pub latency_unjudged: AtomicU64,
    /// Alert events the rules did not send (silence, mute, disabled kind, cooldown).
    pub alerts_suppressed: AtomicU64,
    /// Keys the traffic-drop table evicted for busier ones.
    pub drop_keys_evicted: AtomicU64,
    /// JSON views and alert/webhook counters, refreshed per window.
    pub views: Mutex<Views>,
    /// The storage sink's counters, once it runs.
    pub storage: std::sync::OnceLock<std::sync::Arc<tapwatch_storage::StoreStats>>,
    /// The history the console reads (none with `--no-store`).
    pub history: std::sync::OnceLock<crate::console::History>,
    /// Evidence captures' counters, when they run.
    pub evidence: std::sync::OnceLock<std::sync::Arc<crate::evidence::EvidenceStats>>,
    /// The data directory, for `/api/alerts/<id>/pcap`.
    pub data_dir: std::sync::OnceLock<std::path::PathBuf>,
}

/// The JSON views.
#[derive(Debug, Default)]
pub struct Views {
    /// `/api/top`.
    pub top: serde_json::Value,
    /// `/api/alerts`.
    pub alerts: serde_json::Value,
    /// `/api/tenants`.
    pub tenants: serde_json::Value,
    /// `/api/latency`: per server and measure, recent windows' p50, p99 and samples.
    pub latency: crate::views::LatencySeries,
    /// Alert events by `kind/state`.
    pub alert_counts: serde_json::Value,
    /// Webhook sinks: url and [delivered, retries, rejected, overflow, spooled].
    pub webhooks: Vec<(String, [u64; 5])>,
}

impl Telemetry {
    /// Telemetry for `workers` workers on `interface`.
    pub fn new(interface: &str, workers: usize) -> Telemetry {
        Telemetry {
            interface: interface.to_string(),
            workers: (0..workers).map(|_| WorkerCounters::default()).collect(),
            // Before the first window the API answers with empty views, not null.
            views: Mutex::new(Views {
                top: serde_json::json!({"sources": [], "services": []}),
                alerts: serde_json::json!([]),
                tenants: serde_json::json!({}),
                latency: Default::default(),
                alert_counts: serde_json::json!({}),
                webhooks: Vec::new(),
            }),
            ..Telemetry::default()
        }
    }

    /// The Prometheus text exposition.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let iface = escape(&self.interface);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let per_worker = |f: &dyn Fn(&WorkerCounters) -> u64| -> Vec<(String, f64)> {
            self.workers
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    (
                        format!("{{interface=\"{iface}\",worker=\"{i}\"}}"),
                        f(w) as f64,
                    )
                })
                .collect()
        };
        family(
            "tapwatch_up",
            "gauge",
            "1 while tapwatch runs.",
            vec![(String::new(), 1.0)],
        );
        family(
            "tapwatch_ready",
            "gauge",
            "1 once every capture socket is open.",
            vec![(
                String::new(),
                f64::from(u8::from(self.ready.load(Ordering::Relaxed))),
            )],
        );
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of the whole process, seconds.",
            vec![(String::new(), crate::cpu::process().as_secs_f64())],
        );
        let memory = crate::cpu::memory();
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process, bytes.",
            vec![(String::new(), memory.resident_bytes as f64)],
        );
        family(
            "tapwatch_peak_resident_memory_bytes",
            "gauge",
            "Largest resident memory of the process so far, bytes.",
            vec![(String::new(), memory.peak_bytes as f64)],
        );
        family(
            "tapwatch_thread_cpu_seconds_total",
            "counter",
            "CPU time of each running thread, seconds, by name: tw-capture-N are the workers, \
             tapwatch (the main thread) the merger stage; one that gains about 1 s a second is \
             the limit.",
            crate::cpu::running_threads()
                .into_iter()
                .map(|(name, cpu)| {
                    (
                        format!("{{thread=\"{}\"}}", escape(&name)),
                        cpu.as_secs_f64(),
                    )
                })
                .collect(),
        );
        family(
            "tapwatch_packets_total",
            "counter",
            "Packets captured and classified.",
            per_worker(&|w| w.packets.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_bytes_total",
            "counter",
            "Wire bytes captured.",
            per_worker(&|w| w.bytes.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_malformed_packets_total",
            "counter",
            "Packets with malformed headers (skipped by detectors).",
            per_worker(&|w| w.malformed.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_kernel_packets_total",
            "counter",
            "Packets the kernel delivered to the capture socket, drops included.",
            per_worker(&|w| w.kernel_packets.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_kernel_drops_total",
            "counter",
            "Packets the kernel dropped because the ring was full.",
            per_worker(&|w| w.kernel_drops.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_late_packets_total",
            "counter",
            "Packets later than the window grace period.",
            per_worker(&|w| w.late.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_heartbeat_flows",
            "gauge",
            "Flows tracked by the heartbeat detector.",
            per_worker(&|w| w.heartbeat_flows.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_pending_handshakes",
            "gauge",
            "TCP handshakes in progress.",
            per_worker(&|w| w.pending_handshakes.load(Ordering::Relaxed)),
        );
        if let Some(ev) = self.evidence.get() {
            let g = |a: &AtomicU64| vec![(String::new(), a.load(Ordering::Relaxed) as f64)];
            for (name, kind, help, a) in [
                (
                    "written_total",
                    "counter",
                    "Evidence captures written.",
                    &ev.written,
                ),
                (
                    "packets_total",
                    "counter",
                    "Packets in evidence captures.",
                    &ev.packets,
                ),
                (
                    "truncated_total",
                    "counter",
                    "Evidence captures cut by max_packets or max_active.",
                    &ev.truncated,
                ),
                (
                    "short_history_total",
                    "counter",
                    "Evidence captures whose before_s reached past the ring.",
                    &ev.short_history,
                ),
                (
                    "removed_for_disk_total",
                    "counter",
                    "Older evidence files removed to stay within max_disk_mib.",
                    &ev.removed_for_disk,
                ),
                (
                    "failed_total",
                    "counter",
                    "Evidence captures not written.",
                    &ev.failed,
                ),
                (
                    "headers_cut_total",
                    "counter",
                    "Packets whose headers were longer than a ring slot.",
                    &ev.headers_cut,
                ),
                (
                    "ring_bytes",
                    "gauge",
                    "Bytes of every evidence ring.",
                    &ev.ring_bytes,
                ),
            ] {
                family(&format!("tapwatch_evidence_{name}"), kind, help, g(a));
            }
        }
        if let Some(st) = self.storage.get() {
            let g = |a: &AtomicU64| vec![(String::new(), a.load(Ordering::Relaxed) as f64)];
            family(
                "tapwatch_storage_rows_written_total",
                "counter",
                "Rows written to ClickHouse or the file store.",
                g(&st.rows_written),
            );
            family(
                "tapwatch_storage_insert_failures_total",
                "counter",
                "Inserts that failed (their batch was spooled).",
                g(&st.insert_failures),
            );
            family(
                "tapwatch_storage_batches_spooled_total",
                "counter",
                "Batches put in the storage spool.",
                g(&st.batches_spooled),
            );
            family(
                "tapwatch_storage_rows_lost_total",
                "counter",
                "Rows lost because the storage spool was full.",
                g(&st.overflow_rows),
            );
            family(
                "tapwatch_storage_spool_bytes",
                "gauge",
                "Size of the storage spool on disk.",
                g(&st.spool_bytes),
            );
            family(
                "tapwatch_storage_queue_rows",
                "gauge",
                "Rows queued towards the storage writer.",
                g(&st.queue_depth),
            );
            let batches = st.batches_written.load(Ordering::Relaxed).max(1) as f64;
            family(
                "tapwatch_storage_insert_seconds_avg",
                "gauge",
                "Mean insert latency.",
                vec![(
                    String::new(),
                    st.insert_us_total.load(Ordering::Relaxed) as f64 / batches / 1e6,
                )],
            );
        }
        family(
            "tapwatch_heartbeat_untracked_packets_total",
            "counter",
            "Packets of flows the heartbeat table had no room for (heartbeat.max_flows).",
            per_worker(&|w| w.heartbeat_untracked.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_handshake_untracked_total",
            "counter",
            "SYNs of handshakes the pending table had no room for (handshake.max_pending).",
            per_worker(&|w| w.handshake_untracked.load(Ordering::Relaxed)),
        );
        for (i, (name, help)) in [
            (
                "tapwatch_latency_flows_untracked_total",
                "TCP flows the latency table had no room for (latency.max_flows).",
            ),
            (
                "tapwatch_latency_echo_untracked_total",
                "Echo requests the latency table had no room for (latency.max_echo).",
            ),
            (
                "tapwatch_latency_samples_untracked_total",
                "Latency samples whose server had no room in a window (latency.max_subjects).",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            family(
                name,
                "counter",
                help,
                per_worker(&|w| w.latency_untracked[i].load(Ordering::Relaxed)),
            );
        }
        family(
            "tapwatch_retransmit_flows_evicted_total",
            "counter",
            "Live TCP flows the retransmission table replaced with new ones (retransmits.max_flows).",
            per_worker(&|w| w.retransmit_flows_evicted.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_upgrades_untracked_total",
            "counter",
            "HTTP upgrade requests the pending table had no room for (upgrade_failure.max_pending).",
            per_worker(&|w| w.upgrades_untracked.load(Ordering::Relaxed)),
        );
        family(
            "tapwatch_servers_untracked_total",
            "counter",
            "Handshake events of servers a window had no room for (handshake.max_servers).",
            vec![(
                String::new(),
                self.servers_untracked.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "tapwatch_latency_unjudged_total",
            "counter",
            "Latency samples of (server, measure) pairs beyond the baselines kept (4 x latency.max_subjects).",
            vec![(
                String::new(),
                self.latency_unjudged.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "tapwatch_traffic_drop_keys_evicted_total",
            "counter",
            "Tracked destinations the traffic-drop table evicted for busier ones (traffic_drop.max_tracked).",
            vec![(
                String::new(),
                self.drop_keys_evicted.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "tapwatch_alerts_suppressed_total",
            "counter",
            "Alert events not sent because of a silence, a mute, a disabled kind or a cooldown.",
            vec![(
                String::new(),
                self.alerts_suppressed.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "tapwatch_windows_total",
            "counter",
            "Base windows merged and judged.",
            vec![(String::new(), self.windows.load(Ordering::Relaxed) as f64)],
        );
        family(
            "tapwatch_window_lag_seconds",
            "gauge",
            "Wall time since the end of the last merged window.",
            vec![(
                String::new(),
                self.window_lag_ms.load(Ordering::Relaxed) as f64 / 1e3,
            )],
        );
        let views = self
            .views
            .lock()
            .map(|v| {
                (
                    v.alert_counts.clone(),
                    v.webhooks.clone(),
                    v.alerts.as_array().map(Vec::len).unwrap_or(0),
                )
            })
            .unwrap_or_default();
        let (counts, hooks, open) = views;
        let mut rows = Vec::new();
        if let Some(m) = counts.as_object() {
            for (k, v) in m {
                let (kind, state) = k.split_once('/').unwrap_or((k, ""));
                rows.push((
                    format!("{{kind=\"{}\",state=\"{}\"}}", escape(kind), escape(state)),
                    v.as_f64().unwrap_or(0.0),
                ));
            }
        }
        family(
            "tapwatch_alert_events_total",
            "counter",
            "Alert events raised, by kind and state.",
            rows,
        );
        family(
            "tapwatch_open_alerts",
            "gauge",
            "Alerts firing now.",
            vec![(String::new(), open as f64)],
        );
        let hook = |i: usize| {
            hooks
                .iter()
                .map(|(u, s)| (format!("{{url=\"{}\"}}", escape(u)), s[i] as f64))
                .collect::<Vec<_>>()
        };
        family(
            "tapwatch_webhook_delivered_total",
            "counter",
            "Alert events delivered to a webhook.",
            hook(0),
        );
        family(
            "tapwatch_webhook_retries_total",
            "counter",
            "Webhook attempts that failed and were retried.",
            hook(1),
        );
        family(
            "tapwatch_webhook_rejected_total",
            "counter",
            "Alert events a webhook rejected with a 4xx (not retried).",
            hook(2),
        );
        family(
            "tapwatch_webhook_spool_overflow_total",
            "counter",
            "Alert events refused because the spool was full.",
            hook(3),
        );
        family(
            "tapwatch_webhook_spooled",
            "gauge",
            "Alert events waiting in a webhook's spool.",
            hook(4),
        );
        self.sflow_metrics(&mut out);
        out
    }

    /// The latest snapshot of every sFlow source (workers publish them every second).
    pub fn sflow_views(&self) -> Vec<crate::sources::SflowView> {
        self.workers
            .iter()
            .filter_map(|w| w.sflow.lock().ok().and_then(|v| v.clone()))
            .collect()
    }

    /// The sFlow sources' families: decoder counters per socket, and the latest interface
    /// counters the agents sent, per agent and ifIndex.
    fn sflow_metrics(&self, out: &mut String) {
        let views = self.sflow_views();
        if views.is_empty() {
            return;
        }
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let per_socket = |f: &dyn Fn(&tapwatch_capture::sflow::SflowStats) -> u64| {
            views
                .iter()
                .map(|v| (format!("{{listen=\"{}\"}}", escape(&v.listen)), f(&v.stats)))
                .collect::<Vec<_>>()
        };
        for (name, help, f) in [
            (
                "tapwatch_sflow_datagrams_total",
                "sFlow datagrams received.",
                (|s: &tapwatch_capture::sflow::SflowStats| s.datagrams)
                    as fn(&tapwatch_capture::sflow::SflowStats) -> u64,
            ),
            (
                "tapwatch_sflow_samples_total",
                "Sampled packet headers decoded.",
                |s| s.frames,
            ),
            (
                "tapwatch_sflow_estimated_packets_total",
                "Packets the samples stand for (each sample times its rate).",
                |s| s.estimated_packets,
            ),
            (
                "tapwatch_sflow_lost_datagrams_total",
                "Datagrams lost between the agents and tapwatch (sequence gaps).",
                |s| s.lost_datagrams,
            ),
            (
                "tapwatch_sflow_lost_samples_total",
                "Samples lost (gaps in each data source's sample sequence).",
                |s| s.lost_samples,
            ),
            (
                "tapwatch_sflow_agent_drops_total",
                "Samples the agents dropped themselves (their drops counters).",
                |s| s.agent_drops,
            ),
            (
                "tapwatch_sflow_unsupported_headers_total",
                "Sampled headers of a framing tapwatch does not read.",
                |s| s.unsupported_headers,
            ),
        ] {
            family(name, "counter", help, per_socket(&f));
        }
        let mut malformed = Vec::new();
        for v in &views {
            for (fault, n) in tapwatch_capture::sflow::SflowFault::ALL
                .iter()
                .zip(v.stats.malformed)
            {
                malformed.push((
                    format!(
                        "{{listen=\"{}\",reason=\"{}\"}}",
                        escape(&v.listen),
                        fault.name()
                    ),
                    n,
                ));
            }
        }
        family(
            "tapwatch_sflow_malformed_total",
            "counter",
            "sFlow datagrams that could not be decoded (in whole or in part), by reason.",
            malformed,
        );
        type Get = fn(&InterfaceCounters) -> u64;
        let names: [(&str, &str, &str, Get); 7] = [
            (
                "in_octets",
                "counter",
                "Octets received on the interface (agent's ifInOctets).",
                |c| c.in_octets,
            ),
            (
                "out_octets",
                "counter",
                "Octets sent on the interface (ifOutOctets).",
                |c| c.out_octets,
            ),
            (
                "in_discards",
                "counter",
                "Inbound packets discarded (ifInDiscards).",
                |c| u64::from(c.in_discards),
            ),
            (
                "out_discards",
                "counter",
                "Outbound packets discarded (ifOutDiscards).",
                |c| u64::from(c.out_discards),
            ),
            (
                "in_errors",
                "counter",
                "Inbound packets with errors (ifInErrors).",
                |c| u64::from(c.in_errors),
            ),
            (
                "out_errors",
                "counter",
                "Outbound packets with errors (ifOutErrors).",
                |c| u64::from(c.out_errors),
            ),
            (
                "speed_bits",
                "gauge",
                "Interface speed, bits/s (ifSpeed).",
                |c| c.if_speed,
            ),
        ];
        for (name, kind, help, get) in names {
            let rows = views
                .iter()
                .flat_map(|v| &v.interfaces)
                .map(|(agent, if_index, c)| {
                    (
                        format!(
                            "{{agent=\"{}\",ifindex=\"{if_index}\"}}",
                            escape(&agent.to_string())
                        ),
                        get(c),
                    )
                })
                .collect();
            family(&format!("tapwatch_sflow_if_{name}"), kind, help, rows);
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /api/alerts/<id>/pcap`: the alert's evidence capture (400 for what is not an
/// alert id, 404 when there is none).
fn evidence_pcap(telemetry: &Telemetry, id: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).expect("ASCII header");
    let text = |status: u16, body: &str| {
        tiny_http::Response::from_data(body.as_bytes().to_vec())
            .with_status_code(status)
            .with_header(header("Content-Type", "text/plain"))
    };
    let dir = telemetry
        .data_dir
        .get()
        .map(|d| tapwatch_storage::evidence::under(d));
    let Some(path) =
        tapwatch_storage::evidence::file_of(dir.as_deref().unwrap_or(std::path::Path::new("")), id)
    else {
        return text(400, "not an alert id: 16 hex digits\n");
    };
    match dir.and_then(|_| std::fs::read(&path).ok()) {
        Some(bytes) => tiny_http::Response::from_data(bytes)
            .with_header(header("Content-Type", crate::evidence::pcap::CONTENT_TYPE))
            .with_header(header(
                "Content-Disposition",
                &format!("attachment; filename=\"{id}.pcap\""),
            ))
            .with_header(header("Cache-Control", "no-store")),
        None => text(404, "no evidence capture for this alert\n"),
    }
}

/// The status page: plain HTML and JavaScript polling the JSON API every two seconds.
const STATUS_PAGE: &str = include_str!("status.html");

/// Serves the endpoint on `addr` until `stop` is set.
pub fn serve(
    addr: &str,
    telemetry: Arc<Telemetry>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("listening on {addr} (--listen)"))?;
    Ok(std::thread::Builder::new().name("tapwatch-http".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else { continue };
            let Some(req) = crate::console::serve(req, &telemetry) else { continue };
            let path = req.url().split('?').next().unwrap_or("").to_string();
            if let Some(id) = path.strip_prefix("/api/alerts/").and_then(|p| p.strip_suffix("/pcap")) {
                let _ = req.respond(evidence_pcap(&telemetry, id));
                continue;
            }
            let json = |v: serde_json::Value| (200, "application/json", serde_json::to_string_pretty(&v).unwrap_or_default());
            let (status, ctype, body) = match path.as_str() {
                "/metrics" => (200, "text/plain; version=0.0.4", telemetry.metrics()),
                "/healthz" => (200, "text/plain", "ok\n".to_string()),
                "/readyz" if telemetry.ready.load(Ordering::Relaxed) => (200, "text/plain", "ready\n".to_string()),
                "/readyz" => (503, "text/plain", "capture not open yet\n".to_string()),
                "/api/top" => json(telemetry.views.lock().map(|v| v.top.clone()).unwrap_or_default()),
                "/api/alerts" => json(telemetry.views.lock().map(|v| v.alerts.clone()).unwrap_or_default()),
                "/api/tenants" => json(telemetry.views.lock().map(|v| v.tenants.clone()).unwrap_or_default()),
                "/api/latency" => json(telemetry.views.lock().map(|v| v.latency.json()).unwrap_or_default()),
                "/api/heartbeats" => json(serde_json::Value::Array(telemetry.workers.iter().flat_map(|w| w.heartbeats.lock().map(|h| h.clone()).unwrap_or_default()).collect())),
                "/" | "/status" => (200, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
                _ => (404, "text/plain", "not found: try /console/, /status, /metrics, /healthz, /readyz, /api/top, /api/alerts, /api/tenants, /api/heartbeats\n".to_string()),
            };
            let header = tiny_http::Header::from_bytes("Content-Type", ctype).expect("static header");
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
        }
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_empty_lists_before_the_first_window() {
        let t = Telemetry::new("eth0", 1);
        let v = t.views.lock().unwrap();
        assert_eq!(v.alerts, serde_json::json!([]));
        assert_eq!(v.top["sources"], serde_json::json!([]));
        assert_eq!(v.tenants, serde_json::json!({}));
    }

    #[test]
    fn sflow_sources_and_their_agents_interfaces_are_on_metrics() {
        let t = Telemetry::new("sflow", 2);
        assert!(
            !t.metrics().contains("tapwatch_sflow"),
            "no sFlow, no families"
        );
        let mut stats = tapwatch_capture::sflow::SflowStats {
            datagrams: 7,
            lost_datagrams: 2,
            ..Default::default()
        };
        stats.malformed[1] = 3;
        *t.workers[1].sflow.lock().unwrap() = Some(crate::sources::SflowView {
            listen: "0.0.0.0:6343".into(),
            stats,
            interfaces: vec![(
                "192.0.2.1".parse().unwrap(),
                12,
                InterfaceCounters {
                    in_octets: 100,
                    out_octets: 200,
                    if_speed: 10_000_000_000,
                    ..Default::default()
                },
            )],
        });
        let m = t.metrics();
        for line in [
            "tapwatch_sflow_datagrams_total{listen=\"0.0.0.0:6343\"} 7",
            "tapwatch_sflow_lost_datagrams_total{listen=\"0.0.0.0:6343\"} 2",
            "tapwatch_sflow_malformed_total{listen=\"0.0.0.0:6343\",reason=\"version\"} 3",
            "tapwatch_sflow_if_in_octets{agent=\"192.0.2.1\",ifindex=\"12\"} 100",
            "tapwatch_sflow_if_speed_bits{agent=\"192.0.2.1\",ifindex=\"12\"} 10000000000",
        ] {
            assert!(m.contains(line), "{line} missing from:\n{m}");
        }
    }
}
