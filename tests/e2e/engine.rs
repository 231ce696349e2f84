//! The engine: results do not depend on the number of workers.
use std::path::Path;

use crate::common::*;

/// Alert events as (kind, state, subject, severity, detected_at, id), sorted, and the
/// summary, of one replay with `workers` workers.
fn replay_with(
    capture: &Path,
    tenants: Option<&Path>,
    workers: usize,
    tmp: &TempDir,
) -> (Vec<[String; 6]>, serde_json::Value) {
    let out = tmp.path(&format!("alerts-{workers}.jsonl"));
    let mut cmd = tapwatch();
    cmd.arg("replay")
        .arg(capture)
        .args(["--format", "json", "--no-store", "--progress", "never"])
        .args(["--workers", &workers.to_string()])
        .arg("--alerts-out")
        .arg(&out);
    if let Some(t) = tenants {
        cmd.arg("--tenants").arg(t);
    }
    let o = run(&mut cmd);
    assert!(
        o.status.success(),
        "{} with {workers} workers: {}",
        capture.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut events: Vec<[String; 6]> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            ["kind", "state", "subject", "severity", "detected_at", "id"]
                .map(|k| e[k].as_str().unwrap_or_default().to_string())
        })
        .collect();
    events.sort();
    (events, summary)
}

/// The same alert events and the same counts for 1, 2 and 3 workers.
fn assert_worker_count_free(capture: &Path, tenants: Option<&Path>, tmp: &TempDir) -> usize {
    let (one, s1) = replay_with(capture, tenants, 1, tmp);
    for workers in [2, 3] {
        let (many, s) = replay_with(capture, tenants, workers, tmp);
        assert_eq!(
            one,
            many,
            "{}: alert events differ between 1 and {workers} workers",
            capture.display()
        );
        assert_eq!(s["detectors"]["workers"], workers);
        for key in [
            "packets",
            "bytes",
            "by_protocol_type",
            "by_size_class",
            "by_tenant",
        ] {
            assert_eq!(
                s1[key],
                s[key],
                "{}: {key} with {workers} workers",
                capture.display()
            );
        }
        for key in ["windows", "late_packets", "time_jumps"] {
            assert_eq!(
                s1["detectors"][key],
                s["detectors"][key],
                "{}: detectors.{key} with {workers} workers",
                capture.display()
            );
        }
    }
    one.len()
}

#[test]
fn alert_events_do_not_depend_on_the_number_of_workers() {
    let tmp = TempDir::new("engine-workers");
    let mut events = 0;
    for name in tapwatch_synth::NAMES {
        // A seed of its own: other packets than the scenario suite's.
        let pcap = tmp.path(&format!("{name}.pcap"));
        let o = run(tapwatch()
            .args(["scenario", name, "--seed", "11", "--out"])
            .arg(&pcap));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let tenants = tmp.path(&format!("{name}.tenants.toml"));
        events += assert_worker_count_free(&pcap, Some(&tenants), &tmp);
    }
    // The scenarios raise alerts; a comparison of empty lists would prove nothing.
    assert!(
        events >= 20,
        "only {events} alert events over the scenarios"
    );
}

#[test]
fn shared_captures_give_the_same_alerts_for_any_number_of_workers() {
    let Some(dir) = shared_pcaps() else {
        return;
    };
    let tmp = TempDir::new("engine-shared");
    for name in [
        "stopddos__pkt.TCP.synflood.spoofed.pcap",
        "stopddos__amp.UDP.snmp.src161.pcapng",
        "zeek__echo-connections.pcap",
        "ndpi__bfd.pcap",
        "pcapplusplus__many-protocols.pcap",
    ] {
        assert_worker_count_free(&dir.join(name), None, &tmp);
    }
}

#[test]
fn work_turned_away_by_bounded_tables_is_counted_in_the_summary() {
    let tmp = TempDir::new("engine-lost");
    let config = tmp.path("tight.toml");
    std::fs::write(
        &config,
        "[analyzer.heartbeat]\nmax_flows = 2\n\n[analyzer.handshake]\nmax_pending = 2\n\n[[rules.override]]\nkind = \"heavy_hitter\"\nmute = true\n",
    )
    .unwrap();
    let demo = root().join("data/demo.pcap");
    let tenants = root().join("data/demo.tenants.toml");
    for workers in ["1", "2"] {
        let s = replay_json(&[
            demo.to_str().unwrap(),
            "--tenants",
            tenants.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--workers",
            workers,
        ]);
        let lost = &s["detectors"]["lost_work"];
        // (The demo has fewer SYN-receiving servers per window than even one slot's room.)
        assert!(lost["servers_untracked_events"].is_u64(), "{lost}");
        for key in [
            "heartbeat_untracked_packets",
            "handshake_untracked_syns",
            "alerts_suppressed",
        ] {
            assert!(
                lost[key].as_u64().is_some_and(|n| n > 0),
                "{key} with {workers} workers: {lost}"
            );
        }
    }
    // With the defaults nothing is turned away on the demo.
    let s = replay_json(&[
        demo.to_str().unwrap(),
        "--tenants",
        tenants.to_str().unwrap(),
    ]);
    assert_eq!(
        s["detectors"]["lost_work"]["heartbeat_untracked_packets"],
        0
    );
    assert_eq!(s["detectors"]["lost_work"]["handshake_untracked_syns"], 0);
}
