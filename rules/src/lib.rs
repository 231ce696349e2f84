//! Detector findings into alerts: thresholds, baselines, hysteresis, dedup, severities,
//! tenant-isolation advice, and webhook delivery.
//!
//! Not built yet: this crate holds its place in the pipeline
//! capture → classifier → analyzer → **rules** → sinks.
#![deny(missing_docs)]
