//! Row types, one per table. Field order is column order and every field's width equals its
//! column's type exactly: with the client's schema validation off (ClickHouse 18.16 lacks
//! `RowBinaryWithNamesAndTypes`) nothing else checks it, so `tests/e2e` inserts and reads back
//! every row type.
//!
//! Conventions: times are `DateTime('UTC')` as `u32` Unix seconds; addresses are
//! `FixedString(16)` as `[u8; 16]` (IPv4 mapped into IPv6, `::ffff:a.b.c.d`); every row
//! carries the agent id and the id of the batch it was inserted in (the idempotency key).
use std::net::IpAddr;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// An address as stored: 16 bytes, IPv4 mapped into IPv6.
pub type Address = [u8; 16];

/// The stored form of an address (all zeros for none).
pub fn address(ip: Option<IpAddr>) -> Address {
    match ip {
        Some(IpAddr::V4(a)) => a.to_ipv6_mapped().octets(),
        Some(IpAddr::V6(a)) => a.octets(),
        None => [0; 16],
    }
}

/// The text form of a stored address (`10.0.0.1` for mapped IPv4).
pub fn address_text(a: &Address) -> String {
    let v6 = std::net::Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

/// A row type bound to its table.
pub trait StoredRow:
    clickhouse::RowOwned + clickhouse::RowWrite + Serialize + Clone + Send + Sync + 'static
{
    /// Table name (without database; the cluster layout appends `_local`).
    const TABLE: &'static str;
    /// The row's time (Unix seconds): partitions, hourly files and retention go by it.
    fn ts(&self) -> u32;
    /// Stamps the batch id the row is inserted with.
    fn set_batch(&mut self, batch: u64);
    /// The agent id on the row.
    fn agent(&self) -> &str;
}

macro_rules! stored_row {
    ($t:ty, $table:literal) => {
        impl StoredRow for $t {
            const TABLE: &'static str = $table;
            fn ts(&self) -> u32 {
                self.ts
            }
            fn set_batch(&mut self, batch: u64) {
                self.batch = batch;
            }
            fn agent(&self) -> &str {
                &self.agent
            }
        }
    };
}

/// Traffic of one window per tenant × source class × protocol type × size class.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrafficRow {
    /// Window start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id (idempotency key).
    pub batch: u64,
    /// Window width, ms.
    pub window_ms: u32,
    /// Tenant of the source.
    pub tenant: String,
    /// Source class: `ipv4`, `ipv6`, `non_ip`.
    pub source_class: String,
    /// Protocol type (`tcp_syn`, `bfd_control`, …).
    pub protocol_type: String,
    /// Size class (`65-128`, …).
    pub size_class: String,
    /// Packets (scaled estimates when sampled: each record counts as its sampling rate).
    pub packets: u64,
    /// Packet records behind `packets` (equals it unsampled; migration 5, older rows read
    /// `packets`). The window's records apportioned by packets: exact unless the window mixed
    /// sampling rates.
    pub samples: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Connection setups (packets of a setup type: TCP SYN by default).
    pub setups: u64,
}
stored_row!(TrafficRow, "traffic");

/// One tenant's totals in one window, with its distinct sources.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TenantRow {
    /// Window start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Window width, ms.
    pub window_ms: u32,
    /// Tenant.
    pub tenant: String,
    /// Packets (scaled estimates when sampled).
    pub packets: u64,
    /// Packet records behind `packets`, as in [`TrafficRow::samples`] (migration 5).
    pub samples: u64,
    /// Bytes.
    pub bytes: u64,
    /// Connection setups.
    pub setups: u64,
    /// Distinct sources (the tenant's active nodes; estimated above the exact limit).
    pub sources: u64,
}
stored_row!(TenantRow, "tenants");

/// One entry of a window's heavy-hitter sketch.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeavyHitterRow {
    /// Window start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Window width, ms.
    pub window_ms: u32,
    /// `source`, `source_bytes`, `service`, `destination`.
    pub dimension: String,
    /// 1 = heaviest.
    pub rank: u16,
    /// The address (source, or destination for `service`/`destination`).
    pub address: Address,
    /// Destination port (`service` only).
    pub port: u16,
    /// IP protocol (`service` only).
    pub proto: u8,
    /// Tenant of the address.
    pub tenant: String,
    /// Packets counted for it (bytes for `source_bytes`).
    pub packets: u64,
    /// Bytes (packets for `source_bytes`).
    pub bytes: u64,
    /// The sketch's error bound: the true count is within `[packets − bound, packets]`.
    pub error_bound: u64,
    /// All packets of the window.
    pub window_packets: u64,
    /// Packet records behind `window_packets` (equals it unsampled; migration 5, older rows
    /// read `window_packets`).
    pub window_samples: u64,
}
stored_row!(HeavyHitterRow, "heavy_hitters");

/// Latency quantiles of one window: handshake latency per tenant (server all-zero), and per
/// server and measure (`latency_shift`'s samples; echo rows have port 0).
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LatencyRow {
    /// Window start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Window width, ms.
    pub window_ms: u32,
    /// Tenant (of the client for per-tenant rows, of the server for per-server rows).
    pub tenant: String,
    /// Server address; all zeros on per-tenant rows.
    pub server: Address,
    /// Server port; 0 on per-tenant rows.
    pub server_port: u16,
    /// `syn_to_syn_ack` or `syn_ack_to_ack` for the handshake measures; '' for the others.
    pub stage: String,
    /// `handshake_server`, `handshake_client`, `response`, `echo`, `tcp_rtt` or `rst`
    /// ('' on rows written before migration 3).
    #[serde(default)]
    pub measure: String,
    /// Samples.
    pub samples: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Maximum, µs.
    pub max_us: u64,
}
stored_row!(LatencyRow, "latency");

/// One TCP server's flow health in one window: data segments, retransmissions, zero windows,
/// duplicate ACKs, HTTP upgrade outcomes.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServerHealthRow {
    /// Window start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Window width, ms.
    pub window_ms: u32,
    /// Tenant of the server's address.
    pub tenant: String,
    /// Server address (the listening side).
    pub server: Address,
    /// Server port.
    pub server_port: u16,
    /// TCP segments with payload, both directions.
    pub segments: u64,
    /// Data segments the clients sent again.
    pub retransmits_to_server: u64,
    /// Data segments the server sent again.
    pub retransmits_from_server: u64,
    /// Zero-window advertisements.
    pub zero_windows: u64,
    /// Duplicate ACKs.
    pub dup_acks: u64,
    /// Upgrades answered 101.
    pub upgrades_ok: u64,
    /// Upgrades answered with another status.
    pub upgrades_refused: u64,
    /// Upgrades not answered.
    pub upgrades_unanswered: u64,
}
stored_row!(ServerHealthRow, "server_health");

/// One destination (address or service) or tenant the traffic-drop detector tracks, in one
/// of its judged windows.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DropRateRow {
    /// Window start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Window width, ms.
    pub window_ms: u32,
    /// `address`, `service` or `tenant`.
    pub dimension: String,
    /// Tenant (of the address, or the tenant itself).
    pub tenant: String,
    /// Address; all zeros for a tenant.
    pub address: Address,
    /// Port (services).
    pub port: u16,
    /// IP protocol (services).
    pub proto: u8,
    /// Packets counted (lower bound).
    pub packets: u64,
    /// Upper bound of the packets.
    pub packets_upper: u64,
    /// Baseline, packets/s (0 until there is a full one).
    pub baseline_pps: f64,
    /// 1 when the baseline is steady.
    pub steady: u8,
    /// Quiet windows in a row (0 outside a drop).
    pub quiet_windows: u32,
}
stored_row!(DropRateRow, "drop_rates");

/// One sFlow counter sample's generic interface counters (as the exporting agent reports
/// them: totals since its counters began, not per-window differences).
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InterfaceRow {
    /// The base window the sample was stored with.
    pub ts: u32,
    /// Agent id (the tapwatch agent that received it).
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// The sFlow agent (switch, router) that sent it.
    pub sflow_agent: Address,
    /// ifIndex.
    pub if_index: u32,
    /// ifType.
    pub if_type: u32,
    /// ifSpeed, bits/s.
    pub speed_bits: u64,
    /// 0 unknown, 1 full duplex, 2 half duplex, 3 in, 4 out.
    pub direction: u8,
    /// Bit 0 admin up, bit 1 operationally up.
    pub status: u8,
    /// ifInOctets.
    pub in_octets: u64,
    /// ifOutOctets.
    pub out_octets: u64,
    /// ifInUcastPkts + ifInMulticastPkts + ifInBroadcastPkts.
    pub in_packets: u64,
    /// ifOutUcastPkts + ifOutMulticastPkts + ifOutBroadcastPkts.
    pub out_packets: u64,
    /// ifInErrors.
    pub in_errors: u64,
    /// ifOutErrors.
    pub out_errors: u64,
    /// ifInDiscards.
    pub in_discards: u64,
    /// ifOutDiscards.
    pub out_discards: u64,
}
stored_row!(InterfaceRow, "interfaces");

/// One setup-growth point of a tenant and the fit over its history.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GrowthRow {
    /// Point start.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Tenant.
    pub tenant: String,
    /// Point width, s.
    pub point_s: u32,
    /// Distinct sources in the point.
    pub nodes: u64,
    /// Connection setups in the point.
    pub setups: u64,
    /// Fitted exponent of setups against nodes (0 while `fit_points` is 0).
    pub exponent: f64,
    /// Lower end of its 95 % interval.
    pub exponent_low: f64,
    /// Upper end of its 95 % interval.
    pub exponent_high: f64,
    /// R² of the fit.
    pub r2: f64,
    /// Points in the fit (0: not enough history yet).
    pub fit_points: u32,
}
stored_row!(GrowthRow, "setup_growth");

/// A learned periodic flow or BFD session (snapshot).
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PeriodicFlowRow {
    /// Snapshot time (event time).
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Tenant of the sender.
    pub tenant: String,
    /// The flow, `src:port->dst:port/proto`.
    pub flow: String,
    /// 1 for a BFD session.
    pub bfd: u8,
    /// Learned (or negotiated) period, ms.
    pub period_ms: f64,
    /// The last silence seen beyond the period, ms.
    pub last_gap_ms: f64,
    /// 1 while the flow is overdue.
    pub late: u8,
}
stored_row!(PeriodicFlowRow, "periodic_flows");

/// A heartbeat gap: raised when a deadline passed, resolved with the gap's length.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeartbeatGapRow {
    /// Detection time.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Tenant of the sender.
    pub tenant: String,
    /// The flow, `src:port->dst:port/proto`.
    pub flow: String,
    /// `firing` (deadline passed) or `resolved` (the flow spoke again or ended).
    pub state: String,
    /// 1 for a BFD session.
    pub bfd: u8,
    /// Period, ms.
    pub period_ms: f64,
    /// Silence so far (firing) or the whole gap (resolved), ms.
    pub gap_ms: f64,
    /// Last packet before the gap (Unix ms).
    pub started_ms: u64,
    /// Alert id (joins the `alerts` table).
    pub alert_id: String,
}
stored_row!(HeartbeatGapRow, "heartbeat_gaps");

/// An alert event: the alert contract of `docs/alerts.md`.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AlertRow {
    /// Detection time.
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// Alert id, stable for the alert's life.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    /// Tenant, empty when none.
    pub tenant: String,
    /// Subject.
    pub subject: String,
    /// When the condition started (Unix ms, event time).
    pub started_ms: u64,
    /// When this event was detected (Unix ms, event time).
    pub detected_ms: u64,
    /// Measured value.
    pub value: f64,
    /// Threshold crossed.
    pub threshold: f64,
    /// Evidence, a JSON object as a string.
    pub evidence: String,
    /// Contract version.
    pub version: u32,
}
stored_row!(AlertRow, "alerts");

/// An agent's record of itself, written at start and every few minutes.
#[derive(Row, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AgentRow {
    /// Record time (wall clock).
    pub ts: u32,
    /// Agent id.
    pub agent: String,
    /// Batch id.
    pub batch: u64,
    /// tapwatch version.
    pub version: String,
    /// `run` or `replay`.
    pub mode: String,
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Host boot time.
    pub boot_time: u32,
    /// Host uptime, s.
    pub uptime_s: u64,
    /// When this agent started.
    pub started: u32,
    /// Interfaces (or files) it reads, comma-separated.
    pub interfaces: String,
}
stored_row!(AgentRow, "agents");

/// Rows of every table, as produced by one flush of the pipeline.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// `traffic`.
    pub traffic: Vec<TrafficRow>,
    /// `tenants`.
    pub tenants: Vec<TenantRow>,
    /// `heavy_hitters`.
    pub heavy_hitters: Vec<HeavyHitterRow>,
    /// `latency`.
    pub latency: Vec<LatencyRow>,
    /// `setup_growth`.
    pub setup_growth: Vec<GrowthRow>,
    /// `periodic_flows`.
    pub periodic_flows: Vec<PeriodicFlowRow>,
    /// `heartbeat_gaps`.
    pub heartbeat_gaps: Vec<HeartbeatGapRow>,
    /// `alerts`.
    pub alerts: Vec<AlertRow>,
    /// `agents`.
    pub agents: Vec<AgentRow>,
    /// `server_health`.
    pub server_health: Vec<ServerHealthRow>,
    /// `drop_rates`.
    pub drop_rates: Vec<DropRateRow>,
    /// `interfaces`.
    pub interfaces: Vec<InterfaceRow>,
}

/// Calls `$m!(field, Type)` for every table of [`Rows`].
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_table {
    ($m:ident) => {
        $m!(traffic, $crate::rows::TrafficRow);
        $m!(tenants, $crate::rows::TenantRow);
        $m!(heavy_hitters, $crate::rows::HeavyHitterRow);
        $m!(latency, $crate::rows::LatencyRow);
        $m!(setup_growth, $crate::rows::GrowthRow);
        $m!(periodic_flows, $crate::rows::PeriodicFlowRow);
        $m!(heartbeat_gaps, $crate::rows::HeartbeatGapRow);
        $m!(alerts, $crate::rows::AlertRow);
        $m!(agents, $crate::rows::AgentRow);
        $m!(server_health, $crate::rows::ServerHealthRow);
        $m!(drop_rates, $crate::rows::DropRateRow);
        $m!(interfaces, $crate::rows::InterfaceRow);
    };
}

/// Names of the tables rows are written to, in [`Rows`] order.
pub const TABLES: [&str; 12] = [
    "traffic",
    "tenants",
    "heavy_hitters",
    "latency",
    "setup_growth",
    "periodic_flows",
    "heartbeat_gaps",
    "alerts",
    "agents",
    "server_health",
    "drop_rates",
    "interfaces",
];

impl Rows {
    /// Rows in all tables.
    pub fn len(&self) -> usize {
        let mut n = 0;
        macro_rules! add {
            ($f:ident, $t:ty) => {
                n += self.$f.len();
            };
        }
        for_each_table!(add);
        n
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves another set's rows to the end of this one's.
    pub fn append(&mut self, o: &mut Rows) {
        macro_rules! app {
            ($f:ident, $t:ty) => {
                self.$f.append(&mut o.$f);
            };
        }
        for_each_table!(app);
    }
}
