//! A benign soak in-process: tens of minutes of a relay's day (a dominant service fed by
//! hundreds of clients at a swelling and ebbing rate, its answers, DNS clients querying at
//! Poisson times, BFD sessions with RFC 5880 jitter, jittered keepalives, tenants whose
//! nodes grow 3–10× linearly within those minutes), each seed another
//! deployment with its own rates, periods, sizes and address plan. Nothing may fire, and
//! the heartbeats must still be learned: silence must not come from blindness.
use std::collections::BTreeSet;

use tapwatch_analyzer::{Analyzer, AnalyzerConfig, Finding};
use tapwatch_capture::{FileReader, FrameSource};
use tapwatch_synth::{Rng, Soak, SoakParams};

const SEC: u64 = 1_000_000_000;
const MINUTES: u64 = 12;

/// Runs a soak; returns the firing findings, the learned periodic subjects (BFD apart) and
/// the packets seen.
fn run(
    seed: u64,
) -> (
    Vec<Finding>,
    SoakParams,
    BTreeSet<String>,
    BTreeSet<String>,
    u64,
) {
    let params = SoakParams::random(&mut Rng::new(seed), MINUTES);
    let mut soak = Soak::new(params.clone(), seed);
    let tenants = tapwatch_classifier::TenantMap::parse(
        std::path::Path::new("soak tenants"),
        &params.tenants_toml(),
    )
    .unwrap();
    let classifier = tapwatch_classifier::Classifier::new(tenants, &Default::default());
    let mut analyzer = Analyzer::new(&AnalyzerConfig::default(), &classifier);
    let (mut firing, mut packets) = (Vec::new(), 0);
    while let Some(chunk) = soak.next_chunk(10 * SEC) {
        let mut pcap = Vec::new();
        chunk.write(&mut pcap).expect("in memory");
        let mut reader = FileReader::from_reader("soak", std::io::Cursor::new(pcap)).unwrap();
        while let Some(frame) = reader.next_frame().unwrap() {
            analyzer.observe(&classifier.classify(&frame));
            packets += 1;
        }
        firing.extend(analyzer.take_findings().into_iter().filter(|f| f.active));
    }
    // The learned flows, before the end of input closes anything.
    let (mut periodic, mut bfd) = (BTreeSet::new(), BTreeSet::new());
    for f in analyzer.shard().periodic_flows(usize::MAX) {
        let subject = f["subject"].as_str().unwrap().to_string();
        match f["bfd"].as_bool().unwrap() {
            true => bfd.insert(subject),
            false => periodic.insert(subject),
        };
    }
    // Growth was judged on every rollout tenant (silence must not come from blindness):
    // a fit over a node range of at least 2 (the default minimum), its exponent near 1.
    for g in &params.growing {
        let t = classifier
            .tenants()
            .lookup(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                g.prefix.0, g.prefix.1, 0, 1,
            )));
        let fit = analyzer.merger().growth_fits()[t.0 as usize];
        let (fit, range, _) = fit.unwrap_or_else(|| panic!("{}: never fitted", g.name));
        assert!(
            range >= 2.0 && (0.5..1.4).contains(&fit.slope),
            "{} ({} -> {} nodes): range {range}, {fit:?}",
            g.name,
            g.nodes_start,
            g.nodes_end
        );
    }
    analyzer.finish();
    firing.extend(analyzer.take_findings().into_iter().filter(|f| f.active));
    (firing, params, periodic, bfd, packets)
}

/// The soak of `seed` raises nothing and learns exactly its heartbeats.
fn silent(seed: u64) {
    let (firing, p, periodic, bfd, packets) = run(seed);
    assert!(firing.is_empty(), "soak/{seed}: {firing:#?}");
    assert!(
        packets as f64 > 0.6 * p.relay_pps * (MINUTES * 60) as f64,
        "soak/{seed}: only {packets} packets"
    );
    let keepalives: BTreeSet<String> = p
        .keepalives
        .iter()
        .map(|(src, _, _)| format!("{src}:7946->{}:{}/udp", p.coordinator.0, p.coordinator.1))
        .collect();
    assert_eq!(
        periodic, keepalives,
        "soak/{seed}: learned as periodic must be exactly the keepalives (no DNS or relay flow)"
    );
    assert_eq!(
        bfd.len(),
        2 * p.bfd.len(),
        "soak/{seed}: BFD sessions {bfd:?}"
    );
}

// Before this soak existed, both deployments opened with a critical heavy_hitter on the
// relay's own service (warm-up flagged any destination with >= 50 % share at >= 1000 pps).
#[test]
fn a_relay_day_with_dns_bfd_and_keepalives_raises_nothing() {
    silent(1);
}

#[test]
fn another_deployment_raises_nothing_either() {
    silent(2);
}
