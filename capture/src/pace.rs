//! Replay pacing: as fast as possible, or at (a multiple of) capture pace.
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How fast a replay runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// No waiting: as fast as the pipeline goes.
    Fast,
    /// Capture pace multiplied by this factor (1.0 is real time).
    Speed(f64),
}

impl FromStr for Pace {
    type Err = String;

    fn from_str(s: &str) -> Result<Pace, String> {
        match s {
            "fast" | "max" => Ok(Pace::Fast),
            "realtime" | "real-time" | "1x" => Ok(Pace::Speed(1.0)),
            _ => {
                let factor = s.strip_suffix('x').unwrap_or(s);
                match factor.parse::<f64>() {
                    Ok(f) if f > 0.0 && f.is_finite() => Ok(Pace::Speed(f)),
                    _ => Err(format!(
                        "pace {s:?}: expected \"fast\", \"realtime\" or a speed-up such as \"10x\" or \"0.5x\""
                    )),
                }
            }
        }
    }
}

/// Sleeps so that frames are handed on at their capture spacing (scaled by the pace).
///
/// A gap longer than `max_gap` in the capture is shortened to `max_gap`, so a trace whose
/// clock jumps by years still replays; timestamps that go backwards do not wait.
pub struct Pacer {
    pace: Pace,
    max_gap_ns: u64,
    /// Capture time and wall time of the reference point.
    anchor: Option<(u64, Instant)>,
    last_ts: u64,
}

impl Pacer {
    /// A pacer for `pace`, shortening capture gaps longer than `max_gap`.
    pub fn new(pace: Pace, max_gap: Duration) -> Pacer {
        Pacer {
            pace,
            max_gap_ns: max_gap.as_nanos().min(u128::from(u64::MAX)) as u64,
            anchor: None,
            last_ts: 0,
        }
    }

    /// Waits until the frame stamped `ts_ns` is due. Called with every frame: the check
    /// that pacing is on is inlined, the pacing is not.
    #[inline]
    pub fn wait(&mut self, ts_ns: u64) {
        if let Pace::Speed(factor) = self.pace {
            self.wait_paced(ts_ns, factor);
        }
    }

    /// [`Pacer::wait`] at `factor` times the capture's speed.
    fn wait_paced(&mut self, ts_ns: u64, factor: f64) {
        let Some((anchor_ts, anchor_wall)) = self.anchor else {
            self.anchor = Some((ts_ns, Instant::now()));
            self.last_ts = ts_ns;
            return;
        };
        if ts_ns <= self.last_ts {
            return;
        }
        if ts_ns - self.last_ts > self.max_gap_ns {
            // Re-anchor so that the long gap counts as max_gap.
            let shift = ts_ns - self.last_ts - self.max_gap_ns;
            self.anchor = Some((anchor_ts + shift, anchor_wall));
        }
        self.last_ts = ts_ns;
        let (anchor_ts, anchor_wall) = self.anchor.unwrap_or((ts_ns, anchor_wall));
        let due = Duration::from_nanos(((ts_ns - anchor_ts) as f64 / factor) as u64);
        let elapsed = anchor_wall.elapsed();
        if due > elapsed + Duration::from_micros(200) {
            std::thread::sleep(due - elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paces() {
        assert_eq!("fast".parse::<Pace>(), Ok(Pace::Fast));
        assert_eq!("realtime".parse::<Pace>(), Ok(Pace::Speed(1.0)));
        assert_eq!("10x".parse::<Pace>(), Ok(Pace::Speed(10.0)));
        assert_eq!("0.5x".parse::<Pace>(), Ok(Pace::Speed(0.5)));
        assert!("-2x".parse::<Pace>().is_err());
        assert!("soon".parse::<Pace>().unwrap_err().contains("10x"));
    }

    #[test]
    fn spaces_frames_at_capture_pace() {
        let mut p = Pacer::new(Pace::Speed(10.0), Duration::from_secs(60));
        let start = Instant::now();
        // 500 ms of capture at 10x: at least 50 ms of wall time.
        for i in 0..=5u64 {
            p.wait(1_000_000_000 + i * 100_000_000);
        }
        assert!(start.elapsed() >= Duration::from_millis(49));
    }

    #[test]
    fn long_gaps_are_shortened() {
        let mut p = Pacer::new(Pace::Speed(1.0), Duration::from_millis(20));
        let start = Instant::now();
        p.wait(0);
        p.wait(10 * 365 * 86_400 * 1_000_000_000); // ten years later
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(19), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
