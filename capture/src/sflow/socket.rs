//! The UDP socket sFlow agents send to.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::datagram::{InterfaceCounters, SflowError, SourceId};
use super::decoder::{SampledFrame, SflowDecoder, SflowStats};

/// Receive buffer asked of the kernel: bursts of datagrams wait here while the decoder is
/// busy (the kernel may grant less; see [`SflowSocket::receive_buffer`]).
pub const RECEIVE_BUFFER: usize = 32 << 20;

/// What one receive brought.
#[derive(Debug)]
pub enum Received {
    /// Nothing arrived within the timeout.
    Nothing,
    /// A datagram, decoded into the decoder.
    Datagram,
    /// A datagram that could not be decoded (in part or at all); what was decoded is kept.
    Malformed(SflowError),
}

/// A bound UDP socket for sFlow datagrams.
#[derive(Debug)]
pub struct SflowSocket {
    socket: UdpSocket,
}

impl SflowSocket {
    /// Binds `addr` (e.g. `0.0.0.0:6343`) with a large receive buffer.
    pub fn bind(addr: SocketAddr) -> std::io::Result<SflowSocket> {
        let socket = UdpSocket::bind(addr)?;
        let size = RECEIVE_BUFFER as libc::c_int;
        // SAFETY: the option value is a c_int that outlives the call, its size is given.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SflowSocket { socket })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The receive buffer the kernel granted, bytes.
    pub fn receive_buffer(&self) -> usize {
        let mut size: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both out-pointers are valid for the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut size as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            size.max(0) as usize
        } else {
            0
        }
    }

    /// Waits up to `timeout` for one datagram and decodes it into `decoder`, stamped with
    /// its arrival time.
    pub fn receive(
        &self,
        decoder: &mut SflowDecoder,
        timeout: Duration,
    ) -> std::io::Result<Received> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let len = match self.socket.recv(decoder.buffer()) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Received::Nothing)
            }
            Err(e) => return Err(e),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(match decoder.decode(len, now) {
            Ok(()) => Received::Datagram,
            Err(e) => Received::Malformed(e),
        })
    }
}

/// Interfaces whose latest counters a source keeps, at most.
const MAX_INTERFACES: usize = 4096;

/// A socket and its decoder as one source of sampled frames.
#[derive(Debug)]
pub struct SflowSource {
    socket: SflowSocket,
    decoder: SflowDecoder,
    next: usize,
    interfaces: BTreeMap<(IpAddr, SourceId), InterfaceCounters>,
}

impl SflowSource {
    /// Binds `addr` (see [`SflowSocket::bind`]).
    pub fn bind(addr: SocketAddr) -> std::io::Result<SflowSource> {
        Ok(SflowSource {
            socket: SflowSocket::bind(addr)?,
            decoder: SflowDecoder::new(),
            next: 0,
            interfaces: BTreeMap::new(),
        })
    }

    /// The socket.
    pub fn socket(&self) -> &SflowSocket {
        &self.socket
    }

    /// The next sampled frame, or `None` if no datagram with one arrived within `timeout`
    /// of waiting for each datagram.
    pub fn next_frame(&mut self, timeout: Duration) -> std::io::Result<Option<SampledFrame<'_>>> {
        while self.next >= self.decoder.len() {
            match self.socket.receive(&mut self.decoder, timeout)? {
                Received::Nothing => return Ok(None),
                Received::Datagram | Received::Malformed(_) => self.next = 0,
            }
            let agent = self.decoder.agent();
            for (source, c) in self.decoder.counters() {
                let key = (agent, *source);
                if self.interfaces.len() < MAX_INTERFACES || self.interfaces.contains_key(&key) {
                    self.interfaces.insert(key, *c);
                }
            }
        }
        self.next += 1;
        Ok(self.decoder.frame(self.next - 1))
    }

    /// The decoder's counters (datagrams, losses, malformed input).
    pub fn stats(&self) -> SflowStats {
        self.decoder.stats()
    }

    /// The latest interface counters of every (agent, data source) heard from (up to
    /// 4096 of them).
    pub fn interfaces(&self) -> &BTreeMap<(IpAddr, SourceId), InterfaceCounters> {
        &self.interfaces
    }
}
