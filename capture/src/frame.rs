//! The frame handed up to the classifier.

/// Link-layer framing of a frame's bytes, from the pcap `LINKTYPE_*` registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET` (1): Ethernet II, possibly VLAN-tagged.
    Ethernet,
    /// `LINKTYPE_NULL` (0): BSD loopback, a 4-byte address family in the writer's byte order.
    Null,
    /// `LINKTYPE_LOOP` (108): OpenBSD loopback, a 4-byte address family in network order.
    Loop,
    /// `LINKTYPE_RAW` (101, and DLT 12/14): a bare IPv4 or IPv6 packet.
    RawIp,
    /// `LINKTYPE_IPV4` (228).
    Ipv4,
    /// `LINKTYPE_IPV6` (229).
    Ipv6,
    /// `LINKTYPE_LINUX_SLL` (113): Linux cooked capture v1.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux cooked capture v2.
    LinuxSll2,
    /// Any other link type, kept by number so it can be counted and reported.
    Other(u16),
}

impl LinkType {
    /// Maps a pcap/pcapng link-type number.
    pub fn from_linktype(value: u32) -> LinkType {
        match value & 0xffff {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::RawIp,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            other => LinkType::Other(other as u16),
        }
    }

    /// The pcap link-type number.
    pub fn to_linktype(self) -> u16 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
            LinkType::Other(n) => n,
        }
    }
}

/// One captured frame, borrowing its bytes from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire (may exceed `data.len()` when the snaplen cut it).
    pub wire_len: u32,
    /// Link-layer framing of `data`.
    pub link: LinkType,
    /// Interface the frame came from: pcapng interface id, or the worker's interface index.
    pub interface: u32,
    /// The captured bytes, starting at the link-layer header.
    pub data: &'a [u8],
}
