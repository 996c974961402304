//! Token classification (NER): CoNLL column files, tags aligned to word pieces, and
//! entity-level scores with seqeval's semantics.
//!
//! Alignment follows `transformers`' token-classification recipe: the first word piece of a
//! word carries the word's tag, later pieces and special tokens are ignored by the loss
//! ([`IGNORE`]), and a word's prediction is read from its first piece. Words cut off by
//! `model.max_length` are counted, and predicted `O`, so their entities count as missed.
//!
//! Entities are extracted as `seqeval.metrics.sequence_labeling.get_entities` does in its
//! default (conlleval-compatible, non-strict) mode: an `I-` after `O` or after another type
//! starts a new entity, sentences are joined with `O` between them; precision, recall and F1
//! are micro-averaged over entities (type, start, end), per type as well.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TagScheme;
use crate::data::{DataSpec, TextEncoding};
use crate::error::{Error, Result};
use crate::tokenize::WordTokens;

/// Label id of pieces the loss and metrics skip (continuation pieces, special tokens).
pub const IGNORE: i64 = -100;

/// One sentence of a CoNLL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentence {
    /// The words (first column).
    pub words: Vec<String>,
    /// One tag per word (last column); empty for unlabelled input.
    pub tags: Vec<String>,
    /// 1-based line of the first word.
    pub line: usize,
}

/// What reading a CoNLL file kept and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConllReport {
    /// Sentences read.
    pub sentences: usize,
    /// Words read.
    pub words: usize,
    /// `-DOCSTART-` lines skipped (document separators of CoNLL-2003).
    pub docstart_lines: usize,
    /// Lines whose undecodable bytes were replaced by U+FFFD (`on_decode_error = "replace"`).
    #[serde(default)]
    pub decode_replaced: usize,
}

/// Read a CoNLL column file: one word per line, columns separated by tabs (or, on a line
/// without a tab, by spaces), the word first and the tag last (when `labelled`); sentences
/// separated by blank lines. UTF-8; see [`read_conll_with`] for other encodings.
pub fn read_conll(path: &Path, labelled: bool) -> Result<(Vec<Sentence>, ConllReport)> {
    read_conll_with(path, labelled, TextEncoding::Utf8, false)
}

/// [`read_conll`] in a given encoding, with the rules of the table readers: a UTF-8
/// byte-order mark is skipped, lines end at `\n` or `\r\n` (numbered as `grep -n` numbers
/// them), undecodable bytes are an error naming the line unless `replace_invalid`, and every
/// word line must have as many columns as the first one (a word with a space in a
/// space-separated file would otherwise lose its tail silently). Errors name the file, the
/// line and the sentence.
pub fn read_conll_with(
    path: &Path,
    labelled: bool,
    encoding: TextEncoding,
    replace_invalid: bool,
) -> Result<(Vec<Sentence>, ConllReport)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Data(crate::data::DataError::Open {
            file: path.to_path_buf(),
            source: e,
        })
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let spec = DataSpec {
        encoding,
        replace_invalid,
        ..DataSpec::new(path)
    };
    let mut out = Vec::new();
    let mut report = ConllReport::default();
    let mut cur = Sentence {
        words: Vec::new(),
        tags: Vec::new(),
        line: 1,
    };
    let flush = |cur: &mut Sentence, out: &mut Vec<Sentence>, next_line: usize| {
        if !cur.words.is_empty() {
            out.push(std::mem::replace(
                cur,
                Sentence {
                    words: Vec::new(),
                    tags: Vec::new(),
                    line: next_line,
                },
            ));
        } else {
            cur.line = next_line;
        }
    };
    // Columns of the first word line, and that line.
    let mut columns: Option<(usize, usize)> = None;
    // A final line break does not start another line (as `str::lines`).
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let sentence = out.len() + 1;
        let at = || format!("{} line {line} (sentence {sentence})", path.display());
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let (decoded, replaced) = crate::data::decode(&spec, line, sentence, raw)?;
        if replaced {
            report.decode_replaced += 1;
        }
        let trimmed = decoded.trim();
        if trimmed.is_empty() {
            flush(&mut cur, &mut out, line + 1);
            continue;
        }
        let cols: Vec<&str> = if trimmed.contains('\t') {
            trimmed
                .split('\t')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        } else {
            trimmed.split(' ').filter(|c| !c.is_empty()).collect()
        };
        let (Some(&word), Some(&tag)) = (cols.first(), cols.last()) else {
            continue;
        };
        if word == "-DOCSTART-" {
            report.docstart_lines += 1;
            flush(&mut cur, &mut out, line + 1);
            continue;
        }
        match columns {
            None => columns = Some((cols.len(), line)),
            Some((n, first)) if n != cols.len() => {
                return Err(Error::Input(format!(
                    "{}: expected {n} columns (as on line {first}), found {}: {trimmed:?}",
                    at(),
                    cols.len()
                )));
            }
            Some(_) => {}
        }
        if labelled {
            if cols.len() < 2 {
                return Err(Error::Input(format!(
                    "{}: expected a word and a tag separated by a tab or space, found {trimmed:?}",
                    at()
                )));
            }
            parse_tag(tag).map_err(|m| Error::Input(format!("{}: tag {tag:?}: {m}", at())))?;
            cur.tags.push(tag.to_string());
        }
        if cur.words.is_empty() {
            cur.line = line;
        }
        cur.words.push(word.to_string());
    }
    flush(&mut cur, &mut out, 0);
    report.sentences = out.len();
    report.words = out.iter().map(|s| s.words.len()).sum();
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no sentences (expected word<TAB>tag lines, blank lines between sentences)",
            path.display()
        )));
    }
    Ok((out, report))
}

/// Split a tag into (prefix, type): `B-PER` → (`B`, `PER`), `O` → (`O`, ``).
fn parse_tag(tag: &str) -> std::result::Result<(char, &str), String> {
    if tag == "O" {
        return Ok(('O', ""));
    }
    let mut chars = tag.chars();
    let prefix = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    match (prefix, rest.strip_prefix('-')) {
        ('B' | 'I' | 'E' | 'S', Some(t)) if !t.is_empty() => Ok((prefix, t)),
        _ => Err("not O or B-/I-/E-/S- followed by an entity type".into()),
    }
}

/// The scheme the training tags follow.
pub fn detect_scheme(tags: &BTreeSet<String>) -> TagScheme {
    if tags
        .iter()
        .any(|t| t.starts_with("E-") || t.starts_with("S-"))
    {
        TagScheme::Bioes
    } else {
        TagScheme::Bio
    }
}

/// Check every tag belongs to `scheme` (a BIO-declared file with `E-` tags is a mistake).
pub fn check_scheme(tags: &BTreeSet<String>, scheme: TagScheme, file: &Path) -> Result<()> {
    if scheme == TagScheme::Bio
        && let Some(t) = tags
            .iter()
            .find(|t| t.starts_with("E-") || t.starts_with("S-"))
    {
        return Err(Error::Input(format!(
            "{}: tag {t:?} is BIOES but task.scheme = \"bio\"",
            file.display()
        )));
    }
    Ok(())
}

/// Per-piece label ids for one sentence: the word's tag id at its first piece, [`IGNORE`]
/// elsewhere. Also returns how many words lost their tag to truncation.
pub fn align(encoded: &WordTokens, tag_ids: &[usize]) -> (Vec<i64>, usize) {
    let mut labels = vec![IGNORE; encoded.word_ids.len()];
    let mut seen = vec![false; tag_ids.len()];
    let mut prev: Option<u32> = None;
    for (k, w) in encoded.word_ids.iter().enumerate() {
        if let Some(w) = *w
            && prev != Some(w)
            && let Some(&id) = tag_ids.get(w as usize)
        {
            labels[k] = id as i64;
            seen[w as usize] = true;
        }
        prev = *w;
    }
    (labels, seen.iter().filter(|s| !**s).count())
}

/// Word-level predicted tag ids from per-piece predictions: each word's first piece; words
/// without a piece (truncated) get `fallback` (the id of `O`).
pub fn word_predictions(
    word_ids: &[Option<u32>],
    piece_pred: &[usize],
    words: usize,
    fallback: usize,
) -> Vec<usize> {
    let mut out = vec![fallback; words];
    let mut done = vec![false; words];
    for (k, w) in word_ids.iter().enumerate() {
        if let Some(w) = *w
            && let Some(slot) = done.get_mut(w as usize)
            && !*slot
        {
            *slot = true;
            out[w as usize] = piece_pred.get(k).copied().unwrap_or(fallback);
        }
    }
    out
}

/// An entity: (type, first word, last word) in the concatenated sequence.
pub type Entity = (String, usize, usize);

fn end_of_chunk(prev: char, tag: char, prev_type: &str, ty: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (matches!(prev, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != ty)
}

fn start_of_chunk(prev: char, tag: char, prev_type: &str, ty: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != ty)
}

/// Entities of tagged sentences, as seqeval's `get_entities` finds them (sentences joined
/// with `O`; malformed sequences handled its lenient way).
pub fn entities(sentences: &[Vec<String>]) -> Vec<Entity> {
    let mut seq: Vec<&str> = Vec::new();
    for s in sentences {
        seq.extend(s.iter().map(String::as_str));
        seq.push("O");
    }
    seq.push("O");
    let mut out = Vec::new();
    let (mut prev_tag, mut prev_type) = ('O', String::from("_"));
    let mut begin = 0;
    for (i, chunk) in seq.iter().enumerate() {
        // seqeval: tag = first char, type = text after the first '-' (or "_").
        let tag = chunk.chars().next().unwrap_or('O');
        let rest: String = chunk.chars().skip(1).collect();
        let ty = match rest.split_once('-') {
            Some((_, t)) if !t.is_empty() => t.to_string(),
            Some(_) => "_".to_string(),
            None if rest.is_empty() => "_".to_string(),
            None => rest,
        };
        if end_of_chunk(prev_tag, tag, &prev_type, &ty) {
            out.push((prev_type.clone(), begin, i.saturating_sub(1)));
        }
        if start_of_chunk(prev_tag, tag, &prev_type, &ty) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = ty;
    }
    out
}

/// Precision, recall, F1 and support (true entities) of one entity type or of all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityScores {
    /// Correct / predicted entities.
    pub precision: f64,
    /// Correct / true entities.
    pub recall: f64,
    /// Harmonic mean (0 when undefined).
    pub f1: f64,
    /// True entities.
    pub support: usize,
    /// Predicted entities.
    pub predicted: usize,
}

fn prf(correct: usize, predicted: usize, support: usize) -> EntityScores {
    let p = if predicted > 0 {
        correct as f64 / predicted as f64
    } else {
        0.0
    };
    let r = if support > 0 {
        correct as f64 / support as f64
    } else {
        0.0
    };
    let f1 = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    EntityScores {
        precision: p,
        recall: r,
        f1,
        support,
        predicted,
    }
}

/// Entity-level scores of predicted vs true tag sequences: micro over all entities (seqeval's
/// `precision_score`, `recall_score`, `f1_score`) and per type (its `classification_report`).
pub fn entity_scores(
    truth: &[Vec<String>],
    predicted: &[Vec<String>],
) -> (EntityScores, BTreeMap<String, EntityScores>) {
    let t: BTreeSet<Entity> = entities(truth).into_iter().collect();
    let p: BTreeSet<Entity> = entities(predicted).into_iter().collect();
    let correct = t.intersection(&p).count();
    let types: BTreeSet<&String> = t.iter().chain(p.iter()).map(|e| &e.0).collect();
    let per_type = types
        .into_iter()
        .map(|ty| {
            let tn = t.iter().filter(|e| &e.0 == ty).count();
            let pn = p.iter().filter(|e| &e.0 == ty).count();
            let c = t.intersection(&p).filter(|e| &e.0 == ty).count();
            (ty.clone(), prf(c, pn, tn))
        })
        .collect();
    (prf(correct, p.len(), t.len()), per_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(rows: &[&str]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.split_whitespace().map(String::from).collect())
            .collect()
    }

    #[derive(Deserialize)]
    struct Case {
        truth: Vec<Vec<String>>,
        predicted: Vec<Vec<String>>,
        precision: f64,
        recall: f64,
        f1: f64,
        entities_true: Vec<(String, usize, usize)>,
        per_type: BTreeMap<String, (f64, f64, f64, usize)>,
    }

    #[test]
    fn entities_and_scores_equal_seqeval_on_its_fixture() {
        // tools/make_seqeval_fixture.py: seqeval 1.2.2 on random, partly malformed BIO and
        // BIOES sequences. Tolerance 1e-12 (the same ratios of counts).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seqeval.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 50);
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(entities(&c.truth), c.entities_true, "case {i}");
            let (all, per) = entity_scores(&c.truth, &c.predicted);
            for (a, b, what) in [
                (all.precision, c.precision, "precision"),
                (all.recall, c.recall, "recall"),
                (all.f1, c.f1, "f1"),
            ] {
                assert!((a - b).abs() < 1e-12, "case {i} {what}: {a} vs {b}");
            }
            for (ty, (p, r, f, s)) in &c.per_type {
                let got = per.get(ty).unwrap_or_else(|| panic!("case {i}: type {ty}"));
                assert!((got.precision - p).abs() < 1e-12, "case {i} {ty}");
                assert!((got.recall - r).abs() < 1e-12, "case {i} {ty}");
                assert!((got.f1 - f).abs() < 1e-12, "case {i} {ty}");
                assert_eq!(got.support, *s, "case {i} {ty}");
            }
        }
    }

    #[test]
    fn an_i_tag_after_o_starts_an_entity_and_types_split_entities() {
        let e = entities(&seqs(&["O I-PER I-PER B-LOC I-ORG", "B-PER"]));
        assert_eq!(
            e,
            vec![
                ("PER".to_string(), 1, 2),
                ("LOC".to_string(), 3, 3),
                ("ORG".to_string(), 4, 4),
                ("PER".to_string(), 6, 6),
            ]
        );
        let bioes = entities(&seqs(&["S-LOC B-PER E-PER O"]));
        assert_eq!(
            bioes,
            vec![("LOC".to_string(), 0, 0), ("PER".to_string(), 1, 2)]
        );
    }

    #[test]
    fn first_piece_carries_the_tag_and_truncated_words_are_counted() {
        let enc = WordTokens {
            tokens: crate::tokenize::Tokens {
                ids: vec![101, 1, 2, 3, 102],
                type_ids: vec![0; 5],
                truncated: true,
            },
            // [CLS] w0 w0 w1 [SEP]; word 2 was cut off.
            word_ids: vec![None, Some(0), Some(0), Some(1), None],
        };
        let (labels, lost) = align(&enc, &[3, 0, 1]);
        assert_eq!(labels, vec![IGNORE, 3, IGNORE, 0, IGNORE]);
        assert_eq!(lost, 1);
        let words = word_predictions(&enc.word_ids, &[9, 4, 7, 5, 9], 3, 0);
        assert_eq!(words, vec![4, 5, 0]);
    }

    #[test]
    fn conll_reader_names_the_line_of_a_bad_tag_and_skips_docstart() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("a.conll");
        std::fs::write(
            &good,
            "-DOCSTART- O\n\nJohn B-PER\nlives O\n\n\nin O\nParis\tB-LOC\n",
        )
        .unwrap();
        let (s, r) = read_conll(&good, true).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].words, vec!["John", "lives"]);
        assert_eq!(s[0].line, 3);
        assert_eq!(s[1].tags, vec!["O", "B-LOC"]);
        assert_eq!(s[1].line, 7);
        assert_eq!((r.docstart_lines, r.words), (1, 4));
        let bad = dir.path().join("b.conll");
        std::fs::write(&bad, "John B-PER\nlives X-FOO\n").unwrap();
        let e = read_conll(&bad, true).unwrap_err().to_string();
        assert!(
            e.contains("b.conll line 2 (sentence 1)") && e.contains("X-FOO"),
            "{e}"
        );
        let short = dir.path().join("c.conll");
        std::fs::write(&short, "John\n").unwrap();
        let e = read_conll(&short, true).unwrap_err().to_string();
        assert!(e.contains("c.conll line 1 (sentence 1)"), "{e}");
    }

    #[test]
    fn conll_reader_follows_the_table_rules() {
        let dir = tempfile::tempdir().unwrap();
        // BOM and CRLF: the first word is `John`, not `\u{feff}John`; tags lose their `\r`.
        let f = dir.path().join("bom.conll");
        std::fs::write(
            &f,
            b"\xEF\xBB\xBFJohn\tB-PER\r\nlives\tO\r\n\r\nParis\tB-LOC\r\n",
        )
        .unwrap();
        let (s, r) = read_conll(&f, true).unwrap();
        assert_eq!(s[0].words, ["John", "lives"]);
        assert_eq!(s[0].tags, ["B-PER", "O"]);
        assert_eq!((s[1].line, r.sentences, r.words), (4, 2, 3));
        // A word with a space in a tab-separated file stays whole.
        let f = dir.path().join("tab.conll");
        std::fs::write(&f, "New York\tB-LOC\nis\tO\n").unwrap();
        assert_eq!(read_conll(&f, true).unwrap().0[0].words, ["New York", "is"]);
        // In a space-separated file it would lose its tail: an error naming the line.
        let f = dir.path().join("space.conll");
        std::fs::write(&f, "I O\nlove O\n\nNew York B-LOC\n").unwrap();
        let e = read_conll(&f, true).unwrap_err().to_string();
        assert!(
            e.contains(
                "space.conll line 4 (sentence 2): expected 2 columns (as on line 1), found 3"
            ),
            "{e}"
        );
        // Bytes that are not UTF-8 name the line; the encoding setting reads them.
        let f = dir.path().join("latin.conll");
        std::fs::write(&f, b"caf\xE9 O\n").unwrap();
        let e = read_conll(&f, true).unwrap_err().to_string();
        assert!(
            e.contains("latin.conll line 1") && e.contains("UTF-8"),
            "{e}"
        );
        let (s, _) = read_conll_with(&f, true, TextEncoding::Latin1, false).unwrap();
        assert_eq!(s[0].words, ["caf\u{e9}"]);
        // Replaced bytes are counted, never a silent change of the words.
        let (s, r) = read_conll_with(&f, true, TextEncoding::Utf8, true).unwrap();
        assert_eq!(
            (s[0].words.clone(), r.decode_replaced),
            (vec!["caf\u{fffd}".to_string()], 1)
        );
        // A missing relative path says where it was looked for.
        let e = read_conll(Path::new("no/such.conll"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("relative to the working directory"), "{e}");
    }
}
