//! Queryable history: aggregates and alerts to ClickHouse, or to local files by default.
//!
//! Not built yet: this crate holds its place at the end of the pipeline
//! capture → classifier → analyzer → rules → **sinks**.
#![deny(missing_docs)]
