//! Latency scenarios: a response-time shift on one server of several, rare echo stalls, a
//! slow RST, a TCP-timestamp RTT step on a long-lived flow, and benign look-alikes (high
//! but steady, jittery, sparse, a long path). Each draws its own rates, delays and address
//! choices from the seed.
use std::net::Ipv4Addr;

use super::{ip, tls_record, CaptureBuilder, Expected, Rng, MS, SEC};

const US: u64 = 1_000;

/// Delays of one connection, ns: the server's SYN-ACK, the client's side of the path,
/// and the server's time to its first response byte.
#[derive(Clone, Copy)]
struct Timing {
    syn_ack: u64,
    client_rtt: u64,
    service: u64,
}

/// A connection from `cli` to `srv` at `t`: handshake, one request, one response, FINs.
fn exchange(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t: u64,
    cli: (Ipv4Addr, u16),
    srv: (Ipv4Addr, u16),
    d: Timing,
) {
    let (seq, rseq) = (rng.next_u64() as u32, rng.next_u64() as u32);
    let (s1, r1) = (seq.wrapping_add(1), rseq.wrapping_add(1));
    c.tcp(t, cli, srv, 0x02, seq, 0, &[]);
    let t1 = t + d.syn_ack;
    c.tcp(t1, srv, cli, 0x12, rseq, s1, &[]);
    let t2 = t1 + d.client_rtt;
    c.tcp(t2, cli, srv, 0x10, s1, r1, &[]);
    let req = tls_record(23, 200);
    c.tcp(t2 + 50 * US, cli, srv, 0x18, s1, r1, &req);
    let t3 = t2 + 50 * US + d.service;
    c.tcp(
        t3,
        srv,
        cli,
        0x18,
        r1,
        s1.wrapping_add(205),
        &tls_record(23, 1200),
    );
    let t4 = t3 + d.client_rtt;
    c.tcp(
        t4,
        cli,
        srv,
        0x11,
        s1.wrapping_add(205),
        r1.wrapping_add(1205),
        &[],
    );
    c.tcp(
        t4 + 100 * US,
        srv,
        cli,
        0x11,
        r1.wrapping_add(1205),
        s1.wrapping_add(206),
        &[],
    );
}

fn client(rng: &mut Rng) -> (Ipv4Addr, u16) {
    (
        ip(10, 60, rng.below(8) as u8, 10 + rng.below(200) as u8),
        32768 + rng.below(28000) as u16,
    )
}

/// Mean `mean`, ±`spread` (a share of it), uniform.
fn around(rng: &mut Rng, mean: u64, spread: f64) -> u64 {
    let lo = mean as f64 * (1.0 - spread);
    (lo + rng.unit() * 2.0 * spread * mean as f64) as u64
}

/// Several servers answer in a few ms; from a moment on, one of them takes ~100 ms more
/// to answer, while its handshakes stay as fast as before.
pub(super) fn response_shift(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
) -> Vec<Expected> {
    let servers = 3 + rng.below(3) as u8;
    let slow = rng.below(u64::from(servers)) as u8;
    let shift = (80 + rng.below(60)) * MS;
    let from = t0 + (end - t0) / 2 + rng.below(20) * SEC;
    for s in 0..servers {
        let srv = (ip(192, 0, 2, 100 + s), 443);
        let service = (2 + rng.below(20)) * MS;
        let rate = 4 + rng.below(9);
        let step = SEC / rate;
        let mut t = t0 + rng.below(step);
        while t + SEC < end {
            let extra = if s == slow && t >= from { shift } else { 0 };
            let d = Timing {
                syn_ack: around(rng, 300 * US, 0.5),
                client_rtt: around(rng, 10 * MS, 0.8),
                service: around(rng, service, 0.3) + extra,
            };
            let cli = client(rng);
            exchange(c, rng, t, cli, srv, d);
            t += step / 2 + rng.below(step);
        }
    }
    vec![Expected {
        kind: "latency_shift".into(),
        subject: format!("192.0.2.{}:443/tcp", 100 + slow),
        tenant: Some("infrastructure".into()),
        earliest_ns: from,
        latest_ns: from + 40 * SEC,
        why: format!(
            "one server of {servers} takes {} ms more to answer; handshakes unchanged",
            shift / MS
        ),
    }]
}

/// A monitor pings a few hosts several times a second at Poisson times, answered in well
/// under a millisecond; one host stalls twice for 1.2-2 s, answering everything held at the end.
pub(super) fn echo_stall(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
) -> Vec<Expected> {
    let monitor = ip(198, 51, 100, 9);
    let hosts = 3 + rng.below(3) as u8;
    let stalling = rng.below(u64::from(hosts)) as u8;
    let period = (150 + rng.below(150)) * MS;
    let first_stall = t0 + 80 * SEC + rng.below(20) * SEC;
    let stalls = [first_stall, first_stall + (30 + rng.below(20)) * SEC];
    let mut expected = Vec::new();
    for h in 0..hosts {
        let host = ip(192, 0, 2, 40 + h);
        let id = 1000 + u16::from(h);
        let mut t = t0 + rng.below(period);
        let mut seq = 0u16;
        let mut held_until = 0;
        let mut next_stall = 0;
        while t < end {
            c.ping(t, monitor, host, id, seq);
            let mut reply = t + around(rng, 200 * US, 0.6);
            if h == stalling && next_stall < stalls.len() && t >= stalls[next_stall] {
                held_until = t + (1200 + rng.below(800)) * MS;
                if next_stall == 0 {
                    expected.push(Expected {
                        kind: "latency_shift".into(),
                        subject: format!("{host}/icmp"),
                        tenant: Some("infrastructure".into()),
                        earliest_ns: held_until,
                        latest_ns: (held_until / (10 * SEC) + 1) * 10 * SEC,
                        why: format!(
                            "{host} holds its echo replies for {} ms among sub-ms replies",
                            (held_until - t) / MS
                        ),
                    });
                }
                next_stall += 1;
            }
            if reply < held_until {
                reply = held_until + around(rng, 100 * US, 0.5);
            }
            c.pong(reply, host, monitor, id, seq);
            seq = seq.wrapping_add(1);
            // Probes at Poisson times (a prober spreading many targets), not a heartbeat.
            t += 10 * MS + (-(1.0 - rng.unit()).ln() * period as f64) as u64;
        }
    }
    expected
}

/// Clients send one request each to two servers that refuse it with a RST within a
/// millisecond or two; from a moment on, one of them takes ~200 ms to send its RST.
pub(super) fn slow_rst(c: &mut CaptureBuilder, rng: &mut Rng, t0: u64, end: u64) -> Vec<Expected> {
    let from = t0 + 80 * SEC + rng.below(20) * SEC;
    let delay = (150 + rng.below(100)) * MS;
    let slow = rng.below(2) as u8;
    for s in 0..2u8 {
        let srv = (ip(192, 0, 2, 60 + s), 8080);
        let rate = 2 + rng.below(4);
        let step = SEC / rate;
        let mut t = t0 + rng.below(step);
        while t + SEC < end {
            let cli = client(rng);
            let (seq, rseq) = (rng.next_u64() as u32, rng.next_u64() as u32);
            let (s1, r1) = (seq.wrapping_add(1), rseq.wrapping_add(1));
            let rtt = around(rng, 3 * MS, 0.5);
            c.tcp(t, cli, srv, 0x02, seq, 0, &[]);
            c.tcp(t + 100 * US, srv, cli, 0x12, rseq, s1, &[]);
            let t2 = t + 100 * US + rtt;
            c.tcp(t2, cli, srv, 0x10, s1, r1, &[]);
            c.tcp(
                t2 + 20 * US,
                cli,
                srv,
                0x18,
                s1,
                r1,
                b"HELO relay.example\r\n",
            );
            let rst = if s == slow && t >= from {
                delay
            } else {
                around(rng, MS, 0.7)
            };
            c.tcp(
                t2 + 20 * US + rst,
                srv,
                cli,
                0x14,
                r1,
                s1.wrapping_add(20),
                &[],
            );
            t += step / 2 + rng.below(step);
        }
    }
    vec![Expected {
        kind: "latency_shift".into(),
        subject: format!("192.0.2.{}:8080/tcp", 60 + slow),
        tenant: Some("infrastructure".into()),
        earliest_ns: from,
        latest_ns: from + 40 * SEC,
        why: format!(
            "the server's RSTs take {} ms where the path RTT is 3 ms",
            delay / MS
        ),
    }]
}

/// A long-lived bulk flow (begun before the capture, timestamps on): the server sends a
/// segment every few ms, the client acknowledges each after the path RTT.
#[allow(clippy::too_many_arguments)]
fn bulk_flow(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    srv: (Ipv4Addr, u16),
    cli: (Ipv4Addr, u16),
    gap: u64,
    rtt: impl Fn(&mut Rng, u64) -> u64,
) {
    let (mut seq, ack) = (rng.next_u64() as u32, rng.next_u64() as u32);
    let (clock_s, clock_c) = (rng.next_u64() as u32, rng.next_u64() as u32);
    let ms = |t: u64, base: u32| base.wrapping_add(((t - t0) / MS) as u32);
    let mut t = t0 + rng.below(gap);
    while t < end {
        let tsval = ms(t, clock_s);
        c.tcp_ts(
            t,
            srv,
            cli,
            0x18,
            seq,
            ack,
            Some((tsval, ms(t, clock_c))),
            &[0u8; 64],
        );
        seq = seq.wrapping_add(1400);
        let back = t + rtt(rng, t);
        c.tcp_ts(
            back,
            cli,
            srv,
            0x10,
            ack,
            seq,
            Some((ms(back, clock_c), tsval)),
            &[],
        );
        t += around(rng, gap, 0.2);
    }
}

/// Long-lived flows from a few servers; the path of one of them steps up from a few ms
/// to 60-100 ms.
pub(super) fn tcp_rtt_step(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
) -> Vec<Expected> {
    let from = t0 + 80 * SEC + rng.below(20) * SEC;
    let flows = 2 + rng.below(2) as u8;
    let stepping = rng.below(u64::from(flows)) as u8;
    let after = (60 + rng.below(40)) * MS;
    for f in 0..flows {
        let srv = (ip(192, 0, 2, 70 + f), 5201);
        let cli = client(rng);
        let before = (3 + rng.below(10)) * MS;
        let gap = (5 + rng.below(30)) * MS;
        let steps = f == stepping;
        bulk_flow(c, rng, t0, end, srv, cli, gap, move |rng, t| {
            around(rng, if steps && t >= from { after } else { before }, 0.2)
        });
    }
    vec![Expected {
        kind: "latency_shift".into(),
        subject: format!("192.0.2.{}:5201/tcp", 70 + stepping),
        tenant: Some("infrastructure".into()),
        earliest_ns: from,
        latest_ns: from + 40 * SEC,
        why: format!("a long-lived flow's path RTT steps up to {} ms", after / MS),
    }]
}

/// Look-alikes that must raise nothing: a server answering in ~300 ms all along, one with
/// jittery, heavy-tailed answers, one seen every 15 s with one 2.5 s answer, one that
/// resets an idle connection now and then seconds after the client's last ACK, a
/// long-lived flow over a 180 ms path, and a far host answering pings in ~150 ms.
pub(super) fn latency_benign(c: &mut CaptureBuilder, rng: &mut Rng, t0: u64, end: u64) {
    let steady = (ip(192, 0, 2, 110), 443);
    let jittery = (ip(192, 0, 2, 111), 443);
    let sparse = (ip(192, 0, 2, 112), 443);
    let slow_service = (250 + rng.below(150)) * MS;
    let mut t = t0 + rng.below(200) * MS;
    while t + 2 * SEC < end {
        let d = Timing {
            syn_ack: around(rng, 400 * US, 0.5),
            client_rtt: around(rng, 20 * MS, 0.5),
            service: around(rng, slow_service, 0.1),
        };
        let cli = client(rng);
        exchange(c, rng, t, cli, steady, d);
        t += (100 + rng.below(200)) * MS;
    }
    let mut t = t0 + rng.below(200) * MS;
    while t + 3 * SEC < end {
        // Exponential around 30 ms, and 2 % between 0.5 and 1.5 s.
        let service = if rng.below(50) == 0 {
            (500 + rng.below(1000)) * MS
        } else {
            2 * MS + (-(1.0 - rng.unit()).ln() * 30.0 * MS as f64) as u64
        };
        let d = Timing {
            syn_ack: around(rng, 300 * US, 0.9),
            client_rtt: around(rng, 15 * MS, 0.9),
            service,
        };
        let cli = client(rng);
        exchange(c, rng, t, cli, jittery, d);
        t += (50 + rng.below(200)) * MS;
    }
    let mut t = t0 + rng.below(5) * SEC;
    let odd = (end - t0) / 2;
    while t + 3 * SEC < end {
        let service = if t >= t0 + odd && t < t0 + odd + 15 * SEC {
            2500 * MS
        } else {
            around(rng, 5 * MS, 0.3)
        };
        let d = Timing {
            syn_ack: around(rng, 300 * US, 0.5),
            client_rtt: around(rng, 10 * MS, 0.5),
            service,
        };
        let cli = client(rng);
        exchange(c, rng, t, cli, sparse, d);
        t += around(rng, 15 * SEC, 0.1);
    }
    // A server that refuses a third of its requests with a RST within ~1 ms and closes one
    // idle connection in 150 with a RST 3-8 s after the client's last ACK (an idle timeout,
    // not an answer), the others with FINs.
    let idler = (ip(192, 0, 2, 115), 443);
    let mut t = t0 + rng.below(300) * MS;
    while t + 10 * SEC < end {
        let cli = client(rng);
        let (seq, rseq) = (rng.next_u64() as u32, rng.next_u64() as u32);
        let (s1, r1) = (seq.wrapping_add(1), rseq.wrapping_add(1));
        let rtt = around(rng, 12 * MS, 0.5);
        c.tcp(t, cli, idler, 0x02, seq, 0, &[]);
        c.tcp(t + 200 * US, idler, cli, 0x12, rseq, s1, &[]);
        let t2 = t + 200 * US + rtt;
        c.tcp(t2, cli, idler, 0x10, s1, r1, &[]);
        c.tcp(t2 + 50 * US, cli, idler, 0x18, s1, r1, &tls_record(23, 200));
        if rng.below(3) == 0 {
            // A request refused at once: the fast RSTs the idle ones would stand out from.
            let refuse = t2 + 50 * US + around(rng, MS, 0.5);
            c.tcp(refuse, idler, cli, 0x14, r1, s1.wrapping_add(205), &[]);
            t += (100 + rng.below(300)) * MS;
            continue;
        }
        let t3 = t2 + around(rng, 4 * MS, 0.5);
        c.tcp(
            t3,
            idler,
            cli,
            0x18,
            r1,
            s1.wrapping_add(205),
            &tls_record(23, 900),
        );
        let t4 = t3 + rtt;
        let (s2, r2) = (s1.wrapping_add(205), r1.wrapping_add(905));
        c.tcp(t4, cli, idler, 0x10, s2, r2, &[]);
        if rng.below(150) == 0 {
            c.tcp(
                t4 + (3000 + rng.below(5000)) * MS,
                idler,
                cli,
                0x14,
                r2,
                s2,
                &[],
            );
        } else {
            c.tcp(t4 + 5 * MS, cli, idler, 0x11, s2, r2, &[]);
            c.tcp(
                t4 + 5 * MS + rtt,
                idler,
                cli,
                0x11,
                r2,
                s2.wrapping_add(1),
                &[],
            );
        }
        t += (100 + rng.below(300)) * MS;
    }
    let far = (ip(10, 60, 200, 1), 41000 + rng.below(1000) as u16);
    let path = (160 + rng.below(40)) * MS;
    bulk_flow(
        c,
        rng,
        t0,
        end,
        (ip(192, 0, 2, 114), 873),
        far,
        20 * MS,
        move |rng, _| around(rng, path, 0.1),
    );
    let (monitor, host) = (ip(198, 51, 100, 9), ip(192, 0, 2, 113));
    let mut t = t0;
    let mut seq = 0u16;
    while t < end {
        c.ping(t, monitor, host, 77, seq);
        c.pong(t + around(rng, 150 * MS, 0.15), host, monitor, 77, seq);
        seq = seq.wrapping_add(1);
        t += around(rng, 500 * MS, 0.1);
    }
}

/// Tenant acme's four servers answer in a few ms; from a moment on a shared dependency
/// slows three of them (or all four) by 60-120 ms together.
pub(super) fn tenant_shift(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
) -> Vec<Expected> {
    let from = t0 + 80 * SEC + rng.below(20) * SEC;
    let extra = (60 + rng.below(60)) * MS;
    let spared = rng.below(5) as u8; // 4: none spared
    let mut expected = Vec::new();
    for s in 0..4u8 {
        let srv = (ip(10, 1, 200, 1 + s), 8080);
        let service = (3 + rng.below(12)) * MS;
        let rate = 6 + rng.below(5);
        let step = SEC / rate;
        let slows = s != spared;
        let mut t = t0 + rng.below(step);
        while t + SEC < end {
            let d = Timing {
                syn_ack: around(rng, 200 * US, 0.5),
                client_rtt: around(rng, 8 * MS, 0.6),
                service: around(rng, service, 0.3) + if slows && t >= from { extra } else { 0 },
            };
            let cli = client(rng);
            exchange(c, rng, t, cli, srv, d);
            t += step / 2 + rng.below(step);
        }
        if slows {
            expected.push(Expected {
                kind: "latency_shift".into(),
                subject: format!("{}:8080/tcp", srv.0),
                tenant: Some("acme".into()),
                earliest_ns: from,
                latest_ns: from + 40 * SEC,
                why: format!(
                    "a shared dependency adds {} ms to this server's answers",
                    extra / MS
                ),
            });
        }
    }
    expected.push(Expected {
        kind: "latency_shift".into(),
        subject: "acme".into(),
        tenant: Some("acme".into()),
        earliest_ns: from,
        latest_ns: from + 40 * SEC,
        why: format!(
            "{} of acme's 4 servers slow down together",
            if spared < 4 { 3 } else { 4 }
        ),
    });
    expected
}
