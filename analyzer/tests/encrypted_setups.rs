//! Setups of encrypted UDP protocols count by default: tenants whose nodes open WireGuard
//! or QUIC handshakes to random peers, as many per node as there are nodes, are flagged
//! by the growth detector with no `setup_types` configured; a tenant whose handshakes grow
//! linearly with its nodes is not.
use std::net::Ipv4Addr;

use tapwatch_analyzer::{Analyzer, AnalyzerConfig, Finding};
use tapwatch_capture::{FileReader, FrameSource};
use tapwatch_classifier::{Classifier, TenantMap};
use tapwatch_synth::{CaptureBuilder, Rng};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

/// Which handshake a tenant's nodes open.
#[derive(Clone, Copy)]
enum Handshake {
    Wireguard,
    Quic,
}

/// A WireGuard handshake message of `ty` and `len` bytes.
fn wireguard(ty: u8, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0];
    p.extend((4..len).map(|_| rng.next_u64() as u8));
    p
}

/// A QUIC v1 Initial in a 1250-byte datagram, from a client (8-byte DCID, padded, alone)
/// or from a server (3-byte DCID, a Handshake packet coalesced after it).
fn quic_initial(client: bool, rng: &mut Rng) -> Vec<u8> {
    let dcid = if client { 8 } else { 3 };
    let mut p = vec![0xc1, 0, 0, 0, 1, dcid];
    p.extend((0..dcid).map(|_| rng.next_u64() as u8));
    p.extend_from_slice(&[3, 7, 7, 7, 0]);
    let header = p.len() + 2;
    let length = if client { 1250 - header } else { 400 };
    p.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
    p.extend((0..length).map(|_| rng.next_u64() as u8));
    if !client {
        p.extend_from_slice(&[0xe1, 0, 0, 0, 1]);
    }
    p.resize(1250, 0);
    p
}

/// One handshake from `a` to `b` at `t`: the initiation and the peer's answer.
fn handshake(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t: u64,
    a: Ipv4Addr,
    b: Ipv4Addr,
    h: Handshake,
) {
    let port = 20000 + rng.below(40000) as u16;
    match h {
        Handshake::Wireguard => {
            let init = wireguard(1, 148, rng);
            c.udp(t, (a, port), (b, 51820), None, &init);
            let response = wireguard(2, 92, rng);
            c.udp(t + 2 * MS, (b, 51820), (a, port), None, &response);
        }
        Handshake::Quic => {
            let init = quic_initial(true, rng);
            c.udp(t, (a, port), (b, 4433), None, &init);
            let response = quic_initial(false, rng);
            c.udp(t + 2 * MS, (b, 4433), (a, port), None, &response);
        }
    }
}

/// Tenant `net` (10.net.0.0/16) grows from 8 to 64 nodes over 24 points of 10 s; in each
/// point every node opens `per_node(nodes)` handshakes to random peers.
fn tenant(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    net: u8,
    h: Handshake,
    per_node: impl Fn(u32) -> u32,
) {
    let points = 24u32;
    for p in 0..points {
        let nodes = 8 + 56 * p / (points - 1);
        for i in 0..nodes {
            let a = Ipv4Addr::new(10, net, 0, i as u8 + 1);
            for _ in 0..per_node(nodes) {
                let peer = (i + 1 + rng.below(u64::from(nodes - 1)) as u32) % nodes;
                let b = Ipv4Addr::new(10, net, 0, peer as u8 + 1);
                let t = u64::from(p) * 10 * SEC + rng.below(10 * SEC - 10 * MS);
                handshake(c, rng, SEC + t, a, b, h);
            }
        }
    }
}

/// Every active finding over the capture, through the real classifier and the default
/// analyzer configuration.
fn findings(c: CaptureBuilder) -> Vec<Finding> {
    let mut pcap = Vec::new();
    c.write(&mut pcap).unwrap();
    let tenants = TenantMap::parse(
        std::path::Path::new("tenants.toml"),
        "[[tenant]]\nname = \"wg\"\nprefixes = [\"10.61.0.0/16\"]\n\
         [[tenant]]\nname = \"quic\"\nprefixes = [\"10.62.0.0/16\"]\n\
         [[tenant]]\nname = \"steady\"\nprefixes = [\"10.63.0.0/16\"]\n",
    )
    .unwrap();
    let classifier = Classifier::new(tenants, &Default::default());
    let cfg = AnalyzerConfig::default();
    assert!(cfg.setup_growth.setup_types.is_empty());
    let mut analyzer = Analyzer::new(&cfg, &classifier);
    let mut reader = FileReader::from_reader("overlay", std::io::Cursor::new(pcap)).unwrap();
    let mut out = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        analyzer.observe(&classifier.classify(&frame));
        out.extend(analyzer.take_findings());
    }
    analyzer.finish();
    out.extend(analyzer.take_findings());
    out.retain(|f| f.active);
    out
}

#[test]
fn overlay_handshakes_growing_with_nodes_squared_are_flagged_by_default() {
    let mut c = CaptureBuilder::new();
    let mut rng = Rng::new(7);
    tenant(&mut c, &mut rng, 61, Handshake::Wireguard, |n| n / 4);
    tenant(&mut c, &mut rng, 62, Handshake::Quic, |n| n / 4);
    tenant(&mut c, &mut rng, 63, Handshake::Wireguard, |_| 2);
    tenant(&mut c, &mut rng, 63, Handshake::Quic, |_| 2);
    let found = findings(c);
    let growth: Vec<&str> = found
        .iter()
        .filter(|f| f.kind.name() == "quadratic_setup_growth")
        .map(|f| f.subject.as_str())
        .collect();
    assert!(growth.contains(&"wg"), "WireGuard tenant: {found:#?}");
    assert!(growth.contains(&"quic"), "QUIC tenant: {found:#?}");
    assert!(!growth.contains(&"steady"), "linear tenant: {found:#?}");
}
