//! The console's pages and assets, embedded in the binary: one HTML shell for every page
//! (the script draws the page its path names), the console's script and style, and uPlot
//! (vendored from the npm registry, MIT). Assets are cached for a year under a URL that
//! carries a hash of their content (`?v=…`) and an `ETag`; the shell is revalidated.
use std::sync::OnceLock;

use super::Reply;

const SHELL: &str = include_str!("../../assets/console/console.html");

/// (name, content type, bytes).
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console/console.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/uplot/uPlot.min.css"),
    ),
];

/// FNV-1a of every asset, hex: the `?v=` of their URLs and their `ETag`.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in ASSETS.iter().flat_map(|a| a.2.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    })
}

/// An asset by name: 304 when the client holds this version.
pub fn asset(name: &str, if_none_match: Option<&str>) -> Reply {
    let Some((_, ctype, body)) = ASSETS.iter().find(|a| a.0 == name) else {
        return Reply::new(
            404,
            "text/plain; charset=utf-8",
            "no-store",
            format!("no console asset {name:?}\n").into_bytes(),
        );
    };
    let tag = format!("\"{}\"", version());
    let cache = "public, max-age=31536000, immutable";
    let mut r = if if_none_match == Some(tag.as_str()) {
        Reply::new(304, ctype, cache, Vec::new())
    } else {
        Reply::new(200, ctype, cache, body.to_vec())
    };
    r.etag = Some(tag);
    r
}

/// The shell for a console path (`/console/`, `/console/alerts[/ID]`,
/// `/console/tenants[/NAME]`); 404 for any other.
pub fn page(path: &str) -> Reply {
    let rest = path.trim_start_matches("/console").trim_start_matches('/');
    let known = rest.is_empty()
        || rest == "alerts"
        || rest == "tenants"
        || rest.strip_prefix("alerts/").is_some_and(|s| !s.is_empty())
        || rest.strip_prefix("tenants/").is_some_and(|s| !s.is_empty());
    Reply::new(
        if known { 200 } else { 404 },
        "text/html; charset=utf-8",
        "no-cache",
        SHELL.replace("{{V}}", version()).into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_cached_by_version_and_pages_revalidated() {
        let js = asset("uPlot.iife.min.js", None);
        assert_eq!(
            (js.status, js.content_type),
            (200, "text/javascript; charset=utf-8")
        );
        assert!(js.cache.contains("max-age=31536000"));
        let tag = js.etag.clone().unwrap();
        assert_eq!(asset("uPlot.iife.min.js", Some(&tag)).status, 304);
        assert_eq!(asset("nope.js", None).status, 404);
        let p = page("/console/alerts/00ff");
        assert_eq!((p.status, p.cache), (200, "no-cache"));
        let html = String::from_utf8(p.body).unwrap();
        assert!(
            html.contains(&format!("console.js?v={}", version())),
            "{html}"
        );
        assert!(!html.contains("{{V}}"));
        assert_eq!(page("/console/nowhere").status, 404);
    }
}
