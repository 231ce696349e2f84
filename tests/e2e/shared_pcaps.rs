//! Every third-party capture in ../shared/pcaps is read to the end, and tapwatch's counts
//! agree with tcpdump's (or, where libpcap refuses the file, tshark's).
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Packets tcpdump's filter matches, over plain, VLAN, QinQ and MPLS framings.
fn tcpdump_count(file: &Path, filter: &str, framings: &[&str]) -> u64 {
    let mut total = 0;
    for prefix in framings {
        let expr = format!("{prefix}({filter})");
        let out = run(Command::new("tcpdump")
            .arg("-r")
            .arg(file)
            .arg("--count")
            .arg(&expr));
        let text = String::from_utf8_lossy(&out.stdout);
        total += text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

fn tcpdump_total(file: &Path) -> Option<u64> {
    let out = run(Command::new("tcpdump").arg("-r").arg(file).arg("--count"));
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text.split_whitespace().next()?.parse::<u64>().ok()?;
    // libpcap refuses some multi-interface pcapng files outright: then tshark decides.
    let refused = String::from_utf8_lossy(&out.stderr).contains("different");
    (!refused).then_some(n)
}

fn tshark_count(file: &Path, filter: Option<&str>) -> u64 {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args([
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-T",
        "fields",
        "-e",
        "frame.number",
    ]);
    if let Some(f) = filter {
        cmd.arg("-Y").arg(f);
    }
    let out = run(&mut cmd);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

struct Counts {
    packets: u64,
    syn: u64,
    udp: u64,
    icmp: u64,
}

fn reference_counts(file: &Path) -> (Counts, &'static str) {
    if let Some(packets) = tcpdump_total(file) {
        let mut framings = vec![""];
        if tcpdump_count(file, "vlan", &[""]) > 0 {
            framings.extend(["vlan and ", "vlan and vlan and "]);
        }
        if tcpdump_count(file, "mpls", &["", "vlan and "]) > 0 {
            framings.extend(["mpls and ", "vlan and mpls and "]);
        }
        // tcp[] only reaches IPv4; IPv6 SYNs are matched on the fixed header's next header.
        let syn = "(tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn) or (ip6 and ip6[6] == 6 and ip6[53] & 0x12 == 2)";
        let counts = Counts {
            packets,
            syn: tcpdump_count(file, syn, &framings),
            udp: tcpdump_count(file, "ip proto 17 or ip6 protochain 17", &framings),
            icmp: tcpdump_count(file, "ip proto 1 or ip6 protochain 58", &framings),
        };
        (counts, "tcpdump")
    } else {
        let counts = Counts {
            packets: tshark_count(file, None),
            syn: tshark_count(file, Some("tcp.flags.syn == 1 && tcp.flags.ack == 0")),
            udp: tshark_count(file, Some("udp")),
            icmp: tshark_count(file, Some("icmp || icmpv6")),
        };
        (counts, "tshark")
    }
}

#[test]
fn every_shared_capture_matches_an_independent_tool() {
    let Some(dir) = shared_pcaps() else { return };
    if !have("tcpdump") || !have("tshark") {
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read shared/pcaps")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "expected the shared captures, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let summary = replay_json(&[file.to_str().unwrap()]);
        let ours = Counts {
            packets: summary["packets"].as_u64().unwrap(),
            syn: summary["tcp_syn_flag"].as_u64().unwrap(),
            udp: summary["by_ip_protocol"]["udp"].as_u64().unwrap_or(0),
            icmp: summary["by_ip_protocol"]["icmp"].as_u64().unwrap_or(0)
                + summary["by_ip_protocol"]["icmpv6"].as_u64().unwrap_or(0),
        };
        let malformed = summary["malformed"].as_u64().unwrap();
        let (theirs, tool) = reference_counts(file);
        // Byte-offset filters also match packets whose IP header is invalid (bad version or
        // header length); tapwatch counts those as malformed instead. That is the only slack.
        let close = |a: u64, b: u64| a.abs_diff(b) <= malformed;
        let checks = [
            (
                "packets",
                ours.packets == theirs.packets,
                ours.packets,
                theirs.packets,
            ),
            ("tcp syn", close(ours.syn, theirs.syn), ours.syn, theirs.syn),
            ("udp", close(ours.udp, theirs.udp), ours.udp, theirs.udp),
            (
                "icmp",
                close(ours.icmp, theirs.icmp),
                ours.icmp,
                theirs.icmp,
            ),
        ];
        for (what, ok, a, b) in checks {
            if !ok {
                failures.push(format!(
                    "{name}: {what}: tapwatch {a}, {tool} {b} (malformed {malformed})"
                ));
            }
        }
        // The protocol-type breakdown accounts for every packet.
        let typed: u64 = summary["by_protocol_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        if typed != ours.packets {
            failures.push(format!(
                "{name}: by_protocol_type sums to {typed}, not {}",
                ours.packets
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "count mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn known_captures_are_labelled_as_their_provenance_says() {
    let Some(dir) = shared_pcaps() else { return };
    let s = replay_json(&[dir.join("ndpi__synscan.pcap").to_str().unwrap()]);
    assert_eq!(s["by_protocol_type"]["tcp_syn"], 1994);
    assert_eq!(s["top_sources"][0]["address"], "172.16.0.8");

    let s = replay_json(&[dir
        .join("stopddos__pkt.TCP.synflood.spoofed.pcap")
        .to_str()
        .unwrap()]);
    assert_eq!(s["by_protocol_type"]["tcp_syn"], 37841);
    assert_eq!(s["distinct_sources"], 37623);

    // BFD in 802.1Q VLAN 13 with source port 49152: control on 3784, echo on 3785.
    let s = replay_json(&[dir.join("ndpi__bfd.pcap").to_str().unwrap()]);
    assert_eq!(s["by_protocol_type"]["bfd_control"], 5);
    assert_eq!(s["by_protocol_type"]["bfd_echo"], 6);

    let s = replay_json(&[dir.join("tcpdump__bfd-multihop.pcap").to_str().unwrap()]);
    assert_eq!(s["by_protocol_type"]["bfd_control"], 16);
    assert_eq!(s["by_protocol_type"]["bfd_multihop"], 24);

    let s = replay_json(&[dir.join("tcpdump__bgp-4byte-asn.pcap").to_str().unwrap()]);
    assert!(s["by_protocol_type"]["bgp"].as_u64().unwrap() > 0);

    let s = replay_json(&[dir
        .join("zeek__quic_win11_firefox_google.pcap")
        .to_str()
        .unwrap()]);
    assert!(s["by_protocol_type"]["quic"].as_u64().unwrap() > 0);

    let s = replay_json(&[dir.join("pcapplusplus__tls2.pcap").to_str().unwrap()]);
    assert!(s["by_protocol_type"]["tls_handshake"].as_u64().unwrap() > 0);
    assert!(
        s["by_protocol_type"]["tls_application_data"]
            .as_u64()
            .unwrap()
            > 1000
    );

    let s = replay_json(&[dir.join("zeek__http-websocket.pcap").to_str().unwrap()]);
    assert_eq!(s["by_protocol_type"]["http_request"], 1);

    // SNMP reflection: one victim receives 4079 of the packets.
    let s = replay_json(&[dir
        .join("stopddos__amp.UDP.snmp.src161.pcapng")
        .to_str()
        .unwrap()]);
    assert_eq!(s["by_ip_protocol"]["udp"], 4079);

    // IPv4 fragments: non-first fragments carry no ports.
    let s = replay_json(&[dir.join("pcapplusplus__ip-frag.pcap").to_str().unwrap()]);
    assert!(s["by_protocol_type"]["ip_fragment"].as_u64().unwrap() > 1000);

    // Cisco HDLC is an unsupported link type: counted, reported, not a crash.
    let s = replay_json(&[dir.join("ndpi__BGP_redist_chdlc.pcap").to_str().unwrap()]);
    assert_eq!(s["malformed_by_reason"]["link: unsupported link type"], 2);

    // The snaplen cut TCP options: labelled anyway, not malformed.
    let s = replay_json(&[dir
        .join("zeek__tcp-truncated-header_snaplen68.pcap")
        .to_str()
        .unwrap()]);
    assert_eq!(s["malformed"], 0);
    assert_eq!(s["by_protocol_type"]["tcp_syn"], 1);
}

/// A client's QUIC Initials, as tshark decodes them: Initial packets towards port 443 in
/// datagrams padded to 1200 bytes. The server's Initials and the client's unpadded ACK-only
/// ones are not connection setups.
const TSHARK_CLIENT_INITIALS: &str =
    "quic.long.packet_type == 0 && udp.dstport == 443 && udp.length >= 1208";

#[test]
fn quic_client_initials_match_tshark() {
    let Some(dir) = shared_pcaps() else { return };
    if !have("tshark") {
        return;
    }
    for (file, expected) in [
        ("zeek__quic_win11_firefox_google.pcap", 1),
        // IPv6 over BSD loopback, every packet cut to 256 bytes: the Initial's header
        // fields are read, its length checked against the UDP header's.
        ("tcpdump__quic_handshake_truncated.pcap", 2),
    ] {
        let path = dir.join(file);
        assert_eq!(
            tshark_count(&path, Some(TSHARK_CLIENT_INITIALS)),
            expected,
            "{file}: tshark"
        );
        let s = replay_json(&[path.to_str().unwrap()]);
        let types = &s["by_protocol_type"];
        assert_eq!(types["quic_initial"], expected, "{file}: {types}");
        // Every other long-header packet is still `quic`.
        let long_headers = tshark_count(&path, Some("quic.long.packet_type"));
        assert_eq!(
            types["quic"].as_u64().unwrap_or(0) + expected,
            long_headers,
            "{file}: {types}"
        );
    }
}

/// Every setup of an encrypted UDP protocol, as tshark's dissectors decode them.
const TSHARK_ENCRYPTED_SETUPS: &str = "wg.type == 1 \
    || (isakmp.exchangetype == 34 && isakmp.flag_i == 1 && isakmp.flag_r == 0) \
    || dtls.handshake.type == 1 \
    || ((openvpn.opcode == 7 || openvpn.opcode == 10) && openvpn.keyid == 0) \
    || (quic.long.packet_type == 0 && udp.dstport == 443 && udp.length >= 1208)";

#[test]
fn no_shared_capture_holds_setups_tshark_does_not_see() {
    let Some(dir) = shared_pcaps() else { return };
    if !have("tshark") {
        return;
    }
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read shared/pcaps") {
        let file = entry.unwrap().path();
        if !file
            .extension()
            .is_some_and(|e| e == "pcap" || e == "pcapng")
        {
            continue;
        }
        let types = replay_json(&[file.to_str().unwrap()])["by_protocol_type"].clone();
        let ours: u64 = [
            "quic_initial",
            "wireguard_initiation",
            "ike_sa_init",
            "dtls_client_hello",
            "openvpn_hard_reset",
        ]
        .iter()
        .map(|k| types[k].as_u64().unwrap_or(0))
        .sum();
        let theirs = tshark_count(&file, Some(TSHARK_ENCRYPTED_SETUPS));
        if ours != theirs {
            failures.push(format!("{}: {ours} vs tshark {theirs}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn truncated_and_corrupt_files_keep_what_was_read() {
    let Some(dir) = shared_pcaps() else { return };
    let file = dir.join("ndpi__fuzz-2021-10-13_cut-short.pcap");
    let out = run(tapwatch()
        .arg("replay")
        .arg(&file)
        .args(["--format", "json"]));
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["packets"], 1, "libpcap reads one record before the cut");
    assert_eq!(s["capture"]["truncated_records"], 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut short") && err.contains("byte 237"),
        "{err}"
    );
}

#[test]
fn several_files_merge_in_timestamp_order() {
    let Some(dir) = shared_pcaps() else { return };
    let a = dir.join("tcpdump__bfd-multihop.pcap");
    let b = dir.join("ndpi__bfd.pcap");
    let c = dir.join("zeek__pcapng-multi-interface.pcapng");
    let s = replay_json(&[
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    ]);
    assert_eq!(s["packets"], 40 + 11 + 6);
    let out = run(tapwatch().arg("replay").args([&a, &b, &c]).args([
        "--print-packets",
        "--format",
        "json",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    let stamps: Vec<f64> = err
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(stamps.len(), 57);
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "merged stream is not in timestamp order"
    );
}
