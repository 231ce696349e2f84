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

/// Starts `tapwatch run --sflow 127.0.0.1:0 --listen none --format json --duration 60` with
/// `extra` arguments; the child, the UDP port it says it receives on, and its standard
/// error read up to that line (keep it open while the child runs).
fn sflow_child(
    extra: &[&std::ffi::OsStr],
) -> (
    std::process::Child,
    u16,
    BufReader<std::process::ChildStderr>,
) {
    let mut child = tapwatch()
        .args(["run", "--sflow", "127.0.0.1:0", "--listen", "none"])
        .args(["--format", "json", "--duration", "60"])
        .args(extra)
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
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    (child, port, stderr)
}

/// Runs `tapwatch run --sflow` while pmacctd exports `pcap` at 1 in `rate`, storing rows in
/// the file store under `tmp`'s `data-RATE`; the summary.
fn through_pmacct(tmp: &TempDir, pcap: &std::path::Path, rate: u32) -> serde_json::Value {
    let data = tmp.path(&format!("data-{rate}"));
    let (child, port, _stderr) = sflow_child(&["--data-dir".as_ref(), data.as_ref()]);
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

/// Per stored row of `table` in a file store: (packets, samples).
fn packets_and_samples(data: &std::path::Path, table: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(data.join(table)).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let mut lines = text.lines();
        let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let col = |name: &str| head.iter().position(|c| *c == name).unwrap();
        let (p, s) = (col("packets"), col("samples"));
        for l in lines {
            let v: Vec<&str> = l.split('\t').collect();
            out.push((v[p].parse().unwrap(), v[s].parse().unwrap()));
        }
    }
    out
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

    // Stored rows: unsampled, every row's samples are its packets.
    let rows = packets_and_samples(&tmp.path("data-1"), "traffic");
    assert!(
        !rows.is_empty() && rows.iter().all(|(p, s)| p == s),
        "{rows:?}"
    );

    let sampled = through_pmacct(&tmp, &pcap, 10);
    // At 1 in 10 each stored row's packets are 10 × its samples, and the rows' samples
    // are the records tapwatch counted (but for any too late for their window).
    for table in ["traffic", "tenants"] {
        let rows = packets_and_samples(&tmp.path("data-10"), table);
        assert!(rows.iter().all(|(p, s)| *p == 10 * s), "{table}: {rows:?}");
        let stored: u64 = rows.iter().map(|r| r.1).sum();
        let late = sampled["detectors"]["late_packets"].as_u64().unwrap();
        assert_eq!(Some(stored + late), sampled["samples"].as_u64(), "{table}");
    }
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

/// XDR words of a hand-built sFlow v5 datagram.
#[derive(Default)]
struct Xdr(Vec<u8>);

impl Xdr {
    fn u32(mut self, v: u32) -> Xdr {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(self, v: u64) -> Xdr {
        self.u32((v >> 32) as u32).u32(v as u32)
    }

    /// A sample or record: format word (enterprise 0), length, body (padded to 4 bytes).
    fn item(mut self, format: u32, body: &[u8]) -> Xdr {
        self = self.u32(format).u32(body.len().div_ceil(4) as u32 * 4);
        self.0.extend_from_slice(body);
        self.0.resize(self.0.len().div_ceil(4) * 4, 0);
        self
    }
}

/// Generic interface counters (counter record 1) of one interface at one moment.
struct IfCounters {
    if_index: u32,
    in_octets: u64,
    out_octets: u64,
    in_packets: u32,
    in_errors: u32,
    out_discards: u32,
    status: u32,
}

/// A flow sample (format 1) of a UDP packet from `src` to 10.0.0.2:53, taken 1 in `rate`.
fn flow_sample(seq: u32, rate: u32, src: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [10, 0, 0, 2], 64)
        .udp(40000, 53)
        .write(&mut frame, &[0; 20])
        .unwrap();
    // Raw packet header record: Ethernet, frame length (with FCS), 4 bytes stripped.
    let mut header = Xdr::default()
        .u32(1)
        .u32(frame.len() as u32 + 4)
        .u32(4)
        .u32(frame.len() as u32)
        .0;
    header.extend_from_slice(&frame);
    Xdr::default()
        .u32(seq)
        .u32(3)
        .u32(rate)
        .u32(seq * rate)
        .u32(0)
        .u32(3)
        .u32(4)
        .u32(1)
        .item(1, &header)
        .0
}

/// A datagram from agent 192.0.2.77 with a flow sample (1 in 100) of each of `sources`
/// and one counters sample per interface.
fn datagram(seq: u32, sources: &[[u8; 4]], interfaces: &[IfCounters]) -> Vec<u8> {
    let mut d = Xdr::default()
        .u32(5)
        .u32(1)
        .u32(u32::from_be_bytes([192, 0, 2, 77]))
        .u32(0)
        .u32(seq)
        .u32(seq * 1000)
        .u32((sources.len() + interfaces.len()) as u32);
    for (i, src) in sources.iter().enumerate() {
        d = d.item(1, &flow_sample(seq * 1000 + i as u32, 100, *src));
    }
    for c in interfaces {
        let body = Xdr::default()
            .u32(c.if_index)
            .u32(6)
            .u64(10_000_000_000)
            .u32(1)
            .u32(c.status)
            .u64(c.in_octets)
            .u32(c.in_packets)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(c.in_errors)
            .u32(0)
            .u64(c.out_octets)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(c.out_discards)
            .u32(0)
            .u32(0);
        let sample = Xdr::default()
            .u32(seq)
            .u32(c.if_index)
            .u32(1)
            .item(1, &body.0);
        d = d.item(2, &sample.0);
    }
    d.0
}

#[test]
fn interface_counters_reach_history_and_query_interfaces() {
    let tmp = TempDir::new("sflow-ifs");
    let data = tmp.path("data");
    let (child, port, _stderr) = sflow_child(&[
        "--agent-id".as_ref(),
        "probe".as_ref(),
        "--data-dir".as_ref(),
        data.as_ref(),
    ]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |seq: u32, ifs: &[IfCounters]| {
        socket
            .send_to(&datagram(seq, &[[10, 0, 0, 1]], ifs), ("127.0.0.1", port))
            .unwrap();
    };
    // Interface 7 moves 30 s of traffic between the two samples (the agent's clock, not
    // ours: the rows hold the counters, the query their differences); 9 is down.
    send(
        1,
        &[
            IfCounters {
                if_index: 7,
                in_octets: 1_000_000,
                out_octets: 50_000,
                in_packets: 1000,
                in_errors: 2,
                out_discards: 0,
                status: 3,
            },
            IfCounters {
                if_index: 9,
                in_octets: 0,
                out_octets: 0,
                in_packets: 0,
                in_errors: 0,
                out_discards: 0,
                status: 1,
            },
        ],
    );
    // The sink stores a sample once a window closes after a worker published it (every
    // second); the last one at exit whatever the timing.
    std::thread::sleep(Duration::from_millis(3500));
    send(
        2,
        &[IfCounters {
            if_index: 7,
            in_octets: 4_000_000,
            out_octets: 150_000,
            in_packets: 4000,
            in_errors: 5,
            out_discards: 11,
            status: 3,
        }],
    );
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["capture"]["sflow"][0]["interfaces"], 2, "{summary}");

    let q = run(tapwatch()
        .args(["query", "interfaces", "--format", "json", "--data-dir"])
        .arg(&data));
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (seven, nine) = (&rows[0], &rows[1]);
    assert_eq!(
        (seven["sflow_agent"].as_str(), seven["if_index"].as_u64()),
        (Some("192.0.2.77"), Some(7))
    );
    assert_eq!(seven["samples"], 2, "{seven}");
    assert_eq!(seven["status"], "up");
    assert_eq!(seven["speed_bits"], 10_000_000_000u64);
    assert_eq!(seven["in_packets"], 3000);
    assert_eq!(seven["in_errors"], 3);
    assert_eq!(seven["out_discards"], 11);
    let secs = seven["seconds"].as_f64().unwrap();
    assert!(secs >= 1.0, "{seven}");
    let in_bps = seven["in_bps"].as_f64().unwrap();
    assert!((in_bps - 3_000_000.0 * 8.0 / secs).abs() < 1e-6, "{seven}");
    assert_eq!(
        (nine["if_index"].as_u64(), nine["status"].as_str()),
        (Some(9), Some("down"))
    );
    assert_eq!(nine["samples"], 1);

    let table = run(tapwatch()
        .args(["query", "interfaces", "--data-dir"])
        .arg(&data));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("sflow_agent") && text.contains("192.0.2.77"),
        "{text}"
    );
}

#[test]
fn a_heavy_hitter_on_sampled_sflow_states_its_estimates_error() {
    let (child, port, _stderr) = sflow_child(&["--no-store".as_ref()]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Every 100 ms, one record (1 in 100) from each of 20 steady sources: ~20 000
    // packets/s estimated. After 6 s (warm-up is 5 s) a new source adds 20 records per
    // datagram: half the window, some 20 000 packets/s.
    let steady: Vec<[u8; 4]> = (1..=20).map(|i| [10, 1, 0, i]).collect();
    for seq in 1..=90u32 {
        let mut sources = steady.clone();
        if seq > 60 {
            sources.extend(std::iter::repeat_n([10, 9, 9, 9], 20));
        }
        socket
            .send_to(&datagram(seq, &sources, &[]), ("127.0.0.1", port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["packets"].as_u64(),
        Some(100 * summary["samples"].as_u64().unwrap())
    );
    let heavy: Vec<&serde_json::Value> = summary["alerts"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "heavy_hitter" && e["state"] == "firing")
        .collect();
    assert!(
        heavy
            .iter()
            .any(|e| e["subject"].as_str().unwrap().contains("10.9.9.9")),
        "{}",
        summary["alerts"]
    );
    for e in heavy {
        let ev = &e["evidence"];
        let s = &ev["sampled"];
        let count = ev["count"].as_f64().unwrap();
        let n = s["samples"].as_f64().unwrap();
        assert_eq!(s["rate"].as_f64(), Some(100.0), "{e}");
        assert!(n >= 1.0 && (n - count / 100.0).abs() <= 0.5, "{e}");
        assert!((s["relative_se"].as_f64().unwrap() - 1.0 / n.sqrt()).abs() < 1e-9);
        let se = 100.0 * n.sqrt();
        let (lo, hi) = (
            s["count_low"].as_f64().unwrap(),
            s["count_high"].as_f64().unwrap(),
        );
        assert!((hi - count - 1.96 * se).abs() < 1e-6 && lo < count, "{e}");
    }
}
