//! Classifier settings from the config file, and configuration errors with positions.
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are wrong at a position.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// An error at a byte span of `text` (line 1, column 1 when the span is unknown).
    pub fn at(
        path: &Path,
        text: &str,
        span: Option<std::ops::Range<usize>>,
        message: String,
    ) -> ConfigError {
        let offset = span.map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

/// Reads a config file as UTF-8 text; bytes that are not UTF-8 are an error naming the
/// file, line, column and byte offset.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let before = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
        ConfigError::at(
            path,
            &before,
            Some(at..at),
            format!("not UTF-8 text (byte {at}); the file must be UTF-8"),
        )
    })
}

/// Transport protocol of a port mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// An extra protocol type recognised by port, e.g. a relay's UDP control channel.
///
/// ```toml
/// [[classifier.port]]
/// name = "relay_control"
/// transport = "udp"
/// port = 9000
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// Label used in summaries, e.g. `relay_control`.
    pub name: String,
    /// TCP or UDP.
    pub transport: Transport,
    /// Source or destination port.
    pub port: u16,
}

/// The `[classifier]` section of the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Extra port → protocol type mappings; they take precedence over the built-in labels
    /// (TCP SYN, SYN-ACK, FIN and RST keep their flag labels).
    #[serde(default)]
    pub port: Vec<PortMapping>,
}
