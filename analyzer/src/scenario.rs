//! Seeded generators of labelled captures: the bundled demo and the detector scenarios.
//!
//! Every scenario is deterministic for a given seed, so a capture can be regenerated
//! byte for byte and its ground truth checked against what tapwatch reports.
use std::io::Write;
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use tapwatch_capture::{LinkType, PcapWriter};

/// Names of the scenarios [`generate`] knows.
pub const NAMES: [&str; 1] = ["demo"];

/// A small, fast, seedable PRNG (SplitMix64): scenarios must not depend on a crate's
/// stream staying the same across versions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes frames to a pcap in timestamp order (frames may be pushed out of order).
pub struct CaptureBuilder {
    frames: Vec<(u64, Vec<u8>)>,
}

/// Bytes kept of each generated frame: every header tapwatch reads and the first payload
/// bytes its labels look at, as a header-only mirror capture would keep.
pub const SNAPLEN: u32 = 160;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

impl Default for CaptureBuilder {
    fn default() -> Self {
        CaptureBuilder::new()
    }
}

impl CaptureBuilder {
    /// An empty capture.
    pub fn new() -> CaptureBuilder {
        CaptureBuilder { frames: Vec::new() }
    }

    /// Number of frames so far.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was added.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// A TCP segment over Ethernet/IPv4 with `flags` (FIN 1, SYN 2, RST 4, PSH 8, ACK 16).
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &mut self,
        ts_ns: u64,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) {
        let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, seq, 64240);
        if flags & 0x01 != 0 {
            b = b.fin();
        }
        if flags & 0x02 != 0 {
            b = b.syn();
        }
        if flags & 0x04 != 0 {
            b = b.rst();
        }
        if flags & 0x08 != 0 {
            b = b.psh();
        }
        if flags & 0x10 != 0 {
            b = b.ack(ack);
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut out, payload).is_ok() {
            self.frames.push((ts_ns, out));
        }
    }

    /// A UDP datagram over Ethernet/IPv4, optionally 802.1Q-tagged.
    pub fn udp(
        &mut self,
        ts_ns: u64,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        vlan: Option<u16>,
        payload: &[u8],
    ) {
        let mut out = Vec::with_capacity(payload.len() + 64);
        let res = match vlan {
            Some(id) => {
                let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
                    .single_vlan(id.try_into().unwrap_or_default())
                    .ipv4(src.0.octets(), dst.0.octets(), 64)
                    .udp(src.1, dst.1);
                b.write(&mut out, payload)
            }
            None => {
                let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
                    .ipv4(src.0.octets(), dst.0.octets(), 64)
                    .udp(src.1, dst.1);
                b.write(&mut out, payload)
            }
        };
        if res.is_ok() {
            self.frames.push((ts_ns, out));
        }
    }

    /// An ICMP echo request over Ethernet/IPv4.
    pub fn ping(&mut self, ts_ns: u64, src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src.octets(), dst.octets(), 64)
            .icmpv4_echo_request(id, seq);
        let mut out = Vec::new();
        if b.write(&mut out, &[0u8; 32]).is_ok() {
            self.frames.push((ts_ns, out));
        }
    }

    /// Sorts by time and writes a nanosecond pcap.
    pub fn write(mut self, out: impl Write) -> std::io::Result<usize> {
        self.frames.sort_by_key(|f| f.0);
        let mut w = PcapWriter::new(out, LinkType::Ethernet, SNAPLEN)?;
        for (ts, data) in &self.frames {
            w.write(*ts, data)?;
        }
        w.finish()?;
        Ok(self.frames.len())
    }
}

/// A BFD control packet (RFC 5880), state Up unless given.
pub fn bfd_control(
    state: u8,
    detect_mult: u8,
    my_disc: u32,
    your_disc: u32,
    interval_us: u32,
) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0] = 1 << 5;
    p[1] = (state & 3) << 6;
    p[2] = detect_mult;
    p[3] = 24;
    p[4..8].copy_from_slice(&my_disc.to_be_bytes());
    p[8..12].copy_from_slice(&your_disc.to_be_bytes());
    p[12..16].copy_from_slice(&interval_us.to_be_bytes());
    p[16..20].copy_from_slice(&interval_us.to_be_bytes());
    p
}

/// A minimal TLS record header followed by filler (content is never inspected beyond it).
pub fn tls_record(content_type: u8, len: usize) -> Vec<u8> {
    let mut v = vec![content_type, 3, 3, (len >> 8) as u8, len as u8];
    v.resize(5 + len, 0x17);
    v
}

/// Start of every generated capture: 2026-01-01T00:00:00Z.
pub const EPOCH_NS: u64 = 1_767_225_600_000_000_000;

/// Generates scenario `name` with `seed`; returns the builder to write out.
pub fn generate(name: &str, seed: u64) -> Option<CaptureBuilder> {
    match name {
        "demo" => Some(demo(seed)),
        _ => None,
    }
}

/// The bundled demo: a minute of benign relay traffic from three tenants — TCP sessions
/// with TLS, DNS, a BFD session at 300 ms, QUIC, pings and a VLAN-tagged subnet.
fn demo(seed: u64) -> CaptureBuilder {
    let mut rng = Rng::new(seed);
    let mut c = CaptureBuilder::new();
    let relay = Ipv4Addr::new(192, 0, 2, 10);
    let tenants = [(10u8, 1u8, 12u32), (10, 2, 6), (10, 3, 3)];
    let ms = 1_000_000u64;
    for (a, b, nodes) in tenants {
        for n in 0..nodes {
            let node = Ipv4Addr::new(a, b, 0, (n + 10) as u8);
            let mut t = EPOCH_NS + rng.below(5_000) * ms;
            while t < EPOCH_NS + 60_000 * ms {
                // One TLS session: handshake, a few records, close.
                let port = 32768 + rng.below(28000) as u16;
                let seq = rng.next_u64() as u32;
                let rseq = rng.next_u64() as u32;
                let cli = (node, port);
                let srv = (relay, 443);
                let rtt = (2 + rng.below(8)) * ms;
                c.tcp(t, cli, srv, 0x02, seq, 0, &[]);
                c.tcp(t + rtt / 2, srv, cli, 0x12, rseq, seq + 1, &[]);
                c.tcp(t + rtt, cli, srv, 0x10, seq + 1, rseq + 1, &[]);
                c.tcp(
                    t + rtt + ms,
                    cli,
                    srv,
                    0x18,
                    seq + 1,
                    rseq + 1,
                    &tls_record(22, 300),
                );
                c.tcp(
                    t + 2 * rtt,
                    srv,
                    cli,
                    0x18,
                    rseq + 1,
                    seq + 306,
                    &tls_record(22, 900),
                );
                let records = 2 + rng.below(6);
                let mut tt = t + 3 * rtt;
                for _ in 0..records {
                    let len = 100 + rng.below(1200) as usize;
                    c.tcp(
                        tt,
                        cli,
                        srv,
                        0x18,
                        seq + 306,
                        rseq + 906,
                        &tls_record(23, len),
                    );
                    c.tcp(tt + rtt / 2, srv, cli, 0x10, rseq + 906, seq + 306, &[]);
                    tt += (20 + rng.below(200)) * ms;
                }
                c.tcp(tt, cli, srv, 0x11, seq + 306, rseq + 906, &[]);
                c.tcp(tt + rtt / 2, srv, cli, 0x11, rseq + 906, seq + 307, &[]);
                // DNS lookup now and then, on VLAN 100 for the third tenant.
                if rng.below(3) == 0 {
                    let vlan = (b == 3).then_some(100);
                    let q = [
                        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p',
                        b'l', b'e', 0, 0, 1, 0, 1,
                    ];
                    c.udp(
                        t - 5 * ms,
                        (node, 40000 + n as u16),
                        (Ipv4Addr::new(192, 0, 2, 53), 53),
                        vlan,
                        &q,
                    );
                }
                t = tt + (500 + rng.below(4_000)) * ms;
            }
        }
    }
    // A BFD session between two routers at 300 ms, jittered 0-25 % below the interval.
    let (r1, r2) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    let mut t = EPOCH_NS;
    while t < EPOCH_NS + 60_000 * ms {
        c.udp(
            t,
            (r1, 49152),
            (r2, 3784),
            None,
            &bfd_control(3, 3, 1, 2, 300_000),
        );
        c.udp(
            t + 3 * ms,
            (r2, 49153),
            (r1, 3784),
            None,
            &bfd_control(3, 3, 2, 1, 300_000),
        );
        t += 300 * ms - rng.below(75) * ms;
    }
    // QUIC initial packets and pings from the monitoring host.
    let mon = Ipv4Addr::new(198, 51, 100, 7);
    for i in 0..60u64 {
        let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
        quic.resize(1200, 0);
        c.udp(
            EPOCH_NS + i * 1000 * ms + 17 * ms,
            (mon, 50000 + i as u16),
            (relay, 443),
            None,
            &quic,
        );
        c.ping(EPOCH_NS + i * 1000 * ms, mon, relay, 7, i as u16);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        generate("demo", 7).unwrap().write(&mut a).unwrap();
        generate("demo", 7).unwrap().write(&mut b).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        generate("demo", 8).unwrap().write(&mut c).unwrap();
        assert_ne!(a, c);
        assert!(generate("nope", 1).is_none());
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[r.below(10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (9_000..11_000).contains(b)),
            "{buckets:?}"
        );
    }
}
