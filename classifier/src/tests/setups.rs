//! Setups of encrypted UDP protocols: each recognised from byte-built frames, and each
//! near miss (wrong length, reserved bytes set, a response instead of a request) is not.
use super::*;

fn kind(src_port: u16, dst_port: u16, payload: &[u8]) -> ProtocolType {
    classify(LinkType::Ethernet, &eth_udp(src_port, dst_port, payload)).kind
}

/// A QUIC long header of `first` byte and `version`: an 8-byte DCID (or `dcid`), a 3-byte
/// SCID, no token, a Length covering the rest of `datagram` bytes unless a Handshake
/// packet (`coalesced`) follows.
fn quic(first: u8, version: u32, dcid: u8, datagram: usize, coalesced: Option<u8>) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid);
    p.extend((0..dcid).map(|i| 0xa0 + i));
    p.extend_from_slice(&[3, 0xb1, 0xb2, 0xb3, 0]);
    let header = p.len() + 2;
    let length = match coalesced {
        Some(_) => 300,
        None => datagram - header,
    };
    p.extend_from_slice(&(0x4000 | length as u16).to_be_bytes());
    p.resize(header + length, 0x5c);
    if let Some(next) = coalesced {
        p.push(next);
        p.extend_from_slice(&version.to_be_bytes());
    }
    p.resize(datagram, 0);
    p
}

#[test]
fn quic_client_initials_of_v1_drafts_and_v2() {
    let m = classify(
        LinkType::Ethernet,
        &eth_udp(50000, 443, &quic(0xc3, 1, 8, 1250, None)),
    );
    assert_eq!(m.kind, ProtocolType::QuicInitial);
    assert_eq!(m.detail, Detail::Quic { version: 1 });
    assert_eq!(
        kind(50000, 443, &quic(0xc0, 0xff00_001d, 20, 1200, None)),
        ProtocolType::QuicInitial
    );
    // v2 numbers Initial 1 (0b01) and Handshake 3: its Initial is v1's 0-RTT bit pattern.
    assert_eq!(
        kind(50000, 4433, &quic(0xd0, 0x6b33_43cf, 8, 1300, None)),
        ProtocolType::QuicInitial
    );
    assert_eq!(
        kind(50000, 443, &quic(0xc0, 0x6b33_43cf, 8, 1300, None)),
        ProtocolType::Quic,
        "v2 type 0 is Retry"
    );
    // A client's 0-RTT packet may ride with its first Initial.
    assert_eq!(
        kind(50000, 443, &quic(0xc0, 1, 8, 1300, Some(0xd0))),
        ProtocolType::QuicInitial
    );
}

#[test]
fn quic_near_misses_stay_quic() {
    let near = [
        ("v1 Handshake", quic(0xe0, 1, 8, 1250, None), 50000, 443),
        ("v1 0-RTT", quic(0xd0, 1, 8, 1250, None), 50000, 443),
        ("fixed bit clear", quic(0x80, 1, 8, 1250, None), 50000, 443),
        ("unpadded", quic(0xc0, 1, 8, 1199, None), 50000, 443),
        ("DCID below 8", quic(0xc0, 1, 7, 1250, None), 50000, 443),
        ("DCID above 20", quic(0xc0, 1, 21, 1250, None), 50000, 443),
        (
            "server flight",
            quic(0xc0, 1, 8, 1250, Some(0xe0)),
            50000,
            443,
        ),
        (
            "v2 server flight",
            quic(0xd0, 0x6b33_43cf, 8, 1250, Some(0xf0)),
            50000,
            443,
        ),
        ("from port 443", quic(0xc0, 1, 8, 1250, None), 443, 50000),
    ];
    for (what, p, src, dst) in near {
        assert_eq!(kind(src, dst, &p), ProtocolType::Quic, "{what}");
    }
    // A Length (bytes 19..21 here) too small for the header-protection sample, or past
    // the datagram's end.
    let mut tiny = quic(0xc0, 1, 8, 1250, None);
    tiny[19..21].copy_from_slice(&0x4013u16.to_be_bytes());
    assert_eq!(kind(50000, 443, &tiny), ProtocolType::Quic);
    let mut past = quic(0xc0, 1, 8, 1250, None);
    past[19..21].copy_from_slice(&0x4fffu16.to_be_bytes());
    assert_eq!(kind(50000, 443, &past), ProtocolType::Quic);
    // The zero-filled "Initial" of the bundled benign scenario has Length 0.
    let mut zero = vec![0xc3, 0, 0, 0, 1, 8];
    zero.resize(1200, 0);
    assert_eq!(kind(50000, 443, &zero), ProtocolType::Quic);
}

#[test]
fn quic_initial_cut_by_a_snaplen_is_still_seen() {
    let mut frame = eth_udp(50000, 443, &quic(0xc3, 1, 8, 1250, None));
    frame.truncate(256);
    let m = Classifier::default().classify(&Frame {
        ts_ns: 1,
        wire_len: 1292,
        link: LinkType::Ethernet,
        interface: 0,
        data: &frame,
    });
    assert_eq!(m.kind, ProtocolType::QuicInitial);
}

fn wireguard(ty: u8, len: usize) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0];
    p.extend((0..len - 4).map(|i| (i * 7 + 3) as u8));
    p
}

#[test]
fn wireguard_initiation_and_near_misses() {
    assert_eq!(
        kind(40000, 51820, &wireguard(1, 148)),
        ProtocolType::WireguardInitiation
    );
    assert_eq!(
        kind(3333, 4444, &wireguard(1, 148)),
        ProtocolType::WireguardInitiation,
        "any port"
    );
    assert_eq!(kind(40000, 51820, &wireguard(1, 147)), ProtocolType::Udp);
    assert_eq!(kind(40000, 51820, &wireguard(1, 149)), ProtocolType::Udp);
    assert_eq!(kind(51820, 40000, &wireguard(2, 92)), ProtocolType::Udp);
    assert_eq!(kind(51820, 40000, &wireguard(2, 148)), ProtocolType::Udp);
    for reserved in 1..4 {
        let mut p = wireguard(1, 148);
        p[reserved] = 1;
        assert_eq!(kind(40000, 51820, &p), ProtocolType::Udp, "byte {reserved}");
    }
}

/// An IKEv2 header of `exchange` with `flags` and responder SPI `rspi`, then `body` bytes.
fn ike(exchange: u8, flags: u8, rspi: u8, body: usize) -> Vec<u8> {
    let mut p = vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    p.extend_from_slice(&[rspi; 8]);
    p.extend_from_slice(&[33, 0x20, exchange, flags, 0, 0, 0, 0]);
    p.extend_from_slice(&(28 + body as u32).to_be_bytes());
    p.resize(28 + body, 0x2a);
    p
}

#[test]
fn ike_sa_init_requests_on_500_and_4500() {
    assert_eq!(
        kind(500, 500, &ike(34, 0x08, 0, 300)),
        ProtocolType::IkeSaInit
    );
    assert_eq!(
        kind(40000, 500, &ike(34, 0x08, 0, 300)),
        ProtocolType::IkeSaInit,
        "behind a NAT"
    );
    let mut marked = vec![0; 4];
    marked.extend(ike(34, 0x08, 0, 300));
    assert_eq!(kind(4500, 4500, &marked), ProtocolType::IkeSaInit);
    // Without the non-ESP marker, 4500 carries ESP.
    assert_eq!(kind(4500, 4500, &ike(34, 0x08, 0, 300)), ProtocolType::Udp);
}

#[test]
fn ike_near_misses_are_plain_udp() {
    let near = [
        ("response", ike(34, 0x20, 0x99, 300)),
        ("response flag only", ike(34, 0x28, 0, 300)),
        ("no initiator flag", ike(34, 0x00, 0, 300)),
        ("IKE_AUTH", ike(35, 0x08, 0x99, 300)),
        ("IKE_AUTH, zero SPI", ike(35, 0x08, 0, 300)),
    ];
    for (what, p) in near {
        assert_eq!(kind(500, 500, &p), ProtocolType::Udp, "{what}");
    }
    let mut long = ike(34, 0x08, 0, 300);
    long.push(0);
    assert_eq!(kind(500, 500, &long), ProtocolType::Udp, "length disagrees");
    let mut v1 = ike(34, 0x08, 0, 300);
    v1[17] = 0x10;
    assert_eq!(kind(500, 500, &v1), ProtocolType::Udp, "IKEv1");
    let mut msg_id = ike(34, 0x08, 0, 300);
    msg_id[23] = 1;
    assert_eq!(kind(500, 500, &msg_id), ProtocolType::Udp, "message id");
    assert_eq!(
        kind(40000, 40001, &ike(34, 0x08, 0, 300)),
        ProtocolType::Udp,
        "not on an IKE port"
    );
}

/// A DTLS record of `version` in `epoch` holding one handshake message of `msg_type` and
/// `message_seq`, its body opening with client_version 1.2.
fn dtls(version: u8, epoch: u8, msg_type: u8, message_seq: u8, body: usize) -> Vec<u8> {
    let record = 12 + body;
    let mut p = vec![22, 0xfe, version, 0, epoch, 0, 0, 0, 0, 0, 7];
    p.extend_from_slice(&(record as u16).to_be_bytes());
    p.push(msg_type);
    p.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
    p.extend_from_slice(&[0, message_seq, 0, 0, 0]);
    p.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
    p.extend_from_slice(&[0xfe, 0xfd]);
    p.resize(13 + record, 0x3c);
    p
}

#[test]
fn dtls_client_hellos_of_each_version() {
    for version in [0xff, 0xfd, 0xfc] {
        assert_eq!(
            kind(40000, 4433, &dtls(version, 0, 1, 0, 180)),
            ProtocolType::DtlsClientHello,
            "{version:x}"
        );
    }
}

#[test]
fn dtls_near_misses_are_plain_udp() {
    let near = [
        ("HelloVerifyRequest", dtls(0xfd, 0, 3, 0, 40)),
        ("ServerHello", dtls(0xfd, 0, 2, 0, 80)),
        ("cookie retry", dtls(0xfd, 0, 1, 1, 200)),
        ("epoch 1", dtls(0xfd, 1, 1, 0, 180)),
        ("TLS 1.2 version", dtls(0x03, 0, 1, 0, 180)),
    ];
    for (what, p) in near {
        assert_eq!(kind(40000, 4433, &p), ProtocolType::Udp, "{what}");
    }
    let mut cut = dtls(0xfd, 0, 1, 0, 180);
    cut.pop();
    assert_eq!(
        kind(40000, 4433, &cut),
        ProtocolType::Udp,
        "record past the end"
    );
    let mut fragment = dtls(0xfd, 0, 1, 0, 180);
    fragment[21] = 100;
    assert_eq!(
        kind(40000, 4433, &fragment),
        ProtocolType::Udp,
        "later fragment"
    );
}

/// An OpenVPN control packet of `opcode_key` byte, session id `sid`, then `rest`.
fn openvpn(opcode_key: u8, sid: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![opcode_key];
    p.extend_from_slice(&[sid; 8]);
    p.extend_from_slice(rest);
    p
}

#[test]
fn openvpn_hard_resets_by_layout_or_port() {
    let plain = openvpn(0x38, 0x5e, &[0, 0, 0, 0, 0]);
    assert_eq!(kind(40000, 5000, &plain), ProtocolType::OpenvpnHardReset);
    // tls-auth (HMAC, replay id, time in front) or tls-crypt: the port says it.
    let mut tls_auth = openvpn(0x38, 0x5e, &[0x77; 20]);
    tls_auth.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x43, 0x21, 0, 0, 0, 0, 0, 0]);
    assert_eq!(kind(40000, 1194, &tls_auth), ProtocolType::OpenvpnHardReset);
    assert_eq!(kind(40000, 5000, &tls_auth), ProtocolType::Udp);
    let v3 = openvpn(0x50, 0x5e, &[0x44; 300]);
    assert_eq!(kind(40000, 1194, &v3), ProtocolType::OpenvpnHardReset);
}

#[test]
fn openvpn_near_misses_are_plain_udp() {
    let rest = [0, 0, 0, 0, 0];
    let near = [
        ("server reset", openvpn(0x40, 0x5e, &rest)),
        ("key id 1", openvpn(0x39, 0x5e, &rest)),
        ("zero session id", openvpn(0x38, 0, &rest)),
        ("ack count set", openvpn(0x38, 0x5e, &[1, 0, 0, 0, 0])),
        ("packet id set", openvpn(0x38, 0x5e, &[0, 0, 0, 0, 1])),
        ("15 bytes", openvpn(0x38, 0x5e, &[0, 0, 0, 0, 0, 0])),
        // A TLV after the packet-id is what a server's reset carries, not a client's.
        (
            "20 bytes",
            openvpn(0x38, 0x5e, &[0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 1]),
        ),
        ("V3 without port", openvpn(0x50, 0x5e, &rest)),
    ];
    for (what, p) in near {
        assert_eq!(kind(40000, 5000, &p), ProtocolType::Udp, "{what}");
    }
    assert_eq!(
        kind(40000, 1194, &openvpn(0x40, 0x5e, &rest)),
        ProtocolType::Udp
    );
}

#[test]
fn setup_types_are_the_connection_setups() {
    let setups: Vec<_> = (0..ProtocolType::BUILTIN)
        .filter_map(ProtocolType::builtin)
        .filter(|k| k.is_connection_setup())
        .map(ProtocolType::name)
        .collect();
    assert_eq!(
        setups,
        [
            "tcp_syn",
            "quic_initial",
            "wireguard_initiation",
            "ike_sa_init",
            "dtls_client_hello",
            "openvpn_hard_reset"
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Ordinary UDP that happens to open with a setup's first byte is not a setup.
    #[test]
    fn random_payloads_are_not_setups(
        first in prop::sample::select(vec![1u8, 22, 0x38, 0x50, 0xc0, 0xc3, 0xd0]),
        rest in proptest::collection::vec(any::<u8>(), 0..1400),
        ports in prop::sample::select(vec![(40000u16, 50000u16), (500, 500), (4500, 4500), (50000, 443)]),
    ) {
        let mut p = vec![first];
        p.extend(rest);
        let k = kind(ports.0, ports.1, &p);
        prop_assert!(!k.is_connection_setup(), "{:?} from {:?}", k, p);
    }
}
