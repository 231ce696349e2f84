//! Byte-level tests: every link type, every protocol type, malformed input.
use std::net::IpAddr;

use etherparse::PacketBuilder;
use proptest::prelude::*;
use tapwatch_capture::{Frame, LinkType};

use crate::*;

const MAC: ([u8; 6], [u8; 6]) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);

fn classify(link: LinkType, data: &[u8]) -> PacketMeta {
    Classifier::default().classify(&Frame {
        ts_ns: 7,
        wire_len: data.len() as u32,
        link,
        interface: 0,
        data,
    })
}

fn eth_udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(src_port, dst_port)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn eth_tcp(flags: &str, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, dst_port, 100, 1000);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(5),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// The IPv4 packet inside an Ethernet frame.
fn ip_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

#[test]
fn ethernet_ipv4_udp_fields() {
    let m = classify(LinkType::Ethernet, &eth_udp(5000, 6000, &[1, 2, 3]));
    assert_eq!(m.kind, ProtocolType::Udp);
    assert_eq!(m.src, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(m.dst, Some("10.0.0.2".parse().unwrap()));
    assert_eq!((m.src_port, m.dst_port, m.ip_proto), (5000, 6000, 17));
    assert_eq!(m.size_class, SizeClass::UpTo64);
    assert_eq!(m.ts_ns, 7);
    assert!(m.malformed.is_none());
}

#[test]
fn every_link_type_reaches_the_ip_header() {
    let frame = eth_udp(5000, 53, &[0; 12]);
    let ip = ip_of(&frame);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(ip);
    let mut sll_loopback = vec![0, 0, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
    sll_loopback.extend_from_slice(ip);
    let mut sll2 = vec![
        0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
    ];
    sll2.extend_from_slice(ip);
    let mut null_le = 2u32.to_le_bytes().to_vec();
    null_le.extend_from_slice(ip);
    let mut null_be = 2u32.to_be_bytes().to_vec();
    null_be.extend_from_slice(ip);
    let mut openbsd = 2u32.to_be_bytes().to_vec();
    openbsd.extend_from_slice(ip);
    let cases: [(LinkType, &[u8]); 8] = [
        (LinkType::Ethernet, &frame),
        (LinkType::LinuxSll, &sll),
        (LinkType::LinuxSll, &sll_loopback),
        (LinkType::LinuxSll2, &sll2),
        (LinkType::Null, &null_le),
        (LinkType::Null, &null_be),
        (LinkType::Loop, &openbsd),
        (LinkType::RawIp, ip),
    ];
    for (link, data) in cases {
        let m = classify(link, data);
        assert_eq!(m.kind, ProtocolType::Dns, "{link:?}");
        assert_eq!(m.dst_port, 53, "{link:?}");
    }
    // IPv6 on raw, Ipv4 and Ipv6 link types.
    let mut v6 = Vec::new();
    PacketBuilder::ipv6(
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        64,
    )
    .tcp(1, 2, 3, 4)
    .syn()
    .write(&mut v6, &[])
    .unwrap();
    for link in [LinkType::RawIp, LinkType::Ipv6] {
        let m = classify(link, &v6);
        assert_eq!(m.kind, ProtocolType::TcpSyn);
        assert_eq!(m.src, Some("2001:db8::1".parse::<IpAddr>().unwrap()));
    }
    assert_eq!(classify(LinkType::Ipv4, ip).kind, ProtocolType::Dns);
    let m = classify(LinkType::Other(104), &frame);
    assert_eq!(m.malformed.map(|b| b.reason), Some("unsupported link type"));
}

#[test]
fn vlan_qinq_and_mpls() {
    let plain = eth_udp(1, 2, &[0; 4]);
    let (eth, rest) = plain.split_at(12);
    let mut single = eth.to_vec();
    single.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    single.extend_from_slice(rest);
    let m = classify(LinkType::Ethernet, &single);
    assert_eq!(
        (m.outer_vlan, m.inner_vlan, m.kind),
        (Some(100), None, ProtocolType::Udp)
    );
    let mut qinq = eth.to_vec();
    qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x07, 0xd1]);
    qinq.extend_from_slice(rest);
    let m = classify(LinkType::Ethernet, &qinq);
    assert_eq!(
        (m.outer_vlan, m.inner_vlan, m.kind),
        (Some(200), Some(2001), ProtocolType::Udp)
    );
    let mut mpls = eth.to_vec();
    mpls.extend_from_slice(&[0x88, 0x47, 0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40]);
    mpls.extend_from_slice(&rest[2..]);
    let m = classify(LinkType::Ethernet, &mpls);
    assert_eq!((m.kind, m.src_port), (ProtocolType::Udp, 1));
    // A VLAN tag cut short in a complete frame is malformed.
    let m = classify(LinkType::Ethernet, &single[..16]);
    assert_eq!(
        m.malformed,
        Some(Malformed {
            layer: "vlan",
            reason: "too short"
        })
    );
}

#[test]
fn tcp_flag_types() {
    let cases = [
        ("S", ProtocolType::TcpSyn),
        ("SA", ProtocolType::TcpSynAck),
        ("RA", ProtocolType::TcpRst),
        ("FA", ProtocolType::TcpFin),
        ("A", ProtocolType::TcpAck),
        ("", ProtocolType::TcpOther),
    ];
    for (flags, kind) in cases {
        let m = classify(LinkType::Ethernet, &eth_tcp(flags, 80, &[]));
        assert_eq!(m.kind, kind, "flags {flags}");
    }
    let m = classify(LinkType::Ethernet, &eth_tcp("S", 80, &[]));
    assert_eq!((m.tcp_seq, m.tcp_flags & 0x12), (100, 0x02));
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 8080, b"\x00\x01binary")).kind,
        ProtocolType::TcpData
    );
}

#[test]
fn payload_labels() {
    let tls = |t: u8| vec![t, 3, 3, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 443, &tls(22))).kind,
        ProtocolType::TlsHandshake
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 443, &tls(23))).kind,
        ProtocolType::TlsApplicationData
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 443, &tls(21))).kind,
        ProtocolType::TlsAlert
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 443, &tls(20))).kind,
        ProtocolType::TlsChangeCipherSpec
    );
    assert_eq!(
        classify(
            LinkType::Ethernet,
            &eth_tcp("PA", 8080, b"GET / HTTP/1.1\r\n")
        )
        .kind,
        ProtocolType::HttpRequest
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 8080, b"GETX")).kind,
        ProtocolType::TcpData
    );
    let mut bgp = vec![0xff; 16];
    bgp.extend_from_slice(&[0, 19, 4]);
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 179, &bgp)).kind,
        ProtocolType::Bgp
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_tcp("PA", 53, &[0, 30, 1, 2])).kind,
        ProtocolType::Dns
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(5353, 5353, &[0; 12])).kind,
        ProtocolType::Dns
    );
    let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
    quic.resize(1200, 0);
    let m = classify(LinkType::Ethernet, &eth_udp(50000, 443, &quic));
    assert_eq!(
        (m.kind, m.detail),
        (ProtocolType::Quic, Detail::Quic { version: 1 })
    );
    assert_eq!(m.size_class, SizeClass::UpTo1518);
    // A short-header packet (or any unknown version) is plain UDP.
    let mut short = quic.clone();
    short[0] = 0x43;
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(50000, 443, &short)).kind,
        ProtocolType::Udp
    );
    let mut gquic = vec![0x0d, 1, 2, 3, 4, 5, 6, 7, 8, b'Q', b'0', b'4', b'3', 0];
    gquic.resize(100, 0);
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(50000, 443, &gquic)).kind,
        ProtocolType::Quic
    );
}

#[test]
fn bfd_control_fields_and_echo() {
    let mut p = [0u8; 24];
    p[0] = 0x20; // version 1, diag 0
    p[1] = 0xc0; // state Up
    p[2] = 3;
    p[3] = 24;
    p[4..8].copy_from_slice(&7u32.to_be_bytes());
    p[8..12].copy_from_slice(&9u32.to_be_bytes());
    p[12..16].copy_from_slice(&300_000u32.to_be_bytes());
    p[16..20].copy_from_slice(&250_000u32.to_be_bytes());
    let m = classify(LinkType::Ethernet, &eth_udp(49152, 3784, &p));
    assert_eq!(m.kind, ProtocolType::BfdControl);
    let Detail::Bfd(b) = m.detail else {
        panic!("no BFD detail: {m:?}")
    };
    assert_eq!(
        (b.state, b.detect_mult, b.my_disc, b.your_disc),
        (BfdState::Up, 3, 7, 9)
    );
    assert_eq!(
        (b.desired_min_tx_us, b.required_min_rx_us),
        (300_000, 250_000)
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(49152, 4784, &p)).kind,
        ProtocolType::BfdMultihop
    );
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(49152, 3785, &[1, 2, 3])).kind,
        ProtocolType::BfdEcho
    );
    // Wrong version: not BFD control.
    p[0] = 0x40;
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(49152, 3784, &p)).kind,
        ProtocolType::Udp
    );
}

#[test]
fn icmp_and_icmpv6_keep_type_and_code() {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, 2)
        .write(&mut v, &[0; 8])
        .unwrap();
    let m = classify(LinkType::Ethernet, &v);
    assert_eq!(
        (m.kind, m.detail),
        (
            ProtocolType::Icmp,
            Detail::Icmp {
                ty: 8,
                code: 0,
                id: 1,
                seq: 2
            }
        )
    );
    let mut v = Vec::new();
    PacketBuilder::ipv6(
        [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        255,
    )
    .icmpv6_echo_request(1, 1)
    .write(&mut v, &[])
    .unwrap();
    let m = classify(LinkType::RawIp, &v);
    assert_eq!(
        (m.kind, m.detail),
        (
            ProtocolType::Icmpv6,
            Detail::Icmp {
                ty: 128,
                code: 0,
                id: 1,
                seq: 1
            }
        )
    );
}

#[test]
fn icmp_other_than_echo_has_no_identifier() {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_raw(3, 3, [9, 9, 9, 9])
        .write(&mut v, &[0; 28])
        .unwrap();
    let m = classify(LinkType::Ethernet, &v);
    assert_eq!(
        m.detail,
        Detail::Icmp {
            ty: 3,
            code: 3,
            id: 0,
            seq: 0
        }
    );
    assert_eq!(m.kind.echo(&m.detail), None);
}

#[test]
fn tcp_window_payload_length_and_timestamps() {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 100, 4321)
        .ack(5)
        .options(&[
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(0x0102_0304, 0x0a0b_0c0d),
        ])
        .unwrap()
        .write(&mut v, &[7; 300])
        .unwrap();
    let m = classify(LinkType::Ethernet, &v);
    assert_eq!(m.tcp_window, 4321);
    assert_eq!(m.payload_len, 300);
    assert_ne!(m.flags & FLAG_TCP_TIMESTAMPS, 0);
    assert_eq!((m.tcp_tsval, m.tcp_tsecr), (0x0102_0304, 0x0a0b_0c0d));

    // Cut by a snaplen inside the payload: the length is still the one sent.
    let cut = &v[..80];
    let m = Classifier::default().classify(&Frame {
        ts_ns: 7,
        wire_len: v.len() as u32,
        link: LinkType::Ethernet,
        interface: 0,
        data: cut,
    });
    assert_eq!(m.payload_len, 300);
    assert_eq!(m.tcp_tsval, 0x0102_0304);

    // A timestamps option after other options (MSS, SACK permitted, window scale).
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 100, 64240)
        .syn()
        .options(&[
            etherparse::TcpOptionElement::MaximumSegmentSize(1460),
            etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
            etherparse::TcpOptionElement::Timestamp(77, 0),
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::WindowScale(7),
        ])
        .unwrap()
        .write(&mut v, &[])
        .unwrap();
    let m = classify(LinkType::Ethernet, &v);
    assert_eq!((m.tcp_tsval, m.tcp_tsecr, m.payload_len), (77, 0, 0));
    assert_ne!(m.flags & FLAG_TCP_TIMESTAMPS, 0);

    // No options: no timestamps.
    let m = classify(LinkType::Ethernet, &eth_tcp("A", 443, &[]));
    assert_eq!(m.flags & FLAG_TCP_TIMESTAMPS, 0);
}

#[test]
fn tcp_options_with_lying_lengths_are_ignored() {
    for options in [
        vec![8u8, 10, 0, 0],
        vec![2, 0, 0, 0],
        vec![2, 40, 0, 0],
        vec![1, 1, 8, 10],
    ] {
        let mut frame = eth_tcp("A", 443, &[]);
        // Grow the data offset by the options' length and append them.
        frame[14 + 20 + 12] = ((20 + options.len() as u8) / 4) << 4;
        frame.extend_from_slice(&options);
        let total = (frame.len() - 14) as u16;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        let m = classify(LinkType::Ethernet, &frame);
        assert_eq!(m.flags & FLAG_TCP_TIMESTAMPS, 0, "{options:?}");
        assert_eq!(m.payload_len, 0);
    }
}

#[test]
fn http_status_lines_and_upgrade_requests() {
    let m = classify(
        LinkType::Ethernet,
        &eth_tcp("PA", 80, b"HTTP/1.1 101 Switching Protocols\r\n"),
    );
    assert_eq!(m.kind, ProtocolType::HttpResponse);
    assert_eq!(m.detail, Detail::Http(HttpLine::Response { status: 101 }));
    let m = classify(LinkType::Ethernet, &eth_tcp("PA", 80, b"HTTP/1.0 404\r\n"));
    assert_eq!(m.detail, Detail::Http(HttpLine::Response { status: 404 }));
    for not_status in [
        &b"HTTP/2.0 200 OK"[..],
        b"HTTP/1.1 20x OK",
        b"HTTP/1.1 099 x",
    ] {
        assert_eq!(
            classify(LinkType::Ethernet, &eth_tcp("PA", 80, not_status)).kind,
            ProtocolType::TcpData
        );
    }
    let upgrade =
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nupgrade: websocket\r\n\r\n";
    let m = classify(LinkType::Ethernet, &eth_tcp("PA", 80, upgrade));
    assert_eq!(m.detail, Detail::Http(HttpLine::Request { upgrade: true }));
    let plain = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nUpgrade: in the body\r\n";
    let m = classify(LinkType::Ethernet, &eth_tcp("PA", 80, plain));
    assert_eq!(m.detail, Detail::Http(HttpLine::Request { upgrade: false }));
}

#[test]
fn fragments_first_keeps_ports_later_does_not() {
    let frame = eth_udp(5000, 53, &[0; 40]);
    let mut first = frame.clone();
    first[14 + 6] = 0x20; // MF, offset 0
    let m = classify(LinkType::Ethernet, &first);
    assert_eq!(
        (m.fragment, m.kind, m.dst_port),
        (Fragment::First, ProtocolType::Dns, 53)
    );
    let mut later = frame.clone();
    later[14 + 6] = 0x00;
    later[14 + 7] = 0x10; // offset 16 * 8 bytes
    let m = classify(LinkType::Ethernet, &later);
    assert_eq!(
        (m.fragment, m.kind, m.dst_port, m.ip_proto),
        (Fragment::Later, ProtocolType::IpFragment, 0, 17)
    );
}

#[test]
fn headers_end_where_the_payload_begins() {
    // Ethernet 14 + IPv4 20 + UDP 8.
    assert_eq!(
        classify(LinkType::Ethernet, &eth_udp(5000, 53, &[0; 40])).headers_len,
        42
    );
    // TCP with 12 bytes of options: its data offset, not the payload.
    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 100, 1000)
        .options_raw(&[1; 12])
        .unwrap()
        .write(&mut tcp, &[0xaa; 100])
        .unwrap();
    assert_eq!(classify(LinkType::Ethernet, &tcp).headers_len, 14 + 20 + 32);
    // Cut by the snaplen: never past the bytes captured.
    let m = Classifier::default().classify(&Frame {
        ts_ns: 7,
        wire_len: tcp.len() as u32,
        link: LinkType::Ethernet,
        interface: 0,
        data: &tcp[..40],
    });
    assert_eq!(m.headers_len, 40);
    // An Ethernet trailer after a short packet is not header; a VLAN tag is.
    let mut padded = eth_tcp("A", 443, &[]);
    padded.extend([0; 6]);
    assert_eq!(classify(LinkType::Ethernet, &padded).headers_len, 54);
    let mut tagged = eth_tcp("PA", 443, &[1; 10]);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    assert_eq!(classify(LinkType::Ethernet, &tagged).headers_len, 58);
    // A later fragment: the IP header only. ICMP: 8 bytes. Raw IP: from byte 0.
    let mut later = eth_udp(5000, 53, &[0; 40]);
    later[14 + 7] = 0x10;
    assert_eq!(classify(LinkType::Ethernet, &later).headers_len, 34);
    let mut ping = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, 2)
        .write(&mut ping, &[0; 56])
        .unwrap();
    assert_eq!(classify(LinkType::RawIp, &ping).headers_len, 28);
    // IPv6 with an extension header: the fixed header, the extension, then UDP.
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(MAC.0, MAC.1)
        .ipv6([1; 16], [2; 16], 64)
        .udp(5000, 53)
        .write(&mut v6, &[0; 20])
        .unwrap();
    let plain = classify(LinkType::Ethernet, &v6).headers_len;
    assert_eq!(plain, 14 + 40 + 8);
    // Insert an 8-byte destination-options header (next header UDP) after the fixed one.
    let mut ext = v6.clone();
    ext[14 + 6] = 60;
    ext.splice(14 + 40..14 + 40, [17, 0, 1, 4, 0, 0, 0, 0]);
    let len = u16::from_be_bytes([ext[14 + 4], ext[14 + 5]]) + 8;
    ext[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
    assert_eq!(classify(LinkType::Ethernet, &ext).headers_len, plain + 8);
}

#[test]
fn arp_and_non_ip() {
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC.0);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(classify(LinkType::Ethernet, &arp).kind, ProtocolType::Arp);
    let mut lldp = arp.clone();
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    let m = classify(LinkType::Ethernet, &lldp);
    assert_eq!(
        (m.kind, m.src, m.headers_len),
        (ProtocolType::NonIp, None, 0)
    );
    assert_eq!(classify(LinkType::Ethernet, &arp).headers_len, 0);
}

#[test]
fn malformed_headers_are_labelled_not_panicked_on() {
    let frame = eth_udp(1, 2, &[]);
    let mut bad_version = frame.clone();
    bad_version[14] = 0x75;
    assert_eq!(
        classify(LinkType::Ethernet, &bad_version).malformed,
        Some(Malformed {
            layer: "ip",
            reason: "unsupported version"
        })
    );
    let mut bad_ihl = frame.clone();
    bad_ihl[14] = 0x43;
    assert_eq!(
        classify(LinkType::Ethernet, &bad_ihl)
            .malformed
            .map(|b| b.layer),
        Some("ipv4")
    );
    let m = classify(LinkType::Ethernet, &frame[..20]);
    assert_eq!(
        m.malformed,
        Some(Malformed {
            layer: "ipv4",
            reason: "too short"
        })
    );
    let m = classify(LinkType::Ethernet, &frame[..10]);
    assert_eq!(
        m.malformed,
        Some(Malformed {
            layer: "ethernet",
            reason: "too short"
        })
    );
    let tcp = eth_tcp("S", 80, &[]);
    let mut bad_offset = tcp.clone();
    bad_offset[14 + 20 + 12] = 0x20;
    assert_eq!(
        classify(LinkType::Ethernet, &bad_offset).malformed,
        Some(Malformed {
            layer: "tcp",
            reason: "data offset below 5"
        })
    );
}

#[test]
fn snaplen_cut_headers_are_labelled_not_malformed() {
    let tcp = eth_tcp("S", 80, &[0; 100]);
    let cut = &tcp[..14 + 20 + 14];
    let m = Classifier::default().classify(&Frame {
        ts_ns: 0,
        wire_len: tcp.len() as u32,
        link: LinkType::Ethernet,
        interface: 0,
        data: cut,
    });
    assert_eq!(m.kind, ProtocolType::TcpSyn);
    assert!(m.malformed.is_none());
    assert_ne!(m.flags & FLAG_SNAPPED_HEADER, 0);
    assert_eq!(
        m.size_class,
        SizeClass::UpTo256,
        "size class follows the wire length"
    );
}

#[test]
fn size_class_boundaries() {
    let cases = [
        (0, SizeClass::UpTo64),
        (64, SizeClass::UpTo64),
        (65, SizeClass::UpTo128),
        (128, SizeClass::UpTo128),
        (129, SizeClass::UpTo256),
        (256, SizeClass::UpTo256),
        (257, SizeClass::UpTo512),
        (512, SizeClass::UpTo512),
        (513, SizeClass::UpTo1024),
        (1024, SizeClass::UpTo1024),
        (1025, SizeClass::UpTo1518),
        (1518, SizeClass::UpTo1518),
        (1519, SizeClass::Jumbo),
        (9000, SizeClass::Jumbo),
        (u32::MAX, SizeClass::Jumbo),
    ];
    for (len, class) in cases {
        assert_eq!(SizeClass::of(len), class, "{len}");
    }
}

#[test]
fn tenants_and_custom_ports() {
    let tenants = TenantMap::parse(
        std::path::Path::new("t"),
        "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.0.0.0/24\"]\n",
    )
    .unwrap();
    let config = ClassifierConfig {
        port: vec![PortMapping {
            name: "relay_control".into(),
            transport: Transport::Udp,
            port: 9000,
        }],
    };
    let c = Classifier::new(tenants, &config);
    let frame = eth_udp(40000, 9000, &[0; 60]);
    let m = c.classify(&Frame {
        ts_ns: 0,
        wire_len: frame.len() as u32,
        link: LinkType::Ethernet,
        interface: 0,
        data: &frame,
    });
    assert_eq!(c.type_name(m.kind), "relay_control");
    assert_eq!(c.tenants().name(m.tenant), "acme");
    assert_eq!(c.type_at(m.kind.index()), Some(m.kind));
    assert_eq!(c.type_count(), ProtocolType::BUILTIN + 1);
    for i in 0..ProtocolType::BUILTIN {
        assert_eq!(ProtocolType::builtin(i).unwrap().index(), i);
    }
    for k in [0, 1, 200, 255] {
        assert_eq!(
            ProtocolType::Custom(k).index(),
            ProtocolType::BUILTIN + k as usize
        );
    }
}

/// Custom UDP ports at the edges of the port bitmap's words, matched by destination or
/// source port; their neighbours and the same ports over TCP keep the built-in types.
#[test]
fn custom_ports_at_every_word_edge() {
    let edges = [0u16, 1, 63, 64, 127, 4095, 65472, 65535];
    let config = ClassifierConfig {
        port: edges
            .iter()
            .map(|&port| PortMapping {
                name: format!("p{port}"),
                transport: Transport::Udp,
                port,
            })
            .collect(),
    };
    let c = Classifier::new(TenantMap::default(), &config);
    let kind_of = |frame: &[u8]| {
        let m = c.classify(&Frame {
            ts_ns: 0,
            wire_len: frame.len() as u32,
            link: LinkType::Ethernet,
            interface: 0,
            data: frame,
        });
        c.type_name(m.kind).to_string()
    };
    for port in edges {
        assert_eq!(
            kind_of(&eth_udp(40_000, port, &[0; 20])),
            format!("p{port}")
        );
        assert_eq!(
            kind_of(&eth_udp(port, 40_000, &[0; 20])),
            format!("p{port}")
        );
    }
    for port in [2u16, 62, 65, 128, 4094, 65471, 65534] {
        assert_eq!(
            kind_of(&eth_udp(40_000, port, &[0; 20])),
            "udp",
            "port {port}"
        );
    }
    assert_ne!(kind_of(&eth_tcp("PA", 64, &[0; 20])), "p64");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Whatever the bytes and link type, classification returns a record.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), link in 0u16..300, extra in 0u32..100) {
        let c = Classifier::default();
        let link = LinkType::from_linktype(u32::from(link));
        let m = c.classify(&Frame { ts_ns: 1, wire_len: data.len() as u32 + extra, link, interface: 0, data: &data });
        prop_assert_eq!(m.cap_len as usize, data.len());
        prop_assert!(usize::from(m.headers_len) <= data.len());
    }

    /// Mutating a valid frame anywhere never panics either.
    #[test]
    fn mutated_frames_never_panic(pos in 0usize..80, byte in any::<u8>(), cut in 0usize..80) {
        let mut frame = eth_tcp("PA", 443, &[22, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        let p = pos % frame.len();
        frame[p] = byte;
        let end = frame.len() - cut.min(frame.len());
        let _ = classify(LinkType::Ethernet, &frame[..end]);
    }
}

mod setups;

#[test]
fn endpoint_order_is_the_order_of_address_port_tuples() {
    use std::net::{Ipv4Addr, Ipv6Addr};
    // Addresses that differ in their first, middle and last bytes, both families, and
    // ports that tie and differ.
    let mut addrs: Vec<IpAddr> = Vec::new();
    for x in [0u8, 1, 127, 128, 255] {
        addrs.push(IpAddr::V4(Ipv4Addr::new(x, 0, 0, 1)));
        addrs.push(IpAddr::V4(Ipv4Addr::new(10, x, 2, x)));
        addrs.push(IpAddr::V6(Ipv6Addr::from(u128::from(x) << 120 | 1)));
        addrs.push(IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8 << 96 | u128::from(x),
        )));
    }
    addrs.push(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()));
    for &a in &addrs {
        for &b in &addrs {
            for (pa, pb) in [(80, 80), (80, 443), (443, 80), (0, 65535)] {
                assert_eq!(
                    endpoint_le(a, pa, b, pb),
                    (a, pa) <= (b, pb),
                    "{a}:{pa} vs {b}:{pb}"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn endpoint_order_matches_tuples_on_random_endpoints(
        a in any::<u128>(), b in any::<u128>(), v6 in any::<(bool, bool)>(),
        pa in any::<u16>(), pb in any::<u16>(),
    ) {
        let ip = |x: u128, six: bool| if six {
            IpAddr::V6(std::net::Ipv6Addr::from(x))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(x as u32))
        };
        let (a, b) = (ip(a, v6.0), ip(b, v6.1));
        prop_assert_eq!(endpoint_le(a, pa, b, pb), (a, pa) <= (b, pb));
        prop_assert_eq!(endpoint_le(a, pa, a, pb), pa <= pb);
    }
}

proptest! {
    #[test]
    fn a_flow_hashes_the_same_in_both_directions(
        a in any::<u128>(), b in any::<u128>(), v6 in any::<(bool, bool)>(),
        pa in any::<u16>(), pb in any::<u16>(), proto in any::<u8>(),
    ) {
        let ip = |x: u128, six: bool| if six {
            IpAddr::V6(std::net::Ipv6Addr::from(x))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(x as u32))
        };
        let (a, b) = (ip(a, v6.0), ip(b, v6.1));
        prop_assert_eq!(flow_hash(a, pa, b, pb, proto), flow_hash(b, pb, a, pa, proto));
    }
}

/// Flows that differ in few bits (one server, clients in one /16 with sequential ports,
/// the shape of a relay's traffic) spread evenly over the low bits a table's slot comes
/// from, over the high bits the dealer picks a worker by, and over the 32-bit tags.
#[test]
fn flow_hashes_of_similar_flows_spread_over_every_bit_range() {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let server = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let server6 = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | 1));
    let mut hashes = Vec::new();
    for client in 0..400u32 {
        for port in 40_000..40_250u16 {
            let c = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 | client));
            hashes.push(flow_hash(c, port, server, 443, 6));
            let c6 = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | 0x1_0000 | u128::from(client),
            ));
            hashes.push(flow_hash(c6, port, server6, 443, 6));
        }
    }
    let n = hashes.len() as f64;
    // Chi-square of 4096 buckets (4095 degrees of freedom: mean 4095, sd ≈ 90).
    let chi_square = |bucket: &dyn Fn(u64) -> usize| {
        let mut counts = vec![0u32; 4096];
        for &h in &hashes {
            counts[bucket(h)] += 1;
        }
        let expected = n / 4096.0;
        counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum::<f64>()
    };
    let low = chi_square(&|h| (h & 4095) as usize);
    let high = chi_square(&|h| (h >> 52) as usize);
    let tag = chi_square(&|h| ((h >> 32) & 4095) as usize);
    for (name, x) in [("low bits", low), ("high bits", high), ("tag bits", tag)] {
        assert!(x < 4095.0 + 6.0 * 90.0, "{name}: chi-square {x:.0}");
    }
    // The dealer's split into three parts (two workers) by multiply-shift.
    let mut parts = [0usize; 3];
    for &h in &hashes {
        parts[((u128::from(h) * 3) >> 64) as usize] += 1;
    }
    for p in parts {
        let share = p as f64 / n;
        assert!((share - 1.0 / 3.0).abs() < 0.01, "parts {parts:?}");
    }
}

/// A record reused frame after frame keeps nothing of the frame before: a TCP segment with
/// timestamps and payload, then a bare UDP datagram, then a malformed frame, each classified
/// into the same record, equal what a fresh classification gives.
#[test]
fn a_reused_record_keeps_nothing_of_the_frame_before() {
    let c = Classifier::default();
    let frames = [
        eth_tcp("PA", 443, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
        eth_udp(
            3784,
            3784,
            &[0x20, 0xc0, 3, 24, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        vec![0u8; 20],
        eth_udp(5000, 6000, &[]),
    ];
    let mut reused = PacketMeta::empty(9, 9, 9, 9);
    for (i, data) in frames.iter().enumerate() {
        let frame = Frame {
            ts_ns: 1_000 + i as u64,
            wire_len: data.len() as u32,
            link: LinkType::Ethernet,
            interface: i as u32,
            data,
        };
        c.classify_into(&frame, &mut reused);
        assert_eq!(reused, c.classify(&frame), "frame {i}");
    }
}
