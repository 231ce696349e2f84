//! Shared by the benches: a generated capture of mixed relay traffic and timing helpers.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use tapwatch_capture::{LinkType, PcapWriter};
use tapwatch_synth::Rng;

/// Mixed relay traffic (packets `1..max_gap_ns` apart): TCP handshakes and TLS data, DNS, BFD, QUIC, VLAN-tagged and IPv6
/// packets, fragments, with sizes from 60 to 1514 bytes.
pub fn write_capture(path: &Path, packets: usize, max_gap_ns: u64) -> std::io::Result<u64> {
    let mut rng = Rng::new(42);
    let file = std::fs::File::create(path)?;
    let mut w = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        LinkType::Ethernet,
        65535,
    )?;
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut ts = 1_767_225_600_000_000_000u64;
    let mut buf = Vec::with_capacity(2048);
    let payload = vec![0x17u8; 1500];
    let mut tls = vec![23u8, 3, 3, 0, 200];
    tls.resize(1400, 0);
    for i in 0..packets {
        ts += 1 + rng.below(max_gap_ns);
        buf.clear();
        let src = [
            10,
            (rng.below(4)) as u8,
            (rng.below(256)) as u8,
            (rng.below(256)) as u8,
        ];
        let dst = [192, 0, 2, (i % 16) as u8];
        let sport = 1024 + rng.below(60000) as u16;
        let roll = rng.below(100);
        let res = match roll {
            0..=9 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .tcp(sport, 443, 1, 64240)
                .syn()
                .write(&mut buf, &[]),
            10..=19 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(dst, src, 64)
                .tcp(443, sport, 1, 64240)
                .syn()
                .ack(2)
                .write(&mut buf, &[]),
            20..=44 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .tcp(sport, 443, 1, 64240)
                .ack(2)
                .write(&mut buf, &[]),
            45..=64 => {
                let len = 40 + rng.below(1360) as usize;
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv4(dst, src, 64)
                    .tcp(443, sport, 1, 64240)
                    .ack(2)
                    .psh()
                    .write(&mut buf, &tls[..len])
            }
            65..=74 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .udp(sport, 53)
                .write(&mut buf, &payload[..40]),
            75..=79 => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 255)
                .udp(49152, 3784)
                .write(&mut buf, &tapwatch_synth::bfd_control(3, 3, 1, 2, 300_000)),
            80..=86 => {
                let mut q = vec![0xc3, 0, 0, 0, 1, 8];
                q.resize(1200, 0);
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv4(src, dst, 64)
                    .udp(sport, 443)
                    .write(&mut buf, &q)
            }
            87..=92 => PacketBuilder::ethernet2(mac.0, mac.1)
                .single_vlan(100u16.try_into().unwrap())
                .ipv4(src, dst, 64)
                .udp(sport, 9000)
                .write(&mut buf, &payload[..(rng.below(200) as usize)]),
            93..=97 => {
                let mut s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                s6[15] = src[3];
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv6(
                        s6,
                        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                        64,
                    )
                    .tcp(sport, 443, 1, 64240)
                    .ack(1)
                    .write(&mut buf, &payload[..100])
            }
            _ => PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(src, dst, 64)
                .icmpv4_echo_request(1, i as u16)
                .write(&mut buf, &payload[..56]),
        };
        res.map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        w.write(ts, &buf)?;
    }
    w.finish()?.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Best of `runs` wall times.
pub fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

#[allow(dead_code)] // the storage bench's; replay times its tools with wait4
pub fn tool(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
