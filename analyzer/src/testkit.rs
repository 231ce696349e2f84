//! Hand-made packets for unit tests: time is whatever the test says.
use std::net::{IpAddr, Ipv4Addr};

use tapwatch_classifier::{PacketMeta, ProtocolType};

/// Nanoseconds in a second.
pub const SEC: u64 = 1_000_000_000;

/// `10.0.0.n`.
pub fn addr(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

/// A UDP datagram of `len` wire bytes.
pub fn udp(ts_ns: u64, src: (IpAddr, u16), dst: (IpAddr, u16), len: u32) -> PacketMeta {
    let mut m = PacketMeta::empty(ts_ns, len, len, 0);
    m.kind = ProtocolType::Udp;
    m.ip_proto = 17;
    m.src = Some(src.0);
    m.dst = Some(dst.0);
    m.src_port = src.1;
    m.dst_port = dst.1;
    m
}

/// A TCP segment of kind `kind` with sequence and acknowledgement numbers.
pub fn tcp(
    ts_ns: u64,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    kind: ProtocolType,
    seq: u32,
    ack: u32,
) -> PacketMeta {
    let mut m = udp(ts_ns, src, dst, 60);
    m.kind = kind;
    m.ip_proto = 6;
    m.tcp_seq = seq;
    m.tcp_ack = ack;
    m.tcp_flags = match kind {
        ProtocolType::TcpSyn => 0x02,
        ProtocolType::TcpSynAck => 0x12,
        ProtocolType::TcpRst => 0x04,
        ProtocolType::TcpFin => 0x11,
        _ => 0x10,
    };
    m
}
