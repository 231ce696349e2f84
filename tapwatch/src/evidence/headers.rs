//! Where a frame's headers end: the link header, VLAN tags and MPLS labels, the IP header
//! with IPv6 extension headers, and the transport header (TCP's data offset, UDP's and
//! ICMP's 8 bytes). Nothing past it is ever kept, so a capture holds no payload byte.
use tapwatch_capture::LinkType;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;

/// Bytes of `data` (captured bytes from the link header on) up to the end of the transport
/// header, at most the captured length; `None` for frames without an IP header.
#[inline]
pub fn header_len(link: LinkType, data: &[u8]) -> Option<usize> {
    let ip = match link {
        LinkType::Ethernet => ether(data, 12)?,
        LinkType::LinuxSll => ether(data, 14)?,
        LinkType::LinuxSll2 => {
            let t = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            ether_from(data, t, 20)?
        }
        LinkType::Null | LinkType::Loop => 4,
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => 0,
        LinkType::Other(_) => return None,
    };
    let end = ip_end(data, ip)?;
    Some(end.min(data.len()))
}

/// The IP header's offset after the ether type at `at`.
#[inline]
fn ether(data: &[u8], at: usize) -> Option<usize> {
    let t = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
    ether_from(data, t, at + 2)
}

/// Walks VLAN tags and MPLS labels from ether type `t` whose payload starts at `at`.
#[inline]
fn ether_from(data: &[u8], mut t: u16, mut at: usize) -> Option<usize> {
    for _ in 0..4 {
        if !matches!(t, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
            break;
        }
        t = u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?]);
        at += 4;
    }
    match t {
        ETH_IPV4 | ETH_IPV6 => Some(at),
        ETH_MPLS | ETH_MPLS_MC => {
            for _ in 0..16 {
                let bottom = data.get(at + 2)? & 1 == 1;
                at += 4;
                if bottom {
                    return Some(at);
                }
            }
            None
        }
        _ => None,
    }
}

/// The end of the transport header of the IP packet at `ip` (or of the IP header for
/// later fragments and other protocols).
#[inline]
fn ip_end(data: &[u8], ip: usize) -> Option<usize> {
    let first = *data.get(ip)?;
    let (mut proto, mut at, later) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            let frag = u16::from_be_bytes([*data.get(ip + 6)?, *data.get(ip + 7)?]) & 0x1fff;
            (*data.get(ip + 9)?, ip + ihl.max(20), frag != 0)
        }
        6 => (*data.get(ip + 6)?, ip + 40, false),
        _ => return None,
    };
    let mut later = later;
    if first >> 4 == 6 {
        // Extension headers: hop-by-hop, routing, destination options, AH, fragment.
        for _ in 0..8 {
            match proto {
                0 | 43 | 60 => {
                    let len = (usize::from(*data.get(at + 1)?) + 1) * 8;
                    proto = *data.get(at)?;
                    at += len;
                }
                51 => {
                    let len = (usize::from(*data.get(at + 1)?) + 2) * 4;
                    proto = *data.get(at)?;
                    at += len;
                }
                44 => {
                    let off = u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?]) >> 3;
                    later = off != 0;
                    proto = *data.get(at)?;
                    at += 8;
                }
                _ => break,
            }
        }
    }
    if later {
        return Some(at);
    }
    let l4 = match proto {
        6 => data
            .get(at + 12)
            .map_or(20, |b| usize::from(b >> 4) * 4)
            .max(20),
        17 | 1 | 58 => 8,
        _ => 0,
    };
    Some(at + l4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_v4(options: usize, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = 20 + 20 + options + payload;
        f.extend([
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        let mut tcp = vec![0u8; 20 + options];
        tcp[12] = (((20 + options) / 4) << 4) as u8;
        f.extend(tcp);
        f.extend(vec![0xaa; payload]);
        f
    }

    #[test]
    fn tcp_headers_end_before_the_payload() {
        assert_eq!(header_len(LinkType::Ethernet, &tcp_v4(0, 100)), Some(54));
        assert_eq!(header_len(LinkType::Ethernet, &tcp_v4(12, 100)), Some(66));
        // Cut by the snaplen: never past the captured bytes.
        assert_eq!(
            header_len(LinkType::Ethernet, &tcp_v4(12, 0)[..40]),
            Some(40)
        );
        // Ethernet padding of a small frame is not header.
        let mut padded = tcp_v4(0, 0);
        padded.extend([0; 6]);
        assert_eq!(header_len(LinkType::Ethernet, &padded), Some(54));
    }

    #[test]
    fn vlan_tags_and_non_ip() {
        let mut f = tcp_v4(0, 10);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(header_len(LinkType::Ethernet, &f), Some(58));
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06]);
        arp.extend([0; 28]);
        assert_eq!(header_len(LinkType::Ethernet, &arp), None);
    }
}
