//! Webhook delivery that never loses an alert and never slows capture.
//!
//! Each sink has an append-only on-disk spool: [`WebhookSink::send`] renders the event in
//! the sink's format and appends it (with a CRC-32) before returning, so an accepted alert
//! survives a receiver outage and a tapwatch restart. A delivery thread per sink posts the
//! spooled bodies in order, retrying timeouts, connection errors, 5xx and 429 with
//! exponential backoff and jitter; other 4xx answers are reported and skipped (retrying
//! them forever would block every later alert). A token bucket caps the rate per sink.
//! Bodies are signed with `X-Tapwatch-Signature: sha256=HEX` (HMAC-SHA256) when the sink
//! has a secret, read from a file or the environment, never from the command line.
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde::Deserialize;

use tapwatch_analyzer::setting::{f64_in, int_in};
use tapwatch_analyzer::{SettingError, SettingPath};

use crate::{AlertEvent, AlertState};

/// Body shape a receiver expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert contract itself (versioned JSON; `docs/alerts.md`).
    Generic,
    /// Slack incoming webhook: `{"text": …}`.
    Slack,
    /// PagerDuty Events API v2: trigger/resolve with `dedup_key` = alert id.
    Pagerduty,
    /// Prometheus Alertmanager webhook payload (version 4).
    Alertmanager,
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<WebhookFormat, String> {
        match s {
            "generic" | "json" => Ok(WebhookFormat::Generic),
            "slack" => Ok(WebhookFormat::Slack),
            "pagerduty" => Ok(WebhookFormat::Pagerduty),
            "alertmanager" => Ok(WebhookFormat::Alertmanager),
            _ => Err(format!(
                "webhook format {s:?}: expected generic, slack, pagerduty or alertmanager"
            )),
        }
    }
}

fn default_timeout() -> f64 {
    5.0
}
fn default_rate() -> f64 {
    10.0
}
fn default_spool_mib() -> u64 {
    64
}

/// One `[[webhook]]` table of the config file (or one `--webhook URL`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Body format.
    #[serde(default = "generic")]
    pub format: WebhookFormat,
    /// File holding the HMAC secret (first line).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the HMAC secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the PagerDuty routing key (first line).
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Most requests per second.
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Spool size cap, MiB; alerts beyond it are counted as overflow.
    #[serde(default = "default_spool_mib")]
    pub spool_mib: u64,
}

fn generic() -> WebhookFormat {
    WebhookFormat::Generic
}

impl WebhookConfig {
    /// Checks the settings of the `[[webhook]]` table at `path` (`webhook[N]`): the URL,
    /// the ranges of the numbers (`docs/usage.md`) and that the secret and routing-key
    /// files can be read.
    pub fn check(&self, path: &SettingPath) -> Result<(), SettingError> {
        if let Some(why) = url_problem(&self.url) {
            return Err(SettingError::new(
                path.key("url"),
                format!("{:?}", self.url),
                format!("an http:// or https:// URL ({why})"),
            ));
        }
        f64_in(path, "timeout_s", self.timeout_s, 0.1, 600.0)?;
        f64_in(path, "rate_per_s", self.rate_per_s, 0.1, 100_000.0)?;
        int_in(path, "spool_mib", self.spool_mib, 1, 1 << 20)?;
        for (key, file) in [
            ("secret_file", &self.secret_file),
            ("routing_key_file", &self.routing_key_file),
        ] {
            let Some(f) = file else { continue };
            if let Err(e) = std::fs::File::open(f) {
                return Err(SettingError::new(
                    path.key(key),
                    format!("{:?}", f.display().to_string()),
                    format!("a readable file ({e})"),
                ));
            }
        }
        if self.format == WebhookFormat::Pagerduty && self.routing_key_file.is_none() {
            return Err(SettingError::new(
                path.key("format"),
                "\"pagerduty\"",
                "routing_key_file beside it (pagerduty needs a routing key)",
            ));
        }
        Ok(())
    }

    /// A generic-format sink for `url` with default settings (`--webhook URL`).
    pub fn for_url(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_string(),
            format: WebhookFormat::Generic,
            secret_file: None,
            secret_env: None,
            routing_key_file: None,
            timeout_s: default_timeout(),
            rate_per_s: default_rate(),
            spool_mib: default_spool_mib(),
        }
    }
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A file (spool, secret) could not be used.
    #[error("webhook {url}: {what} {path}: {source}")]
    File {
        /// The sink's URL.
        url: String,
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is unusable.
    #[error("webhook {url}: {reason}")]
    Config {
        /// The sink's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Delivery counters of one sink, shared with its thread.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Alerts accepted into the spool.
    pub accepted: AtomicU64,
    /// Alerts delivered (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Alerts the receiver rejected with a 4xx other than 429 (not retried).
    pub rejected: AtomicU64,
    /// Alerts refused because the spool was full.
    pub overflow: AtomicU64,
    /// Spooled records whose checksum did not match (reported with their offset, skipped).
    pub corrupt: AtomicU64,
    /// Torn last records (an earlier run cut short by a crash) cut off when the spool opened.
    pub torn: AtomicU64,
}

/// What a drain left and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct Drained {
    /// Alerts still spooled (the next run delivers them).
    pub left: u64,
    /// Time spent draining.
    pub waited: Duration,
}

/// A running webhook sink.
pub struct WebhookSink {
    cfg: WebhookConfig,
    spool: Spool,
    routing_key: Option<String>,
    wake: Sender<()>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    /// Counters.
    pub stats: Arc<DeliveryStats>,
}

impl WebhookSink {
    /// Starts a sink spooling under `spool_dir` (created if missing). Alerts left in the
    /// spool by an earlier run are delivered first.
    pub fn start(cfg: WebhookConfig, spool_dir: &Path) -> Result<WebhookSink, WebhookError> {
        let file_err = |what, path: &Path, source| WebhookError::File {
            url: cfg.url.clone(),
            what,
            path: path.to_path_buf(),
            source,
        };
        if let Some(why) = url_problem(&cfg.url) {
            return Err(WebhookError::Config {
                url: cfg.url.clone(),
                reason: format!("not an http:// or https:// URL: {why}"),
            });
        }
        let secret = read_secret(&cfg, &file_err)?;
        let routing_key = match &cfg.routing_key_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| file_err("reading routing key file", p, e))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        if cfg.format == WebhookFormat::Pagerduty && routing_key.is_none() {
            return Err(WebhookError::Config {
                url: cfg.url.clone(),
                reason: "format pagerduty needs routing_key_file".into(),
            });
        }
        let dir = spool_dir.join(sink_dir_name(&cfg.url));
        std::fs::create_dir_all(&dir).map_err(|e| file_err("creating spool directory", &dir, e))?;
        let (spool, torn) = Spool::open(&dir, cfg.spool_mib << 20)
            .map_err(|e| file_err("opening spool", &dir, e))?;
        let stats = Arc::new(DeliveryStats::default());
        if torn > 0 {
            tracing::warn!(
                "webhook {}: spool {}: removed a torn last record ({torn} bytes) left by an earlier run",
                cfg.url,
                dir.join("queue").display()
            );
            stats.torn.fetch_add(1, Ordering::Relaxed);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = mpsc::channel();
        let worker = {
            let (cfg, stats, stop, dir) = (
                cfg.clone(),
                Arc::clone(&stats),
                Arc::clone(&stop),
                dir.clone(),
            );
            std::thread::Builder::new()
                .name("tapwatch-webhook".into())
                .spawn(move || deliver_loop(cfg, secret, dir, stats, stop, woken))
                .map_err(|e| file_err("starting delivery thread for", spool_dir, e))?
        };
        Ok(WebhookSink {
            cfg,
            spool,
            routing_key,
            wake,
            stop,
            worker: Some(worker),
            stats,
        })
    }

    /// The sink's URL.
    pub fn url(&self) -> &str {
        &self.cfg.url
    }

    /// Renders and spools one event; it is delivered in the background.
    pub fn send(&mut self, event: &AlertEvent) {
        let body = render(self.cfg.format, event, self.routing_key.as_deref());
        match self.spool.append(&body) {
            Ok(true) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = self.wake.send(());
            }
            Ok(false) => {
                self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.overflow.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("webhook {}: cannot spool an alert: {e}", self.cfg.url);
            }
        }
    }

    /// Waits up to `timeout` for the spool to empty, then stops the sink (a request in
    /// flight is let finish, up to the sink's `timeout_s`). Returns how many alerts remain
    /// spooled for the next run and how long the drain really took.
    pub fn drain(mut self, timeout: Duration) -> Drained {
        let started = Instant::now();
        let deadline = started + timeout;
        while Instant::now() < deadline && self.pending() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.send(());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        Drained {
            left: self.pending(),
            waited: started.elapsed(),
        }
    }

    /// Alerts spooled and not yet delivered or rejected.
    pub fn pending(&self) -> u64 {
        Spool::pending(&self.spool.dir)
    }
}

fn read_secret(
    cfg: &WebhookConfig,
    file_err: &dyn Fn(&'static str, &Path, std::io::Error) -> WebhookError,
) -> Result<Option<Vec<u8>>, WebhookError> {
    if let Some(p) = &cfg.secret_file {
        let text = std::fs::read_to_string(p).map_err(|e| file_err("reading secret file", p, e))?;
        return Ok(Some(
            text.lines()
                .next()
                .unwrap_or("")
                .trim_end()
                .as_bytes()
                .to_vec(),
        ));
    }
    if let Some(var) = &cfg.secret_env {
        return match std::env::var(var) {
            Ok(v) => Ok(Some(v.into_bytes())),
            Err(_) => Err(WebhookError::Config {
                url: cfg.url.clone(),
                reason: format!("secret_env {var} is not set"),
            }),
        };
    }
    Ok(None)
}

/// What is wrong with a webhook URL, or `None`: `http://` or `https://`, a host (name,
/// IPv4 or `[IPv6]`), an optional port from 1 to 65535, an optional path; no spaces.
fn url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Some("it must start with http:// or https://");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains spaces or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) if !h.is_empty() => (h, p.strip_prefix(':')),
            _ => return Some("an IPv6 host needs its closing ]"),
        },
        None => match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Some("it names no host");
    }
    if !host_port.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Some("the host has characters a host name cannot have");
    }
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Some("the port must be a number from 1 to 65535");
        }
    }
    None
}

/// A directory name for a URL (no credentials or separators in it).
fn sink_dir_name(url: &str) -> String {
    let h = crate::alert_id_bytes(url.as_bytes());
    let host: String = url
        .split("//")
        .nth(1)
        .unwrap_or(url)
        .chars()
        .take_while(|c| *c != '/' && *c != '@')
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{host}-{h}")
}

/// The `sha256=HEX` signature of a body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Renders an event for a format.
pub fn render(format: WebhookFormat, e: &AlertEvent, routing_key: Option<&str>) -> Vec<u8> {
    let severity = e.severity.as_str();
    let firing = e.state == AlertState::Firing;
    let summary = format!(
        "[{}] {} {} {}{}",
        if firing { "FIRING" } else { "RESOLVED" },
        e.kind,
        e.subject,
        e.tenant
            .as_deref()
            .map(|t| format!("(tenant {t}) "))
            .unwrap_or_default(),
        format_args!("value {:.3} threshold {:.3}", e.value, e.threshold)
    );
    let v = match format {
        WebhookFormat::Generic => serde_json::to_value(e).unwrap_or_default(),
        WebhookFormat::Slack => {
            serde_json::json!({ "text": format!("{summary} at {}", e.detected_at()) })
        }
        WebhookFormat::Pagerduty => serde_json::json!({
            "routing_key": routing_key.unwrap_or(""),
            "event_action": if firing { "trigger" } else { "resolve" },
            "dedup_key": e.id,
            "payload": {
                "summary": summary,
                "source": e.subject,
                "severity": if severity == "critical" { "critical" } else if severity == "warning" { "warning" } else { "info" },
                "timestamp": e.detected_at(),
                "component": e.kind,
                "group": e.tenant,
                "custom_details": e.evidence,
            },
        }),
        WebhookFormat::Alertmanager => {
            let labels = serde_json::json!({ "alertname": e.kind, "severity": severity, "subject": e.subject, "tenant": e.tenant.clone().unwrap_or_default() });
            let status = if firing { "firing" } else { "resolved" };
            serde_json::json!({
                "version": "4",
                "groupKey": format!("{{}}:{{alertname=\"{}\"}}", e.kind),
                "truncatedAlerts": 0,
                "status": status,
                "receiver": "tapwatch",
                "groupLabels": { "alertname": e.kind },
                "commonLabels": labels,
                "commonAnnotations": { "summary": summary },
                "externalURL": "",
                "alerts": [{
                    "status": status,
                    "labels": labels,
                    "annotations": { "summary": summary, "evidence": e.evidence_json() },
                    "startsAt": e.started_at(),
                    "endsAt": if firing { "0001-01-01T00:00:00Z".to_string() } else { e.detected_at() },
                    "generatorURL": "",
                    "fingerprint": e.id,
                }],
            })
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The on-disk spool: `queue` holds `CRC32HEX<TAB>BODY<LF>` records; `cursor` holds the
/// byte offset of the first record not yet delivered. When everything is delivered both
/// are reset.
struct Spool {
    dir: PathBuf,
    file: File,
    cap: u64,
    /// Serialises appends, the repair at open and the reset after delivery between
    /// processes sharing the spool (two runs with the same URL and data directory).
    lock: File,
}

/// The lock file of a spool directory.
fn lock_file(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
}

impl Spool {
    /// Opens the spool in `dir`, cutting off a torn last record (no newline: a run stopped
    /// mid-write); returns it and how many bytes were cut.
    fn open(dir: &Path, cap: u64) -> std::io::Result<(Spool, u64)> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join("queue"))?;
        let lock = lock_file(dir)?;
        lock.lock()?;
        let len = file.metadata()?.len();
        let whole = crate::lines::whole_length(&mut file)?;
        if whole < len {
            file.set_len(whole)?;
        }
        lock.unlock()?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            file,
            cap,
            lock,
        };
        Ok((spool, len - whole))
    }

    fn append(&mut self, body: &[u8]) -> std::io::Result<bool> {
        self.lock.lock()?;
        let done = self.append_locked(body);
        self.lock.unlock()?;
        done
    }

    fn append_locked(&mut self, body: &[u8]) -> std::io::Result<bool> {
        let len = self.file.metadata()?.len();
        if len + body.len() as u64 + 10 > self.cap {
            return Ok(false);
        }
        let mut rec = format!("{:08x}\t", crc32fast::hash(body)).into_bytes();
        rec.extend_from_slice(body);
        rec.push(b'\n');
        if let Err(e) = self
            .file
            .write_all(&rec)
            .and_then(|()| self.file.sync_data())
        {
            // A full disk: cut the partial record off so the next one starts whole.
            let _ = self.file.set_len(len);
            return Err(e);
        }
        Ok(true)
    }

    fn cursor(dir: &Path) -> u64 {
        std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn set_cursor(dir: &Path, offset: u64) -> std::io::Result<()> {
        let tmp = dir.join("cursor.tmp");
        std::fs::write(&tmp, offset.to_string())?;
        std::fs::rename(tmp, dir.join("cursor"))
    }

    /// Records after the cursor.
    fn pending(dir: &Path) -> u64 {
        let Ok(mut f) = File::open(dir.join("queue")) else {
            return 0;
        };
        if f.seek(SeekFrom::Start(Spool::cursor(dir))).is_err() {
            return 0;
        }
        let mut rest = Vec::new();
        let _ = f.read_to_end(&mut rest);
        rest.iter().filter(|b| **b == b'\n').count() as u64
    }
}

/// The next record at or after `offset`: (body, offset after it). A corrupt record (its
/// checksum does not match: edited by hand, or a disk error) is counted, reported with its
/// offset and passed (the cursor moves beyond it, so it is reported once).
fn next_record(dir: &Path, offset: u64, stats: &DeliveryStats) -> Option<(Vec<u8>, u64)> {
    let mut f = File::open(dir.join("queue")).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut reader = BufReader::new(f);
    let mut at = offset;
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line).ok()?;
        if n == 0 || line.last() != Some(&b'\n') {
            return None; // nothing more, or a record still being written
        }
        at += n as u64;
        line.pop();
        let ok = line.len() > 9
            && line[8] == b'\t'
            && std::str::from_utf8(&line[..8])
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                == Some(crc32fast::hash(&line[9..]));
        if ok {
            return Some((line[9..].to_vec(), at));
        }
        stats.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "webhook spool {}, byte {}: corrupt record ({n} bytes, checksum mismatch) skipped",
            dir.join("queue").display(),
            at - n as u64
        );
        let _ = Spool::set_cursor(dir, at);
    }
}

enum Outcome {
    Delivered,
    Rejected(u16),
    Retry(String),
}

fn post(agent: &ureq::Agent, cfg: &WebhookConfig, secret: Option<&[u8]>, body: &[u8]) -> Outcome {
    let mut req = agent
        .post(&cfg.url)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("tapwatch/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(s) = secret {
        req = req.header("X-Tapwatch-Signature", &signature(s, body));
    }
    match req.send(body) {
        Ok(resp) => {
            let code = resp.status().as_u16();
            match code {
                200..=299 => Outcome::Delivered,
                429 | 500..=599 => Outcome::Retry(format!("HTTP {code}")),
                _ => Outcome::Rejected(code),
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

fn deliver_loop(
    cfg: WebhookConfig,
    secret: Option<Vec<u8>>,
    dir: PathBuf,
    stats: Arc<DeliveryStats>,
    stop: Arc<AtomicBool>,
    woken: Receiver<()>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs_f64(cfg.timeout_s.max(0.1))))
        .http_status_as_error(false)
        .build()
        .into();
    let mut rng = crate::Jitter::new(crc32fast::hash(cfg.url.as_bytes()) as u64);
    let min_gap = Duration::from_secs_f64(1.0 / cfg.rate_per_s.max(0.01));
    let mut last_post = Instant::now() - min_gap;
    let mut backoff = Duration::from_millis(250);
    let mut warned = false;
    loop {
        let cursor = Spool::cursor(&dir);
        let Some((body, next)) = next_record(&dir, cursor, &stats) else {
            // Everything delivered: start the spool afresh, under the lock so no append
            // lands between the check and the reset.
            if cursor > 0 && Spool::pending(&dir) == 0 {
                if let (Ok(f), Ok(lock)) = (
                    OpenOptions::new().write(true).open(dir.join("queue")),
                    lock_file(&dir),
                ) {
                    if lock.lock().is_ok()
                        && Spool::cursor(&dir) == cursor
                        && f.metadata().map(|m| m.len()).unwrap_or(0) == cursor
                        && f.set_len(0).is_ok()
                    {
                        let _ = Spool::set_cursor(&dir, 0);
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match woken.recv_timeout(Duration::from_millis(200)) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Keep the rate, in small steps so a stop request (the drain timeout) is honoured.
        loop {
            let left = min_gap.saturating_sub(last_post.elapsed());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        last_post = Instant::now();
        match post(&agent, &cfg, secret.as_deref(), &body) {
            Outcome::Delivered => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                let _ = Spool::set_cursor(&dir, next);
                backoff = Duration::from_millis(250);
                warned = false;
            }
            Outcome::Rejected(code) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "webhook {}: receiver rejected an alert with HTTP {code}; not retrying it",
                    cfg.url
                );
                let _ = Spool::set_cursor(&dir, next);
            }
            Outcome::Retry(why) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                if !warned {
                    tracing::warn!("webhook {}: delivery failed ({why}); retrying with backoff, alerts stay spooled", cfg.url);
                    warned = true;
                }
                let wait = backoff.mul_f64(0.8 + 0.4 * rng.unit());
                backoff = (backoff * 2).min(Duration::from_secs(30));
                // Sleep in small steps so a stop request is honoured promptly.
                let until = Instant::now() + wait;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AlertEngine;
    use tapwatch_analyzer::{Evidence, Finding, FindingKind, Severity, SynBurstResolvedEvidence};

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tw-hook-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn webhook_urls_and_settings_are_checked() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.net/x?y=1",
            "http://[::1]:9/",
            "https://user@host.example",
        ] {
            assert_eq!(url_problem(good), None, "{good}");
        }
        for bad in [
            "not a url",
            "http://",
            "http:// host/",
            "http://host:0/",
            "http://host:99999/",
            "ftp://host/",
            "http://[::1/",
        ] {
            assert!(url_problem(bad).is_some(), "{bad}");
        }
        let p = SettingPath::new("webhook").index(0);
        let mut c = WebhookConfig::for_url("not a url");
        assert!(c
            .check(&p)
            .unwrap_err()
            .to_string()
            .starts_with("webhook[1].url = \"not a url\""));
        c.url = "http://127.0.0.1/".into();
        c.check(&p).unwrap();
        c.spool_mib = 0;
        assert!(c
            .check(&p)
            .unwrap_err()
            .to_string()
            .contains("spool_mib = 0"));
        c.spool_mib = 1;
        for r in [0.0, 0.05, f64::NAN] {
            c.rate_per_s = r;
            assert!(c.check(&p).unwrap_err().to_string().contains("rate_per_s"));
        }
        c.rate_per_s = 1.0;
        c.secret_file = Some("/nonexistent/secret".into());
        let e = c.check(&p).unwrap_err().to_string();
        assert!(
            e.contains("secret_file") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_off_at_open_and_the_next_one_reads_whole() {
        let d = tmp("torn");
        let (mut s, torn) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(torn, 0);
        s.append(b"{\"n\":1}").unwrap();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("queue"))
            .unwrap();
        f.write_all(b"12345678\t{\"n\":").unwrap();
        let (mut s, torn) = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(torn, 14);
        s.append(b"{\"n\":2}").unwrap();
        let stats = DeliveryStats::default();
        let (a, at) = next_record(&d, 0, &stats).unwrap();
        let (b, _) = next_record(&d, at, &stats).unwrap();
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (&b"{\"n\":1}"[..], &b"{\"n\":2}"[..])
        );
        assert_eq!(stats.corrupt.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_record_is_counted_once_and_passed() {
        let d = tmp("corrupt");
        let (mut s, _) = Spool::open(&d, 1 << 20).unwrap();
        for n in 1..=3 {
            s.append(format!("{{\"n\":{n}}}").as_bytes()).unwrap();
        }
        let queue = d.join("queue");
        let text = std::fs::read_to_string(&queue).unwrap();
        std::fs::write(&queue, text.replace("{\"n\":2}", "{\"n\":9}")).unwrap();
        let stats = DeliveryStats::default();
        let (_, at) = next_record(&d, 0, &stats).unwrap();
        Spool::set_cursor(&d, at).unwrap();
        let (b, _) = next_record(&d, at, &stats).unwrap();
        assert_eq!(b, b"{\"n\":3}");
        assert_eq!(stats.corrupt.load(Ordering::Relaxed), 1);
        // The cursor moved past the corrupt record: a second look reports nothing new.
        assert!(Spool::cursor(&d) > at);
        next_record(&d, Spool::cursor(&d), &stats).unwrap();
        assert_eq!(stats.corrupt.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A firing and a resolved event from the engine.
    fn events() -> (AlertEvent, AlertEvent) {
        let mut engine = AlertEngine::default();
        let mut f = Finding {
            kind: FindingKind::SynRetransmits,
            active: true,
            tenant: Some("web".into()),
            subject: "192.0.2.80:443/tcp".into(),
            severity: Severity::Critical,
            started_ns: 1_767_225_600_000_000_000,
            detected_ns: 1_767_225_610_000_000_000,
            value: 12.0,
            threshold: 5.0,
            evidence: Evidence::SynBurstResolved(SynBurstResolvedEvidence { window_s: 10.0 }),
        };
        let firing = engine.process(&f).remove(0);
        f.active = false;
        f.detected_ns += 20_000_000_000;
        (firing, engine.process(&f).remove(0))
    }

    fn json(format: WebhookFormat, e: &AlertEvent) -> serde_json::Value {
        serde_json::from_slice(&render(format, e, Some("rk"))).unwrap()
    }

    #[test]
    fn every_format_renders_the_event() {
        let (firing, resolved) = events();
        let generic = json(WebhookFormat::Generic, &firing);
        assert_eq!(generic, serde_json::to_value(&firing).unwrap());
        assert_eq!(generic["detected_at"], "2026-01-01T00:00:10.000000000Z");
        let slack = json(WebhookFormat::Slack, &resolved);
        assert_eq!(
            slack["text"],
            "[RESOLVED] syn_retransmits 192.0.2.80:443/tcp (tenant web) value 12.000 threshold 5.000 at 2026-01-01T00:00:30.000000000Z"
        );
        let pd = json(WebhookFormat::Pagerduty, &firing);
        assert_eq!(
            (&pd["event_action"], &pd["dedup_key"], &pd["routing_key"]),
            (&"trigger".into(), &firing.id.clone().into(), &"rk".into())
        );
        assert_eq!(pd["payload"]["severity"], "critical");
        assert_eq!(pd["payload"]["custom_details"]["window_s"], 10.0);
        assert_eq!(
            json(WebhookFormat::Pagerduty, &resolved)["event_action"],
            "resolve"
        );
        let am = json(WebhookFormat::Alertmanager, &resolved);
        assert_eq!(am["status"], "resolved");
        let alert = &am["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "syn_retransmits");
        assert_eq!(alert["startsAt"], "2026-01-01T00:00:00.000000000Z");
        assert_eq!(alert["endsAt"], "2026-01-01T00:00:30.000000000Z");
        assert_eq!(alert["annotations"]["evidence"], r#"{"window_s":10.0}"#);
        let am_firing = json(WebhookFormat::Alertmanager, &firing);
        assert_eq!(am_firing["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    }

    #[test]
    fn formats_parse_and_signatures_match_the_reference() {
        assert_eq!("json".parse::<WebhookFormat>(), Ok(WebhookFormat::Generic));
        assert!("teams"
            .parse::<WebhookFormat>()
            .unwrap_err()
            .contains("alertmanager"));
        assert_eq!(
            signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn the_spool_keeps_records_in_order_and_skips_corrupt_ones() {
        let dir = std::env::temp_dir().join(format!("tapwatch-spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut spool, _) = Spool::open(&dir, 64).unwrap();
        assert!(spool.append(b"first").unwrap());
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("queue"))
            .unwrap()
            .write_all(b"00000000\tdamaged\n")
            .unwrap();
        assert!(spool.append(b"second").unwrap());
        assert!(!spool.append(&[b'x'; 40]).unwrap(), "over the cap");
        let stats = DeliveryStats::default();
        let (a, at) = next_record(&dir, 0, &stats).unwrap();
        let (b, end) = next_record(&dir, at, &stats).unwrap();
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (&b"first"[..], &b"second"[..])
        );
        assert_eq!(stats.corrupt.load(Ordering::Relaxed), 1);
        assert!(next_record(&dir, end, &stats).is_none());
        Spool::set_cursor(&dir, at).unwrap();
        assert_eq!((Spool::cursor(&dir), Spool::pending(&dir)), (at, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
