//! Storage throughput: rows/s inserted into ClickHouse (a private Debian 18.16 server started
//! by `scripts/clickhouse.sh`) and appended to the file store, and replay throughput with
//! ClickHouse on against the file store and no storage, on the same capture, side by side.
//!
//! Run: `cargo bench -p tapwatch --bench storage` (env `TAPWATCH_BENCH_PACKETS`, default
//! 2 M packets over about 2000 s of capture, so about 2000 windows). Prints figures and ratios.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{best, tool, write_capture};
use tapwatch_storage::rows::TrafficRow;
use tapwatch_storage::{ClickHouse, ClickHouseConfig, FileStore};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh")
}

fn rows(n: usize, agent: &str) -> Vec<TrafficRow> {
    (0..n)
        .map(|i| TrafficRow {
            ts: 1_795_392_000 + (i / 500) as u32,
            agent: agent.to_string(),
            batch: (i / 100_000) as u64 + 1,
            window_ms: 1000,
            tenant: format!("tenant{}", i % 20),
            source_class: "ipv4".into(),
            protocol_type: ["tcp_syn", "tcp_ack", "udp", "tls_application_data"][i % 4].into(),
            size_class: ["0-64", "65-128", "1025-1518"][i % 3].into(),
            packets: (i % 1000) as u64 + 1,
            samples: (i % 1000) as u64 + 1,
            bytes: (i % 1000) as u64 * 100 + 60,
            setups: (i % 7) as u64,
        })
        .collect()
}

fn replay(bin: &str, file: &Path, data: &Path, url: Option<&str>, extra: &[&str]) {
    let mut cmd = Command::new(bin);
    cmd.arg("replay")
        .arg(file)
        .args(["--format", "json", "--progress", "never", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("TAPWATCH_CLICKHOUSE_URL");
    if let Some(u) = url {
        cmd.env("TAPWATCH_CLICKHOUSE_URL", u);
    }
    assert!(tool(&mut cmd), "replay failed");
}

/// One line of a table: name, seconds, and `count` per second.
fn row(name: &str, d: Duration, count: usize) {
    println!(
        "{name:<52} {:>10.3} {:>14.0}",
        d.as_secs_f64(),
        count as f64 / d.as_secs_f64()
    );
}

fn main() {
    let packets: usize = std::env::var("TAPWATCH_BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let dir = std::env::temp_dir().join(format!("tapwatch-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(dir.join("ch"))
        .output()
        .expect("scripts/clickhouse.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ch = ClickHouse::new(&url, &ClickHouseConfig::default()).unwrap();
    ch.apply_schema().unwrap();
    let version = ch.version().unwrap();

    // Rows/s: 1 M traffic rows in batches of 100 000.
    let n = 1_000_000;
    let batches: Vec<Vec<TrafficRow>> = rows(n, "bench")
        .chunks(100_000)
        .map(<[_]>::to_vec)
        .collect();
    let t = Instant::now();
    for b in &batches {
        ch.insert(b).unwrap();
    }
    let ch_rows = t.elapsed();
    let files = FileStore::new(&dir.join("files"));
    let t = Instant::now();
    for b in &batches {
        files.write("bench", b).unwrap();
    }
    let file_rows = t.elapsed();

    // Replay: the same capture with no storage, the file store and ClickHouse.
    let file = dir.join("bench.pcap");
    write_capture(&file, packets, 2_000_000).expect("write capture");
    let bin = env!("CARGO_BIN_EXE_tapwatch");
    let none = best(3, || {
        replay(bin, &file, &dir.join("d0"), None, &["--no-store"])
    });
    let mut k = 0;
    let to_files = best(3, || {
        k += 1;
        replay(bin, &file, &dir.join(format!("d{k}")), None, &[]);
    });
    let to_ch = best(3, || {
        k += 1;
        replay(bin, &file, &dir.join(format!("d{k}")), Some(&url), &[]);
    });
    let stored = ch
        .query_json("SELECT count() AS n FROM tapwatch.traffic WHERE agent != 'bench'")
        .unwrap();
    let per_run = stored[0]["n"].as_u64().unwrap_or(0) / 3;

    let _ = Command::new("bash")
        .arg(script())
        .arg("stop")
        .arg(dir.join("ch"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);

    println!("ClickHouse {version} (private, loopback), {n} traffic rows in batches of 100 000");
    println!("{:<52} {:>10} {:>14}", "", "seconds", "rows/s");
    let r = |name: &str, d: Duration| row(name, d, n);
    r("insert into ClickHouse (RowBinary, LZ4, + 2 MVs)", ch_rows);
    r("append to the file store (TabSeparated)", file_rows);
    println!(
        "ratio ClickHouse / file store rows/s: {:.2}x",
        file_rows.as_secs_f64() / ch_rows.as_secs_f64()
    );
    println!();
    println!("replay of {packets} packets (about {per_run} traffic rows per run), best of 3");
    println!("{:<52} {:>10} {:>14}", "", "seconds", "packets/s");
    let p = |name: &str, d: Duration| row(name, d, packets);
    p("tapwatch replay --no-store", none);
    p("tapwatch replay, file store", to_files);
    p("tapwatch replay, ClickHouse", to_ch);
    println!(
        "ratio ClickHouse / file store replay throughput: {:.2}x (file store / no storage: {:.2}x)",
        to_files.as_secs_f64() / to_ch.as_secs_f64(),
        none.as_secs_f64() / to_files.as_secs_f64()
    );
}
