use tapwatch_classifier::ProtocolType;

use super::flows::{FlowTable, Segment};
use super::*;
use crate::testkit::{addr, tcp, SEC};

const T: u64 = 1_000 * SEC;
const CLIENT: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 50000);

fn server() -> (IpAddr, u16) {
    (addr(2), 443)
}

/// A segment with `len` payload bytes at `t` tenths of a second.
fn seg(t: u64, from: (IpAddr, u16), to: (IpAddr, u16), seq: u32, len: u32) -> PacketMeta {
    let mut m = tcp(T + t * SEC / 10, from, to, ProtocolType::TcpData, seq, 1);
    m.payload_len = len;
    m.tcp_window = 500;
    m
}

/// [`FlowTable::observe`] with the packet's flow hash.
fn observe(f: &mut FlowTable, m: &PacketMeta) -> Option<((IpAddr, u16), bool, Segment, u64)> {
    f.observe(m, crate::detect::PacketHashes::of(m).flow, 0)
}

fn what(f: &mut FlowTable, m: &PacketMeta) -> Segment {
    observe(f, m).expect("tcp").2
}

#[test]
fn data_sent_again_is_a_retransmission_new_data_and_probes_are_not() {
    let mut f = FlowTable::new(&RetransmitConfig::default());
    let syn = tcp(T, CLIENT, server(), ProtocolType::TcpSyn, 99, 0);
    assert_eq!(
        observe(&mut f, &syn).map(|r| (r.0, r.1)),
        Some((server(), false))
    );
    assert_eq!(
        what(&mut f, &seg(1, server(), CLIENT, 1000, 100)),
        Segment::Plain
    );
    assert_eq!(
        what(&mut f, &seg(2, server(), CLIENT, 1100, 100)),
        Segment::Plain
    );
    let again = seg(3, server(), CLIENT, 1000, 100);
    assert_eq!(
        observe(&mut f, &again),
        Some((server(), true, Segment::Retransmit, 1))
    );
    assert_eq!(
        what(&mut f, &seg(4, server(), CLIENT, 1100, 100)),
        Segment::Retransmit
    );
    // Keep-alive: one byte at highest − 1.
    assert_eq!(
        what(&mut f, &seg(5, server(), CLIENT, 1199, 1)),
        Segment::Probe
    );
    // The client's data has its own sequence space.
    assert_eq!(
        what(&mut f, &seg(6, CLIENT, server(), 100, 50)),
        Segment::Plain
    );
    // Zero-window probes while the client advertises a zero window.
    let mut zw = seg(7, CLIENT, server(), 150, 0);
    zw.tcp_window = 0;
    assert_eq!(what(&mut f, &zw), Segment::Plain);
    assert_eq!(
        what(&mut f, &seg(8, server(), CLIENT, 1200, 1)),
        Segment::Plain
    );
    assert_eq!(
        what(&mut f, &seg(9, server(), CLIENT, 1200, 1)),
        Segment::Probe
    );
    assert_eq!(f.len(), 1, "both directions in one entry");
}

#[test]
fn reordering_and_already_acknowledged_data() {
    let mut f = FlowTable::new(&RetransmitConfig::default());
    assert_eq!(
        what(&mut f, &seg(0, server(), CLIENT, 1100, 100)),
        Segment::Plain
    );
    let mut early = seg(0, server(), CLIENT, 1000, 100);
    early.ts_ns += 1_000_000;
    assert_eq!(
        what(&mut f, &early),
        Segment::Plain,
        "1 ms later: reordered"
    );
    // The client acknowledges up to 5000: the server's data below it was sent before.
    let mut ack = seg(1, CLIENT, server(), 1, 0);
    ack.tcp_ack = 5000;
    what(&mut f, &ack);
    assert_eq!(
        what(&mut f, &seg(2, server(), CLIENT, 4000, 1000)),
        Segment::Retransmit
    );
}

#[test]
fn sequence_numbers_wrap_and_duplicate_acks_are_counted() {
    let mut f = FlowTable::new(&RetransmitConfig::default());
    let near = u32::MAX - 50;
    assert_eq!(
        what(&mut f, &seg(0, CLIENT, server(), near, 100)),
        Segment::Plain
    );
    assert_eq!(
        what(
            &mut f,
            &seg(1, CLIENT, server(), near.wrapping_add(100), 100)
        ),
        Segment::Plain
    );
    assert_eq!(
        what(&mut f, &seg(2, CLIENT, server(), near, 100)),
        Segment::Retransmit
    );
    let ack = |t| {
        let mut m = seg(t, server(), CLIENT, 7, 0);
        m.tcp_ack = 42;
        m
    };
    assert_eq!(what(&mut f, &ack(3)), Segment::Plain);
    assert_eq!(what(&mut f, &ack(4)), Segment::DupAck);
    // Without a handshake the lower port listens.
    assert_eq!(observe(&mut f, &ack(5)).map(|r| r.0), Some(server()));
}

/// A table of one bucket: two flows.
fn one_bucket() -> FlowTable {
    FlowTable::new(&RetransmitConfig {
        max_flows: 2,
        ..RetransmitConfig::default()
    })
}

#[test]
fn a_full_bucket_replaces_its_older_flow_and_counts_a_live_one() {
    let mut f = one_bucket();
    for n in 0..3u16 {
        observe(
            &mut f,
            &seg(u64::from(n), (addr(1), 40000 + n), server(), 1, 10),
        );
    }
    assert_eq!((f.len(), f.evicted), (2, 1));
    let syn = tcp(T + SEC, (addr(9), 1), server(), ProtocolType::TcpSyn, 1, 0);
    assert_eq!(
        observe(&mut f, &syn),
        None,
        "a bare SYN does not push out a live flow"
    );
    assert_eq!((f.len(), f.evicted), (2, 2));
}

#[test]
fn segments_and_retransmissions_are_counted_per_server_in_the_window() {
    let mut r = RetransmitTracker::new(&RetransmitConfig::default());
    let mut w = WindowStats::new(T, T + 10 * SEC, 16, 16, 16, 32);
    let labels = Labels::default();
    for (t, seq) in [(0, 1000), (1, 1100), (2, 1000), (3, 1000)] {
        let m = seg(t, server(), CLIENT, seq, 100);
        r.packet(
            &m,
            &crate::detect::PacketHashes::of(&m),
            Some(&mut w),
            &labels,
            &mut Vec::new(),
        );
    }
    let h = &w.health[&server()];
    assert_eq!(
        (
            h.segments,
            h.retransmits_from_server,
            h.retransmits_to_server
        ),
        (4, 2, 0)
    );
    assert_eq!(
        h.worst[0].map(|(f, n)| (f.0, f.2, n)),
        Some((CLIENT.0, server().0, 2))
    );
}

/// Base window `i` (10 s) with `segments` and `re` retransmissions at the server.
fn base(i: u64, segments: u64, re: u64) -> WindowStats {
    let mut w = WindowStats::new(i * 10 * SEC, (i + 1) * 10 * SEC, 16, 16, 16, 32);
    let h = w.health_of(server()).expect("room");
    h.segments = segments;
    h.retransmits_from_server = re;
    h.dup_acks = re / 2;
    w
}

fn feed(d: &mut Retransmits, from: u64, to: u64, f: impl Fn(u64) -> (u64, u64)) -> Vec<Finding> {
    let mut out = Vec::new();
    for i in from..to {
        let (s, r) = f(i);
        d.window(&base(i, s, r), &TenantMap::default(), &mut out);
    }
    out
}

#[test]
fn a_jump_from_nothing_fires_and_resolves() {
    let mut d = Retransmits::new(RetransmitConfig::default());
    assert!(feed(&mut d, 0, 10, |_| (1000, 0)).is_empty());
    let out = feed(&mut d, 10, 12, |_| (1000, 40));
    assert_eq!(out.len(), 1, "{out:?}");
    let f = &out[0];
    assert!(f.active);
    assert_eq!(
        (f.subject.as_str(), f.severity, f.detected_ns),
        ("10.0.0.2:443/tcp", Severity::Warning, 110 * SEC)
    );
    let Evidence::Retransmits(e) = &f.evidence else {
        panic!()
    };
    assert_eq!(
        (e.retransmits_from_server, e.segments, e.dup_acks),
        (40, 1000, 20)
    );
    let out = feed(&mut d, 12, 14, |_| (1000, 0));
    assert_eq!(out.iter().filter(|f| !f.active).count(), 1, "{out:?}");
}

#[test]
fn a_steady_low_level_few_or_a_new_server_do_not_fire() {
    let mut steady = Retransmits::new(RetransmitConfig::default());
    assert!(
        feed(&mut steady, 0, 40, |i| (1000, 20 + (i % 3) * 10)).is_empty(),
        "2-4 % is its normal"
    );
    let mut few = Retransmits::new(RetransmitConfig::default());
    assert!(feed(&mut few, 0, 40, |i| (100, if i > 10 { 4 } else { 0 })).is_empty());
    let mut new = Retransmits::new(RetransmitConfig::default());
    assert!(
        feed(&mut new, 0, 3, |_| (1000, 100)).is_empty(),
        "no baseline yet"
    );
}

/// Flows sharing a bucket (the whole table here) keep their own sequence state and report
/// their own server, in both directions: an entry is found by its flow's hash alone.
#[test]
fn flows_in_one_bucket_keep_their_own_state() {
    let mut f = one_bucket();
    let other = (addr(3), 8443);
    // Both servers send the same sequence numbers, one after the other.
    for (t, srv) in [(1, server()), (2, other)] {
        assert_eq!(
            observe(&mut f, &seg(t, srv, CLIENT, 1000, 100)).map(|r| (r.0, r.2)),
            Some((srv, Segment::Plain)),
            "first data of {srv:?}"
        );
    }
    assert_eq!(
        observe(&mut f, &seg(3, other, CLIENT, 1100, 100)).map(|r| (r.0, r.2)),
        Some((other, Segment::Plain))
    );
    // The client's side of the first flow: new data there, whatever the other flow sent.
    assert_eq!(
        observe(&mut f, &seg(4, CLIENT, server(), 7, 50)).map(|r| (r.0, r.1, r.2)),
        Some((server(), false, Segment::Plain))
    );
    assert_eq!(
        observe(&mut f, &seg(5, server(), CLIENT, 1000, 100)).map(|r| (r.0, r.2)),
        Some((server(), Segment::Retransmit))
    );
    assert_eq!(
        what(&mut f, &seg(6, server(), CLIENT, 1100, 100)),
        Segment::Plain,
        "the other flow's 1100 is not this one's"
    );
    assert_eq!((f.len(), f.evicted), (2, 0));
}
