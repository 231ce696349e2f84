//! `tapwatch schema`, `tapwatch query` and `tapwatch load`: the history side of the CLI.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tapwatch_analyzer::Measure;
use tapwatch_storage::query::{self, Filter, Question};
use tapwatch_storage::schema::Layout;
use tapwatch_storage::{ClickHouse, FileStore};

use crate::config::Config;

/// `tapwatch schema …`.
#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Print every statement of every migration for the configured layout (for DBAs).
    #[command(
        after_help = "Examples:\n  tapwatch schema print\n  tapwatch schema print --config tapwatch.toml   # with [clickhouse] cluster = \"relays\": ON CLUSTER, _local + Distributed"
    )]
    Print(SchemaArgs),
    /// Apply the migrations not applied yet to the configured ClickHouse (idempotent).
    #[command(
        after_help = "Example:\n  TAPWATCH_CLICKHOUSE_URL=http://127.0.0.1:8123 tapwatch schema apply"
    )]
    Apply(SchemaArgs),
}

/// Arguments of `tapwatch schema`.
#[derive(Args, Debug)]
pub struct SchemaArgs {
    /// Config file with `[clickhouse]` (database, cluster, URL, credentials).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs `tapwatch schema`.
pub fn schema(cmd: &SchemaCommand) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Print(a) => {
            let config = Config::load_or_default(a.config.as_deref())?;
            config.clickhouse.check()?;
            let layout = Layout {
                database: config.clickhouse.database.clone(),
                cluster: config.clickhouse.cluster.clone(),
            };
            emit(&layout.script())
        }
        SchemaCommand::Apply(a) => {
            let config = Config::load_or_default(a.config.as_deref())?;
            let ch = connect(&config)?;
            let version = ch.version()?;
            let applied = ch.apply_schema()?;
            if applied.is_empty() {
                println!("{} (ClickHouse {version}): schema up to date", ch.url());
            } else {
                println!(
                    "{} (ClickHouse {version}): applied migrations {applied:?}",
                    ch.url()
                );
            }
            Ok(())
        }
    }
}

fn connect(config: &Config) -> anyhow::Result<ClickHouse> {
    let url = config.clickhouse.effective_url().with_context(|| {
        format!(
            "no ClickHouse configured: set [clickhouse] url in --config or {}",
            tapwatch_storage::URL_ENV
        )
    })?;
    Ok(ClickHouse::new(&url, &config.clickhouse)?)
}

/// Output format of `tapwatch query`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// Aligned columns.
    Table,
    /// One JSON array of objects.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Arguments of `tapwatch query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The question: top-talkers, alerts, heartbeat-gaps, setup-growth, latency, retransmits,
    /// upgrades, drops, interfaces.
    #[arg(value_name = "QUESTION")]
    question: Question,
    /// From: RFC 3339 (`2026-11-23T14:00:00Z`) or an age (`90s`, `20m`, `6h`, `7d`, meaning
    /// that long ago). Default: the beginning.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// To (exclusive), same forms. Default: no end.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this tenant.
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Only this agent.
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// At most this many rows.
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,
    /// `latency` only: per server, the rows of this measure (handshake_server,
    /// handshake_client, response, echo, tcp_rtt, rst) instead of per tenant and stage.
    #[arg(long, value_name = "MEASURE")]
    measure: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    format: QueryFormat,
    /// Config file with `[clickhouse]` or `[storage] data_dir`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the file store in this directory (default `[storage] data_dir`, `./tapwatch-data`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the SQL that asks ClickHouse instead of asking.
    #[arg(long)]
    print_sql: bool,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `--since`/`--until`: RFC 3339 or an age such as `20m`.
pub fn parse_time(flag: &str, s: &str, now: u64) -> anyhow::Result<u32> {
    let units = [("s", 1u64), ("m", 60), ("h", 3600), ("d", 86_400)];
    for (suffix, mult) in units {
        if let Some(n) = s.strip_suffix(suffix).and_then(|n| n.parse::<u64>().ok()) {
            return Ok(now.saturating_sub(n * mult) as u32);
        }
    }
    let ns = tapwatch_rules::parse_rfc3339(s).with_context(|| {
        format!("--{flag} {s:?}: expected RFC 3339 (2026-11-23T14:00:00Z) or an age like 90s, 20m, 6h, 7d")
    })?;
    Ok((ns / 1_000_000_000) as u32)
}

/// Runs `tapwatch query`.
pub fn query(a: &QueryArgs) -> anyhow::Result<()> {
    let config = Config::load_or_default(a.config.as_deref())?;
    if let Some(m) = &a.measure {
        let names: Vec<&str> = Measure::ALL.iter().map(|m| m.name()).collect();
        anyhow::ensure!(
            a.question == Question::Latency,
            "--measure applies to the latency question only"
        );
        anyhow::ensure!(
            names.contains(&m.as_str()),
            "--measure {m:?}: expected one of {}",
            names.join(", ")
        );
    }
    let now = now_s();
    let filter = Filter {
        since: a
            .since
            .as_deref()
            .map(|s| parse_time("since", s, now))
            .transpose()?
            .unwrap_or(0),
        until: a
            .until
            .as_deref()
            .map(|s| parse_time("until", s, now))
            .transpose()?
            .unwrap_or(u32::MAX),
        tenant: a.tenant.clone(),
        agent: a.agent.clone(),
        limit: a.limit,
        measure: a.measure.clone(),
    };
    if a.print_sql {
        config.clickhouse.check()?;
        let layout = Layout {
            database: config.clickhouse.database.clone(),
            cluster: config.clickhouse.cluster.clone(),
        };
        return emit(&format!("{};\n", query::sql(a.question, &layout, &filter)));
    }
    let rows = if config.clickhouse.effective_url().is_some() {
        let ch = connect(&config)?;
        query::ask_clickhouse(&ch, a.question, &filter)?
    } else {
        let dir = a
            .data_dir
            .clone()
            .unwrap_or_else(|| config.storage.data_dir.clone());
        anyhow::ensure!(
            dir.is_dir(),
            "no file store at {}: run `tapwatch replay` or `tapwatch run` first, or give --data-dir (or configure [clickhouse])",
            dir.display()
        );
        query::ask_files(&FileStore::new(&dir), a.question, &filter)?
    };
    let text = match a.format {
        QueryFormat::Table => query::table(a.question, &rows),
        QueryFormat::Csv => query::csv(a.question, &rows),
        QueryFormat::Json => serde_json::to_string(&rows)? + "\n",
    };
    emit(&text)
}

/// Writes `text` to standard output; a reader that left (`| head`) ends the command
/// quietly instead of a panic.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the answer to standard output")
}

/// Arguments of `tapwatch load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// The file store to load (default `[storage] data_dir`, `./tapwatch-data`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Config file with `[clickhouse]`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs `tapwatch load`: every file of the file store into ClickHouse, skipping batches
/// ClickHouse already holds (so loading twice does not double).
pub fn load(a: &LoadArgs) -> anyhow::Result<()> {
    let config = Config::load_or_default(a.config.as_deref())?;
    let ch = connect(&config)?;
    ch.apply_schema()?;
    let dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| config.storage.data_dir.clone());
    let store = FileStore::new(&dir);
    let (mut files, mut rows, mut skipped, mut bad) = (0u64, 0u64, 0u64, 0u64);
    for table in tapwatch_storage::rows::TABLES {
        for (_, path) in store.files(table) {
            let text =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let loaded = tapwatch_storage::files::load_into(&ch, table, &path, &text)
                .with_context(|| format!("loading {}", path.display()))?;
            files += 1;
            rows += loaded.rows;
            skipped += loaded.batches_skipped;
            bad += loaded.bad_lines;
        }
    }
    println!(
        "{}: loaded {rows} rows from {files} files under {} ({skipped} batches already there{})",
        ch.url(),
        dir.display(),
        if bad > 0 {
            format!("; {bad} damaged lines left out")
        } else {
            String::new()
        }
    );
    Ok(())
}
