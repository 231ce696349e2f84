//! `tapwatch run`: live capture workers, each with its own classifier view, totals and
//! analyzer shard; closed windows and findings go to the merger on the main thread.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tapwatch_analyzer::{Finding, Merger, Shard, Totals, WindowStats};
use tapwatch_capture::live::{parse_bpf_program, Backend, LiveCapture, LiveConfig};
use tapwatch_capture::SourceStats;

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
}

/// Packets a worker counts locally before publishing to the shared counter.
const PUBLISH_EVERY: u64 = 256;
/// How long a worker waits for a frame before ticking event time with the wall clock.
const POLL: Duration = Duration::from_millis(50);

/// What workers send the merger: never per packet, only per window or per finding.
enum ToMerger {
    Window(usize, Box<WindowStats>),
    Findings(Vec<Finding>),
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
    // Open every socket before reporting readiness, so no frame after it is missed.
    let mut captures = Vec::with_capacity(workers);
    for _ in 0..workers {
        captures.push(LiveCapture::open(&live)?);
    }
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
    )?;
    let mut merger = Merger::new(&config.analyzer, &classifier, workers);
    let seen = Arc::new(AtomicU64::new(0));
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    eprintln!(
        "tapwatch: capturing on {} ({:?} backend, {workers} worker{})",
        args.interface,
        args.backend,
        if workers == 1 { "" } else { "s" }
    );
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<ToMerger>();
    let results: Vec<anyhow::Result<(Totals, SourceStats)>> =
        std::thread::scope(|scope| -> anyhow::Result<_> {
            let handles: Vec<_> = captures
                .into_iter()
                .enumerate()
                .map(|(id, mut cap)| {
                    let (stop, seen, classifier, tx, config) = (
                        Arc::clone(&stop),
                        Arc::clone(&seen),
                        &classifier,
                        tx.clone(),
                        &config,
                    );
                    let count = args.count;
                    scope.spawn(move || -> anyhow::Result<(Totals, SourceStats)> {
                        let mut totals = Totals::new(classifier.type_count());
                        let mut shard = Shard::new(&config.analyzer, classifier);
                        let mut findings = Vec::new();
                        let mut closed = Vec::new();
                        let mut unpublished = 0u64;
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
                            let total =
                                seen.fetch_add(unpublished, Ordering::Relaxed) + unpublished;
                            unpublished = 0;
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
            for msg in rx.iter() {
                match msg {
                    ToMerger::Window(shard, w) => {
                        let end = w.end_ns;
                        merger.push(shard, *w, &mut findings);
                        alerts.tick(end)?;
                    }
                    ToMerger::Findings(f) => findings.extend(f),
                }
                if !findings.is_empty() {
                    alerts.publish(std::mem::take(&mut findings))?;
                }
            }
            merger.finish(&mut findings);
            alerts.publish(findings)?;
            alerts.finish(&args.common.delivery)?;
            Ok(handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("capture worker panicked")))
                })
                .collect())
        })?;
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
        to_stderr: args
            .alerts_out
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "-"),
    })
}
