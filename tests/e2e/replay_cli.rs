//! `tapwatch replay` and `tapwatch scenario` from the command line: formats, inputs, errors.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn demo() -> String {
    root().join("data/demo.pcap").to_string_lossy().into_owned()
}

fn demo_tenants() -> String {
    root()
        .join("data/demo.tenants.toml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn bundled_demo_is_what_the_generator_writes() {
    let tmp = TempDir::new("demo");
    let out = tmp.path("demo.pcap");
    let o = run(tapwatch()
        .args(["scenario", "demo", "--seed", "1", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["demo.pcap", "demo.truth.json", "demo.tenants.toml"] {
        let fresh = std::fs::read(tmp.path(name)).unwrap();
        let bundled = std::fs::read(root().join("data").join(name)).unwrap();
        assert!(
            fresh == bundled,
            "data/{name} is stale: regenerate with `tapwatch scenario demo --out data/demo.pcap`"
        );
    }
}

#[test]
fn json_summary_has_the_documented_fields() {
    let s = replay_json(&[&demo(), "--tenants", &demo_tenants()]);
    for key in [
        "packets",
        "bytes",
        "malformed",
        "by_protocol_type",
        "by_size_class",
        "by_tenant",
        "top_sources",
        "detectors",
        "alerts",
    ] {
        assert!(s.get(key).is_some(), "missing {key}");
    }
    let packets = s["packets"].as_u64().unwrap();
    assert!(packets > 1000);
    let sized: u64 = s["by_size_class"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(sized, packets);
    let tenants = s["by_tenant"].as_object().unwrap();
    for t in [
        "acme",
        "globex",
        "initech",
        "infrastructure",
        "swarm",
        "steady",
        "gossip",
        "web",
        "bulk",
        "unassigned",
    ] {
        assert!(tenants.contains_key(t), "tenant {t} missing: {tenants:?}");
    }
    let by_tenant: u64 = tenants
        .values()
        .map(|v| v["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(by_tenant, s["ip_packets"].as_u64().unwrap());
    assert_eq!(s["malformed"], 0);
    let types = s["by_protocol_type"].as_object().unwrap();
    for t in [
        "tcp_syn",
        "tcp_syn_ack",
        "tls_handshake",
        "tls_application_data",
        "dns",
        "bfd_control",
        "quic",
        "icmp",
    ] {
        assert!(
            types.get(t).and_then(|v| v.as_u64()).unwrap_or(0) > 0,
            "no {t} in demo: {types:?}"
        );
    }
    // The demo's web server drops SYNs for a while: more SYNs than SYN-ACKs.
    assert!(types["tcp_syn"].as_u64() > types["tcp_syn_ack"].as_u64());
    // Top sources are sorted and tagged with their tenant.
    let top = s["top_sources"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    assert!(top
        .windows(2)
        .all(|w| w[0]["packets"].as_u64() >= w[1]["packets"].as_u64()));
    assert_eq!(top[0]["address"], "192.0.2.10");
    assert_eq!(top[0]["tenant"], "infrastructure");
    assert_eq!(
        s["top_sources_error_bound"], 0,
        "the demo has fewer sources than the sketch holds"
    );
    // Detector state: windows at each level, handshake latency per tenant.
    assert!(s["detectors"]["windows"]["1s"].as_u64().unwrap() >= 150);
    assert!(s["detectors"]["windows"]["60s"].as_u64().unwrap() >= 2);
    assert!(
        s["detectors"]["tenants"]["acme"]["syn_to_syn_ack"]["p50_us"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        (s["detectors"]["tenants"]["swarm"]["setup_growth"]["exponent"]
            .as_f64()
            .unwrap()
            - 2.0)
            .abs()
            < 0.2
    );
    assert_eq!(s["alerts"]["by_kind_state"]["heavy_hitter/firing"], 1);
}

#[test]
fn text_summary_reads_well() {
    let o = run(tapwatch().args(["replay", &demo(), "--tenants", &demo_tenants()]));
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "by protocol type:",
        "by size class",
        "by tenant",
        "top sources",
        "tls_handshake",
        "acme",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(
        o.stderr.is_empty() || !String::from_utf8_lossy(&o.stderr).contains('\r'),
        "no progress bar when stderr is not a terminal"
    );
}

#[test]
fn gzip_and_stdin_give_the_same_counts() {
    let plain = replay_json(&[&demo()]);
    let tmp = TempDir::new("gz");
    let gz = tmp.path("demo.pcap.gz");
    let mut enc = flate2_writer(&gz);
    enc.write_all(&std::fs::read(demo()).unwrap()).unwrap();
    drop(enc);
    let zipped = replay_json(&[gz.to_str().unwrap()]);
    assert_eq!(plain["packets"], zipped["packets"]);
    assert_eq!(plain["by_protocol_type"], zipped["by_protocol_type"]);

    let mut child = tapwatch()
        .args(["replay", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(&gz).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let piped: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plain["packets"], piped["packets"]);
    assert_eq!(plain["bytes"], piped["bytes"]);
}

/// gzip by the system tool, so the test does not trust our own dependency to write it.
fn flate2_writer(path: &std::path::Path) -> impl Write {
    struct Gz(std::process::Child);
    impl Write for Gz {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.stdin.as_mut().unwrap().write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Drop for Gz {
        fn drop(&mut self) {
            drop(self.0.stdin.take());
            let _ = self.0.wait();
        }
    }
    let file = std::fs::File::create(path).unwrap();
    Gz(Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .expect("gzip"))
}

#[test]
fn not_a_capture_is_a_clear_error() {
    let tmp = TempDir::new("bad");
    let f = tmp.path("notes.txt");
    std::fs::write(&f, "hello, this is not a pcap\n").unwrap();
    let o = run(tapwatch().arg("replay").arg(&f));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("notes.txt")
            && err.contains("not a capture file")
            && err.contains("a1b2c3d4")
            && err.contains("hello"),
        "{err}"
    );

    let empty = tmp.path("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let err =
        String::from_utf8_lossy(&run(tapwatch().arg("replay").arg(&empty)).stderr).into_owned();
    assert!(
        err.contains("empty.pcap") && err.contains("empty file"),
        "{err}"
    );

    let err =
        String::from_utf8_lossy(&run(tapwatch().args(["replay", "/nonexistent/x.pcap"])).stderr)
            .into_owned();
    assert!(
        err.contains("/nonexistent/x.pcap") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn a_truncated_copy_keeps_every_whole_packet() {
    let bytes = std::fs::read(demo()).unwrap();
    let full = replay_json(&[&demo()]);
    let tmp = TempDir::new("trunc");
    let f = tmp.path("cut.pcap");
    std::fs::write(&f, &bytes[..bytes.len() - 30]).unwrap();
    let o = run(tapwatch().arg("replay").arg(&f).args(["--format", "json"]));
    assert!(o.status.success());
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        s["packets"].as_u64().unwrap(),
        full["packets"].as_u64().unwrap() - 1
    );
    assert_eq!(s["capture"]["truncated_records"], 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cut.pcap") && err.contains("cut short") && err.contains("byte "),
        "{err}"
    );
}

#[test]
fn bad_tenants_file_names_line_and_column() {
    let tmp = TempDir::new("tenants");
    let f = tmp.path("tenants.toml");
    std::fs::write(
        &f,
        "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.1.0.0/16\", \"10.300.0.0/16\"]\n",
    )
    .unwrap();
    let o = run(tapwatch().args(["replay", &demo(), "--tenants"]).arg(&f));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tenants.toml:3:28") && err.contains("10.300.0.0"),
        "{err}"
    );

    let c = tmp.path("config.toml");
    std::fs::write(&c, "[classifier]\nports = []\n").unwrap();
    let o = run(tapwatch().args(["replay", &demo(), "--config"]).arg(&c));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.toml:2:1") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn custom_port_types_from_config() {
    let tmp = TempDir::new("ports");
    let c = tmp.path("config.toml");
    std::fs::write(
        &c,
        "[[classifier.port]]\nname = \"relay_dns\"\ntransport = \"udp\"\nport = 53\n",
    )
    .unwrap();
    let s = replay_json(&[&demo(), "--config", c.to_str().unwrap()]);
    let plain = replay_json(&[&demo()]);
    assert_eq!(
        s["by_protocol_type"]["relay_dns"],
        plain["by_protocol_type"]["dns"]
    );
    assert!(s["by_protocol_type"].get("dns").is_none());
}

#[test]
fn paced_replay_follows_capture_time() {
    // The demo spans about 60 s of capture time: at 600x it takes at least 0.1 s of wall
    // time; as fast as possible, far less than the paced run.
    let start = Instant::now();
    let o = run(tapwatch().args(["replay", &demo(), "--pace", "600x", "--format", "json"]));
    let paced = start.elapsed();
    assert!(o.status.success());
    assert!(
        paced >= Duration::from_millis(95),
        "paced replay took only {paced:?}"
    );
    let o = run(tapwatch().args(["replay", &demo(), "--pace", "sometimes"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("10x"), "{err}");
}

#[test]
fn help_teaches_by_example() {
    let o = run(tapwatch().arg("--help"));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("Examples:") && text.contains("tapwatch replay data/demo.pcap"),
        "{text}"
    );
    let o = run(tapwatch().args(["replay", "--help"]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("--tenants") && text.contains("--pace") && text.contains("Examples:"),
        "{text}"
    );
}

#[test]
fn fuzz_regressions_replay_without_panicking() {
    let dir = root().join("tests/fixtures/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let o = run(tapwatch()
            .arg("replay")
            .arg(&path)
            .args(["--format", "json"]));
        assert!(
            o.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        n += 1;
    }
    assert!(n >= 1);
}

#[test]
fn log_lines_can_be_json() {
    let bytes = std::fs::read(demo()).unwrap();
    let tmp = TempDir::new("jsonlog");
    let f = tmp.path("cut.pcap");
    std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
    let o = run(tapwatch()
        .args(["--log-format", "json", "replay"])
        .arg(&f)
        .args(["--format", "json"]));
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let warn = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .expect("a warning line");
    assert!(
        warn["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("cut short"),
        "{warn}"
    );
    assert!(warn["timestamp"].is_string());
    let human = run(tapwatch().arg("replay").arg(&f).args(["--format", "json"]));
    assert!(
        String::from_utf8_lossy(&human.stderr).starts_with("tapwatch: warning: "),
        "{}",
        String::from_utf8_lossy(&human.stderr)
    );
}

#[test]
fn the_summary_says_what_cpu_each_thread_used() {
    for workers in ["1", "2"] {
        let s = replay_json(&[&demo(), "--workers", workers]);
        let p = &s["processing"];
        let cpu = p["cpu_s"].as_f64().unwrap_or_else(|| panic!("{p}"));
        assert!(cpu > 0.0, "{p}");
        let packets = s["packets"].as_f64().unwrap();
        let per_million = p["cpu_s_per_million_packets"].as_f64().unwrap();
        assert!((per_million - cpu * 1e6 / packets).abs() < 1e-9, "{p}");
        assert!(p["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{p}");
        let threads = p["threads"].as_array().unwrap();
        let names: Vec<&str> = threads
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if workers == "1" {
            &["main", "other"]
        } else {
            &["tw-reader", "tw-worker-1", "main", "other"]
        };
        assert_eq!(names, expected, "{p}");
        // Every thread is part of the process: together they are its CPU time.
        let sum: f64 = threads.iter().map(|t| t["cpu_s"].as_f64().unwrap()).sum();
        assert!(
            threads.iter().all(|t| t["cpu_s"].as_f64().unwrap() >= 0.0),
            "{p}"
        );
        assert!(
            (sum - cpu).abs() < 0.01,
            "threads {sum} s, process {cpu} s: {p}"
        );
        assert!(threads
            .iter()
            .all(|t| !t["work"].as_str().unwrap().is_empty()));
    }
    // The text summary says the same in a line per run and a line of threads.
    let o = run(tapwatch().args(["replay", &demo(), "--workers", "2", "--no-store"]));
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("CPU "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("s per million packets; peak memory"),
        "{line}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  by thread: tw-reader ") && l.contains("tw-worker-1 ")),
        "{text}"
    );
}

#[test]
fn window_summaries_add_up_to_the_run() {
    let tmp = TempDir::new("windows");
    let out = tmp.path("windows.jsonl");
    let s = replay_json(&[
        &demo(),
        "--tenants",
        &demo_tenants(),
        "--windows-out",
        out.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let base: Vec<_> = lines.iter().filter(|l| l["level"] == "base").collect();
    let tens: Vec<_> = lines.iter().filter(|l| l["level"] == "10s").collect();
    assert_eq!(
        base.len() as u64,
        s["detectors"]["windows"]["1s"].as_u64().unwrap()
    );
    assert_eq!(
        tens.len() as u64,
        s["detectors"]["windows"]["10s"].as_u64().unwrap()
    );
    // Every packet is in exactly one base window (the demo has no late packets) and in one 10 s rollup.
    let sum = |ws: &[&serde_json::Value]| {
        ws.iter()
            .map(|w| w["packets"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum(&base), s["packets"].as_u64().unwrap());
    assert_eq!(sum(&tens), s["packets"].as_u64().unwrap());
    // Per-tenant setups add up to the run's, and windows carry handshake latency quantiles.
    let setups: u64 = base
        .iter()
        .map(|w| w["tenants"]["acme"]["setups"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        setups,
        s["detectors"]["tenants"]["acme"]["setups"]
            .as_u64()
            .unwrap()
    );
    let timed = base
        .iter()
        .filter(|w| {
            w["tenants"]["acme"]["syn_to_syn_ack"]["p99_us"]
                .as_u64()
                .is_some()
        })
        .count();
    assert!(timed > 10, "per-window p50/p99/max handshake latency");
    assert!(
        base.windows(2).all(|p| p[0]["end_ns"] == p[1]["start_ns"]),
        "consecutive windows"
    );
    let web = base
        .iter()
        .flat_map(|w| w["servers"].as_array().unwrap().iter())
        .filter(|srv| srv["address"] == "192.0.2.80")
        .map(|srv| srv["retransmitted_syns"].as_u64().unwrap())
        .sum::<u64>();
    assert!(
        web > 20,
        "the demo's dropping server shows its retransmitted SYNs per window: {web}"
    );
}

#[test]
fn the_demo_status_page_plots_setup_growth_in_a_browser() {
    if !have("chromium") {
        return;
    }
    let (mut child, addr) = serve_replay(&[&demo(), "--tenants", &demo_tenants()]);
    let tmp = TempDir::new("demo-status");
    let chromium = |extra: &[&str], profile: &str| {
        let mut c = Command::new("chromium");
        c.arg("--window-size=1200,1400")
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", tmp.path(profile).display()))
            .args(extra)
            .arg(format!("http://{addr}/status"));
        run(&mut c)
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"], "p1").stdout).into_owned();
    let shot = root().join("target/tapwatch-demo-status.png");
    chromium(&[&format!("--screenshot={}", shot.display())], "p2");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    eprintln!("demo status page screenshot: {}", shot.display());
    // The swarm tenant's points and fitted line on log-log axes, the linear tenant beside it.
    assert!(
        dom.contains("swarm: setups ~ nodes^2.0"),
        "no growth plot for swarm: {dom}"
    );
    assert!(
        dom.contains("steady: setups ~ nodes^1.0"),
        "no growth plot for steady: {dom}"
    );
    assert!(
        dom.matches("<circle").count() >= 12,
        "plotted points missing"
    );
    assert!(
        dom.contains("quadratic_setup_growth"),
        "open alerts table: {dom}"
    );
    assert!(shot.exists());
}

/// `tapwatch replay ARGS --format json --serve` on a free port, once it serves the status
/// page (the replay is over by then): the process and its address.
pub(crate) fn serve_replay(args: &[&str]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = tapwatch()
        .arg("replay")
        .args(args)
        .args(["--format", "json", "--serve", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("serving the replay's status page") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "replay ended before serving"
        );
    }
    (child, addr)
}

/// The body of `GET path` from a tapwatch HTTP endpoint.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn the_status_page_shows_per_server_latency_over_time() {
    let tmp = TempDir::new("latency-status");
    let pcap = tmp.path("rs.pcap");
    assert!(run(tapwatch()
        .args(["scenario", "response_shift", "--out"])
        .arg(&pcap))
    .status
    .success());
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path("rs.truth.json")).unwrap()).unwrap();
    let slow = truth["expected"][0]["subject"]
        .as_str()
        .unwrap()
        .to_string();
    let tenants = tmp.path("rs.tenants.toml");
    let (mut child, addr) = serve_replay(&[
        pcap.to_str().unwrap(),
        "--tenants",
        tenants.to_str().unwrap(),
        "--no-store",
    ]);
    let series: serde_json::Value = serde_json::from_str(&http_get(&addr, "/api/latency")).unwrap();
    let p50s = |subject: &str| -> Vec<u64> {
        series
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subject"] == subject && s["measure"] == "response")
            .unwrap_or_else(|| panic!("no response series for {subject}: {series}"))["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap())
            .collect()
    };
    // The slowed server's median response climbs by the shift; its neighbours' stay put.
    let shifted = p50s(&slow);
    let (first, last) = (
        shifted[..10].iter().max().unwrap(),
        shifted[shifted.len() - 10..].iter().min().unwrap(),
    );
    assert!(*last > first + 50_000, "{slow}: from {first} to {last} µs");
    let mut others = 0;
    for s in series.as_array().unwrap() {
        let subject = s["subject"].as_str().unwrap();
        if s["measure"] == "response" && subject != slow {
            let p = p50s(subject);
            assert!(p[p.len() - 1] < 50_000, "{subject} moved: {p:?}");
            others += 1;
        }
    }
    assert!(others >= 2, "{series}");
    if have("chromium") {
        let dom = run(Command::new("chromium")
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", tmp.path("profile").display()))
            .arg("--dump-dom")
            .arg(format!("http://{addr}/status")));
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(dom.contains(&slow) && dom.contains("<polyline"), "{dom}");
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
