//! Flow health through the binary: traffic drops, retransmitted TCP data and failed HTTP
//! upgrades on the labelled scenarios and the shared captures.
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// tshark's retransmitted data segments: `tcp.analysis.retransmission` (which includes its
/// fast and spurious retransmissions) on segments with payload — tapwatch counts data sent
/// again, not SYNs or FINs sent again (SYNs are `syn_retransmits`' business).
fn tshark_retransmissions(file: &Path) -> u64 {
    let out = run(Command::new("tshark").arg("-r").arg(file).args([
        "-o",
        "ip.defragment:FALSE",
        "-Y",
        "tcp.analysis.retransmission && tcp.len > 0",
        "-T",
        "fields",
        "-e",
        "frame.number",
    ]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

#[test]
fn retransmission_counts_agree_with_tshark_on_the_shared_captures() {
    let Some(dir) = shared_pcaps() else { return };
    if !have("tshark") {
        assert!(!in_ci(), "tshark is needed");
        return;
    }
    let mut with_retransmissions = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .extension()
            .is_some_and(|e| e == "pcap" || e == "pcapng")
        {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let want = tshark_retransmissions(&path);
        let summary = replay_json(&[path.to_str().unwrap()]);
        let got = summary["detectors"]["flow_health"]["retransmitted_segments"]
            .as_u64()
            .unwrap();
        with_retransmissions += u64::from(want > 0);
        if name.contains("fuzz") {
            // Fuzzed sequence numbers: tshark calls one segment a spurious retransmission of
            // data acknowledged before the capture's first segment of that side; tapwatch
            // has nothing to compare it with.
            assert!(
                got.abs_diff(want) <= 1,
                "{name}: tapwatch {got}, tshark {want}"
            );
        } else {
            assert_eq!(got, want, "{name}: tapwatch vs tshark");
        }
    }
    assert!(with_retransmissions >= 4, "the shared captures changed");
}

#[test]
fn the_shared_websocket_capture_is_a_successful_upgrade() {
    let Some(dir) = shared_pcaps() else { return };
    let summary = replay_json(&[dir.join("zeek__http-websocket.pcap").to_str().unwrap()]);
    let h = &summary["detectors"]["flow_health"];
    assert_eq!(
        (
            h["upgrades_ok"].as_u64(),
            h["upgrades_refused"].as_u64(),
            h["upgrades_unanswered"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{h}"
    );
    assert_eq!(summary["alerts"]["events"], 0, "{}", summary["alerts"]);
}

#[test]
fn a_configured_ecmp_group_makes_the_members_address_critical() {
    let tmp = TempDir::new("ecmp-group");
    let pcap = tmp.path("drop.pcap");
    let o = run(tapwatch()
        .args(["scenario", "traffic_drop", "--seed", "5", "--out"])
        .arg(&pcap));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = tmp.path("tapwatch.toml");
    std::fs::write(
        &config,
        "[[analyzer.traffic_drop.group]]\nname = \"vip-edge\"\n\
         members = [\"198.51.100.11\", \"198.51.100.12\", \"198.51.100.13\", \"198.51.100.14\"]\n",
    )
    .unwrap();
    let alerts = tmp.path("alerts.jsonl");
    let o = run(tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(tmp.path("drop.tenants.toml"))
        .arg("--config")
        .arg(&config)
        .arg("--alerts-out")
        .arg(&alerts)
        .args(["--format", "json", "--no-store"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let firing: Vec<_> = events.iter().filter(|e| e["state"] == "firing").collect();
    assert_eq!(firing.len(), 2, "{events:#?}");
    for f in &firing {
        assert_eq!(f["kind"], "traffic_drop");
        assert_eq!(f["severity"], "critical", "{f:#}");
        assert_eq!(f["evidence"]["group"], "vip-edge", "{f:#}");
        assert_eq!(f["evidence"]["peers"], 3, "{f:#}");
    }
    assert_eq!(
        events.iter().filter(|e| e["state"] == "resolved").count(),
        2,
        "the member's traffic returns"
    );
}

#[test]
fn the_file_store_answers_retransmits_upgrades_and_drops() {
    let tmp = TempDir::new("flow-health-store");
    let data = tmp.path("data");
    for name in ["retransmits", "upgrade_failure", "traffic_drop"] {
        let pcap = tmp.path(&format!("{name}.pcap"));
        let o = run(tapwatch()
            .args(["scenario", name, "--seed", "3", "--out"])
            .arg(&pcap));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = run(tapwatch()
            .arg("replay")
            .arg(&pcap)
            .arg("--tenants")
            .arg(tmp.path(&format!("{name}.tenants.toml")))
            .arg("--data-dir")
            .arg(&data)
            .args(["--format", "json"]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let ask = |q: &str| -> Vec<serde_json::Value> {
        let o = run(tapwatch()
            .args(["query", q, "--format", "json", "--data-dir"])
            .arg(&data));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let re = ask("retransmits");
    assert_eq!(re[0]["server"], "192.0.2.90", "{re:#?}");
    let (segments, retransmits) = (
        re[0]["segments"].as_u64().unwrap(),
        re[0]["retransmits"].as_u64().unwrap(),
    );
    assert!(retransmits > 50 && segments > 10_000, "{re:#?}");
    let share = re[0]["share"].as_f64().unwrap();
    assert!((share - retransmits as f64 / segments as f64).abs() < 1e-12);
    let up = ask("upgrades");
    assert_eq!(up.len(), 1, "{up:#?}");
    assert_eq!(up[0]["server"], "192.0.2.95");
    let (attempts, ok, refused, unanswered) = (
        up[0]["attempts"].as_u64().unwrap(),
        up[0]["ok"].as_u64().unwrap(),
        up[0]["refused"].as_u64().unwrap(),
        up[0]["unanswered"].as_u64().unwrap(),
    );
    assert_eq!(attempts, ok + refused + unanswered);
    assert!(refused > 10 && unanswered > 5 && ok > refused, "{up:#?}");
    // The tracked destinations' counts per judged window: the withdrawn member's service row
    // counts its quiet windows.
    let mut quiet = 0;
    for f in std::fs::read_dir(data.join("drop_rates")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
        for l in lines {
            let c: Vec<&str> = l.split('\t').collect();
            if c[col("dimension")] == "service" && c[col("port")] == "9000" {
                quiet = quiet.max(c[col("quiet_windows")].parse::<u32>().unwrap());
            }
        }
    }
    assert!(
        quiet >= 3,
        "quiet windows of the member in drop_rates: {quiet}"
    );
    let drops = ask("drops");
    let subjects: Vec<_> = drops
        .iter()
        .map(|d| (d["subject"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        subjects,
        vec![
            ("198.51.100.11", "firing"),
            ("198.51.100.11:9000/udp", "firing"),
            ("198.51.100.11", "resolved"),
            ("198.51.100.11:9000/udp", "resolved"),
        ],
        "{drops:#?}"
    );
}
