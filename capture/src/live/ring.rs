//! `TPACKET_V3` memory-mapped receive ring.
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use super::{interface_link_type, live_err, sys, LiveConfig};
use crate::{CaptureError, Frame, LinkType, SourceStats};

const BLOCK_SIZE: u32 = 1 << 20;
const FRAME_SIZE: u32 = 2048;
// Offsets inside `tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
const BLOCK_LEN: usize = 20;

/// One worker's ring: walks the blocks the kernel hands to user space, returning each
/// block as soon as the frames in it have been handed out.
pub struct RingCapture {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    block_nr: usize,
    block: usize,
    /// Frames left in the current block, and the offset of the next one in it.
    left: u32,
    next: usize,
    /// The current block belongs to user space and must be returned before moving on.
    holding: bool,
    link: LinkType,
    ifindex: u32,
    stats: SourceStats,
}

// SAFETY: the mapping is owned by this value alone and only touched through &mut self.
unsafe impl Send for RingCapture {}

impl RingCapture {
    /// Sets up the socket, ring and (optionally) fan-out for `config.interface`.
    pub fn open(config: &LiveConfig) -> Result<RingCapture, CaptureError> {
        let name = config.interface.as_str();
        let ifindex = sys::ifindex(name)?;
        let fd = sys::packet_socket(config)?;
        let version: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        sys::set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            name,
            "selecting TPACKET_V3",
        )?;
        let block_nr = config.ring_mib.max(1);
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: block_nr,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * block_nr,
            tp_retire_blk_tov: config.block_timeout.as_millis().clamp(1, 1000) as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sys::set_opt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &req,
            name,
            "creating the receive ring",
        )?;
        let map_len = BLOCK_SIZE as usize * block_nr as usize;
        // SAFETY: mapping the ring the kernel just allocated for this socket, at its size.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(live_err(name, "mapping the receive ring"));
        }
        let ring = RingCapture {
            fd,
            map: map.cast(),
            map_len,
            block_nr: block_nr as usize,
            block: 0,
            left: 0,
            next: 0,
            holding: false,
            link: interface_link_type(name),
            ifindex: ifindex as u32,
            stats: SourceStats::default(),
        };
        sys::bind_all(&ring.fd, ifindex, name)?;
        if config.promiscuous {
            sys::promiscuous(&ring.fd, ifindex, name)?;
        }
        if let Some(group) = config.fanout_group {
            sys::join_fanout(&ring.fd, group, name)?;
        }
        Ok(ring)
    }

    #[inline]
    fn block_ptr(&self, block: usize) -> *mut u8 {
        // SAFETY: block < block_nr, so the offset stays inside the mapping.
        unsafe { self.map.add(block * BLOCK_SIZE as usize) }
    }

    #[inline]
    fn read_u32(&self, block: usize, offset: usize) -> u32 {
        debug_assert!(offset + 4 <= BLOCK_SIZE as usize);
        // SAFETY: offset + 4 <= BLOCK_SIZE (checked by callers), inside the mapping.
        unsafe { std::ptr::read_volatile(self.block_ptr(block).add(offset).cast::<u32>()) }
    }

    fn release_block(&mut self) {
        if self.holding {
            fence(Ordering::Release);
            // SAFETY: BLOCK_STATUS is inside the block header.
            unsafe {
                std::ptr::write_volatile(
                    self.block_ptr(self.block).add(BLOCK_STATUS).cast::<u32>(),
                    libc::TP_STATUS_KERNEL,
                )
            };
            self.holding = false;
            self.left = 0;
            self.block = (self.block + 1) % self.block_nr;
        }
    }

    /// The next frame, or `None` if none arrived within `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            if self.holding && self.left == 0 {
                self.release_block();
            }
            if !self.holding {
                let status = self.read_u32(self.block, BLOCK_STATUS);
                if status & libc::TP_STATUS_USER == 0 {
                    if !self.poll(timeout) {
                        return Ok(None);
                    }
                    continue;
                }
                fence(Ordering::Acquire);
                self.holding = true;
                self.left = self.read_u32(self.block, BLOCK_NUM_PKTS);
                self.next = self.read_u32(self.block, BLOCK_FIRST_PKT) as usize;
                continue;
            }
            // Validate the kernel's offsets before trusting them.
            let blk_len = (self.read_u32(self.block, BLOCK_LEN) as usize).min(BLOCK_SIZE as usize);
            let at = self.next;
            if at + 32 > blk_len {
                self.left = 0;
                continue;
            }
            let next_offset = self.read_u32(self.block, at) as usize;
            let sec = u64::from(self.read_u32(self.block, at + 4));
            let nsec = u64::from(self.read_u32(self.block, at + 8));
            let snaplen = self.read_u32(self.block, at + 12) as usize;
            let wire_len = self.read_u32(self.block, at + 16);
            // SAFETY: at + 26 <= blk_len; tp_mac is a u16 at offset 24.
            let mac = unsafe {
                std::ptr::read_volatile(self.block_ptr(self.block).add(at + 24).cast::<u16>())
            } as usize;
            self.left -= 1;
            self.next = if next_offset == 0 {
                blk_len
            } else {
                at + next_offset
            };
            if at + mac + snaplen > blk_len {
                self.left = 0;
                continue;
            }
            self.stats.frames += 1;
            self.stats.bytes += snaplen as u64;
            // SAFETY: the frame lies inside this block (checked above); the block stays
            // owned by user space until the next call, which the borrow on self enforces.
            let data = unsafe {
                std::slice::from_raw_parts(self.block_ptr(self.block).add(at + mac), snaplen)
            };
            return Ok(Some(Frame {
                ts_ns: sec * 1_000_000_000 + nsec,
                wire_len,
                link: self.link,
                interface: self.ifindex,
                data,
            }));
        }
    }

    fn poll(&mut self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        rc > 0
    }

    /// Counters so far, with the kernel's read now.
    pub fn stats(&mut self) -> SourceStats {
        sys::read_kernel_stats(self.fd.as_raw_fd(), &mut self.stats);
        self.stats
    }
}

impl Drop for RingCapture {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in open.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}
