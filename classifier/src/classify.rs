//! Frame → [`PacketMeta`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{Ethernet2Slice, Ipv4HeaderSlice, LaxIpv6Slice, SingleVlanSlice};
use tapwatch_capture::{Frame, LinkType};

use crate::config::{ClassifierConfig, Transport};
use crate::meta::*;
use crate::setups;
use crate::tenant::TenantMap;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;

/// Labels packets. Cheap to share across threads by reference; holds no per-packet state.
#[derive(Clone, Debug)]
pub struct Classifier {
    tenants: TenantMap,
    /// Custom types by port, for TCP and UDP.
    tcp_ports: PortTypes,
    udp_ports: PortTypes,
    custom_names: Vec<String>,
}

/// The custom type of each port of one transport: a bit per port says whether it has one,
/// and only then is its type read. Every TCP and UDP packet looks up both its ports, and
/// the 8 KiB of bits stay in the L1 cache where a 64 KiB table of types, looked up at
/// random client ports, missed it on nearly every packet.
#[derive(Clone, Debug)]
struct PortTypes {
    /// Bit `port % 64` of word `port / 64`: the port has a custom type.
    mapped: Box<[u64]>,
    /// Port → custom type index + 1 (0: none).
    types: Box<[u8]>,
    /// Some port has a custom type (without one, a packet looks nothing up).
    any: bool,
}

impl PortTypes {
    fn new() -> PortTypes {
        PortTypes {
            mapped: vec![0; 65536 / 64].into_boxed_slice(),
            types: vec![0; 65536].into_boxed_slice(),
            any: false,
        }
    }

    fn set(&mut self, port: u16, index_plus_one: u8) {
        self.mapped[usize::from(port / 64)] |= 1 << (port % 64);
        self.types[usize::from(port)] = index_plus_one;
        self.any = true;
    }

    /// The port's custom type index + 1 (0: none).
    #[inline]
    fn get(&self, port: u16) -> u8 {
        if self.mapped[usize::from(port / 64)] >> (port % 64) & 1 == 0 {
            0
        } else {
            self.types[usize::from(port)]
        }
    }
}

impl Default for Classifier {
    fn default() -> Classifier {
        Classifier::new(TenantMap::default(), &ClassifierConfig::default())
    }
}

/// Headers end `end` bytes into the frame (never past the bytes captured).
#[inline]
fn set_headers_len(meta: &mut PacketMeta, end: usize) {
    meta.headers_len = end.min(meta.cap_len as usize).min(usize::from(u16::MAX)) as u16;
}

/// Where a malformed header stopped parsing.
#[inline]
fn malformed(meta: &mut PacketMeta, layer: &'static str, reason: &'static str) {
    meta.kind = ProtocolType::Malformed;
    meta.malformed = Some(Malformed { layer, reason });
}

impl Classifier {
    /// A classifier with a tenant map and extra port mappings.
    pub fn new(tenants: TenantMap, config: &ClassifierConfig) -> Classifier {
        let mut tcp_ports = PortTypes::new();
        let mut udp_ports = PortTypes::new();
        let mut custom_names: Vec<String> = Vec::new();
        for m in config.port.iter().take(250) {
            let idx = match custom_names.iter().position(|n| *n == m.name) {
                Some(i) => i,
                None => {
                    custom_names.push(m.name.clone());
                    custom_names.len() - 1
                }
            };
            let table = match m.transport {
                Transport::Tcp => &mut tcp_ports,
                Transport::Udp => &mut udp_ports,
            };
            table.set(m.port, idx as u8 + 1);
        }
        Classifier {
            tenants,
            tcp_ports,
            udp_ports,
            custom_names,
        }
    }

    /// The tenant map in use.
    pub fn tenants(&self) -> &TenantMap {
        &self.tenants
    }

    /// Name of a protocol type, custom ones included.
    pub fn type_name(&self, kind: ProtocolType) -> &str {
        match kind {
            ProtocolType::Custom(i) => self
                .custom_names
                .get(i as usize)
                .map(String::as_str)
                .unwrap_or("custom"),
            other => other.name(),
        }
    }

    /// Number of protocol-type indices in use (built-ins plus custom types).
    pub fn type_count(&self) -> usize {
        ProtocolType::BUILTIN + self.custom_names.len()
    }

    /// The protocol type at a dense index (see [`ProtocolType::index`]).
    pub fn type_at(&self, index: usize) -> Option<ProtocolType> {
        ProtocolType::builtin(index).or_else(|| {
            let i = index.checked_sub(ProtocolType::BUILTIN)?;
            (i < self.custom_names.len()).then_some(ProtocolType::Custom(i as u8))
        })
    }

    /// Labels one frame. Never panics; malformed headers are reported in the result.
    #[inline(always)]
    pub fn classify(&self, frame: &Frame<'_>) -> PacketMeta {
        // Built in the caller's frame and filled through a reference: returning a record
        // built inside a non-inlined function costs a 136-byte copy per packet.
        let mut meta = PacketMeta::empty(
            frame.ts_ns,
            frame.wire_len,
            frame.data.len() as u32,
            frame.interface,
        );
        self.label(frame, &mut meta);
        meta
    }

    /// [`Classifier::classify`] into a record the caller keeps (a reader's one record,
    /// reused frame after frame: no record is moved per packet).
    #[inline(always)]
    pub fn classify_into(&self, frame: &Frame<'_>, meta: &mut PacketMeta) {
        *meta = PacketMeta::empty(
            frame.ts_ns,
            frame.wire_len,
            frame.data.len() as u32,
            frame.interface,
        );
        self.label(frame, meta);
    }

    fn label(&self, frame: &Frame<'_>, meta: &mut PacketMeta) {
        let data = frame.data;
        if (data.len() as u32) < frame.wire_len {
            // Length errors in a frame the snaplen cut are not the sender's fault.
            meta.flags |= FLAG_SNAPPED_HEADER;
        }
        match frame.link {
            LinkType::Ethernet => match Ethernet2Slice::from_slice_without_fcs(data) {
                Ok(eth) => self.ether(meta, eth.ether_type().0, eth.payload_slice()),
                Err(_) => malformed(meta, "ethernet", "too short"),
            },
            // Cooked headers are read directly: etherparse rejects some valid ARPHRD values
            // (loopback among them) that Linux writes into SLL headers.
            LinkType::LinuxSll => match data.get(16..) {
                Some(payload) => {
                    self.cooked(meta, u16::from_be_bytes([data[14], data[15]]), payload)
                }
                None => malformed(meta, "linux_sll", "too short"),
            },
            LinkType::LinuxSll2 => match data.get(20..) {
                Some(payload) => self.ether(meta, u16::from_be_bytes([data[0], data[1]]), payload),
                None => malformed(meta, "linux_sll2", "too short"),
            },
            LinkType::Null | LinkType::Loop => match data.get(..4) {
                Some(h) => {
                    let family = if frame.link == LinkType::Loop {
                        u32::from_be_bytes([h[0], h[1], h[2], h[3]])
                    } else {
                        // Written in the capturing host's byte order: try both.
                        let le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                        if le > 0xffff {
                            le.swap_bytes()
                        } else {
                            le
                        }
                    };
                    match family {
                        2 | 10 | 24 | 28 | 30 => self.ip(meta, &data[4..]),
                        _ => meta.kind = ProtocolType::NonIp,
                    }
                }
                None => malformed(meta, "loopback", "too short"),
            },
            LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => self.ip(meta, data),
            LinkType::Other(_) => malformed(meta, "link", "unsupported link type"),
        }
        if let Some(src) = meta.src {
            meta.tenant = self.tenants.lookup(src);
        }
    }

    /// Linux cooked headers carry an ether type, or below 0x0600 a Linux protocol number
    /// (802.3, 802.2 LLC, CAN, …) that is not IP.
    #[inline]
    fn cooked(&self, meta: &mut PacketMeta, protocol: u16, payload: &[u8]) {
        if protocol < 0x0600 {
            meta.kind = ProtocolType::NonIp;
        } else {
            self.ether(meta, protocol, payload);
        }
    }

    /// From an ether type on: VLAN tags, MPLS labels, then IP or ARP.
    #[inline]
    fn ether(&self, meta: &mut PacketMeta, mut ether_type: u16, mut payload: &[u8]) {
        for _ in 0..4 {
            match ether_type {
                ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => match SingleVlanSlice::from_slice(payload) {
                    Ok(vlan) => {
                        let id = vlan.vlan_identifier().value();
                        if meta.outer_vlan.is_none() {
                            meta.outer_vlan = Some(id);
                        } else if meta.inner_vlan.is_none() {
                            meta.inner_vlan = Some(id);
                        }
                        ether_type = vlan.ether_type().0;
                        payload = vlan.payload_slice();
                    }
                    Err(_) => return self.short(meta, "vlan"),
                },
                _ => break,
            }
        }
        match ether_type {
            ETH_IPV4 | ETH_IPV6 => self.ip(meta, payload),
            ETH_ARP => meta.kind = ProtocolType::Arp,
            ETH_MPLS | ETH_MPLS_MC => {
                // Pop labels to the bottom of the stack, then guess the payload by version.
                let mut rest = payload;
                loop {
                    let Some(label) = rest.get(..4) else {
                        return self.short(meta, "mpls");
                    };
                    rest = &rest[4..];
                    if label[2] & 1 == 1 {
                        break;
                    }
                }
                match rest.first().map(|b| b >> 4) {
                    Some(4) | Some(6) => self.ip(meta, rest),
                    _ => meta.kind = ProtocolType::NonIp,
                }
            }
            _ => meta.kind = ProtocolType::NonIp,
        }
    }

    /// A header cut short: malformed, unless the capture's snaplen did the cutting.
    #[inline]
    fn short(&self, meta: &mut PacketMeta, layer: &'static str) {
        if meta.flags & FLAG_SNAPPED_HEADER != 0 {
            meta.kind = ProtocolType::NonIp;
        } else {
            malformed(meta, layer, "too short");
        }
    }

    /// `data` runs from the IP header to the end of the captured frame.
    #[inline]
    fn ip(&self, meta: &mut PacketMeta, data: &[u8]) {
        // Every layer above hands on the rest of the frame: the IP header's offset.
        let at = (meta.cap_len as usize).saturating_sub(data.len());
        match data.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(meta, data, at),
            Some(6) => self.ipv6(meta, data, at),
            Some(_) => malformed(meta, "ip", "unsupported version"),
            None => self.short(meta, "ipv4"),
        }
    }

    /// IPv6 through etherparse's lax slice (extension headers, fragments), the fragment state
    /// read from the extension chain with bounds checks.
    #[inline]
    fn ipv6(&self, meta: &mut PacketMeta, data: &[u8], at: usize) {
        let (v6, ext_err) = match LaxIpv6Slice::from_slice(data) {
            Ok(v) => v,
            Err(etherparse::err::ipv6::HeaderSliceError::Len(_)) => {
                return self.short(meta, "ipv6")
            }
            Err(etherparse::err::ipv6::HeaderSliceError::Content(_)) => {
                return malformed(meta, "ip", "unsupported version")
            }
        };
        let h = v6.header();
        meta.src = Some(IpAddr::V6(Ipv6Addr::from(h.source())));
        meta.dst = Some(IpAddr::V6(Ipv6Addr::from(h.destination())));
        let payload = v6.payload();
        if payload.fragmented {
            let exts = v6.extensions();
            meta.fragment = match exts.first_header() {
                Some(first) => ipv6_fragment(first.0, exts.slice()),
                None => Fragment::First,
            };
        }
        meta.ip_proto = payload.ip_number.0;
        // The fixed header and the extension headers walked.
        let consumed = payload.payload.as_ptr() as usize - data.as_ptr() as usize;
        set_headers_len(meta, at + consumed);
        if ext_err.is_some() {
            return self.short_or_bad(meta, "ip_extension");
        }
        if meta.fragment == Fragment::Later {
            meta.kind = ProtocolType::IpFragment;
            return;
        }
        // The IP payload's length as sent: the header's payload length less the extension
        // headers walked (a jumbogram's 0 falls back to the captured bytes).
        let sent = match usize::from(h.payload_length()) {
            0 => payload.payload.len(),
            n => (40 + n).saturating_sub(consumed),
        };
        self.transport(meta, payload.payload, sent, at + consumed);
    }

    /// IPv4, the common case, through etherparse's header slice alone: the header is checked
    /// once, the payload is cut at the total length (or the captured bytes, if fewer).
    #[inline]
    fn ipv4(&self, meta: &mut PacketMeta, data: &[u8], at: usize) {
        use etherparse::err::ipv4::HeaderSliceError;
        let h = match Ipv4HeaderSlice::from_slice(data) {
            Ok(h) => h,
            Err(HeaderSliceError::Len(_)) => return self.short(meta, "ipv4"),
            Err(HeaderSliceError::Content(e)) => {
                use etherparse::err::ipv4::HeaderError::*;
                let reason = match e {
                    UnexpectedVersion { .. } => "unsupported version",
                    HeaderLengthSmallerThanHeader { .. } => "header length below 20 bytes",
                };
                return malformed(meta, "ipv4", reason);
            }
        };
        meta.src = Some(IpAddr::V4(Ipv4Addr::from(h.source())));
        meta.dst = Some(IpAddr::V4(Ipv4Addr::from(h.destination())));
        if h.fragments_offset().value() != 0 {
            meta.fragment = Fragment::Later;
        } else if h.more_fragments() {
            meta.fragment = Fragment::First;
        }
        meta.ip_proto = h.protocol().0;
        let header_len = h.slice().len();
        set_headers_len(meta, at + header_len);
        if meta.fragment == Fragment::Later {
            meta.kind = ProtocolType::IpFragment;
            return;
        }
        let total = usize::from(h.total_len());
        let end = if total >= header_len && total <= data.len() {
            total
        } else {
            data.len()
        };
        let p = data.get(header_len..end).unwrap_or(&[]);
        let sent = if total >= header_len {
            total - header_len
        } else {
            p.len()
        };
        self.transport(meta, p, sent, at + header_len);
    }

    #[inline]
    fn short_or_bad(&self, meta: &mut PacketMeta, layer: &'static str) {
        if meta.flags & FLAG_SNAPPED_HEADER != 0 {
            meta.kind = ProtocolType::OtherIp;
        } else {
            malformed(meta, layer, "invalid or cut short");
        }
    }

    /// Transport header fields straight from the IP payload `p`, so that first fragments and
    /// snaplen-cut headers keep their ports and flags; `sent` is the IP payload's length as
    /// sent, which a snaplen may have cut `p` short of; `at` is its offset in the frame.
    #[inline]
    fn transport(&self, meta: &mut PacketMeta, p: &[u8], sent: usize, at: usize) {
        // The transport header's length: TCP's data offset (20 when it is not captured or
        // below 20), 8 for UDP and ICMP, nothing for other protocols.
        let own = match meta.ip_proto {
            6 => p.get(12).map_or(20, |b| usize::from(b >> 4) * 4).max(20),
            17 | 1 | 58 => 8,
            _ => 0,
        };
        set_headers_len(meta, at + own);
        match meta.ip_proto {
            6 => {
                if p.len() < 14 {
                    return self.transport_short(meta, "tcp");
                }
                meta.src_port = u16::from_be_bytes([p[0], p[1]]);
                meta.dst_port = u16::from_be_bytes([p[2], p[3]]);
                meta.tcp_seq = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                meta.tcp_ack = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                let flags = p[13];
                meta.tcp_flags = flags;
                let header_len = usize::from(p[12] >> 4) * 4;
                if header_len < 20 {
                    return malformed(meta, "tcp", "data offset below 5");
                }
                if let Some(w) = p.get(14..16) {
                    meta.tcp_window = u16::from_be_bytes([w[0], w[1]]);
                }
                if header_len > 20 {
                    if let Some(options) = p.get(20..header_len) {
                        tcp_timestamps(meta, options);
                    }
                }
                meta.payload_len = sent.saturating_sub(header_len) as u32;
                let (syn, ack, fin, rst) = (
                    flags & 0x02 != 0,
                    flags & 0x10 != 0,
                    flags & 0x01 != 0,
                    flags & 0x04 != 0,
                );
                meta.kind = if syn && !ack {
                    ProtocolType::TcpSyn
                } else if syn {
                    ProtocolType::TcpSynAck
                } else if rst {
                    ProtocolType::TcpRst
                } else if fin {
                    ProtocolType::TcpFin
                } else {
                    let payload = p.get(header_len..).unwrap_or(&[]);
                    let custom = self.custom(&self.tcp_ports, meta);
                    if let Some(kind) = custom {
                        kind
                    } else if !payload.is_empty()
                        || (p.len() < header_len && meta.wire_len > meta.cap_len)
                    {
                        tcp_payload_type(meta, payload)
                    } else if ack {
                        ProtocolType::TcpAck
                    } else {
                        ProtocolType::TcpOther
                    }
                };
                if p.len() < header_len {
                    self.note_short_header(meta, "tcp");
                }
            }
            17 => {
                if p.len() < 8 {
                    return self.transport_short(meta, "udp");
                }
                meta.src_port = u16::from_be_bytes([p[0], p[1]]);
                meta.dst_port = u16::from_be_bytes([p[2], p[3]]);
                // The datagram's length as sent, which a snaplen may have cut `p` short of.
                let len = usize::from(u16::from_be_bytes([p[4], p[5]]))
                    .checked_sub(8)
                    .unwrap_or(p.len() - 8);
                meta.payload_len = len as u32;
                meta.kind = match self.custom(&self.udp_ports, meta) {
                    Some(kind) => kind,
                    None => udp_payload_type(meta, &p[8..], len),
                };
            }
            1 | 58 => {
                if p.len() < 2 {
                    return self
                        .transport_short(meta, if meta.ip_proto == 1 { "icmp" } else { "icmpv6" });
                }
                meta.kind = if meta.ip_proto == 1 {
                    ProtocolType::Icmp
                } else {
                    ProtocolType::Icmpv6
                };
                meta.detail = Detail::Icmp {
                    ty: p[0],
                    code: p[1],
                    id: 0,
                    seq: 0,
                };
                if let (Some(_), Some(b)) = (meta.kind.echo(&meta.detail), p.get(4..8)) {
                    meta.detail = Detail::Icmp {
                        ty: p[0],
                        code: p[1],
                        id: u16::from_be_bytes([b[0], b[1]]),
                        seq: u16::from_be_bytes([b[2], b[3]]),
                    };
                }
            }
            _ => meta.kind = ProtocolType::OtherIp,
        }
    }

    #[inline]
    fn custom(&self, table: &PortTypes, meta: &PacketMeta) -> Option<ProtocolType> {
        if !table.any {
            return None;
        }
        let by_dst = table.get(meta.dst_port);
        let idx = if by_dst != 0 {
            by_dst
        } else {
            table.get(meta.src_port)
        };
        (idx != 0).then(|| ProtocolType::Custom(idx - 1))
    }

    fn transport_short(&self, meta: &mut PacketMeta, layer: &'static str) {
        if meta.flags & FLAG_SNAPPED_HEADER != 0 || meta.fragment == Fragment::First {
            meta.kind = ProtocolType::OtherIp;
        } else {
            malformed(meta, layer, "too short");
        }
    }

    fn note_short_header(&self, meta: &mut PacketMeta, layer: &'static str) {
        if meta.flags & FLAG_SNAPPED_HEADER == 0 && meta.fragment == Fragment::No {
            malformed(meta, layer, "options cut short");
        }
    }
}

/// Fragment state from the raw IPv6 extension headers, walked with bounds checks.
///
/// etherparse's extension iterator trusts the slice it was given; after a lax parse that
/// stopped inside an extension header that trust does not hold (found by fuzzing), so the
/// chain is walked here instead.
fn ipv6_fragment(mut next: u8, mut exts: &[u8]) -> Fragment {
    for _ in 0..16 {
        let len = match (next, exts) {
            (0 | 43 | 60 | 135 | 139 | 140, [_, l, ..]) => (usize::from(*l) + 1) * 8,
            (51, [_, l, ..]) => (usize::from(*l) + 2) * 4,
            (44, [_, _, hi, lo, ..]) => {
                let offset = u16::from_be_bytes([*hi, *lo]) >> 3;
                return if offset == 0 {
                    Fragment::First
                } else {
                    Fragment::Later
                };
            }
            _ => break,
        };
        next = exts[0];
        match exts.get(len..) {
            Some(rest) => exts = rest,
            None => break,
        }
    }
    Fragment::First
}

/// The timestamps option (kind 8, length 10) among TCP `options`, walked with bounds checks;
/// the common Linux layout (NOP, NOP, timestamps) is matched first.
#[inline]
fn tcp_timestamps(meta: &mut PacketMeta, options: &[u8]) {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if let [1, 1, 8, 10, ts @ ..] = options {
        if ts.len() >= 8 {
            meta.tcp_tsval = be(&ts[0..4]);
            meta.tcp_tsecr = be(&ts[4..8]);
            meta.flags |= FLAG_TCP_TIMESTAMPS;
            return;
        }
    }
    let mut rest = options;
    while let [kind, tail @ ..] = rest {
        match kind {
            0 => return,
            1 => rest = tail,
            _ => {
                let Some(&len) = tail.first() else { return };
                let len = usize::from(len);
                if len < 2 || len > rest.len() {
                    return;
                }
                if *kind == 8 && len == 10 {
                    meta.tcp_tsval = be(&rest[2..6]);
                    meta.tcp_tsecr = be(&rest[6..10]);
                    meta.flags |= FLAG_TCP_TIMESTAMPS;
                    return;
                }
                rest = &rest[len..];
            }
        }
    }
}

/// Label for TCP payload from its first bytes.
#[inline]
fn tcp_payload_type(meta: &mut PacketMeta, payload: &[u8]) -> ProtocolType {
    if let [t @ 20..=23, 3, minor, ..] = payload {
        if *minor <= 4 {
            return match t {
                20 => ProtocolType::TlsChangeCipherSpec,
                21 => ProtocolType::TlsAlert,
                22 => ProtocolType::TlsHandshake,
                _ => ProtocolType::TlsApplicationData,
            };
        }
    }
    let port = |p: u16| meta.src_port == p || meta.dst_port == p;
    if port(179) && payload.len() >= 16 && payload[..16].iter().all(|b| *b == 0xff) {
        return ProtocolType::Bgp;
    }
    if port(53) {
        return ProtocolType::Dns;
    }
    if is_http_request(payload) {
        meta.detail = Detail::Http(HttpLine::Request {
            upgrade: has_upgrade_header(payload),
        });
        return ProtocolType::HttpRequest;
    }
    if let Some(status) = http_status(payload) {
        meta.detail = Detail::Http(HttpLine::Response { status });
        return ProtocolType::HttpResponse;
    }
    ProtocolType::TcpData
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 101 …`).
#[inline]
fn http_status(p: &[u8]) -> Option<u16> {
    match p {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0' | b'1', b' ', a, b, c, b' ' | b'\r', ..]
            if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() && *a >= b'1' =>
        {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Whether a request's header block (as far as it was captured) has an `Upgrade` header.
/// Only header names are compared; values are never read.
fn has_upgrade_header(p: &[u8]) -> bool {
    let head = &p[..p.len().min(4096)];
    head.split(|b| *b == b'\n')
        .skip(1)
        .take_while(|line| !line.is_empty() && *line != b"\r")
        .any(|line| line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"upgrade:"))
}

#[inline]
fn is_http_request(p: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    match p.first() {
        Some(b'G' | b'P' | b'H' | b'D' | b'O' | b'C' | b'T') => {
            METHODS.iter().any(|m| p.starts_with(m))
        }
        _ => false,
    }
}

/// Label for UDP payload from ports and first bytes; `len` is the datagram's payload length.
#[inline]
fn udp_payload_type(meta: &mut PacketMeta, payload: &[u8], len: usize) -> ProtocolType {
    let port = |p: u16| meta.dst_port == p || meta.src_port == p;
    if port(3784) || port(4784) {
        if let Some(bfd) = parse_bfd(payload) {
            meta.detail = Detail::Bfd(bfd);
            return if port(4784) {
                ProtocolType::BfdMultihop
            } else {
                ProtocolType::BfdControl
            };
        }
    }
    if meta.dst_port == 3785 {
        return ProtocolType::BfdEcho;
    }
    if port(53) || port(5353) || port(5355) {
        return ProtocolType::Dns;
    }
    if let Some(version) = quic_long_header(payload) {
        meta.detail = Detail::Quic { version };
        return if setups::quic_client_initial(meta, payload, len, version) {
            ProtocolType::QuicInitial
        } else {
            ProtocolType::Quic
        };
    }
    setups::udp_setup(meta, payload, len).unwrap_or(ProtocolType::Udp)
}

/// RFC 5880 §4.1 mandatory section: version 1, at least 24 bytes.
fn parse_bfd(p: &[u8]) -> Option<BfdControl> {
    let h = p.get(..24)?;
    if h[0] >> 5 != 1 || h[2] == 0 || usize::from(h[3]) < 24 {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    Some(BfdControl {
        diag: h[0] & 0x1f,
        state: match h[1] >> 6 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        },
        flags: h[1] & 0x3f,
        detect_mult: h[2],
        my_disc: be(4),
        your_disc: be(8),
        desired_min_tx_us: be(12),
        required_min_rx_us: be(16),
    })
}

/// QUIC long header (RFC 9000 §17.2) with a known version, or a gQUIC public header
/// with a version tag ("Q0xx").
fn quic_long_header(p: &[u8]) -> Option<u32> {
    let b0 = *p.first()?;
    if b0 & 0x80 != 0 {
        let v = p.get(1..5)?;
        let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        let known = version == 0
            || version == 1
            || version == 0x6b33_43cf
            || version >> 8 == 0x00ff_0000
            || (v[0] == b'Q' && v[1].is_ascii_digit())
            || version & 0x0f0f_0f0f == 0x0a0a_0a0a;
        return known.then_some(version);
    }
    // gQUIC public header: flags with the version bit, an 8-byte connection id, "Q0xx".
    if b0 & 0x01 != 0 && b0 & 0x08 != 0 {
        let v = p.get(9..13)?;
        if v[0] == b'Q' && v[1..].iter().all(u8::is_ascii_digit) {
            return Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        }
    }
    None
}
