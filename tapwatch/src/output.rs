//! Summary output: aligned text for people, one JSON object for scripts.
use std::io::Write;
use std::time::Duration;

use tapwatch_analyzer::Totals;
use tapwatch_capture::SourceStats;
use tapwatch_classifier::Classifier;

use crate::{CommonArgs, Format};

/// Where the packets came from, for the headline.
pub enum Origin {
    /// This many files.
    Files(usize),
    /// An interface with this many workers.
    Interface(String, usize),
}

pub fn print_summary(
    classifier: &Classifier,
    totals: &Totals,
    stats: &SourceStats,
    warnings: &[String],
    elapsed: Duration,
    common: &CommonArgs,
    origin: &Origin,
) -> anyhow::Result<()> {
    let report = totals.report(classifier, common.top);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        totals.packets as f64 / secs
    } else {
        0.0
    };
    let mut out = std::io::stdout().lock();
    match common.format {
        Format::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["capture"] = crate::replay::capture_totals(stats);
            v["capture"]["warnings"] = serde_json::json!(warnings);
            v["processing"] = serde_json::json!({ "elapsed_s": secs, "packets_per_s": rate });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        }
        Format::Text => {
            let source = match origin {
                Origin::Files(1) => "1 file".to_string(),
                Origin::Files(n) => format!("{n} files"),
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
            if stats.kernel_packets > 0 || matches!(origin, Origin::Interface(..)) {
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
            for s in tapwatch_classifier::SizeClass::ALL {
                let c = report.by_size_class.get(s.name()).copied().unwrap_or(0);
                writeln!(
                    out,
                    "  {:<24} {:>12} {:>6.1}%",
                    s.name(),
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
            for s in &report.top_sources {
                writeln!(
                    out,
                    "  {:<40} {:>12} {:>12}  {}",
                    s.address.to_string(),
                    group(s.packets),
                    bytes(s.bytes),
                    s.tenant
                )?;
            }
        }
    }
    Ok(())
}

/// One packet's labels on one line, for `--print-packets`.
pub fn packet_line(classifier: &Classifier, m: &tapwatch_classifier::PacketMeta) -> String {
    let ts = m.ts_ns as f64 / 1e9;
    let addr = |a: Option<std::net::IpAddr>, port: u16| match a {
        Some(a) if port != 0 => format!("{a}.{port}"),
        Some(a) => a.to_string(),
        None => "-".into(),
    };
    let mut line = format!(
        "{ts:.6} {} > {} {} len {} ({}) {}",
        addr(m.src, m.src_port),
        addr(m.dst, m.dst_port),
        classifier.type_name(m.kind),
        m.wire_len,
        m.size_class.name(),
        classifier.tenants().name(m.tenant),
    );
    if let Some(v) = m.outer_vlan {
        line.push_str(&format!(" vlan {v}"));
    }
    if let Some(v) = m.inner_vlan {
        line.push_str(&format!(".{v}"));
    }
    if m.fragment != tapwatch_classifier::Fragment::No {
        line.push_str(&format!(" frag {:?}", m.fragment));
    }
    if let Some(bad) = m.malformed {
        line.push_str(&format!(" [malformed {bad}]"));
    }
    line
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
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
