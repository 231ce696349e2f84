//! `--print-packets`: one packet's labels on one line, like `tcpdump -r`.
use tapwatch_classifier::Classifier;

/// One packet's labels on one line, for `--print-packets`.
pub fn packet_line(classifier: &Classifier, m: &tapwatch_classifier::PacketMeta) -> String {
    let ts = m.ts_ns as f64 / 1e9;
    let addr = |a: Option<std::net::IpAddr>, port: u16| match a {
        Some(a) if port != 0 => format!("{a}.{port}"),
        Some(a) => a.to_string(),
        None => "-".into(),
    };
    let mut line = format!(
        "{ts:.6} {} > {} {} len {} ({}) {}",
        addr(m.src, m.src_port),
        addr(m.dst, m.dst_port),
        classifier.type_name(m.kind),
        m.wire_len,
        m.size_class.name(),
        classifier.tenants().name(m.tenant),
    );
    if let Some(v) = m.outer_vlan {
        line.push_str(&format!(" vlan {v}"));
    }
    if let Some(v) = m.inner_vlan {
        line.push_str(&format!(".{v}"));
    }
    if m.fragment != tapwatch_classifier::Fragment::No {
        line.push_str(&format!(" frag {:?}", m.fragment));
    }
    if let Some(bad) = m.malformed {
        line.push_str(&format!(" [malformed {bad}]"));
    }
    line
}
