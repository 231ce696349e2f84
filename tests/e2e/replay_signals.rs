//! A replay's ends that are not the end of its input: a signal, a closed pipe, standard
//! output as the window log.
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

fn demo() -> String {
    root().join("data/demo.pcap").to_string_lossy().into_owned()
}

#[test]
fn sigint_mid_replay_finishes_the_windows_seen_and_prints_the_summary() {
    for workers in ["1", "2"] {
        let child = tapwatch()
            .args(["replay", &demo(), "--no-store", "--format", "json"])
            .args([
                "--pace",
                "realtime",
                "--progress",
                "never",
                "--workers",
                workers,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{workers} workers: {err}");
        assert!(err.contains("stopped after"), "{err}");
        let s: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no summary after SIGINT ({e}): {err}"));
        let packets = s["packets"].as_u64().unwrap();
        // Realtime pace: about 2.5 s of the demo was read, far from all of it.
        assert!(packets > 0 && packets < 20_000, "{packets} packets");
        assert!(s["detectors"]["windows"]["1s"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn a_closed_standard_error_ends_print_packets_quietly() {
    let mut child = tapwatch()
        .args([
            "replay",
            &demo(),
            "--no-store",
            "--print-packets",
            "--progress",
            "never",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    let mut err = child.stderr.take().unwrap();
    err.read_exact(&mut first).unwrap();
    drop(err); // the reader of `2>&1 | head -1` leaves
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn windows_out_dash_is_standard_output() {
    let tmp = TempDir::new("windows-stdout");
    let o = run(tapwatch()
        .current_dir(&tmp.0)
        .args([
            "replay",
            &demo(),
            "--no-store",
            "--windows-out",
            "-",
            "--progress",
            "never",
        ])
        .args(["--alerts-out", "alerts.jsonl"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.path("-").exists(), "a file named - was created");
    let text = String::from_utf8_lossy(&o.stdout);
    // The summary moved to standard error, as with `--alerts-out -`.
    assert!(String::from_utf8_lossy(&o.stderr).contains("packets"));
    let windows = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "base")
        .count();
    assert!(windows > 100, "{windows} base windows on standard output");
}
