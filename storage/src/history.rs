//! The console's questions over history (`/api/history/…`): typed answers, the same from
//! ClickHouse and from the file store. Traffic series are aggregated where the rows are
//! (SQL over the base table, `traffic_1m` or `traffic_1h`, chosen by the step the range
//! needs; the same sums in Rust over the files); the other tables are read as typed rows
//! of the range and summed here, the same code for both backends.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::files::FileRow;
use crate::rows::{
    address_text, AlertRow, GrowthRow, HeartbeatGapRow, LatencyRow, PeriodicFlowRow,
};
use crate::{Backend, ClickHouse, StorageError};

/// Rows read per table and question at most (a range wider than this is cut, oldest kept).
pub const MAX_ROWS: usize = 200_000;

/// Steps a series may have, seconds; the finest that keeps a range within [`MAX_POINTS`].
pub const STEPS: [u32; 9] = [1, 10, 60, 300, 900, 3600, 10_800, 21_600, 86_400];

/// Points per series at most (before the step reaches a day).
pub const MAX_POINTS: u32 = 720;

/// A time range, Unix seconds, `since` inclusive, `until` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// From.
    pub since: u32,
    /// To (exclusive).
    pub until: u32,
}

impl Range {
    /// The step of a series over this range: the finest of [`STEPS`] giving at most
    /// [`MAX_POINTS`] points.
    pub fn step(&self) -> u32 {
        let span = self.until.saturating_sub(self.since).max(1);
        STEPS
            .into_iter()
            .find(|s| span.div_ceil(*s) <= MAX_POINTS)
            .unwrap_or(86_400)
    }

    /// The range widened to whole steps (so a rollup bucket is never half in).
    pub fn aligned(&self, step: u32) -> Range {
        Range {
            since: self.since / step * step,
            until: self.until.div_ceil(step).saturating_mul(step),
        }
    }

    fn sql(&self) -> String {
        format!(
            "ts >= toDateTime({}, 'UTC') AND ts < toDateTime({}, 'UTC')",
            self.since, self.until
        )
    }

    fn holds(&self, ts: u32) -> bool {
        ts >= self.since && ts < self.until
    }
}

/// What a traffic series is split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// Protocol type (`tcp_syn`, `bfd_control`, …).
    ProtocolType,
    /// Size class (`65-128`, …).
    SizeClass,
    /// Tenant of the source.
    Tenant,
}

impl By {
    /// Every dimension with its name.
    pub const ALL: [(By, &'static str); 3] = [
        (By::ProtocolType, "protocol_type"),
        (By::SizeClass, "size_class"),
        (By::Tenant, "tenant"),
    ];

    /// Its column (and name).
    pub fn column(self) -> &'static str {
        By::ALL
            .iter()
            .find(|(b, _)| *b == self)
            .map_or("", |(_, n)| n)
    }
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<By, String> {
        By::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(b, _)| *b)
            .ok_or_else(|| "expected protocol_type, size_class or tenant".to_string())
    }
}

/// Traffic over time, one series per key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    /// Width of each point, s.
    pub step_s: u32,
    /// The range answered (the asked one widened to whole steps).
    pub range: Range,
    /// Table the points were summed from (`traffic`, `traffic_1m`, `traffic_1h`).
    pub table: String,
    /// One series per key, keys in name order.
    pub series: Vec<Series>,
}

/// One key's points: `[unix_s, packets, bytes]`, only buckets with traffic, in time order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Series {
    /// The key (a protocol type, size class or tenant; `""` for no tenant).
    pub key: String,
    /// `[bucket start, packets, bytes]`.
    pub points: Vec<(u32, u64, u64)>,
}

#[derive(clickhouse::Row, Deserialize)]
struct Cell {
    t: u32,
    k: String,
    p: u64,
    b: u64,
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The rollup a step reads from ClickHouse: whole hours from `traffic_1h`, whole minutes
/// from `traffic_1m`, anything finer from the base table.
pub fn traffic_table(step: u32) -> &'static str {
    if step.is_multiple_of(3600) {
        "traffic_1h"
    } else if step.is_multiple_of(60) {
        "traffic_1m"
    } else {
        "traffic"
    }
}

/// Packets and bytes over `range` by `by`, optionally of one tenant.
pub fn traffic(
    b: &Backend,
    range: Range,
    by: By,
    tenant: Option<&str>,
) -> Result<Traffic, StorageError> {
    let step = range.step();
    let r = range.aligned(step);
    let col = by.column();
    let (table, cells) = match b {
        Backend::ClickHouse(ch) => {
            let table = traffic_table(step);
            let sum = if table == "traffic" {
                "sum"
            } else {
                "sumMerge"
            };
            let mut w = r.sql();
            if let Some(t) = tenant {
                w.push_str(&format!(" AND tenant = {}", lit(t)));
            }
            let sql = format!(
                "SELECT toUInt32(intDiv(toUInt32(ts), {step}) * {step}) AS t, toString({col}) AS k, \
                 toUInt64({sum}(packets)) AS p, toUInt64({sum}(bytes)) AS b \
                 FROM {} WHERE {w} GROUP BY t, k ORDER BY t, k",
                ch.layout.query_table(table)
            );
            (table, ch.select::<Cell>(&sql)?)
        }
        Backend::Files(f) => {
            let mut sums: BTreeMap<(u32, String), (u64, u64)> = BTreeMap::new();
            for row in f.read("traffic", r.since, r.until)? {
                let ts = row.u64("ts") as u32;
                if !r.holds(ts) || tenant.is_some_and(|t| row.str("tenant") != t) {
                    continue;
                }
                let s = sums.entry((ts / step * step, row.str(col))).or_default();
                s.0 += row.u64("packets");
                s.1 += row.u64("bytes");
            }
            let cells = sums
                .into_iter()
                .map(|((t, k), (p, b))| Cell { t, k, p, b })
                .collect();
            ("traffic", cells)
        }
    };
    let mut by_key: BTreeMap<String, Vec<(u32, u64, u64)>> = BTreeMap::new();
    for c in cells {
        by_key.entry(c.k).or_default().push((c.t, c.p, c.b));
    }
    Ok(Traffic {
        step_s: step,
        range: r,
        table: table.to_string(),
        series: by_key
            .into_iter()
            .map(|(key, mut points)| {
                points.sort_by_key(|p| p.0);
                Series { key, points }
            })
            .collect(),
    })
}

/// The first and last window start with traffic, Unix seconds (`None` when nothing is
/// stored).
pub fn extent(b: &Backend) -> Result<Option<(u32, u32)>, StorageError> {
    match b {
        Backend::ClickHouse(ch) => {
            #[derive(clickhouse::Row, Deserialize)]
            struct Ext {
                n: u64,
                lo: u32,
                hi: u32,
            }
            let e = ch.select::<Ext>(&format!(
                "SELECT count() AS n, toUInt32(min(ts)) AS lo, toUInt32(max(ts)) AS hi FROM {}",
                ch.layout.query_table("traffic")
            ))?;
            Ok(e.first().filter(|e| e.n > 0).map(|e| (e.lo, e.hi)))
        }
        Backend::Files(f) => {
            let files = f.files("traffic");
            let (Some(first), Some(last)) = (files.first(), files.last()) else {
                return Ok(None);
            };
            let ts_of =
                |rows: Vec<FileRow>| rows.iter().map(|r| r.u64("ts") as u32).collect::<Vec<_>>();
            let lo = hour_start(&first.0);
            let hi = hour_start(&last.0);
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return Ok(None);
            };
            let first_ts = ts_of(f.read("traffic", lo, lo + 3600)?).into_iter().min();
            let last_ts = ts_of(f.read("traffic", hi, hi + 3600)?).into_iter().max();
            Ok(first_ts.zip(last_ts))
        }
    }
}

/// Unix seconds of an hourly file's `YYYYMMDDTHH`.
fn hour_start(name: &str) -> Option<u32> {
    let num = |a: usize, b: usize| name.get(a..b)?.parse::<i64>().ok();
    let (y, m, d, h) = (num(0, 4)?, num(4, 6)?, num(6, 8)?, num(9, 11)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(0..=23).contains(&h) {
        return None;
    }
    // Days from civil (the inverse of `files::civil`).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u32::try_from(days * 86_400 + h * 3600).ok()
}

/// Reads one table's typed rows of a range from either backend.
trait FromFile: Sized {
    const TABLE: &'static str;
    fn from_file(r: &FileRow) -> Self;
}

fn rows<T>(b: &Backend, range: Range, extra: &str) -> Result<Vec<T>, StorageError>
where
    T: FromFile + clickhouse::RowOwned + clickhouse::RowRead + TsOf,
{
    match b {
        Backend::ClickHouse(ch) => select_rows(ch, range, extra),
        Backend::Files(f) => {
            let mut v: Vec<T> = f
                .read(T::TABLE, range.since, range.until)?
                .iter()
                .filter(|r| range.holds(r.u64("ts") as u32))
                .map(T::from_file)
                .collect();
            v.sort_by_key(TsOf::ts_of);
            v.truncate(MAX_ROWS);
            Ok(v)
        }
    }
}

fn select_rows<T>(ch: &ClickHouse, range: Range, extra: &str) -> Result<Vec<T>, StorageError>
where
    T: FromFile + clickhouse::RowOwned + clickhouse::RowRead,
{
    let cols = crate::writer::columns_of(T::TABLE).join(", ");
    ch.select::<T>(&format!(
        "SELECT {cols} FROM {} WHERE {}{extra} ORDER BY ts LIMIT {MAX_ROWS}",
        ch.layout.query_table(T::TABLE),
        range.sql()
    ))
}

/// The time of a typed row (for ordering the files' rows like ClickHouse's).
trait TsOf {
    fn ts_of(&self) -> u32;
}

/// `TsOf` for row types whose time is their `ts` field.
macro_rules! ts_of_field {
    ($($row:ty),+) => {
        $(impl TsOf for $row {
            fn ts_of(&self) -> u32 {
                self.ts
            }
        })+
    };
}
ts_of_field!(
    AlertRow,
    GrowthRow,
    HeartbeatGapRow,
    LatencyRow,
    PeriodicFlowRow
);

impl FromFile for PeriodicFlowRow {
    const TABLE: &'static str = "periodic_flows";
    fn from_file(r: &FileRow) -> PeriodicFlowRow {
        PeriodicFlowRow {
            ts: r.u64("ts") as u32,
            agent: r.str("agent"),
            batch: r.u64("batch"),
            tenant: r.str("tenant"),
            flow: r.str("flow"),
            bfd: r.u64("bfd") as u8,
            period_ms: r.f64("period_ms"),
            last_gap_ms: r.f64("last_gap_ms"),
            late: r.u64("late") as u8,
        }
    }
}

impl FromFile for AlertRow {
    const TABLE: &'static str = "alerts";
    fn from_file(r: &FileRow) -> AlertRow {
        AlertRow {
            ts: r.u64("ts") as u32,
            agent: r.str("agent"),
            batch: r.u64("batch"),
            id: r.str("id"),
            kind: r.str("kind"),
            state: r.str("state"),
            severity: r.str("severity"),
            tenant: r.str("tenant"),
            subject: r.str("subject"),
            started_ms: r.u64("started_ms"),
            detected_ms: r.u64("detected_ms"),
            value: r.f64("value"),
            threshold: r.f64("threshold"),
            evidence: r.str("evidence"),
            version: r.u64("version") as u32,
        }
    }
}

impl FromFile for GrowthRow {
    const TABLE: &'static str = "setup_growth";
    fn from_file(r: &FileRow) -> GrowthRow {
        GrowthRow {
            ts: r.u64("ts") as u32,
            agent: r.str("agent"),
            batch: r.u64("batch"),
            tenant: r.str("tenant"),
            point_s: r.u64("point_s") as u32,
            nodes: r.u64("nodes"),
            setups: r.u64("setups"),
            exponent: r.f64("exponent"),
            exponent_low: r.f64("exponent_low"),
            exponent_high: r.f64("exponent_high"),
            r2: r.f64("r2"),
            fit_points: r.u64("fit_points") as u32,
        }
    }
}

impl FromFile for HeartbeatGapRow {
    const TABLE: &'static str = "heartbeat_gaps";
    fn from_file(r: &FileRow) -> HeartbeatGapRow {
        HeartbeatGapRow {
            ts: r.u64("ts") as u32,
            agent: r.str("agent"),
            batch: r.u64("batch"),
            tenant: r.str("tenant"),
            flow: r.str("flow"),
            state: r.str("state"),
            bfd: r.u64("bfd") as u8,
            period_ms: r.f64("period_ms"),
            gap_ms: r.f64("gap_ms"),
            started_ms: r.u64("started_ms"),
            alert_id: r.str("alert_id"),
        }
    }
}

impl FromFile for LatencyRow {
    const TABLE: &'static str = "latency";
    fn from_file(r: &FileRow) -> LatencyRow {
        LatencyRow {
            ts: r.u64("ts") as u32,
            agent: r.str("agent"),
            batch: r.u64("batch"),
            window_ms: r.u64("window_ms") as u32,
            tenant: r.str("tenant"),
            server: r.address("server"),
            server_port: r.u64("server_port") as u16,
            stage: r.str("stage"),
            measure: r.str("measure"),
            samples: r.u64("samples"),
            p50_us: r.u64("p50_us"),
            p90_us: r.u64("p90_us"),
            p99_us: r.u64("p99_us"),
            max_us: r.u64("max_us"),
        }
    }
}

/// Which alerts to list.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this severity (the alert's highest).
    pub severity: Option<String>,
    /// Only alerts in this state at the end of the range.
    pub state: Option<String>,
}

/// One alert of a range: its events folded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertSummary {
    /// Alert id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Tenant (`""` for none).
    pub tenant: String,
    /// Subject.
    pub subject: String,
    /// Highest severity of its events.
    pub severity: String,
    /// State at the end of the range (its last event's): `firing` while still open.
    pub state: String,
    /// When the condition started, Unix ms.
    pub started_ms: u64,
    /// First event's detection, Unix ms.
    pub first_ms: u64,
    /// Last event's detection, Unix ms.
    pub last_ms: u64,
    /// Events up to the range's end.
    pub events: u32,
    /// Last event's value.
    pub value: f64,
    /// Last event's threshold.
    pub threshold: f64,
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 3,
        "warning" => 2,
        "info" => 1,
        _ => 0,
    }
}

/// Every alert with an event in `range` or open at its start, first detected first,
/// filtered.
pub fn alerts(
    b: &Backend,
    range: Range,
    f: &AlertFilter,
) -> Result<Vec<AlertSummary>, StorageError> {
    let mut extra = String::new();
    for (col, v) in [("kind", &f.kind), ("tenant", &f.tenant)] {
        if let Some(v) = v {
            extra.push_str(&format!(" AND {col} = {}", lit(v)));
        }
    }
    // Every event up to the range's end: an alert that fired before the range and is still
    // open in it belongs to the range as much as one with an event inside.
    let upto = Range {
        since: 0,
        until: range.until,
    };
    let mut events: Vec<AlertRow> = rows(b, upto, &extra)?;
    events.retain(|e| {
        f.kind.as_ref().is_none_or(|k| e.kind == *k)
            && f.tenant.as_ref().is_none_or(|t| e.tenant == *t)
    });
    events.sort_by_key(|e| (e.detected_ms, e.state != "firing"));
    let mut by_id: BTreeMap<String, AlertSummary> = BTreeMap::new();
    let mut in_range: std::collections::BTreeSet<String> = Default::default();
    for e in events {
        if e.ts >= range.since {
            in_range.insert(e.id.clone());
        }
        let a = by_id.entry(e.id.clone()).or_insert_with(|| AlertSummary {
            id: e.id.clone(),
            kind: e.kind.clone(),
            tenant: e.tenant.clone(),
            subject: e.subject.clone(),
            severity: e.severity.clone(),
            state: e.state.clone(),
            started_ms: e.started_ms,
            first_ms: e.detected_ms,
            last_ms: e.detected_ms,
            events: 0,
            value: e.value,
            threshold: e.threshold,
        });
        if severity_rank(&e.severity) > severity_rank(&a.severity) {
            a.severity = e.severity.clone();
        }
        a.state = e.state;
        a.last_ms = e.detected_ms;
        a.events += 1;
        a.value = e.value;
        a.threshold = e.threshold;
    }
    let mut out: Vec<AlertSummary> = by_id
        .into_values()
        .filter(|a| {
            (in_range.contains(&a.id) || a.state == "firing")
                && f.severity.as_ref().is_none_or(|s| a.severity == *s)
                && f.state.as_ref().is_none_or(|s| a.state == *s)
        })
        .collect();
    out.sort_by(|a, b| (a.first_ms, &a.id).cmp(&(b.first_ms, &b.id)));
    Ok(out)
}

/// One event of an alert, as stored (the evidence a JSON object as text).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertEventRow {
    /// `firing` or `resolved`.
    pub state: String,
    /// Severity.
    pub severity: String,
    /// Detection, Unix ms.
    pub detected_ms: u64,
    /// Condition start, Unix ms.
    pub started_ms: u64,
    /// Value.
    pub value: f64,
    /// Threshold.
    pub threshold: f64,
    /// Agent that raised it.
    pub agent: String,
    /// The evidence object (`docs/alerts.md`), as JSON text.
    pub evidence: String,
}

/// One alert and its events, oldest first (`None` when no event has this id).
pub fn alert(
    b: &Backend,
    id: &str,
) -> Result<Option<(AlertSummary, Vec<AlertEventRow>)>, StorageError> {
    let all = Range {
        since: 0,
        until: u32::MAX,
    };
    let mut events: Vec<AlertRow> = rows(b, all, &format!(" AND id = {}", lit(id)))?;
    events.retain(|e| e.id == id);
    events.sort_by_key(|e| (e.detected_ms, e.state != "firing"));
    let Some(first) = events.first() else {
        return Ok(None);
    };
    let summary = alerts(
        b,
        Range {
            since: first.ts,
            until: u32::MAX,
        },
        &AlertFilter {
            kind: Some(first.kind.clone()),
            tenant: Some(first.tenant.clone()),
            ..AlertFilter::default()
        },
    )?
    .into_iter()
    .find(|a| a.id == id);
    Ok(summary.map(|s| {
        (
            s,
            events
                .into_iter()
                .map(|e| AlertEventRow {
                    state: e.state,
                    severity: e.severity,
                    detected_ms: e.detected_ms,
                    started_ms: e.started_ms,
                    value: e.value,
                    threshold: e.threshold,
                    agent: e.agent,
                    evidence: e.evidence,
                })
                .collect(),
        )
    }))
}

/// What the top of a range ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopOf {
    /// Sources by packets.
    Talkers,
    /// Destination services (address, port, protocol) by packets.
    Services,
}

/// One entry of a range's top: its packets summed over the windows whose top 10 held it
/// (a lower bound of its traffic when it was not always in them).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopEntry {
    /// Address.
    pub address: String,
    /// Port (services; 0 for talkers).
    pub port: u16,
    /// IP protocol (services; 0 for talkers).
    pub proto: u8,
    /// Tenant of the address.
    pub tenant: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Windows whose top held it.
    pub windows: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct TopCell {
    address: [u8; 16],
    port: u16,
    proto: u8,
    tenant: String,
    packets: u64,
    bytes: u64,
    windows: u64,
}

/// The `limit` heaviest sources or services of `range`, optionally of one tenant.
pub fn top(
    b: &Backend,
    range: Range,
    of: TopOf,
    tenant: Option<&str>,
    limit: usize,
) -> Result<Vec<TopEntry>, StorageError> {
    let dimension = match of {
        TopOf::Talkers => "source",
        TopOf::Services => "service",
    };
    let cells: Vec<TopCell> = match b {
        Backend::ClickHouse(ch) => {
            let mut w = format!("dimension = {} AND {}", lit(dimension), range.sql());
            if let Some(t) = tenant {
                w.push_str(&format!(" AND tenant = {}", lit(t)));
            }
            ch.select::<TopCell>(&format!(
                "SELECT address, port, proto, tn AS tenant, pk AS packets, bt AS bytes, wn AS windows \
                 FROM (SELECT address, port, proto, toString(max(tenant)) AS tn, toUInt64(sum(packets)) AS pk, \
                 toUInt64(sum(bytes)) AS bt, toUInt64(count()) AS wn FROM {} WHERE {w} \
                 GROUP BY address, port, proto) ORDER BY packets DESC, address, port LIMIT {limit}",
                ch.layout.query_table("heavy_hitters")
            ))?
        }
        Backend::Files(f) => {
            let mut by: BTreeMap<([u8; 16], u16, u8), TopCell> = BTreeMap::new();
            for r in f.read("heavy_hitters", range.since, range.until)? {
                if r.str("dimension") != dimension
                    || !range.holds(r.u64("ts") as u32)
                    || tenant.is_some_and(|t| r.str("tenant") != t)
                {
                    continue;
                }
                let key = (
                    r.address("address"),
                    r.u64("port") as u16,
                    r.u64("proto") as u8,
                );
                let c = by.entry(key).or_insert_with(|| TopCell {
                    address: key.0,
                    port: key.1,
                    proto: key.2,
                    tenant: String::new(),
                    packets: 0,
                    bytes: 0,
                    windows: 0,
                });
                c.tenant = c.tenant.clone().max(r.str("tenant"));
                c.packets += r.u64("packets");
                c.bytes += r.u64("bytes");
                c.windows += 1;
            }
            let mut v: Vec<TopCell> = by.into_values().collect();
            v.sort_by(|a, b| {
                b.packets
                    .cmp(&a.packets)
                    .then(a.address.cmp(&b.address))
                    .then(a.port.cmp(&b.port))
            });
            v.truncate(limit);
            v
        }
    };
    Ok(cells
        .into_iter()
        .map(|c| TopEntry {
            address: address_text(&c.address),
            port: c.port,
            proto: c.proto,
            tenant: c.tenant,
            packets: c.packets,
            bytes: c.bytes,
            windows: c.windows,
        })
        .collect())
}

/// A tenant's totals over a range.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TenantTotal {
    /// Tenant (`""` for sources in no tenant).
    pub tenant: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Alerts with an event in the range or open at its start.
    pub alerts: u32,
}

/// Every tenant with traffic or alerts in `range`, most packets first.
pub fn tenants(b: &Backend, range: Range) -> Result<Vec<TenantTotal>, StorageError> {
    let t = traffic(b, range, By::Tenant, None)?;
    let mut by: BTreeMap<String, TenantTotal> = BTreeMap::new();
    for s in t.series {
        let e = by.entry(s.key.clone()).or_insert_with(|| TenantTotal {
            tenant: s.key.clone(),
            packets: 0,
            bytes: 0,
            alerts: 0,
        });
        for (_, p, b) in s.points {
            e.packets += p;
            e.bytes += b;
        }
    }
    for a in alerts(b, range, &AlertFilter::default())? {
        by.entry(a.tenant.clone())
            .or_insert_with(|| TenantTotal {
                tenant: a.tenant.clone(),
                packets: 0,
                bytes: 0,
                alerts: 0,
            })
            .alerts += 1;
    }
    let mut v: Vec<TenantTotal> = by.into_values().collect();
    v.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.tenant.cmp(&b.tenant)));
    Ok(v)
}

/// One stored growth point: the tenant's active nodes and setups in it, with the fit of
/// its level as it stood then.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrowthPoint {
    /// Point start, Unix s.
    pub ts: u32,
    /// Point width, s (the level).
    pub point_s: u32,
    /// Active nodes.
    pub nodes: u64,
    /// Setups in the point.
    pub setups: u64,
    /// Fitted exponent (0 while `fit_points` is 0).
    pub exponent: f64,
    /// Its 95 % interval, low end.
    pub exponent_low: f64,
    /// High end.
    pub exponent_high: f64,
    /// R² of the fit.
    pub r2: f64,
    /// Points in the fit.
    pub fit_points: u32,
}

/// A tenant's growth points of `range`, oldest first.
pub fn growth(b: &Backend, range: Range, tenant: &str) -> Result<Vec<GrowthPoint>, StorageError> {
    let mut v: Vec<GrowthRow> = rows(b, range, &format!(" AND tenant = {}", lit(tenant)))?;
    v.retain(|r| r.tenant == tenant);
    v.sort_by_key(|r| (r.ts, r.point_s));
    Ok(v.into_iter()
        .map(|r| GrowthPoint {
            ts: r.ts,
            point_s: r.point_s,
            nodes: r.nodes,
            setups: r.setups,
            exponent: r.exponent,
            exponent_low: r.exponent_low,
            exponent_high: r.exponent_high,
            r2: r.r2,
            fit_points: r.fit_points,
        })
        .collect())
}

/// A heartbeat gap event: a periodic flow of the tenant fell silent (`firing`) or spoke
/// again (`resolved`, with the whole gap).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    /// Detection, Unix s.
    pub ts: u32,
    /// The flow.
    pub flow: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// A BFD session.
    pub bfd: bool,
    /// The flow's period, ms.
    pub period_ms: f64,
    /// Silence so far (firing) or the whole gap (resolved), ms.
    pub gap_ms: f64,
    /// Alert id.
    pub alert_id: String,
}

/// A tenant's heartbeat gap events of `range`, oldest first.
pub fn gaps(b: &Backend, range: Range, tenant: &str) -> Result<Vec<Gap>, StorageError> {
    let mut v: Vec<HeartbeatGapRow> = rows(b, range, &format!(" AND tenant = {}", lit(tenant)))?;
    v.retain(|r| r.tenant == tenant);
    v.sort_by(|a, b| (a.ts, &a.flow, &a.state).cmp(&(b.ts, &b.flow, &b.state)));
    Ok(v.into_iter()
        .map(|r| Gap {
            ts: r.ts,
            flow: r.flow,
            state: r.state,
            bfd: r.bfd != 0,
            period_ms: r.period_ms,
            gap_ms: r.gap_ms,
            alert_id: r.alert_id,
        })
        .collect())
}

/// A periodic flow (heartbeat or BFD session) of a tenant, from the range's snapshots.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// The flow.
    pub flow: String,
    /// A BFD session.
    pub bfd: bool,
    /// Its period in the last snapshot, ms.
    pub period_ms: f64,
    /// The longest silence beyond its period any snapshot saw, ms (0: none).
    pub max_gap_ms: f64,
    /// Snapshots that held it.
    pub snapshots: u32,
    /// Snapshots that found it late.
    pub late: u32,
    /// First and last snapshot holding it, Unix s.
    pub first_ts: u32,
    /// Last.
    pub last_ts: u32,
}

/// A tenant's periodic flows in `range`, by flow.
pub fn heartbeats(b: &Backend, range: Range, tenant: &str) -> Result<Vec<Heartbeat>, StorageError> {
    let mut v: Vec<PeriodicFlowRow> = rows(b, range, &format!(" AND tenant = {}", lit(tenant)))?;
    v.retain(|r| r.tenant == tenant);
    v.sort_by_key(|r| r.ts);
    let mut by: BTreeMap<String, Heartbeat> = BTreeMap::new();
    for r in v {
        let h = by.entry(r.flow.clone()).or_insert_with(|| Heartbeat {
            flow: r.flow.clone(),
            bfd: r.bfd != 0,
            period_ms: 0.0,
            max_gap_ms: 0.0,
            snapshots: 0,
            late: 0,
            first_ts: r.ts,
            last_ts: r.ts,
        });
        h.period_ms = r.period_ms;
        h.max_gap_ms = h.max_gap_ms.max(r.last_gap_ms);
        h.snapshots += 1;
        h.late += u32::from(r.late != 0);
        h.last_ts = r.ts;
    }
    Ok(by.into_values().collect())
}

/// One stage's handshake latency over time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatencySeries {
    /// `syn_to_syn_ack` or `syn_ack_to_ack`.
    pub stage: String,
    /// `[bucket start, samples, p50 µs (sample-weighted mean of the windows'), p99 µs
    /// (the windows' highest)]`.
    pub points: Vec<(u32, u64, u64, u64)>,
}

/// A tenant's handshake latency per stage over `range`, in buckets of the range's step.
pub fn latency(
    b: &Backend,
    range: Range,
    tenant: &str,
) -> Result<(u32, Vec<LatencySeries>), StorageError> {
    let step = range.step();
    let r = range.aligned(step);
    let mut v: Vec<LatencyRow> = rows(
        b,
        r,
        &format!(" AND tenant = {} AND server_port = 0", lit(tenant)),
    )?;
    v.retain(|l| l.tenant == tenant && l.server_port == 0 && !l.stage.is_empty());
    let mut by: BTreeMap<(String, u32), [u64; 3]> = BTreeMap::new();
    for l in v {
        let a = by.entry((l.stage, l.ts / step * step)).or_default();
        a[0] += l.samples;
        a[1] += l.p50_us * l.samples;
        a[2] = a[2].max(l.p99_us);
    }
    let mut series: BTreeMap<String, Vec<(u32, u64, u64, u64)>> = BTreeMap::new();
    for ((stage, t), [n, w50, p99]) in by {
        series
            .entry(stage)
            .or_default()
            .push((t, n, w50.checked_div(n).unwrap_or(0), p99));
    }
    Ok((
        step,
        series
            .into_iter()
            .map(|(stage, points)| LatencySeries { stage, points })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_ranges_within_the_point_budget() {
        let r = |span: u32| Range {
            since: 1_000_000,
            until: 1_000_000 + span,
        };
        assert_eq!(r(600).step(), 1);
        assert_eq!(r(900).step(), 10);
        assert_eq!(r(3600).step(), 10);
        assert_eq!(r(86_400).step(), 300);
        assert_eq!(r(7 * 86_400).step(), 900);
        assert_eq!(traffic_table(10), "traffic");
        assert_eq!(traffic_table(300), "traffic_1m");
        assert_eq!(traffic_table(3600), "traffic_1h");
        let a = Range {
            since: 125,
            until: 181,
        }
        .aligned(60);
        assert_eq!((a.since, a.until), (120, 240));
    }

    #[test]
    fn hourly_file_names_turn_back_into_their_hour() {
        for ts in [0u32, 1_795_392_000 + 3 * 3600, 951_782_400 + 23 * 3600] {
            assert_eq!(hour_start(&crate::files::hour_name(ts)), Some(ts));
        }
        assert_eq!(hour_start("garbage"), None);
        assert_eq!(hour_start("20261399T99"), None);
    }

    #[test]
    fn dimensions_parse_by_name_and_name_what_was_expected() {
        assert_eq!("size_class".parse::<By>(), Ok(By::SizeClass));
        let e = "port".parse::<By>().unwrap_err();
        assert!(e.contains("protocol_type, size_class or tenant"), "{e}");
    }
}
