//! Header parsing and packet labelling.
//!
//! `tapwatch-classifier` turns a capture [`Frame`](tapwatch_capture::Frame) into a
//! [`PacketMeta`]: a small `Copy` record with the frame's timestamp and sizes, its size
//! class, VLAN ids, addresses, ports, TCP flags, a [`ProtocolType`] label and the tenant
//! of its source. Headers are read in place with `etherparse` slices; nothing is copied
//! or allocated per packet, and no payload byte leaves this crate — only labels derived
//! from the first bytes (TLS record type, BFD fields, QUIC version, HTTP method, and
//! the first handshake packets of QUIC, WireGuard, IKEv2, DTLS and OpenVPN).
//!
//! ```
//! use tapwatch_capture::{Frame, LinkType};
//! use tapwatch_classifier::{Classifier, ProtocolType};
//!
//! // A TCP SYN from 10.0.0.1:40000 to 10.0.0.2:443, as raw IPv4.
//! let syn = [
//!     0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
//!     0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
//! ];
//! let frame = Frame { ts_ns: 0, wire_len: 40, link: LinkType::RawIp, interface: 0, data: &syn };
//! let meta = Classifier::default().classify(&frame);
//! assert_eq!(meta.kind, ProtocolType::TcpSyn);
//! assert_eq!(meta.dst_port, 443);
//! ```
//!
//! # No-panic guarantee
//! Every length comes from the frame's slice and is checked before it is read; etherparse
//! slices check their own. Whatever the bytes, [`Classifier::classify`] returns a record —
//! malformed headers are reported in [`PacketMeta::malformed`], never by a panic. A
//! property test feeds it random bytes on every link type, and `fuzz/` holds a target.
#![deny(missing_docs)]

mod classify;
mod config;
mod flow;
mod meta;
pub mod setting;
mod setups;
mod tenant;

pub use classify::Classifier;
pub use config::{read_text, ClassifierConfig, ConfigError, PortMapping, Transport};
pub use flow::flow_hash;
pub use meta::{
    endpoint_le, BfdControl, BfdState, Detail, Fragment, HttpLine, Malformed, PacketMeta,
    ProtocolType, SizeClass, TenantId, FLAG_SNAPPED_HEADER, FLAG_TCP_TIMESTAMPS,
};
pub use setting::{SettingError, SettingPath};
pub use tenant::{TenantMap, UNASSIGNED};

#[cfg(test)]
mod tests;
