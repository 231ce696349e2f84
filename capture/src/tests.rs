//! File-format tests: both pcap byte orders and resolutions, pcapng blocks, gzip,
//! truncation and corruption, and random bytes.
use std::io::Write;

use proptest::prelude::*;

use crate::*;

fn pcap(big_endian: bool, nanos: bool, minor: u16, records: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
    let w32 = |v: &mut Vec<u8>, x: u32| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let w16 = |v: &mut Vec<u8>, x: u16| {
        v.extend_from_slice(&if big_endian {
            x.to_be_bytes()
        } else {
            x.to_le_bytes()
        })
    };
    let mut v = Vec::new();
    w32(&mut v, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
    w16(&mut v, 2);
    w16(&mut v, minor);
    w32(&mut v, 0);
    w32(&mut v, 0);
    w32(&mut v, 65535);
    w32(&mut v, 1);
    for (sec, frac, data, orig) in records {
        w32(&mut v, *sec);
        w32(&mut v, *frac);
        w32(&mut v, data.len() as u32);
        w32(&mut v, *orig);
        v.extend_from_slice(data);
    }
    v
}

/// (timestamp, wire length, link type, interface, bytes) of each frame read.
type Read = Vec<(u64, u32, LinkType, u32, Vec<u8>)>;

fn read_all(bytes: Vec<u8>) -> (Read, SourceStats, Vec<String>) {
    let mut r = FileReader::from_reader("mem", std::io::Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        out.push((f.ts_ns, f.wire_len, f.link, f.interface, f.data.to_vec()));
    }
    (out, r.stats(), r.take_warnings())
}

#[test]
fn pcap_byte_orders_and_resolutions() {
    for big in [false, true] {
        for nanos in [false, true] {
            let bytes = pcap(big, nanos, 4, &[(10, 500, b"abcd", 60), (11, 7, b"xy", 2)]);
            let (frames, stats, warnings) = read_all(bytes);
            let unit = if nanos { 1 } else { 1000 };
            assert_eq!(frames.len(), 2);
            assert_eq!(
                frames[0],
                (
                    10_000_000_000 + 500 * unit,
                    60,
                    LinkType::Ethernet,
                    0,
                    b"abcd".to_vec()
                ),
                "big {big} nanos {nanos}"
            );
            assert_eq!(frames[1].0, 11_000_000_000 + 7 * unit);
            assert_eq!(stats.frames, 2);
            assert!(warnings.is_empty());
        }
    }
}

/// Records as large as a pcap record may be (larger than the reader's block) and small
/// ones across the block's edges read back whole and in order.
#[test]
fn records_larger_than_the_block_read_back_whole() {
    let sizes = [100usize, 262_144, 7, 262_144, 200_000, 3, 131_071];
    let datas: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (j * 31 + i * 7) as u8).collect())
        .collect();
    let records: Vec<(u32, u32, &[u8], u32)> = datas
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32, 0, d.as_slice(), d.len() as u32))
        .collect();
    let (frames, stats, warnings) = read_all(pcap(false, false, 4, &records));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(stats.frames, sizes.len() as u64);
    for (i, (f, d)) in frames.iter().zip(&datas).enumerate() {
        assert_eq!(f.4, *d, "record {i}");
        assert_eq!(f.0, i as u64 * 1_000_000_000);
    }
}

#[test]
fn old_pcap_lengths_are_unswapped_like_libpcap() {
    // Format 2.0 writers could swap caplen and len; caplen > len means they did.
    let mut bytes = pcap(false, false, 0, &[]);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&500u32.to_le_bytes()); // "caplen", really len
    bytes.extend_from_slice(&3u32.to_le_bytes()); // "len", really caplen
    bytes.extend_from_slice(b"abc");
    let (frames, stats, _) = read_all(bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].1, frames[0].4.as_slice()), (500, &b"abc"[..]));
    assert_eq!(stats.truncated_records, 0);
}

#[test]
fn truncated_tail_keeps_earlier_records_and_warns_once() {
    let bytes = pcap(
        false,
        false,
        4,
        &[(1, 0, b"first", 5), (2, 0, b"second", 6)],
    );
    for cut in [1, 5, 16, 20] {
        let (frames, stats, warnings) = read_all(bytes[..bytes.len() - cut].to_vec());
        assert_eq!(frames.len(), 1, "cut {cut}");
        assert_eq!(stats.truncated_records, 1);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("byte 45") && warnings[0].contains("cut short"),
            "{}",
            warnings[0]
        );
    }
}

#[test]
fn absurd_caplen_is_a_corrupt_record() {
    let mut bytes = pcap(false, false, 4, &[(1, 0, b"ok", 2)]);
    bytes.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, 1, 0, 0, 0, 9, 9,
    ]);
    let (frames, stats, warnings) = read_all(bytes);
    assert_eq!(frames.len(), 1);
    assert_eq!(stats.corrupt_records, 1);
    assert!(warnings[0].contains("captured length"), "{}", warnings[0]);
}

/// A pcapng block with the given type and body (padded), little-endian.
fn block(ty: u32, body: &[u8]) -> Vec<u8> {
    let padded = (body.len() + 3) & !3;
    let total = (12 + padded) as u32;
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&total.to_le_bytes());
    v.extend_from_slice(body);
    v.resize(8 + padded, 0);
    v.extend_from_slice(&total.to_le_bytes());
    v
}

fn shb() -> Vec<u8> {
    let mut body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    block(0x0a0d_0d0a, &body)
}

fn idb(link: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = link.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&0u32.to_le_bytes());
    if let Some(r) = tsresol {
        body.extend_from_slice(&[9, 0, 1, 0, r, 0, 0, 0]);
    }
    body.extend_from_slice(&[0, 0, 0, 0]);
    block(1, &body)
}

fn epb(iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = iface.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32 + 10).to_le_bytes());
    body.extend_from_slice(data);
    block(6, &body)
}

#[test]
fn pcapng_interfaces_link_types_and_resolutions() {
    let mut f = shb();
    f.extend(idb(1, None)); // Ethernet, µs
    f.extend(idb(101, Some(9))); // raw IP, ns
    f.extend(idb(113, Some(0x80 | 10))); // SLL, 2^-10 s
    f.extend(block(0x0bad, &[1, 2, 3])); // unknown block: skipped
    f.extend(epb(0, 1_000_000, b"eth"));
    f.extend(epb(1, 2_000_000_000, b"raw"));
    f.extend(epb(2, 1024 * 3, b"sll"));
    let mut spb = 7u32.to_le_bytes().to_vec();
    spb.extend_from_slice(b"simple!");
    f.extend(block(3, &spb));
    let (frames, stats, warnings) = read_all(f);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(frames.len(), 4);
    assert_eq!(
        (frames[0].0, frames[0].2, frames[0].3),
        (1_000_000_000, LinkType::Ethernet, 0)
    );
    assert_eq!(
        (frames[1].0, frames[1].2, frames[1].3),
        (2_000_000_000, LinkType::RawIp, 1)
    );
    assert_eq!(
        (frames[2].0, frames[2].2),
        (3_000_000_000, LinkType::LinuxSll)
    );
    assert_eq!(frames[1].1, 13, "original length kept");
    assert_eq!(frames[3].4, b"simple!");
    assert_eq!(stats.skipped_blocks, 1);
}

#[test]
fn pcapng_bad_interface_and_corrupt_length() {
    let mut f = shb();
    f.extend(idb(1, None));
    f.extend(epb(5, 0, b"nobody"));
    f.extend(epb(0, 0, b"fine"));
    let (frames, stats, warnings) = read_all(f.clone());
    assert_eq!(frames.len(), 1);
    assert_eq!(stats.corrupt_records, 1);
    assert!(warnings[0].contains("interface 5"), "{warnings:?}");

    let mut broken = f.clone();
    let n = broken.len();
    broken[n - 4] ^= 0xff; // trailing length differs from leading length
    let (frames, stats, warnings) = read_all(broken);
    assert_eq!(frames.len(), 0);
    assert_eq!(stats.corrupt_records, 2);
    assert!(
        warnings.iter().any(|w| w.contains("ends with")),
        "{warnings:?}"
    );
}

#[test]
fn gzip_is_detected_by_magic() {
    let plain = pcap(false, true, 4, &[(1, 2, b"zipped", 6)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let (frames, _, _) = read_all(gz.finish().unwrap());
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].4, b"zipped");
}

#[test]
fn a_damaged_gzip_keeps_every_frame_before_the_damage() {
    let records: Vec<(u32, u32, &[u8], u32)> = (0..2000u32)
        .map(|i| (i, 0, &b"payload-bytes"[..], 13))
        .collect();
    let plain = pcap(false, true, 4, &records);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let whole = gz.finish().unwrap();
    // Missing only its 8-byte trailer: every frame is there.
    let (frames, stats, warnings) = read_all(whole[..whole.len() - 8].to_vec());
    assert_eq!(frames.len(), 2000);
    assert_eq!(stats.truncated_records, 1);
    assert!(
        warnings[0].contains("gzip stream damaged near compressed byte"),
        "{warnings:?}"
    );
    // Cut in the middle of the deflate stream: the frames decoded before are kept.
    let (frames, stats, warnings) = read_all(whole[..whole.len() / 2].to_vec());
    assert!(
        frames.len() > 100 && frames.len() < 2000,
        "{}",
        frames.len()
    );
    assert_eq!(stats.truncated_records, 1);
    assert!(
        warnings[0].contains("gzip stream damaged")
            && warnings[0].contains(&format!("the {} frames before it are kept", frames.len())),
        "{warnings:?}"
    );
}

#[test]
fn not_a_capture_names_what_was_found() {
    let e = FileReader::from_reader(
        "notes.txt",
        std::io::Cursor::new(b"hello world, not pcap".to_vec()),
    )
    .err()
    .unwrap();
    let msg = e.to_string();
    assert!(
        msg.starts_with("notes.txt: not a capture file") && msg.contains("hello world"),
        "{msg}"
    );
    let e = FileReader::from_reader(
        "x",
        std::io::Cursor::new(vec![0xa1, 0xb2, 0xc3, 0xd4, 0, 9]),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("24-byte file header"), "{e}");
}

#[test]
fn merged_reader_orders_by_timestamp() {
    let dir = std::env::temp_dir().join(format!("tw-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.pcap");
    let b = dir.join("b.pcap");
    std::fs::write(
        &a,
        pcap(
            false,
            false,
            4,
            &[(1, 0, b"a1", 2), (3, 0, b"a3", 2), (5, 0, b"a5", 2)],
        ),
    )
    .unwrap();
    std::fs::write(
        &b,
        pcap(true, true, 4, &[(2, 0, b"b2", 2), (4, 0, b"b4", 2)]),
    )
    .unwrap();
    let mut m = MergedReader::new(vec![
        FileReader::open(&a).unwrap(),
        FileReader::open(&b).unwrap(),
    ]);
    let mut order = Vec::new();
    while let Some(f) = m.next_frame().unwrap() {
        order.push(String::from_utf8(f.data.to_vec()).unwrap());
    }
    assert_eq!(order, ["a1", "b2", "a3", "b4", "a5"]);
    assert_eq!(m.stats().frames, 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writer_output_reads_back() {
    let mut w = PcapWriter::new(Vec::new(), LinkType::RawIp, 4).unwrap();
    w.write(1_500_000_001, b"123456").unwrap();
    let (frames, _, _) = read_all(w.finish().unwrap());
    assert_eq!(
        frames,
        vec![(1_500_000_001, 6, LinkType::RawIp, 0, b"1234".to_vec())]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes after a valid magic never panic the readers, whatever they claim.
    #[test]
    fn random_files_never_panic(magic in 0usize..5, body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let magics: [&[u8]; 5] = [&[0xd4, 0xc3, 0xb2, 0xa1], &[0xa1, 0xb2, 0xc3, 0xd4], &[0x4d, 0x3c, 0xb2, 0xa1], &[0x0a, 0x0d, 0x0d, 0x0a], &[]];
        let mut bytes = magics[magic].to_vec();
        bytes.extend_from_slice(&body);
        if let Ok(mut r) = FileReader::from_reader("fuzz", std::io::Cursor::new(bytes)) {
            let mut n = 0;
            while let Ok(Some(f)) = r.next_frame() {
                n += 1;
                prop_assert!(f.data.len() <= 600);
            }
            prop_assert_eq!(r.stats().frames, n);
        }
    }

    /// A valid pcapng with one byte changed anywhere never panics.
    #[test]
    fn mutated_pcapng_never_panics(pos in 0usize..200, byte in any::<u8>()) {
        let mut f = shb();
        f.extend(idb(1, Some(9)));
        f.extend(epb(0, 5, b"payload!"));
        f.extend(epb(0, 6, b"more"));
        let p = pos % f.len();
        f[p] = byte;
        if let Ok(mut r) = FileReader::from_reader("m", std::io::Cursor::new(f)) {
            while let Ok(Some(_)) = r.next_frame() {}
        }
    }
}
