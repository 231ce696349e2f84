//! `tapwatch replay`: capture files through the engine, then the summary.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tapwatch_analyzer::Merger;
use tapwatch_capture::{FileReader, FrameSource, MergedReader, Pace, Pacer};

use crate::cpu::ThreadCpu;
use crate::engine::{deal_files, Coordinator, DealOptions};
use crate::{output, CommonArgs, ProgressMode};

/// What `tapwatch replay` was asked to do.
pub struct ReplayOptions<'a> {
    pub files: &'a [PathBuf],
    pub common: &'a CommonArgs,
    pub workers: usize,
    pub pace: Pace,
    pub max_gap: f64,
    pub progress: ProgressMode,
    pub print_packets: bool,
    pub alerts_out: Option<&'a std::path::Path>,
    pub serve: Option<&'a str>,
}

/// Every core the machine offers (the default of `--workers`).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn run(o: ReplayOptions<'_>) -> anyhow::Result<()> {
    let ReplayOptions {
        files,
        common,
        workers,
        pace,
        max_gap,
        progress,
        print_packets,
        alerts_out,
        serve,
    } = o;
    anyhow::ensure!(
        (1..=256).contains(&workers),
        "--workers {workers}: expected 1 to 256"
    );
    let (config, classifier) = crate::config::load(common)?;
    let classifier = Arc::new(classifier);
    let telemetry = Arc::new(crate::http::Telemetry::new("replay", 1));
    if serve.is_some() && !common.store.no_store {
        let _ = telemetry
            .history
            .set(crate::console::History::open(&config)?);
    }
    telemetry
        .data_dir
        .get_or_init(|| config.storage.data_dir.clone());
    let inputs: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let store = crate::store::StoreSink::open(&config, &common.store, "replay", inputs)?;
    // Evidence captures go where the history goes: none with `--no-store`.
    let hub = store.as_ref().and_then(|_| {
        crate::evidence::Hub::new(
            &config.evidence,
            Arc::clone(&classifier),
            &config.storage.data_dir,
        )
    });
    let mut merger = Merger::new(&config.analyzer, &classifier, workers);
    merger.keep_closed(store.is_some());
    merger.record_windows(common.windows_out.is_some());
    let sinks = crate::sinks::standard(
        &config,
        common,
        alerts_out,
        store,
        Arc::clone(&telemetry),
        // Views cost a refresh per window: only for `--serve`.
        serve.map(|_| crate::views::Views::new(Arc::clone(&telemetry), true)),
    )?;
    let mut coordinator = Coordinator::new(merger, &config.rules, workers, sinks)?;
    let mut recorder = hub.as_ref().map(|h| {
        telemetry.evidence.get_or_init(|| Arc::clone(&h.stats));
        coordinator.set_evidence(crate::evidence::Collector::new(Arc::clone(h)));
        // With worker threads the reader runs ahead of the merger: paced, so that its ring
        // still holds what comes before the alerts the merger has yet to raise.
        let lag = 2 * config.analyzer.window_ns() + config.analyzer.grace_ns();
        h.paced_recorder((workers > 1).then_some(lag))
    });
    let mut readers = Vec::with_capacity(files.len());
    for f in files {
        let reader = if f.as_os_str() == "-" {
            FileReader::from_reader("<stdin>", std::io::stdin())?
        } else {
            FileReader::open(f)?
        };
        readers.push(reader);
    }
    let total_size: Option<u64> = readers.iter().map(FileReader::size_hint).sum();
    let show = match progress {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => std::io::stderr().is_terminal(),
    };
    let bar = progress_bar(show, total_size);
    let max_gap = Duration::try_from_secs_f64(max_gap.max(0.0)).context("--max-gap")?;
    let mut pacer = Pacer::new(pace, max_gap);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let started = Instant::now();
    let deal = DealOptions {
        classifier: &classifier,
        analyzer: &config.analyzer,
        workers,
        periodic_every_s: config.storage.periodic_every_s,
        pacer: &mut pacer,
        bar: &bar,
        print_packets,
        stop: &stop,
        evidence: recorder.as_mut(),
    };
    let (dealt, stats, warnings) = if readers.len() == 1 {
        let mut r = readers.pop().expect("one reader");
        let dealt = deal_files(&mut r, deal, &mut coordinator)?;
        (dealt, r.stats(), r.take_warnings())
    } else {
        let mut m = MergedReader::new(readers);
        let dealt = deal_files(&mut m, deal, &mut coordinator)?;
        let warnings = m
            .readers_mut()
            .iter_mut()
            .flat_map(FileReader::take_warnings)
            .collect();
        (dealt, m.stats(), warnings)
    };
    // The reader's ring answers the requests still to come (end of input flushes them).
    if let Some(r) = recorder {
        r.finish();
    }
    let report = coordinator.finish()?;
    bar.finish_and_clear();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let mut threads = dealt.threads;
    threads.push(ThreadCpu::of_this_thread(if workers == 1 {
        "reading, classifying, every flow; the merger stage"
    } else {
        "the merger stage"
    }));
    output::print_summary(&output::Summary {
        classifier: &classifier,
        totals: &dealt.totals,
        stats: &stats,
        warnings: &warnings,
        elapsed: started.elapsed(),
        common,
        origin: output::Origin::Files(files.len(), workers),
        sflow: &[],
        threads: &threads,
        shards: &dealt.shards,
        coordinator: &coordinator,
        report: &report,
        to_stderr: output::stdout_taken(alerts_out, common),
    })?;
    match serve {
        Some(addr) => serve_views(addr, &telemetry, &coordinator, &dealt.totals),
        None => Ok(()),
    }
}

fn progress_bar(show: bool, total: Option<u64>) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} ({bytes_per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} {msg} ({bytes_per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Serves the finished replay's status page and JSON API until SIGINT/SIGTERM.
fn serve_views(
    addr: &str,
    telemetry: &Arc<crate::http::Telemetry>,
    coordinator: &Coordinator,
    totals: &tapwatch_analyzer::Totals,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    crate::views::refresh(telemetry, coordinator.merger(), coordinator.rules());
    let w = &telemetry.workers[0];
    w.packets.store(totals.packets, Ordering::Relaxed);
    w.bytes.store(totals.bytes, Ordering::Relaxed);
    w.malformed
        .store(totals.malformed_total(), Ordering::Relaxed);
    telemetry.ready.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let server = crate::http::serve(addr, Arc::clone(telemetry), stop)?;
    tracing::info!("serving the replay's status page on http://{addr}/status and its console on http://{addr}/console/ until SIGINT/SIGTERM");
    let _ = server.join();
    Ok(())
}
