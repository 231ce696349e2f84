//! Seeded generators of labelled captures: the bundled demo and the detector scenarios,
//! and a long benign [`soak`] streamed in chunks.
//!
//! Every scenario is deterministic for a given seed, so a capture can be regenerated
//! byte for byte and its ground truth checked against what tapwatch reports. Used by
//! `tapwatch scenario`, the end-to-end tests, the analyzer's own scenario tests and the
//! benchmarks.
//!
//! ```
//! let s = tapwatch_synth::generate("bfd_silence", 1).unwrap();
//! assert_eq!(s.expected[0].kind, "missed_heartbeat");
//! let mut pcap = Vec::new();
//! let frames = s.capture.write(&mut pcap).unwrap();
//! assert!(frames > 100);
//! assert_eq!(tapwatch_synth::classifier().tenants().names()[0], "unassigned");
//! ```
#![deny(missing_docs)]
use std::io::Write;
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use tapwatch_capture::{LinkType, PcapWriter};

pub mod flow_health;
mod latency;
pub mod soak;
use flow_health::EcmpDrop;
pub use soak::{Soak, SoakParams};

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
pub const SNAPLEN: u32 = 128;

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
        self.tcp_ts(ts_ns, src, dst, flags, seq, ack, None, payload);
    }

    /// A TCP segment as [`CaptureBuilder::tcp`], with the timestamps option (TSval,
    /// TSecr) when given.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_ts(
        &mut self,
        ts_ns: u64,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        flags: u8,
        seq: u32,
        ack: u32,
        timestamps: Option<(u32, u32)>,
        payload: &[u8],
    ) {
        let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, seq, 64240);
        if let Some((tsval, tsecr)) = timestamps {
            let option = [etherparse::TcpOptionElement::Timestamp(tsval, tsecr)];
            match b.options(&option) {
                Ok(with) => b = with,
                Err(_) => return,
            }
        }
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

    /// An ICMP echo reply over Ethernet/IPv4.
    pub fn pong(&mut self, ts_ns: u64, src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(src.octets(), dst.octets(), 64)
            .icmpv4_echo_reply(id, seq);
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

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// Names of the scenarios [`generate`] knows.
pub const NAMES: [&str; 17] = [
    "demo",
    "benign",
    "heavy_hitter",
    "setup_growth",
    "bfd_silence",
    "keepalive_gap",
    "syn_retransmits",
    "response_shift",
    "echo_stall",
    "slow_rst",
    "tcp_rtt_step",
    "tenant_shift",
    "latency_benign",
    // flow health (issue 14)
    "traffic_drop",
    "retransmits",
    "upgrade_failure",
    "benign_flow_health",
];

/// The scenarios that must raise nothing.
pub const QUIET: [&str; 3] = ["benign", "latency_benign", "benign_flow_health"];

/// The tenants file every scenario is labelled with (also `data/demo.tenants.toml`).
pub const TENANTS_TOML: &str = r#"# Tenants of tapwatch's generated scenarios and of the bundled demo (data/demo.pcap).
# A source belongs to the tenant with the longest prefix covering it; others are "unassigned".

[[tenant]]
name = "acme"
prefixes = ["10.1.0.0/16", "2001:db8:1::/48"]

[[tenant]]
name = "globex"
prefixes = ["10.2.0.0/16"]

[[tenant]]
name = "initech"
prefixes = ["10.3.0.0/16"]

[[tenant]]
name = "bulk"
prefixes = ["10.4.0.0/16"]

[[tenant]]
name = "swarm"
prefixes = ["10.20.0.0/16"]

[[tenant]]
name = "steady"
prefixes = ["10.30.0.0/16"]

[[tenant]]
name = "gossip"
prefixes = ["10.50.0.0/16"]

[[tenant]]
name = "web"
prefixes = ["10.60.0.0/16"]

[[tenant]]
name = "infrastructure"
prefixes = ["192.0.2.0/24", "198.51.100.0/24"]
"#;

/// A classifier with the scenarios' tenants ([`TENANTS_TOML`]) and default settings.
pub fn classifier() -> tapwatch_classifier::Classifier {
    let tenants = tapwatch_classifier::TenantMap::parse(
        std::path::Path::new("scenario tenants"),
        TENANTS_TOML,
    )
    .expect("the scenario tenants parse");
    tapwatch_classifier::Classifier::new(tenants, &Default::default())
}

/// An alert a scenario must raise: kind, subject and when it may be detected.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// Alert kind (`heavy_hitter`, …).
    pub kind: String,
    /// Alert subject.
    pub subject: String,
    /// Tenant, if the alert names one.
    pub tenant: Option<String>,
    /// Earliest acceptable detection time (event time, ns).
    pub earliest_ns: u64,
    /// Latest acceptable detection time (event time, ns).
    pub latest_ns: u64,
    /// Why it must fire.
    pub why: String,
}

/// A generated scenario: its capture and the alerts it must (and must only) raise.
pub struct Scenario {
    /// The frames.
    pub capture: CaptureBuilder,
    /// Alerts that must fire; any other firing alert is a false positive.
    pub expected: Vec<Expected>,
}

/// Generates scenario `name` with `seed`.
pub fn generate(name: &str, seed: u64) -> Option<Scenario> {
    let mut rng = Rng::new(seed);
    let mut c = CaptureBuilder::new();
    let mut expected = Vec::new();
    let t0 = EPOCH_NS;
    match name {
        "benign" => benign(&mut c, &mut rng, t0, t0 + 150 * SEC),
        "heavy_hitter" => expected.extend(heavy_hitter(&mut c, &mut rng, t0, t0 + 90 * SEC, 1.0)),
        "setup_growth" => expected.extend(setup_growth(
            &mut c,
            &mut rng,
            t0,
            t0 + 240 * SEC,
            20.0,
            200.0,
        )),
        "bfd_silence" => expected.extend(bfd_silence(&mut c, &mut rng, t0, t0 + 60 * SEC)),
        "keepalive_gap" => expected.extend(keepalive_gap(&mut c, &mut rng, t0, t0 + 120 * SEC)),
        "syn_retransmits" => {
            expected.extend(syn_retransmits(&mut c, &mut rng, t0, t0 + 60 * SEC, 1.0))
        }
        "response_shift" => expected.extend(latency::response_shift(
            &mut c,
            &mut rng,
            t0,
            t0 + 180 * SEC,
        )),
        "echo_stall" => expected.extend(latency::echo_stall(&mut c, &mut rng, t0, t0 + 180 * SEC)),
        "slow_rst" => expected.extend(latency::slow_rst(&mut c, &mut rng, t0, t0 + 160 * SEC)),
        "tcp_rtt_step" => {
            expected.extend(latency::tcp_rtt_step(&mut c, &mut rng, t0, t0 + 160 * SEC))
        }
        "tenant_shift" => {
            expected.extend(latency::tenant_shift(&mut c, &mut rng, t0, t0 + 160 * SEC))
        }
        "latency_benign" => latency::latency_benign(&mut c, &mut rng, t0, t0 + 240 * SEC),
        // flow health (issue 14)
        "traffic_drop" => expected.extend(flow_health::ecmp_drop(
            &mut c,
            &mut rng,
            t0,
            t0 + 475 * SEC,
            EcmpDrop {
                members: 4,
                member_pps: 25.0,
                drop_at_s: 362.5,
                drop_s: 50.0,
            },
        )),
        "retransmits" => expected.extend(flow_health::retransmit_jump(
            &mut c,
            &mut rng,
            t0,
            t0 + 150 * SEC,
            73.0,
            0.03,
        )),
        "upgrade_failure" => expected.extend(flow_health::upgrade_failure(
            &mut c,
            &mut rng,
            t0,
            t0 + 180 * SEC,
            64.0,
            0.3,
            0.2,
        )),
        "benign_flow_health" => flow_health::benign(&mut c, &mut rng, t0, t0 + 487_300 * MS),
        "demo" => {
            // Every scenario at once, smaller, over one benign background, all ending together.
            let end = t0 + 150 * SEC;
            benign(&mut c, &mut rng, t0, end);
            expected.extend(heavy_hitter(&mut c, &mut rng, t0, end, 0.12));
            expected.extend(setup_growth(&mut c, &mut rng, t0, end, 10.0, 40.0));
            expected.extend(bfd_silence(&mut c, &mut rng, t0, end));
            expected.extend(keepalive_gap(&mut c, &mut rng, t0, end));
            expected.extend(syn_retransmits(&mut c, &mut rng, t0, end, 0.5));
        }
        _ => return None,
    }
    Some(Scenario {
        capture: c,
        expected,
    })
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// A complete TLS session from `cli` to `srv` starting at `t`; returns its end time.
fn tls_session(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t: u64,
    cli: (Ipv4Addr, u16),
    srv: (Ipv4Addr, u16),
) -> u64 {
    let seq = rng.next_u64() as u32;
    let rseq = rng.next_u64() as u32;
    let rtt = (2 + rng.below(8)) * MS;
    c.tcp(t, cli, srv, 0x02, seq, 0, &[]);
    c.tcp(t + rtt / 2, srv, cli, 0x12, rseq, seq.wrapping_add(1), &[]);
    c.tcp(
        t + rtt,
        cli,
        srv,
        0x10,
        seq.wrapping_add(1),
        rseq.wrapping_add(1),
        &[],
    );
    c.tcp(
        t + rtt + MS,
        cli,
        srv,
        0x18,
        seq.wrapping_add(1),
        rseq.wrapping_add(1),
        &tls_record(22, 300),
    );
    c.tcp(
        t + 2 * rtt,
        srv,
        cli,
        0x18,
        rseq.wrapping_add(1),
        seq.wrapping_add(306),
        &tls_record(22, 900),
    );
    let mut tt = t + 3 * rtt;
    for _ in 0..2 + rng.below(5) {
        c.tcp(
            tt,
            cli,
            srv,
            0x18,
            seq.wrapping_add(306),
            rseq.wrapping_add(906),
            &tls_record(23, 100 + rng.below(1200) as usize),
        );
        c.tcp(
            tt + rtt / 2,
            srv,
            cli,
            0x10,
            rseq.wrapping_add(906),
            seq.wrapping_add(306),
            &[],
        );
        tt += (20 + rng.below(200)) * MS;
    }
    c.tcp(
        tt,
        cli,
        srv,
        0x11,
        seq.wrapping_add(306),
        rseq.wrapping_add(906),
        &[],
    );
    c.tcp(
        tt + rtt / 2,
        srv,
        cli,
        0x11,
        rseq.wrapping_add(906),
        seq.wrapping_add(307),
        &[],
    );
    tt + rtt
}

/// Benign relay traffic: three tenants' TLS sessions, DNS (one tenant on VLAN 100), steady
/// BFD at 300 ms, steady 2 s keepalives, QUIC initials and pings. Raises nothing.
fn benign(c: &mut CaptureBuilder, rng: &mut Rng, t0: u64, end: u64) {
    let duration = end - t0;
    let relay = ip(192, 0, 2, 10);
    for (b, nodes) in [(1u8, 12u32), (2, 6), (3, 3)] {
        for n in 0..nodes {
            let node = ip(10, b, 0, (n + 10) as u8);
            let mut t = t0 + rng.below(5_000) * MS;
            while t < t0 + duration {
                let port = 32768 + rng.below(28000) as u16;
                let end = tls_session(c, rng, t, (node, port), (relay, 443));
                if rng.below(3) == 0 {
                    let q = [
                        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p',
                        b'l', b'e', 0, 0, 1, 0, 1,
                    ];
                    c.udp(
                        t.saturating_sub(5 * MS),
                        (node, 40000 + n as u16),
                        (ip(192, 0, 2, 53), 53),
                        (b == 3).then_some(100),
                        &q,
                    );
                }
                t = end + (2_000 + rng.below(6_000)) * MS;
            }
        }
    }
    // A steady BFD session between two routers at 300 ms (jitter 0-25 % below).
    let (r1, r2) = (ip(192, 0, 2, 1), ip(192, 0, 2, 2));
    let mut t = t0;
    while t < t0 + duration {
        c.udp(
            t,
            (r1, 49152),
            (r2, 3784),
            None,
            &bfd_control(3, 3, 1, 2, 300_000),
        );
        c.udp(
            t + 3 * MS,
            (r2, 49153),
            (r1, 3784),
            None,
            &bfd_control(3, 3, 2, 1, 300_000),
        );
        t += 300 * MS - rng.below(75) * MS;
    }
    // Steady 2 s keepalives from four acme nodes to a coordinator.
    for n in 0..4u8 {
        let mut t = t0 + rng.below(2_000) * MS;
        while t < t0 + duration {
            c.udp(
                t,
                (ip(10, 1, 100, n + 1), 7000),
                (ip(192, 0, 2, 20), 7000),
                None,
                b"ping",
            );
            t += 2 * SEC - 20 * MS + rng.below(40) * MS;
        }
    }
    // QUIC initials and pings from a monitoring host, once a second.
    let mon = ip(198, 51, 100, 7);
    for i in 0..duration / SEC {
        let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
        quic.resize(1200, 0);
        c.udp(
            t0 + i * SEC + 17 * MS,
            (mon, 50000 + i as u16),
            (relay, 443),
            None,
            &quic,
        );
        c.ping(t0 + i * SEC, mon, relay, 7, i as u16);
    }
}

/// Skewed background from many "bulk" sources, then a new source floods ~100-byte control
/// packets at a multiple of the whole background rate.
fn heavy_hitter(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    scale: f64,
) -> Vec<Expected> {
    let relay = (ip(192, 0, 2, 10), 9000);
    let duration = end - t0;
    let background_pps = 250.0 * scale;
    let step = (1e9 / background_pps) as u64;
    let mut t = t0;
    while t < t0 + duration {
        // Zipf-like ranks over 2000 sources.
        let rank = (2000f64.powf(rng.unit())) as u32;
        let src = ip(10, 4, (rank >> 8) as u8, rank as u8);
        let len = 200 + rng.below(900) as usize;
        c.udp(t, (src, 5000), relay, None, &vec![0u8; len]);
        t += step / 2 + rng.below(step);
    }
    let flooder = ip(203, 0, 113, 66);
    let start = t0 + duration / 2 + 300 * MS;
    let flood_pps = (1200.0 * scale).max(400.0);
    let fstep = (1e9 / flood_pps) as u64;
    let mut t = start;
    while t < start + 15 * SEC {
        c.udp(
            t,
            (flooder, 6000 + rng.below(8) as u16),
            relay,
            None,
            &[0x5a; 58],
        );
        t += fstep / 2 + rng.below(fstep);
    }
    vec![Expected {
        kind: "heavy_hitter".into(),
        subject: flooder.to_string(),
        tenant: Some("unassigned".into()),
        earliest_ns: start,
        latest_ns: start + 2 * SEC,
        why: format!("{flooder} starts sending {flood_pps:.0} pps of 100-byte packets, several times all other traffic"),
    }]
}

/// Tenant "swarm" grows from tens to hundreds of nodes, each node connecting to a share of
/// its peers through the relay: setups grow with nodes². Tenant "steady" grows alike but
/// each node opens a fixed number of connections: setups grow linearly.
fn setup_growth(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    nodes_from: f64,
    nodes_to: f64,
) -> Vec<Expected> {
    let relay = ip(192, 0, 2, 10);
    let points = (end - t0) / (10 * SEC);
    // Each swarm node connects to a share of its peers: setups = coeff·n², at least 2 per node.
    let coeff = (2.0 / nodes_from).max(0.1);
    for p in 0..points {
        let nodes =
            (nodes_from + (nodes_to - nodes_from) * p as f64 / (points - 1).max(1) as f64) as u32;
        for (b, setups) in [
            (20u8, coeff * f64::from(nodes) * f64::from(nodes)),
            (30u8, 4.0 * f64::from(nodes)),
        ] {
            for k in 0..setups as u32 {
                let node = 10 + k % nodes;
                let src = ip(10, b, (node >> 8) as u8, node as u8);
                let t = t0 + p * 10 * SEC + rng.below(10 * SEC - 50 * MS);
                let port = 20000 + rng.below(40000) as u16;
                let seq = rng.next_u64() as u32;
                c.tcp(t, (src, port), (relay, 443), 0x02, seq, 0, &[]);
                c.tcp(
                    t + 3 * MS,
                    (relay, 443),
                    (src, port),
                    0x12,
                    7,
                    seq.wrapping_add(1),
                    &[],
                );
            }
        }
    }
    vec![Expected {
        kind: "quadratic_setup_growth".into(),
        subject: "swarm".into(),
        tenant: Some("swarm".into()),
        earliest_ns: t0 + 50 * SEC,
        latest_ns: end + 10 * SEC,
        why: "swarm's setups per window grow with the square of its active nodes; steady's grow linearly and must not fire".into(),
    }]
}

/// Two BFD sessions at 400 ms, detect multiplier 3, with RFC 5880 jitter; one direction of
/// one session falls silent for 1.3 s (longer than its 1.2 s detection time).
fn bfd_silence(c: &mut CaptureBuilder, rng: &mut Rng, t0: u64, end: u64) -> Vec<Expected> {
    let (a, b) = (ip(198, 51, 100, 1), ip(198, 51, 100, 2));
    let (x, y) = (ip(198, 51, 100, 3), ip(198, 51, 100, 4));
    let duration = end - t0;
    let silence_after = t0 + duration / 2;
    let mut last_before = 0;
    let mut resume = 0;
    for (src, dst, sport, my, your, silent) in [
        (a, b, 49160u16, 11u32, 12u32, true),
        (b, a, 49161, 12, 11, false),
        (x, y, 49162, 21, 22, false),
        (y, x, 49163, 22, 21, false),
    ] {
        let mut t = t0 + rng.below(400) * MS;
        while t < t0 + duration {
            if silent && t >= silence_after && resume == 0 {
                resume = last_before + 1300 * MS + rng.below(100) * MS;
                t = resume;
            }
            c.udp(
                t,
                (src, sport),
                (dst, 3784),
                None,
                &bfd_control(3, 3, my, your, 400_000),
            );
            if silent && resume == 0 {
                last_before = t;
            }
            // RFC 5880 §6.8.7: transmit intervals are 75-100 % of the negotiated interval.
            t += 300 * MS + rng.below(100) * MS;
        }
    }
    vec![Expected {
        kind: "missed_heartbeat".into(),
        subject: format!("{a}:49160->{b}:3784/udp"),
        tenant: Some("infrastructure".into()),
        earliest_ns: last_before + 1200 * MS,
        latest_ns: last_before + 1250 * MS,
        why: "BFD 198.51.100.1 -> .2 falls silent for 1.3 s; detection time is 3 x 400 ms".into(),
    }]
}

/// Keepalives every 5 s from four "gossip" nodes; one stops for 20 s.
fn keepalive_gap(c: &mut CaptureBuilder, rng: &mut Rng, t0: u64, end: u64) -> Vec<Expected> {
    let coordinator = (ip(192, 0, 2, 30), 7946);
    let duration = end - t0;
    let mut expected = Vec::new();
    for n in 1..=4u8 {
        let src = ip(10, 50, 0, n);
        let mut t = t0 + rng.below(5_000) * MS;
        let mut stopped = false;
        while t < t0 + duration {
            c.udp(t, (src, 7946), coordinator, None, b"alive");
            let mut next = t + 5 * SEC - 50 * MS + rng.below(100) * MS;
            if n == 3 && !stopped && t > t0 + duration / 2 {
                stopped = true;
                expected.push(Expected {
                    kind: "missed_heartbeat".into(),
                    subject: format!("{src}:7946->{}:7946/udp", coordinator.0),
                    tenant: Some("gossip".into()),
                    earliest_ns: t + 14 * SEC,
                    latest_ns: t + 16 * SEC,
                    why: "a 5 s keepalive stops for 20 s; late after 3 periods".into(),
                });
                next = t + 20 * SEC;
            }
            t = next;
        }
    }
    expected
}

/// Clients connect to a web server; for 20 s the server drops half the SYNs and clients
/// retransmit them after 1 s, 3 s and 7 s as Linux does.
fn syn_retransmits(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    scale: f64,
) -> Vec<Expected> {
    let server = (ip(192, 0, 2, 80), 443);
    let duration = end - t0;
    let rate = 20.0 * scale;
    let step = (1e9 / rate) as u64;
    let drop_from = t0 + duration / 2 - 10 * SEC;
    let drop_to = drop_from + 20 * SEC;
    let mut t = t0;
    while t + 8 * SEC < t0 + duration {
        let client = ip(10, 60, rng.below(4) as u8, 10 + rng.below(200) as u8);
        let port = 30000 + rng.below(30000) as u16;
        let seq = rng.next_u64() as u32;
        let mut at = t;
        let dropping = (drop_from..drop_to).contains(&t);
        let mut answered = false;
        for backoff in [0u64, 1, 2, 4] {
            at += backoff * SEC;
            c.tcp(at, (client, port), server, 0x02, seq, 0, &[]);
            if !dropping || rng.below(2) == 0 {
                answered = true;
                break;
            }
        }
        if answered {
            c.tcp(
                at + 2 * MS,
                server,
                (client, port),
                0x12,
                99,
                seq.wrapping_add(1),
                &[],
            );
            c.tcp(
                at + 3 * MS,
                (client, port),
                server,
                0x10,
                seq.wrapping_add(1),
                100,
                &[],
            );
        }
        t += step / 2 + rng.below(step);
    }
    vec![Expected {
        kind: "syn_retransmits".into(),
        subject: format!("{}:{}/tcp", server.0, server.1),
        tenant: Some("infrastructure".into()),
        earliest_ns: drop_from,
        latest_ns: drop_to + 20 * SEC,
        why: "the server drops half of its SYNs for 20 s; clients retransmit".into(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        generate("bfd_silence", 7)
            .unwrap()
            .capture
            .write(&mut a)
            .unwrap();
        generate("bfd_silence", 7)
            .unwrap()
            .capture
            .write(&mut b)
            .unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        generate("bfd_silence", 8)
            .unwrap()
            .capture
            .write(&mut c)
            .unwrap();
        assert_ne!(a, c);
        assert!(generate("nope", 1).is_none());
        for name in NAMES {
            let s = generate(name, 1).unwrap();
            assert!(!s.capture.is_empty(), "{name}");
            assert_eq!(s.expected.is_empty(), QUIET.contains(&name), "{name}");
        }
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
