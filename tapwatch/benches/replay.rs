//! Replay throughput with full classification, side by side with `tcpdump -r` and
//! `tshark -r` on the same file, plus the classifier's cost per packet.
//!
//! Run: `cargo bench -p tapwatch --bench replay` (env `TAPWATCH_BENCH_PACKETS`, default 3 M).
//! Prints a table of packets/s and the ratios; no pass/fail.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{best, tool, write_capture};
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
    let size = write_capture(&file, packets, 20_000).expect("write capture");
    // Warm the page cache so every contender reads from memory.
    let _ = std::fs::read(&file).unwrap();
    println!(
        "capture: {packets} packets, {:.1} MB, mixed relay traffic ({})",
        size as f64 / 1e6,
        file.display()
    );

    let classifier = Classifier::default();
    let mut counted = 0;
    let mut labelled = 0u64;
    let have_tcpdump = Command::new("tcpdump").arg("--version").output().is_ok();
    // tapwatch and tcpdump take turns, five rounds, best of each: the ratio is not at the
    // mercy of whatever else the machine did during one contender's runs.
    let (mut classify_only, mut in_process, mut tcpdump) = (
        Duration::MAX,
        Duration::MAX,
        have_tcpdump.then_some(Duration::MAX),
    );
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
        if let Some(t) = &mut tcpdump {
            *t = (*t).min(best(1, || {
                assert!(tool(
                    Command::new("tcpdump")
                        .args(["-nn", "-r"])
                        .arg(&file)
                        .args(["-w", "/dev/null"])
                ))
            }));
        }
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
    let bin = env!("CARGO_BIN_EXE_tapwatch");
    let whole = |workers: Option<&str>| {
        best(3, || {
            let mut cmd = Command::new(bin);
            cmd.arg("replay").arg(&file).args([
                "--format",
                "json",
                "--progress",
                "never",
                "--no-store",
            ]);
            if let Some(w) = workers {
                cmd.args(["--workers", w]);
            }
            assert!(tool(&mut cmd))
        })
    };
    let one_worker = whole(Some("1"));
    let binary = whole(None);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    // Classifier alone: frames already in memory, classified repeatedly.
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
    let ns_per_packet = t.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64;

    let pps = |d: Duration| packets as f64 / d.as_secs_f64();
    println!(
        "\n{:<58} {:>10} {:>14}",
        "contender (same file, warm cache, best of 3; 5 alternating)", "seconds", "packets/s"
    );
    let row =
        |name: &str, d: Duration| println!("{name:<58} {:>10.3} {:>14.0}", d.as_secs_f64(), pps(d));
    row(
        "tapwatch read only (FileReader, no classification)",
        read_only,
    );
    row(
        "tapwatch read + classify every packet, 1 worker",
        classify_only,
    );
    row(
        "tapwatch classify + totals, in process, 1 worker",
        in_process,
    );
    row(
        "tapwatch classify + totals + all detectors, in process",
        with_detectors,
    );
    row(
        "tapwatch replay FILE --workers 1 (whole binary)",
        one_worker,
    );
    row(
        &format!("tapwatch replay FILE (whole binary, {cores} workers)"),
        binary,
    );
    if let Some(d) = tcpdump {
        row("tcpdump -nn -r FILE -w /dev/null", d);
    }
    let tshark = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok()
        .then(|| {
            best(1, || {
                assert!(tool(Command::new("tshark").arg("-r").arg(&file).args([
                    "-T",
                    "fields",
                    "-e",
                    "frame.len"
                ])))
            })
        });
    if let Some(d) = tshark {
        row("tshark -r FILE -T fields -e frame.len (1 run)", d);
    }
    println!(
        "\nclassifier alone: {ns_per_packet:.1} ns/packet ({:.1} M packets/s)",
        1e3 / ns_per_packet
    );
    if let Some(d) = tcpdump {
        println!(
            "ratio tapwatch read + classify / tcpdump pass-through: {:.2}x",
            d.as_secs_f64() / classify_only.as_secs_f64()
        );
        println!(
            "ratio tapwatch classify + totals / tcpdump pass-through: {:.2}x",
            d.as_secs_f64() / in_process.as_secs_f64()
        );
        println!(
            "ratio tapwatch (whole binary, 1 worker) / tcpdump pass-through: {:.2}x",
            d.as_secs_f64() / one_worker.as_secs_f64()
        );
        println!(
            "ratio tapwatch (whole binary, {cores} workers) / tcpdump pass-through: {:.2}x",
            d.as_secs_f64() / binary.as_secs_f64()
        );
    }
    if let Some(d) = tshark {
        println!(
            "ratio tapwatch (whole binary) / tshark fields: {:.1}x",
            d.as_secs_f64() / binary.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
