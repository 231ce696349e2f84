//! Live capture on a real veth pair inside a network namespace the test creates.
//!
//! Frames are sent from one end by a raw AF_PACKET socket opened inside the namespace;
//! tapwatch captures on the other end, and must see each one. Needs root (CI runs as root).
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// A network namespace with a veth pair `twa` ↔ `twb`, torn down on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create(tag: &str) -> Option<Netns> {
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !have("ip") {
            assert!(
                !in_ci(),
                "live capture tests must run under CI (as root, with iproute2)"
            );
            eprintln!("skipping: live capture needs root and iproute2");
            return None;
        }
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("tw{tag}{}-{seq}", std::process::id());
        let ns = Netns { name };
        let sh = |cmd: String| {
            let o = run(Command::new("sh").arg("-c").arg(&cmd));
            assert!(
                o.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        sh(format!("ip netns add {}", ns.name));
        let n = &ns.name;
        sh(format!("ip netns exec {n} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"));
        sh(format!(
            "ip netns exec {n} ip link add name twa type veth peer name twb"
        ));
        sh(format!(
            "ip netns exec {n} ip link set twa up && ip netns exec {n} ip link set twb up"
        ));
        Some(ns)
    }

    /// `tapwatch` to be run inside the namespace, with piped output.
    pub(crate) fn tapwatch(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(env!("CARGO_BIN_EXE_tapwatch"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `f` on a thread that has entered the namespace.
    pub(crate) fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("netns handle");
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Sends frames out of interface `ifname` through a raw AF_PACKET socket.
pub(crate) fn send_frames(ifname: &str, frames: &[Vec<u8>]) {
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let name = std::ffi::CString::new(ifname).unwrap();
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        addr.sll_halen = 6;
        for f in frames {
            let n = libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(
                n as usize,
                f.len(),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        libc::close(fd);
    }
}

fn test_frames() -> (Vec<Vec<u8>>, usize, usize) {
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    let mut frames = Vec::new();
    let udp = 40;
    for i in 0..udp {
        let b = etherparse::PacketBuilder::ethernet2(mac_a, mac_b)
            .ipv4([10, 99, 0, 1], [10, 99, 0, 2], 64)
            .udp(30000 + i as u16, 9999);
        let mut v = Vec::new();
        b.write(&mut v, &[0u8; 64]).unwrap();
        frames.push(v);
    }
    let syn = 25;
    for i in 0..syn {
        let b = etherparse::PacketBuilder::ethernet2(mac_a, mac_b)
            .ipv4([10, 98, 0, 1], [10, 99, 0, 2], 64)
            .tcp(40000 + i as u16, 443, 1000, 64240)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        frames.push(v);
    }
    (frames, udp, syn)
}

fn capture_sees_every_frame(backend: &str, workers: usize) {
    let Some(ns) = Netns::create(&backend[..1]) else {
        return;
    };
    let (frames, udp, syn) = test_frames();
    let tenants = TempDir::new(&format!("live-{backend}"));
    let tfile = tenants.path("tenants.toml");
    std::fs::write(
        &tfile,
        "[[tenant]]\nname = \"senders\"\nprefixes = [\"10.99.0.0/24\"]\n",
    )
    .unwrap();
    let mut child = ns
        .tapwatch()
        .args([
            "run",
            "--interface",
            "twb",
            "--backend",
            backend,
            "--workers",
            &workers.to_string(),
        ])
        .args([
            "--count",
            &frames.len().to_string(),
            "--duration",
            "20",
            "--format",
            "json",
            "--tenants",
        ])
        .arg(&tfile)
        .spawn()
        .expect("spawn tapwatch run");
    // Wait for the readiness line: every socket is open from then on.
    let (mut stderr, line) = wait_capturing(&mut child);
    std::thread::sleep(Duration::from_millis(100));
    ns.within(|| send_frames("twa", &frames));
    let out = child.wait_with_output().expect("tapwatch run");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(out.status.success(), "tapwatch run failed: {line}{rest}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(s["packets"].as_u64().unwrap(), frames.len() as u64, "{s}");
    assert_eq!(s["by_protocol_type"]["udp"].as_u64().unwrap(), udp as u64);
    assert_eq!(
        s["by_protocol_type"]["tcp_syn"].as_u64().unwrap(),
        syn as u64
    );
    assert_eq!(
        s["by_tenant"]["senders"]["packets"].as_u64().unwrap(),
        udp as u64
    );
    assert_eq!(s["capture"]["kernel_drops"], 0);
    assert!(
        s["capture"]["kernel_packets"].as_u64().unwrap() >= frames.len() as u64,
        "{s}"
    );
}

#[test]
fn ring_capture_on_veth_sees_every_frame() {
    capture_sees_every_frame("ring", 1);
}

#[test]
fn ring_fanout_workers_together_see_every_frame() {
    capture_sees_every_frame("ring", 2);
}

#[test]
fn pnet_capture_on_veth_sees_every_frame() {
    capture_sees_every_frame("pnet", 1);
}

/// `tapwatch run --interface twb --duration 3 ARGS --format json` in `ns` while `frames` are
/// sent on the other end: its summary.
fn summary_of_three_seconds(ns: &Netns, args: &[&str], frames: &[Vec<u8>]) -> serde_json::Value {
    let mut child = ns
        .tapwatch()
        .args([
            "run",
            "--interface",
            "twb",
            "--duration",
            "3",
            "--format",
            "json",
        ])
        .args(args)
        .spawn()
        .unwrap();
    let (_stderr, _) = wait_capturing(&mut child);
    std::thread::sleep(Duration::from_millis(100));
    ns.within(|| send_frames("twa", frames));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bpf_filter_drops_in_the_kernel() {
    let Some(ns) = Netns::create("f") else { return };
    if !have("tcpdump") {
        return;
    }
    let (frames, udp, _) = test_frames();
    let tmp = TempDir::new("bpf");
    let prog = tmp.path("udp.bpf");
    let o = run(Command::new("tcpdump").args(["-ddd", "udp"]));
    assert!(o.status.success());
    std::fs::write(&prog, &o.stdout).unwrap();
    let prog = prog.display().to_string();
    let s = summary_of_three_seconds(&ns, &["--bpf-file", &prog], &frames);
    assert_eq!(
        s["packets"].as_u64().unwrap(),
        udp as u64,
        "only UDP passes the filter: {s}"
    );
    assert!(s["by_protocol_type"].get("tcp_syn").is_none());
}

#[test]
fn kernel_sampling_keeps_one_in_n_and_counts_each_as_n() {
    let Some(ns) = Netns::create("s") else { return };
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
    let frames: Vec<Vec<u8>> = (0..4000u32)
        .map(|i| {
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2(mac_a, mac_b)
                .ipv4([10, 99, 0, 1], [10, 99, 0, 2], 64)
                .udp(30000 + (i % 1000) as u16, 9999)
                .write(&mut v, &[0u8; 64])
                .unwrap();
            v
        })
        .collect();
    let s = summary_of_three_seconds(
        &ns,
        &["--sample", "10", "--no-store", "--listen", "none"],
        &frames,
    );
    let (samples, packets) = (
        s["samples"].as_u64().unwrap(),
        s["packets"].as_u64().unwrap(),
    );
    assert_eq!(packets, 10 * samples, "each sample stands for 10: {s}");
    // Binomial(4000, 0.1): mean 400, standard deviation 19; five of them either side.
    assert!((305..=495).contains(&samples), "kept {samples} of 4000");
    assert_eq!(s["by_protocol_type"]["udp"].as_u64(), Some(packets));
    assert_eq!(s["capture"]["kernel_drops"], 0);
    // Out of range is refused before anything opens.
    let out = run(tapwatch().args(["run", "--interface", "lo", "--sample", "0"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--sample 0: expected 1 in N packets with N from 1 to 1000000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_reloads_tenants_and_user_drops_root() {
    let Some(ns) = Netns::create("h") else { return };
    let (frames, _, _) = test_frames();
    let tmp = TempDir::new("hup");
    // The unprivileged user must be able to write its spool directory.
    let data = tmp.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let _ = Command::new("chmod").arg("0777").arg(&data).status();
    let tenants = tmp.path("tenants.toml");
    std::fs::write(
        &tenants,
        "[[tenant]]\nname = \"senders\"\nprefixes = [\"10.99.0.0/24\"]\n",
    )
    .unwrap();
    let mut child = ns
        .tapwatch()
        .args([
            "run",
            "--interface",
            "twb",
            "--format",
            "json",
            "--listen",
            "none",
            "--duration",
            "60",
            "--user",
            "nobody",
            "--tenants",
        ])
        .arg(&tenants)
        .arg("--data-dir")
        .arg(&data)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut read_until = |needle: &str| {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("tapwatch ended before printing {needle:?}: {seen}");
            }
            seen.push_str(&line);
            if line.contains(needle) {
                return seen;
            }
        }
    };
    let who = read_until("capturing on twb");
    assert!(who.contains("running as nobody (uid 65534"), "{who}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "still privileged: {uid_line}"
    );
    std::thread::sleep(Duration::from_millis(100));
    ns.within(|| send_frames("twa", &frames));
    // A broken tenants file is refused; the old one stays and capture goes on.
    std::fs::write(
        &tenants,
        "[[tenant]]\nname = \"renamed\"\nprefixes = [\"10.99.0.0/33\"]\n",
    )
    .unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let refused = read_until("reload failed");
    assert!(
        refused.contains("keeping the old configuration") && refused.contains("tenants.toml:3"),
        "{refused}"
    );
    std::fs::write(
        &tenants,
        "[[tenant]]\nname = \"renamed\"\nprefixes = [\"10.99.0.0/24\"]\n",
    )
    .unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    read_until("reloaded the rules and the tenants file");
    ns.within(|| send_frames("twa", &frames));
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s["packets"].as_u64().unwrap(),
        2 * frames.len() as u64,
        "capture went on across reloads: {s}"
    );
    assert!(
        s["by_tenant"].get("renamed").is_some(),
        "the reloaded tenants file names the tenant: {}",
        s["by_tenant"]
    );
}

/// Reads a spawned `tapwatch run`'s standard error up to its readiness line; returns the
/// reader (for the rest) and what was read.
pub(crate) fn wait_capturing(
    child: &mut std::process::Child,
) -> (BufReader<std::process::ChildStderr>, String) {
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("tapwatch run ended before it was capturing: {seen}");
        }
        seen.push_str(&line);
        if line.contains("capturing on twb") {
            return (stderr, seen);
        }
    }
}

/// A capture stalled while packets arrive (the whole process stopped for a moment, as a host
/// under memory pressure stops it) overflows its ring: the kernel drops packets, and
/// `tapwatch run` says so in its log within its 10-second look, with what to do.
#[test]
fn a_capture_that_drops_packets_says_so_in_the_log() {
    let Some(ns) = Netns::create("k") else { return };
    let mut child = ns
        .tapwatch()
        .args([
            "run",
            "--interface",
            "twb",
            "--ring-mib",
            "1",
            "--duration",
            "13",
        ])
        .args(["--no-store", "--listen", "none", "--format", "json"])
        .spawn()
        .unwrap();
    let (mut stderr, _) = wait_capturing(&mut child);
    // `ip netns exec` execs tapwatch: the child's pid is tapwatch's.
    let pid = child.id() as libc::pid_t;
    let (frames, _, _) = test_frames();
    let flood: Vec<Vec<u8>> = frames.iter().cycle().take(200_000).cloned().collect();
    // SAFETY: signals to the child this test started and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    ns.within(|| send_frames("twa", &flood));
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let out = child.wait_with_output().unwrap();
    let mut log = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
    assert!(out.status.success(), "{log}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drops = s["capture"]["kernel_drops"].as_u64().unwrap();
    assert!(
        drops > 100_000,
        "a 1 MiB ring cannot hold 200 000 frames: {s}"
    );
    let warning = log
        .lines()
        .find(|l| l.contains("capture is not keeping up"))
        .unwrap_or_else(|| panic!("no warning of {drops} drops: {log}"));
    assert!(warning.contains("the kernel dropped "), "{warning}");
    // Every thread was stopped, none was busy: the ring is what to grow.
    assert!(
        warning.contains("no worker is saturated") && warning.contains("--ring-mib"),
        "{warning}"
    );
}
