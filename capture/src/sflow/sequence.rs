//! Losses between an agent and tapwatch, from sequence numbers: each (agent, sub-agent)
//! numbers its datagrams, each data source its samples. A forward jump is a loss; a small
//! step back is a late arrival (taken back off the losses); a large step back is the
//! sender restarting.
use std::collections::HashMap;
use std::hash::Hash;

/// Steps back larger than this are a restart of the sender, not a late arrival.
const RESTART: u32 = 1_000;

/// Sequence numbers per key, with the losses they show.
#[derive(Clone, Debug)]
pub struct LossCounter<K> {
    last: HashMap<K, u32>,
    max_keys: usize,
    /// Numbers skipped (lost in transit or by the sender), less late arrivals.
    pub lost: u64,
    /// Numbers that arrived after a later one.
    pub late: u64,
    /// Senders that started again from a lower number.
    pub restarts: u64,
    /// Keys not tracked because `max_keys` were.
    pub untracked: u64,
}

impl<K: Hash + Eq> LossCounter<K> {
    /// A counter for at most `max_keys` senders.
    pub fn new(max_keys: usize) -> LossCounter<K> {
        LossCounter {
            last: HashMap::new(),
            max_keys,
            lost: 0,
            late: 0,
            restarts: 0,
            untracked: 0,
        }
    }

    /// Takes the next sequence number of `key`.
    pub fn observe(&mut self, key: K, seq: u32) {
        let len = self.last.len();
        match self.last.get_mut(&key) {
            Some(last) => {
                let ahead = seq.wrapping_sub(*last);
                let behind = last.wrapping_sub(seq);
                if ahead == 0 {
                    self.late += 1; // a duplicate
                } else if ahead < u32::MAX / 2 {
                    self.lost += u64::from(ahead - 1);
                    *last = seq;
                } else if behind <= RESTART {
                    self.late += 1;
                    self.lost = self.lost.saturating_sub(1);
                } else {
                    self.restarts += 1;
                    *last = seq;
                }
            }
            None if len < self.max_keys => {
                self.last.insert(key, seq);
            }
            None => self.untracked += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_losses_late_arrivals_give_one_back_restarts_are_not_losses() {
        let mut c = LossCounter::new(8);
        for s in [1, 2, 3, 6, 7] {
            c.observe("a", s);
        }
        assert_eq!(c.lost, 2);
        c.observe("a", 5);
        assert_eq!((c.lost, c.late), (1, 1), "5 came late");
        c.observe("a", 7);
        assert_eq!(c.late, 2, "a duplicate");
        c.observe("a", 4);
        assert_eq!((c.lost, c.late, c.restarts), (0, 3, 0), "4 came late too");
        c.observe("a", 100_000);
        assert_eq!(c.lost, 100_000 - 8, "the jump from 7 was a loss");
        c.observe("a", 1);
        assert_eq!(
            (c.restarts, c.lost),
            (1, 100_000 - 8),
            "a restart is no loss"
        );
        c.observe("a", 2);
        assert_eq!(c.lost, 100_000 - 8);
        // Wrapping past u32::MAX is no restart.
        c.observe("b", u32::MAX - 1);
        c.observe("b", 1);
        assert_eq!(c.lost, 100_000 - 8 + 2);
        // Keys beyond the bound are counted, not tracked.
        let mut small = LossCounter::new(1);
        small.observe(1, 1);
        small.observe(2, 1);
        assert_eq!(small.untracked, 1);
    }
}
