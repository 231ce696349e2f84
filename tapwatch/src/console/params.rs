//! Query-string parameters of the history API: decoded, checked against the names a route
//! takes, each error naming the parameter and what was expected.
use std::collections::BTreeMap;

/// A request's parameters.
pub struct Params(BTreeMap<String, String>);

/// A parameter that cannot be used: the message of a 400 answer.
#[derive(Debug)]
pub struct BadParam(pub String);

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> Result<String, BadParam> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let v = b
                    .get(i + 1)
                    .and_then(|h| unhex(*h))
                    .zip(b.get(i + 2).and_then(|l| unhex(*l)))
                    .ok_or_else(|| BadParam(format!("bad percent-escape in {s:?}")))?;
                out.push(v.0 * 16 + v.1);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| BadParam(format!("{s:?} is not UTF-8")))
}

impl Params {
    /// Parses `query`, refusing names not in `allowed` and repeated names.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, BadParam> {
        let mut m = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k)?;
            if !allowed.contains(&k.as_str()) {
                return Err(BadParam(format!(
                    "unknown parameter {k:?}: expected {}",
                    allowed.join(", ")
                )));
            }
            if m.insert(k.clone(), decode(v)?).is_some() {
                return Err(BadParam(format!("parameter {k:?} given twice")));
            }
        }
        Ok(Params(m))
    }

    /// A text parameter; empty counts as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A text parameter that must be one of `choices`.
    pub fn choice(&self, name: &str, choices: &[&str]) -> Result<Option<String>, BadParam> {
        match self.text(name) {
            Some(v) if !choices.contains(&v.as_str()) => Err(BadParam(format!(
                "{name}={v:?}: expected one of {}",
                choices.join(", ")
            ))),
            v => Ok(v),
        }
    }

    /// An integer parameter within `lo..=hi`.
    pub fn number(&self, name: &str, lo: u64, hi: u64) -> Result<Option<u64>, BadParam> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(BadParam(format!(
                "{name}={v:?}: expected a whole number from {lo} to {hi}"
            ))),
        }
    }

    /// A time: Unix seconds, RFC 3339 (`2026-11-23T14:00:00Z`) or an age before `now`
    /// (`90s`, `15m`, `6h`, `7d`).
    pub fn time(&self, name: &str, now: u64) -> Result<Option<u32>, BadParam> {
        let Some(v) = self.text(name) else {
            return Ok(None);
        };
        if let Ok(n) = v.parse::<u32>() {
            return Ok(Some(n));
        }
        crate::history::parse_time(name, &v, now)
            .map(Some)
            .map_err(|_| {
                BadParam(format!(
                    "{name}={v:?}: expected Unix seconds, RFC 3339 (2026-11-23T14:00:00Z) or an age like 90s, 15m, 6h, 7d"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded_and_checked_by_name() {
        let p = Params::parse(
            "tenant=a%20b&since=2026-11-23T14%3A00%3A00Z",
            &["tenant", "since"],
        )
        .unwrap();
        assert_eq!(p.text("tenant").as_deref(), Some("a b"));
        assert_eq!(p.time("since", 0).unwrap(), Some(1_795_442_400));
        let e = Params::parse("bogus=1", &["since"]).err().unwrap().0;
        assert!(e.contains("\"bogus\"") && e.contains("since"), "{e}");
        let e = Params::parse("since=yesterday", &["since"])
            .unwrap()
            .time("since", 0);
        assert!(e
            .unwrap_err()
            .0
            .starts_with("since=\"yesterday\": expected"));
        let e = Params::parse("limit=0", &["limit"])
            .unwrap()
            .number("limit", 1, 10);
        assert!(e.unwrap_err().0.contains("from 1 to 10"));
        assert!(Params::parse("a=%zz", &["a"]).is_err());
    }
}
