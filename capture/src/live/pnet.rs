//! The portable path: a `pnet` datalink channel.
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{interface_link_type, sys, LiveConfig};
use crate::{CaptureError, Frame, LinkType, SourceStats};

/// How long a pnet read waits for a frame.
pub const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// A `pnet` receiver on one interface. Timestamps are taken in user space on receipt.
pub struct PnetCapture {
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
    /// The socket pnet reads from (pnet owns and closes it), kept for kernel counters.
    raw_fd: i32,
    link: LinkType,
    ifindex: u32,
    stats: SourceStats,
}

impl PnetCapture {
    /// Opens `config.interface` through pnet, on a socket tapwatch set up (filter included).
    pub fn open(config: &LiveConfig) -> Result<PnetCapture, CaptureError> {
        let name = config.interface.as_str();
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| CaptureError::Live {
                interface: name.to_string(),
                what: "looking up the interface",
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let fd = sys::packet_socket(config)?;
        let raw_fd = fd.as_raw_fd();
        let pconfig = pnet_datalink::Config {
            promiscuous: config.promiscuous,
            read_timeout: Some(READ_TIMEOUT),
            read_buffer_size: 65536,
            socket_fd: Some(fd.into_raw_fd()),
            linux_fanout: config
                .fanout_group
                .map(|group_id| pnet_datalink::FanoutOption {
                    group_id,
                    fanout_type: pnet_datalink::FanoutType::HASH,
                    defrag: true,
                    rollover: false,
                }),
            ..Default::default()
        };
        let rx = match pnet_datalink::channel(&iface, pconfig) {
            Ok(pnet_datalink::Channel::Ethernet(_tx, rx)) => rx,
            Ok(_) => {
                return Err(CaptureError::Live {
                    interface: name.to_string(),
                    what: "opening a pnet channel (unsupported channel type)",
                    source: std::io::Error::from(std::io::ErrorKind::Unsupported),
                })
            }
            Err(source) => {
                return Err(CaptureError::Live {
                    interface: name.to_string(),
                    what: "opening a pnet channel",
                    source,
                })
            }
        };
        Ok(PnetCapture {
            rx,
            raw_fd,
            link: interface_link_type(name),
            ifindex: iface.index,
            stats: SourceStats::default(),
        })
    }

    /// The next frame, or `None` if none arrived within the channel's read timeout
    /// ([`READ_TIMEOUT`]: pnet fixes it when the channel opens, so `_timeout` is not used).
    pub fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame<'_>>, CaptureError> {
        match self.rx.next() {
            Ok(data) => {
                let ts_ns = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                self.stats.frames += 1;
                self.stats.bytes += data.len() as u64;
                Ok(Some(Frame {
                    ts_ns,
                    wire_len: data.len() as u32,
                    link: self.link,
                    interface: self.ifindex,
                    data,
                }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(source) => Err(CaptureError::Live {
                interface: format!("ifindex {}", self.ifindex),
                what: "receiving",
                source,
            }),
        }
    }

    /// Counters so far, with the kernel's read now.
    pub fn stats(&mut self) -> SourceStats {
        sys::read_kernel_stats(self.raw_fd, &mut self.stats);
        self.stats
    }
}
