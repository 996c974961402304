//! Reading labelled text from CSV/TSV/JSONL/Parquet files, in UTF-8, Latin-1 or Windows-1252.
//!
//! Every problem is reported with the file and the line where the record starts; rows that are
//! dropped (empty text, empty label) are counted in [`ReadReport`], never skipped silently.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

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

/// CSV/TSV state: the record splitter and the resolved columns.
struct Delimited {
    records: Records<BufReader<BomStripper<File>>>,
    /// Column names (header, or `0..n` without one).
    names: Vec<String>,
    text: usize,
    pair: Option<usize>,
    label: Option<usize>,
    record: RawRecord,
    /// Without a header, the first record is read early to count columns; it is kept here
    /// (in `record`) and this is set.
    pending: bool,
    /// Records before the first data record (1 with a header), so errors give data record
    /// numbers.
    header_records: usize,
    /// Quotes are read as RFC 4180 quoting (for the hints in errors).
    quotes: bool,
    /// Without quoting: records with a field that starts and ends with `"`, as a quoting
    /// writer would make it (warned about at the end of the file).
    looks_quoted: usize,
}

/// Which record syntax [`Records`] splits: the delimiter and whether quotes are syntax.
#[derive(Debug, Clone, Copy)]
struct Syntax {
    delimiter: u8,
    quotes: bool,
}

/// One record as split from the file: its fields' bytes and where it lies.
#[derive(Debug, Default)]
struct RawRecord {
    /// All fields' bytes, back to back.
    data: Vec<u8>,
    /// End offset of each field in `data`.
    ends: Vec<usize>,
    /// 1-based line where the record starts.
    line: usize,
    /// 1-based line where it ends (later than `line` when a quoted field holds line breaks).
    end_line: usize,
    /// 1-based number of the record in the file, header included.
    number: usize,
}

impl RawRecord {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i`'s bytes (empty when out of range).
    fn get(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(0),
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.data.get(start..end).unwrap_or_default()
    }

    fn fields(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Why a record could not be split.
#[derive(Debug)]
enum SplitError {
    Io(std::io::Error),
    /// A quoted field still open at the end of the file.
    Unterminated {
        /// Line where the record starts.
        line: usize,
        /// Line where the quote opens.
        open: usize,
        number: usize,
    },
    /// A closing quote followed by something other than a delimiter, quote or line end.
    AfterQuote {
        line: usize,
        open: usize,
        /// Line of the closing quote.
        close: usize,
        byte: u8,
        number: usize,
    },
}

/// Splits a byte stream into CSV/TSV records, counting lines as editors and `grep -n` do.
///
/// Records end at `\n`, `\r\n` or a lone `\r` outside quoted fields (each one line break);
/// empty lines are skipped. With `quotes`, a field that starts with `"` runs to the closing
/// `"` (`""` inside is one quote) and may hold delimiters and line breaks, of which only `\n`
/// and `\r\n` count as lines (a lone `\r` inside is text); the closing quote must be followed
/// by the delimiter or the end of the line, and a quote still open at the end of the file is
/// an error: both are how an unbalanced quote shows, and reading on would merge rows.
/// Without `quotes`, `"` is an ordinary character (IANA TSV).
struct Records<R> {
    input: R,
    syntax: Syntax,
    /// Line of the next byte.
    line: usize,
    /// Records split so far.
    count: usize,
}

impl<R: BufRead> Records<R> {
    fn new(input: R, syntax: Syntax) -> Self {
        Records {
            input,
            syntax,
            line: 1,
            count: 0,
        }
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            match self.input.fill_buf() {
                Ok(buf) => return Ok(buf.first().copied()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn next_byte(&mut self) -> std::io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.input.consume(1);
        }
        Ok(b)
    }

    /// Consume a line break that starts with `first` (`\n`, or `\r` with an optional `\n`).
    fn line_break(&mut self, first: u8) -> std::io::Result<()> {
        self.line += 1;
        if first == b'\r' && self.peek()? == Some(b'\n') {
            self.input.consume(1);
        }
        Ok(())
    }

    /// Split the next record into `out`; `false` at the end of the input.
    fn next_record(&mut self, out: &mut RawRecord) -> Result<bool, SplitError> {
        #[derive(Clone, Copy)]
        enum State {
            FieldStart,
            Plain,
            Quoted { open: usize },
            AfterQuote { open: usize },
        }
        out.data.clear();
        out.ends.clear();
        // Empty lines are not records.
        loop {
            match self.peek().map_err(SplitError::Io)? {
                None => return Ok(false),
                Some(b @ (b'\n' | b'\r')) => {
                    self.input.consume(1);
                    self.line_break(b).map_err(SplitError::Io)?;
                }
                Some(_) => break,
            }
        }
        self.count += 1;
        out.line = self.line;
        out.number = self.count;
        let Syntax { delimiter, quotes } = self.syntax;
        let mut state = State::FieldStart;
        loop {
            let Some(b) = self.next_byte().map_err(SplitError::Io)? else {
                if let State::Quoted { open } = state {
                    return Err(SplitError::Unterminated {
                        line: out.line,
                        open,
                        number: out.number,
                    });
                }
                out.end_line = self.line;
                out.ends.push(out.data.len());
                return Ok(true);
            };
            match state {
                State::FieldStart if quotes && b == b'"' => {
                    state = State::Quoted { open: self.line }
                }
                State::FieldStart | State::Plain | State::AfterQuote { .. }
                    if b == b'\n' || b == b'\r' =>
                {
                    out.end_line = self.line;
                    out.ends.push(out.data.len());
                    self.line_break(b).map_err(SplitError::Io)?;
                    return Ok(true);
                }
                State::FieldStart | State::Plain | State::AfterQuote { .. } if b == delimiter => {
                    out.ends.push(out.data.len());
                    state = State::FieldStart;
                }
                State::FieldStart | State::Plain => {
                    out.data.push(b);
                    state = State::Plain;
                }
                State::Quoted { open } => {
                    if b == b'"' {
                        state = State::AfterQuote { open };
                    } else {
                        if b == b'\n' {
                            self.line += 1;
                        }
                        out.data.push(b);
                    }
                }
                State::AfterQuote { open } if b == b'"' => {
                    out.data.push(b'"');
                    state = State::Quoted { open };
                }
                State::AfterQuote { open } => {
                    return Err(SplitError::AfterQuote {
                        line: out.line,
                        open,
                        close: self.line,
                        byte: b,
                        number: out.number,
                    });
                }
            }
        }
    }
}

/// A byte for a message: printable ASCII as itself, anything else as `\xNN`.
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("`{}`", char::from(b))
    } else {
        format!("`\\x{b:02X}`")
    }
}

/// A delimiter for a message.
fn show_delimiter(d: u8) -> String {
    match d {
        b'\t' => "a tab".to_string(),
        _ => show_byte(d),
    }
}

fn split_error(path: &Path, syntax: Syntax, header_records: usize, e: SplitError) -> DataError {
    const NONE_HINT: &str = "if quotes are ordinary text in this file, set data.quoting = \"none\" (--quoting none on the command line)";
    let record = |number: usize| number.saturating_sub(header_records);
    match e {
        SplitError::Io(source) => DataError::Io {
            file: path.to_path_buf(),
            source,
        },
        SplitError::Unterminated { line, open, number } => DataError::Record {
            file: path.to_path_buf(),
            line,
            record: record(number),
            message: format!(
                "the quoted field opened on line {open} is never closed (no closing `\"` up to the end of the file); {NONE_HINT}"
            ),
        },
        SplitError::AfterQuote {
            line,
            open,
            close,
            byte,
            number,
        } => DataError::Record {
            file: path.to_path_buf(),
            line,
            record: record(number),
            message: format!(
                "the quoted field opened on line {open} closes on line {close} followed by {}, not by {} or a line end: an unbalanced quote (reading on would merge rows); write a quote inside a quoted field as `\"\"`, or {NONE_HINT}",
                show_byte(byte),
                show_delimiter(syntax.delimiter)
            ),
        },
    }
}

fn delimited(
    spec: &DataSpec,
    input: BomStripper<File>,
    format: Format,
    delimiter: u8,
) -> Result<Source, DataError> {
    let path = &spec.path;
    let syntax = Syntax {
        delimiter,
        quotes: spec.quoting.quotes(format),
    };
    let header_records = usize::from(spec.has_header);
    let mut records = Records::new(BufReader::new(input), syntax);
    let mut first = RawRecord::default();
    if !records
        .next_record(&mut first)
        .map_err(|e| split_error(path, syntax, header_records, e))?
    {
        return Err(DataError::Empty { file: path.clone() });
    }
    let (names, pending) = if spec.has_header {
        let names = first
            .fields()
            .enumerate()
            .map(|(i, f)| {
                let name = decode(spec, first.line, 0, f)?.0.trim().to_string();
                Ok(if name.is_empty() { i.to_string() } else { name })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        (names, false)
    } else {
        ((0..first.len()).map(|i| i.to_string()).collect(), true)
    };
    let find = |col: &str| {
        names
            .iter()
            .position(|n| n == col)
            .ok_or_else(|| DataError::MissingColumn {
                file: path.clone(),
                column: col.to_string(),
                available: names.clone(),
            })
    };
    let text = find(&spec.text_column)?;
    let pair = spec.text_pair_column.as_deref().map(find).transpose()?;
    let label = spec.label_column.as_deref().map(find).transpose()?;
    Ok(Source::Delimited(Box::new(Delimited {
        records,
        names,
        text,
        pair,
        label,
        record: first,
        pending,
        header_records,
        quotes: syntax.quotes,
        looks_quoted: 0,
    })))
}

impl Delimited {
    fn next_row(&mut self, spec: &DataSpec) -> Option<Result<Row, DataError>> {
        if self.pending {
            self.pending = false;
        } else {
            match self.records.next_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => {
                    if self.looks_quoted > 0 {
                        tracing::warn!(
                            "{}: {} records have a field in double quotes, kept as text: quotes are ordinary characters in this file (data.quoting = \"none\", the TSV default); set data.quoting = \"rfc4180\" (--quoting rfc4180) if the file quotes fields",
                            spec.path.display(),
                            self.looks_quoted
                        );
                        self.looks_quoted = 0;
                    }
                    return None;
                }
                Err(e) => {
                    return Some(Err(split_error(
                        &spec.path,
                        self.records.syntax,
                        self.header_records,
                        e,
                    )));
                }
            }
        }
        if !self.quotes
            && self
                .record
                .fields()
                .any(|f| f.len() >= 2 && f.starts_with(b"\"") && f.ends_with(b"\""))
        {
            self.looks_quoted += 1;
        }
        Some(self.row(spec))
    }

    fn row(&self, spec: &DataSpec) -> Result<Row, DataError> {
        let path = &spec.path;
        let record = &self.record;
        let (line, number) = (
            record.line,
            record.number.saturating_sub(self.header_records),
        );
        if record.len() != self.names.len() {
            let hint = if record.end_line > record.line {
                format!(
                    "; the record runs from line {} to line {} because a quoted field holds line breaks: is a quote unbalanced?",
                    record.line, record.end_line
                )
            } else if !self.quotes && record.data.contains(&b'"') {
                "; quotes are ordinary text here (data.quoting = \"none\"): set data.quoting = \"rfc4180\" (--quoting rfc4180) if the file quotes fields that hold delimiters".to_string()
            } else {
                String::new()
            };
            return Err(DataError::FieldCount {
                file: path.to_path_buf(),
                line,
                record: number,
                expected: self.names.len(),
                columns: self.names.join(", "),
                found: record.len(),
                hint,
            });
        }
        let replaced = std::cell::Cell::new(false);
        let field = |i: usize| {
            decode(spec, line, number, record.get(i)).map(|(s, r)| {
                replaced.set(replaced.get() | r);
                s.into_owned()
            })
        };
        Ok(Row {
            text: field(self.text)?,
            pair: self.pair.map(field).transpose()?,
            label: self.label.map(field).transpose()?,
            line,
            replaced: replaced.get(),
        })
    }
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
            (&mut self.inner).take(3).read_to_end(&mut self.pending)?;
            if self.pending == [0xEF, 0xBB, 0xBF] {
                self.pending.clear();
            }
        }
        if !self.pending.is_empty() {
            let n = buf
                .iter_mut()
                .zip(&self.pending)
                .map(|(dst, src)| *dst = *src)
                .count();
            self.pending.drain(..n);
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

/// The next non-blank JSONL line as a row; `line` counts the lines consumed.
fn next_json_row(
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

thread_local! {
    /// Set while [`guard_decoder`] runs: a panic then is reported as an error, not printed.
    static IN_DECODER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run the Parquet decoder, turning a panic inside it into an error message. The `parquet`
/// crate panics (an `unwrap` in its Thrift footer decoder) on some corrupt files, found by the
/// property tests in `tests/readers_prop.rs`; a bad file must be an error naming it, never a
/// crash. The panic hook is wrapped once so that such a panic is not printed; panics anywhere
/// else are printed by the previous hook as before.
fn guard_decoder<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODER.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    IN_DECODER.with(|d| d.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_DECODER.with(|d| d.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

/// Parquet rows, projected on the needed columns. Text columns must be strings; labels may be
/// strings, integers or booleans. The "line" of a row is its 1-based row number.
struct ParquetRows {
    rows: parquet::record::reader::RowIter<'static>,
    /// Position of the text, pair and label columns in the projected row.
    text: usize,
    pair: Option<usize>,
    label: Option<usize>,
    row: usize,
}

impl ParquetRows {
    fn open(spec: &DataSpec, file: File) -> Result<Self, DataError> {
        match guard_decoder(|| Self::open_unguarded(spec, file)) {
            Ok(result) => result,
            Err(panic) => Err(DataError::Malformed {
                file: spec.path.clone(),
                line: 0,
                message: format!("not a readable Parquet file (the decoder failed: {panic})"),
            }),
        }
    }

    fn open_unguarded(spec: &DataSpec, file: File) -> Result<Self, DataError> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let path = &spec.path;
        let bad = |e: parquet::errors::ParquetError| DataError::Malformed {
            file: path.clone(),
            line: 0,
            message: format!("not a readable Parquet file: {e}"),
        };
        let reader = SerializedFileReader::new(file).map_err(bad)?;
        let root = reader
            .metadata()
            .file_metadata()
            .schema_descr()
            .root_schema();
        let fields = root.get_fields();
        let names: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
        // The projection keeps file order, so positions are found among the wanted names.
        let wanted: Vec<&str> = [
            Some(spec.text_column.as_str()),
            spec.text_pair_column.as_deref(),
            spec.label_column.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        for col in &wanted {
            if !names.iter().any(|n| n == col) {
                return Err(DataError::MissingColumn {
                    file: path.clone(),
                    column: col.to_string(),
                    available: names.clone(),
                });
            }
        }
        let kept: Vec<_> = fields
            .iter()
            .filter(|f| wanted.contains(&f.name()))
            .cloned()
            .collect();
        let position = |col: &str| kept.iter().position(|f| f.name() == col).unwrap_or(0);
        let (text, pair, label) = (
            position(&spec.text_column),
            spec.text_pair_column.as_deref().map(position),
            spec.label_column.as_deref().map(position),
        );
        let projection = parquet::schema::types::Type::group_type_builder(root.name())
            .with_fields(kept)
            .build()
            .map_err(bad)?;
        if reader.metadata().file_metadata().num_rows() == 0 {
            return Err(DataError::Empty { file: path.clone() });
        }
        let rows = parquet::record::reader::RowIter::from_file_into(Box::new(reader))
            .project(Some(projection))
            .map_err(bad)?;
        Ok(ParquetRows {
            rows,
            text,
            pair,
            label,
            row: 0,
        })
    }

    fn next_row(&mut self, spec: &DataSpec) -> Option<Result<Row, DataError>> {
        use parquet::record::Field;
        let next = match guard_decoder(|| self.rows.next()) {
            Ok(next) => next,
            Err(panic) => {
                return Some(Err(DataError::Row {
                    file: spec.path.clone(),
                    row: self.row + 1,
                    message: format!("unreadable Parquet row (the decoder failed: {panic})"),
                }));
            }
        };
        let row = match next? {
            Ok(r) => r,
            Err(e) => {
                return Some(Err(DataError::Row {
                    file: spec.path.clone(),
                    row: self.row + 1,
                    message: format!("unreadable Parquet row: {e}"),
                }));
            }
        };
        self.row += 1;
        let line = self.row;
        let columns: Vec<(&String, &Field)> = row.get_column_iter().collect();
        let value = |i: usize, scalars: bool| -> Result<String, DataError> {
            let Some((name, field)) = columns.get(i) else {
                return Ok(String::new());
            };
            match field {
                Field::Null => Ok(String::new()),
                Field::Str(s) => Ok(s.clone()),
                Field::Bool(_)
                | Field::Byte(_)
                | Field::Short(_)
                | Field::Int(_)
                | Field::Long(_)
                | Field::UByte(_)
                | Field::UShort(_)
                | Field::UInt(_)
                | Field::ULong(_)
                    if scalars =>
                {
                    Ok(field.to_string())
                }
                other => Err(DataError::Row {
                    file: spec.path.clone(),
                    row: line,
                    message: format!(
                        "column `{name}` must be a string{}, found {other}",
                        if scalars { ", integer or bool" } else { "" }
                    ),
                }),
            }
        };
        Some((|| {
            Ok(Row {
                text: value(self.text, false)?,
                pair: self.pair.map(|i| value(i, false)).transpose()?,
                label: self.label.map(|i| value(i, true)).transpose()?,
                line,
                replaced: false,
            })
        })())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/data");

    fn spec(name: &str) -> DataSpec {
        DataSpec {
            label_column: Some("label".into()),
            ..DataSpec::new(Path::new(FIXTURES).join(name))
        }
    }

    /// A spec for a temporary file with `contents`.
    fn temp(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> DataSpec {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        DataSpec {
            label_column: Some("label".into()),
            ..DataSpec::new(path)
        }
    }

    fn err(spec: &DataSpec) -> String {
        read_examples(spec).unwrap_err().to_string()
    }

    #[test]
    fn format_follows_the_extension() {
        let f = |p: &str| Format::from_path(Path::new(p));
        assert_eq!(f("a.csv"), Some(Format::Csv));
        assert_eq!(f("a.TSV"), Some(Format::Tsv));
        assert_eq!(f("a.tab"), Some(Format::Tsv));
        assert_eq!(f("a.txt"), Some(Format::Tsv));
        assert_eq!(f("a.jsonl"), Some(Format::Jsonl));
        assert_eq!(f("a.ndjson"), Some(Format::Jsonl));
        assert_eq!(f("a.json"), None);
        assert_eq!(f("noext"), None);
    }

    #[test]
    fn quoted_fields_bom_and_crlf() {
        let (ex, report) = read_examples(&spec("quoted.csv")).unwrap();
        assert_eq!(report.rows_read, 3);
        assert_eq!(ex[0].text, "A line with a comma, inside");
        assert_eq!(ex[1].text, "Two\r\nlines here");
        assert_eq!(ex[1].label.as_deref(), Some("negative"));
        assert_eq!(ex[2].text, "plain text");
        // The quoted newline makes the third record start on line 5.
        assert_eq!((ex[0].line, ex[1].line, ex[2].line), (2, 3, 5), "{ex:?}");
        assert_eq!(label_set(&ex), vec!["negative", "positive"]);
    }

    #[test]
    fn bom_is_stripped_from_the_header() {
        // Without stripping, the first column would be "\u{feff}text" and not found.
        let (ex, _) = read_examples(&spec("quoted.csv")).unwrap();
        assert_eq!(ex.len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let s = temp(&dir, "bom.tsv", b"\xEF\xBB\xBFtext\tlabel\nhi\tx\n");
        assert_eq!(read_examples(&s).unwrap().0[0].text, "hi");
        let j = temp(
            &dir,
            "bom.jsonl",
            b"\xEF\xBB\xBF{\"text\": \"hi\", \"label\": \"x\"}\n",
        );
        assert_eq!(read_examples(&j).unwrap().0[0].text, "hi");
    }

    #[test]
    fn bom_stripper_handles_short_reads_and_short_files() {
        /// Hands out one byte per read, the worst case for the BOM check.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(dst)) => {
                        *dst = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let cases: [(&[u8], &[u8]); 5] = [
            (b"\xEF\xBB\xBFabc", b"abc"),
            (b"\xEF\xBB\xBF", b""),
            (b"\xEF\xBB", b"\xEF\xBB"),
            (b"ab", b"ab"),
            (b"abcdef", b"abcdef"),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            BomStripper::new(Trickle(input))
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn lines_count_from_the_header() {
        let (ex, report) = read_examples(&spec("unknown_label.tsv")).unwrap();
        assert_eq!(ex.iter().map(|e| e.line).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(report.rows_read, 3);
        assert_eq!(label_set(&ex), vec!["negative", "neutral", "positive"]);
    }

    #[test]
    fn latin1_bytes_name_the_line() {
        let e = read_examples(&spec("latin1.tsv")).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Encoding {
                    line: 3,
                    offset: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("latin1.tsv line 3") && msg.contains("UTF-8"),
            "{msg}"
        );
    }

    #[test]
    fn short_row_names_the_line() {
        let msg = err(&spec("short_row.tsv"));
        assert!(
            msg.contains(
                "short_row.tsv line 4 (record 3): expected 2 fields (text, label), found 1"
            ),
            "{msg}"
        );
    }

    #[test]
    fn long_row_is_an_error_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = temp(&dir, "long.csv", b"text,label\na,b\nc,d,e\n");
        let msg = err(&s);
        assert!(
            msg.contains("long.csv line 3 (record 2): expected 2 fields (text, label), found 3"),
            "{msg}"
        );
    }

    #[test]
    fn empty_and_header_only_files() {
        for f in ["empty.tsv", "header_only.tsv"] {
            let e = read_examples(&spec(f)).unwrap_err();
            assert!(matches!(e, DataError::Empty { .. }), "{f}: {e}");
            assert!(e.to_string().contains(f), "{e}");
            // The streaming reader says the same rather than yielding nothing.
            let first = example_iter(&spec(f)).and_then(|mut it| it.next().unwrap());
            assert!(matches!(first, Err(DataError::Empty { .. })), "{f}");
        }
        let dir = tempfile::tempdir().unwrap();
        let blank = temp(&dir, "blank.jsonl", b"\n  \n");
        assert!(matches!(
            read_examples(&blank),
            Err(DataError::Empty { .. })
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = read_examples(&spec("no_such_file.tsv")).unwrap_err();
        assert!(matches!(e, DataError::Open { .. }), "{e:?}");
        assert!(e.to_string().contains("no_such_file.tsv"), "{e}");
    }

    #[test]
    fn unknown_extension_asks_for_a_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = temp(&dir, "data.dat", b"text|label\nhi|x\n");
        let e = read_examples(&s).unwrap_err();
        assert!(matches!(e, DataError::UnknownFormat { .. }), "{e:?}");
        assert!(e.to_string().contains("data.dat"), "{e}");
        s.format = Some(Format::Csv);
        s.delimiter = Some(b'|');
        let (ex, _) = read_examples(&s).unwrap();
        assert_eq!(ex[0].label.as_deref(), Some("x"));
    }

    #[test]
    fn missing_column_lists_the_available_ones() {
        let e = read_examples(&spec("no_label.tsv")).unwrap_err();
        match &e {
            DataError::MissingColumn {
                column, available, ..
            } => {
                assert_eq!(column, "label");
                assert_eq!(available, &["text", "sentiment"]);
            }
            other => panic!("{other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("no_label.tsv: no column `label`") && msg.contains("text, sentiment"),
            "{msg}"
        );
        let mut s = spec("no_label.tsv");
        s.label_column = Some("sentiment".into());
        assert_eq!(read_examples(&s).unwrap().0.len(), 2);
    }

    #[test]
    fn wrong_delimiter_gets_a_hint() {
        let mut s = spec("quoted.csv");
        s.format = Some(Format::Tsv);
        let msg = err(&s);
        assert!(msg.contains("delimiter"), "{msg}");
    }

    #[test]
    fn empty_text_and_label_rows_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let s = temp(
            &dir,
            "gaps.tsv",
            b"text\tlabel\nkeep\ta\n  \tb\nno label\t \n\nlast\t b \n",
        );
        let (ex, report) = read_examples(&s).unwrap();
        assert_eq!(
            report,
            ReadReport {
                rows_read: 4,
                empty_text_dropped: 1,
                empty_label_dropped: 1,
                ..ReadReport::default()
            }
        );
        assert_eq!(ex.len(), 2);
        // Labels are trimmed; the blank line 5 is skipped but still counted in line numbers.
        assert_eq!(ex[1].label.as_deref(), Some("b"));
        assert_eq!(ex[1].line, 6);
    }

    #[test]
    fn unlabelled_spec_ignores_labels() {
        let mut s = spec("unknown_label.tsv");
        s.label_column = None;
        let (ex, _) = read_examples(&s).unwrap();
        assert!(ex.iter().all(|e| e.label.is_none()));
        assert_eq!(ex.len(), 3);
    }

    #[test]
    fn text_pairs_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = temp(&dir, "pairs.csv", b"label,a,b\nyes,\"q, 1\",answer\n");
        s.text_column = "a".into();
        s.text_pair_column = Some("b".into());
        let (ex, _) = read_examples(&s).unwrap();
        assert_eq!(
            ex[0],
            Example {
                text: "q, 1".into(),
                text_pair: Some("answer".into()),
                label: Some("yes".into()),
                line: 2
            }
        );
    }

    #[test]
    fn jsonl_with_numbers_blank_lines_and_dropped_rows() {
        let (ex, report) = read_examples(&spec("small.jsonl")).unwrap();
        assert_eq!(report.rows_read, 5);
        assert_eq!(report.empty_text_dropped, 1);
        assert_eq!(report.empty_label_dropped, 1);
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[0].text, "one");
        assert_eq!(ex[2].label.as_deref(), Some("1"));
        // Line 3 is blank, so the third record is on line 4.
        assert_eq!(ex.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 2, 4]);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], &str); 7] = [
            (
                b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\",\n",
                "line 2 (record 2): invalid JSON",
            ),
            (
                b"{\"text\": \"a\", \"label\": \"x\"}\n\n{\"label\": \"x\"}\n",
                "line 3 (record 2): missing field `text` (fields: label)",
            ),
            (
                b"{\"text\": \"a\"}\n",
                "line 1 (record 1): missing field `label`",
            ),
            (
                b"[1, 2]\n",
                "line 1 (record 1): expected a JSON object, found an array",
            ),
            (
                b"{\"text\": 5, \"label\": \"x\"}\n",
                "line 1 (record 1): field `text` must be a string, found a number",
            ),
            (
                b"{\"text\": \"a\", \"label\": [\"x\"]}\n",
                "field `label` must be a string, number or bool, found an array",
            ),
            (
                b"{\"text\": \"caf\xE9\", \"label\": \"x\"}\r\n",
                "line 1 (record 1): invalid UTF-8",
            ),
        ];
        for (contents, want) in cases {
            let msg = err(&temp(&dir, "bad.jsonl", contents));
            assert!(msg.contains("bad.jsonl") && msg.contains(want), "{msg}");
            assert!(!msg.contains("line 1 column"), "{msg}");
        }
    }

    #[test]
    fn jsonl_scalars_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let s = temp(
            &dir,
            "s.ndjson",
            b"{\"text\": \"a\", \"label\": true}\r\n{\"text\": \"b\", \"label\": 2.5}\n{\"text\": null, \"label\": \"x\"}\n{\"text\": \"c\", \"label\": null}",
        );
        let (ex, report) = read_examples(&s).unwrap();
        assert_eq!(
            ex.iter().map(|e| e.label.as_deref()).collect::<Vec<_>>(),
            vec![Some("true"), Some("2.5")]
        );
        assert_eq!(
            (report.empty_text_dropped, report.empty_label_dropped),
            (1, 1)
        );
    }

    #[test]
    fn headerless_files_use_column_numbers() {
        let mut s = spec("unknown_label.tsv");
        s.has_header = false;
        s.text_column = "0".into();
        s.label_column = Some("1".into());
        let (ex, _) = read_examples(&s).unwrap();
        assert_eq!(ex.len(), 4);
        assert_eq!((ex[0].text.as_str(), ex[0].line), ("text", 1));
        assert_eq!(ex[3].line, 4);
        s.text_column = "text".into();
        let msg = err(&s);
        assert!(msg.contains("no column `text` (columns: 0, 1)"), "{msg}");
    }

    #[test]
    fn streaming_yields_the_same_examples_and_report() {
        for f in ["quoted.csv", "small.jsonl"] {
            let (all, report) = read_examples(&spec(f)).unwrap();
            let mut it = example_iter(&spec(f)).unwrap();
            let streamed: Vec<Example> = it.by_ref().map(|e| e.unwrap()).collect();
            assert_eq!(all, streamed);
            assert_eq!(it.report(), &report);
        }
    }

    #[test]
    fn streaming_stops_after_an_error() {
        let mut it = example_iter(&spec("short_row.tsv")).unwrap();
        assert_eq!(it.next().unwrap().unwrap().line, 2);
        assert_eq!(it.next().unwrap().unwrap().line, 3);
        assert!(matches!(
            it.next(),
            Some(Err(DataError::FieldCount { line: 4, .. }))
        ));
        assert!(it.next().is_none());
    }

    #[test]
    fn blank_lines_and_line_endings_keep_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&[u8], [usize; 3]); 4] = [
            (b"text\tlabel\na\tx\n\n\n\nb\ty\n\"q\n\n\"\tz", [2, 6, 7]),
            (
                b"text\tlabel\r\na\tx\r\n\r\n\r\n\r\nb\ty\r\n\"q\r\n\r\n\"\tz\r\n",
                [2, 6, 7],
            ),
            (b"text\tlabel\ra\tx\r\r\r\rb\ty\r\"q\r\r\"\tz\r", [2, 6, 7]),
            (
                b"\n\ntext\tlabel\n\na\tx\nb\ty\n\"q\n\n\"\tz\n\n",
                [5, 6, 7],
            ),
        ];
        for (contents, want) in cases {
            // These TSV files quote a field with line breaks, so they ask for RFC 4180.
            let s = DataSpec {
                quoting: Quoting::Rfc4180,
                ..temp(&dir, "lines.tsv", contents)
            };
            let (ex, report) = read_examples(&s).unwrap();
            assert_eq!(report.rows_read, 3);
            assert_eq!(
                ex.iter().map(|e| e.line).collect::<Vec<_>>(),
                want,
                "{ex:?}"
            );
            assert!(
                ex[2].text.trim_end() == "q" && ex[2].text.len() >= 3,
                "{ex:?}"
            );
        }
    }

    #[test]
    fn bad_bytes_in_the_header_are_line_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_examples(&temp(&dir, "h.tsv", b"t\xE9xt\tlabel\na\tb\n")).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Encoding {
                    line: 1,
                    offset: 1,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn line_numbers_hold_across_large_crlf_files() {
        // Larger than the csv reader's buffer, so the line index is pruned as it goes.
        let mut contents = b"text,label\r\n".to_vec();
        for i in 0..5000 {
            if i % 1000 == 7 {
                contents.extend_from_slice(format!("\"multi\r\nline {i}\",l\r\n").as_bytes());
            } else {
                contents.extend_from_slice(format!("row {i},l\r\n").as_bytes());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (ex, _) = read_examples(&temp(&dir, "big.csv", &contents)).unwrap();
        assert_eq!(ex.len(), 5000);
        // Row i starts on line 2 + i + (multi-line rows before it).
        for (i, e) in ex.iter().enumerate() {
            let extra = (0..i).filter(|j| j % 1000 == 7).count();
            assert_eq!(e.line, 2 + i + extra, "row {i}: {:?}", e.text);
        }
    }

    #[test]
    fn windows_1252_and_latin1_decode_where_utf8_fails_with_the_line() {
        let utf8 = err(&spec("cp1252.tsv"));
        assert!(
            utf8.contains("cp1252.tsv line 2") && utf8.contains("data.encoding"),
            "{utf8}"
        );
        let cp = DataSpec {
            encoding: TextEncoding::Windows1252,
            ..spec("cp1252.tsv")
        };
        let (ex, _) = read_examples(&cp).unwrap();
        assert_eq!(ex[0].text, "\u{201C}Quoted\u{201D} costs \u{20AC} 5");
        assert_eq!(ex[1].text, "caf\u{E9} au lait");
        let latin = DataSpec {
            encoding: TextEncoding::Latin1,
            ..spec("latin1.tsv")
        };
        let (ex, _) = read_examples(&latin).unwrap();
        assert_eq!(ex[1].text, "caf\u{E9} au lait");
    }

    #[test]
    fn replace_policy_counts_rows_with_undecodable_bytes() {
        let lossy = DataSpec {
            replace_invalid: true,
            ..spec("cp1252.tsv")
        };
        let (ex, report) = read_examples(&lossy).unwrap();
        assert_eq!(report.decode_replaced, 2);
        assert!(ex[0].text.contains('\u{FFFD}'));
        let dir = tempfile::tempdir().unwrap();
        let j = DataSpec {
            replace_invalid: true,
            ..temp(
                &dir,
                "bad.jsonl",
                b"{\"text\": \"a\xffb\", \"label\": \"x\"}\n",
            )
        };
        let (ex, report) = read_examples(&j).unwrap();
        assert_eq!(
            (ex[0].text.as_str(), report.decode_replaced),
            ("a\u{FFFD}b", 1)
        );
    }

    #[test]
    fn empty_labels_are_filled_and_counted_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let s = DataSpec {
            fill_label: Some("neutral".into()),
            ..temp(&dir, "f.tsv", b"text\tlabel\na\tpos\nb\t \n")
        };
        let (ex, report) = read_examples(&s).unwrap();
        assert_eq!(ex[1].label.as_deref(), Some("neutral"));
        assert_eq!(
            (report.empty_label_filled, report.empty_label_dropped),
            (1, 0)
        );
    }

    #[test]
    fn parquet_written_by_pyarrow_reads_with_snappy_and_zstd() {
        for name in ["small.parquet", "small_zstd.parquet"] {
            let (ex, report) = read_examples(&spec(name)).unwrap();
            assert_eq!(report.rows_read, 4, "{name}");
            assert_eq!(report.empty_label_dropped, 1, "the null label");
            let got: Vec<(&str, &str, usize)> = ex
                .iter()
                .map(|e| (e.text.as_str(), e.label.as_deref().unwrap(), e.line))
                .collect();
            assert_eq!(
                got,
                [
                    ("good movie", "1", 1),
                    ("bad movie", "0", 2),
                    ("fine", "1", 4)
                ]
            );
        }
        let missing = DataSpec {
            text_column: "review".into(),
            ..spec("small.parquet")
        };
        let e = err(&missing);
        assert!(
            e.contains("no column `review`") && e.contains("score, text, label"),
            "{e}"
        );
        let not_text = DataSpec {
            text_column: "score".into(),
            ..spec("small.parquet")
        };
        let e = err(&not_text);
        assert!(
            e.contains("row 1") && e.contains("`score` must be a string"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = err(&temp(&dir, "fake.parquet", b"text,label\n"));
        assert!(e.contains("fake.parquet") && e.contains("Parquet"), "{e}");
    }

    /// The ten-row TSV of the report: line 3 opens a quote that never closes.
    const WOW_TSV: &[u8] = b"text\tlabel\nA fine film\tpositive\n\"Wow, what a mess\tnegative\nHe said \"great\" twice\tpositive\nDull\tnegative\nLovely\tpositive\nBoring\tnegative\nSuperb\tpositive\nAwful\tnegative\nGood\tpositive\nBad\tnegative\n";

    #[test]
    fn reader_never_merges_rows_on_unterminated_quote() {
        let dir = tempfile::tempdir().unwrap();
        // TSV (IANA): quotes are text by default, so all ten rows come back, in place.
        let (ex, report) = read_examples(&temp(&dir, "wow.tsv", WOW_TSV)).unwrap();
        assert_eq!((ex.len(), report.rows_read), (10, 10));
        assert_eq!(ex[1].text, "\"Wow, what a mess");
        assert_eq!(ex[1].label.as_deref(), Some("negative"));
        assert_eq!(ex[2].text, "He said \"great\" twice");
        assert_eq!(
            ex.iter().map(|e| e.line).collect::<Vec<_>>(),
            (2..12).collect::<Vec<_>>()
        );
        // Asking for RFC 4180 quoting: the quote is unbalanced, an error naming line 3.
        let strict = DataSpec {
            quoting: Quoting::Rfc4180,
            ..temp(&dir, "wow.tsv", WOW_TSV)
        };
        let msg = err(&strict);
        assert!(
            msg.contains("wow.tsv line 3 (record 2)")
                && msg.contains("opened on line 3 closes on line 4"),
            "{msg}"
        );
        // The same rows as CSV (RFC 4180 by default).
        let csv: Vec<u8> = String::from_utf8(WOW_TSV.to_vec())
            .unwrap()
            .replace('\t', ",")
            .into_bytes();
        let msg = err(&temp(&dir, "wow.csv", &csv));
        assert!(msg.contains("wow.csv line 3 (record 2)"), "{msg}");
        // A quote left open to the end of the file is an error naming where it opened.
        let msg = err(&temp(
            &dir,
            "open.csv",
            b"text,label\na,b\n\"never closed,x\nc,d\n",
        ));
        assert!(
            msg.contains("open.csv line 3 (record 2)") && msg.contains("never closed"),
            "{msg}"
        );
    }

    #[test]
    fn quoting_modes_are_explicit() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"text\tlabel\n\"a\tb\"\tx\n";
        // RFC 4180: the quoted field holds the tab.
        let rfc = DataSpec {
            quoting: Quoting::Rfc4180,
            ..temp(&dir, "q.tsv", body)
        };
        assert_eq!(read_examples(&rfc).unwrap().0[0].text, "a\tb");
        // None (the TSV default): three fields where the header has two, with a hint.
        let msg = err(&temp(&dir, "q.tsv", body));
        assert!(
            msg.contains("q.tsv line 2 (record 1): expected 2 fields (text, label), found 3")
                && msg.contains("data.quoting = \"rfc4180\""),
            "{msg}"
        );
        // CSV with quoting off reads quotes as text.
        let none = DataSpec {
            quoting: Quoting::None,
            ..temp(&dir, "q.csv", b"text,label\n\"hi\",x\n")
        };
        assert_eq!(read_examples(&none).unwrap().0[0].text, "\"hi\"");
        // `""` is one quote inside a quoted field; a quote inside an unquoted field is text.
        let (ex, _) = read_examples(&temp(
            &dir,
            "e.csv",
            b"text,label\n\"say \"\"hi\"\"\",x\n5\" screen,y\n",
        ))
        .unwrap();
        assert_eq!(ex[0].text, "say \"hi\"");
        assert_eq!(ex[1].text, "5\" screen");
    }

    #[test]
    fn line_numbers_match_grep_with_lone_cr_in_quoted_fields() {
        let dir = tempfile::tempdir().unwrap();
        // Line 2 holds a quoted field with a lone CR (not a line break for grep or editors);
        // the record after it is on line 3, and the bad record on line 4.
        let s = temp(
            &dir,
            "cr.csv",
            b"text,label\n\"one\rtwo\",x\nthree,y\nfour\n",
        );
        let mut it = example_iter(&s).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!((first.text.as_str(), first.line), ("one\rtwo", 2));
        assert_eq!(it.next().unwrap().unwrap().line, 3);
        let msg = it.next().unwrap().unwrap_err().to_string();
        assert!(
            msg.contains("cr.csv line 4 (record 3): expected 2 fields"),
            "{msg}"
        );
        // A record whose quoted field spans lines says so when its field count is wrong.
        let msg = err(&temp(&dir, "span.csv", b"text,label\n\"a\nb\",x,y\n"));
        assert!(
            msg.contains("line 2 (record 1)") && msg.contains("from line 2 to line 3"),
            "{msg}"
        );
    }

    #[test]
    fn stdin_lines_follow_the_file_rules() {
        let input: &[u8] = b"\xEF\xBB\xBFfirst\r\n\n  \nsecond\n";
        let (ex, report) =
            read_lines(input, Path::new("<stdin>"), TextEncoding::Utf8, false).unwrap();
        assert_eq!(
            ex.iter()
                .map(|e| (e.text.as_str(), e.line))
                .collect::<Vec<_>>(),
            [("first", 1), ("second", 4)]
        );
        assert_eq!((report.rows_read, report.empty_text_dropped), (3, 1));
        let bad: &[u8] = b"ok\ncaf\xE9\n";
        let msg = read_lines(bad, Path::new("<stdin>"), TextEncoding::Utf8, false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("<stdin> line 2 (record 2): invalid UTF-8"),
            "{msg}"
        );
        let (ex, _) = read_lines(bad, Path::new("<stdin>"), TextEncoding::Latin1, false).unwrap();
        assert_eq!(ex[1].text, "caf\u{E9}");
        assert!(matches!(
            read_lines(&b""[..], Path::new("<stdin>"), TextEncoding::Utf8, false),
            Err(DataError::Empty { .. })
        ));
    }

    #[test]
    fn missing_relative_path_says_what_it_was_resolved_against() {
        let e = read_examples(&DataSpec::new("no/such/dir/train.tsv")).unwrap_err();
        let msg = e.to_string();
        let cwd = std::env::current_dir().unwrap();
        assert!(
            msg.contains("no/such/dir/train.tsv")
                && msg.contains(&format!(
                    "relative to the working directory {}",
                    cwd.display()
                )),
            "{msg}"
        );
        // The OS error is in the message once (and is the error's source).
        let os = std::error::Error::source(&e).unwrap().to_string();
        assert_eq!(msg.matches(&os).count(), 1, "{msg}");
    }
}
