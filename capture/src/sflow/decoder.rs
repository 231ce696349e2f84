//! sFlow datagrams → sampled frames: each raw packet header record of a flow sample becomes
//! a [`Frame`] of the header's bytes with the sample's sampling rate as its weight, stamped
//! with the datagram's arrival time. Interface counters, losses and malformed input are
//! counted. The decoder owns one datagram buffer, reused: nothing is allocated per datagram
//! once the per-datagram lists have grown to their working size.
use std::net::{IpAddr, Ipv4Addr};

use super::datagram::{
    CounterRecord, Datagram, FlowRecord, InterfaceCounters, Sample, SflowError, SflowFault,
    SourceId,
};
use super::sequence::LossCounter;
use crate::{Frame, LinkType};

/// Largest UDP payload (IPv4); a datagram never exceeds it.
pub const MAX_DATAGRAM: usize = 65_507;

/// Senders and data sources whose sequence numbers are followed, at most.
const MAX_SEQUENCES: usize = 65_536;

/// What a decoder has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SflowStats {
    /// Datagrams taken (well-formed or not).
    pub datagrams: u64,
    /// Flow samples (compact and expanded).
    pub flow_samples: u64,
    /// Counter samples (compact and expanded).
    pub counter_samples: u64,
    /// Samples of other enterprises or formats, skipped.
    pub other_samples: u64,
    /// Raw packet headers handed on as frames.
    pub frames: u64,
    /// Packets those frames stand for (the sum of their sampling rates).
    pub estimated_packets: u64,
    /// Flow or counter records of other types, skipped.
    pub other_records: u64,
    /// Raw headers of a framing the classifier does not read (token ring, PPP, MPLS, …).
    pub unsupported_headers: u64,
    /// Flow samples without a raw packet header record.
    pub headerless_samples: u64,
    /// Datagrams (or their rest) that could not be decoded, by [`SflowFault`] (in
    /// [`SflowFault::ALL`] order). What was decoded before the fault is kept.
    pub malformed: [u64; SflowFault::ALL.len()],
    /// Datagrams lost between agents and tapwatch (gaps in datagram sequence numbers).
    pub lost_datagrams: u64,
    /// Samples lost (gaps in each data source's sample sequence numbers, which include
    /// the lost datagrams' samples).
    pub lost_samples: u64,
    /// Samples the agents themselves dropped (their `drops` counters, summed as reported).
    pub agent_drops: u64,
}

impl SflowStats {
    /// Malformed datagrams in all.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }
}

/// A frame of a sampled packet: the sampled header, and how many packets it stands for.
#[derive(Clone, Copy, Debug)]
pub struct SampledFrame<'a> {
    /// The header, as a frame (interface: the sample's input ifIndex).
    pub frame: Frame<'a>,
    /// 1 in `weight` packets was sampled: this frame stands for `weight` packets.
    pub weight: u32,
    /// The agent that sampled it.
    pub agent: IpAddr,
}

/// Where one sampled header sits in the buffer.
#[derive(Clone, Copy, Debug)]
struct HeaderAt {
    start: usize,
    len: usize,
    wire_len: u32,
    link: LinkType,
    weight: u32,
    input: u32,
}

/// Decodes datagrams one at a time into sampled frames and interface counters.
#[derive(Debug)]
pub struct SflowDecoder {
    buf: Vec<u8>,
    ts_ns: u64,
    agent: IpAddr,
    headers: Vec<HeaderAt>,
    counters: Vec<(SourceId, InterfaceCounters)>,
    datagram_seq: LossCounter<(IpAddr, u32)>,
    sample_seq: LossCounter<(IpAddr, u32, SourceId, bool)>,
    stats: SflowStats,
}

impl Default for SflowDecoder {
    fn default() -> SflowDecoder {
        SflowDecoder::new()
    }
}

impl SflowDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> SflowDecoder {
        SflowDecoder {
            buf: vec![0; MAX_DATAGRAM],
            ts_ns: 0,
            agent: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            headers: Vec::new(),
            counters: Vec::new(),
            datagram_seq: LossCounter::new(MAX_SEQUENCES),
            sample_seq: LossCounter::new(MAX_SEQUENCES),
            stats: SflowStats::default(),
        }
    }

    /// The buffer to receive the next datagram into.
    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Decodes the `len` bytes received into [`SflowDecoder::buffer`] at `ts_ns`: the
    /// frames and counters of the previous datagram are replaced by this one's. A malformed
    /// datagram keeps what was decoded before the fault, and the fault is returned.
    pub fn decode(&mut self, len: usize, ts_ns: u64) -> Result<(), SflowError> {
        self.headers.clear();
        self.counters.clear();
        self.ts_ns = ts_ns;
        self.stats.datagrams += 1;
        let result = self.decode_samples(len.min(self.buf.len()));
        if let Err(e) = result {
            let i = SflowFault::ALL.iter().position(|f| *f == e.fault);
            self.stats.malformed[i.unwrap_or(0)] += 1;
        }
        result
    }

    /// Copies `datagram` into the buffer and decodes it (for datagrams from elsewhere, such
    /// as a capture file).
    pub fn decode_bytes(&mut self, datagram: &[u8], ts_ns: u64) -> Result<(), SflowError> {
        let n = datagram.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&datagram[..n]);
        self.decode(n, ts_ns)
    }

    fn decode_samples(&mut self, len: usize) -> Result<(), SflowError> {
        let d = Datagram::parse(&self.buf[..len])?;
        self.agent = d.agent;
        self.datagram_seq
            .observe((d.agent, d.sub_agent), d.sequence);
        let base = self.buf.as_ptr() as usize;
        for sample in d.samples() {
            match sample? {
                Sample::Flow(f) => {
                    self.stats.flow_samples += 1;
                    self.stats.agent_drops += u64::from(f.drops);
                    let key = (d.agent, d.sub_agent, f.source, true);
                    self.sample_seq.observe(key, f.sequence);
                    let mut headers = 0;
                    for record in f.records() {
                        match record? {
                            FlowRecord::RawHeader(h) => {
                                headers += 1;
                                let Some(link) = h.protocol.link_type() else {
                                    self.stats.unsupported_headers += 1;
                                    continue;
                                };
                                let weight = f.sampling_rate.max(1);
                                self.headers.push(HeaderAt {
                                    start: h.header.as_ptr() as usize - base,
                                    len: h.header.len(),
                                    wire_len: h.wire_len().max(h.header.len() as u32),
                                    link,
                                    weight,
                                    input: f.input,
                                });
                                self.stats.frames += 1;
                                self.stats.estimated_packets += u64::from(weight);
                            }
                            FlowRecord::Other { .. } => self.stats.other_records += 1,
                        }
                    }
                    if headers == 0 {
                        self.stats.headerless_samples += 1;
                    }
                }
                Sample::Counters(c) => {
                    self.stats.counter_samples += 1;
                    self.sample_seq
                        .observe((d.agent, d.sub_agent, c.source, false), c.sequence);
                    for record in c.records() {
                        match record? {
                            CounterRecord::Interface(i) => self.counters.push((c.source, i)),
                            CounterRecord::Other { .. } => self.stats.other_records += 1,
                        }
                    }
                }
                Sample::Other { .. } => self.stats.other_samples += 1,
            }
        }
        Ok(())
    }

    /// The sampled frames of the last datagram, in its order.
    pub fn frames(&self) -> impl Iterator<Item = SampledFrame<'_>> + '_ {
        (0..self.headers.len()).filter_map(|i| self.frame(i))
    }

    /// Sampled frames in the last datagram.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether the last datagram held no sampled frame.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The `i`th sampled frame of the last datagram.
    pub fn frame(&self, i: usize) -> Option<SampledFrame<'_>> {
        let h = self.headers.get(i)?;
        Some(SampledFrame {
            frame: Frame {
                ts_ns: self.ts_ns,
                wire_len: h.wire_len,
                link: h.link,
                interface: h.input,
                data: &self.buf[h.start..h.start + h.len],
            },
            weight: h.weight,
            agent: self.agent,
        })
    }

    /// The interface counters of the last datagram, with their data sources.
    pub fn counters(&self) -> &[(SourceId, InterfaceCounters)] {
        &self.counters
    }

    /// The agent of the last well-formed datagram.
    pub fn agent(&self) -> IpAddr {
        self.agent
    }

    /// Counters so far, losses included.
    pub fn stats(&self) -> SflowStats {
        SflowStats {
            lost_datagrams: self.datagram_seq.lost,
            lost_samples: self.sample_seq.lost,
            ..self.stats
        }
    }
}
