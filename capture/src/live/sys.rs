//! Thin, checked wrappers over the AF_PACKET socket calls both back ends share.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{live_err, BpfInstruction, LiveConfig};
use crate::{CaptureError, SourceStats};

/// Opens an AF_PACKET raw socket that receives nothing until it is bound.
pub(super) fn packet_socket(config: &LiveConfig) -> Result<OwnedFd, CaptureError> {
    // SAFETY: plain socket(2); the returned descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(live_err(
            &config.interface,
            "opening an AF_PACKET socket (needs CAP_NET_RAW)",
        ));
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(program) = &config.filter {
        attach_filter(&fd, program, &config.interface)?;
    }
    Ok(fd)
}

/// The interface index of `name`.
pub(super) fn ifindex(name: &str) -> Result<i32, CaptureError> {
    let c = std::ffi::CString::new(name).map_err(|_| CaptureError::Live {
        interface: name.to_string(),
        what: "interface name",
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(live_err(name, "looking up the interface"));
    }
    Ok(idx as i32)
}

/// setsockopt with a typed value.
pub(super) fn set_opt<T>(
    fd: &OwnedFd,
    level: i32,
    name: i32,
    value: &T,
    interface: &str,
    what: &'static str,
) -> Result<(), CaptureError> {
    // SAFETY: value points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(live_err(interface, what));
    }
    Ok(())
}

/// Binds the socket to the interface for all protocols.
pub(super) fn bind_all(fd: &OwnedFd, ifindex: i32, interface: &str) -> Result<(), CaptureError> {
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex;
    // SAFETY: addr is a valid sockaddr_ll of the length passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(live_err(interface, "binding to the interface"));
    }
    Ok(())
}

/// Promiscuous mode for as long as the socket lives.
pub(super) fn promiscuous(fd: &OwnedFd, ifindex: i32, interface: &str) -> Result<(), CaptureError> {
    // SAFETY: an all-zero packet_mreq is valid.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    set_opt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_ADD_MEMBERSHIP,
        &mreq,
        interface,
        "enabling promiscuous mode",
    )
}

/// Joins the fan-out group: flows hashed across the group's sockets, fragments kept together.
pub(super) fn join_fanout(fd: &OwnedFd, group: u16, interface: &str) -> Result<(), CaptureError> {
    let arg: u32 =
        u32::from(group) | ((libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) << 16);
    set_opt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_FANOUT,
        &arg,
        interface,
        "joining the PACKET_FANOUT group",
    )
}

fn attach_filter(
    fd: &OwnedFd,
    program: &[BpfInstruction],
    interface: &str,
) -> Result<(), CaptureError> {
    let mut code: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_mut_ptr(),
    };
    set_opt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &prog,
        interface,
        "attaching the BPF filter",
    )
}

/// Adds the kernel's counters since the last read (reading resets them) into `stats`.
pub(super) fn read_kernel_stats(fd: i32, stats: &mut SourceStats) {
    // SAFETY: an all-zero tpacket_stats_v3 is valid; the kernel fills at most `len` bytes.
    let mut k: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: k and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut k as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        stats.kernel_packets += u64::from(k.tp_packets);
        stats.kernel_drops += u64::from(k.tp_drops);
        if len as usize >= std::mem::size_of::<libc::tpacket_stats_v3>() {
            stats.kernel_freezes += u64::from(k.tp_freeze_q_cnt);
        }
    }
}
