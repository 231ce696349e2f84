//! Replay throughput with full classification, side by side with `tcpdump -r` and
//! `tshark -r` on the same file, plus the classifier's cost per packet.
//!
//! Run: `cargo bench -p tapwatch --bench replay` (env `TAPWATCH_BENCH_PACKETS`, default 3 M).
//! Prints a table of packets/s and the ratios; no pass/fail.
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use tapwatch_analyzer::scenario::Rng;
use tapwatch_analyzer::{Analyzer, AnalyzerConfig, Totals};
use tapwatch_capture::{FileReader, FrameSource, LinkType, PcapWriter};
use tapwatch_classifier::Classifier;

/// Mixed relay traffic: TCP handshakes and TLS data, DNS, BFD, QUIC, VLAN-tagged and IPv6
/// packets, fragments, with sizes from 60 to 1514 bytes.
fn write_capture(path: &Path, packets: usize) -> std::io::Result<u64> {
    let mut rng = Rng::new(42);
    let file = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        LinkType::Ethernet,
        65535,
    )?;
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut ts = 1_767_225_600_000_000_000u64;
    let mut buf = Vec::with_capacity(2048);
    let payload = vec![0x17u8; 1500];
    let mut tls = vec![23u8, 3, 3, 0, 200];
    tls.resize(1400, 0);
    for i in 0..packets {
        ts += 1 + rng.below(20_000);
        buf.clear();
        let src = [
            10,
            (rng.below(4)) as u8,
            (rng.below(256)) as u8,
            (rng.below(256)) as u8,
        ];
        let dst = [192, 0, 2, (i % 16) as u8];
        let sport = 1024 + rng.below(60000) as u16;
        let roll = rng.below(100);
        let res = match roll {
            0..=9 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .tcp(sport, 443, 1, 64240)
                .syn()
                .write(&mut buf, &[]),
            10..=19 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(dst, src, 64)
                .tcp(443, sport, 1, 64240)
                .syn()
                .ack(2)
                .write(&mut buf, &[]),
            20..=44 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .tcp(sport, 443, 1, 64240)
                .ack(2)
                .write(&mut buf, &[]),
            45..=64 => {
                let len = 40 + rng.below(1360) as usize;
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv4(dst, src, 64)
                    .tcp(443, sport, 1, 64240)
                    .ack(2)
                    .psh()
                    .write(&mut buf, &tls[..len])
            }
            65..=74 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .udp(sport, 53)
                .write(&mut buf, &payload[..40]),
            75..=79 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 255)
                .udp(49152, 3784)
                .write(
                    &mut buf,
                    &tapwatch_analyzer::scenario::bfd_control(3, 3, 1, 2, 300_000),
                ),
            80..=86 => {
                let mut q = vec![0xc3, 0, 0, 0, 1, 8];
                q.resize(1200, 0);
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv4(src, dst, 64)
                    .udp(sport, 443)
                    .write(&mut buf, &q)
            }
            87..=92 => PacketBuilder::ethernet2(mac.0, mac.1)
                .single_vlan(100u16.try_into().unwrap())
                .ipv4(src, dst, 64)
                .udp(sport, 9000)
                .write(&mut buf, &payload[..(rng.below(200) as usize)]),
            93..=97 => {
                let mut s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                s6[15] = src[3];
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv6(
                        s6,
                        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                        64,
                    )
                    .tcp(sport, 443, 1, 64240)
                    .ack(1)
                    .write(&mut buf, &payload[..100])
            }
            _ => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .icmpv4_echo_request(1, i as u16)
                .write(&mut buf, &payload[..56]),
        };
        res.map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        w.write(ts, &buf)?;
    }
    w.finish()?.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Best of `runs` wall times.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn tool(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let packets: usize = std::env::var("TAPWATCH_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let dir = std::env::temp_dir().join(format!("tapwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mixed.pcap");
    let size = write_capture(&file, packets).expect("write capture");
    // Warm the page cache so every contender reads from memory.
    let _ = std::fs::read(&file).unwrap();
    println!(
        "capture: {packets} packets, {:.1} MB, mixed relay traffic ({})",
        size as f64 / 1e6,
        file.display()
    );

    let classifier = Classifier::default();
    let mut counted = 0;
    let in_process = best(3, || {
        let mut r = FileReader::open(&file).unwrap();
        let mut totals = Totals::new(classifier.type_count());
        while let Some(frame) = r.next_frame().unwrap() {
            totals.add(&classifier.classify(&frame));
        }
        counted = totals.packets;
    });
    assert_eq!(counted as usize, packets);
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
    let binary = best(3, || {
        assert!(tool(Command::new(bin).arg("replay").arg(&file).args([
            "--format",
            "json",
            "--progress",
            "never"
        ])))
    });

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
        "contender (same file, warm cache, best of 3)", "seconds", "packets/s"
    );
    let row =
        |name: &str, d: Duration| println!("{name:<58} {:>10.3} {:>14.0}", d.as_secs_f64(), pps(d));
    row(
        "tapwatch read only (FileReader, no classification)",
        read_only,
    );
    row(
        "tapwatch classify + totals, in process, 1 worker",
        in_process,
    );
    row(
        "tapwatch classify + totals + all detectors, in process",
        with_detectors,
    );
    row("tapwatch replay FILE --format json (whole binary)", binary);
    let tcpdump = Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok()
        .then(|| {
            best(3, || {
                assert!(tool(
                    Command::new("tcpdump")
                        .args(["-nn", "-r"])
                        .arg(&file)
                        .args(["-w", "/dev/null"])
                ))
            })
        });
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
            "ratio tapwatch (in process) / tcpdump pass-through: {:.2}x",
            d.as_secs_f64() / in_process.as_secs_f64()
        );
        println!(
            "ratio tapwatch (whole binary) / tcpdump pass-through: {:.2}x",
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
