//! Settings validation through the binary: `rules check`, `replay` and `run` refuse every
//! out-of-range value with the file, line, setting and allowed range.
use crate::common::*;

/// (config text, the error's `file:line:`, what it must also say).
const BAD: &[(&str, &str, &str)] = &[
    (
        "[analyzer]\nwindow_s = 0\n",
        ":2:",
        "analyzer.window_s = 0: expected a number from 0.01 to 3600",
    ),
    (
        "[analyzer]\nwindow_s = -1\n",
        ":2:",
        "analyzer.window_s = -1",
    ),
    (
        "[analyzer]\nwindow_s = nan\n",
        ":2:",
        "analyzer.window_s = NaN",
    ),
    (
        "[analyzer]\nwindow_s = inf\n",
        ":2:",
        "analyzer.window_s = inf",
    ),
    (
        "[analyzer]\nwindow_s = 1e-9\n",
        ":2:",
        "analyzer.window_s = 0.000000001",
    ),
    (
        "[analyzer.heartbeat]\nk = nan\n",
        ":2:",
        "analyzer.heartbeat.k = NaN: expected a number from 1 to 1000",
    ),
    (
        "[analyzer.heavy_hitters]\nmin_share = -0.2\n",
        ":2:",
        "min_share = -0.2: expected a number from 0 to 1",
    ),
    (
        "[analyzer.setup_growth]\npoint_s = 0\n",
        ":2:",
        "analyzer.setup_growth.point_s = 0",
    ),
    (
        "[analyzer.heavy_hitters]\nsketch_capacity = 0\n",
        ":2:",
        "sketch_capacity = 0: expected a whole number from 16 to 1048576",
    ),
    (
        "[analyzer.heavy_hitters]\nsketch_capacity = 4000000000000\n",
        ":2:",
        "sketch_capacity = 4000000000000",
    ),
    (
        "[[webhook]]\nurl = \"not a url\"\n",
        ":2:",
        "webhook[1].url = \"not a url\": expected an http:// or https:// URL",
    ),
    (
        "[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nspool_mib = 0\n",
        ":3:",
        "webhook[1].spool_mib = 0: expected a whole number from 1",
    ),
    (
        "[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nrate_per_s = 0\n",
        ":3:",
        "webhook[1].rate_per_s = 0: expected a number from 0.1",
    ),
    (
        "[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nrate_per_s = 0.05\n",
        ":3:",
        "rate_per_s = 0.05",
    ),
    (
        "[[webhook]]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"/nonexistent/secret\"\n",
        ":3:",
        "webhook[1].secret_file = \"/nonexistent/secret\": expected a readable file",
    ),
    (
        "[rules.missed_heartbeat]\ncooldown_s = -5\n",
        ":2:",
        "rules.missed_heartbeat.cooldown_s = -5",
    ),
    (
        "[[analyzer.override]]\ntenant = \"edge-*\"\nheavy_min_share = 2\n",
        ":3:",
        "analyzer.override[1].heavy_min_share = 2: expected a number from 0 to 1",
    ),
    (
        "[[analyzer.override]]\ntenant = \"a\"\n[[analyzer.override]]\ntenant = \"b\"\nheartbeat_k = 0\n",
        ":5:",
        "analyzer.override[2].heartbeat_k = 0: expected a number from 1 to 1000",
    ),
    ("[storage]\nspool_mib = 0\n", ":2:", "storage.spool_mib = 0"),
    (
        "[storage]\nbatch_age_s = nan\n",
        ":2:",
        "storage.batch_age_s = NaN",
    ),
    (
        "[evidence]\nring_packets = 10\n",
        ":2:",
        "evidence.ring_packets = 10: expected a whole number from 1024 to 4194304",
    ),
    (
        "[evidence]\nmax_disk_mib = 0\n",
        ":2:",
        "evidence.max_disk_mib = 0",
    ),
    (
        "[evidence]\nafter_s = nan\n",
        ":2:",
        "evidence.after_s = NaN",
    ),
    (
        "[clickhouse]\ntimeout_s = 0\n",
        ":2:",
        "clickhouse.timeout_s = 0",
    ),
];

fn refused(args: &[&str], cfg: &std::path::Path, line: &str, says: &str) {
    let out = run(tapwatch().args(args).arg("--config").arg(cfg));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(&format!("bad.toml{line}")) && err.contains(says),
        "{args:?} must say bad.toml{line} … {says}: {err}"
    );
}

#[test]
fn every_out_of_range_setting_is_refused_with_file_line_and_range() {
    let tmp = TempDir::new("settings");
    let cfg = tmp.path("bad.toml");
    let demo = root().join("data/demo.pcap").display().to_string();
    for (text, line, says) in BAD {
        std::fs::write(&cfg, text).unwrap();
        let out = run(tapwatch().args(["rules", "check"]).arg(&cfg));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rules check accepted {text:?}");
        assert!(
            err.contains(&format!("bad.toml{line}")) && err.contains(says),
            "{text:?}: {err}"
        );
        refused(&["replay", &demo, "--no-store"], &cfg, line, says);
    }
    // `run` refuses before it opens the interface.
    std::fs::write(&cfg, BAD[0].0).unwrap();
    refused(
        &["run", "--interface", "lo", "--duration", "1", "--no-store"],
        &cfg,
        BAD[0].1,
        BAD[0].2,
    );
}

#[test]
fn a_config_that_is_not_utf8_is_named_with_its_line() {
    let tmp = TempDir::new("settings-latin1");
    let cfg = tmp.path("bad.toml");
    std::fs::write(&cfg, b"[analyzer]\n# caf\xe9\nwindow_s = 1\n").unwrap();
    let out = run(tapwatch().args(["rules", "check"]).arg(&cfg));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.toml:2:6: not UTF-8 text (byte 16)"),
        "{err}"
    );
}

#[test]
fn a_tenant_override_changes_that_tenants_detection_and_rules_check_explains_it() {
    let tmp = TempDir::new("tenant-override");
    let pcap = tmp.path("sg.pcap");
    assert!(run(tapwatch()
        .args(["scenario", "setup_growth", "--out"])
        .arg(&pcap))
    .status
    .success());
    let tenants = tmp.path("sg.tenants.toml");
    let growth_of = |config: &str| -> Vec<String> {
        let cfg = tmp.path("override.toml");
        std::fs::write(&cfg, config).unwrap();
        let alerts = tmp.path("alerts.jsonl");
        let out = run(tapwatch()
            .arg("replay")
            .arg(&pcap)
            .arg("--tenants")
            .arg(&tenants)
            .args(["--no-store", "--config"])
            .arg(&cfg)
            .arg("--alerts-out")
            .arg(&alerts));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&alerts)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|a| a["kind"] == "quadratic_setup_growth" && a["state"] == "firing")
            .map(|a| a["tenant"].as_str().unwrap().to_string())
            .collect()
    };
    let default = growth_of("");
    assert!(
        !default.is_empty() && default.iter().all(|t| t == "swarm"),
        "{default:?}"
    );
    // The swarm tenant may grow up to the cube of its nodes; others keep the default.
    let relaxed = "[[analyzer.override]]\ntenant = \"sw*\"\ngrowth_min_exponent = 3\n\n[[analyzer.override]]\ntenant = \"nobody\"\nheartbeat_k = 5\n";
    assert_eq!(growth_of(relaxed), Vec::<String>::new());

    let cfg = tmp.path("override.toml");
    std::fs::write(&cfg, relaxed).unwrap();
    let out = run(tapwatch()
        .args(["rules", "check"])
        .arg(&cfg)
        .arg("--tenants")
        .arg(&tenants));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "analyzer.override[1]: tenant \"sw*\" -> growth_min_exponent 3; applies to swarm"
        ),
        "{text}"
    );
    assert!(
        text.contains("tenant \"nobody\" -> heartbeat_k 5; first match for no tenant"),
        "{text}"
    );
}
