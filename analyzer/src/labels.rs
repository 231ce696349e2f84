//! The names behind the classifier's indices, as one snapshot: what storage and the
//! detectors need to turn tenant and protocol-type indices into names, without the
//! classifier itself.
use std::net::IpAddr;

use tapwatch_classifier::{Classifier, TenantId, TenantMap, UNASSIGNED};

use crate::config::AnalyzerConfig;
use crate::thresholds::{TenantThresholds, Thresholds};

/// Tenants (names and address map), protocol-type names, and which types count as
/// connection setups, at one generation of the classifier (a reload makes the next one).
#[derive(Clone, Debug, Default)]
pub struct Labels {
    /// Bumped by each reload; rows labelled under one generation share it.
    pub generation: u64,
    tenants: TenantMap,
    type_names: Vec<String>,
    setup: Vec<bool>,
    thresholds: TenantThresholds,
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
        let tenants = classifier.tenants().clone();
        let thresholds = TenantThresholds::new(cfg, tenants.names());
        Labels {
            generation: 0,
            tenants,
            type_names,
            setup: crate::shard::setup_kinds(cfg, classifier),
            thresholds,
        }
    }

    /// The labels of a reloaded classifier: the next generation after `self`.
    pub fn next(&self, cfg: &AnalyzerConfig, classifier: &Classifier) -> Labels {
        Labels {
            generation: self.generation + 1,
            ..Labels::new(cfg, classifier)
        }
    }

    /// The name of a tenant index (`unassigned` for one it does not know, such as an index
    /// counted under an older generation).
    pub fn tenant_name(&self, index: usize) -> &str {
        u16::try_from(index).map_or(UNASSIGNED, |i| self.tenants.name(TenantId(i)))
    }

    /// The name of the tenant an address belongs to (longest-prefix match).
    pub fn tenant_name_of(&self, addr: IpAddr) -> &str {
        self.tenants.name(self.tenants.lookup(addr))
    }

    /// Every tenant name, by index (`unassigned` first).
    pub fn tenant_names(&self) -> &[String] {
        self.tenants.names()
    }

    /// The tenant map itself.
    pub fn tenants(&self) -> &TenantMap {
        &self.tenants
    }

    /// The name of a protocol-type index, if it is one.
    pub fn type_name(&self, index: usize) -> Option<&str> {
        self.type_names.get(index).map(String::as_str)
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

    /// The detector thresholds of a tenant index (`[[analyzer.override]]` resolved; the
    /// defaults for an index this generation does not know).
    #[inline]
    pub fn thresholds(&self, tenant: TenantId) -> &Thresholds {
        self.thresholds.get(tenant)
    }

    /// Every tenant's detector thresholds.
    pub fn tenant_thresholds(&self) -> &TenantThresholds {
        &self.thresholds
    }

    /// The setup mask by protocol-type index.
    pub fn setup_mask(&self) -> &[bool] {
        &self.setup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_what_the_classifier_numbers() {
        let tenants = TenantMap::parse(
            std::path::Path::new("t"),
            "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.1.0.0/16\"]\n",
        )
        .unwrap();
        let classifier = Classifier::new(tenants, &Default::default());
        let mut cfg = AnalyzerConfig::default();
        cfg.setup_growth.setup_types = vec!["quic".into()];
        let l = Labels::new(&cfg, &classifier);
        assert_eq!(l.tenant_names(), ["unassigned", "acme"]);
        assert_eq!(l.tenant_name_of("10.1.2.3".parse().unwrap()), "acme");
        assert_eq!(l.tenant_name(7), "unassigned");
        let syn = tapwatch_classifier::ProtocolType::TcpSyn.index();
        assert_eq!(l.type_name(syn), Some("tcp_syn"));
        assert_eq!(l.type_name(l.type_count()), None);
        assert!(l.is_setup(syn));
        let setups: Vec<_> = (0..l.type_count())
            .filter(|i| l.is_setup(*i))
            .filter_map(|i| l.type_name(i))
            .collect();
        assert_eq!(
            setups,
            [
                "tcp_syn",
                "quic",
                "quic_initial",
                "wireguard_initiation",
                "ike_sa_init",
                "dtls_client_hello",
                "openvpn_hard_reset"
            ],
            "the defaults and the configured quic"
        );
        assert_eq!(l.setup_mask().len(), l.type_count());
        assert_eq!(l.next(&cfg, &classifier).generation, 1);
    }
}
