//! One engine behind two front doors: the same frames, captured live by `tapwatch run` on a
//! veth pair and recorded beside it by tcpdump, raise the same alert events when the
//! recording is replayed (with one worker and with two).
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::live_capture::{send_frames, wait_capturing, Netns};
use crate::live_detect::bfd_frame_in;

/// Alert events of a JSON-lines file as (kind, state, subject, severity, detected_at ns).
fn events(path: &std::path::Path) -> Vec<(String, String, String, String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<_> = text
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("kind"),
                s("state"),
                s("subject"),
                s("severity"),
                rfc3339_ns(&s("detected_at")),
            )
        })
        .collect();
    v.sort();
    v
}

/// `2026-11-30T20:01:02.123456789Z` → ns since the epoch (days from the civil date).
fn rfc3339_ns(t: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let frac = &t[20..t.len() - 1];
    secs as u64 * 1_000_000_000 + format!("{frac:0<9}")[..9].parse::<u64>().unwrap()
}

#[test]
fn live_and_replay_raise_the_same_alerts_from_the_same_frames() {
    let Some(ns) = Netns::create("r") else { return };
    if !have("tcpdump") {
        return;
    }
    let n = ns.name.clone();
    let tmp = TempDir::new("live-replay");
    let pcap = tmp.path("mirror.pcap");
    let mut dump = Command::new("ip")
        .args(["netns", "exec", &n, "tcpdump", "-i", "twb", "-n", "-U"])
        .args(["--time-stamp-precision=nano", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dump_err = BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            dump_err.read_line(&mut line).unwrap() > 0,
            "tcpdump did not start"
        );
    }
    let live_alerts = tmp.path("live.jsonl");
    let mut child = ns
        .tapwatch()
        .args([
            "run",
            "--interface",
            "twb",
            "--format",
            "json",
            "--no-store",
        ])
        .args(["--listen", "none", "--duration", "60", "--alerts-out"])
        .arg(&live_alerts)
        .arg("--data-dir")
        .arg(tmp.path("data"))
        .spawn()
        .unwrap();
    let _stderr = wait_capturing(&mut child);
    // BFD Up every 400 ms (a little jitter), silent for 1.5 s, back for 2 s, then AdminDown:
    // the session ends on the wire, so neither path has a silence at the end.
    ns.within(|| {
        let send_for = |d: Duration| {
            let until = Instant::now() + d;
            let mut i = 0u64;
            while Instant::now() < until {
                send_frames("twa", &[bfd_frame_in(3)]);
                i += 1;
                std::thread::sleep(Duration::from_millis(400 - (i * 37 % 100)));
            }
        };
        send_for(Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(1500));
        send_for(Duration::from_secs(2));
        send_frames("twa", &[bfd_frame_in(0)]);
    });
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tapwatch run did not exit 0 on SIGTERM"
    );
    unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
    let _ = dump.wait();

    let live = events(&live_alerts);
    assert!(
        live.iter()
            .any(|e| e.0 == "missed_heartbeat" && e.1 == "firing"),
        "the live run raised no missed heartbeat: {live:?}"
    );
    for workers in ["1", "2"] {
        let replayed = tmp.path(&format!("replay-{workers}.jsonl"));
        let o = run(tapwatch()
            .arg("replay")
            .arg(&pcap)
            .args(["--no-store", "--progress", "never", "--workers", workers])
            .arg("--data-dir")
            .arg(tmp.path("data"))
            .arg("--alerts-out")
            .arg(&replayed));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let replay = events(&replayed);
        assert_eq!(live.len(), replay.len(), "live {live:?}\nreplay {replay:?}");
        for (a, b) in live.iter().zip(&replay) {
            assert_eq!((&a.0, &a.1, &a.2, &a.3), (&b.0, &b.1, &b.2, &b.3));
            // Both sockets see the kernel's one timestamp of each frame.
            assert!(
                a.4.abs_diff(b.4) <= 1_000_000,
                "detected_at differs: live {a:?}, replay with {workers} workers {b:?}"
            );
        }
    }
}
