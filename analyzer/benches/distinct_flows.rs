//! Memory and throughput of the whole analyzer (all detectors) over 10 million distinct
//! flows: every packet a new 5-tuple, small UDP and TCP SYNs, at 1 M packets per second of
//! event time. Peak resident memory is read from /proc/self/status (VmHWM).
//!
//! Run: `cargo bench -p tapwatch-analyzer --bench distinct_flows` (env TAPWATCH_BENCH_FLOWS).
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use tapwatch_analyzer::{Analyzer, AnalyzerConfig};
use tapwatch_classifier::{Classifier, PacketMeta, ProtocolType};

fn vm(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let flows: u64 = std::env::var("TAPWATCH_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let classifier = Classifier::default();
    let mut analyzer = Analyzer::new(&AnalyzerConfig::default(), &classifier);
    let before = vm("VmRSS:");
    let t = Instant::now();
    let mut alerts = 0usize;
    for i in 0..flows {
        let mut m = PacketMeta::empty(1_767_225_600_000_000_000 + i * 1_000, 80, 80, 0);
        let src = Ipv4Addr::from(0x0a00_0000u32 | (i as u32 & 0x00ff_ffff));
        m.src = Some(IpAddr::V4(src));
        m.dst = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 64) as u8)));
        m.src_port = (i >> 24) as u16 ^ (i as u16).rotate_left(3);
        m.dst_port = 443;
        if i % 2 == 0 {
            m.ip_proto = 17;
            m.kind = ProtocolType::Udp;
        } else {
            m.ip_proto = 6;
            m.kind = ProtocolType::TcpSyn;
            m.tcp_flags = 0x02;
            m.tcp_seq = i as u32;
        }
        analyzer.observe(&m);
        if analyzer.has_findings() {
            alerts += analyzer.take_findings().len();
        }
    }
    analyzer.finish();
    let elapsed = t.elapsed();
    let peak = vm("VmHWM:");
    println!(
        "{flows} distinct flows through all detectors in {:.2} s ({:.2} M packets/s)",
        elapsed.as_secs_f64(),
        flows as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "resident memory: {:.1} MiB before, peak {:.1} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let (hb, periodic) = analyzer.shard().heartbeat_flows();
    println!("heartbeat flows tracked: {hb} ({periodic} periodic); handshakes pending: {}; findings: {alerts}", analyzer.shard().pending_handshakes());
}
