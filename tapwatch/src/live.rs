//! `tapwatch run`: live capture workers, each with its own classifier view, totals and
//! analyzer shard; closed windows and findings go to the merger on the main thread.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tapwatch_analyzer::{Finding, Merger, Shard, Totals, WindowStats};
use tapwatch_capture::live::{parse_bpf_program, Backend, LiveCapture, LiveConfig};
use tapwatch_capture::SourceStats;
use tapwatch_classifier::Classifier;

use crate::http::{Telemetry, WorkerCounters};
use crate::{output, CommonArgs};

pub struct LiveArgs {
    pub interface: String,
    pub common: CommonArgs,
    pub backend: Backend,
    pub workers: usize,
    pub bpf_file: Option<PathBuf>,
    pub promiscuous: bool,
    pub ring_mib: u32,
    pub duration: Option<f64>,
    pub count: Option<u64>,
    pub alerts_out: Option<PathBuf>,
    pub listen: Option<String>,
    pub user: Option<String>,
}

/// Packets a worker counts locally before publishing to the shared counter.
const PUBLISH_EVERY: u64 = 256;
/// How long a worker waits for a frame before ticking event time with the wall clock.
const POLL: Duration = Duration::from_millis(50);

/// The classifier in use, replaced whole on SIGHUP; workers compare the generation between
/// batches of packets, never per packet.
struct ClassifierCell {
    current: Mutex<Arc<Classifier>>,
    generation: AtomicU64,
}

impl ClassifierCell {
    fn new(c: Classifier) -> ClassifierCell {
        ClassifierCell {
            current: Mutex::new(Arc::new(c)),
            generation: AtomicU64::new(0),
        }
    }

    fn get(&self) -> Arc<Classifier> {
        self.current
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn set(&self, c: Classifier) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = Arc::new(c);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// What workers send the merger: never per packet, only per window or per finding.
enum ToMerger {
    Window(usize, Box<WindowStats>),
    Findings(Vec<Finding>),
}

/// Switches to an unprivileged user once the capture sockets are open (they stay usable).
fn drop_privileges(user: &str) -> anyhow::Result<()> {
    let name = std::ffi::CString::new(user).context("--user")?;
    // SAFETY: getpwnam reads a static record; uid and gid are copied out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    anyhow::ensure!(!pw.is_null(), "--user {user}: no such user");
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    // SAFETY: plain syscalls; each result is checked.
    unsafe {
        anyhow::ensure!(
            libc::setgroups(0, std::ptr::null()) == 0,
            "--user {user}: setgroups: {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(
            libc::setgid(gid) == 0,
            "--user {user}: setgid({gid}): {}",
            std::io::Error::last_os_error()
        );
        anyhow::ensure!(
            libc::setuid(uid) == 0,
            "--user {user}: setuid({uid}): {}",
            std::io::Error::last_os_error()
        );
    }
    tracing::info!("capture open; running as {user} (uid {uid}, gid {gid})");
    Ok(())
}

/// Publishes a worker's counters for `/metrics` (never per packet).
fn publish(c: &WorkerCounters, totals: &Totals, shard: &Shard) {
    c.packets.store(totals.packets, Ordering::Relaxed);
    c.bytes.store(totals.bytes, Ordering::Relaxed);
    c.malformed
        .store(totals.malformed_total(), Ordering::Relaxed);
    c.late.store(shard.counters.late, Ordering::Relaxed);
    c.heartbeat_flows
        .store(shard.heartbeat_flows().0 as u64, Ordering::Relaxed);
    c.pending_handshakes
        .store(shard.pending_handshakes() as u64, Ordering::Relaxed);
}

/// Refreshes the JSON views after a window was merged (or once, after a replay).
/// Every worker's periodic flows, as last published.
fn periodic_list(telemetry: &Telemetry) -> Vec<serde_json::Value> {
    telemetry
        .workers
        .iter()
        .filter_map(|w| w.heartbeats.lock().ok().map(|h| h.clone()))
        .flatten()
        .collect()
}

pub(crate) fn refresh_views(
    t: &Telemetry,
    merger: &Merger,
    alerts: &crate::alerts::AlertOutput,
    classifier: &tapwatch_classifier::Classifier,
) {
    t.windows.store(merger.windows[0], Ordering::Relaxed);
    let tenants = classifier.tenants();
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
                tenants.name(tapwatch_classifier::TenantId(i as u16)).to_string(),
                serde_json::json!({"exponent": f.slope, "exponent_ci95": [f.slope_low, f.slope_high], "r2": f.r2, "points": f.n, "node_range": range, "setup_rate_per_s": rate, "history": merger.growth_history(i)}),
            );
        }
    }
    if let Ok(mut v) = t.views.lock() {
        v.top = top.unwrap_or_default();
        v.alerts = serde_json::Value::Array(alerts.open_list());
        v.tenants = serde_json::Value::Object(per_tenant);
        v.alert_counts = alerts.counts();
        v.webhooks = alerts.sink_stats();
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    let (config, classifier) = crate::config::load(&args.common)?;
    let workers = args.workers.max(1);
    let mut live = LiveConfig::new(&args.interface);
    live.backend = args.backend;
    live.promiscuous = args.promiscuous;
    live.ring_mib = args.ring_mib;
    if let Some(path) = &args.bpf_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading BPF program {}", path.display()))?;
        live.filter = Some(parse_bpf_program(path, &text)?);
    }
    if workers > 1 {
        live.fanout_group = Some((std::process::id() & 0xffff) as u16);
    }
    let telemetry = Arc::new(Telemetry::new(&args.interface, workers));
    let http_stop = Arc::new(AtomicBool::new(false));
    let http = match &args.listen {
        Some(addr) => Some(crate::http::serve(
            addr,
            Arc::clone(&telemetry),
            Arc::clone(&http_stop),
        )?),
        None => None,
    };
    // Open every socket before reporting readiness, so no frame after it is missed.
    let mut captures = Vec::with_capacity(workers);
    for _ in 0..workers {
        captures.push(LiveCapture::open(&live)?);
    }
    // Capture sockets are open: nothing below needs root any more.
    if let Some(user) = &args.user {
        drop_privileges(user)?;
    }
    let cell = Arc::new(ClassifierCell::new(classifier));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .context("installing the SIGHUP handler")?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let mut alerts = crate::alerts::AlertOutput::new(
        args.alerts_out.as_deref(),
        &config.rules,
        &config.webhook,
        &args.common.delivery,
        &config.storage.data_dir,
    )?;
    let mut merger = Merger::new(&config.analyzer, &cell.get(), workers);
    let mut windows = crate::alerts::WindowLog::open(args.common.windows_out.as_deref())?;
    merger.record_windows(windows.enabled());
    let mut store = crate::store::StoreSink::open(
        &config,
        &args.common.store,
        "run",
        vec![args.interface.clone()],
    )?;
    if let Some(s) = &store {
        merger.keep_closed(true);
        alerts.keep_for_store();
        let _ = telemetry.storage.set(s.stats());
    }
    let seen = Arc::new(AtomicU64::new(0));
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    tracing::info!(
        "capturing on {} ({:?} backend, {workers} worker{})",
        args.interface,
        args.backend,
        if workers == 1 { "" } else { "s" }
    );
    telemetry.ready.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<ToMerger>();
    let (storage, results): (
        Option<serde_json::Value>,
        Vec<anyhow::Result<(Totals, SourceStats)>>,
    ) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let handles: Vec<_> = captures
            .into_iter()
            .enumerate()
            .map(|(id, mut cap)| {
                let (stop, seen, cell, tx, config) = (
                    Arc::clone(&stop),
                    Arc::clone(&seen),
                    Arc::clone(&cell),
                    tx.clone(),
                    &config,
                );
                let telemetry = Arc::clone(&telemetry);
                let count = args.count;
                scope.spawn(move || -> anyhow::Result<(Totals, SourceStats)> {
                    let mut classifier = cell.get();
                    let mut generation = cell.generation();
                    let mut totals = Totals::new(classifier.type_count());
                    let mut shard = Shard::new(&config.analyzer, &classifier);
                    let mut findings = Vec::new();
                    let mut closed = Vec::new();
                    let mut unpublished = 0u64;
                    let mut kernel_read = Instant::now();
                    let counters = &telemetry.workers[id];
                    let send = |findings: &mut Vec<Finding>, closed: &mut Vec<WindowStats>| {
                        if !findings.is_empty() {
                            let _ = tx.send(ToMerger::Findings(std::mem::take(findings)));
                        }
                        for w in closed.drain(..) {
                            let _ = tx.send(ToMerger::Window(id, Box::new(w)));
                        }
                    };
                    loop {
                        if stop.load(Ordering::Relaxed)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
                        if let Some(frame) = cap.next_frame(POLL)? {
                            let meta = classifier.classify(&frame);
                            totals.add(&meta);
                            shard.observe(&meta, &mut findings, &mut closed);
                            if !findings.is_empty() || !closed.is_empty() {
                                send(&mut findings, &mut closed);
                            }
                            unpublished += 1;
                            if unpublished < PUBLISH_EVERY && count.is_none() {
                                continue;
                            }
                        } else {
                            // A quiet link still moves event time: deadlines fire on time.
                            shard.advance(wall_ns(), &mut findings, &mut closed);
                            send(&mut findings, &mut closed);
                        }
                        let total = seen.fetch_add(unpublished, Ordering::Relaxed) + unpublished;
                        unpublished = 0;
                        publish(counters, &totals, &shard);
                        if cell.generation() != generation {
                            generation = cell.generation();
                            classifier = cell.get();
                            shard.relabel(&classifier);
                        }
                        if kernel_read.elapsed() >= Duration::from_secs(1) {
                            kernel_read = Instant::now();
                            let k = cap.stats();
                            counters
                                .kernel_packets
                                .store(k.kernel_packets, Ordering::Relaxed);
                            counters
                                .kernel_drops
                                .store(k.kernel_drops, Ordering::Relaxed);
                            if let Ok(mut h) = counters.heartbeats.lock() {
                                *h = shard.periodic_flows(200);
                            }
                        }
                        if count.is_some_and(|c| total >= c) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    seen.fetch_add(unpublished, Ordering::Relaxed);
                    shard.finish(&mut closed);
                    send(&mut findings, &mut closed);
                    Ok((totals, cap.stats()))
                })
            })
            .collect();
        drop(tx);
        let mut findings = Vec::new();
        // The merger runs here until every worker has hung up.
        loop {
            if reload.swap(false, Ordering::Relaxed) {
                match crate::config::load(&args.common).and_then(|(cfg, c)| {
                    alerts.set_rules(&cfg.rules)?;
                    Ok(c)
                }) {
                    Ok(c) => {
                        merger.relabel(&c);
                        cell.set(c);
                        tracing::info!(
                            "SIGHUP: reloaded the rules and the tenants file; capture went on"
                        );
                    }
                    Err(e) => tracing::error!(
                        "SIGHUP: reload failed, keeping the old configuration: {e:#}"
                    ),
                }
            }
            let msg = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            match msg {
                ToMerger::Window(shard, w) => {
                    let end = w.end_ns;
                    merger.push(shard, *w, &mut findings);
                    windows.write(merger.take_window_log())?;
                    alerts.tick(end)?;
                    refresh_views(&telemetry, &merger, &alerts, &cell.get());
                    if let Some(s) = &mut store {
                        s.windows(&mut merger);
                        if s.periodic_due() {
                            s.periodic(&periodic_list(&telemetry), end);
                        }
                    }
                }
                ToMerger::Findings(f) => findings.extend(f),
            }
            if !findings.is_empty() {
                alerts.publish(std::mem::take(&mut findings))?;
            }
            if let Some(s) = &mut store {
                s.alerts(&alerts.take_for_store());
            }
        }
        merger.finish(&mut findings);
        windows.write(merger.take_window_log())?;
        alerts.publish(findings)?;
        alerts.finish(&args.common.delivery)?;
        let storage = store.take().map(|mut s| {
            s.windows(&mut merger);
            s.alerts(&alerts.take_for_store());
            let end = merger.last_window.as_ref().map_or(0, |w| w.end_ns);
            s.periodic(&periodic_list(&telemetry), end);
            s.close()
        });
        http_stop.store(true, Ordering::Relaxed);
        if let Some(h) = http {
            let _ = h.join();
        }
        Ok((
            storage,
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("capture worker panicked")))
                })
                .collect(),
        ))
    })?;
    let classifier = cell.get();
    let mut totals = Totals::new(classifier.type_count());
    let mut stats = SourceStats::default();
    for r in results {
        let (t, s) = r?;
        totals.merge(&t);
        stats.add(&s);
    }
    output::print_summary(&output::Summary {
        classifier: &classifier,
        totals: &totals,
        stats: &stats,
        warnings: &[],
        elapsed: started.elapsed(),
        common: &args.common,
        origin: output::Origin::Interface(args.interface.clone(), workers),
        analyzer: None,
        merger: Some(&merger),
        alerts: Some(&alerts),
        storage,
        to_stderr: args
            .alerts_out
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "-"),
    })
}
