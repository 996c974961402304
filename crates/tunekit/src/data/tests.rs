//! Unit tests of the readers (fixtures in `tests/fixtures/data`).

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
        msg.contains("short_row.tsv line 4 (record 3): expected 2 fields (text, label), found 1"),
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
    let (ex, report) = read_lines(input, Path::new("<stdin>"), TextEncoding::Utf8, false).unwrap();
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
