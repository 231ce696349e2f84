//! The console over history: `/api/history/…` answered from a replay's file store (and
//! from ClickHouse), and the pages in headless Chromium.
use std::process::Child;

use serde::Deserialize;

use crate::common::*;
use crate::replay_cli::serve_replay;

/// A served replay of the demo into a fresh file store; stopped on drop.
struct Served {
    child: Child,
    addr: String,
    _tmp: TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn serve_demo(tag: &str) -> Served {
    serve_demo_with(tag, &[])
}

fn serve_demo_with(tag: &str, extra: &[&str]) -> Served {
    let demo = root().join("data/demo.pcap");
    let tenants = root().join("data/demo.tenants.toml");
    serve(TempDir::new(tag), &demo, &tenants, extra)
}

/// A served replay of `pcap` into a fresh file store under `tmp`.
fn serve(
    tmp: TempDir,
    pcap: &std::path::Path,
    tenants: &std::path::Path,
    extra: &[&str],
) -> Served {
    let data = tmp.path("data");
    let mut args = vec![
        pcap.to_str().unwrap(),
        "--tenants",
        tenants.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--agent-id",
        "console",
    ];
    args.extend(extra);
    let (child, addr) = serve_replay(&args);
    Served {
        child,
        addr,
        _tmp: tmp,
    }
}

/// Status line's code, the headers (lower-cased names) and the body of `GET path`.
fn get(addr: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let code = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (code, headers, body.to_string())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[derive(Deserialize)]
struct Traffic {
    step_s: u32,
    series: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    key: String,
    points: Vec<(u32, u64, u64)>,
}

#[derive(Deserialize)]
struct Extent {
    first: Option<u32>,
    last: Option<u32>,
}

/// The packets the served replay counted (its `/metrics`).
fn replayed_packets(addr: &str) -> u64 {
    let (_, _, m) = get(addr, "/metrics");
    m.lines()
        .filter(|l| l.starts_with("tapwatch_packets_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Sums of a traffic answer, and its keys.
fn sums(t: &Traffic) -> (u64, u64, Vec<String>) {
    let p = t.series.iter().flat_map(|s| &s.points).map(|p| p.1).sum();
    let b = t.series.iter().flat_map(|s| &s.points).map(|p| p.2).sum();
    (p, b, t.series.iter().map(|s| s.key.clone()).collect())
}

/// Every check of the traffic API against one served history.
fn check_traffic(addr: &str, packets: u64) {
    let mut bytes = None;
    for (by, expect_key) in [
        ("protocol_type", "tcp_syn"),
        ("size_class", "0-64"),
        ("tenant", "swarm"),
    ] {
        let (code, h, body) = get(addr, &format!("/api/history/traffic?by={by}"));
        assert_eq!(code, 200, "{body}");
        assert_eq!(header(&h, "cache-control"), Some("no-store"));
        assert_eq!(header(&h, "content-type"), Some("application/json"));
        let t: Traffic = serde_json::from_str(&body).unwrap();
        let (p, b, keys) = sums(&t);
        assert_eq!(
            p, packets,
            "by={by}: the points add up to the replay's packets"
        );
        assert!(keys.iter().any(|k| k == expect_key), "by={by}: {keys:?}");
        assert!(
            t.series
                .iter()
                .all(|s| s.points.windows(2).all(|w| w[0].0 < w[1].0)
                    && s.points.iter().all(|p| p.0 % t.step_s == 0)),
            "points in time order, on the step"
        );
        // Every dimension splits the same bytes.
        assert_eq!(*bytes.get_or_insert(b), b, "by={by}");
    }
    // A tenant's own series are its share of the whole.
    let (_, _, body) = get(addr, "/api/history/traffic?by=tenant");
    let all: Traffic = serde_json::from_str(&body).unwrap();
    let swarm: u64 = all
        .series
        .iter()
        .filter(|s| s.key == "swarm")
        .flat_map(|s| &s.points)
        .map(|p| p.1)
        .sum();
    let (_, _, body) = get(addr, "/api/history/traffic?by=protocol_type&tenant=swarm");
    let one: Traffic = serde_json::from_str(&body).unwrap();
    assert!(swarm > 0);
    assert_eq!(sums(&one).0, swarm);
    // A coarser step (the whole range asked as a week) keeps the sum.
    let (_, _, body) = get(addr, "/api/history/extent");
    let e: Extent = serde_json::from_str(&body).unwrap();
    let (first, last) = (e.first.unwrap(), e.last.unwrap());
    let (_, _, body) = get(
        addr,
        &format!(
            "/api/history/traffic?since={}&until={}",
            last - 7 * 86_400,
            last + 1
        ),
    );
    let week: Traffic = serde_json::from_str(&body).unwrap();
    assert_eq!(week.step_s, 900);
    assert_eq!(sums(&week).0, packets);
    // Half the range holds part of it.
    let mid = first + (last - first) / 2;
    let (_, _, body) = get(
        addr,
        &format!("/api/history/traffic?since={first}&until={mid}"),
    );
    let half: Traffic = serde_json::from_str(&body).unwrap();
    assert!(sums(&half).0 > 0 && sums(&half).0 < packets);
}

#[test]
fn history_traffic_adds_up_to_the_replayed_packets_by_every_dimension() {
    let s = serve_demo("console-api");
    let packets = replayed_packets(&s.addr);
    assert!(packets > 30_000, "{packets}");
    check_traffic(&s.addr, packets);
}

#[test]
fn history_api_refuses_bad_parameters_naming_them() {
    let s = serve_demo("console-bad");
    for (path, code, names) in [
        (
            "/api/history/traffic?by=port",
            400,
            "by=\"port\": expected protocol_type, size_class or tenant",
        ),
        (
            "/api/history/traffic?since=yesterday",
            400,
            "since=\"yesterday\": expected Unix seconds",
        ),
        (
            "/api/history/traffic?since=100&until=50",
            400,
            "until=50 is not after since=100",
        ),
        (
            "/api/history/traffic?colour=red",
            400,
            "unknown parameter \"colour\"",
        ),
        (
            "/api/history/alerts?severity=bad",
            400,
            "severity=\"bad\": expected one of info, warning, critical",
        ),
        (
            "/api/history/alerts?state=open",
            400,
            "state=\"open\": expected one of firing, resolved",
        ),
        (
            "/api/history/top?of=ports",
            400,
            "of=\"ports\": expected one of talkers, services",
        ),
        (
            "/api/history/top?limit=0",
            400,
            "limit=\"0\": expected a whole number from 1 to 1000",
        ),
        ("/api/history/growth", 400, "tenant: required"),
        (
            "/api/history/alerts/..%2F",
            400,
            "expected the alert's 16 hex digits",
        ),
        (
            "/api/history/alerts/0123456789abcdef",
            404,
            "no alert 0123456789abcdef",
        ),
        ("/api/history/nowhere", 404, "/api/history/traffic"),
    ] {
        let (c, h, body) = get(&s.addr, path);
        assert_eq!(c, code, "{path}: {body}");
        assert_eq!(
            header(&h, "content-type"),
            Some("application/json"),
            "{path}"
        );
        #[derive(Deserialize)]
        struct E {
            error: String,
        }
        let e: E = serde_json::from_str(&body).unwrap();
        assert!(e.error.contains(names), "{path}: {}", e.error);
    }
}

#[derive(Deserialize)]
struct AlertSummary {
    id: String,
    kind: String,
    tenant: String,
    severity: String,
    state: String,
    events: u32,
}

#[test]
fn history_alerts_filter_and_an_alert_shows_its_events_and_evidence() {
    let s = serve_demo("console-alerts");
    let (_, _, body) = get(&s.addr, "/api/history/alerts");
    let all: Vec<AlertSummary> = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = all.iter().map(|a| a.kind.as_str()).collect();
    for k in [
        "quadratic_setup_growth",
        "isolation_advice",
        "heavy_hitter",
        "missed_heartbeat",
        "syn_retransmits",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    for (q, keep) in [
        (
            "kind=missed_heartbeat",
            &(|a: &AlertSummary| a.kind == "missed_heartbeat") as &dyn Fn(&AlertSummary) -> bool,
        ),
        ("tenant=swarm", &|a: &AlertSummary| a.tenant == "swarm"),
        ("severity=critical", &|a: &AlertSummary| {
            a.severity == "critical"
        }),
        ("state=resolved", &|a: &AlertSummary| a.state == "resolved"),
    ] {
        let (_, _, body) = get(&s.addr, &format!("/api/history/alerts?{q}"));
        let got: Vec<AlertSummary> = serde_json::from_str(&body).unwrap();
        let want: Vec<&str> = all
            .iter()
            .filter(|a| keep(a))
            .map(|a| a.id.as_str())
            .collect();
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "{q}: a filter that filters"
        );
        assert_eq!(
            got.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            want,
            "{q}"
        );
    }
    // A range after most alerts resolved: only those still open (fired before it).
    #[derive(Deserialize)]
    struct Times {
        first_ms: u64,
        last_ms: u64,
    }
    let times: Vec<Times> = serde_json::from_str(&get(&s.addr, "/api/history/alerts").2).unwrap();
    let last_resolve = times
        .iter()
        .zip(&all)
        .filter(|(_, a)| a.state == "resolved")
        .map(|(t, _)| t.last_ms / 1000)
        .max()
        .unwrap();
    let (_, _, body) = get(&s.addr, "/api/history/extent");
    let e: Extent = serde_json::from_str(&body).unwrap();
    let (_, _, body) = get(
        &s.addr,
        &format!(
            "/api/history/alerts?since={}&until={}",
            last_resolve + 1,
            e.last.unwrap() + 1
        ),
    );
    let late: Vec<AlertSummary> = serde_json::from_str(&body).unwrap();
    let open: Vec<&str> = all
        .iter()
        .filter(|a| a.state == "firing")
        .map(|a| a.id.as_str())
        .collect();
    assert!(!open.is_empty());
    assert_eq!(late.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), open);
    // A range before anything fired holds no alert.
    let first_fired = times.iter().map(|t| t.first_ms / 1000).min().unwrap();
    let (_, _, body) = get(
        &s.addr,
        &format!(
            "/api/history/alerts?since={}&until={first_fired}",
            e.first.unwrap()
        ),
    );
    assert_eq!(body, "[]");
    // A resolved heartbeat alert: its firing and resolved events, evidence with the gap.
    let hb = all
        .iter()
        .find(|a| a.kind == "missed_heartbeat" && a.state == "resolved")
        .unwrap();
    assert_eq!(hb.events, 2);
    #[derive(Deserialize)]
    struct Detail {
        alert: AlertSummary,
        events: Vec<Event>,
    }
    #[derive(Deserialize)]
    struct Event {
        state: String,
        evidence: serde_json::Map<String, serde_json::Value>,
    }
    let (_, _, body) = get(&s.addr, &format!("/api/history/alerts/{}", hb.id));
    let d: Detail = serde_json::from_str(&body).unwrap();
    assert_eq!(d.alert.id, hb.id);
    let states: Vec<&str> = d.events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["firing", "resolved"]);
    assert!(d.events[1].evidence.contains_key("gap_s"), "{body}");
}

#[derive(Deserialize)]
struct TopEntry {
    address: String,
    port: u16,
    packets: u64,
}

#[test]
fn history_tops_tenants_and_tenant_series_answer_from_the_file_store() {
    let s = serve_demo("console-top");
    let (_, _, body) = get(&s.addr, "/api/history/top?of=talkers&limit=3");
    let talkers: Vec<TopEntry> = serde_json::from_str(&body).unwrap();
    assert_eq!(talkers.len(), 3);
    assert!(talkers.windows(2).all(|w| w[0].packets >= w[1].packets));
    assert!(talkers.iter().all(|t| t.port == 0));
    let (_, _, body) = get(&s.addr, "/api/history/top?of=services");
    let services: Vec<TopEntry> = serde_json::from_str(&body).unwrap();
    assert!(
        services
            .iter()
            .any(|t| t.address == "192.0.2.80" && t.port == 443),
        "the demo's dropping web server is among the services"
    );
    #[derive(Deserialize)]
    struct Tenant {
        tenant: String,
        packets: u64,
        alerts: u32,
    }
    let (_, _, body) = get(&s.addr, "/api/history/tenants");
    let tenants: Vec<Tenant> = serde_json::from_str(&body).unwrap();
    let total: u64 = tenants.iter().map(|t| t.packets).sum();
    assert_eq!(total, replayed_packets(&s.addr));
    let swarm = tenants.iter().find(|t| t.tenant == "swarm").unwrap();
    assert_eq!(swarm.alerts, 2, "growth and its isolation advice");
    #[derive(Deserialize)]
    struct Point {
        nodes: u64,
        setups: u64,
        exponent: f64,
        fit_points: u32,
    }
    let (_, _, body) = get(&s.addr, "/api/history/growth?tenant=swarm");
    let g: Vec<Point> = serde_json::from_str(&body).unwrap();
    assert!(g.len() >= 6, "{body}");
    assert!(g.iter().all(|p| p.nodes > 0 && p.setups > 0));
    let fitted: Vec<f64> = g
        .iter()
        .filter(|p| p.fit_points > 0)
        .map(|p| p.exponent)
        .collect();
    assert!(fitted.iter().any(|x| (1.9..2.2).contains(x)), "{fitted:?}");
    #[derive(Deserialize)]
    struct Gap {
        state: String,
        gap_ms: f64,
        period_ms: f64,
    }
    let (_, _, body) = get(&s.addr, "/api/history/gaps?tenant=gossip");
    let gaps: Vec<Gap> = serde_json::from_str(&body).unwrap();
    let resolved = gaps.iter().find(|g| g.state == "resolved").unwrap();
    assert!(resolved.gap_ms > 3.0 * resolved.period_ms, "{body}");
    #[derive(Deserialize)]
    struct Heartbeat {
        flow: String,
        period_ms: f64,
        snapshots: u32,
    }
    let (_, _, body) = get(&s.addr, "/api/history/heartbeats?tenant=gossip");
    let beats: Vec<Heartbeat> = serde_json::from_str(&body).unwrap();
    let gossip = beats
        .iter()
        .find(|h| h.flow == "10.50.0.3:7946->192.0.2.30:7946/udp")
        .unwrap_or_else(|| panic!("the gossip heartbeat: {body}"));
    assert!(
        (4900.0..5100.0).contains(&gossip.period_ms) && gossip.snapshots > 0,
        "{body}"
    );
    #[derive(Deserialize)]
    struct Latency {
        series: Vec<LatencySeries>,
    }
    #[derive(Deserialize)]
    struct LatencySeries {
        stage: String,
        points: Vec<(u32, u64, u64, u64)>,
    }
    let (_, _, body) = get(&s.addr, "/api/history/latency?tenant=acme");
    let l: Latency = serde_json::from_str(&body).unwrap();
    let stages: Vec<&str> = l.series.iter().map(|s| s.stage.as_str()).collect();
    assert!(stages.contains(&"syn_to_syn_ack"), "{stages:?}");
    assert!(l
        .series
        .iter()
        .all(|s| s.points.iter().all(|p| p.1 > 0 && p.2 <= p.3)));
}

#[test]
fn console_pages_and_assets_carry_their_types_and_caching() {
    let s = serve_demo("console-assets");
    let (c, h, page) = get(&s.addr, "/console/");
    assert_eq!(c, 200);
    assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(&h, "cache-control"), Some("no-cache"));
    assert!(
        page.contains("href=\"/status\""),
        "the console links the status page"
    );
    // Every asset the page names is served under its versioned URL, cached for a year.
    let mut urls = Vec::new();
    for part in page.split("\"/console/assets/").skip(1) {
        urls.push(format!(
            "/console/assets/{}",
            part.split('"').next().unwrap()
        ));
    }
    assert_eq!(urls.len(), 4, "{urls:?}");
    for url in &urls {
        assert!(url.contains("?v="), "{url}");
        let (c, h, body) = get(&s.addr, url);
        assert_eq!(c, 200, "{url}");
        let want = if url.contains(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(header(&h, "content-type"), Some(want), "{url}");
        assert_eq!(
            header(&h, "cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert!(!body.is_empty());
        // Revalidation by ETag answers 304 without the body.
        let tag = header(&h, "etag").unwrap().to_string();
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
        write!(sock, "GET {url} HTTP/1.0\r\nIf-None-Match: {tag}\r\n\r\n").unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 304") || out.starts_with("HTTP/1.0 304"),
            "{out}"
        );
    }
    let uplot = std::fs::read(root().join("tapwatch/assets/uplot/uPlot.iife.min.js")).unwrap();
    let (_, _, served) = get(
        &s.addr,
        urls.iter().find(|u| u.contains("uPlot.iife")).unwrap(),
    );
    assert_eq!(
        served.as_bytes(),
        &uplot[..],
        "the vendored uPlot, unchanged"
    );
    let (_, _, status) = get(&s.addr, "/status");
    assert!(
        status.contains("href=\"/console/\""),
        "the status page links the console"
    );
    assert_eq!(get(&s.addr, "/console/nowhere").0, 404);
    assert_eq!(get(&s.addr, "/console/assets/nothing.js").0, 404);
}

/// The page at `path` after its scripts ran (Chromium's `--dump-dom`), with a screenshot
/// kept as `target/tapwatch-console-{shot}.png`.
fn browse(addr: &str, path: &str, shot: &str, tmp: &TempDir) -> String {
    let chromium = |extra: &str, profile: &str| {
        run(std::process::Command::new("chromium")
            .arg("--window-size=1250,1500")
            .args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", tmp.path(profile).display()))
            .arg(extra)
            .arg(format!("http://{addr}{path}")))
    };
    let dom = String::from_utf8_lossy(&chromium("--dump-dom", &format!("{shot}-dom")).stdout)
        .into_owned();
    let png = root().join(format!("target/tapwatch-console-{shot}.png"));
    chromium(
        &format!("--screenshot={}", png.display()),
        &format!("{shot}-png"),
    );
    assert!(
        std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
        "{}",
        png.display()
    );
    assert!(
        dom.contains("data-ready=\"1\""),
        "{path}: the page's script did not finish:\n{dom}"
    );
    assert!(
        dom.contains("id=\"errors\" data-count=\"0\""),
        "{path}: script errors:\n{}",
        dom.split("id=\"errors\"").nth(1).unwrap_or(&dom)
    );
    dom
}

/// `data-NAME="VALUE"` attributes of `dom` in order: (the attribute's element's
/// `data-key`-like first attribute value, VALUE) for rows written as
/// `<tr data-FIRST="K" data-NAME="V"`.
fn row_pairs(dom: &str, first: &str, name: &str) -> Vec<(String, String)> {
    dom.split(&format!("<tr data-{first}=\""))
        .skip(1)
        .map(|r| {
            let k = r.split('"').next().unwrap().to_string();
            let v = r
                .split(&format!("data-{name}=\""))
                .nth(1)
                .and_then(|x| x.split('"').next())
                .unwrap_or_default()
                .to_string();
            (k, v)
        })
        .collect()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn console_pages_show_the_replayed_history_in_chromium() {
    if !have("chromium") {
        return;
    }
    let s = serve_demo("console-browser");
    let tmp = TempDir::new("console-chromium");
    // Overview: per-type totals, the tops and the alert markers are the API's.
    let dom = browse(&s.addr, "/console/", "overview", &tmp);
    let (_, _, body) = get(&s.addr, "/api/history/traffic?by=protocol_type");
    let t: Traffic = serde_json::from_str(&body).unwrap();
    let mut want: Vec<(String, String)> = t
        .series
        .iter()
        .map(|s| {
            (
                s.key.clone(),
                s.points.iter().map(|p| p.1).sum::<u64>().to_string(),
            )
        })
        .collect();
    let mut shown = row_pairs(&dom, "key", "packets");
    want.sort();
    shown.sort();
    assert_eq!(shown, want, "per-type packets on the overview");
    let (_, _, body) = get(&s.addr, "/api/history/top?of=talkers");
    let talkers: Vec<TopEntry> = serde_json::from_str(&body).unwrap();
    let shown = row_pairs(&dom, "address", "packets");
    assert!(
        shown.len() >= 2 * talkers.len() - 1,
        "talkers and services: {shown:?}"
    );
    for (i, t) in talkers.iter().enumerate() {
        assert_eq!(shown[i], (t.address.clone(), t.packets.to_string()));
    }
    let (_, _, body) = get(&s.addr, "/api/history/alerts");
    let alerts: Vec<AlertSummary> = serde_json::from_str(&body).unwrap();
    assert!(
        dom.contains(&format!("data-markers=\"{}\"", alerts.len())),
        "one marker per alert"
    );
    assert!(dom.contains("<canvas"), "uPlot drew the chart");
    // Alerts: every alert of the range, in the API's order.
    let dom = browse(&s.addr, "/console/alerts", "alerts", &tmp);
    let ids: Vec<String> = row_pairs(&dom, "id", "id")
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(ids, alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
    // The growth alert: its fit drawn on log-log axes with the evidence's exponent.
    let growth = alerts
        .iter()
        .find(|a| a.kind == "quadratic_setup_growth")
        .unwrap();
    let dom = browse(
        &s.addr,
        &format!("/console/alerts/{}", growth.id),
        "alert-growth",
        &tmp,
    );
    #[derive(Deserialize)]
    struct Detail {
        events: Vec<Event>,
    }
    #[derive(Deserialize)]
    struct Event {
        state: String,
        evidence: Evidence,
    }
    #[derive(Deserialize)]
    struct Evidence {
        exponent: Option<f64>,
        gap_s: Option<f64>,
        advice: Option<String>,
        evidence_pcap: Option<String>,
    }
    let (_, _, body) = get(&s.addr, &format!("/api/history/alerts/{}", growth.id));
    let d: Detail = serde_json::from_str(&body).unwrap();
    let x = d.events[0].evidence.exponent.unwrap();
    assert!(
        dom.contains(&format!("data-exponent=\"{x:.2}\"")),
        "exponent {x:.2} not shown"
    );
    assert_eq!(dom.matches("<tr data-state=").count(), d.events.len());
    // The page links the alert's evidence capture exactly when its events name one.
    let pcap = format!("/api/alerts/{}/pcap", growth.id);
    if d.events.iter().any(|e| e.evidence.evidence_pcap.is_some()) {
        assert!(dom.contains(&pcap), "no link to {pcap}");
    } else {
        assert!(dom.contains("no evidence capture for this alert"));
    }
    // A heartbeat alert: its gap, as the resolved event's evidence says.
    let hb = alerts
        .iter()
        .find(|a| a.kind == "missed_heartbeat" && a.state == "resolved")
        .unwrap();
    let dom = browse(
        &s.addr,
        &format!("/console/alerts/{}", hb.id),
        "alert-heartbeat",
        &tmp,
    );
    let (_, _, body) = get(&s.addr, &format!("/api/history/alerts/{}", hb.id));
    let d: Detail = serde_json::from_str(&body).unwrap();
    let resolved = d.events.iter().find(|e| e.state == "resolved").unwrap();
    let gap = resolved.evidence.gap_s.unwrap();
    let shown: f64 = dom
        .split("class=\"gap-s\">")
        .nth(1)
        .and_then(|x| x.split('<').next())
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(
        (shown - gap).abs() < 0.01 * gap,
        "gap shown {shown}, stored {gap}"
    );
    // Tenants: each tenant's packets.
    let dom = browse(&s.addr, "/console/tenants", "tenants", &tmp);
    #[derive(Deserialize)]
    struct Tenant {
        tenant: String,
        packets: u64,
    }
    let (_, _, body) = get(&s.addr, "/api/history/tenants");
    let tenants: Vec<Tenant> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        row_pairs(&dom, "tenant", "packets"),
        tenants
            .iter()
            .map(|t| (t.tenant.clone(), t.packets.to_string()))
            .collect::<Vec<_>>()
    );
    // The gossip tenant: its heartbeat flow with the period the API gives.
    let dom = browse(&s.addr, "/console/tenants/gossip", "tenant-gossip", &tmp);
    #[derive(Deserialize)]
    struct Heartbeat {
        flow: String,
        period_ms: f64,
    }
    let (_, _, body) = get(&s.addr, "/api/history/heartbeats?tenant=gossip");
    let beats: Vec<Heartbeat> = serde_json::from_str(&body).unwrap();
    assert!(!beats.is_empty());
    let shown = row_pairs(&dom, "flow", "period-ms");
    assert_eq!(
        shown,
        beats
            .iter()
            .map(|h| (html_escape(&h.flow), h.period_ms.to_string()))
            .collect::<Vec<_>>()
    );
    // The growing tenant: its isolation advice, its traffic and its fitted exponent.
    let dom = browse(&s.addr, "/console/tenants/swarm", "tenant-swarm", &tmp);
    let advice = alerts
        .iter()
        .find(|a| a.kind == "isolation_advice" && a.tenant == "swarm")
        .unwrap();
    let (_, _, body) = get(&s.addr, &format!("/api/history/alerts/{}", advice.id));
    let d: Detail = serde_json::from_str(&body).unwrap();
    let text = d.events[0].evidence.advice.clone().unwrap();
    assert!(
        dom.contains(&html_escape(&text)),
        "advice {text:?} not shown"
    );
    let (_, _, body) = get(
        &s.addr,
        "/api/history/traffic?by=protocol_type&tenant=swarm",
    );
    let t: Traffic = serde_json::from_str(&body).unwrap();
    let want: Vec<(String, String)> = t
        .series
        .iter()
        .map(|s| {
            (
                s.key.clone(),
                s.points.iter().map(|p| p.1).sum::<u64>().to_string(),
            )
        })
        .collect();
    assert_eq!(row_pairs(&dom, "key", "packets"), want);
    let shown: f64 = dom
        .split("class=\"fit\" data-exponent=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1.9..2.2).contains(&shown),
        "swarm's exponent on its page: {shown}"
    );
}

#[test]
fn history_api_answers_the_same_from_clickhouse_as_from_the_file_store() {
    if !have("clickhouse-server") {
        return;
    }
    let ch = crate::storage::ClickHouseServer::start("console");
    let tmp = TempDir::new("console-ch");
    let cfg = tmp.path("ch.toml");
    std::fs::write(&cfg, format!("[clickhouse]\nurl = \"{}\"\n", ch.url)).unwrap();
    let from_ch = serve_demo_with("console-ch-served", &["--config", cfg.to_str().unwrap()]);
    let from_files = serve_demo("console-files-served");
    let packets = replayed_packets(&from_ch.addr);
    assert!(
        ch.number("SELECT count() FROM tapwatch.traffic") > 0,
        "the replay stored into ClickHouse"
    );
    // Its traffic, summed in SQL from the base table and from the 1-minute rollup.
    check_traffic(&from_ch.addr, packets);
    let (_, _, body) = get(&from_ch.addr, "/api/history/extent");
    let e: Extent = serde_json::from_str(&body).unwrap();
    let last = e.last.unwrap();
    #[derive(Deserialize)]
    struct Table {
        table: String,
    }
    for (days, table) in [(7, "traffic_1m"), (60, "traffic_1h")] {
        let path = format!(
            "/api/history/traffic?since={}&until={}",
            last - days * 86_400,
            last + 1
        );
        let (_, _, body) = get(&from_ch.addr, &path);
        assert_eq!(serde_json::from_str::<Table>(&body).unwrap().table, table);
        let t: Traffic = serde_json::from_str(&body).unwrap();
        assert_eq!(sums(&t).0, packets, "{days} days from {table}");
    }
    // Every other answer equal to the file store's.
    let (_, _, body) = get(&from_files.addr, "/api/history/alerts");
    let alerts: Vec<AlertSummary> = serde_json::from_str(&body).unwrap();
    let mut paths: Vec<String> = [
        "extent",
        "traffic?by=protocol_type",
        "traffic?by=size_class",
        "traffic?by=tenant&tenant=swarm",
        "alerts",
        "alerts?severity=critical&state=resolved",
        "top?of=talkers",
        "top?of=services&limit=20",
        "tenants",
        "growth?tenant=swarm",
        "gaps?tenant=gossip",
        "heartbeats?tenant=infrastructure",
        "latency?tenant=acme",
    ]
    .map(String::from)
    .to_vec();
    paths.extend(alerts.iter().map(|a| format!("alerts/{}", a.id)));
    for p in paths {
        let (c1, _, a) = get(&from_ch.addr, &format!("/api/history/{p}"));
        let (c2, _, b) = get(&from_files.addr, &format!("/api/history/{p}"));
        assert_eq!((c1, c2), (200, 200), "{p}: {a} / {b}");
        let strip = |s: &str| {
            // `now` moves between the two requests.
            s.split(",\"now\":").next().unwrap().to_string()
        };
        assert_eq!(strip(&a), strip(&b), "{p}: ClickHouse vs files");
    }
}

#[test]
fn a_latency_alert_page_shows_the_baseline_against_the_window_in_chromium() {
    if !have("chromium") {
        return;
    }
    let tmp = TempDir::new("console-latency");
    let pcap = tmp.path("rs.pcap");
    assert!(run(tapwatch()
        .args(["scenario", "response_shift", "--out"])
        .arg(&pcap))
    .status
    .success());
    let tenants = tmp.path("rs.tenants.toml");
    let s = serve(tmp, &pcap, &tenants, &[]);
    let (_, _, body) = get(&s.addr, "/api/history/alerts?kind=latency_shift");
    let alerts: Vec<AlertSummary> = serde_json::from_str(&body).unwrap();
    let a = alerts
        .first()
        .expect("the slowed server's latency_shift alert");
    #[derive(Deserialize)]
    struct Detail {
        events: Vec<Event>,
    }
    #[derive(Deserialize)]
    struct Event {
        evidence: Evidence,
    }
    #[derive(Deserialize)]
    struct Evidence {
        baseline_p50_us: u64,
        p50_us: u64,
    }
    let (_, _, body) = get(&s.addr, &format!("/api/history/alerts/{}", a.id));
    let ev = &serde_json::from_str::<Detail>(&body).unwrap().events[0].evidence;
    assert!(ev.p50_us > 3 * ev.baseline_p50_us, "{body}");
    let dom = browse(
        &s.addr,
        &format!("/console/alerts/{}", a.id),
        "alert-latency",
        &TempDir::new("console-latency-chromium"),
    );
    assert!(dom.contains("Latency before and after (response)"), "{dom}");
    for us in [ev.baseline_p50_us, ev.p50_us] {
        let ms = format!("{:.1} ms", us as f64 / 1000.0);
        assert!(dom.contains(&ms), "{ms} not on the page");
    }
}

#[test]
fn without_a_store_the_history_api_says_so() {
    let s = serve_demo_with("console-nostore", &["--no-store"]);
    let (c, _, body) = get(&s.addr, "/api/history/traffic");
    assert_eq!(c, 503, "{body}");
    assert!(body.contains("--no-store"), "{body}");
    // The page itself is still served (it shows the error in place of the data).
    assert_eq!(get(&s.addr, "/console/").0, 200);
}

#[test]
fn an_alert_with_an_evidence_capture_links_it() {
    if !have("chromium") {
        return;
    }
    // An alert event of another agent, whose evidence names its capture (as the evidence
    // captures write them), in the store before the replay adds its own.
    let tmp = TempDir::new("console-pcap");
    let alerts = tmp.path("data").join("alerts");
    std::fs::create_dir_all(&alerts).unwrap();
    let id = "00c0ffee00c0ffee";
    let evidence = r#"{"evidence_pcap":"evidence/00c0ffee00c0ffee.pcap","share":0.5}"#;
    std::fs::write(
        alerts.join("20260101T00.other.tsv"),
        format!(
            "ts\tagent\tbatch\tid\tkind\tstate\tseverity\ttenant\tsubject\tstarted_ms\tdetected_ms\tvalue\tthreshold\tevidence\tversion\n\
             1767225630\tother\t1\t{id}\theavy_hitter\tfiring\twarning\tacme\t10.1.0.15\t1767225620000\t1767225630000\t0.5\t0.2\t{evidence}\t1\n"
        ),
    )
    .unwrap();
    let s = serve(
        tmp,
        &root().join("data/demo.pcap"),
        &root().join("data/demo.tenants.toml"),
        &[],
    );
    let (c, _, body) = get(&s.addr, &format!("/api/history/alerts/{id}"));
    assert_eq!(c, 200, "{body}");
    assert!(body.contains("evidence/00c0ffee00c0ffee.pcap"), "{body}");
    let dom = browse(
        &s.addr,
        &format!("/console/alerts/{id}"),
        "alert-pcap",
        &TempDir::new("console-pcap-chromium"),
    );
    assert!(
        dom.contains(&format!("href=\"/api/alerts/{id}/pcap\"")),
        "no link to the capture"
    );
}
