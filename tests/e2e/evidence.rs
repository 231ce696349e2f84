//! Evidence captures: a header-only pcap of the subject's packets for every firing alert,
//! named in the alert, served over HTTP, listed by `tapwatch query alerts`.
use std::net::IpAddr;
use std::path::Path;

use etherparse::{LaxPacketHeaders, NetHeaders, TransportHeader};

use crate::common::*;

/// One pcap record: captured length, original length, bytes.
struct Record {
    caplen: usize,
    origlen: usize,
    data: Vec<u8>,
}

/// A classic pcap file's link type and records (nanosecond or microsecond magic).
fn read_pcap(bytes: &[u8]) -> (u32, Vec<Record>) {
    assert!(bytes.len() >= 24, "a pcap file header");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    assert!(magic == 0xa1b2_3c4d || magic == 0xa1b2_c3d4, "{magic:x}");
    let link = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    let mut at = 24;
    let mut out = Vec::new();
    while at < bytes.len() {
        let u =
            |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap()) as usize;
        let (caplen, origlen) = (u(8), u(12));
        let data = bytes[at + 16..at + 16 + caplen].to_vec();
        out.push(Record {
            caplen,
            origlen,
            data,
        });
        at += 16 + caplen;
    }
    (link, out)
}

/// The frame's headers as etherparse reads them: their total length and the flow key.
fn headers(data: &[u8]) -> (usize, IpAddr, IpAddr, u16, u16) {
    let h = LaxPacketHeaders::from_ethernet(data).expect("an Ethernet header");
    let link = h.link.as_ref().map_or(0, |l| l.header_len());
    let exts: usize = h.link_exts.iter().map(|e| e.header_len()).sum();
    let net = h.net.as_ref().expect("an IP header");
    let (src, dst) = match net {
        NetHeaders::Ipv4(ip, _) => (IpAddr::from(ip.source), IpAddr::from(ip.destination)),
        NetHeaders::Ipv6(ip, _) => (IpAddr::from(ip.source), IpAddr::from(ip.destination)),
        other => panic!("not IP: {other:?}"),
    };
    let (sp, dp) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        _ => (0, 0),
    };
    let transport = h.transport.as_ref().map_or(0, |t| t.header_len());
    (link + exts + net.header_len() + transport, src, dst, sp, dp)
}

/// Headers of a record of link type `link` by etherparse, adding the transport header of
/// a first fragment (etherparse stops at the IP header of any fragment): `None` for link
/// types other than Ethernet and Linux cooked.
fn header_len_any(link: u32, data: &[u8]) -> Option<usize> {
    let h = match link {
        1 => LaxPacketHeaders::from_ethernet(data).ok()?,
        113 => LaxPacketHeaders::from_linux_sll(data).ok()?,
        _ => return None,
    };
    let link_len = match link {
        113 => 16,
        _ => h.link.as_ref().map_or(0, |l| l.header_len()),
    };
    let exts: usize = h.link_exts.iter().map(|e| e.header_len()).sum();
    let Some(net) = h.net.as_ref() else {
        return Some(link_len + exts);
    };
    let ip_end = link_len + exts + net.header_len();
    let transport = match (&h.transport, net) {
        (Some(t), _) => t.header_len(),
        (None, NetHeaders::Ipv4(ip, _)) if ip.more_fragments && ip.fragment_offset.value() == 0 => {
            match ip.protocol.0 {
                6 => usize::from(data.get(ip_end + 12)? >> 4) * 4,
                17 | 1 => 8,
                _ => 0,
            }
        }
        _ => 0,
    };
    Some(ip_end + transport)
}

/// Whether `a` is in one of `tenant`'s prefixes of the tenants file.
fn in_tenant(tenants: &Path, tenant: &str, a: IpAddr) -> bool {
    let t: toml::Value = toml::from_str(&std::fs::read_to_string(tenants).unwrap()).unwrap();
    let IpAddr::V4(a) = a else { return false };
    t["tenant"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str() == Some(tenant))
        .flat_map(|e| e["prefixes"].as_array().unwrap().iter())
        .filter_map(|p| p.as_str()?.split_once('/'))
        .filter_map(|(net, len)| {
            Some((
                net.parse::<std::net::Ipv4Addr>().ok()?,
                len.parse::<u32>().ok()?,
            ))
        })
        .any(|(net, len)| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(net) & mask
        })
}

/// Whether a packet with this flow key involves the alert's subject (independently of
/// tapwatch's own matching: addresses and ports read by etherparse).
fn involves(subject: &str, tenants: &Path, key: (IpAddr, IpAddr, u16, u16)) -> bool {
    let (src, dst, sp, dp) = key;
    if let Some((flow, _proto)) = subject.rsplit_once('/') {
        if let Some((a, b)) = flow.split_once("->") {
            let (a, b): (std::net::SocketAddr, std::net::SocketAddr) =
                (a.parse().unwrap(), b.parse().unwrap());
            return (src == a.ip() && dst == b.ip() && dp == b.port())
                || (src == b.ip() && dst == a.ip() && sp == b.port());
        }
        let s: std::net::SocketAddr = flow.parse().unwrap();
        return (dst == s.ip() && dp == s.port()) || (src == s.ip() && sp == s.port());
    }
    match subject.split(' ').next().unwrap().parse::<IpAddr>() {
        Ok(a) => src == a || dst == a,
        Err(_) => in_tenant(tenants, subject, src) || in_tenant(tenants, subject, dst),
    }
}

/// Writes scenario `name` into `tmp`: (capture, tenants file).
fn scenario(tmp: &TempDir, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pcap = tmp.path(&format!("{name}.pcap"));
    let o = run(tapwatch().args(["scenario", name, "--out"]).arg(&pcap));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (pcap, tmp.path(&format!("{name}.tenants.toml")))
}

/// Replays into data directory `data` with `workers` workers: the firing events and the
/// summary.
fn replay(
    pcap: &Path,
    tenants: &Path,
    data: &Path,
    workers: usize,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let alerts = data.with_extension("alerts.jsonl");
    let o = run(tapwatch()
        .arg("replay")
        .arg(pcap)
        .arg("--tenants")
        .arg(tenants)
        .arg("--data-dir")
        .arg(data)
        .arg("--alerts-out")
        .arg(&alerts)
        .args([
            "--format",
            "json",
            "--progress",
            "never",
            "--workers",
            &workers.to_string(),
        ]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let firing = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["state"] == "firing")
        .collect();
    (firing, serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn every_firing_alert_has_a_header_only_capture_of_its_subject() {
    let tmp = TempDir::new("evidence");
    let tcpdump = have("tcpdump");
    let mut checked = 0;
    for name in [
        "heavy_hitter",
        "syn_retransmits",
        "bfd_silence",
        "setup_growth",
    ] {
        let (pcap, tenants) = scenario(&tmp, name);
        let data = tmp.path(&format!("data-{name}"));
        let (firing, summary) = replay(&pcap, &tenants, &data, 2);
        assert!(!firing.is_empty(), "{name}: an alert fires");
        let mut captures = 0;
        for e in &firing {
            let (id, subject) = (e["id"].as_str().unwrap(), e["subject"].as_str().unwrap());
            if e["kind"] == "isolation_advice" {
                assert!(
                    e["evidence"]["evidence_pcap"].is_null(),
                    "advice rides on its alert"
                );
                continue;
            }
            let named = e["evidence"]["evidence_pcap"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {e}"));
            assert_eq!(named, format!("evidence/{id}.pcap"));
            let file = data.join(named);
            let bytes =
                std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            let (link, records) = read_pcap(&bytes);
            assert_eq!(link, 1, "Ethernet");
            assert!(!records.is_empty(), "{name}: {subject}: packets captured");
            for r in &records {
                let (len, src, dst, sp, dp) = headers(&r.data);
                assert_eq!(
                    r.caplen, len,
                    "{name}: a record holds the headers, not one payload byte"
                );
                assert!(
                    r.origlen >= r.caplen,
                    "{name}: the original length is the wire length"
                );
                assert!(
                    involves(subject, &tenants, (src, dst, sp, dp)),
                    "{name}: {src}:{sp} -> {dst}:{dp} does not involve {subject}"
                );
            }
            if tcpdump {
                let o = run(std::process::Command::new("tcpdump")
                    .arg("-nn")
                    .arg("-r")
                    .arg(&file));
                assert!(
                    o.status.success(),
                    "tcpdump -r {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
                let lines = String::from_utf8_lossy(&o.stdout).lines().count();
                assert_eq!(lines, records.len(), "tcpdump reads every record");
            }
            captures += 1;
        }
        assert_eq!(summary["evidence"]["captures_written"], captures, "{name}");
        assert_eq!(summary["evidence"]["captures_failed"], 0, "{name}");
        // The query lists the capture beside its alert.
        let o = run(tapwatch()
            .args(["query", "alerts", "--format", "json", "--data-dir"])
            .arg(&data));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
        for e in firing.iter().filter(|e| e["kind"] != "isolation_advice") {
            assert!(
                rows.iter().any(|r| r["id"] == e["id"]
                    && r["state"] == "firing"
                    && r["evidence_pcap"] == e["evidence"]["evidence_pcap"]),
                "{name}: query alerts lists {}",
                e["id"]
            );
        }
        checked += captures;
    }
    assert!(checked >= 4, "{checked} captures checked");
}

#[test]
fn captures_do_not_depend_on_the_number_of_workers() {
    let tmp = TempDir::new("evidence-workers");
    for name in ["heavy_hitter", "setup_growth"] {
        let (pcap, tenants) = scenario(&tmp, name);
        let mut seen: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
        for workers in [1, 3] {
            let data = tmp.path(&format!("data-{name}-{workers}"));
            let (firing, _) = replay(&pcap, &tenants, &data, workers);
            let mut files: Vec<(String, Vec<u8>)> = firing
                .iter()
                .filter_map(|e| e["evidence"]["evidence_pcap"].as_str())
                .map(|n| (n.to_string(), std::fs::read(data.join(n)).unwrap()))
                .collect();
            files.sort();
            seen.push(files);
        }
        assert!(!seen[0].is_empty());
        assert!(
            seen[0] == seen[1],
            "{name}: the same captures with 1 and 3 workers"
        );
    }
}

/// `GET path` on `addr`: status line, headers and body.
fn get(addr: &str, path: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&out[..split]).to_string(),
        out[split + 4..].to_vec(),
    )
}

#[test]
fn the_capture_is_served_for_download_and_bad_ids_are_refused() {
    let tmp = TempDir::new("evidence-http");
    let (pcap, tenants) = scenario(&tmp, "syn_retransmits");
    let data = tmp.path("data");
    let alerts = tmp.path("alerts.jsonl");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (pcap, tenants, data_s, alerts_s) =
        (path(&pcap), path(&tenants), path(&data), path(&alerts));
    let (mut child, addr) = crate::replay_cli::serve_replay(&[
        &pcap,
        "--tenants",
        &tenants,
        "--data-dir",
        &data_s,
        "--alerts-out",
        &alerts_s,
        "--progress",
        "never",
    ]);
    let firing: serde_json::Value = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["state"] == "firing")
        .expect("an alert fired");
    let id = firing["id"].as_str().unwrap();
    let (head, body) = get(&addr, &format!("/api/alerts/{id}/pcap"));
    let on_disk =
        std::fs::read(data.join(firing["evidence"]["evidence_pcap"].as_str().unwrap())).unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    assert!(
        lower.contains("content-type: application/vnd.tcpdump.pcap"),
        "{head}"
    );
    assert!(
        lower.contains(&format!(
            "content-disposition: attachment; filename=\"{id}.pcap\""
        )),
        "{head}"
    );
    assert_eq!(body, on_disk, "the same bytes as the file");
    for (path, status) in [
        ("/api/alerts/0000000000000000/pcap", "404"),
        ("/api/alerts/..%2f..%2fetc%2fpasswd/pcap", "400"),
        ("/api/alerts/../../etc/passwd/pcap", "400"),
        ("/api/alerts/zzzzzzzzzzzzzzzz/pcap", "400"),
    ] {
        let (head, _) = get(&addr, path);
        assert!(head.split(' ').nth(1) == Some(status), "{path}: {head}");
    }
    let (_, metrics) = get(&addr, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("tapwatch_evidence_written_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tapwatch_evidence_failed_total 0\n"),
        "{metrics}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn captures_of_the_shared_captures_hold_headers_only() {
    let Some(dir) = shared_pcaps() else { return };
    let tmp = TempDir::new("evidence-shared");
    let mut records = 0;
    for name in [
        "pcapplusplus__ip-frag.pcap",
        "pcapplusplus__sll.pcap",
        "pcapplusplus__many-protocols.pcap",
        "stopddos__pkt.TCP.synflood.spoofed.pcap",
        "stopddos__amp.dns.RRSIG.fragmented.pcap",
        "zeek__quic_win11_firefox_google.pcap",
    ] {
        let pcap = dir.join(name);
        if !pcap.exists() {
            continue;
        }
        let data = tmp.path(name);
        let o = run(tapwatch()
            .arg("replay")
            .arg(&pcap)
            .arg("--data-dir")
            .arg(&data)
            .args(["--format", "json", "--progress", "never"]));
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let Ok(files) = std::fs::read_dir(data.join("evidence")) else {
            continue;
        };
        for f in files.flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            let (link, recs) = read_pcap(&bytes);
            for r in &recs {
                if let Some(len) = header_len_any(link, &r.data) {
                    assert_eq!(
                        r.caplen,
                        len,
                        "{name}: {}: headers only",
                        f.path().display()
                    );
                }
                assert!(r.origlen >= r.caplen);
                records += 1;
            }
            if have("tcpdump") {
                let o = run(std::process::Command::new("tcpdump")
                    .arg("-nn")
                    .arg("-r")
                    .arg(f.path()));
                assert!(
                    o.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
    eprintln!("{records} records checked");
}
