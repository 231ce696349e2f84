//! History read back into a starting daemon: the setup-growth points an agent stored, so a
//! week of slow growth is not forgotten by a restart.
use crate::files::FileStore;
use crate::{ClickHouse, StorageError};

/// One stored setup-growth point of one tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGrowthPoint {
    /// Tenant name.
    pub tenant: String,
    /// Point width, seconds.
    pub point_s: u32,
    /// Point start (Unix seconds).
    pub ts: u32,
    /// Active nodes in the point.
    pub nodes: u64,
    /// Connection setups in the point.
    pub setups: u64,
}

/// Where stored points are read from.
pub enum GrowthSource<'a> {
    /// A ClickHouse server.
    ClickHouse(&'a ClickHouse),
    /// The embedded file store.
    Files(&'a FileStore),
}

/// The setup-growth points `agent` stored since `since` (Unix seconds) at widths of at
/// least `min_point_s`, ordered by tenant, width and time (each point once, even where a
/// retried batch stored it twice).
pub fn growth_points(
    source: &GrowthSource<'_>,
    agent: &str,
    since: u32,
    min_point_s: u32,
) -> Result<Vec<StoredGrowthPoint>, StorageError> {
    let mut points = match source {
        GrowthSource::ClickHouse(ch) => {
            let table = ch.layout.query_table("setup_growth");
            let sql = format!(
                "SELECT tenant, point_s, toUInt32(ts) AS ts, max(nodes) AS nodes, max(setups) AS setups \
                 FROM {table} WHERE agent = '{}' AND ts >= toDateTime({since}) AND point_s >= {min_point_s} \
                 GROUP BY tenant, point_s, ts",
                agent.replace('\\', "\\\\").replace('\'', "\\'")
            );
            ch.query_json(&sql)?
                .into_iter()
                .map(|r| {
                    let n = |k: &str| r.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                    StoredGrowthPoint {
                        tenant: r
                            .get("tenant")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        point_s: n("point_s") as u32,
                        ts: n("ts") as u32,
                        nodes: n("nodes"),
                        setups: n("setups"),
                    }
                })
                .collect::<Vec<_>>()
        }
        GrowthSource::Files(store) => store
            .read("setup_growth", since, u32::MAX)?
            .into_iter()
            .filter(|r| r.str("agent") == agent)
            .map(|r| StoredGrowthPoint {
                tenant: r.str("tenant"),
                point_s: r.u64("point_s") as u32,
                ts: r.u64("ts") as u32,
                nodes: r.u64("nodes"),
                setups: r.u64("setups"),
            })
            .filter(|p| p.ts >= since && p.point_s >= min_point_s)
            .collect(),
    };
    points.sort_by(|a, b| (&a.tenant, a.point_s, a.ts).cmp(&(&b.tenant, b.point_s, b.ts)));
    points.dedup_by(|a, b| (&a.tenant, a.point_s, a.ts) == (&b.tenant, b.point_s, b.ts));
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::GrowthRow;

    #[test]
    fn the_file_store_gives_back_an_agents_coarse_points_once_each_in_order() {
        let dir = std::env::temp_dir().join(format!("tw-restore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FileStore::new(&dir);
        let row = |agent: &str, tenant: &str, point_s: u32, ts: u32, nodes: u64| GrowthRow {
            ts,
            agent: agent.into(),
            batch: 1,
            tenant: tenant.into(),
            point_s,
            nodes,
            setups: nodes * nodes,
            exponent: 0.0,
            exponent_low: 0.0,
            exponent_high: 0.0,
            r2: 0.0,
            fit_points: 0,
        };
        let base = 1_780_000_000;
        let rows = vec![
            row("relay1", "acme", 3600, base + 7200, 30),
            row("relay1", "acme", 3600, base + 3600, 20),
            row("relay1", "acme", 3600, base + 3600, 20), // a retried batch
            row("relay1", "acme", 10, base + 3600, 9),    // too fine
            row("relay2", "acme", 3600, base + 3600, 99), // another agent
            row("relay1", "acme", 600, base - 86_400, 5), // too old
            row("relay1", "beta", 600, base + 600, 7),
        ];
        store.write("relay1", &rows).unwrap();
        let got = growth_points(&GrowthSource::Files(&store), "relay1", base, 600).unwrap();
        let key: Vec<_> = got
            .iter()
            .map(|p| (p.tenant.as_str(), p.point_s, p.ts, p.nodes))
            .collect();
        assert_eq!(
            key,
            vec![
                ("acme", 3600, base + 3600, 20),
                ("acme", 3600, base + 7200, 30),
                ("beta", 600, base + 600, 7),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
