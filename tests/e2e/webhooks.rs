//! Webhooks against a real HTTP receiver on loopback: every alert arrives signed, in order;
//! a receiver outage or a killed tapwatch loses nothing; 5xx/429 are retried, other 4xx not.
use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

use crate::common::*;

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    /// When it arrived.
    pub(crate) at: Instant,
    signature: Option<String>,
    pub(crate) body: serde_json::Value,
    raw: Vec<u8>,
}

/// A real HTTP server on loopback answering each request with the status `answer` picks
/// (by request number), after an optional delay.
pub(crate) struct Receiver {
    pub(crate) port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<u64>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub(crate) fn start(
        port: u16,
        delay: Duration,
        answer: impl Fn(u64) -> u16 + Send + 'static,
    ) -> Receiver {
        let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port)).expect("bind receiver"));
        let port = server.server_addr().to_ip().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0u64));
        let thread = {
            let (server, got, requests) =
                (Arc::clone(&server), Arc::clone(&got), Arc::clone(&requests));
            std::thread::spawn(move || {
                for mut req in server.incoming_requests() {
                    let at = Instant::now();
                    let mut raw = Vec::new();
                    let _ = req.as_reader().read_to_end(&mut raw);
                    let n = {
                        let mut r = requests.lock().unwrap();
                        *r += 1;
                        *r
                    };
                    std::thread::sleep(delay);
                    let status = answer(n);
                    if (200..300).contains(&status) {
                        let signature = req
                            .headers()
                            .iter()
                            .find(|h| h.field.equiv("X-Tapwatch-Signature"))
                            .map(|h| h.value.as_str().to_string());
                        let body = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
                        got.lock().unwrap().push(Received {
                            at,
                            signature,
                            body,
                            raw,
                        });
                    }
                    let _ = req.respond(tiny_http::Response::empty(status));
                }
            })
        };
        Receiver {
            port,
            got,
            requests,
            server,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scenario(tmp: &TempDir, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pcap = tmp.path(&format!("{name}.pcap"));
    assert!(run(tapwatch().args(["scenario", name, "--out"]).arg(&pcap))
        .status
        .success());
    (pcap, tmp.path(&format!("{name}.tenants.toml")))
}

fn alert_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(secret: &[u8], raw: &[u8], header: &str) -> bool {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(raw);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    header == format!("sha256={hex}")
}

#[test]
fn every_alert_arrives_in_order_with_a_valid_signature() {
    let tmp = TempDir::new("hook-signed");
    let (pcap, tenants) = scenario(&tmp, "demo");
    let rx = Receiver::start(0, Duration::ZERO, |_| 200);
    let secret = tmp.path("secret");
    std::fs::write(&secret, "s3cret-for-tests\n").unwrap();
    let config = tmp.path("tapwatch.toml");
    std::fs::write(&config, format!("[[webhook]]\nurl = \"{}\"\nformat = \"generic\"\nsecret_file = \"{}\"\nrate_per_s = 1000\n", rx.url(), secret.display())).unwrap();
    let alerts = tmp.path("alerts.jsonl");
    let o = run(tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(&tenants)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path("data"))
        .arg("--alerts-out")
        .arg(&alerts)
        .args(["--format", "json"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = alert_lines(&alerts);
    assert!(expected.len() >= 8, "the demo raises alerts: {expected:?}");
    let got = rx.received();
    assert_eq!(got.len(), expected.len(), "every alert is delivered once");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(
            &g.body, e,
            "delivered in order, in the generic (contract) format"
        );
        assert!(
            verify(
                b"s3cret-for-tests",
                &g.raw,
                g.signature.as_deref().unwrap_or("")
            ),
            "bad signature on {}",
            e["id"]
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["alerts"]["webhooks"][0]["delivered"]
            .as_u64()
            .unwrap(),
        expected.len() as u64
    );
    assert_eq!(summary["alerts"]["webhooks"][0]["still_spooled"], 0);
}

#[test]
fn a_receiver_outage_loses_nothing_and_the_next_run_delivers_the_spool() {
    let tmp = TempDir::new("hook-outage");
    let (pcap, tenants) = scenario(&tmp, "demo");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let data = tmp.path("data");
    let alerts = tmp.path("alerts.jsonl");
    // Nobody listens: the replay ends, its alerts stay spooled.
    let o = run(tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(&tenants)
        .args(["--webhook", &url, "--drain-timeout", "1", "--data-dir"])
        .arg(&data)
        .arg("--alerts-out")
        .arg(&alerts));
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let expected = alert_lines(&alerts);
    assert!(
        err.contains(&format!("{} remain spooled", expected.len())),
        "{err}"
    );
    // The receiver comes up; a later run (here `tapwatch deliver`) delivers everything.
    let rx = Receiver::start(port, Duration::ZERO, |_| 200);
    let o = deliver(&url, &data, "30");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = rx.received();
    let keys: Vec<(String, String)> = got
        .iter()
        .map(|g| {
            (
                g.body["id"].as_str().unwrap().into(),
                g.body["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let unique: HashSet<_> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), keys.len(), "nothing delivered twice");
    let want: HashSet<(String, String)> = expected
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().into(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(unique, want, "every alert arrives after the outage");
    // And the spool is empty now: another run has nothing to send.
    let o = deliver(&url, &data, "2");
    assert!(String::from_utf8_lossy(&o.stderr).contains("0 delivered, none left spooled"));
    assert_eq!(rx.received().len(), got.len());
}

#[test]
fn a_killed_tapwatch_delivers_its_spool_after_restart() {
    let tmp = TempDir::new("hook-kill");
    let (pcap, tenants) = scenario(&tmp, "demo");
    // A slow receiver while the first tapwatch runs, a quick one after the restart.
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let is_slow = Arc::clone(&slow);
    let rx = Receiver::start(0, Duration::ZERO, move |_| {
        if is_slow.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(300));
        }
        200
    });
    let url = rx.url();
    let data = tmp.path("data");
    let alerts = tmp.path("alerts.jsonl");
    let mut child = tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(&tenants)
        .args(["--webhook", &url, "--drain-timeout", "60", "--data-dir"])
        .arg(&data)
        .arg("--alerts-out")
        .arg(&alerts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while rx.received().len() < 2 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL mid-delivery
    child.wait().unwrap();
    let before = rx.received().len();
    let want: HashSet<(String, String)> = alert_lines(&alerts)
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().into(),
                e["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        before < want.len(),
        "killed before it could deliver everything"
    );
    slow.store(false, std::sync::atomic::Ordering::Relaxed);
    let o = deliver(&url, &data, "30");
    assert!(o.status.success());
    let all: HashSet<(String, String)> = rx
        .received()
        .iter()
        .map(|g| {
            (
                g.body["id"].as_str().unwrap().into(),
                g.body["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        all, want,
        "at least once: everything accepted before the kill arrives after the restart"
    );
}

#[test]
fn server_errors_and_429_are_retried_other_4xx_are_not() {
    let tmp = TempDir::new("hook-retry");
    let (pcap, tenants) = scenario(&tmp, "bfd_silence");
    // Requests 1 and 2 fail with 500, request 3 with 429, then all succeed.
    let rx = Receiver::start(0, Duration::ZERO, |n| match n {
        1 | 2 => 500,
        3 => 429,
        _ => 200,
    });
    let alerts = tmp.path("alerts.jsonl");
    let o = run(tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(&tenants)
        .args([
            "--webhook",
            &rx.url(),
            "--drain-timeout",
            "30",
            "--data-dir",
        ])
        .arg(tmp.path("d1"))
        .arg("--alerts-out")
        .arg(&alerts));
    assert!(o.status.success());
    let n = alert_lines(&alerts).len();
    assert_eq!(n, 2, "the BFD scenario fires and resolves one alert");
    assert_eq!(
        rx.received().len(),
        n,
        "every alert arrives despite the failures"
    );
    assert_eq!(
        rx.requests(),
        n as u64 + 3,
        "three failed attempts were retried"
    );

    let reject = Receiver::start(0, Duration::ZERO, |_| 400);
    let o = run(tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(&tenants)
        .args([
            "--webhook",
            &reject.url(),
            "--drain-timeout",
            "30",
            "--data-dir",
        ])
        .arg(tmp.path("d2"))
        .args(["--format", "json"]));
    assert!(o.status.success());
    assert_eq!(reject.requests(), n as u64, "a 400 is not retried");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rejected an alert with HTTP 400"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["alerts"]["webhooks"][0]["rejected"]
            .as_u64()
            .unwrap(),
        n as u64
    );
}

#[test]
fn slack_pagerduty_and_alertmanager_formats() {
    let tmp = TempDir::new("hook-formats");
    let (pcap, tenants) = scenario(&tmp, "bfd_silence");
    let (slack, pd, am) = (
        Receiver::start(0, Duration::ZERO, |_| 200),
        Receiver::start(0, Duration::ZERO, |_| 202),
        Receiver::start(0, Duration::ZERO, |_| 200),
    );
    let key = tmp.path("pd.key");
    std::fs::write(&key, "R0UTINGKEY\n").unwrap();
    let config = tmp.path("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nurl = \"{}\"\nformat = \"slack\"\n\n[[webhook]]\nurl = \"{}\"\nformat = \"pagerduty\"\nrouting_key_file = \"{}\"\n\n[[webhook]]\nurl = \"{}\"\nformat = \"alertmanager\"\n",
            slack.url(),
            pd.url(),
            key.display(),
            am.url()
        ),
    )
    .unwrap();
    let alerts = tmp.path("alerts.jsonl");
    let o = run(tapwatch()
        .arg("replay")
        .arg(&pcap)
        .arg("--tenants")
        .arg(&tenants)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path("d"))
        .arg("--alerts-out")
        .arg(&alerts));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = alert_lines(&alerts);
    let s = slack.received();
    assert_eq!(s.len(), 2);
    assert!(s[0].body["text"]
        .as_str()
        .unwrap()
        .contains("[FIRING] missed_heartbeat 198.51.100.1:49160->198.51.100.2:3784/udp"));
    let p = pd.received();
    assert_eq!(p[0].body["event_action"], "trigger");
    assert_eq!(p[1].body["event_action"], "resolve");
    assert_eq!(p[0].body["dedup_key"], events[0]["id"]);
    assert_eq!(p[1].body["dedup_key"], events[0]["id"]);
    assert_eq!(p[0].body["routing_key"], "R0UTINGKEY");
    assert_eq!(p[0].body["payload"]["severity"], "critical");
    let a = am.received();
    assert_eq!(a[0].body["version"], "4");
    assert_eq!(a[0].body["status"], "firing");
    assert_eq!(a[1].body["status"], "resolved");
    assert_eq!(
        a[0].body["alerts"][0]["labels"]["alertname"],
        "missed_heartbeat"
    );
    assert_eq!(a[0].body["alerts"][0]["fingerprint"], events[0]["id"]);
    assert_eq!(a[1].body["alerts"][0]["endsAt"], events[1]["detected_at"]);
}

#[test]
fn webhook_config_errors_are_clear() {
    let tmp = TempDir::new("hook-config");
    let config = tmp.path("c.toml");
    std::fs::write(
        &config,
        "[[webhook]]\nurl = \"http://127.0.0.1:9/x\"\nformat = \"teams\"\n",
    )
    .unwrap();
    let o = run(tapwatch()
        .args(["replay"])
        .arg(root().join("data/demo.pcap"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path("d")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("c.toml:3:10") && err.contains("unknown variant"),
        "{err}"
    );
}

/// `tapwatch deliver --webhook URL --drain-timeout SECS --data-dir DATA`.
fn deliver(url: &str, data: &std::path::Path, secs: &str) -> std::process::Output {
    run(tapwatch()
        .args([
            "deliver",
            "--webhook",
            url,
            "--drain-timeout",
            secs,
            "--data-dir",
        ])
        .arg(data))
}
