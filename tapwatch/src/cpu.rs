//! CPU time the process and its threads used, from the kernel's own accounting: read when
//! a thread ends, when `/metrics` is scraped and for the summary, never per packet.
//!
//! It answers the question of whether tapwatch keeps up on the cores it is given: the CPU
//! seconds per million packets, and which thread is the busy one (the reader, which
//! classifies every packet, or the workers).
use std::time::Duration;

/// CPU time one engine thread used, taken as it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadCpu {
    /// The thread's name (`tw-reader`, `tw-worker-1`, `tw-capture-0`, `main`).
    pub name: String,
    /// What the thread did.
    pub work: &'static str,
    /// User and system time.
    pub cpu: Duration,
}

impl ThreadCpu {
    /// The calling thread's CPU time so far, under its own name (`main` when it has none).
    pub fn of_this_thread(work: &'static str) -> ThreadCpu {
        ThreadCpu {
            name: std::thread::current().name().unwrap_or("main").to_string(),
            work,
            cpu: this_thread(),
        }
    }
}

/// The calling thread's CPU time so far (user and system).
pub fn this_thread() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel
    // knows. On failure (it does not fail for the calling thread) `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The CPU time of the whole process so far (user and system, every thread, ended ones
/// included).
pub fn process() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage; RUSAGE_SELF never fails for a live process.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| {
        Duration::new(
            t.tv_sec.max(0) as u64,
            (t.tv_usec.clamp(0, 999_999) * 1000) as u32,
        )
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The process's resident memory, now and at its largest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident now, bytes.
    pub resident_bytes: u64,
    /// Largest resident so far, bytes (never below `resident_bytes`).
    pub peak_bytes: u64,
}

/// The process's resident memory from `/proc/self/status` (`VmRSS`, `VmHWM`; zero where it
/// cannot tell). Not `getrusage`'s `ru_maxrss`: that keeps the high-water mark of the
/// process that started this one, as it was when it started it.
pub fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Memory {
        resident_bytes: kib("VmRSS:"),
        peak_bytes: kib("VmHWM:"),
    }
}

/// The process's threads running now and the CPU time each used (from `/proc/self/task`;
/// threads of one name are added up, so a pool shows as one line).
pub fn running_threads() -> Vec<(String, Duration)> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut by_name: Vec<(String, Duration)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, cpu)) = parse_task_stat(&stat, ticks) else {
            continue;
        };
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += cpu,
            None => by_name.push((name, cpu)),
        }
    }
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    by_name
}

/// A task's name and user + system time from its `stat` line: `pid (comm) state ...`, the
/// name in parentheses (it may hold spaces and parentheses itself, so the last `)` ends
/// it), then utime and stime as the 12th and 13th fields after it, in clock ticks.
fn parse_task_stat(stat: &str, ticks_per_s: f64) -> Option<(String, Duration)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((
        name,
        Duration::from_secs_f64((utime + stime) as f64 / ticks_per_s),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < d {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    #[test]
    fn a_busy_thread_counts_its_own_time_and_the_process_counts_it_too() {
        let before = process();
        let (own, named) = std::thread::Builder::new()
            .name("tw-test-spin".into())
            .spawn(|| {
                spin(Duration::from_millis(60));
                let own = ThreadCpu::of_this_thread("spinning");
                (own, running_threads())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(own.name, "tw-test-spin");
        assert!(own.cpu >= Duration::from_millis(20), "{own:?}");
        assert!(own.cpu <= Duration::from_secs(5), "{own:?}");
        // The kernel counts in clock ticks (10 ms): the running thread shows, named.
        let listed = named.iter().find(|(n, _)| n == "tw-test-spin");
        assert!(listed.is_some(), "{named:?}");
        let after = process();
        assert!(
            after >= before + own.cpu / 2,
            "{before:?} {after:?} {own:?}"
        );
        let m = memory();
        assert!(m.resident_bytes > 1 << 20, "{m:?}");
        assert!(m.peak_bytes >= m.resident_bytes, "{m:?}");
    }

    #[test]
    fn a_task_stat_line_gives_its_name_and_time() {
        let line = "4242 (tw worker (1)) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(
            parse_task_stat(line, 100.0),
            Some(("tw worker (1)".to_string(), Duration::from_secs(3)))
        );
        assert_eq!(parse_task_stat("4242 (x) R 1 2", 100.0), None);
        assert_eq!(parse_task_stat("garbage", 100.0), None);
    }
}
