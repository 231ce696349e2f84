//! Hours of a benign relay's day through the whole binary: a dominant relay service whose
//! rate swells and ebbs, DNS clients at Poisson times, BFD with RFC 5880 jitter, jittered
//! keepalives, and tenants whose nodes grow linearly for hours (TCP and WireGuard setups in
//! proportion to their nodes). Every seed is another deployment; nothing may fire, and the
//! growth detector must have judged every growing tenant (silence is not blindness).
use tapwatch_synth::{Rng, Soak, SoakParams};

use crate::common::*;

/// Event time of each soak.
const HOURS: u64 = 3;

fn silent_for_hours(seed: u64) {
    let tmp = TempDir::new(&format!("soak-{seed}"));
    let params = SoakParams::hours(&mut Rng::new(seed), HOURS);
    let (pcap, tenants, alerts) = (
        tmp.path("soak.pcap"),
        tmp.path("soak.tenants.toml"),
        tmp.path("alerts.jsonl"),
    );
    std::fs::write(&tenants, params.tenants_toml()).unwrap();
    let file = std::io::BufWriter::new(std::fs::File::create(&pcap).unwrap());
    let frames = Soak::new(params.clone(), seed).write_pcap(file).unwrap();
    let (pcap, tenants, alerts_arg) = (
        pcap.display().to_string(),
        tenants.display().to_string(),
        alerts.display().to_string(),
    );
    let summary = replay_json(&[&pcap, "--tenants", &tenants, "--alerts-out", &alerts_arg]);
    assert_eq!(summary["packets"], frames, "soak/{seed}");
    let raised = std::fs::read_to_string(&alerts).unwrap();
    assert!(raised.is_empty(), "soak/{seed} raised:\n{raised}");
    let span_s = summary["duration_s"].as_f64().unwrap();
    assert!(
        span_s > (HOURS * 3600 - 60) as f64,
        "soak/{seed}: {span_s} s"
    );
    for g in &params.growing {
        let fit = &summary["detectors"]["tenants"][&g.name]["setup_growth"];
        let (exponent, range) = (fit["exponent"].as_f64(), fit["node_range"].as_f64());
        assert!(
            range.is_some_and(|r| r >= 2.0) && exponent.is_some_and(|e| (0.5..1.4).contains(&e)),
            "soak/{seed}: {} grew {} -> {} nodes: {fit}",
            g.name,
            g.nodes_start,
            g.nodes_end
        );
    }
}

#[test]
fn hours_of_a_benign_relay_day_raise_nothing_through_the_binary() {
    silent_for_hours(23);
}
