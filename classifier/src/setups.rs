//! Connection setups of encrypted UDP protocols, recognised from the first payload bytes.
//!
//! Each check is a few byte comparisons at fixed offsets after a length pre-check: the
//! cleartext fields every implementation must send (message types, reserved zero bytes,
//! versions, length fields that must agree with the datagram). Nothing is decrypted and no
//! byte is kept. Ports are only a hint (IKE's 500/4500, OpenVPN's 1194, QUIC's 443 to tell
//! a server's Initial from a client's).
//!
//! `p` is the captured UDP payload; `len` is the datagram's payload length from the UDP
//! header, which a snaplen may have cut `p` short of.
use crate::meta::{PacketMeta, ProtocolType};

/// QUIC version 2 (RFC 9369), whose long-header types are numbered apart from v1's.
const QUIC_V2: u32 = 0x6b33_43cf;

/// The setup type of a UDP payload that is not QUIC, if it is one.
#[inline]
pub(crate) fn udp_setup(meta: &PacketMeta, p: &[u8], len: usize) -> Option<ProtocolType> {
    let port = |n: u16| meta.src_port == n || meta.dst_port == n;
    if port(500) && ike_sa_init(p, len) {
        return Some(ProtocolType::IkeSaInit);
    }
    if port(4500) && p.get(..4) == Some(&[0; 4]) && ike_sa_init(&p[4..], len.saturating_sub(4)) {
        return Some(ProtocolType::IkeSaInit);
    }
    let (kind, setup) = match *p.first()? {
        1 => (
            ProtocolType::WireguardInitiation,
            wireguard_initiation(p, len),
        ),
        22 => (ProtocolType::DtlsClientHello, dtls_client_hello(p, len)),
        0x38 | 0x50 => (
            ProtocolType::OpenvpnHardReset,
            openvpn_hard_reset(p, len, port(1194)),
        ),
        _ => return None,
    };
    setup.then_some(kind)
}

/// A QUIC long header of `version` (already recognised) that is a client's Initial:
/// type Initial (v1 and drafts: 0, v2: 1), fixed bit set, a destination connection ID of
/// 8 to 20 bytes (RFC 9000 §7.2: a client's first DCID has at least 8), a datagram padded
/// to 1200 bytes (§14.1), a Length that covers a packet number and the header-protection
/// sample (≥ 20) and fits the datagram, and no Handshake packet coalesced after it (a
/// client has no handshake keys before the server's first flight; a server's first flight
/// usually carries both). Not from port 443 to another port: a server's.
#[inline]
pub(crate) fn quic_client_initial(meta: &PacketMeta, p: &[u8], len: usize, version: u32) -> bool {
    let (initial, handshake) = match version {
        QUIC_V2 => (1, 3),
        v if v == 1 || v >> 8 == 0x00ff_0000 => (0, 2),
        _ => return false,
    };
    let long_type = |b: u8| (b & 0xc0 == 0xc0).then_some((b >> 4) & 3);
    if p.first().and_then(|b| long_type(*b)) != Some(initial)
        || len < 1200
        || (meta.src_port == 443 && meta.dst_port != 443)
    {
        return false;
    }
    let initial_end = || {
        let dcid = usize::from(*p.get(5)?);
        if !(8..=20).contains(&dcid) {
            return None;
        }
        let scid = usize::from(*p.get(6 + dcid)?);
        if scid > 20 {
            return None;
        }
        let mut at = 7 + dcid + scid;
        let (token, n) = varint(p.get(at..)?)?;
        at = at
            .checked_add(n)?
            .checked_add(usize::try_from(token).ok()?)?;
        let (length, n) = varint(p.get(at..)?)?;
        let end = (at + n).checked_add(usize::try_from(length).ok()?)?;
        (length >= 20 && end <= len).then_some(end)
    };
    match initial_end() {
        Some(end) => p.get(end).and_then(|b| long_type(*b)) != Some(handshake),
        None => false,
    }
}

/// A QUIC variable-length integer (RFC 9000 §16) and its length in bytes.
#[inline]
fn varint(p: &[u8]) -> Option<(u64, usize)> {
    let n = 1usize << (p.first()? >> 6);
    let bytes = p.get(..n)?;
    let value = bytes[1..]
        .iter()
        .fold(u64::from(bytes[0] & 0x3f), |v, b| (v << 8) | u64::from(*b));
    Some((value, n))
}

/// WireGuard handshake initiation: message type 1, three reserved zero bytes, and exactly
/// 148 bytes (the response is type 2 and 92 bytes).
#[inline]
fn wireguard_initiation(p: &[u8], len: usize) -> bool {
    len == 148 && p.get(..4) == Some(&[1, 0, 0, 0])
}

/// IKEv2 IKE_SA_INIT request (RFC 7296 §3.1): non-zero initiator SPI, zero responder SPI,
/// first payload SA (33) or a cookie Notify (41), version 2.x, exchange type 34, the
/// initiator flag without the response flag, message ID 0, and a length equal to the
/// message's.
#[inline]
fn ike_sa_init(p: &[u8], len: usize) -> bool {
    let Some(h) = p.get(..28) else { return false };
    h[..8] != [0; 8]
        && h[8..16] == [0; 8]
        && matches!(h[16], 33 | 41)
        && h[17] >> 4 == 2
        && h[18] == 34
        && h[19] & 0x28 == 0x08
        && h[20..24] == [0; 4]
        && u32::from_be_bytes([h[24], h[25], h[26], h[27]]) as usize == len
}

/// DTLS ClientHello (RFC 6347 §4.1, RFC 9147 §4): a handshake record (22) of DTLS 1.0, 1.2
/// or 1.3 in epoch 0 that holds exactly one handshake fragment, a ClientHello (1) with
/// message_seq 0 (the retry that echoes a cookie has 1) and fragment offset 0, whose body
/// opens with client_version DTLS 1.0 or 1.2.
#[inline]
fn dtls_client_hello(p: &[u8], len: usize) -> bool {
    let Some(h) = p.get(..27) else { return false };
    let u24 = |i: usize| u32::from_be_bytes([0, h[i], h[i + 1], h[i + 2]]) as usize;
    let record = usize::from(u16::from_be_bytes([h[11], h[12]]));
    h[1] == 0xfe
        && matches!(h[2], 0xff | 0xfd | 0xfc)
        && h[3..5] == [0, 0]
        && 13 + record <= len
        && h[13] == 1
        && h[17..22] == [0; 5]
        && record == 12 + u24(22)
        && u24(22) <= u24(14)
        && h[25] == 0xfe
        && matches!(h[26], 0xff | 0xfd)
}

/// OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7) or V3 (10) with key id 0 and a
/// non-zero session id. The opcode byte is the only field every mode leaves in clear
/// (tls-crypt encrypts the rest), so beyond it this takes either the port hint (1194) or
/// the exact V2 layout without tls-auth: 14 bytes ending in ack count 0 and message
/// packet-id 0.
#[inline]
fn openvpn_hard_reset(p: &[u8], len: usize, port_hint: bool) -> bool {
    let Some(h) = p.get(..14) else { return false };
    if h[1..9] == [0; 8] {
        return false;
    }
    let plain = h[0] == 0x38 && len == 14 && h[9..14] == [0; 5];
    port_hint || plain
}
