//! `tapwatch run`: live capture workers → classifier → per-worker totals, merged at the end.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tapwatch_analyzer::Totals;
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
}

/// Packets a worker counts locally before publishing to the shared counter.
const PUBLISH_EVERY: u64 = 256;

pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    let classifier = crate::config::classifier(&args.common)?;
    let workers = args.workers.max(1);
    let mut config = LiveConfig::new(&args.interface);
    config.backend = args.backend;
    config.promiscuous = args.promiscuous;
    config.ring_mib = args.ring_mib;
    if let Some(path) = &args.bpf_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading BPF program {}", path.display()))?;
        config.filter = Some(parse_bpf_program(path, &text)?);
    }
    if workers > 1 {
        config.fanout_group = Some((std::process::id() & 0xffff) as u16);
    }
    // Open every socket before reporting readiness, so no frame after it is missed.
    let mut captures = Vec::with_capacity(workers);
    for _ in 0..workers {
        captures.push(LiveCapture::open(&config)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
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
    let results: Vec<anyhow::Result<(Totals, SourceStats)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = captures
            .into_iter()
            .map(|mut cap| {
                let (stop, seen, classifier) = (Arc::clone(&stop), Arc::clone(&seen), &classifier);
                let count = args.count;
                scope.spawn(move || -> anyhow::Result<(Totals, SourceStats)> {
                    let mut totals = Totals::new(classifier.type_count());
                    let mut unpublished = 0u64;
                    loop {
                        if stop.load(Ordering::Relaxed)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
                        if let Some(frame) = cap.next_frame(Duration::from_millis(50))? {
                            totals.add(&classifier.classify(&frame));
                            unpublished += 1;
                            if unpublished < PUBLISH_EVERY && count.is_none() {
                                continue;
                            }
                        }
                        let total = seen.fetch_add(unpublished, Ordering::Relaxed) + unpublished;
                        unpublished = 0;
                        if count.is_some_and(|c| total >= c) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    seen.fetch_add(unpublished, Ordering::Relaxed);
                    let stats = cap.stats();
                    Ok((totals, stats))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("capture worker panicked")))
            })
            .collect()
    });
    let mut totals = Totals::new(classifier.type_count());
    let mut stats = SourceStats::default();
    for r in results {
        let (t, s) = r?;
        totals.merge(&t);
        stats.add(&s);
    }
    output::print_summary(
        &classifier,
        &totals,
        &stats,
        &[],
        started.elapsed(),
        &args.common,
        &output::Origin::Interface(args.interface.clone(), workers),
    )
}
