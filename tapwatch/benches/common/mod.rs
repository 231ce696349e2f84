//! Shared by the benches: a generated capture of mixed relay traffic and timing helpers.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use tapwatch_capture::{LinkType, PcapWriter};
use tapwatch_synth::Rng;

/// A new Ethernet pcap file at `path`, buffered.
fn create_pcap(path: &Path) -> std::io::Result<PcapWriter<BufWriter<std::fs::File>>> {
    PcapWriter::new(
        BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        LinkType::Ethernet,
        65535,
    )
}

/// Mixed relay traffic (packets `1..max_gap_ns` apart): TCP handshakes and TLS data, DNS, BFD, QUIC, VLAN-tagged and IPv6
/// packets, fragments, with sizes from 60 to 1514 bytes.
pub fn write_capture(path: &Path, packets: usize, max_gap_ns: u64) -> std::io::Result<u64> {
    let mut rng = Rng::new(42);
    let mut w = create_pcap(path)?;
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

#[allow(dead_code)] // the replay bench's
/// One TCP connection of [`write_connections_capture`]: client, server, ports, the next
/// sequence number each side sends, what it sends next, and how many exchanges are left.
struct Connection {
    client: [u8; 4],
    server: [u8; 4],
    client_port: u16,
    client_seq: u32,
    server_seq: u32,
    step: u8,
    left: u32,
}

#[allow(dead_code)] // the replay bench's
impl Connection {
    fn new(rng: &mut Rng) -> Connection {
        let c = rng.below(1 << 18) as u32;
        Connection {
            client: [10, (c >> 16) as u8, (c >> 8) as u8, c as u8],
            server: [192, 0, 2, rng.below(16) as u8],
            client_port: 1024 + rng.below(64_000) as u16,
            client_seq: rng.next_u64() as u32,
            server_seq: rng.next_u64() as u32,
            step: 0,
            left: 4 + rng.below(57) as u32,
        }
    }

    /// Writes the connection's next packet into `buf`; false once its FIN is written.
    fn next(&mut self, rng: &mut Rng, buf: &mut Vec<u8>, data: &[u8]) -> std::io::Result<bool> {
        let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (c, s, cp) = (self.client, self.server, self.client_port);
        let from_client = |seq: u32| {
            PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4(c, s, 64)
                .tcp(cp, 443, seq, 64240)
        };
        let from_server = |seq: u32| {
            PacketBuilder::ethernet2(mac.1, mac.0)
                .ipv4(s, c, 64)
                .tcp(443, cp, seq, 64240)
        };
        let res = match self.step {
            0 => {
                self.step = 1;
                from_client(self.client_seq).syn().write(buf, &[])
            }
            1 => {
                self.step = 2;
                from_server(self.server_seq)
                    .syn()
                    .ack(self.client_seq.wrapping_add(1))
                    .write(buf, &[])
            }
            2 => {
                self.client_seq = self.client_seq.wrapping_add(1);
                self.server_seq = self.server_seq.wrapping_add(1);
                self.step = 3;
                from_client(self.client_seq)
                    .ack(self.server_seq)
                    .write(buf, &[])
            }
            _ if self.left == 0 => {
                from_client(self.client_seq)
                    .ack(self.server_seq)
                    .fin()
                    .write(buf, &[])
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                return Ok(false);
            }
            3 => {
                // A request.
                self.left -= 1;
                let n = 80 + rng.below(320) as usize;
                let seq = self.client_seq;
                self.client_seq = seq.wrapping_add(n as u32);
                self.step = 4;
                from_client(seq)
                    .ack(self.server_seq)
                    .psh()
                    .write(buf, &data[..n])
            }
            4 => {
                // A response; now and then another segment of it follows.
                let n = 200 + rng.below(1200) as usize;
                let seq = self.server_seq;
                self.server_seq = seq.wrapping_add(n as u32);
                self.step = if rng.below(10) < 7 { 5 } else { 4 };
                from_server(seq)
                    .ack(self.client_seq)
                    .psh()
                    .write(buf, &data[..n])
            }
            _ => {
                // The client's ACK of the response.
                self.step = 3;
                from_client(self.client_seq)
                    .ack(self.server_seq)
                    .write(buf, &[])
            }
        };
        res.map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(true)
    }
}

/// Traffic of `connections` concurrent TCP connections (packets `1..max_gap_ns` apart),
/// where flows repeat: each connection's handshake, requests of 80–400 bytes, responses of
/// 200–1400 bytes in one or more segments, the client's ACKs and a FIN after 4 to 60
/// exchanges, when a new connection takes its place. Besides them, 10 % DNS queries and
/// answers of 2000 clients and 5 % UDP of 200 steady flows. The other extreme from
/// [`write_capture`], whose packets nearly all have a 5-tuple of their own.
#[allow(dead_code)] // the replay bench's
pub fn write_connections_capture(
    path: &Path,
    packets: usize,
    connections: usize,
    max_gap_ns: u64,
) -> std::io::Result<u64> {
    let mut rng = Rng::new(7);
    let mut w = create_pcap(path)?;
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut ts = 1_767_225_600_000_000_000u64;
    let mut buf = Vec::with_capacity(2048);
    let data = vec![0x17u8; 1500];
    let mut pool: Vec<Connection> = (0..connections.max(1))
        .map(|_| Connection::new(&mut rng))
        .collect();
    for _ in 0..packets {
        ts += 1 + rng.below(max_gap_ns);
        buf.clear();
        let roll = rng.below(100);
        if roll < 85 {
            let k = rng.below(pool.len() as u64) as usize;
            if !pool[k].next(&mut rng, &mut buf, &data)? {
                pool[k] = Connection::new(&mut rng);
            }
        } else if roll < 95 {
            let client = rng.below(2000) as u16;
            let ip = [10, 16, (client >> 8) as u8, client as u8];
            let port = 30_000 + client;
            let res = if rng.below(2) == 0 {
                PacketBuilder::ethernet2(mac.0, mac.1)
                    .ipv4(ip, [8, 8, 8, 8], 64)
                    .udp(port, 53)
                    .write(&mut buf, &data[..40])
            } else {
                PacketBuilder::ethernet2(mac.1, mac.0)
                    .ipv4([8, 8, 8, 8], ip, 64)
                    .udp(53, port)
                    .write(&mut buf, &data[..120])
            };
            res.map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        } else {
            let k = rng.below(200) as u8;
            PacketBuilder::ethernet2(mac.0, mac.1)
                .ipv4([10, 32, 0, k], [10, 48, 0, k], 64)
                .udp(40_000 + u16::from(k), 9000)
                .write(&mut buf, &data[..50 + rng.below(150) as usize])
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
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
