//! JSONL rows: one JSON object per non-blank line.

use std::io::BufRead;

use super::{DataError, DataSpec, Row, decode};

/// The next non-blank JSONL line as a row; `line` counts the lines consumed.
pub(super) fn next_json_row(
    spec: &DataSpec,
    reader: &mut impl BufRead,
    line: &mut usize,
    record: &mut usize,
    buf: &mut Vec<u8>,
) -> Option<Result<Row, DataError>> {
    let path = &spec.path;
    loop {
        buf.clear();
        match reader.read_until(b'\n', buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => {
                return Some(Err(DataError::Io {
                    file: path.clone(),
                    source: e,
                }));
            }
        }
        *line += 1;
        let at = *line;
        let (raw, replaced) = match decode(spec, at, *record + 1, buf) {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        if raw.trim().is_empty() {
            continue;
        }
        *record += 1;
        return Some(json_row(spec, &raw, at, *record).map(|row| Row { replaced, ..row }));
    }
}

fn json_row(spec: &DataSpec, raw: &str, line: usize, record: usize) -> Result<Row, DataError> {
    let malformed = |message: String| DataError::Record {
        file: spec.path.clone(),
        line,
        record,
        message,
    };
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        // serde_json appends "at line 1 column N", which would contradict our line number.
        let full = e.to_string();
        let what = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(w, _)| w);
        malformed(format!("invalid JSON at column {}: {what}", e.column()))
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err(malformed(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        )));
    };
    let field = |key: &str, scalars: bool| -> Result<String, DataError> {
        match object.get(key) {
            None => Err(malformed(format!(
                "missing field `{key}` (fields: {})",
                object.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
            // An explicit null is an empty value: dropped and counted like an empty string.
            Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) if scalars => {
                Ok(v.to_string())
            }
            Some(v) => Err(malformed(format!(
                "field `{key}` must be a string{}, found {}",
                if scalars { ", number or bool" } else { "" },
                json_kind(v)
            ))),
        }
    };
    Ok(Row {
        text: field(&spec.text_column, false)?,
        pair: spec
            .text_pair_column
            .as_deref()
            .map(|k| field(k, false))
            .transpose()?,
        label: spec
            .label_column
            .as_deref()
            .map(|k| field(k, true))
            .transpose()?,
        line,
        replaced: false,
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
