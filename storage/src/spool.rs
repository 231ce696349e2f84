//! The on-disk spool of batches that ClickHouse has not accepted yet: append-only segment
//! files of checksummed records, a cursor, a size cap whose overflow is counted. Batches are
//! replayed in the order they were spooled; it survives restarts.
//!
//! A record is a line `TWSP1 <crc32 hex> <length>` followed by `length` bytes: one line of JSON
//! metadata (table, batch id, rows, time range) and the rows as TabSeparated.
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A segment is closed once it reaches this size.
const SEGMENT_BYTES: u64 = 16 << 20;

/// What a spooled batch is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    /// Table (without database).
    pub table: String,
    /// Agent id on the batch's rows.
    pub agent: String,
    /// Batch id (the idempotency key in every row: unique per writer, with the rows'
    /// checksum; see [`crate::writer::BatchIds`]).
    pub batch: u64,
    /// Rows.
    pub rows: u64,
    /// Earliest row time.
    pub ts_min: u32,
    /// Latest row time.
    pub ts_max: u32,
}

/// A batch and its rows as TabSeparated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledBatch {
    /// What it is.
    pub meta: BatchMeta,
    /// Rows, TabSeparated (no header).
    pub tsv: Vec<u8>,
}

/// Position of a record: segment number and byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    segment: u64,
    offset: u64,
}

/// The spool directory.
pub struct Spool {
    dir: PathBuf,
    cap: u64,
    writing: Option<(u64, File, u64)>,
    /// Batches refused because the spool was full.
    pub overflow_batches: u64,
    /// Rows in those batches (lost).
    pub overflow_rows: u64,
    /// Damaged records skipped (checksum mismatch, unreadable header or metadata).
    pub corrupt: u64,
    /// Damaged records already counted and reported: (segment, offset).
    reported: std::collections::BTreeSet<(u64, u64)>,
    /// The spool's root when this one is a private queue under `ROOT/writers/` (another
    /// live process holds the root); `None` for the root itself, which adopts the queues
    /// of writers that have ended.
    root: Option<PathBuf>,
    /// The exclusive lock on this queue (held while the spool is open).
    _lock: File,
}

/// Subdirectory of the root holding the private queues of concurrent writers.
const WRITERS: &str = "writers";

/// The lock file of a queue directory.
fn lock_file(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
}

/// A batch as a spool record: header line, metadata line, rows.
fn record(b: &SpooledBatch) -> std::io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(&b.meta).map_err(std::io::Error::other)?;
    let mut payload = Vec::with_capacity(meta.len() + 1 + b.tsv.len());
    payload.extend_from_slice(&meta);
    payload.push(b'\n');
    payload.extend_from_slice(&b.tsv);
    let mut rec = format!(
        "TWSP1 {:08x} {}\n",
        crc32fast::hash(&payload),
        payload.len()
    )
    .into_bytes();
    rec.extend_from_slice(&payload);
    Ok(rec)
}

fn segment_name(n: u64) -> String {
    format!("{n:010}.seg")
}

impl Spool {
    /// Opens (creating) the spool in `dir`, capped at `cap` bytes on disk. One process at
    /// a time owns `dir` (an exclusive lock): it replays the spool and takes over the
    /// queues of writers that have ended. A process that finds `dir` owned spools into a
    /// private queue `dir/writers/PID-NANOS/` instead, so no process ever removes or skips
    /// a segment another is still appending to.
    pub fn open(dir: &Path, cap: u64) -> std::io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let lock = lock_file(dir)?;
        match lock.try_lock() {
            Ok(()) => Ok(Spool::with(dir, cap, None, lock)),
            Err(fs::TryLockError::WouldBlock) => {
                tracing::debug!(
                    "storage spool {} is owned by another running tapwatch: this run spools to a queue of its own there, which the owner takes over when this run ends",
                    dir.display()
                );
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                // Locked before it is visible: the owner never takes over a queue whose
                // writer has only just made it.
                let name = format!("{}-{nanos}", std::process::id());
                let writers = dir.join(WRITERS);
                let making = writers.join(format!(".{name}"));
                fs::create_dir_all(&making)?;
                let lock = lock_file(&making)?;
                lock.lock()?;
                let own = writers.join(name);
                fs::rename(&making, &own)?;
                Ok(Spool::with(&own, cap, Some(dir.to_path_buf()), lock))
            }
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether another running process owns the spool directory (this one then spools
    /// into a private queue the owner takes over later).
    pub fn owned_elsewhere(&self) -> bool {
        self.root.is_some()
    }

    fn with(dir: &Path, cap: u64, root: Option<PathBuf>, lock: File) -> Spool {
        Spool {
            dir: dir.to_path_buf(),
            cap,
            writing: None,
            overflow_batches: 0,
            overflow_rows: 0,
            corrupt: 0,
            reported: Default::default(),
            root,
            _lock: lock,
        }
    }

    /// Moves the batches of private queues whose writers have ended (their lock is free)
    /// into this spool, each record taken from its queue once appended here, then removes
    /// the queue. Only the root's owner adopts; it stops when its cap is reached.
    fn adopt(&mut self) -> std::io::Result<()> {
        if self.root.is_some() {
            return Ok(());
        }
        let Ok(entries) = fs::read_dir(self.dir.join(WRITERS)) else {
            return Ok(());
        };
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue; // being made
            }
            let sub = e.path();
            let lock = lock_file(&sub)?;
            if lock.try_lock().is_err() {
                continue; // its writer is alive
            }
            let mut other = Spool::with(&sub, u64::MAX, Some(self.dir.clone()), lock);
            let mut moved = 0;
            while let Some((b, pos)) = other.peek_own()? {
                if !self.fits(&b) {
                    return Ok(());
                }
                self.append(&b)?;
                other.take(pos)?;
                moved += 1;
            }
            self.corrupt += other.corrupt;
            if moved > 0 {
                tracing::info!(
                    "storage spool {}: took over {moved} batches spooled by a run that has ended",
                    self.dir.display()
                );
            }
            drop(other);
            fs::remove_dir_all(&sub)?;
        }
        Ok(())
    }

    fn segments(&self) -> std::io::Result<Vec<u64>> {
        let mut v: Vec<u64> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Bytes on disk in segments.
    pub fn bytes(&self) -> u64 {
        self.segments()
            .unwrap_or_default()
            .iter()
            .filter_map(|n| fs::metadata(self.dir.join(segment_name(*n))).ok())
            .map(|m| m.len())
            .sum::<u64>()
    }

    fn cursor(&self) -> Position {
        let text = fs::read_to_string(self.dir.join("cursor")).unwrap_or_default();
        let mut it = text
            .split_whitespace()
            .filter_map(|x| x.parse::<u64>().ok());
        match (it.next(), it.next()) {
            (Some(segment), Some(offset)) => Position { segment, offset },
            _ => Position {
                segment: 0,
                offset: 0,
            },
        }
    }

    fn set_cursor(&self, p: Position) -> std::io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", p.segment, p.offset))?;
        fs::rename(tmp, self.dir.join("cursor"))
    }

    /// Whether a batch fits under the cap.
    fn fits(&self, b: &SpooledBatch) -> bool {
        record(b).is_ok_and(|r| self.bytes() + r.len() as u64 <= self.cap)
    }

    /// Appends a batch; `Ok(false)` (and counted as overflow) when the cap would be passed.
    pub fn append(&mut self, b: &SpooledBatch) -> std::io::Result<bool> {
        let rec = record(b)?;
        let size = rec.len() as u64;
        if self.bytes() + size > self.cap {
            self.overflow_batches += 1;
            self.overflow_rows += b.meta.rows;
            return Ok(false);
        }
        let roll = match &self.writing {
            Some((_, _, len)) => *len >= SEGMENT_BYTES,
            None => true,
        };
        if roll {
            // After the cursor too: a segment number reused after its file was removed
            // would hide its first bytes behind the cursor's offset.
            let cur = self.cursor();
            let next = self
                .segments()?
                .last()
                .map_or(0, |n| n + 1)
                .max(cur.segment + u64::from(cur.offset > 0));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(segment_name(next)))?;
            self.writing = Some((next, f, 0));
        }
        let (_, f, len) = self.writing.as_mut().expect("segment open");
        let before = f.metadata()?.len();
        if let Err(e) = f.write_all(&rec).and_then(|()| f.sync_data()) {
            // A full disk: cut the partial record off so the next one starts whole.
            let _ = f.set_len(before);
            return Err(e);
        }
        *len += size;
        Ok(true)
    }

    /// The oldest batch not yet taken, and the position after it. Corrupt records are
    /// skipped and counted. When nothing is left, the queues of writers that have ended
    /// are taken over first (see [`Spool::open`]).
    pub fn peek(&mut self) -> std::io::Result<Option<(SpooledBatch, Position)>> {
        match self.peek_own()? {
            Some(x) => Ok(Some(x)),
            None => {
                self.adopt()?;
                self.peek_own()
            }
        }
    }

    fn peek_own(&mut self) -> std::io::Result<Option<(SpooledBatch, Position)>> {
        let cur = self.cursor();
        self.peek_after(cur)
    }

    /// The first batch at or after `cur` (for walking the spool without taking).
    pub fn peek_after(
        &mut self,
        cur: Position,
    ) -> std::io::Result<Option<(SpooledBatch, Position)>> {
        for seg in self.segments()? {
            if seg < cur.segment {
                continue;
            }
            let start = if seg == cur.segment { cur.offset } else { 0 };
            let mut r = BufReader::new(File::open(self.dir.join(segment_name(seg)))?);
            r.seek(SeekFrom::Start(start))?;
            let mut at = start;
            loop {
                let mut head = String::new();
                let n = r.read_line(&mut head)?;
                if n == 0 || !head.ends_with('\n') {
                    break; // end of this segment
                }
                at += n as u64;
                let mut parts = head.split_whitespace();
                let framing = match (parts.next(), parts.next(), parts.next()) {
                    (Some("TWSP1"), Some(crc), Some(len)) => u32::from_str_radix(crc, 16)
                        .ok()
                        .zip(len.parse::<u64>().ok()),
                    _ => None,
                };
                let Some((crc, len)) = framing else {
                    // Lost framing: the rest of the segment is unreadable.
                    self.damaged(
                        seg,
                        at - n as u64,
                        "no record header; rest of the segment skipped",
                    );
                    break;
                };
                let mut payload = vec![0; len as usize];
                if r.read_exact(&mut payload).is_err() {
                    break; // a record cut short by a crash: nothing after it
                }
                at += len;
                if crc32fast::hash(&payload) != crc {
                    self.damaged(
                        seg,
                        at - len - n as u64,
                        "checksum mismatch; record skipped",
                    );
                    continue;
                }
                let nl = payload
                    .iter()
                    .position(|b| *b == b'\n')
                    .unwrap_or(payload.len());
                let Ok(meta) = serde_json::from_slice::<BatchMeta>(&payload[..nl]) else {
                    self.damaged(
                        seg,
                        at - len - n as u64,
                        "unreadable batch metadata; record skipped",
                    );
                    continue;
                };
                let tsv = payload.get(nl + 1..).unwrap_or_default().to_vec();
                return Ok(Some((
                    SpooledBatch { meta, tsv },
                    Position {
                        segment: seg,
                        offset: at,
                    },
                )));
            }
        }
        Ok(None)
    }

    /// Counts and reports a damaged record (edited by hand, or a disk error).
    fn damaged(&mut self, seg: u64, offset: u64, what: &str) {
        if !self.reported.insert((seg, offset)) {
            return; // seen on an earlier walk
        }
        self.corrupt += 1;
        tracing::warn!(
            "storage spool {}, byte {offset}: damaged record: {what}",
            self.dir.join(segment_name(seg)).display()
        );
    }

    /// Marks everything before `p` as taken; removes segments wholly taken.
    pub fn take(&mut self, p: Position) -> std::io::Result<()> {
        self.set_cursor(p)?;
        let writing = self.writing.as_ref().map(|w| w.0);
        for seg in self.segments()? {
            let path = self.dir.join(segment_name(seg));
            let whole = seg < p.segment
                || (seg == p.segment
                    && fs::metadata(&path).map(|m| m.len()).unwrap_or(0) <= p.offset
                    && writing != Some(seg));
            if whole {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&mut self) -> bool {
        matches!(self.peek(), Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u64) -> SpooledBatch {
        SpooledBatch {
            meta: BatchMeta {
                table: "traffic".into(),
                agent: "a".into(),
                batch: n,
                rows: 2,
                ts_min: 1,
                ts_max: 2,
            },
            tsv: format!("{n}\ta\n{n}\tb\n").into_bytes(),
        }
    }

    /// A test's spool directory, removed when the test ends (pass or fail).
    struct TmpDir(PathBuf);

    impl std::ops::Deref for TmpDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!("tw-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        TmpDir(d)
    }

    #[test]
    fn batches_come_back_in_order_across_reopen() {
        let d = tmp("order");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        for n in 0..5 {
            assert!(s.append(&batch(n)).unwrap());
        }
        let (b, p) = s.peek().unwrap().unwrap();
        assert_eq!(b, batch(0));
        s.take(p).unwrap();
        drop(s);
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        for n in 1..5 {
            let (b, p) = s.peek().unwrap().unwrap();
            assert_eq!(b.meta.batch, n);
            s.take(p).unwrap();
        }
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0, "consumed segments are removed");
    }

    #[test]
    fn a_spool_emptied_by_one_run_takes_the_next_runs_batches_whole() {
        let d = tmp("again");
        for run in 0..3 {
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            s.append(&batch(run)).unwrap();
            drop(s);
            // `tapwatch deliver`: another process replays everything and removes the segment.
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            let (b, p) = s.peek().unwrap().expect("the run's batch");
            assert_eq!(b.meta.batch, run);
            s.take(p).unwrap();
            assert!(s.peek().unwrap().is_none());
        }
    }

    #[test]
    fn a_writer_beside_the_owner_loses_nothing_to_its_replay() {
        let d = tmp("two");
        let mut owner = Spool::open(&d, 1 << 20).unwrap();
        let mut writer = Spool::open(&d, 1 << 20).unwrap();
        owner.append(&batch(0)).unwrap();
        writer.append(&batch(10)).unwrap();
        // The owner replays what it can while the other writer is still running…
        let mut got = Vec::new();
        while let Some((b, p)) = owner.peek().unwrap() {
            got.push(b.meta.batch);
            owner.take(p).unwrap();
        }
        // …which goes on spooling, then ends.
        writer.append(&batch(11)).unwrap();
        drop(writer);
        while let Some((b, p)) = owner.peek().unwrap() {
            got.push(b.meta.batch);
            owner.take(p).unwrap();
        }
        assert_eq!(got, vec![0, 10, 11]);
        assert_eq!(fs::read_dir(d.join(WRITERS)).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_counted() {
        let d = tmp("corrupt");
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        for n in 0..3 {
            s.append(&batch(n)).unwrap();
        }
        let seg = d.join(segment_name(0));
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff; // damage the third record's payload
        fs::write(&seg, bytes).unwrap();
        let mut got = Vec::new();
        while let Some((b, p)) = s.peek().unwrap() {
            got.push(b.meta.batch);
            s.take(p).unwrap();
        }
        assert_eq!(got, vec![0, 1]);
        assert_eq!(s.corrupt, 1);
        // Looking again (the writer does, every few hundred ms) reports it no more.
        assert!(s.peek().unwrap().is_none() && s.peek().unwrap().is_none());
        assert_eq!(s.corrupt, 1);
    }

    #[test]
    fn the_cap_refuses_and_counts() {
        let d = tmp("cap");
        let mut s = Spool::open(&d, 300).unwrap();
        let mut accepted = 0;
        for n in 0..10 {
            if s.append(&batch(n)).unwrap() {
                accepted += 1;
            }
        }
        assert!((1..10).contains(&accepted));
        assert_eq!(s.overflow_batches, 10 - accepted);
        assert_eq!(s.overflow_rows, 2 * (10 - accepted));
    }
}
