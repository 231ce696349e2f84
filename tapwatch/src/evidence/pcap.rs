//! Header-only classic pcap files: each record's captured length is the headers kept, its
//! original length the frame's length on the wire.
use super::ring::Slot;

/// `application/vnd.tcpdump.pcap`.
pub const CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";

/// A nanosecond-resolution, little-endian pcap file of `slots` (all of link type `link`).
pub fn encode(link: u16, slots: &[Slot]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(24 + slots.iter().map(|s| 16 + s.bytes().len()).sum::<usize>());
    out.extend(0xa1b2_3c4du32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend((super::ring::HEADER_MAX as u32).to_le_bytes());
    out.extend(u32::from(link).to_le_bytes());
    for s in slots {
        let b = s.bytes();
        out.extend(((s.ts_ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend(((s.ts_ns % 1_000_000_000) as u32).to_le_bytes());
        out.extend((b.len() as u32).to_le_bytes());
        out.extend(s.wire_len.max(b.len() as u32).to_le_bytes());
        out.extend(b);
    }
    out
}
