//! A long benign soak, streamed in event-time order: a relay's service that most packets
//! go to, fed by hundreds of clients at a rate that swells and ebbs like a day; thousands
//! of DNS clients querying at Poisson times; BFD sessions with RFC 5880 jitter; jittered
//! keepalives; tenants whose nodes grow linearly over the soak, each node opening
//! connections (TCP, or WireGuard handshakes) at its own steady Poisson rate, so their setups
//! grow in proportion to their nodes. Nothing in it is an anomaly, so a detector that raises
//! anything is wrong.
//!
//! Every rate, period, size and address is drawn from the seed ([`SoakParams::random`]),
//! so each seed is another deployment. Frames come out in chunks of event time
//! ([`Soak::next_chunk`]), so tens of minutes never sit in memory at once.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;

use crate::{bfd_control, CaptureBuilder, Rng, EPOCH_NS};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// Payload of the relay's packets (opaque, like an encrypted overlay's).
const PAYLOAD: [u8; 1400] = [0x17; 1400];

/// What a soak is made of; [`SoakParams::random`] draws a deployment from a seed.
#[derive(Clone, Debug)]
pub struct SoakParams {
    /// Event time covered, ns.
    pub duration_ns: u64,
    /// The relay's address and UDP port.
    pub relay: (Ipv4Addr, u16),
    /// Clients of the relay.
    pub clients: Vec<Ipv4Addr>,
    /// Clients that only ever send small (control-sized) packets.
    pub small_clients: usize,
    /// Mean packets per second towards and from the relay.
    pub relay_pps: f64,
    /// Relative swing of that rate over the soak (0.5: from 0.5× to 1.5×).
    pub swing: f64,
    /// Phase of the swing at the start, radians.
    pub phase: f64,
    /// Share of the relay's packets that are its answers to clients.
    pub answer_share: f64,
    /// The DNS resolver.
    pub resolver: Ipv4Addr,
    /// DNS clients and the mean gap between their queries (Poisson), ns.
    pub dns_clients: Vec<(Ipv4Addr, u64)>,
    /// BFD sessions: the two routers, the negotiated interval (µs) and detect multiplier.
    pub bfd: Vec<(Ipv4Addr, Ipv4Addr, u32, u8)>,
    /// Keepalive senders: source, period (ns), jitter (fraction of the period, ±).
    pub keepalives: Vec<(Ipv4Addr, u64, f64)>,
    /// Where the keepalives go.
    pub coordinator: (Ipv4Addr, u16),
    /// Tenants whose nodes grow linearly (their own prefixes, in [`SoakParams::tenants_toml`]).
    pub growing: Vec<GrowingTenant>,
}

/// A tenant rolling out linearly: `nodes_start` nodes at the start, `nodes_end` at the
/// end, each node opening connections to `server` at `setups_per_node_s` (Poisson).
#[derive(Clone, Debug)]
pub struct GrowingTenant {
    /// Tenant name.
    pub name: String,
    /// Its `/16`: nodes are numbered inside it.
    pub prefix: (u8, u8),
    /// Nodes at the start of the soak.
    pub nodes_start: u32,
    /// Nodes at its end.
    pub nodes_end: u32,
    /// Connections each node opens per second.
    pub setups_per_node_s: f64,
    /// Where they connect (TCP to this port, or WireGuard to it over UDP).
    pub server: (Ipv4Addr, u16),
    /// Setups are WireGuard handshake initiations rather than TCP SYNs.
    pub wireguard: bool,
}

impl GrowingTenant {
    /// Active nodes at `t` ns into a soak of `duration_ns`.
    fn nodes(&self, t: u64, duration_ns: u64) -> u32 {
        let f = t as f64 / duration_ns.max(1) as f64;
        let n = self.nodes_start as f64 + (self.nodes_end as f64 - self.nodes_start as f64) * f;
        (n.round() as u32).max(1)
    }

    /// The address of node `i`.
    fn node(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::new(
            self.prefix.0,
            self.prefix.1,
            (i / 250) as u8,
            (i % 250) as u8 + 1,
        )
    }
}

/// `count` tenants in 10.200.0.0 – 10.239.0.0, each growing linearly by 3 to 10 times from
/// 5 – 40 nodes, each node opening `lo`…`hi` connections per second (log-uniform).
fn growing_tenants(rng: &mut Rng, count: usize, lo: f64, hi: f64) -> Vec<GrowingTenant> {
    (0..count)
        .map(|i| {
            let nodes_start = 5 + rng.below(36) as u32;
            let factor = 3.0 + 7.0 * rng.unit();
            GrowingTenant {
                name: format!("rollout{i}"),
                prefix: (10, 200 + i as u8),
                nodes_start,
                nodes_end: (nodes_start as f64 * factor) as u32,
                setups_per_node_s: log_uniform(rng, lo, hi),
                server: (
                    Ipv4Addr::new(203, 0, 113, 1 + rng.below(250) as u8),
                    [443, 8443, 51820][rng.below(3) as usize],
                ),
                wireguard: rng.below(2) == 0,
            }
        })
        .collect()
}

/// A random address in one of the `/16`s of `plan`.
fn address(rng: &mut Rng, plan: &[(u8, u8)]) -> Ipv4Addr {
    let (a, b) = plan[rng.below(plan.len() as u64) as usize];
    Ipv4Addr::new(a, b, rng.below(256) as u8, 1 + rng.below(254) as u8)
}

/// Log-uniform in `[lo, hi)`.
fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo * (hi / lo).powf(rng.unit())
}

/// Exponential with mean `mean`.
fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.unit()).ln()
}

impl SoakParams {
    /// A deployment drawn from `rng`, `minutes` of event time long: its own address plan
    /// (some clients inside the scenario tenants' prefixes, most outside), relay rate,
    /// swing, DNS habits, BFD timers and keepalive periods.
    pub fn random(rng: &mut Rng, minutes: u64) -> SoakParams {
        let mut plan = vec![(10, 1), (10, 2), (10, 3)];
        for _ in 0..2 + rng.below(4) {
            plan.push(match rng.below(3) {
                0 => (10, 100 + rng.below(150) as u8),
                1 => (172, 16 + rng.below(16) as u8),
                _ => (100, 64 + rng.below(64) as u8),
            });
        }
        let infra = [(192, 0), (198, 51)];
        let clients: Vec<Ipv4Addr> = (0..200 + rng.below(600))
            .map(|_| address(rng, &plan))
            .collect();
        let small_clients = clients.len() * (30 + rng.below(40) as usize) / 100;
        let dns_clients = (0..1000 + rng.below(2000))
            .map(|_| {
                let gap = log_uniform(rng, 2.0, 120.0) * 1e9;
                (address(rng, &plan), gap as u64)
            })
            .collect();
        let bfd = (0..2 + rng.below(5))
            .map(|_| {
                let interval_us = [50_000, 100_000, 300_000, 1_000_000][rng.below(4) as usize];
                let mult = 3 + rng.below(3) as u8;
                (
                    address(rng, &infra),
                    address(rng, &infra),
                    interval_us,
                    mult,
                )
            })
            .collect();
        let keepalives = (0..5 + rng.below(25))
            .map(|_| {
                let period = log_uniform(rng, 1.0, 30.0) * 1e9;
                (address(rng, &plan), period as u64, 0.25 * rng.unit())
            })
            .collect();
        SoakParams {
            duration_ns: minutes * 60 * SEC,
            relay: (address(rng, &infra), 1024 + rng.below(60_000) as u16),
            clients,
            small_clients,
            relay_pps: 2000.0 + 1500.0 * rng.unit(),
            swing: 0.3 + 0.3 * rng.unit(),
            phase: std::f64::consts::TAU * rng.unit(),
            answer_share: 0.2 + 0.2 * rng.unit(),
            resolver: address(rng, &infra),
            dns_clients,
            bfd,
            keepalives,
            coordinator: (address(rng, &infra), 7000 + rng.below(1000) as u16),
            // Drawn last: the draws above make the same deployments as before they existed.
            growing: {
                let count = 2 + rng.below(4) as usize;
                growing_tenants(rng, count, 0.05, 0.5)
            },
        }
    }

    /// A deployment for a soak of `hours`: the same kinds of traffic at the rates of a
    /// quieter relay (tens of packets per second, BFD at 300 ms or 1 s), so hours of event
    /// time stay around a million packets; more tenants grow, more slowly per node.
    pub fn hours(rng: &mut Rng, hours: u64) -> SoakParams {
        let mut p = SoakParams::random(rng, hours * 60);
        p.relay_pps = 30.0 + 60.0 * rng.unit();
        p.clients.truncate(100 + rng.below(200) as usize);
        p.small_clients = p.small_clients.min(p.clients.len() / 2);
        p.dns_clients.truncate(100 + rng.below(300) as usize);
        p.bfd.truncate(1 + rng.below(3) as usize);
        for b in &mut p.bfd {
            b.2 = [300_000, 1_000_000][rng.below(2) as usize];
        }
        p.keepalives.truncate(5 + rng.below(10) as usize);
        let count = 4 + rng.below(5) as usize;
        p.growing = growing_tenants(rng, count, 0.01, 0.1);
        p
    }

    /// The tenants file of this deployment: the scenario tenants and the growing ones.
    pub fn tenants_toml(&self) -> String {
        let mut t = crate::TENANTS_TOML.to_string();
        for g in &self.growing {
            t.push_str(&format!(
                "\n[[tenant]]\nname = \"{}\"\nprefixes = [\"{}.{}.0.0/16\"]\n",
                g.name, g.prefix.0, g.prefix.1
            ));
        }
        t
    }

    /// The relay's rate (packets/s) at `t` ns into the soak: one "day" over its span.
    fn relay_rate(&self, t: u64) -> f64 {
        let day = std::f64::consts::TAU * t as f64 / self.duration_ns.max(1) as f64;
        self.relay_pps * (1.0 + self.swing * (day + self.phase).sin())
    }
}

/// A pending event: what to send next, for whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The next packet to or from the relay.
    Relay,
    /// DNS client `i` queries.
    Query(usize),
    /// The resolver answers client `i` on its port.
    Answer(usize, u16),
    /// BFD session `i`, direction `b` (false: first router to second).
    Bfd(usize, bool),
    /// Keepalive sender `i`.
    Keepalive(usize),
    /// A node of growing tenant `i` opens a connection.
    Setup(usize),
    /// The server answers node `n` of growing tenant `i` on port `p`.
    SetupAnswer(usize, u32, u16),
}

/// The soak's frames, generated on demand in event-time order.
pub struct Soak {
    params: SoakParams,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, Event)>>,
    /// Start of the next chunk, ns after the soak's start.
    at: u64,
}

impl Soak {
    /// A soak of `params`, its randomness drawn from `seed`.
    pub fn new(params: SoakParams, seed: u64) -> Soak {
        let mut rng = Rng::new(seed);
        let mut queue = BinaryHeap::new();
        queue.push(Reverse((0, Event::Relay)));
        for (i, (_, gap)) in params.dns_clients.iter().enumerate() {
            let first = exponential(&mut rng, *gap as f64) as u64;
            queue.push(Reverse((first, Event::Query(i))));
        }
        for (i, (_, _, interval_us, _)) in params.bfd.iter().enumerate() {
            for back in [false, true] {
                let first = rng.below(u64::from(*interval_us) * 1000);
                queue.push(Reverse((first, Event::Bfd(i, back))));
            }
        }
        for (i, (_, period, _)) in params.keepalives.iter().enumerate() {
            queue.push(Reverse((rng.below(*period), Event::Keepalive(i))));
        }
        for i in 0..params.growing.len() {
            queue.push(Reverse((0, Event::Setup(i))));
        }
        Soak {
            params,
            rng,
            queue,
            at: 0,
        }
    }

    /// The deployment this soak plays.
    pub fn params(&self) -> &SoakParams {
        &self.params
    }

    /// The frames of the next `chunk_ns` of event time, or `None` once the soak is over.
    pub fn next_chunk(&mut self, chunk_ns: u64) -> Option<CaptureBuilder> {
        if self.at >= self.params.duration_ns {
            return None;
        }
        let end = (self.at + chunk_ns).min(self.params.duration_ns);
        let mut c = CaptureBuilder::new();
        while let Some(&Reverse((t, event))) = self.queue.peek() {
            if t >= end {
                break;
            }
            self.queue.pop();
            if let Some(next) = self.play(&mut c, t, event) {
                self.queue.push(Reverse(next));
            }
        }
        self.at = end;
        Some(c)
    }

    /// Sends one event's packet at `t`; returns the event that follows it.
    fn play(&mut self, c: &mut CaptureBuilder, t: u64, event: Event) -> Option<(u64, Event)> {
        let p = &self.params;
        let rng = &mut self.rng;
        let ts = EPOCH_NS + t;
        match event {
            Event::Relay => {
                let i = rng.below(p.clients.len() as u64) as usize;
                let client = (p.clients[i], 20_000 + (i % 40_000) as u16);
                let len = match i < p.small_clients {
                    true => 40 + rng.below(200),
                    false => 40 + rng.below(1300),
                } as usize;
                let payload = &PAYLOAD[..len];
                if rng.unit() < p.answer_share {
                    c.udp(ts, p.relay, client, None, payload);
                } else {
                    c.udp(ts, client, p.relay, None, payload);
                }
                let gap = exponential(rng, 1e9 / p.relay_rate(t)) as u64;
                Some((t + gap.max(1), Event::Relay))
            }
            Event::Query(i) => {
                let (client, gap) = p.dns_clients[i];
                let port = 1024 + rng.below(64_000) as u16;
                c.udp(ts, (client, port), (p.resolver, 53), None, &dns_query());
                let answer = t + (1 + rng.below(40)) * MS;
                self.queue.push(Reverse((answer, Event::Answer(i, port))));
                let next = exponential(rng, gap as f64) as u64;
                Some((t + next.max(1), Event::Query(i)))
            }
            Event::Answer(i, port) => {
                let client = p.dns_clients[i].0;
                let mut answer = dns_query();
                answer[2] = 0x81;
                answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 192, 0, 2, 1]);
                c.udp(ts, (p.resolver, 53), (client, port), None, &answer);
                None
            }
            Event::Bfd(i, back) => {
                let (a, b, interval_us, mult) = p.bfd[i];
                let (src, dst, my, your) = match back {
                    false => (a, b, 2 * i as u32 + 1, 2 * i as u32 + 2),
                    true => (b, a, 2 * i as u32 + 2, 2 * i as u32 + 1),
                };
                let ctl = bfd_control(3, mult, my, your, interval_us);
                c.udp(ts, (src, 49152 + i as u16), (dst, 3784), None, &ctl);
                // RFC 5880 §6.8.7: each interval is 75-100 % of the negotiated one.
                let interval = u64::from(interval_us) * 1000;
                let next = interval - rng.below(interval / 4);
                Some((t + next, Event::Bfd(i, back)))
            }
            Event::Keepalive(i) => {
                let (src, period, jitter) = p.keepalives[i];
                c.udp(ts, (src, 7946), p.coordinator, None, b"alive");
                let next = period as f64 * (1.0 + jitter * (2.0 * rng.unit() - 1.0));
                Some((t + next as u64, Event::Keepalive(i)))
            }
            Event::Setup(i) => {
                let g = &p.growing[i];
                let nodes = g.nodes(t, p.duration_ns);
                let n = rng.below(u64::from(nodes)) as u32;
                let port = match g.wireguard {
                    true => 51820,
                    false => 32768 + rng.below(28_000) as u16,
                };
                let node = (g.node(n), port);
                if g.wireguard {
                    c.udp(ts, node, g.server, None, &wireguard(1, 148, rng));
                } else {
                    c.tcp(ts, node, g.server, 0x02, rng.next_u64() as u32, 0, &[]);
                }
                let answer = t + (1 + rng.below(30)) * MS;
                self.queue
                    .push(Reverse((answer, Event::SetupAnswer(i, n, port))));
                // The tenant's setups: a Poisson process at nodes × the per-node rate.
                let rate = nodes as f64 * g.setups_per_node_s;
                let gap = exponential(rng, 1e9 / rate) as u64;
                Some((t + gap.max(1), Event::Setup(i)))
            }
            Event::SetupAnswer(i, n, port) => {
                let g = &p.growing[i];
                let node = (g.node(n), port);
                if g.wireguard {
                    c.udp(ts, g.server, node, None, &wireguard(2, 92, rng));
                } else {
                    let seq = rng.next_u64() as u32;
                    c.tcp(ts, g.server, node, 0x12, seq, 1, &[]);
                }
                None
            }
        }
    }

    /// Writes the whole soak as one nanosecond pcap, a chunk of event time at a time;
    /// returns the frames written.
    pub fn write_pcap(mut self, out: impl std::io::Write) -> std::io::Result<u64> {
        let mut w = tapwatch_capture::PcapWriter::new(
            out,
            tapwatch_capture::LinkType::Ethernet,
            crate::SNAPLEN,
        )?;
        let mut n = 0;
        while let Some(mut chunk) = self.next_chunk(60 * SEC) {
            chunk.frames.sort_by_key(|f| f.0);
            for (ts, data) in &chunk.frames {
                w.write(*ts, data)?;
            }
            n += chunk.frames.len() as u64;
        }
        w.finish()?;
        Ok(n)
    }
}

/// A WireGuard message of type `ty` (1: handshake initiation, 148 bytes; 2: response, 92),
/// its random part drawn from `rng`.
fn wireguard(ty: u8, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut m = vec![0u8; len];
    m[0] = ty;
    for b in &mut m[4..] {
        *b = rng.next_u64() as u8;
    }
    m
}

/// A DNS query for `example.` (type A).
fn dns_query() -> Vec<u8> {
    vec![
        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0,
        0, 1, 0, 1,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soak_is_deterministic_and_the_relay_dominates() {
        let frames = |seed| {
            let mut soak = Soak::new(SoakParams::random(&mut Rng::new(seed), 1), seed);
            let mut pcap = Vec::new();
            let mut chunks = 0;
            while let Some(c) = soak.next_chunk(10 * SEC) {
                c.write(&mut pcap).unwrap();
                chunks += 1;
            }
            (pcap, chunks, soak.params().relay_pps)
        };
        let (a, chunks, pps) = frames(5);
        assert_eq!(chunks, 6);
        assert_eq!(a, frames(5).0);
        assert_ne!(a, frames(6).0);
        // ~60 s of the relay's packets, about 100 bytes of pcap each at least.
        assert!(
            a.len() as f64 > 0.4 * pps * 60.0 * 100.0,
            "{} bytes",
            a.len()
        );
    }
}
