//! tapwatch storage: queryable history of windows, detectors and alerts.
//!
//! - [`schema`]: versioned migrations for ClickHouse (18.16 to 26.x), single server or cluster.
//! - [`writer::Store`]: the sink — a bounded queue, batches by count and age, typed inserts
//!   with the `clickhouse` crate, an on-disk [`spool`] replayed in order with batch-id checks.
//! - [`files`]: the embedded default, hourly `TabSeparatedWithNames` files ClickHouse loads.
//! - [`evidence`]: the alerts' evidence captures under the data directory (written by the
//!   binary, dropped with the alerts' retention here).
//! - [`query`]: the built-in questions of `tapwatch query`, over ClickHouse or the files.
//! - [`interfaces`]: the sFlow agents' interface counters as differences and rates.
//! - [`history`]: the console's typed questions (traffic series, alerts, tops, tenants).
use std::path::PathBuf;

pub mod agent;
pub mod ch;
pub mod config;
pub mod convert;
pub mod evidence;
pub mod files;
pub mod history;
pub mod interfaces;
pub mod query;
pub mod restore;
pub mod rows;
pub mod schema;
pub mod spool;
pub mod tsv;
pub mod writer;

pub use ch::ClickHouse;
pub use config::{ClickHouseConfig, StorageConfig, URL_ENV};
pub use files::FileStore;
pub use rows::Rows;
pub use writer::{Backend, Store, StoreStats};

/// Storage errors, each naming what was being done and where.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A setting that cannot be used.
    #[error("{0}")]
    Config(String),
    /// A setting of the config file outside its range.
    #[error(transparent)]
    Setting(#[from] tapwatch_analyzer::SettingError),
    /// A password file or variable that cannot be read.
    #[error("ClickHouse credentials: {what}: {why}")]
    Credentials {
        /// Which setting.
        what: String,
        /// Why.
        why: String,
    },
    /// ClickHouse refused or did not answer.
    #[error("ClickHouse {url}: {what}: {why}")]
    ClickHouse {
        /// Server URL.
        url: String,
        /// What was being done.
        what: String,
        /// Its answer or the transport error.
        why: String,
    },
    /// A file of the store or spool.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}
