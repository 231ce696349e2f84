//! `tapwatch run` puts the setup-growth points its agent stored back into the tenants'
//! histories at start: a week of slow growth is not forgotten by a restart.
use tapwatch_storage::rows::GrowthRow;
use tapwatch_storage::FileStore;

use crate::common::*;
use crate::live_capture::{wait_capturing, Netns};

#[test]
fn run_restores_the_coarse_growth_points_its_agent_stored() {
    let Some(ns) = Netns::create("g") else { return };
    let tmp = TempDir::new("restore");
    let data = tmp.path("data");
    let tenants = tmp.path("tenants.toml");
    std::fs::write(
        &tenants,
        "[[tenant]]\nname = \"rollout\"\nprefixes = [\"10.9.0.0/16\"]\n",
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let row = |agent: &str, point_s: u32, ts: u32, nodes: u64| GrowthRow {
        ts,
        agent: agent.into(),
        batch: 7,
        tenant: "rollout".into(),
        point_s,
        nodes,
        setups: nodes * nodes,
        exponent: 0.0,
        exponent_low: 0.0,
        exponent_high: 0.0,
        r2: 0.0,
        fit_points: 0,
    };
    // 48 hourly and 12 ten-minute points of this agent, 10 s points (too fine to keep) and
    // another agent's points (not ours).
    let mut rows: Vec<GrowthRow> = (1..=48)
        .map(|h| row("relay9", 3600, now - h * 3600, 40 + u64::from(h)))
        .collect();
    rows.extend((1..=12).map(|i| row("relay9", 600, now - i * 600, 90)));
    rows.extend((1..=5).map(|i| row("relay9", 10, now - i * 10, 90)));
    rows.extend((1..=5).map(|i| row("other", 3600, now - i * 3600, 90)));
    FileStore::new(&data).write("relay9", &rows).unwrap();

    let mut child = ns
        .tapwatch()
        .args([
            "run",
            "--interface",
            "twb",
            "--listen",
            "none",
            "--duration",
            "1",
        ])
        .args(["--agent-id", "relay9", "--tenants"])
        .arg(&tenants)
        .arg("--data-dir")
        .arg(&data)
        .spawn()
        .unwrap();
    let (_stderr, seen) = wait_capturing(&mut child);
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        seen.contains("restored 60 setup-growth points of agent relay9"),
        "{seen}"
    );
}
