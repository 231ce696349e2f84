//! The schema: versioned migrations (one `.sql` file each, embedded), rendered for a single
//! server or for a cluster (`ON CLUSTER`, `_local` tables plus `Distributed` tables over them).
use crate::rows::TABLES;

/// One migration: a version and its SQL with placeholders.
pub struct Migration {
    /// Version, applied in increasing order.
    pub version: u32,
    /// File name.
    pub name: &'static str,
    /// SQL text with `{db}`, `{on_cluster}` and `{local}` placeholders.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_base_tables.sql",
        sql: include_str!("../migrations/0001_base_tables.sql"),
    },
    Migration {
        version: 2,
        name: "0002_rollups.sql",
        sql: include_str!("../migrations/0002_rollups.sql"),
    },
    Migration {
        version: 3,
        name: "0003_latency_measure.sql",
        sql: include_str!("../migrations/0003_latency_measure.sql"),
    },
    // flow health (issue 14)
    Migration {
        version: 4,
        name: "0004_flow_health.sql",
        sql: include_str!("../migrations/0004_flow_health.sql"),
    },
    // sampled input (issue 17)
    Migration {
        version: 5,
        name: "0005_sflow.sql",
        sql: include_str!("../migrations/0005_sflow.sql"),
    },
];

/// Rollup tables (filled by materialized views, never written directly).
pub const ROLLUP_TABLES: [&str; 6] = [
    "traffic_1m",
    "traffic_1h",
    "tenants_1m",
    "tenants_1h",
    "server_health_1m",
    "server_health_1h",
];

/// Where the schema goes: database name and optional cluster.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Database name.
    pub database: String,
    /// Cluster name: DDL runs `ON CLUSTER`, rows go to `_local` tables, queries read the
    /// `Distributed` tables.
    pub cluster: Option<String>,
}

impl Layout {
    /// The table rows of `table` are inserted into.
    pub fn insert_table(&self, table: &str) -> String {
        match self.cluster {
            Some(_) => format!("{}.{table}_local", self.database),
            None => format!("{}.{table}", self.database),
        }
    }

    /// The table queries read (`Distributed` in the cluster layout).
    pub fn query_table(&self, table: &str) -> String {
        format!("{}.{table}", self.database)
    }

    fn on_cluster(&self) -> String {
        match &self.cluster {
            Some(c) => format!("ON CLUSTER {c}"),
            None => String::new(),
        }
    }

    /// The statements of the bookkeeping table that records applied migrations.
    pub fn preamble(&self) -> Vec<String> {
        let db = &self.database;
        let oc = self.on_cluster();
        let mut v = vec![
            format!("CREATE DATABASE IF NOT EXISTS {db} {oc}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations{local} {oc} (version UInt32, name String, applied DateTime('UTC')) ENGINE = MergeTree ORDER BY version",
                local = self.local()
            ),
        ];
        if self.cluster.is_some() {
            v.push(self.distributed("schema_migrations"));
        }
        v
    }

    fn local(&self) -> &'static str {
        if self.cluster.is_some() {
            "_local"
        } else {
            ""
        }
    }

    fn distributed(&self, table: &str) -> String {
        let db = &self.database;
        let c = self.cluster.as_deref().unwrap_or_default();
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {c} AS {db}.{table}_local ENGINE = Distributed({c}, {db}, {table}_local, rand())"
        )
    }

    /// The statements of one migration, rendered for this layout (with the `Distributed`
    /// tables of the cluster layout after the tables they cover).
    pub fn statements(&self, m: &Migration) -> Vec<String> {
        let body: String = m
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut out = Vec::new();
        for stmt in body.split(';') {
            let stmt = stmt.trim();
            if stmt.is_empty() {
                continue;
            }
            let rendered = stmt
                .replace("{db}", &self.database)
                .replace("{on_cluster}", &self.on_cluster())
                .replace("{local}", self.local());
            out.push(rendered);
            if let Some(c) = &self.cluster {
                if let Some(table) = created_table(stmt) {
                    out.push(self.distributed(table));
                }
                // The `Distributed` table over an altered table takes the same change.
                if let Some((table, change)) = altered_table(stmt) {
                    out.push(format!(
                        "ALTER TABLE {}.{table} ON CLUSTER {c} {change}",
                        self.database
                    ));
                }
            }
        }
        out
    }

    /// Every statement of every migration, as `tapwatch schema print` shows them.
    pub fn script(&self) -> String {
        let mut s = String::new();
        for st in self.preamble() {
            s.push_str(&st);
            s.push_str(";\n\n");
        }
        for m in MIGRATIONS {
            s.push_str(&format!("-- migration {}: {}\n", m.version, m.name));
            for st in self.statements(m) {
                s.push_str(&st);
                s.push_str(";\n\n");
            }
        }
        s
    }

    /// Tables that hold data (base and rollup), as queries and retention name them.
    pub fn data_tables() -> impl Iterator<Item = &'static str> {
        TABLES.iter().chain(ROLLUP_TABLES.iter()).copied()
    }
}

/// The table a `CREATE TABLE … {local}` statement creates (not views).
fn created_table(stmt: &str) -> Option<&str> {
    let rest = stmt.strip_prefix("CREATE TABLE IF NOT EXISTS {db}.")?;
    let end = rest.find("{local}")?;
    Some(&rest[..end])
}

/// `(table, change)` of an `ALTER TABLE {db}.TABLE{local} {on_cluster} CHANGE` statement.
fn altered_table(stmt: &str) -> Option<(&str, &str)> {
    let rest = stmt.strip_prefix("ALTER TABLE {db}.")?;
    let (table, change) = rest.split_once("{local} {on_cluster} ")?;
    Some((table, change))
}

/// `(table, column)` of a rendered `ALTER TABLE DB.TABLE [ON CLUSTER C] ADD COLUMN NAME …`
/// (ClickHouse 18.16 has no `IF NOT EXISTS` there: the caller checks `system.columns`).
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let rest = stmt.strip_prefix("ALTER TABLE ")?;
    let (target, change) = rest.split_once(" ADD COLUMN ")?;
    let table = target.split_whitespace().next()?.split_once('.')?.1;
    Some((table, change.split_whitespace().next()?))
}

/// Default retention in days per table: per-window tables a week, minutes 90 days, hours
/// two years; interface counters 90 days; alerts and agent records a year.
pub fn default_retention_days(table: &str) -> u32 {
    match table {
        "alerts" | "agents" | "heartbeat_gaps" | "setup_growth" => 365,
        t if t.ends_with("_1h") => 730,
        t if t.ends_with("_1m") || t == "interfaces" => 90,
        _ => 7,
    }
}

/// The last day (as `YYYYMMDD`) a partition id of `toYYYYMMDD` or `toYYYYMM` covers.
pub fn partition_last_day(id: &str) -> Option<u32> {
    let n: u32 = id.trim_matches('\'').parse().ok()?;
    match id.len() {
        8 => Some(n),
        6 => Some(n * 100 + 31),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_column_reaches_the_distributed_table_too() {
        let l = Layout {
            database: "tw".into(),
            cluster: Some("c1".into()),
        };
        let st = l.statements(&MIGRATIONS[2]);
        assert_eq!(
            st,
            [
                "ALTER TABLE tw.latency_local ON CLUSTER c1 ADD COLUMN measure LowCardinality(String) DEFAULT '' AFTER stage",
                "ALTER TABLE tw.latency ON CLUSTER c1 ADD COLUMN measure LowCardinality(String) DEFAULT '' AFTER stage",
            ]
        );
        assert_eq!(added_column(&st[0]), Some(("latency_local", "measure")));
        assert_eq!(added_column(&st[1]), Some(("latency", "measure")));
        let single = Layout {
            database: "tw".into(),
            cluster: None,
        };
        let st = single.statements(&MIGRATIONS[2]);
        assert_eq!(st.len(), 1);
        assert_eq!(added_column(&st[0]), Some(("latency", "measure")));
        assert_eq!(added_column("CREATE TABLE tw.x (a UInt8)"), None);
    }

    #[test]
    fn cluster_layout_adds_distributed_tables() {
        let l = Layout {
            database: "tw".into(),
            cluster: Some("c1".into()),
        };
        let st = l.statements(&MIGRATIONS[0]);
        assert!(st[0].starts_with("CREATE TABLE IF NOT EXISTS tw.traffic_local ON CLUSTER c1"));
        assert_eq!(
            st[1],
            "CREATE TABLE IF NOT EXISTS tw.traffic ON CLUSTER c1 AS tw.traffic_local ENGINE = Distributed(c1, tw, traffic_local, rand())"
        );
        let rollups = l.statements(&MIGRATIONS[1]);
        assert!(rollups.iter().any(|s| s.contains("TO tw.traffic_1m_local")));
        // Views get no Distributed table; every data table does.
        assert!(!rollups
            .iter()
            .any(|s| s.contains("traffic_1m_mv ON CLUSTER c1 AS")));
        for t in Layout::data_tables() {
            let all = l.script();
            assert!(
                all.contains(&format!("Distributed(c1, tw, {t}_local")),
                "{t}"
            );
        }
    }

    #[test]
    fn single_server_layout_has_no_placeholders_left() {
        let l = Layout {
            database: "tapwatch".into(),
            cluster: None,
        };
        let s = l.script();
        assert!(!s.contains('{') || !s.contains("{db}"));
        assert!(!s.contains("ON CLUSTER") && !s.contains("_local"));
        assert_eq!(
            s.matches("CREATE TABLE").count(),
            1 + TABLES.len() + ROLLUP_TABLES.len()
        );
    }

    #[test]
    fn partitions_end_on_their_last_day() {
        assert_eq!(partition_last_day("20261123"), Some(20261123));
        assert_eq!(partition_last_day("202611"), Some(20261131));
        assert_eq!(partition_last_day("tuple()"), None);
    }
}
