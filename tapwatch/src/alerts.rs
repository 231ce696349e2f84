//! Alert events for people: one line each, as the text summary shows them.
use tapwatch_rules::{AlertEvent, AlertState};

/// One event on one line, for people.
pub fn human_line(e: &AlertEvent) -> String {
    let state = match e.state {
        AlertState::Firing => "FIRING  ",
        AlertState::Resolved => "resolved",
    };
    let severity = serde_json::to_value(e.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let tenant = e
        .tenant
        .as_deref()
        .map(|t| format!(" tenant={t}"))
        .unwrap_or_default();
    let detail = match (e.kind, e.state) {
        ("missed_heartbeat", AlertState::Firing) => {
            format!("silent for {:.3} s (deadline)", e.value)
        }
        ("missed_heartbeat", AlertState::Resolved) => format!("gap {:.3} s", e.value),
        ("heavy_hitter", _) => format!(
            "share {:.1}% (threshold {:.0}%)",
            e.value * 100.0,
            e.threshold * 100.0
        ),
        ("quadratic_setup_growth", _) => format!(
            "setups ~ nodes^{:.2} (threshold {:.1}), at 2x nodes {:.0} setups/s",
            e.value,
            e.threshold,
            e.evidence["projected_setup_rate_at_2x_nodes"]
                .as_f64()
                .unwrap_or(0.0)
        ),
        ("syn_retransmits", _) => {
            format!("{} retransmitted SYNs (threshold {})", e.value, e.threshold)
        }
        ("isolation_advice", AlertState::Firing) => {
            e.evidence["advice"].as_str().unwrap_or("").to_string()
        }
        ("isolation_advice", AlertState::Resolved) => {
            format!(
                "the {} alert behind it resolved",
                e.evidence["cause"].as_str().unwrap_or("")
            )
        }
        _ => format!("value {} threshold {}", e.value, e.threshold),
    };
    format!(
        "{} {state} {:<22} {:<8} {}{tenant}: {detail}",
        e.detected_at, e.kind, severity, e.subject
    )
}
