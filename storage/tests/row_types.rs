//! Every row type inserted into a real ClickHouse (Debian's 18.16, started privately by
//! `scripts/clickhouse.sh`) with schema validation off, then read back: equal field by field,
//! which holds only if every Rust field's width equals its column's type.
use std::path::PathBuf;
use std::process::Command;

use tapwatch_storage::rows::*;
use tapwatch_storage::spool::BatchMeta;
use tapwatch_storage::{ClickHouse, ClickHouseConfig};

struct Server(PathBuf);

impl Server {
    fn start() -> (Server, String) {
        let dir = std::env::temp_dir().join(format!("tapwatch-ch-rows-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(&dir)
            .output()
            .expect("running scripts/clickhouse.sh");
        assert!(
            out.status.success(),
            "clickhouse.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (Server(dir), url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A batch of one row at `ts`.
fn meta(table: &str, agent: &str, batch: u64, ts: u32) -> BatchMeta {
    BatchMeta {
        table: table.into(),
        agent: agent.into(),
        batch,
        rows: 1,
        ts_min: ts,
        ts_max: ts,
    }
}

fn addr(last: u8) -> Address {
    // Bytes across the whole range, so a width or escaping mistake shows.
    let mut a = [0u8; 16];
    for (i, b) in a.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(last);
    }
    a
}

fn round_trip<T>(ch: &ClickHouse, rows: Vec<T>)
where
    T: StoredRow + clickhouse::RowRead + PartialEq + std::fmt::Debug,
{
    ch.insert(&rows).unwrap();
    let cols = <T as clickhouse::Row>::COLUMN_NAMES.join(", ");
    let back: Vec<T> = ch
        .select(&format!(
            "SELECT {cols} FROM tapwatch.{} ORDER BY batch",
            T::TABLE
        ))
        .unwrap();
    assert_eq!(back, rows, "{}", T::TABLE);
}

#[test]
fn every_row_type_round_trips_with_validation_off() {
    let (_server, url) = Server::start();
    let cfg = ClickHouseConfig {
        validation: false,
        ..ClickHouseConfig::default()
    };
    let ch = ClickHouse::new(&url, &cfg).unwrap();
    ch.apply_schema().unwrap();
    assert!(
        ch.apply_schema().unwrap().is_empty(),
        "migrations apply once"
    );
    let ts = 1_795_392_000;
    let s = |x: &str| x.to_string();
    round_trip(
        &ch,
        vec![TrafficRow {
            ts,
            agent: s("a\tgent'1"),
            batch: u64::MAX - 1,
            window_ms: 1000,
            tenant: s("acme"),
            source_class: s("ipv6"),
            protocol_type: s("tcp_syn"),
            size_class: s("0-64"),
            packets: 1 << 40,
            samples: 1 << 37,
            bytes: 3,
            setups: 4,
        }],
    );
    round_trip(
        &ch,
        vec![TenantRow {
            ts,
            agent: s("a"),
            batch: 7,
            window_ms: 500,
            tenant: s("é tenant"),
            packets: 1,
            samples: 1,
            bytes: 2,
            setups: 3,
            sources: 4,
        }],
    );
    round_trip(
        &ch,
        vec![HeavyHitterRow {
            ts,
            agent: s("a"),
            batch: 8,
            window_ms: 1000,
            dimension: s("service"),
            rank: 65535,
            address: addr(250),
            port: 443,
            proto: 17,
            tenant: s("t"),
            packets: 10,
            bytes: 20,
            error_bound: 3,
            window_packets: 40,
            window_samples: 40,
        }],
    );
    round_trip(
        &ch,
        vec![LatencyRow {
            ts,
            agent: s("a"),
            batch: 9,
            window_ms: 1000,
            tenant: s("t"),
            server: addr(9),
            server_port: 8443,
            stage: s("syn_to_syn_ack"),
            measure: s("handshake_server"),
            samples: 5,
            p50_us: 6,
            p90_us: 7,
            p99_us: 8,
            max_us: 9,
        }],
    );
    round_trip(
        &ch,
        vec![GrowthRow {
            ts,
            agent: s("a"),
            batch: 10,
            tenant: s("t"),
            point_s: 10,
            nodes: 40,
            setups: 1600,
            exponent: 2.004_872_349_846_135,
            exponent_low: 1.5,
            exponent_high: -2.25,
            r2: 0.999_933_958_042_592_4,
            fit_points: 15,
        }],
    );
    round_trip(
        &ch,
        vec![PeriodicFlowRow {
            ts,
            agent: s("a"),
            batch: 11,
            tenant: s("t"),
            flow: s("10.0.0.1:49152->10.0.0.2:3784/udp"),
            bfd: 1,
            period_ms: 300.5,
            last_gap_ms: 1200.25,
            late: 0,
        }],
    );
    round_trip(
        &ch,
        vec![HeartbeatGapRow {
            ts,
            agent: s("a"),
            batch: 12,
            tenant: s("t"),
            flow: s("f"),
            state: s("resolved"),
            bfd: 0,
            period_ms: 1.0,
            gap_ms: 2.0,
            started_ms: 1_795_392_000_123,
            alert_id: s("abc"),
        }],
    );
    round_trip(
        &ch,
        vec![AlertRow {
            ts,
            agent: s("a"),
            batch: 13,
            id: s("0123456789abcdef"),
            kind: s("missed_heartbeat"),
            state: s("firing"),
            severity: s("critical"),
            tenant: s(""),
            subject: s("x\ny"),
            started_ms: 1,
            detected_ms: 2,
            value: 1.2,
            threshold: 0.9,
            evidence: s(r#"{"gap_s":1.3,"note":"tab\there"}"#),
            version: 1,
        }],
    );
    round_trip(
        &ch,
        vec![AgentRow {
            ts,
            agent: s("a"),
            batch: 14,
            version: s("0.1.0"),
            mode: s("run"),
            hostname: s("relay7"),
            kernel: s("6.1.0-13-amd64"),
            boot_time: ts - 100,
            uptime_s: 100,
            started: ts - 5,
            interfaces: s("eth1,eth2"),
        }],
    );
    round_trip(
        &ch,
        vec![InterfaceRow {
            ts,
            agent: s("a"),
            batch: 15,
            sflow_agent: addr(77),
            if_index: 70_001,
            if_type: 6,
            speed_bits: 100_000_000_000,
            direction: 1,
            status: 3,
            in_octets: u64::MAX - 3,
            out_octets: 1 << 50,
            in_packets: 3 * u64::from(u32::MAX),
            out_packets: 2,
            in_errors: 3,
            out_errors: 4,
            in_discards: 5,
            out_discards: 6,
        }],
    );
    // `tapwatch query interfaces` reads them back typed.
    let ifs = tapwatch_storage::interfaces::read_clickhouse(&ch, ts, ts + 1, Some("a")).unwrap();
    let summary = tapwatch_storage::interfaces::summarise(ifs);
    assert_eq!(
        (summary.len(), summary[0].if_index, summary[0].status),
        (1, 70_001, "up")
    );
    assert!(
        tapwatch_storage::interfaces::read_clickhouse(&ch, ts, ts + 1, Some("b'"))
            .unwrap()
            .is_empty()
    );
    // The same rows through the TabSeparated path (spool replay, file-store load).
    let mut tsv = Vec::new();
    let row = TenantRow {
        ts,
        agent: s("tsv"),
        batch: 99,
        window_ms: 1000,
        tenant: s("a\\b\tc"),
        packets: 5,
        samples: 5,
        bytes: 6,
        setups: 7,
        sources: 8,
    };
    tapwatch_storage::tsv::write_row(&row, &mut tsv).unwrap();
    ch.insert_tsv(
        "tenants",
        <TenantRow as clickhouse::Row>::COLUMN_NAMES,
        &tsv,
        false,
    )
    .unwrap();
    let cols = <TenantRow as clickhouse::Row>::COLUMN_NAMES.join(", ");
    let back: Vec<TenantRow> = ch
        .select(&format!(
            "SELECT {cols} FROM tapwatch.tenants WHERE agent = 'tsv'"
        ))
        .unwrap();
    assert_eq!(back, vec![row]);
    assert!(ch.batch_exists(&meta("tenants", "tsv", 99, ts)).unwrap());
    assert!(!ch.batch_exists(&meta("tenants", "tsv", 98, ts)).unwrap());

    // A row written before migration 5 (no `samples`) reads its packets as its samples.
    ch.execute(&format!(
        "INSERT INTO tapwatch.tenants (ts, agent, batch, window_ms, tenant, packets, bytes, setups, sources) \
         VALUES ({ts}, 'pre5', 1, 1000, 't', 42, 1, 0, 1)"
    ))
    .unwrap();
    let pre5 = ch
        .query_json("SELECT samples FROM tapwatch.tenants WHERE agent = 'pre5'")
        .unwrap();
    assert_eq!(pre5[0]["samples"].as_u64(), Some(42));
    // So does a file-store file begun before it, loaded by `tapwatch load`.
    let old_file = format!(
        "ts\tagent\tbatch\twindow_ms\ttenant\tpackets\tbytes\tsetups\tsources\n{ts}\tpre5file\t3\t1000\tt\t17\t1\t0\t1\n"
    );
    let loaded = tapwatch_storage::files::load_into(
        &ch,
        "tenants",
        std::path::Path::new("old.tsv"),
        old_file.as_bytes(),
    )
    .unwrap();
    assert_eq!(loaded.rows, 1);
    let pre5 = ch
        .query_json("SELECT samples FROM tapwatch.tenants WHERE agent = 'pre5file'")
        .unwrap();
    assert_eq!(pre5[0]["samples"].as_u64(), Some(17));

    // A batch killed between the table and one of its views: in `traffic` and `traffic_1h`,
    // not in `traffic_1m`. Completing it fills the gap once, and only where it is.
    let half = TrafficRow {
        ts: ts + 61,
        agent: s("half'way"),
        batch: 500,
        window_ms: 1000,
        tenant: s("t"),
        source_class: s("ipv4"),
        protocol_type: s("udp"),
        size_class: s("0-64"),
        packets: 7,
        samples: 7,
        bytes: 420,
        setups: 0,
    };
    let full = TrafficRow {
        batch: 499,
        packets: 5,
        samples: 5,
        ..half.clone()
    };
    ch.insert(&[full]).unwrap();
    ch.execute("DETACH TABLE tapwatch.traffic_1m_mv").unwrap();
    ch.insert(&[half]).unwrap();
    ch.execute("ATTACH TABLE tapwatch.traffic_1m_mv").unwrap();
    let sum = |sql: &str| ch.query_json(sql).unwrap()[0]["n"].as_u64().unwrap();
    let rolled =
        || sum("SELECT sumMerge(packets) AS n FROM tapwatch.traffic_1m WHERE agent = 'half\\'way'");
    assert_eq!(rolled(), 5);
    for batch in [499, 500] {
        let done = ch
            .complete_rollups(&meta("traffic", "half'way", batch, ts + 61))
            .unwrap();
        let expected: Vec<String> = if batch == 500 {
            vec!["tapwatch.traffic_1m".into()]
        } else {
            vec![]
        };
        assert_eq!(done, expected, "batch {batch}");
    }
    assert_eq!(rolled(), 12);
    assert!(ch
        .complete_rollups(&meta("traffic", "half'way", 500, ts + 61))
        .unwrap()
        .is_empty());
    assert_eq!(rolled(), 12, "completed once");
    assert_eq!(
        sum("SELECT sumMerge(packets) AS n FROM tapwatch.traffic_1h WHERE agent = 'half\\'way'"),
        12
    );

    // The same for a rollup without a `packets` column: server health is checked by its
    // first summed column (segments). A drain stuck on such a batch (an error on every try)
    // would hold back every batch spooled after it.
    let health = ServerHealthRow {
        ts: ts + 61,
        agent: s("halfway-health"),
        batch: 600,
        window_ms: 1000,
        tenant: s("t"),
        server: address(Some("10.0.0.2".parse().unwrap())),
        server_port: 443,
        segments: 9,
        retransmits_to_server: 2,
        retransmits_from_server: 1,
        zero_windows: 0,
        dup_acks: 3,
        upgrades_ok: 0,
        upgrades_refused: 0,
        upgrades_unanswered: 0,
    };
    ch.execute("DETACH TABLE tapwatch.server_health_1m_mv")
        .unwrap();
    ch.insert(&[health]).unwrap();
    ch.execute("ATTACH TABLE tapwatch.server_health_1m_mv")
        .unwrap();
    let health_rolled = |t: &str, col: &str| {
        sum(&format!(
            "SELECT sumMerge({col}) AS n FROM tapwatch.{t} WHERE agent = 'halfway-health'"
        ))
    };
    assert_eq!(health_rolled("server_health_1m", "segments"), 0);
    let done = ch
        .complete_rollups(&meta("server_health", "halfway-health", 600, ts + 61))
        .unwrap();
    assert_eq!(done, vec!["tapwatch.server_health_1m".to_string()]);
    assert_eq!(health_rolled("server_health_1m", "segments"), 9);
    assert_eq!(health_rolled("server_health_1m", "retransmits"), 3);
    assert_eq!(
        health_rolled("server_health_1h", "segments"),
        9,
        "left alone"
    );
    assert!(ch
        .complete_rollups(&meta("server_health", "halfway-health", 600, ts + 61))
        .unwrap()
        .is_empty());
    assert_eq!(
        health_rolled("server_health_1m", "segments"),
        9,
        "completed once"
    );

    // Retention drops whole partitions past each table's limit and nothing newer.
    let old = TenantRow {
        ts: 1_700_000_000, // 2023-11-14
        agent: s("old"),
        batch: 100,
        ..back[0].clone()
    };
    ch.insert(&[old]).unwrap();
    let count = |agent: &str| {
        ch.query_json(&format!(
            "SELECT count() AS n FROM tapwatch.tenants WHERE agent = '{agent}'"
        ))
        .unwrap()[0]["n"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("old"), 1);
    let dropped = ch
        .drop_expired(
            &|t: &str| if t == "tenants" { 30 } else { 100_000 },
            20261123,
        )
        .unwrap();
    assert!(
        dropped.contains(&("tenants".to_string(), "20231114".to_string())),
        "{dropped:?}"
    );
    assert!(dropped.iter().all(|(t, _)| t == "tenants"), "{dropped:?}");
    assert_eq!(count("old"), 0);
    assert_eq!(count("tsv"), 1, "a partition inside the retention stays");
}
