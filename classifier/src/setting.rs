//! Range checks for numeric settings, shared by every section of the config file: each
//! failure names the setting by its path in the file (`analyzer.heavy_hitters.min_share`,
//! `webhook[1].url`) so the binary can point at its line.
use std::fmt;

/// One step of a setting's path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A key.
    Key(String),
    /// An index into an array of tables (`[[webhook]]`), from 0.
    Index(usize),
}

/// Where a setting is in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingPath(pub Vec<Step>);

impl SettingPath {
    /// A path starting at the top-level key `section`.
    pub fn new(section: &str) -> SettingPath {
        SettingPath(vec![Step::Key(section.to_string())])
    }

    /// This path with `key` below it.
    pub fn key(&self, key: &str) -> SettingPath {
        let mut p = self.clone();
        p.0.push(Step::Key(key.to_string()));
        p
    }

    /// This path with array index `i` below it.
    pub fn index(&self, i: usize) -> SettingPath {
        let mut p = self.clone();
        p.0.push(Step::Index(i));
        p
    }
}

impl fmt::Display for SettingPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{}]", n + 1)?,
            }
        }
        Ok(())
    }
}

/// A setting whose value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path} = {value}: expected {expected}")]
pub struct SettingError {
    /// The setting.
    pub path: SettingPath,
    /// Its value as given.
    pub value: String,
    /// What is allowed.
    pub expected: String,
}

impl SettingError {
    /// An error for `path` holding `value`.
    pub fn new(path: SettingPath, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        SettingError {
            path,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// A number from `lo` to `hi` (both included, both finite); NaN and infinities are refused.
pub fn f64_in(path: &SettingPath, key: &str, v: f64, lo: f64, hi: f64) -> Result<(), SettingError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        return Ok(());
    }
    Err(SettingError::new(
        path.key(key),
        v,
        format!("a number from {lo} to {hi}"),
    ))
}

/// A number above 0 up to `hi`; NaN and infinities are refused.
pub fn f64_positive(path: &SettingPath, key: &str, v: f64, hi: f64) -> Result<(), SettingError> {
    if v.is_finite() && v > 0.0 && v <= hi {
        return Ok(());
    }
    Err(SettingError::new(
        path.key(key),
        v,
        format!("a number above 0 up to {hi}"),
    ))
}

/// A whole number from `lo` to `hi` (both included).
pub fn int_in<T>(path: &SettingPath, key: &str, v: T, lo: T, hi: T) -> Result<(), SettingError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if lo <= v && v <= hi {
        return Ok(());
    }
    Err(SettingError::new(
        path.key(key),
        v,
        format!("a whole number from {lo} to {hi}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_named_with_their_range() {
        let p = SettingPath::new("analyzer");
        assert!(f64_in(&p, "x", 0.5, 0.0, 1.0).is_ok());
        for bad in [f64::NAN, f64::INFINITY, -1.0, 2.0] {
            assert!(f64_in(&p, "x", bad, 0.0, 1.0).is_err(), "{bad}");
        }
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(f64_positive(&p, "x", bad, 10.0).is_err(), "{bad}");
        }
        let e = int_in(
            &p.key("heavy_hitters"),
            "sketch_capacity",
            0usize,
            16,
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "analyzer.heavy_hitters.sketch_capacity = 0: expected a whole number from 16 to 1048576"
        );
        let w = SettingPath::new("webhook").index(1).key("url");
        assert_eq!(w.to_string(), "webhook[2].url");
    }
}
