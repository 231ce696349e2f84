//! Windowed aggregates and detectors over classified packets.
//!
//! Today this crate holds [`Totals`], the whole-run counters behind `tapwatch replay`'s
//! summary, and the seeded [`scenario`] generator. Detectors (heavy hitters, quadratic
//! connection-setup growth, missed heartbeats, handshake latency) land here next.
//!
//! ```
//! use tapwatch_analyzer::Totals;
//! use tapwatch_classifier::{Classifier, PacketMeta};
//!
//! let classifier = Classifier::default();
//! let mut totals = Totals::new(16);
//! totals.add(&PacketMeta::empty(0, 60, 60, 0));
//! assert_eq!(totals.packets, 1);
//! let report = totals.report(&classifier, 10);
//! assert_eq!(report.by_size_class["0-64"], 1);
//! ```
#![deny(missing_docs)]

pub mod scenario;
pub mod sketch;
mod totals;

pub use totals::{Report, SourceReport, TenantReport, Totals};
