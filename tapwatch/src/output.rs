//! Summary output: aligned text for people, one JSON object for scripts.
use std::io::Write;

use anyhow::Context;
use std::time::Duration;

use tapwatch_analyzer::{Shard, Totals};
use tapwatch_capture::SourceStats;
use tapwatch_classifier::{Classifier, TenantId};

use crate::alerts::human_line;
use crate::cpu::ThreadCpu;
use crate::engine::{Coordinator, RunReport};
use crate::{CommonArgs, Format};

/// Where the packets came from, for the headline.
pub enum Origin {
    /// This many files, dealt to this many workers.
    Files(usize, usize),
    /// An interface with this many workers.
    Interface(String, usize),
}

/// Everything a summary shows.
pub struct Summary<'a> {
    pub classifier: &'a Classifier,
    pub totals: &'a Totals,
    pub stats: &'a SourceStats,
    pub warnings: &'a [String],
    pub elapsed: Duration,
    pub common: &'a CommonArgs,
    pub origin: Origin,
    /// Every worker's shard, for its counters.
    pub shards: &'a [Shard],
    /// The merger stage: windows, fits, latency, alerts.
    pub coordinator: &'a Coordinator,
    /// What the sinks reported at the end (webhook deliveries, storage).
    pub report: &'a RunReport,
    /// Write to standard error (standard output carries the alerts).
    pub to_stderr: bool,
    /// The sFlow sources' counters (`run --sflow`).
    pub sflow: &'a [crate::sources::SflowView],
    /// CPU time of the engine's threads, the caller's own last.
    pub threads: &'a [ThreadCpu],
}

type Hist = Option<hdrhistogram::Histogram<u64>>;

fn quantiles(h: &Hist) -> serde_json::Value {
    match h {
        Some(h) => {
            serde_json::json!({"p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "max_us": h.max(), "samples": h.len()})
        }
        None => serde_json::Value::Null,
    }
}

/// Counters of the shards, summed over workers.
#[derive(Debug, Default)]
struct ShardTotals {
    late: u64,
    time_jumps: u64,
    heartbeat_flows: usize,
    periodic_flows: usize,
    pending_handshakes: usize,
    lost: tapwatch_analyzer::LostWork,
}

fn shard_totals(shards: &[Shard]) -> ShardTotals {
    let mut t = ShardTotals::default();
    for s in shards {
        let (flows, periodic) = s.heartbeat_flows();
        t.late += s.counters.late;
        // Every worker sees the input's clock jump: count each jump once.
        t.time_jumps = t.time_jumps.max(s.counters.time_jumps);
        t.heartbeat_flows += flows;
        t.periodic_flows += periodic;
        t.pending_handshakes += s.pending_handshakes();
        t.lost = t.lost + s.lost_work();
    }
    t
}

/// One sFlow socket's counters in the summary.
fn sflow_json(v: &crate::sources::SflowView) -> serde_json::Value {
    let st = &v.stats;
    let malformed: serde_json::Map<String, serde_json::Value> =
        tapwatch_capture::sflow::SflowFault::ALL
            .iter()
            .zip(st.malformed)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| (f.name().to_string(), n.into()))
            .collect();
    serde_json::json!({
        "listen": v.listen,
        "datagrams": st.datagrams,
        "samples": st.frames,
        "estimated_packets": st.estimated_packets,
        "lost_datagrams": st.lost_datagrams,
        "lost_samples": st.lost_samples,
        "agent_drops": st.agent_drops,
        "unsupported_headers": st.unsupported_headers,
        "malformed": malformed,
        "interfaces": v.interfaces.len(),
    })
}

/// Detector state worth showing: windows, trackers, per-tenant latency and growth.
fn detector_report(s: &Summary<'_>) -> serde_json::Value {
    let merger = s.coordinator.merger();
    let tenants = s.classifier.tenants();
    let mut per_tenant = serde_json::Map::new();
    for (i, l) in merger.latency.iter().enumerate() {
        let fit = merger.growth_fits().get(i).copied().flatten();
        if l.setups == 0 && l.syn_to_syn_ack.is_none() && fit.is_none() {
            continue;
        }
        let growth = fit.map(|(f, range, rate)| {
            serde_json::json!({"exponent": f.slope, "exponent_ci95": [f.slope_low, f.slope_high], "r2": f.r2, "points": f.n, "node_range": range, "setup_rate_per_s": rate})
        });
        per_tenant.insert(
            tenants.name(TenantId(i as u16)).to_string(),
            serde_json::json!({
                "setups": l.setups,
                "syn_to_syn_ack": quantiles(&l.syn_to_syn_ack),
                "syn_ack_to_ack": quantiles(&l.syn_ack_to_ack),
                "setup_growth": growth,
            }),
        );
    }
    let t = shard_totals(s.shards);
    serde_json::json!({
        "windows": {"1s": merger.windows[0], "10s": merger.windows[1], "60s": merger.windows[2]},
        "tenants": per_tenant,
        "workers": s.shards.len(),
        "late_packets": t.late,
        "time_jumps": t.time_jumps,
        "heartbeat_flows": t.heartbeat_flows,
        "periodic_flows": t.periodic_flows,
        "pending_handshakes": t.pending_handshakes,
        // flow health (issue 14): whole-run TCP data and HTTP upgrade counts.
        "flow_health": {
            "data_segments": merger.flow_health.segments,
            "retransmitted_segments": merger.flow_health.retransmits(),
            "retransmits_from_servers": merger.flow_health.retransmits_from_server,
            "retransmits_to_servers": merger.flow_health.retransmits_to_server,
            "zero_window_segments": merger.flow_health.zero_windows,
            "dup_acks": merger.flow_health.dup_acks,
            "upgrades_ok": merger.flow_health.upgrades_ok,
            "upgrades_refused": merger.flow_health.upgrades_refused,
            "upgrades_unanswered": merger.flow_health.upgrades_unanswered,
        },
        // What bounded tables turned away and what the rules held back: work lost, counted.
        "lost_work": {
            "heartbeat_untracked_packets": t.lost.heartbeat_untracked,
            "handshake_untracked_syns": t.lost.handshake_untracked,
            "latency_untracked_flows": t.lost.latency_flows_untracked,
            "latency_untracked_echo_requests": t.lost.latency_echo_untracked,
            "latency_untracked_samples": t.lost.latency_samples_untracked,
            "latency_unjudged_samples": merger.latency_untracked(),
            "servers_untracked_events": merger.servers_untracked(),
            "traffic_drop_keys_evicted": merger.drop_keys_evicted(),
            "retransmit_flows_evicted": t.lost.retransmit_flows_evicted,
            "upgrades_untracked": t.lost.upgrades_untracked,
            "alerts_suppressed": s.coordinator.rules().suppressed,
        },
    })
}

/// The run's CPU time: in all, per million packets, and by thread.
struct Cpu {
    total_s: f64,
    per_million: Option<f64>,
    peak_rss_bytes: u64,
    /// The engine's threads, then the rest of the process as `other`.
    threads: Vec<ThreadCpu>,
}

impl Cpu {
    fn of(s: &Summary<'_>) -> Cpu {
        let process = crate::cpu::process();
        let counted: std::time::Duration = s.threads.iter().map(|t| t.cpu).sum();
        let mut threads = s.threads.to_vec();
        threads.push(ThreadCpu {
            name: "other".to_string(),
            work: "sinks, storage, HTTP",
            cpu: process.saturating_sub(counted),
        });
        let total_s = process.as_secs_f64();
        Cpu {
            total_s,
            // Per record worked: a sampled source's records, not the packets they stand for.
            per_million: (s.totals.samples > 0).then(|| total_s * 1e6 / s.totals.samples as f64),
            peak_rss_bytes: crate::cpu::memory().peak_bytes,
            threads,
        }
    }
}

/// The summary's `processing` object.
fn processing_json(s: &Summary<'_>, secs: f64, rate: f64) -> serde_json::Value {
    let cpu = Cpu::of(s);
    let threads: Vec<serde_json::Value> = cpu
        .threads
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "work": t.work, "cpu_s": t.cpu.as_secs_f64()}))
        .collect();
    serde_json::json!({
        "elapsed_s": secs,
        "packets_per_s": rate,
        "cpu_s": cpu.total_s,
        "cpu_s_per_million_packets": cpu.per_million,
        "peak_rss_bytes": cpu.peak_rss_bytes,
        "threads": threads,
    })
}

/// Whether alerts or window summaries go to standard output (`-`): the summary then goes
/// to standard error.
pub fn stdout_taken(alerts_out: Option<&std::path::Path>, common: &CommonArgs) -> bool {
    let dash = |p: &std::path::Path| p.as_os_str() == "-";
    alerts_out.is_some_and(dash) || common.windows_out.as_deref().is_some_and(dash)
}

pub fn print_summary(s: &Summary<'_>) -> anyhow::Result<()> {
    let to = if s.to_stderr {
        "standard error"
    } else {
        "standard output"
    };
    write_summary(s).with_context(|| format!("writing the summary to {to}"))
}

fn write_summary(s: &Summary<'_>) -> anyhow::Result<()> {
    let (classifier, totals, stats, common) = (s.classifier, s.totals, s.stats, s.common);
    let report = totals.report(classifier, common.top);
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        totals.packets as f64 / secs
    } else {
        0.0
    };
    let mut out: Box<dyn Write> = if s.to_stderr {
        Box::new(std::io::stderr().lock())
    } else {
        Box::new(std::io::stdout().lock())
    };
    let detectors = detector_report(s);
    if common.format == Format::Json {
        let mut v = serde_json::to_value(&report)?;
        v["capture"] = capture_totals(stats);
        v["capture"]["warnings"] = serde_json::json!(s.warnings);
        if !s.sflow.is_empty() {
            v["capture"]["sflow"] = s.sflow.iter().map(sflow_json).collect();
        }
        v["processing"] = processing_json(s, secs, rate);
        v["detectors"] = detectors;
        let (tally, rules) = (&s.coordinator.tally, s.coordinator.rules());
        v["alerts"] = serde_json::json!({"events": tally.total, "open": rules.open_alerts(), "by_kind_state": crate::views::alert_counts(rules), "list": tally.kept, "webhooks": s.report.webhooks});
        if let Some(ev) = &s.report.evidence {
            v["evidence"] = ev.clone();
        }
        if let Some(st) = &s.report.storage {
            v["storage"] = st.clone();
        }
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let source = match &s.origin {
        Origin::Files(n, w) => format!(
            "{n} file{} ({w} worker{})",
            if *n == 1 { "" } else { "s" },
            if *w == 1 { "" } else { "s" }
        ),
        Origin::Interface(i, w) => format!(
            "interface {i} ({w} worker{})",
            if *w == 1 { "" } else { "s" }
        ),
    };
    writeln!(
        out,
        "{source}: {} packets, {} over {:.3} s of capture ({:.0} pps)",
        group(report.packets),
        bytes(report.bytes),
        report.duration_s,
        report.pps
    )?;
    writeln!(
        out,
        "processed in {secs:.3} s ({} packets/s)",
        group(rate as u64)
    )?;
    let cpu = Cpu::of(s);
    let per_million = cpu
        .per_million
        .map_or(String::new(), |c| format!(", {c:.2} s per million packets"));
    writeln!(
        out,
        "CPU {:.2} s{per_million}; peak memory {}",
        cpu.total_s,
        bytes(cpu.peak_rss_bytes)
    )?;
    let threads: Vec<String> = cpu
        .threads
        .iter()
        .map(|t| format!("{} {:.2} s ({})", t.name, t.cpu.as_secs_f64(), t.work))
        .collect();
    writeln!(out, "  by thread: {}", threads.join(", "))?;
    if stats.kernel_packets > 0 || matches!(s.origin, Origin::Interface(..)) {
        writeln!(
            out,
            "kernel: {} packets seen by the socket, {} dropped",
            group(stats.kernel_packets),
            group(stats.kernel_drops)
        )?;
    }
    if stats.truncated_records + stats.corrupt_records > 0 {
        writeln!(
            out,
            "capture problems: {} truncated, {} corrupt records (see warnings)",
            stats.truncated_records, stats.corrupt_records
        )?;
    }
    let n = report.packets.max(1) as f64;
    writeln!(
        out,
        "\nmalformed: {}  (headers cut by snaplen, labelled anyway: {})",
        group(report.malformed),
        group(report.snapped_headers)
    )?;
    for (reason, c) in &report.malformed_by_reason {
        writeln!(out, "  {reason:<32} {:>12}", group(*c))?;
    }
    writeln!(out, "\nby protocol type:")?;
    let mut types: Vec<_> = report.by_protocol_type.iter().collect();
    types.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (name, c) in types {
        writeln!(
            out,
            "  {name:<24} {:>12} {:>6.1}%",
            group(*c),
            *c as f64 * 100.0 / n
        )?;
    }
    writeln!(out, "\nby size class (wire bytes):")?;
    for class in tapwatch_classifier::SizeClass::ALL {
        let c = report.by_size_class.get(class.name()).copied().unwrap_or(0);
        writeln!(
            out,
            "  {:<24} {:>12} {:>6.1}%",
            class.name(),
            group(c),
            c as f64 * 100.0 / n
        )?;
    }
    writeln!(out, "\nby tenant (source address):")?;
    for (name, t) in &report.by_tenant {
        writeln!(
            out,
            "  {name:<24} {:>12} {:>12}",
            group(t.packets),
            bytes(t.bytes)
        )?;
    }
    writeln!(out, "\nby IP protocol:")?;
    for (name, c) in &report.by_ip_protocol {
        writeln!(out, "  {name:<24} {:>12}", group(*c))?;
    }
    writeln!(out, "\ntop sources by packets:")?;
    for src in &report.top_sources {
        writeln!(
            out,
            "  {:<40} {:>12} {:>12}  {}",
            src.address.to_string(),
            group(src.packets),
            bytes(src.bytes),
            src.tenant
        )?;
    }
    if let Some(t) = detectors["tenants"].as_object() {
        writeln!(out, "\nhandshakes and setup growth by tenant:")?;
        for (name, v) in t {
            let lat = &v["syn_to_syn_ack"];
            let lat = if lat.is_null() {
                "no handshakes timed".to_string()
            } else {
                format!(
                    "SYN->SYN-ACK p50 {} us, p99 {} us",
                    lat["p50_us"], lat["p99_us"]
                )
            };
            let g = &v["setup_growth"];
            let growth = if g.is_null() {
                String::new()
            } else {
                format!(
                    "; setups ~ nodes^{:.2} (r2 {:.2})",
                    g["exponent"].as_f64().unwrap_or(0.0),
                    g["r2"].as_f64().unwrap_or(0.0)
                )
            };
            writeln!(out, "  {name:<24} {:>8} setups; {lat}{growth}", v["setups"])?;
        }
    }
    {
        let (a, open) = (&s.coordinator.tally, s.coordinator.rules().open_alerts());
        let advice: Vec<_> = a
            .kept
            .iter()
            .filter(|e| {
                e.kind == tapwatch_rules::ISOLATION_ADVICE
                    && e.state == tapwatch_rules::AlertState::Firing
            })
            .collect();
        if !advice.is_empty() {
            writeln!(out, "\ntenant isolation advice:")?;
            for e in advice {
                writeln!(out, "  {}: {}", e.subject, e.advice().unwrap_or(""))?;
            }
        }
        writeln!(out, "\nalerts: {} events, {open} still open", a.total)?;
        for e in &a.kept {
            writeln!(out, "  {}", human_line(e))?;
        }
        if a.total > a.kept.len() as u64 {
            writeln!(
                out,
                "  ... {} more (see --alerts-out)",
                a.total - a.kept.len() as u64
            )?;
        }
    }
    if let Some(ev) = &s.report.evidence {
        writeln!(
            out,
            "evidence: {} captures ({} packets) in {}; {} truncated, {} short of history, {} removed for disk, {} failed",
            ev["captures_written"],
            ev["packets_written"],
            ev["dir"].as_str().unwrap_or_default(),
            ev["captures_truncated"],
            ev["captures_short_history"],
            ev["files_removed_for_disk"],
            ev["captures_failed"]
        )?;
    }
    if let Some(st) = &s.report.storage {
        let left = st["batches_left_spooled"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "
history: {} rows to {} as agent {}{}",
            st["rows_written"],
            st["backend"].as_str().unwrap_or(""),
            st["agent"],
            if left > 0 {
                format!("; {left} batches still spooled")
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Counters of the capture layer as shown in summaries.
pub fn capture_totals(stats: &SourceStats) -> serde_json::Value {
    serde_json::json!({
        "frames": stats.frames,
        "truncated_records": stats.truncated_records,
        "corrupt_records": stats.corrupt_records,
        "skipped_blocks": stats.skipped_blocks,
        "kernel_packets": stats.kernel_packets,
        "kernel_drops": stats.kernel_drops,
        "kernel_freezes": stats.kernel_freezes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_digits() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1000), "1,000");
        assert_eq!(super::group(1234567), "1,234,567");
        assert_eq!(super::bytes(999), "999 B");
        assert_eq!(super::bytes(1_500_000), "1.5 MB");
    }
}
