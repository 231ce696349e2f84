//! Windowed aggregates and detectors over classified packets (heavy hitters, quadratic
//! connection-setup growth, missed heartbeats, handshake latency).
//!
//! Not built yet: this crate holds its place in the pipeline
//! capture → classifier → **analyzer** → rules → sinks.
#![deny(missing_docs)]
