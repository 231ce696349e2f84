//! The embedded file store: the same rows as ClickHouse gets, as `TabSeparatedWithNames`
//! files, one per table, hour (of the rows' time) and agent:
//! `DATA_DIR/TABLE/YYYYMMDDTHH.AGENT.tsv`. ClickHouse loads them directly
//! (`tapwatch load`, or `clickhouse-client --query "INSERT INTO tapwatch.TABLE FORMAT
//! TabSeparatedWithNames" < FILE`), and `tapwatch query` reads them.
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, Read, Write};
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

fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Appends `rows` (whole TSV lines) to the file at `path`, writing the header first when
/// the file is new. A torn last row left by an earlier run (a crash or a full disk) is cut
/// off first, with a warning. On an error the file is cut back to its length before the
/// append; on success returns the file, still locked, and that length (to undo the append).
fn append_one(path: &Path, columns: &[&str], rows: &[u8]) -> Result<(fs::File, u64), StorageError> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    f.lock().map_err(|e| io(path, e))?;
    let whole = tapwatch_rules::lines::whole_length(&mut f).map_err(|e| io(path, e))?;
    let len = f.metadata().map_err(|e| io(path, e))?.len();
    if whole < len {
        tracing::warn!(
            "{}: removed a torn last row ({} bytes) left by an earlier run",
            path.display(),
            len - whole
        );
        f.set_len(whole).map_err(|e| io(path, e))?;
    }
    let mut buf = if whole == 0 {
        tsv::header(columns)
    } else {
        Vec::new()
    };
    buf.extend_from_slice(rows);
    if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_data()) {
        let _ = f.set_len(whole);
        return Err(io(path, e));
    }
    Ok((f, whole))
}

/// The hour's file for rows of these columns: `HOUR.AGENT.tsv`, or, when that file was
/// begun with other columns (by a version before a migration added one), `HOUR.AGENT.N.tsv`
/// for the first N from 2 whose file is new or has these columns. Readers go by each file's
/// own header, so both are read.
fn file_for(dir: &Path, hour: &str, agent: &str, columns: &[&str]) -> PathBuf {
    let header = tsv::header(columns);
    (1..)
        .map(|n| match n {
            1 => dir.join(format!("{hour}.{agent}.tsv")),
            n => dir.join(format!("{hour}.{agent}.{n}.tsv")),
        })
        .find(|path| {
            let Ok(f) = fs::File::open(path) else {
                return true;
            };
            let mut first = Vec::new();
            let read = std::io::BufReader::new(f)
                .take(header.len() as u64 * 4 + 4096)
                .read_until(b'\n', &mut first);
            // New, empty or a torn header (cut and rewritten by the append): ours.
            read.is_err() || !first.ends_with(b"\n") || first == header
        })
        .expect("an unbounded range finds a file")
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

    /// Appends rows to their hourly files: all of them or none.
    pub fn write<T: StoredRow>(&self, agent: &str, rows: &[T]) -> Result<(), StorageError> {
        let mut by_hour: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in rows {
            let buf = by_hour.entry(hour_name(r.ts())).or_default();
            tsv::write_row(r, buf).map_err(|e| StorageError::Config(e.to_string()))?;
        }
        self.append_whole(T::TABLE, T::COLUMN_NAMES, agent, by_hour)
    }

    /// Appends TabSeparated rows (no header, `ts` first, as every table has it) of `table`,
    /// each to the file of its own hour (a spooled batch may span two): all or none.
    pub fn append_rows(
        &self,
        table: &str,
        columns: &[&str],
        agent: &str,
        tsv_rows: &[u8],
    ) -> Result<(), StorageError> {
        let mut by_hour: BTreeMap<String, Vec<u8>> = BTreeMap::new();
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
        self.append_whole(table, columns, agent, by_hour)
    }

    /// Appends each hour's rows to its file. On an error every file is cut back to the
    /// length it had, so a full disk leaves whole rows only and the batch can be retried.
    /// Each file is locked until the whole batch is written (in hour order), so runs
    /// sharing an agent id and data directory never cut each other's rows.
    fn append_whole(
        &self,
        table: &str,
        columns: &[&str],
        agent: &str,
        by_hour: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), StorageError> {
        let dir = self.dir.join(table);
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut done: Vec<(fs::File, u64)> = Vec::new();
        for (hour, rows) in by_hour {
            let path = file_for(&dir, &hour, &safe(agent), columns);
            let result = append_one(&path, columns, &rows);
            match result {
                Ok(undo) => done.push(undo),
                Err(e) => {
                    for (f, len) in done {
                        let _ = f.set_len(len);
                    }
                    return Err(e);
                }
            }
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

    /// Rows of `table` from hours overlapping `[since, until)` (Unix seconds). Damaged rows
    /// (a torn last row, a line with the wrong number of fields) are left out with a warning.
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
            let mut lines = whole_rows(&path, &text)
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty());
            let Some(head) = lines.next() else { continue };
            let names: std::sync::Arc<[String]> = head
                .split(|b| *b == b'\t')
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            for (i, line) in lines.enumerate() {
                let fields: Vec<Vec<u8>> = line.split(|b| *b == b'\t').map(tsv::unescape).collect();
                if fields.len() != names.len() {
                    tracing::warn!(
                        "{}, row {}: {} fields where the header names {}; row left out",
                        path.display(),
                        i + 1,
                        fields.len(),
                        names.len()
                    );
                    continue;
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

    /// An integer column, or `older`'s value in a file begun before a migration added `col`.
    pub fn u64_or(&self, col: &str, older: &str) -> u64 {
        if self.names.iter().any(|n| n == col) {
            self.u64(col)
        } else {
            self.u64(older)
        }
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

/// The whole rows of a file's text: a torn last row (no newline: an earlier version's run
/// cut short by a crash or a full disk) is left out with a warning.
pub fn whole_rows<'a>(path: &Path, text: &'a [u8]) -> &'a [u8] {
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        tracing::warn!(
            "{}: ignoring a torn last row ({} bytes)",
            path.display(),
            text.len() - whole
        );
    }
    &text[..whole]
}

/// What [`load_into`] did with one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Rows inserted.
    pub rows: u64,
    /// Batches skipped because ClickHouse already held them.
    pub batches_skipped: u64,
    /// Damaged lines left out (torn, or with the wrong number of fields).
    pub bad_lines: u64,
}

/// Loads one file-store file (`TabSeparatedWithNames`, read from `path`) into ClickHouse,
/// one insert per batch, skipping batches ClickHouse already holds. Damaged lines (a torn
/// row, or two rows run together by an earlier version after a full disk) are left out
/// with a warning naming the line. Rows go in under the file's own column names, so a file
/// begun before a migration added a column loads with that column's default.
pub fn load_into(
    ch: &crate::ClickHouse,
    table: &str,
    path: &Path,
    text: &[u8],
) -> Result<Loaded, StorageError> {
    let mut done = Loaded::default();
    let whole = whole_rows(path, text);
    done.bad_lines += u64::from(whole.len() < text.len());
    let mut lines = whole
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty());
    let Some((_, head)) = lines.next() else {
        return Ok(done);
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
    for (i, line) in lines {
        let f: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
        if f.len() != names.len() {
            tracing::warn!(
                "{}, line {}: {} fields where the header names {}; line left out",
                path.display(),
                i + 1,
                f.len(),
                names.len()
            );
            done.bad_lines += 1;
            continue;
        }
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
    let columns: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    if let Some(bad) = columns
        .iter()
        .find(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(StorageError::Config(format!(
            "{}: the header names a column {bad:?}",
            path.display()
        )));
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    for b in &batches {
        if ch.batch_exists(&b.meta)? {
            done.batches_skipped += 1;
            continue;
        }
        ch.insert_tsv(table, &columns, &b.tsv, false)?;
        done.rows += b.meta.rows;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_begun_with_fewer_columns_continues_in_a_second_file() {
        let dir = std::env::temp_dir().join(format!("tw-files-cols-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = FileStore::new(&dir);
        let ts = 1_795_392_000;
        // An earlier version's file of the hour: no `samples` column.
        fs::create_dir_all(dir.join("tenants")).unwrap();
        let old = "ts\tagent\tbatch\twindow_ms\ttenant\tpackets\tbytes\tsetups\tsources\n\
                   1795392000\ta\t1\t1000\tt\t9\t10\t0\t1\n";
        fs::write(dir.join(format!("tenants/{}.a.tsv", hour_name(ts))), old).unwrap();
        let row = crate::rows::TenantRow {
            ts,
            agent: "a".into(),
            batch: 2,
            window_ms: 1000,
            tenant: "t".into(),
            packets: 30,
            samples: 3,
            bytes: 40,
            setups: 0,
            sources: 1,
        };
        store.write("a", std::slice::from_ref(&row)).unwrap();
        store.write("a", &[row]).unwrap();
        assert_eq!(store.files("tenants").len(), 2);
        let rows = store.read("tenants", ts, ts + 1).unwrap();
        let mut got: Vec<(u64, u64)> = rows
            .iter()
            .map(|r| (r.u64("packets"), r.u64_or("samples", "packets")))
            .collect();
        got.sort_unstable();
        assert_eq!(got, [(9, 9), (30, 3), (30, 3)]);
        let _ = fs::remove_dir_all(&dir);
    }

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
            samples: 3,
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
        // Two rows run together (an earlier version appended onto a torn row) and a torn
        // last row are left out; the whole rows around them are read.
        let (_, path) = store.files("tenants").pop().unwrap();
        let mut text = fs::read(&path).unwrap();
        let n = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            - 1;
        let mut one = Vec::new();
        crate::tsv::write_row(&row(now, "late"), &mut one).unwrap();
        text.extend_from_slice(&one[..20]);
        text.extend_from_slice(&one);
        text.extend_from_slice(&one);
        text.extend_from_slice(&one[..12]);
        fs::write(&path, text).unwrap();
        let hour = store.read("tenants", now, now + 1).unwrap();
        assert_eq!(
            hour.len(),
            n + 1,
            "the rows before, and the one whole row after"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hour_names() {
        assert_eq!(hour_name(0), "19700101T00");
        assert_eq!(hour_name(1_795_392_000 + 3 * 3600 + 59), "20261123T03");
        assert_eq!(civil(19_723), (2024, 1, 1));
    }
}
