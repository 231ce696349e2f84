//! A bounded ring of recent packet headers in one preallocated arena of fixed-size slots:
//! per packet one bounded copy, no allocation, no lock, no system call. The oldest slot is
//! overwritten when the ring is full.
use std::net::IpAddr;

use tapwatch_classifier::PacketMeta;

/// Header bytes a slot holds at most; longer headers are cut here (and counted).
pub const HEADER_MAX: usize = 136;

/// Bytes one slot takes: the header bytes and what matching and the pcap record need.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

/// One packet's headers with its time, wire length and flow key.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Slot {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire.
    pub wire_len: u32,
    /// The pcap link type of the frame.
    pub link: u16,
    /// Header bytes held (`data[..len]`).
    pub len: u8,
    /// IP protocol.
    pub proto: u8,
    /// Source port (TCP/UDP), else 0.
    pub src_port: u16,
    /// Destination port (TCP/UDP), else 0.
    pub dst_port: u16,
    /// Whether the addresses are IPv6.
    pub v6: bool,
    _pad: [u8; 3],
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address (IPv4 in the first four bytes).
    pub dst: [u8; 16],
    /// The frame's first `len` bytes: link, IP and transport headers.
    pub data: [u8; HEADER_MAX],
}

impl Slot {
    const EMPTY: Slot = Slot {
        ts_ns: 0,
        wire_len: 0,
        link: 0,
        len: 0,
        proto: 0,
        src_port: 0,
        dst_port: 0,
        v6: false,
        _pad: [0; 3],
        src: [0; 16],
        dst: [0; 16],
        data: [0; HEADER_MAX],
    };

    /// The header bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        unpack(self.src, self.v6)
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        unpack(self.dst, self.v6)
    }
}

fn pack(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn unpack(b: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(b)
    } else {
        IpAddr::from([b[0], b[1], b[2], b[3]])
    }
}

/// The ring: `slots.len()` packets, the newest at `next - 1`.
pub struct Ring {
    slots: Box<[Slot]>,
    next: usize,
    filled: usize,
    /// Packets whose headers were longer than [`HEADER_MAX`] (kept cut there).
    pub cut: u64,
}

impl Ring {
    /// A ring of `packets` slots, allocated now.
    pub fn new(packets: usize) -> Ring {
        Ring {
            slots: vec![Slot::EMPTY; packets.max(1)].into_boxed_slice(),
            next: 0,
            filled: 0,
            cut: 0,
        }
    }

    /// Keeps the first `header_len` bytes of `frame` (an IP packet's headers) with `m`'s
    /// time, length and flow key, overwriting the oldest slot when full.
    #[inline]
    pub fn push(&mut self, link: u16, frame: &[u8], header_len: usize, m: &PacketMeta) {
        let (Some(src), Some(dst)) = (m.src, m.dst) else {
            return;
        };
        let n = header_len.min(frame.len());
        let len = if n > HEADER_MAX {
            self.cut += 1;
            HEADER_MAX
        } else {
            n
        };
        let s = &mut self.slots[self.next];
        s.ts_ns = m.ts_ns;
        s.wire_len = m.wire_len;
        s.link = link;
        s.len = len as u8;
        s.proto = m.ip_proto;
        s.src_port = m.src_port;
        s.dst_port = m.dst_port;
        s.v6 = src.is_ipv6();
        s.src = pack(src);
        s.dst = pack(dst);
        s.data[..len].copy_from_slice(&frame[..len]);
        self.next += 1;
        if self.next == self.slots.len() {
            self.next = 0;
        }
        self.filled = (self.filled + 1).min(self.slots.len());
    }

    /// The newest slot.
    pub fn newest(&self) -> Option<&Slot> {
        if self.is_empty() {
            return None;
        }
        let i = if self.next == 0 {
            self.slots.len() - 1
        } else {
            self.next - 1
        };
        Some(&self.slots[i])
    }

    /// Slots held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        let start = (self.next + self.slots.len() - self.filled) % self.slots.len();
        (0..self.filled).map(move |i| &self.slots[(start + i) % self.slots.len()])
    }

    /// Packets the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Bytes the arena takes.
    pub fn bytes(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ts: u64) -> PacketMeta {
        let mut m = PacketMeta::empty(ts, 1500, 1500, 0);
        m.src = Some("10.0.0.1".parse().unwrap());
        m.dst = Some("2001:db8::1".parse().unwrap());
        m
    }

    #[test]
    fn wraps_around_keeping_the_newest_in_order() {
        let mut r = Ring::new(4);
        let frame = [7u8; 64];
        for ts in 1..=10 {
            r.push(1, &frame, 54, &meta(ts));
        }
        let ts: Vec<u64> = r.iter().map(|s| s.ts_ns).collect();
        assert_eq!(ts, [7, 8, 9, 10]);
        assert_eq!(r.newest().map(|s| s.ts_ns), Some(10));
        assert!(r
            .iter()
            .all(|s| s.bytes().len() == 54 && s.wire_len == 1500));
        assert_eq!(
            r.iter().next().unwrap().src(),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn partial_ring_and_non_ip() {
        let mut r = Ring::new(8);
        assert!(r.is_empty() && r.newest().is_none());
        r.push(1, &[0; 60], 54, &meta(1));
        r.push(1, &[0; 60], 54, &PacketMeta::empty(2, 60, 60, 0));
        assert_eq!(r.len(), 1, "frames without addresses are not kept");
    }

    #[test]
    fn overlong_headers_are_cut_and_counted_never_read_past_the_frame() {
        let mut r = Ring::new(2);
        r.push(1, &[1; 400], 300, &meta(1));
        r.push(1, &[1; 30], 54, &meta(2));
        let lens: Vec<usize> = r.iter().map(|s| s.bytes().len()).collect();
        assert_eq!(lens, [HEADER_MAX, 30]);
        assert_eq!(r.cut, 1);
    }
}
