//! Live capture throughput on a veth pair: the TPACKET_V3 ring path with 1 and 2 workers
//! against the portable pnet path, side by side. A sender in a network namespace this
//! benchmark creates blasts small UDP frames of 64 flows (the kernel fans flows out to the
//! workers) from one end; `tapwatch run` (all detectors on) captures on the other. Prints
//! packets/s captured, kernel drops and CPU seconds per million packets.
//!
//! Run as root: `cargo bench -p tapwatch --bench live` (env TAPWATCH_BENCH_LIVE_PACKETS;
//! `TAPWATCH_BENCH_PGO=PATH` adds ring rows for a binary `scripts/build-pgo.sh` built).
mod pgo;

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{cmd}");
}

/// Sends `n` frames out of `ifname` from inside namespace `ns`, taking `frames` in turn;
/// returns seconds taken.
fn blast(ns: &str, ifname: &str, frames: &[Vec<u8>], n: u64) -> f64 {
    let ns = ns.to_string();
    let ifname = ifname.to_string();
    let frames = frames.to_vec();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        // SAFETY: setns/socket/sendto on valid descriptors and buffers; results checked.
        unsafe {
            assert_eq!(libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0);
            let name = std::ffi::CString::new(ifname).unwrap();
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            addr.sll_halen = 6;
            let start = Instant::now();
            for i in 0..n {
                let frame = &frames[i as usize % frames.len()];
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
            }
            let secs = start.elapsed().as_secs_f64();
            libc::close(fd);
            secs
        }
    })
    .join()
    .unwrap()
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        println!("the live benchmark needs root (network namespaces, AF_PACKET); skipped");
        return;
    }
    let n: u64 = std::env::var("TAPWATCH_BENCH_LIVE_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let ns = format!("twbench{}", std::process::id());
    sh(&format!("ip netns add {ns}"));
    sh(&format!("ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"));
    sh(&format!(
        "ip netns exec {ns} ip link add name twa type veth peer name twb"
    ));
    sh(&format!(
        "ip netns exec {ns} ip link set twa up && ip netns exec {ns} ip link set twb up"
    ));
    let frames: Vec<Vec<u8>> = (0..64u16)
        .map(|flow| {
            let mut frame = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])
                .ipv4([10, 99, 0, 1], [10, 99, 0, 2], 64)
                .udp(40000 + flow, 9999)
                .write(&mut frame, &[0u8; 18])
                .unwrap();
            frame
        })
        .collect();
    let frame = &frames[0];
    println!(
        "{n} frames of {} bytes from a veth peer, as fast as one sender thread goes\n",
        frame.len()
    );
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>14} {:>16}",
        "backend", "sent/s", "captured", "kernel drops", "captured/s", "CPU s / M pkts"
    );
    let plain = env!("CARGO_BIN_EXE_tapwatch");
    let pgo = pgo::binary();
    let mut runs = vec![
        (plain, "ring ×1", "ring", "1"),
        (plain, "ring ×2", "ring", "2"),
        (plain, "pnet ×1", "pnet", "1"),
    ];
    // A profile-guided build (scripts/build-pgo.sh) on the ring, beside the plain one.
    if let Some(pgo) = &pgo {
        runs.push((pgo, "ring ×1 PGO", "ring", "1"));
        runs.push((pgo, "ring ×2 PGO", "ring", "2"));
    }
    for (bin, label, backend, workers) in runs {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                bin,
                "run",
                "--interface",
                "twb",
                "--backend",
                backend,
                "--workers",
                workers,
                "--format",
                "json",
                "--listen",
                "none",
                "--drain-timeout",
                "0",
                "--duration",
                "120",
                "--no-store",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tapwatch run");
        std::thread::sleep(Duration::from_millis(700));
        let secs = blast(&ns, "twa", &frames, n);
        std::thread::sleep(Duration::from_millis(500));
        // `ip netns exec` execs tapwatch: the child is tapwatch itself. Its CPU time so far,
        // from /proc (utime + stime, in clock ticks), then SIGTERM.
        let pid = child.id();
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                let fields: Vec<&str> = st.rsplit(')').next()?.split_whitespace().collect();
                let ticks =
                    fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
                Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
            })
            .unwrap_or(f64::NAN);
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let captured = summary["packets"].as_u64().unwrap_or(0);
        let drops = summary["capture"]["kernel_drops"].as_u64().unwrap_or(0);
        println!(
            "{:<12} {:>12.0} {captured:>12} {drops:>12} {:>14.0} {:>16.2}",
            label,
            n as f64 / secs,
            captured as f64 / secs,
            cpu / (captured.max(1) as f64 / 1e6)
        );
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
}
