//! The ClickHouse side: the `clickhouse` client over HTTP(S), schema application, typed
//! inserts, spooled-batch replay, batch-id checks, retention and JSON queries.
use std::time::Duration;

use clickhouse::{Client, Compression};

use crate::config::ClickHouseConfig;
use crate::rows::StoredRow;
use crate::schema::{partition_last_day, Layout, MIGRATIONS};
use crate::spool::BatchMeta;
use crate::StorageError;

/// A connection to one ClickHouse server (of a cluster, possibly) with its own runtime.
pub struct ClickHouse {
    client: Client,
    url: String,
    /// Database and cluster.
    pub layout: Layout,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
}

fn ch_err(url: &str, what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::ClickHouse {
        url: url.to_string(),
        what: what.to_string(),
        why: strip_ansi(&e.to_string()),
    }
}

/// Text without ANSI escape sequences (servers colour their exception text for terminals).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            // CSI: parameters and intermediates up to a final byte in @..~.
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next(); // a two-character escape
        }
    }
    out
}

/// An error with its causes (transport errors hide the useful part, e.g. "connection
/// refused" or a TLS alert, behind "client error (Connect)").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

impl ClickHouse {
    /// A client for `url` with the settings of `cfg` (no request is made yet).
    pub fn new(url: &str, cfg: &ClickHouseConfig) -> Result<ClickHouse, StorageError> {
        cfg.check()?;
        let mut client = Client::default()
            .with_url(url)
            .with_validation(cfg.validation)
            .with_compression(if cfg.lz4 {
                Compression::Lz4
            } else {
                Compression::None
            });
        if let Some(u) = &cfg.user {
            client = client.with_user(u);
        }
        if let Some(p) = cfg.password()? {
            client = client.with_password(p);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ch_err(url, "starting the client runtime", e))?;
        Ok(ClickHouse {
            client,
            url: url.to_string(),
            layout: Layout {
                database: cfg.database.clone(),
                cluster: cfg.cluster.clone(),
            },
            rt,
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(0.1)),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn run<F: std::future::Future<Output = Result<T, clickhouse::error::Error>>, T>(
        &self,
        what: &str,
        f: F,
    ) -> Result<T, StorageError> {
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, f).await {
                Ok(r) => r.map_err(|e| ch_err(&self.url, what, with_causes(&e))),
                Err(_) => Err(ch_err(
                    &self.url,
                    what,
                    format!("no answer in {:?}", self.timeout),
                )),
            }
        })
    }

    /// Runs one statement (DDL or ALTER), outside the `tapwatch` database if need be.
    pub fn execute(&self, sql: &str) -> Result<(), StorageError> {
        let short: String = sql.chars().take(80).collect();
        self.run(
            &format!("running `{short}…`"),
            self.client.query(sql).execute(),
        )
    }

    /// The server's version string.
    pub fn version(&self) -> Result<String, StorageError> {
        self.run(
            "asking the version",
            self.client.query("SELECT version()").fetch_one::<String>(),
        )
    }

    /// Migrations already applied (versions).
    pub fn applied(&self) -> Result<Vec<u32>, StorageError> {
        let sql = format!(
            "SELECT DISTINCT version FROM {}.schema_migrations ORDER BY version",
            self.layout.database
        );
        self.run(
            "reading schema_migrations",
            self.client.query(&sql).fetch_all::<u32>(),
        )
    }

    /// Whether `table` of the database already has `column` (an `ADD COLUMN` done before its
    /// migration was recorded).
    fn has_column(&self, table: &str, column: &str) -> Result<bool, StorageError> {
        let sql = format!(
            "SELECT count() FROM system.columns WHERE database = '{}' AND table = '{table}' AND name = '{column}'",
            self.layout.database
        );
        let n = self.run(
            "reading system.columns",
            self.client.query(&sql).fetch_one::<u64>(),
        )?;
        Ok(n > 0)
    }

    /// Applies the migrations not applied yet (every statement is idempotent); returns the
    /// versions applied now.
    pub fn apply_schema(&self) -> Result<Vec<u32>, StorageError> {
        for st in self.layout.preamble() {
            self.execute(&st)?;
        }
        let done = self.applied()?;
        let mut now = Vec::new();
        for m in MIGRATIONS {
            if done.contains(&m.version) {
                continue;
            }
            for st in self.layout.statements(m) {
                if let Some((table, column)) = crate::schema::added_column(&st) {
                    if self.has_column(table, column)? {
                        continue;
                    }
                }
                self.execute(&st)?;
            }
            let table = self.layout.insert_table("schema_migrations");
            self.execute(&format!(
                "INSERT INTO {table} (version, name, applied) VALUES ({}, '{}', now())",
                m.version, m.name
            ))?;
            now.push(m.version);
        }
        Ok(now)
    }

    /// Inserts typed rows in one `INSERT` (one block: all or nothing).
    pub fn insert<T: StoredRow>(&self, rows: &[T]) -> Result<(), StorageError> {
        // Database and table names are checked identifiers (see `ClickHouseConfig::check`).
        let table = self.layout.insert_table(T::TABLE);
        self.run(
            &format!("inserting {} rows into {table}", rows.len()),
            async {
                let mut ins = self.client.insert_unescaped::<T>(&table).await?;
                for r in rows {
                    ins.write(r).await?;
                }
                ins.end().await
            },
        )
    }

    /// Inserts rows given as TabSeparated (a spooled batch or a file-store file).
    pub fn insert_tsv(
        &self,
        table: &str,
        columns: &[&str],
        tsv: &[u8],
        with_names: bool,
    ) -> Result<(), StorageError> {
        let target = self.layout.insert_table(table);
        let format = if with_names {
            "TabSeparatedWithNames"
        } else {
            "TabSeparated"
        };
        let sql = format!(
            "INSERT INTO {target} ({}) FORMAT {format}",
            columns.join(", ")
        );
        let data = bytes::Bytes::copy_from_slice(tsv);
        self.run(&format!("inserting a batch into {target}"), async {
            let mut ins = self.client.insert_formatted_with(sql);
            ins.send(data).await?;
            ins.end().await
        })
    }

    /// Whether this batch is already in the table (a retried batch whose first attempt did
    /// land). Its id carries its writer's nonce and its content's checksum (see
    /// [`crate::writer::BatchIds`]), so rows under that id are this content, not another
    /// run's; a row count other than the batch's is reported (and the batch not inserted
    /// again: a table may lose, never double).
    pub fn batch_exists(&self, m: &BatchMeta) -> Result<bool, StorageError> {
        let target = self.layout.insert_table(&m.table);
        let sql = format!(
            "SELECT count() FROM {target} WHERE agent = ? AND batch = ? AND ts >= toDateTime(?, 'UTC') AND ts <= toDateTime(?, 'UTC')"
        );
        let n = self.run(
            "checking a batch id",
            self.client
                .query(&sql)
                .bind(m.agent.as_str())
                .bind(m.batch)
                .bind(m.ts_min)
                .bind(m.ts_max)
                .fetch_one::<u64>(),
        )?;
        if n > 0 && n != m.rows {
            tracing::warn!(
                "ClickHouse {}: batch {} of {} (agent {}) holds {n} rows where {} were sent",
                self.url,
                m.batch,
                m.table,
                m.agent,
                m.rows
            );
        }
        Ok(n > 0)
    }

    /// The materialized views fed by `table`: (rollup table, bucket width in seconds, the
    /// view's SELECT restricted to one agent's batch).
    /// The rollups fed by `table`, each with its width (s), the select of its view over
    /// one batch's rows only, and the measure it is checked by.
    fn rollups_of(&self, table: &str, agent: &str, batch: u64) -> Vec<Rollup> {
        let source = format!("FROM {}\nGROUP BY", self.layout.insert_table(table));
        let only = format!(
            "FROM {}\nWHERE agent = {} AND batch = {batch}\nGROUP BY",
            self.layout.insert_table(table),
            literal(agent)
        );
        let mut out = Vec::new();
        for m in MIGRATIONS {
            for st in self.layout.statements(m) {
                if !st.starts_with("CREATE MATERIALIZED VIEW") || !st.contains(&source) {
                    continue;
                }
                let Some((head, select)) = st.split_once(" AS\n") else {
                    continue;
                };
                let Some(target) = head.rsplit(" TO ").next() else {
                    continue;
                };
                let Some(measure) = Measure::of(select) else {
                    continue;
                };
                let width = if target.contains("_1h") { 3600 } else { 60 };
                out.push(Rollup {
                    target: target.trim().to_string(),
                    width,
                    select: select.replace(&source, &only),
                    measure,
                });
            }
        }
        out
    }

    /// Completes the rollups of a batch found in its base table. ClickHouse writes an INSERT
    /// to the table and then to each materialized view; a server killed in between keeps
    /// the batch in the table but not in a rollup. For each rollup, when in every bucket the
    /// batch touches the rollup holds exactly the batch's share less of its measure (its
    /// first summed column: packets, segments) than the table, the batch is missing from it
    /// and is added from the table's rows. (One writer per agent sends one INSERT at a time,
    /// so at most one batch per outage is half-written; an ambiguous deficit is left alone:
    /// a rollup may lose, never double.) Returns the rollups completed.
    pub fn complete_rollups(&self, m: &BatchMeta) -> Result<Vec<String>, StorageError> {
        let (table, agent, batch, ts_min, ts_max) = (
            m.table.as_str(),
            m.agent.as_str(),
            m.batch,
            m.ts_min,
            m.ts_max,
        );
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Bucket {
            bucket: u32,
            amount: u64,
        }
        let mut completed = Vec::new();
        for Rollup {
            target,
            width,
            select,
            measure,
        } in self.rollups_of(table, agent, batch)
        {
            let (lo, hi) = (ts_min / width * width, (ts_max / width + 1) * width);
            let sums = |sql: String| {
                self.run(
                    "checking a rollup",
                    self.client.query(&sql).fetch_all::<Bucket>(),
                )
            };
            let Measure { expr, column } = &measure;
            let mine = sums(format!(
                "SELECT toUInt32(ts) AS bucket, sumMerge({column}) AS amount FROM ({select}) GROUP BY bucket"
            ))?;
            let range = format!(
                "agent = {} AND ts >= toDateTime({lo}, 'UTC') AND ts < toDateTime({hi}, 'UTC')",
                literal(agent)
            );
            let base = sums(format!(
                "SELECT toUInt32(toStartOf{g}(ts)) AS bucket, sum({expr}) AS amount FROM {t} WHERE {range} GROUP BY bucket",
                g = if width == 3600 { "Hour" } else { "Minute" },
                t = self.layout.insert_table(table),
            ))?;
            let rolled = sums(format!(
                "SELECT toUInt32(ts) AS bucket, sumMerge({column}) AS amount FROM {target} WHERE {range} GROUP BY bucket"
            ))?;
            let total = |v: &[Bucket], t: u32| {
                v.iter()
                    .filter(|b| b.bucket == t)
                    .map(|b| b.amount)
                    .sum::<u64>()
            };
            // Missing exactly when every bucket lacks exactly this batch's share: a deficit
            // that is another batch's (or two batches') is left alone rather than doubled.
            let missing = !mine.is_empty()
                && mine.iter().all(|b| {
                    b.amount > 0
                        && total(&base, b.bucket).saturating_sub(total(&rolled, b.bucket))
                            == b.amount
                });
            if missing {
                self.execute(&format!("INSERT INTO {target} {select}"))?;
                completed.push(target);
            }
        }
        Ok(completed)
    }

    /// Runs a query whose rows are `T`, read as RowBinary (with validation off, field widths
    /// must equal column types exactly, as for inserts).
    pub fn select<T>(&self, sql: &str) -> Result<Vec<T>, StorageError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.run("reading rows", self.client.query(sql).fetch_all::<T>())
    }

    /// Runs a query and returns its rows as JSON objects (64-bit integers as numbers).
    pub fn query_json(
        &self,
        sql: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StorageError> {
        let bytes = self.run("running a query", async {
            let mut cursor = self
                .client
                .query(sql)
                .with_setting("output_format_json_quote_64bit_integers", "0")
                .fetch_bytes("JSONEachRow")?;
            let mut all = Vec::new();
            while let Some(chunk) = cursor.next().await? {
                all.extend_from_slice(&chunk);
            }
            Ok(all)
        })?;
        let mut rows = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| ch_err(&self.url, "reading a query's answer", e))?;
            if let serde_json::Value::Object(m) = v {
                rows.push(m);
            }
        }
        Ok(rows)
    }

    /// Drops partitions whose last day is older than each table's retention; returns
    /// (table, partition) dropped.
    pub fn drop_expired(
        &self,
        retention: &dyn Fn(&str) -> u32,
        today: u32,
    ) -> Result<Vec<(String, String)>, StorageError> {
        #[derive(clickhouse::Row, serde::Deserialize)]
        struct Part {
            table: String,
            partition: String,
        }
        let suffix = if self.layout.cluster.is_some() {
            "_local"
        } else {
            ""
        };
        let sql =
            "SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active";
        let parts = self.run(
            "listing partitions",
            self.client
                .query(sql)
                .bind(self.layout.database.as_str())
                .fetch_all::<Part>(),
        )?;
        let mut dropped = Vec::new();
        for p in parts {
            let Some(base) = p.table.strip_suffix(suffix) else {
                continue;
            };
            if !Layout::data_tables().any(|t| t == base) {
                continue;
            }
            let Some(last) = partition_last_day(&p.partition) else {
                continue;
            };
            if days_between(last, today) > i64::from(retention(base)) {
                let oc = match &self.layout.cluster {
                    Some(c) => format!(" ON CLUSTER {c}"),
                    None => String::new(),
                };
                self.execute(&format!(
                    "ALTER TABLE {}.{}{oc} DROP PARTITION {}",
                    self.layout.database, p.table, p.partition
                ))?;
                dropped.push((p.table, p.partition));
            }
        }
        Ok(dropped)
    }
}

/// A ClickHouse string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Days from `a` to `b`, both `YYYYMMDD` (an over-long month end like 20261131 counts as
/// the month's last day and beyond, which only delays a drop by a day).
pub fn days_between(a: u32, b: u32) -> i64 {
    fn days(d: u32) -> i64 {
        let (y, m, d) = (
            (d / 10000) as i64,
            ((d / 100) % 100) as i64,
            (d % 100) as i64,
        );
        // Days from civil (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe
    }
    days(b) - days(a)
}

/// A rollup table fed by a materialized view over a base table.
struct Rollup {
    /// The rollup table.
    target: String,
    /// Its bucket width, seconds.
    width: u32,
    /// The view's select, over one batch's rows only.
    select: String,
    /// What a missing batch is recognised by.
    measure: Measure,
}

/// The first summed column of a rollup view (`sumState(EXPR) AS COLUMN`): the base table's
/// `sum(EXPR)` and the rollup's `sumMerge(COLUMN)` agree for every batch both hold.
struct Measure {
    /// The summed expression over the base table.
    expr: String,
    /// The rollup's column.
    column: String,
}

impl Measure {
    /// The measure of a view's select; `None` when it sums nothing.
    fn of(select: &str) -> Option<Measure> {
        let (_, rest) = select.split_once("sumState(")?;
        let (expr, rest) = rest.split_once(") AS ")?;
        let column = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()?;
        (!column.is_empty()).then(|| Measure {
            expr: expr.to_string(),
            column: column.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{days_between, strip_ansi};

    #[test]
    fn ansi_escapes_are_stripped_from_server_text() {
        assert_eq!(
            strip_ansi("Code: 60. \u{1b}[1mDB::Exception\u{1b}[0m: Table \u{1b}[38;5;1mx\u{1b}[0m does not exist"),
            "Code: 60. DB::Exception: Table x does not exist"
        );
        assert_eq!(strip_ansi("plain ü"), "plain ü");
    }

    #[test]
    fn days_between_dates() {
        assert_eq!(days_between(20261123, 20261124), 1);
        assert_eq!(days_between(20261231, 20270101), 1);
        assert_eq!(days_between(20240228, 20240301), 2);
        assert_eq!(days_between(20261101, 20261123), 22);
    }
}
