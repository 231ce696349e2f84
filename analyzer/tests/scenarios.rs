//! Every detector in-process on the labelled scenarios: each scenario's expected findings
//! fire on the right subject within their deadline, and nothing else fires; the benign
//! scenario raises nothing at all.
use tapwatch_analyzer::{Analyzer, AnalyzerConfig, Finding};
use tapwatch_capture::{FileReader, FrameSource};

/// Every finding of scenario `name` (seed `seed`), in order.
fn findings(name: &str, seed: u64) -> (Vec<Finding>, Vec<tapwatch_synth::Expected>) {
    let s = tapwatch_synth::generate(name, seed).expect("known scenario");
    let mut pcap = Vec::new();
    s.capture.write(&mut pcap).expect("in memory");
    let classifier = tapwatch_synth::classifier();
    let mut analyzer = Analyzer::new(&AnalyzerConfig::default(), &classifier);
    let mut reader = FileReader::from_reader(name, std::io::Cursor::new(pcap)).unwrap();
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        analyzer.observe(&classifier.classify(&frame));
        out.extend(analyzer.take_findings());
    }
    analyzer.finish();
    out.extend(analyzer.take_findings());
    (out, s.expected)
}

/// The scenario's expected findings fire in time, and no other subject fires.
fn check(name: &str) {
    for seed in [3, 11] {
        let (found, expected) = findings(name, seed);
        let active: Vec<&Finding> = found.iter().filter(|f| f.active).collect();
        assert!(!expected.is_empty(), "{name} expects something");
        for e in &expected {
            let hit = active
                .iter()
                .find(|f| f.kind.name() == e.kind && f.subject == e.subject)
                .unwrap_or_else(|| {
                    panic!(
                        "{name}/{seed}: {} on {} did not fire: {active:#?}",
                        e.kind, e.subject
                    )
                });
            assert!(
                (e.earliest_ns..=e.latest_ns).contains(&hit.detected_ns),
                "{name}/{seed}: {} on {} at {}, expected within [{}, {}]",
                e.kind,
                e.subject,
                hit.detected_ns,
                e.earliest_ns,
                e.latest_ns
            );
            if e.tenant.is_some() {
                assert_eq!(
                    hit.tenant, e.tenant,
                    "{name}/{seed}: tenant of {}",
                    e.subject
                );
            }
        }
        for f in &active {
            assert!(
                expected
                    .iter()
                    .any(|e| f.kind.name() == e.kind && f.subject == e.subject),
                "{name}/{seed}: unexpected {} on {}: {f:#?}",
                f.kind.name(),
                f.subject
            );
        }
    }
}

#[test]
fn heavy_hitter_fires_on_a_flood() {
    check("heavy_hitter");
}

#[test]
fn setup_growth_fires_on_a_quadratic_tenant_not_a_linear_one() {
    check("setup_growth");
}

#[test]
fn missed_heartbeat_fires_on_a_silent_bfd_session() {
    check("bfd_silence");
}

#[test]
fn missed_heartbeat_fires_on_a_keepalive_gap() {
    check("keepalive_gap");
}

#[test]
fn syn_retransmits_fires_on_dropped_syns() {
    check("syn_retransmits");
}

#[test]
fn latency_shift_fires_on_a_slower_response_not_on_the_other_servers() {
    check("response_shift");
}

#[test]
fn latency_shift_fires_on_an_echo_stall_in_the_window_of_the_sample() {
    check("echo_stall");
}

#[test]
fn latency_shift_fires_on_slow_rsts() {
    check("slow_rst");
}

#[test]
fn latency_shift_fires_on_a_tcp_timestamp_rtt_step() {
    check("tcp_rtt_step");
}

#[test]
fn latency_shift_fires_on_a_tenant_whose_servers_slow_down_together() {
    check("tenant_shift");
}

#[test]
fn every_detector_stays_silent_on_benign_traffic() {
    for name in tapwatch_synth::QUIET {
        for seed in [3, 11] {
            let (found, expected) = findings(name, seed);
            assert!(expected.is_empty());
            let active: Vec<_> = found.iter().filter(|f| f.active).collect();
            assert!(active.is_empty(), "{name}/{seed}: {active:#?}");
        }
    }
}
