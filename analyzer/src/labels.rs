//! The names behind the classifier's indices, as one snapshot: what storage and the
//! detectors need to turn tenant and protocol-type indices into names, without the
//! classifier itself.
use tapwatch_classifier::{Classifier, ProtocolType, TenantId, UNASSIGNED};

use crate::config::AnalyzerConfig;

/// Tenant and protocol-type names, and which types count as connection setups, at one
/// generation of the classifier (a reload makes the next generation).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels {
    /// Bumped by each reload; rows labelled under one generation share it.
    pub generation: u64,
    tenant_names: Vec<String>,
    type_names: Vec<String>,
    setup: Vec<bool>,
}

impl Labels {
    /// The labels of `classifier` under `cfg`'s setup types, generation 0.
    pub fn new(cfg: &AnalyzerConfig, classifier: &Classifier) -> Labels {
        let type_names = (0..classifier.type_count())
            .map(|i| {
                classifier
                    .type_at(i)
                    .map(|k| classifier.type_name(k).to_string())
                    .unwrap_or_default()
            })
            .collect();
        Labels {
            generation: 0,
            tenant_names: classifier.tenants().names().to_vec(),
            type_names,
            setup: crate::shard::setup_kinds(cfg, classifier),
        }
    }

    /// The labels of a reloaded classifier: the next generation after `self`.
    pub fn next(&self, cfg: &AnalyzerConfig, classifier: &Classifier) -> Labels {
        Labels {
            generation: self.generation + 1,
            ..Labels::new(cfg, classifier)
        }
    }

    /// A tenant's name (`unassigned` for an index it does not know).
    pub fn tenant_name(&self, t: TenantId) -> &str {
        self.tenant_names
            .get(t.0 as usize)
            .map_or(UNASSIGNED, String::as_str)
    }

    /// Every tenant name, by index (`unassigned` first).
    pub fn tenant_names(&self) -> &[String] {
        &self.tenant_names
    }

    /// The name of a protocol-type index, if it is one.
    pub fn type_name(&self, index: usize) -> Option<&str> {
        self.type_names.get(index).map(String::as_str)
    }

    /// The name of a protocol type (empty for one this generation does not know).
    pub fn kind_name(&self, kind: ProtocolType) -> &str {
        self.type_name(kind.index()).unwrap_or_default()
    }

    /// Protocol-type indices in use.
    pub fn type_count(&self) -> usize {
        self.type_names.len()
    }

    /// Whether a protocol-type index counts as a connection setup.
    #[inline]
    pub fn is_setup(&self, index: usize) -> bool {
        self.setup.get(index).copied().unwrap_or(false)
    }

    /// The setup mask by protocol-type index.
    pub fn setup_mask(&self) -> &[bool] {
        &self.setup
    }
}
