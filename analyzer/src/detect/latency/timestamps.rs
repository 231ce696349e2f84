//! Passive RTT from TCP timestamps (RFC 7323), the technique of `pping`: the first packet
//! the server sends with a new TSval starts a probe; the client's first packet echoing that
//! value in TSecr ends it. One probe per flow is in flight at a time, so a flow yields about
//! one sample per round trip, and later copies of a TSval never start one.

/// The timestamp matcher of one flow (the server's segments, echoed by the client).
/// Packed to 4-byte alignment, 20 bytes instead of 24, so that a flow's whole entry in the
/// latency table is 64 bytes: one cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct TsMatch {
    /// Last TSval the server sent (valid when `seen`).
    last_tsval: u32,
    seen: bool,
    /// TSval of the probe in flight and when its first packet passed (0: none).
    probe: u32,
    probe_at: u64,
}

impl TsMatch {
    /// A packet with the timestamps option; returns the RTT in ns when it ends a probe.
    #[inline]
    pub fn observe(&mut self, from_server: bool, tsval: u32, tsecr: u32, now: u64) -> Option<u64> {
        if from_server {
            if !self.seen || tsval != self.last_tsval {
                self.seen = true;
                self.last_tsval = tsval;
                if self.probe_at == 0 {
                    self.probe = tsval;
                    self.probe_at = now;
                }
            }
            return None;
        }
        if self.probe_at == 0 {
            return None;
        }
        if tsecr == self.probe {
            let rtt = now.saturating_sub(self.probe_at);
            self.probe_at = 0;
            return Some(rtt);
        }
        if (tsecr.wrapping_sub(self.probe) as i32) > 0 {
            // The client echoes a later value: the probe's packet was not the one echoed.
            self.probe_at = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn first_packet_per_tsval_and_one_probe_in_flight() {
        let mut m = TsMatch::default();
        assert_eq!(m.observe(true, 100, 7, 10 * MS), None);
        assert_eq!(m.observe(true, 100, 7, 11 * MS), None, "a later copy");
        assert_eq!(m.observe(true, 101, 7, 12 * MS), None, "probe in flight");
        assert_eq!(m.observe(false, 7, 99, 13 * MS), None, "an older echo");
        assert_eq!(m.observe(false, 8, 100, 15 * MS), Some(5 * MS));
        assert_eq!(m.observe(false, 8, 100, 16 * MS), None, "sampled once");
        assert_eq!(
            m.observe(true, 101, 8, 17 * MS),
            None,
            "101 was seen before"
        );
        assert_eq!(m.observe(true, 102, 8, 18 * MS), None);
        assert_eq!(m.observe(false, 9, 103, 19 * MS), None, "102 skipped");
        assert_eq!(m.observe(false, 9, 103, 20 * MS), None);
        assert_eq!(m.observe(true, 104, 9, 21 * MS), None);
        assert_eq!(m.observe(false, 9, 104, 24 * MS), Some(3 * MS));
    }
}
