//! `/api/history/…`: the history questions as JSON. Every answer is a typed struct;
//! parameters are checked (a 400 names the parameter and what was expected); the range
//! defaults to everything stored (`since` the first window with traffic, `until` just after
//! the last).
use serde::Serialize;
use tapwatch_storage::history::{self, AlertFilter, By, Range, TopOf};
use tapwatch_storage::Backend;

use super::params::{BadParam, Params};
use super::Reply;

/// Routes and the parameters each takes (for the 404's list and the 400's).
const ROUTES: [(&str, &[&str]); 10] = [
    ("extent", &[]),
    ("traffic", &["since", "until", "by", "tenant"]),
    (
        "alerts",
        &["since", "until", "kind", "tenant", "severity", "state"],
    ),
    ("alerts/ID", &[]),
    ("top", &["since", "until", "of", "tenant", "limit"]),
    ("tenants", &["since", "until"]),
    ("growth", &["since", "until", "tenant"]),
    ("gaps", &["since", "until", "tenant"]),
    ("heartbeats", &["since", "until", "tenant"]),
    ("latency", &["since", "until", "tenant"]),
];

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// A JSON error answer.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::new(
        status,
        "application/json",
        "no-store",
        serde_json::to_vec(&ErrorBody { error: message }).unwrap_or_default(),
    )
}

fn ok<T: Serialize>(v: &T) -> Reply {
    match serde_json::to_vec(v) {
        Ok(body) => Reply::new(200, "application/json", "no-store", body),
        Err(e) => error(500, &e.to_string()),
    }
}

enum Fail {
    Bad(BadParam),
    NotFound(String),
    Store(tapwatch_storage::StorageError),
}

impl From<BadParam> for Fail {
    fn from(b: BadParam) -> Fail {
        Fail::Bad(b)
    }
}

impl From<tapwatch_storage::StorageError> for Fail {
    fn from(e: tapwatch_storage::StorageError) -> Fail {
        Fail::Store(e)
    }
}

/// The answer to `/api/history/{route}?{query}`.
pub fn answer(route: &str, query: &str, b: &Backend) -> Reply {
    match route_answer(route, query, b) {
        Ok(r) => r,
        Err(Fail::Bad(BadParam(m))) => error(400, &m),
        Err(Fail::NotFound(m)) => error(404, &m),
        Err(Fail::Store(e)) => error(502, &format!("reading history: {e}")),
    }
}

fn params_of(route: &str, query: &str) -> Result<Params, BadParam> {
    let allowed = ROUTES
        .iter()
        .find(|(r, _)| *r == route)
        .map_or(&[][..], |(_, a)| *a);
    Params::parse(query, allowed)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The range asked for, defaulting to everything stored.
fn range(p: &Params, b: &Backend) -> Result<Range, Fail> {
    let now = now_s();
    let (since, until) = (p.time("since", now)?, p.time("until", now)?);
    let (since, until) = match (since, until) {
        (Some(s), Some(u)) => (s, u),
        _ => {
            let (first, last) =
                history::extent(b)?.unwrap_or((now.saturating_sub(3600) as u32, now as u32));
            (
                since.unwrap_or(first),
                until.unwrap_or(last.saturating_add(1)),
            )
        }
    };
    if until <= since {
        return Err(Fail::Bad(BadParam(format!(
            "until={until} is not after since={since}: expected a range that ends after it starts"
        ))));
    }
    Ok(Range { since, until })
}

/// `/api/history/extent`.
#[derive(Serialize)]
struct Extent {
    /// First window start with traffic, Unix s (null when nothing is stored).
    first: Option<u32>,
    /// Last window start with traffic.
    last: Option<u32>,
    /// Unix s now (the console's "last 15 minutes" of a live run end here).
    now: u64,
}

/// `/api/history/alerts/ID`.
#[derive(Serialize)]
struct AlertDetail {
    alert: history::AlertSummary,
    events: Vec<EventOut>,
}

/// One event with its evidence as the JSON object it was stored as.
#[derive(Serialize)]
struct EventOut {
    state: String,
    severity: String,
    detected_ms: u64,
    started_ms: u64,
    value: f64,
    threshold: f64,
    agent: String,
    /// Passed through as stored (`docs/alerts.md`, per kind).
    evidence: serde_json::Value,
}

#[derive(Serialize)]
struct Latency {
    step_s: u32,
    series: Vec<history::LatencySeries>,
}

fn not_found(route: &str) -> Fail {
    let names: Vec<String> = ROUTES
        .iter()
        .map(|(r, _)| format!("/api/history/{r}"))
        .collect();
    Fail::NotFound(format!(
        "no route /api/history/{route}: try {}",
        names.join(", ")
    ))
}

fn route_answer(route: &str, query: &str, b: &Backend) -> Result<Reply, Fail> {
    if let Some(id) = route.strip_prefix("alerts/") {
        params_of("alerts/ID", query)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Fail::Bad(BadParam(format!(
                "alert id {id:?}: expected the alert's 16 hex digits"
            ))));
        }
        let Some((alert, events)) = history::alert(b, id)? else {
            return Err(Fail::NotFound(format!("no alert {id} in the history")));
        };
        let events = events
            .into_iter()
            .map(|e| EventOut {
                evidence: serde_json::from_str(&e.evidence).unwrap_or(serde_json::Value::Null),
                state: e.state,
                severity: e.severity,
                detected_ms: e.detected_ms,
                started_ms: e.started_ms,
                value: e.value,
                threshold: e.threshold,
                agent: e.agent,
            })
            .collect();
        return Ok(ok(&AlertDetail { alert, events }));
    }
    if !ROUTES.iter().any(|(r, _)| *r == route) {
        return Err(not_found(route));
    }
    let p = params_of(route, query)?;
    let tenant_required = || {
        p.text("tenant")
            .ok_or_else(|| BadParam("tenant: required, the tenant's name".to_string()))
    };
    Ok(match route {
        "extent" => {
            let e = history::extent(b)?;
            ok(&Extent {
                first: e.map(|e| e.0),
                last: e.map(|e| e.1),
                now: now_s(),
            })
        }
        "traffic" => {
            let by = match p.text("by") {
                None => By::ProtocolType,
                Some(v) => v
                    .parse::<By>()
                    .map_err(|e| BadParam(format!("by={v:?}: {e}")))?,
            };
            let r = range(&p, b)?;
            ok(&history::traffic(b, r, by, p.text("tenant").as_deref())?)
        }
        "alerts" => {
            let f = AlertFilter {
                kind: p.text("kind"),
                tenant: p.text("tenant"),
                severity: p.choice("severity", &["info", "warning", "critical"])?,
                state: p.choice("state", &["firing", "resolved"])?,
            };
            let r = range(&p, b)?;
            ok(&history::alerts(b, r, &f)?)
        }
        "top" => {
            let of = match p.choice("of", &["talkers", "services"])?.as_deref() {
                Some("services") => TopOf::Services,
                _ => TopOf::Talkers,
            };
            let limit = p.number("limit", 1, 1000)?.unwrap_or(10) as usize;
            let r = range(&p, b)?;
            ok(&history::top(b, r, of, p.text("tenant").as_deref(), limit)?)
        }
        "tenants" => ok(&history::tenants(b, range(&p, b)?)?),
        "growth" => {
            let t = tenant_required()?;
            ok(&history::growth(b, range(&p, b)?, &t)?)
        }
        "gaps" => {
            let t = tenant_required()?;
            ok(&history::gaps(b, range(&p, b)?, &t)?)
        }
        "heartbeats" => {
            let t = tenant_required()?;
            ok(&history::heartbeats(b, range(&p, b)?, &t)?)
        }
        "latency" => {
            let t = tenant_required()?;
            let (step_s, series) = history::latency(b, range(&p, b)?, &t)?;
            ok(&Latency { step_s, series })
        }
        _ => return Err(not_found(route)),
    })
}
