//! Datagrams built by hand for every sample and record type tapwatch reads, and for
//! truncated and lying lengths; random bytes never panic.
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::LinkType;

/// XDR encoding of the parts of a datagram.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u32(mut self, v: u32) -> Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    fn u64(self, v: u64) -> Enc {
        self.u32((v >> 32) as u32).u32(v as u32)
    }

    fn opaque(mut self, b: &[u8]) -> Enc {
        self.0.extend_from_slice(b);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    /// A sample or record: format word, length, body.
    fn item(self, enterprise: u32, format: u32, body: &[u8]) -> Enc {
        self.u32(enterprise << 12 | format)
            .u32(body.len() as u32)
            .opaque(body)
    }
}

fn header(agent: IpAddr, seq: u32, samples: u32) -> Enc {
    let e = Enc::default().u32(5);
    let e = match agent {
        IpAddr::V4(a) => e.u32(1).opaque(&a.octets()),
        IpAddr::V6(a) => e.u32(2).opaque(&a.octets()),
    };
    e.u32(7).u32(seq).u32(123_456).u32(samples)
}

fn raw_header(protocol: u32, frame_length: u32, stripped: u32, bytes: &[u8]) -> Vec<u8> {
    Enc::default()
        .u32(protocol)
        .u32(frame_length)
        .u32(stripped)
        .u32(bytes.len() as u32)
        .opaque(bytes)
        .0
}

/// A compact flow sample (format 1) of `records` (already encoded as items).
fn flow_sample(seq: u32, rate: u32, input: u32, records: &[Vec<u8>]) -> Vec<u8> {
    let mut e = Enc::default()
        .u32(seq)
        .u32(3) // source: ifIndex 3
        .u32(rate)
        .u32(seq * rate)
        .u32(2) // drops
        .u32(input)
        .u32(9)
        .u32(records.len() as u32);
    for r in records {
        e.0.extend_from_slice(r);
    }
    e.0
}

/// An expanded flow sample (format 3).
fn expanded_flow_sample(seq: u32, rate: u32, input: u32, records: &[Vec<u8>]) -> Vec<u8> {
    let mut e = Enc::default()
        .u32(seq)
        .u32(0)
        .u32(70_000) // an ifIndex above 2^16: why the expanded form exists
        .u32(rate)
        .u32(seq * rate)
        .u32(0)
        .u32(0)
        .u32(input)
        .u32(0)
        .u32(10)
        .u32(records.len() as u32);
    for r in records {
        e.0.extend_from_slice(r);
    }
    e.0
}

fn interface_counters(if_index: u32) -> Vec<u8> {
    Enc::default()
        .u32(if_index)
        .u32(6)
        .u64(100_000_000_000)
        .u32(1)
        .u32(3)
        .u64(1_000_000)
        .u32(900)
        .u32(10)
        .u32(5)
        .u32(1)
        .u32(2)
        .u32(0)
        .u64(2_000_000)
        .u32(1800)
        .u32(20)
        .u32(6)
        .u32(3)
        .u32(4)
        .u32(0)
        .0
}

fn item(enterprise: u32, format: u32, body: &[u8]) -> Vec<u8> {
    Enc::default().item(enterprise, format, body).0
}

fn ethernet_frame() -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 1, 64240)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn ipv4_packet() -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 0, 3], [10, 0, 0, 4], 64)
        .udp(5000, 53)
        .write(&mut v, &[0; 12])
        .unwrap();
    v
}

/// A datagram with every sample type: a compact flow sample (Ethernet header and an
/// extended-switch record), an expanded flow sample (IPv4 header), a compact and an
/// expanded counters sample, and a vendor's sample.
fn full_datagram(seq: u32) -> Vec<u8> {
    let eth = ethernet_frame();
    let ip = ipv4_packet();
    let mut d = header(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), seq, 5);
    let switch = item(0, 1001, &[0; 16]);
    d = d.item(
        0,
        1,
        &flow_sample(
            seq,
            512,
            4,
            &[
                item(0, 1, &raw_header(1, eth.len() as u32 + 4, 4, &eth)),
                switch,
            ],
        ),
    );
    d = d.item(
        0,
        3,
        &expanded_flow_sample(
            seq,
            1000,
            70_001,
            &[item(0, 1, &raw_header(11, 1500, 0, &ip))],
        ),
    );
    let counters = |expanded: bool, if_index| {
        let mut e = Enc::default().u32(seq);
        e = if expanded {
            e.u32(0).u32(if_index)
        } else {
            e.u32(if_index)
        };
        let mut e = e.u32(2);
        e.0.extend(item(0, 1, &interface_counters(if_index)));
        e.0.extend(item(0, 2, &[0; 52])); // Ethernet counters: skipped
        e.0
    };
    d = d.item(0, 2, &counters(false, 4));
    d = d.item(0, 4, &counters(true, 70_001));
    d = d.item(4413, 5, &[1, 2, 3, 4]);
    d.0
}

#[test]
fn every_sample_and_record_type_is_decoded() {
    let mut dec = SflowDecoder::new();
    dec.decode_bytes(&full_datagram(1), 42).unwrap();
    let frames: Vec<_> = dec.frames().collect();
    assert_eq!(frames.len(), 2);
    let (eth, ip) = (ethernet_frame(), ipv4_packet());
    assert_eq!(frames[0].frame.data, &eth[..]);
    assert_eq!(frames[0].frame.link, LinkType::Ethernet);
    assert_eq!(
        frames[0].frame.wire_len,
        eth.len() as u32,
        "the FCS was stripped"
    );
    assert_eq!((frames[0].weight, frames[0].frame.interface), (512, 4));
    assert_eq!(frames[0].frame.ts_ns, 42);
    assert_eq!(frames[0].agent, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
    assert_eq!(frames[1].frame.data, &ip[..]);
    assert_eq!(frames[1].frame.link, LinkType::Ipv4);
    assert_eq!(frames[1].frame.wire_len, 1500);
    assert_eq!(
        (frames[1].weight, frames[1].frame.interface),
        (1000, 70_001)
    );
    let counters = dec.counters();
    assert_eq!(counters.len(), 2);
    assert_eq!(counters[0].0, SourceId { kind: 0, index: 4 });
    assert_eq!(
        counters[1].0,
        SourceId {
            kind: 0,
            index: 70_001
        }
    );
    let c = counters[0].1;
    assert_eq!(
        (
            c.if_index,
            c.if_speed,
            c.in_octets,
            c.out_octets,
            c.in_discards,
            c.out_errors
        ),
        (4, 100_000_000_000, 1_000_000, 2_000_000, 1, 4)
    );
    let s = dec.stats();
    assert_eq!(
        (
            s.datagrams,
            s.flow_samples,
            s.counter_samples,
            s.other_samples
        ),
        (1, 2, 2, 1)
    );
    assert_eq!((s.frames, s.estimated_packets), (2, 1512));
    assert_eq!((s.other_records, s.agent_drops), (3, 2));
    assert_eq!(s.malformed_total(), 0);
}

#[test]
fn an_ipv6_agent_and_an_ipv6_header() {
    let mut v6 = Vec::new();
    etherparse::PacketBuilder::ipv6(
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        64,
    )
    .udp(1, 2)
    .write(&mut v6, &[0; 3])
    .unwrap();
    let agent: IpAddr = "2001:db8::99".parse().unwrap();
    let d = header(agent, 1, 1)
        .item(
            0,
            1,
            &flow_sample(1, 1, 0, &[item(0, 1, &raw_header(12, 100, 0, &v6))]),
        )
        .0;
    let mut dec = SflowDecoder::new();
    dec.decode_bytes(&d, 0).unwrap();
    let f = dec.frames().next().unwrap();
    assert_eq!(
        (f.agent, f.frame.link, f.frame.data),
        (agent, LinkType::Ipv6, &v6[..])
    );
    // An MPLS header (protocol 13) is counted, not handed on.
    let d = header(agent, 2, 1)
        .item(
            0,
            1,
            &flow_sample(2, 1, 0, &[item(0, 1, &raw_header(13, 100, 0, &[0; 8]))]),
        )
        .0;
    dec.decode_bytes(&d, 0).unwrap();
    assert_eq!(dec.frames().count(), 0);
    assert_eq!(dec.stats().unsupported_headers, 1);
}

#[test]
fn lying_lengths_and_counts_are_named_and_what_came_before_is_kept() {
    let eth = ethernet_frame();
    let good = item(
        0,
        1,
        &flow_sample(1, 10, 1, &[item(0, 1, &raw_header(1, 64, 0, &eth))]),
    );
    let agent = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let fault = |d: &[u8]| {
        let mut dec = SflowDecoder::new();
        let e = dec.decode_bytes(d, 0).unwrap_err();
        (e.fault, dec.frames().count(), dec.stats().malformed_total())
    };
    // Two samples counted, one there.
    let mut d = header(agent, 1, 2).0;
    d.extend(&good);
    assert_eq!(fault(&d), (SflowFault::SampleLength, 1, 1));
    // A sample longer than the datagram.
    let mut d = header(agent, 1, 2).0;
    d.extend(&good);
    d.extend(Enc::default().u32(1).u32(10_000).u32(0).0);
    assert_eq!(fault(&d), (SflowFault::SampleLength, 1, 1));
    // A sample's length of 2^32 - 1 (no overflow on 32-bit arithmetic).
    let mut d = header(agent, 1, 1).0;
    d.extend(Enc::default().u32(1).u32(u32::MAX).0);
    assert_eq!(fault(&d).0, SflowFault::SampleLength);
    // A flow sample shorter than its fixed fields.
    let d = header(agent, 1, 1).item(0, 1, &[0; 12]).0;
    assert_eq!(fault(&d).0, SflowFault::ShortSample);
    // Three records counted, one there.
    let mut body = flow_sample(1, 10, 1, &[item(0, 1, &raw_header(1, 64, 0, &eth))]);
    body[28..32].copy_from_slice(&3u32.to_be_bytes());
    let d = header(agent, 1, 1).item(0, 1, &body).0;
    assert_eq!(fault(&d), (SflowFault::RecordLength, 1, 1));
    // A header longer than its record.
    let mut raw = raw_header(1, 64, 0, &eth);
    raw[12..16].copy_from_slice(&1000u32.to_be_bytes());
    let d = header(agent, 1, 1)
        .item(0, 1, &flow_sample(1, 10, 1, &[item(0, 1, &raw)]))
        .0;
    assert_eq!(fault(&d), (SflowFault::HeaderLength, 0, 1));
    // Short interface counters.
    let mut c = Enc::default().u32(1).u32(4).u32(1).0;
    c.extend(item(0, 1, &[0; 40]));
    let d = header(agent, 1, 1).item(0, 2, &c).0;
    assert_eq!(fault(&d).0, SflowFault::ShortCounters);
    // Not version 5; an unknown agent address type; too short for a header.
    assert_eq!(fault(&[0, 0, 0, 4]).0, SflowFault::Version);
    assert_eq!(
        fault(&[0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 0]).0,
        SflowFault::AgentAddress
    );
    assert_eq!(fault(&[0, 0, 0, 5, 0, 0, 0, 1]).0, SflowFault::ShortHeader);
    let e = SflowDecoder::new()
        .decode_bytes(&[0, 0, 0, 5, 0, 0, 0, 3], 0)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "sFlow datagram byte 4: expected agent address type 1 (IPv4) or 2 (IPv6)"
    );
}

#[test]
fn every_truncation_of_a_datagram_decodes_a_prefix_of_its_frames() {
    let d = full_datagram(1);
    let mut dec = SflowDecoder::new();
    for n in 0..d.len() {
        let result = dec.decode_bytes(&d[..n], 0);
        assert!(result.is_err(), "{n} bytes of {} decoded cleanly", d.len());
        assert!(dec.frames().count() <= 2);
    }
    assert_eq!(dec.stats().malformed_total(), d.len() as u64);
}

#[test]
fn sequence_gaps_count_lost_datagrams_and_samples() {
    let mut dec = SflowDecoder::new();
    for seq in [1, 2, 5, 6] {
        dec.decode_bytes(&full_datagram(seq), 0).unwrap();
    }
    let s = dec.stats();
    assert_eq!(s.lost_datagrams, 2);
    // Four data sources (two flow, two counter) each missed two samples.
    assert_eq!(s.lost_samples, 8);
}

#[test]
fn a_real_socket_receives_and_decodes() {
    let socket = SflowSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(socket.receive_buffer() >= 65_536);
    let to = socket.local_addr().unwrap();
    let mut dec = SflowDecoder::new();
    assert!(matches!(
        socket.receive(&mut dec, Duration::from_millis(5)).unwrap(),
        Received::Nothing
    ));
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&full_datagram(1), to).unwrap();
    sender.send_to(&[0, 0, 0, 2], to).unwrap();
    let got = socket.receive(&mut dec, Duration::from_secs(5)).unwrap();
    assert!(matches!(got, Received::Datagram), "{got:?}");
    assert_eq!(dec.frames().count(), 2);
    assert!(dec
        .frames()
        .all(|f| f.frame.ts_ns > 1_700_000_000_000_000_000));
    let got = socket.receive(&mut dec, Duration::from_secs(5)).unwrap();
    assert!(
        matches!(
            got,
            Received::Malformed(SflowError {
                fault: SflowFault::Version,
                ..
            })
        ),
        "{got:?}"
    );
    assert_eq!(dec.stats().malformed[1], 1);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut dec = SflowDecoder::new();
        let _ = dec.decode_bytes(&bytes, 0);
        prop_assert!(dec.frames().count() <= bytes.len());
    }

    #[test]
    fn mutated_datagrams_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16)
    ) {
        let mut d = full_datagram(3);
        for (at, byte) in edits {
            let i = at % d.len();
            d[i] = byte;
        }
        let mut dec = SflowDecoder::new();
        let _ = dec.decode_bytes(&d, 0);
        for f in dec.frames() {
            prop_assert!(f.frame.data.len() <= d.len());
        }
    }
}
