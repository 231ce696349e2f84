//! The hash of a flow that every per-flow table and the dealer use.
//!
//! It runs several times per packet (the dealer picks a worker by it, and each TCP table
//! probes and prefetches by it), so it is a few folded multiplications over the addresses
//! as integers, not a generic hasher's walk over the `IpAddr` enum and a tuple.
use std::net::IpAddr;

// Odd constants with well-spread bits (wyhash's secrets, digits of π, the golden ratio).
const V4_SEED: u64 = 0x243f_6a88_85a3_08d3;
const V4_MUL: u64 = 0xa076_1d64_78bd_642f;
const V6_LOW: u64 = 0xe703_7ed1_a0b4_28db;
const V6_HIGH: u64 = 0x8ebc_6af0_9c88_c6e3;
const FLOW_SEED: u64 = 0x5899_65cc_7537_4cc3;
const FLOW_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 128-bit product of `a` and `b`, its two halves xor-ed: every output bit depends on
/// most input bits (the mixing step of foldhash and wyhash).
#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// One endpoint (address and port) mixed into 64 bits.
#[inline(always)]
fn endpoint(ip: IpAddr, port: u16) -> u64 {
    match ip {
        IpAddr::V4(v) => folded_mul(
            ((u64::from(v.to_bits()) << 16) | u64::from(port)) ^ V4_SEED,
            V4_MUL,
        ),
        IpAddr::V6(v) => {
            let bits = v.to_bits();
            folded_mul(
                (bits as u64) ^ V6_LOW ^ (u64::from(port) << 48),
                ((bits >> 64) as u64) ^ V6_HIGH,
            )
        }
    }
}

/// A 64-bit hash of the flow between `(a, a_port)` and `(b, b_port)` over IP protocol
/// `proto`, the same whichever endpoint is given first (both directions of a connection
/// meet in one table entry and on one worker). Every bit is mixed: tables take the low
/// bits for a slot and the high ones for a tag, the dealer the high ones for a worker.
#[inline]
pub fn flow_hash(a: IpAddr, a_port: u16, b: IpAddr, b_port: u16, proto: u8) -> u64 {
    // Addition commutes: the two endpoints need no ordering first.
    let ends = endpoint(a, a_port).wrapping_add(endpoint(b, b_port));
    folded_mul(ends ^ FLOW_SEED ^ u64::from(proto), FLOW_MUL)
}
