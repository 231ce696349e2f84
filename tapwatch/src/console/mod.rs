//! The console over history: pages (Overview, Alerts, an alert, Tenants, a tenant) embedded
//! in the binary, and the JSON API under `/api/history/…` they read, answered from the
//! storage crate's history questions (ClickHouse when configured, else the file store).
//! Served by `tapwatch run --listen` and `tapwatch replay --serve` alike, from the status
//! endpoint's thread: [`serve`] is its one entry point.
mod api;
mod assets;
mod params;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tapwatch_storage::Backend;

use crate::http::Telemetry;

/// History questions answered at once at most; more are told to retry (503). Each runs on
/// a thread of its own, so a long range never holds up `/metrics` or the status page.
const MAX_IN_FLIGHT: usize = 4;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Where the console reads history: the backend the run stores into, opened again for reads.
pub struct History {
    backend: Mutex<Backend>,
}

impl History {
    /// The history the config stores into (`[clickhouse]`/`TAPWATCH_CLICKHOUSE_URL`, else
    /// the file store under the data directory).
    pub fn open(config: &crate::config::Config) -> anyhow::Result<History> {
        Ok(History {
            backend: Mutex::new(Backend::from_config(&config.clickhouse, &config.storage)?),
        })
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("History")
    }
}

/// One answer of the console: status, content type, caching and body.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    cache: &'static str,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, cache: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            cache,
            etag: None,
            body,
        }
    }

    /// The tiny_http response.
    pub fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let h = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).expect("static header");
        let mut r = tiny_http::Response::from_data(self.body)
            .with_status_code(self.status)
            .with_header(h("Content-Type", self.content_type))
            .with_header(h("Cache-Control", self.cache))
            .with_header(h("X-Content-Type-Options", "nosniff"));
        if let Some(tag) = self.etag {
            r = r.with_header(h("ETag", &tag));
        }
        r
    }
}

/// Answers `req` when it is the console's (history questions on a thread of their own,
/// pages and assets at once) and returns `None`; hands any other request back.
pub fn serve(req: tiny_http::Request, telemetry: &Arc<Telemetry>) -> Option<tiny_http::Request> {
    let url = req.url().to_string();
    let inm = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("If-None-Match"))
        .map(|h| h.value.to_string());
    if !url.starts_with("/api/history/") {
        return match respond(&url, inm.as_deref(), telemetry.history.get()) {
            Some(r) => {
                let _ = req.respond(r.into_response());
                None
            }
            None => Some(req),
        };
    }
    if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        let busy = api::error(503, "busy: too many history questions at once; retry");
        let _ = req.respond(busy.into_response());
        return None;
    }
    let t = Arc::clone(telemetry);
    let spawned = std::thread::Builder::new()
        .name("tapwatch-history".into())
        .spawn(move || {
            if let Some(r) = respond(&url, None, t.history.get()) {
                let _ = req.respond(r.into_response());
            }
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        // The request went with the closure (its connection is closed).
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
    None
}

/// The console's answer to `GET url` (path and query), or `None` when the path is not the
/// console's. `if_none_match` is the request's `If-None-Match` header.
fn respond(url: &str, if_none_match: Option<&str>, history: Option<&History>) -> Option<Reply> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    if let Some(rest) = path.strip_prefix("/api/history/") {
        return Some(match history {
            Some(h) => {
                let backend = h.backend.lock().unwrap_or_else(|e| e.into_inner());
                api::answer(rest, query, &backend)
            }
            None => api::error(
                503,
                "no history: this run keeps none (--no-store); the console needs the file store or ClickHouse",
            ),
        });
    }
    if let Some(name) = path.strip_prefix("/console/assets/") {
        return Some(assets::asset(name, if_none_match));
    }
    if path == "/console" || path.starts_with("/console/") {
        return Some(assets::page(path));
    }
    None
}
