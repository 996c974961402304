//! Property tests over every data reader (CSV, TSV, JSONL, Parquet, CoNLL, line input):
//! random files built by a generator that knows what it wrote, so the expected records, their
//! lines and the first bad record are computed from the generator, not by re-parsing.
//!
//! For each reader: it never panics; when it succeeds, records returned + records reported
//! dropped = records in the file, with the right texts, labels and lines; when the file holds a
//! bad record, the error names the file and that record's line (and record number). Random
//! byte soup checks the first and last point for input no generator anticipates.
//!
//! The number of cases per property is proptest's (256, or the `PROPTEST_CASES` environment
//! variable): about 6 s in a release build. A long run, rounds with fresh seeds for a given
//! time: `scripts/fuzz-readers.sh 600` (docs/benchmarks.md, "Reliability").

use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tunekit::data::{
    DataError, DataSpec, Example, Format, Quoting, ReadReport, TextEncoding, example_iter,
    read_examples, read_lines,
};
use tunekit::task::ner::read_conll_with;

/// One piece of a generated field.
#[derive(Debug, Clone, Copy)]
enum Atom {
    Letter(u8),
    Space,
    Quote,
    Delim,
    Lf,
    Cr,
    CrLf,
    Tab,
    /// `é`: one byte in Latin-1, two in UTF-8.
    Accent,
    /// `日`: UTF-8 only (a letter in Latin-1 files).
    Wide,
    Nbsp,
}

fn atom() -> impl Strategy<Value = Atom> {
    prop_oneof![
        8 => (b'a'..=b'z').prop_map(Atom::Letter),
        2 => Just(Atom::Space),
        1 => Just(Atom::Quote),
        1 => Just(Atom::Delim),
        1 => Just(Atom::Lf),
        1 => Just(Atom::Cr),
        1 => Just(Atom::CrLf),
        1 => Just(Atom::Tab),
        1 => Just(Atom::Accent),
        1 => Just(Atom::Wide),
        1 => Just(Atom::Nbsp),
    ]
}

fn field() -> impl Strategy<Value = Vec<Atom>> {
    prop::collection::vec(atom(), 0..8)
}

/// How a generated field is written and what it reads back as.
struct Rendered {
    bytes: Vec<u8>,
    text: String,
    /// `\n` inside the field (line breaks an editor shows).
    newlines: usize,
}

/// Writes CSV/TSV fields the way a writer for the chosen syntax would.
#[derive(Debug, Clone, Copy)]
struct Writer {
    delimiter: u8,
    quotes: bool,
    latin1: bool,
}

impl Writer {
    /// Render atoms; without quoting, characters that cannot occur in a field (delimiter,
    /// line breaks) become letters.
    fn render(&self, atoms: &[Atom], force_quote: bool) -> Rendered {
        let mut raw = Vec::new();
        let mut text = String::new();
        let mut newlines = 0;
        let d = char::from(self.delimiter);
        for &a in atoms {
            let a = match a {
                Atom::Delim | Atom::Lf | Atom::Cr | Atom::CrLf if !self.quotes => {
                    Atom::Letter(b'q')
                }
                Atom::Tab if !self.quotes && self.delimiter == b'\t' => Atom::Letter(b't'),
                Atom::Delim if self.delimiter == b'\t' => Atom::Tab,
                other => other,
            };
            match a {
                Atom::Letter(b) => {
                    raw.push(b);
                    text.push(char::from(b));
                }
                Atom::Space => {
                    raw.push(b' ');
                    text.push(' ');
                }
                Atom::Quote => {
                    raw.push(b'"');
                    text.push('"');
                }
                Atom::Delim => {
                    raw.push(self.delimiter);
                    text.push(d);
                }
                Atom::Lf => {
                    raw.push(b'\n');
                    text.push('\n');
                    newlines += 1;
                }
                Atom::Cr => {
                    raw.push(b'\r');
                    text.push('\r');
                }
                Atom::CrLf => {
                    raw.extend_from_slice(b"\r\n");
                    text.push_str("\r\n");
                    newlines += 1;
                }
                Atom::Tab => {
                    raw.push(b'\t');
                    text.push('\t');
                }
                Atom::Accent => {
                    if self.latin1 {
                        raw.push(0xE9);
                    } else {
                        raw.extend_from_slice("é".as_bytes());
                    }
                    text.push('é');
                }
                Atom::Wide => {
                    if self.latin1 {
                        raw.push(b'w');
                        text.push('w');
                    } else {
                        raw.extend_from_slice("日".as_bytes());
                        text.push('日');
                    }
                }
                Atom::Nbsp => {
                    if self.latin1 {
                        raw.push(0xA0);
                    } else {
                        raw.extend_from_slice("\u{A0}".as_bytes());
                    }
                    text.push('\u{A0}');
                }
            }
        }
        // A CR at the end of a field and an LF terminator after it would read as CRLF inside
        // the field only when quoted; unquoted fields never hold CR (see above).
        let needs_quotes = self.quotes
            && (force_quote
                || raw
                    .iter()
                    .any(|&b| b == self.delimiter || b == b'"' || b == b'\n' || b == b'\r'));
        let bytes = if needs_quotes {
            let mut q = vec![b'"'];
            for &b in &raw {
                if b == b'"' {
                    q.push(b'"');
                }
                q.push(b);
            }
            q.push(b'"');
            q
        } else {
            raw
        };
        Rendered {
            bytes,
            text,
            newlines,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Lf,
    CrLf,
    Cr,
}

impl Ending {
    fn bytes(self) -> &'static [u8] {
        match self {
            Ending::Lf => b"\n",
            Ending::CrLf => b"\r\n",
            Ending::Cr => b"\r",
        }
    }
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![4 => Just(Ending::Lf), 3 => Just(Ending::CrLf), 1 => Just(Ending::Cr)]
}

#[derive(Debug, Clone)]
struct GenRow {
    text: Vec<Atom>,
    label: Vec<Atom>,
    quote_text: bool,
    ending: Ending,
    blank_after: usize,
}

fn gen_row() -> impl Strategy<Value = GenRow> {
    (field(), field(), any::<bool>(), ending(), 0usize..3).prop_map(
        |(text, label, quote_text, ending, blank_after)| GenRow {
            text,
            label,
            quote_text,
            ending,
            blank_after: if blank_after == 2 { 1 } else { 0 },
        },
    )
}

/// A planted bad record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    MissingField,
    ExtraField,
    /// A quote opened and never closed (with quoting; without it the quote is text).
    OpenQuote,
    /// A quote opened in one record and closed inside the next one's text.
    MergingQuote,
    /// A byte that is not UTF-8 in a UTF-8 file.
    BadByte,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::MissingField),
        1 => Just(Fault::ExtraField),
        1 => Just(Fault::OpenQuote),
        1 => Just(Fault::MergingQuote),
        1 => Just(Fault::BadByte),
    ]
}

#[derive(Debug, Clone)]
struct DelimitedCase {
    csv: bool,
    delimiter: u8,
    quoting: Quoting,
    latin1: bool,
    bom: bool,
    final_newline: bool,
    rows: Vec<GenRow>,
    fault: Fault,
    fault_at: usize,
}

fn delimited_case() -> impl Strategy<Value = DelimitedCase> {
    (
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(b';')), Just(Some(b'|'))],
        prop_oneof![
            Just(Quoting::Auto),
            Just(Quoting::Rfc4180),
            Just(Quoting::None)
        ],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(gen_row(), 1..12),
        fault(),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(csv, delim, quoting, latin1, bom, final_newline, rows, fault, at)| {
                let fault_at = at.index(rows.len());
                DelimitedCase {
                    csv,
                    delimiter: delim.unwrap_or(if csv { b',' } else { b'\t' }),
                    quoting,
                    latin1,
                    bom,
                    final_newline,
                    rows,
                    fault,
                    fault_at,
                }
            },
        )
}

/// What a reader must return for a generated file.
#[derive(Debug)]
enum Expected {
    /// (text, label, line) of every record, kept or not.
    Records(Vec<(String, String, usize)>),
    /// The first bad record: its line, its data record number and a word of the message.
    Error {
        line: usize,
        record: usize,
        says: &'static str,
    },
}

fn letters(atoms: &[Atom]) -> Vec<Atom> {
    atoms
        .iter()
        .map(|a| match a {
            Atom::Letter(_) | Atom::Space | Atom::Accent | Atom::Wide => *a,
            _ => Atom::Letter(b'x'),
        })
        .collect()
}

/// Build the file's bytes and what reading it must give.
fn build_delimited(case: &DelimitedCase) -> (Vec<u8>, Expected) {
    let format = if case.csv { Format::Csv } else { Format::Tsv };
    let quotes = case.quoting.quotes(format);
    let w = Writer {
        delimiter: case.delimiter,
        quotes,
        latin1: case.latin1,
    };
    let mut fault = case.fault;
    if !quotes && matches!(fault, Fault::MergingQuote) {
        fault = Fault::None;
    }
    if case.latin1 && fault == Fault::BadByte {
        // Every byte is Latin-1.
        fault = Fault::None;
    }
    if fault == Fault::MergingQuote && case.fault_at + 1 >= case.rows.len() {
        fault = Fault::OpenQuote;
    }
    let mut out = Vec::new();
    if case.bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    out.extend_from_slice(b"text");
    out.push(case.delimiter);
    out.extend_from_slice(b"label\n");
    let mut line = 2;
    let mut records = Vec::new();
    let mut error = None;
    let last = case.rows.len() - 1;
    for (i, row) in case.rows.iter().enumerate() {
        let start = line;
        let record = i + 1;
        // After an open quote, nothing may close it: later rows are letters only.
        let after_open = fault == Fault::OpenQuote && quotes && i > case.fault_at;
        let (text_atoms, label_atoms) = if after_open {
            (letters(&row.text), letters(&row.label))
        } else {
            (row.text.clone(), row.label.clone())
        };
        let mut text = w.render(&text_atoms, row.quote_text && !after_open);
        let label = w.render(&label_atoms, false);
        let mut bytes = Vec::new();
        let mut extra_lines = text.newlines + label.newlines;
        let here = i == case.fault_at;
        match fault {
            Fault::MissingField if here => {
                // Never an empty line: that would not be a record at all.
                bytes.extend_from_slice(b"z");
                bytes.extend_from_slice(&w.render(&letters(&text_atoms), false).bytes);
                extra_lines = 0;
                error.get_or_insert((start, record, "expected 2 fields"));
            }
            Fault::ExtraField if here => {
                bytes.extend_from_slice(&text.bytes);
                bytes.push(case.delimiter);
                bytes.extend_from_slice(&label.bytes);
                bytes.push(case.delimiter);
                bytes.extend_from_slice(b"extra");
                error.get_or_insert((start, record, "expected 2 fields"));
            }
            Fault::OpenQuote if here => {
                let plain = w.render(&letters(&text_atoms), false);
                bytes.push(b'"');
                bytes.extend_from_slice(&plain.bytes);
                bytes.push(case.delimiter);
                let plain_label = w.render(&letters(&label_atoms), false);
                bytes.extend_from_slice(&plain_label.bytes);
                extra_lines = 0;
                if quotes {
                    error.get_or_insert((start, record, "never closed"));
                } else {
                    text = Rendered {
                        bytes: Vec::new(),
                        text: format!("\"{}", plain.text),
                        newlines: 0,
                    };
                    records.push((text.text.clone(), plain_label.text.clone(), start));
                }
            }
            Fault::MergingQuote if here => {
                // `"abc<d>label` here, `de"fg<d>label` next: the quote closes inside `de"fg`.
                bytes.push(b'"');
                bytes.extend_from_slice(&w.render(&letters(&text_atoms), false).bytes);
                bytes.push(case.delimiter);
                bytes.extend_from_slice(&w.render(&letters(&label_atoms), false).bytes);
                extra_lines = 0;
                error.get_or_insert((start, record, "closes on line"));
            }
            Fault::MergingQuote if i == case.fault_at + 1 => {
                bytes.extend_from_slice(b"de\"fg");
                bytes.push(case.delimiter);
                bytes.extend_from_slice(b"x");
                extra_lines = 0;
            }
            Fault::BadByte if here => {
                // Unquoted, so the byte is in the field's text.
                bytes.push(0xFF);
                bytes.extend_from_slice(&w.render(&letters(&text_atoms), false).bytes);
                bytes.push(case.delimiter);
                bytes.extend_from_slice(&label.bytes);
                error.get_or_insert((start, record, "invalid UTF-8"));
            }
            _ => {
                bytes.extend_from_slice(&text.bytes);
                bytes.push(case.delimiter);
                bytes.extend_from_slice(&label.bytes);
                records.push((text.text.clone(), label.text.clone(), start));
            }
        }
        out.extend_from_slice(&bytes);
        line += extra_lines;
        if i < last || case.final_newline {
            out.extend_from_slice(row.ending.bytes());
            line += 1;
            for _ in 0..row.blank_after {
                out.extend_from_slice(row.ending.bytes());
                line += 1;
            }
        }
    }
    let expected = match error {
        Some((line, record, says)) => Expected::Error { line, record, says },
        None => Expected::Records(records),
    };
    (out, expected)
}

/// Check a reader's result against the generator's expectation.
fn check(
    file: &Path,
    result: Result<(Vec<Example>, ReadReport), DataError>,
    expected: &Expected,
    place: &str,
) -> Result<(), TestCaseError> {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    match (result, expected) {
        (Ok((examples, report)), Expected::Records(records)) => {
            prop_assert_eq!(report.rows_read, records.len());
            prop_assert_eq!(
                examples.len() + report.empty_text_dropped + report.empty_label_dropped,
                records.len(),
                "returned + dropped must be the records in the file"
            );
            let kept: Vec<(String, String, usize)> = records
                .iter()
                .filter(|(t, l, _)| !t.trim().is_empty() && !l.trim().is_empty())
                .map(|(t, l, n)| (t.clone(), l.trim().to_string(), *n))
                .collect();
            let got: Vec<(String, String, usize)> = examples
                .into_iter()
                .map(|e| (e.text, e.label.unwrap_or_default(), e.line))
                .collect();
            prop_assert_eq!(got, kept);
        }
        (Err(DataError::Empty { .. }), Expected::Records(records)) if records.is_empty() => {}
        (Err(e), Expected::Error { line, record, says }) => {
            let msg = e.to_string();
            let want = format!("{name} {place} {line} ({}", record_word(place, *record));
            prop_assert!(
                msg.contains(&want) && msg.contains(says),
                "want {want:?} and {says:?} in {msg:?}"
            );
        }
        (got, want) => {
            prop_assert!(false, "expected {want:?}, got {got:?}");
        }
    }
    Ok(())
}

fn record_word(place: &str, record: usize) -> String {
    match place {
        "line" => format!("record {record})"),
        _ => String::new(),
    }
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(bytes).unwrap();
    path
}

fn spec(path: &Path) -> DataSpec {
    DataSpec {
        label_column: Some("label".into()),
        ..DataSpec::new(path)
    }
}

/// The streaming reader must agree with the batch reader on everything.
fn streamed(spec: &DataSpec) -> Result<(Vec<Example>, ReadReport), DataError> {
    let mut it = example_iter(spec)?;
    let mut out = Vec::new();
    for e in it.by_ref() {
        out.push(e?);
    }
    Ok((out, it.report().clone()))
}

proptest! {
    #[test]
    fn delimited_readers_keep_every_record_or_name_the_bad_line(case in delimited_case()) {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, expected) = build_delimited(&case);
        let name = if case.csv { "gen.csv" } else { "gen.tsv" };
        let path = write(&dir, name, &bytes);
        let s = DataSpec {
            delimiter: Some(case.delimiter),
            quoting: case.quoting,
            encoding: if case.latin1 { TextEncoding::Latin1 } else { TextEncoding::Utf8 },
            ..spec(&path)
        };
        check(&path, read_examples(&s), &expected, "line")?;
        check(&path, streamed(&s), &expected, "line")?;
    }

    #[test]
    fn delimited_readers_survive_byte_soup(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"ab ,\t\"\r\n;".to_vec()),
                1 => any::<u8>(),
            ],
            0..300,
        ),
        csv in any::<bool>(),
        quoting in prop_oneof![Just(Quoting::Auto), Just(Quoting::Rfc4180), Just(Quoting::None)],
        header in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut body = if header { b"text,label\n".to_vec() } else { Vec::new() };
        body.extend_from_slice(&bytes);
        let path = write(&dir, if csv { "soup.csv" } else { "soup.tsv" }, &body);
        let s = DataSpec { quoting, has_header: header, text_column: if header { "text".into() } else { "0".into() }, label_column: None, ..DataSpec::new(&path) };
        soup_invariants(&path, read_examples(&s))?;
    }
}

/// Whatever random bytes give: no panic (the test would fail), consistent counts, and an
/// error that names the file.
fn soup_invariants(
    path: &Path,
    result: Result<(Vec<Example>, ReadReport), DataError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok((examples, report)) => {
            prop_assert_eq!(
                examples.len() + report.empty_text_dropped + report.empty_label_dropped,
                report.rows_read
            );
            prop_assert!(examples.iter().all(|e| e.line >= 1));
        }
        Err(e) => {
            let msg = e.to_string();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            prop_assert!(msg.contains(&name), "{msg}");
            let located = match &e {
                DataError::FieldCount { line, .. }
                | DataError::Encoding { line, .. }
                | DataError::Record { line, .. } => *line >= 1 && msg.contains(" line "),
                DataError::Row { row, .. } => *row >= 1,
                DataError::Empty { .. }
                | DataError::MissingColumn { .. }
                | DataError::Malformed { .. } => true,
                other => {
                    prop_assert!(false, "unexpected error kind {other:?}");
                    false
                }
            };
            prop_assert!(located, "{msg}");
        }
    }
    Ok(())
}

// ---- JSONL ----

#[derive(Debug, Clone)]
enum JsonText {
    Str(Vec<Atom>),
    Null,
    /// Faults from here on.
    Number,
    Missing,
    Array,
}

#[derive(Debug, Clone)]
enum JsonLabel {
    Str(Vec<Atom>),
    Number(i64),
    Bool(bool),
    Null,
    Missing,
    Object,
}

#[derive(Debug, Clone)]
struct JsonLine {
    text: JsonText,
    label: JsonLabel,
    broken: u8,
    crlf: bool,
    blank_before: u8,
}

fn json_line() -> impl Strategy<Value = JsonLine> {
    (
        prop_oneof![
            12 => field().prop_map(JsonText::Str),
            1 => Just(JsonText::Null),
            1 => Just(JsonText::Number),
            1 => Just(JsonText::Missing),
            1 => Just(JsonText::Array),
        ],
        prop_oneof![
            10 => field().prop_map(JsonLabel::Str),
            2 => any::<i64>().prop_map(JsonLabel::Number),
            1 => any::<bool>().prop_map(JsonLabel::Bool),
            1 => Just(JsonLabel::Null),
            1 => Just(JsonLabel::Missing),
            1 => Just(JsonLabel::Object),
        ],
        // 0: fine; 1: truncated JSON; 2: a byte that is not UTF-8; 3: not an object.
        prop_oneof![40 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        any::<bool>(),
        prop_oneof![5 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    )
        .prop_map(|(text, label, broken, crlf, blank_before)| JsonLine {
            text,
            label,
            broken,
            crlf,
            blank_before,
        })
}

fn atoms_text(atoms: &[Atom]) -> String {
    Writer {
        delimiter: b',',
        quotes: true,
        latin1: false,
    }
    .render(atoms, false)
    .text
}

fn build_jsonl(lines: &[JsonLine], bom: bool) -> (Vec<u8>, Expected) {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut line = 0;
    let mut records = Vec::new();
    let mut error = None;
    for (i, l) in lines.iter().enumerate() {
        for b in 0..l.blank_before {
            out.extend_from_slice(if b == 0 { b"\n" } else { b"  \t\r\n" });
            line += 1;
        }
        line += 1;
        let record = i + 1;
        let mut obj = serde_json::Map::new();
        let text = match &l.text {
            JsonText::Str(a) => {
                let t = atoms_text(a);
                obj.insert("text".into(), t.clone().into());
                Ok(t)
            }
            JsonText::Null => {
                obj.insert("text".into(), serde_json::Value::Null);
                Ok(String::new())
            }
            JsonText::Number => {
                obj.insert("text".into(), 5.into());
                Err("must be a string")
            }
            JsonText::Missing => Err("missing field `text`"),
            JsonText::Array => {
                obj.insert("text".into(), serde_json::json!(["a"]));
                Err("must be a string")
            }
        };
        let label = match &l.label {
            JsonLabel::Str(a) => {
                let t = atoms_text(a);
                obj.insert("label".into(), t.clone().into());
                Ok(t)
            }
            JsonLabel::Number(n) => {
                obj.insert("label".into(), (*n).into());
                Ok(n.to_string())
            }
            JsonLabel::Bool(b) => {
                obj.insert("label".into(), (*b).into());
                Ok(b.to_string())
            }
            JsonLabel::Null => {
                obj.insert("label".into(), serde_json::Value::Null);
                Ok(String::new())
            }
            JsonLabel::Missing => Err("missing field `label`"),
            JsonLabel::Object => {
                obj.insert("label".into(), serde_json::json!({"a": 1}));
                Err("must be a string, number or bool")
            }
        };
        let mut bytes = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap();
        let outcome = match l.broken {
            1 => {
                bytes.truncate(bytes.len() - 1);
                Err("invalid JSON")
            }
            2 => {
                bytes.insert(1, 0xFF);
                Err("invalid UTF-8")
            }
            3 => {
                bytes = b"[1, 2]".to_vec();
                Err("expected a JSON object")
            }
            _ => text.and_then(|t| label.map(|l| (t, l))),
        };
        out.extend_from_slice(&bytes);
        out.extend_from_slice(if l.crlf { b"\r\n" } else { b"\n" });
        match outcome {
            Ok((t, lab)) => records.push((t, lab, line)),
            Err(says) => {
                error.get_or_insert((line, record, says));
            }
        }
    }
    let expected = match error {
        Some((line, record, says)) => Expected::Error { line, record, says },
        None => Expected::Records(records),
    };
    (out, expected)
}

// ---- Parquet ----

fn write_parquet(path: &Path, rows: &[(Option<String>, Option<String>)], group: usize) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { OPTIONAL BYTE_ARRAY text (UTF8); OPTIONAL BYTE_ARRAY label (UTF8); }",
        )
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for chunk in rows.chunks(group.max(1)) {
        let mut rg = writer.next_row_group().unwrap();
        for col in 0..2 {
            let mut cw = rg.next_column().unwrap().unwrap();
            let cells: Vec<&Option<String>> = chunk
                .iter()
                .map(|(t, l)| if col == 0 { t } else { l })
                .collect();
            let values: Vec<ByteArray> = cells
                .iter()
                .filter_map(|c| c.as_ref().map(|s| ByteArray::from(s.as_str())))
                .collect();
            let defs: Vec<i16> = cells.iter().map(|c| i16::from(c.is_some())).collect();
            cw.typed::<ByteArrayType>()
                .write_batch(&values, Some(&defs), None)
                .unwrap();
            cw.close().unwrap();
        }
        rg.close().unwrap();
    }
    writer.close().unwrap();
}

// ---- CoNLL ----

#[derive(Debug, Clone)]
struct ConllWord {
    word: Vec<Atom>,
    tag: u8,
    tab: bool,
    crlf: bool,
}

fn conll_word() -> impl Strategy<Value = ConllWord> {
    (
        prop::collection::vec(atom(), 1..6),
        0u8..5,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(word, tag, tab, crlf)| ConllWord {
            word,
            tag,
            tab,
            crlf,
        })
}

const TAGS: [&str; 5] = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"];

/// A word made of atoms that can be in a CoNLL word (no blanks or line breaks).
fn conll_text(atoms: &[Atom]) -> String {
    let s: String = atoms_text(&letters(atoms))
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if s.is_empty() || s == "-DOCSTART-" {
        "w".to_string()
    } else {
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ConllFault {
    None,
    BadTag,
    NoTag,
    ExtraColumn,
    BadByte,
}

/// Sentences and what reading them gives: (first line, words, tags) or the error.
#[allow(clippy::type_complexity)]
fn build_conll(
    sentences: &[Vec<ConllWord>],
    bom: bool,
    docstart: bool,
    fault: ConllFault,
    fault_at: (usize, usize),
) -> (
    Vec<u8>,
    Result<Vec<(usize, Vec<String>, Vec<String>)>, (usize, usize, &'static str)>,
) {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut line = 0;
    if docstart {
        out.extend_from_slice(b"-DOCSTART- O\n\n");
        line += 2;
    }
    let mut got = Vec::new();
    let mut error = None;
    // An extra column on the very first word line sets the file's column count, so the
    // error is on the next word line (the two disagree); with no next line there is none.
    let mut columns_error_next = false;
    for (s, words) in sentences.iter().enumerate() {
        let mut w_out = Vec::new();
        let mut t_out = Vec::new();
        let first = line + 1;
        for (w, cw) in words.iter().enumerate() {
            line += 1;
            let word = conll_text(&cw.word);
            let tag = TAGS[usize::from(cw.tag) % TAGS.len()];
            let sep: &[u8] = if cw.tab { b"\t" } else { b" " };
            let here = (s, w) == fault_at;
            if columns_error_next {
                columns_error_next = false;
                error.get_or_insert((line, got.len() + 1, "columns"));
            }
            out.extend_from_slice(word.as_bytes());
            if here && fault == ConllFault::BadByte {
                out.push(0xFF);
                error.get_or_insert((line, got.len() + 1, "invalid UTF-8"));
            }
            match fault {
                ConllFault::NoTag if here => {
                    error.get_or_insert((line, got.len() + 1, "expected"));
                }
                ConllFault::BadTag if here => {
                    out.extend_from_slice(sep);
                    out.extend_from_slice(b"X-FOO");
                    error.get_or_insert((line, got.len() + 1, "X-FOO"));
                }
                ConllFault::ExtraColumn if here => {
                    out.extend_from_slice(sep);
                    out.extend_from_slice(b"NN");
                    out.extend_from_slice(sep);
                    out.extend_from_slice(tag.as_bytes());
                    if (s, w) == (0, 0) {
                        columns_error_next = true;
                    } else {
                        error.get_or_insert((line, got.len() + 1, "columns"));
                    }
                }
                _ => {
                    out.extend_from_slice(sep);
                    out.extend_from_slice(tag.as_bytes());
                }
            }
            out.extend_from_slice(if cw.crlf { b"\r\n" } else { b"\n" });
            w_out.push(word);
            t_out.push(tag.to_string());
        }
        got.push((first, w_out, t_out));
        out.extend_from_slice(b"\n");
        line += 1;
    }
    // Sentence numbers in errors count the sentences finished before the bad line.
    let expected = match error {
        Some((line, _, says)) => {
            let sentence = sentences_before(&got, line);
            Err((line, sentence, says))
        }
        None => Ok(got),
    };
    (out, expected)
}

/// 1 + the sentences that end before `line` (the sentence a line belongs to).
fn sentences_before(got: &[(usize, Vec<String>, Vec<String>)], line: usize) -> usize {
    1 + got
        .iter()
        .filter(|(first, words, _)| first + words.len() <= line)
        .count()
}

proptest! {
    #[test]
    fn jsonl_reader_keeps_every_record_or_names_the_bad_line(
        lines in prop::collection::vec(json_line(), 1..10),
        bom in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, expected) = build_jsonl(&lines, bom);
        let path = write(&dir, "gen.jsonl", &bytes);
        check(&path, read_examples(&spec(&path)), &expected, "line")?;
        check(&path, streamed(&spec(&path)), &expected, "line")?;
    }

    #[test]
    fn jsonl_reader_survives_byte_soup(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"{}[]\":, tx\r\n\\".to_vec()),
                1 => any::<u8>(),
            ],
            0..300,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "soup.jsonl", &bytes);
        soup_invariants(&path, read_examples(&spec(&path)))?;
    }

    #[test]
    fn parquet_reader_counts_every_row(
        rows in prop::collection::vec(
            (prop::option::weighted(0.8, field()), prop::option::weighted(0.8, field())),
            0..20,
        ),
        group in 1usize..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gen.parquet");
        let rows: Vec<(Option<String>, Option<String>)> = rows
            .iter()
            .map(|(t, l)| (t.as_deref().map(atoms_text), l.as_deref().map(atoms_text)))
            .collect();
        write_parquet(&path, &rows, group);
        let expected = Expected::Records(
            rows.iter()
                .enumerate()
                .map(|(i, (t, l))| (t.clone().unwrap_or_default(), l.clone().unwrap_or_default(), i + 1))
                .collect(),
        );
        check(&path, read_examples(&spec(&path)), &expected, "row")?;
    }

    #[test]
    fn parquet_reader_survives_corrupt_files(
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.parquet");
        let rows: Vec<(Option<String>, Option<String>)> = (0..5)
            .map(|i| (Some(format!("text {i}")), Some(format!("l{}", i % 2))))
            .collect();
        write_parquet(&path, &rows, 2);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let keep = cut.index(bytes.len() + 1);
        if keep < bytes.len() / 2 {
            bytes.truncate(keep);
        }
        std::fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| read_examples(&spec(&path)));
        prop_assert!(result.is_ok(), "the Parquet reader panicked");
        if let Ok(r) = result {
            soup_invariants(&path, r)?;
        }
    }

    #[test]
    fn conll_reader_keeps_every_sentence_or_names_the_bad_line(
        sentences in prop::collection::vec(prop::collection::vec(conll_word(), 1..6), 1..6),
        bom in any::<bool>(),
        docstart in any::<bool>(),
        fault in prop_oneof![
            6 => Just(ConllFault::None),
            1 => Just(ConllFault::BadTag),
            1 => Just(ConllFault::NoTag),
            1 => Just(ConllFault::ExtraColumn),
            1 => Just(ConllFault::BadByte),
        ],
        at in any::<(prop::sample::Index, prop::sample::Index)>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = at.0.index(sentences.len());
        let fault_at = (s, at.1.index(sentences[s].len()));
        let (bytes, expected) = build_conll(&sentences, bom, docstart, fault, fault_at);
        let path = write(&dir, "gen.conll", &bytes);
        match (read_conll_with(&path, true, TextEncoding::Utf8, false), expected) {
            (Ok((got, report)), Ok(want)) => {
                prop_assert_eq!(report.sentences, want.len());
                prop_assert_eq!(report.words, want.iter().map(|w| w.1.len()).sum::<usize>());
                let got: Vec<(usize, Vec<String>, Vec<String>)> =
                    got.into_iter().map(|s| (s.line, s.words, s.tags)).collect();
                prop_assert_eq!(got, want);
            }
            (Err(e), Err((line, sentence, says))) => {
                let msg = e.to_string();
                let want = format!("gen.conll line {line} ({}", if says == "invalid UTF-8" {
                    format!("record {sentence})")
                } else {
                    format!("sentence {sentence})")
                });
                prop_assert!(msg.contains(&want) && msg.contains(says), "want {want:?}, {says:?} in {msg:?}");
            }
            (got, want) => prop_assert!(false, "expected {want:?}, got {got:?}"),
        }
    }

    #[test]
    fn conll_reader_survives_byte_soup(
        bytes in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"ab \tBIO-PER\r\n".to_vec()),
                1 => any::<u8>(),
            ],
            0..300,
        ),
        labelled in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "soup.conll", &bytes);
        match read_conll_with(&path, labelled, TextEncoding::Utf8, false) {
            Ok((sentences, report)) => {
                prop_assert_eq!(report.sentences, sentences.len());
                prop_assert_eq!(report.words, sentences.iter().map(|s| s.words.len()).sum::<usize>());
                prop_assert!(sentences.iter().all(|s| s.line >= 1 && (!labelled || s.tags.len() == s.words.len())));
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("soup.conll"), "{msg}");
                prop_assert!(msg.contains(" line ") || msg.contains("no sentences"), "{msg}");
            }
        }
    }

    #[test]
    fn line_input_keeps_every_line(
        lines in prop::collection::vec((field(), any::<bool>(), 0u8..3), 0..12),
        bom in any::<bool>(),
        latin1 in any::<bool>(),
    ) {
        let w = Writer { delimiter: b'\t', quotes: false, latin1 };
        let mut bytes = Vec::new();
        if bom {
            bytes.extend_from_slice(b"\xEF\xBB\xBF");
        }
        let mut records = Vec::new();
        let mut line = 0;
        for (atoms, crlf, blank) in &lines {
            for _ in 0..*blank {
                bytes.extend_from_slice(b"\n");
                line += 1;
            }
            // No line breaks or tabs inside a line (the writer makes them letters).
            let r = w.render(atoms, false);
            line += 1;
            if !r.bytes.is_empty() {
                records.push((r.text.clone(), line));
            }
            bytes.extend_from_slice(&r.bytes);
            bytes.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
        }
        let encoding = if latin1 { TextEncoding::Latin1 } else { TextEncoding::Utf8 };
        match read_lines(&bytes[..], Path::new("<stdin>"), encoding, false) {
            Ok((examples, report)) => {
                prop_assert_eq!(report.rows_read, records.len());
                prop_assert_eq!(examples.len() + report.empty_text_dropped, records.len());
                let kept: Vec<(String, usize)> =
                    records.into_iter().filter(|(t, _)| !t.trim().is_empty()).collect();
                let got: Vec<(String, usize)> = examples.into_iter().map(|e| (e.text, e.line)).collect();
                prop_assert_eq!(got, kept);
            }
            Err(DataError::Empty { .. }) => prop_assert!(records.is_empty()),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
