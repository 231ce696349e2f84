//! The hashes of the frequent-items sketches' keys.
//!
//! Four of the sketches a packet feeds are keyed by its source or destination address with
//! a few small fields (protocol type and size class, port and protocol, the 5-tuple). Their
//! hashes are built from the address's [`mix64`] hash, which the packet path computes once
//! per address for every sketch and counter keyed by it, by one folded multiplication with
//! the small fields: no second walk of a generic hasher over the address enum and a tuple.
use std::hash::Hash;
use std::net::IpAddr;

use tapwatch_classifier::{ProtocolType, SizeClass};

use super::mix64;

/// A key of a [`FrequentItems`](super::FrequentItems) sketch. The hash must mix every bit:
/// the slot comes from the low bits and the tag from the high ones.
pub trait SketchKey: Copy + Eq + Hash {
    /// The key's 64-bit hash ([`mix64`] unless the key is built from addresses).
    #[inline]
    fn sketch_hash(&self) -> u64 {
        mix64(self)
    }
}

impl SketchKey for IpAddr {}
impl SketchKey for u16 {}
impl SketchKey for u32 {}

impl SketchKey for (IpAddr, ProtocolType, SizeClass) {
    #[inline]
    fn sketch_hash(&self) -> u64 {
        source_kind_hash(mix64(&self.0), self.1, self.2)
    }
}

impl SketchKey for (IpAddr, u16, u8) {
    #[inline]
    fn sketch_hash(&self) -> u64 {
        service_hash(mix64(&self.0), self.1, self.2)
    }
}

impl SketchKey for (IpAddr, u16, IpAddr, u16, u8) {
    #[inline]
    fn sketch_hash(&self) -> u64 {
        flow_tuple_hash(
            mix64(&self.0),
            mix64(&self.2),
            self.1.into(),
            self.3,
            self.4,
        )
    }
}

/// `h` (a well-mixed hash) with `x` folded in: the 128-bit product's halves xor-ed.
#[inline(always)]
fn fold_in(h: u64, x: u64) -> u64 {
    const SEED: u64 = 0x243f_6a88_85a3_08d3;
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    let p = u128::from(h ^ x ^ SEED) * u128::from(MUL);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The hash of `(source, kind, size)` from the source's [`mix64`] hash.
#[inline]
pub(crate) fn source_kind_hash(source: u64, kind: ProtocolType, size: SizeClass) -> u64 {
    fold_in(source, (kind.index() as u64) << 8 | size as u64)
}

/// The hash of `(destination, port, protocol)` from the destination's [`mix64`] hash.
#[inline]
pub(crate) fn service_hash(destination: u64, port: u16, proto: u8) -> u64 {
    fold_in(destination, u64::from(port) << 8 | u64::from(proto))
}

/// The hash of a 5-tuple (one direction) from its addresses' [`mix64`] hashes. The source
/// port is wide enough for the heartbeat key's (a BFD discriminator in its place).
#[inline]
pub(crate) fn flow_tuple_hash(
    source: u64,
    destination: u64,
    source_port: u32,
    destination_port: u16,
    proto: u8,
) -> u64 {
    // The rotation keeps the two directions of a flow apart.
    fold_in(
        source ^ destination.rotate_left(29),
        u64::from(source_port) << 24 | u64::from(destination_port) << 8 | u64::from(proto),
    )
}

/// The hash of an address and a 32-bit word beside it (a BFD sender and its
/// discriminator) from the address's [`mix64`] hash.
#[inline]
pub(crate) fn address_word_hash(address: u64, word: u32) -> u64 {
    fold_in(address, u64::from(word))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// Keys that differ in one small field or one address bit land on different slots and
    /// tags: the low 12 bits and the high 7 of their hashes spread like random ones.
    #[test]
    fn keys_built_from_addresses_spread_over_slots_and_tags() {
        let mut hashes = Vec::new();
        for host in 0..64u32 {
            let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | host));
            let dst = IpAddr::V4(Ipv4Addr::from(0x0a00_0100 | host));
            for port in 0..64u16 {
                hashes.push((src, 40_000 + port, 6u8).sketch_hash());
                hashes.push((src, 40_000 + port, dst, 443u16, 6u8).sketch_hash());
                hashes.push((dst, 443u16, src, 40_000 + port, 6u8).sketch_hash());
                // A BFD sender: discriminators are 32-bit words, often large.
                hashes.push(address_word_hash(
                    mix64(&src),
                    0x5eed_0000 | u32::from(port),
                ));
            }
            for kind in [
                ProtocolType::TcpSyn,
                ProtocolType::Udp,
                ProtocolType::Custom(3),
            ] {
                for size in SizeClass::ALL {
                    hashes.push((src, kind, size).sketch_hash());
                }
            }
        }
        let n = hashes.len() as f64;
        let chi_square = |bucket: &dyn Fn(u64) -> usize, buckets: usize| {
            let mut counts = vec![0u32; buckets];
            for &h in &hashes {
                counts[bucket(h)] += 1;
            }
            let expected = n / buckets as f64;
            counts
                .iter()
                .map(|&c| (f64::from(c) - expected).powi(2) / expected)
                .sum::<f64>()
        };
        // Degrees of freedom 4095 (sd ≈ 90) and 127 (sd ≈ 16): six deviations allowed.
        let low = chi_square(&|h| (h & 4095) as usize, 4096);
        let tag = chi_square(&|h| (h >> 57) as usize, 128);
        assert!(low < 4095.0 + 6.0 * 90.0, "slot bits: chi-square {low:.0}");
        assert!(tag < 127.0 + 6.0 * 16.0, "tag bits: chi-square {tag:.0}");
        let mut distinct = hashes.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), hashes.len(), "no two keys share a hash");
    }
}
