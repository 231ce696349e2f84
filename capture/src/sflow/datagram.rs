//! Decoding of sFlow version 5 datagrams (sflow.org, "sFlow Version 5", July 2004): the
//! datagram header, flow samples and expanded flow samples with their raw packet header
//! records, counter samples and expanded counter samples with generic interface counters.
//! Other sample and record types are reported by their enterprise and format and skipped by
//! their length, as the specification asks of a collector.
//!
//! Decoding borrows from the datagram and allocates nothing. Every length and count comes
//! from the sender and is checked against the bytes that are there: a datagram that lies
//! is an [`SflowError`] naming what was wrong and where, never a panic.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::xdr::Xdr;
use crate::LinkType;

/// Why a datagram (or part of it) could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SflowFault {
    /// Shorter than the datagram header.
    ShortHeader,
    /// A version other than 5.
    Version,
    /// An agent address type other than 1 (IPv4) or 2 (IPv6).
    AgentAddress,
    /// A sample whose length runs past the datagram, or fewer samples than counted.
    SampleLength,
    /// A sample shorter than its own fixed fields.
    ShortSample,
    /// A record whose length runs past its sample, or fewer records than counted.
    RecordLength,
    /// A raw packet header longer than its record.
    HeaderLength,
    /// A counters record shorter than its fixed fields.
    ShortCounters,
}

impl SflowFault {
    /// Every fault, for counters that list them all.
    pub const ALL: [SflowFault; 8] = [
        SflowFault::ShortHeader,
        SflowFault::Version,
        SflowFault::AgentAddress,
        SflowFault::SampleLength,
        SflowFault::ShortSample,
        SflowFault::RecordLength,
        SflowFault::HeaderLength,
        SflowFault::ShortCounters,
    ];

    /// Stable label for metrics and summaries.
    pub fn name(self) -> &'static str {
        match self {
            SflowFault::ShortHeader => "short_header",
            SflowFault::Version => "version",
            SflowFault::AgentAddress => "agent_address",
            SflowFault::SampleLength => "sample_length",
            SflowFault::ShortSample => "short_sample",
            SflowFault::RecordLength => "record_length",
            SflowFault::HeaderLength => "header_length",
            SflowFault::ShortCounters => "short_counters",
        }
    }

    /// What was expected, for people.
    pub fn expected(self) -> &'static str {
        match self {
            SflowFault::ShortHeader => "a datagram header of at least 28 bytes",
            SflowFault::Version => "sFlow version 5",
            SflowFault::AgentAddress => "agent address type 1 (IPv4) or 2 (IPv6)",
            SflowFault::SampleLength => "samples within the datagram, as many as counted",
            SflowFault::ShortSample => "a sample at least as long as its fixed fields",
            SflowFault::RecordLength => "records within their sample, as many as counted",
            SflowFault::HeaderLength => "a sampled header within its record",
            SflowFault::ShortCounters => "a counters record at least as long as its fields",
        }
    }
}

/// A decoding error: what was wrong, at which byte of the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("sFlow datagram byte {offset}: expected {}", fault.expected())]
pub struct SflowError {
    /// What was wrong.
    pub fault: SflowFault,
    /// Byte offset in the datagram where it was found.
    pub offset: usize,
}

/// The header of one sFlow v5 datagram, and its samples to iterate.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The agent (switch) that sent it.
    pub agent: IpAddr,
    /// Sub-agent within the agent.
    pub sub_agent: u32,
    /// Datagram sequence number of this (agent, sub-agent).
    pub sequence: u32,
    /// The agent's uptime, ms.
    pub uptime_ms: u32,
    /// Samples the datagram says it holds.
    pub sample_count: u32,
    body: &'a [u8],
    body_offset: usize,
}

impl<'a> Datagram<'a> {
    /// Decodes a datagram's header; its samples are decoded as they are iterated.
    pub fn parse(buf: &'a [u8]) -> Result<Datagram<'a>, SflowError> {
        let mut x = Xdr::new(buf);
        let short = |x: &Xdr<'_>| SflowError {
            fault: SflowFault::ShortHeader,
            offset: x.pos(),
        };
        let version = x.u32().ok_or(short(&x))?;
        if version != 5 {
            return Err(SflowError {
                fault: SflowFault::Version,
                offset: 0,
            });
        }
        let agent = match x.u32().ok_or(short(&x))? {
            1 => {
                let a = x.opaque(4).ok_or(short(&x))?;
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            }
            2 => {
                let a = x.opaque(16).ok_or(short(&x))?;
                let mut o = [0u8; 16];
                o.copy_from_slice(a);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => {
                return Err(SflowError {
                    fault: SflowFault::AgentAddress,
                    offset: 4,
                })
            }
        };
        let sub_agent = x.u32().ok_or(short(&x))?;
        let sequence = x.u32().ok_or(short(&x))?;
        let uptime_ms = x.u32().ok_or(short(&x))?;
        let sample_count = x.u32().ok_or(short(&x))?;
        Ok(Datagram {
            agent,
            sub_agent,
            sequence,
            uptime_ms,
            sample_count,
            body: &buf[x.pos()..],
            body_offset: x.pos(),
        })
    }

    /// The samples, in order; iteration ends after the first error.
    pub fn samples(&self) -> Samples<'a> {
        Samples {
            x: Xdr::new(self.body),
            base: self.body_offset,
            left: self.sample_count,
            failed: false,
        }
    }
}

/// Where a sample was taken: the data source's type (0 ifIndex, 1 smonVlanDataSource,
/// 2 entPhysicalEntry) and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    /// Data source type.
    pub kind: u32,
    /// Data source index.
    pub index: u32,
}

/// One sample of a datagram.
#[derive(Clone, Copy, Debug)]
pub enum Sample<'a> {
    /// A flow sample (format 1) or expanded flow sample (format 3).
    Flow(FlowSample<'a>),
    /// A counters sample (format 2) or expanded counters sample (format 4).
    Counters(CounterSample<'a>),
    /// A sample of another enterprise or format, skipped by its length.
    Other {
        /// Enterprise number (0: sFlow's own).
        enterprise: u32,
        /// Format within the enterprise.
        format: u32,
    },
}

/// One sampled packet: how it was sampled and its records.
#[derive(Clone, Copy, Debug)]
pub struct FlowSample<'a> {
    /// Sample sequence number of its data source.
    pub sequence: u32,
    /// Its data source.
    pub source: SourceId,
    /// 1 in this many packets was sampled.
    pub sampling_rate: u32,
    /// Packets that could have been sampled so far (sampled or not).
    pub sample_pool: u32,
    /// Samples the agent dropped for lack of resources.
    pub drops: u32,
    /// Input interface (ifIndex; 0 unknown).
    pub input: u32,
    /// Output interface (ifIndex; 0 unknown; see the specification for multiple and
    /// discarded).
    pub output: u32,
    /// Records the sample says it holds.
    pub record_count: u32,
    records: &'a [u8],
    records_offset: usize,
}

impl<'a> FlowSample<'a> {
    /// The sample's flow records, in order; iteration ends after the first error.
    pub fn records(&self) -> Records<'a> {
        Records {
            x: Xdr::new(self.records),
            base: self.records_offset,
            left: self.record_count,
            failed: false,
        }
    }
}

/// Interface counters of one data source at one moment.
#[derive(Clone, Copy, Debug)]
pub struct CounterSample<'a> {
    /// Sample sequence number of its data source.
    pub sequence: u32,
    /// Its data source.
    pub source: SourceId,
    /// Records the sample says it holds.
    pub record_count: u32,
    records: &'a [u8],
    records_offset: usize,
}

impl<'a> CounterSample<'a> {
    /// The sample's counter records, in order; iteration ends after the first error.
    pub fn records(&self) -> CounterRecords<'a> {
        CounterRecords(Records {
            x: Xdr::new(self.records),
            base: self.records_offset,
            left: self.record_count,
            failed: false,
        })
    }
}

/// How the sampled header is framed (sFlow's `header_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderProtocol {
    /// 1: Ethernet (ISO 8802-3).
    Ethernet,
    /// 11: a bare IPv4 packet.
    Ipv4,
    /// 12: a bare IPv6 packet.
    Ipv6,
    /// Any other (token ring, FDDI, PPP, MPLS, …), kept by number.
    Other(u32),
}

impl HeaderProtocol {
    fn from_u32(v: u32) -> HeaderProtocol {
        match v {
            1 => HeaderProtocol::Ethernet,
            11 => HeaderProtocol::Ipv4,
            12 => HeaderProtocol::Ipv6,
            n => HeaderProtocol::Other(n),
        }
    }

    /// The link type the classifier reads the header as, if it reads this protocol.
    pub fn link_type(self) -> Option<LinkType> {
        match self {
            HeaderProtocol::Ethernet => Some(LinkType::Ethernet),
            HeaderProtocol::Ipv4 => Some(LinkType::Ipv4),
            HeaderProtocol::Ipv6 => Some(LinkType::Ipv6),
            HeaderProtocol::Other(_) => None,
        }
    }
}

/// The first bytes of a sampled packet (flow record format 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader<'a> {
    /// How the bytes are framed.
    pub protocol: HeaderProtocol,
    /// The packet's length as received, before anything was stripped.
    pub frame_length: u32,
    /// Bytes removed from the end before sampling (an Ethernet FCS, typically 4).
    pub stripped: u32,
    /// The sampled bytes.
    pub header: &'a [u8],
}

impl RawHeader<'_> {
    /// The packet's length as a capture would record it (without what was stripped).
    pub fn wire_len(&self) -> u32 {
        self.frame_length.saturating_sub(self.stripped)
    }
}

/// One record of a flow sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowRecord<'a> {
    /// Sampled packet header (format 1).
    RawHeader(RawHeader<'a>),
    /// Another record (extended switch, router, gateway, … data), skipped.
    Other {
        /// Enterprise number.
        enterprise: u32,
        /// Format within the enterprise.
        format: u32,
    },
}

/// Generic interface counters (counter record format 1, RFC 2233's ifTable and ifXTable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// ifIndex.
    pub if_index: u32,
    /// ifType.
    pub if_type: u32,
    /// ifSpeed, bits/s.
    pub if_speed: u64,
    /// 0 unknown, 1 full duplex, 2 half duplex, 3 in, 4 out.
    pub if_direction: u32,
    /// Bit 0 admin up, bit 1 operationally up.
    pub if_status: u32,
    /// ifInOctets.
    pub in_octets: u64,
    /// ifInUcastPkts.
    pub in_unicast: u32,
    /// ifInMulticastPkts.
    pub in_multicast: u32,
    /// ifInBroadcastPkts.
    pub in_broadcast: u32,
    /// ifInDiscards.
    pub in_discards: u32,
    /// ifInErrors.
    pub in_errors: u32,
    /// ifInUnknownProtos.
    pub in_unknown_protos: u32,
    /// ifOutOctets.
    pub out_octets: u64,
    /// ifOutUcastPkts.
    pub out_unicast: u32,
    /// ifOutMulticastPkts.
    pub out_multicast: u32,
    /// ifOutBroadcastPkts.
    pub out_broadcast: u32,
    /// ifOutDiscards.
    pub out_discards: u32,
    /// ifOutErrors.
    pub out_errors: u32,
    /// ifPromiscuousMode.
    pub promiscuous: u32,
}

/// One record of a counters sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterRecord {
    /// Generic interface counters (format 1).
    Interface(InterfaceCounters),
    /// Another record (Ethernet, VLAN, processor, … counters), skipped.
    Other {
        /// Enterprise number.
        enterprise: u32,
        /// Format within the enterprise.
        format: u32,
    },
}

/// Splits a `data_format` word into enterprise (20 bits) and format (12 bits).
fn split_format(word: u32) -> (u32, u32) {
    (word >> 12, word & 0xfff)
}

/// Iterator over a datagram's samples.
#[derive(Clone, Debug)]
pub struct Samples<'a> {
    x: Xdr<'a>,
    base: usize,
    left: u32,
    failed: bool,
}

impl<'a> Iterator for Samples<'a> {
    type Item = Result<Sample<'a>, SflowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.failed {
            return None;
        }
        self.left -= 1;
        let at = self.base + self.x.pos();
        let fail = |s: &mut Self, fault, offset| {
            s.failed = true;
            Some(Err(SflowError { fault, offset }))
        };
        let (Some(word), Some(len)) = (self.x.u32(), self.x.u32()) else {
            return fail(self, SflowFault::SampleLength, at);
        };
        let body_at = self.base + self.x.pos();
        let Some(body) = usize::try_from(len).ok().and_then(|n| self.x.opaque(n)) else {
            return fail(self, SflowFault::SampleLength, at);
        };
        let (enterprise, format) = split_format(word);
        let sample = match (enterprise, format) {
            (0, 1 | 3) => flow_sample(body, body_at, format == 3).map(Sample::Flow),
            (0, 2 | 4) => counter_sample(body, body_at, format == 4).map(Sample::Counters),
            _ => Some(Sample::Other { enterprise, format }),
        };
        match sample {
            Some(s) => Some(Ok(s)),
            None => fail(self, SflowFault::ShortSample, body_at),
        }
    }
}

fn source_id(x: &mut Xdr<'_>, expanded: bool) -> Option<SourceId> {
    if expanded {
        Some(SourceId {
            kind: x.u32()?,
            index: x.u32()?,
        })
    } else {
        let w = x.u32()?;
        Some(SourceId {
            kind: w >> 24,
            index: w & 0x00ff_ffff,
        })
    }
}

/// An interface word: the expanded form's (format, value) pair, or the compact form's
/// 2-bit format and 30-bit value, as the ifIndex (0 when the format is not a single one).
fn interface(x: &mut Xdr<'_>, expanded: bool) -> Option<u32> {
    if expanded {
        let format = x.u32()?;
        let value = x.u32()?;
        Some(if format == 0 { value } else { 0 })
    } else {
        let w = x.u32()?;
        Some(if w >> 30 == 0 { w & 0x3fff_ffff } else { 0 })
    }
}

fn flow_sample(body: &[u8], at: usize, expanded: bool) -> Option<FlowSample<'_>> {
    let mut x = Xdr::new(body);
    let sequence = x.u32()?;
    let source = source_id(&mut x, expanded)?;
    let sampling_rate = x.u32()?;
    let sample_pool = x.u32()?;
    let drops = x.u32()?;
    let input = interface(&mut x, expanded)?;
    let output = interface(&mut x, expanded)?;
    let record_count = x.u32()?;
    Some(FlowSample {
        sequence,
        source,
        sampling_rate,
        sample_pool,
        drops,
        input,
        output,
        record_count,
        records: &body[x.pos()..],
        records_offset: at + x.pos(),
    })
}

fn counter_sample(body: &[u8], at: usize, expanded: bool) -> Option<CounterSample<'_>> {
    let mut x = Xdr::new(body);
    let sequence = x.u32()?;
    let source = source_id(&mut x, expanded)?;
    let record_count = x.u32()?;
    Some(CounterSample {
        sequence,
        source,
        record_count,
        records: &body[x.pos()..],
        records_offset: at + x.pos(),
    })
}

/// Iterator over a flow sample's records.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    x: Xdr<'a>,
    base: usize,
    left: u32,
    failed: bool,
}

/// A record not yet decoded: enterprise, format, body and the body's datagram offset.
type RawRecord<'a> = (u32, u32, &'a [u8], usize);

impl<'a> Records<'a> {
    /// The next record, undecoded.
    fn next_raw(&mut self) -> Option<Result<RawRecord<'a>, SflowError>> {
        if self.left == 0 || self.failed {
            return None;
        }
        self.left -= 1;
        let at = self.base + self.x.pos();
        let fail = |s: &mut Self| {
            s.failed = true;
            Some(Err(SflowError {
                fault: SflowFault::RecordLength,
                offset: at,
            }))
        };
        let (Some(word), Some(len)) = (self.x.u32(), self.x.u32()) else {
            return fail(self);
        };
        let body_at = self.base + self.x.pos();
        let Some(body) = usize::try_from(len).ok().and_then(|n| self.x.opaque(n)) else {
            return fail(self);
        };
        let (enterprise, format) = split_format(word);
        Some(Ok((enterprise, format, body, body_at)))
    }

    fn fail(&mut self, fault: SflowFault, offset: usize) -> SflowError {
        self.failed = true;
        SflowError { fault, offset }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<FlowRecord<'a>, SflowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (enterprise, format, body, at) = match self.next_raw()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        if (enterprise, format) != (0, 1) {
            return Some(Ok(FlowRecord::Other { enterprise, format }));
        }
        let mut x = Xdr::new(body);
        let header = (|| {
            let protocol = HeaderProtocol::from_u32(x.u32()?);
            let frame_length = x.u32()?;
            let stripped = x.u32()?;
            let n = usize::try_from(x.u32()?).ok()?;
            let header = x.opaque(n)?;
            Some(RawHeader {
                protocol,
                frame_length,
                stripped,
                header,
            })
        })();
        Some(match header {
            Some(h) => Ok(FlowRecord::RawHeader(h)),
            None => Err(self.fail(SflowFault::HeaderLength, at)),
        })
    }
}

/// Iterator over a counters sample's records.
#[derive(Clone, Debug)]
pub struct CounterRecords<'a>(Records<'a>);

impl Iterator for CounterRecords<'_> {
    type Item = Result<CounterRecord, SflowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (enterprise, format, body, at) = match self.0.next_raw()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        if (enterprise, format) != (0, 1) {
            return Some(Ok(CounterRecord::Other { enterprise, format }));
        }
        let mut x = Xdr::new(body);
        let counters = (|| {
            Some(InterfaceCounters {
                if_index: x.u32()?,
                if_type: x.u32()?,
                if_speed: x.u64()?,
                if_direction: x.u32()?,
                if_status: x.u32()?,
                in_octets: x.u64()?,
                in_unicast: x.u32()?,
                in_multicast: x.u32()?,
                in_broadcast: x.u32()?,
                in_discards: x.u32()?,
                in_errors: x.u32()?,
                in_unknown_protos: x.u32()?,
                out_octets: x.u64()?,
                out_unicast: x.u32()?,
                out_multicast: x.u32()?,
                out_broadcast: x.u32()?,
                out_discards: x.u32()?,
                out_errors: x.u32()?,
                promiscuous: x.u32()?,
            })
        })();
        Some(match counters {
            Some(c) => Ok(CounterRecord::Interface(c)),
            None => Err(self.0.fail(SflowFault::ShortCounters, at)),
        })
    }
}
