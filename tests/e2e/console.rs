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
    let tmp = TempDir::new(tag);
    let data = tmp.path("data");
    let demo = root().join("data/demo.pcap");
    let tenants = root().join("data/demo.tenants.toml");
    let (child, addr) = serve_replay(&[
        demo.to_str().unwrap(),
        "--tenants",
        tenants.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
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
