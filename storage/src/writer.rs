//! The storage sink: a writer thread fed through a bounded queue, batching rows per table by
//! count and age, inserting into ClickHouse (or the file store), spooling what ClickHouse does
//! not take and replaying the spool in order when it answers again.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::ch::ClickHouse;
use crate::config::{ClickHouseConfig, StorageConfig};
use crate::files::{hour_name, FileStore};
use crate::rows::{Rows, StoredRow};
use crate::schema::default_retention_days;
use crate::spool::{BatchMeta, Spool, SpooledBatch};
use crate::{for_each_table, tsv, StorageError};

/// Counters of the storage sink (shown in summaries and `/metrics`).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Rows handed to the sink.
    pub rows_accepted: AtomicU64,
    /// Rows written (ClickHouse inserts or file appends), spooled replays included.
    pub rows_written: AtomicU64,
    /// Batches written.
    pub batches_written: AtomicU64,
    /// Inserts that failed (their batch was spooled).
    pub insert_failures: AtomicU64,
    /// Batches put in the spool.
    pub batches_spooled: AtomicU64,
    /// Spooled batches skipped on replay because their batch id was already stored.
    pub batches_deduplicated: AtomicU64,
    /// Rows lost: the spool was full, or could not be written (a full disk).
    pub overflow_rows: AtomicU64,
    /// Spool size on disk, bytes.
    pub spool_bytes: AtomicU64,
    /// Rows queued towards the writer.
    pub queue_depth: AtomicU64,
    /// Sum of insert latencies, µs.
    pub insert_us_total: AtomicU64,
    /// Partitions or hourly files dropped by retention.
    pub retention_drops: AtomicU64,
}

/// Where rows go.
pub enum Backend {
    /// A ClickHouse server (or a cluster through one of its servers).
    ClickHouse(Box<ClickHouse>),
    /// The embedded file store.
    Files(FileStore),
}

impl Backend {
    /// The backend `[clickhouse]`/`TAPWATCH_CLICKHOUSE_URL` select, else the file store.
    pub fn from_config(ch: &ClickHouseConfig, st: &StorageConfig) -> Result<Backend, StorageError> {
        match ch.effective_url() {
            Some(url) => Ok(Backend::ClickHouse(Box::new(ClickHouse::new(&url, ch)?))),
            None => Ok(Backend::Files(FileStore::new(&st.data_dir))),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Backend::ClickHouse(c) => {
                format!("ClickHouse {} (database {})", c.url(), c.layout.database)
            }
            Backend::Files(f) => format!("files under {}", f.dir().display()),
        }
    }
}

enum Msg {
    /// Boxed: a `Rows` is a vector per table.
    Rows(Box<Rows>),
    Flush(SyncSender<()>),
}

/// The sink handle held by the pipeline.
pub struct Store {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    spool: Arc<Mutex<Spool>>,
    ids: Arc<BatchIds>,
    /// Counters.
    pub stats: Arc<StoreStats>,
    describe: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The spool directory of a backend under the data directory.
pub fn spool_dir(cfg: &StorageConfig, backend: &Backend) -> PathBuf {
    let name = match backend {
        Backend::ClickHouse(c) => format!(
            "clickhouse-{:08x}",
            crc32fast::hash(format!("{}/{}", c.url(), c.layout.database).as_bytes())
        ),
        Backend::Files(_) => "files".to_string(),
    };
    cfg.data_dir.join("spool").join(name)
}

impl Store {
    /// Starts the writer thread. With ClickHouse, the thread applies the schema before its
    /// first insert (idempotent); a server that does not answer is not an error and delays
    /// nothing: rows are spooled until it does.
    pub fn start(
        cfg: &StorageConfig,
        backend: Backend,
        agent: &str,
    ) -> Result<Store, StorageError> {
        let dir = spool_dir(cfg, &backend);
        let spool = Spool::open(&dir, cfg.spool_mib.saturating_mul(1 << 20)).map_err(|e| {
            StorageError::Io {
                path: dir.clone(),
                source: e,
            }
        })?;
        let spool = Arc::new(Mutex::new(spool));
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let describe = backend.describe();
        let w = Writer {
            backend,
            cfg: cfg.clone(),
            agent: agent.to_string(),
            rx,
            spool: Arc::clone(&spool),
            stats: Arc::clone(&stats),
            buf: Rows::default(),
            buf_since: None,
            ids: Arc::new(BatchIds::new()),
            schema_ready: false,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(250),
            warned: false,
            last_retention: None,
        };
        let ids = Arc::clone(&w.ids);
        let thread = std::thread::Builder::new()
            .name("tapwatch-store".into())
            .spawn(move || w.run())
            .map_err(|e| StorageError::Config(format!("starting the storage thread: {e}")))?;
        Ok(Store {
            tx: Some(tx),
            thread: Some(thread),
            spool,
            ids,
            stats,
            describe,
        })
    }

    /// Whether another running process owns this backend's spool (it replays the spool;
    /// this store spools into a private queue the owner takes over).
    pub fn spool_owned_elsewhere(&self) -> bool {
        self.spool.lock().is_ok_and(|s| s.owned_elsewhere())
    }

    /// Where rows go, for logs.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Hands rows to the writer without blocking: when its queue is full they go straight to
    /// the spool.
    pub fn submit(&self, rows: Rows) {
        if rows.is_empty() {
            return;
        }
        let n = rows.len() as u64;
        self.stats.rows_accepted.fetch_add(n, Ordering::Relaxed);
        let Some(tx) = &self.tx else { return };
        self.stats.queue_depth.fetch_add(n, Ordering::Relaxed);
        match tx.try_send(Msg::Rows(Box::new(rows))) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Rows(mut rows)))
            | Err(TrySendError::Disconnected(Msg::Rows(mut rows))) => {
                self.stats.queue_depth.fetch_sub(n, Ordering::Relaxed);
                if let Ok(mut spool) = self.spool.lock() {
                    spool_rows(&mut rows, &self.ids, &mut spool, &self.stats);
                }
            }
            Err(_) => {}
        }
    }

    /// Writes everything buffered now and waits for it (used at window ends in tests and at
    /// the end of a replay).
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    /// Flushes, drains the spool (up to `drain_timeout_s` while ClickHouse is unreachable)
    /// and stops the writer. Returns the batches still spooled.
    pub fn close(mut self) -> u64 {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut spool = match self.spool.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let mut left = 0;
        if let Ok(Some(_)) = spool.peek() {
            left = pending_batches(&mut spool);
        }
        left
    }
}

fn pending_batches(spool: &mut Spool) -> u64 {
    // Count without consuming: walk a copy of the cursor.
    let mut n = 0;
    let mut probe = spool.peek();
    while let Ok(Some((_, p))) = probe {
        n += 1;
        probe = spool.peek_after(p);
    }
    n
}

/// Stamps batch ids and spools every table of `rows`.
fn spool_rows(rows: &mut Rows, ids: &BatchIds, spool: &mut Spool, stats: &StoreStats) {
    macro_rules! one {
        ($f:ident, $t:ty) => {
            if !rows.$f.is_empty() {
                let batch = ids.stamp(&mut rows.$f);
                let b = to_spooled(&rows.$f, batch);
                put_in_spool(spool, &b, stats);
                rows.$f.clear();
            }
        };
    }
    for_each_table!(one);
}

/// Batch ids of one writer. The high 32 bits mix a nonce unique to the writer (the
/// kernel's random pool, the process id, the boot id and the start time in nanoseconds)
/// with a sequence, so two runs never share ids even when they start in the same
/// millisecond; the low 32 bits are the CRC-32 of the batch's rows (written with batch id 0),
/// so an id found in ClickHouse names that very content, not merely the same key.
pub struct BatchIds {
    nonce: u64,
    seq: AtomicU64,
}

impl BatchIds {
    /// Ids for a new writer.
    pub fn new() -> BatchIds {
        let mut nonce = [0u8; 8];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut nonce);
        }
        let boot = std::fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let nonce = u64::from_le_bytes(nonce)
            ^ mix(u64::from(std::process::id()))
            ^ mix(u64::from(crc32fast::hash(&boot)) << 1)
            ^ mix(nanos);
        BatchIds {
            nonce,
            seq: AtomicU64::new(0),
        }
    }

    /// Gives `rows` the next id (stamped in every row) and returns it.
    pub fn stamp<T: StoredRow>(&self, rows: &mut [T]) -> u64 {
        let mut tsv = Vec::new();
        for r in rows.iter_mut() {
            r.set_batch(0);
            let _ = tsv::write_row(r, &mut tsv);
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = (mix(self.nonce ^ mix(seq)) & !0xffff_ffff) | u64::from(crc32fast::hash(&tsv));
        for r in rows.iter_mut() {
            r.set_batch(id);
        }
        id
    }
}

impl Default for BatchIds {
    fn default() -> Self {
        BatchIds::new()
    }
}

/// SplitMix64's finaliser: a bijective scramble of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A batch of rows already stamped with `batch`, for the spool.
fn to_spooled<T: StoredRow>(rows: &[T], batch: u64) -> SpooledBatch {
    let mut tsv = Vec::new();
    let (mut lo, mut hi) = (u32::MAX, 0);
    for r in rows {
        lo = lo.min(r.ts());
        hi = hi.max(r.ts());
        let _ = tsv::write_row(r, &mut tsv);
    }
    SpooledBatch {
        meta: BatchMeta {
            table: T::TABLE.to_string(),
            agent: rows
                .first()
                .map(|r| r.agent().to_string())
                .unwrap_or_default(),
            batch,
            rows: rows.len() as u64,
            ts_min: lo,
            ts_max: hi,
        },
        tsv,
    }
}

fn put_in_spool(spool: &mut Spool, b: &SpooledBatch, stats: &StoreStats) {
    match spool.append(b) {
        Ok(true) => {
            stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
        }
        Ok(false) => {
            stats
                .overflow_rows
                .fetch_add(b.meta.rows, Ordering::Relaxed);
            tracing::error!(
                "storage spool full: {} rows of {} lost (raise [storage] spool_mib)",
                b.meta.rows,
                b.meta.table
            );
        }
        Err(e) => {
            stats
                .overflow_rows
                .fetch_add(b.meta.rows, Ordering::Relaxed);
            tracing::error!(
                "storage spool: cannot write ({e}); {} rows of {} lost",
                b.meta.rows,
                b.meta.table
            );
        }
    }
    stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
}

struct Writer {
    backend: Backend,
    cfg: StorageConfig,
    agent: String,
    rx: Receiver<Msg>,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<StoreStats>,
    buf: Rows,
    buf_since: Option<Instant>,
    ids: Arc<BatchIds>,
    schema_ready: bool,
    retry_at: Instant,
    backoff: Duration,
    warned: bool,
    last_retention: Option<Instant>,
}

impl Writer {
    /// Applies the schema when the server answers; remembers to try again when it does not.
    fn prepare(&mut self) -> bool {
        if self.schema_ready {
            return true;
        }
        match &self.backend {
            Backend::Files(_) => self.schema_ready = true,
            Backend::ClickHouse(ch) => match ch.apply_schema() {
                Ok(applied) => {
                    if !applied.is_empty() {
                        tracing::info!(
                            "ClickHouse {}: applied schema migrations {applied:?}",
                            ch.url()
                        );
                    }
                    self.schema_ready = true;
                }
                Err(e) => self.failed(&e),
            },
        }
        self.schema_ready
    }

    fn failed(&mut self, e: &StorageError) {
        self.stats.insert_failures.fetch_add(1, Ordering::Relaxed);
        if !self.warned {
            tracing::warn!("{e}; rows are spooled and retried with backoff");
            self.warned = true;
        }
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
    }

    fn recovered(&mut self) {
        if self.warned {
            tracing::info!("storage: {} answers again", self.backend.describe());
        }
        self.warned = false;
        self.backoff = Duration::from_millis(250);
    }

    fn run(mut self) {
        let age = Duration::from_secs_f64(self.cfg.batch_age_s.max(0.01));
        loop {
            let wait = match self.buf_since {
                Some(t) => age.saturating_sub(t.elapsed()),
                None => Duration::from_millis(250),
            };
            match self.rx.recv_timeout(wait.max(Duration::from_millis(5))) {
                Ok(Msg::Rows(mut rows)) => {
                    self.stats
                        .queue_depth
                        .fetch_sub(rows.len() as u64, Ordering::Relaxed);
                    self.buf.append(&mut rows);
                    self.buf_since.get_or_insert_with(Instant::now);
                    if self.largest_table() >= self.cfg.batch_rows {
                        self.flush();
                    }
                }
                Ok(Msg::Flush(ack)) => {
                    self.flush();
                    self.drain();
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.buf_since.is_some_and(|t| t.elapsed() >= age) {
                self.flush();
            }
            if Instant::now() >= self.retry_at {
                self.drain();
            }
            self.retention();
        }
        self.flush();
        let until = Instant::now() + Duration::from_secs_f64(self.cfg.drain_timeout_s.max(0.0));
        loop {
            if self.drain() || Instant::now() >= until {
                break;
            }
            std::thread::sleep(
                self.retry_at
                    .saturating_duration_since(Instant::now())
                    .min(until.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(20)),
            );
        }
    }

    fn largest_table(&self) -> usize {
        let mut m = 0;
        macro_rules! one {
            ($f:ident, $t:ty) => {
                m = m.max(self.buf.$f.len());
            };
        }
        for_each_table!(one);
        m
    }

    /// Writes every buffered table as one batch each; what fails goes to the spool.
    fn flush(&mut self) {
        self.buf_since = None;
        let backlog = !self.spool_empty();
        macro_rules! one {
            ($f:ident, $t:ty) => {
                if !self.buf.$f.is_empty() {
                    let mut rows = std::mem::take(&mut self.buf.$f);
                    let batch = self.ids.stamp(&mut rows);
                    // Keep order behind a backlog: new batches queue after spooled ones.
                    let direct = !backlog && Instant::now() >= self.retry_at && self.prepare();
                    let ok = direct && self.write_typed(&rows);
                    if !ok {
                        let b = to_spooled(&rows, batch);
                        if let Ok(mut s) = self.spool.lock() {
                            put_in_spool(&mut s, &b, &self.stats);
                        }
                    }
                }
            };
        }
        for_each_table!(one);
    }

    fn spool_empty(&self) -> bool {
        self.spool.lock().map(|mut s| s.is_empty()).unwrap_or(true)
    }

    fn write_typed<T: StoredRow>(&mut self, rows: &[T]) -> bool {
        let t0 = Instant::now();
        let r = match &self.backend {
            Backend::ClickHouse(ch) => ch.insert(rows),
            Backend::Files(f) => f.write(&self.agent, rows),
        };
        match r {
            Ok(()) => {
                self.wrote(rows.len() as u64, t0);
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    fn wrote(&mut self, rows: u64, t0: Instant) {
        self.stats.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.stats.batches_written.fetch_add(1, Ordering::Relaxed);
        self.stats
            .insert_us_total
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.recovered();
    }

    /// Replays spooled batches in order until the spool is empty (true) or a write fails.
    fn drain(&mut self) -> bool {
        loop {
            let next = match self.spool.lock() {
                Ok(mut s) => s.peek(),
                Err(_) => return false,
            };
            let (b, pos) = match next {
                Ok(Some(x)) => x,
                Ok(None) => {
                    if let Ok(s) = self.spool.lock() {
                        self.stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
                    }
                    return true;
                }
                Err(e) => {
                    tracing::error!("storage spool: cannot read ({e})");
                    return false;
                }
            };
            if Instant::now() < self.retry_at || !self.prepare() {
                return false;
            }
            let t0 = Instant::now();
            let m = &b.meta;
            let result = match &self.backend {
                Backend::ClickHouse(ch) => ch.batch_exists(m).and_then(|exists| {
                    if !exists {
                        return ch
                            .insert_tsv(&m.table, columns_of(&m.table), &b.tsv, false)
                            .map(|()| true);
                    }
                    self.stats
                        .batches_deduplicated
                        .fetch_add(1, Ordering::Relaxed);
                    let done = ch.complete_rollups(m)?;
                    if !done.is_empty() {
                        tracing::warn!(
                            "batch {} of {} was in the table but not in {}: completed from the table's rows",
                            m.batch,
                            m.table,
                            done.join(", ")
                        );
                    }
                    Ok(false)
                }),
                // The batch's own agent: `deliver` may run under another id than the spooling run.
                Backend::Files(f) => f
                    .append_rows(&m.table, columns_of(&m.table), &m.agent, &b.tsv)
                    .map(|()| true),
            };
            match result {
                Ok(inserted) => {
                    if inserted {
                        self.wrote(b.meta.rows, t0);
                    }
                    if let Ok(mut s) = self.spool.lock() {
                        if let Err(e) = s.take(pos) {
                            tracing::error!("storage spool: cannot advance ({e})");
                            return false;
                        }
                        self.stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
        }
    }

    /// Drops expired partitions (ClickHouse) or hourly files (file store) now and then.
    fn retention(&mut self) {
        if self.cfg.retention_every_s <= 0.0 || !self.schema_ready {
            return;
        }
        let every = Duration::from_secs_f64(self.cfg.retention_every_s.max(1.0));
        if self.last_retention.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_retention = Some(Instant::now());
        let days = self.cfg.retention_days.clone();
        let retention = move |t: &str| {
            days.get(t)
                .copied()
                .unwrap_or_else(|| default_retention_days(t))
        };
        let now = (unix_now() / 1000) as u32;
        let dropped = match &self.backend {
            Backend::ClickHouse(ch) => {
                let today = hour_name(now)[..8].parse().unwrap_or(0);
                match ch.drop_expired(&retention, today) {
                    Ok(d) => d.len(),
                    Err(e) => {
                        tracing::warn!("retention: {e}");
                        0
                    }
                }
            }
            Backend::Files(f) => f.drop_expired(&retention, now),
        };
        // Evidence captures go with the alerts they belong to.
        let evidence = crate::evidence::drop_expired(
            &crate::evidence::under(&self.cfg.data_dir),
            retention("alerts"),
            std::time::SystemTime::now(),
        );
        self.stats
            .retention_drops
            .fetch_add((dropped + evidence) as u64, Ordering::Relaxed);
    }
}

/// Column names of a table, in order.
pub fn columns_of(table: &str) -> &'static [&'static str] {
    use clickhouse::Row;
    macro_rules! one {
        ($f:ident, $t:ty) => {
            if table == <$t as StoredRow>::TABLE {
                return <$t as Row>::COLUMN_NAMES;
            }
        };
    }
    for_each_table!(one);
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::TenantRow;

    fn old_rows() -> Rows {
        let mut rows = Rows::default();
        rows.tenants.push(TenantRow {
            ts: 1_700_000_000, // 2023
            agent: "a".into(),
            batch: 0,
            window_ms: 1000,
            tenant: "t".into(),
            packets: 1,
            samples: 1,
            bytes: 2,
            setups: 0,
            sources: 1,
        });
        rows
    }

    fn run_store(tag: &str, retention_every_s: f64) -> usize {
        let dir = std::env::temp_dir().join(format!("tw-writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = StorageConfig {
            data_dir: dir.clone(),
            retention_every_s,
            ..StorageConfig::default()
        };
        let store = Store::start(&cfg, Backend::Files(FileStore::new(&dir)), "a").unwrap();
        store.submit(old_rows());
        store.flush();
        // A second write after the writer has had a chance to run retention.
        std::thread::sleep(Duration::from_millis(300));
        store.submit(old_rows());
        assert_eq!(store.close(), 0);
        let n = FileStore::new(&dir)
            .read("tenants", 0, u32::MAX)
            .unwrap()
            .len();
        let _ = std::fs::remove_dir_all(&dir);
        n
    }

    #[test]
    fn batch_ids_differ_between_writers_started_together_and_carry_the_content() {
        let (a, b) = (BatchIds::new(), BatchIds::new());
        let stamp = |ids: &BatchIds, tenant: &str| {
            let mut rows = old_rows().tenants;
            rows[0].tenant = tenant.into();
            let id = ids.stamp(&mut rows);
            assert_eq!(rows[0].batch, id);
            id
        };
        let (a0, b0) = (stamp(&a, "t"), stamp(&b, "t"));
        assert_ne!(a0, b0, "same content, same sequence, two writers");
        assert_eq!(a0 & 0xffff_ffff, b0 & 0xffff_ffff, "the content's checksum");
        let (a1, b1) = (stamp(&a, "u"), stamp(&b, "t"));
        assert_ne!(
            a1 & 0xffff_ffff,
            a0 & 0xffff_ffff,
            "other content, other checksum"
        );
        assert_ne!(b1, b0, "same content again: a new id");
        let mut rows = old_rows().tenants;
        rows[0].batch = 7; // a stamped row: its old id is not part of the content
        let c = BatchIds::new().stamp(&mut rows);
        assert_eq!(c & 0xffff_ffff, a0 & 0xffff_ffff);
    }

    #[test]
    fn retention_runs_only_when_enabled() {
        assert_eq!(
            run_store("keep", 0.0),
            2,
            "a replay keeps every row it writes"
        );
        assert!(
            run_store("drop", 3600.0) < 2,
            "the daemon drops rows past retention"
        );
    }
}
