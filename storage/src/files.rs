//! The embedded file store: the same rows as ClickHouse gets, as `TabSeparatedWithNames`
//! files, one per table, hour (of the rows' time) and agent:
//! `DATA_DIR/TABLE/YYYYMMDDTHH.AGENT.tsv`. ClickHouse loads them directly
//! (`tapwatch load`, or `clickhouse-client --query "INSERT INTO tapwatch.TABLE FORMAT
//! TabSeparatedWithNames" < FILE`), and `tapwatch query` reads them.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::rows::StoredRow;
use crate::spool::{BatchMeta, SpooledBatch};
use crate::tsv;
use crate::StorageError;

/// The hour bucket of a Unix time: `YYYYMMDDTHH`.
pub fn hour_name(ts: u32) -> String {
    let days = i64::from(ts) / 86_400;
    let (y, m, d) = civil(days);
    format!("{y:04}{m:02}{d:02}T{:02}", (ts % 86_400) / 3600)
}

/// (year, month, day) of days since 1970-01-01.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn safe(agent: &str) -> String {
    agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes rows to hourly files under a data directory.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends rows to their hourly files.
    pub fn write<T: StoredRow>(&self, agent: &str, rows: &[T]) -> Result<(), StorageError> {
        let mut start = 0;
        while start < rows.len() {
            let hour = hour_name(rows[start].ts());
            let mut end = start + 1;
            while end < rows.len() && hour_name(rows[end].ts()) == hour {
                end += 1;
            }
            let mut buf = Vec::new();
            for r in &rows[start..end] {
                tsv::write_row(r, &mut buf).map_err(|e| StorageError::Config(e.to_string()))?;
            }
            self.append(T::TABLE, T::COLUMN_NAMES, &hour, agent, &buf)?;
            start = end;
        }
        Ok(())
    }

    /// Appends TabSeparated rows (no header) of `table` to the file of `hour`.
    pub fn append(
        &self,
        table: &str,
        columns: &[&str],
        hour: &str,
        agent: &str,
        tsv_rows: &[u8],
    ) -> Result<(), StorageError> {
        let dir = self.dir.join(table);
        let io = |path: &Path, e: std::io::Error| StorageError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let path = dir.join(format!("{hour}.{}.tsv", safe(agent)));
        let fresh = !path.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        if fresh {
            f.write_all(&tsv::header(columns))
                .map_err(|e| io(&path, e))?;
        }
        f.write_all(tsv_rows).map_err(|e| io(&path, e))
    }

    /// Appends TabSeparated rows (no header, `ts` first, as every table has it) of `table`,
    /// each to the file of its own hour (a spooled batch may span two).
    pub fn append_rows(
        &self,
        table: &str,
        columns: &[&str],
        agent: &str,
        tsv_rows: &[u8],
    ) -> Result<(), StorageError> {
        let mut by_hour: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for line in tsv_rows.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let ts = line
                .split(|b| *b == b'\t')
                .next()
                .and_then(|f| std::str::from_utf8(f).ok())
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            let buf = by_hour.entry(hour_name(ts)).or_default();
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        for (hour, rows) in by_hour {
            self.append(table, columns, &hour, agent, &rows)?;
        }
        Ok(())
    }

    /// Files of `table`, oldest hour first, with their hour.
    pub fn files(&self, table: &str) -> Vec<(String, PathBuf)> {
        let mut v: Vec<(String, PathBuf)> = fs::read_dir(self.dir.join(table))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                if !name.ends_with(".tsv") {
                    return None;
                }
                Some((name.split('.').next()?.to_string(), e.path()))
            })
            .collect();
        v.sort();
        v
    }

    /// Rows of `table` from hours overlapping `[since, until)` (Unix seconds).
    pub fn read(&self, table: &str, since: u32, until: u32) -> Result<Vec<FileRow>, StorageError> {
        let lo = hour_name(since);
        let hi = hour_name(until.saturating_sub(1));
        let mut out = Vec::new();
        for (hour, path) in self.files(table) {
            if hour < lo || hour > hi {
                continue;
            }
            let text = fs::read(&path).map_err(|e| StorageError::Io {
                path: path.clone(),
                source: e,
            })?;
            let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            let Some(head) = lines.next() else { continue };
            let names: std::sync::Arc<[String]> = head
                .split(|b| *b == b'\t')
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            for (i, line) in lines.enumerate() {
                let fields: Vec<Vec<u8>> = line.split(|b| *b == b'\t').map(tsv::unescape).collect();
                if fields.len() != names.len() {
                    return Err(StorageError::Corrupt {
                        path: path.clone(),
                        line: i + 2,
                        why: format!(
                            "{} fields where the header names {}",
                            fields.len(),
                            names.len()
                        ),
                    });
                }
                out.push(FileRow {
                    names: names.clone(),
                    fields,
                });
            }
        }
        Ok(out)
    }

    /// Deletes hourly files older than each table's retention; returns how many.
    pub fn drop_expired(&self, retention: &dyn Fn(&str) -> u32, now: u32) -> usize {
        let mut n = 0;
        for table in crate::rows::TABLES {
            let keep_from = hour_name(now.saturating_sub(retention(table).saturating_mul(86_400)));
            for (hour, path) in self.files(table) {
                if hour < keep_from && fs::remove_file(&path).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }
}

/// One row read back from a file, by column name.
#[derive(Clone, Debug)]
pub struct FileRow {
    names: std::sync::Arc<[String]>,
    fields: Vec<Vec<u8>>,
}

impl FileRow {
    fn raw(&self, col: &str) -> &[u8] {
        self.names
            .iter()
            .position(|n| n == col)
            .map(|i| self.fields[i].as_slice())
            .unwrap_or_default()
    }

    /// A text column.
    pub fn str(&self, col: &str) -> String {
        String::from_utf8_lossy(self.raw(col)).into_owned()
    }

    /// An integer column (0 when absent or not a number).
    pub fn u64(&self, col: &str) -> u64 {
        std::str::from_utf8(self.raw(col))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A float column.
    pub fn f64(&self, col: &str) -> f64 {
        std::str::from_utf8(self.raw(col))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0)
    }

    /// A `FixedString(16)` address column.
    pub fn address(&self, col: &str) -> [u8; 16] {
        let mut a = [0; 16];
        let raw = self.raw(col);
        if raw.len() == 16 {
            a.copy_from_slice(raw);
        }
        a
    }
}

/// Loads one file-store file (`TabSeparatedWithNames`) into ClickHouse, one insert per
/// batch, skipping batches ClickHouse already holds. Returns (rows loaded, batches skipped).
pub fn load_into(
    ch: &crate::ClickHouse,
    table: &str,
    columns: &[&str],
    text: &[u8],
) -> Result<(u64, u64), StorageError> {
    let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let Some(head) = lines.next() else {
        return Ok((0, 0));
    };
    let names: Vec<&[u8]> = head.split(|b| *b == b'\t').collect();
    let col = |n: &str| names.iter().position(|c| *c == n.as_bytes());
    let (Some(ia), Some(ib), Some(it)) = (col("agent"), col("batch"), col("ts")) else {
        return Err(StorageError::Config(format!(
            "{table}: the header lacks agent, batch or ts"
        )));
    };
    // The file's batches in file order, each with its rows.
    let mut batches: Vec<SpooledBatch> = Vec::new();
    let mut index: std::collections::HashMap<(String, u64), usize> = Default::default();
    for line in lines {
        let f: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
        let get = |i: usize| {
            String::from_utf8_lossy(&tsv::unescape(f.get(i).copied().unwrap_or_default()))
                .into_owned()
        };
        let (agent, batch, ts) = (
            get(ia),
            get(ib).parse().unwrap_or(0),
            get(it).parse().unwrap_or(0),
        );
        let at = *index.entry((agent.clone(), batch)).or_insert_with(|| {
            batches.push(SpooledBatch {
                meta: BatchMeta {
                    table: table.to_string(),
                    agent,
                    batch,
                    rows: 0,
                    ts_min: u32::MAX,
                    ts_max: 0,
                },
                tsv: Vec::new(),
            });
            batches.len() - 1
        });
        let b = &mut batches[at];
        b.meta.rows += 1;
        b.meta.ts_min = b.meta.ts_min.min(ts);
        b.meta.ts_max = b.meta.ts_max.max(ts);
        b.tsv.extend_from_slice(line);
        b.tsv.push(b'\n');
    }
    let (mut rows, mut skipped) = (0, 0);
    for b in &batches {
        if ch.batch_exists(&b.meta)? {
            skipped += 1;
            continue;
        }
        ch.insert_tsv(table, columns, &b.tsv, false)?;
        rows += b.meta.rows;
    }
    Ok((rows, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_and_retention_drops_old_hours() {
        let dir = std::env::temp_dir().join(format!("tw-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = FileStore::new(&dir);
        let now = 1_795_392_000 + 3600 * 5;
        let row = |ts: u32, tenant: &str| crate::rows::TenantRow {
            ts,
            agent: "a b".into(),
            batch: 1,
            window_ms: 1000,
            tenant: tenant.into(),
            packets: 3,
            bytes: 4,
            setups: 5,
            sources: 6,
        };
        store
            .write("a b", &[row(now - 10 * 86_400, "old"), row(now, "x\ty")])
            .unwrap();
        assert_eq!(store.files("tenants").len(), 2);
        assert_eq!(store.read("tenants", now, now + 1).unwrap().len(), 1);
        // A spooled batch spanning two hours lands in both hours' files.
        let mut tsv = Vec::new();
        for ts in [now - 3600, now] {
            crate::tsv::write_row(&row(ts, "spooled"), &mut tsv).unwrap();
        }
        let cols = <crate::rows::TenantRow as clickhouse::Row>::COLUMN_NAMES;
        store.append_rows("tenants", cols, "a b", &tsv).unwrap();
        assert_eq!(store.files("tenants").len(), 3);
        assert_eq!(store.read("tenants", now, now + 1).unwrap().len(), 2);
        let all = store.read("tenants", 0, u32::MAX).unwrap();
        assert_eq!(all.len(), 4);
        let x = all.iter().find(|r| r.str("tenant") == "x\ty").unwrap();
        assert_eq!(x.u64("sources"), 6);
        assert_eq!(store.drop_expired(&|_| 7, now), 1);
        let left = store.read("tenants", 0, u32::MAX).unwrap();
        assert_eq!(left.len(), 3);
        assert_eq!(left[0].str("agent"), "a b");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hour_names() {
        assert_eq!(hour_name(0), "19700101T00");
        assert_eq!(hour_name(1_795_392_000 + 3 * 3600 + 59), "20261123T03");
        assert_eq!(civil(19_723), (2024, 1, 1));
    }
}
