//! The live path end to end, on real interfaces: BFD packets every 400 ms cross a veth pair
//! in a namespace the test made; the sender pauses for 1.5 s; `tapwatch run` on the mirror
//! side posts the missed heartbeat to a real webhook receiver within 1.5 s of the deadline,
//! resolves it when BFD resumes, and exits 0 on SIGTERM with its deliveries drained. TCP
//! connection setups cross too; every row lands in a private ClickHouse in the namespace.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::live_capture::{send_frames, wait_capturing, Netns};
use crate::storage::ClickHouseServer;
use crate::webhooks::Receiver;

/// A BFD control packet of session 0x77, Up.
fn bfd_frame() -> Vec<u8> {
    bfd_frame_in(3)
}

/// A BFD control packet of session 0x77 in `state` (3 Up, 0 AdminDown).
pub(crate) fn bfd_frame_in(state: u8) -> Vec<u8> {
    let payload = tapwatch_synth::bfd_control(state, 3, 0x77, 0x78, 400_000);
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])
        .ipv4([10, 77, 0, 1], [10, 77, 0, 2], 255)
        .udp(49152, 3784)
        .write(&mut v, &payload)
        .unwrap();
    v
}

/// A TCP SYN from node `i` of tenant-less 10.78.0.0/24 to the relay's port 443.
fn syn_frame(i: u8) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, i], [2, 0, 0, 0, 0, 0xb])
        .ipv4([10, 78, 0, i], [10, 77, 0, 2], 64)
        .tcp(40000 + u16::from(i), 443, 1000 * u32::from(i), 64240)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

#[test]
fn live_bfd_silence_reaches_the_webhook_and_sigterm_drains() {
    let Some(ns) = Netns::create("d") else { return };
    let n = ns.name.clone();
    let o = run(Command::new("ip").args(["netns", "exec", &n, "ip", "link", "set", "lo", "up"]));
    assert!(o.status.success());
    // The receiver listens on the namespace's loopback, where tapwatch will post.
    let rx = ns.within(|| Receiver::start(0, Duration::ZERO, |_| 200));
    let tmp = TempDir::new("live-detect");
    let ch = ClickHouseServer::start_in(&n, "live");
    let mut child = ns
        .tapwatch()
        .env("TAPWATCH_CLICKHOUSE_URL", &ch.url)
        .args([
            "run",
            "--interface",
            "twb",
            "--format",
            "json",
            "--drain-timeout",
            "10",
            "--duration",
            "60",
            "--webhook",
            &rx.url(),
            "--agent-id",
            "live1",
            "--data-dir",
        ])
        .arg(tmp.path("data"))
        .spawn()
        .unwrap();
    let (mut stderr, _) = wait_capturing(&mut child);

    // 3 s of BFD at 400 ms minus 0-25 % jitter, a 1.5 s pause, then 3 s more. Returns the
    // time of the last packet before the pause.
    let last_before_pause = ns.within(|| {
        let send_for = |d: Duration| {
            let until = Instant::now() + d;
            let mut last = Instant::now();
            let mut i = 0u64;
            while Instant::now() < until {
                send_frames("twa", &[bfd_frame()]);
                if i < 12 {
                    send_frames("twa", &[syn_frame(i as u8 + 1)]);
                }
                last = Instant::now();
                i += 1;
                std::thread::sleep(Duration::from_millis(400 - (i * 37 % 100)));
            }
            last
        };
        let last = send_for(Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(1500).saturating_sub(last.elapsed()));
        send_for(Duration::from_secs(3));
        last
    });
    std::thread::sleep(Duration::from_millis(1500));
    // tapwatch's own endpoint, inside the namespace (default --listen 127.0.0.1:9178).
    let (metrics, health, ready, top, open) = ns.within(|| {
        (
            get("/metrics"),
            get("/healthz"),
            get("/readyz"),
            get("/api/top"),
            get("/api/alerts"),
        )
    });
    let page = status_page(&n, &tmp);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(
        out.status.success(),
        "tapwatch run did not exit 0 on SIGTERM: {rest}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(summary["capture"]["kernel_drops"], 0);

    let got = rx.received();
    let subject = "10.77.0.1:49152->10.77.0.2:3784/udp";
    let firing = got.iter().find(|r| {
        r.body["kind"] == "missed_heartbeat"
            && r.body["state"] == "firing"
            && r.body["subject"] == subject
    });
    let Some(firing) = firing else {
        panic!(
            "no missed_heartbeat reached the webhook: {:#?}",
            got.iter().map(|g| &g.body).collect::<Vec<_>>()
        )
    };
    // Detection time is 3 x 400 ms after the last packet; the webhook must have it within 1.5 s of that.
    let deadline = last_before_pause + Duration::from_millis(1200);
    let late = firing.at.saturating_duration_since(deadline);
    assert!(
        late <= Duration::from_millis(1500),
        "alert reached the webhook {late:?} after the deadline"
    );
    assert!(
        firing.at >= deadline - Duration::from_millis(100),
        "alert before the deadline?"
    );
    let resolved = got
        .iter()
        .find(|r| r.body["state"] == "resolved" && r.body["id"] == firing.body["id"])
        .expect("resolved when BFD resumed");
    let gap = resolved.body["evidence"]["gap_s"].as_f64().unwrap();
    assert!((1.3..2.2).contains(&gap), "gap {gap}");
    // The evidence capture a live worker's ring gave: named in the alert, written by exit,
    // the BFD flow's headers only (Ethernet, IPv4, UDP: 42 bytes of each 66-byte frame).
    let named = firing.body["evidence"]["evidence_pcap"]
        .as_str()
        .unwrap_or_else(|| panic!("no evidence_pcap: {}", firing.body));
    let pcap = std::fs::read(tmp.path("data").join(named)).expect("the capture is written");
    let (mut at, mut records) = (24, 0);
    while at < pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..at + 16 + caplen];
        assert_eq!(caplen, 42, "headers only");
        assert_eq!(
            &frame[26..34],
            &[10, 77, 0, 1, 10, 77, 0, 2],
            "the flow's packets"
        );
        at += 16 + caplen;
        records += 1;
    }
    assert!(records >= 5, "BFD before and after the silence: {records}");
    assert!(
        rest.contains("none left spooled"),
        "deliveries drained on SIGTERM: {rest}"
    );

    // Every row reached ClickHouse before exit: traffic, setups, the alert and the gap, and
    // the agent's record of itself.
    let st = &summary["storage"];
    assert_eq!(st["batches_left_spooled"], 0, "{st}");
    assert_eq!(st["rows_accepted"], st["rows_written"], "{st}");
    let syns = summary["by_protocol_type"]["tcp_syn"].as_u64().unwrap_or(0);
    assert!(syns >= 10, "SYNs seen: {syns}");
    let (packets, setups, alerts, gap, agent) = ns.within(|| {
        (
            ch.number("SELECT sum(packets) FROM tapwatch.traffic WHERE agent = 'live1'"),
            ch.number("SELECT sum(setups) FROM tapwatch.tenants"),
            ch.number("SELECT count() FROM tapwatch.alerts WHERE kind = 'missed_heartbeat'"),
            ch.query("SELECT gap_ms FROM tapwatch.heartbeat_gaps WHERE state = 'resolved' AND bfd = 1"),
            ch.query("SELECT concat(mode, ' ', interfaces, ' ', kernel) FROM tapwatch.agents WHERE agent = 'live1' LIMIT 1"),
        )
    });
    assert_eq!(packets, summary["packets"].as_u64().unwrap());
    assert_eq!(setups, syns);
    assert!(alerts >= 2, "firing and resolved rows: {alerts}");
    let gap: f64 = gap.parse().unwrap_or_else(|_| panic!("gap row: {gap:?}"));
    assert!((1300.0..2200.0).contains(&gap), "gap {gap} ms");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(agent, format!("run twb {}", kernel.trim()));

    assert!(
        health.starts_with("HTTP/1.1 200") && ready.starts_with("HTTP/1.1 200"),
        "{health}\n{ready}"
    );
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let packets = value("tapwatch_packets_total{");
    assert!(
        packets >= 14.0,
        "BFD packets counted in /metrics: {metrics}"
    );
    assert_eq!(value("tapwatch_kernel_drops_total{"), 0.0, "{metrics}");
    assert!(
        value("tapwatch_alert_events_total{kind=\"missed_heartbeat\",state=\"firing\"}") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("tapwatch_webhook_delivered_total{") >= 1.0,
        "{metrics}"
    );
    assert!(value("tapwatch_windows_total") >= 5.0, "{metrics}");
    // tapwatch's own CPU and memory: the process, and the worker's thread by name.
    assert!(value("process_cpu_seconds_total") > 0.0, "{metrics}");
    assert!(
        metrics.contains("tapwatch_thread_cpu_seconds_total{thread=\"tw-capture-0\"}"),
        "{metrics}"
    );
    let resident = value("process_resident_memory_bytes");
    assert!(resident > f64::from(1 << 20), "{metrics}");
    assert!(
        value("tapwatch_peak_resident_memory_bytes") >= resident,
        "{metrics}"
    );
    let top_body = top.split("\r\n\r\n").nth(1).unwrap_or("");
    let top: serde_json::Value =
        serde_json::from_str(top_body).unwrap_or_else(|e| panic!("{e}: {top_body}"));
    assert!(top["sources"].as_array().is_some(), "{top}");
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");

    // The status page, rendered by a real browser: live top talkers, heartbeat flows (the BFD
    // session with its last gap), the alerts table and the growth section.
    if let Some(dom) = page {
        assert!(
            dom.contains("Top talkers") && dom.contains("10.77.0.1"),
            "top talkers not rendered: {dom}"
        );
        assert!(
            dom.contains("10.77.0.1:49152-&gt;10.77.0.2:3784/udp (BFD)"),
            "heartbeat flows not rendered: {dom}"
        );
        assert!(
            dom.contains("open alerts") && dom.contains("packets"),
            "status line not rendered: {dom}"
        );
        assert!(dom.contains("Connection setups against nodes"), "{dom}");
        assert!(
            root().join("target/tapwatch-status.png").exists(),
            "no screenshot"
        );
    }
}

/// A plain HTTP/1.1 GET to tapwatch's endpoint; the whole response as text.
fn get(path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect("127.0.0.1:9178").expect("connect to --listen");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Renders the daemon's status page in headless Chromium inside the namespace: the DOM
/// after its scripts ran, and a screenshot kept under target/ for people to look at.
fn status_page(ns: &str, tmp: &TempDir) -> Option<String> {
    if !have("chromium") {
        return None;
    }
    let shot = root().join("target/tapwatch-status.png");
    let flags = |extra: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "chromium", "--window-size=1200,1000"])
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", tmp.path(extra).display()));
        c
    };
    let dom = run(flags("profile-dom").args(["--dump-dom", "http://127.0.0.1:9178/status"]));
    let _ = run(flags("profile-shot")
        .arg(format!("--screenshot={}", shot.display()))
        .arg("http://127.0.0.1:9178/status"));
    eprintln!("status page screenshot: {}", shot.display());
    Some(String::from_utf8_lossy(&dom.stdout).into_owned())
}
