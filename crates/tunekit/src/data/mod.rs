//! Reading labelled text from CSV/TSV/JSONL/Parquet files, in UTF-8, Latin-1 or Windows-1252.
//!
//! Every problem is reported with the file and the line where the record starts; rows that are
//! dropped (empty text, empty label) are counted in [`ReadReport`], never skipped silently.
//!
//! Layout: this file holds the public surface ([`DataSpec`], [`Format`], [`Example`],
//! [`ReadReport`], [`DataError`], [`read_examples`], [`example_iter`], [`read_lines`],
//! [`label_set`]) and the shared row checks; each format's reader lives in its own file
//! (`delimited.rs` for CSV/TSV, `json.rs` for JSONL, `parquet.rs` for Parquet) and yields raw
//! rows to [`ExampleIter`]. To add a reader: add `data/<format>.rs` yielding rows, and a
//! [`Format`] variant (with its `Source` arm in this file).

mod delimited;
mod json;
mod parquet;

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use delimited::{BomStripper, Delimited, delimited};
use json::next_json_row;
use parquet::ParquetRows;

/// File formats the readers understand, so a file's layout can be named or guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values (RFC 4180 quoting by default, see [`Quoting`]).
    Csv,
    /// Tab-separated values (no quoting by default, as IANA's `text/tab-separated-values`).
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet (string, integer or boolean columns; "lines" are 1-based row numbers).
    Parquet,
}

/// Character encodings of text files, so files exported by old tools need no conversion step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TextEncoding {
    /// UTF-8 (a byte-order mark is skipped).
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same value.
    #[serde(rename = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
    /// Windows-1252 (as the WHATWG encoding standard defines it).
    #[serde(rename = "windows-1252", alias = "cp1252")]
    Windows1252,
}

/// How double quotes in CSV/TSV files are read (`data.quoting`), so a stray quote can
/// never silently merge rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quoting {
    /// The format's own convention: RFC 4180 for CSV (whatever the delimiter), none for TSV
    /// (IANA `text/tab-separated-values` has no quoting: fields cannot hold tabs or line
    /// breaks).
    #[default]
    Auto,
    /// RFC 4180: a field that starts with `"` runs to the closing `"` (`""` inside is one
    /// quote) and may hold delimiters and line breaks; the closing quote must be followed by
    /// the delimiter or the end of the line, and a quote left open at the end of the file is an
    /// error. A `"` inside an unquoted field is an ordinary character.
    Rfc4180,
    /// Quotes are ordinary characters; every line break ends a record.
    None,
}

impl Quoting {
    /// Whether quotes are syntax for a file of `format`.
    pub fn quotes(self, format: Format) -> bool {
        match self {
            Quoting::Auto => format == Format::Csv,
            Quoting::Rfc4180 => true,
            Quoting::None => false,
        }
    }
}

impl Format {
    /// Guess the format from a file extension (`.csv`, `.tsv`/`.tab`/`.txt`, `.jsonl`/`.ndjson`),
    /// so users rarely have to name it.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "tsv" | "tab" | "txt" => Some(Format::Tsv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The field delimiter used when the spec gives none (`None` for JSONL, which has fields
    /// by name).
    pub fn default_delimiter(self) -> Option<u8> {
        match self {
            Format::Csv => Some(b','),
            Format::Tsv => Some(b'\t'),
            Format::Jsonl | Format::Parquet => None,
        }
    }
}

/// Where labelled examples come from and which columns hold what; one value describes one
/// file for both the batch and the streaming reader.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    /// The file.
    pub path: PathBuf,
    /// Format; `None` guesses from the extension.
    pub format: Option<Format>,
    /// Field delimiter overriding the format's default (`,` for CSV, tab for TSV).
    pub delimiter: Option<u8>,
    /// How quotes in CSV/TSV files are read.
    pub quoting: Quoting,
    /// Whether CSV/TSV files start with a header row (otherwise columns are `0`, `1`, ...).
    pub has_header: bool,
    /// Column (or JSON field) with the text.
    pub text_column: String,
    /// Optional column with the second text of a pair.
    pub text_pair_column: Option<String>,
    /// Column with the label; `None` for unlabelled input (prediction).
    pub label_column: Option<String>,
    /// Character encoding of CSV/TSV/JSONL files.
    pub encoding: TextEncoding,
    /// Replace undecodable bytes with U+FFFD (counted in the report) instead of failing.
    pub replace_invalid: bool,
    /// Label given to rows whose label is empty (counted), instead of dropping them.
    pub fill_label: Option<String>,
}

impl DataSpec {
    /// A spec with the defaults (format from the extension, header row, text in `text`,
    /// unlabelled), so callers only set what differs.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataSpec {
            path: path.into(),
            format: None,
            delimiter: None,
            quoting: Quoting::Auto,
            has_header: true,
            text_column: "text".to_string(),
            text_pair_column: None,
            label_column: None,
            encoding: TextEncoding::Utf8,
            replace_invalid: false,
            fill_label: None,
        }
    }
}

/// One example as read from the file, with its line so later errors can point back at it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The second text of a pair.
    pub text_pair: Option<String>,
    /// The label (trimmed), when the spec names a label column.
    pub label: Option<String>,
    /// 1-based line where the record starts, counted as editors and `grep -n` count (for
    /// Parquet, the 1-based row number).
    pub line: usize,
}

/// Counts of what reading kept and dropped, so no row disappears without a trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadReport {
    /// Data rows read (excluding the header and blank lines), kept or dropped.
    pub rows_read: usize,
    /// Rows dropped because the text was empty or whitespace.
    pub empty_text_dropped: usize,
    /// Rows dropped because the label was empty or whitespace.
    pub empty_label_dropped: usize,
    /// Rows kept with undecodable bytes replaced by U+FFFD (`on_decode_error = "replace"`).
    #[serde(default)]
    pub decode_replaced: usize,
    /// Rows kept with an empty label replaced by the spec's `fill_label`.
    #[serde(default)]
    pub empty_label_filled: usize,
}

/// Errors from reading data files; each names the file (and line), since the CLI prints them
/// to the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read. The message includes the OS error, which is also
    /// the error's source; the CLI prints each cause once.
    #[error("{file}: cannot read the data file: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be opened; for a relative path the message says which directory it
    /// was resolved against (the working directory).
    #[error(
        "{file}: cannot open the data file{}: {source}",
        resolved_against(file)
    )]
    Open {
        /// The file, as given.
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
    /// A column named in the spec is not in the header.
    #[error("{file}: no column `{column}` ({})", describe_columns(available))]
    MissingColumn {
        /// The file.
        file: PathBuf,
        /// The missing column.
        column: String,
        /// The columns the file has.
        available: Vec<String>,
    },
    /// A row has a different number of fields than the header (or the first row).
    #[error("{file} {}: expected {expected} fields ({columns}), found {found}{hint}", place(*line, *record))]
    FieldCount {
        /// The file.
        file: PathBuf,
        /// The line where the row starts.
        line: usize,
        /// The 1-based data record (header not counted).
        record: usize,
        /// Fields in the header.
        expected: usize,
        /// Header names, joined with `, `.
        columns: String,
        /// Fields found.
        found: usize,
        /// What may have caused it (empty, or starting with `; `).
        hint: String,
    },
    /// Bytes that are not UTF-8.
    #[error(
        "{file} {}: invalid UTF-8 (byte offset {offset} in the field); set data.encoding (\"latin-1\", \"windows-1252\") if the file is in another encoding, or data.on_decode_error = \"replace\"", place(*line, *record)
    )]
    Encoding {
        /// The file.
        file: PathBuf,
        /// The line where the record starts.
        line: usize,
        /// The 1-based data record (0 for the header).
        record: usize,
        /// Offset of the first bad byte within the field (within the line for JSONL).
        offset: usize,
    },
    /// A record that cannot be read (an unbalanced quote, bad JSON, a missing or mistyped JSON
    /// field), with its line and record number.
    #[error("{file} {}: {message}", place(*line, *record))]
    Record {
        /// The file.
        file: PathBuf,
        /// The line where the record starts.
        line: usize,
        /// The 1-based data record (header not counted).
        record: usize,
        /// What is wrong.
        message: String,
    },
    /// A Parquet row that cannot be used.
    #[error("{file} row {row}: {message}")]
    Row {
        /// The file.
        file: PathBuf,
        /// The 1-based row.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// A malformed file or split (an unreadable Parquet file, nothing left after preparation).
    #[error("{file}{}: {message}", if *line == 0 { String::new() } else { format!(" line {line}") })]
    Malformed {
        /// The file.
        file: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The format could not be determined from the extension.
    #[error(
        "{file}: cannot tell the format from the extension; set the format (csv, tsv, jsonl or parquet)"
    )]
    UnknownFormat {
        /// The file.
        file: PathBuf,
    },
}

/// `line L (record R)`, or `line L (header)` for record 0.
fn place(line: usize, record: usize) -> String {
    match record {
        0 => format!("line {line} (header)"),
        r => format!("line {line} (record {r})"),
    }
}

/// For a relative path, ` (relative to the working directory DIR)`.
fn resolved_against(file: &Path) -> String {
    if file.is_absolute() {
        return String::new();
    }
    match std::env::current_dir() {
        Ok(dir) => format!(" (relative to the working directory {})", dir.display()),
        Err(_) => " (relative to the working directory, which cannot be read)".to_string(),
    }
}

/// The `(...)` part of a missing-column message: the columns there are, plus a hint when the
/// header looks split on the wrong delimiter.
fn describe_columns(available: &[String]) -> String {
    let mut s = format!("columns: {}", available.join(", "));
    if let [only] = available
        && only.contains([',', '\t', ';', '|'])
    {
        s.push_str("; is the delimiter right?");
    }
    s
}

/// Read all examples of a file, counting dropped rows; for training and evaluation, where the
/// whole file is needed anyway.
pub fn read_examples(spec: &DataSpec) -> Result<(Vec<Example>, ReadReport), DataError> {
    let mut iter = example_iter(spec)?;
    let mut out = Vec::new();
    for example in iter.by_ref() {
        out.push(example?);
    }
    Ok((out, iter.report().clone()))
}

/// Streaming reader for prediction over big files: yields kept examples one by one, in file
/// order. Dropped rows are counted in [`ExampleIter::report`]; a file without data rows yields
/// [`DataError::Empty`]. After the first error the iterator ends.
pub fn example_iter(spec: &DataSpec) -> Result<ExampleIter, DataError> {
    let format = spec
        .format
        .or_else(|| Format::from_path(&spec.path))
        .ok_or_else(|| DataError::UnknownFormat {
            file: spec.path.clone(),
        })?;
    let file = File::open(&spec.path).map_err(|e| DataError::Open {
        file: spec.path.clone(),
        source: e,
    })?;
    if format == Format::Parquet {
        return Ok(ExampleIter {
            spec: spec.clone(),
            source: Source::Parquet(Box::new(ParquetRows::open(spec, file)?)),
            report: ReadReport::default(),
            done: false,
        });
    }
    let input = BomStripper::new(file);
    let source = match format.default_delimiter() {
        None => Source::Jsonl {
            reader: BufReader::new(input),
            line: 0,
            record: 0,
            buf: Vec::new(),
        },
        Some(default) => delimited(spec, input, format, spec.delimiter.unwrap_or(default))?,
    };
    Ok(ExampleIter {
        spec: spec.clone(),
        source,
        report: ReadReport::default(),
        done: false,
    })
}

/// Read one text per line from a stream (standard input), with the rules of the file
/// readers: a UTF-8 byte-order mark is skipped, lines end at `\n` or `\r\n` and are numbered
/// as `grep -n` numbers them, undecodable bytes are an error naming the line unless
/// `replace_invalid`. Empty lines are not records; a line of only whitespace is a record
/// dropped as empty text (counted in the report). `name` stands for the stream in messages
/// (e.g. `<stdin>`); no records at all is [`DataError::Empty`].
pub fn read_lines(
    input: impl Read,
    name: &Path,
    encoding: TextEncoding,
    replace_invalid: bool,
) -> Result<(Vec<Example>, ReadReport), DataError> {
    let spec = DataSpec {
        encoding,
        replace_invalid,
        ..DataSpec::new(name)
    };
    let mut reader = BufReader::new(BomStripper::new(input));
    let mut report = ReadReport::default();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| DataError::Io {
                file: name.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line += 1;
        let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.is_empty() {
            continue;
        }
        report.rows_read += 1;
        let (text, replaced) = decode(&spec, line, report.rows_read, bytes)?;
        if text.trim().is_empty() {
            report.empty_text_dropped += 1;
            continue;
        }
        if replaced {
            report.decode_replaced += 1;
        }
        out.push(Example {
            text: text.into_owned(),
            text_pair: None,
            label: None,
            line,
        });
    }
    if report.rows_read == 0 {
        return Err(DataError::Empty {
            file: name.to_path_buf(),
        });
    }
    Ok((out, report))
}

/// Sorted unique labels, the label map of a training set.
pub fn label_set(examples: &[Example]) -> Vec<String> {
    let mut labels: Vec<String> = examples.iter().filter_map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Iterator over the kept examples of one file (see [`example_iter`]); exists so a streaming
/// caller can still read the drop counts.
pub struct ExampleIter {
    spec: DataSpec,
    source: Source,
    report: ReadReport,
    done: bool,
}

impl ExampleIter {
    /// What has been read and dropped so far (complete once the iterator is exhausted).
    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    /// Count a row and keep it unless its text or label is empty.
    fn keep(&mut self, row: Row) -> Option<Example> {
        let Row {
            text,
            pair,
            label,
            line,
            replaced,
        } = row;
        self.report.rows_read += 1;
        if text.trim().is_empty() {
            self.report.empty_text_dropped += 1;
            return None;
        }
        let mut label = label.map(|l| l.trim().to_string());
        if label.as_deref() == Some("") {
            match &self.spec.fill_label {
                Some(fill) => {
                    self.report.empty_label_filled += 1;
                    label = Some(fill.clone());
                }
                None => {
                    self.report.empty_label_dropped += 1;
                    return None;
                }
            }
        }
        if replaced {
            self.report.decode_replaced += 1;
        }
        Some(Example {
            text,
            text_pair: pair,
            label,
            line,
        })
    }

    /// The next row: `Ok(None)` for a dropped row, `None` at the end.
    fn next_row(&mut self) -> Option<Result<Option<Example>, DataError>> {
        let row = match &mut self.source {
            Source::Delimited(d) => d.next_row(&self.spec),
            Source::Jsonl {
                reader,
                line,
                record,
                buf,
            } => next_json_row(&self.spec, reader, line, record, buf),
            Source::Parquet(p) => p.next_row(&self.spec),
        };
        Some(match row? {
            Ok(row) => Ok(self.keep(row)),
            Err(e) => Err(e),
        })
    }
}

impl Iterator for ExampleIter {
    type Item = Result<Example, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.next_row() {
                Some(Ok(Some(example))) => return Some(Ok(example)),
                Some(Ok(None)) => continue,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    if self.report.rows_read == 0 {
                        return Some(Err(DataError::Empty {
                            file: self.spec.path.clone(),
                        }));
                    }
                }
            }
        }
        None
    }
}

/// The fields of one record before the empty checks.
struct Row {
    text: String,
    pair: Option<String>,
    label: Option<String>,
    line: usize,
    /// Some bytes were undecodable and replaced.
    replaced: bool,
}

enum Source {
    Delimited(Box<Delimited>),
    Jsonl {
        reader: BufReader<BomStripper<File>>,
        /// Lines consumed so far.
        line: usize,
        /// Records (non-blank lines) read so far.
        record: usize,
        buf: Vec<u8>,
    },
    Parquet(Box<ParquetRows>),
}

/// Decode one field (or JSONL line) in the spec's encoding; the flag says whether
/// undecodable bytes were replaced (only with `replace_invalid`, otherwise they are an error).
/// `record` is only for the error message.
pub(crate) fn decode<'a>(
    spec: &DataSpec,
    line: usize,
    record: usize,
    bytes: &'a [u8],
) -> Result<(Cow<'a, str>, bool), DataError> {
    match spec.encoding {
        TextEncoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => Ok((Cow::Borrowed(s), false)),
            Err(_) if spec.replace_invalid => Ok((String::from_utf8_lossy(bytes), true)),
            Err(e) => Err(DataError::Encoding {
                file: spec.path.clone(),
                line,
                record,
                offset: e.valid_up_to(),
            }),
        },
        // encoding_rs maps the "latin-1" label to Windows-1252 (as browsers do); true
        // ISO-8859-1 is the identity on code points, so it is decoded here.
        TextEncoding::Latin1 => Ok(match std::str::from_utf8(bytes) {
            Ok(s) if s.is_ascii() => (Cow::Borrowed(s), false),
            _ => (
                Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
                false,
            ),
        }),
        TextEncoding::Windows1252 => {
            let (text, had_errors) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes);
            Ok((text, had_errors))
        }
    }
}

#[cfg(test)]
mod tests;
