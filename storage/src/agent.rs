//! The agent's record of itself: id, version, kernel, boot time, uptime, interfaces.
use crate::rows::AgentRow;

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The host name (the default agent id).
pub fn hostname() -> String {
    let h = read_trim("/proc/sys/kernel/hostname");
    if h.is_empty() {
        "tapwatch".to_string()
    } else {
        h
    }
}

/// Host boot time (Unix seconds) from `/proc/stat`'s `btime`.
fn boot_time() -> u32 {
    read_trim("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// An `agents` row describing this host and run now.
pub fn agent_row(agent: &str, mode: &str, started: u32, interfaces: &[String]) -> AgentRow {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0);
    let boot = boot_time();
    AgentRow {
        ts: now,
        agent: agent.to_string(),
        batch: 0,
        version: env!("CARGO_PKG_VERSION").to_string(),
        mode: mode.to_string(),
        hostname: hostname(),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        boot_time: boot,
        uptime_s: u64::from(now.saturating_sub(boot)),
        started,
        interfaces: interfaces.join(","),
    }
}
