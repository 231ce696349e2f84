//! Handshake packets of the encrypted UDP protocols, built byte by byte: tshark's
//! dissectors read each as the message tapwatch labels it, and read the near misses
//! (responses, other messages) as something else, as tapwatch does.
use std::process::Command;

use etherparse::PacketBuilder;

use crate::common::*;

/// A pcap (Ethernet) of UDP datagrams `(src_port, dst_port, payload)`, one a second.
fn pcap(datagrams: &[(u16, u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (i, (src, dst, payload)) in datagrams.iter().enumerate() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(*src, *dst)
            .write(&mut frame, payload)
            .unwrap();
        let len = frame.len() as u32;
        for v in [i as u32 + 1, 0, len, len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    out
}

fn wireguard(ty: u8, len: usize) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0];
    p.extend((4..len).map(|i| (i * 7 + 3) as u8));
    p
}

fn ike(flags: u8, rspi: u8) -> Vec<u8> {
    let mut p = vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    p.extend_from_slice(&[rspi; 8]);
    p.extend_from_slice(&[33, 0x20, 34, flags, 0, 0, 0, 0]);
    p.extend_from_slice(&328u32.to_be_bytes());
    p.resize(328, 0x2a);
    p
}

fn dtls(msg_type: u8) -> Vec<u8> {
    let body = 180usize;
    let mut p = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 7];
    p.extend_from_slice(&(12 + body as u16).to_be_bytes());
    p.push(msg_type);
    p.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
    p.extend_from_slice(&[0, 0, 0, 0, 0]);
    p.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
    p.extend_from_slice(&[0xfe, 0xfd]);
    p.resize(25 + body, 0x3c);
    p
}

fn openvpn(opcode_key: u8) -> Vec<u8> {
    let mut p = vec![opcode_key];
    p.extend_from_slice(&[0x5e; 8]);
    p.extend_from_slice(&[0; 5]);
    p
}

#[test]
fn encrypted_setups_agree_with_tshark() {
    if !have("tshark") {
        return;
    }
    let mut marked = vec![0; 4];
    marked.extend(ike(0x08, 0));
    let datagrams = [
        (40000, 51820, wireguard(1, 148)),
        (51820, 40000, wireguard(2, 92)),
        (500, 500, ike(0x08, 0)),
        (4500, 4500, marked),
        (500, 500, ike(0x20, 0x99)),
        (40000, 4433, dtls(1)),
        (4433, 40000, dtls(3)),
        (40000, 1194, openvpn(0x38)),
        (1194, 40000, openvpn(0x40)),
    ];
    let dir = TempDir::new("setups");
    let file = dir.path("setups.pcap");
    std::fs::write(&file, pcap(&datagrams)).unwrap();
    let s = replay_json(&[file.to_str().unwrap()]);
    let types = &s["by_protocol_type"];
    for (kind, filter, expected) in [
        ("wireguard_initiation", "wg.type == 1", 1),
        (
            "ike_sa_init",
            "isakmp.exchangetype == 34 && isakmp.flag_i == 1 && isakmp.flag_r == 0 \
             && isakmp.rspi == 00:00:00:00:00:00:00:00",
            2,
        ),
        ("dtls_client_hello", "dtls.handshake.type == 1", 1),
        (
            "openvpn_hard_reset",
            "(openvpn.opcode == 7 || openvpn.opcode == 10) && openvpn.keyid == 0",
            1,
        ),
    ] {
        let out = run(Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args(["-Y", filter]));
        let tshark = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(tshark, expected, "tshark: {filter}");
        assert_eq!(types[kind], expected, "{kind}: {types}");
    }
    // The responses are datagrams of some other kind to both.
    assert_eq!(types["udp"], 4, "{types}");
}
