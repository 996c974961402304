//! CSV/TSV: the record splitter ([`Records`]) and the column resolution ([`Delimited`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{DataError, DataSpec, Format, Row, Source, decode};

/// CSV/TSV state: the record splitter and the resolved columns.
pub(super) struct Delimited {
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

pub(super) fn delimited(
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
    pub(super) fn next_row(&mut self, spec: &DataSpec) -> Option<Result<Row, DataError>> {
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

/// Skips a UTF-8 byte-order mark at the start of a stream.
pub(super) struct BomStripper<R> {
    inner: R,
    checked: bool,
    pending: Vec<u8>,
}

impl<R: Read> BomStripper<R> {
    pub(super) fn new(inner: R) -> Self {
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
