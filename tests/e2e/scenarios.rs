//! The labelled scenario suite: every expected alert fires at the right subject within its
//! deadline, and nothing else fires. Also: detectors run clean over the shared captures.
use std::path::Path;

use crate::common::*;

/// Replays a capture (with its tenants file, if any) and returns the alert events.
fn alerts_of(capture: &Path, tenants: Option<&Path>) -> Vec<serde_json::Value> {
    let tmp = TempDir::new("alerts");
    let out = tmp.path("alerts.jsonl");
    let mut cmd = tapwatch();
    cmd.arg("replay")
        .arg(capture)
        .arg("--alerts-out")
        .arg(&out)
        .args(["--format", "json"]);
    if let Some(t) = tenants {
        cmd.arg("--tenants").arg(t);
    }
    let o = run(&mut cmd);
    assert!(
        o.status.success(),
        "{}: {}",
        capture.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad alert line {l:?}: {e}")))
        .collect()
}

/// Whether any event of `kind` names `subject`.
fn has_alert(alerts: &[serde_json::Value], kind: &str, subject: &str) -> bool {
    alerts
        .iter()
        .any(|a| a["kind"] == kind && a["subject"] == subject)
}

fn ns(rfc3339: &str) -> u64 {
    // 2026-01-01T00:01:16.186000000Z; the scenarios all start on 2026-01-01.
    let t = &rfc3339[11..rfc3339.len() - 1];
    let (hms, frac) = t.split_once('.').unwrap();
    let p: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let day: u64 = rfc3339[8..10].parse().unwrap();
    1_767_225_600_000_000_000
        + (day - 1) * 86_400_000_000_000
        + (p[0] * 3600 + p[1] * 60 + p[2]) * 1_000_000_000
        + frac.parse::<u64>().unwrap()
}

fn check_scenario(name: &str) {
    let tmp = TempDir::new(&format!("scenario-{name}"));
    let pcap = tmp.path(&format!("{name}.pcap"));
    let o = run(tapwatch()
        .args(["scenario", name, "--seed", "3", "--out"])
        .arg(&pcap));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path(&format!("{name}.truth.json"))).unwrap(),
    )
    .unwrap();
    let alerts = alerts_of(&pcap, Some(&tmp.path(&format!("{name}.tenants.toml"))));
    let firing: Vec<&serde_json::Value> =
        alerts.iter().filter(|a| a["state"] == "firing").collect();
    let expected = truth["expected"].as_array().unwrap();
    for e in expected {
        let hit = firing
            .iter()
            .find(|a| a["kind"] == e["kind"] && a["subject"] == e["subject"]);
        let Some(hit) = hit else {
            panic!(
                "{name}: expected {} on {} did not fire; alerts: {alerts:#?}",
                e["kind"], e["subject"]
            );
        };
        let at = ns(hit["detected_at"].as_str().unwrap());
        let (lo, hi) = (
            e["earliest_ns"].as_u64().unwrap(),
            e["latest_ns"].as_u64().unwrap(),
        );
        assert!(
            lo <= at && at <= hi,
            "{name}: {} on {} detected at {} ({at}), expected within [{lo}, {hi}]",
            e["kind"],
            e["subject"],
            hit["detected_at"]
        );
        if e["tenant"].is_string() {
            assert_eq!(
                hit["tenant"], e["tenant"],
                "{name}: tenant of {}",
                e["subject"]
            );
        }
    }
    for a in &firing {
        if a["kind"] == "isolation_advice" {
            // Advice accompanies a tenant-level alert that is itself expected.
            assert!(
                expected
                    .iter()
                    .any(|e| e["kind"] == "quadratic_setup_growth" && e["tenant"] == a["tenant"]),
                "{name}: unexpected isolation advice {a:#}"
            );
            continue;
        }
        assert!(
            expected
                .iter()
                .any(|e| a["kind"] == e["kind"] && a["subject"] == e["subject"]),
            "{name}: unexpected alert {} on {}: {a:#}",
            a["kind"],
            a["subject"]
        );
    }
    for e in expected
        .iter()
        .filter(|e| e["kind"] == "quadratic_setup_growth")
    {
        let advice = firing
            .iter()
            .find(|a| a["kind"] == "isolation_advice" && a["tenant"] == e["tenant"]);
        let text = advice
            .and_then(|a| a["evidence"]["advice"].as_str())
            .unwrap_or_else(|| panic!("{name}: no isolation advice for {}", e["tenant"]));
        assert!(
            text.contains("dedicated relay") && text.contains("setups/s"),
            "{text}"
        );
    }
    // Every alert that fired with an expected transient cause is well-formed.
    for a in &alerts {
        assert_eq!(a["id"].as_str().unwrap().len(), 16);
        assert!(a["evidence"].is_object());
    }
}

#[test]
fn benign_raises_nothing() {
    check_scenario("benign");
}

#[test]
fn heavy_hitter_in_skewed_background() {
    check_scenario("heavy_hitter");
}

#[test]
fn quadratic_setup_growth_but_not_linear() {
    check_scenario("setup_growth");
}

#[test]
fn bfd_silence_within_detect_time_plus_50ms() {
    check_scenario("bfd_silence");
}

#[test]
fn keepalive_gap() {
    check_scenario("keepalive_gap");
}

#[test]
fn syn_retransmissions_towards_one_server() {
    check_scenario("syn_retransmits");
}

#[test]
fn latency_shift_on_a_slower_response() {
    check_scenario("response_shift");
}

#[test]
fn latency_shift_on_rare_echo_stalls() {
    check_scenario("echo_stall");
}

#[test]
fn latency_shift_on_slow_rsts() {
    check_scenario("slow_rst");
}

#[test]
fn latency_shift_on_a_tcp_timestamp_rtt_step() {
    check_scenario("tcp_rtt_step");
}

#[test]
fn latency_shift_on_a_tenant_whose_servers_slow_down_together() {
    check_scenario("tenant_shift");
}

#[test]
fn latency_look_alikes_raise_nothing() {
    check_scenario("latency_benign");
}

#[test]
fn the_bundled_demo_raises_every_scenario_and_nothing_else() {
    check_scenario("demo");
}

// flow health (issue 14)
#[test]
fn traffic_drop_of_a_withdrawn_ecmp_member() {
    check_scenario("traffic_drop");
}

#[test]
fn retransmits_jump_at_one_server() {
    check_scenario("retransmits");
}

#[test]
fn upgrade_failures_with_refusals_and_silence() {
    check_scenario("upgrade_failure");
}

#[test]
fn flow_health_look_alikes_raise_nothing() {
    check_scenario("benign_flow_health");
}

#[test]
fn missed_heartbeat_resolution_reports_the_gap() {
    let tmp = TempDir::new("gap");
    let pcap = tmp.path("bfd.pcap");
    assert!(run(tapwatch()
        .args(["scenario", "bfd_silence", "--out"])
        .arg(&pcap))
    .status
    .success());
    let alerts = alerts_of(&pcap, Some(&tmp.path("bfd.tenants.toml")));
    let firing = alerts.iter().find(|a| a["state"] == "firing").unwrap();
    let resolved = alerts
        .iter()
        .find(|a| a["state"] == "resolved" && a["id"] == firing["id"])
        .expect("the session resumes");
    let gap = resolved["evidence"]["gap_s"].as_f64().unwrap();
    assert!((1.3..1.45).contains(&gap), "gap {gap}");
    assert_eq!(firing["evidence"]["bfd"]["detect_mult"], 3);
    assert_eq!(firing["evidence"]["bfd"]["desired_min_tx_us"], 400_000);
    assert_eq!(firing["severity"], "critical");
}

#[test]
fn detectors_run_clean_over_the_shared_captures() {
    let Some(dir) = shared_pcaps() else { return };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .extension()
            .is_some_and(|e| e == "pcap" || e == "pcapng")
        {
            continue;
        }
        let tmp = TempDir::new("clean");
        let out = tmp.path("alerts.jsonl");
        let o = run(tapwatch()
            .arg("replay")
            .arg(&path)
            .arg("--alerts-out")
            .arg(&out)
            .args(["--format", "json"]));
        assert!(
            o.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // Real BFD sessions that stay up (or stay down) are not missed heartbeats.
        if name.contains("bfd") {
            assert!(alerts.is_empty(), "{name}: {alerts:#?}");
        }
        // Every alert event balances: at most one firing per id, resolved only after firing.
        let mut open = std::collections::HashSet::new();
        for a in &alerts {
            let id = a["id"].as_str().unwrap().to_string();
            match a["state"].as_str().unwrap() {
                "firing" => {
                    open.insert(id);
                }
                _ => assert!(open.remove(&id), "{name}: resolved without firing: {a}"),
            }
        }
        assert_eq!(
            summary["alerts"]["events"].as_u64().unwrap(),
            alerts.len() as u64,
            "{name}"
        );
    }
}

#[test]
fn real_attacks_in_the_shared_captures_are_found() {
    let Some(dir) = shared_pcaps() else { return };
    // tshark counts 241 retransmitted SYNs towards 127.0.0.1:7000 in this burst of 741 connections.
    let alerts = alerts_of(&dir.join("zeek__echo-connections.pcap"), None);
    assert!(
        has_alert(&alerts, "syn_retransmits", "127.0.0.1:7000/tcp"),
        "{alerts:#?}"
    );
    // The spoofed SYN flood: one destination service takes all packets from the start.
    // SNMP reflection: ~4300 reflectors hit one victim on three ports within 23 ms.
    let alerts = alerts_of(&dir.join("stopddos__amp.UDP.snmp.src161.pcapng"), None);
    assert!(
        has_alert(&alerts, "heavy_hitter", "10.10.10.10"),
        "{alerts:#?}"
    );
    let alerts = alerts_of(&dir.join("stopddos__pkt.TCP.synflood.spoofed.pcap"), None);
    assert!(
        has_alert(&alerts, "heavy_hitter", "10.10.10.10:25565/tcp"),
        "{alerts:#?}"
    );
}
