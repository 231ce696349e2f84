//! sFlow datagrams, then the classifier on every frame decoded from them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapwatch_capture::sflow::SflowDecoder;
use tapwatch_classifier::Classifier;

fuzz_target!(|input: &[u8]| {
    let mut decoder = SflowDecoder::new();
    let _ = decoder.decode_bytes(input, 0);
    let classifier = Classifier::default();
    for f in decoder.frames() {
        assert!(f.frame.data.len() <= input.len());
        let _ = classifier.classify(&f.frame);
    }
});
