//! Storage end to end: the real binary against private ClickHouse servers (Debian's 18.16,
//! started by `scripts/clickhouse.sh` on loopback), a private ZooKeeper for the cluster, the
//! file store, and ClickHouse 26.x in-process (chdb-core) for SQL compatibility.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tapwatch_storage::rows::TABLES;

use crate::common::{root, run, tapwatch, TempDir};

/// A private ClickHouse server; stopped (and its files removed) on drop.
pub(crate) struct ClickHouseServer {
    dir: TempDir,
    /// Its HTTP URL.
    pub(crate) url: String,
    ports: (String, String),
    env: Vec<(String, String)>,
    netns: Option<String>,
}

fn script(name: &str) -> PathBuf {
    root().join("scripts").join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl ClickHouseServer {
    pub(crate) fn start(tag: &str) -> ClickHouseServer {
        Self::start_with(tag, free_port(), free_port(), Vec::new())
    }

    /// A server listening on the loopback of network namespace `netns`.
    pub(crate) fn start_in(netns: &str, tag: &str) -> ClickHouseServer {
        let mut s = ClickHouseServer {
            dir: TempDir::new(&format!("ch-{tag}")),
            url: String::new(),
            ports: ("8123".into(), "9000".into()),
            env: Vec::new(),
            netns: Some(netns.to_string()),
        };
        s.up();
        s
    }

    fn start_with(tag: &str, http: u16, tcp: u16, env: Vec<(String, String)>) -> ClickHouseServer {
        let dir = TempDir::new(&format!("ch-{tag}"));
        let mut s = ClickHouseServer {
            dir,
            url: String::new(),
            ports: (http.to_string(), tcp.to_string()),
            env,
            netns: None,
        };
        s.up();
        s
    }

    pub(crate) fn up(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "bash"]);
                c
            }
            None => Command::new("bash"),
        };
        let out = run(cmd
            .arg(script("clickhouse.sh"))
            .arg("start")
            .arg(self.dir.path("server"))
            .args([&self.ports.0, &self.ports.1])
            .envs(self.env.iter().map(|(k, v)| (k, v))));
        assert!(
            out.status.success(),
            "clickhouse.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }

    /// Stops the server: gracefully (`stop`) or as a crash (`kill`, SIGKILL).
    fn down_with(&self, how: &str) {
        let out = run(Command::new("bash")
            .arg(script("clickhouse.sh"))
            .arg(how)
            .arg(self.dir.path("server")));
        assert!(out.status.success());
    }

    pub(crate) fn down(&self) {
        self.down_with("stop");
    }

    /// One query over HTTP; the answer as text.
    pub(crate) fn query(&self, sql: &str) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&self.url)
            .send(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let body = resp.body_mut().read_to_string().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{sql}: {body}");
        body.trim().to_string()
    }

    pub(crate) fn number(&self, sql: &str) -> u64 {
        let a = self.query(sql);
        a.parse()
            .unwrap_or_else(|_| panic!("{sql}: not a number: {a:?}"))
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("clickhouse.sh"))
            .arg("stop")
            .arg(self.dir.path("server"))
            .output();
    }
}

fn demo() -> [String; 3] {
    let r = root();
    [
        r.join("data/demo.pcap").display().to_string(),
        "--tenants".into(),
        r.join("data/demo.tenants.toml").display().to_string(),
    ]
}

/// Runs `tapwatch ARGS… --data-dir DIR EXTRA…` against ClickHouse (`url`) or the file store;
/// its standard output parsed as JSON.
fn json_of<T: serde::de::DeserializeOwned>(
    url: Option<&str>,
    args: &[String],
    data_dir: &Path,
    extra: &[&str],
) -> T {
    let mut cmd = tapwatch();
    cmd.args(args).arg("--data-dir").arg(data_dir).args(extra);
    if let Some(u) = url {
        cmd.env("TAPWATCH_CLICKHOUSE_URL", u);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "tapwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on standard output")
}

/// `tapwatch replay … --format json` with the storage flags; the summary.
fn replay(url: Option<&str>, data_dir: &Path, agent: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["replay".to_string()];
    args.extend(demo());
    args.extend(["--format", "json", "--agent-id", agent].map(String::from));
    json_of(url, &args, data_dir, extra)
}

/// `tapwatch query Q --format json` against ClickHouse (url) or the file store.
fn ask(url: Option<&str>, data_dir: &Path, q: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let args = ["query", q, "--format", "json", "--limit", "1000"].map(String::from);
    json_of(url, &args, data_dir, extra)
}

/// Equal answers: same rows in the same order, numbers equal to 1e-9 relative.
fn same_answers(q: &str, a: &[serde_json::Value], b: &[serde_json::Value]) {
    assert_eq!(a.len(), b.len(), "{q}: {a:?}\nvs\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
        assert_eq!(x.len(), y.len(), "{q}: {x:?} vs {y:?}");
        for (k, v) in x {
            let w = &y[k];
            match (v.as_f64(), w.as_f64()) {
                (Some(p), Some(r)) => assert!(
                    (p - r).abs() <= 1e-9 * p.abs().max(r.abs()).max(1.0),
                    "{q}.{k}: {p} vs {r}"
                ),
                _ => assert_eq!(v, w, "{q}.{k}"),
            }
        }
    }
}

const QUESTIONS: [&str; 8] = [
    "top-talkers",
    "alerts",
    "heartbeat-gaps",
    "setup-growth",
    "latency",
    "retransmits",
    "upgrades",
    "drops",
];

/// Rows per table in a file store.
fn file_rows(data_dir: &Path, table: &str) -> u64 {
    std::fs::read_dir(data_dir.join(table))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count() as u64 - 1)
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn replay_rows_in_clickhouse_add_up_to_the_summary_and_match_the_file_store() {
    let ch = ClickHouseServer::start("sums");
    let tmp = TempDir::new("store-sums");
    let summary = replay(Some(&ch.url), &tmp.path("ch"), "relay1", &[]);
    let st = &summary["storage"];
    assert_eq!(st["batches_left_spooled"], 0, "{st}");
    assert_eq!(st["rows_accepted"], st["rows_written"], "{st}");
    let packets = summary["packets"].as_u64().unwrap();
    let bytes = summary["bytes"].as_u64().unwrap();
    assert!(packets > 10_000);
    // The base table, both rollups and the per-tenant table carry every packet and byte.
    for (table, p, b) in [
        ("traffic", "sum(packets)", "sum(bytes)"),
        ("traffic_1m", "sumMerge(packets)", "sumMerge(bytes)"),
        ("traffic_1h", "sumMerge(packets)", "sumMerge(bytes)"),
        ("tenants", "sum(packets)", "sum(bytes)"),
        ("tenants_1m", "sumMerge(packets)", "sumMerge(bytes)"),
    ] {
        assert_eq!(
            ch.number(&format!("SELECT {p} FROM tapwatch.{table}")),
            packets,
            "{table}"
        );
        assert_eq!(
            ch.number(&format!("SELECT {b} FROM tapwatch.{table}")),
            bytes,
            "{table}"
        );
    }
    // Per tenant and per protocol type, as the summary counts them.
    for (tenant, v) in summary["by_tenant"].as_object().unwrap() {
        let n = ch.number(&format!(
            "SELECT sum(packets) FROM tapwatch.traffic WHERE tenant = '{tenant}'"
        ));
        assert_eq!(n, v["packets"].as_u64().unwrap(), "tenant {tenant}");
    }
    let syn =
        ch.number("SELECT sum(packets) FROM tapwatch.traffic WHERE protocol_type = 'tcp_syn'");
    assert_eq!(
        syn,
        summary["by_protocol_type"]["tcp_syn"].as_u64().unwrap()
    );
    let setups = ch.number("SELECT sum(setups) FROM tapwatch.traffic");
    assert_eq!(
        setups,
        ch.number("SELECT sum(setups) FROM tapwatch.tenants")
    );
    // Every alert event, and the BFD gap with its length.
    let events = summary["alerts"]["events"].as_u64().unwrap();
    assert_eq!(ch.number("SELECT count() FROM tapwatch.alerts"), events);
    let gap =
        ch.query("SELECT gap_ms FROM tapwatch.heartbeat_gaps WHERE state = 'resolved' AND bfd = 1");
    let gap: f64 = gap.parse().unwrap();
    assert!((1000.0..2000.0).contains(&gap), "BFD gap {gap} ms");
    assert!(
        ch.number(
            "SELECT count() FROM tapwatch.setup_growth WHERE tenant = 'swarm' AND fit_points > 0"
        ) > 0
    );
    assert!(ch.number("SELECT count() FROM tapwatch.periodic_flows WHERE bfd = 1") >= 1);
    assert!(ch.number("SELECT count() FROM tapwatch.heavy_hitters WHERE rank = 1") > 100);
    // The agent recorded itself, with this host's kernel.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(
        ch.query("SELECT kernel FROM tapwatch.agents WHERE agent = 'relay1'"),
        kernel.trim()
    );
    assert_eq!(
        ch.number("SELECT uniqExact(agent) FROM tapwatch.traffic"),
        1
    );

    // The same replay into the file store: same rows, and `tapwatch query` answers the same.
    let files = tmp.path("files");
    let fsum = replay(None, &files, "relay1", &[]);
    assert_eq!(fsum["storage"]["rows_written"], st["rows_written"]);
    for t in TABLES {
        assert_eq!(
            file_rows(&files, t),
            ch.number(&format!("SELECT count() FROM tapwatch.{t}")),
            "rows of {t}"
        );
    }
    for q in QUESTIONS {
        let from_ch = ask(Some(&ch.url), &files, q, &[]);
        let from_files = ask(None, &files, q, &[]);
        // The demo has no HTTP upgrades and no traffic drops (tests/e2e/flow_health.rs asks
        // those of their own scenarios).
        if !["upgrades", "drops"].contains(&q) {
            assert!(!from_files.is_empty(), "{q}: no answer");
        }
        same_answers(q, &from_ch, &from_files);
        let tenant = ask(Some(&ch.url), &files, q, &["--tenant", "swarm"]);
        same_answers(q, &tenant, &ask(None, &files, q, &["--tenant", "swarm"]));
    }
    for m in ["handshake_server", "handshake_client", "response"] {
        let per_server = ["--measure", m];
        let from_files = ask(None, &files, "latency", &per_server);
        assert!(!from_files.is_empty(), "latency --measure {m}: no answer");
        assert!(from_files
            .iter()
            .all(|r| r["measure"] == m && r["port"] != 0));
        same_answers(
            m,
            &ask(Some(&ch.url), &files, "latency", &per_server),
            &from_files,
        );
    }
    // The file store loads into ClickHouse once: a second load skips every batch.
    let load = || {
        let out = run(tapwatch()
            .args(["load", "--data-dir"])
            .arg(&files)
            .env("TAPWATCH_CLICKHOUSE_URL", &ch.url));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = load();
    assert!(
        first.contains(&format!("loaded {} rows", st["rows_written"])),
        "{first}"
    );
    assert!(load().contains("loaded 0 rows"));
    assert_eq!(
        ch.number("SELECT sum(packets) FROM tapwatch.traffic"),
        2 * packets
    );
}

#[test]
fn clickhouse_down_mid_replay_loses_and_doubles_nothing() {
    let mut ch = ClickHouseServer::start("outage");
    let tmp = TempDir::new("store-outage");
    let cfg = tmp.path("tapwatch.toml");
    // Batches every 0.1 s pile up hundreds of small spooled batches during the outage, each
    // replayed by its own insert: on a loaded CI machine that can outlast the default 30 s
    // drain, and this test is about losing and doubling nothing, not about how fast.
    std::fs::write(
        &cfg,
        "[storage]\nbatch_age_s = 0.1\ndrain_timeout_s = 300\n",
    )
    .unwrap();
    let cfg_arg = cfg.display().to_string();
    // A paced replay lasting a few seconds; the server goes away in the middle of it.
    let url = ch.url.clone();
    let data = tmp.path("ch");
    let agent = std::thread::spawn(move || {
        // 150 s of capture at 20x: 7.5 s.
        replay(
            Some(&url),
            &data,
            "relay2",
            &["--config", &cfg_arg, "--pace", "20x"],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Killed, not stopped: a graceful stop keeps serving the open keep-alive connection.
    ch.down_with("kill");
    std::thread::sleep(Duration::from_millis(2000));
    ch.up();
    let summary = agent.join().unwrap();
    let st = &summary["storage"];
    assert!(
        st["insert_failures"].as_u64().unwrap() > 0,
        "the outage was not seen: {st}"
    );
    assert!(st["batches_spooled"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["batches_left_spooled"], 0, "{st}");
    assert_eq!(
        ch.number("SELECT sum(packets) FROM tapwatch.traffic"),
        summary["packets"].as_u64().unwrap()
    );
    // Rollups too: a batch the kill caught between the table and its views is completed
    // from the table's rows, never inserted twice.
    for (table, sum) in [
        ("traffic_1m", "sumMerge(packets)"),
        ("traffic_1h", "sumMerge(packets)"),
        ("tenants", "sum(packets)"),
        ("tenants_1m", "sumMerge(packets)"),
        ("tenants_1h", "sumMerge(packets)"),
    ] {
        assert_eq!(
            ch.number(&format!("SELECT {sum} FROM tapwatch.{table}")),
            summary["packets"].as_u64().unwrap(),
            "{table} doubled or lost a batch"
        );
    }
    // Row counts equal those of a run without an outage (the file store's).
    let files = tmp.path("files");
    replay(
        None,
        &files,
        "relay2",
        &["--config", &cfg.display().to_string()],
    );
    for t in TABLES {
        if t == "agents" || t == "periodic_flows" {
            continue; // wall-clock records, not derived from the capture
        }
        assert_eq!(
            ch.number(&format!("SELECT count() FROM tapwatch.{t}")),
            file_rows(&files, t),
            "rows of {t}"
        );
    }
    let dup = ch.number(
        "SELECT count() FROM (SELECT batch, ts, tenant, source_class, protocol_type, size_class, count() AS n FROM tapwatch.traffic GROUP BY batch, ts, tenant, source_class, protocol_type, size_class HAVING n > 1)",
    );
    assert_eq!(dup, 0, "a batch was inserted twice");
}

#[test]
fn the_spool_survives_a_restart_and_deliver_drains_it() {
    let ch = ClickHouseServer::start("spool");
    ch.down(); // its URL now refuses connections
    let tmp = TempDir::new("store-spool");
    let cfg = tmp.path("tapwatch.toml");
    std::fs::write(&cfg, "[storage]\ndrain_timeout_s = 0.5\n").unwrap();
    let data = tmp.path("data");
    let summary = replay(
        Some(&ch.url),
        &data,
        "relay3",
        &["--config", &cfg.display().to_string()],
    );
    let left = summary["storage"]["batches_left_spooled"].as_u64().unwrap();
    assert!(left > 0, "{}", summary["storage"]);
    assert!(data.join("spool").read_dir().unwrap().count() > 0);
    let mut ch = ch;
    ch.up();
    let out = run(tapwatch()
        .args(["deliver", "--drain-timeout", "30", "--data-dir"])
        .arg(&data)
        .env("TAPWATCH_CLICKHOUSE_URL", &ch.url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spool delivered"));
    assert_eq!(
        ch.number("SELECT sum(packets) FROM tapwatch.traffic WHERE agent = 'relay3'"),
        summary["packets"].as_u64().unwrap()
    );
    assert_eq!(
        ch.number("SELECT count() FROM tapwatch.alerts"),
        summary["alerts"]["events"].as_u64().unwrap()
    );
}

#[test]
fn two_shards_answer_as_one_cluster() {
    let tmp = TempDir::new("store-cluster");
    let zk = run(Command::new("bash")
        .arg(script("zookeeper.sh"))
        .arg("start")
        .arg(tmp.path("zk")));
    assert!(
        zk.status.success(),
        "zookeeper.sh: {}",
        String::from_utf8_lossy(&zk.stderr)
    );
    struct StopZk(PathBuf);
    impl Drop for StopZk {
        fn drop(&mut self) {
            let _ = Command::new("bash")
                .arg(script("zookeeper.sh"))
                .arg("stop")
                .arg(&self.0)
                .output();
        }
    }
    let _zk = StopZk(tmp.path("zk"));
    let zk = String::from_utf8_lossy(&zk.stdout).trim().to_string();
    let (t1, t2) = (free_port(), free_port());
    let env = vec![
        (
            "CLUSTER".to_string(),
            format!("relays=127.0.0.1:{t1},127.0.0.1:{t2}"),
        ),
        ("ZOOKEEPER".to_string(), zk),
    ];
    let a = ClickHouseServer::start_with("shard1", free_port(), t1, env.clone());
    let b = ClickHouseServer::start_with("shard2", free_port(), t2, env);
    let cfg = tmp.path("tapwatch.toml");
    std::fs::write(&cfg, "[clickhouse]\ncluster = \"relays\"\n").unwrap();
    let cfg_arg = cfg.display().to_string();
    let out = run(tapwatch()
        .args(["schema", "apply", "--config", &cfg_arg])
        .env("TAPWATCH_CLICKHOUSE_URL", &a.url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // DDL ran on both shards.
    assert_eq!(b.number("SELECT count() FROM system.tables WHERE database = 'tapwatch' AND name = 'traffic_local'"), 1);
    // Agent A replays the demo into shard 1; agent B a heavy-hitter scenario into shard 2.
    let sa = replay(
        Some(&a.url),
        &tmp.path("a"),
        "relay-a",
        &["--config", &cfg_arg],
    );
    let scen = tmp.path("hh.pcap");
    let out = run(tapwatch()
        .args(["scenario", "heavy_hitter", "--seed", "3", "--out"])
        .arg(&scen));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = tapwatch();
    cmd.arg("replay")
        .arg(&scen)
        .args([
            "--format",
            "json",
            "--agent-id",
            "relay-b",
            "--config",
            &cfg_arg,
            "--data-dir",
        ])
        .arg(tmp.path("b"))
        .env("TAPWATCH_CLICKHOUSE_URL", &b.url);
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (pa, pb) = (
        sa["packets"].as_u64().unwrap(),
        sb["packets"].as_u64().unwrap(),
    );
    // Each shard holds its agent's rows; the Distributed table, both.
    assert_eq!(
        a.number("SELECT sum(packets) FROM tapwatch.traffic_local"),
        pa
    );
    assert_eq!(
        b.number("SELECT sum(packets) FROM tapwatch.traffic_local"),
        pb
    );
    assert_eq!(
        a.number("SELECT sum(packets) FROM tapwatch.traffic"),
        pa + pb
    );
    assert_eq!(
        b.number("SELECT sumMerge(packets) FROM tapwatch.traffic_1m"),
        pa + pb
    );
    // `tapwatch query` through either shard merges both agents' top talkers.
    let top_b = sb["top_sources"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let top_a = sa["top_sources"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    for url in [&a.url, &b.url] {
        let rows = ask(
            Some(url),
            &tmp.path("a"),
            "top-talkers",
            &["--config", &cfg_arg],
        );
        let addrs: Vec<&str> = rows
            .iter()
            .map(|r| r["address"].as_str().unwrap())
            .collect();
        assert!(
            addrs.contains(&top_a.as_str()) && addrs.contains(&top_b.as_str()),
            "{addrs:?}"
        );
        let agents = ask(Some(url), &tmp.path("a"), "alerts", &["--config", &cfg_arg]);
        let names: std::collections::BTreeSet<&str> = agents
            .iter()
            .map(|r| r["agent"].as_str().unwrap())
            .collect();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["relay-a", "relay-b"]
        );
    }
}

#[test]
fn current_clickhouse_runs_the_schema_and_every_query() {
    let Some(python) = std::env::var_os("TAPWATCH_CHDB_PYTHON") else {
        assert!(
            !crate::common::in_ci(),
            "TAPWATCH_CHDB_PYTHON unset: scripts/test.sh installs chdb-core"
        );
        eprintln!("skipping: TAPWATCH_CHDB_PYTHON unset (scripts/test.sh sets it)");
        return;
    };
    let tmp = TempDir::new("store-chdb");
    let files = tmp.path("files");
    let summary = replay(None, &files, "relay4", &[]);
    let schema = run(tapwatch().args(["schema", "print"]));
    assert!(schema.status.success());
    std::fs::write(tmp.path("schema.sql"), &schema.stdout).unwrap();
    let mut queries = Vec::new();
    for q in QUESTIONS {
        let o = run(tapwatch().args(["query", q, "--print-sql", "--limit", "1000"]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        queries.extend_from_slice(&o.stdout);
    }
    std::fs::write(tmp.path("queries.sql"), &queries).unwrap();
    let out = run(Command::new(python)
        .arg(script("chdb_check.py"))
        .arg(tmp.path("schema.sql"))
        .arg(tmp.path("queries.sql"))
        .arg(&files));
    assert!(
        out.status.success(),
        "chdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["version"].as_str().unwrap().starts_with("26."),
        "{}",
        v["version"]
    );
    let packets = summary["packets"].as_u64().unwrap();
    for k in ["packets", "packets_1m", "packets_1h"] {
        assert_eq!(v[k].as_u64().unwrap(), packets, "{k}");
    }
    for (i, q) in QUESTIONS.iter().enumerate() {
        let answers = v["answers"][i].as_array().unwrap();
        same_answers(q, answers, &ask(None, &files, q, &[]));
    }
}

#[test]
fn bad_storage_settings_are_named() {
    let tmp = TempDir::new("store-bad");
    let cfg = tmp.path("bad.toml");
    std::fs::write(&cfg, "[clickhouse]\ndatabase = \"tap-watch\"\n").unwrap();
    let out = run(tapwatch().args(["schema", "print", "--config"]).arg(&cfg));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("database")
            && err.contains("letters, digits and underscores"),
        "{err}"
    );
    std::fs::write(&cfg, "[storage]\nbatch_rowz = 1\n").unwrap();
    let out = run(tapwatch().args(["query", "alerts", "--config"]).arg(&cfg));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:2:1") && err.contains("batch_rowz"),
        "{err}"
    );
    let out = run(tapwatch()
        .args(["query", "alerts", "--since", "yesterday", "--data-dir"])
        .arg(tmp.path("none")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since \"yesterday\"") && err.contains("RFC 3339"),
        "{err}"
    );
    let out = run(tapwatch()
        .args(["query", "alerts", "--data-dir"])
        .arg(tmp.path("none")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no file store at"), "{err}");
    let out = run(tapwatch().args(["query", "top-talker"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected one of top-talkers"), "{err}");
}

#[test]
fn an_https_url_speaks_tls_and_transport_errors_say_why() {
    let ch = ClickHouseServer::start("tls");
    let apply = |url: &str| {
        let out = run(tapwatch()
            .args(["schema", "apply"])
            .env("TAPWATCH_CLICKHOUSE_URL", url));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(apply(&ch.url).0);
    // A server that speaks plain HTTP: an https URL to it must fail in the TLS handshake
    // (rustls reads an HTTP answer where a TLS record belongs), not connect. The plain
    // server here answers the moment a connection opens, whatever it is sent, so the
    // failure never waits on how a busy server treats a TLS hello (ClickHouse once took
    // longer than the client's 10 s under load).
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let https = format!("https://{}", plain.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in plain.incoming().flatten() {
            use std::io::Write;
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let (ok, err) = apply(&https);
    assert!(!ok);
    assert!(
        err.contains(&https) && err.contains("corrupt message"),
        "{err}"
    );
    ch.down();
    let (ok, err) = apply(&ch.url);
    assert!(!ok);
    assert!(err.contains("Connection refused"), "{err}");
}
