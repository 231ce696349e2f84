//! The built-in questions of `tapwatch query`, answered the same way from ClickHouse (SQL)
//! and from the file store (the same aggregation in Rust): same columns, same order.
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::files::{civil, FileRow, FileStore};
use crate::rows::address_text;
use crate::schema::Layout;
use crate::{ClickHouse, StorageError};

/// A built-in question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Question {
    /// Sources with the most packets in the heavy-hitter sketches, merged across agents.
    TopTalkers,
    /// Alert events.
    Alerts,
    /// Heartbeat gaps that ended (how long each flow was silent).
    HeartbeatGaps,
    /// Setup growth per tenant: node and setup ranges and the latest fit.
    SetupGrowth,
    /// Handshake latency per tenant and stage; with [`Filter::measure`], latency per server
    /// of that measure.
    Latency,
    // flow health (issue 14)
    /// Retransmitted TCP data per server, most first.
    Retransmits,
    /// HTTP upgrade attempts and outcomes per server, most failures first.
    Upgrades,
    /// Traffic-drop alert events.
    Drops,
    /// sFlow agents' interface counters per agent and ifIndex: rates and differences.
    Interfaces,
}

impl Question {
    /// Every question, with its command-line name.
    pub const ALL: [(Question, &'static str); 9] = [
        (Question::TopTalkers, "top-talkers"),
        (Question::Alerts, "alerts"),
        (Question::HeartbeatGaps, "heartbeat-gaps"),
        (Question::SetupGrowth, "setup-growth"),
        (Question::Latency, "latency"),
        (Question::Retransmits, "retransmits"),
        (Question::Upgrades, "upgrades"),
        (Question::Drops, "drops"),
        (Question::Interfaces, "interfaces"),
    ];

    /// Output columns, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Question::TopTalkers => &[
                "address",
                "tenant",
                "packets",
                "bytes",
                "windows",
                "agents",
                "max_error_bound",
            ],
            Question::Alerts => &[
                "time",
                "agent",
                "kind",
                "state",
                "severity",
                "tenant",
                "subject",
                "value",
                "threshold",
                "id",
                "evidence_pcap",
            ],
            Question::HeartbeatGaps => &[
                "time",
                "agent",
                "tenant",
                "flow",
                "bfd",
                "period_ms",
                "gap_ms",
            ],
            Question::SetupGrowth => &[
                "agent",
                "tenant",
                "points",
                "nodes_min",
                "nodes_max",
                "setups",
                "exponent",
                "exponent_low",
                "exponent_high",
                "r2",
            ],
            Question::Latency => &[
                "tenant", "server", "port", "measure", "stage", "samples", "p50_us", "p99_us",
                "max_us",
            ],
            Question::Retransmits => &[
                "server",
                "port",
                "tenant",
                "segments",
                "retransmits",
                "share",
                "zero_windows",
                "dup_acks",
            ],
            Question::Upgrades => &[
                "server",
                "port",
                "tenant",
                "attempts",
                "ok",
                "refused",
                "unanswered",
            ],
            Question::Interfaces => &[
                "sflow_agent",
                "if_index",
                "samples",
                "seconds",
                "speed_bits",
                "status",
                "in_bps",
                "out_bps",
                "in_packets",
                "out_packets",
                "in_errors",
                "out_errors",
                "in_discards",
                "out_discards",
            ],
            Question::Drops => &[
                "time",
                "agent",
                "state",
                "severity",
                "tenant",
                "subject",
                "value",
                "threshold",
                "id",
            ],
        }
    }
}

impl std::str::FromStr for Question {
    type Err = String;
    fn from_str(s: &str) -> Result<Question, String> {
        Question::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(q, _)| *q)
            .ok_or_else(|| {
                let names: Vec<&str> = Question::ALL.iter().map(|(_, n)| *n).collect();
                format!(
                    "unknown question {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Filters every question takes.
#[derive(Clone, Debug)]
pub struct Filter {
    /// From (Unix seconds, inclusive).
    pub since: u32,
    /// To (Unix seconds, exclusive).
    pub until: u32,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// At most this many rows.
    pub limit: usize,
    /// `latency` only: per server, rows of this measure (`handshake_server`, …, `rst`).
    pub measure: Option<String>,
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Filter {
    fn sql(&self) -> String {
        let mut w = format!(
            "ts >= toDateTime({}, 'UTC') AND ts < toDateTime({}, 'UTC')",
            self.since, self.until
        );
        if let Some(t) = &self.tenant {
            w.push_str(&format!(" AND tenant = {}", lit(t)));
        }
        if let Some(a) = &self.agent {
            w.push_str(&format!(" AND agent = {}", lit(a)));
        }
        w
    }

    fn keeps(&self, r: &FileRow) -> bool {
        let ts = r.u64("ts");
        ts >= u64::from(self.since)
            && ts < u64::from(self.until)
            && self.tenant.as_ref().is_none_or(|t| r.str("tenant") == *t)
            && self.agent.as_ref().is_none_or(|a| r.str("agent") == *a)
    }
}

/// The SQL of a question for a layout.
pub fn sql(q: Question, layout: &Layout, f: &Filter) -> String {
    let t = |name: &str| layout.query_table(name);
    let w = f.sql();
    let n = f.limit;
    match q {
        // Aggregates are computed under other names in a subquery: an alias equal to a column
        // name would shadow the column in WHERE and in other aggregates.
        Question::TopTalkers => format!(
            "SELECT replaceRegexpOne(IPv6NumToString(a), '^::ffff:', '') AS address, t AS tenant, \
             p AS packets, b AS bytes, w AS windows, g AS agents, e AS max_error_bound \
             FROM (SELECT address AS a, max(tenant) AS t, sum(packets) AS p, sum(bytes) AS b, count() AS w, \
             uniqExact(agent) AS g, max(error_bound) AS e \
             FROM {} WHERE dimension = 'source' AND {w} GROUP BY address) \
             ORDER BY packets DESC, address LIMIT {n}",
            t("heavy_hitters")
        ),
        Question::Alerts => format!(
            "SELECT toString(ts) AS time, agent, kind, state, severity, tenant, subject, value, threshold, id, \
             visitParamExtractString(evidence, 'evidence_pcap') AS evidence_pcap \
             FROM {} WHERE {w} ORDER BY ts, agent, id, state LIMIT {n}",
            t("alerts")
        ),
        Question::HeartbeatGaps => format!(
            "SELECT toString(ts) AS time, agent, tenant, flow, bfd, period_ms, gap_ms \
             FROM {} WHERE state = 'resolved' AND {w} ORDER BY ts, agent, flow LIMIT {n}",
            t("heartbeat_gaps")
        ),
        Question::SetupGrowth => format!(
            "SELECT g AS agent, t AS tenant, c AS points, n0 AS nodes_min, n1 AS nodes_max, s AS setups, \
             x AS exponent, x0 AS exponent_low, x1 AS exponent_high, r AS r2 \
             FROM (SELECT agent AS g, tenant AS t, count() AS c, min(nodes) AS n0, max(nodes) AS n1, \
             sum(setups) AS s, argMaxIf(exponent, ts, fit_points > 0) AS x, \
             argMaxIf(exponent_low, ts, fit_points > 0) AS x0, argMaxIf(exponent_high, ts, fit_points > 0) AS x1, \
             argMaxIf(r2, ts, fit_points > 0) AS r \
             FROM {} WHERE {w} GROUP BY agent, tenant) ORDER BY agent, tenant LIMIT {n}",
            t("setup_growth")
        ),
        Question::Latency => match &f.measure {
            None => format!(
                "SELECT t AS tenant, '' AS server, 0 AS port, ms AS measure, st AS stage, c AS samples, \
                 intDiv(w50, c) AS p50_us, p AS p99_us, m AS max_us \
                 FROM (SELECT tenant AS t, stage AS st, max(measure) AS ms, sum(samples) AS c, \
                 sum(p50_us * samples) AS w50, max(p99_us) AS p, max(max_us) AS m \
                 FROM {} WHERE server_port = 0 AND measure != 'echo' AND {w} GROUP BY tenant, stage) \
                 ORDER BY tenant, stage LIMIT {n}",
                t("latency")
            ),
            Some(m) => format!(
                "SELECT t AS tenant, a AS server, sp AS port, {} AS measure, st AS stage, c AS samples, \
                 intDiv(w50, c) AS p50_us, p AS p99_us, mx AS max_us \
                 FROM (SELECT replaceRegexpOne(IPv6NumToString(server), '^::ffff:', '') AS a, \
                 server_port AS sp, max(tenant) AS t, max(stage) AS st, sum(samples) AS c, \
                 sum(p50_us * samples) AS w50, max(p99_us) AS p, max(max_us) AS mx \
                 FROM {} WHERE measure = {} AND (server_port > 0 OR measure = 'echo') AND {w} \
                 GROUP BY server, server_port) ORDER BY server, port LIMIT {n}",
                lit(m),
                t("latency"),
                lit(m)
            ),
        },
        Question::Retransmits => format!(
            "SELECT replaceRegexpOne(IPv6NumToString(a), '^::ffff:', '') AS server, p AS port, tn AS tenant, \
             s AS segments, r AS retransmits, if(s > 0, r / s, 0) AS share, z AS zero_windows, d AS dup_acks \
             FROM (SELECT server AS a, server_port AS p, max(tenant) AS tn, sum(segments) AS s, \
             sum(retransmits_to_server + retransmits_from_server) AS r, sum(zero_windows) AS z, sum(dup_acks) AS d \
             FROM {} WHERE {w} GROUP BY server, server_port) WHERE s > 0 \
             ORDER BY retransmits DESC, a, port LIMIT {n}",
            t("server_health")
        ),
        Question::Upgrades => format!(
            "SELECT replaceRegexpOne(IPv6NumToString(a), '^::ffff:', '') AS server, p AS port, tn AS tenant, \
             o + rf + u AS attempts, o AS ok, rf AS refused, u AS unanswered \
             FROM (SELECT server AS a, server_port AS p, max(tenant) AS tn, sum(upgrades_ok) AS o, \
             sum(upgrades_refused) AS rf, sum(upgrades_unanswered) AS u \
             FROM {} WHERE {w} GROUP BY server, server_port) WHERE o + rf + u > 0 \
             ORDER BY rf + u DESC, a, port LIMIT {n}",
            t("server_health")
        ),
        // Raw counter samples: differences are taken in Rust (`interfaces::summarise`).
        Question::Interfaces => format!(
            "SELECT {} FROM {} WHERE {} ORDER BY sflow_agent, if_index, ts LIMIT {n}",
            crate::writer::columns_of("interfaces").join(", "),
            t("interfaces"),
            Filter {
                tenant: None,
                ..f.clone()
            }
            .sql()
        ),
        Question::Drops => format!(
            "SELECT toString(ts) AS time, agent, state, severity, tenant, subject, value, threshold, id \
             FROM {} WHERE kind = 'traffic_drop' AND {w} ORDER BY ts, agent, id, state LIMIT {n}",
            t("alerts")
        ),
    }
}

/// Asks ClickHouse.
pub fn ask_clickhouse(
    ch: &ClickHouse,
    q: Question,
    f: &Filter,
) -> Result<Vec<Map<String, Value>>, StorageError> {
    if q == Question::Interfaces {
        let rows = crate::interfaces::read_clickhouse(ch, f.since, f.until, f.agent.as_deref())?;
        return Ok(interfaces(rows, f.limit));
    }
    let rows = ch.query_json(&sql(q, &ch.layout, f))?;
    // Keep the declared column order whatever the server's JSON does.
    Ok(rows
        .into_iter()
        .map(|mut r| {
            q.columns()
                .iter()
                .map(|c| (c.to_string(), r.remove(*c).unwrap_or(Value::Null)))
                .collect()
        })
        .collect())
}

/// `YYYY-MM-DD hh:mm:ss` of Unix seconds (ClickHouse's `toString(DateTime)` in UTC).
pub fn datetime_text(ts: u64) -> String {
    let (y, m, d) = civil((ts / 86_400) as i64);
    let s = ts % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// A stored row as a listing question's answer: `time` from `ts`, numbers as numbers.
fn project(q: Question, r: &FileRow) -> Map<String, Value> {
    q.columns()
        .iter()
        .map(|c| {
            let v = match *c {
                "time" => json!(datetime_text(r.u64("ts"))),
                "value" | "threshold" | "period_ms" | "gap_ms" => json!(r.f64(c)),
                "bfd" => json!(r.u64(c)),
                "evidence_pcap" => json!(evidence_pcap(&r.str("evidence"))),
                _ => json!(r.str(c)),
            };
            (c.to_string(), v)
        })
        .collect()
}

/// The evidence capture an alert's `evidence` names (`evidence/<id>.pcap`), or "".
fn evidence_pcap(evidence: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        evidence_pcap: Option<String>,
    }
    serde_json::from_str::<Named>(evidence)
        .ok()
        .and_then(|n| n.evidence_pcap)
        .unwrap_or_default()
}

fn obj(q: Question, vals: Vec<Value>) -> Map<String, Value> {
    q.columns()
        .iter()
        .map(|c| c.to_string())
        .zip(vals)
        .collect()
}

/// Asks the file store.
pub fn ask_files(
    store: &FileStore,
    q: Question,
    f: &Filter,
) -> Result<Vec<Map<String, Value>>, StorageError> {
    let read = |table: &str| -> Result<Vec<FileRow>, StorageError> {
        Ok(store
            .read(table, f.since, f.until)?
            .into_iter()
            .filter(|r| f.keeps(r))
            .collect())
    };
    let mut out: Vec<Map<String, Value>> = match q {
        Question::Interfaces => {
            let rows = crate::interfaces::read_files(store, f.since, f.until, f.agent.as_deref())?;
            interfaces(rows, f.limit)
        }
        Question::TopTalkers => {
            #[derive(Default)]
            struct Acc {
                tenant: String,
                packets: u64,
                bytes: u64,
                windows: u64,
                agents: std::collections::BTreeSet<String>,
                bound: u64,
            }
            let mut by: BTreeMap<String, Acc> = BTreeMap::new();
            for r in read("heavy_hitters")?
                .iter()
                .filter(|r| r.str("dimension") == "source")
            {
                let a = by.entry(address_text(&r.address("address"))).or_default();
                a.tenant = a.tenant.clone().max(r.str("tenant"));
                a.packets += r.u64("packets");
                a.bytes += r.u64("bytes");
                a.windows += 1;
                a.agents.insert(r.str("agent"));
                a.bound = a.bound.max(r.u64("error_bound"));
            }
            let mut v: Vec<(String, Acc)> = by.into_iter().collect();
            v.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0)));
            v.into_iter()
                .map(|(addr, a)| {
                    obj(
                        q,
                        vec![
                            json!(addr),
                            json!(a.tenant),
                            json!(a.packets),
                            json!(a.bytes),
                            json!(a.windows),
                            json!(a.agents.len()),
                            json!(a.bound),
                        ],
                    )
                })
                .collect()
        }
        Question::Drops => {
            let mut rows: Vec<FileRow> = read("alerts")?
                .into_iter()
                .filter(|r| r.str("kind") == "traffic_drop")
                .collect();
            rows.sort_by_key(|r| (r.u64("ts"), r.str("agent"), r.str("id"), r.str("state")));
            rows.iter().map(|r| project(q, r)).collect()
        }
        Question::Retransmits | Question::Upgrades => {
            // Per server: segments, retransmits, zero windows, dup ACKs, ok, refused, unanswered.
            let mut by: BTreeMap<([u8; 16], u64), (String, [u64; 7])> = BTreeMap::new();
            for r in read("server_health")? {
                let a = by
                    .entry((r.address("server"), r.u64("server_port")))
                    .or_default();
                a.0 = a.0.clone().max(r.str("tenant"));
                let n = &mut a.1;
                n[0] += r.u64("segments");
                n[1] += r.u64("retransmits_to_server") + r.u64("retransmits_from_server");
                n[2] += r.u64("zero_windows");
                n[3] += r.u64("dup_acks");
                n[4] += r.u64("upgrades_ok");
                n[5] += r.u64("upgrades_refused");
                n[6] += r.u64("upgrades_unanswered");
            }
            let mut v: Vec<_> = by
                .into_iter()
                .filter(|(_, (_, n))| match q {
                    Question::Retransmits => n[0] > 0,
                    _ => n[4] + n[5] + n[6] > 0,
                })
                .collect();
            v.sort_by_key(|((a, p), (_, n))| {
                let rank = match q {
                    Question::Retransmits => n[1],
                    _ => n[5] + n[6],
                };
                (std::cmp::Reverse(rank), *a, *p)
            });
            v.into_iter()
                .map(|((a, p), (tenant, n))| {
                    let head = [json!(address_text(&a)), json!(p), json!(tenant)];
                    let rest = match q {
                        Question::Retransmits => vec![
                            json!(n[0]),
                            json!(n[1]),
                            json!(n[1] as f64 / n[0] as f64),
                            json!(n[2]),
                            json!(n[3]),
                        ],
                        _ => vec![
                            json!(n[4] + n[5] + n[6]),
                            json!(n[4]),
                            json!(n[5]),
                            json!(n[6]),
                        ],
                    };
                    obj(q, head.into_iter().chain(rest).collect())
                })
                .collect()
        }
        Question::Alerts => {
            let mut rows = read("alerts")?;
            rows.sort_by_key(|r| (r.u64("ts"), r.str("agent"), r.str("id"), r.str("state")));
            rows.iter().map(|r| project(q, r)).collect()
        }
        Question::HeartbeatGaps => {
            let mut rows: Vec<FileRow> = read("heartbeat_gaps")?
                .into_iter()
                .filter(|r| r.str("state") == "resolved")
                .collect();
            rows.sort_by_key(|r| (r.u64("ts"), r.str("agent"), r.str("flow")));
            rows.iter().map(|r| project(q, r)).collect()
        }
        Question::SetupGrowth => {
            struct Acc {
                points: u64,
                nmin: u64,
                nmax: u64,
                setups: u64,
                latest: Option<(u64, [f64; 4])>,
            }
            let mut by: BTreeMap<(String, String), Acc> = BTreeMap::new();
            for r in read("setup_growth")? {
                let a = by.entry((r.str("agent"), r.str("tenant"))).or_insert(Acc {
                    points: 0,
                    nmin: u64::MAX,
                    nmax: 0,
                    setups: 0,
                    latest: None,
                });
                a.points += 1;
                a.nmin = a.nmin.min(r.u64("nodes"));
                a.nmax = a.nmax.max(r.u64("nodes"));
                a.setups += r.u64("setups");
                let ts = r.u64("ts");
                if r.u64("fit_points") > 0 && a.latest.is_none_or(|(t, _)| ts > t) {
                    a.latest = Some((
                        ts,
                        [
                            r.f64("exponent"),
                            r.f64("exponent_low"),
                            r.f64("exponent_high"),
                            r.f64("r2"),
                        ],
                    ));
                }
            }
            by.into_iter()
                .map(|((agent, tenant), a)| {
                    let fit = a.latest.map_or([0.0; 4], |l| l.1);
                    obj(
                        q,
                        vec![
                            json!(agent),
                            json!(tenant),
                            json!(a.points),
                            json!(a.nmin),
                            json!(a.nmax),
                            json!(a.setups),
                            json!(fit[0]),
                            json!(fit[1]),
                            json!(fit[2]),
                            json!(fit[3]),
                        ],
                    )
                })
                .collect()
        }
        Question::Latency => {
            // (tenant, stage, 0) or (server, "", port) → samples, Σ p50·n, p99, max.
            #[derive(Default)]
            struct Acc {
                tenant: String,
                stage: String,
                measure: String,
                n: [u64; 4],
            }
            let mut by: BTreeMap<(String, String, u64), Acc> = BTreeMap::new();
            for r in read("latency")? {
                let (port, measure) = (r.u64("server_port"), r.str("measure"));
                let key = match &f.measure {
                    None if port == 0 && measure != "echo" => (r.str("tenant"), r.str("stage"), 0),
                    Some(m) if *m == measure && (port > 0 || measure == "echo") => {
                        (address_text(&r.address("server")), String::new(), port)
                    }
                    _ => continue,
                };
                let a = by.entry(key).or_default();
                a.tenant = a.tenant.clone().max(r.str("tenant"));
                a.stage = a.stage.clone().max(r.str("stage"));
                a.measure = a.measure.clone().max(measure);
                let n = r.u64("samples");
                a.n[0] += n;
                a.n[1] += r.u64("p50_us") * n;
                a.n[2] = a.n[2].max(r.u64("p99_us"));
                a.n[3] = a.n[3].max(r.u64("max_us"));
            }
            by.into_iter()
                .map(|((key, _, port), a)| {
                    let server = if f.measure.is_some() {
                        key
                    } else {
                        String::new()
                    };
                    obj(
                        q,
                        vec![
                            json!(a.tenant),
                            json!(server),
                            json!(port),
                            json!(a.measure),
                            json!(a.stage),
                            json!(a.n[0]),
                            json!(a.n[1].checked_div(a.n[0]).unwrap_or(0)),
                            json!(a.n[2]),
                            json!(a.n[3]),
                        ],
                    )
                })
                .collect()
        }
    };
    out.truncate(f.limit);
    Ok(out)
}

/// The `interfaces` answer of counter samples (the same from both backends).
fn interfaces(rows: Vec<crate::rows::InterfaceRow>, limit: usize) -> Vec<Map<String, Value>> {
    let mut out: Vec<Map<String, Value>> = crate::interfaces::summarise(rows)
        .into_iter()
        .map(|s| {
            let head = vec![
                json!(s.sflow_agent),
                json!(s.if_index),
                json!(s.samples),
                json!(s.seconds),
                json!(s.speed_bits),
                json!(s.status),
                json!(s.in_bps),
                json!(s.out_bps),
            ];
            let counts = s.counts.iter().map(|c| json!(c));
            obj(
                Question::Interfaces,
                head.into_iter().chain(counts).collect(),
            )
        })
        .collect();
    out.truncate(limit);
    out
}

/// Renders answers as an aligned table.
pub fn table(q: Question, rows: &[Map<String, Value>]) -> String {
    let cols = q.columns();
    let cell = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if !n.is_u64() && !n.is_i64() => format!("{x:.3}"),
            _ => n.to_string(),
        },
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(r.get(*c))).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let mut s = String::new();
    let line = |vals: Vec<&str>, s: &mut String| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        s.push_str(parts.join("  ").trim_end());
        s.push('\n');
    };
    line(cols.to_vec(), &mut s);
    for r in &cells {
        line(r.iter().map(String::as_str).collect(), &mut s);
    }
    if rows.is_empty() {
        s.push_str("(no rows)\n");
    }
    s
}

/// Renders answers as CSV (RFC 4180 quoting).
pub fn csv(q: Question, rows: &[Map<String, Value>]) -> String {
    let quote = |s: String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut s = q.columns().join(",");
    s.push('\n');
    for r in rows {
        let vals: Vec<String> = q
            .columns()
            .iter()
            .map(|c| match r.get(*c) {
                Some(Value::String(v)) => quote(v.clone()),
                Some(v) => quote(v.to_string()),
                None => String::new(),
            })
            .collect();
        s.push_str(&vals.join(","));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_print_like_clickhouse() {
        assert_eq!(datetime_text(1_795_392_000 + 3723), "2026-11-23 01:02:03");
    }

    #[test]
    fn every_question_has_sql_over_the_distributed_table_in_a_cluster() {
        let l = Layout {
            database: "tw".into(),
            cluster: Some("c".into()),
        };
        let f = Filter {
            since: 0,
            until: 10,
            tenant: Some("a'b".into()),
            agent: None,
            limit: 5,
            measure: None,
        };
        for (q, _) in Question::ALL {
            let s = sql(q, &l, &f);
            assert!(s.contains("FROM tw.") && !s.contains("_local"), "{s}");
            // Interface counters belong to no tenant.
            assert_eq!(
                s.contains("tenant = 'a\\'b'"),
                q != Question::Interfaces,
                "{s}"
            );
        }
        let per_server = Filter {
            measure: Some("echo".into()),
            ..f
        };
        let s = sql(Question::Latency, &l, &per_server);
        assert!(
            s.contains("measure = 'echo'") && s.contains("GROUP BY server, server_port"),
            "{s}"
        );
    }
}
