//! Latency samples against tshark on the shared captures: the window log's per-server
//! `handshake_server` and `echo` cells (count, median, max per base window) against
//! `tcp.analysis.ack_rtt` of SYN-ACKs and `icmp.resptime` / `icmpv6.resptime` of replies,
//! and `tcp_rtt` against `tcp.analysis.ack_rtt` of the clients' ACKs.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// (window start s, subject, measure) → (count, p50 µs, max µs) of one window level.
type Cells = BTreeMap<Key, (u64, u64, u64)>;
/// (window start s, subject, measure).
type Key = (u64, String, String);

/// The latency cells of every window of `level` in the window log of a replay.
fn cells(pcap: &Path, level: &str) -> Cells {
    let tmp = TempDir::new("latency-x");
    let log = tmp.path("windows.jsonl");
    let o = run(tapwatch()
        .arg("replay")
        .arg(pcap)
        .arg("--windows-out")
        .arg(&log)
        .args(["--format", "json"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut out = Cells::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let w: serde_json::Value = serde_json::from_str(line).unwrap();
        if w["level"] != level {
            continue;
        }
        let start = w["start_ns"].as_u64().unwrap() / 1_000_000_000;
        for c in w["latency"].as_array().unwrap() {
            let n = |k: &str| c[k].as_u64().unwrap();
            out.insert(
                (
                    start,
                    c["subject"].as_str().unwrap().into(),
                    c["measure"].as_str().unwrap().into(),
                ),
                (n("count"), n("p50_us"), n("max_us")),
            );
        }
    }
    out
}

/// tshark's fields of the packets matching `filter`, one row each.
fn tshark(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .args(["-Y", filter, "-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = run(&mut cmd);
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

/// `1627225021.123456789` → ns.
fn ns(epoch: &str) -> u64 {
    let (s, frac) = epoch.split_once('.').unwrap_or((epoch, "0"));
    let frac = format!("{frac:0<9}");
    s.parse::<u64>().unwrap() * 1_000_000_000 + frac[..9].parse::<u64>().unwrap()
}

/// `ADDR:PORT/tcp` with IPv6 in brackets.
fn service(v4: &str, v6: &str, port: &str) -> String {
    if v4.is_empty() {
        format!("[{v6}]:{port}/tcp")
    } else {
        format!("{v4}:{port}/tcp")
    }
}

/// The median as an hdrhistogram reports it (the value at rank ⌈n/2⌉) and the max.
fn p50_max(v: &mut [u64]) -> (u64, u64) {
    v.sort_unstable();
    (v[v.len().div_ceil(2) - 1], v[v.len() - 1])
}

/// Within the histogram's two significant digits (1 %) and the µs truncation.
fn near(ours: u64, theirs: u64) -> bool {
    ours.abs_diff(theirs) <= theirs / 100 + 2
}

/// tshark's samples per (window, subject, measure): SYN-ACKs (from the SYN's last copy
/// sent ≥ 0.5 s after the one before, as tapwatch times a retransmitted SYN; tshark's
/// `ack_rtt` times the first) and echo replies. Also how many SYN-ACKs were retimed.
fn expected(pcap: &Path) -> (BTreeMap<Key, Vec<u64>>, usize) {
    let mut samples: BTreeMap<Key, Vec<u64>> = BTreeMap::new();
    let mut syns: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut retimed = 0;
    let rows = tshark(
        pcap,
        "tcp.flags.syn == 1",
        &[
            "frame.time_epoch",
            "tcp.stream",
            "tcp.flags.ack",
            "ip.src",
            "ipv6.src",
            "tcp.srcport",
            "tcp.analysis.ack_rtt",
        ],
    );
    for r in rows {
        let t = ns(&r[0]);
        if r[2] == "0" || r[2] == "False" {
            let copies = syns.entry(r[1].clone()).or_default();
            if copies.last().is_none_or(|last| t >= last + 500_000_000) {
                copies.push(t);
            }
            continue;
        }
        if r[6].is_empty() {
            continue;
        }
        let mut us = (r[6].parse::<f64>().unwrap() * 1e6).round() as u64;
        if let Some(copies) = syns.get(&r[1]).filter(|c| c.len() > 1) {
            us = (t - copies[copies.len() - 1]) / 1000;
            retimed += 1;
        }
        let key = (
            t / 1_000_000_000,
            service(&r[3], &r[4], &r[5]),
            "handshake_server".into(),
        );
        samples.entry(key).or_default().push(us);
    }
    let rows = tshark(
        pcap,
        "icmp.resptime || icmpv6.resptime",
        &[
            "frame.time_epoch",
            "ip.src",
            "ipv6.src",
            "icmp.resptime",
            "icmpv6.resptime",
        ],
    );
    for r in rows {
        let t = ns(&r[0]);
        let (subject, ms) = if r[1].is_empty() {
            (format!("{}/icmpv6", r[2]), &r[4])
        } else {
            (format!("{}/icmp", r[1]), &r[3])
        };
        let us = (ms.parse::<f64>().unwrap() * 1e3).round() as u64;
        samples
            .entry((t / 1_000_000_000, subject, "echo".into()))
            .or_default()
            .push(us);
    }
    (samples, retimed)
}

#[test]
fn handshake_and_echo_samples_agree_with_tshark() {
    let Some(dir) = shared_pcaps() else { return };
    if !have("tshark") {
        return;
    }
    let mut compared = 0;
    for name in [
        "zeek__echo-connections.pcap",
        "pcapplusplus__example.pcap",
        "pcapplusplus__many-protocols.pcap",
        "zeek__linux_dlt_sll2.pcap",
        "ndpi__http_ipv6.pcap",
        "zeek__http-websocket.pcap",
        "pcapplusplus__tls2.pcap",
    ] {
        let pcap = dir.join(name);
        let ours = cells(&pcap, "base");
        let (mut theirs, retimed) = expected(&pcap);
        if name == "zeek__echo-connections.pcap" {
            assert!(
                retimed > 100,
                "{name}: the retransmitted SYNs are there ({retimed})"
            );
        }
        for (key, v) in &mut theirs {
            let (n, (p50, max)) = (v.len() as u64, p50_max(v));
            let got = ours.get(key).copied();
            assert!(
                got.is_some_and(|(c, a, b)| c == n && near(a, p50) && near(b, max)),
                "{name} {key:?}: tapwatch (count, p50, max) {got:?}, tshark {:?}",
                (n, p50, max)
            );
            compared += n;
        }
        for key in ours
            .keys()
            .filter(|k| k.2 == "handshake_server" || k.2 == "echo")
        {
            assert!(
                theirs.contains_key(key),
                "{name}: {key:?} not in tshark's samples"
            );
        }
    }
    assert!(compared > 700, "{compared} samples compared");
}

#[test]
fn timestamp_rtt_agrees_with_tsharks_ack_rtt_of_the_clients_acks() {
    let Some(dir) = shared_pcaps() else { return };
    if !have("tshark") {
        return;
    }
    let pcap = dir.join("zeek__echo-connections.pcap");
    let ours = cells(&pcap, "60s");
    let rows = tshark(
        &pcap,
        "tcp.analysis.ack_rtt && tcp.options.timestamp.tsval && ip.dst == 127.0.0.1 && tcp.dstport == 7000",
        &["tcp.analysis.ack_rtt"],
    );
    let mut acks: Vec<u64> = rows
        .iter()
        .map(|r| (r[0].parse::<f64>().unwrap() * 1e6).round() as u64)
        .collect();
    let (p50, max) = p50_max(&mut acks);
    let (count, ours_p50, ours_max) = ours
        .iter()
        .find(|(k, _)| k.1 == "127.0.0.1:7000/tcp" && k.2 == "tcp_rtt")
        .map(|(_, v)| *v)
        .expect("timestamp samples towards the echo server");
    // One sample per round trip (pping) against one per acknowledged segment: most
    // segments are sampled here, and the two medians and maxima agree closely.
    assert!(
        count * 10 >= acks.len() as u64 * 8,
        "{count} of {} ACKs",
        acks.len()
    );
    assert!(
        ours_p50.abs_diff(p50) <= p50 / 5 + 10,
        "p50 {ours_p50} µs, tshark {p50} µs"
    );
    assert!(
        ours_max.abs_diff(max) <= max / 50,
        "max {ours_max} µs, tshark {max} µs"
    );
}
