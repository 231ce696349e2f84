//! Source address → tenant, by longest-prefix match over IPv4 and IPv6.
//!
//! The prefixes are flattened once into sorted, non-overlapping address ranges, so a
//! lookup is one binary search however many prefixes there are, and nested prefixes
//! resolve to the longest one by construction.
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::{ConfigError, TenantId};

/// Name of the tenant that holds every source no prefix covers.
pub const UNASSIGNED: &str = "unassigned";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    tenant: Vec<TenantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: toml::Spanned<String>,
    prefixes: Vec<toml::Spanned<String>>,
}

/// Sorted range starts with the tenant of each range.
#[derive(Clone, Debug, Default)]
struct RangeTable<T> {
    starts: Vec<T>,
    tenants: Vec<TenantId>,
}

impl<T: Copy + Ord + Default> RangeTable<T> {
    #[inline]
    fn lookup(&self, addr: T) -> TenantId {
        let i = self.starts.partition_point(|s| *s <= addr);
        if i == 0 {
            TenantId::UNASSIGNED
        } else {
            self.tenants[i - 1]
        }
    }

    fn push(&mut self, start: T, tenant: TenantId) {
        if self.starts.last() == Some(&start) {
            self.tenants.pop();
            self.starts.pop();
        }
        if self.tenants.last() == Some(&tenant) {
            return;
        }
        self.starts.push(start);
        self.tenants.push(tenant);
    }
}

/// One prefix as a closed range.
struct Range<T> {
    start: T,
    end: T,
    tenant: TenantId,
}

fn flatten<T>(mut prefixes: Vec<Range<T>>, max: T, one: impl Fn(T) -> T) -> RangeTable<T>
where
    T: Copy + Ord + Default,
{
    // Wider prefixes first at equal starts; prefixes are either nested or disjoint.
    prefixes.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut table = RangeTable {
        starts: vec![T::default()],
        tenants: vec![TenantId::UNASSIGNED],
    };
    let mut open: Vec<(T, TenantId)> = Vec::new();
    let close = |open: &mut Vec<(T, TenantId)>, table: &mut RangeTable<T>| {
        if let Some((end, _)) = open.pop() {
            let parent = open.last().map(|p| p.1).unwrap_or(TenantId::UNASSIGNED);
            if end != max {
                table.push(one(end), parent);
            }
        }
    };
    for p in prefixes {
        while open.last().is_some_and(|(end, _)| *end < p.start) {
            close(&mut open, &mut table);
        }
        table.push(p.start, p.tenant);
        open.push((p.end, p.tenant));
    }
    while !open.is_empty() {
        close(&mut open, &mut table);
    }
    table
}

/// The tenant map: names plus IPv4 and IPv6 range tables.
#[derive(Clone, Debug)]
pub struct TenantMap {
    names: Vec<String>,
    v4: RangeTable<u32>,
    v6: RangeTable<u128>,
    warnings: Vec<String>,
}

impl Default for TenantMap {
    fn default() -> TenantMap {
        TenantMap {
            names: vec![UNASSIGNED.to_string()],
            v4: RangeTable::default(),
            v6: RangeTable::default(),
            warnings: Vec::new(),
        }
    }
}

impl TenantMap {
    /// Reads a tenants file (see [`TenantMap::parse`]).
    pub fn load(path: &Path) -> Result<TenantMap, ConfigError> {
        let text = crate::config::read_text(path)?;
        TenantMap::parse(path, &text)
    }

    /// Parses a tenants file:
    ///
    /// ```toml
    /// [[tenant]]
    /// name = "acme"
    /// prefixes = ["10.1.0.0/16", "2001:db8:1::/48"]
    /// ```
    ///
    /// Errors name the file, line and column. A prefix listed for two tenants is an error;
    /// nested prefixes are fine (the longest wins). A tenant listed twice (its prefixes are
    /// merged) and a prefix with host bits set (`10.1.2.3/8` is read as `10.0.0.0/8`) are
    /// kept, with a warning in [`TenantMap::warnings`].
    pub fn parse(path: &Path, text: &str) -> Result<TenantMap, ConfigError> {
        let file: TenantFile = toml::from_str(text)
            .map_err(|e| ConfigError::at(path, text, e.span(), e.message().to_string()))?;
        let mut names = vec![UNASSIGNED.to_string()];
        let mut v4: Vec<Range<u32>> = Vec::new();
        let mut v6: Vec<Range<u128>> = Vec::new();
        let mut seen: std::collections::HashMap<(u128, u8, bool), usize> = Default::default();
        let mut warnings = Vec::new();
        let warn = |warnings: &mut Vec<String>, span, what: String| {
            warnings.push(ConfigError::at(path, text, Some(span), what).to_string());
        };
        for entry in file.tenant {
            let name = entry.name.get_ref().trim().to_string();
            if name.is_empty() || name == UNASSIGNED {
                return Err(ConfigError::at(path, text, Some(entry.name.span()), format!(
                    "tenant name {name:?} is reserved or empty; expected a non-empty name other than \"{UNASSIGNED}\""
                )));
            }
            let id = match names.iter().position(|n| *n == name) {
                Some(i) => {
                    warn(
                        &mut warnings,
                        entry.name.span(),
                        format!(
                            "tenant {name:?} is listed more than once; its prefixes are merged"
                        ),
                    );
                    i
                }
                None => {
                    if names.len() > u16::MAX as usize {
                        return Err(ConfigError::at(
                            path,
                            text,
                            Some(entry.name.span()),
                            "more than 65535 tenants".into(),
                        ));
                    }
                    names.push(name.clone());
                    names.len() - 1
                }
            };
            let tenant = TenantId(id as u16);
            for prefix in entry.prefixes {
                let (addr, len) = parse_prefix(prefix.get_ref())
                    .map_err(|reason| ConfigError::at(path, text, Some(prefix.span()), reason))?;
                let key = match addr {
                    IpAddr::V4(a) => (u128::from(u32::from(a)), len, false),
                    IpAddr::V6(a) => (u128::from(a), len, true),
                };
                if let Some(other) = seen.insert(key, id) {
                    if other != id {
                        return Err(ConfigError::at(
                            path,
                            text,
                            Some(prefix.span()),
                            format!(
                                "prefix {} is listed for both {:?} and {:?}",
                                prefix.get_ref(),
                                names[other],
                                names[id]
                            ),
                        ));
                    }
                    continue;
                }
                let host_bits = match addr {
                    IpAddr::V4(a) => {
                        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        let start = u32::from(a) & mask;
                        (start != u32::from(a))
                            .then(|| format!("{}/{len}", std::net::Ipv4Addr::from(start)))
                    }
                    IpAddr::V6(a) => {
                        let mask = if len == 0 {
                            0
                        } else {
                            u128::MAX << (128 - len)
                        };
                        let start = u128::from(a) & mask;
                        (start != u128::from(a))
                            .then(|| format!("{}/{len}", std::net::Ipv6Addr::from(start)))
                    }
                };
                if let Some(network) = host_bits {
                    warn(
                        &mut warnings,
                        prefix.span(),
                        format!(
                            "prefix {:?} has host bits set; it is read as {network}",
                            prefix.get_ref()
                        ),
                    );
                }
                match addr {
                    IpAddr::V4(a) => {
                        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        let start = u32::from(a) & mask;
                        v4.push(Range {
                            start,
                            end: start | !mask,
                            tenant,
                        });
                    }
                    IpAddr::V6(a) => {
                        let mask = if len == 0 {
                            0
                        } else {
                            u128::MAX << (128 - len)
                        };
                        let start = u128::from(a) & mask;
                        v6.push(Range {
                            start,
                            end: start | !mask,
                            tenant,
                        });
                    }
                }
            }
        }
        Ok(TenantMap {
            names,
            v4: flatten(v4, u32::MAX, |e| e + 1),
            v6: flatten(v6, u128::MAX, |e| e + 1),
            warnings,
        })
    }

    /// The tenant of a source address.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> TenantId {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(u32::from(v4)),
                None => self.v6.lookup(u128::from(a)),
            },
        }
    }

    /// A tenant's name.
    pub fn name(&self, id: TenantId) -> &str {
        self.names
            .get(id.0 as usize)
            .map(String::as_str)
            .unwrap_or(UNASSIGNED)
    }

    /// All tenant names, `unassigned` first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// What the file holds that is kept but probably not meant (a tenant listed twice, a
    /// prefix with host bits set), each naming the file, line and column.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Parses `ADDR/LEN` (or a bare address, as a host prefix).
fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| {
        format!("prefix {s:?}: {addr:?} is not an IPv4 or IPv6 address; expected e.g. \"10.1.0.0/16\" or \"2001:db8::/32\"")
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.trim().parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "prefix {s:?}: length {l:?} is not a number from 0 to {max}"
                ))
            }
        },
    };
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> TenantMap {
        TenantMap::parse(Path::new("tenants.toml"), text).unwrap()
    }

    fn who(m: &TenantMap, a: &str) -> String {
        m.name(m.lookup(a.parse().unwrap())).to_string()
    }

    #[test]
    fn duplicate_names_and_host_bits_are_kept_with_warnings() {
        let m = map(r#"
[[tenant]]
name = "a"
prefixes = ["10.1.2.3/8"]
[[tenant]]
name = "a"
prefixes = ["2001:db8::1/32", "192.0.2.1"]
"#);
        assert_eq!(who(&m, "10.200.0.1"), "a");
        assert_eq!(m.names().len(), 2);
        let w = m.warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("tenants.toml:4:13: prefix \"10.1.2.3/8\" has host bits set; it is read as 10.0.0.0/8"), "{w:?}");
        assert!(
            w[1].starts_with("tenants.toml:6:8: tenant \"a\" is listed more than once"),
            "{w:?}"
        );
        assert!(w[2].contains("read as 2001:db8::/32"), "{w:?}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_named_with_its_position() {
        let p = std::env::temp_dir().join(format!("tw-tenants-latin1-{}", std::process::id()));
        std::fs::write(&p, b"[[tenant]]\nname = \"caf\xe9\"\n").unwrap();
        let e = TenantMap::load(&p).unwrap_err().to_string();
        assert!(
            e.ends_with(":2:12: not UTF-8 text (byte 22); the file must be UTF-8"),
            "{e}"
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn longest_prefix_wins_and_ranges_close_back_to_the_parent() {
        let m = map(r#"
[[tenant]]
name = "wide"
prefixes = ["10.0.0.0/8"]
[[tenant]]
name = "narrow"
prefixes = ["10.1.0.0/16", "10.1.2.3/32"]
[[tenant]]
name = "host"
prefixes = ["10.1.2.4/32"]
"#);
        assert_eq!(who(&m, "10.2.3.4"), "wide");
        assert_eq!(who(&m, "10.1.0.0"), "narrow");
        assert_eq!(who(&m, "10.1.2.3"), "narrow");
        assert_eq!(who(&m, "10.1.2.4"), "host");
        assert_eq!(who(&m, "10.1.2.5"), "narrow");
        assert_eq!(who(&m, "10.1.255.255"), "narrow");
        assert_eq!(who(&m, "10.2.0.0"), "wide");
        assert_eq!(who(&m, "10.255.255.255"), "wide");
        assert_eq!(who(&m, "11.0.0.0"), UNASSIGNED);
        assert_eq!(who(&m, "9.255.255.255"), UNASSIGNED);
    }

    #[test]
    fn default_routes_and_host_routes() {
        let m = map(r#"
[[tenant]]
name = "everyone"
prefixes = ["0.0.0.0/0", "::/0"]
[[tenant]]
name = "top"
prefixes = ["255.255.255.255/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "0.0.0.0/32"]
[[tenant]]
name = "v6"
prefixes = ["2001:db8:1::/48"]
"#);
        assert_eq!(who(&m, "1.2.3.4"), "everyone");
        assert_eq!(who(&m, "0.0.0.0"), "top");
        assert_eq!(who(&m, "0.0.0.1"), "everyone");
        assert_eq!(who(&m, "255.255.255.255"), "top");
        assert_eq!(who(&m, "255.255.255.254"), "everyone");
        assert_eq!(who(&m, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "top");
        assert_eq!(who(&m, "2001:db8:1:ffff::1"), "v6");
        assert_eq!(who(&m, "2001:db8:2::1"), "everyone");
        assert_eq!(who(&m, "::1"), "everyone");
    }

    #[test]
    fn overlapping_siblings_and_mapped_v4() {
        let m = map(r#"
[[tenant]]
name = "a"
prefixes = ["192.0.2.0/25", "192.0.2.128/26"]
[[tenant]]
name = "b"
prefixes = ["192.0.2.192/26", "192.0.2.0/24"]
"#);
        assert_eq!(who(&m, "192.0.2.1"), "a");
        assert_eq!(who(&m, "192.0.2.130"), "a");
        assert_eq!(who(&m, "192.0.2.200"), "b");
        assert_eq!(who(&m, "::ffff:192.0.2.1"), "a");
        assert_eq!(who(&m, "192.0.3.0"), UNASSIGNED);
    }

    #[test]
    fn empty_map_is_all_unassigned() {
        let m = TenantMap::default();
        assert_eq!(who(&m, "10.0.0.1"), UNASSIGNED);
        assert_eq!(who(&m, "2001:db8::1"), UNASSIGNED);
    }

    #[test]
    fn errors_name_line_and_column() {
        let text = "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.1.0.0/16\", \"10.1.0.0/33\"]\n";
        let e = TenantMap::parse(Path::new("t.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:3:28"), "{e}");
        assert!(e.contains("0 to 32"), "{e}");
        let e = TenantMap::parse(
            Path::new("t.toml"),
            "[[tenant]]\nname = \"x\"\nprefix = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.toml:3:1") && e.contains("prefix"), "{e}");
        let e = TenantMap::parse(
            Path::new("t.toml"),
            "[[tenant]]\nname = \"x\"\nprefixes = [\"acme\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
        let dup = "[[tenant]]\nname = \"x\"\nprefixes = [\"10.0.0.0/8\"]\n[[tenant]]\nname = \"y\"\nprefixes = [\"10.0.0.0/8\"]\n";
        let e = TenantMap::parse(Path::new("t.toml"), dup)
            .unwrap_err()
            .to_string();
        assert!(e.contains("both") && e.contains("t.toml:6"), "{e}");
    }
}
