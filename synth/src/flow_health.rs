//! Flow-health scenarios: an ECMP member whose traffic drops to zero while its peers take
//! it over, a server whose TCP data starts being retransmitted, HTTP upgrades that start
//! failing — and their benign look-alikes in one capture.
use std::net::Ipv4Addr;

use super::{ip, CaptureBuilder, Expected, Rng, MS, SEC};

/// Parameters of [`ecmp_drop`].
#[derive(Clone, Copy, Debug)]
pub struct EcmpDrop {
    /// Members of the ECMP set (the first one drops).
    pub members: u8,
    /// Packets per second each member receives normally.
    pub member_pps: f64,
    /// Seconds from the start at which the first member's traffic stops.
    pub drop_at_s: f64,
    /// Seconds it stays at zero.
    pub drop_s: f64,
}

/// One-way UDP to `dst` at `pps(t)` (Poisson-like gaps) from random `web` clients.
fn udp_stream(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    dst: (Ipv4Addr, u16),
    from: u64,
    to: u64,
    pps: &dyn Fn(u64) -> f64,
) {
    let mut t = from;
    while t < to {
        let rate = pps(t);
        if rate <= 0.0 {
            t += 100 * MS;
            continue;
        }
        let client = ip(10, 60, rng.below(4) as u8, 10 + rng.below(200) as u8);
        let port = 32768 + rng.below(28000) as u16;
        c.udp(t, (client, port), dst, None, &[0u8; 64]);
        let mean = 1e9 / rate;
        t += (mean * (0.5 + rng.unit())) as u64;
    }
}

/// An ECMP set of `members` load-balancer members (`198.51.100.11…`, port 9000/udp): the
/// first one's routes are withdrawn for `drop_s` and the others share its traffic.
pub fn ecmp_drop(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    p: EcmpDrop,
) -> Vec<Expected> {
    let from = t0 + (p.drop_at_s * 1e9) as u64;
    let to = from + (p.drop_s * 1e9) as u64;
    let n = f64::from(p.members);
    for m in 0..p.members {
        let dst = (ip(198, 51, 100, 11 + m), 9000);
        let pps = move |t: u64| {
            let withdrawn = (from..to).contains(&t);
            match (m, withdrawn) {
                (0, true) => 0.0,
                (_, true) => p.member_pps * n / (n - 1.0),
                _ => p.member_pps,
            }
        };
        udp_stream(c, rng, dst, t0, end, &pps);
    }
    // Detected after `min_windows` quiet 10 s windows, the first one whole: within two
    // windows of the drop plus the detector's minimum span of three.
    let latest = from + 50 * SEC;
    let first = ip(198, 51, 100, 11);
    [
        format!("{first}"),
        format!("{first}:9000/udp"),
    ]
    .into_iter()
    .map(|subject| Expected {
        kind: "traffic_drop".into(),
        subject,
        tenant: Some("infrastructure".into()),
        earliest_ns: from,
        latest_ns: latest,
        why: "an ECMP member's routes are withdrawn: its traffic drops to zero while the others rise"
            .into(),
    })
    .collect()
}

/// A TCP download from `server` to `client` starting at `t`: handshake, a 100-byte request,
/// `segments` data segments of 1000 bytes `gap` apart (each lost after the mirror with
/// probability `loss`: two duplicate ACKs, then sent again 200 ms later), FINs. Returns the
/// end time.
#[allow(clippy::too_many_arguments)]
fn download(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t: u64,
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    segments: u32,
    gap: u64,
    loss: f64,
) -> u64 {
    let (cs, ss) = (rng.next_u64() as u32, rng.next_u64() as u32);
    c.tcp(t, client, server, 0x02, cs, 0, &[]);
    c.tcp(t + MS, server, client, 0x12, ss, cs.wrapping_add(1), &[]);
    c.tcp(
        t + 2 * MS,
        client,
        server,
        0x10,
        cs.wrapping_add(1),
        ss.wrapping_add(1),
        &[],
    );
    let cseq = cs.wrapping_add(101);
    c.tcp(
        t + 3 * MS,
        client,
        server,
        0x18,
        cs.wrapping_add(1),
        ss.wrapping_add(1),
        &[b'G'; 100],
    );
    let data = [0u8; 1000];
    let mut at = t + 5 * MS;
    let mut acked = ss.wrapping_add(1);
    for i in 0..segments {
        let seq = ss.wrapping_add(1 + i * 1000);
        c.tcp(at, server, client, 0x10, seq, cseq, &data);
        if rng.unit() < loss {
            // Lost past the tap: the client asks again for it, the server resends it.
            c.tcp(at + gap / 2, client, server, 0x10, cseq, acked, &[]);
            c.tcp(at + gap * 3 / 4, client, server, 0x10, cseq, acked, &[]);
            c.tcp(at + 200 * MS, server, client, 0x10, seq, cseq, &data);
        } else if i % 2 == 1 {
            acked = seq.wrapping_add(1000);
            c.tcp(at + MS / 2, client, server, 0x10, cseq, acked, &[]);
        }
        at += gap;
    }
    let fin = ss.wrapping_add(1 + segments * 1000);
    at += 200 * MS;
    c.tcp(at, server, client, 0x11, fin, cseq, &[]);
    c.tcp(
        at + MS,
        client,
        server,
        0x11,
        cseq,
        fin.wrapping_add(1),
        &[],
    );
    c.tcp(
        at + 2 * MS,
        server,
        client,
        0x10,
        fin.wrapping_add(1),
        cseq.wrapping_add(1),
        &[],
    );
    at + 2 * MS
}

/// Downloads from `server` starting `per_s` times a second between `from` and `to`, with
/// loss `loss(t)`.
#[allow(clippy::too_many_arguments)]
fn downloads(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    server: (Ipv4Addr, u16),
    from: u64,
    to: u64,
    per_s: f64,
    loss: &dyn Fn(u64) -> f64,
) {
    let step = (1e9 / per_s) as u64;
    let mut t = from;
    while t + 2 * SEC < to {
        let client = (
            ip(10, 60, rng.below(4) as u8, 10 + rng.below(200) as u8),
            32768 + rng.below(28000) as u16,
        );
        let segments = 10 + rng.below(20) as u32;
        download(c, rng, t, client, server, segments, 20 * MS, loss(t));
        t += step / 2 + rng.below(step);
    }
}

/// A server's downloads at ~0.1 % loss, then `loss` for 40 s from `jump_at_s`.
pub fn retransmit_jump(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    jump_at_s: f64,
    loss: f64,
) -> Vec<Expected> {
    let server = (ip(192, 0, 2, 90), 443);
    let from = t0 + (jump_at_s * 1e9) as u64;
    let to = from + 40 * SEC;
    downloads(c, rng, server, t0, end, 5.0, &|t| {
        if (from..to).contains(&t) {
            loss
        } else {
            0.001
        }
    });
    vec![Expected {
        kind: "retransmits".into(),
        subject: format!("{}:{}/tcp", server.0, server.1),
        tenant: Some("infrastructure".into()),
        earliest_ns: from,
        // Two 10 s windows after the jump, judged when the next begins.
        latest_ns: from + 30 * SEC,
        why: "a server's data retransmissions jump from ~0 to a few percent".into(),
    }]
}

/// What a server does with an upgrade request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Switch,
    Refuse(u16),
    Silence,
}

/// One websocket upgrade from `client` to `server` at `t`.
fn upgrade(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t: u64,
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    answer: Answer,
) {
    let (cs, ss) = (rng.next_u64() as u32, rng.next_u64() as u32);
    let (c1, s1) = (cs.wrapping_add(1), ss.wrapping_add(1));
    c.tcp(t, client, server, 0x02, cs, 0, &[]);
    c.tcp(t + MS, server, client, 0x12, ss, c1, &[]);
    c.tcp(t + 2 * MS, client, server, 0x10, c1, s1, &[]);
    let req: &[u8] = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let c2 = c1.wrapping_add(req.len() as u32);
    c.tcp(t + 3 * MS, client, server, 0x18, c1, s1, req);
    let status = match answer {
        Answer::Switch => Some(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec()),
        Answer::Refuse(s) => Some(format!("HTTP/1.1 {s} Refused\r\n\r\n").into_bytes()),
        Answer::Silence => None,
    };
    let Some(status) = status else {
        // Nothing comes back: the client gives up after 6 s.
        c.tcp(t + 6 * SEC, client, server, 0x11, c2, s1, &[]);
        c.tcp(
            t + 6 * SEC + MS,
            server,
            client,
            0x11,
            s1,
            c2.wrapping_add(1),
            &[],
        );
        return;
    };
    let s2 = s1.wrapping_add(status.len() as u32);
    c.tcp(t + 5 * MS, server, client, 0x18, s1, c2, &status);
    let mut s = s2;
    let mut at = t + 6 * MS;
    if answer == Answer::Switch {
        for _ in 0..3 {
            at += 200 * MS;
            c.tcp(
                at,
                server,
                client,
                0x18,
                s,
                c2,
                &[0x81, 4, b'p', b'i', b'n', b'g'],
            );
            s = s.wrapping_add(6);
            c.tcp(at + MS, client, server, 0x10, c2, s, &[]);
        }
    }
    at += 10 * MS;
    c.tcp(at, server, client, 0x11, s, c2, &[]);
    c.tcp(at + MS, client, server, 0x11, c2, s.wrapping_add(1), &[]);
}

/// Websocket upgrades `per_s` a second towards `server`; `answer(t)` decides each.
fn upgrades(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    server: (Ipv4Addr, u16),
    from: u64,
    to: u64,
    per_s: f64,
    answer: &dyn Fn(u64, &mut Rng) -> Answer,
) {
    let step = (1e9 / per_s) as u64;
    let mut t = from;
    while t + 7 * SEC < to {
        let client = (
            ip(10, 60, rng.below(4) as u8, 10 + rng.below(200) as u8),
            32768 + rng.below(28000) as u16,
        );
        let a = answer(t, rng);
        upgrade(c, rng, t, client, server, a);
        t += step / 2 + rng.below(step);
    }
}

/// Upgrades through a proxy: for 60 s from `fail_at_s`, `refused` of them get a 403 and
/// `silent` of them no answer at all.
pub fn upgrade_failure(
    c: &mut CaptureBuilder,
    rng: &mut Rng,
    t0: u64,
    end: u64,
    fail_at_s: f64,
    refused: f64,
    silent: f64,
) -> Vec<Expected> {
    let server = (ip(192, 0, 2, 95), 80);
    let from = t0 + (fail_at_s * 1e9) as u64;
    let to = from + 60 * SEC;
    upgrades(c, rng, server, t0, end, 2.0, &|t, rng| {
        let u = rng.unit();
        if !(from..to).contains(&t) || u >= refused + silent {
            Answer::Switch
        } else if u < refused {
            Answer::Refuse(403)
        } else {
            Answer::Silence
        }
    });
    vec![Expected {
        kind: "upgrade_failure".into(),
        subject: format!("{}:{}/tcp", server.0, server.1),
        tenant: Some("infrastructure".into()),
        earliest_ns: from,
        // Two 30 s windows after the failures begin, judged when the next begins.
        latest_ns: from + 90 * SEC,
        why: "websocket upgrades through a proxy start failing: 403s and silence".into(),
    }]
}

/// The look-alikes, none of which may fire: a destination in diurnal decline, a bursty
/// one, one idle then busy, one that pauses for 12 s, a steady one cut off by the end of
/// the capture (which ends mid-window), a server with steady low-level retransmissions and
/// one whose websocket upgrades all succeed.
pub fn benign(c: &mut CaptureBuilder, rng: &mut Rng, t0: u64, end: u64) {
    let d = (end - t0) as f64;
    let dst = |n: u8| (ip(198, 51, 100, n), 9000);
    udp_stream(c, rng, dst(21), t0, end, &|t| {
        60.0 - 54.0 * (t - t0) as f64 / d // to a tenth over the capture
    });
    udp_stream(c, rng, dst(22), t0, end, &|t| {
        if (t - t0) % (60 * SEC) < 15 * SEC {
            150.0
        } else {
            0.0
        }
    });
    udp_stream(c, rng, dst(23), t0, end, &|t| {
        if t - t0 > 200 * SEC {
            40.0
        } else {
            0.0
        }
    });
    let pause = t0 + 330 * SEC;
    udp_stream(c, rng, dst(24), t0, end, &|t| {
        if (pause..pause + 12 * SEC).contains(&t) {
            0.0
        } else {
            30.0
        }
    });
    udp_stream(c, rng, dst(25), t0, end, &|_| 30.0);
    downloads(c, rng, (ip(192, 0, 2, 91), 443), t0, end, 2.0, &|_| 0.025);
    upgrades(c, rng, (ip(192, 0, 2, 96), 80), t0, end, 1.0, &|_, _| {
        Answer::Switch
    });
}
