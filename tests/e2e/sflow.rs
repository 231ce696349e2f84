//! sFlow input against a real, independent exporter: Debian's pmacct (`pmacctd` reading a
//! capture file, its `sfprobe` plugin sampling 1 in N and sending sFlow v5 to tapwatch on
//! loopback). At 1 in 1 tapwatch counts what the capture holds; at 1 in 10 its estimates
//! are within the sampling error and the top sources hold.
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// Samples pmacct may keep unsent at exit (its last, partial datagram).
const UNFLUSHED: u64 = 16;

/// Runs `tapwatch run --sflow` while pmacctd exports `pcap` at 1 in `rate`; the summary.
fn through_pmacct(tmp: &TempDir, pcap: &std::path::Path, rate: u32) -> serde_json::Value {
    let mut child = tapwatch()
        .args([
            "run",
            "--sflow",
            "127.0.0.1:0",
            "--no-store",
            "--listen",
            "none",
        ])
        .args(["--format", "json", "--duration", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "tapwatch run ended before receiving"
        );
        if let Some(addr) = line.trim().strip_prefix("tapwatch: receiving sFlow on ") {
            break addr.rsplit(':').next().unwrap().to_string();
        }
    };
    let conf = tmp.path(&format!("pmacct-{rate}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\npcap_savefile: {}\nplugins: sfprobe\nsfprobe_receiver: 127.0.0.1:{port}\nsfprobe_agentip: 192.0.2.200\nsampling_rate: {rate}\n",
            pcap.display()
        ),
    )
    .unwrap();
    let pm = run(std::process::Command::new("pmacctd").arg("-f").arg(&conf));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&pm.stdout),
        String::from_utf8_lossy(&pm.stderr)
    );
    // pmacctd 1.7 exits 1 when its plugin finishes the file before the core notices
    // ("no more plugins active"): a shutdown race, not a failure. What arrived is checked
    // below against the capture either way.
    assert!(
        pm.status.success() || said.contains("no more plugins active"),
        "pmacctd: {}\n{said}",
        pm.status
    );
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pmacct_sflow_counts_equal_the_capture_and_sampled_estimates_hold() {
    if !have("pmacctd") {
        return;
    }
    let tmp = TempDir::new("sflow");
    let pcap = tmp.path("hh.pcap");
    assert!(run(tapwatch()
        .args(["scenario", "heavy_hitter", "--out"])
        .arg(&pcap))
    .status
    .success());
    let truth = replay_json(&[pcap.to_str().unwrap()]);
    let packets = truth["packets"].as_u64().unwrap();

    let whole = through_pmacct(&tmp, &pcap, 1);
    let sflow = &whole["capture"]["sflow"][0];
    assert_eq!(sflow["lost_datagrams"], 0, "{sflow}");
    assert_eq!(sflow["lost_samples"], 0, "{sflow}");
    assert_eq!(sflow["malformed"], serde_json::json!({}), "{sflow}");
    let got = whole["packets"].as_u64().unwrap();
    assert_eq!(
        whole["samples"], whole["packets"],
        "1 in 1: every sample is one packet"
    );
    assert!(
        got <= packets && got + UNFLUSHED >= packets,
        "1 in 1: {got} of {packets}"
    );
    for (kind, n) in truth["by_protocol_type"].as_object().unwrap() {
        let n = n.as_u64().unwrap();
        let seen = whole["by_protocol_type"][kind].as_u64().unwrap_or(0);
        assert!(seen <= n && seen + UNFLUSHED >= n, "{kind}: {seen} of {n}");
    }

    let sampled = through_pmacct(&tmp, &pcap, 10);
    let estimate = sampled["packets"].as_f64().unwrap();
    let samples = sampled["samples"].as_f64().unwrap();
    // Binomial sampling: relative standard error sqrt((1 - p) / (n p)), here about 1.5 %;
    // five of them is the bound.
    let sd = ((1.0 - 0.1) / (packets as f64 * 0.1)).sqrt();
    assert!(
        (estimate / packets as f64 - 1.0).abs() < 5.0 * sd,
        "1 in 10: estimate {estimate} of {packets} ({samples} samples)"
    );
    assert!((estimate - 10.0 * samples).abs() < 1.0);
    let top = |s: &serde_json::Value| -> Vec<String> {
        s["top_sources"].as_array().unwrap()[..3]
            .iter()
            .map(|t| t["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        top(&sampled),
        top(&truth),
        "the top sources hold at 1 in 10"
    );
    let first = sampled["top_sources"][0]["packets"].as_f64().unwrap();
    let true_first = truth["top_sources"][0]["packets"].as_f64().unwrap();
    let sd_first = (0.9 / (true_first * 0.1)).sqrt();
    assert!(
        (first / true_first - 1.0).abs() < 5.0 * sd_first,
        "top source: {first} estimated, {true_first} true"
    );
}
