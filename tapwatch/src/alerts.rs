//! Alert events for people: one line each, as the text summary shows them.
use tapwatch_analyzer::Evidence;
use tapwatch_rules::{AlertEvent, AlertEvidence, AlertKind, AlertState};

/// One event on one line, for people.
pub fn human_line(e: &AlertEvent) -> String {
    let state = match e.state {
        AlertState::Firing => "FIRING  ",
        AlertState::Resolved => "resolved",
    };
    let severity = e.severity.as_str();
    let tenant = e
        .tenant
        .as_deref()
        .map(|t| format!(" tenant={t}"))
        .unwrap_or_default();
    let detail = match (e.kind, e.state) {
        (AlertKind::MissedHeartbeat, AlertState::Firing) => {
            format!("silent for {:.3} s (deadline)", e.value)
        }
        (AlertKind::MissedHeartbeat, AlertState::Resolved) => format!("gap {:.3} s", e.value),
        (AlertKind::HeavyHitter, _) => format!(
            "share {:.1}% (threshold {:.0}%)",
            e.value * 100.0,
            e.threshold * 100.0
        ),
        (AlertKind::QuadraticSetupGrowth, _) => format!(
            "setups ~ nodes^{:.2} (threshold {:.1}), at 2x nodes {:.0} setups/s",
            e.value,
            e.threshold,
            match &e.evidence {
                AlertEvidence::Finding(Evidence::Growth(g)) => g.projected_setup_rate_at_2x_nodes,
                _ => 0.0,
            }
        ),
        (AlertKind::SynRetransmits, _) => {
            format!("{} retransmitted SYNs (threshold {})", e.value, e.threshold)
        }
        (AlertKind::LatencyShift, AlertState::Firing) => match &e.evidence {
            AlertEvidence::Finding(Evidence::LatencyShift(l)) => format!(
                "{} {} {:.1} ms (threshold {:.1} ms; baseline p50 {:.1} ms, p99 {:.1} ms)",
                l.measure.name(),
                if l.trigger == "spike" { "max" } else { "p50" },
                e.value,
                e.threshold,
                l.baseline_p50_us as f64 / 1000.0,
                l.baseline_p99_us as f64 / 1000.0
            ),
            AlertEvidence::Finding(Evidence::LatencyTenant(t)) => format!(
                "{} of {} servers shifted together ({})",
                t.servers_shifted,
                t.servers_judged,
                t.shifted.join(", ")
            ),
            _ => format!("{:.1} ms (threshold {:.1} ms)", e.value, e.threshold),
        },
        (AlertKind::LatencyShift, AlertState::Resolved) => match &e.evidence {
            AlertEvidence::Finding(Evidence::LatencyTenant(t)) => format!(
                "{} of {} servers shifted now",
                t.servers_shifted, t.servers_judged
            ),
            _ => format!("p50 {:.1} ms, back near baseline", e.value),
        },
        (AlertKind::TrafficDrop, _) => {
            format!("{:.1} packets/s (threshold {:.1})", e.value, e.threshold)
        }
        (AlertKind::Retransmits, _) => format!(
            "{:.1}% of data segments retransmitted (threshold {:.1}%)",
            e.value * 100.0,
            e.threshold * 100.0
        ),
        (AlertKind::UpgradeFailure, _) => format!(
            "{:.0}% of HTTP upgrades failed (threshold {:.0}%)",
            e.value * 100.0,
            e.threshold * 100.0
        ),
        (AlertKind::IsolationAdvice, AlertState::Firing) => e.advice().unwrap_or("").to_string(),
        (AlertKind::IsolationAdvice, AlertState::Resolved) => {
            format!(
                "the {} alert behind it resolved",
                match &e.evidence {
                    AlertEvidence::AdviceResolved(a) => a.cause.name(),
                    _ => "",
                }
            )
        }
    };
    format!(
        "{} {state} {:<22} {:<8} {}{tenant}: {detail}",
        e.detected_at(),
        e.kind.as_str(),
        severity,
        e.subject
    )
}
