//! The small `Copy` record each packet becomes.
use std::net::IpAddr;

/// Frame-size buckets, by wire length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum SizeClass {
    /// 64 bytes or less.
    UpTo64,
    /// 65 to 128 bytes.
    UpTo128,
    /// 129 to 256 bytes.
    UpTo256,
    /// 257 to 512 bytes.
    UpTo512,
    /// 513 to 1024 bytes.
    UpTo1024,
    /// 1025 to 1518 bytes.
    UpTo1518,
    /// More than 1518 bytes.
    Jumbo,
}

impl SizeClass {
    /// Every class, smallest first.
    pub const ALL: [SizeClass; 7] = [
        SizeClass::UpTo64,
        SizeClass::UpTo128,
        SizeClass::UpTo256,
        SizeClass::UpTo512,
        SizeClass::UpTo1024,
        SizeClass::UpTo1518,
        SizeClass::Jumbo,
    ];

    /// The largest frame of each class but the last.
    const UPPER: [u32; 6] = [64, 128, 256, 512, 1024, 1518];

    /// The class of a frame of `wire_len` bytes: the number of classes whose largest frame
    /// is smaller, counted without a branch (a chain of range tests mispredicts about once
    /// a packet on mixed sizes).
    #[inline]
    pub fn of(wire_len: u32) -> SizeClass {
        let above = Self::UPPER
            .iter()
            .map(|&upper| usize::from(wire_len > upper))
            .sum::<usize>();
        Self::ALL[above]
    }

    /// Stable label used in summaries, JSON and storage.
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::UpTo64 => "0-64",
            SizeClass::UpTo128 => "65-128",
            SizeClass::UpTo256 => "129-256",
            SizeClass::UpTo512 => "257-512",
            SizeClass::UpTo1024 => "513-1024",
            SizeClass::UpTo1518 => "1025-1518",
            SizeClass::Jumbo => "jumbo",
        }
    }
}

/// What a packet is, from its headers and the first bytes of its payload only.
///
/// `repr(u8)`: the first byte is the discriminant, and the built-in types' discriminants,
/// in the order declared here, are their [`ProtocolType::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolType {
    /// TCP SYN without ACK: a connection setup.
    TcpSyn,
    /// TCP SYN+ACK.
    TcpSynAck,
    /// TCP with FIN.
    TcpFin,
    /// TCP with RST.
    TcpRst,
    /// TCP ACK with no payload.
    TcpAck,
    /// TCP with payload not recognised below.
    TcpData,
    /// TCP with neither SYN, ACK, FIN nor RST (scans, corrupt flags).
    TcpOther,
    /// TLS handshake record (content type 22).
    TlsHandshake,
    /// TLS application data record (23).
    TlsApplicationData,
    /// TLS alert record (21).
    TlsAlert,
    /// TLS change-cipher-spec record (20).
    TlsChangeCipherSpec,
    /// Plain-text HTTP request line.
    HttpRequest,
    /// Plain-text HTTP status line (`HTTP/1.x NNN`).
    HttpResponse,
    /// BGP message (TCP 179 with the 16-byte marker).
    Bgp,
    /// DNS, mDNS or LLMNR (UDP or TCP 53, 5353, 5355).
    Dns,
    /// QUIC long-header packet (IETF versions and gQUIC) other than a client's Initial.
    Quic,
    /// QUIC v1/v2 Initial from a client: a connection setup.
    QuicInitial,
    /// WireGuard handshake initiation (message type 1, 148 bytes): a session setup.
    WireguardInitiation,
    /// IKEv2 IKE_SA_INIT request (UDP 500, or 4500 behind the non-ESP marker): a setup.
    IkeSaInit,
    /// DTLS ClientHello (first message of a handshake): a connection setup.
    DtlsClientHello,
    /// OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2/V3 over UDP: a session setup.
    OpenvpnHardReset,
    /// BFD single-hop control packet (UDP 3784).
    BfdControl,
    /// BFD echo packet (UDP 3785).
    BfdEcho,
    /// BFD multihop control packet (UDP 4784).
    BfdMultihop,
    /// UDP not recognised otherwise.
    Udp,
    /// ICMP (the type is in [`PacketMeta::detail`]).
    Icmp,
    /// ICMPv6 (the type is in [`PacketMeta::detail`]).
    Icmpv6,
    /// IP fragment after the first: no transport header.
    IpFragment,
    /// IP with another transport protocol.
    OtherIp,
    /// ARP.
    Arp,
    /// A frame that carries no IP or ARP.
    NonIp,
    /// A packet whose headers are malformed; see [`PacketMeta::malformed`].
    Malformed,
    /// A type configured by port (index into the classifier's custom names).
    Custom(u8),
}

impl ProtocolType {
    /// Number of built-in types; custom types are indexed after them.
    pub const BUILTIN: usize = 32;

    /// Dense index: built-ins `0..BUILTIN`, then custom types. A built-in type's index is
    /// its discriminant, read rather than matched: a match on all of them compiles to a jump
    /// table, whose target is as random as the traffic (cachegrind: 3.5 indirect
    /// mispredicts a packet on mixed traffic, from four calls).
    #[inline]
    pub fn index(self) -> usize {
        match self {
            ProtocolType::Custom(i) => Self::BUILTIN + i as usize,
            // SAFETY: the enum is `repr(u8)`, so its first byte is its discriminant (the
            // primitive representation's layout, as `std::mem::discriminant` documents).
            _ => usize::from(unsafe { *std::ptr::from_ref(&self).cast::<u8>() }),
        }
    }

    /// The built-in type at `index`, `None` for custom indices.
    pub fn builtin(index: usize) -> Option<ProtocolType> {
        use ProtocolType::*;
        const ALL: [ProtocolType; ProtocolType::BUILTIN] = [
            TcpSyn,
            TcpSynAck,
            TcpFin,
            TcpRst,
            TcpAck,
            TcpData,
            TcpOther,
            TlsHandshake,
            TlsApplicationData,
            TlsAlert,
            TlsChangeCipherSpec,
            HttpRequest,
            HttpResponse,
            Bgp,
            Dns,
            Quic,
            QuicInitial,
            WireguardInitiation,
            IkeSaInit,
            DtlsClientHello,
            OpenvpnHardReset,
            BfdControl,
            BfdEcho,
            BfdMultihop,
            Udp,
            Icmp,
            Icmpv6,
            IpFragment,
            OtherIp,
            Arp,
            NonIp,
            Malformed,
        ];
        ALL.get(index).copied()
    }

    /// Stable label of a built-in type (custom types are named by the classifier config).
    pub fn name(self) -> &'static str {
        use ProtocolType::*;
        match self {
            TcpSyn => "tcp_syn",
            TcpSynAck => "tcp_syn_ack",
            TcpFin => "tcp_fin",
            TcpRst => "tcp_rst",
            TcpAck => "tcp_ack",
            TcpData => "tcp_data",
            TcpOther => "tcp_other",
            TlsHandshake => "tls_handshake",
            TlsApplicationData => "tls_application_data",
            TlsAlert => "tls_alert",
            TlsChangeCipherSpec => "tls_change_cipher_spec",
            HttpRequest => "http_request",
            HttpResponse => "http_response",
            Bgp => "bgp",
            Dns => "dns",
            Quic => "quic",
            QuicInitial => "quic_initial",
            WireguardInitiation => "wireguard_initiation",
            IkeSaInit => "ike_sa_init",
            DtlsClientHello => "dtls_client_hello",
            OpenvpnHardReset => "openvpn_hard_reset",
            BfdControl => "bfd_control",
            BfdEcho => "bfd_echo",
            BfdMultihop => "bfd_multihop",
            Udp => "udp",
            Icmp => "icmp",
            Icmpv6 => "icmpv6",
            IpFragment => "ip_fragment",
            OtherIp => "other_ip",
            Arp => "arp",
            NonIp => "non_ip",
            Malformed => "malformed",
            Custom(_) => "custom",
        }
    }

    /// Whether this type opens a connection or session: TCP SYN and the first handshake
    /// packet of QUIC, WireGuard, IKEv2, DTLS and OpenVPN. These count as setups by default.
    pub fn is_connection_setup(self) -> bool {
        use ProtocolType::*;
        matches!(
            self,
            TcpSyn
                | QuicInitial
                | WireguardInitiation
                | IkeSaInit
                | DtlsClientHello
                | OpenvpnHardReset
        )
    }

    /// Whether this is one of the TCP-flag or TCP-payload types.
    pub fn is_tcp(self) -> bool {
        self.index() <= ProtocolType::Bgp.index()
    }
}

/// Fragmentation state of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fragment {
    /// Not a fragment.
    #[default]
    No,
    /// First fragment: offset 0, more fragments follow; transport header present.
    First,
    /// A later fragment: no transport header.
    Later,
}

/// BFD session state (RFC 5880 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BfdState {
    /// AdminDown (0).
    AdminDown,
    /// Down (1).
    Down,
    /// Init (2).
    Init,
    /// Up (3).
    Up,
}

/// The fields of a BFD control packet (RFC 5880 §4.1) that session tracking needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BfdControl {
    /// Diagnostic code.
    pub diag: u8,
    /// Session state.
    pub state: BfdState,
    /// Poll, final, control-plane-independent, authentication, demand and multipoint bits.
    pub flags: u8,
    /// Detect time multiplier.
    pub detect_mult: u8,
    /// My discriminator.
    pub my_disc: u32,
    /// Your discriminator.
    pub your_disc: u32,
    /// Desired minimum transmit interval, µs.
    pub desired_min_tx_us: u32,
    /// Required minimum receive interval, µs.
    pub required_min_rx_us: u32,
}

/// Protocol-specific detail derived from headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Detail {
    /// Nothing beyond the common fields.
    #[default]
    None,
    /// BFD control packet fields.
    Bfd(BfdControl),
    /// ICMP or ICMPv6 type and code.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Echo request/reply identifier (ICMP 8/0, ICMPv6 128/129); 0 for other types.
        id: u16,
        /// Echo request/reply sequence number; 0 for other types.
        seq: u16,
    },
    /// A plain-text HTTP/1.x message's first line (and, for requests, whether an `Upgrade`
    /// header follows). Nothing else of the message is read.
    Http(HttpLine),
    /// QUIC long-header version (types `quic` and `quic_initial`).
    Quic {
        /// Version field (0 for version negotiation).
        version: u32,
    },
}

/// What tapwatch reads of a plain-text HTTP/1.x message: the request line's shape and the
/// `Upgrade` header's presence, or the status code. No other payload byte is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpLine {
    /// A request; `upgrade` when its headers (in the captured bytes) carry `Upgrade:`.
    Request {
        /// The request asks to switch protocols (websocket, h2c).
        upgrade: bool,
    },
    /// A response's status line.
    Response {
        /// Status code, 100–999.
        status: u16,
    },
}

impl ProtocolType {
    /// Whether this type is an ICMP or ICMPv6 echo request (`Some(false)`) or reply
    /// (`Some(true)`), judged with the packet's detail.
    pub fn echo(self, detail: &Detail) -> Option<bool> {
        match (self, detail) {
            (ProtocolType::Icmp, Detail::Icmp { ty: 8, .. }) => Some(false),
            (ProtocolType::Icmp, Detail::Icmp { ty: 0, .. }) => Some(true),
            (ProtocolType::Icmpv6, Detail::Icmp { ty: 128, .. }) => Some(false),
            (ProtocolType::Icmpv6, Detail::Icmp { ty: 129, .. }) => Some(true),
            _ => None,
        }
    }
}

/// Why a packet's headers could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Malformed {
    /// The header that failed, e.g. `"ipv4"`.
    pub layer: &'static str,
    /// What was wrong, e.g. `"too short"`.
    pub reason: &'static str,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.layer, self.reason)
    }
}

/// Tenant index in the classifier's tenant map; 0 is `unassigned`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TenantId(pub u16);

impl TenantId {
    /// Sources that no tenant prefix covers.
    pub const UNASSIGNED: TenantId = TenantId(0);
}

/// Bit in [`PacketMeta::flags`]: the capture's snaplen cut a header short.
pub const FLAG_SNAPPED_HEADER: u8 = 1;
/// Bit in [`PacketMeta::flags`]: the TCP header carries the timestamps option (RFC 7323);
/// [`PacketMeta::tcp_tsval`] and [`PacketMeta::tcp_tsecr`] hold it.
pub const FLAG_TCP_TIMESTAMPS: u8 = 2;

/// Whether endpoint `(a, a_port)` comes first in a flow's canonical order: the order of
/// `(IpAddr, u16)` tuples (IPv4 before IPv6, then the address as a number, then the port),
/// compared as plain integers. Every per-flow table orders a packet's two endpoints this way,
/// so both directions of a flow meet in one entry; the tuple comparison it replaces went
/// through `IpAddr`'s derived ordering, several calls per packet.
#[inline]
pub fn endpoint_le(a: IpAddr, a_port: u16, b: IpAddr, b_port: u16) -> bool {
    let rank = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(v) => (0u8, u128::from(v.to_bits()), port),
        IpAddr::V6(v) => (1u8, v.to_bits(), port),
    };
    rank(a, a_port) <= rank(b, b_port)
}

/// Everything tapwatch keeps of one packet: header fields and derived labels, no payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire.
    pub wire_len: u32,
    /// Bytes captured.
    pub cap_len: u32,
    /// Interface the frame came from.
    pub interface: u32,
    /// Size bucket of `wire_len`.
    pub size_class: SizeClass,
    /// The label.
    pub kind: ProtocolType,
    /// Outer VLAN id (802.1Q, or the 802.1ad S-tag).
    pub outer_vlan: Option<u16>,
    /// Inner VLAN id (QinQ C-tag).
    pub inner_vlan: Option<u16>,
    /// Source address (IP packets only).
    pub src: Option<IpAddr>,
    /// Destination address (IP packets only).
    pub dst: Option<IpAddr>,
    /// IP protocol number (after IPv6 extension headers); 0 without IP.
    pub ip_proto: u8,
    /// Fragmentation state.
    pub fragment: Fragment,
    /// Source port (TCP/UDP), else 0.
    pub src_port: u16,
    /// Destination port (TCP/UDP), else 0.
    pub dst_port: u16,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, …).
    pub tcp_flags: u8,
    /// TCP sequence number.
    pub tcp_seq: u32,
    /// TCP acknowledgement number.
    pub tcp_ack: u32,
    /// TCP receive window (unscaled, as on the wire).
    pub tcp_window: u16,
    /// TCP timestamp value (valid with [`FLAG_TCP_TIMESTAMPS`]).
    pub tcp_tsval: u32,
    /// TCP timestamp echo reply (valid with [`FLAG_TCP_TIMESTAMPS`]).
    pub tcp_tsecr: u32,
    /// Transport payload bytes as sent (from the IP and UDP length fields, not the captured
    /// bytes): TCP segment data, UDP datagram data; 0 for other protocols.
    pub payload_len: u32,
    /// Tenant of the source address.
    pub tenant: TenantId,
    /// Protocol-specific fields.
    pub detail: Detail,
    /// Why the headers are unusable, if they are.
    pub malformed: Option<Malformed>,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Packets this record stands for: 1, or the sampling rate of a sampled source (sFlow).
    pub weight: u32,
    /// Bytes from the frame's first byte to the end of its transport header (TCP's data
    /// offset; 8 for UDP and ICMP; the IP header alone for later fragments and other
    /// protocols), at most the bytes captured; 0 without an IP header. Everything past it is
    /// payload.
    pub headers_len: u16,
}

impl PacketMeta {
    /// A record with only the frame-level fields set.
    #[inline]
    pub fn empty(ts_ns: u64, wire_len: u32, cap_len: u32, interface: u32) -> PacketMeta {
        PacketMeta {
            ts_ns,
            wire_len,
            cap_len,
            interface,
            size_class: SizeClass::of(wire_len),
            kind: ProtocolType::NonIp,
            outer_vlan: None,
            inner_vlan: None,
            src: None,
            dst: None,
            ip_proto: 0,
            fragment: Fragment::No,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_window: 0,
            tcp_tsval: 0,
            tcp_tsecr: 0,
            payload_len: 0,
            tenant: TenantId::UNASSIGNED,
            detail: Detail::None,
            malformed: None,
            flags: 0,
            weight: 1,
            headers_len: 0,
        }
    }
}
