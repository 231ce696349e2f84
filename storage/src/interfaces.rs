//! `tapwatch query interfaces`: the sFlow agents' interface counters of a range, per agent
//! and ifIndex, as differences and rates. The rows hold counters as the agents report them
//! (totals since they began); a counter that goes down between two samples was reset (or a
//! 32-bit packet counter wrapped) and counts from zero again.
use std::collections::BTreeMap;

use crate::files::{FileRow, FileStore};
use crate::rows::{address_text, InterfaceRow};
use crate::{ClickHouse, StorageError};

/// Counter samples read per question at most.
const MAX_ROWS: usize = 500_000;

/// One interface's counters over a range.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceSummary {
    /// The sFlow agent.
    pub sflow_agent: String,
    /// ifIndex.
    pub if_index: u32,
    /// Counter samples stored in the range.
    pub samples: u64,
    /// Seconds between the first and the last sample.
    pub seconds: u64,
    /// ifSpeed at the last sample, bits/s.
    pub speed_bits: u64,
    /// At the last sample: `up`, `down` (admin up, operationally down) or `admin_down`.
    pub status: &'static str,
    /// Mean inbound bits/s over the range.
    pub in_bps: f64,
    /// Mean outbound bits/s.
    pub out_bps: f64,
    /// Differences over the range: in/out packets, in/out errors, in/out discards.
    pub counts: [u64; 6],
}

/// `up`, `down` or `admin_down` of an ifStatus word (bit 0 admin, bit 1 operational).
pub fn status_name(status: u8) -> &'static str {
    match (status & 1 != 0, status & 2 != 0) {
        (_, true) => "up",
        (true, false) => "down",
        (false, false) => "admin_down",
    }
}

/// The counter samples of `[since, until)` in ClickHouse (of `agent` if given).
pub fn read_clickhouse(
    ch: &ClickHouse,
    since: u32,
    until: u32,
    agent: Option<&str>,
) -> Result<Vec<InterfaceRow>, StorageError> {
    let cols = crate::writer::columns_of("interfaces").join(", ");
    let agent = agent.map_or(String::new(), |a| {
        format!(
            " AND agent = '{}'",
            a.replace('\\', "\\\\").replace('\'', "\\'")
        )
    });
    ch.select::<InterfaceRow>(&format!(
        "SELECT {cols} FROM {} WHERE ts >= toDateTime({since}, 'UTC') AND ts < toDateTime({until}, 'UTC'){agent} \
         ORDER BY sflow_agent, if_index, ts LIMIT {MAX_ROWS}",
        ch.layout.query_table("interfaces")
    ))
}

/// The counter samples of `[since, until)` in the file store (of `agent` if given).
pub fn read_files(
    store: &FileStore,
    since: u32,
    until: u32,
    agent: Option<&str>,
) -> Result<Vec<InterfaceRow>, StorageError> {
    let mut v: Vec<InterfaceRow> = store
        .read("interfaces", since, until)?
        .iter()
        .filter(|r| {
            let ts = r.u64("ts");
            ts >= u64::from(since)
                && ts < u64::from(until)
                && agent.is_none_or(|a| r.str("agent") == a)
        })
        .map(from_file)
        .collect();
    v.truncate(MAX_ROWS);
    Ok(v)
}

fn from_file(r: &FileRow) -> InterfaceRow {
    InterfaceRow {
        ts: r.u64("ts") as u32,
        agent: r.str("agent"),
        batch: r.u64("batch"),
        sflow_agent: r.address("sflow_agent"),
        if_index: r.u64("if_index") as u32,
        if_type: r.u64("if_type") as u32,
        speed_bits: r.u64("speed_bits"),
        direction: r.u64("direction") as u8,
        status: r.u64("status") as u8,
        in_octets: r.u64("in_octets"),
        out_octets: r.u64("out_octets"),
        in_packets: r.u64("in_packets"),
        out_packets: r.u64("out_packets"),
        in_errors: r.u64("in_errors"),
        out_errors: r.u64("out_errors"),
        in_discards: r.u64("in_discards"),
        out_discards: r.u64("out_discards"),
    }
}

/// How much a counter grew from `a` to `b` (a reset counts from zero).
fn grew(a: u64, b: u64) -> u64 {
    if b >= a {
        b - a
    } else {
        b
    }
}

/// Per sFlow agent and ifIndex (in address and index order): differences and rates
/// between consecutive samples, summed over the range.
pub fn summarise(mut rows: Vec<InterfaceRow>) -> Vec<InterfaceSummary> {
    rows.sort_by_key(|r| (r.sflow_agent, r.if_index, r.ts));
    // The same sample stored twice (a retried batch) adds nothing: equal counters.
    let mut by: BTreeMap<([u8; 16], u32), Vec<InterfaceRow>> = BTreeMap::new();
    for r in rows {
        by.entry((r.sflow_agent, r.if_index)).or_default().push(r);
    }
    by.into_iter()
        .map(|((agent, if_index), v)| {
            let (first, last) = (&v[0], &v[v.len() - 1]);
            let mut octets = [0u64; 2];
            let mut counts = [0u64; 6];
            for pair in v.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                octets[0] += grew(a.in_octets, b.in_octets);
                octets[1] += grew(a.out_octets, b.out_octets);
                let (pa, pb) = (counters(a), counters(b));
                for i in 0..6 {
                    counts[i] += grew(pa[i], pb[i]);
                }
            }
            let seconds = u64::from(last.ts - first.ts);
            let bps = |o: u64| {
                if seconds > 0 {
                    o as f64 * 8.0 / seconds as f64
                } else {
                    0.0
                }
            };
            InterfaceSummary {
                sflow_agent: address_text(&agent),
                if_index,
                samples: v.len() as u64,
                seconds,
                speed_bits: last.speed_bits,
                status: status_name(last.status),
                in_bps: bps(octets[0]),
                out_bps: bps(octets[1]),
                counts,
            }
        })
        .collect()
}

fn counters(r: &InterfaceRow) -> [u64; 6] {
    [
        r.in_packets,
        r.out_packets,
        r.in_errors,
        r.out_errors,
        r.in_discards,
        r.out_discards,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts: u32, if_index: u32, in_octets: u64, in_errors: u64) -> InterfaceRow {
        InterfaceRow {
            ts,
            agent: "a".into(),
            batch: 0,
            sflow_agent: crate::rows::address(Some("192.0.2.1".parse().unwrap())),
            if_index,
            if_type: 6,
            speed_bits: 10_000_000_000,
            direction: 1,
            status: 3,
            in_octets,
            out_octets: 0,
            in_packets: in_octets / 100,
            out_packets: 0,
            in_errors,
            out_errors: 0,
            in_discards: 0,
            out_discards: 0,
        }
    }

    #[test]
    fn counters_become_differences_and_a_reset_counts_from_zero() {
        let rows = vec![
            sample(40, 7, 5000, 9),
            sample(0, 7, 1000, 1),
            sample(20, 7, 3000, 4),
            sample(20, 7, 3000, 4), // stored twice
            sample(60, 7, 500, 0),  // the switch rebooted
            sample(10, 3, 0, 0),
        ];
        let s = summarise(rows);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].if_index, s[0].samples, s[0].seconds), (3, 1, 0));
        let s = &s[1];
        assert_eq!((s.sflow_agent.as_str(), s.if_index), ("192.0.2.1", 7));
        assert_eq!((s.samples, s.seconds, s.status), (5, 60, "up"));
        // 2000 + 0 + 2000 + 500 octets in 60 s.
        assert!((s.in_bps - 4500.0 * 8.0 / 60.0).abs() < 1e-9);
        assert_eq!(s.counts[0], 20 + 20 + 5);
        assert_eq!(s.counts[2], 3 + 5);
        assert_eq!(
            (status_name(1), status_name(0), status_name(3)),
            ("down", "admin_down", "up")
        );
    }
}
