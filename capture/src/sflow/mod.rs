//! sFlow version 5 input: datagrams from switches that sample packets rather than mirror
//! them. [`SflowSocket`] receives, [`SflowDecoder`] turns each datagram's raw packet
//! header records into [`SampledFrame`]s (a [`Frame`](crate::Frame) and the sampling rate it
//! stands for) and keeps interface counters, sequence losses and malformed input counts.
//!
//! ```
//! use tapwatch_capture::sflow::SflowDecoder;
//!
//! let mut decoder = SflowDecoder::new();
//! // A datagram of version 4 is refused, by name and byte offset.
//! let err = decoder.decode_bytes(&[0, 0, 0, 4, 0, 0, 0, 1], 0).unwrap_err();
//! assert_eq!(err.to_string(), "sFlow datagram byte 0: expected sFlow version 5");
//! assert_eq!(decoder.stats().malformed_total(), 1);
//! assert_eq!(decoder.frames().count(), 0);
//! ```
mod datagram;
mod decoder;
mod sequence;
mod socket;
#[cfg(test)]
mod tests;
mod xdr;

pub use datagram::{
    CounterRecord, CounterSample, Datagram, FlowRecord, FlowSample, HeaderProtocol,
    InterfaceCounters, RawHeader, Sample, SflowError, SflowFault, SourceId,
};
pub use decoder::{SampledFrame, SflowDecoder, SflowStats, MAX_DATAGRAM};
pub use sequence::LossCounter;
pub use socket::{Received, SflowSocket, SflowSource, RECEIVE_BUFFER};
