//! The classifier on arbitrary bytes, for every link type.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapwatch_capture::{Frame, LinkType};
use tapwatch_classifier::Classifier;

fuzz_target!(|input: &[u8]| {
    let Some((&link, data)) = input.split_first() else { return };
    let links = [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::RawIp,
        LinkType::Null,
        LinkType::Loop,
        LinkType::Ipv4,
        LinkType::Ipv6,
    ];
    let frame = Frame { ts_ns: 0, wire_len: data.len() as u32, link: links[link as usize % links.len()], interface: 0, data };
    let meta = Classifier::default().classify(&frame);
    assert_eq!(meta.cap_len as usize, data.len());
});
