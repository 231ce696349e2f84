//! An alert's subject as a packet filter: an address, a service, an echo responder, a
//! flow, or a tenant (its prefixes, through the classifier's tenant map).
use std::net::{IpAddr, SocketAddr};

use tapwatch_classifier::{TenantId, TenantMap};

use super::ring::Slot;

/// Which packets involve an alert's subject.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// Packets from or to the address (`ADDR`, or `ADDR TYPE SIZE`).
    Address(IpAddr),
    /// Packets from or to `ADDR:PORT` of one protocol (`ADDR:PORT/proto`).
    Service(IpAddr, u16, u8),
    /// Packets from or to the address of one protocol (`ADDR/icmp`).
    Protocol(IpAddr, u8),
    /// Both directions of a flow `A:P->B:Q/proto`; A's port only for TCP (UDP senders
    /// may change source port between beats).
    Flow {
        /// One end.
        a: SocketAddr,
        /// The other end.
        b: SocketAddr,
        /// IP protocol.
        proto: u8,
    },
    /// Packets from or to any of the tenant's prefixes.
    Tenant(TenantId),
}

fn proto_number(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        n => n.parse().ok(),
    }
}

impl Subject {
    /// The filter for `subject` (as alerts write it); a subject naming a tenant of
    /// `tenants` matches its prefixes. `None` when it names nothing packets carry.
    pub fn parse(subject: &str, tenants: &TenantMap) -> Option<Subject> {
        if let Some(i) = tenants.names().iter().position(|n| n == subject) {
            return Some(Subject::Tenant(TenantId(i as u16)));
        }
        if let Some((flow, proto)) = subject.rsplit_once('/') {
            let proto = proto_number(proto)?;
            if let Some((a, b)) = flow.split_once("->") {
                return Some(Subject::Flow {
                    a: a.parse().ok()?,
                    b: b.parse().ok()?,
                    proto,
                });
            }
            if let Ok(s) = flow.parse::<SocketAddr>() {
                return Some(Subject::Service(s.ip(), s.port(), proto));
            }
            return Some(Subject::Protocol(flow.parse().ok()?, proto));
        }
        let first = subject.split(' ').next()?;
        first.parse().ok().map(Subject::Address)
    }

    /// Whether a packet with this flow key involves the subject.
    #[inline]
    pub fn matches(&self, s: &Slot, tenants: &TenantMap) -> bool {
        let (src, dst) = (s.src(), s.dst());
        match *self {
            Subject::Address(a) => src == a || dst == a,
            Subject::Protocol(a, p) => s.proto == p && (src == a || dst == a),
            Subject::Service(a, port, p) => {
                s.proto == p
                    && ((dst == a && s.dst_port == port) || (src == a && s.src_port == port))
            }
            Subject::Flow { a, b, proto } => {
                let tcp = proto == 6;
                s.proto == proto
                    && ((src == a.ip()
                        && dst == b.ip()
                        && s.dst_port == b.port()
                        && (!tcp || s.src_port == a.port()))
                        || (src == b.ip()
                            && dst == a.ip()
                            && s.src_port == b.port()
                            && (!tcp || s.dst_port == a.port())))
            }
            Subject::Tenant(t) => tenants.lookup(src) == t || tenants.lookup(dst) == t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_as_alerts_write_them() {
        let t = TenantMap::default();
        let a: IpAddr = "192.0.2.80".parse().unwrap();
        assert_eq!(Subject::parse("192.0.2.80", &t), Some(Subject::Address(a)));
        assert_eq!(
            Subject::parse("192.0.2.80 udp_other large", &t),
            Some(Subject::Address(a))
        );
        assert_eq!(
            Subject::parse("192.0.2.80:443/tcp", &t),
            Some(Subject::Service(a, 443, 6))
        );
        assert_eq!(
            Subject::parse("[2001:db8::1]:443/udp", &t),
            Some(Subject::Service("2001:db8::1".parse().unwrap(), 443, 17))
        );
        assert_eq!(
            Subject::parse("192.0.2.80/icmp", &t),
            Some(Subject::Protocol(a, 1))
        );
        assert!(matches!(
            Subject::parse("198.51.100.1:49160->198.51.100.2:3784/udp", &t),
            Some(Subject::Flow { proto: 17, .. })
        ));
        assert_eq!(Subject::parse("no-such-tenant", &t), None);
        assert_eq!(
            Subject::parse("unassigned", &t),
            Some(Subject::Tenant(TenantId(0)))
        );
    }
}
