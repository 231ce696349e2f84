//! The config file and the tenants file, loaded into a classifier.
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use tapwatch_analyzer::AnalyzerConfig;
use tapwatch_classifier::{Classifier, ClassifierConfig, ConfigError, TenantMap};

use crate::CommonArgs;

/// The whole config file. Unknown sections and keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[classifier]`.
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// `[analyzer]`: windows and detectors.
    #[serde(default)]
    pub analyzer: AnalyzerConfig,
    /// `[[webhook]]`: alert receivers.
    #[serde(default)]
    pub webhook: Vec<tapwatch_rules::webhook::WebhookConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::at(path, &text, e.span(), e.message().to_string()))?;
        Ok(config)
    }
}

/// The config file and the classifier the common flags describe.
pub fn load(common: &CommonArgs) -> anyhow::Result<(Config, Classifier)> {
    let config = match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let tenants = match &common.tenants {
        Some(p) => TenantMap::load(p)?,
        None => TenantMap::default(),
    };
    let classifier = Classifier::new(tenants, &config.classifier);
    Ok((config, classifier))
}
