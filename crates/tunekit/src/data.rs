//! Reading labelled text from CSV/TSV/JSONL files.
//!
//! Every problem is reported with the file and the line where the record starts; rows that are
//! dropped (empty text, empty label) are counted in [`ReadReport`], never skipped silently.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// File formats the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values (RFC 4180 quoting).
    Csv,
    /// Tab-separated values (same quoting rules as CSV).
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// Guess the format from a file extension (`.csv`, `.tsv`/`.tab`/`.txt`, `.jsonl`/`.ndjson`).
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "tsv" | "tab" | "txt" => Some(Format::Tsv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// Where labelled examples come from and which columns hold what.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    /// The file.
    pub path: PathBuf,
    /// Format; `None` guesses from the extension.
    pub format: Option<Format>,
    /// Field delimiter overriding the format's default.
    pub delimiter: Option<u8>,
    /// Whether CSV/TSV files start with a header row (otherwise columns are `0`, `1`, ...).
    pub has_header: bool,
    /// Column with the text.
    pub text_column: String,
    /// Optional column with the second text of a pair.
    pub text_pair_column: Option<String>,
    /// Column with the label; `None` for unlabelled input (prediction).
    pub label_column: Option<String>,
}

/// One example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The second text of a pair.
    pub text_pair: Option<String>,
    /// The label, when the spec names a label column.
    pub label: Option<String>,
    /// 1-based line where the record starts.
    pub line: usize,
}

/// Counts of what reading kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadReport {
    /// Data rows read (excluding the header).
    pub rows_read: usize,
    /// Rows dropped because the text was empty or whitespace.
    pub empty_text_dropped: usize,
    /// Rows dropped because the label was empty.
    pub empty_label_dropped: usize,
}

/// Errors from reading data files; each names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No data rows.
    #[error("{file}: no data rows (the file is empty or has only a header)")]
    Empty {
        /// The file.
        file: PathBuf,
    },
    /// A column named in the config is not in the header.
    #[error("{file}: no column `{column}` (columns: {})", available.join(", "))]
    MissingColumn {
        /// The file.
        file: PathBuf,
        /// The missing column.
        column: String,
        /// The columns the file has.
        available: Vec<String>,
    },
    /// A row has a different number of fields than the header.
    #[error("{file} line {line}: expected {expected} fields ({columns}), found {found}")]
    FieldCount {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
        /// Fields in the header.
        expected: usize,
        /// Header names joined.
        columns: String,
        /// Fields found.
        found: usize,
    },
    /// Bytes that are not UTF-8.
    #[error(
        "{file} line {line}: invalid UTF-8 (byte offset {offset} in the field); convert the file to UTF-8"
    )]
    Encoding {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
        /// Offset of the first bad byte within the field.
        offset: usize,
    },
    /// A malformed record (bad quoting, bad JSON, missing JSON field).
    #[error("{file} line {line}: {message}")]
    Malformed {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The format could not be determined from the extension.
    #[error("{file}: cannot tell the format from the extension; set data.format (csv, tsv, jsonl)")]
    UnknownFormat {
        /// The file.
        file: PathBuf,
    },
}

/// Read all examples of a file (see [`example_iter`]), counting dropped rows.
pub fn read_examples(spec: &DataSpec) -> Result<(Vec<Example>, ReadReport), DataError> {
    let mut rows = example_rows(spec)?;
    let mut out = Vec::new();
    for r in rows.by_ref() {
        if let Some(e) = r? {
            out.push(e);
        }
    }
    let report = rows.report.clone();
    if report.rows_read == 0 {
        return Err(DataError::Empty {
            file: spec.path.clone(),
        });
    }
    Ok((out, report))
}

/// Streaming reader: yields kept examples one by one (dropped rows are counted internally).
pub fn example_iter(
    spec: &DataSpec,
) -> Result<impl Iterator<Item = Result<Example, DataError>>, DataError> {
    Ok(example_rows(spec)?.filter_map(|r| r.transpose()))
}

/// Sorted unique labels.
pub fn label_set(examples: &[Example]) -> Vec<String> {
    let mut labels: Vec<String> = examples.iter().filter_map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Column positions resolved against the header.
struct Columns {
    text: usize,
    pair: Option<usize>,
    label: Option<usize>,
    names: Vec<String>,
}

enum Source {
    Delimited {
        reader: csv::Reader<LineIndex<Box<dyn Read>>>,
        newlines: std::rc::Rc<std::cell::RefCell<Vec<u64>>>,
        columns: Columns,
        record: csv::ByteRecord,
    },
    Jsonl {
        lines: std::io::Lines<BufReader<Box<dyn Read>>>,
        line: usize,
    },
}

/// Iterator over rows: `Ok(None)` for a dropped row.
struct Rows {
    spec: DataSpec,
    source: Source,
    report: ReadReport,
    done: bool,
}

fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let f = File::open(path).map_err(|e| DataError::Io {
        file: path.to_path_buf(),
        source: e,
    })?;
    Ok(Box::new(BomStripper::new(f)))
}

/// Records the byte offset of every `\n` it passes through. The csv crate reports a record's
/// start line one too low after a CRLF terminator (the record "starts" at the `\n`), so lines
/// are computed from byte offsets instead: line = 1 + newlines at offsets ≤ record start.
struct LineIndex<R> {
    inner: R,
    offset: u64,
    newlines: std::rc::Rc<std::cell::RefCell<Vec<u64>>>,
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut index = self.newlines.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                index.push(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

fn line_at(newlines: &[u64], byte: u64) -> usize {
    1 + newlines.partition_point(|&o| o <= byte)
}

/// Skips a UTF-8 byte-order mark at the start of a stream.
struct BomStripper<R> {
    inner: R,
    checked: bool,
    pending: Vec<u8>,
}

impl<R: Read> BomStripper<R> {
    fn new(inner: R) -> Self {
        BomStripper {
            inner,
            checked: false,
            pending: Vec::new(),
        }
    }
}

impl<R: Read> Read for BomStripper<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.checked {
            self.checked = true;
            let mut head = [0u8; 3];
            let mut n = 0;
            while n < 3 {
                let k = self.inner.read(&mut head[n..])?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            if !(n == 3 && head == [0xEF, 0xBB, 0xBF]) {
                self.pending.extend_from_slice(&head[..n]);
            }
        }
        if !self.pending.is_empty() {
            let k = self.pending.len().min(buf.len());
            buf[..k].copy_from_slice(&self.pending[..k]);
            self.pending.drain(..k);
            return Ok(k);
        }
        self.inner.read(buf)
    }
}

fn example_rows(spec: &DataSpec) -> Result<Rows, DataError> {
    let format = spec
        .format
        .or_else(|| Format::from_path(&spec.path))
        .ok_or_else(|| DataError::UnknownFormat {
            file: spec.path.clone(),
        })?;
    let input = open(&spec.path)?;
    let source = match format {
        Format::Jsonl => Source::Jsonl {
            lines: BufReader::new(input).lines(),
            line: 0,
        },
        Format::Csv | Format::Tsv => {
            let delimiter =
                spec.delimiter
                    .unwrap_or(if format == Format::Csv { b',' } else { b'\t' });
            let newlines = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .has_headers(spec.has_header)
                .flexible(true)
                .from_reader(LineIndex {
                    inner: input,
                    offset: 0,
                    newlines: newlines.clone(),
                });
            let names: Vec<String> = if spec.has_header {
                let header = reader
                    .byte_headers()
                    .map_err(|e| csv_error(&spec.path, e))?
                    .clone();
                if header.is_empty() {
                    return Err(DataError::Empty {
                        file: spec.path.clone(),
                    });
                }
                header
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        std::str::from_utf8(f)
                            .map(|s| s.trim().to_string())
                            .map_err(|e| DataError::Encoding {
                                file: spec.path.clone(),
                                line: 1,
                                offset: e.valid_up_to(),
                            })
                            .map(|s| if s.is_empty() { i.to_string() } else { s })
                    })
                    .collect::<Result<_, _>>()?
            } else {
                // Without a header, peek at the first record's width to name columns 0..n.
                let mut first = csv::ByteRecord::new();
                let mut peek = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(open(&spec.path)?);
                let width = if peek
                    .read_byte_record(&mut first)
                    .map_err(|e| csv_error(&spec.path, e))?
                {
                    first.len()
                } else {
                    0
                };
                (0..width).map(|i| i.to_string()).collect()
            };
            let find = |col: &str| {
                names
                    .iter()
                    .position(|n| n == col)
                    .ok_or_else(|| DataError::MissingColumn {
                        file: spec.path.clone(),
                        column: col.to_string(),
                        available: names.clone(),
                    })
            };
            let columns = if names.is_empty() {
                Columns {
                    text: 0,
                    pair: None,
                    label: None,
                    names,
                }
            } else {
                Columns {
                    text: find(&spec.text_column)?,
                    pair: spec.text_pair_column.as_deref().map(find).transpose()?,
                    label: spec.label_column.as_deref().map(find).transpose()?,
                    names: names.clone(),
                }
            };
            Source::Delimited {
                reader,
                newlines,
                columns,
                record: csv::ByteRecord::new(),
            }
        }
    };
    Ok(Rows {
        spec: spec.clone(),
        source,
        report: ReadReport::default(),
        done: false,
    })
}

fn csv_error(path: &Path, e: csv::Error) -> DataError {
    let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Io {
            file: path.to_path_buf(),
            source,
        },
        other => DataError::Malformed {
            file: path.to_path_buf(),
            line,
            message: format!("{other:?}"),
        },
    }
}

impl Rows {
    fn keep(
        &mut self,
        text: String,
        pair: Option<String>,
        label: Option<String>,
        line: usize,
    ) -> Option<Example> {
        self.report.rows_read += 1;
        if text.trim().is_empty() {
            self.report.empty_text_dropped += 1;
            return None;
        }
        if let Some(l) = &label
            && l.trim().is_empty()
        {
            self.report.empty_label_dropped += 1;
            return None;
        }
        Some(Example {
            text,
            text_pair: pair,
            label: label.map(|l| l.trim().to_string()),
            line,
        })
    }

    fn next_delimited(&mut self) -> Option<Result<Option<Example>, DataError>> {
        let Source::Delimited {
            reader,
            newlines,
            columns,
            record,
        } = &mut self.source
        else {
            return None;
        };
        let path = self.spec.path.clone();
        match reader.read_byte_record(record) {
            Ok(false) => None,
            Err(e) => Some(Err(csv_error(&path, e))),
            Ok(true) => {
                let line = record
                    .position()
                    .map(|p| line_at(&newlines.borrow(), p.byte()))
                    .unwrap_or(0);
                // A blank line is not a record for the csv crate; count it neither.
                if record.len() != columns.names.len() {
                    return Some(Err(DataError::FieldCount {
                        file: path,
                        line,
                        expected: columns.names.len(),
                        columns: columns.names.join(", "),
                        found: record.len(),
                    }));
                }
                let field = |i: usize| -> Result<String, DataError> {
                    std::str::from_utf8(&record[i])
                        .map(str::to_string)
                        .map_err(|e| DataError::Encoding {
                            file: path.clone(),
                            line,
                            offset: e.valid_up_to(),
                        })
                };
                let text = match field(columns.text) {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e)),
                };
                let pair = match columns.pair.map(field).transpose() {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                let label = match columns.label.map(field).transpose() {
                    Ok(l) => l,
                    Err(e) => return Some(Err(e)),
                };
                Some(Ok(self.keep(text, pair, label, line)))
            }
        }
    }

    fn next_jsonl(&mut self) -> Option<Result<Option<Example>, DataError>> {
        let Source::Jsonl { lines, line } = &mut self.source else {
            return None;
        };
        let path = self.spec.path.clone();
        loop {
            let raw = match lines.next()? {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Some(Err(DataError::Encoding {
                        file: path,
                        line: *line + 1,
                        offset: 0,
                    }));
                }
                Err(e) => {
                    return Some(Err(DataError::Io {
                        file: path,
                        source: e,
                    }));
                }
            };
            *line += 1;
            if raw.trim().is_empty() {
                continue;
            }
            let at = *line;
            let value: serde_json::Value = match serde_json::from_str(&raw) {
                Ok(v) => v,
                Err(e) => {
                    return Some(Err(DataError::Malformed {
                        file: path,
                        line: at,
                        message: format!("invalid JSON: {e}"),
                    }));
                }
            };
            let get = |key: &str| -> Result<Option<String>, DataError> {
                match value.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                        Ok(Some(v.to_string()))
                    }
                    Some(_) => Err(DataError::Malformed {
                        file: path.clone(),
                        line: at,
                        message: format!("field `{key}` must be a string, number or bool"),
                    }),
                }
            };
            let required = |key: &str| -> Result<String, DataError> {
                get(key)?.ok_or_else(|| DataError::Malformed {
                    file: path.clone(),
                    line: at,
                    message: format!("missing field `{key}`"),
                })
            };
            let text = match required(&self.spec.text_column) {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            };
            let pair = match self
                .spec
                .text_pair_column
                .clone()
                .map(|k| required(&k))
                .transpose()
            {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let label = match self
                .spec
                .label_column
                .clone()
                .map(|k| get(&k).map(Option::unwrap_or_default))
                .transpose()
            {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            return Some(Ok(self.keep(text, pair, label, at)));
        }
    }
}

impl Iterator for Rows {
    type Item = Result<Option<Example>, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.source {
            Source::Delimited { .. } => self.next_delimited(),
            Source::Jsonl { .. } => self.next_jsonl(),
        };
        if matches!(item, None | Some(Err(_))) {
            self.done = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/data")
            .join(name)
    }

    fn spec(name: &str) -> DataSpec {
        DataSpec {
            path: fixture(name),
            format: None,
            delimiter: None,
            has_header: true,
            text_column: "text".into(),
            text_pair_column: None,
            label_column: Some("label".into()),
        }
    }

    #[test]
    fn quoted_fields_bom_and_crlf() {
        let (ex, report) = read_examples(&spec("quoted.csv")).unwrap();
        assert_eq!(report.rows_read, 3);
        assert_eq!(ex[0].text, "A line with a comma, inside");
        assert_eq!(ex[1].text, "Two\r\nlines here");
        assert_eq!(ex[1].label.as_deref(), Some("negative"));
        let (tsv, _) = read_examples(&spec("unknown_label.tsv")).unwrap();
        assert_eq!(
            tsv.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!((ex[0].line, ex[1].line, ex[2].line), (2, 3, 5), "{ex:?}");
        assert_eq!(label_set(&ex), vec!["negative", "positive"]);
    }

    #[test]
    fn latin1_bytes_name_the_line() {
        let err = read_examples(&spec("latin1.tsv")).unwrap_err().to_string();
        assert!(
            err.contains("latin1.tsv line 3") && err.contains("UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn short_row_names_the_line() {
        let err = read_examples(&spec("short_row.tsv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("short_row.tsv line 4: expected 2 fields (text, label), found 1"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_header_only_files() {
        for f in ["empty.tsv", "header_only.tsv"] {
            let err = read_examples(&spec(f)).unwrap_err();
            assert!(matches!(err, DataError::Empty { .. }), "{f}: {err}");
        }
    }

    #[test]
    fn missing_column_lists_the_available_ones() {
        let err = read_examples(&spec("no_label.tsv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no column `label`") && err.contains("text, sentiment"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_with_numbers_blank_lines_and_dropped_rows() {
        let (ex, report) = read_examples(&spec("small.jsonl")).unwrap();
        assert_eq!(report.rows_read, 5);
        assert_eq!(report.empty_text_dropped, 1);
        assert_eq!(report.empty_label_dropped, 1);
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[2].label.as_deref(), Some("1"));
        assert_eq!(ex[2].line, 4);
    }

    #[test]
    fn headerless_files_use_column_numbers() {
        let mut s = spec("unknown_label.tsv");
        s.has_header = false;
        s.text_column = "0".into();
        s.label_column = Some("1".into());
        let (ex, _) = read_examples(&s).unwrap();
        assert_eq!(ex.len(), 4);
        assert_eq!(ex[0].text, "text");
    }

    #[test]
    fn streaming_yields_the_same_examples() {
        let (all, _) = read_examples(&spec("quoted.csv")).unwrap();
        let streamed: Vec<Example> = example_iter(&spec("quoted.csv"))
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(all, streamed);
    }
}
