//! Replay throughput with every detector, side by side with `tcpdump -r` pass-through and
//! the flow exporters installed here (softflowd, argus, pmacctd) on the same file, plus the
//! classifier's cost per packet.
//!
//! Run: `cargo bench -p tapwatch --bench replay` (env `TAPWATCH_BENCH_PACKETS`, default 3 M;
//! `TAPWATCH_BENCH_TRAFFIC=connections` for 20 000 concurrent TCP connections whose flows
//! repeat instead of the default mixed traffic of one-packet flows;
//! `TAPWATCH_BENCH_KEEP=PATH` keeps the generated capture there for other timings;
//! `TAPWATCH_BENCH_PGO=PATH` adds rows for a binary `scripts/build-pgo.sh` built).
//! Prints a table of packets/s and the ratios; no pass/fail.
mod common;
mod pgo;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{best, write_capture, write_connections_capture};
use tapwatch_analyzer::{Analyzer, AnalyzerConfig, Totals};
use tapwatch_capture::{FileReader, FrameSource, LinkType};
use tapwatch_classifier::Classifier;

fn main() {
    let packets: usize = std::env::var("TAPWATCH_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let dir = std::env::temp_dir().join(format!("tapwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mixed.pcap");
    let traffic = std::env::var("TAPWATCH_BENCH_TRAFFIC").unwrap_or_else(|_| "mixed".into());
    let (size, what) = match traffic.as_str() {
        "mixed" => (
            write_capture(&file, packets, 20_000).expect("write capture"),
            "mixed relay traffic, nearly every packet a flow of its own",
        ),
        "connections" => (
            write_connections_capture(&file, packets, 20_000, 20_000).expect("write capture"),
            "20 000 concurrent TCP connections, DNS and steady UDP",
        ),
        other => panic!("TAPWATCH_BENCH_TRAFFIC={other}: expected mixed or connections"),
    };
    // Warm the page cache so every contender reads from memory.
    let _ = std::fs::read(&file).unwrap();
    println!(
        "capture: {packets} packets, {:.1} MB, {what} ({})",
        size as f64 / 1e6,
        file.display()
    );

    let classifier = Classifier::default();
    let mut counted = 0;
    let mut labelled = 0u64;
    // In-process loops: five rounds, best of each.
    let (mut classify_only, mut in_process) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        classify_only = classify_only.min(best(1, || {
            let mut r = FileReader::open(&file).unwrap();
            let mut tcp = 0u64;
            while let Some(frame) = r.next_frame().unwrap() {
                tcp += u64::from(classifier.classify(&frame).ip_proto == 6);
            }
            labelled = tcp;
        }));
        in_process = in_process.min(best(1, || {
            let mut r = FileReader::open(&file).unwrap();
            let mut totals = Totals::new(classifier.type_count());
            while let Some(frame) = r.next_frame().unwrap() {
                totals.add(&classifier.classify(&frame));
            }
            counted = totals.packets;
        }));
    }
    assert_eq!(counted as usize, packets);
    assert!(labelled > 0);
    let mut findings = 0usize;
    let with_detectors = best(3, || {
        let mut r = FileReader::open(&file).unwrap();
        let mut totals = Totals::new(classifier.type_count());
        let mut analyzer = Analyzer::new(&AnalyzerConfig::default(), &classifier);
        while let Some(frame) = r.next_frame().unwrap() {
            let meta = classifier.classify(&frame);
            totals.add(&meta);
            analyzer.observe(&meta);
        }
        analyzer.finish();
        findings = analyzer.take_findings().len();
    });
    let read_only = best(3, || {
        let mut r = FileReader::open(&file).unwrap();
        let mut n = 0u64;
        while let Some(frame) = r.next_frame().unwrap() {
            n += frame.data.len() as u64;
        }
        std::hint::black_box(n);
    });
    // Classifier alone: frames already in memory, classified repeatedly.
    let ns_per_packet = {
        let mut r = FileReader::open(&file).unwrap();
        let mut frames: Vec<(Vec<u8>, u32)> = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            if frames.len() == 200_000 {
                break;
            }
            frames.push((f.data.to_vec(), f.wire_len));
        }
        let rounds = 10;
        let t = Instant::now();
        for _ in 0..rounds {
            for (data, wire) in &frames {
                let f = tapwatch_capture::Frame {
                    ts_ns: 0,
                    wire_len: *wire,
                    link: LinkType::Ethernet,
                    interface: 0,
                    data,
                };
                std::hint::black_box(classifier.classify(&f));
            }
        }
        t.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64
    };

    let pps = |d: Duration| packets as f64 / d.as_secs_f64();
    println!(
        "\n{:<58} {:>10} {:>14}",
        "in process (same file, warm cache, best of 3 or 5)", "seconds", "packets/s"
    );
    let row =
        |name: &str, d: Duration| println!("{name:<58} {:>10.3} {:>14.0}", d.as_secs_f64(), pps(d));
    row("read only (FileReader, no classification)", read_only);
    row("read + classify every packet", classify_only);
    row("classify + summary totals", in_process);
    row(
        "classify + totals + all detectors (one shard)",
        with_detectors,
    );
    println!(
        "classifier alone: {ns_per_packet:.1} ns/packet ({:.1} M packets/s)",
        1e3 / ns_per_packet
    );

    // Whole processes, side by side: every contender once per round, rounds alternating,
    // medians of wall time and the largest peak resident set.
    let rounds: usize = std::env::var("TAPWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let contenders = contenders(&file, &dir, cores);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    let mut rss = vec![0u64; contenders.len()];
    for _ in 0..rounds {
        for (i, c) in contenders.iter().enumerate() {
            let (d, kib) = measure(&c.argv);
            times[i].push(d);
            rss[i] = rss[i].max(kib);
        }
    }
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let reference = contenders
        .iter()
        .position(|c| c.name.starts_with("tcpdump"))
        .map(|i| median(&times[i]));
    println!(
        "\n{:<56} {:>9} {:>12} {:>10} {:>10}",
        format!("whole process ({rounds} alternating rounds, median)"),
        "seconds",
        "packets/s",
        "x tcpdump",
        "peak RSS"
    );
    for (i, c) in contenders.iter().enumerate() {
        let d = median(&times[i]);
        let ratio = reference.map_or("-".to_string(), |r| {
            format!("{:.2}", r.as_secs_f64() / d.as_secs_f64())
        });
        println!(
            "{:<56} {:>9.3} {:>12.0} {:>10} {:>7} MiB",
            c.name,
            d.as_secs_f64(),
            pps(d),
            ratio,
            rss[i] / 1024
        );
    }
    if let Some(keep) = std::env::var_os("TAPWATCH_BENCH_KEEP") {
        std::fs::copy(&file, &keep).expect("TAPWATCH_BENCH_KEEP: copy the capture");
        println!("capture kept at {}", std::path::Path::new(&keep).display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A whole-process contender: what the table calls it and how to run it.
struct Contender {
    name: String,
    argv: Vec<String>,
}

/// tapwatch (one worker, and every core; the same for a profile-guided build when
/// `TAPWATCH_BENCH_PGO` names one) and the reference tools installed here: tcpdump
/// pass-through, softflowd and argus (flow exporters that detect nothing), pmacctd.
fn contenders(file: &std::path::Path, dir: &std::path::Path, cores: usize) -> Vec<Contender> {
    let f = file.display().to_string();
    let tapwatch = |bin: &str, build: &str, workers: usize| Contender {
        name: format!("tapwatch replay FILE --workers {workers} (all detectors{build})"),
        argv: vec![
            bin.to_string(),
            "replay".into(),
            f.clone(),
            "--format".into(),
            "json".into(),
            "--progress".into(),
            "never".into(),
            "--no-store".into(),
            "--workers".into(),
            workers.to_string(),
        ],
    };
    let bin = env!("CARGO_BIN_EXE_tapwatch");
    let mut v = vec![tapwatch(bin, "", 1), tapwatch(bin, "", cores)];
    // A profile-guided build of the same code (scripts/build-pgo.sh), side by side.
    if let Some(pgo) = pgo::binary() {
        v.push(tapwatch(&pgo, ", PGO", 1));
        v.push(tapwatch(&pgo, ", PGO", cores));
    }
    let installed = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    if installed("tcpdump") {
        v.push(Contender {
            name: "tcpdump -nn -r FILE -w /dev/null".into(),
            argv: argv(&format!("tcpdump -nn -r {f} -w /dev/null")),
        });
    }
    if installed("softflowd") {
        v.push(Contender {
            name: "softflowd -r FILE -n 127.0.0.1:9".into(),
            argv: argv(&format!("softflowd -r {f} -n 127.0.0.1:9")),
        });
    }
    if installed("argus") {
        v.push(Contender {
            name: "argus -r FILE -w /dev/null".into(),
            argv: argv(&format!("argus -r {f} -w /dev/null")),
        });
    }
    if installed("pmacctd") {
        let conf = dir.join("pmacctd.conf");
        std::fs::write(
            &conf,
            format!("daemonize: false\npcap_savefile: {f}\npcap_savefile_delay: 0\nplugins: print\nprint_output_file: /dev/null\naggregate: src_host, dst_host, src_port, dst_port, proto\n"),
        )
        .unwrap();
        v.push(Contender {
            name: "pmacctd (print plugin, 5-tuple aggregates)".into(),
            argv: vec!["pmacctd".into(), "-f".into(), conf.display().to_string()],
        });
    }
    v
}

/// Runs `argv` to completion, output discarded: wall time and peak resident set (KiB).
///
/// The peak comes from GNU time's report on its own child: a process this benchmark spawns
/// directly inherits this process's high-water mark at exec (Linux keeps it in
/// `ru_maxrss`), while time's child starts from time's small one. 0 without /usr/bin/time.
fn measure(argv: &[String]) -> (Duration, u64) {
    let report = std::env::temp_dir().join(format!("tapwatch-bench-rss-{}", std::process::id()));
    let timed = std::path::Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"]).arg(&report).args(argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let t = Instant::now();
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let elapsed = t.elapsed();
    assert!(status.success(), "{argv:?} failed: {status}");
    let kib = std::fs::read_to_string(&report)
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&report);
    (elapsed, kib)
}
