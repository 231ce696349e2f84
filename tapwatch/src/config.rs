//! The config file and the tenants file, loaded into a classifier.
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use tapwatch_analyzer::AnalyzerConfig;
use tapwatch_classifier::setting::Step;
use tapwatch_classifier::{
    read_text, Classifier, ClassifierConfig, ConfigError, SettingError, SettingPath, TenantMap,
};

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
    /// `[rules]`: severities, durations, flap damping, overrides, silences, isolation advice.
    #[serde(default)]
    pub rules: tapwatch_rules::RulesConfig,
    /// `[[webhook]]`: alert receivers.
    #[serde(default)]
    pub webhook: Vec<tapwatch_rules::webhook::WebhookConfig>,
    /// `[storage]`: data directory, batching, spool, retention, agent id.
    #[serde(default)]
    pub storage: tapwatch_storage::StorageConfig,
    /// `[clickhouse]`: the server rows go to (else the file store).
    #[serde(default)]
    pub clickhouse: tapwatch_storage::ClickHouseConfig,
    /// `[[sflow]]`: sockets `tapwatch run` receives sFlow on (besides `--sflow`).
    #[serde(default)]
    pub sflow: Vec<SflowListen>,
    /// `[evidence]`: header-only captures of firing alerts.
    #[serde(default)]
    pub evidence: crate::evidence::EvidenceConfig,
}

/// `[[sflow]]`: one sFlow socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SflowListen {
    /// Address and port to receive datagrams on, e.g. `"0.0.0.0:6343"`.
    pub listen: std::net::SocketAddr,
}

impl Config {
    /// Reads and validates a config file: syntax, unknown keys, and every setting's range
    /// (an error names the file, line, column, setting and what is allowed).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = read_text(path).context("reading config")?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::at(path, &text, e.span(), e.message().to_string()))?;
        config.check().map_err(|e| {
            let span = locate(&text, &e.path);
            ConfigError::at(path, &text, span, e.to_string())
        })?;
        config
            .clickhouse
            .check()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    /// Every section's settings against their ranges.
    fn check(&self) -> Result<(), SettingError> {
        self.analyzer.check()?;
        self.rules.check()?;
        let hooks = SettingPath::new("webhook");
        for (i, w) in self.webhook.iter().enumerate() {
            w.check(&hooks.index(i))?;
        }
        self.storage.check()?;
        self.evidence.check()?;
        self.clickhouse.check_settings()
    }
}

/// The byte span of a setting's value in the file, or of the deepest table on its path
/// that the file names (a default that is out of range with another setting).
fn locate(text: &str, path: &SettingPath) -> Option<std::ops::Range<usize>> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut value: Option<&toml::Spanned<DeValue>> = None;
    let mut table = doc.get_ref();
    let mut best = None;
    for step in &path.0 {
        let next = match (step, value.map(|v| v.get_ref())) {
            (Step::Key(k), None) | (Step::Key(k), Some(DeValue::Table(_))) => {
                if let Some(DeValue::Table(t)) = value.map(|v| v.get_ref()) {
                    table = t;
                }
                table
                    .iter()
                    .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                    .map(|(_, v)| v)
            }
            (Step::Index(i), Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(v) = next else { break };
        best = Some(v.span());
        value = Some(v);
    }
    best
}

impl Config {
    /// The config file at `path`, or the defaults when none is given.
    pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<Config> {
        path.map_or_else(|| Ok(Config::default()), Config::load)
    }
}

/// The config file and the classifier the common flags describe.
pub fn load(common: &CommonArgs) -> anyhow::Result<(Config, Classifier)> {
    let mut config = Config::load_or_default(common.config.as_deref())?;
    if let Some(d) = &common.delivery.data_dir {
        config.storage.data_dir = d.clone();
    }
    let tenants = match &common.tenants {
        Some(p) => load_tenants(p)?,
        None => TenantMap::default(),
    };
    for o in &config.analyzer.overrides {
        if common.tenants.is_some() && !tenants.names().iter().any(|n| o.matches(n)) {
            tracing::warn!(
                "analyzer.override for tenant {:?} matches no tenant of the tenants file",
                o.tenant
            );
        }
    }
    let classifier = Classifier::new(tenants, &config.classifier);
    Ok((config, classifier))
}

/// What one `[[analyzer.override]]` sets, and (with a tenant map) which tenants it is the
/// first match for.
fn describe_override(
    a: &tapwatch_analyzer::AnalyzerConfig,
    i: usize,
    tenants: Option<&TenantMap>,
) -> String {
    let o = &a.overrides[i];
    let mut set = Vec::new();
    let mut put = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            set.push(format!("{name} {v}"));
        }
    };
    put("heavy_min_share", o.heavy_min_share);
    put("heavy_min_pps", o.heavy_min_pps);
    put("heavy_min_bytes_per_s", o.heavy_min_bytes_per_s);
    put("growth_min_exponent", o.growth_min_exponent);
    put("heartbeat_k", o.heartbeat_k);
    let applies = match tenants {
        Some(t) => {
            let first: Vec<&str> = t
                .names()
                .iter()
                .filter(|n| a.overrides.iter().position(|x| x.matches(n)) == Some(i))
                .map(String::as_str)
                .collect();
            if first.is_empty() {
                "; first match for no tenant".to_string()
            } else {
                format!("; applies to {}", first.join(", "))
            }
        }
        None => String::new(),
    };
    format!(
        "analyzer.override[{}]: tenant {:?} -> {}{applies}",
        i + 1,
        o.tenant,
        if set.is_empty() {
            "nothing".to_string()
        } else {
            set.join(", ")
        }
    )
}

/// A tenants file, its warnings (a tenant listed twice, host bits set) logged.
fn load_tenants(path: &Path) -> anyhow::Result<TenantMap> {
    let map = TenantMap::load(path)?;
    for w in map.warnings() {
        tracing::warn!("{w}");
    }
    Ok(map)
}

/// `tapwatch rules check`: loads everything a run would load, then explains it.
pub fn check(path: &Path, tenants: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    tapwatch_rules::AlertEngine::new(config.rules.clone())
        .with_context(|| format!("{}", path.display()))?;
    let tenant_map = match tenants {
        Some(t) => Some(load_tenants(t)?),
        None => None,
    };
    let a = &config.analyzer;
    println!("{}: valid", path.display());
    if let Some(t) = &tenant_map {
        println!(
            "tenants: {} ({} besides \"unassigned\")",
            t.names()[1..].join(", "),
            t.names().len() - 1
        );
    }
    println!(
        "windows: {} s, late packets counted up to {} s; rolled up to 10 s and 60 s",
        a.window_s, a.grace_s
    );
    let h = &a.heavy_hitters;
    println!(
        "heavy_hitter: a source, source type/size, destination service or tenant with >= {:.0}% of a window, >= {} packets/s (or {} bytes/s), > {}x and > {} sd above its own baseline (larger of EWMAs alpha {} and {}); warm-up {} s learns baselines, flags only a destination with >= {:.0}% answering < {:.0}% and receiving SYNs or UDP from ports < 1024; resolves after {} quiet windows",
        h.min_share * 100.0, h.min_pps, h.min_bytes_per_s, h.baseline_factor, h.baseline_sigmas, h.ewma_alpha, h.long_alpha, h.warmup_s, h.warmup_share * 100.0, h.warmup_max_reply * 100.0, h.clear_windows
    );
    let g = &a.setup_growth;
    let extra = if g.setup_types.is_empty() {
        String::new()
    } else {
        format!(" and {}", g.setup_types.join(", "))
    };
    println!(
        "quadratic_setup_growth: per tenant, setups (TCP SYN, QUIC Initial, WireGuard initiation, IKE_SA_INIT, DTLS ClientHello, OpenVPN hard reset{extra}) ~ nodes^b over the last {} points of {} s; fires at b >= {} with nodes spanning >= {}x and R2 >= {}",
        g.history, g.point_s, g.min_exponent, g.min_node_range, g.min_r2
    );
    let hb = &a.heartbeat;
    println!(
        "missed_heartbeat: BFD by detect multiplier x interval; other flows periodic after >= {} intervals over {} s with sd/mean of the intervals < {} x (n/{})^2, late after {} periods (period {}..{} s, packets <= {} bytes)",
        hb.min_samples, hb.min_learn_s, hb.max_cv, hb.full_samples, hb.k, hb.min_period_s, hb.max_period_s, hb.max_packet_bytes
    );
    let hs = &a.handshake;
    println!(
        "syn_retransmits: >= {} retransmitted SYNs and >= {:.0}% of a server's SYNs within {} s",
        hs.min_retransmits,
        hs.min_retransmit_ratio * 100.0,
        hs.burst_window_s
    );
    let l = &a.latency;
    println!(
        "latency_shift: per server and measure (handshake_server, handshake_client, response, echo, tcp_rtt, rst) in {} s windows against a {} s baseline: median >= {}x and >= {} ms above it for {} windows with >= {} samples, or one sample >= {} ms and >= {}x the baseline p99; critical when the median is >= {} ms",
        l.window_s, l.baseline_s, l.factor, l.min_delta_ms, l.windows, l.min_samples, l.spike_min_ms, l.spike_factor, l.critical_ms
    );
    for i in 0..a.overrides.len() {
        println!("{}", describe_override(a, i, tenant_map.as_ref()));
    }
    // flow health (issue 14)
    let td = &a.traffic_drop;
    println!(
        "traffic_drop: a destination, service or tenant steady over {} s (>= {} packets/s, no window below {:.0}% of the mean) below {:.0}% of it for {} windows of {} s; critical when peers gained >= {:.0}% of its rate; {} configured groups; {} keys tracked",
        td.baseline_s, td.min_baseline_pps, td.steady_floor * 100.0, td.drop_ratio * 100.0, td.min_windows, td.window_s, td.min_pickup * 100.0, td.group.len(), td.max_tracked
    );
    let rt = &a.retransmits;
    println!(
        "retransmits: >= {} retransmitted data segments, >= {:.1}% of a server's segments and >= {}x its baseline share within {} s",
        rt.min_retransmits, rt.min_share * 100.0, rt.baseline_factor, rt.window_s
    );
    let up = &a.upgrade_failure;
    println!(
        "upgrade_failure: >= {:.0}% of >= {} HTTP upgrade attempts to a server failed (not 101, or unanswered by close or a resend after {} s) within {} s",
        up.min_failure_share * 100.0, up.min_attempts, up.timeout_s, up.window_s
    );
    let r = &config.rules;
    for (kind, k) in [
        ("heavy_hitter", &r.heavy_hitter),
        ("quadratic_setup_growth", &r.quadratic_setup_growth),
        ("missed_heartbeat", &r.missed_heartbeat),
        ("syn_retransmits", &r.syn_retransmits),
        ("latency_shift", &r.latency_shift),
        ("upgrade_failure", &r.upgrade_failure),
        ("retransmits", &r.retransmits),
        ("traffic_drop", &r.traffic_drop),
    ] {
        if k.disabled {
            println!("rules.{kind}: disabled");
        } else if k.severity.is_some() || k.min_duration_s > 0.0 || k.resolve_hold_s > 0.0 {
            println!(
                "rules.{kind}: severity {:?}, fires after {} s, resolves held {} s",
                k.severity, k.min_duration_s, k.resolve_hold_s
            );
        }
    }
    for o in &r.overrides {
        println!(
            "override: kind {:?} tenant {:?} subject {:?} -> severity {:?}{}",
            o.kind,
            o.tenant,
            o.subject,
            o.severity,
            if o.mute { ", muted" } else { "" }
        );
    }
    for s in &r.silences {
        println!(
            "silence: kind {:?} tenant {:?} subject {:?} from {} until {} {}",
            s.kind, s.tenant, s.subject, s.from, s.until, s.comment
        );
    }
    println!(
        "isolation advice: on setup growth {}, on tenant share {}",
        r.isolation.on_setup_growth, r.isolation.on_tenant_share
    );
    for w in &config.webhook {
        println!(
            "webhook: {} ({:?}, {} req/s, timeout {} s, signed: {})",
            w.url,
            w.format,
            w.rate_per_s,
            w.timeout_s,
            w.secret_file.is_some() || w.secret_env.is_some()
        );
    }
    let st = &config.storage;
    match config.clickhouse.effective_url() {
        Some(url) => println!(
            "history: ClickHouse {url}, database {}{}, batches of {} rows or {} s, spool up to {} MiB under {}",
            config.clickhouse.database,
            config
                .clickhouse
                .cluster
                .as_ref()
                .map(|c| format!(" on cluster {c}"))
                .unwrap_or_default(),
            st.batch_rows,
            st.batch_age_s,
            st.spool_mib,
            st.data_dir.join("spool").display()
        ),
        None => println!(
            "history: hourly files under {} (no [clickhouse] url and no {})",
            st.data_dir.display(),
            tapwatch_storage::URL_ENV
        ),
    }
    Ok(())
}
