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

// flow health (issue 14)

#[test]
fn traffic_drop_fires_on_a_withdrawn_ecmp_member_not_on_the_members_that_rose() {
    check("traffic_drop");
    let (found, _) = findings("traffic_drop", 5);
    let service = found
        .iter()
        .find(|f| f.active && f.subject == "198.51.100.11:9000/udp")
        .expect("fires");
    assert_eq!(
        service.severity,
        tapwatch_analyzer::Severity::Critical,
        "its peers took the traffic over: {service:#?}"
    );
    assert!(
        found
            .iter()
            .any(|f| !f.active && f.subject == "198.51.100.11:9000/udp"),
        "resolves when the traffic returns"
    );
}

#[test]
fn retransmits_fire_when_a_servers_retransmissions_jump() {
    check("retransmits");
}

#[test]
fn upgrade_failure_fires_on_refusals_and_silence() {
    check("upgrade_failure");
}

#[test]
fn flow_health_stays_silent_on_its_look_alikes() {
    for seed in [3, 11] {
        let (found, expected) = findings("benign_flow_health", seed);
        assert!(expected.is_empty());
        let active: Vec<_> = found.iter().filter(|f| f.active).collect();
        assert!(active.is_empty(), "benign_flow_health/{seed}: {active:#?}");
    }
}

/// Every finding of a capture built by `build` (event time from the scenarios' epoch).
fn findings_of(
    build: impl FnOnce(&mut tapwatch_synth::CaptureBuilder, &mut tapwatch_synth::Rng, u64),
) -> Vec<Finding> {
    let mut c = tapwatch_synth::CaptureBuilder::new();
    let mut rng = tapwatch_synth::Rng::new(17);
    build(&mut c, &mut rng, tapwatch_synth::EPOCH_NS);
    let mut pcap = Vec::new();
    c.write(&mut pcap).expect("in memory");
    let classifier = tapwatch_synth::classifier();
    let mut analyzer = Analyzer::new(&AnalyzerConfig::default(), &classifier);
    let mut reader = FileReader::from_reader("variant", std::io::Cursor::new(pcap)).unwrap();
    while let Some(frame) = reader.next_frame().unwrap() {
        analyzer.observe(&classifier.classify(&frame));
    }
    analyzer.finish();
    analyzer
        .take_findings()
        .into_iter()
        .filter(|f| f.active)
        .collect()
}

/// Subjects that fired, of one kind.
fn fired(found: &[Finding], kind: &str) -> std::collections::BTreeSet<String> {
    found
        .iter()
        .filter(|f| f.kind.name() == kind)
        .map(|f| f.subject.clone())
        .collect()
}

#[test]
fn traffic_drop_holds_at_other_sizes_rates_and_offsets_and_not_for_a_short_dip() {
    use tapwatch_synth::flow_health::{ecmp_drop, EcmpDrop};
    const SEC: u64 = 1_000_000_000;
    let member = [
        "198.51.100.11".to_string(),
        "198.51.100.11:9000/udp".to_string(),
    ];
    for (members, pps, at, len, fires) in [
        (2, 120.0, 421.3, 40.0, true),
        (8, 22.0, 333.0, 60.0, true),
        (4, 40.0, 350.0, 18.0, false),
    ] {
        let p = EcmpDrop {
            members,
            member_pps: pps,
            drop_at_s: at,
            drop_s: len,
        };
        let end = ((at + len + 40.0) as u64) * SEC;
        let found = findings_of(|c, rng, t0| {
            ecmp_drop(c, rng, t0, t0 + end, p);
        });
        let want: std::collections::BTreeSet<String> = if fires {
            member.iter().cloned().collect()
        } else {
            Default::default()
        };
        assert_eq!(fired(&found, "traffic_drop"), want, "{p:?}: {found:#?}");
        assert!(
            found.iter().all(|f| f.kind.name() == "traffic_drop"),
            "{found:#?}"
        );
    }
}

#[test]
fn retransmits_and_upgrade_failures_hold_at_other_levels_and_stay_below_them() {
    use tapwatch_synth::flow_health::{retransmit_jump, upgrade_failure};
    const SEC: u64 = 1_000_000_000;
    for (loss, fires) in [(0.15, true), (0.012, false)] {
        let found = findings_of(|c, rng, t0| {
            retransmit_jump(c, rng, t0, t0 + 140 * SEC, 61.0, loss);
        });
        assert_eq!(
            fired(&found, "retransmits").len(),
            usize::from(fires),
            "loss {loss}: {found:#?}"
        );
        if fires {
            assert!(found
                .iter()
                .any(|f| f.severity == tapwatch_analyzer::Severity::Critical));
        }
    }
    for (refused, silent, fires) in [(0.25, 0.0, true), (0.0, 0.3, true), (0.08, 0.04, false)] {
        let found = findings_of(|c, rng, t0| {
            upgrade_failure(c, rng, t0, t0 + 200 * SEC, 47.0, refused, silent);
        });
        assert_eq!(
            fired(&found, "upgrade_failure").len(),
            usize::from(fires),
            "refused {refused}, silent {silent}: {found:#?}"
        );
    }
}
