//! The search space: which config keys vary, over what, and how a sampled point becomes config
//! overrides.
//!
//! Each parameter is written as a short text (`loguniform(1e-5, 1e-3)`, `choice([16, 32])`)
//! because that is what fits on one line of a TOML `[search.params]` table and reads like
//! Optuna's `suggest_*` calls, which most users already know.
//!
//! Samplers never work on raw values: every numeric parameter maps to an *internal coordinate*
//! (the value itself, or its natural log for log-scaled parameters) so that "evenly spaced",
//! "nearby" and "bandwidth" mean the same thing for a learning rate as for a dropout rate.
//! Choices map to their index.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The names accepted by [`Distribution::parse`], for the "unknown distribution" message.
const KNOWN_FORMS: &str =
    "loguniform(lo, hi), uniform(lo, hi), int(lo, hi), logint(lo, hi) or choice([a, b, ...])";

/// The range a parameter is searched over.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A float whose log is uniform on `[ln lo, ln hi]`: for scale parameters such as learning
    /// rates, where 1e-5 → 2e-5 matters as much as 1e-4 → 2e-4.
    LogUniform {
        /// Smallest value (> 0).
        lo: f64,
        /// Largest value.
        hi: f64,
    },
    /// A float uniform on `[lo, hi]`.
    Uniform {
        /// Smallest value.
        lo: f64,
        /// Largest value.
        hi: f64,
    },
    /// An integer in `[lo, hi]`, on a log scale when `log` (`logint(8, 64)`).
    Int {
        /// Smallest value (≥ 1 when `log`).
        lo: i64,
        /// Largest value.
        hi: i64,
        /// Search on the log scale.
        log: bool,
    },
    /// One of a list of TOML values, unordered.
    Choice(Vec<toml::Value>),
}

/// One parameter of a search: the config key it overrides (`"train.learning_rate"`) and its
/// range.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Dotted config key, as `--set` takes it.
    pub key: String,
    /// The range searched.
    pub dist: Distribution,
}

/// The parameters of a search, in the order the user wrote them. A `Vec` rather than a map
/// because trial values are stored positionally, and the order also fixes the grid order and
/// the column order of reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchSpace {
    /// The parameters, in key order as given.
    pub params: Vec<Param>,
}

/// One sampled parameter value. Choices are stored by index so that a trial's values stay
/// small, typed and comparable whatever the options are; [`Value::to_toml`] turns them back
/// into the option itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// A value of a `loguniform` or `uniform` parameter.
    Float(f64),
    /// A value of an `int` or `logint` parameter.
    Int(i64),
    /// The index of the option of a `choice` parameter.
    Choice(usize),
}

fn bad(key: &str, expected: &str, text: &str) -> Error {
    Error::Config(format!(
        "search.params.{key:?}: expected {expected}, got {text:?}"
    ))
}

/// Splits `"a, b"` into two trimmed parts; `None` unless there are exactly two.
fn two_args(inner: &str) -> Option<(&str, &str)> {
    let mut parts = inner.split(',');
    let a = parts.next()?.trim();
    let b = parts.next()?.trim();
    if parts.next().is_some() || a.is_empty() || b.is_empty() {
        return None;
    }
    Some((a, b))
}

fn two_floats(inner: &str) -> Option<(f64, f64)> {
    let (a, b) = two_args(inner)?;
    let lo: f64 = a.parse().ok()?;
    let hi: f64 = b.parse().ok()?;
    (lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

fn two_ints(inner: &str) -> Option<(i64, i64)> {
    let (a, b) = two_args(inner)?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Distribution {
    /// Parses one parameter's text. `key` is the config key being searched; it only appears in
    /// error messages, so the user sees which line of `[search.params]` is wrong.
    pub fn parse(key: &str, text: &str) -> Result<Distribution> {
        let t = text.trim();
        let (name, inner) = match (t.find('('), t.ends_with(')')) {
            (Some(open), true) => (t[..open].trim(), &t[open + 1..t.len() - 1]),
            _ => {
                return Err(Error::Config(format!(
                    "search.params.{key:?}: cannot read {text:?}: expected {KNOWN_FORMS}"
                )));
            }
        };
        match name {
            "loguniform" => {
                let expected = "loguniform(lo, hi) with 0 < lo < hi";
                match two_floats(inner) {
                    Some((lo, hi)) if lo > 0.0 && lo < hi => {
                        Ok(Distribution::LogUniform { lo, hi })
                    }
                    _ => Err(bad(key, expected, text)),
                }
            }
            "uniform" => {
                let expected = "uniform(lo, hi) with lo < hi";
                match two_floats(inner) {
                    Some((lo, hi)) if lo < hi => Ok(Distribution::Uniform { lo, hi }),
                    _ => Err(bad(key, expected, text)),
                }
            }
            "int" => {
                let expected = "int(lo, hi) with integers lo < hi";
                match two_ints(inner) {
                    Some((lo, hi)) if lo < hi => Ok(Distribution::Int { lo, hi, log: false }),
                    _ => Err(bad(key, expected, text)),
                }
            }
            "logint" => {
                let expected = "logint(lo, hi) with integers 0 < lo < hi";
                match two_ints(inner) {
                    Some((lo, hi)) if lo > 0 && lo < hi => {
                        Ok(Distribution::Int { lo, hi, log: true })
                    }
                    _ => Err(bad(key, expected, text)),
                }
            }
            "choice" => Self::parse_choice(key, text, inner.trim()),
            _ => Err(Error::Config(format!(
                "search.params.{key:?}: unknown distribution {text:?}: expected {KNOWN_FORMS}"
            ))),
        }
    }

    /// The list is read by the TOML parser itself so that options are written exactly as they
    /// would be in the config (`"cosine"`, `16`, `true`, `2e-5`) and come back with the types
    /// the config expects.
    fn parse_choice(key: &str, text: &str, list: &str) -> Result<Distribution> {
        let expected = "choice([a, b, ...]) with a non-empty TOML array of distinct options";
        if !list.starts_with('[') {
            return Err(bad(key, expected, text));
        }
        let table = toml::from_str::<toml::Table>(&format!("v = {list}")).map_err(|e| {
            Error::Config(format!(
                "search.params.{key:?}: expected {expected}, got {text:?}: {}",
                e.message().trim()
            ))
        })?;
        let options = match table.get("v") {
            Some(toml::Value::Array(options)) if !options.is_empty() => options.clone(),
            _ => return Err(bad(key, expected, text)),
        };
        // Duplicates would silently double an option's prior weight and repeat grid points.
        for (i, a) in options.iter().enumerate() {
            if options[..i].contains(a) {
                return Err(Error::Config(format!(
                    "search.params.{key:?}: option {a} appears twice in {text:?}"
                )));
            }
        }
        Ok(Distribution::Choice(options))
    }

    /// The bounds of the internal coordinate as the samplers see them, or `None` for choices.
    ///
    /// For integers each value owns the cell `[v − ½, v + ½]` (in log space for `logint`), so
    /// the end values are as likely as the middle ones — Optuna's convention.
    pub fn internal_bounds(&self) -> Option<(f64, f64)> {
        match *self {
            Distribution::LogUniform { lo, hi } => Some((lo.ln(), hi.ln())),
            Distribution::Uniform { lo, hi } => Some((lo, hi)),
            Distribution::Int { lo, hi, log: false } => Some((lo as f64 - 0.5, hi as f64 + 0.5)),
            Distribution::Int { lo, hi, log: true } => {
                Some(((lo as f64 - 0.5).ln(), (hi as f64 + 0.5).ln()))
            }
            Distribution::Choice(_) => None,
        }
    }

    /// The internal coordinate of `value`: the value (or its log) for numbers, the index for
    /// choices. `None` when the value is of the wrong kind or out of range, e.g. a stored trial
    /// from before the search space was edited.
    pub fn to_internal(&self, value: &Value) -> Option<f64> {
        match (self, *value) {
            (Distribution::LogUniform { lo, hi }, Value::Float(v)) if v >= *lo && v <= *hi => {
                Some(v.ln())
            }
            (Distribution::Uniform { lo, hi }, Value::Float(v)) if v >= *lo && v <= *hi => Some(v),
            (Distribution::Int { lo, hi, log }, Value::Int(v)) if v >= *lo && v <= *hi => {
                Some(if *log { (v as f64).ln() } else { v as f64 })
            }
            (Distribution::Choice(options), Value::Choice(i)) if i < options.len() => {
                Some(i as f64)
            }
            _ => None,
        }
    }

    /// The value at internal coordinate `x`, rounded and clamped into range (a sampler may
    /// land a hair outside because `exp(ln hi)` need not equal `hi`).
    pub fn from_internal(&self, x: f64) -> Value {
        match self {
            Distribution::LogUniform { lo, hi } => Value::Float(x.exp().clamp(*lo, *hi)),
            Distribution::Uniform { lo, hi } => Value::Float(x.clamp(*lo, *hi)),
            Distribution::Int { lo, hi, log } => {
                let v = if *log { x.exp() } else { x };
                Value::Int((v.round() as i64).clamp(*lo, *hi))
            }
            Distribution::Choice(options) => {
                let last = options.len().saturating_sub(1) as f64;
                Value::Choice(x.round().clamp(0.0, last) as usize)
            }
        }
    }

    /// Whether `value` is a valid value of this distribution.
    pub fn contains(&self, value: &Value) -> bool {
        self.to_internal(value).is_some()
    }

    /// A value drawn from the prior: uniform on the internal coordinate (log-uniform for log
    /// scales), uniform over integers and options — what Optuna's `RandomSampler` draws.
    pub fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> Value {
        match self {
            Distribution::Int { lo, hi, log: false } => Value::Int(rng.random_range(*lo..=*hi)),
            Distribution::Choice(options) => {
                Value::Choice(rng.random_range(0..options.len().max(1)))
            }
            _ => {
                let (a, b) = self.internal_bounds().unwrap_or((0.0, 0.0));
                self.from_internal(a + rng.random::<f64>() * (b - a))
            }
        }
    }

    /// The grid values of this parameter: every option, every integer when there are at most
    /// `points` of them, otherwise `points` values evenly spaced on the internal scale with both
    /// ends included. `points` below 1 is taken as 1 (the midpoint).
    pub fn grid_values(&self, points: usize) -> Vec<Value> {
        let points = points.max(1);
        match self {
            Distribution::Choice(options) => (0..options.len()).map(Value::Choice).collect(),
            Distribution::Int { lo, hi, log } => {
                let count = i128::from(*hi) - i128::from(*lo) + 1;
                if count <= points as i128 {
                    return (*lo..=*hi).map(Value::Int).collect();
                }
                let (a, b) = if *log {
                    ((*lo as f64).ln(), (*hi as f64).ln())
                } else {
                    (*lo as f64, *hi as f64)
                };
                let mut out: Vec<Value> = spaced(a, b, points)
                    .into_iter()
                    .map(|x| self.from_internal(x))
                    .collect();
                // Rounding can merge neighbours at the low end of a log scale.
                out.dedup();
                out
            }
            Distribution::LogUniform { lo, hi } | Distribution::Uniform { lo, hi } => {
                let log = matches!(self, Distribution::LogUniform { .. });
                let (a, b) = if log { (lo.ln(), hi.ln()) } else { (*lo, *hi) };
                let mut out: Vec<Value> = spaced(a, b, points)
                    .into_iter()
                    .map(|x| self.from_internal(x))
                    .collect();
                // Exact ends, so a grid written as `uniform(0.0, 0.3)` tries exactly 0.0 and 0.3
                // rather than exp(ln 0.3) = 0.30000000000000004.
                if points > 1 {
                    out[0] = Value::Float(*lo);
                    out[points - 1] = Value::Float(*hi);
                }
                out
            }
        }
    }
}

/// `n` points evenly spaced on `[a, b]`, both ends included; the midpoint when `n == 1`.
fn spaced(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![0.5 * (a + b)];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

impl fmt::Display for Distribution {
    /// The text form [`Distribution::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::LogUniform { lo, hi } => write!(f, "loguniform({lo:e}, {hi:e})"),
            Distribution::Uniform { lo, hi } => write!(f, "uniform({lo:?}, {hi:?})"),
            Distribution::Int { lo, hi, log: false } => write!(f, "int({lo}, {hi})"),
            Distribution::Int { lo, hi, log: true } => write!(f, "logint({lo}, {hi})"),
            Distribution::Choice(options) => {
                write!(f, "choice({})", toml::Value::Array(options.clone()))
            }
        }
    }
}

impl Value {
    /// The config value this sampled value stands for, ready to apply as an override
    /// (`"train.learning_rate" = 3.2e-5`, `"train.scheduler" = "cosine"`).
    pub fn to_toml(&self, dist: &Distribution) -> Result<toml::Value> {
        match (self, dist) {
            (Value::Float(v), Distribution::LogUniform { .. } | Distribution::Uniform { .. }) => {
                Ok(toml::Value::Float(*v))
            }
            (Value::Int(v), Distribution::Int { .. }) => Ok(toml::Value::Integer(*v)),
            (Value::Choice(i), Distribution::Choice(options)) if *i < options.len() => {
                Ok(options[*i].clone())
            }
            _ => Err(Error::Config(format!(
                "search value {self:?} does not fit the distribution {dist}"
            ))),
        }
    }

    /// A short human form for tables: 4 significant digits for floats (scientific for log
    /// scales and very small or large numbers), options as written (strings without quotes).
    pub fn display(&self, dist: &Distribution) -> String {
        match (self, dist) {
            (Value::Float(v), Distribution::LogUniform { .. }) => fmt_float(*v, true),
            (Value::Float(v), _) => fmt_float(*v, false),
            (Value::Int(v), _) => v.to_string(),
            (Value::Choice(i), Distribution::Choice(options)) => match options.get(*i) {
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => format!("#{i}"),
            },
            (Value::Choice(i), _) => format!("#{i}"),
        }
    }
}

/// 4 significant digits, trailing zeros dropped.
fn fmt_float(v: f64, scientific: bool) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor() as i32;
    if scientific || !(-3..5).contains(&exp) {
        let s = format!("{v:.3e}");
        match s.split_once('e') {
            Some((mantissa, e)) => {
                let m = mantissa.trim_end_matches('0').trim_end_matches('.');
                format!("{m}e{e}")
            }
            None => s,
        }
    } else {
        let decimals = (3 - exp).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

impl SearchSpace {
    /// Builds a space from `(key, text)` pairs in the order given, parsing each text with
    /// [`Distribution::parse`]. Rejects an empty space and repeated keys.
    pub fn from_texts<K, T>(entries: impl IntoIterator<Item = (K, T)>) -> Result<SearchSpace>
    where
        K: AsRef<str>,
        T: AsRef<str>,
    {
        let mut params: Vec<Param> = Vec::new();
        for (key, text) in entries {
            let key = key.as_ref();
            if params.iter().any(|p| p.key == key) {
                return Err(Error::Config(format!(
                    "search.params.{key:?}: the key is given twice"
                )));
            }
            let dist = Distribution::parse(key, text.as_ref())?;
            params.push(Param {
                key: key.to_string(),
                dist,
            });
        }
        if params.is_empty() {
            return Err(Error::Config(
                "search.params is empty: name at least one parameter to search".into(),
            ));
        }
        Ok(SearchSpace { params })
    }

    /// Whether `values` is a point of this space (right length, each value of the right kind
    /// and in range). Stored trials that fail this (the space was edited since) are ignored by
    /// the samplers.
    pub fn contains(&self, values: &[Value]) -> bool {
        values.len() == self.params.len()
            && self
                .params
                .iter()
                .zip(values)
                .all(|(p, v)| p.dist.contains(v))
    }

    /// The config overrides for a point: `(key, value)` in parameter order.
    pub fn overrides(&self, values: &[Value]) -> Result<Vec<(String, toml::Value)>> {
        if values.len() != self.params.len() {
            return Err(Error::Config(format!(
                "search point has {} values but the space has {} parameters",
                values.len(),
                self.params.len()
            )));
        }
        self.params
            .iter()
            .zip(values)
            .map(|(p, v)| {
                let value = v
                    .to_toml(&p.dist)
                    .map_err(|e| Error::Config(format!("search.params.{:?}: {e}", p.key)))?;
                Ok((p.key.clone(), value))
            })
            .collect()
    }

    /// A point drawn from the prior of every parameter.
    pub fn sample_uniform<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<Value> {
        self.params
            .iter()
            .map(|p| p.dist.sample_uniform(rng))
            .collect()
    }

    /// The grid values of each parameter (see [`Distribution::grid_values`]).
    pub fn grid_axes(&self, points_per_continuous: usize) -> Vec<Vec<Value>> {
        self.params
            .iter()
            .map(|p| p.dist.grid_values(points_per_continuous))
            .collect()
    }

    /// The full grid: the cartesian product of [`SearchSpace::grid_axes`], the first parameter
    /// varying slowest (nested loops in key order), so that the order is stable across runs.
    pub fn grid(&self, points_per_continuous: usize) -> Vec<Vec<Value>> {
        let axes = self.grid_axes(points_per_continuous);
        let len = grid_len(&axes);
        (0..len).map(|i| grid_point(&axes, i)).collect()
    }
}

/// Number of points in the product of `axes` (saturating: a grid that large is never walked to
/// the end).
pub(crate) fn grid_len(axes: &[Vec<Value>]) -> usize {
    axes.iter()
        .fold(1usize, |n, axis| n.saturating_mul(axis.len()))
}

/// The `index`-th point of the product of `axes`, last axis varying fastest.
pub(crate) fn grid_point(axes: &[Vec<Value>], mut index: usize) -> Vec<Value> {
    let mut point = vec![Value::Int(0); axes.len()];
    for (slot, axis) in point.iter_mut().zip(axes).rev() {
        let n = axis.len().max(1);
        if let Some(v) = axis.get(index % n) {
            *slot = *v;
        }
        index /= n;
    }
    point
}

/// Whether two values are the same grid point. Floats compare with a relative tolerance since
/// they may have been through a database and back.
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn err_text(key: &str, text: &str) -> String {
        match Distribution::parse(key, text) {
            Ok(d) => panic!("{text:?} parsed as {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_form() {
        let p = |t| Distribution::parse("k", t).unwrap();
        assert_eq!(
            p("loguniform(1e-5, 1e-3)"),
            Distribution::LogUniform { lo: 1e-5, hi: 1e-3 }
        );
        assert_eq!(
            p(" uniform( 0.0 ,0.3 ) "),
            Distribution::Uniform { lo: 0.0, hi: 0.3 }
        );
        assert_eq!(
            p("uniform(-5, 10)"),
            Distribution::Uniform { lo: -5.0, hi: 10.0 }
        );
        assert_eq!(
            p("int(0, 6)"),
            Distribution::Int {
                lo: 0,
                hi: 6,
                log: false
            }
        );
        assert_eq!(
            p("logint(8, 64)"),
            Distribution::Int {
                lo: 8,
                hi: 64,
                log: true
            }
        );
        assert_eq!(
            p("choice([16, 32, 64])"),
            Distribution::Choice(vec![
                toml::Value::Integer(16),
                toml::Value::Integer(32),
                toml::Value::Integer(64)
            ])
        );
        assert_eq!(
            p(r#"choice(["linear", "cosine"])"#),
            Distribution::Choice(vec![
                toml::Value::String("linear".into()),
                toml::Value::String("cosine".into())
            ])
        );
        assert_eq!(
            p("choice([true, false])"),
            Distribution::Choice(vec![
                toml::Value::Boolean(true),
                toml::Value::Boolean(false)
            ])
        );
    }

    #[test]
    fn display_round_trips_through_parse() {
        for text in [
            "loguniform(1e-5, 1e-3)",
            "uniform(0.0, 0.3)",
            "int(0, 6)",
            "logint(8, 64)",
            "choice([16, 32, 64])",
            r#"choice(["linear", "cosine"])"#,
            "choice([true, false])",
        ] {
            let d = Distribution::parse("k", text).unwrap();
            let again = Distribution::parse("k", &d.to_string()).unwrap();
            assert_eq!(d, again, "{text} -> {d}");
        }
    }

    #[test]
    fn parse_errors_name_the_key_and_the_text() {
        let key = "train.learning_rate";
        let cases = [
            ("loguniform(1e-3, 1e-5)", "0 < lo < hi"),
            ("loguniform(0, 1e-3)", "0 < lo < hi"),
            ("loguniform(-1e-5, 1e-3)", "0 < lo < hi"),
            ("uniform(0.3, 0.0)", "lo < hi"),
            ("uniform(0.1, 0.1)", "lo < hi"),
            ("uniform(0.1, nan)", "lo < hi"),
            ("uniform(0.1)", "lo < hi"),
            ("uniform(0.1, 0.2, 0.3)", "lo < hi"),
            ("int(6, 0)", "integers lo < hi"),
            ("int(0.5, 6)", "integers lo < hi"),
            ("logint(0, 64)", "0 < lo < hi"),
            ("logint(-8, 64)", "0 < lo < hi"),
            ("choice([])", "non-empty"),
            ("choice(16, 32)", "non-empty"),
            ("choice([16, 32)", "non-empty"),
            ("choice([16, 16])", "appears twice"),
            ("normal(0, 1)", "unknown distribution"),
            ("1e-5", "cannot read"),
        ];
        for (text, needle) in cases {
            let msg = err_text(key, text);
            assert!(
                msg.contains(r#"search.params."train.learning_rate""#),
                "{text}: {msg}"
            );
            assert!(msg.contains(text), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
        }
        assert_eq!(
            err_text(key, "loguniform(1e-3, 1e-5)"),
            r#"search.params."train.learning_rate": expected loguniform(lo, hi) with 0 < lo < hi, got "loguniform(1e-3, 1e-5)""#
        );
    }

    #[test]
    fn space_from_texts_keeps_order_and_rejects_duplicates() {
        let space = SearchSpace::from_texts([
            ("train.learning_rate", "loguniform(1e-5, 1e-3)"),
            ("train.batch_size", "choice([16, 32])"),
        ])
        .unwrap();
        let keys: Vec<&str> = space.params.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["train.learning_rate", "train.batch_size"]);
        let dup = SearchSpace::from_texts([("a", "int(0, 3)"), ("a", "int(0, 4)")]);
        assert!(
            dup.unwrap_err()
                .to_string()
                .contains(r#""a": the key is given twice"#)
        );
        let empty: [(&str, &str); 0] = [];
        assert!(SearchSpace::from_texts(empty).is_err());
    }

    #[test]
    fn values_become_overrides_and_display() {
        let space = SearchSpace::from_texts([
            ("train.learning_rate", "loguniform(1e-5, 1e-3)"),
            ("train.scheduler", r#"choice(["linear", "cosine"])"#),
            ("train.epochs", "int(1, 5)"),
            ("train.dropout", "uniform(0.0, 0.3)"),
        ])
        .unwrap();
        let point = [
            Value::Float(3.2e-5),
            Value::Choice(1),
            Value::Int(3),
            Value::Float(0.125),
        ];
        let o = space.overrides(&point).unwrap();
        assert_eq!(
            o[0],
            ("train.learning_rate".into(), toml::Value::Float(3.2e-5))
        );
        assert_eq!(o[1].1, toml::Value::String("cosine".into()));
        assert_eq!(o[2].1, toml::Value::Integer(3));
        let shown: Vec<String> = point
            .iter()
            .zip(&space.params)
            .map(|(v, p)| v.display(&p.dist))
            .collect();
        assert_eq!(shown, ["3.2e-5", "cosine", "3", "0.125"]);
        assert_eq!(fmt_float(0.123456, false), "0.1235");
        assert_eq!(fmt_float(1234.5678, false), "1235");
        // A choice index past the options is an error, not a panic.
        assert!(
            space
                .overrides(&[point[0], Value::Choice(2), point[2], point[3]])
                .is_err()
        );
        assert!(space.overrides(&point[..2]).is_err());
        assert!(space.contains(&point));
        assert!(!space.contains(&[point[0], point[1], Value::Int(9), point[3]]));
    }

    #[test]
    fn grid_of_two_params_has_the_product_in_nested_order() {
        let space = SearchSpace::from_texts([
            ("lr", "loguniform(1e-5, 1e-3)"),
            ("sched", r#"choice(["linear", "cosine"])"#),
        ])
        .unwrap();
        let grid = space.grid(3);
        assert_eq!(grid.len(), 6);
        let lrs = [1e-5, 1e-4, 1e-3];
        for (i, point) in grid.iter().enumerate() {
            let Value::Float(lr) = point[0] else {
                panic!("{point:?}")
            };
            assert!((lr / lrs[i / 2] - 1.0).abs() < 1e-12, "{i}: {lr}");
            assert_eq!(point[1], Value::Choice(i % 2));
        }
        // Exact ends.
        assert_eq!(grid[0][0], Value::Float(1e-5));
        assert_eq!(grid[5][0], Value::Float(1e-3));
    }

    #[test]
    fn grid_of_ints_uses_all_values_or_even_spacing() {
        let small = Distribution::parse("k", "int(0, 3)").unwrap();
        assert_eq!(
            small.grid_values(5),
            (0..=3).map(Value::Int).collect::<Vec<_>>()
        );
        let wide = Distribution::parse("k", "int(0, 100)").unwrap();
        assert_eq!(
            wide.grid_values(5),
            [0, 25, 50, 75, 100].map(Value::Int).to_vec()
        );
        let log = Distribution::parse("k", "logint(8, 512)").unwrap();
        assert_eq!(
            log.grid_values(4),
            [8, 32, 128, 512].map(Value::Int).to_vec()
        );
        let uniform = Distribution::parse("k", "uniform(0.0, 0.3)").unwrap();
        assert_eq!(uniform.grid_values(1), vec![Value::Float(0.15)]);
        let four = uniform.grid_values(4);
        assert_eq!(four.len(), 4);
        for (v, want) in four.iter().zip([0.0, 0.1, 0.2, 0.3]) {
            assert!(same_value(v, &Value::Float(want)), "{v:?} != {want}");
        }
    }

    #[test]
    fn internal_coordinates_round_trip_and_stay_in_range() {
        let mut rng = StdRng::seed_from_u64(1);
        for text in [
            "loguniform(1e-5, 1e-3)",
            "uniform(-1.0, 2.0)",
            "int(0, 6)",
            "logint(1, 64)",
            "choice([1, 2, 3])",
        ] {
            let d = Distribution::parse("k", text).unwrap();
            for _ in 0..500 {
                let v = d.sample_uniform(&mut rng);
                let x = d.to_internal(&v).unwrap_or_else(|| panic!("{text}: {v:?}"));
                assert!(same_value(&d.from_internal(x), &v), "{text}: {v:?}");
                if let Some((a, b)) = d.internal_bounds() {
                    assert!(x >= a && x <= b, "{text}: {x} outside [{a}, {b}]");
                }
            }
        }
        // logint(1, 64) draws both ends: the cells around them are part of the range.
        let d = Distribution::parse("k", "logint(1, 4)").unwrap();
        let draws: Vec<Value> = (0..400).map(|_| d.sample_uniform(&mut rng)).collect();
        assert!(draws.contains(&Value::Int(1)) && draws.contains(&Value::Int(4)));
    }

    #[test]
    fn values_serialize_in_snake_case() {
        let json =
            serde_json::to_string(&[Value::Float(0.5), Value::Int(3), Value::Choice(1)]).unwrap();
        assert_eq!(json, r#"[{"float":0.5},{"int":3},{"choice":1}]"#);
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back[2], Value::Choice(1));
    }
}
