//! Durability end to end: a real full disk (a small tmpfs the test mounts; root needed),
//! torn files left by it, and the runs after it.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::storage::ClickHouseServer;
use crate::webhooks::Receiver;

/// A tmpfs of a fixed size mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts `size_kib` KiB, or `None` (with a message) when this is not root; under CI
    /// that is a failure, not a skip.
    fn mount(tag: &str, size_kib: u64) -> Option<Tmpfs> {
        let dir = TempDir::new(tag);
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(&dir.0));
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(!in_ci(), "mounting a tmpfs (root needed under CI): {why}");
            eprintln!("skipping: cannot mount a tmpfs: {why}");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }

    fn resize(&self, size_kib: u64) {
        let out = run(Command::new("mount")
            .args(["-o", &format!("remount,size={size_kib}k")])
            .arg(&self.dir.0));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills the file system, then frees `free` bytes: the next writes run out mid-way.
    fn fill_leaving(&self, free: u64) -> PathBuf {
        let path = self.path("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len / 4096 * 4096 - free).unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir.0).output();
    }
}

/// Every `.tsv` file under `data` (the file store): rows (header excluded), asserting that
/// each ends with a newline and every row has the header's fields.
fn whole_file_rows(data: &Path) -> u64 {
    let mut rows = 0;
    for table in tapwatch_storage::rows::TABLES {
        let Ok(dir) = std::fs::read_dir(data.join(table)) else {
            continue;
        };
        for e in dir {
            let path = e.unwrap().path();
            let text = std::fs::read(&path).unwrap();
            assert!(
                text.ends_with(b"\n"),
                "{} ends in a torn row",
                path.display()
            );
            let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            let fields = |l: &[u8]| l.split(|b| *b == b'\t').count();
            let head = fields(lines.next().unwrap());
            for (i, l) in lines.enumerate() {
                assert_eq!(fields(l), head, "{} line {}", path.display(), i + 2);
                rows += 1;
            }
        }
    }
    rows
}

fn demo_replay(data: &Path, extra: &[&str]) -> std::process::Output {
    let r = root();
    run(tapwatch()
        .arg("replay")
        .arg(r.join("data/demo.pcap"))
        .arg("--tenants")
        .arg(r.join("data/demo.tenants.toml"))
        .args(["--format", "json", "--agent-id", "full", "--data-dir"])
        .arg(data)
        .args(extra))
}

#[test]
fn a_full_disk_leaves_whole_rows_fails_the_run_and_the_next_run_appends_cleanly() {
    // The demo writes about 1.5 MB of rows; 512 KiB runs out in the middle of a batch.
    let Some(fs) = Tmpfs::mount("full-files", 512) else {
        return;
    };
    let cfg = fs.path("tapwatch.toml");
    std::fs::write(&cfg, "[storage]\nbatch_rows = 300\ndrain_timeout_s = 0.5\n").unwrap();
    let cfg = cfg.display().to_string();
    let data = fs.path("data");
    let out = demo_replay(&data, &["--config", &cfg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a run that lost rows fails: {err}"
    );
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    let lost = first["storage"]["rows_lost_spool_full"].as_u64().unwrap();
    assert!(lost > 0, "{}", first["storage"]);
    assert!(
        err.contains(&format!("{lost} of ")) && err.contains("rows could not be written"),
        "{err}"
    );
    let written = first["storage"]["rows_written"].as_u64().unwrap();
    assert!(written > 0, "{}", first["storage"]);
    assert_eq!(
        whole_file_rows(&data),
        written,
        "the rows said written, whole"
    );
    // Room again: the next run appends whole rows after whole rows.
    fs.resize(16 << 10);
    let out = demo_replay(&data, &["--config", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        whole_file_rows(&data),
        written + second["storage"]["rows_written"].as_u64().unwrap()
    );
    let out = run(tapwatch()
        .args(["query", "top-talkers", "--format", "json", "--data-dir"])
        .arg(&data));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_torn_file_store_row_is_cut_off_before_the_next_append() {
    let tmp = TempDir::new("torn-files");
    let data = tmp.path("data");
    let out = demo_replay(&data, &[]);
    assert!(out.status.success());
    let before = whole_file_rows(&data);
    // A run killed mid-write (an earlier version on a full disk) left half a row.
    let torn_file = std::fs::read_dir(data.join("heavy_hitters"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&torn_file)
        .unwrap();
    let torn = b"1767225600\tfull\t12\tten";
    f.write_all(torn).unwrap();
    drop(f);
    // `query` reads around it; the next run cuts it off and says so.
    let out = run(tapwatch()
        .args([
            "query",
            "top-talkers",
            "--format",
            "json",
            "--since",
            "2025-01-01T00:00:00Z",
        ])
        .arg("--data-dir")
        .arg(&data));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("torn last row"));
    let out = demo_replay(&data, &[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&torn_file.display().to_string())
            && err.contains(&format!("removed a torn last row ({} bytes)", torn.len())),
        "{err}"
    );
    assert_eq!(whole_file_rows(&data), 2 * before);
}

/// Whole records in a webhook spool queue under `data`.
fn spooled_records(data: &Path) -> (PathBuf, u64) {
    let dir = std::fs::read_dir(data.join("spool"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let queue = dir.join("queue");
    let text = std::fs::read(&queue).unwrap();
    (queue, text.iter().filter(|b| **b == b'\n').count() as u64)
}

#[test]
fn a_full_disk_under_the_webhook_spool_loses_no_later_alert() {
    let Some(fs) = Tmpfs::mount("full-hook", 256) else {
        return;
    };
    let tmp = TempDir::new("full-hook-out");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let data = fs.path("data");
    let filler = fs.fill_leaving(4096);
    // Nobody listens and one page is free: the spool fills up in the middle of a record.
    let alerts = tmp.path("alerts.jsonl").display().to_string();
    let out = demo_replay(
        &data,
        &[
            "--no-store",
            "--webhook",
            &url,
            "--drain-timeout",
            "0.5",
            "--alerts-out",
            &alerts,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (queue, kept) = spooled_records(&data);
    assert!(kept > 0, "some alerts fit");
    let text = std::fs::read(&queue).unwrap();
    assert!(
        text.ends_with(b"\n"),
        "no torn record left behind by a full disk"
    );
    // A crash mid-write leaves half a record: the next run cuts it off and says so.
    std::fs::remove_file(filler).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&queue)
        .unwrap();
    let torn = b"0badc0de\t{\"half\": ";
    f.write_all(torn).unwrap();
    drop(f);
    let rx = Receiver::start(port, Duration::ZERO, |_| 200);
    let out = demo_replay(
        &data,
        &[
            "--no-store",
            "--webhook",
            &url,
            "--drain-timeout",
            "30",
            "--alerts-out",
            &alerts,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let said = format!("removed a torn last record ({} bytes)", torn.len());
    assert!(err.contains(&said), "{err}");
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = second["alerts"]["events"].as_u64().unwrap();
    let got = rx.received();
    assert!(
        got.iter().all(|g| g.body.is_object()),
        "every body whole JSON"
    );
    assert_eq!(
        got.len() as u64,
        kept + events,
        "earlier spooled + every new alert"
    );
}

/// Concurrent runs in the test below.
const RUNS: usize = 16;

#[test]
fn runs_spooling_at_once_all_reach_clickhouse() {
    let mut ch = ClickHouseServer::start("twins");
    ch.down(); // its URL refuses connections: every batch is spooled
    let tmp = TempDir::new("twins");
    let data = tmp.path("data");
    // The demo's first 300 kB (a truncated capture: a warning, not an error) keeps each
    // run short, so many start together.
    let pcap = tmp.path("head.pcap");
    let demo = std::fs::read(root().join("data/demo.pcap")).unwrap();
    std::fs::write(&pcap, &demo[..300_000]).unwrap();
    // Runs with the same agent id and data directory, started together: each reads its
    // config from a named pipe, and the pipes are written at once, so they leave the
    // starting line within the same millisecond or two.
    let fifos: Vec<PathBuf> = (0..RUNS)
        .map(|i| tmp.path(&format!("cfg{i}.toml")))
        .collect();
    for f in &fifos {
        assert!(run(Command::new("mkfifo").arg(f)).status.success());
    }
    let runs: Vec<_> = fifos
        .iter()
        .map(|cfg| {
            tapwatch()
                .arg("replay")
                .arg(&pcap)
                .arg("--tenants")
                .arg(root().join("data/demo.tenants.toml"))
                .args(["--format", "json", "--agent-id", "twins", "--config"])
                .arg(cfg)
                .arg("--data-dir")
                .arg(&data)
                .env("TAPWATCH_CLICKHOUSE_URL", &ch.url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let pipes: Vec<std::fs::File> = fifos
        .iter()
        .map(|f| std::fs::OpenOptions::new().write(true).open(f).unwrap())
        .collect();
    for mut p in pipes {
        p.write_all(b"[storage]\ndrain_timeout_s = 0.2\n").unwrap();
    }
    let (mut packets, mut events) = (0, 0);
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(s["storage"]["batches_left_spooled"].as_u64().unwrap() > 0);
        packets += s["packets"].as_u64().unwrap();
        events += s["alerts"]["events"].as_u64().unwrap();
    }
    ch.up();
    let out = run(tapwatch()
        .args(["deliver", "--drain-timeout", "60", "--data-dir"])
        .arg(&data)
        .env("TAPWATCH_CLICKHOUSE_URL", &ch.url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ch.number("SELECT sum(packets) FROM tapwatch.traffic WHERE agent = 'twins'"),
        packets,
        "every run's traffic rows"
    );
    assert_eq!(
        ch.number("SELECT count() FROM tapwatch.alerts WHERE agent = 'twins'"),
        events
    );
    assert_eq!(
        ch.number(
            "SELECT count() FROM (SELECT batch FROM tapwatch.traffic GROUP BY batch HAVING uniqExact(ts, tenant, source_class, protocol_type, size_class) < count())"
        ),
        0,
        "no batch id names two runs' rows"
    );
}

#[test]
fn a_damaged_gzip_keeps_its_frames_and_the_other_files() {
    let tmp = TempDir::new("bad-gzip");
    let demo = root().join("data/demo.pcap");
    let whole = run(Command::new("gzip").arg("-c").arg(&demo)).stdout;
    assert!(whole.len() > 1000);
    let (cut, trailerless) = (tmp.path("cut.pcap.gz"), tmp.path("trailerless.pcap.gz"));
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    std::fs::write(&trailerless, &whole[..whole.len() - 8]).unwrap();
    let alone = replay_json(&[demo.to_str().unwrap()])["packets"]
        .as_u64()
        .unwrap();
    let out = run(tapwatch()
        .arg("replay")
        .args([&cut, &trailerless, &demo])
        .args(["--format", "json", "--no-store"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let kept: Vec<u64> = err
        .lines()
        .filter(|l| l.contains("gzip stream damaged near compressed byte"))
        .map(|l| {
            let n = l.split("; the ").nth(1).unwrap().split(' ').next().unwrap();
            n.parse().unwrap()
        })
        .collect();
    assert_eq!(kept.len(), 2, "{err}");
    assert!(kept[0] > 0 && kept[0] < alone, "{kept:?}");
    assert_eq!(kept[1], alone, "a missing trailer loses nothing");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["packets"].as_u64().unwrap(), kept[0] + 2 * alone);
}

#[test]
fn a_slow_webhook_rate_ends_at_the_drain_timeout_and_says_the_real_wait() {
    let tmp = TempDir::new("slow-hook");
    let rx = Receiver::start(0, Duration::ZERO, |_| 200);
    let cfg = tmp.path("tapwatch.toml");
    // One request per 10 s: the demo's alerts take minutes to send.
    std::fs::write(
        &cfg,
        format!("[[webhook]]\nurl = \"{}\"\nrate_per_s = 0.1\n", rx.url()),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let out = demo_replay(
        &tmp.path("data"),
        &[
            "--no-store",
            "--drain-timeout",
            "1",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        took < Duration::from_secs(8),
        "the drain took {took:?}: {err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains("remain spooled after waiting"))
        .unwrap_or_else(|| panic!("{err}"));
    let waited: f64 = line
        .split("after waiting ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((1.0..3.0).contains(&waited), "{line}");
    assert_eq!(rx.received().len(), 1, "one request in the first 10 s");
}

#[test]
fn load_leaves_out_damaged_lines_and_loads_the_rest() {
    let tmp = TempDir::new("torn-load");
    let data = tmp.path("data");
    assert!(demo_replay(&data, &[]).status.success());
    let rows = whole_file_rows(&data);
    // An earlier version on a full disk: a torn row, the next run's row appended onto it,
    // and a torn last row.
    let file = std::fs::read_dir(data.join("heavy_hitters"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read(&file).unwrap();
    let row = text.split(|b| *b == b'\n').nth(1).unwrap().to_vec();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(&[&row[..20], &row, b"\n", &row[..20]].concat())
        .unwrap();
    drop(f);
    let ch = ClickHouseServer::start("torn-load");
    let out = run(tapwatch()
        .args(["load", "--data-dir"])
        .arg(&data)
        .env("TAPWATCH_CLICKHOUSE_URL", &ch.url));
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(
        stdout.contains(&format!("loaded {rows} rows"))
            && stdout.contains("2 damaged lines left out"),
        "{stdout}"
    );
    assert!(
        err.contains("fields where the header names") && err.contains("torn last row"),
        "{err}"
    );
    let in_ch: u64 = tapwatch_storage::rows::TABLES
        .iter()
        .map(|t| {
            ch.number(&format!(
                "SELECT count() FROM tapwatch.{t} WHERE agent = 'full'"
            ))
        })
        .sum();
    assert_eq!(in_ch, rows);
}

#[test]
fn runs_sharing_a_file_store_write_whole_rows_and_every_row() {
    let tmp = TempDir::new("shared-files");
    let data = tmp.path("data");
    let pcap = tmp.path("head.pcap");
    let demo = std::fs::read(root().join("data/demo.pcap")).unwrap();
    std::fs::write(&pcap, &demo[..300_000]).unwrap();
    let runs: Vec<_> = (0..6)
        .map(|_| {
            tapwatch()
                .arg("replay")
                .arg(&pcap)
                .args(["--format", "json", "--agent-id", "same", "--data-dir"])
                .arg(&data)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut written = 0;
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        written += s["storage"]["rows_written"].as_u64().unwrap();
    }
    assert_eq!(whole_file_rows(&data), written);
}

#[test]
fn deliver_leaves_a_spool_owned_by_a_running_tapwatch_alone() {
    let tmp = TempDir::new("owned-spool");
    let data = tmp.path("data");
    let url = "http://127.0.0.1:9"; // refuses: every batch is spooled
    let cfg = tmp.path("tapwatch.toml");
    std::fs::write(&cfg, "[storage]\ndrain_timeout_s = 0.2\n").unwrap();
    let cfg = cfg.display().to_string();
    let out = run(tapwatch()
        .arg("replay")
        .arg(root().join("data/demo.pcap"))
        .args(["--format", "json", "--config", &cfg, "--data-dir"])
        .arg(&data)
        .env("TAPWATCH_CLICKHOUSE_URL", url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spool = std::fs::read_dir(data.join("spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("clickhouse-"))
        .unwrap()
        .path();
    // Another process (a daemon) owns the spool: deliver says so and touches nothing.
    let lock = std::fs::File::open(spool.join("lock")).unwrap();
    lock.lock().unwrap();
    let deliver = || {
        run(tapwatch()
            .args([
                "deliver",
                "--drain-timeout",
                "0.2",
                "--config",
                &cfg,
                "--data-dir",
            ])
            .arg(&data)
            .env("TAPWATCH_CLICKHOUSE_URL", url))
    };
    let out = deliver();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("owned by another running tapwatch"),
        "{err}"
    );
    drop(lock);
    let out = deliver();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("batches remain spooled"),
        "{err}"
    );
}
