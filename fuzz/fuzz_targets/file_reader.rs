//! The pcap/pcapng reader on arbitrary files, through the stream path and the frames it yields
//! through the classifier. Seed it with ../shared/pcaps: `cargo fuzz run file_reader ../../shared/pcaps`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapwatch_capture::{FileReader, FrameSource};
use tapwatch_classifier::Classifier;

fuzz_target!(|data: &[u8]| {
    let classifier = Classifier::default();
    if let Ok(mut reader) = FileReader::from_reader("fuzz", std::io::Cursor::new(data.to_vec())) {
        while let Ok(Some(frame)) = reader.next_frame() {
            assert!(frame.data.len() <= data.len());
            let _ = classifier.classify(&frame);
        }
    }
});
