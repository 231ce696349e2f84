//! The alert contract pinned: every kind's event JSON (firing and resolved, one per evidence
//! shape) from the scenario suite, compared with a committed snapshot. A renamed or dropped
//! key in any evidence fails here. Regenerate deliberately with `UPDATE_SNAPSHOT=1`.
use std::collections::BTreeMap;

use tapwatch_analyzer::{Analyzer, AnalyzerConfig};
use tapwatch_capture::{FileReader, FrameSource};
use tapwatch_rules::AlertEngine;
use tapwatch_synth as scenario;

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/snapshots/alert_contract.json"
);

const SEC: u64 = 1_000_000_000;

/// Every alert event the scenario runs, in order.
fn events(name: &str) -> Vec<serde_json::Value> {
    let capture = match name {
        "heavy_mix" => heavy_mix(),
        _ => scenario::generate(name, 1).expect("known scenario").capture,
    };
    run(capture)
}

/// The heavy-hitter dimensions the scenarios do not reach: a tenant surge from many small
/// sources, a victim flooded on many ports by many reflectors, a new kind of packet from a
/// source that is big anyway.
fn heavy_mix() -> scenario::CaptureBuilder {
    use std::net::Ipv4Addr;
    let mut c = scenario::CaptureBuilder::new();
    let mut rng = scenario::Rng::new(7);
    let t0 = scenario::EPOCH_NS;
    let relay = (Ipv4Addr::new(192, 0, 2, 10), 9000);
    let big = Ipv4Addr::new(10, 30, 0, 1);
    for ms in 0..120_000u64 {
        let t = t0 + ms * 1_000_000;
        // Background: 300 pps from 200 steady sources, 50 pps from 50 web sources.
        for k in 0..3 {
            let s = rng.below(200) as u8;
            c.udp(
                t + k * 300_000,
                (Ipv4Addr::new(10, 30, 1, s), 5000),
                relay,
                None,
                &[0; 160],
            );
        }
        if ms % 20 == 0 {
            let s = rng.below(50) as u8;
            c.udp(
                t,
                (Ipv4Addr::new(10, 60, 1, s), 5000),
                relay,
                None,
                &[0; 160],
            );
        }
        // One source big from the start: 1500 pps.
        c.udp(t + 500_000, (big, 7000), relay, None, &[0; 900]);
        if ms % 2 == 0 {
            c.udp(t + 600_000, (big, 7000), relay, None, &[0; 900]);
        }
        let s = ms / 1000;
        if (40..46).contains(&s) {
            // Tenant web surges: 2000 pps from 1000 sources.
            for k in 0..2u64 {
                let n = rng.below(1000) as u16;
                let src = Ipv4Addr::new(10, 60, 2 + (n >> 8) as u8, n as u8);
                c.udp(
                    t + k * 400_000,
                    (src, 5000),
                    (Ipv4Addr::new(192, 0, 2, 20), 443),
                    None,
                    &[0; 100],
                );
            }
        }
        if (70..76).contains(&s) {
            // A victim flooded on many ports by 400 reflectors: 3000 pps.
            for k in 0..3u64 {
                let n = rng.below(400) as u16;
                let src = Ipv4Addr::new(198, 18, (n >> 8) as u8, n as u8);
                let port = 1024 + rng.below(60_000) as u16;
                c.udp(
                    t + k * 300_000,
                    (src, 53),
                    (Ipv4Addr::new(192, 0, 2, 99), port),
                    None,
                    &[0; 400],
                );
            }
        }
        if (100..106).contains(&s) {
            // The big source starts pinging too: 2000 pps of a new kind, the source as a
            // whole stays below 3 × its baseline.
            for k in 0..2u64 {
                let seq = (2 * ms + k) as u16;
                c.ping(
                    t + 700_000 + k * 100_000,
                    big,
                    Ipv4Addr::new(192, 0, 2, 30),
                    1,
                    seq,
                );
            }
        }
    }
    c
}

/// Growth that fires then clears, fed to the detector directly (no scenario resolves it).
fn growth_cycle() -> Vec<serde_json::Value> {
    use tapwatch_analyzer::growth::{GrowthDetector, GrowthPoint};
    let mut d = GrowthDetector::new(Default::default());
    let mut engine = AlertEngine::default();
    let mut out = Vec::new();
    for i in 0..60u64 {
        let n = 20 + 10 * (i % 30);
        let setups = if i < 30 { n * n / 10 } else { 3 * n * 30 };
        let mut findings = Vec::new();
        d.observe(
            &GrowthPoint {
                level: 0,
                index: 3,
                tenant: "swarm",
                start_ns: scenario::EPOCH_NS + i * 10 * SEC,
                end_ns: scenario::EPOCH_NS + (i + 1) * 10 * SEC,
                nodes: n,
                setups,
                width_s: 10.0,
                setup_share: 0.5,
                packet_share: 0.25,
            },
            &mut findings,
        );
        for f in findings {
            out.extend(engine.process(&f));
        }
    }
    out.iter().map(to_value).collect()
}

fn run(capture: scenario::CaptureBuilder) -> Vec<serde_json::Value> {
    let name = "capture";
    let mut pcap = Vec::new();
    capture.write(&mut pcap).expect("in memory");
    let classifier = scenario::classifier();
    let mut analyzer = Analyzer::new(&AnalyzerConfig::default(), &classifier);
    let mut engine = AlertEngine::default();
    let mut out = Vec::new();
    let mut reader = FileReader::from_reader(name, std::io::Cursor::new(pcap)).unwrap();
    while let Some(frame) = reader.next_frame().unwrap() {
        analyzer.observe(&classifier.classify(&frame));
        for f in analyzer.take_findings() {
            out.extend(engine.process(&f));
        }
    }
    analyzer.finish();
    for f in analyzer.take_findings() {
        out.extend(engine.process(&f));
    }
    out.extend(engine.finish());
    out.iter().map(to_value).collect()
}

/// The event as JSON, checking on the way that its evidence is written with its keys in
/// name order, as it was when evidence was a `serde_json::Value` (byte-identical lines).
fn to_value(e: &tapwatch_rules::AlertEvent) -> serde_json::Value {
    let v = serde_json::to_value(e).unwrap();
    let written = serde_json::to_string(&e.evidence).unwrap();
    assert_eq!(
        written,
        v["evidence"].to_string(),
        "evidence keys out of name order"
    );
    v
}

/// `kind state [evidence keys]`: one snapshot entry per distinct shape.
fn shape(v: &serde_json::Value) -> String {
    let mut keys: Vec<&str> = v["evidence"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    format!(
        "{} {} [{}]",
        v["kind"].as_str().unwrap(),
        v["state"].as_str().unwrap(),
        keys.join(",")
    )
}

#[test]
fn every_kind_serialises_as_documented() {
    let mut seen: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let runs = scenario::NAMES
        .iter()
        .chain(&["heavy_mix"])
        .map(|n| events(n));
    for e in runs.chain([growth_cycle()]).flatten() {
        seen.entry(shape(&e)).or_insert(e);
    }
    let got = serde_json::to_string_pretty(&seen).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOT").is_some() {
        std::fs::write(SNAPSHOT, &got).unwrap();
    }
    let want = std::fs::read_to_string(SNAPSHOT).expect("snapshot committed");
    assert_eq!(got, want, "the alert JSON changed; see docs/alerts.md");
    for kind in [
        "heavy_hitter",
        "quadratic_setup_growth",
        "missed_heartbeat",
        "syn_retransmits",
        "traffic_drop",
        "retransmits",
        "upgrade_failure",
        "isolation_advice",
        "latency_shift",
    ] {
        for state in ["firing", "resolved"] {
            assert!(
                seen.keys()
                    .any(|k| k.starts_with(&format!("{kind} {state} "))),
                "no {kind} {state} event in the scenarios"
            );
        }
    }
}
