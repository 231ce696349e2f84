//! `tapwatch run`: the engine fed by live rings, one per worker (the kernel's fan-out hash
//! spreads flows over them); each worker classifies its own frames, and a quiet link still
//! moves event time with the wall clock. The merger stage runs on the main thread.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tapwatch_analyzer::{Merger, Shard, Totals};
use tapwatch_capture::live::{parse_bpf_program, sample_one_in, Backend, LiveCapture, LiveConfig};
use tapwatch_capture::SourceStats;
use tapwatch_classifier::Classifier;

use crate::cpu::ThreadCpu;
use crate::engine::{Coordinator, Worker, WorkerOutput};
use crate::http::{Telemetry, WorkerCounters};
use crate::keepup::KeepUp;
use crate::sources::{SflowView, Source};
use crate::views::wall_ns;
use crate::{output, CommonArgs};

pub struct LiveArgs {
    pub interface: Option<String>,
    pub sflow: Vec<std::net::SocketAddr>,
    pub sample: u32,
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
/// Periodic flows a worker shows on the status page at most.
const SHOWN_PERIODIC: usize = 200;

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

    fn set(&self, c: Arc<Classifier>) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = c;
        }
        self.generation.fetch_add(1, Ordering::Release);
    }
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
    let lost = shard.lost_work();
    c.heartbeat_untracked
        .store(lost.heartbeat_untracked, Ordering::Relaxed);
    c.handshake_untracked
        .store(lost.handshake_untracked, Ordering::Relaxed);
    for (counter, n) in c.latency_untracked.iter().zip([
        lost.latency_flows_untracked,
        lost.latency_echo_untracked,
        lost.latency_samples_untracked,
    ]) {
        counter.store(n, Ordering::Relaxed);
    }
    c.retransmit_flows_evicted
        .store(lost.retransmit_flows_evicted, Ordering::Relaxed);
    c.upgrades_untracked
        .store(lost.upgrades_untracked, Ordering::Relaxed);
}

pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    let (config, classifier) = crate::config::load(&args.common)?;
    let mut sflow = args.sflow.clone();
    sflow.extend(config.sflow.iter().map(|s| s.listen));
    anyhow::ensure!(
        args.interface.is_some() || !sflow.is_empty(),
        "nothing to read: give --interface IFACE, --sflow ADDR:PORT or an [[sflow]] table"
    );
    let rings = if args.interface.is_some() {
        args.workers.max(1)
    } else {
        0
    };
    // One worker per ring, then one per sFlow socket.
    let workers = rings + sflow.len();
    let label = match (&args.interface, sflow.is_empty()) {
        (Some(i), true) => i.clone(),
        (Some(i), false) => format!("{i}+sflow"),
        (None, _) => "sflow".to_string(),
    };
    let mut live = LiveConfig::new(args.interface.as_deref().unwrap_or_default());
    live.backend = args.backend;
    live.promiscuous = args.promiscuous;
    live.ring_mib = args.ring_mib;
    if let Some(path) = &args.bpf_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading BPF program {}", path.display()))?;
        live.filter = Some(parse_bpf_program(path, &text)?);
    }
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.sample),
        "--sample {}: expected 1 in N packets with N from 1 to 1000000",
        args.sample
    );
    if args.sample > 1 {
        // Sampled in the kernel: the frames the ring never sees cost nothing.
        live.filter = Some(sample_one_in(args.sample, live.filter.take()));
    }
    if rings > 1 {
        live.fanout_group = Some((std::process::id() & 0xffff) as u16);
    }
    let telemetry = Arc::new(Telemetry::new(&label, workers));
    if !args.common.store.no_store {
        let _ = telemetry
            .history
            .set(crate::console::History::open(&config)?);
    }
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
    for _ in 0..rings {
        captures.push(Source::Ring(LiveCapture::open(&live)?, args.sample));
    }
    for addr in &sflow {
        captures.push(Source::sflow(*addr)?);
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
    let classifier = cell.get();
    let mut store =
        crate::store::StoreSink::open(&config, &args.common.store, "run", vec![label.clone()])?;
    if let (Some(s), false) = (&mut store, sflow.is_empty()) {
        s.store_interfaces(Arc::clone(&telemetry));
    }
    let store_on = store.is_some();
    let mut merger = Merger::new(&config.analyzer, &classifier, workers);
    merger.keep_closed(store_on);
    if let Some(s) = &store {
        crate::store::restore_growth(&config, s.agent(), &mut merger);
    }
    merger.record_windows(args.common.windows_out.is_some());
    let sinks = crate::sinks::standard(
        &config,
        &args.common,
        args.alerts_out.as_deref(),
        store,
        Arc::clone(&telemetry),
        Some(crate::views::Views::new(Arc::clone(&telemetry), false)),
    )?;
    let mut coordinator = Coordinator::new(merger, &config.rules, workers, sinks)?;
    telemetry
        .data_dir
        .get_or_init(|| config.storage.data_dir.clone());
    // One evidence ring per worker (none with `--no-store`).
    let hub = store_on.then(|| {
        crate::evidence::Hub::new(
            &config.evidence,
            Arc::clone(&classifier),
            &config.storage.data_dir,
        )
    });
    let mut recorders: Vec<Option<crate::evidence::Recorder>> = match hub.flatten() {
        Some(h) => {
            telemetry.evidence.get_or_init(|| Arc::clone(&h.stats));
            coordinator.set_evidence(crate::evidence::Collector::new(Arc::clone(&h)));
            (0..workers).map(|_| Some(h.recorder())).collect()
        }
        None => (0..workers).map(|_| None).collect(),
    };
    let seen = Arc::new(AtomicU64::new(0));
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    if let Some(i) = &args.interface {
        tracing::info!(
            "capturing on {i} ({:?} backend, {rings} worker{})",
            args.backend,
            if rings == 1 { "" } else { "s" }
        );
    }
    for addr in captures.iter().filter_map(Source::sflow_addr) {
        tracing::info!("receiving sFlow on {addr}");
    }
    telemetry.ready.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, WorkerOutput)>();
    let periodic_every_s = config.storage.periodic_every_s;
    let (report, results) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let handles = captures
            .into_iter()
            .enumerate()
            .zip(recorders.drain(..))
            .map(|((id, mut cap), mut recorder)| {
                let (stop, seen, cell, tx, config) = (
                    Arc::clone(&stop),
                    Arc::clone(&seen),
                    Arc::clone(&cell),
                    tx.clone(),
                    &config,
                );
                let telemetry = Arc::clone(&telemetry);
                let count = args.count;
                let name = format!("{}{id}", crate::keepup::WORKER);
                crate::engine::spawn_named(
                    scope,
                    name,
                    move || -> anyhow::Result<(Totals, Shard, SourceStats, Option<SflowView>, ThreadCpu)> {
                        let mut classifier = cell.get();
                        let mut generation = cell.generation();
                        let mut worker =
                            Worker::new(&config.analyzer, &classifier, periodic_every_s);
                        let mut unpublished = 0u64;
                        let mut kernel_read = Instant::now();
                        let counters = &telemetry.workers[id];
                        let send = |worker: &mut Worker| {
                            for out in worker.drain() {
                                let _ = tx.send((id, out));
                            }
                        };
                        loop {
                            if stop.load(Ordering::Relaxed)
                                || deadline.is_some_and(|d| Instant::now() >= d)
                            {
                                break;
                            }
                            if let Some((frame, weight)) = cap.next(POLL)? {
                                let mut meta = classifier.classify(&frame);
                                meta.weight = weight;
                                if let Some(r) = &mut recorder {
                                    r.record(&frame, &meta);
                                }
                                let hashes = worker.prefetch(&meta);
                                worker.packet(&meta, &hashes, meta.ts_ns);
                                if worker.has_output() {
                                    send(&mut worker);
                                }
                                unpublished += 1;
                                if unpublished < PUBLISH_EVERY && count.is_none() {
                                    continue;
                                }
                            } else {
                                // A quiet link still moves event time: deadlines fire on time.
                                worker.advance(wall_ns());
                                send(&mut worker);
                                if let Some(r) = &mut recorder {
                                    r.tick(wall_ns());
                                }
                            }
                            let total =
                                seen.fetch_add(unpublished, Ordering::Relaxed) + unpublished;
                            unpublished = 0;
                            publish(counters, worker.totals(), worker.shard());
                            if cell.generation() != generation {
                                generation = cell.generation();
                                classifier = cell.get();
                                worker.shard_mut().relabel(&classifier);
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
                                    *h = worker.shard().periodic_flows(SHOWN_PERIODIC);
                                }
                                if let (Some(v), Ok(mut slot)) =
                                    (cap.sflow_view(), counters.sflow.lock())
                                {
                                    *slot = Some(v);
                                }
                            }
                            if count.is_some_and(|c| total >= c) {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        seen.fetch_add(unpublished, Ordering::Relaxed);
                        if let Some(r) = recorder {
                            r.finish();
                        }
                        worker.finish();
                        send(&mut worker);
                        let (totals, shard) = worker.into_parts();
                        let view = cap.sflow_view();
                        // The storage sink stores the last counter samples at its finish.
                        if let (Some(v), Ok(mut slot)) = (&view, counters.sflow.lock()) {
                            *slot = Some(v.clone());
                        }
                        let cpu = ThreadCpu::of_this_thread(
                            "capturing and classifying its source; its share of the flows",
                        );
                        Ok((totals, shard, cap.stats(), view, cpu))
                    },
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
        drop(tx);
        let mut keep_up = KeepUp::new(Instant::now(), 0, crate::cpu::running_threads());
        // The merger stage runs here until every worker has hung up.
        loop {
            let drops = telemetry
                .workers
                .iter()
                .map(|w| w.kernel_drops.load(Ordering::Relaxed))
                .sum();
            if let Some(w) = keep_up.check(Instant::now(), drops, crate::cpu::running_threads) {
                tracing::warn!("{w}");
            }
            if reload.swap(false, Ordering::Relaxed) {
                match crate::config::load(&args.common) {
                    Ok((cfg, c)) => {
                        let c = Arc::new(c);
                        match coordinator.reload(&cfg.rules, &c) {
                            Ok(()) => {
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
                    Err(e) => tracing::error!(
                        "SIGHUP: reload failed, keeping the old configuration: {e:#}"
                    ),
                }
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok((id, out)) => coordinator.handle(id, out)?,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let report = coordinator.finish()?;
        http_stop.store(true, Ordering::Relaxed);
        if let Some(h) = http {
            let _ = h.join();
        }
        Ok((
            report,
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("capture worker panicked")))
                })
                .collect::<Vec<_>>(),
        ))
    })?;
    let classifier = cell.get();
    let mut totals = Totals::new(classifier.type_count());
    let mut stats = SourceStats::default();
    let mut shards = Vec::with_capacity(workers);
    let mut sflow_views = Vec::new();
    let mut threads = Vec::with_capacity(workers + 1);
    for r in results {
        let (t, shard, s, view, cpu) = r?;
        totals.merge(&t);
        stats.add(&s);
        shards.push(shard);
        sflow_views.extend(view);
        threads.push(cpu);
    }
    threads.push(ThreadCpu::of_this_thread("the merger stage"));
    output::print_summary(&output::Summary {
        classifier: &classifier,
        totals: &totals,
        stats: &stats,
        warnings: &[],
        elapsed: started.elapsed(),
        common: &args.common,
        origin: output::Origin::Interface(label, workers),
        sflow: &sflow_views,
        threads: &threads,
        shards: &shards,
        coordinator: &coordinator,
        report: &report,
        to_stderr: output::stdout_taken(args.alerts_out.as_deref(), &args.common),
    })
}
