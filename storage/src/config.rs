//! `[storage]` and `[clickhouse]` settings.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use tapwatch_analyzer::setting::{f64_in, int_in};
use tapwatch_analyzer::{SettingError, SettingPath};

use crate::StorageError;

/// Environment variable that selects ClickHouse (overrides `[clickhouse] url`).
pub const URL_ENV: &str = "TAPWATCH_CLICKHOUSE_URL";

/// `[storage]`: where rows go when no ClickHouse is configured, and how they are batched.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Data directory: the embedded file store and the ClickHouse spool live here.
    pub data_dir: PathBuf,
    /// Agent id stamped on every row (default: the host name).
    pub agent_id: Option<String>,
    /// Rows per table that trigger an insert.
    pub batch_rows: usize,
    /// Age of the oldest buffered row that triggers an insert, seconds.
    pub batch_age_s: f64,
    /// Windows of rows queued between the pipeline and the writer before spooling directly.
    pub queue: usize,
    /// Cap of the ClickHouse spool on disk, MiB (batches beyond it are counted as lost).
    pub spool_mib: u64,
    /// How long `replay` and shutdown wait for the spool to drain into ClickHouse, seconds.
    pub drain_timeout_s: f64,
    /// Retention per table in days (tables not named keep their defaults).
    pub retention_days: BTreeMap<String, u32>,
    /// How often old partitions and hourly files are dropped, seconds (0: never). Only
    /// `tapwatch run` enforces retention; a replay never drops anything.
    pub retention_every_s: f64,
    /// Seconds between an agent's records of itself.
    pub agent_every_s: f64,
    /// Seconds between snapshots of the periodic flows.
    pub periodic_every_s: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./tapwatch-data"),
            agent_id: None,
            batch_rows: 100_000,
            batch_age_s: 1.0,
            queue: 256,
            spool_mib: 1024,
            drain_timeout_s: 30.0,
            retention_days: BTreeMap::new(),
            retention_every_s: 3600.0,
            agent_every_s: 300.0,
            periodic_every_s: 60.0,
        }
    }
}

impl StorageConfig {
    /// Checks every number against its range (`docs/usage.md`, "Settings and their ranges"): the first one
    /// outside it, named by its path in the config file.
    pub fn check(&self) -> Result<(), SettingError> {
        let p = SettingPath::new("storage");
        int_in(&p, "batch_rows", self.batch_rows, 1, 10_000_000)?;
        f64_in(&p, "batch_age_s", self.batch_age_s, 0.01, 3600.0)?;
        int_in(&p, "queue", self.queue, 1, 1_000_000)?;
        int_in(&p, "spool_mib", self.spool_mib, 1, 1 << 24)?;
        f64_in(&p, "drain_timeout_s", self.drain_timeout_s, 0.0, 86_400.0)?;
        for (table, days) in &self.retention_days {
            int_in(&p.key("retention_days"), table, *days, 1, 36_500)?;
        }
        f64_in(&p, "retention_every_s", self.retention_every_s, 0.0, 1e7)?;
        f64_in(&p, "agent_every_s", self.agent_every_s, 1.0, 1e7)?;
        f64_in(&p, "periodic_every_s", self.periodic_every_s, 1.0, 1e7)
    }
}

/// `[clickhouse]`: the server (or cluster) rows are inserted into.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL, e.g. `http://127.0.0.1:8123` (`https://` uses TLS).
    pub url: Option<String>,
    /// Database.
    pub database: String,
    /// Cluster name: DDL `ON CLUSTER`, `_local` tables and `Distributed` tables over them.
    pub cluster: Option<String>,
    /// User.
    pub user: Option<String>,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Let the client check row types against the table schema (needs
    /// `RowBinaryWithNamesAndTypes`: ClickHouse ≥ 24.x; off for 18.16).
    pub validation: bool,
    /// Compress inserts and answers with LZ4.
    pub lz4: bool,
    /// Seconds an insert or query may take.
    pub timeout_s: f64,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: None,
            database: "tapwatch".into(),
            cluster: None,
            user: None,
            password_file: None,
            password_env: None,
            validation: false,
            lz4: true,
            timeout_s: 10.0,
        }
    }
}

impl ClickHouseConfig {
    /// The URL to use: `TAPWATCH_CLICKHOUSE_URL`, else `url`; `None` means the file store.
    pub fn effective_url(&self) -> Option<String> {
        std::env::var(URL_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| self.url.clone())
    }

    /// The password, read from its file or environment variable.
    pub fn password(&self) -> Result<Option<String>, StorageError> {
        if let Some(f) = &self.password_file {
            let text = std::fs::read_to_string(f).map_err(|e| StorageError::Credentials {
                what: format!("password_file {}", f.display()),
                why: e.to_string(),
            })?;
            return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
        }
        if let Some(v) = &self.password_env {
            return std::env::var(v)
                .map(Some)
                .map_err(|_| StorageError::Credentials {
                    what: format!("password_env {v}"),
                    why: "the variable is not set".into(),
                });
        }
        Ok(None)
    }

    /// Checks the settings of the section: names that go into SQL unquoted, and the
    /// timeout's range (above 0 up to an hour).
    pub fn check_settings(&self) -> Result<(), SettingError> {
        let p = SettingPath::new("clickhouse");
        let ident = |what: &str, s: &str| {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                Err(SettingError::new(
                    p.key(what),
                    format!("{s:?}"),
                    "letters, digits and underscores",
                ))
            } else {
                Ok(())
            }
        };
        ident("database", &self.database)?;
        if let Some(c) = &self.cluster {
            ident("cluster", c)?;
        }
        f64_in(&p, "timeout_s", self.timeout_s, 0.1, 3600.0)
    }

    /// Checks the settings and the URL in effect (the environment's included).
    pub fn check(&self) -> Result<(), StorageError> {
        self.check_settings()?;
        if let Some(u) = self.effective_url() {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(StorageError::Config(format!(
                    "ClickHouse URL {u:?}: expected http://HOST:PORT or https://HOST:PORT"
                )));
            }
        }
        Ok(())
    }
}
