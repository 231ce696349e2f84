//! `tapwatch replay`: files → classifier → totals → summary.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tapwatch_analyzer::{Analyzer, Totals};
use tapwatch_capture::{FileReader, FrameSource, MergedReader, Pace, Pacer, SourceStats};
use tapwatch_classifier::Classifier;

use crate::{output, CommonArgs, ProgressMode};

/// Packets between progress updates (keeps the per-packet loop free of clock reads).
const PROGRESS_EVERY: u64 = 1 << 16;

/// What `tapwatch replay` was asked to do.
pub struct ReplayOptions<'a> {
    pub files: &'a [PathBuf],
    pub common: &'a CommonArgs,
    pub pace: Pace,
    pub max_gap: f64,
    pub progress: ProgressMode,
    pub print_packets: bool,
    pub alerts_out: Option<&'a std::path::Path>,
    pub serve: Option<&'a str>,
}

pub fn run(o: ReplayOptions<'_>) -> anyhow::Result<()> {
    let ReplayOptions {
        files,
        common,
        pace,
        max_gap,
        progress,
        print_packets,
        alerts_out,
        serve,
    } = o;
    let (config, classifier) = crate::config::load(common)?;
    let mut alerts = crate::alerts::AlertOutput::new(
        alerts_out,
        &config.rules,
        &config.webhook,
        &common.delivery,
        &config.storage.data_dir,
    )?;
    let mut analyzer = Analyzer::new(&config.analyzer, &classifier);
    let inputs: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut store = crate::store::StoreSink::open(&config, &common.store, "replay", inputs)?;
    if store.is_some() {
        analyzer.merger_mut().keep_closed(true);
        alerts.keep_for_store();
    }
    let mut windows = crate::alerts::WindowLog::open(common.windows_out.as_deref())?;
    analyzer.merger_mut().record_windows(windows.enabled());
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
    let started = Instant::now();
    let mut totals = Totals::new(classifier.type_count());
    let mut pipeline = Pipeline {
        classifier: &classifier,
        totals: &mut totals,
        analyzer: &mut analyzer,
        alerts: &mut alerts,
        windows: &mut windows,
        store: store.as_mut(),
        pacer: &mut pacer,
        bar: &bar,
        print_packets,
    };
    let (stats, warnings) = if readers.len() == 1 {
        let mut r = readers.pop().expect("one reader");
        pipeline.drive(&mut r)?;
        (r.stats(), r.take_warnings())
    } else {
        let mut m = MergedReader::new(readers);
        pipeline.drive(&mut m)?;
        let warnings = m
            .readers_mut()
            .iter_mut()
            .flat_map(FileReader::take_warnings)
            .collect();
        (m.stats(), warnings)
    };
    analyzer.finish();
    alerts.publish(analyzer.take_findings())?;
    windows.write(analyzer.merger_mut().take_window_log())?;
    alerts.finish(&common.delivery)?;
    let storage = store.map(|mut s| {
        s.windows(analyzer.merger_mut());
        s.alerts(&alerts.take_for_store());
        let last_ns = analyzer
            .merger()
            .last_window
            .as_ref()
            .map_or(0, |w| w.end_ns);
        s.periodic(&analyzer.shard().periodic_flows(usize::MAX), last_ns);
        s.close()
    });
    bar.finish_and_clear();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    output::print_summary(&output::Summary {
        classifier: &classifier,
        totals: &totals,
        stats: &stats,
        warnings: &warnings,
        elapsed: started.elapsed(),
        common,
        origin: output::Origin::Files(files.len()),
        analyzer: Some(&analyzer),
        merger: None,
        alerts: Some(&alerts),
        storage,
        to_stderr: alerts_out.is_some_and(|p| p.as_os_str() == "-"),
    })?;
    match serve {
        Some(addr) => serve_views(addr, &analyzer, &alerts, &classifier, &totals),
        None => Ok(()),
    }
}

/// The per-packet path of a replay.
struct Pipeline<'a> {
    classifier: &'a Classifier,
    totals: &'a mut Totals,
    analyzer: &'a mut Analyzer,
    alerts: &'a mut crate::alerts::AlertOutput,
    windows: &'a mut crate::alerts::WindowLog,
    store: Option<&'a mut crate::store::StoreSink>,
    pacer: &'a mut Pacer,
    bar: &'a ProgressBar,
    print_packets: bool,
}

impl Pipeline<'_> {
    #[inline]
    fn drive<S: FrameSource>(&mut self, source: &mut S) -> anyhow::Result<()> {
        let mut next_tick = PROGRESS_EVERY;
        while let Some(frame) = source.next_frame()? {
            self.pacer.wait(frame.ts_ns);
            let meta = self.classifier.classify(&frame);
            self.totals.add(&meta);
            self.analyzer.observe(&meta);
            if self.analyzer.has_findings() {
                self.alerts.publish(self.analyzer.take_findings())?;
                if let Some(s) = self.store.as_deref_mut() {
                    s.alerts(&self.alerts.take_for_store());
                }
            }
            if self.analyzer.merger().has_closed() {
                if let Some(s) = self.store.as_deref_mut() {
                    s.windows(self.analyzer.merger_mut());
                }
            }
            if self.analyzer.merger().has_window_log() {
                self.windows
                    .write(self.analyzer.merger_mut().take_window_log())?;
            }
            if self.print_packets {
                let line = crate::output::packet_line(self.classifier, &meta);
                let n = self.totals.packets;
                self.bar.suspend(|| eprintln!("{n:>7} {line}"));
            }
            if self.totals.packets >= next_tick {
                next_tick += PROGRESS_EVERY;
                self.bar.set_position(source.position());
                self.bar
                    .set_message(format!("{} packets", self.totals.packets));
            }
        }
        Ok(())
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

/// Counters of the capture layer as shown in summaries.
pub fn capture_totals(stats: &SourceStats) -> serde_json::Value {
    serde_json::json!({
        "frames": stats.frames,
        "truncated_records": stats.truncated_records,
        "corrupt_records": stats.corrupt_records,
        "skipped_blocks": stats.skipped_blocks,
        "kernel_packets": stats.kernel_packets,
        "kernel_drops": stats.kernel_drops,
        "kernel_freezes": stats.kernel_freezes,
    })
}

/// Serves the finished replay's status page and JSON API until SIGINT/SIGTERM.
fn serve_views(
    addr: &str,
    analyzer: &Analyzer,
    alerts: &crate::alerts::AlertOutput,
    classifier: &Classifier,
    totals: &Totals,
) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let telemetry = Arc::new(crate::http::Telemetry::new("replay", 1));
    crate::live::refresh_views(&telemetry, analyzer.merger(), alerts, classifier);
    let w = &telemetry.workers[0];
    w.packets.store(totals.packets, Ordering::Relaxed);
    w.bytes.store(totals.bytes, Ordering::Relaxed);
    w.malformed
        .store(totals.malformed_total(), Ordering::Relaxed);
    if let Ok(mut h) = w.heartbeats.lock() {
        *h = analyzer.shard().periodic_flows(200);
    }
    telemetry.ready.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let server = crate::http::serve(addr, telemetry, stop)?;
    tracing::info!("serving the replay's status page on http://{addr}/status until SIGINT/SIGTERM");
    let _ = server.join();
    Ok(())
}
