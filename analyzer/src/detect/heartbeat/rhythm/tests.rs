//! Random arrivals (Poisson, on/off, Pareto) at many rates are never learned as periodic;
//! heartbeats with 0–25 % jitter at periods from 50 ms to 60 s always are.
use tapwatch_synth::Rng;

use super::*;

const SEC: f64 = 1e9;

/// Log-uniform in `[lo, hi)`.
fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo * (hi / lo).powf(rng.unit())
}

/// Exponential with mean `mean`.
fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.unit()).ln()
}

/// Feeds `gaps` (ns) to a fresh rhythm; returns after how many intervals it first counted as
/// periodic, and how many of the intervals after that it did not.
fn learn(gaps: impl IntoIterator<Item = f64>) -> (Option<usize>, usize) {
    let cfg = HeartbeatConfig::default();
    let mut r = Rhythm::default();
    let (mut first, mut lapses) = (None, 0);
    for (i, g) in gaps.into_iter().enumerate() {
        r.push(g.max(1.0) as u64, &cfg);
        match (r.periodic(&cfg, first.is_some()), first) {
            (true, None) => first = Some(i + 1),
            (false, Some(_)) => lapses += 1,
            _ => {}
        }
    }
    (first, lapses)
}

/// How many of `flows` random flows were ever learned as periodic.
fn learned(flows: usize, seed: u64, mut flow: impl FnMut(&mut Rng) -> Vec<f64>) -> usize {
    let mut rng = Rng::new(seed);
    (0..flows)
        .filter(|_| learn(flow(&mut rng)).0.is_some())
        .count()
}

#[test]
fn poisson_arrivals_are_never_periodic() {
    // Mean gaps from 50 ms to 60 s (inside the period range, so only regularity can fail
    // them), 400 intervals each: a DNS client's queries, a relay's answers to handshakes.
    let n = learned(3000, 1, |rng| {
        let mean = log_uniform(rng, 0.05, 60.0) * SEC;
        (0..400).map(|_| exponential(rng, mean)).collect()
    });
    assert_eq!(n, 0, "Poisson flows learned as periodic");
}

#[test]
fn on_off_arrivals_are_never_periodic() {
    // Poisson bursts (rate 1-50 /s, 1-30 s long) separated by silences of 2-300 s.
    let n = learned(2000, 2, |rng| {
        let rate = log_uniform(rng, 1.0, 50.0);
        let (on, off) = (log_uniform(rng, 1.0, 30.0), log_uniform(rng, 2.0, 300.0));
        let mut gaps = Vec::new();
        while gaps.len() < 400 {
            let mut t = 0.0;
            let burst = exponential(rng, on);
            let mut gap = exponential(rng, off) * SEC;
            loop {
                let g = exponential(rng, 1.0 / rate);
                t += g;
                if t > burst {
                    break;
                }
                gaps.push(gap + g * SEC);
                gap = 0.0;
            }
        }
        gaps
    });
    assert_eq!(n, 0, "on/off flows learned as periodic");
}

/// Flows of Pareto gaps with a shape in `shapes` (scale 10 ms-10 s), 400 intervals each.
fn pareto(rng: &mut Rng, shapes: std::ops::Range<f64>) -> Vec<f64> {
    let shape = shapes.start + (shapes.end - shapes.start) * rng.unit();
    let scale = log_uniform(rng, 0.01, 10.0) * SEC;
    (0..400)
        .map(|_| scale * (1.0 - rng.unit()).powf(-1.0 / shape))
        .collect()
}

#[test]
fn heavy_tailed_arrivals_are_never_periodic() {
    // Pareto shape 1.1-2 (infinite variance): web think times, file sizes, human activity.
    let n = learned(3000, 3, |rng| pareto(rng, 1.1..2.0));
    assert_eq!(n, 0, "Pareto flows learned as periodic");
}

#[test]
fn lighter_pareto_tails_are_rarely_periodic() {
    // Shape 2-3: finite variance, most gaps within 2x the smallest; a few samples in a row
    // can look as tight as a jittered heartbeat, so the bound is a rate, not zero.
    let n = learned(5000, 7, |rng| pareto(rng, 2.0..3.0));
    assert!(
        n <= 50,
        "{n} of 5000 Pareto flows (shape 2-3) learned as periodic"
    );
}

#[test]
fn heartbeats_with_up_to_25_percent_jitter_are_learned_and_kept() {
    let cfg = HeartbeatConfig::default();
    let mut rng = Rng::new(4);
    let mut slowest = 0;
    for i in 0..3000 {
        let period = log_uniform(&mut rng, 0.05, 60.0) * SEC;
        let jitter = 0.25 * rng.unit();
        // Half like BFD (RFC 5880 §6.8.7: 75-100 % of the interval), half symmetric (±jitter).
        let bfd_like = i % 2 == 0;
        let gaps: Vec<f64> = (0..200)
            .map(|_| {
                let u = rng.unit();
                if bfd_like {
                    period * (1.0 - jitter * u)
                } else {
                    period * (1.0 + jitter * (2.0 * u - 1.0))
                }
            })
            .collect();
        let (first, lapses) = learn(gaps);
        let first = first.unwrap_or_else(|| panic!("period {period} jitter {jitter} not learned"));
        assert!(first >= cfg.min_samples as usize);
        assert_eq!(lapses, 0, "period {period} jitter {jitter} lapsed");
        slowest = slowest.max(first);
    }
    assert!(
        slowest <= cfg.full_samples as usize,
        "learned within {} intervals, the slowest after {slowest}",
        cfg.full_samples
    );
}

#[test]
fn a_clean_keepalive_is_learned_after_min_samples_and_a_lost_beat_is_tolerated() {
    let cfg = HeartbeatConfig::default();
    let mut rng = Rng::new(5);
    let beat = |rng: &mut Rng| 5.0 * SEC * (0.99 + 0.02 * rng.unit());
    let mut gaps: Vec<f64> = (0..40).map(|_| beat(&mut rng)).collect();
    gaps[30] *= 2.0;
    let (first, lapses) = learn(gaps);
    assert_eq!(first, Some(cfg.min_samples as usize));
    assert_eq!(
        lapses, 0,
        "one lost beat (a 2-period gap) unlearned the flow"
    );
}

#[test]
fn a_flow_that_changes_rhythm_is_learned_again() {
    let cfg = HeartbeatConfig::default();
    let mut rng = Rng::new(6);
    let mut r = Rhythm::default();
    for _ in 0..100 {
        r.push(exponential(&mut rng, SEC) as u64 + 1, &cfg);
    }
    assert!(!r.periodic(&cfg, false));
    let mut learned_after = None;
    for i in 0..200 {
        r.push(2_000_000_000, &cfg);
        if r.periodic(&cfg, learned_after.is_some()) && learned_after.is_none() {
            learned_after = Some(i + 1);
        }
    }
    let after = learned_after.expect("the new rhythm is learned");
    assert!(after <= 4 * cfg.full_samples as usize, "after {after}");
    assert!(
        r.period_ns().abs_diff(2_000_000_000) < 20_000_000,
        "{}",
        r.period_ns()
    );
}

/// The running statistics as first written, dividing for both weights at every interval.
fn push_dividing(r: &mut Rhythm, gap_ns: u64, cfg: &HeartbeatConfig) {
    let x = gap_ns as f64;
    let full = f64::from(cfg.full_samples.max(1));
    r.n = r.n.saturating_add(1);
    if r.n > UNJUDGED {
        let near = (x - r.mean).abs() <= cfg.tolerance * r.mean;
        let alpha = (1.0 / f64::from(r.n - UNJUDGED)).max(1.0 / full);
        r.near += alpha * (f64::from(u8::from(near)) - r.near);
    }
    let alpha = (1.0 / f64::from(r.n)).max(1.0 / full);
    let d = x - r.mean;
    r.mean += alpha * d;
    r.var = (1.0 - alpha) * (r.var + alpha * d * d);
}

#[test]
fn the_weights_past_full_samples_need_no_division_and_change_no_bit() {
    let mut rng = Rng::new(11);
    for full_samples in [0, 1, 2, 3, 7, 32, 100, 1000] {
        let cfg = HeartbeatConfig {
            full_samples,
            ..HeartbeatConfig::default()
        };
        let (mut ours, mut first) = (Rhythm::default(), Rhythm::default());
        for _ in 0..3000 {
            let gap = log_uniform(&mut rng, 1e3, 1e11) as u64;
            ours.push(gap, &cfg);
            push_dividing(&mut first, gap, &cfg);
            assert_eq!(
                (
                    ours.n,
                    ours.mean.to_bits(),
                    ours.var.to_bits(),
                    ours.near.to_bits()
                ),
                (
                    first.n,
                    first.mean.to_bits(),
                    first.var.to_bits(),
                    first.near.to_bits()
                ),
                "full_samples {full_samples}"
            );
        }
    }
}
